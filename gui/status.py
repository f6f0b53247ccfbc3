"""Always-visible status: line rate, latency, dropped lines, bad frames, inference time, FPS.

:class:`FrameStats` measures the GUI thread (frame time of each draw-timer tick, frames per
second) over a sliding window; :class:`StatusBar` shows it beside the engine's counters.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Mapping

import numpy as np
from PyQt6.QtWidgets import QLabel, QStatusBar


class FrameStats:
    """GUI-thread frame times (ms) and drawn-frame instants of the last ``n`` frames.

    A frame is one draw-timer tick (poll, ring push, item updates) plus the paint of the
    views that follows it: :meth:`add` records the tick, :meth:`painted` adds the paint time
    of a frame that drew. A frame counts as drawn when its paint has run.
    """

    def __init__(self, n: int = 600) -> None:
        self._frame_ms: deque[float] = deque(maxlen=n)
        self._ticks_s: deque[float] = deque(maxlen=n)
        self._drew = False
        self._counted = False
        self.n_frames = 0

    def add(self, start_s: float, stop_s: float, drew: bool) -> None:
        """Record one tick from ``start_s`` to ``stop_s`` (perf_counter seconds)."""
        self._frame_ms.append((stop_s - start_s) * 1e3)
        self._drew, self._counted = drew, False

    def painted(self, start_s: float, stop_s: float) -> None:
        """Add the paint of a view to the last frame if it drew (other paints are ignored)."""
        if not self._drew or not self._frame_ms:
            return
        self._frame_ms[-1] += (stop_s - start_s) * 1e3
        if not self._counted:
            self._ticks_s.append(stop_s)
            self.n_frames += 1
            self._counted = True

    def fps(self, now_s: float | None = None) -> float:
        """Drawn frames per second over the last second (or the window held)."""
        now = time.perf_counter() if now_s is None else now_s
        recent = [t for t in self._ticks_s if now - t <= 1.0]
        return float(len(recent))

    def mean_fps(self) -> float:
        """Drawn frames per second over the frames held (about the last 10 s at 60 fps)."""
        if len(self._ticks_s) < 2:
            return float("nan")
        return (len(self._ticks_s) - 1) / (self._ticks_s[-1] - self._ticks_s[0])

    def frame_ms(self, q: float) -> float:
        """Quantile ``q`` (0..100) of the GUI-thread frame time, ms (NaN before any frame)."""
        if not self._frame_ms:
            return float("nan")
        return float(np.percentile(np.fromiter(self._frame_ms, float), q))


def _num(d: Mapping[str, Any], *keys: str) -> float:
    v: Any = d
    for k in keys:
        if not isinstance(v, Mapping) or k not in v:
            return float("nan")
        v = v[k]
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(v: float, spec: str) -> str:
    return "--" if not np.isfinite(v) else format(v, spec)


def status_fields(engine_stats: Mapping[str, Any], frames: FrameStats) -> dict[str, str]:
    """Text of every status field from the engine's ``stats()`` and the frame statistics."""
    return {
        "source": str(engine_stats.get("state", "")),
        "line_rate": f"{_fmt(_num(engine_stats, 'line_rate_hz'), '.0f')} lines/s",
        "latency": f"latency {_fmt(_num(engine_stats, 'latency_ms', 'p50'), '.0f')}"
                   f"/{_fmt(_num(engine_stats, 'latency_ms', 'p99'), '.0f')} ms (p50/p99)",
        "dropped": f"dropped {_fmt(_num(engine_stats, 'lines_dropped'), '.0f')} lines",
        "frames": f"frames rejected {_fmt(_num(engine_stats, 'frames_rejected'), '.0f')}"
                  f", re-timed {_fmt(_num(engine_stats, 'frames_retimed'), '.0f')}",
        "inference": f"inference {_fmt(_num(engine_stats, 'inference_ms', 'p50'), '.1f')} ms",
        "fps": f"{_fmt(frames.fps(), '.0f')} fps",
        "frame": f"frame p95 {_fmt(frames.frame_ms(95), '.1f')} ms",
    }


class TimedPaint:
    """Mixin for a QGraphicsView: reports each paint to ``on_paint(start_s, stop_s)``."""

    on_paint: Callable[[float, float], None] | None = None

    def paintEvent(self, event) -> None:
        t0 = time.perf_counter()
        super().paintEvent(event)
        if self.on_paint is not None:
            self.on_paint(t0, time.perf_counter())


class StatusBar(QStatusBar):
    """One label per status field, permanently shown on the right."""

    ORDER = ("error", "source", "line_rate", "latency", "dropped", "frames", "inference", "fps", "frame")

    def __init__(self) -> None:
        super().__init__()
        self.labels = {k: QLabel("") for k in self.ORDER}
        self.labels["error"].setStyleSheet("color: #d00; font-weight: bold")
        self.labels["frames"].setToolTip(
            "Frames dropped for NaN or Inf samples, and frames given the time their sequence number "
            "predicts because their own ran backwards or jittered (docs/protocol.md)"
        )
        self.addWidget(self.labels["error"], 1)
        for k in self.ORDER[1:]:
            self.addPermanentWidget(self.labels[k])

    def update_fields(self, fields: Mapping[str, str]) -> None:
        for k, text in fields.items():
            if k in self.labels:
                self.labels[k].setText(text)
