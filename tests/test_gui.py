"""The desktop window, offscreen, driven by a fake engine with a known image.

The fake engine plays a synthetic M-mode of known geometry: a bright reflector at 2.0 cm
depth before t = 1 s and at 3.0 cm after, a class that changes from 0 to 1 at t = 1 s and a
motion trace at a known depth (or at the gate the window sets), with the tracker's quality
of each line, its state and the display level. Each poll returns one block, so the tests
are deterministic.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
from PyQt6.QtCore import QPointF, QRectF, QSettings, Qt
from PyQt6.QtGui import QImage

from mmode.app.pipeline import Results
from mmode.dsp.levels import LevelReference
from mmode.dsp.tracker import MotionBlock
from mmode.gui.engine_link import SourceSpec, make_source
from mmode.gui.main_window import MainWindow
from mmode.ingest.meta import CLASSES, AcquisitionMeta

PRF_HZ = 1000.0
N_ROWS = 100
ROW_DEPTHS_M = np.linspace(0.0, 0.05, N_ROWS)  # 0..5 cm, 0.505 mm per row
BLOCK = 50
TRACK_DEPTH_M = 0.04
BREATH_HZ = 0.25  # 15 breaths per minute
START_LEVEL = LevelReference("data", 80.0,
                             "99th percentile of the first 1.00 s + 6 dB; float samples have no full scale")
AUTO_LEVEL = LevelReference("data", 70.0, "99th percentile of the lines on screen + 6 dB (Auto)")


@dataclass
class FakeClassification:
    t_s: np.ndarray
    probs: np.ndarray
    classes: tuple


def reflector_depth_m(t_s):
    return np.where(np.asarray(t_s) < 1.0, 0.02, 0.03)


class FakeEngine:
    """Engine interface (start/stop/poll_results/stats/update_settings/relevel/recording) on a
    known image. The trace follows the gate of the settings (``track_depth_m``) when one is
    set, else TRACK_DEPTH_M; :meth:`quality` gives the tracker's quality of each line."""

    instances: list = []

    def __init__(self, spec, settings):
        self.spec, self.settings = spec, settings
        self.source = make_source(spec) if spec.kind == "file" else None  # pause and speed of a file
        self.meta = AcquisitionMeta("envelope", 20e6, 0.0, PRF_HZ)
        self.seq = spec.start_line
        self.running = False
        self.updates = []
        self.relevels = []
        self.recording = None
        ref = settings.processor.reference_db
        self.level = START_LEVEL if ref is None else LevelReference("manual", ref, "set by the user")
        FakeEngine.instances.append(self)

    def quality(self, t):
        return np.ones_like(t)

    def start(self):
        self.running = True
        return self

    def stop(self):
        self.running = False

    def poll_results(self):
        if not self.running or (self.source is not None and self.source.paused):
            return []
        s0 = self.seq
        self.seq += BLOCK
        t = np.arange(s0, self.seq) / PRF_HZ
        db = np.full((BLOCK, N_ROWS), -45.0, np.float32)
        rows = np.abs(ROW_DEPTHS_M[None, :] - reflector_depth_m(t)[:, None]) < 0.0003
        db[rows] = 0.0
        probs = np.zeros((1, len(CLASSES)))
        probs[0, 0 if t[-1] < 1.0 else 1] = 0.9
        probs[0, 6] = 0.1
        disp = 0.002 * np.sin(2 * np.pi * BREATH_HZ * t)
        gate = self.settings.track_depth_m
        depth = TRACK_DEPTH_M if gate is None else gate
        return [Results(
            s0, self.seq, t, db, ROW_DEPTHS_M, {},
            motion=MotionBlock(t, disp, np.gradient(disp) * PRF_HZ, self.quality(t), depth),
            classification=FakeClassification(np.array([t[-1]]), probs, CLASSES),
            level=self.level,
            motion_state={"status": "tracking", "note": None, "representation": "raw", "depth_m": depth,
                          "track_depth_m": gate},
        )]

    def stats(self):
        return {"state": "running", "line_rate_hz": PRF_HZ, "lines_dropped": 3,
                "latency_ms": {"p50": 12.0, "p99": 30.0}, "inference_ms": {"p50": 1.5, "p99": 2.0}}

    def update_settings(self, settings):
        self.updates.append(settings)
        self.settings = settings

    def relevel(self, t_from_s, t_to_s):
        self.relevels.append((t_from_s, t_to_s))
        self.level = AUTO_LEVEL

    def start_recording(self, path):
        self.recording = path

    def stop_recording(self):
        self.recording = None


