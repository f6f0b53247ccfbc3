"""Axial tissue motion from RF or IQ lines: Kasai phase, NCC block matching, combined.

The phase estimators work on complex baseband (IQ) lines; RF lines are demodulated first
with :func:`rf_to_iq` (NCC also takes RF or envelope directly). Conventions: slow time (line index) is axis 0, fast time (depth) axis 1;
displacement is positive away from the probe, in metres.

Physics used throughout: a scatterer displaced by ``d`` metres rotates the baseband phase
by ``-4*pi*f0*d/c``, so phase estimation is unambiguous only while ``|d| < c/(4*f0)`` per
line pair, i.e. velocities below the aliasing (Nyquist) limit ``c*PRF/(4*f0)``.

- :func:`kasai_velocity`: lag-one autocorrelation (Kasai 1985) with depth/ensemble
  averaging; precise, aliases beyond the Nyquist velocity.
- :func:`ncc_displacement`: normalised cross-correlation block matching on RF or on the
  envelope, parabolic sub-sample interpolation; never aliases, coarser.
- :func:`combined_displacement`: NCC on the envelope finds the coarse shift, the phase of
  the complex correlation at that shift refines it (the phase ambiguity is resolved by the
  coarse shift), so it is as precise as Kasai and does not alias.
- :func:`displacement_map`, :func:`lsq_strain`, :func:`strain_snr`, :func:`strain_cnr`:
  displacement over depth windows and least-squares axial strain (Kallel & Ophir 1997) with
  the strain SNR and CNR of Varghese & Ophir (1998).
- :class:`MotionTracker`: streaming wrapper that follows one echo (chosen automatically or
  at a given depth) across blocks and returns its displacement and velocity trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage, signal

from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock

ESTIMATORS = ("combined", "kasai", "ncc")


# -- demodulation ---------------------------------------------------------------------------
def iq_decimation(fs_hz: float, f0_hz: float) -> int:
    """Decimation factor for RF -> IQ: complex output rate about ``2*f0`` (at least 1)."""
    return max(1, int(fs_hz // (2.0 * f0_hz)))


def rf_to_iq(rf: np.ndarray, fs_hz: float, f0_hz: float, decimation: int | None = None) -> np.ndarray:
    """Quadrature demodulation of RF lines: mix with ``exp(-2j*pi*f0*k/fs)``, low-pass, decimate.

    Local helper of the motion stage (the display path has its own demodulator in the
    processor); the phase convention is the one the estimators here rely on.

    Parameters
    ----------
    rf : (n_lines, n_samples) real RF, any integer or float dtype.
    fs_hz, f0_hz : RF sample rate and centre frequency, Hz.
    decimation : output keeps every ``decimation``-th sample; default :func:`iq_decimation`.

    Returns
    -------
    (n_lines, ceil(n_samples / decimation)) complex64; output sample ``m`` lies at RF sample
    ``m * decimation`` (the FIR delay is compensated). Low-pass cut-off
    ``min(fs/(2*decimation), f0, fs/2 - f0)``: up to 100 % fractional bandwidth passes, and
    below ``fs = 4*f0`` the mixer's image at ``fs - 2*f0`` is rejected (see
    :func:`_demod_design`). RF needs ``fs > 2*f0`` (else :class:`DataError`).
    """
    rf = np.asarray(rf)
    if rf.ndim != 2 or rf.dtype.kind not in "iuf":
        raise DataError(describe("rf_to_iq", "real RF lines of shape (n_lines, n_samples)", f"{rf.dtype} {rf.shape}"))
    if not (math.isfinite(fs_hz) and math.isfinite(f0_hz) and 0 < 2.0 * f0_hz < fs_hz):
        raise DataError(describe("rf_to_iq", "RF with fs_hz > 2 * f0_hz > 0", f"fs_hz={fs_hz:g}, f0_hz={f0_hz:g}"))
    dec = iq_decimation(fs_hz, f0_hz) if decimation is None else int(decimation)
    if dec < 1:
        raise DataError(describe("rf_to_iq", "decimation >= 1", dec))
    n = rf.shape[1]
    carrier, taps, half = _demod_design(n, fs_hz, f0_hz, dec)
    full = signal.upfirdn(taps, rf.astype(np.float32) * carrier, up=1, down=dec, axis=1)
    n_out = -(-n // dec)
    return np.ascontiguousarray(full[:, half // dec : half // dec + n_out], dtype=np.complex64)


def _demod_design(n_samples: int, fs_hz: float, f0_hz: float, dec: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Mixer ``exp(-2j pi f0 k / fs)`` (n_samples,) complex64, low-pass taps (2*half+1,) float32, half.

    Mixing moves the echo to 0 Hz and its negative-frequency half to ``-2 f0``, which
    aliases to ``fs - 2 f0`` when ``fs < 4 f0`` (1.2 f0 at the sample data's fs = 3.2 f0).
    Cut-off ``min(fs/(2 dec), f0, fs/2 - f0)``: the output band, at most f0, and midway to
    that image. ``half`` (the FIR delay, a multiple of ``dec`` so IQ sample ``m`` lies on RF
    sample ``m * dec``) is at least ``4 dec`` and grows as the image comes closer, so the
    Hamming transition stays narrower than the gap. The taps are doubled so ``|IQ|`` is
    the RF amplitude. Needs ``fs > 2 f0`` (checked by :func:`rf_to_iq`; AcquisitionMeta
    refuses RF metadata without it).
    """
    carrier = np.exp(-2j * np.pi * f0_hz / fs_hz * np.arange(n_samples)).astype(np.complex64)
    half = dec * max(4, math.ceil(24.0 * f0_hz / (fs_hz - 2.0 * f0_hz) / dec))
    cutoff_hz = min(fs_hz / (2.0 * dec), f0_hz, fs_hz / 2.0 - f0_hz)
    taps = (signal.firwin(2 * half + 1, cutoff_hz, fs=fs_hz) * 2.0).astype(np.float32)
    return carrier, taps, half


def to_iq(lines: np.ndarray, meta: AcquisitionMeta) -> tuple[np.ndarray, float, int]:
    """IQ lines for the motion estimators from RF or IQ input.

    Returns ``(iq, iq_fs_hz, stride)``: complex64 (n_lines, n_iq), the complex sample rate,
    and the number of stored samples per IQ sample (IQ sample ``m`` is stored sample
    ``m * stride``). Envelope data carry no phase: :class:`DataError`.
    """
    if meta.kind == "iq":
        return np.ascontiguousarray(lines, dtype=np.complex64), meta.fs_hz, 1
    if meta.kind == "rf":
        dec = iq_decimation(meta.fs_hz, meta.f0_hz)
        return rf_to_iq(lines, meta.fs_hz, meta.f0_hz, dec), meta.fs_hz / dec, dec
    raise DataError(describe(meta.source, "kind 'rf' or 'iq' for phase-based motion estimation", repr(meta.kind)))


def phase_to_displacement_m(phase_rad: np.ndarray | float, f0_hz: float, c_m_s: float) -> np.ndarray | float:
    """Axial displacement (m, positive away from the probe) of a baseband phase rotation."""
    return -c_m_s * np.asarray(phase_rad) / (4.0 * np.pi * f0_hz)


