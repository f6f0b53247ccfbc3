"""The learned motion estimate in the product path: :class:`NetworkTracker`.

It follows the echo the classic :class:`~mmode.dsp.tracker.MotionTracker` chose (or the
gate the user set), from line 0, with its own integrated position, so that the two traces
can be compared line for line. Like the classic tracker it matches each line against a
*keyframe* (the window of an earlier line, renewed only when the match weakens), so that the
trace does not drift as a sum of per-pair estimates would (their errors add as a random walk):

1. **Coarse, per line (numba):** the envelope of the keyframe window is matched (NCC) against
   the current line at integer shifts around the constant-velocity prediction; the best
   shift, refined by the pair's phase on the wrap nearest the classic tracker's anchor,
   places the current window on its nearest whole sample and is what the next prediction
   extrapolates. The NCC peak is the line's quality; below ``keyframe_ncc`` the line becomes
   the next keyframe.
2. **Fine, per block (the network, one batched forward pass):** the keyframe window and the
   current window at that integer shift go into the motion network
   (:func:`mmode.models.data.motion_inputs`), which gives the residual displacement (as a
   correction to the pair's own phase estimate, :func:`mmode.models.motion_data.phase_residual`,
   in units of that estimate's predicted noise, :func:`mmode.models.motion_data.output_scale_wl`;
   a correction within one such unit is not applied,
   :func:`mmode.models.motion_data.applied_correction_wl`) in local wavelengths (of the echo's
   mean frequency measured on the pair, which attenuation lowers below f0). A coarse shift off
   by a sample is corrected by the residual (the network is trained on shifts off by up to
   about 1.5 samples); velocities many times the aliasing limit are a larger integer shift
   plus a residual.

Displacement of line n: ``D(keyframe) + (p_n - p_keyframe) + residual_n`` (tracking samples
x spacing). Lines are IQ on the classic tracker's tracking grid (RF demodulated, coarse IQ
interpolated, :meth:`MotionTracker.tracking_iq`); on clutter-filtered lines when the classic
tracker follows its echo there: the very lines it tracked (:attr:`MotionTracker.tracked_iq`,
whose wall filter was settled backwards over the first lines rather than started cold).
Torch lives here, not in ``dsp/`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from numba import njit

from mmode.dsp.demod import demod_design, iq_decimation, mixer
from mmode.dsp.motion import (_ncc_curve, _phase_at, _phase_shift, _refine, _unwrap_to, inphase_depth_index,
                              inphase_weights)
from mmode.dsp.track_kernel import PHASE_MIN_COHERENCE
from mmode.dsp.tracker import MotionBlock, MotionTracker
from mmode.errors import DataError, ModelError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.models import data as mdata
from mmode.models import motion_data as kdata
from mmode.models.registry import load_model

#: Most lines tracked in one step (one demodulated band, one forward pass): about 13 ms at
#: 5 kHz, over which the echo moves at most 6 mm at the classic tracker's 0.5 m/s.
BAND_LINES = 64
#: The shipped student the product runs.
DEFAULT_MODEL = "motion_keyframe_student"
#: The input kind the streaming tracker feeds.
KEYFRAME_KIND = kdata.KEYFRAME_SPEC["kind"]
#: Keyframe renewal threshold on the envelope NCC of the coarse match: lower than the
#: classic tracker's 0.9 on the complex correlation, since at 0-10 dB SNR the envelope NCC of
#: two noisy views of the same echo rarely reaches 0.9 and renewing on every line would make
#: the trace a random walk again.
KEYFRAME_NCC = 0.75


def check_motion_card(card: dict, name: str) -> dict:
    """The input spec of a motion card the streaming tracker can feed; ModelError otherwise."""
    spec = card.get("input")
    if card.get("task") != "motion" or not isinstance(spec, dict) or spec.get("kind") != KEYFRAME_KIND:
        found = spec.get("kind") if isinstance(spec, dict) else spec
        raise ModelError(describe(f"model {name}", f"a motion model with input kind {KEYFRAME_KIND!r}", repr(found)))
    n = spec.get("n_samples")
    if not isinstance(n, int) or not 4 <= n <= 256 or spec.get("channels") != 4:
        raise ModelError(describe(f"model {name}", "input n_samples 4..256 and 4 channels",
                                  (n, spec.get("channels"))))
    return spec


class NetworkTracker:
    """Streaming learned tracker of the classic tracker's echo.

    ``prepare(meta, n_samples, classic)`` once (``classic`` prepared on the same stream),
    then ``process(block, n_done)`` per block, where ``n_done`` is the number of lines the
    classic tracker finished with that block (its :class:`MotionBlock` length): the network
    tracks the same lines, so both traces cover the same line times. ``flush(n_done)`` at
    the end. Envelope lines (no phase) give empty blocks (``active`` False). ``last_ms`` is the wall time of the last call, ``inference_ms`` that of its
    network forward pass.
    """

    def __init__(self, name: str = DEFAULT_MODEL, directory: Path | None = None,
                 keyframe_ncc: float = KEYFRAME_NCC) -> None:
        self.model, self.card = load_model(name, directory)
        self.spec = check_motion_card(self.card, name)
        self.name = name
        self.keyframe_ncc = float(keyframe_ncc)
        self.last_ms = 0.0
        self.inference_ms = 0.0
        self.meta: AcquisitionMeta | None = None
        # torch's lazy start-up and numba's compilation (or cache load) here, not in a live stream:
        # left to the first tracked block, they stalled a 5 kHz stream for 0.3 s
        n = self.spec["n_samples"]
        self.forward(np.zeros((2, 4, n), np.float32))
        _coarse_kernel(np.zeros((2, 3 * n), np.float32), np.zeros((2, 3 * n), np.complex64), n, n, 0,
                       np.zeros(n, np.float32), np.zeros(n, np.complex64), 0.25, 1.0, 1.0, np.zeros(6), 0, 1, 1,
                       KEYFRAME_NCC, np.zeros(2, np.int64), np.zeros(2), np.zeros(2, np.bool_))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network output (N,) float32 of inputs (N, 4, n): the correction of the pair's phase
        estimate in units of that estimate's noise (:func:`mmode.models.motion_data.output_scale_wl`)."""
        if len(x) == 0:
            return np.zeros(0, np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()[:, 0]
        finally:
            torch.set_num_threads(threads)

    def prepare(self, meta: AcquisitionMeta, n_samples: int, classic: MotionTracker) -> None:
        """Reset for a stream of lines of ``n_samples`` described by ``meta``. Runs the network
        once, in the calling thread (the engine's worker), whose first torch call otherwise
        stalls the first tracked block by about 0.1 s."""
        self.forward(np.zeros((2, 4, self.spec["n_samples"]), np.float32))
        self.meta = meta
        self.classic = classic
        self._n_samples = int(n_samples)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._started = False
        self._design = None  # (band length, taps, half): _demodulate
        self.depth_m = math.nan
        self.n_lines = 0
        # envelope lines (a video's grey levels) carry no phase: no learned trace, not an error
        self.active = meta.kind in ("rf", "iq") and meta.f0_hz > 0

    # -- per block -----------------------------------------------------------------------------
    def process(self, block: LineBlock, n_done: int) -> MotionBlock:
        """Queue ``block``'s lines; track the oldest ``n_done`` queued lines."""
        t0 = time.perf_counter()
        if self.meta is None:
            raise DataError(describe("motion network", "prepare(meta, n_samples, classic) before process", "none"))
        lines = np.asarray(block.lines)
        if lines.ndim != 2 or lines.shape[1] != self._n_samples:
            raise DataError(describe("motion network", f"blocks of (n, {self._n_samples}) lines", lines.shape))
        if not np.all(np.isfinite(lines.view(np.float32) if lines.dtype == np.complex64 else lines)):
            raise DataError(describe(f"motion network, block at line {block.seq}", "finite line samples",
                                     "NaN or infinite values"))
        t_s = block.t_s + np.arange(lines.shape[0], dtype=np.float64) / self.meta.prf_hz
        if not self.active or self.classic.status in ("inactive", "no_motion"):
            self._pending = []
        else:
            self._pending.append((lines, t_s))
        out = self._take(n_done)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out

    def flush(self, n_done: int) -> MotionBlock:
        """End of stream: track the ``n_done`` lines the classic tracker released in its flush."""
        t0 = time.perf_counter()
        out = self._take(n_done)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out

    def _take(self, n: int) -> MotionBlock:
        parts, taken = [], 0
        while self._pending and taken < n:
            lines, t_s = self._pending.pop(0)
            k = min(lines.shape[0], n - taken)
            if k < lines.shape[0]:
                self._pending.insert(0, (lines[k:], t_s[k:]))
            parts.append((lines[:k], t_s[:k]))
            taken += k
        self.inference_ms = 0.0
        self._inference_parts: list[float] = []
        if not parts:
            e = np.zeros(0)
            return MotionBlock(e, e.copy(), e.copy(), e.copy(), self.depth_m)
        lines, t_s = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        clutter_iq = None
        if self.classic.representation == "clutter":
            clutter_iq = self.classic.tracked_iq
            if clutter_iq is None or clutter_iq.shape[0] != len(t_s):
                raise DataError(describe("motion network", "the lines the classic tracker tracked in its last call",
                                         f"{len(t_s)} lines, the classic tracker's "
                                         f"{None if clutter_iq is None else clutter_iq.shape[0]}"))
        # in steps of BAND_LINES: the depth band the echo can reach (_band) stays narrow when a
        # call takes many lines (the catch-up after the echo is chosen, offline blocks)
        out = [self._run(lines[i : i + BAND_LINES], t_s[i : i + BAND_LINES],
                         None if clutter_iq is None else clutter_iq[i : i + BAND_LINES])
               for i in range(0, len(t_s), BAND_LINES)]
        self.inference_ms = sum(self._inference_parts)
        return MotionBlock(*(np.concatenate([getattr(o, f) for o in out]) for f in
                             ("t_s", "displacement_m", "velocity_m_s", "quality")), self.depth_m)

    def _start(self, iq0: np.ndarray) -> None:
        c = self.classic
        n = self.spec["n_samples"]
        self.depth_m = c.depth_m
        centre = float(self.meta.sample_at_depth(c.depth_m)) / c.stride
        # the coarse match uses the classic tracker's window (at least 4 stored samples of
        # coarse IQ, where the network's window may hold under three), centred on the network's
        self._w = max(n, c.window)
        self._margin = (self._w - n) // 2
        lo, hi = self._margin, iq0.shape[0] - self._w + self._margin
        self._home = int(min(max(round(centre) - n // 2, lo), hi))
        self._max_lag, self._track_lag = c.search_lags(self.meta.prf_hz)
        # stored samples beyond the band that the demodulation filter reads (RF), or the
        # band-limited interpolation of coarse IQ (scipy's resample_poly: 10 input samples a side)
        if self.meta.kind == "rf":
            dec = iq_decimation(self.meta.fs_hz, self.meta.f0_hz)
            self._pad = demod_design(1, self.meta.fs_hz, self.meta.f0_hz, dec)[2] + dec
        else:
            self._pad = 16
        self._spacing_m = c.spacing_m
        self._kf_iq = iq0[self._home : self._home + n].copy()
        # the depth its window follows until pairs are tracked, as the classic one's: its energy centroid
        index = inphase_depth_index(np.abs(self._kf_iq).astype(np.float64) ** 2)
        if index is not None:
            self.depth_m = c.depth_of(self._home + index)
        chome = self._home - self._margin
        self._kf_env = np.abs(iq0[chome : chome + self._w]).astype(np.float32)
        self._depth_w = np.zeros(n)  # in-phase weights over the window: the depth the trace measures
        self._kf_pos = 0  # keyframe window's integer shift from home
        self._kf_disp = 0.0  # keyframe's displacement, tracking samples (network)
        # the coarse stage's state (_coarse_kernel): keyframe shift and position, positions of
        # the last two lines, lines so far, the last pair's phase coherence
        self._state = np.zeros(6)
        self._prev_disp = 0.0
        self._started = True

    def _band(self, lines: np.ndarray) -> tuple[np.ndarray, int]:
        """IQ on the tracking grid of the depth band the echo can reach in these lines (its
        last position +- the classic tracker's ``max_velocity_m_s`` over the block, the
        first-line search and a window, plus the demodulation filter's reach), and the
        tracking index of its first sample. Demodulating only that band is what keeps a
        5 kHz stream cheap."""
        c = self.classic
        n = self.spec["n_samples"]
        reach = math.ceil(c.max_velocity_m_s * lines.shape[0] / self.meta.prf_hz / c.spacing_m) + self._max_lag + self._w
        centre = self._home + self._state[3]
        a = max(0, int(math.floor((centre - reach) * c.stride)) - self._pad)
        b = min(self._n_samples, int(math.ceil((centre + n + reach) * c.stride)) + self._pad)
        if self.meta.kind == "rf":
            dec = int(round(c.stride))
            a -= a % dec
            return self._demodulate(lines[:, a:b], a, dec), a // dec
        return c.tracking_iq(lines[:, a:b]), int(round(a / c.stride))

    def _demodulate(self, rf: np.ndarray, first: int, dec: int) -> np.ndarray:
        """:func:`mmode.dsp.demod.rf_to_iq` of a band of RF samples starting at stored sample
        ``first`` (a multiple of ``dec``), with the mixer of the whole line (its phase at
        ``first``) and the filter designed once per band length rather than on every block."""
        from scipy import signal

        n = rf.shape[1]
        if self._design is None or self._design[0] != n:
            self._design = (n, *demod_design(n, self.meta.fs_hz, self.meta.f0_hz, dec)[1:])
        _, taps, half = self._design
        carrier = mixer(np.arange(first, first + n), self.meta.fs_hz, self.meta.f0_hz).astype(np.complex64)
        full = signal.upfirdn(taps, rf.astype(np.float32) * carrier, up=1, down=dec, axis=1)
        return np.ascontiguousarray(full[:, half // dec : half // dec + -(-n // dec)], dtype=np.complex64)

    def _run(self, lines: np.ndarray, t_s: np.ndarray, clutter_iq: np.ndarray | None) -> MotionBlock:
        """Track ``lines`` (m, n_samples) at times ``t_s`` (m,); on ``clutter_iq`` (m, n_iq),
        the classic tracker's clutter-filtered tracking IQ of them, when it is given."""
        first = not self._started
        if clutter_iq is not None:
            iq, offset = clutter_iq, 0
            if first:
                self._start(iq[0])
        else:
            if first:  # line 0 whole (the echo's window and keyframe), then the band it can reach
                self._start(self.classic.tracking_iq(lines[:1])[0])
            iq, offset = self._band(lines)
        n = self.spec["n_samples"]
        m = iq.shape[0]
        home = self._home - offset
        pos = np.zeros(m, np.int64)
        renew = np.zeros(m, np.bool_)
        quality = np.ones(m)
        start = 1 if first else 0
        self._state[4] = self.n_lines
        c = self.classic
        # the kernel renews a copy of the keyframe window; the one carried in stays for the pairs below
        _coarse_kernel(np.abs(iq).astype(np.float32), np.ascontiguousarray(iq, dtype=np.complex64), home - self._margin,
                       self._w, self._margin, self._kf_env, self._kf_iq.astype(np.complex64), c.f0_cycles_per_sample,
                       c.sigma_pred(self.meta.prf_hz), c.sigma_ncc, self._state, start, self._max_lag, self._track_lag,
                       self.keyframe_ncc, pos, quality, renew)
        idx = np.arange(start, m)
        kf_id = np.cumsum(renew) - renew  # keyframes before each line: 0 is the one carried in
        renewed = np.flatnonzero(renew)
        cols = home + pos[:, None] + np.arange(n)[None, :]
        kf_iqs = np.concatenate([self._kf_iq[None, :], iq[renewed[:, None], cols[renewed]]])
        kf_pos = np.concatenate([[self._kf_pos], pos[renewed]])
        ref = kf_iqs[kf_id[idx]]
        shift = pos[idx] - kf_pos[kf_id[idx]]
        cur = kdata.realign(iq[idx[:, None], cols[idx]], shift, self.classic.f0_cycles_per_sample)
        t0 = time.perf_counter()
        x = mdata.motion_inputs(ref, cur)
        residual_wl = kdata.applied_correction_wl(self.forward(x), x) + kdata.phase_residual(x)
        self._inference_parts.append((time.perf_counter() - t0) * 1e3)
        # the depth the trace measures, as the classic tracker's (MotionTracker._measured_depth):
        # the window at the first line, weighed as the coherent pairs' phases weigh it
        self._depth_w += inphase_weights(ref, cur, PHASE_MIN_COHERENCE)
        index = inphase_depth_index(self._depth_w)
        if index is not None:
            self.depth_m = c.depth_of(self._home + index)
        f_cycles = kdata.local_cycles_per_sample(ref, cur, self.classic.f0_cycles_per_sample)
        residual = residual_wl.astype(np.float64) * 2.0 / f_cycles  # local wavelengths -> tracking samples
        disp = np.zeros(m)
        kf_disp = np.empty(len(kf_pos))
        kf_disp[0] = self._kf_disp
        for j, i in enumerate(idx):  # a keyframe's displacement is that of the line it was taken from
            disp[i] = kf_disp[kf_id[i]] + shift[j] + residual[j]
            if renew[i]:
                kf_disp[kf_id[i] + 1] = disp[i]
        self._kf_iq, self._kf_pos, self._kf_disp = kf_iqs[-1], int(kf_pos[-1]), float(kf_disp[-1])
        disp_m = disp * self._spacing_m
        vel = np.diff(np.concatenate(([self._prev_disp], disp_m))) * self.meta.prf_hz
        if first:
            vel[0] = 0.0
        self._prev_disp = float(disp_m[-1])
        self.n_lines += m
        return MotionBlock(t_s, disp_m, vel, np.clip(quality, 0.0, 1.0), self.depth_m)


@njit(nogil=True, cache=True)
def _coarse_kernel(env, iq, home, n, margin, kf_env, kf_iq, f0_cycles, sigma_pred, sigma_ncc, state, start, max_lag,
                   track_lag, keyframe_ncc, pos, quality, renew):
    """The coarse, sequential stage over the lines of a block: for each line ``i >= start`` of
    ``env`` (m, k) (envelopes of the band, the window of ``n`` samples at ``home + p``), the integer shift
    ``pos[i]`` whose window best matches the keyframe envelope ``kf_env`` (n,) by NCC, searched
    within ``max_lag`` (first two lines of the stream) or ``track_lag`` of the
    constant-velocity prediction; ``quality[i]`` its NCC peak; ``renew[i]`` where that is
    below ``keyframe_ncc`` (the line becomes the keyframe: ``kf_env`` and ``kf_iq`` are replaced).

    The line's position, which the next line's prediction extrapolates, is refined by the
    phase of the network's window (``kf_iq`` (w,) against ``iq`` (m, k) at ``home + margin +
    p``, the carrier of the shift taken out as :func:`mmode.models.motion_data.realign` does,
    the rest read at the echo's mean frequency from the pair's depth autocorrelation, as the
    network's residual and the classic tracker's phase are (with f0 instead, the part within a
    sample read short by the ratio of the two, 13 % at 97 mm in the simulator's views), on the
    wrap nearest the classic tracker's anchor (:func:`mmode.dsp.track_kernel.track_kernel`:
    from the third line the mean of the NCC's sub-sample peak and the constant-velocity
    prediction weighted by their precisions ``sigma_ncc`` and ``sigma_pred``, tracking samples;
    the prediction's velocity is trusted as far as the last pair's phase coherence; below
    ``PHASE_MIN_COHERENCE`` the phase is noise and the anchor itself is taken), and
    ``pos[i]`` moves by its whole samples so that the network's window is centred on it: a
    wrong NCC peak under a weak match (clutter-filtered coarse IQ) is neither passed to the
    network nor extrapolated into the next search. ``state`` (6,) float64 in and out:
    keyframe shift, keyframe position, positions of the two previous lines (tracking
    samples), (in) the stream's line count before this block, the last pair's coherence."""
    m, k = env.shape
    w = kf_iq.shape[0]
    for i in range(start, m):
        kf_pos, kf_coarse, c0, c1 = state[0], state[1], state[2], state[3]
        line = state[4] + i
        lag = max_lag if line < 2 else track_lag
        # constant velocity, trusted as far as the last pair was coherent (as the classic tracker)
        pred = c1 + (state[5] * state[5] * (c1 - c0) if line >= 2 else 0.0)
        centre = int(kf_pos) + int(np.round(pred - kf_coarse))
        lo = max(home + centre - lag, 0)
        hi = min(home + centre + lag, k - n)
        if hi >= lo:
            ncc, _ = _ncc_curve(kf_env, env[i], 0, lo, hi)
            b = int(np.argmax(ncc))
            best_s, best = lo + b, ncc[b]
            frac, _ = _refine(ncc, b)
            sub = min(max(frac, -0.5), 0.5)
        else:  # no room to search: stay at the prediction
            best_s, best, sub = min(max(home + centre, 0), k - n), 0.0, 0.0
        p = best_s - home
        target = sub
        if line >= 2:
            w_pred, w_ncc = 1.0 / (sigma_pred * sigma_pred), 1.0 / (sigma_ncc * sigma_ncc)
            target = (w_pred * (pred - (kf_coarse + (p - kf_pos))) + w_ncc * sub) / (w_pred + w_ncc)
        phase, state[5], depth_phase = _phase_at(kf_iq, iq[i], best_s + margin)
        if state[5] >= PHASE_MIN_COHERENCE:
            # the carrier phase of the whole-sample shift taken out (as motion_data.realign), the
            # rest at the echo's own mean frequency (as the network's residual)
            whole, period = _phase_shift(phase, depth_phase, p - kf_pos, f0_cycles)
            res = _unwrap_to(whole - (p - kf_pos), target, period)
        else:  # the phase is noise: the anchor itself, as the classic tracker
            res = target
        step = int(np.round(res))
        if 0 <= best_s + step <= k - n:  # the window moves onto the refined position
            best_s += step
            p += step
            res -= step
        pos[i] = p
        quality[i] = best
        coarse = kf_coarse + (p - kf_pos) + res
        state[2], state[3] = c1, coarse
        if quality[i] < keyframe_ncc:
            renew[i] = True
            state[0], state[1] = p, coarse
            for j in range(n):
                kf_env[j] = env[i, best_s + j]
            for j in range(w):
                kf_iq[j] = iq[i, best_s + margin + j]
