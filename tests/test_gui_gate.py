"""The window's tracking gate (Shift+click, Shift+drag, G) and how the motion trace shows
its quality and missing motion, driven by the fake engine of test_gui.py."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtGui import QImage

from mmode.dsp.tracker import MotionBlock
from mmode.gui.engine_link import SourceSpec

from test_gui import (  # noqa: F401  (fixtures)
    BREATH_HZ,
    TRACK_DEPTH_M,
    FakeEngine,
    _click,
    _view_pos,
    open_source,
    run_ticks,
    store,
    window,
)


# -- the tracking gate ------------------------------------------------------------------------
def _gate_pixels(window):
    """Rows of the M-mode view (viewport pixels) where at least 30 pixels have the gate's orange."""
    from mmode.gui.mmode_view import GATE_PEN

    img = window.mview.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    scale = img.width() / window.mview.width()
    a = np.frombuffer(img.constBits().asstring(img.sizeInBytes()), np.uint8)
    a = a.reshape(img.height(), img.bytesPerLine())[:, :3 * img.width()].reshape(img.height(), img.width(), 3)
    orange = (np.abs(a.astype(int) - GATE_PEN).sum(axis=2) < 40).sum(axis=1)
    return np.flatnonzero(orange >= 30) / scale


def test_shift_click_sets_the_tracking_gate_and_g_returns_to_automatic(window, qtbot):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 40)
    assert window.engine.settings.track_depth_m is None and not window.mview.gate_line.isVisible()
    assert _gate_pixels(window).size == 0
    _click(qtbot, window, 1.0, 2.5, Qt.KeyboardModifier.ShiftModifier)
    # one screen pixel is the click resolution: about 0.07 mm of depth here
    assert window.engine.settings.track_depth_m == pytest.approx(0.025, abs=2e-4)
    assert window.calipers.points == [] and window.measurements == []  # not a caliper point
    # the marker: a dashed orange line across the image at that depth
    run_ticks(window, 1)
    window.mview.repaint()
    rows = _gate_pixels(window)
    assert rows.size and abs(rows.mean() - _view_pos(window, 1.0, 2.5).y()) <= 1.5
    assert window.panel.gate_label.text() == "25.0 mm"
    # the trace now follows the gate (the fake tracker tracks where it is told)
    run_ticks(window, 2)
    _x, y = window.mview.motion_curve.getData()
    assert y[-1] == pytest.approx(window.engine.settings.track_depth_m * 100 + 0.2 * np.sin(
        2 * np.pi * BREATH_HZ * _x[-1]), abs=1e-3)
    window._update_status()
    assert window.motion_label.text() == "Motion: gate 25.0 mm, tracking 25.0 mm"
    # a plain click is a caliper point and leaves the gate alone
    _click(qtbot, window, 1.2, 3.0)
    assert len(window.calipers.points) == 1 and window.engine.settings.track_depth_m == pytest.approx(0.025, abs=2e-4)
    n_updates = len(window.engine.updates)
    qtbot.keyClick(window, Qt.Key.Key_G)
    assert window.engine.settings.track_depth_m is None and len(window.engine.updates) == n_updates + 1
    assert not window.mview.gate_line.isVisible() and window.panel.gate_label.text().startswith("auto")
    qtbot.keyClick(window, Qt.Key.Key_G)  # already automatic: the tracker is not restarted
    assert len(window.engine.updates) == n_updates + 1


def _mouse(window, kind, t_s, depth_cm, buttons):
    from PyQt6.QtGui import QMouseEvent
    from PyQt6.QtWidgets import QApplication

    pos = QPointF(_view_pos(window, t_s, depth_cm))
    viewport = window.mview.viewport()
    event = QMouseEvent(kind, pos, QPointF(viewport.mapToGlobal(pos)), Qt.MouseButton.LeftButton, buttons,
                        Qt.KeyboardModifier.ShiftModifier)
    QApplication.sendEvent(viewport, event)


def test_shift_drag_moves_the_gate_and_sets_it_on_release(window, qtbot):
    from PyQt6.QtCore import QEvent

    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 40)
    window.set_frozen(True)
    run_ticks(window, 1)
    held = Qt.MouseButton.LeftButton
    _mouse(window, QEvent.Type.MouseButtonPress, 1.0, 2.0, held)
    for depth_cm in (2.2, 2.6, 3.0):
        qtbot.wait(30)  # pyqtgraph drops mouse moves that come faster than its rate limit
        _mouse(window, QEvent.Type.MouseMove, 1.0, depth_cm, held)
    # the marker follows the drag; the tracker is told once, on release
    assert window.mview.gate_line.value() == pytest.approx(3.0, abs=0.02)
    assert window.engine.settings.track_depth_m is None
    _mouse(window, QEvent.Type.MouseButtonRelease, 1.0, 3.0, Qt.MouseButton.NoButton)
    assert window.engine.settings.track_depth_m == pytest.approx(0.030, abs=2e-4)
    assert window.calipers.points == []


