"""The display ring of the M-mode view: pure numpy, no Qt, testable on its own.

Processed lines arrive from the engine at the line rate (PRF, up to several kHz); the screen
needs far fewer columns. :class:`DisplayRing` averages groups of ``decimation`` lines into one
display column (dB averaged), maps it to grey levels once (uint8, 0 = -DR dB, 255 = 0 dB) and
keeps the newest ``capacity`` columns as the cine memory.

Every column is written twice, at ``i % capacity`` and ``i % capacity + capacity`` (Friture's
trick), so any window of up to ``capacity`` columns is one contiguous slice: drawing never
copies or wraps. Columns are addressed by their absolute index ``0 .. n_written-1``.

Columns are uniform in time: when lines are missing between two pushes (dropped by an
overloaded engine, lost by a stream), blank columns fill the gap, so the time axis stays
true and the sonographer sees where data is missing.

Per column the ring also keeps the acquisition time (s), the class label index (-1 = none)
and its confidence, and the tracked tissue depth (m, NaN = none) with the tracker's quality
of that line (0..1, NaN = none) for the motion overlay.

Also here: :func:`trace_by_quality` (the motion trace split into its certain and uncertain
stretches), :func:`overlay_rate` (the heart or breathing rate shown over the image, from the
tracked depth) and :class:`SweepClock` (where the live sweep's right edge is at each frame).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from mmode.dsp import rates
from mmode.errors import DataError, describe
from mmode.ingest.meta import BREATHING_CLASSES, CARDIAC_CLASSES

#: Source of ring epochs, unique within the process.
_EPOCHS = itertools.count(1)

#: Largest cine memory accepted, in bytes of grey levels (both copies); 512 MiB.
MAX_RING_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Window:
    """A contiguous view of the ring: ``image`` (n_cols, n_rows) uint8 and per-column arrays.

    ``start``/``stop`` are absolute column indices (stop exclusive). Arrays are views into the
    ring: copy them before keeping them past the next :meth:`DisplayRing.push`. ``epoch``
    names the ring's content: a column index means the same pixels in two windows of the
    same epoch (a new ring or a cleared one starts a new epoch).
    """

    start: int
    stop: int
    image: np.ndarray
    t_s: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    track_depth_m: np.ndarray
    track_quality: np.ndarray
    epoch: int = 0
    net_depth_m: np.ndarray | None = None  # the learned motion trace's depth per column (NaN = none)

    @property
    def n_cols(self) -> int:
        return self.stop - self.start


class DisplayRing:
    """Cine memory of display columns.

    Parameters
    ----------
    n_rows : display rows per line (depth samples).
    capacity : columns kept (cine length = capacity / column rate).
    decimation : processed lines averaged into one column (>= 1).
    col_dt_s : time between columns (decimation / line rate), s; gaps longer than 1.5 columns
        are filled with blank columns. None: no gap filling.
    """

    def __init__(self, n_rows: int, capacity: int, decimation: int = 1, col_dt_s: float | None = None) -> None:
        if n_rows < 1 or capacity < 1 or decimation < 1:
            raise DataError(describe("display ring", "n_rows, capacity, decimation >= 1",
                                     (n_rows, capacity, decimation)))
        if 2 * capacity * n_rows > MAX_RING_BYTES:
            raise DataError(describe("display ring", f"at most {MAX_RING_BYTES} bytes of cine memory",
                                     f"{2 * capacity * n_rows} bytes"))
        self.n_rows = int(n_rows)
        self.capacity = int(capacity)
        self.decimation = int(decimation)
        self.col_dt_s = col_dt_s
        self.n_gap_cols = 0  # blank columns inserted for missing lines
        self.epoch = next(_EPOCHS)
        self._img = np.zeros((2 * capacity, n_rows), np.uint8)
        self._t = np.full(2 * capacity, np.nan)
        self._label = np.full(2 * capacity, -1, np.int16)
        self._conf = np.full(2 * capacity, np.nan, np.float32)
        self._track = np.full(2 * capacity, np.nan, np.float32)
        self._quality = np.full(2 * capacity, np.nan, np.float32)
        self._net = np.full(2 * capacity, np.nan, np.float32)
        self.n_written = 0
        # lines waiting to complete a column
        self._pend_db = np.empty((0, n_rows), np.float32)
        self._pend_t = np.empty(0)
        self._pend_label = np.empty(0, np.int16)
        self._pend_conf = np.empty(0, np.float32)
        self._pend_track = np.empty(0, np.float32)
        self._pend_quality = np.empty(0, np.float32)

    @classmethod
    def for_rate(cls, n_rows: int, line_rate_hz: float, cine_s: float, col_rate_hz: float = 500.0) -> "DisplayRing":
        """A ring holding ``cine_s`` seconds at about ``col_rate_hz`` columns per second."""
        if not (line_rate_hz > 0 and cine_s > 0 and col_rate_hz > 0):
            raise DataError(describe("display ring", "positive line rate, cine length and column rate",
                                     (line_rate_hz, cine_s, col_rate_hz)))
        decimation = max(1, int(round(line_rate_hz / col_rate_hz)))
        capacity = max(1, int(math.ceil(cine_s * line_rate_hz / decimation)))
        return cls(n_rows, capacity, decimation, decimation / line_rate_hz)

    # -- writing ---------------------------------------------------------------------------
    def push(
        self,
        display_db: np.ndarray,
        t_s: np.ndarray,
        dynamic_range_db: float,
        label: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
        track_depth_m: np.ndarray | None = None,
        track_quality: np.ndarray | None = None,
    ) -> int:
        """Append ``n`` processed lines; return the number of new columns.

        display_db : (n, n_rows) float, dB in [-dynamic_range_db, 0] (values outside are clipped).
        t_s : (n,) acquisition times of the lines, seconds.
        label, confidence : (n,) class index per line (-1 = none) and its probability.
        track_depth_m : (n,) depth of the tracked tissue per line (NaN = none), metres.
        track_quality : (n,) the tracker's quality of each line, 0..1 (NaN = none).
        A column takes the mean dB of its lines and the time, label, confidence, track and
        quality of its last line.
        """
        db = np.asarray(display_db, np.float32)
        n = db.shape[0] if db.ndim == 2 else -1
        if db.ndim != 2 or db.shape[1] != self.n_rows:
            raise DataError(describe("display ring", f"display rows (n, {self.n_rows})", db.shape))
        if not dynamic_range_db > 0:
            raise DataError(describe("display ring", "dynamic range > 0 dB", dynamic_range_db))
        t = np.asarray(t_s, np.float64).reshape(-1)
        if t.shape[0] != n:
            raise DataError(describe("display ring", f"{n} line times", t.shape))
        lab = np.full(n, -1, np.int16) if label is None else np.asarray(label, np.int16).reshape(n)
        conf = np.full(n, np.nan, np.float32) if confidence is None else np.asarray(confidence, np.float32).reshape(n)
        trk = np.full(n, np.nan, np.float32) if track_depth_m is None else np.asarray(track_depth_m, np.float32).reshape(n)
        qual = (np.full(n, np.nan, np.float32) if track_quality is None
                else np.asarray(track_quality, np.float32).reshape(n))

        if self._pend_t.size:
            db = np.concatenate([self._pend_db, db])
            t = np.concatenate([self._pend_t, t])
            lab = np.concatenate([self._pend_label, lab])
            conf = np.concatenate([self._pend_conf, conf])
            trk = np.concatenate([self._pend_track, trk])
            qual = np.concatenate([self._pend_quality, qual])
        k = self.decimation
        n_cols = t.shape[0] // k
        used = n_cols * k
        self._pend_db, self._pend_t = db[used:].copy(), t[used:].copy()
        self._pend_label, self._pend_conf, self._pend_track = lab[used:].copy(), conf[used:].copy(), trk[used:].copy()
        self._pend_quality = qual[used:].copy()
        if n_cols == 0:
            return 0
        cols_db = db[:used].reshape(n_cols, k, self.n_rows).mean(axis=1) if k > 1 else db[:used]
        grey = np.clip((cols_db + dynamic_range_db) * (255.0 / dynamic_range_db), 0.0, 255.0)
        grey = np.rint(grey).astype(np.uint8)
        last = slice(k - 1, used, k)
        t_cols = t[last]
        n_gap = self._gap_columns(float(t_cols[0]))
        if n_gap:
            t_prev = self._t[(self.n_written - 1) % self.capacity]
            gap_t = t_prev + self.col_dt_s * np.arange(1, n_gap + 1)
            blank = np.full(n_gap, np.nan, np.float32)
            self._write(np.zeros((n_gap, self.n_rows), np.uint8), gap_t, np.full(n_gap, -1, np.int16),
                        blank, blank, blank)
            self.n_gap_cols += n_gap
        self._write(grey, t_cols, lab[last], conf[last], trk[last], qual[last])
        return n_gap + n_cols

    def _gap_columns(self, t_next: float) -> int:
        """Blank columns needed before a column at ``t_next`` (0 without a gap)."""
        if self.col_dt_s is None or self.n_written == 0:
            return 0
        dt = t_next - self._t[(self.n_written - 1) % self.capacity]
        if not dt > 1.5 * self.col_dt_s:
            return 0
        return int(min(round(dt / self.col_dt_s) - 1, self.capacity))

    def _write(self, grey, t, lab, conf, trk, qual) -> None:
        cap = self.capacity
        if grey.shape[0] > cap:  # only the newest capacity columns can be kept
            skip = grey.shape[0] - cap
            self.n_written += skip
            grey, t, lab, conf, trk, qual = grey[skip:], t[skip:], lab[skip:], conf[skip:], trk[skip:], qual[skip:]
        n = grey.shape[0]
        pos = self.n_written % cap
        first = min(n, cap - pos)
        for src_lo, src_hi, dst in ((0, first, pos), (first, n, 0)):
            if src_hi <= src_lo:
                continue
            m = src_hi - src_lo
            for off in (dst, dst + cap):
                self._img[off:off + m] = grey[src_lo:src_hi]
                self._t[off:off + m] = t[src_lo:src_hi]
                self._label[off:off + m] = lab[src_lo:src_hi]
                self._conf[off:off + m] = conf[src_lo:src_hi]
                self._track[off:off + m] = trk[src_lo:src_hi]
                self._quality[off:off + m] = qual[src_lo:src_hi]
                self._net[off:off + m] = np.nan  # set_net_track fills it
        self.n_written += n

    def set_track(self, t_s: np.ndarray, track_depth_m: np.ndarray, track_quality: np.ndarray) -> None:
        """Fill in the tracked depth and quality of columns already held whose time lies
        within ``t_s`` (k,) increasing, by linear interpolation of ``track_depth_m`` (k,) m
        and ``track_quality`` (k,) 0..1."""
        t = np.asarray(t_s, np.float64).reshape(-1)
        z = np.asarray(track_depth_m, np.float64).reshape(-1)
        q = np.asarray(track_quality, np.float64).reshape(-1)
        if t.size == 0 or t.shape != z.shape or t.shape != q.shape:
            return
        w = self.window(self.n_written, self.capacity)
        lo = int(np.searchsorted(w.t_s, t[0], side="left"))
        hi = int(np.searchsorted(w.t_s, t[-1], side="right"))
        if hi <= lo:
            return
        pos = (w.start + np.arange(lo, hi)) % self.capacity
        depth = np.interp(w.t_s[lo:hi], t, z).astype(np.float32)
        quality = np.interp(w.t_s[lo:hi], t, q).astype(np.float32)
        for p in (pos, pos + self.capacity):  # both copies of each column
            self._track[p] = depth
            self._quality[p] = quality

    def set_net_track(self, t_s: np.ndarray, depth_m: np.ndarray) -> None:
        """Fill in the learned motion trace (:class:`mmode.models.motion_stream.NetworkTracker`)
        of columns already held whose time lies within ``t_s`` (k,) increasing, by linear
        interpolation of the echo depth ``depth_m`` (k,) m."""
        t = np.asarray(t_s, np.float64).reshape(-1)
        z = np.asarray(depth_m, np.float64).reshape(-1)
        if t.size == 0 or t.shape != z.shape:
            return
        w = self.window(self.n_written, self.capacity)
        lo = int(np.searchsorted(w.t_s, t[0], side="left"))
        hi = int(np.searchsorted(w.t_s, t[-1], side="right"))
        if hi > lo:
            pos = (w.start + np.arange(lo, hi)) % self.capacity
            depth = np.interp(w.t_s[lo:hi], t, z).astype(np.float32)
            self._net[pos] = depth
            self._net[pos + self.capacity] = depth

    def set_labels(self, t_from_s: float, t_to_s: float, label: int, confidence: float) -> None:
        """Give the columns held with time in [t_from_s, t_to_s] class ``label`` (its probability
        ``confidence``), e.g. once a classifier window over them has finished."""
        w = self.window(self.n_written, self.capacity)
        lo = int(np.searchsorted(w.t_s, t_from_s, side="left"))
        hi = int(np.searchsorted(w.t_s, t_to_s, side="right"))
        if hi <= lo:
            return
        pos = (w.start + np.arange(lo, hi)) % self.capacity
        for p in (pos, pos + self.capacity):  # both copies of each column
            self._label[p] = label
            self._conf[p] = confidence

    def clear(self) -> None:
        """Forget every column and pending line (new source, seek)."""
        self.n_written = 0
        self.n_gap_cols = 0
        self.epoch = next(_EPOCHS)
        self._label[:] = -1
        self._t[:] = np.nan
        self._conf[:] = np.nan
        self._track[:] = np.nan
        self._quality[:] = np.nan
        self._net[:] = np.nan
        self._img[:] = 0
        self._pend_t = self._pend_t[:0]
        self._pend_db = self._pend_db[:0]
        self._pend_label, self._pend_conf, self._pend_track = (
            self._pend_label[:0], self._pend_conf[:0], self._pend_track[:0])
        self._pend_quality = self._pend_quality[:0]

    # -- reading ---------------------------------------------------------------------------
    @property
    def oldest(self) -> int:
        """Absolute index of the oldest column still held."""
        return max(0, self.n_written - self.capacity)

    def clamp_end(self, stop: int, n_cols: int) -> int:
        """The nearest valid exclusive end for a window of ``n_cols`` columns."""
        n_cols = min(n_cols, self.capacity)
        return int(min(self.n_written, max(stop, self.oldest + min(n_cols, self.n_written - self.oldest))))

    def window(self, stop: int, n_cols: int) -> Window:
        """The columns ``[stop - n_cols, stop)`` clipped to what the ring holds; one slice each."""
        stop = int(min(max(stop, self.oldest), self.n_written))
        start = int(max(self.oldest, stop - min(n_cols, self.capacity)))
        p = start % self.capacity
        q = p + (stop - start)
        return Window(start, stop, self._img[p:q], self._t[p:q], self._label[p:q], self._conf[p:q], self._track[p:q],
                      self._quality[p:q], self.epoch, self._net[p:q])

    def column_at_time(self, t_s: float) -> int | None:
        """Absolute index of the held column nearest to time ``t_s``, or None when empty."""
        w = self.window(self.n_written, self.capacity)
        if w.n_cols == 0:
            return None
        times = w.t_s
        i = int(np.searchsorted(times, t_s))
        if i >= w.n_cols:
            i = w.n_cols - 1
        elif i > 0 and abs(times[i - 1] - t_s) <= abs(times[i] - t_s):
            i -= 1
        return w.start + i

    def class_changes(self) -> np.ndarray:
        """Absolute column indices where the class label changes (ignoring unlabelled columns)."""
        w = self.window(self.n_written, self.capacity)
        lab = w.label
        idx = np.flatnonzero(lab >= 0)
        if idx.size < 2:
            return np.empty(0, np.int64)
        change = idx[1:][lab[idx[1:]] != lab[idx[:-1]]]
        return change.astype(np.int64) + w.start

    def next_change(self, col: int) -> int | None:
        """First class change strictly after column ``col``, or None."""
        ch = self.class_changes()
        ch = ch[ch > col]
        return int(ch[0]) if ch.size else None

    def previous_change(self, col: int) -> int | None:
        """Last class change strictly before column ``col``, or None."""
        ch = self.class_changes()
        ch = ch[ch < col]
        return int(ch[-1]) if ch.size else None


#: Below this tracking quality a line of the motion trace is uncertain and drawn dimmed
#: (:class:`mmode.dsp.tracker.MotionBlock`: near 1 the echo is followed closely).
LOW_QUALITY = 0.5


def trace_by_quality(depth: np.ndarray, quality: np.ndarray,
                     low: float = LOW_QUALITY) -> tuple[np.ndarray, np.ndarray]:
    """The motion trace ``depth`` (n,) split by its per-point ``quality`` (n,) into
    (certain, uncertain), each (n,) with NaN where the other one holds the point.

    A point is uncertain when its quality is below ``low``; NaN quality counts as certain
    (a trace without quality). The uncertain part also keeps the certain neighbours of each
    uncertain point, so the two curves, each drawn with its finite points connected, join
    without a break.
    """
    depth = np.asarray(depth)
    unsure = np.asarray(quality) < low
    near = unsure.copy()
    near[1:] |= unsure[:-1]
    near[:-1] |= unsure[1:]
    return np.where(unsure, np.nan, depth), np.where(near, depth, np.nan)


#: Least autocorrelation at which a rate is shown.
MIN_RATE_CONFIDENCE = 0.3


@dataclass(frozen=True)
class OverlayRate:
    """The rate shown over the image: ``kind`` "heart" or "breathing", per minute, 0..1 confidence."""

    kind: str
    rate_per_min: float
    confidence: float


def overlay_rate(track_depth_m: np.ndarray, col_dt_s: float, class_name: str | None) -> OverlayRate | None:
    """Dominant rate of the tracked tissue depth (n,) sampled every ``col_dt_s`` seconds.

    The current class picks the range (breathing for lung views, heart for cardiac views;
    without a class the more confident of the two). NaN samples (before tracking started,
    blank gap columns) are bridged by linear interpolation. A rate needs the trace length the
    report asks for too (:data:`mmode.dsp.rates.MIN_CARDIAC_S`, and for breathing
    :data:`~mmode.dsp.rates.MIN_BREATHING_S`, two breaths at 12/min): a few seconds of a lung
    view hold no breath, and hand or pleura jitter in them would read as a fast breathing
    rate. None when no rate has its trace length, the trace has too few valid samples or no
    rhythm reaches :data:`MIN_RATE_CONFIDENCE`.
    """
    x = np.asarray(track_depth_m, np.float64)
    ok = np.isfinite(x)
    if ok.sum() < max(16, 0.8 * x.shape[0]):
        return None
    first = int(np.argmax(ok))
    x = x[first:]
    ok = ok[first:]
    if not ok.all():
        idx = np.arange(x.shape[0])
        x = np.interp(idx, idx[ok], x[ok])
    fs_hz = 1.0 / col_dt_s
    seconds = x.shape[0] * col_dt_s
    # block means down to about the rate analysis's own sampling rate first: the motion is far
    # slower than that, and rates.dominant_rate's polyphase resampling of a 10 s trace at the
    # column rate takes more than a display frame
    k = int(fs_hz // rates.ANALYSIS_RATE_HZ)
    if k > 1:
        x = x[x.shape[0] % k:].reshape(-1, k).mean(axis=1)
        fs_hz /= k
    candidates = []
    for kind, (lo, hi), classes, min_s in (
            ("heart", rates.CARDIAC_RANGE_PER_MIN, CARDIAC_CLASSES, rates.MIN_CARDIAC_S),
            ("breathing", rates.BREATHING_RANGE_PER_MIN, BREATHING_CLASSES, rates.MIN_BREATHING_S)):
        if (class_name is not None and class_name not in classes) or seconds < min_s:
            continue
        if seconds < 2 * 60.0 / lo * 1.05:  # two periods of the slowest rate searched
            lo = 2 * 60.0 / seconds * 1.05
            if lo >= hi:
                continue
        try:
            est = rates.dominant_rate(x, fs_hz, lo, hi)
        except DataError:  # too short for this range: no rate rather than a guess
            continue
        if math.isfinite(est.rate_per_min) and est.confidence >= MIN_RATE_CONFIDENCE:
            candidates.append(OverlayRate(kind, float(est.rate_per_min), float(est.confidence)))
    return max(candidates, key=lambda r: r.confidence) if candidates else None


class SweepClock:
    """Right edge of the live sweep in data time, moved smoothly with the wall clock.

    Results arrive in bursts (a block every 10-100 ms); drawing the newest column each frame
    would make the image jump. The edge instead advances at the measured data rate (data
    seconds per wall second over the last arrivals), is pulled gently towards the newest
    data minus 1.5 arrival intervals, jumps when more than ``max_lag_s`` behind, and never
    passes the newest data. ``smooth=False`` pins the edge to the newest data.
    """

    def __init__(self, smooth: bool = True, max_lag_s: float = 1.0) -> None:
        self.smooth = smooth
        self.max_lag_s = max_lag_s
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=64)  # (wall s, newest data t)
        self._last_s: float | None = None
        self.t_s = math.nan

    def reset(self) -> None:
        """Forget the arrivals (new source, seek, unfreeze)."""
        self._arrivals.clear()
        self._last_s = None
        self.t_s = math.nan

    def arrived(self, wall_s: float, newest_t_s: float) -> None:
        """Data up to ``newest_t_s`` (data time) arrived at ``wall_s`` (perf_counter)."""
        self._arrivals.append((wall_s, newest_t_s))

    def advance(self, now_s: float) -> bool:
        """Move the edge to wall time ``now_s``; True if it moved."""
        last, self._last_s = self._last_s, now_s
        if not self._arrivals:
            return False
        old = self.t_s
        (w0, t0), (w1, newest) = self._arrivals[0], self._arrivals[-1]
        if not self.smooth:
            self.t_s = newest
            return self.t_s != old
        span = w1 - w0
        rate = (newest - t0) / span if span > 0.3 else 1.0
        interval = span / (len(self._arrivals) - 1) if len(self._arrivals) > 1 else 0.05
        target = newest - min(0.3, max(0.02, 1.5 * interval * rate))
        if not math.isfinite(old) or last is None or abs(target - old) > self.max_lag_s:
            new = target
        else:
            new = old + (now_s - last) * rate + 0.05 * (target - old)
        self.t_s = min(new, newest)
        return self.t_s != old