# -- Kasai ----------------------------------------------------------------------------------
def kasai_velocity(
    iq: np.ndarray,
    prf_hz: float,
    f0_hz: float,
    c_m_s: float = 1540.0,
    depth_samples: int = 1,
    ensemble: int = 1,
) -> np.ndarray:
    """Kasai lag-one autocorrelation velocity between consecutive lines.

    ``R1 = conj(iq[i]) * iq[i+1]`` is averaged over a centred box of ``ensemble`` line pairs
    by ``depth_samples`` samples; ``v = -c * PRF * angle(R1) / (4*pi*f0)``. Velocities beyond
    ``c*PRF/(4*f0)`` alias (wrap to the other sign).

    Parameters
    ----------
    iq : (n_lines, n_samples) complex baseband lines, n_lines >= 2.
    prf_hz, f0_hz, c_m_s : line rate, demodulation frequency, speed of sound.
    depth_samples, ensemble : averaging box sizes (>= 1).

    Returns
    -------
    (n_lines - 1, n_samples) float32 axial velocity in m/s; row ``i`` is the motion from
    line ``i`` to line ``i + 1``.
    """
    iq = np.asarray(iq)
    if iq.ndim != 2 or iq.dtype.kind != "c" or iq.shape[0] < 2:
        raise DataError(describe("kasai_velocity", "complex IQ of shape (n_lines >= 2, n_samples)", f"{iq.dtype} {iq.shape}"))
    if depth_samples < 1 or ensemble < 1:
        raise DataError(describe("kasai_velocity", "depth_samples >= 1 and ensemble >= 1", (depth_samples, ensemble)))
    r1 = np.conj(iq[:-1]) * iq[1:]
    size = (int(ensemble), int(depth_samples))
    re = ndimage.uniform_filter(r1.real.astype(np.float64), size=size, mode="nearest")
    im = ndimage.uniform_filter(r1.imag.astype(np.float64), size=size, mode="nearest")
    return (phase_to_displacement_m(np.arctan2(im, re), f0_hz, c_m_s) * prf_hz).astype(np.float32)


# -- numba kernels: matching one reference segment in one line --------------------------------
#: Which NCC maximum is taken (:func:`_ncc_peak`): the local maxima within ``NCC_PEAK_MARGIN``
#: of the best NCC are candidates, ranked by ``NCC x agreement ** ENERGY_WEIGHT`` (agreement:
#: ``2 sqrt(Ea Eb) / (Ea + Eb)`` of the two segments' energies).
NCC_PEAK_MARGIN = 0.05
ENERGY_WEIGHT = 0.25


@njit(nogil=True, cache=True)
def _ncc_peak(ref, cur, start, lag_lo, lag_hi):
    """Best normalised cross-correlation of ``ref`` (W,) against ``cur[start+lag : +W]``.

    Lags ``lag_lo..lag_hi`` (inclusive) must keep the segment inside ``cur``. Returns
    ``(shift, peak, agreement)``: the lag of the chosen NCC maximum refined by a parabola
    through its neighbours (samples, float), the parabola's value there (the interpolated NCC
    peak, <= 1) and the energy agreement ``2 sqrt(Ea Eb) / (Ea + Eb)`` of the two segments at
    the chosen integer lag (1 when equally bright, 0.8 at half or double the amplitude).

    NCC ignores amplitude, so a faint echo shaped like the reference (any lone pulse looks
    like a bright specular one) can match about as well as the echo itself. The candidates
    are the local NCC maxima within ``NCC_PEAK_MARGIN`` (0.05) of the best NCC; the one taken
    is the best by ``NCC x agreement ** ENERGY_WEIGHT`` (1/4). Energy thus decides between
    near-equal shapes (a copy 15 % as bright, agreement 0.29, scores 0.74 x its NCC), but not
    against a clearly better shape: the tracked echo faded to 70 % (agreement 0.94) or 50 %
    (0.8) of the reference keeps NCC 1 and scores 0.985 or 0.946, so a reference-bright echo
    of another shape must match with a higher NCC than that to be taken. (Ranking by NCC x
    agreement took it from NCC 0.94 at 70 % and 0.8 at 50 %.) The tracker renews its
    keyframe when the agreement falls below ``KEYFRAME_ENERGY`` (0.8), so a fading echo is
    never compared with a reference more than about twice as bright.
    """
    w = ref.shape[0]
    ref_mean = 0.0
    for k in range(w):
        ref_mean += ref[k]
    ref_mean /= w
    ref_ss = 0.0
    for k in range(w):
        ref_ss += (ref[k] - ref_mean) ** 2
    n_lags = lag_hi - lag_lo + 1
    ncc = np.empty(n_lags)
    agree = np.zeros(n_lags)
    for j in range(n_lags):
        s = start + lag_lo + j
        cur_mean = 0.0
        for k in range(w):
            cur_mean += cur[s + k]
        cur_mean /= w
        cross = 0.0
        cur_ss = 0.0
        for k in range(w):
            dc = cur[s + k] - cur_mean
            cross += (ref[k] - ref_mean) * dc
            cur_ss += dc * dc
        den = math.sqrt(ref_ss * cur_ss)
        ncc[j] = cross / den if den > 0.0 else 0.0
        if den > 0.0:
            agree[j] = 2.0 * den / (ref_ss + cur_ss)
    best_ncc = -1.0
    for j in range(n_lags):
        best_ncc = max(best_ncc, ncc[j])
    best = -1
    best_key = 0.0
    for j in range(n_lags):
        local_max = (j == 0 or ncc[j] >= ncc[j - 1]) and (j == n_lags - 1 or ncc[j] >= ncc[j + 1])
        if local_max and ncc[j] >= best_ncc - NCC_PEAK_MARGIN:
            key = ncc[j] * agree[j] ** ENERGY_WEIGHT
            if best < 0 or key > best_key:
                best = j
                best_key = key
    frac = 0.0
    peak = ncc[best]
    if 0 < best < n_lags - 1:
        a, b, c = ncc[best - 1], ncc[best], ncc[best + 1]
        curv = a - 2.0 * b + c
        if curv < 0.0:
            frac = 0.5 * (a - c) / curv
            peak = min(1.0, b - 0.25 * (a - c) * frac)
    return lag_lo + best + frac, peak, agree[best]


@njit(nogil=True, cache=True)
def _phase_at(ref, cur, start):
    """Complex correlation of ``ref`` (W,) with ``cur[start : start+W]``.

    Returns ``(phase, coherence, depth_phase)``: the phase (rad) and magnitude, normalised
    by the energies, of ``sum(conj(ref) * cur)``, and the phase per sample along depth of
    both segments' lag-one depth autocorrelation (Loupas 1995), which measures the mean
    frequency of the echo relative to the demodulation frequency.
    """
    w = ref.shape[0]
    re = 0.0
    im = 0.0
    e_ref = 0.0
    e_cur = 0.0
    zre = 0.0
    zim = 0.0
    for k in range(w):
        a = ref[k]
        b = cur[start + k]
        re += a.real * b.real + a.imag * b.imag
        im += a.real * b.imag - a.imag * b.real
        e_ref += a.real * a.real + a.imag * a.imag
        e_cur += b.real * b.real + b.imag * b.imag
        if k + 1 < w:
            a1 = ref[k + 1]
            b1 = cur[start + k + 1]
            zre += a.real * a1.real + a.imag * a1.imag + b.real * b1.real + b.imag * b1.imag
            zim += a.real * a1.imag - a.imag * a1.real + b.real * b1.imag - b.imag * b1.real
    den = math.sqrt(e_ref * e_cur)
    coherence = math.sqrt(re * re + im * im) / den if den > 0.0 else 0.0
    return math.atan2(im, re), coherence, math.atan2(zim, zre)


