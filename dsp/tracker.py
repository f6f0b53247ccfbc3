"""Streaming tracker of one echo's axial motion: :class:`MotionTracker` (docs/motion.md).

``prepare(meta, n_samples)`` once, ``process(block)`` per block; each call returns the
:class:`MotionBlock` of the lines it finished. The echo is chosen automatically from the
first ``select_s`` of lines (:mod:`mmode.dsp.echo_choice`), or placed at a depth the user
gives; those lines are held back meanwhile and returned later with their own times.

How a line is tracked: one window is matched against a *keyframe* (the window of an
earlier line, renewed only when the match weakens), NCC on the envelope for the coarse
shift and the phase of the complex correlation for the fine one, the phase unwrapped
around the NCC shift (the combined estimator of :mod:`mmode.dsp.motion`, which does not
alias). Where the phase cannot be trusted (complex correlation below
``PHASE_MIN_COHERENCE``), the envelope's sub-sample shift carries the line. Each line gets
a quality in [0, 1]: the correlation of its match.

Two things real scanner data need that the tracker does on its own:

- **Coarse IQ.** A scanner stores IQ as coarsely as 0.8 mm per sample at 2.5 MHz, more
  than two phase wraps (half a wavelength each) per sample, and an echo only a sample or
  two long. Such IQ is interpolated along depth (band-limited, polyphase) to at least
  ``MIN_IQ_RATE_PER_F0`` complex samples per second per Hz of f0, the grid the RF path
  demodulates to, and the window is at least ``MIN_WINDOW_SAMPLES`` stored samples long.
- **Clutter.** Where stationary echoes are stronger than the moving one, a window tracked
  on the lines as stored follows the clutter. The choice therefore also scores candidates
  on clutter-filtered IQ (:mod:`mmode.dsp.clutter`) and, when one of them wins, the
  tracker follows it on clutter-filtered lines (``representation == "clutter"``).

Scanner images (``meta.amplitude == "grey"``: display grey levels of a cine, one line per
frame at 15-60 lines/s) have no phase and show every bright line as a similar smooth bump:
the pleura, its A-lines and fascia match a keyframe almost equally well, and at video rates
the search spans several of them. There the NCC maximum is taken where the echo is expected
(:func:`mmode.dsp.motion._ncc_peak_near`: a prior on the change of step, scaled to the
echo's own motion by the choice), the search spans ``TISSUE_MAX_SPEED_M_S``, the quality
drops when another echo is nearly as likely, and the keyframe is renewed only from a
confident match (docs/motion.md, "Scanner images").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import signal

from mmode.dsp import clutter
from mmode.dsp.demod import demod_design, iq_decimation, to_iq
from mmode.dsp.motion import ESTIMATORS, inphase_depth_index
from mmode.dsp.track_kernel import MODE_ENVELOPE, MODE_IQ, MODE_RF, fill_line, track_kernel
from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock

REPRESENTATIONS = ("raw", "clutter")
#: Smallest NCC search half-range (IQ samples) around the constant-velocity prediction once
#: tracking; widened at low line rates to cover ``max_acceleration_m_s2``.
TRACK_LAG_SAMPLES = 3
#: After the echo is chosen, each call also tracks this many blocks' worth of held-back lines,
#: unless the caller says how many (a live stream: :class:`mmode.app.catch_up.CatchUp`).
CATCH_UP_BLOCKS = 2
#: IQ is tracked on a grid of at least this many complex samples per second per Hz of f0:
#: 2 f0, a quarter wavelength per sample, the phase wrapping every two samples, which is
#: where the RF path demodulates to (:func:`mmode.dsp.demod.iq_decimation`).
MIN_IQ_RATE_PER_F0 = 2.0
#: Shortest window, in stored samples, on interpolated (coarse) IQ: the echo and its
#: neighbourhood must hold a few independent samples for NCC to find its shape.
MIN_WINDOW_SAMPLES = 4
#: Lines clutter-filtered per step when the tracker switches to clutter-filtered lines
#: (about 8 ms at 2048 RF samples per line).
CLUTTER_CHUNK_LINES = 64
#: Precision of an NCC shift, in samples of the grid the envelope was sampled on (the
#: stored IQ for coarse IQ, the IQ grid for RF): with band-limited envelopes a match is good
#: to a fraction of a sample, and its bias where the echo changes shape (a clutter filter,
#: decorrelation) reaches about a quarter of one.
NCC_SIGMA_SAMPLES = 0.25
#: On clutter-filtered lines the keyframe is renewed only on a line whose echo moves at
#: least this many times the filter's cut-off velocity: slower, the filter has taken part of
#: the echo and turned its phase (a 2nd-order Butterworth: 16 degrees at 5 x the cut-off, a
#: 4 % of a wrap bias), and a keyframe taken then would carry that error into every later line.
RENEW_MIN_SPEED_CUTOFFS = 5.0
#: Scanner images (``meta.amplitude == "grey"``, 15-60 lines/s from a cine): the fastest
#: tissue motion searched for between two lines, m/s, in place of ``max_velocity_m_s`` and
#: ``max_acceleration_m_s2``, which are aliasing and RF-rate limits. Myocardium moves at up
#: to about 0.2 m/s (pulsed tissue Doppler is set to a +-0.2 m/s scale for it: Nagueh et al.,
#: J Am Soc Echocardiogr 2009, diastolic function recommendations; the simulator's
#: pericardium peaks at 0.05-0.12 m/s); 0.3 m/s leaves half again as a margin.
TISSUE_MAX_SPEED_M_S = 0.3
#: Scanner images: standard deviation, m/s^2, of the change of velocity from one line to the
#: next that the match expects (its distance from the constant-velocity prediction, in units
#: of this acceleration x the line interval squared, weighs each NCC maximum:
#: :func:`mmode.dsp.motion._ncc_peak_near`) until the echo's own motion is known
#: (``ECHO_SIGMA_GAIN``). Peak myocardial accelerations are 1-3 m/s^2 (isovolumic
#: acceleration, Vogel et al., Circulation 2002; the simulator's pericardium 1.0-3.2 m/s^2
#: between lines 40 ms apart).
TISSUE_ACCELERATION_M_S2 = 2.0
#: Scanner images: the match's expected distance from the constant-velocity prediction is
#: this many times the RMS change of step per line of the chosen echo over the selection
#: (:meth:`MotionTracker.set_echo_motion`), when that is less than ``TISSUE_ACCELERATION_M_S2``
#: allows. Over 10 s of the simulator's views at 25 lines/s, the largest change of step of an
#: echo is 2.4-2.9 times its RMS over the first second at a regular heart rhythm, up to 6.1
#: in atrial fibrillation and 1.6-3.7 for breathing: at 5 times, about one standard deviation.
ECHO_SIGMA_GAIN = 5.0


@dataclass(frozen=True)
class MotionBlock:
    """Motion trace of the tracked echo for the lines processed by one call.

    t_s : (n,) float64 line times, seconds.
    displacement_m : (n,) float64 axial displacement relative to the first line, metres,
        positive away from the probe.
    velocity_m_s : (n,) float64 axial velocity (backward difference of the displacement
        times the line rate), m/s.
    quality : (n,) float64 in [0, 1], the correlation of each line's match with its
        reference (complex correlation coefficient; NCC for envelope input, times the
        confidence that no other echo fits as well on scanner images): near 1 the echo is
        followed closely, below about 0.5 the line is uncertain (the phase is not used
        there) and a display dims it.
    depth_m : depth of the tracked echo at the first line, metres (NaN before it is chosen).
    """

    t_s: np.ndarray
    displacement_m: np.ndarray
    velocity_m_s: np.ndarray
    quality: np.ndarray
    depth_m: float


class MotionTracker:
    """Streaming tracker of one echo: ``prepare(meta, n_samples)`` once, ``process(block)`` per block.

    Parameters
    ----------
    estimator : "combined" (NCC on the envelope against a keyframe, refined by phase;
        default, does not alias), "kasai" (phase between consecutive lines; aliases beyond
        ``meta.nyquist_velocity_m_s``) or "ncc" (envelope NCC only). Envelope input carries
        no phase and always uses "ncc".
    track_depth_m : depth of the echo to follow; None chooses the moving echo automatically
        (:func:`mmode.dsp.echo_choice.choose_echo`) from the first ``select_s`` seconds.
    window_m : axial length of the tracked window, metres.
    max_velocity_m_s : largest speed searched by NCC between two lines (first lines).
    max_acceleration_m_s2 : largest change of speed searched around the constant-velocity
        prediction once tracking (sets the NCC search at low line rates). Scanner images
        (grey levels) use the physiological ``TISSUE_MAX_SPEED_M_S`` and
        ``TISSUE_ACCELERATION_M_S2`` instead of these two.
    select_s : seconds of lines the choice uses (the echo when ``track_depth_m`` is None,
        and in any case whether to track the lines as stored or clutter-filtered); those lines
        are held back, then returned a few blocks at a time with the following blocks (or
        all at once by :meth:`flush`).
    keyframe_ncc : the reference window is renewed when the match quality (complex
        correlation coefficient, or interpolated NCC peak for "ncc") falls below this (and
        when the echo's energy no longer agrees with the reference's, ``KEYFRAME_ENERGY``).
    step_budget_s : wall time the one-off choice may take in one :meth:`process` call (it
        takes at least one of its steps, of a few ms each, and stops before one as long as the
        last would overrun); it then goes on in the next calls (a live stream is never stalled
        by it). None: the choice finishes in the call that completes its lines (offline use).

    After the choice, :attr:`status` is "tracking", or "no_motion" when nothing in the lines
    moves measurably (then the blocks are empty and :attr:`note` says why); while tracking,
    :attr:`note` is a caution when the echo at ``track_depth_m`` fails the backwards check an
    automatically chosen one must pass (the trace may not follow it), or when the automatically
    chosen echo barely moves while stronger motion under the clutter could not be followed (it
    may be stationary clutter; :mod:`mmode.dsp.echo_choice`), else None. Lines shorter
    than two windows give no trace ("inactive"). The trace is continuous across blocks and
    does not depend on how the lines are cut into blocks.
    """

    def __init__(
        self,
        estimator: str = "combined",
        track_depth_m: float | None = None,
        window_m: float = 1.5e-3,
        max_velocity_m_s: float = 0.5,
        select_s: float = 1.0,
        keyframe_ncc: float = 0.9,
        max_acceleration_m_s2: float = 10.0,
        step_budget_s: float | None = None,
    ) -> None:
        if estimator not in ESTIMATORS:
            raise DataError(describe("MotionTracker", f"estimator one of {ESTIMATORS}", repr(estimator)))
        for name, value in (("window_m", window_m), ("max_velocity_m_s", max_velocity_m_s), ("select_s", select_s),
                            ("max_acceleration_m_s2", max_acceleration_m_s2)):
            if not (math.isfinite(value) and value > 0):
                raise DataError(describe("MotionTracker", f"{name} > 0", value))
        if track_depth_m is not None and not (math.isfinite(track_depth_m) and track_depth_m >= 0):
            raise DataError(describe("--track-depth", "a depth >= 0 metres", track_depth_m))
        if step_budget_s is not None and not step_budget_s > 0:
            raise DataError(describe("MotionTracker", "step_budget_s > 0 or None", step_budget_s))
        self.estimator = estimator
        self.track_depth_m = track_depth_m
        self.window_m = float(window_m)
        self.max_velocity_m_s = float(max_velocity_m_s)
        self.select_s = float(select_s)
        self.keyframe_ncc = float(keyframe_ncc)
        self.max_acceleration_m_s2 = float(max_acceleration_m_s2)
        self.step_budget_s = step_budget_s
        self.meta: AcquisitionMeta | None = None

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self, meta: AcquisitionMeta, n_samples: int) -> None:
        """Settle sizes for lines of ``n_samples`` stored samples; resets the trace."""
        self.meta = meta
        self._n_samples = int(n_samples)
        self.upsample = 1
        if meta.kind == "rf":
            self.mode = MODE_RF
            dec = iq_decimation(meta.fs_hz, meta.f0_hz)
            self.stride = float(dec)  # stored samples per tracking sample
            self._dec = dec
            self._carrier, self._taps, self._half = demod_design(self._n_samples, meta.fs_hz, meta.f0_hz, dec)
            self.n_iq = -(-self._n_samples // dec)
        else:
            self.mode = MODE_IQ if meta.kind == "iq" else MODE_ENVELOPE
            if meta.kind == "iq" and meta.f0_hz > 0:
                self.upsample = max(1, math.ceil(MIN_IQ_RATE_PER_F0 * meta.f0_hz / meta.fs_hz - 1e-9))
            self.stride = 1.0 / self.upsample
            self._dec = 1
            self._carrier, self._taps, self._half = np.zeros(1, np.complex64), np.zeros(1, np.float32), 0
            self.n_iq = self._n_samples * self.upsample
        track_fs = meta.fs_hz / self.stride
        self.grey = meta.amplitude == "grey"
        self.echo_sigma: float | None = None  # :meth:`set_echo_motion`
        self.effective_estimator = "ncc" if meta.kind == "envelope" else self.estimator
        self.spacing_m = meta.c_m_s / (2.0 * track_fs)
        window_m = self.window_m
        if self.upsample > 1:
            window_m = max(window_m, MIN_WINDOW_SAMPLES * meta.c_m_s / (2.0 * meta.fs_hz))
        self.window = max(4, int(round(window_m / self.spacing_m)))
        self._max_lag, self._track_lag = self.search_lags(meta.prf_hz)
        # lines too short for a window and its search: no trace (empty blocks), not an error,
        # so that the display of such lines still works
        self.active = self.n_iq >= 2 * self.window + 2
        self.f0_cycles_per_sample = meta.f0_hz / track_fs
        self.sigma_ncc = NCC_SIGMA_SAMPLES * self.upsample  # tracking samples of a stored (or IQ-grid) sample
        self.select_lines = max(2, min(4096, int(round(self.select_s * meta.prf_hz))))
        self.wrap_m = meta.c_m_s / (2.0 * meta.f0_hz) if meta.f0_hz > 0 else math.inf
        self.representation = "raw"
        self.status = "choosing" if self.active else "inactive"
        self.note: str | None = None if self.active else "lines too short for a tracking window"
        self._wall: clutter.WallFilter | None = None
        self._ready = np.zeros((0, self.n_iq), np.complex64)
        #: the clutter-filtered tracking IQ (m, n_iq) of the m lines the last process() or
        #: flush() tracked, when the echo is followed on clutter-filtered lines (else None):
        #: a follower (the learned tracker) tracks the very same lines, whose filter was
        #: settled backwards at the start (prepare_clutter) rather than started cold
        self.tracked_iq: np.ndarray | None = None
        self._renew_step = 0.0
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._choice = None
        self._home: int | None = None
        self._state = np.zeros(7)
        self._ref_iq = np.zeros(self.window, np.complex64)
        self._ref_env = np.zeros(self.window, np.float32)
        self._depth_w = np.zeros(self.window)  # in-phase weights over the window (the trace's depth)
        self._buf_iq = np.zeros(self.n_iq, np.complex64)
        self._buf_env = np.zeros(self.n_iq, np.float32)
        self._started = False
        self._has_output = False
        self._prev = 0.0
        self.depth_m = math.nan
        self.fixed_centre: int | None = None
        if self.active:
            self._compile()
        if self.track_depth_m is not None:
            centre = int(round(float(meta.sample_at_depth(self.track_depth_m)) / self.stride))
            if not 0 <= centre < self.n_iq:
                lo, hi = float(meta.depth_m(0)), float(meta.depth_m(self._n_samples - 1))
                raise DataError(describe("--track-depth", f"a depth within {lo:.4f}..{hi:.4f} m", f"{self.track_depth_m} m"))
            self.fixed_centre = centre

    def _compile(self) -> None:
        """Run the tracking kernels once on a few lines of zeros in every form this stream
        can take (its own, and clutter-filtered IQ), so that numba compiles them here, in
        ``prepare``, and not in the middle of a live stream (over a second on a cold cache)."""
        lags = (1, 1)
        self.track_lines(self.window, np.zeros((3, self.n_iq), np.complex64), MODE_IQ, lags)
        lines, mode = self.kernel_lines(np.zeros((3, self._n_samples), np.float32 if self.mode != MODE_IQ
                                                 else np.complex64))
        self.track_lines(self.window, lines, mode, lags)

    def search_lags(self, rate_hz: float) -> tuple[int, int]:
        """NCC search half-ranges (IQ samples) for lines ``1 / rate_hz`` apart: around the
        previous displacement for the first lines (``max_velocity_m_s``), then around the
        constant-velocity prediction (``max_acceleration_m_s2``, at least ``TRACK_LAG_SAMPLES``).
        Scanner images: ``TISSUE_MAX_SPEED_M_S`` for both (:meth:`step_sigma` weighs the lags)."""
        if self.grey:
            lag = int(math.ceil(TISSUE_MAX_SPEED_M_S / rate_hz / self.spacing_m)) + 1
            return lag, lag
        max_lag = int(math.ceil(self.max_velocity_m_s / rate_hz / self.spacing_m)) + 1
        accel_lag = int(math.ceil(self.max_acceleration_m_s2 / rate_hz**2 / self.spacing_m))
        return max_lag, min(max_lag, max(TRACK_LAG_SAMPLES, accel_lag + 1))

    def clutter_filter(self, rate_hz: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The wall filter ``(b, a)`` for lines ``1 / rate_hz`` apart, or None where there is
        no phase (envelope input) or the line rate cannot resolve the cut-off velocity."""
        if self.mode == MODE_ENVELOPE:
            return None
        try:
            return clutter.design(rate_hz, self.meta.f0_hz, self.meta.c_m_s)
        except DataError:
            return None

    def depth_of(self, index: float) -> float:
        """Depth (m) of tracking-grid sample ``index``."""
        return float(self.meta.depth_m(index * self.stride))

    def length_text(self, length_m: float, unit: str = "mm", digits: int = 1) -> str:
        """A length for a note, in ``unit`` ("mm" or "um"), or in pixels when the depth is
        uncalibrated (``meta.depth_calibrated`` False: one stored sample per pixel)."""
        if not self.meta.depth_calibrated:
            return f"{length_m / self.meta.sample_spacing_m:.{digits}f} px"
        return f"{length_m * (1e3 if unit == 'mm' else 1e6):.{digits}f} {unit}"

    # -- lines in the forms the kernels take -------------------------------------------------
    def interpolate(self, iq: np.ndarray) -> np.ndarray:
        """Coarse IQ (m, n_samples) interpolated along depth onto the tracking grid
        (m, n_iq), complex64 (band-limited polyphase FIR; unchanged when not coarse)."""
        if self.upsample == 1:
            return np.ascontiguousarray(iq, dtype=np.complex64)
        return np.ascontiguousarray(signal.resample_poly(iq, self.upsample, 1, axis=1), dtype=np.complex64)

    def tracking_iq(self, lines: np.ndarray) -> np.ndarray:
        """IQ (m, n_iq) complex64 of stored lines on the tracking grid (RF demodulated)."""
        iq, _, _ = to_iq(lines, self.meta)
        return self.interpolate(iq)

    def kernel_lines(self, lines: np.ndarray) -> tuple[np.ndarray, int]:
        """Stored lines as the tracking kernel reads them in the raw representation:
        ``(array, mode)``; RF stays RF (demodulated only where searched)."""
        if self.mode == MODE_IQ:
            return self.interpolate(lines), MODE_IQ
        return np.ascontiguousarray(lines, dtype=np.float32), self.mode

    def _stream_lines(self, lines: np.ndarray) -> tuple[np.ndarray, int]:
        """The next stored lines of the stream in the chosen representation: clutter-filtered
        lines come first from those prepared when the echo was chosen, then from the
        streaming filter, which keeps its state from block to block."""
        if self.representation == "raw":
            return self.kernel_lines(lines)
        n = lines.shape[0]
        if self._ready.shape[0] >= n:
            out, self._ready = self._ready[:n], self._ready[n:]
            return out, MODE_IQ
        iq, _, _ = to_iq(lines[self._ready.shape[0]:], self.meta)
        out = np.concatenate([self._ready, self.interpolate(self._wall.process(iq))])
        self._ready = self._ready[:0]
        return out, MODE_IQ

    # -- per block ---------------------------------------------------------------------------
    def process(self, block: LineBlock, catch_up_lines: int | None = None) -> MotionBlock:
        """Track the echo through ``block``; returns the trace of the lines processed now.

        While lines are held back (after the choice), the oldest are tracked first: as many as
        the block has, plus ``catch_up_lines`` more (None: ``CATCH_UP_BLOCKS`` blocks' worth)."""
        if self.meta is None:
            raise DataError(describe("MotionTracker", "prepare(meta, n_samples) before process", "no metadata"))
        lines = block.lines
        if lines.ndim != 2 or lines.shape[1] != self._n_samples:
            raise DataError(describe("MotionTracker", f"blocks of (n, {self._n_samples}) lines", lines.shape))
        self.tracked_iq = None
        if self.status in ("inactive", "no_motion"):
            return self._empty()
        t_s = block.t_s + np.arange(lines.shape[0], dtype=np.float64) / self.meta.prf_hz
        if self.status == "choosing" or self._pending:
            self._pending.append((lines, t_s))
            if self.status == "choosing" and not self._advance_choice(self.step_budget_s):
                return self._empty()
            if self.status == "no_motion":
                self._pending = []
                return self._empty()
            # catch up on lines held back while choosing, a few per call, so that no single
            # call stalls the real-time worker
            extra = CATCH_UP_BLOCKS * lines.shape[0] if catch_up_lines is None else max(0, int(catch_up_lines))
            return self._drain(lines.shape[0] + extra)
        return self._run(lines, t_s)

    def flush(self) -> MotionBlock:
        """End of stream: finish the choice (at least 2 lines needed) and track every line
        still held back. Returns their trace (empty when nothing is pending); a recording
        shorter than ``select_s`` thus still gets a trace, from a choice on fewer lines."""
        self.tracked_iq = None
        if self.meta is None or not self._pending or self.status in ("inactive", "no_motion"):
            return self._empty()
        if self.status == "choosing":
            if self._held_count() < 2:
                return self._empty()
            self._advance_choice(None, final=True)
            if self.status == "no_motion":
                self._pending = []
                return self._empty()
        return self._drain(None)

    def _advance_choice(self, budget_s: float | None, final: bool = False) -> bool:
        """Run the choice once its lines are held back (or, with ``final``, on whatever is
        held): at least one step, then steps while one as long as the last still ends within
        ``budget_s`` of the call (None: to the end); True when it is done."""
        from mmode.dsp.echo_choice import choose_echo

        if self._choice is None:
            n = self._held_count()
            if n < self.select_lines and not final:
                return False
            if not all(np.all(np.isfinite(lines)) for lines, _ in self._pending):
                raise DataError(describe("MotionTracker", "finite line samples", "NaN or infinite values"))
            self._choice_lines = min(n, self.select_lines)
            self._choice = choose_echo(self, self._choice_lines)
        step_start = time.perf_counter()
        deadline = None if budget_s is None else step_start + budget_s
        for _ in self._choice:
            # stop before a step (as long as the last one) would overrun the budget; every
            # call takes at least one step
            now = time.perf_counter()
            if deadline is not None and 2 * now - step_start > deadline:
                return False
            step_start = now
        self._choice = None
        return True

    def set_echo(self, centre: int, representation: str) -> None:
        """Track the echo centred at tracking sample ``centre`` in the first line, in
        ``representation`` (called by the choice; "clutter" after :meth:`prepare_clutter`)."""
        if representation not in REPRESENTATIONS:
            raise DataError(describe("MotionTracker", f"a representation in {REPRESENTATIONS}", representation))
        if representation == "clutter" and self._wall is None:
            raise DataError(describe("MotionTracker", "prepare_clutter() before a clutter-filtered echo", "none"))
        self.representation = representation
        self._home = min(max(centre - self.window // 2, 0), self.n_iq - self.window)
        self.depth_m = self.depth_of(self._home + (self.window - 1) / 2.0)
        self.status = "tracking"

    def prepare_clutter(self):
        """Generator, ``CLUTTER_CHUNK_LINES`` lines per step: clutter-filter the lines the
        choice used (the first held back, whatever arrived since, so that the trace does not
        depend on when the choice finished), backwards in time up to the last
        ``settle_lines`` of them (settled from the first line on, as
        :func:`mmode.dsp.clutter.wall_filter`), then forwards with the streaming filter,
        which has settled there after running over all of them from their mean and goes on
        with the stream. The two filters' phase responses are conjugate: at the junction a
        fast echo's trace steps by twice the causal filter's phase (about 10 um at 15 times
        the cut-off velocity, 2.5 MHz)."""
        b, a = self.clutter_filter(self.meta.prf_hz)
        n = self._choice_lines
        chunks = [(s, min(n, s + CLUTTER_CHUNK_LINES)) for s in range(0, n, CLUTTER_CHUNK_LINES)]
        parts = []
        for s, e in chunks:
            parts.append(to_iq(self.held_lines(np.arange(s, e)), self.meta)[0])
            yield
        iq = np.concatenate(parts)
        stationary = iq.mean(axis=0)
        wall, backward = clutter.WallFilter(b, a), clutter.WallFilter(b, a)
        causal, ready = np.empty_like(iq), np.empty_like(iq)
        for s, e in chunks:
            causal[s:e] = wall.process(iq[s:e], stationary=stationary)
            yield
        for s, e in reversed(chunks):
            ready[s:e] = backward.process(iq[s:e][::-1], stationary=stationary)[::-1]
            yield
        junction = max(0, n - clutter.settle_lines(self.meta.prf_hz, self.meta.f0_hz, self.meta.c_m_s))
        ready[junction:] = causal[junction:]
        parts = []
        for s, e in chunks:  # coarse IQ onto the tracking grid (the NTNU phantom's lines at once: 22 ms)
            parts.append(self.interpolate(ready[s:e]))
            yield
        self._ready = np.concatenate(parts)
        self._wall = wall
        self._renew_step = self.renew_min_step(self.meta.prf_hz)

    def set_no_motion(self, note: str) -> None:
        """Nothing in the lines moves measurably (called by the choice): no trace, a note."""
        self.status, self.note, self.depth_m = "no_motion", note, math.nan

    def _held_count(self) -> int:
        return sum(p[1].shape[0] for p in self._pending)

    def held_lines(self, index: np.ndarray) -> np.ndarray:
        """(len(index), n_samples) held-back lines at positions ``index`` (any order), copied
        from their blocks without joining every held-back line."""
        starts = np.cumsum([0] + [p[0].shape[0] for p in self._pending])
        block = np.searchsorted(starts, index, side="right") - 1
        return np.stack([self._pending[b][0][i - starts[b]] for b, i in zip(block, index)])

    def _empty(self) -> MotionBlock:
        e = np.zeros(0)
        return MotionBlock(e, e.copy(), e.copy(), e.copy(), self.depth_m)

    def _drain(self, max_lines: int | None) -> MotionBlock:
        """Track the oldest ``max_lines`` held-back lines (all if None); keep the rest. Only
        the blocks taken are touched, so catching up costs what the lines it tracks cost."""
        parts, taken = [], 0
        while self._pending and (max_lines is None or taken < max_lines):
            lines, t_s = self._pending.pop(0)
            n = lines.shape[0] if max_lines is None else min(lines.shape[0], max_lines - taken)
            if n < lines.shape[0]:
                self._pending.insert(0, (lines[n:], t_s[n:]))
            parts.append((lines[:n], t_s[:n]))
            taken += n
        if not parts:
            return self._empty()
        return self._run(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    # -- tracking ----------------------------------------------------------------------------
    def renew_min_step(self, rate_hz: float) -> float:
        """Least step (tracking samples) between lines ``1 / rate_hz`` apart on which a
        keyframe of clutter-filtered lines may be renewed (``RENEW_MIN_SPEED_CUTOFFS``)."""
        return RENEW_MIN_SPEED_CUTOFFS * clutter.CUTOFF_M_S / rate_hz / self.spacing_m

    def sigma_pred(self, rate_hz: float) -> float:
        """Precision (tracking samples) of the constant-velocity prediction for lines
        ``1 / rate_hz`` apart: what ``max_acceleration_m_s2`` changes in one line."""
        return self.max_acceleration_m_s2 / rate_hz**2 / self.spacing_m

    def set_echo_motion(self, track: np.ndarray, sigma: float, rate_hz: float) -> None:
        """Scanner images: scale the expected change of step (:meth:`step_sigma`) to the
        chosen echo's own motion: ``track`` (tracking samples at lines ``1 / rate_hz`` apart,
        the selection), followed under ``sigma`` (tracking samples at that rate); the larger
        of ``sigma`` and ``ECHO_SIGMA_GAIN`` x the track's RMS second difference, per line at
        the line rate. A lung's pleura, which moves by a fraction of a millimetre, is then not
        expected to leap onto an A-line or a fascia a few millimetres away, as a heart wall might."""
        step_change = np.diff(track, 2) if track.shape[0] > 3 else np.zeros(1)
        sigma = max(sigma, ECHO_SIGMA_GAIN * float(np.sqrt(np.mean(step_change**2))))
        self.echo_sigma = sigma * (rate_hz / self.meta.prf_hz) ** 2

    def step_sigma(self, rate_hz: float) -> float:
        """Scanner images: standard deviation (tracking samples, at least one) of a match's
        distance from the constant-velocity prediction for lines ``1 / rate_hz`` apart: what
        ``TISSUE_ACCELERATION_M_S2`` changes in one line, or less once the echo's own motion
        is known (:meth:`set_echo_motion`); 0 otherwise (NCC's own choice)."""
        if not self.grey:
            return 0.0
        sigma = TISSUE_ACCELERATION_M_S2 / rate_hz**2 / self.spacing_m
        if self.echo_sigma is not None:
            sigma = min(sigma, self.echo_sigma * (self.meta.prf_hz / rate_hz) ** 2)
        return max(1.0, sigma)

    def track_lines(self, centre: int, lines: np.ndarray, mode: int, lags: tuple[int, int],
                    renew_min_step: float = 0.0, rate_hz: float | None = None,
                    quality: np.ndarray | None = None, step_sigma: float | None = None) -> tuple[int, np.ndarray]:
        """The window centred at ``centre`` (tracking sample) in ``lines[0]``, tracked through
        ``lines`` (m, ...) in kernel form (:meth:`kernel_lines`, or clutter-filtered IQ with
        ``MODE_IQ``), evenly spaced lines in tracking order, with the combined tracker (NCC on
        the envelope for envelope input), which does not alias; ``lags`` are the NCC search
        half-ranges for that spacing (:meth:`search_lags`); ``renew_min_step`` that of
        :meth:`renew_min_step` for clutter-filtered lines, else 0; ``rate_hz`` the rate of
        ``lines`` (default the line rate); ``quality`` (m,), when given, receives each line's;
        ``step_sigma`` replaces :meth:`step_sigma` (scanner images).

        Returns ``(start, track)``: the window's first sample in ``lines[0]`` and its
        displacement (m,) in tracking samples at each line.
        """
        w = self.window
        rate_hz = self.meta.prf_hz if rate_hz is None else rate_hz
        step_sigma = self.step_sigma(rate_hz) if step_sigma is None else step_sigma
        home = min(max(centre - w // 2, 0), self.n_iq - w)
        lines = np.ascontiguousarray(lines)
        buf_iq = np.zeros(self.n_iq, np.complex64)
        buf_env = np.zeros(self.n_iq, np.float32)
        fill_line(lines, 0, mode, self._carrier, self._taps, self._dec, self._half, home, home + w, buf_iq, buf_env)
        ref_iq = buf_iq[home : home + w].copy()
        ref_env = buf_env[home : home + w].copy()
        state = np.array([home, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        out = np.empty(lines.shape[0])
        track_kernel(
            lines, mode, self._carrier, self._taps, self._dec, self._half, True, mode != MODE_ENVELOPE, state,
            ref_iq, ref_env, float(home), lags[0], lags[1], self.f0_cycles_per_sample, self.keyframe_ncc,
            renew_min_step, self.sigma_pred(rate_hz), self.sigma_ncc, step_sigma, buf_iq, buf_env, out,
            np.empty(lines.shape[0]) if quality is None else quality, np.zeros(w),
        )
        return home, out

    def _start(self, first_line: np.ndarray, mode: int) -> None:
        """The first line (kernel form) becomes the reference (displacement 0); the reported
        depth is the energy centroid of its window, since a window moves with its dominant
        echoes, until the lines tracked since give the depth their phase measures
        (:meth:`_measured_depth`)."""
        w, h = self.window, self._home
        fill_line(first_line[None, :], 0, mode, self._carrier, self._taps, self._dec, self._half,
              h, h + w, self._buf_iq, self._buf_env)
        self._ref_env[:] = self._buf_env[h : h + w]
        self._ref_iq[:] = self._buf_iq[h : h + w]
        self._state[:] = (h, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        self._depth_w[:] = 0.0
        self._started = True
        index = inphase_depth_index(self._ref_env.astype(np.float64) ** 2)  # a window's shares with itself
        if index is not None:
            self.depth_m = self.depth_of(h + index)

    def _measured_depth(self) -> None:
        """The depth the trace measures: where a window's phase weighs its samples (the centroid
        of their in-phase shares of the correlation, summed over the lines tracked so far,
        :func:`mmode.dsp.motion.inphase_depth_index`), on the window at the first line. In a
        straining wall the window's energy centroid can lie tens of micrometres from it
        (docs/motion.md)."""
        index = inphase_depth_index(self._depth_w)
        if index is not None:
            self.depth_m = self.depth_of(self._home + index)

    def _run(self, lines: np.ndarray, t_s: np.ndarray) -> MotionBlock:
        kin, mode = self._stream_lines(lines)
        if self.representation == "clutter":
            self.tracked_iq = kin
        if not self._started:
            self._start(kin[0], mode)
        d_samples = np.empty(kin.shape[0])
        quality = np.empty(kin.shape[0])
        prev = self._prev
        est = self.effective_estimator
        track_kernel(
            kin, mode, self._carrier, self._taps, self._dec, self._half, est != "kasai", est != "ncc",
            self._state, self._ref_iq, self._ref_env, float(self._home), self._max_lag, self._track_lag,
            self.f0_cycles_per_sample, self.keyframe_ncc, self._renew_step, self.sigma_pred(self.meta.prf_hz),
            self.sigma_ncc, self.step_sigma(self.meta.prf_hz), self._buf_iq, self._buf_env, d_samples, quality,
            self._depth_w,
        )
        self._measured_depth()
        if d_samples.shape[0]:
            self._prev = d_samples[-1]
        disp = d_samples * self.spacing_m
        vel = np.diff(np.concatenate(([prev * self.spacing_m], disp))) * self.meta.prf_hz
        if not self._has_output:  # the first line has no predecessor
            vel[0] = 0.0
            self._has_output = True
        return MotionBlock(t_s, disp, vel, quality, self.depth_m)
