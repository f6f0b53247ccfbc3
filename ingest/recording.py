"""A recording opened for reading: metadata plus lazy access to its lines.

Every file reader returns a :class:`Recording`. Nothing reads the lines until asked, so
``mmode info`` on a gigabyte file touches only headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock, Truth


@dataclass(frozen=True)
class Annotation:
    """A labelled span of lines, ``start_line`` inclusive, ``end_line`` exclusive."""

    start_line: int
    end_line: int
    label: str


class Recording:
    """Lines of one acquisition with their metadata; lazy, read by line ranges.

    Parameters
    ----------
    source : path or name used in every error message.
    meta : acquisition metadata.
    shape : (n_lines, n_samples) of the stored lines.
    dtype : dtype of the stored lines as returned by :meth:`read`.
    read_fn : ``(start, stop) -> ndarray (stop-start, n_samples)``; called with a valid range.
    timestamps_fn, truth_fn : optional lazy loaders for ``/timestamps_s`` and ground truth.
    annotations : labelled spans.
    close_fn : releases the file handle.
    file_format : short name of the on-disk format (``"mmode-h5 v1"``, ``"clarius-raw"``, ...),
        reported by :meth:`info`.
    extra_info : more entries for :meth:`info` (``dicom``, ``video``, ``mline``: docs/format.md).
    """

    def __init__(
        self,
        source: str,
        meta: AcquisitionMeta,
        shape: tuple[int, int],
        dtype: np.dtype,
        read_fn: Callable[[int, int], np.ndarray],
        *,
        timestamps_fn: Callable[[], np.ndarray] | None = None,
        truth_fn: Callable[[], Truth] | None = None,
        annotations: tuple[Annotation, ...] = (),
        close_fn: Callable[[], None] | None = None,
        file_format: str = "",
        extra_info: Mapping[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.meta = meta
        self.n_lines, self.n_samples = int(shape[0]), int(shape[1])
        self.dtype = np.dtype(dtype)
        self.annotations = tuple(annotations)
        self._read_fn = read_fn
        self._timestamps_fn = timestamps_fn
        self._truth_fn = truth_fn
        self._close_fn = close_fn
        self.file_format = file_format
        self.extra_info = dict(extra_info or {})

    # -- properties ------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return self.n_lines / self.meta.prf_hz

    @property
    def depth_range_m(self) -> tuple[float, float]:
        """Depth of the first and last stored sample, metres."""
        return float(self.meta.depth_m(0)), float(self.meta.depth_m(max(self.n_samples - 1, 0)))

    @property
    def has_truth(self) -> bool:
        return self._truth_fn is not None

    # -- data access -----------------------------------------------------------------------
    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Lines ``start:stop`` as a C-contiguous (n, n_samples) array; checks for NaN/Inf."""
        stop = self.n_lines if stop is None else stop
        if not (0 <= start <= stop <= self.n_lines):
            raise DataError(describe(self.source, f"line range within [0, {self.n_lines}]", (start, stop)))
        lines = np.ascontiguousarray(self._read_fn(start, stop))
        if lines.dtype.kind in "fc" and lines.size and not np.isfinite(lines).all():
            bad = start + int(np.flatnonzero(~np.isfinite(lines).all(axis=1))[0])
            raise DataError(describe(self.source, "finite samples", f"NaN or Inf in line {bad}"))
        return lines

    def blocks(self, block_lines: int, start: int = 0, stop: int | None = None) -> Iterator[LineBlock]:
        """Consecutive :class:`LineBlock` of at most ``block_lines`` lines."""
        if block_lines <= 0:
            raise DataError(describe(self.source, "block_lines > 0", block_lines))
        stop = self.n_lines if stop is None else stop
        if not (0 <= start <= stop <= self.n_lines):
            raise DataError(describe(self.source, f"line range within [0, {self.n_lines}]", (start, stop)))
        ts = self.timestamps_s() if self._timestamps_fn is not None else None
        for i in range(start, stop, block_lines):
            j = min(i + block_lines, stop)
            t = float(ts[i]) if ts is not None else i / self.meta.prf_hz
            yield LineBlock(seq=i, t_s=t, lines=self.read(i, j))

    def check_finite(self, max_block_bytes: int = 16 << 20) -> int:
        """Read every line in blocks of at most ``max_block_bytes`` and return ``n_lines``.

        Raises :class:`DataError` naming the first line holding NaN or Inf (integer samples
        are always finite, but are still read so that damaged storage is found too).
        """
        block_lines = max(1, max_block_bytes // max(1, self.n_samples * self.dtype.itemsize))
        for start in range(0, self.n_lines, block_lines):
            self.read(start, min(start + block_lines, self.n_lines))
        return self.n_lines

    def timestamps_s(self) -> np.ndarray:
        """(n_lines,) float64 acquisition times; from the file if stored, else ``i / prf_hz``."""
        if self._timestamps_fn is None:
            return np.arange(self.n_lines, dtype=np.float64) / self.meta.prf_hz
        return self._timestamps_fn()

    def truth(self) -> Truth | None:
        """Simulator ground truth, or None for a recording without it."""
        return None if self._truth_fn is None else self._truth_fn()

    def info(self) -> dict:
        """Summary used by ``mmode info --json``. Without a depth calibration
        (``meta.depth_calibrated`` False) ``depth_m`` is None and ``depth_px`` gives the first
        and last sample in pixels."""
        d = self.meta.to_dict()
        d.update(
            source=self.source,
            format=self.file_format,
            n_lines=self.n_lines,
            n_samples=self.n_samples,
            dtype=str(self.dtype),
            duration_s=self.duration_s,
            depth_m=list(self.depth_range_m),
            has_truth=self.has_truth,
            annotations=[
                {"start_line": a.start_line, "end_line": a.end_line, "label": a.label} for a in self.annotations
            ],
        )
        if not self.meta.depth_calibrated:
            d.update(depth_m=None, depth_px=[0, self.n_samples - 1])
        d.update(self.extra_info)
        return d

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        if self._close_fn is not None:
            self._close_fn()
            self._close_fn = None

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Recording({self.source!r}, {self.meta.kind}, {self.n_lines}x{self.n_samples} {self.dtype})"
