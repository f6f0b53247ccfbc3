"""Model inputs (the input specs) and the training / test sets built from the simulator.

Classifier input spec (:data:`CLASSIFIER_SPEC`): a window of the display image the product
shows (``display_db`` rows of :class:`mmode.dsp.processor.Processor`, one row per line),
averaged into columns of ``column_s`` seconds (so any PRF works, and the time scale the
network sees is the same whatever the window's length; averaging lowers the electronic noise,
which decorrelates from line to line, while keeping the slower speckle changes of a sliding
lung) and into ``n_depth`` equal bins over the whole displayed depth (so any imaging depth and
row count works), then standardised per window (minus the mean, over the standard deviation,
clipped to +-5) so gain and dynamic range do not matter. Tensor (1, n_columns, n_depth) per
window, ``n_columns`` from ``min_window_s / column_s`` (36) to ``max_window_s / column_s`` (96):
the networks pool globally over time, so one network takes every length.

Window schedule of a stream (:func:`window_end_s`, :func:`window_span`): the first window
ends ``min_window_s`` after the stream's first line, then one ends every ``hop_s`` on the grid
``t_first + k hop_s``; each starts at the stream's first line until the windows reach
``max_window_s``, then ``max_window_s`` before its end (they slide). A window is complete
when the stream has a line at or after its end. ``column_s`` = 1/16 s is a binary fraction,
so column edges computed from any column boundary are bit-identical (training crops taken
from a recording's columns equal the windows the product cuts at those times).

Motion input spec (:data:`MOTION_SPEC`): two consecutive IQ lines (RF is demodulated with
:func:`mmode.dsp.demod.to_iq`), ``n_samples`` IQ samples centred on the depth of interest.
Channels: real and imaginary part of the lag-one product ``conj(x_k) x_{k+1}`` divided by the
mean of ``|x_k| |x_{k+1}|``, and ``|x_k|``, ``|x_{k+1}|`` divided by their RMS. The product
is independent of the absolute echo phase, which the network need not learn. Target: axial
displacement from line k to k+1 divided by the wavelength ``c / f0``. Its pairs are built in
:mod:`mmode.models.pair_data`.

Classifier data sets: recordings simulated over every scenario with randomised depth, f0, SNR, gain,
rates and (for part of them) a transition to another scenario within the recording; the
split is by seed (train, validation and test recordings never share a seed). Sets are cached
as ``.npz`` (no pickle) under ``runs/cache``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmode.errors import DataError, describe
from mmode.ingest.meta import CLASSES

CLASSIFIER_SPEC: dict = {
    "kind": "display_db_window",
    "column_s": 0.0625,
    "min_window_s": 2.25,
    "max_window_s": 6.0,
    "hop_s": 1.0,
    "n_depth": 64,
    "time_sampling": "mean of the lines in each column of column_s seconds from the window's start "
                     "(linear interpolation for a column without lines)",
    "window_schedule": "first window ends min_window_s after the stream's first line, then one every hop_s "
                       "(t_first + k hop_s); each starts at max(t_first, end - max_window_s)",
    "depth_sampling": "mean over n_depth equal bins of the displayed rows (full depth)",
    "normalisation": "per window: (x - mean) / std, clipped to [-5, 5]",
    "min_label_purity": 0.75,
}

MOTION_SPEC: dict = {
    "kind": "iq_pair_lag1",
    "channels": 4,
    "n_samples": 16,
    "channel_order": ["re(conj(x0) x1) / mean|x0||x1|", "im(...)", "|x0| / rms", "|x1| / rms"],
    "target": "axial displacement x0 -> x1 / wavelength (c / f0), positive away from the probe",
}

#: Seed offsets that keep the splits apart (a recording's seed = base + offset + index).
SPLIT_OFFSETS = {"train": 0, "val": 500_000, "test": 1_000_000}
CACHE_DIR = Path("runs") / "cache"
#: Tolerance (s) of the comparisons of window ends with line times.
TIME_EPS_S = 1e-9


# -- classifier windows (shared by training and the product) -------------------------------
def column_range(spec: dict = CLASSIFIER_SPEC) -> tuple[int, int]:
    """(fewest, most) columns of a window: ``min_window_s`` and ``max_window_s`` over ``column_s``."""
    return n_columns_in(spec["min_window_s"], spec), n_columns_in(spec["max_window_s"], spec)


def n_columns_in(span_s: float, spec: dict = CLASSIFIER_SPEC) -> int:
    """Whole columns of ``column_s`` in ``span_s`` seconds (floor, to within 1e-6 of a column)."""
    return int(math.floor(span_s / spec["column_s"] + 1e-6))


def standardise(img: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the whole window, clipped to [-5, 5]; float32, same shape."""
    img = np.asarray(img, dtype=np.float32)
    std = float(img.std())
    out = (img - float(img.mean())) / (std if std > 1e-6 else 1.0)
    return np.clip(out, -5.0, 5.0).astype(np.float32)