@pytest.fixture
def store(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, store):
    FakeEngine.instances.clear()
    w = MainWindow(None, store, engine_factory=FakeEngine)
    qtbot.addWidget(w)
    w.resize(1400, 850)
    w.show()
    qtbot.waitExposed(w)
    w.timer.stop()  # the tests tick by hand
    w.sweep.smooth = False  # ticks come faster than the wall clock: draw up to the newest line
    return w


def run_ticks(w, n):
    for _ in range(n):
        w._tick()


def wait_jobs(w):
    """Let the window's worker jobs (opening, restarting a source) finish and report back."""
    from PyQt6.QtTest import QTest

    for _ in range(3000):
        if not w.jobs.busy:
            return
        QTest.qWait(10)
    raise AssertionError(f"still busy: {w.jobs.busy}")


def open_source(w, spec):
    w.open_source(spec)
    wait_jobs(w)


def test_window_opens_on_each_source_kind(window, tmp_path):
    for spec in (SourceSpec("sim", "lung_sliding"), SourceSpec("stream", "127.0.0.1:7700")):
        open_source(window, spec)
        assert window.engine.spec == spec and window.engine.running
        run_ticks(window, 5)
        assert window.ring.decimation == 2  # 1 kHz shown at 500 columns/s
        assert window.ring.n_written == 5 * BLOCK // 2
        assert window.windowTitle().endswith(spec.value)
    # the first engine was stopped when the second source opened
    assert not FakeEngine.instances[0].running
    # status bar shows the engine's counters and the drawing rate
    window._update_status()
    text = " ".join(lbl.text() for lbl in window.status.labels.values())
    assert "1000 lines/s" in text and "dropped 3 lines" in text and "12/30 ms" in text and "fps" in text
    # the real sources behind each kind
    from mmode.ingest import sources
    assert isinstance(make_source(SourceSpec("stream", "127.0.0.1:7700")), sources.TcpSource)
    assert isinstance(make_source(SourceSpec("stream", "igtl://127.0.0.1:18944")), sources.IgtlSource)
    assert isinstance(make_source(SourceSpec("sim", "no_contact")), sources.SimSource)


def test_overlays_update_as_results_arrive(window):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 10)  # t < 0.5 s: class 0
    assert "Lung sliding" in window.mview.header.text and "90 %" in window.mview.header.text
    assert "Rate -- /min" in window.mview.header.text  # not yet two breaths long
    # columns (2 lines, 2 ms each) before the first window's end at t = 0.049 s have no
    # class yet (-1), then class 0: the column at 0.049 s covers (0.047, 0.049]
    runs = window.mview.strip.runs.runs
    assert [label for _, _, label in runs] == [-1, 0]
    assert runs[0][1] == pytest.approx(0.047) and runs[1][0] == runs[0][1]
    run_ticks(window, 20)  # now t = 1.5 s: class 1
    assert "No sliding" in window.mview.header.text
    assert {label for _, _, label in window.mview.strip.runs.runs} == {-1, 0, 1}
    # motion trace at the tracked depth, in cm, matches the fake displacement
    x, y = window.mview.motion_curve.getData()
    np.testing.assert_allclose(y, (TRACK_DEPTH_M + 0.002 * np.sin(2 * np.pi * BREATH_HZ * x)) * 100, atol=1e-4)
    run_ticks(window, 200)  # 11.5 s: the rate of the tracked motion appears
    window._last_rate_s = 0.0
    run_ticks(window, 1)
    assert "Breathing 15 /min" in window.mview.header.text
    # toggles hide overlays
    window.panel.show_motion.setChecked(False)
    window.panel.show_classes.setChecked(False)
    run_ticks(window, 1)
    assert not window.mview.motion_curve.isVisible() and not window.mview.strip.isVisible()
    assert "Lung" not in window.mview.header.text and "No sliding" not in window.mview.header.text


