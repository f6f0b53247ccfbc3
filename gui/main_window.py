"""The main window: M-mode view, A-line, controls, review bar, status bar.

Threads: the engine processes in its own threads; this window only polls
``engine.poll_results()`` (non-blocking) from a ~60 Hz draw timer on the GUI thread, pushes
the new lines into the :class:`~mmode.gui.mmode_data.DisplayRing` and redraws. No Qt item is
touched off the GUI thread. Each timer tick is timed (:class:`~mmode.gui.status.FrameStats`).

Review model: live sources keep running while frozen (results are counted, not drawn) and
the frozen cine can be scrolled; unfreezing restarts the sweep. A file plays once (no loop);
freezing pauses it (the engine stops), playing resumes where it stopped, and seeking outside
the cine memory restarts playback at that line.

Display level: *Auto* (button by the gain, key A) asks the engine to set 0 dB again from the
lines on screen and puts the gain back to 0 dB. A file restarted after an *Auto* (play after
pause, seek, speed) keeps that level: the new engine gets it as ``reference_db``.

Tracking gate: Shift+click or Shift+drag on the image sets the depth the motion tracker
follows (``track_depth_m`` of the pipeline settings; the tracker restarts there); G returns
to the automatic choice. Plain clicks stay with the calipers.

Cine files (a DICOM multi-frame with a 2D region, a video): the window decodes the frames
once and shows a B-mode pane beside the M-mode (:class:`~mmode.gui.cine_view.BModeView`):
the frame of the M-mode's current line (the newest line while playing, the review cursor
when frozen) with the M-line on it. Releasing a dragged M-line recomputes the M-mode from
the frames in memory (:mod:`mmode.gui.cine`) and plays it again from the start; the
calipers and the gate of the old line are cleared. Calipers measure in the units of the
image's calibration (:func:`mmode.gui.calibration.caliper_scale`): pixels, with a note,
where the depth is not calibrated.
"""

from __future__ import annotations

import math
import threading
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
from mmode.gui import export, settings
from mmode.gui.aline_view import ALineView
from mmode.gui.calibration import caliper_scale, mline_text
from mmode.gui.calipers import HINTS, CaliperTool
from mmode.gui.cine import CINE_FORMATS, CineMmode, cine_mmode, clip_line, frame_at, load_cine
from mmode.gui.cine_view import BModeView
from mmode.gui.controls import ControlPanel, ReviewBar
from mmode.gui.engine_link import (
    ResultsReader,
    SourceSpec,
    classifier_name,
    level_text,
    make_engine,
    motion_text,
    pipeline_settings,
)
from mmode.gui.measurements import RF_SCALE, CaliperScale, Measurement
from mmode.gui.mmode_data import DisplayRing, OverlayRate, SweepClock, overlay_rate
from mmode.gui.mmode_view import MModeView, set_depth_axis
from mmode.gui.status import FrameStats, StatusBar, status_fields
from mmode.ingest.cine import default_mline_of
from mmode.ingest.meta import CLASSES

FRAME_INTERVAL_MS = 16
STATUS_INTERVAL_S = 0.25
RATE_INTERVAL_S = 0.5
SLOW_VIEWS_INTERVAL_S = 0.1
RATE_TRACE_S = 10.0
COLUMN_RATE_HZ = 500.0
LIVE_CINE_S = 60.0
MAX_FILE_CINE_S = 300.0


