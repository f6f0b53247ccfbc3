"""Inference wrappers the product uses: :class:`Classifier` on the display image stream and
:class:`MotionNet` on RF/IQ lines.

Both read their input spec from the model card, so a retrained model with a different
window or segment length works without code changes. Torch runs on one thread here
(the processing thread shares the CPU with acquisition and the GUI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmode.errors import DataError, ModelError, describe
from mmode.ingest.meta import AcquisitionMeta
from mmode.models import data as mdata
from mmode.models.registry import DEFAULT_CLASSIFIER, DEFAULT_MOTION, load_model

#: Most lines the classifier buffers (a 6 s window at 20 kHz PRF is 120k lines).
MAX_BUFFER_LINES = 200_000
#: Longest gap (s) between consecutive lines inside one stream: a longer gap (a seek
#: forwards, a source that stalled) restarts the window, since a window bridging it would be
#: mostly interpolated columns.
MAX_GAP_S = 1.0


@dataclass(frozen=True)
class WindowResult:
    """Classification of one window: start and end time (s), class probabilities
    (n_classes,) float, and the most probable class name."""

    t_start_s: float
    t_end_s: float
    probs: np.ndarray
    label: str

    def to_dict(self) -> dict:
        return {
            "t_start_s": float(self.t_start_s),
            "t_end_s": float(self.t_end_s),
            "probs": [round(float(p), 5) for p in self.probs],
            "label": self.label,
        }


def summarize(windows: list[WindowResult], classes: tuple[str, ...]) -> dict:
    """{"label": most frequent window label (None without windows), "fraction": {class: share}}."""
    counts = {c: 0 for c in classes}
    for w in windows:
        counts[w.label] += 1
    n = max(len(windows), 1)
    label = max(classes, key=lambda c: counts[c]) if windows else None
    return {"label": label, "fraction": {c: counts[c] / n for c in classes}}


class _LineBuffer:
    """The recent depth-binned display lines: ``binned`` (n, n_depth) float32, line times
    ``t_s`` (n,) float64 and their running sums ``sums`` (n + 1, n_depth) float64
    (:func:`~mmode.models.data.running_sums`, offset by the sum of every line before them).

    A mirrored ring: line ``g`` of the stream (counted from the first) lives at ``g % cap``
    and again at ``g % cap + cap`` of arrays twice the capacity, so that the last ``cap``
    lines are always one contiguous slice and neither ``append`` nor ``drop_first`` moves
    the lines kept. ``append`` costs O(new lines). (Moving the kept lines to the front when
    the arrays filled up, as this buffer did before, copied 6 s of lines at once: 90 MB and
    up to 140 ms at 20 kHz, a stall in the live engine's latency.) The arrays grow, copying
    once, only when more lines are kept than they hold."""

    def __init__(self, n_depth: int) -> None:
        self._cap = 0
        self._binned = np.zeros((0, n_depth), np.float32)
        self._t_s = np.zeros(0)
        # _sums[p + 1] (and its mirror) is the sum of the lines up to and including the one at p
        self._sums = np.zeros((1, n_depth))
        self._first = self._end = 0  # stream indices of the oldest kept line and one past the newest
        self._total = np.zeros(n_depth)  # sum of every line appended

    def __len__(self) -> int:
        return self._end - self._first

    @property
    def _at(self) -> int:
        return self._first % self._cap if self._cap else 0

    @property
    def binned(self) -> np.ndarray:
        return self._binned[self._at : self._at + len(self)]

    @property
    def t_s(self) -> np.ndarray:
        return self._t_s[self._at : self._at + len(self)]

    @property
    def sums(self) -> np.ndarray:
        return self._sums[self._at : self._at + len(self) + 1]

    def append(self, binned: np.ndarray, t_s: np.ndarray) -> None:
        """Add lines ``binned`` (m, n_depth) at times ``t_s`` (m,)."""
        m = len(t_s)
        if m == 0:
            return
        if len(self) + m >= self._cap:  # one ring place stays free: it holds the sum before the oldest line
            self._grow(2 * (len(self) + m))
        sums = np.cumsum(binned, axis=0, dtype=np.float64)
        sums += self._total
        self._total = sums[-1].copy()
        self._write(self._end, binned, t_s, sums)
        self._end += m

    def reserve(self, n_lines: int) -> None:
        """Preallocate (and touch) room for ``n_lines`` lines before the first append, so that
        a stream does not grow its arrays, each growth a stall, while its first window fills."""
        if len(self) == 0 and self._cap < n_lines:
            self._grow(n_lines)

    def drop_first(self, n: int) -> None:
        """Forget the oldest ``n`` lines."""
        self._first += min(max(n, 0), len(self))

    def _write(self, g: int, binned: np.ndarray, t_s: np.ndarray, sums: np.ndarray) -> None:
        """Store lines ``g .. g + m - 1`` and their running sums at their ring places and mirrors."""
        cap = self._cap
        at = (g + np.arange(len(t_s))) % cap
        for place in (at, at + cap):
            self._binned[place] = binned
            self._t_s[place] = t_s
            self._sums[place + 1] = sums
        wrap = np.flatnonzero(at == cap - 1)  # the sum through the ring's last place starts its first
        if wrap.size:
            self._sums[0] = sums[wrap[-1]]

    def _grow(self, capacity: int) -> None:
        """Arrays for ``capacity`` lines (twice, mirrored); the kept lines copied to their new places."""
        kept = (self.binned.copy(), self.t_s.copy(), self.sums.copy())
        n_depth = self._binned.shape[1]
        self._cap = int(capacity)
        self._binned = np.zeros((2 * self._cap, n_depth), np.float32)
        self._t_s = np.zeros(2 * self._cap)
        self._sums = np.zeros((2 * self._cap + 1, n_depth))
        self._sums[self._first % self._cap] = kept[2][0] if len(self) else self._total
        if len(self):
            self._write(self._first, kept[0], kept[1], kept[2][1:])


class Classifier:
    """Windowed classifier over the display image (``display_db`` rows over time).

    ``push(display_db, t_s, row_depths_m)`` takes each processed block as it arrives and
    returns the windows completed by it; :meth:`classify_image` does a whole recording at
    once (same results). Windows follow the spec's schedule (:mod:`mmode.models.data`): the
    first ends ``min_window_s`` after the stream's first line, then one every ``hop_s``
    (default: the model card's ``hop_s``), growing from the first line to ``max_window_s``,
    then sliding. :meth:`finish` gives one window over the whole of a stream shorter than
    ``max_window_s``.

    A stream restarts (its line buffer and window schedule start again at the next line) when
    the row depths change, when a line time is not later than the one before (a source
    restart, a seek backwards) and when consecutive lines are more than :data:`MAX_GAP_S`
    apart (a seek forwards, a stalled source); ``restarts`` counts the restarts of the last two
    kinds. On construction each network runs once on a dummy window of the shortest and of
    the longest length, so that torch's lazy initialisation does not delay the first real
    window.
    """

    def __init__(self, name: str = DEFAULT_CLASSIFIER, directory: Path | None = None, hop_s: float | None = None) -> None:
        self.model, self.card = load_model(name, directory)
        if self.card["task"] != "classify":
            raise ModelError(describe(f"model {name}", "task 'classify'", repr(self.card["task"])))
        self.name = name
        self.spec = dict(self.card["input"])
        self.classes = tuple(self.card["classes"])
        self.hop_s = float(self.spec["hop_s"] if hop_s is None else hop_s)
        if not self.hop_s > 0:
            raise DataError(describe("classifier hop_s", "> 0", self.hop_s))
        self.min_columns, self.max_columns = mdata.column_range(self.spec)
        self.restarts = 0
        for n_columns in (self.min_columns, self.max_columns):
            self.probabilities(np.zeros((1, 1, n_columns, self.spec["n_depth"]), np.float32))
        self.reset()

    def reset(self) -> None:
        """Forget buffered lines and row depths; the next push starts a new stream."""
        self._row_depths_m: np.ndarray | None = None
        self._restart()

    def _restart(self) -> None:
        """Forget buffered lines; the next line starts a new stream (row depths kept)."""
        self._lines = _LineBuffer(self.spec["n_depth"])
        self._t_first_s: float | None = None
        self._next_window = 0

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax class probabilities (N, n_classes) of model inputs (N, 1, n_columns, n_depth)."""
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return torch.softmax(self.model(torch.from_numpy(x)), dim=1).numpy()
        finally:
            torch.set_num_threads(threads)

    def _results(self, windows: list[tuple[float, np.ndarray]]) -> list[WindowResult]:
        """Classify (start time s, input (1, n_columns, n_depth)) pairs, one batch per length."""
        probs = np.zeros((len(windows), len(self.classes)), np.float32)
        lengths = np.array([x.shape[1] for _, x in windows], np.int64)
        for n in np.unique(lengths):
            idx = np.flatnonzero(lengths == n)
            probs[idx] = self.probabilities(np.stack([windows[i][1] for i in idx]))
        dt = self.spec["column_s"]
        return [WindowResult(t0, t0 + x.shape[1] * dt, p, self.classes[int(np.argmax(p))])
                for (t0, x), p in zip(windows, probs)]

    def classify_image(self, display_db: np.ndarray, t_s: np.ndarray) -> list[WindowResult]:
        """Every window a stream of a whole display image (n_lines, n_rows) with line times
        (n_lines,) completes (as :meth:`push` returns them)."""
        starts, x = mdata.image_windows(display_db, t_s, self.spec, self.hop_s)
        return self._results([(float(t0), xi) for t0, xi in zip(starts, x)])

    def push(self, display_db: np.ndarray, t_s: np.ndarray, row_depths_m: np.ndarray) -> list[WindowResult]:
        """Add a block of display rows (n, n_rows) with line times (n,) and row depths (n_rows,);
        return the windows it completes (see the class docstring for restarts)."""
        return self._results(self.push_inputs(display_db, t_s, row_depths_m))

    def finish(self) -> list[WindowResult]:
        """One window over the whole stream so far when it is at least ``min_window_s`` and
        less than ``max_window_s`` long (:func:`~mmode.models.data.whole_stream_window`), else
        []. For a recording shorter than the longest window (``mmode process``): its class."""
        if self._t_first_s is None:
            return []
        lines = self._lines
        span = mdata.whole_stream_window(self._t_first_s, float(lines.t_s[-1]), self.spec)
        if span is None:
            return []
        start, n = span
        return self._results([(start, mdata.window_input(lines.binned, lines.t_s, start, n, self.spec, lines.sums))])

    def push_inputs(self, display_db: np.ndarray, t_s: np.ndarray, row_depths_m: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """As :meth:`push`, but return the completed windows as (start time s, model input
        (1, n_columns, n_depth)) pairs instead of classifying them. Costs O(n) for the block
        plus O(n_columns * n_depth) per window, whatever the window's line count."""
        display_db = np.asarray(display_db, dtype=np.float32)
        t_s = np.asarray(t_s, dtype=np.float64)
        row_depths_m = np.asarray(row_depths_m, dtype=np.float64)
        if display_db.ndim != 2 or t_s.ndim != 1 or row_depths_m.ndim != 1 \
                or display_db.shape != (t_s.shape[0], row_depths_m.shape[0]):
            raise DataError(describe("classifier input", "display_db (n, n_rows) with t_s (n,) and row_depths_m (n_rows,)",
                                     (display_db.shape, t_s.shape, row_depths_m.shape)))
        if not np.all(np.isfinite(t_s)):
            raise DataError(describe("classifier input", "finite line times", "NaN or Inf in t_s"))
        if len(t_s) == 0:
            return []
        if self._row_depths_m is None or not np.array_equal(self._row_depths_m, row_depths_m):
            self.reset()
            self._row_depths_m = row_depths_m.copy()
        binned = mdata.depth_bins(display_db, self.spec["n_depth"])
        step = np.diff(t_s)
        breaks = np.flatnonzero((step <= 0) | (step > MAX_GAP_S)) + 1
        windows: list[tuple[float, np.ndarray]] = []
        for a, b in zip(np.concatenate(([0], breaks)), np.concatenate((breaks, [len(t_s)]))):
            windows += self._push_run(binned[a:b], t_s[a:b])
        return windows

    def _push_run(self, binned: np.ndarray, t_s: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Append depth-binned lines (m, n_depth) with increasing times (m,), at most
        ``MAX_GAP_S`` apart; restart first when they do not continue the stream."""
        lines = self._lines
        if len(lines) and not 0 < t_s[0] - lines.t_s[-1] <= MAX_GAP_S:
            self.restarts += 1
            self._restart()
            lines = self._lines
        if self._t_first_s is None:
            self._t_first_s = float(t_s[0])
            if len(t_s) > 1:  # the lines kept (the longest window and a hop) and two blocks more
                per_line_s = float(t_s[-1] - t_s[0]) / (len(t_s) - 1)
                kept = int((self.spec["max_window_s"] + self.hop_s) / per_line_s)
                lines.reserve(min(kept, MAX_BUFFER_LINES) + 2 * len(t_s))
        lines.append(binned, t_s)
        t_first, t_last = self._t_first_s, float(t_s[-1])
        out = []
        while (end := mdata.window_end_s(t_first, self._next_window, self.spec, self.hop_s)) <= t_last + mdata.TIME_EPS_S:
            start, n = mdata.window_span(t_first, end, self.spec)
            out.append((start, mdata.window_input(lines.binned, lines.t_s, start, n, self.spec, lines.sums)))
            self._next_window += 1
        # keep every line while the stream is shorter than the longest window (finish() may
        # need them all), then the lines of the next window and the one before it
        keep_since = t_first
        if t_last - t_first >= self.spec["max_window_s"]:
            end = mdata.window_end_s(t_first, self._next_window, self.spec, self.hop_s)
            keep_since = mdata.window_span(t_first, end, self.spec)[0]
        keep_from = max(int(np.searchsorted(lines.t_s, keep_since, side="right")) - 1, 0)
        lines.drop_first(max(keep_from, len(lines) - MAX_BUFFER_LINES))
        return out


class MotionNet:
    """Learned axial displacement between consecutive RF/IQ lines at chosen depths."""

    def __init__(self, name: str = DEFAULT_MOTION, directory: Path | None = None) -> None:
        self.model, self.card = load_model(name, directory)
        if self.card["task"] != "motion":
            raise ModelError(describe(f"model {name}", "task 'motion'", repr(self.card["task"])))
        self.name = name
        self.spec = dict(self.card["input"])

    def displacement_m(self, lines: np.ndarray, meta: AcquisitionMeta, depths_m: np.ndarray) -> np.ndarray:
        """Displacement (m, positive away from the probe) from line i to i+1 at ``depths_m``.

        lines : (n_lines >= 2, n_samples) RF or IQ; depths_m : (n_depths,) metres.
        Returns (n_lines - 1, n_depths) float32.
        """
        from mmode.dsp.demod import to_iq

        lines = np.asarray(lines)
        depths_m = np.atleast_1d(np.asarray(depths_m, dtype=np.float64))
        if lines.ndim != 2 or lines.shape[0] < 2:
            raise DataError(describe("motion net input", "lines (n_lines >= 2, n_samples)", lines.shape))
        iq, _iq_fs, stride = to_iq(lines, meta)
        n = self.spec["n_samples"]
        if iq.shape[1] < n:
            raise DataError(describe("motion net input", f">= {n} IQ samples per line", iq.shape[1]))
        centre = np.rint(np.asarray(meta.sample_at_depth(depths_m)) / stride).astype(np.int64)
        k = np.repeat(np.arange(iq.shape[0] - 1), len(depths_m))
        c = np.tile(centre, iq.shape[0] - 1)
        x = mdata.motion_inputs(*mdata.iq_segments(iq, k, c, n))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                out = np.concatenate([self.model(torch.from_numpy(x[i : i + 4096])).numpy() for i in range(0, len(x), 4096)])
        finally:
            torch.set_num_threads(threads)
        wavelength_m = meta.c_m_s / meta.f0_hz
        return (out[:, 0] * wavelength_m).reshape(iq.shape[0] - 1, len(depths_m)).astype(np.float32)


def evaluate_classifier(rec, model: str = DEFAULT_CLASSIFIER, block_lines: int = 1024, processor_settings=None) -> dict:
    """Score classifier ``model`` on an open recording with ``/truth/labels``.

    The recording goes through the product's display chain block by block
    (:class:`~mmode.dsp.processor.Processor`, default settings unless given) and the
    streaming :class:`Classifier`; a recording shorter than the longest window is classified
    as one window (:meth:`Classifier.finish`), as ``mmode process`` does. Each window's true
    label is the majority of the line labels inside it (windows whose majority covers less
    than the card's ``min_label_purity`` are reported but not scored). Returns a JSON-safe
    dict: model, classes, n_windows, n_scored, macro_f1, per_class_f1, accuracy, confusion
    (rows truth, columns prediction) and windows (with their truth).
    """
    from mmode.dsp.processor import Processor, ProcessorSettings
    from mmode.models.metrics import f1_scores

    truth = rec.truth()
    if truth is None:
        raise DataError(describe(rec.source, "/truth/labels for --task classify", "no ground truth"))
    clf = Classifier(model)
    if tuple(truth.classes) != clf.classes:
        raise DataError(describe(rec.source, f"truth classes {list(clf.classes)}", list(truth.classes)))
    proc = Processor(processor_settings or ProcessorSettings())
    proc.prepare(rec.meta, rec.n_samples)
    windows: list[WindowResult] = []
    for block in rec.blocks(block_lines):
        out = proc.process(block)
        windows += clf.push(out.display_db, out.t_s, proc.row_depths_m)
    windows = clf.finish() or windows
    t_s = rec.timestamps_s()
    starts = np.array([w.t_start_s for w in windows])
    ends = np.array([w.t_end_s for w in windows])
    labels = np.asarray(truth.labels, dtype=np.int64)
    true, purity = mdata.window_labels(labels, t_s - t_s[0], starts - t_s[0], ends - t_s[0])
    scored = purity >= clf.spec.get("min_label_purity", 0.0)
    pred = np.array([clf.classes.index(w.label) for w in windows], dtype=np.int64)
    n = len(clf.classes)
    macro, per = f1_scores(true[scored], pred[scored], n) if scored.any() else (None, [None] * n)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (true[scored], pred[scored]), 1)
    return {
        "task": "classify",
        "model": model,
        "data": rec.source,
        "classes": list(clf.classes),
        "n_windows": len(windows),
        "n_scored": int(scored.sum()),
        "macro_f1": macro,
        "per_class_f1": dict(zip(clf.classes, per)),
        "accuracy": float(np.mean(pred[scored] == true[scored])) if scored.any() else None,
        "confusion": confusion.tolist(),
        "summary": summarize(windows, clf.classes),
        "windows": [{**w.to_dict(), "truth": clf.classes[t], "scored": bool(s)} for w, t, s in zip(windows, true, scored)],
    }
