"""Axial tissue motion from RF or IQ lines: Kasai phase, NCC block matching, combined.

The phase estimators work on complex baseband (IQ) lines; RF lines are demodulated first
with :func:`mmode.dsp.demod.rf_to_iq` (NCC also takes RF or envelope directly). Conventions: slow time (line
index) is axis 0, fast time (depth) axis 1; displacement is positive away from the probe, in
metres.

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

The streaming tracker of one echo is :class:`mmode.dsp.tracker.MotionTracker`; the choice of
that echo is :mod:`mmode.dsp.echo_choice`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage

from mmode.dsp.demod import to_iq
from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta

ESTIMATORS = ("combined", "kasai", "ncc")


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
def _ncc_curve(ref, cur, start, lag_lo, lag_hi):
    """NCC of ``ref`` (W,) against ``cur[start+lag : +W]`` at lags ``lag_lo..lag_hi``
    (inclusive, inside ``cur``), and the energy agreement ``2 sqrt(Ea Eb) / (Ea + Eb)`` of the
    two mean-removed segments at each lag: two (n_lags,) float64 arrays."""
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
    return ncc, agree


@njit(nogil=True, cache=True)
def _refine(ncc, best):
    """Sub-sample offset of the NCC maximum at index ``best`` (parabola through it and its
    neighbours; 0 at the ends or where the curve is not concave) and the parabola's value
    there, at most 1: ``(frac, peak)``."""
    frac = 0.0
    peak = ncc[best]
    if 0 < best < ncc.shape[0] - 1:
        a, b, c = ncc[best - 1], ncc[best], ncc[best + 1]
        curv = a - 2.0 * b + c
        if curv < 0.0:
            frac = 0.5 * (a - c) / curv
            peak = min(1.0, b - 0.25 * (a - c) * frac)
    return frac, peak


@njit(nogil=True, cache=True)
def _is_local_max(ncc, j):
    """Whether ``ncc[j]`` is not below its neighbours (the ends count with their one neighbour)."""
    n = ncc.shape[0]
    return (j == 0 or ncc[j] >= ncc[j - 1]) and (j == n - 1 or ncc[j] >= ncc[j + 1])


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
    ncc, agree = _ncc_curve(ref, cur, start, lag_lo, lag_hi)
    n_lags = ncc.shape[0]
    best_ncc = -1.0
    for j in range(n_lags):
        best_ncc = max(best_ncc, ncc[j])
    best = -1
    best_key = 0.0
    for j in range(n_lags):
        if _is_local_max(ncc, j) and ncc[j] >= best_ncc - NCC_PEAK_MARGIN:
            key = ncc[j] * agree[j] ** ENERGY_WEIGHT
            if best < 0 or key > best_key:
                best = j
                best_key = key
    frac, peak = _refine(ncc, best)
    return lag_lo + best + frac, peak, agree[best]


@njit(nogil=True, cache=True)
def _ncc_peak_near(ref, cur, start, lag_lo, lag_hi, expected, sigma):
    """The NCC maximum of ``ref`` (W,) in ``cur`` most likely to be the echo itself, given
    that it is expected near lag ``expected`` (samples) with standard deviation ``sigma``
    (samples): the tracker's choice on scanner images (grey levels at video rates).

    Every local NCC maximum at lags ``lag_lo..lag_hi`` is a candidate, scored by ``NCC x
    agreement ** ENERGY_WEIGHT x exp(-((lag - expected) / sigma) ** 2 / 2)``: shape, energy
    (as :func:`_ncc_peak`) and closeness to the expected position. On such images every
    bright line is a smooth bump that matches any other almost as well as itself (the pleura
    and its A-lines, fascia), so shape alone cannot tell them apart, and where each one lies can.

    Returns ``(shift, peak, agreement, confidence)``: the chosen lag refined by the NCC
    parabola (samples), the interpolated NCC there, the energy agreement at its integer lag,
    and ``(s1 - s2) / (s1 + s2)`` of its score ``s1`` and the score ``s2`` of the best
    candidate at least half a window away (another echo; nearer ones share most of the window
    with it), 1 without one: near 1 for a clear match, 0 when another echo is as likely.
    """
    ncc, agree = _ncc_curve(ref, cur, start, lag_lo, lag_hi)
    # log scores: the Gaussian factor underflows far from ``expected``; -inf: no candidate
    log_key = np.full(ncc.shape[0], -math.inf)
    for j in range(ncc.shape[0]):
        if _is_local_max(ncc, j) and ncc[j] > 0.0:
            z = (lag_lo + j - expected) / sigma
            log_key[j] = math.log(ncc[j]) + ENERGY_WEIGHT * math.log(agree[j]) - 0.5 * z * z
    best = int(np.argmax(log_key))
    if log_key[best] == -math.inf:  # no positive correlation anywhere: stay where expected
        j = min(max(int(math.floor(expected + 0.5)) - lag_lo, 0), ncc.shape[0] - 1)
        return float(lag_lo + j), max(ncc[j], 0.0), agree[j], 0.0
    rival = -math.inf  # the best candidate at least half a window away: another echo
    for j in range(ncc.shape[0]):
        if 2 * abs(j - best) >= ref.shape[0]:
            rival = max(rival, log_key[j])
    frac, peak = _refine(ncc, best)
    confidence = math.tanh(0.5 * (log_key[best] - rival))  # (s1 - s2) / (s1 + s2); 1 without a rival
    return lag_lo + best + frac, peak, agree[best], confidence


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
def _add_inphase_weights(ref, cur, start, phase, out):
    """Add to ``out`` (W,) each sample's share of the correlation ``sum(conj(ref) * cur[start
    : start+W])`` whose phase is ``phase``: ``Re(conj(ref_k) cur_k exp(-i phase))``.

    To first order in the samples' phase differences the correlation's phase is the mean of
    theirs weighted so; a window's phase thus measures the displacement at the centroid of
    these weights, summed over the pairs of a trace (:func:`inphase_depth_index`), which in a
    straining wall need not be the centroid of the window's energy."""
    c = math.cos(phase)
    s = math.sin(phase)
    for k in range(ref.shape[0]):
        a = ref[k]
        b = cur[start + k]
        out[k] += (a.real * b.real + a.imag * b.imag) * c + (a.real * b.imag - a.imag * b.real) * s


def inphase_weights(ref: np.ndarray, cur: np.ndarray, min_coherence: float = 0.0) -> np.ndarray:
    """:func:`_add_inphase_weights` of pairs of windows ``ref``, ``cur`` (m, W) complex, each
    at its own correlation's phase, summed over the pairs whose coherence (the correlation's
    magnitude normalised by the energies, as :func:`_phase_at`'s) reaches ``min_coherence``:
    (W,) float64."""
    prod = np.conj(ref.astype(np.complex128)) * cur
    total = prod.sum(axis=1)
    energy = np.sqrt(np.sum(np.abs(ref) ** 2, axis=1) * np.sum(np.abs(cur) ** 2, axis=1))
    used = np.abs(total) >= min_coherence * energy
    return np.real(prod[used] * np.exp(-1j * np.angle(total[used]))[:, None]).sum(axis=0)


def inphase_depth_index(weights: np.ndarray) -> float | None:
    """Centroid (window samples from its first) of the summed in-phase weights (W,), negative
    sums (samples whose products average against the pair's phase: noise) counted as 0;
    None before any weight is positive."""
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    total = w.sum()
    return float(np.sum(w * np.arange(w.shape[0])) / total) if total > 0 else None


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
