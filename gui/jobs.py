"""Slow work off the GUI thread: one worker thread per job, the result back on the GUI thread.

Opening a source (a stream that does not answer takes up to its connect timeout), reading a
file's times and a cine's frames, importing torch and loading weights (building the engine's
pipeline), and stopping an engine (joining its threads, closing a recording) run in a
:class:`Jobs` worker. Its ``done(result)`` or ``failed(exc)`` callback runs later on the GUI
thread (a queued signal), never in the worker. While any job runs, :attr:`Jobs.busy` names it
for the status bar's busy indicator.

A newer job of the same ``kind`` supersedes an older one: the older one's result is handed to
``discard`` (e.g. to stop an engine nobody will use) instead of ``done``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from PyQt6.QtCore import QObject, pyqtSignal


class Jobs(QObject):
    """Runs callables in worker threads and delivers their outcome on the GUI thread.

    ``changed`` is emitted (GUI thread) whenever the set of running jobs changes.
    """

    changed = pyqtSignal()
    _finished = pyqtSignal(object)  # (job, ok, value), queued to the GUI thread

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: dict[int, tuple[str, str]] = {}  # id -> (kind, what)
        self._latest: dict[str, int] = {}  # kind -> id of the newest job of that kind
        self._next_id = 0
        self._closed = False
        self._finished.connect(self._deliver)

    @property
    def busy(self) -> str:
        """What runs now, for the busy indicator ("" when idle)."""
        return "; ".join(what for _kind, what in self._running.values())

    def run(self, kind: str, what: str, work: Callable[[], Any], done: Callable[[Any], None] | None = None,
            failed: Callable[[BaseException], None] | None = None,
            discard: Callable[[Any], None] | None = None) -> int:
        """Start ``work()`` in a daemon thread; returns the job id. ``what`` says what it does.

        On the GUI thread later: ``done(result)``, or ``failed(exc)`` if it raised, or
        ``discard(result)`` when a newer job of the same ``kind`` started meanwhile.
        """
        self._next_id += 1
        job = self._next_id
        self._running[job] = (kind, what)
        self._latest[kind] = job
        callbacks = (kind, done, failed, discard)

        def target() -> None:
            try:
                value, ok = work(), True
            except BaseException as exc:  # delivered to ``failed`` on the GUI thread
                value, ok = exc, False
            if self._closed:  # nobody will take it (the window has closed): let it go here
                if ok and discard is not None:
                    discard(value)
                return
            self._finished.emit((job, callbacks, ok, value))

        threading.Thread(target=target, name=f"mmode-gui-{kind}", daemon=True).start()
        self.changed.emit()
        return job

    def _deliver(self, outcome: tuple) -> None:
        job, (kind, done, failed, discard), ok, value = outcome
        self._running.pop(job, None)
        current = self._latest.get(kind) == job
        try:
            if ok and not current:
                if discard is not None:
                    discard(value)
            elif ok:
                if done is not None:
                    done(value)
            elif current and failed is not None:
                failed(value)
        finally:
            self.changed.emit()

    def close(self) -> None:
        """The window closes: results of jobs still running go to their ``discard`` in the
        worker (e.g. an engine opened too late is stopped), never to the window."""
        self._closed = True

    def supersede(self, kind: str) -> None:
        """A job of ``kind`` still running will be discarded when it ends (nobody wants it now)."""
        if self.pending(kind):
            self._next_id += 1
            self._latest[kind] = self._next_id

    def pending(self, kind: str) -> bool:
        """True while a job of ``kind`` runs."""
        return any(k == kind for k, _what in self._running.values())
