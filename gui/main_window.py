"""The main window: M-mode view, A-line, controls, review bar, status bar; it composes the
controllers of each concern.

- :mod:`~mmode.gui.source_control`: opening a source, restarting a file at a line, pause and
  speed, all slow work off the GUI thread (:mod:`~mmode.gui.jobs`, a busy indicator meanwhile);
- :mod:`~mmode.gui.review_control`: freeze / pause, step, jump to a class change, seek;
- :mod:`~mmode.gui.recording_control`: recording, and a recording that fails on its own;
- :mod:`~mmode.gui.export_control`: PNG, CSV and the JSON report;
- :mod:`~mmode.gui.measure_control`: the list of caliper measurements.

Threads: the engine processes in its own threads; this window only polls
``engine.poll_results()`` (non-blocking) from a ~60 Hz draw timer on the GUI thread, pushes
the new lines into the :class:`~mmode.gui.mmode_data.DisplayRing` and redraws. No Qt item is
touched off the GUI thread. Each timer tick is timed (:class:`~mmode.gui.status.FrameStats`).
The status bar says at once what needs the user (:func:`mmode.gui.status.health`).

Display level: *Auto* (button by the gain, key A) asks the engine to set 0 dB again from the
lines on screen and puts the gain back to 0 dB. A file restarted on a new engine after an
*Auto* (a seek, a replay, a new M-line) keeps that level: it gets it as ``reference_db``.

Tracking gate: Shift+click or Shift+drag on the image sets the depth the motion tracker
follows (``track_depth_m`` of the pipeline settings; the tracker restarts there); G returns
to the automatic choice. Plain clicks stay with the calipers.

Cine files (a DICOM multi-frame with a 2D region, a video): the frames are decoded once (in
the worker that opens the file) and a B-mode pane shows beside the M-mode
(:class:`~mmode.gui.cine_view.BModeView`): the frame of the M-mode's current line with the
M-line on it. Releasing a dragged M-line recomputes the M-mode from the frames in memory
(:mod:`mmode.gui.cine`) and plays it again from the start; the calipers and the gate of the
old line are cleared. Calipers measure in the units of the image's calibration
(:func:`mmode.gui.calibration.caliper_scale`): pixels, with a note, where the depth is not
calibrated.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from PyQt6.QtCore import QSettings, Qt, QTimer
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from mmode.errors import MmodeError
from mmode.gui import settings
from mmode.gui.aline_view import ALineView
from mmode.gui.calipers import CaliperTool
from mmode.gui.cine_view import BModeView
from mmode.gui.cine_control import CineController
from mmode.gui.controls import PLAYBACK_SPEEDS, ControlPanel, ReviewBar
from mmode.gui.engine_link import (
    ResultsReader,
    SourceSpec,
    make_engine,
    pipeline_settings,
)
from mmode.gui.export_control import ExportController
from mmode.gui.jobs import Jobs
from mmode.gui.measure_control import MeasurementController
from mmode.gui.measurements import RF_SCALE, CaliperScale
from mmode.gui.drawing import COLUMN_RATE_HZ, Drawing
from mmode.gui.mmode_data import DisplayRing, OverlayRate, SweepClock
from mmode.gui.mmode_view import MModeView, set_depth_axis
from mmode.gui.recording_control import RecordingController
from mmode.gui.review_control import ReviewController
from mmode.gui.settings_control import SettingsController
from mmode.gui.status_control import StatusController
from mmode.gui.source_control import Opened, SourceController
from mmode.gui.status import FrameStats, StatusBar
from mmode.ingest.meta import CLASSES

FRAME_INTERVAL_MS = 16
STATUS_INTERVAL_S = 0.25


class MainWindow(QMainWindow):
    """The mmode desktop window.

    spec : source opened at start (None: none).  store : where settings persist.
    engine_factory : ``(SourceSpec, PipelineSettings[, pipeline=]) -> engine`` (tests pass a
    fake one); it runs in a worker thread.
    """

    def __init__(self, spec: SourceSpec | None, store: QSettings,
                 engine_factory: Callable = make_engine, scenarios: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.setWindowTitle("mmode")
        self.store = store
        self.s = settings.load(store)
        self.ring: DisplayRing | None = None
        self.col_dt_s = 1.0 / COLUMN_RATE_HZ
        self.line_dt_s = self.col_dt_s  # time between processed lines, s (known with the first results)
        self.shown_span_s: tuple[float, float] | None = None  # first and last line time on screen
        self.gate_depth_m: float | None = None  # the tracking gate the user placed (None: automatic)
        self._auto_level_used = False  # Auto pressed on this source: a file restart keeps its level
        self._engine_reference_db: float | None = None  # display level the current engine was given
        self.row_depths_m: np.ndarray | None = None
        self.reader = ResultsReader()
        self.sweep = SweepClock()  # right edge of the live sweep, data time
        self.frames = FrameStats()
        self.last_error = ""
        self.file_times_s: np.ndarray | None = None
        self.file_meta: dict | None = None
        self.cine_frames = None  # a cine file's frames in memory (ArrayFrames), else None
        self.scale: CaliperScale = RF_SCALE  # the calibration of the image on screen
        self._last_seq = 0
        self._dirty = False
        self._last_status_s = 0.0
        self._last_rate_s = 0.0
        self._last_slow_s = 0.0
        self.rate: OverlayRate | None = None

        self.mview = MModeView()
        self.bview = BModeView()
        self.bview.setVisible(False)
        self.aline = ALineView()
        self.aline.plot.setYLink(self.mview.plot)
        self.panel = ControlPanel(self.s, scenarios or tuple(CLASSES))
        self.review = ReviewBar()
        self.status = StatusBar()
        self.setStatusBar(self.status)
        # the tracker's state; a long note (why there is no trace) is cut, whole in the tooltip
        self.motion_label = QLabel("")
        self.motion_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status.addWidget(self.motion_label, 4)
        self.mview.on_paint = self.frames.painted
        self.bview.view.on_paint = self.frames.painted
        self.aline.on_paint = self.frames.painted

        self.jobs = Jobs(self)
        self.jobs.changed.connect(self._update_busy)
        self.source = SourceController(self, self.jobs, engine_factory)
        self.reviewing = ReviewController(self)
        self.recording = RecordingController(self.panel.record)
        self.exports = ExportController(self)
        self.drawing = Drawing(self)
        self.statusing = StatusController(self)
        self.cining = CineController(self)
        self.settings_control = SettingsController(self)
        self.measuring = MeasurementController(self.panel, lambda text: self.statusBar().showMessage(text, 5000))
        self.calipers = CaliperTool(self.mview.plot, self.measuring.add, self.measuring.changed, self.show_error)
        self.measuring.calipers = self.calipers
        self.calipers.set_kind(self.s.caliper_kind, self.s.n_cycles)

        images = QWidget()
        row = QHBoxLayout(images)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bview, stretch=1)
        row.addWidget(self.mview, stretch=1)
        row.addWidget(self.aline)
        self.view_area = images
        left = QWidget()
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(images, stretch=1)
        col.addWidget(self.review)
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(self.panel.minimumWidth() + 20)
        scroll.setMaximumWidth(self.panel.maximumWidth() + 20)
        central = QWidget()
        main = QHBoxLayout(central)
        main.setContentsMargins(2, 2, 2, 2)
        main.addWidget(left, stretch=1)
        main.addWidget(scroll)
        self.setCentralWidget(central)
        self.settings_control.apply_view()
        self.settings_control.update_class_note()

        p = self.panel
        p.source_requested.connect(self._source_requested)
        p.processing_changed.connect(self.settings_control.apply_processing)
        p.view_changed.connect(self.settings_control.apply_view)
        p.caliper_changed.connect(self.settings_control.apply_caliper)
        p.freeze_toggled.connect(self.set_frozen)
        p.record_toggled.connect(self._record_toggled)
        p.export_requested.connect(self._export_requested)
        p.clear_measurements.connect(self.clear_measurements)
        p.auto_level_requested.connect(self.auto_level)
        p.auto_gate_requested.connect(lambda: self.set_gate(None))
        self.mview.gate_requested.connect(self.settings_control.gate_moved)
        self.bview.line_moved.connect(self.cining.mline_moved)
        r = self.review
        r.play_toggled.connect(lambda on: self.set_frozen(not on))
        r.seek.connect(self.seek)
        r.step.connect(self.step)
        r.jump_class.connect(self.jump_class_change)
        r.speed_changed.connect(self.source.set_speed)
        for key, fn in ((Qt.Key.Key_Space, self.toggle_freeze),
                        (Qt.Key.Key_Left, lambda: self.step(-1)),
                        (Qt.Key.Key_Right, lambda: self.step(1)),
                        (Qt.Key.Key_PageUp, lambda: self.jump_class_change(-1)),
                        (Qt.Key.Key_PageDown, lambda: self.jump_class_change(1)),
                        (Qt.Key.Key_Delete, self.undo_measurement),
                        (Qt.Key.Key_Backspace, self.undo_measurement),
                        (Qt.Key.Key_A, self.auto_level),
                        (Qt.Key.Key_G, lambda: self.set_gate(None))):
            QShortcut(QKeySequence(key), self, activated=fn)
        QShortcut(QKeySequence.StandardKey.Open, self, activated=lambda: self._source_requested("file", ""))

        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.timer.start(FRAME_INTERVAL_MS)
        geometry = store.value("window_geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1500, 900)
        if spec is not None:
            self.open_source(spec)

    # -- the controllers' state, as the rest of the window (and its tests) reads it -----------
    engine = property(lambda self: self.source.engine)
    frozen = property(lambda self: self.reviewing.frozen)
    measurements = property(lambda self: self.measuring.items)
    recording_path = property(lambda self: self.recording.path)
    report_pending = property(lambda self: self.exports.pending)

    @property
    def spec(self) -> SourceSpec | None:
        return self.source.spec

    @spec.setter
    def spec(self, spec: SourceSpec | None) -> None:
        self.source.spec = spec

    @property
    def engine_factory(self) -> Callable:
        return self.source.engine_factory

    @engine_factory.setter
    def engine_factory(self, factory: Callable) -> None:
        self.source.engine_factory = factory

    @property
    def cursor_col(self) -> int:
        return self.reviewing.cursor_col

    @cursor_col.setter
    def cursor_col(self, col: int) -> None:
        self.reviewing.cursor_col = col

    # -- sources -------------------------------------------------------------------------------
    def open_source(self, spec: SourceSpec) -> None:
        """Stop the current source and open ``spec`` off the GUI thread (a busy indicator
        meanwhile); errors show in the status bar."""
        self.recording.stop(self.engine)
        self.recording.forget()
        self.ring = None
        self.row_depths_m = None
        self.reader = ResultsReader()
        self.file_times_s = None
        self.file_meta = None
        self.cine_frames = None
        self.bview.clear()
        self.bview.setVisible(False)
        self._last_seq = spec.start_line
        self.sweep.reset()
        self.shown_span_s = None
        self._auto_level_used = False
        self._engine_reference_db = None
        self._show_gate(None)  # a depth in one recording means nothing in the next
        self.reviewing.frozen = False
        self.reviewing.show_frozen(False)
        self.last_error = ""
        self.status.labels["error"].setText("")
        self.source.open(spec, self._settings_args())
        self.setWindowTitle(f"mmode - {spec.title()}")
        self._update_busy()
        self._dirty = True

    def source_opened(self, opened: Opened, restart: bool) -> None:
        """A worker opened the source (or restarted a file): show what it found (GUI thread)."""
        spec = opened.spec
        if not restart:
            self.file_times_s, self.file_meta = opened.file_times_s, opened.file_meta
            self.cine_frames = opened.cine_frames
            if self.cine_frames is not None:
                self.bview.set_cine(self.cine_frames)
                self.cining.show_mline(spec.cine)
            else:
                self._set_scale(opened.scale)
            self.bview.setVisible(self.cine_frames is not None)
            self.review.speed.setEnabled(spec.kind == "file")
            if spec.kind == "file":
                self.s.last_file = spec.value
            elif spec.kind == "sim":
                self.panel.scenario_combo.setCurrentText(spec.value)
            else:
                self.panel.stream_edit.setText(spec.value)
        if self.frozen:  # paused while it opened
            self.source.pause(True)
        self._send_settings()  # what the user changed while the worker built the engine
        self._update_busy()

    def source_failed(self, message: str) -> None:
        """A worker could not open the source (GUI thread)."""
        if self.spec is not None and self.spec.cine is None:
            self.cine_frames = None
            self.bview.clear()
            self.bview.setVisible(False)
        self.show_error(message)
        self._update_busy()

    def stop_engine(self, wait: bool = False) -> None:
        """Stop the recording and the engine (in the background unless ``wait``)."""
        self.recording.stop(self.engine, wait=wait)
        self.source.stop(wait=wait)

    def _settings_args(self) -> tuple:
        """The arguments of :func:`~mmode.gui.engine_link.pipeline_settings` now: the panel's
        choices (a copy), the depth range (for TGC), the tracking gate and the display level
        given to the current engine (see :meth:`restart_file`)."""
        return (replace(self.s, tgc_db=list(self.s.tgc_db)), self._depth_range(), self.gate_depth_m,
                self._engine_reference_db)

    def restart_file(self, line: int, clear: bool) -> None:
        """Play the file from ``line`` on a new engine (a new timeline); ``clear`` empties
        the cine first. The class strip stays empty until the new timeline's first window."""
        assert self.spec is not None and self.spec.kind == "file"
        self.recording.stop(self.engine)
        if clear and self.ring is not None:
            self.ring.clear()
        self._last_seq = int(line)
        level = self.reader.level
        if self._auto_level_used and level is not None:
            # the new engine would level the file from its first second again: keep the Auto level
            self._engine_reference_db = float(level.reference_db)
        self.reader = ResultsReader()  # no class of the old timeline on the new lines
        self.reader.level = level
        self.source.restart(self.spec, line, self._settings_args())
        self._update_busy()

    def next_file_line(self) -> int:
        n = 0 if self.file_times_s is None else len(self.file_times_s)
        return self._last_seq if self._last_seq < n else 0

    def _set_scale(self, scale: CaliperScale) -> None:
        """The calibration of the image on screen: new calipers, the depth axes and the gate."""
        self.scale = scale
        self.calipers.set_scale(scale)
        set_depth_axis(self.mview.plot, scale.m_per_px)
        set_depth_axis(self.aline.plot, scale.m_per_px, label=False)
        self.panel.show_gate(self.gate_depth_m, scale)

    def _source_requested(self, kind: str, value: str) -> None:
        if kind == "file" and not value:
            value, _ = QFileDialog.getOpenFileName(self, "Open recording", self.s.last_file,
                                                   "Recordings (*.h5 *.npy *.npz *.mat *.raw *.bin *.dcm *.mp4 *.avi "
                                                   "*.mov);;All files (*)")
            if not value:
                return
        self.open_source(SourceSpec(kind, value, speed=PLAYBACK_SPEEDS[self.review.speed.currentIndex()]))

    def _depth_range(self) -> tuple[float, float] | None:
        if self.row_depths_m is None:
            return None
        return float(self.row_depths_m[0]), float(self.row_depths_m[-1])

    # -- settings ------------------------------------------------------------------------------
    def _pipeline_settings(self):
        """The engine's settings now (see :meth:`_settings_args`)."""
        return pipeline_settings(*self._settings_args())

    def _apply_processing(self) -> None:
        self.settings_control.apply_processing()

    def _send_settings(self) -> None:
        self.settings_control.send_settings()

    def _show_gate(self, depth_m: float | None) -> None:
        self.settings_control.show_gate(depth_m)

    def auto_level(self) -> None:
        self.settings_control.auto_level()

    def set_gate(self, depth_m: float | None) -> None:
        self.settings_control.set_gate(depth_m)

    def window_s(self) -> float:
        """Seconds shown across the M-mode plot at the chosen sweep speed (mm/s on screen)."""
        px_per_mm = self.logicalDpiX() / 25.4
        return self.mview.plot_width_px() / px_per_mm / self.s.sweep_mm_s

    def window_cols(self) -> int:
        return max(2, int(math.ceil(self.window_s() / self.col_dt_s)))

    # -- the draw timer ------------------------------------------------------------------------
    def _tick(self) -> None:
        t0 = time.perf_counter()
        drew = False
        engine = self.engine
        if engine is not None:
            try:
                for r in engine.poll_results():
                    self.drawing.ingest(r)
            except MmodeError as exc:
                self.show_error(str(exc))
                self.stop_engine()
            self.drawing.check_file_end()
        moved = not self.frozen and self.sweep.advance(t0)
        if self.ring is not None and self.ring.n_written and (self._dirty or moved):
            try:
                self._render()
                drew = True
            except Exception as exc:  # a drawing bug must not take the window (and a recording) down
                traceback.print_exc()
                self.show_error(f"display: {type(exc).__name__}: {exc}")
                self._dirty = False
        self.exports.poll()
        t1 = time.perf_counter()
        self.frames.add(t0, t1, drew)
        if t1 - self._last_status_s >= STATUS_INTERVAL_S:
            self._last_status_s = t1
            self._update_status()

    def _render(self) -> None:
        self.drawing.render()

    def _update_busy(self) -> None:
        self.statusing.update_busy()

    def _update_status(self) -> None:
        self.statusing.update()

    # -- review, measurements, recording, export: the controllers ------------------------------
    def toggle_freeze(self) -> None:
        self.reviewing.toggle()

    def set_frozen(self, frozen: bool) -> None:
        self.reviewing.set_frozen(frozen)

    def step(self, direction: int) -> None:
        self.reviewing.step(direction)

    def jump_class_change(self, direction: int) -> None:
        self.reviewing.jump_class_change(direction)

    def seek(self, t_s: float) -> None:
        self.reviewing.seek(t_s)

    def undo_measurement(self) -> None:
        self.measuring.undo()

    def clear_measurements(self) -> None:
        self.measuring.clear()

    def show_error(self, message: str) -> None:
        """Keep ``message`` in red in the status bar until the next source opens."""
        self.last_error = message
        self.status.labels["error"].setText(message)
        self.status.labels["error"].setToolTip(message)

    def _record_toggled(self, on: bool) -> None:
        if on:
            path, _ = QFileDialog.getSaveFileName(self, "Record to", "recording.h5", "mmode recordings (*.h5)")
            if not path:
                self.panel.record.setChecked(False)
                return
            self.start_recording(path)
        else:
            self.stop_recording()

    def start_recording(self, path: str | Path) -> None:
        """Record the incoming lines to ``path`` (format v1) until :meth:`stop_recording`."""
        error = self.recording.start(self.engine, path)
        if error:
            self.show_error(error)
        self._update_status()

    def stop_recording(self) -> None:
        self.recording.stop(self.engine)

    def _export_requested(self, kind: str) -> None:
        filters = {"png": "PNG images (*.png)", "csv": "CSV files (*.csv)", "json": "JSON reports (*.json)"}
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind.upper()}", f"mmode.{kind}", filters[kind])
        if not path:
            return
        try:
            {"png": self.export_png, "csv": self.export_csv, "json": self.export_report}[kind](path)
        except (MmodeError, OSError) as exc:
            self.show_error(f"export: {exc}")

    def export_png(self, path: str | Path) -> Path:
        return self.exports.png(path)

    def export_csv(self, path: str | Path) -> Path:
        return self.exports.csv(path)

    def export_report(self, path: str | Path) -> None:
        self.exports.export_report(path)

    # -- closing -------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.timer.stop()
        self.jobs.close()
        self.stop_engine(wait=True)  # the recording is on disk when the window has closed
        self.recording.wait()
        self.panel.apply_to(self.s)
        self.store.setValue("window_geometry", self.saveGeometry())
        settings.save(self.store, self.s)
        super().closeEvent(event)
