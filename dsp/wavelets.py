"""Daubechies DWT / MODWT along depth (numba), and wavelet energy features.

Filters come from PyWavelets (``pywt.Wavelet(name)``); the transforms themselves are numba
kernels (:mod:`mmode.dsp.kernels`) so they run without the GIL inside the processing
thread. Conventions match PyWavelets exactly (tested to 1e-5):

- :func:`wavedec` / :func:`waverec` = ``pywt.wavedec`` / ``pywt.waverec`` with
  ``mode="periodization"``, coefficients ``[cA_L, cD_L, ..., cD_1]``;
- :func:`modwt` = ``pywt.swt(x, w, level, trim_approx=True, norm=True)``, i.e. the
  maximal-overlap DWT (undecimated, periodic, energy preserving).

All functions work along the last axis of a 1-D or 2-D array (lines x rows).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pywt

from mmode.dsp import kernels
from mmode.errors import UsageError, describe


@lru_cache(maxsize=16)
def filters(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dec_lo, dec_hi, rec_lo, rec_hi) float64 of a Daubechies/orthogonal wavelet."""
    try:
        w = pywt.Wavelet(name)
    except ValueError:
        raise UsageError(describe("wavelet", "a PyWavelets wavelet name such as 'db4'", repr(name))) from None
    if not w.orthogonal:
        raise UsageError(describe("wavelet", "an orthogonal wavelet (Daubechies family)", repr(name)))
    return tuple(np.asarray(f, dtype=np.float64) for f in (w.dec_lo, w.dec_hi, w.rec_lo, w.rec_hi))


def _as_2d(x: np.ndarray) -> tuple[np.ndarray, bool]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return np.ascontiguousarray(x[None, :]), True
    if x.ndim != 2:
        raise UsageError(describe("wavelet input", "a 1-D or 2-D array", x.shape))
    return np.ascontiguousarray(x), False


def max_level(n: int) -> int:
    """Deepest level of a periodised transform of length ``n``: halvings that stay even."""
    level = 0
    while n % 2 == 0 and n >= 2:
        n //= 2
        level += 1
    return level


def _check_level(n: int, level: int) -> None:
    if level < 1 or n % (1 << level) != 0:
        raise UsageError(describe("wavelet level", f"1 <= level with length {n} divisible by 2**level", level))


def wavedec(x: np.ndarray, wavelet: str = "db4", level: int = 4) -> list[np.ndarray]:
    """Multilevel periodised DWT along the last axis: ``[cA_L, cD_L, ..., cD_1]``.

    x : (N,) or (n, N), ``N`` divisible by ``2**level``. Coefficient ``cD_j`` has length
    ``N / 2**j``. Equals ``pywt.wavedec(x, wavelet, mode="periodization", level=level)``.
    """
    x2, squeeze = _as_2d(x)
    _check_level(x2.shape[1], level)
    lo, hi, _, _ = filters(wavelet)
    details = []
    cur = x2
    for _ in range(level):
        half = cur.shape[1] // 2
        a = np.empty((cur.shape[0], half))
        d = np.empty((cur.shape[0], half))
        kernels.dwt_periodic(cur, lo, hi, a, d)
        details.append(d)
        cur = a
    coeffs = [cur] + details[::-1]
    return [c[0] for c in coeffs] if squeeze else coeffs


def waverec(coeffs: list[np.ndarray], wavelet: str = "db4") -> np.ndarray:
    """Inverse of :func:`wavedec` (``pywt.waverec`` with ``mode="periodization"``)."""
    _, _, rec_lo, rec_hi = filters(wavelet)
    squeeze = np.ndim(coeffs[0]) == 1
    cur, _ = _as_2d(coeffs[0])
    for d in coeffs[1:]:
        d2, _ = _as_2d(d)
        if d2.shape != cur.shape:
            raise UsageError(describe("waverec", f"detail of shape {cur.shape}", d2.shape))
        out = np.empty((cur.shape[0], 2 * cur.shape[1]))
        kernels.idwt_periodic(cur, d2, rec_lo, rec_hi, out)
        cur = out
    return cur[0] if squeeze else cur


def modwt(x: np.ndarray, wavelet: str = "db4", level: int = 4) -> list[np.ndarray]:
    """Maximal-overlap DWT along the last axis: ``[cA_L, cD_L, ..., cD_1]``, each (…, N).

    Periodic, undecimated, filters scaled by ``1/sqrt(2)`` per level, so the energies of the
    coefficients sum to the energy of ``x``. Equals
    ``pywt.swt(x, wavelet, level, trim_approx=True, norm=True)``; ``N`` divisible by
    ``2**level``.
    """
    x2, squeeze = _as_2d(x)
    _check_level(x2.shape[1], level)
    lo, hi, _, _ = filters(wavelet)
    lo = lo / np.sqrt(2.0)
    hi = hi / np.sqrt(2.0)
    details = []
    cur = x2
    for j in range(level):
        a = np.empty_like(cur)
        d = np.empty_like(cur)
        kernels.swt_level(cur, lo, hi, 1 << j, a, d)
        details.append(d)
        cur = a
    coeffs = [cur] + details[::-1]
    return [c[0] for c in coeffs] if squeeze else coeffs


def subband_energies(coeffs: list[np.ndarray]) -> np.ndarray:
    """Sum of squares of each subband along the last axis, (..., L+1) in coeffs order."""
    return np.stack([np.sum(np.square(c), axis=-1) for c in coeffs], axis=-1)


def relative_energies(energies: np.ndarray) -> np.ndarray:
    """Energies normalised to sum 1 along the last axis (all-zero rows stay zero)."""
    total = energies.sum(axis=-1, keepdims=True)
    return np.divide(energies, total, out=np.zeros_like(energies, dtype=np.float64), where=total > 0)


def wavelet_entropy(relative: np.ndarray) -> np.ndarray:
    """Shannon wavelet entropy ``-sum p log p`` (nats) of relative energies, last axis."""
    p = np.asarray(relative, dtype=np.float64)
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -np.sum(p * logp, axis=-1)
