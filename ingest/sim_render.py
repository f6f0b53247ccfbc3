"""RF lines of a simulated scene (:mod:`mmode.ingest.scene`): the echo physics (a numba
kernel), electronic noise and int16 quantisation, and the IQ a scanner would store.
:mod:`mmode.ingest.simulator` uses these to make recordings and the simulated probe.

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

Noise is drawn in chunks of ``NOISE_CHUNK_LINES`` lines keyed by the absolute line index
(:class:`Quantiser`), so lines do not depend on how a stream is cut into blocks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy import signal

from mmode.errors import UsageError
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest.scene import BEAM_HALF_SIGMAS, BEAM_SIGMA_X_M, Scene

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
FULL_SCALE_FRACTION = 0.7
_CAL_LINES = 16
_CAL_SPAN_S = 4.0


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


# numpy's clip(rint((clean + noise) * scale)).astype(int16) gives the same int16 (checked
# equal) but takes 22 ms for 1024 x 2048 samples against 2.1 ms here (2 cores, loaded), with
# three float64 temporaries: the simulated probe renders live at up to 20 kHz.
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


def check_params(
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


class Renderer:
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
    check_params(meta.prf_hz, meta.f0_hz, meta.fs_hz, 1.0, bandwidth, n_samples)
    n_lines = np.asarray(t_s).shape[0]
    if n_lines * n_samples * 4 > MAX_RECORDING_BYTES:
        raise UsageError(f"{n_lines} lines x {n_samples} samples of float32 exceed {MAX_RECORDING_BYTES >> 30} GiB")
    return Renderer(scene, meta, n_samples, bandwidth).clean(t_s)


class Quantiser:
    """Noise level and int16 scale fixed from calibration lines; noise keyed by line index."""

    def __init__(self, renderer: Renderer, snr_db: float, seed: int) -> None:
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

