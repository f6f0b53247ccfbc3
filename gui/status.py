"""Always-visible status: what needs the user, what runs, and the numbers.

:class:`FrameStats` measures the GUI thread (frame time of each draw-timer tick, frames per
second) over a sliding window; :class:`StatusBar` shows it beside the engine's counters.
:func:`health` says in one line what state the source, the engine and the recording are in,
and how serious it is: "alert" (red: the user must act: a recording that failed, a stream
lost, an engine that failed), "warn" (amber: reconnecting, preparing, a stream that ended) or
"ok". The busy indicator runs while the window opens a source or the engine prepares its
pipeline (the first run compiles its kernels for several seconds).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Mapping

import numpy as np
from PyQt6.QtWidgets import QLabel, QProgressBar, QStatusBar

#: A stream reconnecting for longer than this is shown as lost (red), s: a sender restarting
#: comes back within the source's first retries (0.2 + 0.4 + 0.8 + 1.6 s of backoff).
LOST_AFTER_S = 3.0
SEVERITY_COLOURS = {"alert": "#f44", "warn": "#e90", "ok": ""}


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


def health(state: str, message: str, *, reconnecting_s: float = 0.0, record_error: str = "",
           is_file: bool = False) -> tuple[str, str]:
    """(text, severity) of the source, engine and recording state (see the module docstring).

    state, message : ``Engine.state`` and ``Engine.message``. reconnecting_s : how long the
    stream has been reconnecting. record_error : why a recording stopped (one line), or "".
    """
    parts: list[tuple[str, str]] = []
    message = " ".join(str(message or "").split())
    if record_error:
        parts.append((record_error, "alert"))
    if state == "failed":
        parts.append((f"Engine failed: {message or 'unknown error'}", "alert"))
    elif state == "reconnecting" and reconnecting_s >= LOST_AFTER_S:
        parts.append((f"Stream lost for {reconnecting_s:.0f} s: {message}", "alert"))
    elif state == "reconnecting":
        parts.append((f"Reconnecting: {message}", "warn"))
    elif state == "starting":
        parts.append(("Preparing the pipeline", "warn"))
    elif state == "ended" and not is_file:
        parts.append((f"Stream ended: {message}" if message else "Stream ended", "warn"))
    if not parts:
        return "", "ok"
    worst = "alert" if any(s == "alert" for _t, s in parts) else "warn"
    return " | ".join(t for t, _s in parts), worst


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

    ORDER = ("health", "error", "source", "line_rate", "latency", "dropped", "frames", "inference", "fps", "frame")

    def __init__(self) -> None:
        super().__init__()
        self.busy = QProgressBar()  # runs (no steps) while something slow is under way
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(80)
        self.busy.setMaximumHeight(14)
        self.busy.setTextVisible(False)
        self.busy_label = QLabel("")
        self.addWidget(self.busy)
        self.addWidget(self.busy_label)
        self.set_busy("")
        self.labels = {k: QLabel("") for k in self.ORDER}
        self.labels["error"].setStyleSheet("color: #f44; font-weight: bold")
        self.labels["frames"].setToolTip(
            "Frames dropped for NaN or Inf samples, and frames given the time their sequence number "
            "predicts because their own ran backwards or jittered (docs/protocol.md)"
        )
        self.addWidget(self.labels["health"])
        self.addWidget(self.labels["error"], 1)
        for k in self.ORDER[2:]:
            self.labels[k].setStyleSheet("padding: 0 4px")
            self.addPermanentWidget(self.labels[k])
        self.severity = "ok"

    def set_busy(self, what: str) -> None:
        """Show the busy indicator saying ``what`` runs ("" hides it)."""
        self.busy.setVisible(bool(what))
        self.busy_label.setVisible(bool(what))
        self.busy_label.setText(f"{what}..." if what else "")

    def set_health(self, text: str, severity: str) -> None:
        """The state line of :func:`health`, coloured by its severity."""
        label = self.labels["health"]
        if (text, severity) == (label.text(), self.severity):
            return
        self.severity = severity
        label.setText(text)
        label.setToolTip(text)
        colour = SEVERITY_COLOURS[severity]
        label.setStyleSheet(f"color: {colour}; font-weight: bold" if colour else "")

    def update_fields(self, fields: Mapping[str, str]) -> None:
        for k, text in fields.items():
            if k in self.labels:
                self.labels[k].setText(text)
