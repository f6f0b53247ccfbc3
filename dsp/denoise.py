"""Speckle reduction on display images (lines x rows, dB), and the speckle SNR measure.

- :func:`median_depth` + :func:`persistence`: the live pair. A short median along depth
  removes speckle spikes without smearing interfaces; a causal one-pole persistence along
  slow time averages the rest. Both are streaming-exact (the persistence state is
  carried), so any block split gives the same image.
- :func:`wavelet_shrink`: per line, periodised DWT along depth, soft thresholding of the
  detail subbands (BayesShrink, Chang et al. 2000, or VisuShrink), inverse DWT. Applied to
  the log image, where speckle is additive (homomorphic filtering). Line by line, so
  streaming-exact too.
- :func:`srad_db`: speckle-reducing anisotropic diffusion (Yu and Acton 2002) on an
  M-mode window, in linear intensity. A window method: it mixes neighbouring lines, so in
  a stream its output depends on the block edges (see :class:`~mmode.dsp.processor.Processor`).

Images are float32 (n_lines, n_rows) in dB in [-dynamic_range_db, 0]; outputs likewise.
"""

from __future__ import annotations

import numpy as np

from mmode.dsp import kernels, wavelets
from mmode.errors import UsageError, describe


def median_depth(img_db: np.ndarray, half_width: int) -> np.ndarray:
    """Median along depth over ``2*half_width+1`` rows (edges replicated), (n, R) float32.

    Equals ``scipy.ndimage.median_filter(img, size=(1, 2*half_width+1), mode="nearest")``.
    """
    if half_width < 0:
        raise UsageError(describe("median_depth", "half_width >= 0", half_width))
    img = np.ascontiguousarray(img_db, dtype=np.float32)
    out = np.empty_like(img)
    kernels.median_depth(img, int(half_width), out)
    return out


def persistence(img_db: np.ndarray, alpha: float, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Causal persistence ``y[i] = alpha y[i-1] + (1 - alpha) x[i]`` along slow time.

    img_db : (n, R). alpha : in [0, 1). state : (R,) last output line before this block,
    or None to start from the first line (``y[-1] = x[0]``). Returns (out (n, R) float32,
    new state (R,) float32); the input state is not modified.
    """
    if not 0.0 <= alpha < 1.0:
        raise UsageError(describe("persistence", "0 <= alpha < 1", alpha))
    img = np.ascontiguousarray(img_db, dtype=np.float32)
    if state is None:
        state = img[0].copy() if img.shape[0] else np.zeros(img.shape[1], np.float32)
    else:
        state = np.array(state, dtype=np.float32)
    out = np.empty_like(img)
    kernels.persistence(img, np.float32(alpha), state, out)
    return out, state


def _soft(d: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.sign(d) * np.maximum(np.abs(d) - t, 0.0)


def wavelet_shrink(
    img_db: np.ndarray, wavelet: str = "db4", level: int = 4, rule: str = "bayes", scale: float = 1.0
) -> np.ndarray:
    """Wavelet shrinkage along depth, line by line, (n, R) float32.

    Each line is edge-padded to a multiple of ``2**level``, decomposed with the periodised
    DWT, each detail subband soft-thresholded, and reconstructed. The noise level is
    ``sigma = median(|cD_1|) / 0.6745`` per line. ``rule="bayes"`` (BayesShrink): threshold
    ``sigma^2 / sigma_x`` per subband with ``sigma_x^2 = max(var(cD) - sigma^2, 0)``
    (all coefficients removed where ``sigma_x = 0``); ``rule="visu"`` (VisuShrink):
    ``sigma sqrt(2 ln N)``. ``scale`` multiplies the threshold (the strength knob).
    """
    if rule not in ("bayes", "visu"):
        raise UsageError(describe("wavelet_shrink rule", "'bayes' or 'visu'", repr(rule)))
    img = np.asarray(img_db, dtype=np.float64)
    n, n_rows = img.shape
    block = 1 << level
    padded_rows = -(-n_rows // block) * block
    x = np.pad(img, ((0, 0), (0, padded_rows - n_rows)), mode="edge") if padded_rows != n_rows else img
    coeffs = wavelets.wavedec(x, wavelet, level)
    sigma = np.median(np.abs(coeffs[-1]), axis=1, keepdims=True) / 0.6745
    for k in range(1, len(coeffs)):
        d = coeffs[k]
        if rule == "visu":
            t = sigma * np.sqrt(2 * np.log(padded_rows))
        else:
            sigma_x = np.sqrt(np.maximum(np.mean(d * d, axis=1, keepdims=True) - sigma**2, 0.0))
            t = np.where(sigma_x > 0, sigma**2 / np.maximum(sigma_x, 1e-12), np.abs(d).max(axis=1, keepdims=True))
        coeffs[k] = _soft(d, scale * t)
    rec = wavelets.waverec(coeffs, wavelet)[:, :n_rows]
    return rec.astype(np.float32)


def srad_db(img_db: np.ndarray, n_iter: int, dt: float = 0.2) -> np.ndarray:
    """SRAD on a dB window: to intensity ``10^(dB/10)``, diffuse, back to dB, (n, R) float32.

    n_iter : iterations (more = smoother). dt : step, 0 < dt <= 0.25.
    """
    if not 0.0 < dt <= 0.25 or n_iter < 0:
        raise UsageError(describe("srad", "0 < dt <= 0.25 and n_iter >= 0", (dt, n_iter)))
    img = np.asarray(img_db, dtype=np.float64)
    if img.size == 0:
        return img.astype(np.float32)
    intensity = np.ascontiguousarray(10.0 ** (img / 10.0))
    kernels.srad(intensity, int(n_iter), float(dt))
    return (10.0 * np.log10(np.maximum(intensity, 1e-30))).astype(np.float32)


def speckle_snr(amplitude: np.ndarray) -> float:
    """Speckle SNR ``mean / std`` of linear amplitude in a homogeneous region.

    About 1.91 for fully developed speckle (Rayleigh amplitude); higher is smoother.
    Pass a display region as ``10 ** (db / 20)``.
    """
    a = np.asarray(amplitude, dtype=np.float64)
    sd = a.std()
    return float(a.mean() / sd) if sd > 0 else float("inf")
