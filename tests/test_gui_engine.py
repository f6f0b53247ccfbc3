"""The window on the real engine: a recorded file (play, pause, seek, JSON report with the
``mmode process`` analysis) and the simulated probe. Offscreen, bounded in time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt6.QtCore import QSettings

from mmode.gui.engine_link import SourceSpec
from mmode.gui.main_window import MainWindow
from mmode.ingest.h5format import write_recording
from mmode.ingest.simulator import simulate

WAIT_MS = 60_000  # first run compiles the numba kernels


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    sim = simulate("cardiac_regular", seconds=3.0, prf_hz=500.0, seed=1)
    path = tmp_path_factory.mktemp("rec") / "cardiac.h5"
    write_recording(path, sim.meta, sim.lines, truth=sim.truth)
    return path, sim


@pytest.fixture
def store(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def test_file_plays_pauses_seeks_and_reports(qtbot, store, recording, tmp_path):
    path, sim = recording
    w = MainWindow(SourceSpec("file", str(path), speed=4.0), store)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.ring is not None and w.ring.n_written > 100, timeout=WAIT_MS)
    assert w.row_depths_m[-1] == pytest.approx(sim.meta.depth_m(sim.lines.shape[1] - 1), rel=0.05)
    # the file plays to its end, then the window pauses with the whole file in the cine
    qtbot.waitUntil(lambda: w.frozen, timeout=WAIT_MS)
    assert w.engine.state == "ended"
    held = w.ring.window(w.ring.n_written, w.ring.capacity)
    assert held.t_s[-1] == pytest.approx(sim.lines.shape[0] / 500.0, abs=0.02)
    assert w.review.slider.maximum() == pytest.approx(1e3 * (sim.lines.shape[0] - 1) / 500.0, abs=2)
    # seek inside the cine: the view moves, nothing restarts
    w.seek(1.0)
    assert w.engine.state == "ended" and w.frozen
    w._tick()
    assert w.mview.cursor.value() == pytest.approx(1.0, abs=0.01)
    # play again from the start after the end: a new engine (built off the GUI thread) on
    # the old one's pipeline
    ended = w.engine
    w.set_frozen(False)
    qtbot.waitUntil(lambda: w.engine is not None, timeout=WAIT_MS)
    assert w.spec.start_line == 0 and w.engine is not ended and w.engine.pipeline is ended.pipeline
    w.set_frozen(True)
    # JSON report with the process analysis of the whole file
    w.calipers.set_kind("time")
    w.calipers.add_point(0.5, 0.03)
    w.calipers.add_point(1.3, 0.03)
    w.export_report(tmp_path / "report.json")
    qtbot.waitUntil(lambda: not w.report_pending, timeout=WAIT_MS)
    w._tick()
    qtbot.waitUntil(lambda: (tmp_path / "report.json").exists(), timeout=5000)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["process"]["n_lines"] == sim.lines.shape[0]
    assert report["meta"]["prf_hz"] == 500.0
    assert report["measurements"][0]["value"] == pytest.approx(800.0)
    w.close()


def test_simulator_runs_live_and_records(qtbot, store, tmp_path):
    w = MainWindow(SourceSpec("sim", "lung_sliding", prf_hz=500.0), store)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.ring is not None and w.ring.n_written > 50, timeout=WAIT_MS)
    img = w.mview.image.drawn()[..., 0]  # grey level of the RGBX pixels
    assert img.dtype == np.uint8 and img.std() > 5  # a real picture, not a flat field
    w._update_status()
    assert "lines/s" in w.status.labels["line_rate"].text()
    # Auto and a gate reach the real pipeline: the level comes back set from the lines on
    # screen, the motion state with the gate
    w.auto_level()
    w.set_gate(0.02)
    qtbot.waitUntil(lambda: w.reader.level is not None and "(Auto)" in w.reader.level.detail
                    and w.reader.motion_state.get("track_depth_m") == 0.02, timeout=WAIT_MS)
    rec_path = tmp_path / "rec.h5"
    w.start_recording(rec_path)
    assert w.panel.record.isChecked()
    qtbot.wait(600)
    w.stop_recording()
    w.close()
    assert w.engine is None
    from mmode.ingest.files import open_recording

    rec = open_recording(str(rec_path))
    try:
        assert rec.meta.prf_hz == 500.0 and rec.n_lines >= 100  # about 0.6 s of lines
    finally:
        rec.close()


def test_stream_source_live(qtbot, store, recording):
    from mmode.ingest.sources import FileSource
    from mmode.ingest.stream import StreamServer

    path, _sim = recording
    with StreamServer(FileSource(str(path), loop=True), port=0) as server:
        host, port = server.address
        w = MainWindow(SourceSpec("stream", f"{host}:{port}"), store)
        qtbot.addWidget(w)
        w.show()
        qtbot.waitUntil(lambda: w.ring is not None and w.ring.n_written > 50, timeout=WAIT_MS)
        assert w.last_error == "" and w.mview.image.drawn()[..., 0].std() > 5
        w.close()


def test_unreachable_stream_shows_an_error(qtbot, store):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = MainWindow(SourceSpec("stream", f"127.0.0.1:{port}"), store)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=WAIT_MS)
    assert w.engine is None and w.last_error
    assert w.status.labels["error"].text() == w.last_error
    w.close()
