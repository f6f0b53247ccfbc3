"""Recording raw lines to a format v1 file from their own thread (the engine's recorder,
``mmode record``).

The acquisition thread hands blocks to :meth:`Recorder.submit`, which never blocks: a
bounded queue (in bytes) feeds a writer thread that appends to an
:class:`~mmode.ingest.h5format.H5Writer` and flushes at least once per flush interval.
A failed write ends the recording (state ``"failed"``) and leaves the file with the lines of
its last flush; the caller (the engine's stats, ``mmode record``) reports it.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mmode.errors import DataError, MmodeError, describe, exception_text
from mmode.ingest.meta import AcquisitionMeta, LineBlock

#: Most bytes of lines the recorder holds while the disk catches up (a few seconds of the
#: fastest stream, 5 kHz x 2048 int16 samples = 20 MB/s, bounded whatever the sample type).
MAX_RECORDER_QUEUE_BYTES = 256 << 20


class Recorder:
    """Writes raw lines to a format v1 file from its own thread; :meth:`submit` never blocks.

    The file is flushed at least every ``flush_interval_s`` while lines arrive (and when
    idle), so a process killed mid-recording leaves a file that opens with every line up to
    the last flush. When the disk cannot keep up, whole blocks beyond ``max_queue_bytes`` of
    queued samples are dropped and counted in :attr:`lines_dropped` (bounded in bytes, not
    lines: 65 536 lines are 256 MiB of int16 RF at 2048 samples but 1 GiB of complex64 IQ).

    A write that fails (disk full, a removed disk) ends the recording at once: :attr:`state`
    becomes ``"failed"``, :attr:`error` holds the one-line :class:`DataError`, the file keeps
    the lines of its last flush (:class:`~mmode.ingest.h5format.H5Writer` abandons it without
    another write) and :meth:`submit` refuses every later block without counting it.
    :attr:`lines_written` is what the file holds; the lines appended but not flushed when the
    write failed, and those still queued, are counted in :attr:`lines_dropped`.
    """

    def __init__(
        self,
        path: str | Path,
        meta: AcquisitionMeta,
        n_samples: int,
        dtype: np.dtype,
        *,
        flush_interval_s: float = 1.0,
        max_queue_bytes: int = MAX_RECORDER_QUEUE_BYTES,
    ) -> None:
        from mmode.ingest.h5format import H5Writer

        self.path = str(path)
        self.prf_hz = meta.prf_hz
        self.flush_interval_s = float(flush_interval_s)
        try:
            self._writer = H5Writer(self.path, meta, n_samples, dtype, flush_interval_s=flush_interval_s)
        except OSError as exc:
            raise DataError(describe(self.path, "a file that can be created for writing", exc)) from None
        self._queue: queue.SimpleQueue[LineBlock | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self.max_queue_bytes = int(max_queue_bytes)
        self.lines_written = 0
        self.lines_dropped = 0
        self.error: MmodeError | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    @property
    def state(self) -> str:
        """"recording", "failed" (a write failed: nothing more is written) or "closed"."""
        if self.error is not None:
            return "failed"
        return "closed" if self._closed else "recording"

    def submit(self, block: LineBlock) -> bool:
        """Queue a block for writing; False if the queue is full (counted in
        :attr:`lines_dropped`) or the recording is over (closed or failed: not counted)."""
        with self._lock:
            if self._closed or self.error is not None:
                return False
            if self._queued_bytes + block.lines.nbytes > self.max_queue_bytes:
                self.lines_dropped += block.n_lines
                return False
            self._queued_bytes += block.lines.nbytes
        self._queue.put(block)
        return True

    def _run(self) -> None:
        dirty = False
        while True:
            try:
                block = self._queue.get(timeout=self.flush_interval_s / 2)
            except queue.Empty:
                if dirty and self.error is None:
                    self._write(self._writer.flush)
                    dirty = False
                continue
            if block is None:
                break
            with self._lock:
                self._queued_bytes -= block.lines.nbytes
                if self.error is not None:  # queued when a write failed
                    self.lines_dropped += block.n_lines
                    continue
            t_s = block.t_s + np.arange(block.n_lines) / self.prf_hz
            if self._write(self._writer.append, block.lines, t_s):
                self.lines_written += block.n_lines
                dirty = True
            else:
                with self._lock:
                    self.lines_dropped += block.n_lines
        self._write(self._writer.close)

    def _write(self, call, *args) -> bool:
        """Run a writer call; on failure keep the first error and count the lines appended
        since the last flush, which the file does not hold, as dropped."""
        try:
            call(*args)
            return True
        except Exception as exc:  # the writer's DataError, or a bug: either way the recording is over
            with self._lock:
                if self.error is None:
                    self.error = exc if isinstance(exc, MmodeError) else DataError(
                        describe(self.path, "a recording that writes", exception_text(exc)))
                lost = self.lines_written - self._writer.n_flushed
                self.lines_written -= lost
                self.lines_dropped += lost
            return False

    def close(self) -> dict[str, Any]:
        """Write what is queued, close the file; returns :meth:`summary`."""
        with self._lock:
            already, self._closed = self._closed, True
        if not already:
            self._queue.put(None)
        self._thread.join()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """``{"path", "state", "lines_written", "lines_dropped", "error"}``: ``state`` as
        :attr:`state`; ``error`` None or the one-line reason the recording failed."""
        return {
            "path": self.path,
            "state": self.state,
            "lines_written": self.lines_written,
            "lines_dropped": self.lines_dropped,
            "error": None if self.error is None else str(self.error),
        }
