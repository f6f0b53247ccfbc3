"""Pause and playback speed of a file (or a cine's M-mode) without rebuilding the engine.

:class:`Playback` wraps an unpaced source (a :class:`~mmode.ingest.sources.FileSource` or
:class:`~mmode.gui.cine.CineSource`) and paces its blocks itself at ``prf_hz * speed``:
:meth:`Playback.pause` holds the lines back (the engine keeps running, its pipeline keeps the
classifier window, the tracked echo and the display level) and :meth:`Playback.set_speed`
changes the rate from the next block. Either only re-anchors the pacing: the lines keep
their own times and sequence numbers, so the pipeline sees one timeline, as it would at a
constant speed. No Qt here.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.sources import Source

#: Speed given to a wrapped FileSource so that its own pacing never waits (it requires a
#: speed > 0): :class:`Playback` does the pacing.
UNPACED_SPEED = 1e9


class Playback(Source):
    """``inner`` (not opened, unpaced) played at ``prf_hz * speed``; pausable, any thread."""

    def __init__(self, inner: Source, speed: float = 1.0) -> None:
        super().__init__()
        self.inner = inner
        self._lock = threading.Lock()
        self._speed = self._checked(speed)
        self._paused = False
        self._held: LineBlock | None = None  # read from inner, not yet due
        self._anchor_s: float | None = None
        self._lines_sent = 0

    @staticmethod
    def _checked(speed: float) -> float:
        if not (isinstance(speed, (int, float)) and np.isfinite(speed) and speed > 0):
            raise DataError(describe("playback", "speed > 0", speed))
        return float(speed)

    # -- controls (any thread) -------------------------------------------------------------
    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    def set_speed(self, speed: float) -> None:
        """Play at ``speed`` times real time from the next block on."""
        speed = self._checked(speed)
        with self._lock:
            self._speed, self._anchor_s = speed, None

    def pause(self, paused: bool) -> None:
        """Hold the lines back (True) or go on from where they stopped (False)."""
        with self._lock:
            self._paused, self._anchor_s = bool(paused), None

    # -- the Source interface ----------------------------------------------------------------
    def open(self) -> AcquisitionMeta:
        self.meta = self.inner.open()
        self.n_samples, self.dtype = self.inner.n_samples, self.inner.dtype
        self._sync()
        return self.meta

    def __getattr__(self, name: str):
        """What else the inner source has (``head_lines`` of a file, ``n_lines``): the engine
        asks for such optional parts with ``getattr``."""
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _sync(self) -> None:
        self.status, self.message = self.inner.status, self.inner.message
        self.discontinuities = self.inner.discontinuities

    def read_block(self, timeout_s: float) -> LineBlock | None:
        if self._stop.is_set():
            return None
        if self._paused:
            self._stop.wait(timeout_s)
            return None
        block = self._held
        if block is None:
            block = self.inner.read_block(timeout_s)
            self._sync()
            if block is None:
                self.finished = self.inner.finished
                return None
            self._held = block
        with self._lock:
            if self._anchor_s is None:
                self._anchor_s, self._lines_sent = time.perf_counter(), 0
            due_s = self._anchor_s + (self._lines_sent + block.n_lines) / (self.meta.prf_hz * self._speed)
        delay_s = due_s - time.perf_counter()
        if delay_s > timeout_s:
            self._stop.wait(max(0.0, timeout_s))
            return None
        if delay_s > 0 and self._stop.wait(delay_s):
            return None
        with self._lock:
            if self._paused or self._anchor_s is None:  # paused or re-timed while waiting
                return None
            self._lines_sent += block.n_lines
        self._held = None
        return block

    def stop(self) -> None:
        super().stop()
        self.inner.stop()