def depth_bins(display_db: np.ndarray, n_depth: int) -> np.ndarray:
    """Average ``display_db`` (n, n_rows) into ``n_depth`` equal row bins -> (n, n_depth).

    With fewer rows than bins the rows are linearly interpolated instead.
    """
    n_rows = display_db.shape[1]
    if n_rows >= n_depth:
        edges = np.floor(np.arange(n_depth) * (n_rows / n_depth) + 0.5).astype(np.int64)
        counts = np.diff(np.append(edges, n_rows))
        return (np.add.reduceat(display_db, edges, axis=1) / counts).astype(np.float32)
    pos = np.linspace(0, n_rows - 1, n_depth)
    return np.stack([np.interp(pos, np.arange(n_rows), row) for row in display_db]).astype(np.float32)


def running_sums(binned: np.ndarray) -> np.ndarray:
    """Cumulative sums (n_lines + 1, n_depth) float64 of ``binned`` (n_lines, n_depth) along
    time, with a leading zero row: the sum of lines a..b-1 is ``sums[b] - sums[a]``."""
    out = np.zeros((binned.shape[0] + 1, binned.shape[1]), np.float64)
    np.cumsum(binned, axis=0, dtype=np.float64, out=out[1:])
    return out


def column_means(binned: np.ndarray, t_s: np.ndarray, t_start_s: float, n_columns: int, column_s: float,
                 sums: np.ndarray | None = None) -> np.ndarray:
    """Time columns (n_columns, n_depth) float32 of depth-binned rows, not standardised.

    binned : (n_lines, n_depth) rows from :func:`depth_bins`; t_s : (n_lines,) increasing
    line times in seconds. Column ``j`` is the mean of the lines with ``t_start_s + j*column_s
    <= t < t_start_s + (j+1)*column_s``; a column without lines takes the value linearly
    interpolated at its centre time. sums : (n_lines + 1, n_depth) cumulative sums of
    ``binned`` from :func:`running_sums` (any constant offset allowed); pass them when cutting
    many windows from the same lines, so that a window costs O(n_columns * n_depth) instead
    of O(n_lines).
    """
    edges = np.searchsorted(t_s, t_start_s + column_s * np.arange(n_columns + 1), side="left")
    counts = np.diff(edges)
    img = np.empty((n_columns, binned.shape[1]), np.float32)
    full = counts > 0
    if full.any():
        csum = running_sums(binned) if sums is None else sums
        img[full] = (csum[edges[1:][full]] - csum[edges[:-1][full]]) / counts[full, None]
    if not full.all():
        tc = t_start_s + (np.flatnonzero(~full) + 0.5) * column_s
        pos = np.interp(tc, t_s, np.arange(len(t_s), dtype=np.float64))
        i0 = np.minimum(np.floor(pos).astype(np.int64), len(t_s) - 1)
        i1 = np.minimum(i0 + 1, len(t_s) - 1)
        frac = (pos - i0)[:, None]
        img[~full] = binned[i0] * (1 - frac) + binned[i1] * frac
    return img