def test_report_and_csv_record_the_gate_and_motion_state(window, qtbot, tmp_path):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 20)
    _click(qtbot, window, 0.2, 3.5, Qt.KeyboardModifier.ShiftModifier)
    run_ticks(window, 2)
    gate_m = window.engine.settings.track_depth_m
    window.export_report(tmp_path / "r.json")
    motion = json.loads((tmp_path / "r.json").read_text())["motion"]
    assert motion == {"track_gate_m": gate_m, "status": "tracking", "representation": "raw", "note": None,
                      "tracked_depth_m": gate_m}
    assert gate_m == pytest.approx(0.035, abs=2e-4)
    window.export_csv(tmp_path / "m.csv")
    rows = {r["kind"]: r for r in csv.DictReader(open(tmp_path / "m.csv"))}
    assert float(rows["track_gate"]["value"]) == pytest.approx(gate_m) and rows["track_gate"]["unit"] == "m"
    window.set_gate(None)
    window.export_report(tmp_path / "r2.json")
    assert json.loads((tmp_path / "r2.json").read_text())["motion"]["track_gate_m"] == "automatic"


# -- the motion trace: quality and missing motion ----------------------------------------------
def test_trace_is_dimmed_where_quality_is_low(window):
    from mmode.gui.mmode_view import MOTION_DIM_PEN, MOTION_PEN

    class Uncertain(FakeEngine):
        def quality(self, t):  # uncertain from 0.5 to 1.0 s
            return np.where((t >= 0.5) & (t < 1.0), 0.3, 0.95)

    window.engine_factory = Uncertain
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 30)  # 1.5 s
    x, sure = window.mview.motion_curve.getData()
    _x, unsure = window.mview.motion_dim_curve.getData()
    low = (x >= 0.5) & (x < 1.0)
    assert np.isnan(sure[low]).all() and np.isfinite(sure[~low]).all()
    # the faint curve holds the uncertain stretch and joins the certain one at both ends
    assert np.isfinite(unsure[low]).all() and np.isnan(unsure[(x < 0.45) | (x > 1.05)]).all()
    edges = np.flatnonzero(np.diff(low.astype(int)))
    assert np.isfinite(unsure[edges]).all() and np.isfinite(unsure[edges + 1]).all()
    expect = (TRACK_DEPTH_M + 0.002 * np.sin(2 * np.pi * BREATH_HZ * x)) * 100
    np.testing.assert_allclose(np.where(low, unsure, sure), expect, atol=1e-4)
    assert window.mview.motion_dim_curve.isVisible()
    dim_alpha = window.mview.motion_dim_curve.opts["pen"].color().alpha()
    assert dim_alpha < window.mview.motion_curve.opts["pen"].color().alpha() / 2 and len(MOTION_PEN) == 3
    assert dim_alpha == MOTION_DIM_PEN[3]


def test_no_motion_shows_the_note_and_no_trace(window):
    note = "no moving echo: the best candidate (12.0 mm) moved 1.0 um RMS over 1 s"

    class Still(FakeEngine):
        status = "choosing"

        def poll_results(self):
            out = FakeEngine.poll_results(self)
            for r in out:
                r.motion = MotionBlock(np.empty(0), np.empty(0), np.empty(0), np.empty(0), float("nan"))
                r.motion_state = {"status": self.status, "note": note if self.status == "no_motion" else None,
                                  "representation": "raw", "depth_m": float("nan"), "track_depth_m": None}
            return out

    window.engine_factory = Still
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 10)
    window._update_status()
    assert window.motion_label.text() == "Motion: auto, choosing the echo (about 1 s)"
    window.engine.status = "no_motion"
    run_ticks(window, 10)
    window._update_status()
    assert window.motion_label.text() == f"No trace: {note}" and window.motion_label.toolTip() == note
    assert not window.mview.motion_curve.isVisible() and not window.mview.motion_dim_curve.isVisible()
    assert window.panel.show_motion.isChecked()
    # an engine stopped while its tracker still chose (a file paused or ended) says so
    window.engine.status = "choosing"
    run_ticks(window, 1)
    window.stop_engine(wait=True)
    window._update_status()
    assert window.motion_label.text() == "Motion: auto, stopped before an echo was chosen"