class MainWindow(QMainWindow):
    """The mmode desktop window.

    spec : source opened at start (None: none).  store : where settings persist.
    engine_factory : ``(SourceSpec, PipelineSettings) -> engine`` (tests pass a fake one).
    """

    def __init__(self, spec: SourceSpec | None, store: QSettings,
                 engine_factory: Callable = make_engine, scenarios: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.setWindowTitle("mmode")
        self.store = store
        self.s = settings.load(store)
        self.engine_factory = engine_factory
        self.engine = None
        self.spec: SourceSpec | None = None
        self.ring: DisplayRing | None = None
        self.col_dt_s = 1.0 / COLUMN_RATE_HZ
        self.line_dt_s = self.col_dt_s  # time between processed lines, s (known with the first results)
        self.shown_span_s: tuple[float, float] | None = None  # first and last line time on screen
        self.gate_depth_m: float | None = None  # the tracking gate the user placed (None: automatic)
        self._auto_level_used = False  # Auto pressed on this source: a file restart keeps its level
        self._engine_reference_db: float | None = None  # display level the current engine was given
        self.row_depths_m: np.ndarray | None = None
        self.reader = ResultsReader()
        self.frozen = False
        self.cursor_col = 0  # review cursor (absolute display column) while frozen
        self.sweep = SweepClock()  # right edge of the live sweep, data time
        self.measurements: list[Measurement] = []
        self.frames = FrameStats()
        self.last_error = ""
        self.recording_path: Path | None = None
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
        self._report_job: tuple[threading.Thread, dict, Path] | None = None

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
        self.calipers = CaliperTool(self.mview.plot, self._add_measurement, self._measurement_changed,
                                    self._show_error)
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
        self._apply_view()
        self._update_class_note()

        p = self.panel
        p.source_requested.connect(self._source_requested)
        p.processing_changed.connect(self._apply_processing)
        p.view_changed.connect(self._apply_view)
        p.caliper_changed.connect(self._apply_caliper)
        p.freeze_toggled.connect(self.set_frozen)
        p.record_toggled.connect(self._record_toggled)
        p.export_requested.connect(self._export_requested)
        p.clear_measurements.connect(self.clear_measurements)
        p.auto_level_requested.connect(self.auto_level)
        p.auto_gate_requested.connect(lambda: self.set_gate(None))
        self.mview.gate_requested.connect(self._gate_moved)
        self.bview.line_moved.connect(self._mline_moved)
        r = self.review
        r.play_toggled.connect(lambda on: self.set_frozen(not on))
        r.seek.connect(self.seek)
        r.step.connect(self.step)
        r.jump_class.connect(self.jump_class_change)
        r.speed_changed.connect(self._speed_changed)
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

    # -- sources -------------------------------------------------------------------------------
    def open_source(self, spec: SourceSpec) -> None:
        """Stop the current source and start ``spec``; errors show in the status bar."""
        self._stop_engine()
        self.ring = None
        self.reader = ResultsReader()
        self.file_times_s = None
        self.file_meta = None
        self.cine_frames = None
        self.bview.clear()
        self.spec = spec
        self._last_seq = spec.start_line
        self.sweep.reset()
        self.shown_span_s = None
        self._auto_level_used = False
        self._engine_reference_db = None
        self._show_gate(None)  # a depth in one recording means nothing in the next
        try:
            if spec.kind == "file":
                spec = self.spec = self._open_file(spec)
            else:
                self._set_scale(RF_SCALE)
            self.engine = self.engine_factory(spec, pipeline_settings(self.s))
            self.engine.start()
        except (MmodeError, OSError) as exc:
            self.engine = None
            self.cine_frames = None
            self.bview.clear()
            self.bview.setVisible(False)
            self._show_error(str(exc))
            return
        self.bview.setVisible(self.cine_frames is not None)
        self.frozen = False
        self._show_frozen(False)
        self.review.speed.setEnabled(spec.kind == "file")
        self.setWindowTitle(f"mmode - {spec.title()}")
        if spec.kind == "file":
            self.s.last_file = spec.value
        elif spec.kind == "sim":
            self.panel.scenario_combo.setCurrentText(spec.value)
        else:
            self.panel.stream_edit.setText(spec.value)
        self.last_error = ""
        self.status.labels["error"].setText("")

    def _stop_engine(self) -> None:
        if self.engine is not None:
            if self.recording_path is not None:
                self._stop_recording()
            self.engine.stop()
            self.engine = None

    def _restart_file(self, line: int, clear: bool) -> None:
        """(Re)start file playback at ``line``; ``clear`` empties the cine first."""
        assert self.spec is not None and self.spec.kind == "file"
        self._stop_engine()
        if clear and self.ring is not None:
            self.ring.clear()
        self.spec = replace(self.spec, start_line=int(line))
        self._last_seq = int(line)
        if self._auto_level_used and self.reader.level is not None:
            # the new engine would level the file from its first second again: keep the Auto level
            self._engine_reference_db = float(self.reader.level.reference_db)
        try:
            self.engine = self.engine_factory(self.spec, self._pipeline_settings())
            self.engine.start()
        except (MmodeError, OSError) as exc:
            self.engine = None
            self._show_error(str(exc))

    def _open_file(self, spec: SourceSpec) -> SourceSpec:
        """Read a file's line times, metadata and calibration; a cine's frames go into memory
        and the returned spec plays its M-mode along the M-line from there."""
        from mmode.ingest.files import open_recording

        rec = open_recording(spec.value, **spec.file_options())
        try:
            self.file_times_s = np.asarray(rec.timestamps_s(), np.float64)
            self.file_meta = rec.meta.to_dict()
            scale = caliper_scale(rec.meta, rec.info())
            is_cine = rec.file_format in CINE_FORMATS
        finally:
            rec.close()
        if not is_cine:
            self._set_scale(scale)
            return spec
        self.cine_frames = load_cine(spec.value)
        self.bview.set_cine(self.cine_frames)
        mmode = cine_mmode(self.cine_frames, spec.mline or default_mline_of(self.cine_frames), spec.px_per_cm)
        return self._use_mline(spec, mmode)

    # -- cine files: the B-mode pane and the M-line ---------------------------------------------
    def _use_mline(self, spec: SourceSpec, mmode: CineMmode) -> SourceSpec:
        """Make ``mmode`` (the M-mode along a new M-line) the file the window plays and
        measures on: its times, metadata and calibration, the line on the B-mode; returns
        ``spec`` playing it from its first line."""
        n = mmode.lines.shape[0]
        self.file_times_s = np.arange(n, dtype=np.float64) / mmode.meta.prf_hz
        self.file_meta = mmode.meta.to_dict()
        scale = caliper_scale(mmode.meta, mmode.info, self.cine_frames.regions)
        self._set_scale(scale)
        self.bview.set_line(mmode.line, mline_text(mmode.line, mmode.info["mline"]["step_m"], scale.note))
        return replace(spec, mline=mmode.line, cine=mmode, start_line=0)

    def _mline_moved(self, line: tuple[float, float, float, float]) -> None:
        """A drag of the M-line ended: recompute the M-mode from the frames in memory and play
        it from the start (a line that makes no M-mode puts the old one back)."""
        if self.cine_frames is None:
            return
        try:
            mmode = cine_mmode(self.cine_frames, clip_line(line, self.cine_frames.shape), self.spec.px_per_cm)
        except MmodeError as exc:
            self._show_error(f"M-line: {exc}")
            old = self.spec.cine
            self.bview.set_line(old.line, mline_text(old.line, old.info["mline"]["step_m"], self.scale.note))
            return
        self.clear_measurements()  # they were made on the old line's M-mode
        self._show_gate(None)
        self.spec = self._use_mline(self.spec, mmode)
        self.ring = None  # the new line has its own depths
        self.row_depths_m = None
        self.reader = ResultsReader()
        self.shown_span_s = None
        self.sweep.reset()
        self.frozen = False
        self._show_frozen(False)
        self._restart_file(0, clear=False)
        self.statusBar().showMessage("M-mode recomputed along the new M-line", 5000)

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
        self.open_source(SourceSpec(kind, value, speed=self._speed()))

    def _speed(self) -> float:
        from mmode.gui.controls import PLAYBACK_SPEEDS

        return PLAYBACK_SPEEDS[self.review.speed.currentIndex()]

    def _speed_changed(self, speed: float) -> None:
        if self.spec is None or self.spec.kind != "file":
            return
        self.spec = replace(self.spec, speed=speed)
        if self.engine is not None:  # playing: go on at the new speed from the next line
            self._restart_file(self._next_file_line(), clear=False)

    def _next_file_line(self) -> int:
        n = 0 if self.file_times_s is None else len(self.file_times_s)
        return self._last_seq if self._last_seq < n else 0

    def _depth_range(self) -> tuple[float, float] | None:
        if self.row_depths_m is None:
            return None
        return float(self.row_depths_m[0]), float(self.row_depths_m[-1])

    # -- settings ------------------------------------------------------------------------------
    def _pipeline_settings(self):
        """The engine's settings: the panel's choices, the depth range (for TGC), the tracking
        gate and the display level given to the current engine (see :meth:`_restart_file`)."""
        return pipeline_settings(self.s, self._depth_range(), self.gate_depth_m, self._engine_reference_db)

    def _apply_processing(self) -> None:
        model = self.s.model
        self.panel.apply_to(self.s)
        if self.s.model != model:  # the old model's class no longer describes what comes
            self.reader.label, self.reader.confidence = -1, float("nan")
        self._update_class_note()
        self._send_settings()

    def _send_settings(self) -> None:
        """Send the current pipeline settings to the running engine, if any."""
        if self.engine is not None:
            try:
                self.engine.update_settings(self._pipeline_settings())
            except MmodeError as exc:
                self._show_error(str(exc))

    def auto_level(self) -> None:
        """*Auto*: the engine sets 0 dB again from the lines on screen (it applies from the
        next lines processed; a frozen image keeps its pixels) and the gain goes back to 0 dB."""
        if self._dirty and self.ring is not None and self.ring.n_written:
            self._render()  # the span of what is about to be on screen
        if self.engine is None or self.shown_span_s is None:
            self.statusBar().showMessage("Auto: no lines are being processed now; play, then press Auto", 5000)
            return
        t_from_s, t_to_s = self.shown_span_s
        self.engine.relevel(t_from_s, t_to_s)
        self._auto_level_used = True
        self.panel.set_gain_db(0.0)
        self._apply_processing()
        self.statusBar().showMessage(f"Auto: 0 dB from the lines of {t_from_s:.2f}-{t_to_s:.2f} s, gain 0 dB", 5000)

    def _gate_moved(self, depth_m: float, finished: bool) -> None:
        """Shift+click / Shift+drag on the image: the marker follows; the gate is set (and the
        tracker restarted) on the click or at the end of the drag."""
        if self.row_depths_m is None:
            return
        depth_m = float(np.clip(depth_m, self.row_depths_m[0], self.row_depths_m[-1]))
        if finished:
            self.set_gate(depth_m)
        else:
            self.mview.set_gate(depth_m)

    def set_gate(self, depth_m: float | None) -> None:
        """Track the echo at ``depth_m`` (m), or let the tracker choose (None); the engine's
        tracker restarts there (about 1 s before its trace comes back)."""
        if depth_m is None and self.gate_depth_m is None:
            self._show_gate(None)  # a drag may have moved the marker
            return
        self._show_gate(depth_m)
        self._send_settings()
        where = "automatic" if depth_m is None else self.scale.depth_text(depth_m)
        self.statusBar().showMessage(f"Tracking gate: {where} (G: automatic)", 4000)

    def _show_gate(self, depth_m: float | None) -> None:
        self.gate_depth_m = None if depth_m is None else float(depth_m)
        self.mview.set_gate(self.gate_depth_m)
        self.panel.show_gate(self.gate_depth_m, self.scale)
        self._dirty = True

    def _update_class_note(self) -> None:
        """What the header says while there is no class: waiting, classic mode, or no model."""
        if self.s.model == "classic":
            note = "Classic processing: no classification"
        elif classifier_name(self.s.model) is None:
            note = f"No {self.s.model} model shipped: no classification"
        else:
            note = "Class: waiting for a full window"
        self.mview.no_class_text = note
        self._dirty = True

    def _apply_view(self) -> None:
        self.panel.apply_to(self.s)
        self.mview.show_classes = self.s.show_classes
        self.mview.show_motion = self.s.show_motion
        self.mview.show_motion_network = self.s.show_motion_network
        self.mview.show_rate = self.s.show_rate
        self._dirty = True

    def _apply_caliper(self) -> None:
        self.panel.apply_to(self.s)
        self.calipers.set_kind(self.s.caliper_kind, self.s.n_cycles)
        self.statusBar().showMessage(HINTS[self.s.caliper_kind], 8000)

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
        if self.engine is not None:
            try:
                for r in self.engine.poll_results():
                    self._ingest(r)
            except MmodeError as exc:
                self._show_error(str(exc))
                self._stop_engine()
            self._check_file_end()
        moved = not self.frozen and self.sweep.advance(t0)
        if self.ring is not None and self.ring.n_written and (self._dirty or moved):
            try:
                self._render()
                drew = True
            except Exception as exc:  # a drawing bug must not take the window (and a recording) down
                traceback.print_exc()
                self._show_error(f"display: {type(exc).__name__}: {exc}")
                self._dirty = False
        self._finish_report()
        t1 = time.perf_counter()
        self.frames.add(t0, t1, drew)
        if t1 - self._last_status_s >= STATUS_INTERVAL_S:
            self._last_status_s = t1
            self._update_status()

    def _ingest(self, r) -> None:
        db = np.asarray(r.display_db)
        if self.ring is None or db.shape[1] != self.ring.n_rows:
            prf_hz = float(self.engine.meta.prf_hz)
            cine_s = LIVE_CINE_S
            if self.file_times_s is not None:
                cine_s = min(MAX_FILE_CINE_S, len(self.file_times_s) / prf_hz + 1.0)
            self.ring = DisplayRing.for_rate(db.shape[1], prf_hz, cine_s, COLUMN_RATE_HZ)
            self.col_dt_s = self.ring.decimation / prf_hz
            self.line_dt_s = 1.0 / prf_hz
            self.row_depths_m = np.asarray(r.row_depths_m, np.float64)
            self.mview.set_depths(self.row_depths_m)
            if any(g != 0 for g in self.s.tgc_db):
                self._apply_processing()  # TGC knobs need the depth range
        label, conf, track, quality = self.reader.read(r)
        self._last_seq = int(r.seq_stop)
        if len(r.t_s) == 0:  # the end of a stream: only the tracker's last held-back lines
            if self.reader.late_track is not None:
                self.ring.set_track(*self.reader.late_track)
                self._dirty = True
            if self.reader.net_track is not None:
                self.ring.set_net_track(*self.reader.net_track)
                self._dirty = True
            return
        live = self.spec is not None and self.spec.kind != "file"
        if self.frozen and live:
            return  # live source keeps running; the frozen cine stays as it is
        if self.ring.n_written:
            last_t = self.ring.window(self.ring.n_written, 1).t_s[-1]
            if r.t_s[0] < last_t:  # playback jumped back: start a new cine
                self.ring.clear()
                self.sweep.reset()
        self.ring.push(db, r.t_s, self.s.dynamic_range_db, label, conf, track, quality)
        if self.reader.late_track is not None:
            self.ring.set_track(*self.reader.late_track)
        if self.reader.net_track is not None:
            self.ring.set_net_track(*self.reader.net_track)
        for t_from, t_to, label_k, conf_k in self.reader.relabel:
            self.ring.set_labels(t_from, t_to, label_k, conf_k)
        if len(r.t_s):
            self.sweep.arrived(time.perf_counter(), float(r.t_s[-1]))
        self._dirty = True

    def _check_file_end(self) -> None:
        if self.file_times_s is None or self.frozen or self.engine is None:
            return
        # "ended": the engine has processed the last line and handed over what the motion
        # tracker still held (the last line's arrival alone would stop it before that)
        if getattr(self.engine, "state", "") == "ended":
            self.set_frozen(True)

    def _render(self) -> None:
        ring = self.ring
        n_cols = self.window_cols()
        if self.frozen:
            self.cursor_col = int(min(max(self.cursor_col, ring.oldest), ring.n_written - 1))
            end = ring.clamp_end(self.cursor_col + n_cols // 2 + 1, n_cols)
        else:
            held = ring.window(ring.n_written, ring.capacity)
            end = held.start + int(np.searchsorted(held.t_s, self.sweep.t_s, side="right"))
            end = max(end, held.start + 1)
        w = ring.window(end, n_cols)
        if w.n_cols == 0:
            return
        # lines on screen: from the first line of the first column to the last column's
        self.shown_span_s = (float(w.t_s[0]) - (ring.decimation - 1) * self.line_dt_s, float(w.t_s[-1]))
        cursor = self.cursor_col - w.start if self.frozen else w.n_cols - 1
        x_end = float(w.t_s[-1]) + self.col_dt_s
        if not self.frozen and math.isfinite(self.sweep.t_s):
            x_end = max(x_end, self.sweep.t_s + self.col_dt_s)
        classes = self.reader.classes or CLASSES
        label = int(w.label[cursor]) if self.frozen else self.reader.label
        # probe in air: the tracker follows noise, a trace there would suggest tissue motion
        in_air = 0 <= label < len(classes) and classes[label] == "no_contact"
        self.mview.classes = classes
        self.mview.render(w, self.col_dt_s, self.window_s(), x_end, float(w.t_s[cursor]) if self.frozen else None,
                          motion=not in_air)
        if self.cine_frames is not None:  # the B-mode frame of the current line
            prf_hz = self.spec.cine.meta.prf_hz
            self.bview.show_frame(frame_at(float(w.t_s[cursor]), prf_hz, self.cine_frames.n_frames))
        now = time.perf_counter()
        # the A-line and the review bar change little between frames: a few times a second
        # while live (their repaint would double the frame time), every frame in review
        slow_due = self.frozen or now - self._last_slow_s >= SLOW_VIEWS_INTERVAL_S
        if slow_due:
            self._last_slow_s = now
            self.aline.render(w.image[cursor], self.row_depths_m, self.s.dynamic_range_db)
            self._update_review(float(w.t_s[cursor]))
        if self.frozen or now - self._last_rate_s >= RATE_INTERVAL_S:
            self._last_rate_s = now
            trace = ring.window(w.start + cursor + 1, int(RATE_TRACE_S / self.col_dt_s)).track_depth_m
            self.rate = overlay_rate(trace, self.col_dt_s, classes[label] if 0 <= label < len(classes) else None)
        if self.frozen:
            self.mview.set_header(label, float(w.confidence[cursor]), self.rate)
        else:
            self.mview.set_header(label, self.reader.confidence, self.rate)
        self._dirty = False

    def _update_review(self, cursor_t: float) -> None:
        ring = self.ring
        held = ring.window(ring.n_written, ring.capacity)
        if self.file_times_s is not None:
            self.review.set_span(float(self.file_times_s[0]), float(self.file_times_s[-1]), cursor_t)
        elif held.n_cols:
            self.review.set_span(float(held.t_s[0]), float(held.t_s[-1]), cursor_t)

    def _update_status(self) -> None:
        stats = {}
        if self.engine is not None:
            try:
                stats = dict(self.engine.stats())
            except MmodeError as exc:
                self._show_error(str(exc))
        if stats.get("state") == "failed" and stats.get("message") and self.last_error != f"engine: {stats['message']}":
            self._show_error(f"engine: {stats['message']}")
        f = status_fields(stats, self.frames)
        state = "frozen" if self.frozen else ("live" if self.engine is not None else "stopped")
        rec = "  REC" if self.recording_path is not None else ""
        f["source"] = f"{self.spec.title() if self.spec else 'no source'} [{state}]{rec}"
        self.status.update_fields(f)
        self._update_motion_and_level()

    def _update_motion_and_level(self) -> None:
        """The tracker's state in the status bar and the display level under the gain."""
        text, tip = motion_text(self.reader.motion_state, running=self.engine is not None, scale=self.scale)
        if np.isfinite(self.reader.net_ms):
            text += f"  |  network {self.reader.net_ms:.1f} ms/block"
        if text != self.motion_label.text():
            self.motion_label.setText(text)
            self.motion_label.setToolTip(tip)
            no_trace = self.reader.motion_state.get("status") == "no_motion"
            self.motion_label.setStyleSheet("color: #e90" if no_trace else "")
        self.panel.show_level(*level_text(self.reader.level))

    # -- freeze and review ---------------------------------------------------------------------
    def toggle_freeze(self) -> None:
        self.set_frozen(not self.frozen)

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (files: pause) or unfreeze (files: play on; live: restart the sweep)."""
        if frozen == self.frozen:
            return
        self.frozen = frozen
        self._show_frozen(frozen)
        is_file = self.spec is not None and self.spec.kind == "file"
        if frozen:
            if is_file and self.engine is not None:
                for r in self.engine.poll_results():  # keep what was processed before the pause
                    self._ingest(r)
                self._stop_engine()
            self.cursor_col = self._live_end() - 1
        elif is_file:
            self._restart_file(self._next_file_line(), clear=self._next_file_line() == 0)
        elif self.ring is not None:
            self.ring.clear()
        self.sweep.reset()
        self._dirty = True

    def _live_end(self) -> int:
        """Exclusive end column of what the live sweep shows now."""
        ring = self.ring
        if ring is None or not ring.n_written:
            return 0
        if not math.isfinite(self.sweep.t_s):
            return ring.n_written
        held = ring.window(ring.n_written, ring.capacity)
        return max(held.start + 1, held.start + int(np.searchsorted(held.t_s, self.sweep.t_s, side="right")))

    def _show_frozen(self, frozen: bool) -> None:
        """Freeze button and play button show the state, without emitting signals."""
        self.panel.freeze.blockSignals(True)
        self.panel.freeze.setChecked(frozen)
        self.panel.freeze.setText("Unfreeze (Space)" if frozen else "Freeze (Space)")
        self.panel.freeze.blockSignals(False)
        self.review.set_playing(not frozen)

    def step(self, direction: int) -> None:
        """Move the review cursor by 1/100 of the window (freezes first)."""
        if self.ring is None:
            return
        if not self.frozen:
            self.set_frozen(True)
        step = max(1, self.window_cols() // 100)
        self.cursor_col = int(min(max(self.cursor_col + direction * step, self.ring.oldest), self.ring.n_written - 1))
        self._dirty = True

    def jump_class_change(self, direction: int) -> None:
        """Centre the review cursor on the previous (-1) or next (+1) change of class."""
        if self.ring is None:
            return
        if not self.frozen:
            self.set_frozen(True)
        c = self.cursor_col
        target = self.ring.next_change(c) if direction > 0 else self.ring.previous_change(c)
        if target is None:
            self.statusBar().showMessage("no further class change in the cine memory", 3000)
            return
        self.cursor_col = target
        self._dirty = True

    def seek(self, t_s: float) -> None:
        """Review time ``t_s``: inside the cine memory move the view, else (files) play from there."""
        ring = self.ring
        held = ring.window(ring.n_written, ring.capacity) if ring is not None else None
        if held is not None and held.n_cols and held.t_s[0] <= t_s <= held.t_s[-1]:
            if not self.frozen:
                self.set_frozen(True)
            self.cursor_col = ring.column_at_time(t_s)
            self._dirty = True
        elif self.file_times_s is not None:
            line = int(np.clip(np.searchsorted(self.file_times_s, t_s), 0, len(self.file_times_s) - 1))
            self.frozen = False
            self._show_frozen(False)
            self._restart_file(line, clear=True)

    # -- measurements --------------------------------------------------------------------------
    def _add_measurement(self, m: Measurement) -> None:
        self.measurements.append(m)
        self.panel.add_measurement(m)
        self.statusBar().showMessage(m.text(), 5000)

    def _measurement_changed(self, old: Measurement, new: Measurement) -> None:
        i = next(k for k, m in enumerate(self.measurements) if m is old)
        self.measurements[i] = new
        self.panel.set_measurement(i, new)
        self.statusBar().showMessage(new.text(), 5000)

    def undo_measurement(self) -> None:
        """Delete key: drop unfinished caliper points, or else the last measurement."""
        if self.calipers.undo():
            self.measurements.pop()
            self.panel.table.removeRow(self.panel.table.rowCount() - 1)

    def clear_measurements(self) -> None:
        self.measurements = []
        self.calipers.clear()
        self.panel.clear_table()

    def _show_error(self, message: str) -> None:
        """Keep ``message`` in red in the status bar until the next source opens."""
        self.last_error = message
        self.status.labels["error"].setText(message)
        self.status.labels["error"].setToolTip(message)

    # -- record and export ---------------------------------------------------------------------
    def _record_toggled(self, on: bool) -> None:
        if on:
            path, _ = QFileDialog.getSaveFileName(self, "Record to", "recording.h5", "mmode recordings (*.h5)")
            if not path:
                self.panel.record.setChecked(False)
                return
            self.start_recording(path)
        else:
            self._stop_recording()

    def start_recording(self, path: str | Path) -> None:
        """Record the incoming lines to ``path`` (format v1) until :meth:`_stop_recording`."""
        if self.engine is None:
            self._show_error("record: no source running")
            self.panel.record.setChecked(False)
            return
        try:
            self.engine.start_recording(str(path))
        except (MmodeError, OSError) as exc:
            self._show_error(f"record: {exc}")
            self.panel.record.setChecked(False)
            return
        self.recording_path = Path(path)
        self.panel.record.blockSignals(True)
        self.panel.record.setChecked(True)
        self.panel.record.setText("Stop recording")
        self.panel.record.blockSignals(False)

    def _stop_recording(self) -> None:
        if self.engine is not None and self.recording_path is not None:
            self.engine.stop_recording()
        self.recording_path = None
        self.panel.record.blockSignals(True)
        self.panel.record.setChecked(False)
        self.panel.record.setText("Record...")
        self.panel.record.blockSignals(False)

    def _export_requested(self, kind: str) -> None:
        filters = {"png": "PNG images (*.png)", "csv": "CSV files (*.csv)", "json": "JSON reports (*.json)"}
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind.upper()}", f"mmode.{kind}", filters[kind])
        if not path:
            return
        try:
            {"png": self.export_png, "csv": self.export_csv, "json": self.export_report}[kind](path)
        except (MmodeError, OSError) as exc:
            self._show_error(f"export: {exc}")

    def export_png(self, path: str | Path) -> Path:
        """The M-mode and A-line views with their overlays and calipers, as PNG."""
        if self._dirty and self.ring is not None and self.ring.n_written:
            self._render()
        return export.export_png(self.view_area, path)

    def export_csv(self, path: str | Path) -> Path:
        """The measurements, then the tracking gate and the motion state, as CSV."""
        return export.export_csv(self.measurements, path, self._motion_summary())

    def _motion_summary(self) -> dict:
        return export.motion_summary(self.gate_depth_m, self.reader.motion_state)

    def report(self, process: dict | None = None) -> dict:
        """The JSON report of this review (``process``: the file analysis, if any)."""
        stats = dict(self.engine.stats()) if self.engine is not None else {}
        meta = self.file_meta
        if meta is None and self.engine is not None and getattr(self.engine, "meta", None) is not None:
            meta = self.engine.meta.to_dict()
        view = {"sweep_mm_s": self.s.sweep_mm_s, "gain_db": self.s.gain_db,
                "dynamic_range_db": self.s.dynamic_range_db, "tgc_db": list(self.s.tgc_db),
                "denoise": self.s.denoise_method, "denoise_strength": self.s.denoise_strength,
                "model": self.s.model, "frozen": self.frozen}
        level = self.reader.level
        report = export.build_report(self.spec.title() if self.spec else "", meta, view, stats,
                                     self.measurements, process, self._motion_summary(),
                                     None if level is None else level.to_dict())
        report["cine"] = self._cine_summary()
        return report

    def _cine_summary(self) -> dict:
        """Seconds held in the cine memory and seconds of each class shown in it."""
        if self.ring is None or not self.ring.n_written:
            return {"seconds": 0.0, "class_seconds": {}}
        held = self.ring.window(self.ring.n_written, self.ring.capacity)
        classes = self.reader.classes or CLASSES
        labels, counts = np.unique(held.label[held.label >= 0], return_counts=True)
        return {"seconds": held.n_cols * self.col_dt_s, "t_start_s": float(held.t_s[0]), "t_stop_s": float(held.t_s[-1]),
                "class_seconds": {classes[int(k)]: float(c) * self.col_dt_s for k, c in zip(labels, counts)
                                  if int(k) < len(classes)}}

    def export_report(self, path: str | Path) -> None:
        """Write the JSON report; for files the ``mmode process`` analysis runs in a worker
        thread first and the report is written when it is done (see :attr:`report_pending`)."""
        path = Path(path)
        if self.spec is None or self.spec.kind != "file":
            export.write_json(self.report(), path)
            return
        box: dict = {}
        path_in, settings_in = self.spec.value, self._pipeline_settings()
        options = self.spec.file_options()  # a cine's current M-line and pixel size

        def work() -> None:
            try:
                from mmode.app.cmd_process import analyse
                from mmode.ingest.files import open_recording

                rec = open_recording(path_in, **options)
                try:
                    box["process"] = analyse(rec, settings_in)
                finally:
                    rec.close()
            except Exception as exc:  # reported in the JSON and the status bar, never lost
                box["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=work, name="mmode-report", daemon=True)
        thread.start()
        self._report_job = (thread, box, path)
        self.statusBar().showMessage("analysing the file for the report...", 5000)

    @property
    def report_pending(self) -> bool:
        return self._report_job is not None

    def _finish_report(self) -> None:
        if self._report_job is None or self._report_job[0].is_alive():
            return
        _thread, box, path = self._report_job
        self._report_job = None
        report = self.report(box.get("process"))
        if "error" in box:
            report["process_error"] = box["error"]
            self._show_error(f"report: file analysis failed: {box['error']}")
        try:
            export.write_json(report, path)
        except OSError as exc:
            self._show_error(f"report: {exc}")
            return
        self.statusBar().showMessage(f"report written to {path}", 5000)

    # -- closing -------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.timer.stop()
        self._stop_engine()
        self.panel.apply_to(self.s)
        self.store.setValue("window_geometry", self.saveGeometry())
        settings.save(self.store, self.s)
        super().closeEvent(event)
