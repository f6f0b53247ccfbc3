"""Rates from a motion trace: dominant rate with confidence, beat intervals, rhythm regularity.

A trace is a 1-D signal sampled at ``fs_hz`` (a tracked displacement in metres, but any
unit works). Pure functions, numpy/scipy only.

- :func:`dominant_rate`: the period with the highest normalised autocorrelation (Pearson
  correlation of the trace with itself shifted by the lag) in a rate range, refined by a
  parabola; the confidence is that correlation (1 for a perfectly periodic trace).
- :func:`beat_times` / :func:`rhythm`: one time per beat (the peak of the cardiac excursion)
  and the beat-to-beat intervals; the coefficient of variation of the intervals measures
  irregularity (sinus rhythm a few percent, atrial fibrillation 15-30 %).
- :func:`breathing_rate`: :func:`dominant_rate` over the breathing range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from mmode.errors import DataError, describe

#: Rate ranges searched, per minute.
CARDIAC_RANGE_PER_MIN = (30.0, 220.0)
BREATHING_RANGE_PER_MIN = (4.0, 60.0)
#: Coefficient of variation of beat intervals above which a rhythm is called irregular.
IRREGULAR_CV = 0.10
#: Traces are decimated to about this rate before the analysis (rates are far below it).
ANALYSIS_RATE_HZ = 100.0


@dataclass(frozen=True)
class RateEstimate:
    """rate_per_min: dominant rate (NaN if none found); confidence: 0..1."""

    rate_per_min: float
    confidence: float


@dataclass(frozen=True)
class Rhythm:
    """Beat analysis of a cardiac trace.

    rate_per_min : 60 / mean beat interval (with at least 2 intervals), else the
        :func:`dominant_rate`.
    confidence : the :func:`dominant_rate` confidence (low for an irregular rhythm).
    beat_times_s : (n_beats,) time of each beat from the start of the trace, seconds.
    intervals_s : (n_beats - 1,) beat-to-beat intervals, seconds.
    interval_cv : std / mean of the intervals (NaN with fewer than 2 intervals).
    rmssd_s : root mean square of successive interval differences, seconds.
    regular : interval_cv below :data:`IRREGULAR_CV` (False when not measurable).
    """

    rate_per_min: float
    confidence: float
    beat_times_s: np.ndarray
    intervals_s: np.ndarray
    interval_cv: float
    rmssd_s: float
    regular: bool

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN becomes None)."""

        def num(x: float) -> float | None:
            return None if not math.isfinite(x) else float(x)

        return {
            "rate_per_min": num(self.rate_per_min),
            "confidence": num(self.confidence),
            "intervals_s": [float(x) for x in self.intervals_s],
            "interval_cv": num(self.interval_cv),
            "rmssd_s": num(self.rmssd_s),
            "rhythm": "regular" if self.regular else ("irregular" if math.isfinite(self.interval_cv) else "unknown"),
        }


