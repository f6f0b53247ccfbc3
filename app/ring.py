"""Bounded ring buffer of lines between the acquisition and the processing threads.

Overload policy (explicit, counted): the writer never blocks and never fails. When the
reader falls behind, the oldest unread lines are skipped so that the reader resumes at the
newest data:

- on :meth:`LineRing.push`, unread lines that would be overwritten are skipped;
- on :meth:`LineRing.pop`, when more than ``max_backlog_lines`` are unread (and, with
  ``max_backlog_s``, the oldest of them arrived longer ago than that), all but the newest
  ``max_lines`` are skipped (this bounds latency, not only memory). A burst that has just
  arrived (a stream's socket emptied at once) is thus worked through, not thrown away.

Counters are exact at every moment (``lines_in == lines_out + lines_skipped + unread``).
Each line keeps its sequence number, acquisition time and arrival time, so a skipped line
is never counted as processed and latency is measured per line. A chunk's lines are
consecutive in seq and evenly spaced in time (``t_s + i / prf_hz``, as the pipeline times
them): a block whose own time does not continue the one before starts a new chunk.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from mmode.errors import DataError, describe
from mmode.ingest.meta import LineBlock

#: A chunk is cut before a line whose time is further than this many line periods from the
#: chunk's even spacing (float64 rounding of epoch times at 100 kHz is 2.4 % of a period).
CHUNK_TIME_TOLERANCE_LINES = 0.1


@dataclass(frozen=True)
class RingChunk:
    """Consecutive lines taken from the ring (a copy; the ring may overwrite its storage).

    seq : sequence number of the first line; lines have seq, seq+1, ... without gaps.
    t_s : acquisition time of the first line, seconds (source clock).
    lines : (n, n_samples) array.
    arrival_s : (n,) ``time.perf_counter()`` at which each line entered the ring.
    """

    seq: int
    t_s: float
    lines: np.ndarray
    arrival_s: np.ndarray

    @property
    def n_lines(self) -> int:
        return int(self.lines.shape[0])

    def block(self) -> LineBlock:
        return LineBlock(seq=self.seq, t_s=self.t_s, lines=self.lines)


class LineRing:
    """Fixed-capacity ring of (n_samples,) lines with skip-to-newest overload and counters.

    Parameters
    ----------
    capacity_lines : lines held at most (memory: capacity * n_samples * itemsize bytes).
    n_samples, dtype : shape and type of every line.
    prf_hz : line rate, to give every line of a block its own acquisition time.
    max_backlog_lines : unread lines beyond which :meth:`pop` skips to the newest
        (default: the capacity, i.e. only overwriting skips).
    max_backlog_s : when given, :meth:`pop` skips only while the oldest unread line also
        arrived more than this long ago (``time.perf_counter`` seconds, as ``arrival_s``).
    """

    def __init__(
        self,
        capacity_lines: int,
        n_samples: int,
        dtype: np.dtype,
        prf_hz: float,
        *,
        max_backlog_lines: int | None = None,
        max_backlog_s: float | None = None,
    ) -> None:
        if capacity_lines < 1 or n_samples < 1:
            raise DataError(describe("ring", "capacity_lines >= 1 and n_samples >= 1", (capacity_lines, n_samples)))
        self.capacity = int(capacity_lines)
        self.n_samples = int(n_samples)
        self.prf_hz = float(prf_hz)
        self.max_backlog_lines = self.capacity if max_backlog_lines is None else max(1, min(int(max_backlog_lines), self.capacity))
        self.max_backlog_s = max_backlog_s
        self._lines = np.zeros((self.capacity, self.n_samples), dtype=dtype)
        self._seq = np.zeros(self.capacity, dtype=np.int64)
        self._t_s = np.zeros(self.capacity, dtype=np.float64)
        self._arrival_s = np.zeros(self.capacity, dtype=np.float64)
        self._cond = threading.Condition(threading.Lock())
        self._write = 0  # total lines ever written (position of the next write, unwrapped)
        self._read = 0  # unwrapped position of the oldest unread line
        self.lines_in = 0
        self.lines_out = 0
        self.lines_skipped = 0
        self.high_water_lines = 0
        self._closed = False

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring's storage (fixed at construction)."""
        return self._lines.nbytes + self._seq.nbytes + self._t_s.nbytes + self._arrival_s.nbytes

    @property
    def unread(self) -> int:
        with self._cond:
            return self._write - self._read

    def push(self, block: LineBlock, arrival_s: float) -> int:
        """Store a block (never blocks); returns the number of unread lines it overwrote."""
        lines = block.lines
        if lines.ndim != 2 or lines.shape[1] != self.n_samples:
            raise DataError(describe("ring", f"lines of shape (n, {self.n_samples})", lines.shape))
        n = lines.shape[0]
        seq = block.seq + np.arange(n, dtype=np.int64)
        t_s = block.t_s + np.arange(n, dtype=np.float64) / self.prf_hz
        if n > self.capacity:  # only the newest capacity lines can be kept
            lines, seq, t_s = lines[-self.capacity :], seq[-self.capacity :], t_s[-self.capacity :]
        k = lines.shape[0]
        with self._cond:
            self.lines_in += n
            self.lines_skipped += n - k
            overwritten = max(0, self._write + k - self._read - self.capacity)
            self._read += overwritten
            self.lines_skipped += overwritten
            idx = np.arange(self._write, self._write + k) % self.capacity
            self._lines[idx] = lines
            self._seq[idx] = seq
            self._t_s[idx] = t_s
            self._arrival_s[idx] = arrival_s
            self._write += k
            self.high_water_lines = max(self.high_water_lines, self._write - self._read)
            self._cond.notify_all()
        return overwritten + n - k

    def pop(self, max_lines: int, timeout_s: float = 0.0) -> RingChunk | None:
        """Take up to ``max_lines`` consecutive unread lines (a copy), oldest first.

        Waits up to ``timeout_s`` for data; returns None when there is none (or after
        :meth:`close`). A chunk never spans a jump in sequence numbers, nor a line whose
        time is off the chunk's even spacing (:data:`CHUNK_TIME_TOLERANCE_LINES`). When
        the backlog exceeds ``max_backlog_lines`` the older lines are skipped first (counted).
        """
        with self._cond:
            if self._write == self._read and timeout_s > 0 and not self._closed:
                self._cond.wait(timeout_s)
            unread = self._write - self._read
            if unread == 0:
                return None
            aged = self.max_backlog_s is None or (
                time.perf_counter() - self._arrival_s[self._read % self.capacity] > self.max_backlog_s)
            if unread > self.max_backlog_lines and aged:
                skip = unread - min(max_lines, self.max_backlog_lines)
                self._read += skip
                self.lines_skipped += skip
                unread -= skip
            n = min(unread, max_lines)
            idx = np.arange(self._read, self._read + n) % self.capacity
            seq = self._seq[idx]
            off_s = self._t_s[idx[1:]] - (self._t_s[idx[0]] + np.arange(1, n) / self.prf_hz)
            breaks = np.flatnonzero((np.diff(seq) != 1) | (np.abs(off_s) > CHUNK_TIME_TOLERANCE_LINES / self.prf_hz))
            if breaks.size:
                n = int(breaks[0]) + 1
                idx = idx[:n]
            chunk = RingChunk(
                seq=int(seq[0]),
                t_s=float(self._t_s[idx[0]]),
                lines=self._lines[idx],
                arrival_s=self._arrival_s[idx],
            )
            self._read += n
            self.lines_out += n
            return chunk

    def close(self) -> None:
        """Wake a waiting reader; later pops return what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def counters(self) -> dict[str, int]:
        """Exact snapshot: lines_in, lines_out, lines_skipped, unread, high_water_lines."""
        with self._cond:
            return {
                "lines_in": self.lines_in,
                "lines_out": self.lines_out,
                "lines_skipped": self.lines_skipped,
                "unread": self._write - self._read,
                "high_water_lines": self.high_water_lines,
            }