def test_image_geometry_and_aline(window):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 10)
    rgbx = window.mview.image.drawn()  # (depth rows, time columns, RGBX) uint8
    assert rgbx.dtype == np.uint8 and rgbx.shape[0] == N_ROWS and rgbx.shape[2] == 4
    assert (rgbx[..., 1] == rgbx[..., 0]).all() and (rgbx[..., 2] == rgbx[..., 0]).all() and (rgbx[..., 3] == 255).all()
    img = rgbx[..., 0]  # grey level
    bright_row = int(np.argmax(img[:, -1]))
    assert abs(ROW_DEPTHS_M[bright_row] - 0.02) < 0.0006
    # the image spans the columns drawn, in seconds, and the depth rows, in cm
    rect = window.mview.image.boundingRect()
    assert rect.width() == pytest.approx(img.shape[1] * window.col_dt_s)
    step = (ROW_DEPTHS_M[-1] - ROW_DEPTHS_M[0]) / (N_ROWS - 1) * 100
    assert rect.top() == pytest.approx(ROW_DEPTHS_M[0] * 100 - step / 2)
    assert rect.bottom() == pytest.approx(ROW_DEPTHS_M[-1] * 100 + step / 2)
    # A-line: the level peaks at the reflector depth, 0 dB there, -45 dB elsewhere
    level, depth_cm = window.aline.curve.getData()
    assert depth_cm[np.argmax(level)] == pytest.approx(2.0, abs=0.06)
    assert level.max() == pytest.approx(0.0, abs=0.2) and np.median(level) == pytest.approx(-45.0, abs=0.3)


def test_freeze_step_and_class_jump(window, qtbot):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 40)  # 2 s of data
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.frozen and window.panel.freeze.isChecked()
    written = window.ring.n_written
    run_ticks(window, 5)  # live source keeps running, the cine does not move
    assert window.ring.n_written == written and window.engine.running
    end = window.cursor_col
    qtbot.keyClick(window, Qt.Key.Key_Left)
    run_ticks(window, 1)
    assert window.cursor_col < end
    # jump to the class change: the first window with class 1 ends at t = 1.049 s; each line
    # shows the newest window that ended at or before it
    window.cursor_col = window.ring.n_written - 1
    window.jump_class_change(-1)
    run_ticks(window, 1)
    assert window.mview.cursor.isVisible()
    assert window.mview.cursor.value() == pytest.approx(1.0 + (BLOCK - 1) / PRF_HZ, abs=window.col_dt_s + 1e-9)
    assert "No sliding" in window.mview.header.text  # the class at the cursor
    # drag the timeline slider to 0.5 s and release it: the cursor goes there
    slider = window.review.slider
    slider.setSliderDown(True)
    slider.setValue(500)
    slider.setSliderDown(False)
    run_ticks(window, 1)
    assert window.mview.cursor.value() == pytest.approx(0.5, abs=window.col_dt_s + 1e-9)
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert not window.frozen and window.ring.n_written == 0  # the sweep restarts


def _view_pos(window, t_s, depth_cm):
    """Viewport pixel of plot point (t_s, depth_cm)."""
    scene = window.mview.plot.vb.mapViewToScene(QPointF(t_s, depth_cm))
    return window.mview.mapFromScene(scene)


