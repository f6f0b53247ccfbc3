"""The window under faults and slow work, on the real engine: a recording that fails, a
stream whose server goes away, a source that is slow to open, and every model option the
window offers. Offscreen; progress is counted in events, never timed."""

from __future__ import annotations

import threading

import pytest
from PyQt6.QtCore import QSettings, QTimer

from mmode.gui.engine_link import SourceSpec, classifier_name, make_engine
from mmode.gui.main_window import MainWindow
from mmode.gui.settings import MODEL_CHOICES
from mmode.gui.status import LOST_AFTER_S
from mmode.ingest.h5format import write_recording
from mmode.ingest.simulator import simulate

WAIT_MS = 60_000  # the first run compiles the numba kernels


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    sim = simulate("lung_sliding", seconds=4.0, prf_hz=500.0, seed=3)
    path = tmp_path_factory.mktemp("rec") / "lung.h5"
    write_recording(path, sim.meta, sim.lines)
    return path


@pytest.fixture
def store(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def open_window(qtbot, store, spec, **kw):
    w = MainWindow(spec, store, **kw)
    qtbot.addWidget(w)
    w.show()
    return w


def health(w):
    w._update_status()
    return w.status.labels["health"].text(), w.status.severity


def test_a_recording_that_fails_turns_rec_off_and_says_so_in_red(qtbot, store, tmp_path, monkeypatch):
    """The disk fills up after a few blocks (the H5 writer raises ENOSPC): REC goes out, the
    button with it, and the status bar says in red that the recording failed."""
    from mmode.ingest import h5format

    appended = []
    real_append = h5format.H5Writer.append

    def append(self, lines, timestamps_s):
        if len(appended) >= 3:
            raise OSError(28, "No space left on device")
        appended.append(len(lines))
        real_append(self, lines, timestamps_s)

    monkeypatch.setattr(h5format.H5Writer, "append", append)
    w = open_window(qtbot, store, SourceSpec("sim", "lung_sliding", prf_hz=500.0))
    qtbot.waitUntil(lambda: w.ring is not None and w.ring.n_written > 20, timeout=WAIT_MS)
    w.start_recording(tmp_path / "full.h5")
    assert "REC" in w.status.labels["source"].text() and w.panel.record.isChecked()
    qtbot.waitUntil(lambda: health(w)[1] == "alert", timeout=WAIT_MS)
    text, _ = health(w)
    assert text.startswith("Recording failed:") and "No space left on device" in text
    assert "REC" not in w.status.labels["source"].text()
    assert not w.panel.record.isChecked() and w.recording_path is None
    assert w.engine is not None and w.engine.state == "running"  # the display goes on
    w.close()


def test_a_stream_whose_server_goes_away_shows_reconnecting_then_lost(qtbot, store, recording):
    from mmode.ingest.sources import FileSource
    from mmode.ingest.stream import StreamServer

    server = StreamServer(FileSource(str(recording), loop=True), port=0)
    server.start()
    host, port = server.address
    w = open_window(qtbot, store, SourceSpec("stream", f"{host}:{port}"))
    try:
        qtbot.waitUntil(lambda: w.ring is not None and w.ring.n_written > 20, timeout=WAIT_MS)
        assert health(w) == ("", "ok")
        server.stop()
        qtbot.waitUntil(lambda: health(w)[1] == "warn", timeout=WAIT_MS)
        assert health(w)[0].startswith("Reconnecting:")
        qtbot.waitUntil(lambda: health(w)[1] == "alert", timeout=int(LOST_AFTER_S * 1000) + WAIT_MS)
        assert health(w)[0].startswith("Stream lost for")
    finally:
        server.stop()
        w.close()


class SlowSource:
    """A source whose open() blocks until the test lets it go (a stream that does not answer)."""

    def __init__(self, inner):
        self.inner = inner
        self.release = threading.Event()
        self.opening = threading.Event()

    def open(self):
        self.opening.set()
        self.release.wait(30)
        return self.inner.open()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_gui_thread_keeps_running_while_a_source_opens(qtbot, store, recording):
    from mmode.gui.engine_link import make_source

    slow: list[SlowSource] = []

    def factory(spec, settings, pipeline=None):
        engine = make_engine(spec, settings, pipeline=pipeline)
        engine.source = SlowSource(make_source(spec))
        slow.append(engine.source)
        return engine

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(5)
    w = open_window(qtbot, store, SourceSpec("file", str(recording), speed=4.0), engine_factory=factory)
    qtbot.waitUntil(lambda: bool(slow) and slow[0].opening.is_set(), timeout=WAIT_MS)
    # the worker is inside open(); the event loop goes on: timer events, the busy indicator
    n0 = len(ticks)
    qtbot.waitUntil(lambda: len(ticks) >= n0 + 20, timeout=WAIT_MS)
    assert w.jobs.busy.startswith("opening File:") and not w.status.busy.isHidden()
    w._update_status()
    assert "[opening]" in w.status.labels["source"].text()
    slow[0].release.set()
    qtbot.waitUntil(lambda: w.ring is not None and w.ring.n_written > 20, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: w.status.busy.isHidden(), timeout=WAIT_MS)
    timer.stop()
    w.close()


@pytest.mark.parametrize("choice", MODEL_CHOICES)
def test_every_model_option_offered_works(qtbot, store, recording, choice):
    """Each entry of the Model box loads (off the GUI thread) and classifies, or (classic)
    runs without a classifier."""
    assert [w for w in MODEL_CHOICES if w != "classic" and classifier_name(w) is None] == []
    store.setValue("model", choice)
    w = open_window(qtbot, store, SourceSpec("file", str(recording), speed=8.0))
    assert w.panel.model.currentText() == choice
    if choice == "classic":
        qtbot.waitUntil(lambda: w.ring is not None and w.ring.n_written > 200, timeout=WAIT_MS)
        assert w.engine.pipeline.classifier is None and w.reader.label == -1
    else:
        qtbot.waitUntil(lambda: w.reader.label >= 0, timeout=WAIT_MS)  # a classifier window arrived
        assert w.engine.pipeline.classifier is not None
        assert w.engine.pipeline.settings.model == classifier_name(choice)
    w.close()