@njit(nogil=True, cache=True)
def _phase_shift(phase, depth_phase, lag, f0_cycles_per_sample):
    """Shift in samples from the correlation phase at integer ``lag``.

    With ``a = f0 / fs_iq`` and the echo's mean frequency ``f = f0 + depth_phase*fs_iq/(2 pi)``,
    a shift of ``s`` samples gives ``phase = -2 pi (f/fs_iq) (s - lag) - 2 pi a lag``.
    Returns ``(s, ambiguity)``: the shift and its phase-wrap period in samples.
    """
    two_pi = 2.0 * math.pi
    f_cycles = f0_cycles_per_sample + depth_phase / two_pi
    if f_cycles < 0.25 * f0_cycles_per_sample:  # no usable echo: fall back to f0
        f_cycles = f0_cycles_per_sample
    s = lag - (phase + two_pi * f0_cycles_per_sample * lag) / (two_pi * f_cycles)
    return s, 1.0 / f_cycles


@njit(nogil=True, cache=True)
def _unwrap_to(phase_shift_samples, coarse_samples, wrap_samples):
    """The value ``phase_shift + n * wrap`` (integer n) closest to ``coarse``."""
    n = math.floor((coarse_samples - phase_shift_samples) / wrap_samples + 0.5)
    return phase_shift_samples + n * wrap_samples


@njit(nogil=True, cache=True)
def _pairs_kernel(iq, env, use_ncc, use_phase, starts, window, max_lag, f0_cycles_per_sample, out):
    """Shift (samples) of line i+1 against line i for every window start; fills out (n-1, n_win)."""
    n_lines, n = env.shape
    for i in range(n_lines - 1):
        for j in range(starts.shape[0]):
            s = starts[j]
            lo = max(-max_lag, -s)
            hi = min(max_lag, n - window - s)
            coarse = 0.0
            if use_ncc:
                coarse, _, _ = _ncc_peak(env[i, s : s + window], env[i + 1], s, lo, hi)
            if use_phase:
                lag = int(math.floor(coarse + 0.5))
                phase, _, depth_phase = _phase_at(iq[i, s : s + window], iq[i + 1], s + lag)
                fine, wrap = _phase_shift(phase, depth_phase, lag, f0_cycles_per_sample)
                out[i, j] = _unwrap_to(fine, coarse, wrap) if use_ncc else fine
            else:
                out[i, j] = coarse


def window_starts(n_samples: int, window_samples: int, step_samples: int) -> np.ndarray:
    """Start indices of depth windows of ``window_samples`` every ``step_samples``, (n_win,) int64."""
    if not 2 <= window_samples <= n_samples or step_samples < 1:
        raise DataError(
            describe("motion windows", f"2 <= window_samples <= {n_samples} and step >= 1", (window_samples, step_samples))
        )
    return np.arange(0, n_samples - window_samples + 1, step_samples, dtype=np.int64)


def _pairwise(
    lines: np.ndarray,
    estimator: str,
    spacing_m: float,
    f0_hz: float,
    c_m_s: float,
    window_samples: int,
    step_samples: int,
    max_lag_samples: int,
) -> np.ndarray:
    """(n_lines - 1, n_windows) metres of line i+1 against line i by ``estimator``; see the callers."""
    lines = np.asarray(lines)
    if lines.ndim != 2 or lines.shape[0] < 2:
        raise DataError(describe("motion estimator", "lines of shape (n_lines >= 2, n_samples)", lines.shape))
    starts = window_starts(lines.shape[1], window_samples, step_samples)
    complex_in = lines.dtype.kind == "c"
    if estimator != "ncc" and not complex_in:
        raise DataError(describe(f"{estimator} estimator", "complex IQ lines (use rf_to_iq for RF)", lines.dtype))
    iq = np.ascontiguousarray(lines, dtype=np.complex64) if complex_in else np.zeros((1, 1), np.complex64)
    env = np.abs(iq) if complex_in else np.ascontiguousarray(lines, dtype=np.float32)
    # f0 in cycles per IQ sample: the sample rate is c / (2 * spacing)
    f0_cycles_per_sample = f0_hz * 2.0 * spacing_m / c_m_s
    out = np.zeros((lines.shape[0] - 1, starts.shape[0]), dtype=np.float64)
    _pairs_kernel(
        iq, env.astype(np.float32), estimator != "kasai", estimator != "ncc", starts, int(window_samples),
        int(max_lag_samples), f0_cycles_per_sample, out,
    )
    return out * spacing_m


def ncc_displacement(
    lines: np.ndarray,
    spacing_m: float,
    window_samples: int,
    step_samples: int,
    max_lag_samples: int,
) -> np.ndarray:
    """NCC block-matching displacement between consecutive lines over depth windows.

    Parameters
    ----------
    lines : (n_lines, n_samples) real RF or envelope (NCC on the samples), or complex IQ
        (NCC on the envelope ``|iq|``).
    spacing_m : axial distance between two samples, metres (``c / (2 * fs)``).
    window_samples, step_samples : window length and hop along depth, samples.
    max_lag_samples : search range, samples each side.

    Returns
    -------
    (n_lines - 1, n_windows) float64 displacement in metres of line ``i + 1`` against line
    ``i`` in the window starting at ``window_starts(...)[j]``; sub-sample by a parabola
    through the NCC maximum and its neighbours.
    """
    return _pairwise(lines, "ncc", spacing_m, 1.0, 1.0, window_samples, step_samples, max_lag_samples)


def combined_displacement(
    iq: np.ndarray,
    spacing_m: float,
    f0_hz: float,
    c_m_s: float,
    window_samples: int,
    step_samples: int,
    max_lag_samples: int,
) -> np.ndarray:
    """Coarse NCC on the envelope refined by the correlation phase; no aliasing.

    Same shapes and units as :func:`ncc_displacement`; ``iq`` must be complex. The phase of
    ``sum(conj(ref) * cur)`` at the integer shift nearest the coarse estimate gives the
    displacement modulo ``c / (2*f)``, with ``f`` the echo's mean frequency measured by the
    lag-one depth autocorrelation (Loupas 1995); the multiple nearest the coarse estimate is
    chosen. Correct while the coarse error stays below ``c / (4*f)``, whatever the velocity.
    """
    return _pairwise(iq, "combined", spacing_m, f0_hz, c_m_s, window_samples, step_samples, max_lag_samples)


def kasai_displacement(
    iq: np.ndarray,
    spacing_m: float,
    f0_hz: float,
    c_m_s: float,
    window_samples: int,
    step_samples: int,
) -> np.ndarray:
    """Kasai phase displacement (metres) between consecutive lines over depth windows.

    Same shapes as :func:`ncc_displacement`: the phase of the lag-one autocorrelation summed
    over each window, converted with the echo's mean frequency (Loupas 1995) rather than
    ``f0``; wraps beyond ``c / (4*f)`` per line pair. :func:`kasai_velocity` is the classic
    form with ``f0``.
    """
    return _pairwise(iq, "kasai", spacing_m, f0_hz, c_m_s, window_samples, step_samples, 0)


# -- maps and strain ------------------------------------------------------------------------
@dataclass(frozen=True)
class DisplacementMap:
    """Accumulated displacement over depth windows.

    depths_m : (n_windows,) centre depth of each window, metres.
    displacement_m : (n_lines, n_windows) displacement relative to line 0 (row 0 is zero),
        metres, at fixed depth windows (Eulerian).
    """

    depths_m: np.ndarray
    displacement_m: np.ndarray