def window_input(binned: np.ndarray, t_s: np.ndarray, t_start_s: float, n_columns: int,
                 spec: dict = CLASSIFIER_SPEC, sums: np.ndarray | None = None) -> np.ndarray:
    """One model input (1, n_columns, n_depth) float32: :func:`column_means` of the window of
    ``n_columns`` columns of ``spec["column_s"]`` from ``t_start_s``, standardised."""
    return standardise(column_means(binned, t_s, t_start_s, n_columns, spec["column_s"], sums))[None]


def window_end_s(t_first_s: float, k: int, spec: dict = CLASSIFIER_SPEC, hop_s: float | None = None) -> float:
    """End time (s) of window ``k`` (0, 1, ...) of a stream whose first line is at ``t_first_s``:
    ``t_first_s + min_window_s`` for k = 0, then ``t_first_s + m hop_s`` for the successive
    grid points m past the minimum."""
    hop = spec["hop_s"] if hop_s is None else hop_s
    if k == 0:
        return t_first_s + spec["min_window_s"]
    m_first = int(math.floor(spec["min_window_s"] / hop + 1e-9)) + 1
    return t_first_s + (m_first + k - 1) * hop


def window_span(t_first_s: float, t_end_s: float, spec: dict = CLASSIFIER_SPEC) -> tuple[float, int]:
    """(start time (s), number of columns) of the window of a stream (first line at
    ``t_first_s``) that ends at ``t_end_s``: it starts at ``max(t_first_s, t_end_s -
    max_window_s)`` and holds the whole columns up to its end."""
    start = max(t_first_s, t_end_s - spec["max_window_s"])
    return start, n_columns_in(t_end_s - start, spec)


def stream_windows(t_s: np.ndarray, spec: dict = CLASSIFIER_SPEC, hop_s: float | None = None) -> list[tuple[float, int]]:
    """(start time (s), number of columns) of every window a stream with line times ``t_s``
    (increasing) completes, in order (see the module docstring for the schedule)."""
    out: list[tuple[float, int]] = []
    if len(t_s) == 0:
        return out
    t_first, t_last = float(t_s[0]), float(t_s[-1])
    k = 0
    while (end := window_end_s(t_first, k, spec, hop_s)) <= t_last + TIME_EPS_S:
        out.append(window_span(t_first, end, spec))
        k += 1
    return out


def whole_stream_window(t_first_s: float, t_last_s: float, spec: dict = CLASSIFIER_SPEC) -> tuple[float, int] | None:
    """(start time (s), number of columns) of one window over a whole short stream (lines from
    ``t_first_s`` to ``t_last_s``): the whole columns from its first line, when there are at
    least ``min_window_s`` of them and fewer than ``max_window_s`` (a longer stream has sliding
    windows of the full length); else None."""
    lo, hi = column_range(spec)
    n = n_columns_in(t_last_s - t_first_s, spec)
    return (t_first_s, n) if lo <= n < hi else None