def _prepare(trace: np.ndarray, fs_hz: float, min_seconds: float) -> tuple[np.ndarray, float]:
    """Finite 1-D float64 trace, linearly detrended and decimated to about ANALYSIS_RATE_HZ."""
    x = np.asarray(trace, dtype=np.float64)
    if x.ndim != 1:
        raise DataError(describe("rate trace", "a 1-D trace", x.shape))
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise DataError(describe("rate trace", "fs_hz > 0", fs_hz))
    if not np.isfinite(x).all():
        raise DataError(describe("rate trace", "finite samples", "NaN or Inf"))
    if x.shape[0] < 4 or x.shape[0] / fs_hz < min_seconds:
        raise DataError(describe("rate trace", f"at least {min_seconds:g} s of samples", f"{x.shape[0] / fs_hz:.3g} s"))
    factor = max(1, int(fs_hz // ANALYSIS_RATE_HZ))
    if factor > 1:
        x = signal.resample_poly(signal.detrend(x), 1, factor)
        fs_hz = fs_hz / factor
    return signal.detrend(x), fs_hz


def _lag_correlation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson correlation of ``x[:-k]`` with ``x[k:]`` for k = 0..max_lag, (max_lag+1,)."""
    n = x.shape[0]
    nfft = 1 << int(math.ceil(math.log2(2 * n)))
    spec = np.fft.rfft(x, nfft)
    cross = np.fft.irfft(spec * np.conj(spec), nfft)[: max_lag + 1]
    c1 = np.concatenate(([0.0], np.cumsum(x)))
    c2 = np.concatenate(([0.0], np.cumsum(x * x)))
    k = np.arange(max_lag + 1)
    m = n - k
    sa, saa = c1[m], c2[m]  # x[0 : n-k]
    sb, sbb = c1[n] - c1[k], c2[n] - c2[k]  # x[k : n]
    num = cross - sa * sb / m
    den = np.sqrt(np.maximum(saa - sa * sa / m, 0.0) * np.maximum(sbb - sb * sb / m, 0.0))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


#: Least prominence (in correlation, 0..2) of a correlation peak taken for a period.
MIN_PEAK_PROMINENCE = 0.1
#: A correlation peak near ``lag / m`` this high relative to the highest peak is its fundamental.
FUNDAMENTAL_FRACTION = 0.85


def _fundamental(peaks: np.ndarray, r: np.ndarray) -> int:
    """Lag of the period among correlation peaks ``peaks`` (lags, ascending) of ``r``.

    A periodic trace correlates about as well at multiples of its period as at the period:
    the earliest peak that reaches FUNDAMENTAL_FRACTION of the highest one and whose lag
    divides the highest one's (an integer multiple within 10 %). Peaks elsewhere (noise, a
    second rhythm) are not taken for it, however early.
    """
    best = int(peaks[np.argmax(r[peaks])])
    for p in peaks[r[peaks] >= FUNDAMENTAL_FRACTION * r[best]]:
        m = round(best / p)
        if p == best or (m >= 2 and abs(p * m - best) <= 0.1 * best):
            return int(p)
    return best


def dominant_rate(
    trace: np.ndarray,
    fs_hz: float,
    min_per_min: float = CARDIAC_RANGE_PER_MIN[0],
    max_per_min: float = CARDIAC_RANGE_PER_MIN[1],
) -> RateEstimate:
    """Dominant rate (per minute) of a trace and its confidence.

    The trace is detrended and high-passed at half ``min_per_min``; the lag-correlation is
    searched between the periods of ``max_per_min`` and ``min_per_min``, never beyond half
    the trace (at least two periods are compared).
    Of the positive correlation peaks with a prominence of at least
    :data:`MIN_PEAK_PROMINENCE`, the period is the highest or the fundamental under it
    (:func:`_fundamental`), refined by a parabola through its neighbours.
    A flat trace, or one without such a peak, gives ``RateEstimate(nan, 0)``.

    trace : (n,) samples at ``fs_hz``; at least two periods of ``min_per_min`` long.
    """
    if not 0 < min_per_min < max_per_min:
        raise DataError(describe("dominant_rate", "0 < min_per_min < max_per_min", (min_per_min, max_per_min)))
    x, fs = _prepare(trace, fs_hz, 2 * 60.0 / max_per_min)
    if np.std(x) <= 1e-9 * np.max(np.abs(trace)):  # flat: what is left is round-off
        return RateEstimate(math.nan, 0.0)
    # drift well below the searched rates (breathing under a heartbeat) only lowers the correlation
    cutoff_hz = 0.5 * min_per_min / 60.0
    if cutoff_hz < fs / 2:
        x = signal.sosfiltfilt(signal.butter(2, cutoff_hz, "highpass", fs=fs, output="sos"), x)
    lag_lo = max(1, int(math.floor(fs * 60.0 / max_per_min)))
    lag_hi = min(int(math.ceil(fs * 60.0 / min_per_min)), x.shape[0] // 2)
    if lag_hi <= lag_lo + 1:
        want = f"a trace of more than two periods at {max_per_min:g}/min"
        raise DataError(describe("dominant_rate", want, f"{x.shape[0] / fs:.3g} s"))
    # the correlation a quarter beyond the searched lags too, so that a peak near the
    # longest one has a right flank to be measured against
    r = _lag_correlation(x, min(x.shape[0] - 2, lag_hi + lag_hi // 4 + 1))
    # a ripple on a flank of a slow rhythm's correlation (high at short lags) is no period
    peaks, _ = signal.find_peaks(r, prominence=MIN_PEAK_PROMINENCE)
    peaks = peaks[(peaks >= lag_lo) & (peaks <= lag_hi) & (r[peaks] > 0)]
    if peaks.size == 0:
        return RateEstimate(math.nan, 0.0)
    k = _fundamental(peaks, r)
    a, b, c = r[k - 1], r[k], r[k + 1]
    curv = a - 2 * b + c
    frac = 0.5 * (a - c) / curv if curv < 0 else 0.0
    period_s = (k + frac) / fs
    return RateEstimate(60.0 / period_s, float(np.clip(b, 0.0, 1.0)))


def breathing_rate(trace: np.ndarray, fs_hz: float) -> RateEstimate:
    """Breathing rate per minute of a trace (e.g. the pleural line's displacement)."""
    return dominant_rate(trace, fs_hz, *BREATHING_RANGE_PER_MIN)


def beat_times(trace: np.ndarray, fs_hz: float, rate_per_min: float) -> np.ndarray:
    """Time (s from the trace start) of each beat: the extremes of the cardiac excursion.

    The trace is high-passed at a third of the rate (removes breathing drift); beats are the
    peaks (of the polarity with the larger excursions) at least 40 % of a mean interval
    apart with a prominence of at least 40 % of the trace's 5-95 % range; each peak time
    is refined by a parabola. Peaks within half a median interval of either end of the
    trace are dropped (the filter's edges and cut-off beats misplace them).
    Returns (n_beats,) float64.
    """
    if not (math.isfinite(rate_per_min) and rate_per_min > 0):
        raise DataError(describe("beat_times", "a rate_per_min > 0", rate_per_min))
    x, fs = _prepare(trace, fs_hz, 60.0 / rate_per_min)
    cutoff_hz = rate_per_min / 60.0 / 3.0
    if cutoff_hz < fs / 2:
        sos = signal.butter(2, cutoff_hz, "highpass", fs=fs, output="sos")
        x = signal.sosfiltfilt(sos, x)
    spread = float(np.percentile(x, 95) - np.percentile(x, 5))
    if spread <= 0:
        return np.zeros(0)
    distance = max(1, int(0.4 * fs * 60.0 / rate_per_min))
    best: tuple[float, np.ndarray, np.ndarray] = (-1.0, np.zeros(0, int), x)
    for polarity in (1.0, -1.0):
        y = polarity * x
        idx, props = signal.find_peaks(y, distance=distance, prominence=0.4 * spread)
        score = float(np.sum(props["prominences"])) if idx.size else 0.0
        if score > best[0]:
            best = (score, idx, y)
    _, idx, y = best
    times = idx.astype(np.float64)
    inner = (idx > 0) & (idx < y.shape[0] - 1)
    a, b, c = y[idx[inner] - 1], y[idx[inner]], y[idx[inner] + 1]
    curv = a - 2 * b + c
    times[inner] += np.where(curv < 0, 0.5 * (a - c) / np.where(curv < 0, curv, -1.0), 0.0)
    times /= fs
    if times.size >= 3:  # a peak within half an interval of either end may be a cut-off beat
        half = 0.5 * float(np.median(np.diff(times)))
        times = times[(times >= half) & (times <= (y.shape[0] - 1) / fs - half)]
    return times


def rhythm(trace: np.ndarray, fs_hz: float) -> Rhythm:
    """Cardiac rate, beat-to-beat intervals and regularity of a trace (see :class:`Rhythm`)."""
    est = dominant_rate(trace, fs_hz, *CARDIAC_RANGE_PER_MIN)
    if not math.isfinite(est.rate_per_min):
        empty = np.zeros(0)
        return Rhythm(math.nan, 0.0, empty, empty, math.nan, math.nan, False)
    beats = beat_times(trace, fs_hz, est.rate_per_min)
    intervals = np.diff(beats)
    if intervals.size >= 2:
        cv = float(np.std(intervals, ddof=1) / np.mean(intervals))
        rmssd = float(np.sqrt(np.mean(np.diff(intervals) ** 2)))
    else:
        cv = rmssd = math.nan
    # beats measure the rate of this stretch directly (also for an irregular rhythm)
    rate = 60.0 / float(np.mean(intervals)) if intervals.size >= 2 else est.rate_per_min
    return Rhythm(rate, est.confidence, beats, intervals, cv, rmssd, bool(cv < IRREGULAR_CV))


#: Shortest traces :func:`summary` analyses for heart and breathing rates, seconds.
MIN_CARDIAC_S = 3.0
MIN_BREATHING_S = 10.0


def summary(trace: np.ndarray, fs_hz: float) -> dict:
    """JSON-safe rates of a motion trace for reports (``mmode process/evaluate --json``).

    Keys: ``rate_per_min``, ``confidence``, ``intervals_s``, ``interval_cv``, ``rmssd_s``,
    ``rhythm`` ("regular" / "irregular" / "unknown") from :func:`rhythm`, and
    ``breathing_rate_per_min``, ``breathing_confidence`` from :func:`breathing_rate`. Traces
    shorter than :data:`MIN_CARDIAC_S` / :data:`MIN_BREATHING_S` give None there; in any
    trace only rates with at least two periods in it are searched. ``note`` says in words
    why a rate is None (too short, or no periodic peak found), else None.
    """
    x = np.asarray(trace, dtype=np.float64)
    seconds = x.shape[0] / fs_hz if x.ndim == 1 else 0.0
    out: dict = {
        "rate_per_min": None,
        "confidence": None,
        "intervals_s": [],
        "interval_cv": None,
        "rmssd_s": None,
        "rhythm": "unknown",
        "breathing_rate_per_min": None,
        "breathing_confidence": None,
    }
    notes = []
    if seconds >= MIN_CARDIAC_S:
        out.update(rhythm(x, fs_hz).to_dict())
        if out["rate_per_min"] is None:
            notes.append(f"no heart rhythm ({CARDIAC_RANGE_PER_MIN[0]:g}-{CARDIAC_RANGE_PER_MIN[1]:g}/min) in the trace")
    else:
        notes.append(f"trace {seconds:.3g} s: heart rate needs at least {MIN_CARDIAC_S:g} s")
    if seconds >= MIN_BREATHING_S:
        b = breathing_rate(x, fs_hz)
        out["breathing_rate_per_min"] = b.rate_per_min if math.isfinite(b.rate_per_min) else None
        out["breathing_confidence"] = b.confidence
        if out["breathing_rate_per_min"] is None:
            notes.append("no breathing rhythm in the trace")
    else:
        notes.append(f"trace {seconds:.3g} s: breathing rate needs at least {MIN_BREATHING_S:g} s (two breaths at 12/min)")
    out["note"] = "; ".join(notes) or None
    return out
