"""Periodised Daubechies DWT along depth (PyWavelets), and wavelet energy features.

:func:`wavedec` / :func:`waverec` are ``pywt.wavedec`` / ``pywt.waverec`` with
``mode="periodization"`` along the last axis of a 1-D or 2-D array (lines x rows),
coefficients ``[cA_L, cD_L, ..., cD_1]``, with the checks the features and the wavelet
denoiser need (an orthogonal wavelet, a length divisible by ``2**level``) raised as
:class:`~mmode.errors.UsageError`. Until 0.2 these were our own numba kernels, kept so the
transform would run without the GIL in the processing thread. PyWavelets' C loops release it
too (measured with PyWavelets 1.8: a Python thread kept counting at its free rate through a
276 ms ``dwt_axis`` call), and on a 200 x 128 block of the live path it took 206 us against
our kernels' 365 us (issue 15), so the library does the job.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pywt

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
    """Multilevel periodised DWT along the last axis: ``[cA_L, cD_L, ..., cD_1]``, float64.

    x : (N,) or (n, N), ``N`` divisible by ``2**level``. Coefficient ``cD_j`` has length
    ``N / 2**j``.
    """
    x2, squeeze = _as_2d(x)
    _check_level(x2.shape[1], level)
    filters(wavelet)  # an orthogonal wavelet PyWavelets knows
    coeffs = pywt.wavedec(x2, wavelet, mode="periodization", level=level, axis=-1)
    return [c[0] for c in coeffs] if squeeze else coeffs


def waverec(coeffs: list[np.ndarray], wavelet: str = "db4") -> np.ndarray:
    """Inverse of :func:`wavedec`; each detail must have the shape of the approximation it
    is combined with."""
    filters(wavelet)
    squeeze = np.ndim(coeffs[0]) == 1
    parts = [_as_2d(c)[0] for c in coeffs]
    size = parts[0].shape
    for d in parts[1:]:
        if d.shape != size:
            raise UsageError(describe("waverec", f"detail of shape {size}", d.shape))
        size = (size[0], 2 * size[1])
    out = pywt.waverec(parts, wavelet, mode="periodization", axis=-1)
    return out[0] if squeeze else out


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