def displacement_map(
    lines: np.ndarray,
    meta: AcquisitionMeta,
    window_m: float = 1.5e-3,
    step_m: float = 0.5e-3,
    estimator: str = "combined",
    max_velocity_m_s: float = 0.5,
) -> DisplacementMap:
    """Displacement map of RF or IQ ``lines`` (n_lines, n_samples) over depth windows.

    Inter-line displacements from ``estimator`` (one of :data:`ESTIMATORS`) are summed over
    slow time. ``max_velocity_m_s`` sets the NCC search range.
    """
    if estimator not in ESTIMATORS:
        raise DataError(describe("displacement_map", f"estimator one of {ESTIMATORS}", repr(estimator)))
    iq, iq_fs, stride = to_iq(lines, meta)
    spacing = meta.c_m_s / (2.0 * iq_fs)
    win = max(2, int(round(window_m / spacing)))
    step = max(1, int(round(step_m / spacing)))
    max_lag = int(math.ceil(max_velocity_m_s / meta.prf_hz / spacing)) + 1
    if estimator == "kasai":
        d = kasai_displacement(iq, spacing, meta.f0_hz, meta.c_m_s, win, step)
    elif estimator == "ncc":
        d = ncc_displacement(iq, spacing, win, step, max_lag)
    else:
        d = combined_displacement(iq, spacing, meta.f0_hz, meta.c_m_s, win, step, max_lag)
    starts = window_starts(iq.shape[1], win, step)
    depths = meta.depth_m((starts + (win - 1) / 2.0) * stride)
    disp = np.vstack([np.zeros((1, d.shape[1])), np.cumsum(d, axis=0)])
    return DisplacementMap(np.asarray(depths, dtype=np.float64), disp)


def lsq_strain(displacement_m: np.ndarray, spacing_m: float, kernel: int = 5) -> np.ndarray:
    """Axial strain as the least-squares slope of displacement over ``kernel`` depth points.

    Parameters
    ----------
    displacement_m : (..., n_depths) displacement along depth (last axis), metres.
    spacing_m : distance between depth points, metres.
    kernel : odd number of points of the linear fit (>= 3).

    Returns
    -------
    Same shape, dimensionless strain (positive = extension); the ``kernel // 2`` points at
    each end are NaN (no full fit there).
    """
    if kernel < 3 or kernel % 2 == 0:
        raise DataError(describe("lsq_strain", "odd kernel >= 3", kernel))
    u = np.asarray(displacement_m, dtype=np.float64)
    if u.shape[-1] < kernel:
        raise DataError(describe("lsq_strain", f"at least {kernel} depth points", u.shape))
    x = np.arange(kernel) - (kernel - 1) / 2.0
    weights = x / (np.sum(x * x) * spacing_m)  # slope of the least-squares line
    half = kernel // 2
    windows = np.lib.stride_tricks.sliding_window_view(u, kernel, axis=-1)
    out = np.full(u.shape, np.nan)
    out[..., half : u.shape[-1] - half] = windows @ weights
    return out


