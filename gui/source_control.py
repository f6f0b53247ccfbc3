"""The source's lifecycle in the window: open, restart at a line, pause, speed, stop.

Everything slow runs in a :class:`~mmode.gui.jobs.Jobs` worker, never on the GUI thread:
opening the source (a stream that does not answer waits for its connect timeout), reading a
file's line times and calibration, decoding a cine's frames, building the engine (its
pipeline imports torch and loads the classifier) and stopping the old engine. The window
shows a busy indicator meanwhile and gets :meth:`SourceWindow.source_opened` or an error
when the job is done.

A file plays inside a :class:`~mmode.gui.playback.Playback`: pause and speed act on it and
keep the engine and its pipeline state (classifier window, tracked echo, display level).
A seek outside the cine memory, a replay after the end and a new M-line are a new timeline:
a new engine at that line, built off the GUI thread on the stopped engine's pipeline (no
model reload; the engine prepares it afresh, so the classifier window and the echo choice
restart).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

import numpy as np

from mmode.errors import MmodeError
from mmode.gui.calibration import caliper_scale
from mmode.gui.cine import CINE_FORMATS, cine_mmode, load_cine
from mmode.gui.engine_link import SourceSpec, pipeline_settings
from mmode.gui.jobs import Jobs
from mmode.gui.measurements import RF_SCALE, CaliperScale
from mmode.gui.playback import Playback


@dataclass
class Opened:
    """What a worker made of a spec: the spec to play (a cine's with its M-mode in memory),
    the started engine, and for files their line times (n,) s, metadata, calibration and a
    cine's frames (else None)."""

    spec: SourceSpec
    engine: Any
    file_times_s: np.ndarray | None = None
    file_meta: dict | None = None
    scale: CaliperScale = RF_SCALE
    cine_frames: Any = None


class SourceWindow(Protocol):
    """What the controller tells the window (on the GUI thread)."""

    def source_opened(self, opened: Opened, restart: bool) -> None: ...
    def source_failed(self, message: str) -> None: ...


def read_file(spec: SourceSpec) -> Opened:
    """A file's line times, metadata and calibration; a cine's frames and its M-mode along
    the spec's M-line (the returned spec plays that from its first line). Worker thread."""
    from mmode.ingest.cine import default_mline_of
    from mmode.ingest.files import open_recording

    rec = open_recording(spec.value, **spec.file_options())
    try:
        times = np.asarray(rec.timestamps_s(), np.float64)
        meta, scale, is_cine = rec.meta.to_dict(), caliper_scale(rec.meta, rec.info()), rec.file_format in CINE_FORMATS
    finally:
        rec.close()
    if not is_cine:
        return Opened(spec, None, times, meta, scale)
    frames = load_cine(spec.value)
    mmode = cine_mmode(frames, spec.mline or default_mline_of(frames), spec.px_per_cm)
    return Opened(replace(spec, mline=mmode.line, cine=mmode, start_line=0), None, cine_frames=frames)


def stop_in_background(engine) -> threading.Thread:
    """Stop ``engine`` (joins its threads, closes its recording) in a thread of its own."""
    t = threading.Thread(target=engine.stop, name="mmode-gui-stop", daemon=True)
    t.start()
    return t


class SourceController:
    """Holds the running engine and the spec it plays; see the module docstring."""

    def __init__(self, window: SourceWindow, jobs: Jobs, engine_factory: Callable) -> None:
        self.window = window
        self.jobs = jobs
        self.engine_factory = engine_factory
        self.engine = None
        self.spec: SourceSpec | None = None

    @property
    def opening(self) -> bool:
        return self.jobs.pending("source")

    @property
    def playback(self) -> Playback | None:
        """The running file's playback (pause, speed), or None."""
        source = getattr(self.engine, "source", None)
        return source if isinstance(source, Playback) else None

    def _build(self, spec: SourceSpec, settings_args: tuple, pipeline=None):
        settings = pipeline_settings(*settings_args)
        if pipeline is None:
            engine = self.engine_factory(spec, settings)
        else:
            engine = self.engine_factory(spec, settings, pipeline=pipeline)
        try:
            engine.start()
        except BaseException:
            engine.stop()
            raise
        return engine

    def open(self, spec: SourceSpec, settings_args: tuple) -> None:
        """Stop the current engine and open ``spec`` in a worker; the window hears back.
        settings_args : the arguments of :func:`~mmode.gui.engine_link.pipeline_settings`
        (a snapshot: the worker must not read the window's settings while they change)."""
        self.stop()
        self.spec = spec

        def work() -> Opened:
            opened = read_file(spec) if spec.kind == "file" else Opened(spec, None)
            opened.engine = self._build(opened.spec, settings_args)
            return opened

        self.jobs.run("source", f"opening {spec.title()}", work, done=lambda o: self._opened(o, restart=False),
                      failed=self._failed, discard=lambda o: stop_in_background(o.engine))

    def restart(self, spec: SourceSpec, line: int, settings_args: tuple) -> None:
        """Play ``spec`` (a file, or a cine's M-mode) from ``line`` on a new engine (a new
        timeline), reusing the current engine's pipeline once it has stopped."""
        old, self.engine = self.engine, None
        self.spec = spec = replace(spec, start_line=int(line))

        def work() -> Opened:
            pipeline = None
            if old is not None:
                old.stop()
                pipeline = getattr(old, "pipeline", None)
            return Opened(spec, self._build(spec, settings_args, pipeline))

        self.jobs.run("source", f"starting {spec.title()} at line {line}", work,
                      done=lambda o: self._opened(o, restart=True), failed=self._failed,
                      discard=lambda o: stop_in_background(o.engine))

    def _opened(self, opened: Opened, restart: bool) -> None:
        self.engine, self.spec = opened.engine, opened.spec
        self.window.source_opened(opened, restart)

    def _failed(self, exc: BaseException) -> None:
        self.engine = None
        known = isinstance(exc, (MmodeError, OSError))  # a user's error: its one line; a bug: its type too
        self.window.source_failed(str(exc) if known else f"{type(exc).__name__}: {exc}")

    def pause(self, paused: bool) -> bool:
        """Pause or resume a file without rebuilding its engine; False when there is no
        running playback to pause (nothing playing, or the file has ended)."""
        playback = self.playback
        if playback is None or getattr(self.engine, "state", "") == "ended":
            return False
        playback.pause(paused)
        return True

    def set_speed(self, speed: float) -> None:
        """The file's playback speed, from the next line on (no new engine)."""
        if self.spec is not None:
            self.spec = replace(self.spec, speed=speed)
        if self.playback is not None:
            self.playback.set_speed(speed)

    def stop(self, wait: bool = False) -> None:
        """Stop the engine (in the background unless ``wait``); any open job's result is discarded."""
        self.jobs.supersede("source")
        engine, self.engine = self.engine, None
        if engine is None:
            return
        if wait:
            engine.stop()
        else:
            stop_in_background(engine)
