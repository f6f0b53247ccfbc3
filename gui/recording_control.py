"""Recording from the window: start, stop, and a recording that fails on its own.

The engine's recorder writes in its own thread; a write error (disk full, file removed)
does not stop the engine, it shows in ``Engine.stats()["recording"]`` (``error``, and
``state`` "failed" where the recorder reports one). :meth:`RecordingController.watch` reads
that on every status update: the *REC* mark and the button go out at once, the recorder is
closed (what was flushed stays readable) and the error stays in red in the status bar
until the user records again or opens another source. Closing a recording joins the
recorder's thread (it writes what is queued), so it runs off the GUI thread too.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping

from mmode.errors import MmodeError


class RecordingController:
    """Start / stop recording on the window's engine; see the module docstring.

    ``button`` : the checkable Record button (kept in step without emitting signals).
    """

    def __init__(self, button) -> None:
        self.button = button
        self.path: Path | None = None  # the file being written now, else None
        self.error = ""  # why the last recording stopped on its own (one line), else ""
        self._closing: list[threading.Thread] = []

    @property
    def active(self) -> bool:
        return self.path is not None

    def start(self, engine, path: str | Path) -> str:
        """Record ``engine``'s incoming lines to ``path``; returns an error line ("" if started)."""
        self.error = ""
        if engine is None:
            self._show(False)
            return "record: no source running"
        try:
            engine.start_recording(str(path))
        except (MmodeError, OSError) as exc:
            self._show(False)
            return f"record: {exc}"
        self.path = Path(path)
        self._show(True)
        return ""

    def stop(self, engine, wait: bool = False) -> None:
        """Close the recording (in a thread unless ``wait``); the button goes out at once."""
        if engine is not None and self.path is not None:
            t = threading.Thread(target=engine.stop_recording, name="mmode-gui-record", daemon=True)
            t.start()
            self._closing.append(t)
        self.path = None
        self._show(False)
        if wait:
            self.wait()

    def wait(self, timeout_s: float = 30.0) -> None:
        """Wait for recordings being closed to be on disk."""
        for t in self._closing:
            t.join(timeout_s)
        self._closing = [t for t in self._closing if t.is_alive()]

    def forget(self) -> None:
        """A new source: the old recording's error no longer applies."""
        self.error = ""

    def watch(self, engine, stats: Mapping[str, Any]) -> None:
        """Notice a recording that failed in the engine (see the module docstring)."""
        rec = stats.get("recording")
        if self.path is None or not isinstance(rec, Mapping) or str(rec.get("path", "")) != str(self.path):
            return
        if rec.get("state") != "failed" and not rec.get("error"):
            return
        why = " ".join(str(rec.get("error") or "write failed").split())  # one line
        self.error = (f"Recording failed: {why}; {rec.get('lines_written', 0)} lines written to "
                      f"{self.path.name} before it")
        self.stop(engine)

    def _show(self, on: bool) -> None:
        self.button.blockSignals(True)
        self.button.setChecked(on)
        self.button.setText("Stop recording" if on else "Record...")
        self.button.blockSignals(False)