def strain_snr(strain: np.ndarray) -> float:
    """Elastographic SNR of a homogeneous region: mean / standard deviation (linear)."""
    s = np.asarray(strain, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 2:
        raise DataError(describe("strain_snr", "at least 2 finite strain values", s.size))
    sd = float(np.std(s, ddof=1))
    return math.inf if sd == 0 else float(abs(np.mean(s)) / sd)


def strain_cnr(strain_a: np.ndarray, strain_b: np.ndarray) -> float:
    """Elastographic CNR of two regions: ``2 (m_a - m_b)^2 / (var_a + var_b)`` (linear)."""
    a = np.asarray(strain_a, dtype=np.float64)
    b = np.asarray(strain_b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        raise DataError(describe("strain_cnr", "at least 2 finite strain values per region", (a.size, b.size)))
    den = float(np.var(a, ddof=1) + np.var(b, ddof=1))
    num = 2.0 * float(np.mean(a) - np.mean(b)) ** 2
    return math.inf if den == 0 else num / den


# -- automatic choice of the tracked echo ---------------------------------------------------
def moving_echo_score(
    iq_a: np.ndarray,
    iq_b: np.ndarray,
    prf_hz: float,
    f0_hz: float,
    c_m_s: float,
    window_samples: int,
    ensemble: int,
) -> np.ndarray:
    """Score of the coherently moving echo in the window centred on each IQ sample.

    ``iq_a[i]`` and ``iq_b[i]`` (n_pairs, n_samples) complex are line pairs one line apart
    (consecutive, or a subset of them spread over the selection time). From the lag-one
    autocorrelation ``R1 = conj(a) * b`` averaged over ``window_samples`` and ``ensemble``
    pairs, each depth is scored by

    - its correlated echo power ``|mean R1|`` (white noise adds nothing to it),
    - times ``v^2``, ``v`` the RMS Kasai velocity of the averaged ``R1``, each pair weighted
      by its coherence below: a bright static echo scores low, and the random phase of the
      pairs in which only noise fills the window (while a moving echo is elsewhere) does not
      count as motion;
    - times the squared coherence of the motion inside the window, the mean over pairs of
      ``|sum R1| / sum |R1|`` (1 when every sample moves alike): a window straddling a
      static and a moving structure scores low, since no single trace describes it.

    Returns (n_samples,) float64, arbitrary units (power x velocity^2). Beyond the aliasing
    velocity the Kasai ``v`` wraps, so the score is only a rough guide there.
    """
    return _score(*_echo_terms(iq_a, iq_b, prf_hz, f0_hz, c_m_s, window_samples, ensemble))


def _score(summed, pair_coherence, v):
    """:func:`moving_echo_score` (n_samples,) from the terms of :func:`_echo_terms`."""
    tiny = np.finfo(np.float64).tiny
    v_ms = np.sum(pair_coherence * v**2, axis=0) / np.maximum(np.sum(pair_coherence, axis=0), tiny)
    return np.mean(summed, axis=0) * v_ms * np.mean(pair_coherence, axis=0) ** 2


def _echo_terms(iq_a, iq_b, prf_hz, f0_hz, c_m_s, window_samples, ensemble):
    """Per pair and depth (n_pairs, n_samples) float64 each: the correlated power ``|mean R1|``,
    the coherence ``|sum R1| / sum |R1|`` and the Kasai velocity (m/s) of the window and
    ensemble averaged lag-one autocorrelation; see :func:`moving_echo_score`."""
    tiny = np.finfo(np.float64).tiny
    r1 = np.conj(iq_a).astype(np.complex128) * iq_b
    size = (max(1, min(int(ensemble), r1.shape[0])), int(window_samples))
    re = ndimage.uniform_filter(r1.real, size=size, mode="nearest")
    im = ndimage.uniform_filter(r1.imag, size=size, mode="nearest")
    summed = np.hypot(re, im)
    pair_coherence = summed / np.maximum(ndimage.uniform_filter(np.abs(r1), size=size, mode="nearest"), tiny)
    v = phase_to_displacement_m(np.arctan2(im, re), f0_hz, c_m_s) * prf_hz
    return summed, pair_coherence, v


def _local_maxima(values: np.ndarray, separation: int, count: int) -> list[int]:
    """Indices of at most ``count`` local maxima of ``values`` (n,), largest first, each at
    least ``separation`` samples from every larger one taken (the ends count as maxima when
    they are not below their one neighbour)."""
    x = np.asarray(values, dtype=np.float64)
    left = np.concatenate(([-np.inf], x[:-1]))
    right = np.concatenate((x[1:], [-np.inf]))
    peaks = np.flatnonzero((x >= left) & (x >= right))
    taken: list[int] = []
    for p in peaks[np.argsort(-x[peaks], kind="stable")]:
        if all(abs(int(p) - q) >= separation for q in taken):
            taken.append(int(p))
            if len(taken) == count:
                break
    return taken


def tracked_echo_score(
    seg_a: np.ndarray,
    seg_b: np.ndarray,
    displacement_m: np.ndarray,
    rate_hz: float,
    lag_lines: int,
    fb_error_m: float,
    wrap_m: float,
) -> float:
    """Score of one echo candidate along its own track (Lagrangian; cf. :func:`moving_echo_score`).

    ``seg_a[i]``, ``seg_b[i]`` (n_pairs, W) complex are the IQ windows of line pairs one line
    apart, each taken where the track puts the echo in that line; ``displacement_m``
    (n_lines,) is the track, metres, at lines ``1 / rate_hz`` seconds apart (every line, or
    every k-th line at ``prf / k``); ``fb_error_m`` the RMS difference, metres, between that
    track and the same echo tracked back from the last line to the first; ``wrap_m`` the
    phase-wrap period of the combined tracker, metres (c / 2 f0).

    The score is the product of

    - the correlated echo power ``mean |sum conj(a) b| / W`` (noise adds nothing to it),
    - ``mean v^2``, ``v`` the velocity over ``lag_lines`` lines (m/s): a static echo scores
      low; since the window moves with the echo, fast motion does not decorrelate it, and
      the track does not alias,
    - the squared mean coherence ``|sum conj(a) b| / sqrt(Ea Eb)`` of the pairs,
    - ``exp(-(fb_error / (CONSISTENCY_WRAPS wrap))^2)``: a track that slips between echoes
      (a window holding a static and a moving structure) or walks on noise does not come
      back to where it started when run backwards; a tracked echo does, to well under a
      micrometre.

    Returns a float >= 0, arbitrary units (power x velocity^2).
    """
    tiny = np.finfo(np.float64).tiny
    r1 = np.sum(np.conj(seg_a).astype(np.complex128) * seg_b, axis=1)
    energy = np.sqrt(np.sum(np.abs(seg_a) ** 2, axis=1) * np.sum(np.abs(seg_b) ** 2, axis=1))
    power = float(np.mean(np.abs(r1))) / seg_a.shape[1]
    coherence = float(np.mean(np.abs(r1) / np.maximum(energy, tiny)))
    lag = max(1, min(int(lag_lines), displacement_m.shape[0] - 1))
    v = (displacement_m[lag:] - displacement_m[:-lag]) * rate_hz / lag
    consistency = math.exp(-((fb_error_m / (CONSISTENCY_WRAPS * wrap_m)) ** 2))
    return power * float(np.mean(v**2)) * coherence**2 * consistency


# -- streaming tracker ----------------------------------------------------------------------
MODE_RF, MODE_IQ, MODE_ENVELOPE = 0, 1, 2
#: Smallest NCC search half-range (IQ samples) around the constant-velocity prediction once
#: tracking; widened at low line rates to cover ``max_acceleration_m_s2``.
TRACK_LAG_SAMPLES = 3
#: Line pairs (at most) and averaging time used to choose the echo automatically.
SELECTION_PAIRS = 256
SELECTION_ENSEMBLE_S = 0.02
#: Candidates for the automatic choice: this many local maxima of the selection score
#: (:func:`moving_echo_score`) and as many of the correlated echo power, each then scored
#: along its own track (:func:`tracked_echo_score`).
SELECTION_CANDIDATES = 6
#: RMS forward-backward track difference, in phase-wrap periods, at which a candidate's
#: score falls to 1/e (:func:`tracked_echo_score`).
CONSISTENCY_WRAPS = 0.25
#: Times the automatically chosen window is moved to the energy centroid of its echo, and
#: the least selection score (relative to the chosen window's) a move may reach.
CENTRING_STEPS = 3
CENTRING_MIN_SCORE = 0.5
#: the keyframe is also renewed when the energy agreement of the match (see :func:`_ncc_peak`)
#: falls below this: the echo faded or brightened by more than about 2 x in amplitude
KEYFRAME_ENERGY = 0.8
#: after the echo is chosen, each call also tracks this many blocks' worth of held-back lines
CATCH_UP_BLOCKS = 2


@njit(nogil=True, cache=True)
def _fill(lines, i, mode, carrier, taps, dec, half, a, b, buf_iq, buf_env):
    """IQ and envelope of line ``i`` at IQ samples ``a..b-1`` into ``buf_iq``/``buf_env``.

    RF lines are demodulated only there (same filter as :func:`rf_to_iq`); IQ lines are
    copied; envelope lines fill ``buf_env`` only.
    """
    n_src = lines.shape[1]
    n_taps = taps.shape[0]
    for m in range(a, b):
        if mode == MODE_RF:
            re = 0.0
            im = 0.0
            centre = m * dec + half
            for k in range(n_taps):
                j = centre - k
                if 0 <= j < n_src:
                    v = taps[k] * lines[i, j].real
                    re += v * carrier[j].real
                    im += v * carrier[j].imag
            buf_iq[m] = complex(re, im)
            buf_env[m] = math.sqrt(re * re + im * im)
        elif mode == MODE_IQ:
            buf_iq[m] = lines[i, m]
            buf_env[m] = abs(lines[i, m])
        else:
            buf_env[m] = abs(lines[i, m])


@njit(nogil=True, cache=True)
def _track_kernel(lines, mode, carrier, taps, dec, half, use_ncc, use_phase, state, ref_iq, ref_env, home,
                  max_lag, track_lag, f0_cycles_per_sample, keyframe_ncc, buf_iq, buf_env, out):
    """Follow one echo through the lines of a block; displacement in IQ samples into ``out``.

    state : float64 [ref_start, d_ref, d_prev, d_prev2, n_done, quality], updated in place; the
    reference segment (``ref_iq``/``ref_env``, length W) is the keyframe line's window at
    ``ref_start``; ``home`` is the window start of the echo at line 0 (its window now starts
    at home + d). The next displacement is predicted at constant velocity (scaled by the
    squared quality of the last match, so noise cannot build up speed); NCC searches
    ``max_lag`` around it for the first two lines, then ``track_lag`` (what acceleration can
    change in one line). The phase estimate is unwrapped around the NCC shift. The keyframe is
    renewed when the match quality falls below ``keyframe_ncc`` or the energy agreement of the
    NCC match below ``KEYFRAME_ENERGY``. Per line only the searched IQ samples are made
    (``_fill``). ``state`` and the buffers carry over, so a run of lines may be split into
    several calls with the same result.
    """
    n_lines = lines.shape[0]
    n = buf_env.shape[0]
    w = ref_env.shape[0]
    for i in range(n_lines):
        ref_start = int(state[0])
        d_ref = state[1]
        d_prev = state[2]
        peak = 1.0
        agreement = 1.0
        if use_ncc:
            if state[4] >= 2.0:  # constant velocity, trusted as far as the last match was good
                expected = d_prev + state[5] * state[5] * (d_prev - state[3]) - d_ref
                reach = track_lag
            else:
                expected = d_prev - d_ref
                reach = max_lag
            pred = int(math.floor(expected + 0.5))
            pred = min(max(pred, -ref_start), n - w - ref_start)
            lo = max(pred - reach, -ref_start)
            hi = min(pred + reach, n - w - ref_start)
            _fill(lines, i, mode, carrier, taps, dec, half, ref_start + lo, ref_start + hi + w, buf_iq, buf_env)
            coarse, peak, agreement = _ncc_peak(ref_env, buf_env, ref_start, lo, hi)
            shift = coarse
            if use_phase:
                lag = int(math.floor(coarse + 0.5))
                phase, peak, depth_phase = _phase_at(ref_iq, buf_iq, ref_start + lag)
                fine, wrap = _phase_shift(phase, depth_phase, lag, f0_cycles_per_sample)
                # around the NCC shift: the prediction can be off by more than half a wrap
                # when the speed changes by more than v_Nyq from one line to the next
                shift = _unwrap_to(fine, coarse, wrap)
        else:
            _fill(lines, i, mode, carrier, taps, dec, half, ref_start, ref_start + w, buf_iq, buf_env)
            phase, _, depth_phase = _phase_at(ref_iq, buf_iq, ref_start)
            shift, _ = _phase_shift(phase, depth_phase, 0, f0_cycles_per_sample)
        d = d_ref + shift
        out[i] = d
        state[3] = d_prev
        state[2] = d
        state[4] += 1.0
        state[5] = min(max(peak, 0.0), 1.0)
        if not use_ncc or peak < keyframe_ncc or agreement < KEYFRAME_ENERGY:
            start = int(math.floor(home + d + 0.5))
            start = min(max(start, 0), n - w)
            _fill(lines, i, mode, carrier, taps, dec, half, start, start + w, buf_iq, buf_env)
            state[0] = start
            state[1] = d
            for k in range(w):
                ref_env[k] = buf_env[start + k]
                ref_iq[k] = buf_iq[start + k]


@dataclass(frozen=True)
class MotionBlock:
    """Motion trace of the tracked echo for the lines processed by one call.

    t_s : (n,) float64 line times, seconds.
    displacement_m : (n,) float64 axial displacement relative to the first line, metres,
        positive away from the probe.
    velocity_m_s : (n,) float64 axial velocity (backward difference of the displacement
        times the line rate), m/s.
    depth_m : depth of the tracked echo at the first line, metres (NaN before it is chosen).
    """

    t_s: np.ndarray
    displacement_m: np.ndarray
    velocity_m_s: np.ndarray
    depth_m: float


class MotionTracker:
    """Streaming tracker of one echo: ``prepare(meta, n_samples)`` once, ``process(block)`` per block.

    Parameters
    ----------
    estimator : "combined" (NCC on the envelope against a keyframe, refined by phase;
        default, does not alias), "kasai" (phase between consecutive lines; aliases beyond
        ``meta.nyquist_velocity_m_s``) or "ncc" (envelope NCC only). Envelope input carries
        no phase and always uses "ncc".
    track_depth_m : depth of the echo to follow; None chooses the strongest moving echo
        (:func:`moving_echo_score`, found and centred at the first line) from the first
        ``select_s`` seconds of lines.
    window_m : axial length of the tracked window, metres.
    max_velocity_m_s : largest speed searched by NCC between two lines (first lines).
    max_acceleration_m_s2 : largest change of speed searched around the constant-velocity
        prediction once tracking (sets the NCC search at low line rates).
    select_s : seconds of lines used to choose the echo when ``track_depth_m`` is None;
        those lines are held back, then returned a few blocks at a time with the following
        blocks (or all at once by :meth:`flush`), so no call stalls a live stream.
    keyframe_ncc : the reference window is renewed when the match quality (complex
        correlation coefficient, or interpolated NCC peak for "ncc") falls below this (and
        when the echo's energy no longer agrees with the reference's, ``KEYFRAME_ENERGY``).

    Lines shorter than two windows give no trace (``active`` False, empty blocks).
    The trace is continuous across blocks and does not depend on how the lines are cut
    into blocks. Per line the work is one window match on IQ made only for the searched
    samples (RF is demodulated there, not over the whole line), in a numba ``nogil`` kernel.
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
    ) -> None:
        if estimator not in ESTIMATORS:
            raise DataError(describe("MotionTracker", f"estimator one of {ESTIMATORS}", repr(estimator)))
        for name, value in (("window_m", window_m), ("max_velocity_m_s", max_velocity_m_s), ("select_s", select_s),
                            ("max_acceleration_m_s2", max_acceleration_m_s2)):
            if not (math.isfinite(value) and value > 0):
                raise DataError(describe("MotionTracker", f"{name} > 0", value))
        if track_depth_m is not None and not (math.isfinite(track_depth_m) and track_depth_m >= 0):
            raise DataError(describe("--track-depth", "a depth >= 0 metres", track_depth_m))
        self.estimator = estimator
        self.track_depth_m = track_depth_m
        self.window_m = float(window_m)
        self.max_velocity_m_s = float(max_velocity_m_s)
        self.select_s = float(select_s)
        self.keyframe_ncc = float(keyframe_ncc)
        self.max_acceleration_m_s2 = float(max_acceleration_m_s2)
        self.meta: AcquisitionMeta | None = None

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self, meta: AcquisitionMeta, n_samples: int) -> None:
        """Settle sizes for lines of ``n_samples`` stored samples; resets the trace."""
        self.meta = meta
        self._n_samples = int(n_samples)
        if meta.kind == "rf":
            self._mode = MODE_RF
            self._stride = iq_decimation(meta.fs_hz, meta.f0_hz)
            self._carrier, self._taps, self._half = _demod_design(self._n_samples, meta.fs_hz, meta.f0_hz, self._stride)
        else:
            self._mode = MODE_IQ if meta.kind == "iq" else MODE_ENVELOPE
            self._stride = 1
            self._carrier, self._taps, self._half = np.zeros(1, np.complex64), np.zeros(1, np.float32), 0
        self._n_iq = -(-self._n_samples // self._stride)
        iq_fs = meta.fs_hz / self._stride
        self.effective_estimator = "ncc" if meta.kind == "envelope" else self.estimator
        self.spacing_m = meta.c_m_s / (2.0 * iq_fs)
        self._window = max(4, int(round(self.window_m / self.spacing_m)))
        self._max_lag, self._track_lag = self._search_lags(meta.prf_hz)
        # lines too short for a window and its search: no trace (empty blocks), not an error,
        # so that the display of such lines still works
        self.active = self._n_iq >= 2 * self._window + 2
        self._f0_cycles_per_sample = meta.f0_hz / iq_fs
        self.select_lines = max(2, min(4096, int(round(self.select_s * meta.prf_hz))))
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._home: int | None = None
        self._state = np.zeros(6)
        self._ref_iq = np.zeros(self._window, np.complex64)
        self._ref_env = np.zeros(self._window, np.float32)
        self._buf_iq = np.zeros(self._n_iq, np.complex64)
        self._buf_env = np.zeros(self._n_iq, np.float32)
        self._started = False
        self._has_output = False
        self.depth_m = math.nan
        if self.track_depth_m is not None:
            centre = int(round(float(meta.sample_at_depth(self.track_depth_m)) / self._stride))
            if not 0 <= centre < self._n_iq:
                lo, hi = float(meta.depth_m(0)), float(meta.depth_m(self._n_samples - 1))
                raise DataError(describe("--track-depth", f"a depth within {lo:.4f}..{hi:.4f} m", f"{self.track_depth_m} m"))
            if self.active:
                self._set_home(centre)

    def _search_lags(self, rate_hz: float) -> tuple[int, int]:
        """NCC search half-ranges (IQ samples) for lines ``1 / rate_hz`` apart: around the
        previous displacement for the first lines (``max_velocity_m_s``), then around the
        constant-velocity prediction (``max_acceleration_m_s2``, at least ``TRACK_LAG_SAMPLES``)."""
        max_lag = int(math.ceil(self.max_velocity_m_s / rate_hz / self.spacing_m)) + 1
        accel_lag = int(math.ceil(self.max_acceleration_m_s2 / rate_hz**2 / self.spacing_m))
        return max_lag, min(max_lag, max(TRACK_LAG_SAMPLES, accel_lag + 1))

    def _set_home(self, centre: int) -> None:
        self._home = min(max(centre - self._window // 2, 0), self._n_iq - self._window)
        self.depth_m = float(self.meta.depth_m((self._home + (self._window - 1) / 2.0) * self._stride))

    # -- per block ---------------------------------------------------------------------------
    def _kernel_lines(self, lines: np.ndarray) -> np.ndarray:
        if self._mode == MODE_IQ:
            return np.ascontiguousarray(lines, dtype=np.complex64)
        return np.ascontiguousarray(lines, dtype=np.float32)

    def process(self, block: LineBlock) -> MotionBlock:
        """Track the echo through ``block``; returns the trace of the lines processed now."""
        if self.meta is None:
            raise DataError(describe("MotionTracker", "prepare(meta, n_samples) before process", "no metadata"))
        lines = block.lines
        if lines.ndim != 2 or lines.shape[1] != self._n_samples:
            raise DataError(describe("MotionTracker", f"blocks of (n, {self._n_samples}) lines", lines.shape))
        if not self.active:
            return self._empty()
        lines = self._kernel_lines(lines)
        t_s = block.t_s + np.arange(lines.shape[0], dtype=np.float64) / self.meta.prf_hz
        if self._home is None or self._pending:
            self._pending.append((lines, t_s))
            if self._home is None:
                if sum(p[1].shape[0] for p in self._pending) < self.select_lines:
                    return self._empty()
                self._choose_echo()
            # catch up on lines held back while choosing, a few blocks' worth per call,
            # so that no single call stalls the real-time worker
            return self._drain((1 + CATCH_UP_BLOCKS) * lines.shape[0])
        return self._run(lines, t_s)

    def flush(self) -> MotionBlock:
        """End of stream: track every line still held back (at least 2 to choose an echo).

        Returns their trace (empty when nothing is pending); a recording shorter than
        ``select_s`` thus still gets a trace, from an echo chosen on fewer lines.
        """
        if self.meta is None or not self.active or not self._pending:
            return self._empty()
        if self._home is None:
            if sum(p[1].shape[0] for p in self._pending) < 2:
                return self._empty()
            self._choose_echo()
        return self._drain(None)

    def _empty(self) -> MotionBlock:
        e = np.zeros(0)
        return MotionBlock(e, e.copy(), e.copy(), self.depth_m)

    def _drain(self, max_lines: int | None) -> MotionBlock:
        """Track the oldest ``max_lines`` held-back lines (all if None); keep the rest."""
        lines = np.concatenate([p[0] for p in self._pending])
        t_s = np.concatenate([p[1] for p in self._pending])
        take = lines.shape[0] if max_lines is None else min(max_lines, lines.shape[0])
        self._pending = [(lines[take:], t_s[take:])] if take < lines.shape[0] else []
        return self._run(lines[:take], t_s[:take])

    def _held_lines(self, index: np.ndarray) -> np.ndarray:
        """(len(index), n_samples) held-back lines at positions ``index`` (any order), copied
        from their blocks without joining every held-back line."""
        starts = np.cumsum([0] + [p[0].shape[0] for p in self._pending])
        block = np.searchsorted(starts, index, side="right") - 1
        return np.stack([self._pending[b][0][i - starts[b]] for b, i in zip(block, index)])

    def _choose_echo(self) -> None:
        """Choose the echo to track from the first ``select_lines`` lines held back (all of
        them at the end of a shorter stream), so that the choice does not depend on how the
        lines were cut into blocks, and find it in the first line, the line the trace is
        relative to.

        The candidates are the ``SELECTION_CANDIDATES`` best local maxima of the selection
        score (:func:`moving_echo_score`) and as many of the correlated echo power, over fixed
        depth windows. Each is placed at the first line (:meth:`_place_at_line0`), tracked
        through the selection lines and back, and the best by :func:`tracked_echo_score` is
        taken. The fixed-window score alone fails where an echo moves more than its pulse
        length between lines (at 100 lines/s a pericardium moves up to 0.6 mm per line): there
        it decorrelates and aliases, and a slow echo beside a static one wins, which no single
        trace describes. Candidates are tracked through every ``stride``-th line, the lines
        whose pairs the score uses (at most ``2 x SELECTION_PAIRS`` lines, at 256 lines/s or
        more, or at the line rate where that is lower), so the choice costs about the same at
        any line rate. Envelope input (no phase) takes the bright echo whose amplitude changes
        most.
        """
        n = min(sum(p[0].shape[0] for p in self._pending), self.select_lines)
        if not all(np.all(np.isfinite(lines)) for lines, _ in self._pending):
            raise DataError(describe("MotionTracker", "finite line samples", "NaN or infinite values"))
        guard = self._window // 2 + 1  # window and its first search inside the line
        stride = max(1, (n - 1) // SELECTION_PAIRS)
        first = np.arange(0, n - 1, stride)  # the first line of each line pair scored
        tracked = np.arange(0, n, stride)
        rate_hz = self.meta.prf_hz / stride
        lags = self._search_lags(rate_hz)
        if self._mode == MODE_ENVELOPE:
            env = self._held_lines(np.arange(n)).astype(np.float64)
            power = ndimage.uniform_filter1d(np.mean(env**2, axis=0), self._window)
            change = ndimage.uniform_filter1d(np.std(env, axis=0), self._window)
            score = power * change
            centre = int(guard + np.argmax(score[guard : self._n_iq - guard]))
            lo = centre - self._window // 2  # the window centred on ``centre``, inside the line
            k = int(np.argmax(np.mean(env[tracked, lo : lo + self._window] ** 2, axis=1)))
            energy = {0: env[0] ** 2, k: env[tracked[k]] ** 2}
            self._set_home(self._place_at_line0(centre, k, guard, self._held_lines(tracked), lags, score, energy))
            return
        iq_a, _, _ = to_iq(self._held_lines(first), self.meta)
        iq_b, _, _ = to_iq(self._held_lines(first + 1), self.meta)
        ensemble = max(1, int(round(SELECTION_ENSEMBLE_S * self.meta.prf_hz / stride)))
        summed, coherence, v = _echo_terms(iq_a, iq_b, self.meta.prf_hz, self.meta.f0_hz, self.meta.c_m_s,
                                           self._window, ensemble)
        score = _score(summed, coherence, v)
        inside = slice(guard, self._n_iq - guard)
        candidates = []
        for values in (score, np.mean(summed, axis=0)):
            peaks = _local_maxima(values[inside], self._window // 2, SELECTION_CANDIDATES)
            candidates += [guard + i for i in peaks]
        w = self._window
        pairs = np.arange(first.shape[0])[:, None]

        def windows(start):  # (n_pairs, W) sample indices of windows starting at ``start`` (float)
            return np.clip(np.floor(start + 0.5).astype(np.int64), 0, self._n_iq - w)[:, None] + np.arange(w)

        lag_lines = max(1, int(round(SELECTION_ENSEMBLE_S * rate_hz)))
        wrap_m = self.meta.c_m_s / (2.0 * self.meta.f0_hz)
        # each candidate is centred in the line its echo fills best (index k into ``first``,
        # which is also ``tracked[k]``) and in line 0, on |IQ|^2 of those lines
        fill = {c: int(np.argmax(summed[:, c] * coherence[:, c] ** 2)) for c in candidates}
        energy = {k: np.abs(iq_a[k]).astype(np.float64) ** 2 for k in {0, *fill.values()}}
        tracked_lines = self._held_lines(tracked)
        # per candidate: centre at line 0, track (samples), its score without the
        # forward-backward check (an upper bound), and its line pairs' windows along the track
        placed = []
        for centre, k in fill.items():
            centre0 = self._place_at_line0(centre, k, guard, tracked_lines, lags, score, energy)
            if any(centre0 == p[0] for p in placed):
                continue
            home, track = self._track_lines(centre0, tracked_lines, lags)
            seg_a = iq_a[pairs, windows(home + track[: first.shape[0]])]
            # the second line of the last pair may lie one line past the last tracked line
            slope = (track[-1] - track[-2]) / stride
            at_b = np.interp(first + 1, tracked, track) + np.maximum(first + 1 - tracked[-1], 0) * slope
            seg_b = iq_b[pairs, windows(home + at_b)]
            bound = tracked_echo_score(seg_a, seg_b, track * self.spacing_m, rate_hz, lag_lines, 0.0, wrap_m)
            placed.append((centre0, track, bound, seg_a, seg_b))
        # the forward-backward check costs a second track: candidates in order of the score
        # they would have if their tracks agreed, until none can beat the best found
        best_centre, best_score = placed[0][0], -1.0
        for centre0, track, bound, seg_a, seg_b in sorted(placed, key=lambda p: -p[2]):
            if bound <= best_score:
                break
            _, back = self._track_lines(int(round(centre0 + track[-1])), tracked_lines[::-1], lags)
            fb_m = float(np.sqrt(np.mean(((track - track[-1]) - back[::-1]) ** 2))) * self.spacing_m
            value = tracked_echo_score(seg_a, seg_b, track * self.spacing_m, rate_hz, lag_lines, fb_m, wrap_m)
            if value > best_score:
                best_centre, best_score = centre0, value
        self._set_home(best_centre)

    def _place_at_line0(self, centre: int, k: int, guard: int, tracked_lines: np.ndarray, lags: tuple[int, int],
                        score: np.ndarray, energy: dict[int, np.ndarray]) -> int:
        """Centre (IQ sample) at the first line of the echo in the window centred at ``centre``.

        The echo that fills a fixed window best over the selection time may lie elsewhere at
        the first line (a lung line that swings 2 mm further up, a pericardium caught in
        systole: the window then held fluid or deep speckle there). So the window is centred on
        its echo (:meth:`_centre_on_energy`, with the selection ``score`` as floor) in
        ``tracked_lines[k]`` (evenly spaced held-back lines from the first one; search
        half-ranges ``lags`` for that spacing), where the echo fills it best, tracked back to
        ``tracked_lines[0]`` and centred there again; ``energy`` holds the ``|IQ|^2``
        (envelope^2) of lines ``k`` and 0, by index.
        """
        centre = self._centre_on_energy(centre, guard, energy[k], score)
        if k == 0:
            return centre
        _, back = self._track_lines(centre, tracked_lines[k::-1], lags)
        centre = min(max(int(round(centre + back[-1])), guard), self._n_iq - guard - 1)
        return self._centre_on_energy(centre, guard, energy[0])

    def _centre_on_energy(self, centre: int, guard: int, energy: np.ndarray, score: np.ndarray | None = None) -> int:
        """Centre (IQ sample) of the window moved onto the energy of its echo in a line whose
        ``|IQ|^2`` is ``energy`` (n_iq,).

        The selection scores fixed depth windows over many lines, so the best one may hold
        only the edge of its echo at a given line. The window is moved to the centroid of
        ``|IQ|^2`` (envelope^2) inside it, up to ``CENTRING_STEPS`` times, so that the
        reported depth is the echo's; with ``score`` (n_iq,), the selection score, a move is
        taken only where it stays at least
        ``CENTRING_MIN_SCORE`` times its value at the chosen centre, so that the window is
        not pulled off a moving echo onto a brighter neighbour that moves otherwise.
        The centre stays ``guard`` samples inside the line.
        """
        w = self._window
        floor = -math.inf if score is None else CENTRING_MIN_SCORE * score[centre]
        for _ in range(CENTRING_STEPS):
            start = centre - w // 2
            seg = energy[start : start + w]
            if not seg.sum() > 0:
                break
            moved = int(round(start + float(np.sum(seg * np.arange(w))) / seg.sum()))
            moved = min(max(moved, guard), self._n_iq - guard - 1)
            if moved == centre or (score is not None and score[moved] < floor):
                break
            centre = moved
        return centre

    def _track_lines(self, centre: int, lines: np.ndarray, lags: tuple[int, int]) -> tuple[int, np.ndarray]:
        """The window centred at ``centre`` (IQ sample) in ``lines[0]``, tracked through
        ``lines`` (m, n_samples), evenly spaced lines in tracking order, with the combined
        tracker (NCC on the envelope for envelope input), which does not alias; ``lags`` are
        the NCC search half-ranges for that spacing (:meth:`_search_lags`).

        Returns ``(start, track)``: the window's first sample in ``lines[0]`` and its
        displacement (m,) in IQ samples at each line.
        """
        w = self._window
        home = min(max(centre - w // 2, 0), self._n_iq - w)
        lines = np.ascontiguousarray(lines)
        buf_iq = np.zeros(self._n_iq, np.complex64)
        buf_env = np.zeros(self._n_iq, np.float32)
        _fill(lines, 0, self._mode, self._carrier, self._taps, self._stride, self._half, home, home + w,
              buf_iq, buf_env)
        ref_iq = buf_iq[home : home + w].copy()
        ref_env = buf_env[home : home + w].copy()
        state = np.array([home, 0.0, 0.0, 0.0, 0.0, 1.0])
        out = np.empty(lines.shape[0])
        _track_kernel(
            lines, self._mode, self._carrier, self._taps, self._stride, self._half, True,
            self._mode != MODE_ENVELOPE, state, ref_iq, ref_env, float(home), lags[0], lags[1],
            self._f0_cycles_per_sample, self.keyframe_ncc, buf_iq, buf_env, out,
        )
        return home, out

    def _start(self, first_line: np.ndarray) -> None:
        """The first line becomes the reference (displacement 0); the reported depth is the
        energy centroid of its window, since a window moves with its dominant echoes."""
        w, h = self._window, self._home
        _fill(first_line[None, :], 0, self._mode, self._carrier, self._taps, self._stride, self._half,
              h, h + w, self._buf_iq, self._buf_env)
        self._ref_env[:] = self._buf_env[h : h + w]
        self._ref_iq[:] = self._buf_iq[h : h + w]
        self._state[:] = (h, 0.0, 0.0, 0.0, 0.0, 1.0)
        self._started = True
        weight = self._ref_env.astype(np.float64) ** 2
        if weight.sum() > 0:
            centroid = h + float(np.sum(weight * np.arange(w)) / weight.sum())
            self.depth_m = float(self.meta.depth_m(centroid * self._stride))

    def _run(self, lines: np.ndarray, t_s: np.ndarray) -> MotionBlock:
        if not self._started:
            self._start(lines[0])
        d_samples = np.empty(lines.shape[0])
        prev = self._state[2]
        est = self.effective_estimator
        _track_kernel(
            lines, self._mode, self._carrier, self._taps, self._stride, self._half, est != "kasai", est != "ncc",
            self._state, self._ref_iq, self._ref_env, float(self._home), self._max_lag, self._track_lag,
            self._f0_cycles_per_sample,
            self.keyframe_ncc, self._buf_iq, self._buf_env, d_samples,
        )
        disp = d_samples * self.spacing_m
        vel = np.diff(np.concatenate(([prev * self.spacing_m], disp))) * self.meta.prf_hz
        if not self._has_output:  # the first line has no predecessor
            vel[0] = 0.0
            self._has_output = True
        return MotionBlock(t_s, disp, vel, self.depth_m)