def image_windows(
    display_db: np.ndarray, t_s: np.ndarray, spec: dict = CLASSIFIER_SPEC, hop_s: float | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(start times (n_win,), inputs: one (1, n_columns, n_depth) array per window) of the
    windows a stream of this whole display image completes (:func:`stream_windows`).

    display_db : (n_lines, n_rows) dB image; t_s : (n_lines,) increasing line times.
    """
    display_db = np.asarray(display_db, dtype=np.float32)
    t_s = np.asarray(t_s, dtype=np.float64)
    if display_db.ndim != 2 or display_db.shape[0] != t_s.shape[0]:
        raise DataError(describe("display image", "(n_lines, n_rows) with one time per line", (display_db.shape, t_s.shape)))
    spans = stream_windows(t_s, spec, hop_s)
    binned = depth_bins(display_db, spec["n_depth"])
    sums = running_sums(binned)
    x = [window_input(binned, t_s, start, n, spec, sums) for start, n in spans]
    return np.array([start for start, _ in spans]), x


def window_labels(labels: np.ndarray, t_s: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(majority label, fraction of lines carrying it) of each window ``[starts_s, ends_s)``;
    (n_win,) int64, float64."""
    out, purity = np.zeros(len(starts_s), np.int64), np.zeros(len(starts_s))
    for k, (t0, t1) in enumerate(zip(starts_s, ends_s)):
        sel = labels[(t_s >= t0) & (t_s < t1)]
        counts = np.bincount(sel, minlength=len(CLASSES))
        out[k] = int(np.argmax(counts))
        purity[k] = counts[out[k]] / max(len(sel), 1)
    return out, purity


def recording_columns(display_db: np.ndarray, t_s: np.ndarray, labels: np.ndarray,
                      spec: dict = CLASSIFIER_SPEC) -> tuple[np.ndarray, np.ndarray]:
    """A whole recording as columns from its first line: (columns (n_cols, n_depth) float32,
    the :func:`column_means` of its depth-binned display image, not standardised; label counts
    (n_cols, n_classes) int32, how many lines of each true class fall in each column).

    ``n_cols`` = the whole columns up to the last line. A window of ``n`` columns from column
    ``m`` is ``standardise(columns[m : m + n])``: exactly :func:`window_input` at
    ``t_s[0] + m column_s`` (column edges are exact binary fractions)."""
    t_s = np.asarray(t_s, dtype=np.float64)
    n_cols = n_columns_in(float(t_s[-1] - t_s[0]), spec)
    binned = depth_bins(np.asarray(display_db, dtype=np.float32), spec["n_depth"])
    columns = column_means(binned, t_s, float(t_s[0]), n_cols, spec["column_s"])
    edges = float(t_s[0]) + spec["column_s"] * np.arange(n_cols + 1)  # the edges column_means uses
    col = np.searchsorted(edges, t_s, side="right") - 1
    inside = col < n_cols
    counts = np.zeros((n_cols, len(CLASSES)), np.int32)
    np.add.at(counts, (col[inside], np.asarray(labels, dtype=np.int64)[inside]), 1)
    return columns, counts


# -- motion inputs (shared by training and the product) ------------------------------------
def motion_inputs(iq0: np.ndarray, iq1: np.ndarray) -> np.ndarray:
    """Model inputs (N, 4, n_samples) float32 from IQ segment pairs ``iq0``, ``iq1`` (N, n_samples)."""
    iq0 = np.asarray(iq0, dtype=np.complex64)
    iq1 = np.asarray(iq1, dtype=np.complex64)
    prod = np.conj(iq0) * iq1
    a0, a1 = np.abs(iq0), np.abs(iq1)
    norm = np.maximum(np.mean(a0 * a1, axis=1, keepdims=True), 1e-12)
    rms = np.maximum(np.sqrt(np.mean((a0**2 + a1**2) / 2, axis=1, keepdims=True)), 1e-12)
    return np.stack([prod.real / norm, prod.imag / norm, a0 / rms, a1 / rms], axis=1).astype(np.float32)


def iq_segments(iq: np.ndarray, line_idx: np.ndarray, centre_idx: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(iq[k, c-h : c-h+n], iq[k+1, same]) for each (k, c) pair; (N, n_samples) complex64 each.

    Centres are clipped so every segment lies inside the line.
    """
    h = n_samples // 2
    start = np.clip(np.asarray(centre_idx, dtype=np.int64) - h, 0, iq.shape[1] - n_samples)
    cols = start[:, None] + np.arange(n_samples)[None, :]
    k = np.asarray(line_idx, dtype=np.int64)[:, None]
    return iq[k, cols], iq[k + 1, cols]


# -- simulated data sets -------------------------------------------------------------------
@dataclass
class ClassifierWindows:
    """Fixed windows for scoring: x (N, 1, n_columns, n_depth) float32; y (N,) int64 class
    index; snr_db (N,) float32; recording (N,) int64 recording index."""

    x: np.ndarray
    y: np.ndarray
    snr_db: np.ndarray
    recording: np.ndarray


@dataclass
class ClassifierData:
    """Simulated recordings as time columns (:func:`recording_columns`), from which windows of
    any length are cut.

    columns (n_cols_total, n_depth) float32: every recording's columns, one after the other;
    label_counts (n_cols_total, n_classes) int32: true line labels per column;
    first_column (n_recordings + 1,) int64: recording r owns columns
    ``first_column[r] : first_column[r + 1]``; snr_db (n_recordings,) float32;
    recipe: how it was generated (JSON-safe).
    """

    columns: np.ndarray
    label_counts: np.ndarray
    first_column: np.ndarray
    snr_db: np.ndarray
    recipe: dict

    def __post_init__(self) -> None:
        self._label_cum = np.zeros((len(self.label_counts) + 1, self.label_counts.shape[1]), np.int64)
        np.cumsum(self.label_counts, axis=0, out=self._label_cum[1:])

    @property
    def n_recordings(self) -> int:
        return len(self.first_column) - 1

    def _label(self, first: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
        """(majority label, its share of the lines) of the windows of ``n_columns`` columns
        starting at absolute columns ``first`` (k,); (k,) int64, float64."""
        counts = self._label_cum[first + n_columns] - self._label_cum[first]
        label = counts.argmax(axis=1)
        return label, counts[np.arange(len(first)), label] / np.maximum(counts.sum(axis=1), 1)

    def _window(self, first: int, n_columns: int) -> np.ndarray:
        return standardise(self.columns[first : first + n_columns])[None]

    def windows(self, n_columns: int, hop_columns: int, min_purity: float) -> ClassifierWindows:
        """Windows of ``n_columns`` columns every ``hop_columns`` from each recording's first
        column, those whose majority label covers at least ``min_purity`` of their lines."""
        firsts, recs = [], []
        for r in range(self.n_recordings):
            a, b = int(self.first_column[r]), int(self.first_column[r + 1])
            starts = np.arange(a, b - n_columns + 1, hop_columns)
            firsts.append(starts)
            recs.append(np.full(len(starts), r, np.int64))
        first, rec = np.concatenate(firsts), np.concatenate(recs)
        label, purity = self._label(first, n_columns)
        keep = purity >= min_purity
        x = np.zeros((int(keep.sum()), 1, n_columns, self.columns.shape[1]), np.float32)
        for i, f in enumerate(first[keep]):
            x[i] = self._window(int(f), n_columns)
        return ClassifierWindows(x, label[keep], self.snr_db[rec[keep]], rec[keep])

    def crops(self, recordings: np.ndarray, n_columns: int, rng: np.random.Generator,
              min_purity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One window of ``n_columns`` columns at a random start in each of ``recordings``
        (k,), among the starts whose majority label covers at least ``min_purity`` of the
        lines; recordings too short or without such a start are left out. Returns (x (m, 1,
        n_columns, n_depth) float32, y (m,) int64, the recordings used (m,) int64)."""
        xs, ys, used = [], [], []
        for r in np.asarray(recordings, dtype=np.int64):
            a, b = int(self.first_column[r]), int(self.first_column[r + 1])
            starts = np.arange(a, b - n_columns + 1)
            if len(starts) == 0:
                continue
            label, purity = self._label(starts, n_columns)
            ok = np.flatnonzero(purity >= min_purity)
            if len(ok) == 0:
                continue
            j = int(ok[rng.integers(len(ok))])
            xs.append(self._window(int(starts[j]), n_columns))
            ys.append(label[j])
            used.append(r)
        if not xs:
            return np.zeros((0, 1, n_columns, self.columns.shape[1]), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.stack(xs), np.array(ys, np.int64), np.array(used, np.int64)


#: Parameter ranges of the classifier recordings (uniform draws).
CLASSIFIER_RANGES = {
    "seconds": [8.0, 11.0],
    "prf_hz": [200.0, 400.0],
    "f0_hz": [2.5e6, 7.0e6],
    "depth_scale": [0.7, 1.4],
    "snr_db": [5.0, 35.0],
    "gain_db": [-10.0, 10.0],
    "rate_scale": [0.75, 1.3],
    "transition_fraction": 0.3,
}


def _cache_path(kind: str, recipe: dict) -> Path:
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return CACHE_DIR / f"{kind}_{key}.npz"


def _load_cached(path: Path, fields: tuple[str, ...]) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if not all(f in z.files for f in fields):
            return None
        return {f: z[f] for f in fields}


def _save_cached(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def draw_uniform(rng: np.random.Generator, lo_hi: list[float]) -> float:
    """One uniform draw from the range ``[lo, hi]`` of a recipe (the data and scanner ranges)."""
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _simulate_recording(scenarios: list[str], seconds: list[float], params: dict, seed: int, rate_scale: float = 1.0):
    """Concatenate :func:`simulate` segments sharing one probe set-up.

    Each segment runs at its scenario's default rhythm times ``rate_scale``. Returns
    (meta, lines (n, n_samples) int16, labels (n,), list of SimResult).
    """
    from mmode.ingest.scenarios import SCENARIOS
    from mmode.ingest.simulator import simulate

    parts = []
    for j, (name, sec) in enumerate(zip(scenarios, seconds)):
        rate = SCENARIOS[name].rate_per_min
        parts.append(simulate(name, seconds=sec, seed=seed + 7919 * j,
                              rate_per_min=rate * rate_scale if rate > 0 else None, **params))
    lines = np.concatenate([p.lines for p in parts])
    labels = np.concatenate([p.truth.labels for p in parts])
    return parts[0].meta, lines, labels, parts


def classifier_recording(index: int, seed: int, ranges: dict = CLASSIFIER_RANGES):
    """One randomised recording for the classifier: (display_db (n, n_rows), t_s (n,), labels (n,), snr_db, info).

    The scenario cycles through every class (``index % 7`` in a seed-shuffled order), so a
    set of ``7 k`` recordings is balanced; a fraction of recordings switch to a second
    scenario part-way (a transition inside the recording).
    """
    from mmode.dsp.processor import Processor, ProcessorSettings
    from mmode.ingest.meta import LineBlock
    from mmode.ingest.scenarios import SCENARIOS

    rng = np.random.default_rng(seed)
    names = [n for n in SCENARIOS]
    order = np.random.default_rng(seed - index).permutation(len(names))
    first = names[int(order[index % len(names)])]
    info = SCENARIOS[first]
    total_s = draw_uniform(rng, ranges["seconds"])
    f0 = info.f0_hz * draw_uniform(rng, [0.7, 1.3])
    params = dict(
        prf_hz=draw_uniform(rng, ranges["prf_hz"]),
        f0_hz=f0,
        fs_hz=f0 * draw_uniform(rng, [3.2, 5.0]),
        depth_m=info.depth_m * draw_uniform(rng, ranges["depth_scale"]),
        snr_db=draw_uniform(rng, ranges["snr_db"]),
    )
    rate_scale = draw_uniform(rng, ranges["rate_scale"])
    # transitions stay within a view (lung <-> lung, heart <-> heart) or lift the probe off
    partners = [n for n in names if n != first and (SCENARIOS[n].depth_m == info.depth_m or n == "no_contact")]
    scen, secs = [first], [total_s]
    if rng.uniform() < ranges["transition_fraction"] and partners:
        split = draw_uniform(rng, [0.35, 0.65]) * total_s
        scen, secs = [first, partners[int(rng.integers(len(partners)))]], [split, total_s - split]
    meta, lines, labels, _ = _simulate_recording(scen, secs, params, seed, rate_scale)
    settings = ProcessorSettings(
        n_rows=int(rng.choice([128, 256])),
        gain_db=draw_uniform(rng, ranges["gain_db"]),
        dynamic_range_db=draw_uniform(rng, [45.0, 70.0]),
        denoise=str(rng.choice(["none", "median_persist"])),
    )
    proc = Processor(settings)
    proc.prepare(meta, lines.shape[1])
    out = proc.process(LineBlock(0, 0.0, lines))
    return out.display_db, out.t_s, labels, params["snr_db"], {
        "scenarios": scen, "rate_scale": rate_scale, **params, "n_rows": settings.n_rows,
        "dynamic_range_db": settings.dynamic_range_db}


#: Recordings per cache file of :func:`classifier_dataset`.
CHUNK_RECORDINGS = 35


#: Looks of the classifier's training and test images: "rf", the product's display of the
#: simulated lines; "scanner", that display as a scanner's 8-bit image of it
#: (:func:`mmode.models.scanner.scanner_image`) through the product's grey-level path.
#: "cine", a different recording: an anatomical M-mode cut from a simulated B-mode cine of a
#: lung (:mod:`mmode.models.cine_lung`, lung classes and no contact only).
LOOKS = ("rf", "scanner", "cine")
#: Seed offset of the scanner conditions drawn for a recording (apart from its own seed).
SCANNER_SEED_OFFSET = 7_777_777
#: Seed offset of the cine recordings (apart from the RF simulator's seeds).
CINE_SEED_OFFSET = 3_333_333
#: SNR given to cine recordings for the curriculum (they have no SNR of their own): the
#: middle of :data:`CLASSIFIER_RANGES` ``snr_db``, so they join it half-way.
CINE_CURRICULUM_SNR_DB = 20.0


def cine_recording(index: int, seed: int, seconds: list[float]):
    """One simulated lung cine's default M-mode through the product's grey-level path:
    (display_db (k, n_rows), t_s (k,), labels (k,)); the class cycles through
    :data:`mmode.models.cine_lung.CINE_CLASSES` in a seed-shuffled order (balanced sets)."""
    from mmode.models import cine_lung, scanner

    rng = np.random.default_rng(seed)
    order = np.random.default_rng(seed - index).permutation(len(cine_lung.CINE_CLASSES))
    label = cine_lung.CINE_CLASSES[int(order[index % len(order)])]
    frames, fps, _ = cine_lung.lung_cine(label, draw_uniform(rng, seconds), rng)
    grey = cine_lung.cine_mmode(frames)
    t_s = np.arange(len(grey)) / fps
    display_db, t_s = scanner.scanner_display(grey, t_s, int(rng.choice([128, 256])))
    return display_db, t_s, np.full(len(t_s), CLASSES.index(label), np.int64)


def _classifier_chunk(split: str, first: int, last: int, seed: int, ranges: dict, spec: dict, look: str) -> dict:
    """Columns of recordings ``first .. last-1`` of a split in ``look``: arrays columns,
    label_counts, n_columns (per recording) and snr_db (per recording)."""
    from mmode.models import scanner

    cols, counts, n_cols, snrs = [], [], [], []
    for i in range(first, last):
        rec_seed = seed + SPLIT_OFFSETS[split] + i
        if look == "cine":
            display_db, t_s, labels = cine_recording(i, rec_seed + CINE_SEED_OFFSET, ranges["seconds"])
            snr_db = CINE_CURRICULUM_SNR_DB
        else:
            display_db, t_s, labels, snr_db, info = classifier_recording(i, rec_seed, ranges)
        if look == "scanner":
            rng = np.random.default_rng(rec_seed + SCANNER_SEED_OFFSET)
            grey, t_s, labels, _ = scanner.scanner_image(display_db, t_s, labels, info["dynamic_range_db"], rng)
            display_db, t_s = scanner.scanner_display(grey, t_s, info["n_rows"])
        c, k = recording_columns(display_db, t_s, labels, spec)
        cols.append(c)
        counts.append(k)
        n_cols.append(len(c))
        snrs.append(snr_db)
    return {"columns": np.concatenate(cols), "label_counts": np.concatenate(counts),
            "n_columns": np.array(n_cols, np.int64), "snr_db": np.array(snrs, np.float32)}


def _check_split(split: str, n_recordings: int) -> None:
    """Raise DataError unless ``split`` is a known split and ``n_recordings`` in 1 .. 100000."""
    if split not in SPLIT_OFFSETS:
        raise DataError(describe("data split", f"one of {list(SPLIT_OFFSETS)}", repr(split)))
    if not 0 < n_recordings <= 100_000:
        raise DataError(describe("n_recordings", "1 .. 100000", n_recordings))


def classifier_dataset(split: str, n_recordings: int, seed: int = 0, ranges: dict = CLASSIFIER_RANGES,
                       spec: dict = CLASSIFIER_SPEC, cache: bool = True, look: str = "rf") -> ClassifierData:
    """``n_recordings`` simulated recordings of ``split`` ("train", "val", "test") as time
    columns (:class:`ClassifierData`), in ``look`` (:data:`LOOKS`; a scanner look shows the
    same simulated recordings as the rf look). Cached under ``runs/cache`` in chunks of
    :data:`CHUNK_RECORDINGS`, so a larger set reuses a smaller one."""
    from mmode.models.scanner import SCANNER_RANGES

    _check_split(split, n_recordings)
    if look not in LOOKS:
        raise DataError(describe("classifier data look", f"one of {LOOKS}", repr(look)))
    recipe = {"task": "classify", "split": split, "n_recordings": n_recordings, "seed": seed,
              "seed_offset": SPLIT_OFFSETS[split], "ranges": ranges, "spec": spec, "version": 2}
    if look == "scanner":
        recipe = {**recipe, "look": look, "scanner_ranges": SCANNER_RANGES}
    elif look == "cine":
        from mmode.models.cine_lung import CINE_RANGES, STRIP_PX

        recipe = {**recipe, "look": look, "cine_ranges": CINE_RANGES, "strip_px": STRIP_PX}
    fields = ("columns", "label_counts", "n_columns", "snr_db")
    chunks = []
    for first in range(0, n_recordings, CHUNK_RECORDINGS):
        last = min(first + CHUNK_RECORDINGS, n_recordings)
        chunk_recipe = {**recipe, "n_recordings": None, "chunk": [first, last]}
        path = _cache_path("classify", chunk_recipe)
        chunk = _load_cached(path, fields) if cache else None
        if chunk is None:
            chunk = _classifier_chunk(split, first, last, seed, ranges, spec, look)
            if cache:
                _save_cached(path, chunk)
        chunks.append(chunk)
    joined = {f: np.concatenate([c[f] for c in chunks]) for f in fields}
    first_column = np.concatenate([[0], np.cumsum(joined["n_columns"])]).astype(np.int64)
    return ClassifierData(joined["columns"], joined["label_counts"], first_column, joined["snr_db"], recipe)


def concatenate(sets: list[ClassifierData]) -> ClassifierData:
    """One :class:`ClassifierData` holding the recordings of ``sets`` one after the other
    (recipe: the list of their recipes)."""
    offsets = np.cumsum([0] + [len(d.columns) for d in sets[:-1]])
    first = np.concatenate([[0]] + [d.first_column[1:] + o for d, o in zip(sets, offsets)]).astype(np.int64)
    return ClassifierData(np.concatenate([d.columns for d in sets]), np.concatenate([d.label_counts for d in sets]),
                          first, np.concatenate([d.snr_db for d in sets]), {"parts": [d.recipe for d in sets]})
