"""Physics-based M-mode RF simulator: recordings (:func:`simulate`, :func:`simulate_sequence`)
and an endless simulated probe (:class:`SimulatedProbe`).

Signal model
------------
Each line is the sum of the echoes of point reflectors (speckle scatterers and specular
interfaces, see :mod:`mmode.ingest.scenarios`). A reflector of amplitude ``a`` at depth
``z`` (round-trip delay ``tau = 2 z / c``) contributes, at fast time ``t``::

    a * A(z) * exp(-(t - tau)^2 / (2 sigma_t^2)) * cos(2 pi f(z) (t - tau))

- Gaussian pulse: the -6 dB fractional bandwidth ``bandwidth`` fixes the spectral standard
  deviation ``sigma_f = bandwidth * f0 / (2 sqrt(2 ln 2))`` and ``sigma_t = 1 / (2 pi sigma_f)``.
- Attenuation ``alpha`` (dB/cm/MHz), linear in frequency, round trip: the transfer function
  ``exp(-beta f z)`` with ``beta = 2 alpha ln(10)/20 * 1e-4`` (Np/(m Hz)) keeps the spectrum
  Gaussian, scales the amplitude by ``A(z) = exp(-beta z (f0 - beta sigma_f^2 z / 2))`` and
  shifts the centre frequency down to ``f(z) = f0 - beta sigma_f^2 z`` (exact for a Gaussian
  spectrum). With ``alpha = 0`` the echo is the transmitted pulse.
- The delay is evaluated at the reflector's continuous depth, so a sub-sample displacement
  ``dz`` gives the exact phase shift ``-4 pi f dz / c`` at a fixed sample. The carrier
  ``f`` of a reflector is the downshifted frequency at its rest depth (the echo of a moving
  reflector is the same pulse, purely delayed); its amplitude ``A`` follows its current depth.
- No diffraction or spreading loss: the beam is treated as focused over the whole depth.
- Electronic noise: white Gaussian, added after the echoes. ``snr_db`` is
  ``10 log10(P_signal / sigma_n^2)`` where ``P_signal`` is the mean square of the noiseless
  RF over all samples of 16 calibration lines spread over the first 4 s of the scene (so it
  does not depend on the PRF or the duration requested).
- int16 quantisation: the RF is scaled so that the calibration peak plus 4 sigma_n maps to
  70 % of full scale (about 3 dB headroom); the rare samples beyond full scale are clipped.

Determinism: every random draw (anatomy, speckle, beat intervals, noise) comes from
generators seeded with ``seed``. Noise is drawn in chunks of ``NOISE_CHUNK_LINES`` lines
keyed by the absolute line index, so a recording and a probe stream with the same
parameters give identical lines however they are cut into blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy import signal

from mmode.errors import UsageError
from mmode.ingest.meta import CLASSES, AcquisitionMeta, LineBlock, Truth
from mmode.ingest.recording import Annotation
from mmode.ingest.scenarios import BEAM_HALF_SIGMAS, BEAM_SIGMA_X_M, PHANTOMS, SCENARIOS, Scene, build_scene

NOISE_CHUNK_LINES = 256
#: Pulse support either side of its centre, in standard deviations of the Gaussian envelope
#: (the envelope there is exp(-3.5**2 / 2), -53 dB).
PULSE_HALF_SIGMAS = 3.5
#: Lines rendered per kernel call (bounds the temporary motion arrays).
RENDER_CHUNK_LINES = 1024
#: Largest recording :func:`simulate` builds in memory (int16 lines), bytes.
MAX_RECORDING_BYTES = 2 << 30
#: Largest line :func:`simulate` makes, samples.
MAX_SAMPLES = 1 << 18
#: Spacing of the uniform part of the truth grid, metres.
TRUTH_STEP_M = 1e-3
#: Distance below the top of a fold of the truth grid's depth there, metres.
FOLD_STEP_M = 1e-6
FULL_SCALE_FRACTION = 0.7
_CAL_LINES = 16
_CAL_SPAN_S = 4.0
_DEFAULT_BREATH_PER_MIN = 15.0


@njit(nogil=True, cache=True)
def _render_kernel(
    out,
    z_m,
    amp,
    x_m,
    slide,
    group,
    disp_scale,
    profiles,
    f_hz,
    waves,
    slide_m,
    visibility,
    fs_hz,
    t0_s,
    c_m_s,
    f0_hz,
    sigma_f_hz,
    beta_np_m_hz,
    sigma_x_m,
):
    """Add the echoes of every point to ``out`` (n_lines, n_samples) float32, in place.

    z_m, amp, x_m, slide, group, disp_scale : (n_pts,) point reflectors (see Scene).
    profiles : (n_pts, n_comp) displacement profile of each point, metres.
    f_hz : (n_pts,) carrier frequency of each point's echo, Hz.
    waves : (n_lines, n_comp) motion waveforms; slide_m : (n_lines,) lateral slide, metres.
    visibility : (n_lines, n_groups) weight of each visibility group.

    The pulse is evaluated at ``PULSE_HALF_SIGMAS`` standard deviations either side of
    the delay by a recurrence (Gaussian ratio and carrier rotation), so each sample costs a
    few multiplications and each point four transcendental calls.
    """
    n_lines, n_samples = out.shape
    n_pts = z_m.shape[0]
    n_comp = profiles.shape[1]
    dt = 1.0 / fs_hz
    sigma_t = 1.0 / (2.0 * math.pi * sigma_f_hz)
    half_s = PULSE_HALF_SIGMAS * sigma_t
    inv_2s2 = 1.0 / (2.0 * sigma_t * sigma_t)
    q = math.exp(-dt * dt / (sigma_t * sigma_t))
    x_cut = BEAM_HALF_SIGMAS * sigma_x_m
    inv_2sx2 = 1.0 / (2.0 * sigma_x_m * sigma_x_m)
    bs2 = beta_np_m_hz * sigma_f_hz * sigma_f_hz
    two_pi = 2.0 * math.pi
    acc = np.empty(n_samples)
    for line in range(n_lines):
        acc[:] = 0.0
        s = slide_m[line]
        for i in range(n_pts):
            a = amp[i] * visibility[line, group[i]]
            if a == 0.0:
                continue
            log_gain = 0.0
            if slide[i]:
                u = x_m[i] + s
                if abs(u) > x_cut:
                    continue
                log_gain = -u * u * inv_2sx2
            d = 0.0
            for j in range(n_comp):
                d += profiles[i, j] * waves[line, j]
            z = z_m[i] + disp_scale[i] * d
            if z <= 0.0:
                continue
            log_gain -= beta_np_m_hz * z * (f0_hz - 0.5 * bs2 * z)
            tau = 2.0 * z / c_m_s
            k0 = max(0, int(math.ceil((tau - half_s - t0_s) * fs_hz)))
            k1 = min(n_samples - 1, int(math.floor((tau + half_s - t0_s) * fs_hz)))
            if k0 > k1:
                continue
            u0 = t0_s + k0 * dt - tau
            g = a * math.exp(log_gain - u0 * u0 * inv_2s2)
            r = math.exp(-(2.0 * u0 * dt + dt * dt) * inv_2s2)
            ph = two_pi * f_hz[i] * u0
            vr = g * math.cos(ph)
            vi = g * math.sin(ph)
            w = two_pi * f_hz[i] * dt
            mr = r * math.cos(w)
            mi = r * math.sin(w)
            for k in range(k0, k1 + 1):
                acc[k] += vr
                vr, vi = vr * mr - vi * mi, vr * mi + vi * mr
                mr *= q
                mi *= q
        for k in range(n_samples):
            out[line, k] += acc[k]


@njit(nogil=True, cache=True)
def _quantise_kernel(clean, noise, scale, out):
    """out = clip(rint((clean + noise) * scale)) as int16; all (n_lines, n_samples)."""
    n_lines, n_samples = clean.shape
    for i in range(n_lines):
        for k in range(n_samples):
            v = (clean[i, k] + noise[i, k]) * scale
            if v > 32767.0:
                v = 32767.0
            elif v < -32768.0:
                v = -32768.0
            out[i, k] = np.int16(np.rint(v))


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


def _check_params(
    prf_hz: float, f0_hz: float, fs_hz: float, depth_m: float, bandwidth: float, n_samples: int | None
) -> None:
    """Raise UsageError unless the acquisition parameters describe a possible probe."""
    for name, v in (("prf_hz", prf_hz), ("f0_hz", f0_hz), ("fs_hz", fs_hz), ("depth_m", depth_m)):
        if not (math.isfinite(v) and v > 0):
            raise UsageError(f"{name} must be > 0 and finite, got {v}")
    if not 0.05 <= bandwidth <= 2.0:
        raise UsageError(f"bandwidth (fractional, -6 dB) must be in [0.05, 2], got {bandwidth}")
    if f0_hz * (1 + bandwidth / 2) >= fs_hz / 2:
        raise UsageError(
            f"the pulse band reaches {f0_hz * (1 + bandwidth / 2) / 1e6:g} MHz, above fs/2 = "
            f"{fs_hz / 2e6:g} MHz; raise fs_hz or lower f0_hz"
        )
    if n_samples is not None and not 0 < n_samples <= MAX_SAMPLES:
        raise UsageError(f"n_samples must be in [1, {MAX_SAMPLES}], got {n_samples}")


class _Renderer:
    """Noiseless RF of one scene on a fixed sampling grid (the scene's attenuation)."""

    def __init__(self, scene: Scene, meta: AcquisitionMeta, n_samples: int, bandwidth: float) -> None:
        self.scene = scene
        self.meta = meta
        self.n_samples = n_samples
        self.sigma_f_hz = bandwidth * meta.f0_hz / (2 * math.sqrt(2 * math.log(2)))
        self.beta_np_m_hz = 2 * scene.attenuation_db_cm_mhz * math.log(10) / 20 * 1e-4
        self.profiles = np.ascontiguousarray(scene.profiles(scene.ref_z_m))
        bs2 = self.beta_np_m_hz * self.sigma_f_hz**2
        self.f_hz = np.ascontiguousarray(np.maximum(meta.f0_hz - bs2 * scene.z_m, 0.05 * meta.f0_hz))

    def clean(self, t_s: np.ndarray) -> np.ndarray:
        """Noiseless RF at absolute times ``t_s`` (n,), float32 (n, n_samples)."""
        t_s = np.asarray(t_s, dtype=np.float64)
        out = np.zeros((t_s.shape[0], self.n_samples), dtype=np.float32)
        s = self.scene
        for a in range(0, t_s.shape[0], RENDER_CHUNK_LINES):
            m = s.motion(t_s[a : a + RENDER_CHUNK_LINES])
            _render_kernel(
                out[a : a + RENDER_CHUNK_LINES],
                s.z_m,
                s.amp,
                s.x_m,
                s.slide,
                s.group,
                s.disp_scale,
                self.profiles,
                self.f_hz,
                np.ascontiguousarray(m.waves, dtype=np.float64),
                np.ascontiguousarray(m.slide_m, dtype=np.float64),
                np.ascontiguousarray(m.visibility, dtype=np.float64),
                self.meta.fs_hz,
                self.meta.t0_s,
                self.meta.c_m_s,
                self.meta.f0_hz,
                self.sigma_f_hz,
                self.beta_np_m_hz,
                BEAM_SIGMA_X_M,
            )
        return out


def render_rf(
    scene: Scene, meta: AcquisitionMeta, n_samples: int, t_s: np.ndarray, *, bandwidth: float = 0.6
) -> np.ndarray:
    """Noiseless RF of ``scene`` at absolute times ``t_s`` (n,): float32 (n, n_samples).

    Uses ``meta.fs_hz``, ``f0_hz``, ``c_m_s``, ``t0_s`` and the scene's attenuation; echo
    amplitudes are in the scene's reflectivity units (no noise, no quantisation).
    """
    _check_params(meta.prf_hz, meta.f0_hz, meta.fs_hz, 1.0, bandwidth, n_samples)
    n_lines = np.asarray(t_s).shape[0]
    if n_lines * n_samples * 4 > MAX_RECORDING_BYTES:
        raise UsageError(f"{n_lines} lines x {n_samples} samples of float32 exceed {MAX_RECORDING_BYTES >> 30} GiB")
    return _Renderer(scene, meta, n_samples, bandwidth).clean(t_s)


class _Quantiser:
    """Noise level and int16 scale fixed from calibration lines; noise keyed by line index."""

    def __init__(self, renderer: _Renderer, snr_db: float, seed: int) -> None:
        cal = renderer.clean(np.linspace(0.0, _CAL_SPAN_S, _CAL_LINES))
        p_signal = float(np.mean(cal.astype(np.float64) ** 2))
        if p_signal <= 0:  # nothing in view at all: noise at unit level
            p_signal = 1.0
        self.noise_std = math.sqrt(p_signal / 10 ** (snr_db / 10))
        peak = float(np.max(np.abs(cal))) + 4 * self.noise_std
        self.scale = FULL_SCALE_FRACTION * 32767.0 / peak
        self.seed = seed
        self.n_samples = renderer.n_samples
        self._chunk_index = -1
        self._chunk = np.empty((0, self.n_samples), dtype=np.float32)

    def _noise_chunk(self, index: int) -> np.ndarray:
        if index != self._chunk_index:
            rng = np.random.default_rng([self.seed, 0x4E015E, index])
            self._chunk = rng.standard_normal((NOISE_CHUNK_LINES, self.n_samples), dtype=np.float32)
            self._chunk *= np.float32(self.noise_std)
            self._chunk_index = index
        return self._chunk

    def quantise(self, clean: np.ndarray, first_line: int) -> np.ndarray:
        """Add the noise of lines ``first_line ..`` to ``clean`` and scale to int16 (n, n_samples)."""
        n = clean.shape[0]
        out = np.empty(clean.shape, dtype=np.int16)
        i = 0
        while i < n:
            c, off = divmod(first_line + i, NOISE_CHUNK_LINES)
            take = min(n - i, NOISE_CHUNK_LINES - off)
            noise = self._noise_chunk(c)[off : off + take]
            _quantise_kernel(clean[i : i + take], noise, self.scale, out[i : i + take])
            i += take
        return out


@dataclass
class _Setup:
    """Everything fixed before the first line: metadata, scene, noise level, truth grid
    (``depths_m``, see :func:`_truth_depths`)."""

    meta: AcquisitionMeta
    n_samples: int
    renderer: _Renderer
    quantiser: _Quantiser
    depths_m: np.ndarray
    classes: tuple[str, ...] = CLASSES

    def lines(self, first_line: int, n_lines: int, quantiser: _Quantiser | None = None) -> np.ndarray:
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
    _check_params(float(prf_hz), f0_hz, fs_hz, float(depth_m), bandwidth, n_samples)
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
    renderer = _Renderer(scene, meta, n_samples, bandwidth)
    quantiser = _Quantiser(renderer, snr_db, seed)
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


#: Taps of the scanner IQ low-pass per unit of decimation either side of its centre.
SCANNER_IQ_HALF_TAPS_PER_DECIMATION = 4
#: Cut-off of the scanner IQ low-pass as a fraction of the IQ sample rate (the rest of the
#: band up to half the rate is its transition).
SCANNER_IQ_CUTOFF_FRACTION = 0.4


def scanner_iq(rf: np.ndarray, fs_hz: float, f0_hz: float, iq_fs_hz: float) -> np.ndarray:
    """The IQ a scanner stores of RF lines: mixed down by ``f0_hz``, low-passed below
    ``SCANNER_IQ_CUTOFF_FRACTION * iq_fs_hz`` (Hamming windowed sinc, unit gain for the
    echo's amplitude) and kept every ``fs_hz / iq_fs_hz`` samples.

    rf : (n_lines, n_samples) real. Returns complex64 (n_lines, ceil(n_samples / D)); IQ
    sample ``m`` lies at RF sample ``m * D`` (the filter delay is compensated), so the depth
    of IQ sample ``m`` is ``c (t0 + m / iq_fs_hz) / 2``. A model of a scanner's own
    demodulator, kept apart from the product's (``mmode.dsp``) so that tests of the product
    on simulated IQ do not measure it against itself.
    """
    ratio = fs_hz / iq_fs_hz if iq_fs_hz > 0 else math.nan
    dec = int(round(ratio)) if math.isfinite(ratio) else 0
    if dec < 1 or abs(ratio - dec) > 1e-9 * ratio:
        raise UsageError(f"iq_fs_hz must divide fs_hz = {fs_hz:g} Hz a whole number of times, got {iq_fs_hz:g}")
    half = SCANNER_IQ_HALF_TAPS_PER_DECIMATION * dec
    taps = 2.0 * signal.firwin(2 * half + 1, SCANNER_IQ_CUTOFF_FRACTION * iq_fs_hz, fs=fs_hz, window="hamming")
    n = rf.shape[1]
    mixed = rf.astype(np.float64) * np.exp(-2j * np.pi * f0_hz / fs_hz * np.arange(n))
    full = signal.upfirdn(taps, mixed, up=1, down=dec, axis=1)
    n_out = -(-n // dec)
    return np.ascontiguousarray(full[:, half // dec : half // dec + n_out], dtype=np.complex64)


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

    def truth(self, seq: int, n_lines: int) -> Truth:
        """Ground truth of lines ``seq .. seq + n_lines`` (displacement relative to line 0)."""
        if seq < 0 or not 0 < n_lines <= 1 << 20:
            raise UsageError(f"truth: need seq >= 0 and 0 < n_lines <= {1 << 20}, got {seq}, {n_lines}")
        return self._setup.truth(np.arange(seq, seq + n_lines, dtype=np.float64) / self.meta.prf_hz)