def _click(qtbot, window, t_s, depth_cm, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.mouseClick(window.mview.viewport(), Qt.MouseButton.LeftButton, modifier=modifier,
                     pos=_view_pos(window, t_s, depth_cm))


def test_calipers_on_known_geometry(window, qtbot):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 40)  # reflector jumps from 2 cm to 3 cm at t = 1 s
    window.set_frozen(True)
    run_ticks(window, 1)
    window.panel.caliper.setCurrentIndex(1)  # depth
    _click(qtbot, window, 0.5, 2.0)
    _click(qtbot, window, 1.5, 3.0)
    window.panel.caliper.setCurrentIndex(0)  # time
    _click(qtbot, window, 0.5, 2.0)
    _click(qtbot, window, 1.5, 3.0)
    window.panel.caliper.setCurrentIndex(window.panel.caliper.findData("tapse"))
    _click(qtbot, window, 0.5, 2.0)
    _click(qtbot, window, 1.5, 3.0)
    window.panel.caliper.setCurrentIndex(window.panel.caliper.findData("heart_rate"))
    window.panel.n_cycles.setValue(2)
    _click(qtbot, window, 0.5, 2.0)
    _click(qtbot, window, 1.5, 3.0)
    depth, time_, tapse, hr = window.measurements
    # one screen pixel is the click resolution: about 2 ms and 0.1 mm here
    assert depth.value == pytest.approx(10.0, abs=0.2) and depth.unit == "mm"
    assert time_.value == pytest.approx(1000.0, abs=5.0) and time_.unit == "ms"
    assert tapse.value == pytest.approx(10.0, abs=0.2) and tapse.in_range is False
    assert hr.value == pytest.approx(120.0, abs=1.0)  # 2 cycles in 1 s
    assert window.panel.table.rowCount() == 4
    assert window.panel.table.item(2, 2).text().startswith("out")
    assert window.panel.table.item(3, 1).text() == "120 bpm"
    # drag the second depth handle from 3.0 cm to 4.0 cm: the measurement and its row follow
    window.calipers.handles[0][1].setPos(1.5, 4.0)
    assert window.measurements[0].value == pytest.approx(20.0, abs=0.2)
    assert window.panel.table.item(0, 1).text() == window.measurements[0].value_text()
    # Delete drops an unfinished point first, then the last measurement
    _click(qtbot, window, 0.7, 2.0)
    qtbot.keyClick(window, Qt.Key.Key_Delete)
    assert window.calipers.points == [] and len(window.measurements) == 4
    qtbot.keyClick(window, Qt.Key.Key_Delete)
    assert [m.kind for m in window.measurements] == ["depth", "time", "tapse"]
    assert window.panel.table.rowCount() == 3


def test_exports_are_valid(window, tmp_path):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 40)
    window.set_frozen(True)
    window.calipers.set_kind("epss")
    window.calipers.add_point(0.5, 0.020)
    window.calipers.add_point(0.5, 0.025)
    png = window.export_png(tmp_path / "view.png")
    img = QImage(str(png))
    assert not img.isNull() and img.width() == window.view_area.width()
    # the image is not blank: both the dark background and the bright reflector are there
    greys = {img.pixelColor(x, y).lightness() for x in range(0, img.width(), 7)
             for y in range(0, img.height(), 7)}
    assert min(greys) < 30 and max(greys) > 200
    window.export_csv(tmp_path / "m.csv")
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert rows[0]["name"] == "EPSS" and float(rows[0]["value"]) == pytest.approx(5.0)
    # then what the motion tracking was: automatic gate, on the stored lines
    assert {r["kind"]: (r["value"], r["unit"]) for r in rows[1:]} == {
        "track_gate": ("automatic", ""), "motion_status": ("tracking", ""),
        "motion_representation": ("raw", ""), "motion_note": ("", "")}
    window.export_report(tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["measurements"][0]["value"] == pytest.approx(5.0)
    assert report["stats"]["line_rate_hz"] == PRF_HZ and report["view"]["sweep_mm_s"] == 50
    assert report["process"] is None and report["source"] == "Simulator: lung_sliding"
    assert report["motion"]["track_gate_m"] == "automatic" and report["motion"]["representation"] == "raw"
    assert report["level"] == {"mode": "data", "reference_db": 80.0, "detail": START_LEVEL.detail, "settled": True}
    # 2 s held: class 0 up to the first window ending after 1 s, class 1 after
    cine = report["cine"]
    assert cine["seconds"] == pytest.approx(2.0)
    assert cine["class_seconds"]["lung_sliding"] == pytest.approx(1.0, abs=0.06)
    assert cine["class_seconds"]["no_sliding"] == pytest.approx(0.95, abs=0.06)


def test_settings_persist_and_processing_reaches_engine(qtbot, store, tmp_path):
    w = MainWindow(SourceSpec("sim", "lung_sliding"), store, engine_factory=FakeEngine)
    qtbot.addWidget(w)
    w.panel.sweep.setCurrentIndex(3)
    w.panel.gain.setValue(12)  # while the source is still opening: the engine gets it when it is up
    wait_jobs(w)
    assert w.engine.updates and w.engine.updates[-1].processor.gain_db == 12.0
    w.panel.denoise.setCurrentText("wavelet")
    assert w.engine.updates[-1].processor.denoise == "wavelet"
    w.close()
    store.setValue("dynamic_range_db", "not a number")  # a corrupt entry falls back to its default
    w2 = MainWindow(None, store, engine_factory=FakeEngine)
    qtbot.addWidget(w2)
    assert w2.s.sweep_mm_s == 200 and w2.s.gain_db == 12.0 and w2.s.denoise_method == "wavelet"
    assert w2.s.dynamic_range_db == 50.0
    assert w2.panel.sweep.currentText() == "200 mm/s"
    w2.close()


def test_record_toggles_engine_recording(window, tmp_path):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    window.start_recording(tmp_path / "rec.h5")
    assert window.engine.recording == str(tmp_path / "rec.h5") and window.panel.record.isChecked()
    engine = window.engine
    window.stop_recording()
    assert engine.recording is None and not window.panel.record.isChecked()


def test_backlog_is_drawn_in_one_frame(window):
    """Under overload the engine hands over many blocks at once: one tick takes them all,
    draws once, and the view ends at the newest line."""

    class Burst(FakeEngine):
        def poll_results(self):
            return [r for _ in range(100) for r in FakeEngine.poll_results(self)]

    window.engine_factory = Burst
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 3)
    assert window.ring.n_written == 300 * BLOCK // 2
    x, _y = window.mview.motion_curve.getData()
    # the newest line is drawn, or one within a screen pixel of it (one column per pixel is drawn)
    newest_s = (300 * BLOCK - 1) / PRF_HZ
    assert 0 <= newest_s - x[-1] < window.window_s() / window.mview.plot_width_px() + window.col_dt_s
    assert window.frames.n_frames <= 3


