"""The M-mode RF simulator: recordings (:func:`simulate`, :func:`simulate_sequence`) with
their ground truth, and an endless simulated probe (:class:`SimulatedProbe`).

Scenes (anatomy and motion) come from :mod:`mmode.ingest.scenarios`; their RF lines, with
the signal model (pulse, attenuation, noise, int16 quantisation), from
:mod:`mmode.ingest.sim_render`.

Determinism: every random draw (anatomy, speckle, beat intervals, noise) comes from
generators seeded with ``seed``. Noise is drawn in chunks of ``NOISE_CHUNK_LINES`` lines
keyed by the absolute line index, so a recording and a probe stream with the same
parameters give identical lines however they are cut into blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mmode.errors import UsageError
from mmode.ingest.meta import CLASSES, AcquisitionMeta, LineBlock, Truth
from mmode.ingest.recording import Annotation
from mmode.ingest.scenarios import PHANTOMS, SCENARIOS, build_scene
from mmode.ingest.scene import Scene
from mmode.ingest.sim_render import (
    MAX_RECORDING_BYTES,
    MAX_SAMPLES,
    RENDER_CHUNK_LINES,
    Quantiser,
    Renderer,
    check_params,
    scanner_iq,
)

#: Spacing of the uniform part of the truth grid, metres.
TRUTH_STEP_M = 1e-3
#: Distance below the top of a fold of the truth grid's depth there, metres.
FOLD_STEP_M = 1e-6
_DEFAULT_BREATH_PER_MIN = 15.0


@dataclass(frozen=True)
class SimResult:
    """A simulated recording.

    meta : acquisition metadata (kind "rf").
    lines : (n_lines, n_samples) int16 RF.
    truth : per-line labels and axial displacement on a depth grid (every 1 mm plus the
        line-0 depth of every kink of the displacement profile, see :func:`_truth_depths`).
    timestamps_s : (n_lines,) float64 acquisition times, seconds.
    annotations : labelled spans (one per segment for :func:`simulate_sequence`).
    """

    meta: AcquisitionMeta
    lines: np.ndarray
    truth: Truth
    timestamps_s: np.ndarray
    annotations: tuple[Annotation, ...] = field(default=())


@dataclass
class _Setup:
    """Everything fixed before the first line: metadata, scene, noise level, truth grid
    (``depths_m``, see :func:`_truth_depths`)."""

    meta: AcquisitionMeta
    n_samples: int
    renderer: Renderer
    quantiser: Quantiser
    depths_m: np.ndarray
    classes: tuple[str, ...] = CLASSES

    def lines(self, first_line: int, n_lines: int, quantiser: Quantiser | None = None) -> np.ndarray:
        """int16 lines ``first_line .. first_line + n_lines`` (line i at time i / prf_hz),
        rendered in chunks so that memory stays at the int16 output plus one chunk."""
        q = self.quantiser if quantiser is None else quantiser
        out = np.empty((n_lines, self.n_samples), dtype=np.int16)
        for a in range(0, n_lines, RENDER_CHUNK_LINES):
            b = min(a + RENDER_CHUNK_LINES, n_lines)
            t_s = np.arange(first_line + a, first_line + b, dtype=np.float64) / self.meta.prf_hz
            out[a:b] = q.quantise(self.renderer.clean(t_s), first_line + a)
        return out

    def truth(self, t_s: np.ndarray) -> Truth:
        """Truth at times ``t_s``; displacement of the tissue found at ``depths_m`` in line 0."""
        scene = self.renderer.scene
        disp = _displacement_since_line0(scene, self.depths_m, t_s)
        labels = scene.motion(t_s).labels
        return Truth(labels=labels, classes=self.classes, depths_m=self.depths_m, displacement_m=disp.astype(np.float32))


def _line0_map(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(y, z)`` (n_knots,) metres of the map from line-0 depth ``y`` to the rest depth
    ``z`` of the tissue found there: linear between knots, ``y - z`` constant beyond the ends.

    The scene moves tissue from its rest depth ``z`` to ``z + d(z, t)``, and ``d(z, 0)`` is
    linear in ``z`` between the profile breakpoints (:meth:`Scene.breakpoints_m`) and
    constant beyond them, so the knots are the breakpoints at their line-0 depths. Where the
    scene folds tissue at t = 0 (a cardiac view whose heart drifts up by more than the gap
    between chest wall and RV wall: two rest depths at one line-0 depth), the shallower
    tissue is the one found, down to the fold's top ``M``; the deeper tissue takes over just
    below it. ``y`` is then ``M`` twice, with the fold top's ``z`` and then that of the first
    deeper tissue at ``M``: ``y`` is non-decreasing and repeats exactly at each fold.
    """
    zn = scene.breakpoints_m()
    yn = zn + scene.displacement_m(zn, np.zeros(1))[0]
    ys, zs = [yn[0]], [zn[0]]
    hidden = False  # the previous breakpoint lies under shallower tissue
    for i in range(1, zn.shape[0]):
        top = ys[-1]
        if yn[i] <= top:
            hidden = True
            continue
        if hidden:  # rising out of a fold: the tissue at line-0 depth `top` below it
            zs.append(zn[i - 1] + (top - yn[i - 1]) / (yn[i] - yn[i - 1]) * (zn[i] - zn[i - 1]))
            ys.append(top)
            hidden = False
        ys.append(yn[i])
        zs.append(zn[i])
    if hidden:  # beyond the last breakpoint d is constant: the tissue rises out of the fold there
        zs.append(zn[-1] + ys[-1] - yn[-1])
        ys.append(ys[-1])
    return np.asarray(ys), np.asarray(zs)


