"""What the status bar says, from the engine's state and the window's (GUI thread).

:meth:`StatusController.update` (a few times a second, from the draw timer) reads
``Engine.stats()``: the recording controller notices a recording that failed, :func:`health`
gives the state line (red where the user must act: a recording that failed, a stream lost
for :data:`~mmode.gui.status.LOST_AFTER_S`, an engine that failed), and the counters, the
source's title and state (*REC* only while a file is written) fill the other fields. The
busy indicator runs while a job works (:mod:`mmode.gui.jobs`) or the engine prepares its
pipeline; the motion tracker's state and the display level come last.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from mmode.app.motion_modes import NETWORK_AUTO_MAX_RATE_HZ
from mmode.errors import MmodeError
from mmode.gui.engine_link import level_text, motion_text
from mmode.gui.status import health, status_fields

PREPARING = "preparing the pipeline (the first run compiles its kernels)"


class StatusController:
    """The status bar of the window ``w``."""

    def __init__(self, w) -> None:
        self.w = w
        self._reconnecting_since_s: float | None = None

    def update_busy(self) -> None:
        """The busy indicator: a job running, or the engine preparing its pipeline."""
        w = self.w
        what = w.jobs.busy
        if not what and getattr(w.engine, "state", "") == "starting":
            what = PREPARING
        if what != w.status.busy_label.text().rstrip("."):
            w.status.set_busy(what)

    def update(self) -> None:
        w = self.w
        stats = {}
        engine = w.engine
        if engine is not None:
            try:
                stats = dict(engine.stats())
            except MmodeError as exc:
                w.show_error(str(exc))
        w.recording.watch(engine, stats)
        state = str(stats.get("state", ""))
        now = time.monotonic()
        if state != "reconnecting":
            self._reconnecting_since_s = None
        elif self._reconnecting_since_s is None:
            self._reconnecting_since_s = now
        reconnecting_s = 0.0 if self._reconnecting_since_s is None else now - self._reconnecting_since_s
        is_file = w.spec is not None and w.spec.kind == "file"
        text, severity = health(state, str(stats.get("message", "")), reconnecting_s=reconnecting_s,
                                record_error=w.recording.error, is_file=is_file)
        w.status.set_health(text, severity)
        if state == "failed":
            w.last_error = text
        f = status_fields(stats, w.frames)
        if w.source.opening:
            shown = "opening"
        else:
            shown = "frozen" if w.frozen else ("live" if engine is not None else "stopped")
        rec = "  REC" if w.recording.active else ""
        title = w.spec.title() if w.spec else "no source"
        if w.spec is not None and w.spec.kind == "file":  # the name; the whole path in the tooltip
            title = f"File: {Path(w.spec.value).name}"
            w.status.labels["source"].setToolTip(w.spec.title())
        f["source"] = f"{title} [{shown}]{rec}"
        w.status.update_fields(f)
        self.update_busy()
        self.update_motion_and_level()

    def update_motion_and_level(self) -> None:
        """The tracker's state in the status bar and the display level under the gain."""
        w = self.w
        text, tip = motion_text(w.reader.motion_state, running=w.engine is not None, scale=w.scale)
        if math.isfinite(w.reader.net_ms):
            text += f"  |  network {w.reader.net_ms:.1f} ms/block"
        elif w.s.show_motion_network and w.s.motion_source == "auto" and w.reader.motion_state.get("motion") == "classic":
            # short (the status bar gives this label what the other fields leave); why in the tooltip
            text += "  |  network off"
            tip += (f"\nNetwork off: the learned trace runs up to {NETWORK_AUTO_MAX_RATE_HZ:g} lines/s ('auto'); "
                    "start with --motion both to run it at this line rate.")
        if text != w.motion_label.text():
            w.motion_label.setText(text)
            w.motion_label.setToolTip(tip)
            no_trace = w.reader.motion_state.get("status") == "no_motion"
            w.motion_label.setStyleSheet("color: #e90" if no_trace else "")
        w.panel.show_level(*level_text(w.reader.level))