def test_no_motion_trace_with_the_probe_in_air(window):
    """Class no_contact: the tracker follows noise in air, so no trace is drawn over the image,
    although the motion overlay is on; it comes back with tissue."""

    class InAir(FakeEngine):
        in_air = True

        def poll_results(self):
            out = FakeEngine.poll_results(self)
            for r in out:
                probs = np.zeros((1, len(CLASSES)))
                probs[0, CLASSES.index("no_contact" if self.in_air else "lung_sliding")] = 0.95
                r.classification = FakeClassification(r.classification.t_s, probs, CLASSES)
            return out

    window.engine_factory = InAir
    open_source(window, SourceSpec("sim", "no_contact"))
    run_ticks(window, 10)
    assert "No contact" in window.mview.header.text and window.panel.show_motion.isChecked()
    assert not window.mview.motion_curve.isVisible()
    window.engine.in_air = False
    run_ticks(window, 10)
    assert "Lung sliding" in window.mview.header.text and window.mview.motion_curve.isVisible()


def test_scrolling_keeps_the_drawn_columns(window):
    """With more columns than pixels, every step-th column is drawn, picked by its absolute
    index: scrolling by one column neither changes which columns are drawn nor where."""
    from mmode.gui.mmode_data import DisplayRing

    n_rows, n_cols, dt_s = 8, 4001, 0.002  # 4001 is prime: no step divides it
    ring = DisplayRing(n_rows, 2 * n_cols)
    rng = np.random.default_rng(0)
    n_held = n_cols + 64
    ring.push(rng.uniform(-45.0, 0.0, (n_held, n_rows)), np.arange(1, n_held + 1) * dt_s, 45.0)
    every_col = ring.window(n_held, n_held).image.copy()  # absolute column c at t = (c + 1) dt
    view = window.mview
    step = -(-n_cols // view.plot_width_px())
    assert 1 < step < 64
    converted = []
    for stop in (n_cols, n_cols + 1, n_cols + step):  # scrolled by one column, then by one step
        w = ring.window(stop, n_cols)
        view.render(w, dt_s, n_cols * dt_s, float(w.t_s[-1]))
        grey = view.image.drawn()[..., 0].T  # (drawn columns, rows)
        left_s = view.image.mapRectToParent(view.image.boundingRect()).left()
        k = round(left_s / dt_s)  # column k spans ((k) dt, (k + 1) dt]: its left edge is k dt
        assert left_s == pytest.approx(k * dt_s, abs=1e-9) and k % step == 0 and w.start <= k < w.start + step
        np.testing.assert_array_equal(grey, every_col[k:w.stop:step])
        converted.append(view.image.n_converted)
    # a column is converted to pixels once: scrolling by one step converts one more column
    # (by one column, none: the next multiple of step is beyond the window's end)
    assert converted[1] == converted[0] and converted[2] == converted[1] + 1


def test_scrolling_image_matches_the_ring_on_a_random_walk(qtbot):
    """Forward and backward scrolls, seeks, wider and narrower windows, step changes: the
    columns drawn (the buffer's source rectangle, and what Qt paints from it) are always
    every step-th ring column by absolute index."""
    from PyQt6.QtGui import QPainter

    from mmode.gui.mmode_data import DisplayRing
    from mmode.gui.scroll_image import ScrollingImage

    rng = np.random.default_rng(1)
    n_rows, n_held = 5, 2900
    ring = DisplayRing(n_rows, 3000)
    ring.push(rng.uniform(-45.0, 0.0, (n_held, n_rows)), np.arange(1, n_held + 1) * 0.002, 45.0)
    every_col = ring.window(n_held, n_held).image.copy()
    image = ScrollingImage()
    stop, n_cols, step = 500, 300, 3
    for i in range(800):
        r = rng.random()
        if r < 0.6:
            stop += int(rng.integers(0, 20))
        elif r < 0.8:
            stop -= int(rng.integers(0, 200))
        elif r < 0.9:
            n_cols = int(rng.integers(1, 1500))
        elif r < 0.95:
            step = int(rng.integers(1, 8))
        else:
            stop = int(rng.integers(1, n_held))
        stop = max(1, min(n_held, stop))
        w = ring.window(stop, n_cols)
        s = min(step, w.n_cols)
        first = (-w.start) % s
        expected = every_col[w.start + first:w.stop:s].T  # (rows, drawn columns)
        n_drawn = expected.shape[1]
        image.show_window(w, s, QRectF(0, 0, n_drawn, n_rows))
        np.testing.assert_array_equal(image.drawn()[..., 0], expected)
        if i % 50 == 0:  # what Qt paints from the buffer, one pixel per column and row
            out = QImage(n_drawn, n_rows, QImage.Format.Format_RGBX8888)
            painter = QPainter(out)
            image.paint(painter)
            painter.end()
            painted = np.frombuffer(out.constBits().asstring(out.sizeInBytes()), np.uint8)
            painted = painted.reshape(n_rows, out.bytesPerLine() // 4, 4)[:, :n_drawn, 0]
            np.testing.assert_array_equal(painted, expected)


def test_image_is_converted_again_after_the_ring_is_cleared(window):
    """Column indices restart after a clear (a seek, a new source): the pixels drawn must be
    the new columns, not the ones converted before under the same indices."""
    from mmode.gui.mmode_data import DisplayRing

    ring = DisplayRing(6, 100)
    t = np.arange(1, 41) * 0.002
    ring.push(np.full((40, 6), -45.0), t, 45.0)  # black
    view = window.mview
    w = ring.window(40, 40)
    view.render(w, 0.002, 0.08, float(w.t_s[-1]))
    assert (view.image.drawn()[..., :3] == 0).all()
    ring.clear()
    ring.push(np.zeros((40, 6)), t, 45.0)  # white, same column indices
    w = ring.window(40, 40)
    view.render(w, 0.002, 0.08, float(w.t_s[-1]))
    assert (view.image.drawn()[..., :3] == 255).all() and view.image.drawn().shape[:2] == (6, 40)


# -- display level: Auto and the gain range ---------------------------------------------------
def test_auto_relevels_on_the_lines_on_screen_and_resets_the_gain(window, qtbot):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 200)  # 10 s of lines, more than the ~5 s the plot shows at 50 mm/s
    window.panel.gain.setValue(12)
    assert window.engine.updates[-1].processor.gain_db == 12.0
    window._update_status()
    assert window.panel.level_label.text() == "0 dB: auto, 99th percentile of the first 1.00 s + 6 dB"
    qtbot.keyClick(window, Qt.Key.Key_A)
    (t_from, t_to), = window.engine.relevels
    # the span is what the plot shows: from its left edge (to within the column cut by the
    # edge) to the newest line
    x_lo, x_hi = window.mview.plot.vb.viewRange()[0]
    newest_s = (200 * BLOCK - 1) / PRF_HZ
    assert t_to == pytest.approx(newest_s) and t_to <= x_hi
    assert x_lo - 2 * window.col_dt_s <= t_from <= x_lo + window.col_dt_s
    assert t_to - t_from == pytest.approx(window.window_s(), abs=2 * window.col_dt_s)
    # the gain goes back to 0 dB, on the slider and in the engine's settings
    assert window.panel.gain.value() == 0 and window.engine.updates[-1].processor.gain_db == 0.0
    run_ticks(window, 1)
    window._update_status()
    assert window.panel.level_label.text() == "0 dB: auto, 99th percentile of the lines on screen + 6 dB (Auto)"
    # frozen and scrolled back: the button re-levels on the lines under the review cursor
    window.set_frozen(True)
    window.cursor_col = window.ring.column_at_time(3.0)
    qtbot.mouseClick(window.panel.auto_level, Qt.MouseButton.LeftButton)
    t_from, t_to = window.engine.relevels[-1]
    assert t_from < 3.0 < t_to and t_to < newest_s - 1.0


def test_file_pause_keeps_the_engine_and_a_restart_keeps_the_auto_level(window, qtbot, tmp_path):
    """A file paused holds its lines back in the same engine (its pipeline state stays);
    a restart at a line (a seek, a replay) is a new engine that would level the file from
    its first second: it gets the Auto level instead."""
    from mmode.ingest.h5format import write_recording

    path = tmp_path / "short.h5"
    write_recording(path, AcquisitionMeta("rf", 20e6, 5e6, PRF_HZ), np.zeros((3000, 16), np.int16))
    open_source(window, SourceSpec("file", str(path)))
    run_ticks(window, 20)
    engine = window.engine
    assert engine.settings.processor.reference_db is None
    window.auto_level()
    run_ticks(window, 2)
    window.set_frozen(True)  # pause: the same engine, its playback held
    assert window.engine is engine and engine.source.paused
    n = window.ring.n_written
    run_ticks(window, 5)
    assert window.ring.n_written == n  # nothing plays while paused
    window.set_frozen(False)
    assert window.engine is engine and not engine.source.paused and len(FakeEngine.instances) == 1
    run_ticks(window, 2)
    assert window.ring.n_written > n
    from mmode.gui.controls import PLAYBACK_SPEEDS

    window.review.speed.setCurrentIndex(PLAYBACK_SPEEDS.index(2.0))  # a new speed, the same engine
    assert window.engine is engine and engine.source.speed == 2.0 and window.spec.speed == 2.0
    window.restart_file(100, clear=True)
    wait_jobs(window)
    assert window.engine is not engine and len(FakeEngine.instances) == 2
    assert window.engine.settings.processor.reference_db == AUTO_LEVEL.reference_db
    run_ticks(window, 2)
    window._update_status()
    assert window.panel.level_label.text() == "0 dB: kept from Auto"
    # a gain change keeps it (the engine is not told to level automatically again)
    window.panel.gain.setValue(5)
    assert window.engine.updates[-1].processor.reference_db == AUTO_LEVEL.reference_db


def test_a_restart_never_paints_the_old_class_on_new_lines(window, tmp_path):
    """A seek is a new timeline: the lines before its first classifier window have no class,
    not the class of the lines played before it."""
    from mmode.ingest.h5format import write_recording

    path = tmp_path / "long.h5"
    write_recording(path, AcquisitionMeta("rf", 20e6, 5e6, PRF_HZ), np.zeros((4000, 16), np.int16))
    open_source(window, SourceSpec("file", str(path)))
    run_ticks(window, 30)  # to t = 1.5 s: class 1
    assert window.reader.label == 1
    window.restart_file(3000, clear=True)
    wait_jobs(window)
    run_ticks(window, 1)  # one block, t = 3.000..3.049 s; its window ends at its last line
    held = window.ring.window(window.ring.n_written, window.ring.capacity)
    assert held.t_s[0] >= 3.0 and set(held.label[:-1].tolist()) == {-1} and held.label[-1] == 1


def test_gain_slider_spans_plus_minus_40_db(window, store):
    from mmode.gui import settings

    gain = window.panel.gain
    assert gain.minimum() <= -40 and gain.maximum() >= 40
    open_source(window, SourceSpec("sim", "lung_sliding"))
    for value in (-40, 40):
        gain.setValue(value)
        assert window.engine.updates[-1].processor.gain_db == float(value)
    window.close()  # saved: +40 dB loads back, beyond the range the default does
    assert settings.load(store).gain_db == 40.0
    store.setValue("gain_db", "45")
    assert settings.load(store).gain_db == 0.0
    full = LevelReference("full_scale", 90.3, "integer full scale")
    from mmode.gui.engine_link import level_text
    assert level_text(full)[0] == "0 dB: full scale"