def _line0_rest_depths(scene: Scene, depths_m: np.ndarray) -> np.ndarray:
    """Rest depths (n,) metres of the tissue found at line-0 depths ``depths_m`` (n,): the
    exact solution of ``z + d(z, 0) = depths_m`` (the shallower one in a fold, see
    :func:`_line0_map`). Exact for any set of depths, a single one included."""
    y = np.asarray(depths_m, dtype=np.float64)
    ys, zs = _line0_map(scene)
    if ys.shape[0] == 1:
        return y - (ys[0] - zs[0])
    k = np.clip(np.searchsorted(ys, y) - 1, 0, ys.shape[0] - 2)  # ys[k] < y <= ys[k + 1]
    dy = ys[k + 1] - ys[k]  # 0 only at a fold's top when it is the first knot: z = zs[k] there
    frac = np.divide(y - ys[k], dy, out=np.zeros_like(y), where=dy > 0)
    z = zs[k] + frac * (zs[k + 1] - zs[k])
    z = np.where(y < ys[0], y - (ys[0] - zs[0]), z)
    return np.where(y > ys[-1], y - (ys[-1] - zs[-1]), z)


def _displacement_since_line0(scene: Scene, depths_m: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """(len(t_s), len(depths_m)) axial displacement since t = 0 of the tissue that sits at
    ``depths_m`` at t = 0 (Lagrangian, indexed by line-0 depth), metres; exact for any depths."""
    z = _line0_rest_depths(scene, depths_m)
    return scene.displacement_m(z, t_s) - scene.displacement_m(z, np.zeros(1))


def _truth_depths(scene: Scene, line_depth_m: float) -> np.ndarray:
    """Truth grid (n_depths,) metres, strictly increasing: every ``TRUTH_STEP_M`` from 0,
    ``line_depth_m`` (the last sample), the line-0 depth of every profile breakpoint in that
    span and, at a fold, a depth ``FOLD_STEP_M`` below its top.

    The breakpoints are where the truth has a kink (the interfaces: pericardium, lung line,
    pleura) and a fold's top is where it jumps; in between it is linear in line-0 depth, so
    linear interpolation on this grid gives the exact truth at any depth of the line but
    within ``FOLD_STEP_M`` below a fold's top.
    """
    ys, _ = _line0_map(scene)
    folds = ys[1:][np.diff(ys) == 0] + FOLD_STEP_M
    uniform = np.arange(0.0, line_depth_m + 1e-12, TRUTH_STEP_M)
    extra = np.concatenate((ys, folds, [line_depth_m]))
    return np.union1d(uniform, extra[(extra >= 0.0) & (extra <= line_depth_m)])


def _setup(
    scenario: str,
    *,
    prf_hz: float,
    f0_hz: float | None,
    fs_hz: float | None,
    depth_m: float | None,
    snr_db: float,
    rate_per_min: float | None,
    breath_per_min: float | None,
    seed: int,
    bandwidth: float,
    attenuation_db_cm_mhz: float | None,
    n_samples: int | None,
    c_m_s: float,
) -> _Setup:
    if scenario not in SCENARIOS and scenario not in PHANTOMS:
        raise UsageError(f"unknown scenario {scenario!r}; choose one of {', '.join([*SCENARIOS, *PHANTOMS])}")
    info = SCENARIOS.get(scenario) or PHANTOMS[scenario]
    f0_hz = info.f0_hz if f0_hz is None else float(f0_hz)
    fs_hz = info.fs_hz if fs_hz is None else float(fs_hz)
    if depth_m is None:
        depth_m = info.depth_m if n_samples is None else n_samples * c_m_s / (2 * fs_hz)
    check_params(float(prf_hz), f0_hz, fs_hz, float(depth_m), bandwidth, n_samples)
    if not math.isfinite(snr_db):
        raise UsageError(f"snr_db must be finite, got {snr_db}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
    heart, breath = _rates(scenario, rate_per_min, breath_per_min)
    alpha = info.attenuation_db_cm_mhz if attenuation_db_cm_mhz is None else float(attenuation_db_cm_mhz)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise UsageError(f"attenuation_db_cm_mhz must be >= 0, got {alpha}")
    if n_samples is None:
        n_samples = int(round(2 * depth_m / c_m_s * fs_hz))
        if not 0 < n_samples <= MAX_SAMPLES:
            raise UsageError(f"depth_m={depth_m} at fs_hz={fs_hz:g} gives {n_samples} samples; limit {MAX_SAMPLES}")
    meta = AcquisitionMeta(
        kind="rf",
        fs_hz=fs_hz,
        f0_hz=f0_hz,
        prf_hz=float(prf_hz),
        c_m_s=c_m_s,
        t0_s=0.0,
        probe="mmode simulator",
        description=f"simulated {scenario}, seed {seed}, SNR {snr_db:g} dB",
    )
    line_depth_m = float(meta.depth_m(n_samples - 1))
    scene = build_scene(scenario, np.random.default_rng([seed, 0x5CE7E]), line_depth_m, heart, breath, alpha)
    renderer = Renderer(scene, meta, n_samples, bandwidth)
    quantiser = Quantiser(renderer, snr_db, seed)
    classes = CLASSES if scenario in SCENARIOS else (scenario,)
    return _Setup(meta, n_samples, renderer, quantiser, _truth_depths(scene, line_depth_m), classes)


def _rates(scenario: str, rate_per_min: float | None, breath_per_min: float | None) -> tuple[float, float]:
    """(heart rate, breathing rate) per minute; ``rate_per_min`` is the scenario's main rhythm
    (a phantom's oscillation rate, passed as the heart rate)."""
    info = SCENARIOS.get(scenario) or PHANTOMS[scenario]
    cardiac = scenario.startswith("cardiac") or scenario in PHANTOMS
    if cardiac:
        heart = info.rate_per_min if rate_per_min is None else float(rate_per_min)
        breath = _DEFAULT_BREATH_PER_MIN if breath_per_min is None else float(breath_per_min)
    else:
        if rate_per_min is not None and breath_per_min is not None and rate_per_min != breath_per_min:
            raise UsageError(f"{scenario}: rate_per_min is the breathing rate; give it or breath_per_min, not both")
        given = rate_per_min if rate_per_min is not None else breath_per_min
        breath = (info.rate_per_min or _DEFAULT_BREATH_PER_MIN) if given is None else float(given)
        heart = 60.0
    for name, v, lo, hi in (("heart rate", heart, 20.0, 300.0), ("breathing rate", breath, 2.0, 80.0)):
        if not lo <= v <= hi:
            raise UsageError(f"{scenario}: {name} must be in [{lo:g}, {hi:g}] per minute, got {v:g}")
    return heart, breath


def _n_lines(seconds: float, prf_hz: float, n_samples: int) -> int:
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"seconds must be > 0, got {seconds}")
    n = int(round(seconds * prf_hz))
    if n < 1:
        raise UsageError(f"{seconds} s at {prf_hz:g} Hz is less than one line")
    if n * n_samples * 2 > MAX_RECORDING_BYTES:
        raise UsageError(
            f"{n} lines x {n_samples} samples is {n * n_samples * 2 / 2**30:.1f} GiB; "
            f"limit {MAX_RECORDING_BYTES / 2**30:g} GiB (shorten it or use SimulatedProbe)"
        )
    return n


def simulate(
    scenario: str,
    *,
    seconds: float = 4.0,
    prf_hz: float = 1000.0,
    f0_hz: float | None = None,
    fs_hz: float | None = None,
    depth_m: float | None = None,
    snr_db: float = 30.0,
    rate_per_min: float | None = None,
    breath_per_min: float | None = None,
    seed: int = 0,
    bandwidth: float = 0.6,
    attenuation_db_cm_mhz: float | None = None,
    n_samples: int | None = None,
    c_m_s: float = 1540.0,
    iq_fs_hz: float | None = None,
) -> SimResult:
    """Simulate ``seconds`` of M-mode RF (or a scanner's IQ) for one scenario (a key of
    ``SCENARIOS``) or test phantom (``PHANTOMS``).

    Parameters
    ----------
    scenario : scenario name; ``mmode.ingest.scenarios.SCENARIOS`` lists them.
    seconds : duration; ``round(seconds * prf_hz)`` lines.
    prf_hz : lines per second.
    f0_hz, fs_hz : transmit centre frequency and RF sampling rate (None: the scenario's
        probe, 5/20 MHz for lung views, 3/12 MHz for the cardiac views).
    depth_m : depth of the last sample (None: the scenario's view, or from ``n_samples``).
    snr_db : signal-to-noise ratio, see the module docstring for the exact definition.
    rate_per_min : the scenario's main rhythm: heart rate for the cardiac views, breathing
        rate for the others (None: scenario default, 70/min and 20/min).
    breath_per_min : breathing rate (cardiac views: respiratory drift of the heart, default
        15/min; lung views: same as ``rate_per_min``).
    seed : seeds anatomy, speckle, beat intervals and noise; same seed, same bytes.
    bandwidth : -6 dB fractional bandwidth of the pulse.
    attenuation_db_cm_mhz : tissue attenuation (None: the scenario's, 0.5 lung, 0.3 heart).
    n_samples : samples per line; overrides ``depth_m`` when given.
    c_m_s : speed of sound.
    iq_fs_hz : when given, the lines are what a scanner stores instead of RF: complex IQ at
        this complex sample rate along depth, demodulated at ``f0_hz`` from the int16 RF
        (:func:`scanner_iq`; ``fs_hz`` must be an integer multiple of it). 1e6 at 2.5 MHz is
        one sample every 0.77 mm, coarser than half a wavelength (0.31 mm), as scanners export.

    Returns
    -------
    SimResult with int16 lines (n_lines, n_samples) (complex64 (n_lines, n_iq) IQ with
    ``iq_fs_hz``, in the same units), truth (labels per line; axial
    displacement relative to line 0, positive away from the probe, on a grid of every 1 mm
    plus the profile's kinks, exact under linear interpolation) and
    timestamps ``i / prf_hz``. Raises UsageError for impossible parameters.
    """
    setup = _setup(
        scenario,
        prf_hz=prf_hz,
        f0_hz=f0_hz,
        fs_hz=fs_hz,
        depth_m=depth_m,
        snr_db=snr_db,
        rate_per_min=rate_per_min,
        breath_per_min=breath_per_min,
        seed=seed,
        bandwidth=bandwidth,
        attenuation_db_cm_mhz=attenuation_db_cm_mhz,
        n_samples=n_samples,
        c_m_s=c_m_s,
    )
    n = _n_lines(seconds, setup.meta.prf_hz, setup.n_samples)
    t_s = np.arange(n, dtype=np.float64) / setup.meta.prf_hz
    lines, meta = setup.lines(0, n), setup.meta
    if iq_fs_hz is not None:
        lines = scanner_iq(lines, meta.fs_hz, meta.f0_hz, iq_fs_hz)
        meta = meta.replace(kind="iq", fs_hz=float(iq_fs_hz),
                            description=f"{meta.description}, IQ at {iq_fs_hz / 1e6:g} MHz")
    return SimResult(meta, lines, setup.truth(t_s), t_s)



def simulate_sequence(
    segments: list[tuple[str, float]],
    *,
    prf_hz: float = 1000.0,
    f0_hz: float | None = None,
    fs_hz: float | None = None,
    depth_m: float | None = None,
    snr_db: float = 30.0,
    rate_per_min: float | None = None,
    breath_per_min: float | None = None,
    seed: int = 0,
    bandwidth: float = 0.6,
    attenuation_db_cm_mhz: float | None = None,
    n_samples: int | None = None,
    c_m_s: float = 1540.0,
) -> SimResult:
    """Simulate a recording whose class changes: ``segments`` is ``[(scenario, seconds), ...]``.

    Parameters are those of :func:`simulate`; defaults (probe, depth, rates) come from the
    first segment. Every segment's scene is built from the same seed, so consecutive lung
    views share chest wall, pleura and breathing phase and the change is seamless; time,
    heartbeat and breathing run on across segments. The noise level and int16 scale are
    calibrated on the first segment. Truth displacement is relative to the first line of the
    recording, on the union of every segment's truth grid; ``annotations`` holds one span
    per segment labelled with its class.
    ``rate_per_min`` applies to every segment as that scenario's main rhythm.
    """
    if not segments:
        raise UsageError("simulate_sequence needs at least one (scenario, seconds) segment")
    phantoms = [name for name, _ in segments if name in PHANTOMS]
    if phantoms:
        raise UsageError(f"a sequence chains clinical scenarios; {phantoms[0]} is a test phantom (simulate it alone)")
    params = dict(
        prf_hz=prf_hz,
        f0_hz=f0_hz,
        fs_hz=fs_hz,
        depth_m=depth_m,
        snr_db=snr_db,
        breath_per_min=breath_per_min,
        seed=seed,
        bandwidth=bandwidth,
        attenuation_db_cm_mhz=attenuation_db_cm_mhz,
        n_samples=n_samples,
        c_m_s=c_m_s,
    )
    first = _setup(segments[0][0], rate_per_min=rate_per_min, **params)
    # pin the probe and line length of the first segment for every later one
    params.update(f0_hz=first.meta.f0_hz, fs_hz=first.meta.fs_hz, n_samples=first.n_samples, depth_m=None)
    counts = [_n_lines(sec, first.meta.prf_hz, first.n_samples) for _, sec in segments]
    if sum(counts) * first.n_samples * 2 > MAX_RECORDING_BYTES:
        raise UsageError(f"{sum(counts)} lines x {first.n_samples} samples exceeds the in-memory limit")
    setups = [first] + [_setup(scenario, rate_per_min=rate_per_min, **params) for scenario, _ in segments[1:]]
    # every segment's kinks: the grid stays exact under linear interpolation in each segment
    depths = first.depths_m
    for seg in setups[1:]:
        depths = np.union1d(depths, seg.depths_m)
    lines = np.empty((sum(counts), first.n_samples), dtype=np.int16)
    labels = np.empty(sum(counts), dtype=np.int64)
    disp = np.empty((sum(counts), depths.shape[0]), dtype=np.float32)
    annotations = []
    start = 0
    for (scenario, _), n, seg in zip(segments, counts, setups):
        t_s = np.arange(start, start + n, dtype=np.float64) / first.meta.prf_hz
        lines[start : start + n] = seg.lines(start, n, quantiser=first.quantiser)
        scene = seg.renderer.scene
        disp[start : start + n] = _displacement_since_line0(scene, depths, t_s)
        labels[start : start + n] = scene.motion(t_s).labels
        annotations.append(Annotation(start, start + n, SCENARIOS[scenario].label))
        start += n
    names = " -> ".join(f"{s} {sec:g} s" for s, sec in segments)
    meta = first.meta.replace(description=f"simulated sequence {names}, seed {seed}, SNR {snr_db:g} dB")
    truth = Truth(labels=labels, classes=CLASSES, depths_m=depths, displacement_m=disp)
    t_all = np.arange(start, dtype=np.float64) / first.meta.prf_hz
    return SimResult(meta, lines, truth, t_all, tuple(annotations))


#: Span (s) over which :meth:`SimulatedProbe.closing_loop_s` compares a loop's restart with its
#: start (a quarter of a 70/min beat: the position and the phase of the motion).
LOOP_MATCH_S = 0.25
#: Time step (s) of that comparison and of the loop lengths it tries.
LOOP_STEP_S = 0.002


class SimulatedProbe:
    """An endless, deterministic simulated probe streaming one scenario.

    Takes the parameters of :func:`simulate` (except ``seconds``). Lines are rendered on
    demand (no precomputed loop): line ``i`` is at time ``i / prf_hz`` and is identical to
    line ``i`` of ``simulate(...)`` with the same parameters, however the stream is cut into
    blocks. The irregular heartbeat schedule grows as time advances, so an endless stream
    never repeats. Single-threaded use only (one consumer calls :meth:`next_block`).
    """

    def __init__(
        self,
        scenario: str,
        *,
        prf_hz: float = 1000.0,
        f0_hz: float | None = None,
        fs_hz: float | None = None,
        depth_m: float | None = None,
        snr_db: float = 30.0,
        rate_per_min: float | None = None,
        breath_per_min: float | None = None,
        seed: int = 0,
        bandwidth: float = 0.6,
        attenuation_db_cm_mhz: float | None = None,
        n_samples: int | None = None,
        c_m_s: float = 1540.0,
    ) -> None:
        self.scenario = scenario
        self._setup = _setup(
            scenario,
            prf_hz=prf_hz,
            f0_hz=f0_hz,
            fs_hz=fs_hz,
            depth_m=depth_m,
            snr_db=snr_db,
            rate_per_min=rate_per_min,
            breath_per_min=breath_per_min,
            seed=seed,
            bandwidth=bandwidth,
            attenuation_db_cm_mhz=attenuation_db_cm_mhz,
            n_samples=n_samples,
            c_m_s=c_m_s,
        )
        self.meta: AcquisitionMeta = self._setup.meta
        self.n_samples: int = self._setup.n_samples
        self.next_seq = 0

    def next_block(self, n_lines: int) -> LineBlock:
        """The next ``n_lines`` lines as a LineBlock (int16, (n_lines, n_samples))."""
        if not 0 < n_lines <= 1 << 20:
            raise UsageError(f"n_lines must be in [1, {1 << 20}], got {n_lines}")
        seq = self.next_seq
        lines = self._setup.lines(seq, n_lines)
        self.next_seq = seq + n_lines
        return LineBlock(seq=seq, t_s=seq / self.meta.prf_hz, lines=lines)

    def closing_loop_s(self, shortest_s: float, longest_s: float) -> float:
        """The loop length in ``shortest_s .. longest_s`` (whole lines; the least whole number
        of lines above ``shortest_s`` when none fits in the range) after which the scene's
        motion best repeats its start: the least mean square difference, over the truth's
        depths and the first :data:`LOOP_MATCH_S`, between the displacement from that time on
        and from time 0, on a :data:`LOOP_STEP_S` grid. A replayed loop of that length jumps
        least where it restarts and keeps its rhythms: a whole breath of a lung view; for a
        beating heart that also moves with the breath, about a breath and whole beats."""
        if not 0 < shortest_s <= longest_s:
            raise UsageError(f"closing_loop_s: need 0 < shortest_s <= longest_s, got {shortest_s}, {longest_s}")
        prf_hz = self.meta.prf_hz
        lo_lines, hi_lines = max(1, math.ceil(shortest_s * prf_hz - 1e-9)), math.floor(longest_s * prf_hz + 1e-9)
        if hi_lines < lo_lines:  # no whole number of lines in the range: the nearest
            return lo_lines / prf_hz
        w = round(LOOP_MATCH_S / LOOP_STEP_S)
        lengths_s = np.arange(lo_lines, hi_lines + 1) / prf_hz
        starts = np.unique(np.rint(lengths_s / LOOP_STEP_S)).astype(np.int64)
        d = self._setup.truth(np.arange(starts[-1] + w) * LOOP_STEP_S).displacement_m
        cost = [float(np.mean((d[k : k + w] - d[:w]) ** 2)) for k in starts]
        best_s = float(starts[int(np.argmin(cost))]) * LOOP_STEP_S
        return min(max(round(best_s * prf_hz), lo_lines), hi_lines) / prf_hz

    def truth(self, seq: int, n_lines: int) -> Truth:
        """Ground truth of lines ``seq .. seq + n_lines`` (displacement relative to line 0)."""
        if seq < 0 or not 0 < n_lines <= 1 << 20:
            raise UsageError(f"truth: need seq >= 0 and 0 < n_lines <= {1 << 20}, got {seq}, {n_lines}")
        return self._setup.truth(np.arange(seq, seq + n_lines, dtype=np.float64) / self.meta.prf_hz)
