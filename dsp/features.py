"""Per-line wavelet and temporal features of the display image, with a streaming wrapper.

Per line (arrays of length n_lines in each block, identical for any block split):

- ``wavelet_rel_energy`` (n, L+1): relative energies of ``[cA_L, cD_L, ..., cD_1]`` of the
  line's dB profile below ``feature_depth_m`` (mean removed), periodised DWT;
- ``wavelet_entropy`` (n,): Shannon entropy of those relative energies (nats);
- ``decorrelation`` (n,): ``1 - corr(line, previous line)`` below ``feature_depth_m``
  (Pearson; a line without variance counts as uncorrelated);
- ``decorrelation_lag`` (n,): the same against the line ``lag_s`` (0.1 s) earlier;
- ``decorrelation_rate_per_s`` (n,): ``max(decorrelation_lag - decorrelation, 0) /
  (lag - 1 line)``, the speckle decorrelation rate. Electronic noise decorrelates every
  line equally and cancels in the difference (it only scales the rate by the signal's
  share of the power), so this measures tissue renewal: about 3/s
  for simulated lung sliding at 400 Hz PRF, about 0.1/s for no sliding;
- ``mean_db`` (n,): mean dB below ``feature_depth_m``.

The stream starts still (the lines before the first are taken equal to it).

:func:`periodicity` gives the dominant period of a trace such as ``mean_db`` (the same
estimator as the motion rates, :mod:`mmode.dsp.rates`); ``mmode process`` reports it for the
whole recording. It is not computed per block: over an 8 s history it cost more than all the
other features together at 20 kHz (issue 15), and no view used it.
"""

from __future__ import annotations

import numpy as np

from mmode.dsp import rates, wavelets
from mmode.errors import DataError, UsageError, describe

#: Search range of :func:`periodicity`: breathing (6/min) to fast heart rates (200/min).
MIN_PERIOD_S, MAX_PERIOD_S = 0.3, 10.0
#: Lag of ``decorrelation_lag`` and the decorrelation rate, seconds of slow time.
DECORRELATION_LAG_S = 0.1
#: Most values (lines x rows) of the decorrelation tail a FeatureExtractor keeps (8 MiB of float64).
MAX_TAIL_VALUES = 1 << 20


def periodicity(trace: np.ndarray, rate_hz: float, min_period_s: float = MIN_PERIOD_S,
                max_period_s: float = MAX_PERIOD_S) -> tuple[float, float]:
    """Dominant period of a 1-D trace: :func:`mmode.dsp.rates.dominant_rate` as a period.

    trace : (n,) samples at ``rate_hz``. Returns ``(period_s, strength)``: the period of the
    dominant rate searched between ``min_period_s`` and ``max_period_s`` (and at most half
    the trace) and its confidence, the Pearson correlation of the trace with itself one
    period later (0..1, 1 = perfectly periodic). ``(nan, 0.0)`` when the trace is flat,
    has no periodic peak, or holds fewer than two periods of ``min_period_s``.
    """
    try:
        est = rates.dominant_rate(trace, rate_hz, 60.0 / max_period_s, 60.0 / min_period_s)
    except DataError:  # too short for two periods: no period rather than a guess
        return float("nan"), 0.0
    return 60.0 / est.rate_per_min, est.confidence


class FeatureExtractor:
    """Streaming features of display blocks (carries the last ``lag_s`` of lines).

    Parameters: row_depths_m (R,), prf_hz, feature_depth_m (rows at or below this depth
    are used; None = the lower half of the image), wavelet name, levels, lag_s of the
    decorrelation rate.
    """

    def __init__(self, row_depths_m: np.ndarray, prf_hz: float, feature_depth_m: float | None = None,
                 wavelet: str = "db4", levels: int = 4, lag_s: float = DECORRELATION_LAG_S) -> None:
        depths = np.asarray(row_depths_m, dtype=np.float64)
        n_rows = depths.shape[0]
        if feature_depth_m is None:
            r0 = n_rows // 2
        else:
            r0 = int(np.searchsorted(depths, feature_depth_m))
        if n_rows - r0 < 4:
            raise UsageError(describe("feature_depth_m", f"at least 4 rows below it (deepest row {depths[-1]:.4f} m)",
                                      feature_depth_m))
        self.r0 = r0
        self.prf_hz = float(prf_hz)
        self.wavelet = wavelet
        wavelets.filters(wavelet)
        m = n_rows - r0
        self.levels = max(1, min(int(levels), int(np.log2(m)) - 1))
        self._m = (m >> self.levels) << self.levels  # rows analysed: a multiple of 2**levels
        self.lag_lines = max(2, int(round(lag_s * self.prf_hz)))
        if self.lag_lines > MAX_TAIL_VALUES // m:
            raise UsageError(describe("decorrelation lag", f"at most {MAX_TAIL_VALUES // m} lines (lag_s x prf_hz)",
                                      f"{lag_s:g} s x {self.prf_hz:g} Hz"))
        self._tail: np.ndarray | None = None  # (lag_lines, m) last normalised lines

    def process(self, display_db: np.ndarray) -> dict:
        """Features of one block (n, R) float32 dB; see the module docstring for the keys."""
        img = np.asarray(display_db, dtype=np.float32)
        n = img.shape[0]
        below = img[:, self.r0:].astype(np.float64)
        mean_db = below.mean(axis=1)
        centred = below - mean_db[:, None]
        norm = np.sqrt(np.sum(centred * centred, axis=1, keepdims=True))
        z = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)
        lag = self.lag_lines
        if self._tail is None and n:
            self._tail = np.repeat(z[:1], lag, axis=0)  # the stream starts still
        if n:
            ext = np.concatenate([self._tail, z])
            corr_1 = np.einsum("ij,ij->i", ext[lag:], ext[lag - 1:-1])
            corr_lag = np.einsum("ij,ij->i", ext[lag:], ext[:-lag])
            self._tail = ext[-lag:].copy()
        else:
            corr_1 = corr_lag = np.zeros(0)
        decor_1 = 1.0 - corr_1
        decor_lag = 1.0 - corr_lag
        rate = np.maximum(decor_lag - decor_1, 0.0) * self.prf_hz / (lag - 1)
        coeffs = wavelets.wavedec(centred[:, : self._m] - centred[:, : self._m].mean(axis=1, keepdims=True),
                                  self.wavelet, self.levels)
        rel = wavelets.relative_energies(wavelets.subband_energies(coeffs))
        return {
            "mean_db": mean_db.astype(np.float32),
            "decorrelation": decor_1.astype(np.float32),
            "decorrelation_lag": decor_lag.astype(np.float32),
            "decorrelation_rate_per_s": rate.astype(np.float32),
            "wavelet_rel_energy": rel.astype(np.float32),
            "wavelet_entropy": wavelets.wavelet_entropy(rel).astype(np.float32),
        }
