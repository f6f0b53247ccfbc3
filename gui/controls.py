"""Control widgets: source, image and processing settings, overlays, calipers, review bar.

Widgets only hold and emit choices; :class:`mmode.gui.main_window.MainWindow` acts on them.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mmode.gui import measurements as M
from mmode.gui.settings import (
    CALIPER_KINDS,
    DENOISE_METHODS,
    GAIN_RANGE_DB,
    MODEL_CHOICES,
    SWEEP_SPEEDS_MM_S,
    TGC_DEPTHS_FRACTION,
    GuiSettings,
)

CALIPER_NAMES = {
    "time": "Time", "depth": "Depth", "slope": "Slope (velocity)", "heart_rate": "Heart rate (n cycles)",
    "tapse": "TAPSE", "epss": "EPSS", "fs": "Fractional shortening",
}
PLAYBACK_SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _slider(lo: int, hi: int, value: float) -> QSlider:
    s = QSlider(Qt.Orientation.Horizontal)
    s.setRange(lo, hi)
    s.setValue(int(round(value)))
    return s


class ControlPanel(QWidget):
    """The right-hand panel.

    Signals: ``source_requested(kind, value)`` with kind "file" | "stream" | "sim";
    ``processing_changed()``, ``view_changed()``, ``caliper_changed()``; ``freeze_toggled(bool)``;
    ``record_toggled(bool)``; ``export_requested(kind)`` with kind "png" | "csv" | "json";
    ``clear_measurements()``; ``auto_level_requested()`` (*Auto* by the gain: set 0 dB from
    what is on screen); ``auto_gate_requested()`` (the tracker chooses its echo again).
    """

    source_requested = pyqtSignal(str, str)
    processing_changed = pyqtSignal()
    view_changed = pyqtSignal()
    caliper_changed = pyqtSignal()
    freeze_toggled = pyqtSignal(bool)
    record_toggled = pyqtSignal(bool)
    export_requested = pyqtSignal(str)
    clear_measurements = pyqtSignal()
    auto_level_requested = pyqtSignal()
    auto_gate_requested = pyqtSignal()

    def __init__(self, s: GuiSettings, scenarios: tuple[str, ...]) -> None:
        super().__init__()
        self.setMinimumWidth(270)
        self.setMaximumWidth(340)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)

        # source
        box = QGroupBox("Source")
        f = QFormLayout(box)
        self.open_button = QPushButton("Open file...")
        self.open_button.clicked.connect(lambda: self.source_requested.emit("file", ""))
        f.addRow(self.open_button)
        self.stream_edit = QLineEdit(s.last_stream)
        self.stream_edit.setPlaceholderText("host:port")
        connect = QPushButton("Connect")
        connect.clicked.connect(lambda: self.source_requested.emit("stream", self.stream_edit.text().strip()))
        row = QHBoxLayout()
        row.addWidget(self.stream_edit)
        row.addWidget(connect)
        f.addRow("Stream", row)
        self.scenario_combo = QComboBox()
        self.scenario_combo.addItems(scenarios)
        if s.last_scenario in scenarios:
            self.scenario_combo.setCurrentText(s.last_scenario)
        sim = QPushButton("Simulate")
        sim.clicked.connect(lambda: self.source_requested.emit("sim", self.scenario_combo.currentText()))
        row = QHBoxLayout()
        row.addWidget(self.scenario_combo)
        row.addWidget(sim)
        f.addRow("Scenario", row)
        lay.addWidget(box)

        # image and processing
        box = QGroupBox("Image")
        f = QFormLayout(box)
        self.gain = _slider(int(GAIN_RANGE_DB[0]), int(GAIN_RANGE_DB[1]), s.gain_db)
        self.gain.setToolTip("Gain around the level shown as 0 dB")
        self.auto_level = QPushButton("Auto (A)")
        self.auto_level.setToolTip("Set 0 dB from the image on screen (99th percentile + 6 dB headroom) "
                                   "and the gain back to 0 dB")
        self.auto_level.clicked.connect(self.auto_level_requested)
        row = QHBoxLayout()
        row.addWidget(self.gain, stretch=1)
        row.addWidget(self.auto_level)
        f.addRow("Gain (dB)", row)
        self.level_label = QLabel("0 dB: --")
        self.level_label.setWordWrap(True)
        self.level_label.setStyleSheet("color: #999")
        f.addRow(self.level_label)
        self.dynamic_range = _slider(20, 90, s.dynamic_range_db)
        f.addRow("Dyn. range (dB)", self.dynamic_range)
        self.tgc = [_slider(-30, 30, v) for v in s.tgc_db]
        for frac, sl in zip(TGC_DEPTHS_FRACTION, self.tgc):
            f.addRow(f"TGC {100 * frac:.0f} % depth", sl)
        self.denoise = QComboBox()
        self.denoise.addItems(DENOISE_METHODS)
        self.denoise.setCurrentText(s.denoise_method)
        self.strength = _slider(0, 100, 100 * s.denoise_strength)
        f.addRow("Denoise", self.denoise)
        f.addRow("Strength", self.strength)
        self.model = QComboBox()
        self.model.addItems(MODEL_CHOICES)
        self.model.setCurrentText(s.model)
        f.addRow("Model", self.model)
        for w in (self.gain, self.dynamic_range, self.strength, *self.tgc):
            w.sliderReleased.connect(self.processing_changed)
            w.valueChanged.connect(lambda _v, w=w: None if w.isSliderDown() else self.processing_changed.emit())
        self.denoise.currentTextChanged.connect(lambda _t: self.processing_changed.emit())
        self.model.currentTextChanged.connect(lambda _t: self.processing_changed.emit())
        lay.addWidget(box)

        # view
        box = QGroupBox("View")
        f = QFormLayout(box)
        self.sweep = QComboBox()
        self.sweep.addItems([f"{v} mm/s" for v in SWEEP_SPEEDS_MM_S])
        self.sweep.setCurrentIndex(SWEEP_SPEEDS_MM_S.index(s.sweep_mm_s))
        f.addRow("Sweep", self.sweep)
        self.show_classes = QCheckBox("Classes")
        self.show_motion = QCheckBox("Motion")
        self.show_motion_network = QCheckBox("Network")
        self.show_motion_network.setToolTip("The learned motion trace (cyan) over the classic tracker's (yellow)")
        self.show_rate = QCheckBox("Rate")
        row = QGridLayout()  # two by two: four in a row are cut short at the panel's width
        for k, (cb, on) in enumerate(((self.show_classes, s.show_classes), (self.show_motion, s.show_motion),
                                      (self.show_rate, s.show_rate), (self.show_motion_network, s.show_motion_network))):
            cb.setChecked(on)
            cb.toggled.connect(lambda _on: self.view_changed.emit())
            row.addWidget(cb, k // 2, k % 2)
        self.show_motion_network.toggled.connect(lambda _on: self.processing_changed.emit())  # runs the network
        f.addRow("Overlays", row)
        self.gate_label = QLabel()
        self.gate_label.setToolTip("Shift+click or Shift+drag on the image places the tracking gate")
        auto_gate = QPushButton("Auto (G)")
        auto_gate.setToolTip("Let the tracker choose the moving echo (G)")
        auto_gate.clicked.connect(self.auto_gate_requested)
        row = QHBoxLayout()
        row.addWidget(self.gate_label, stretch=1)
        row.addWidget(auto_gate)
        f.addRow("Gate", row)
        self.show_gate(None)
        self.sweep.currentIndexChanged.connect(lambda _i: self.view_changed.emit())
        self.freeze = QPushButton("Freeze (Space)")
        self.freeze.setCheckable(True)
        self.freeze.toggled.connect(self.freeze_toggled)
        self.record = QPushButton("Record...")
        self.record.setCheckable(True)
        self.record.toggled.connect(self.record_toggled)
        row = QHBoxLayout()
        row.addWidget(self.freeze)
        row.addWidget(self.record)
        f.addRow(row)
        lay.addWidget(box)

        # measurements
        box = QGroupBox("Measurements")
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.caliper = QComboBox()
        for k in CALIPER_KINDS:
            self.caliper.addItem(CALIPER_NAMES[k], k)
        self.caliper.setCurrentIndex(CALIPER_KINDS.index(s.caliper_kind))
        self.n_cycles = QSpinBox()
        self.n_cycles.setRange(1, 20)
        self.n_cycles.setValue(s.n_cycles)
        self.n_cycles.setSuffix(" cycles")
        self.caliper.currentIndexChanged.connect(lambda _i: self.caliper_changed.emit())
        self.n_cycles.valueChanged.connect(lambda _v: self.caliper_changed.emit())
        row.addWidget(self.caliper)
        row.addWidget(self.n_cycles)
        v.addLayout(row)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Measurement", "Value", "Normal"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        # the table takes the height left over: its size hint would otherwise push the panel
        # (whose wrapped level line asks for height by width) into a scroll bar at 900 px
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Ignored)
        self.table.setMinimumHeight(80)
        v.addWidget(self.table)
        row = QHBoxLayout()
        for kind, text in (("png", "PNG"), ("csv", "CSV"), ("json", "Report")):
            b = QPushButton(f"Export {text}")
            b.clicked.connect(lambda _c, kind=kind: self.export_requested.emit(kind))
            row.addWidget(b)
        v.addLayout(row)
        clear = QPushButton("Clear measurements")
        clear.clicked.connect(self.clear_measurements)
        v.addWidget(clear)
        lay.addWidget(box, stretch=1)

    # -- reading the choices -------------------------------------------------------------------
    def apply_to(self, s: GuiSettings) -> None:
        """Copy the panel's choices into ``s``."""
        s.gain_db = float(self.gain.value())
        s.dynamic_range_db = float(self.dynamic_range.value())
        s.tgc_db = [float(sl.value()) for sl in self.tgc]
        s.denoise_method = self.denoise.currentText()
        s.denoise_strength = self.strength.value() / 100.0
        s.model = self.model.currentText()
        s.sweep_mm_s = SWEEP_SPEEDS_MM_S[self.sweep.currentIndex()]
        s.show_classes = self.show_classes.isChecked()
        s.show_motion = self.show_motion.isChecked()
        s.show_motion_network = self.show_motion_network.isChecked()
        s.show_rate = self.show_rate.isChecked()
        s.caliper_kind = self.caliper.currentData()
        s.n_cycles = self.n_cycles.value()
        s.last_stream = self.stream_edit.text().strip()
        s.last_scenario = self.scenario_combo.currentText()

    def set_gain_db(self, gain_db: float) -> None:
        """Move the gain slider to ``gain_db`` without emitting ``processing_changed``."""
        self.gain.blockSignals(True)
        self.gain.setValue(int(round(gain_db)))
        self.gain.blockSignals(False)

    def show_level(self, text: str, tooltip: str) -> None:
        """Say how 0 dB of the image is set (under the gain)."""
        if text != self.level_label.text():
            self.level_label.setText(text)
            self.level_label.setToolTip(tooltip)

    def show_gate(self, depth_m: float | None, scale: M.CaliperScale = M.RF_SCALE) -> None:
        """Show the tracking gate: its depth (in the units of ``scale``), or "automatic" (None)."""
        self.gate_label.setText("auto (Shift+click)" if depth_m is None else scale.depth_text(depth_m))

    def add_measurement(self, m: M.Measurement) -> None:
        self.table.insertRow(self.table.rowCount())
        self.set_measurement(self.table.rowCount() - 1, m)
        self.table.scrollToBottom()

    def set_measurement(self, r: int, m: M.Measurement) -> None:
        """Show measurement ``m`` in row ``r`` (a value in pixels: its note in the last column)."""
        value = QTableWidgetItem(m.value_text())
        if m.note:
            normal = QTableWidgetItem(m.note)
            normal.setToolTip(m.note)
        else:
            normal = QTableWidgetItem("" if m.normal is None else
                                      ("ok " if m.in_range else "out ") + m.normal.text(m.unit))
        if m.in_range is False:
            normal.setForeground(Qt.GlobalColor.red)
        for c, item in enumerate((QTableWidgetItem(m.name), value, normal)):
            self.table.setItem(r, c, item)

    def clear_table(self) -> None:
        self.table.setRowCount(0)


class ReviewBar(QWidget):
    """Timeline slider, play/pause, playback speed, single step, previous/next class change.

    The slider runs in milliseconds over the reviewable span set by :meth:`set_span`.
    Signals: ``seek(t_s)`` when the user releases the slider or clicks its groove; ``play_toggled(bool)`` (True =
    play); ``speed_changed(float)``; ``step(int)`` (-1 / +1); ``jump_class(int)`` (-1 / +1).
    """

    seek = pyqtSignal(float)
    play_toggled = pyqtSignal(bool)
    speed_changed = pyqtSignal(float)
    step = pyqtSignal(int)
    jump_class = pyqtSignal(int)

    def __init__(self) -> None:
        super().__init__()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        self.play = QPushButton("Pause")
        self.play.setCheckable(True)
        self.play.setChecked(True)
        self.play.toggled.connect(self._play)
        lay.addWidget(self.play)
        self.speed = QComboBox()
        self.speed.addItems([f"{v:g}x" for v in PLAYBACK_SPEEDS])
        self.speed.setCurrentIndex(PLAYBACK_SPEEDS.index(1.0))
        self.speed.currentIndexChanged.connect(lambda i: self.speed_changed.emit(PLAYBACK_SPEEDS[i]))
        lay.addWidget(self.speed)
        for text, tip, sig, d in (("|<<", "Previous class change (PgUp)", self.jump_class, -1),
                                  ("<", "Step back (Left)", self.step, -1),
                                  (">", "Step forward (Right)", self.step, 1),
                                  (">>|", "Next class change (PgDown)", self.jump_class, 1)):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.setMaximumWidth(44)
            b.clicked.connect(lambda _c, sig=sig, d=d: sig.emit(d))
            lay.addWidget(b)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.sliderReleased.connect(lambda: self.seek.emit(self.slider.value() / 1e3))
        # a click on the groove (page step) seeks too; dragging seeks on release
        self.slider.actionTriggered.connect(
            lambda _action: None if self.slider.isSliderDown() else self.seek.emit(self.slider.sliderPosition() / 1e3))
        lay.addWidget(self.slider, stretch=1)
        self.position = QLineEdit()
        self.position.setReadOnly(True)
        self.position.setMaximumWidth(150)
        lay.addWidget(self.position)

    def _play(self, on: bool) -> None:
        self.play.setText("Pause" if on else "Play")
        self.play_toggled.emit(on)

    def set_playing(self, on: bool) -> None:
        """Show the play state without emitting ``play_toggled``."""
        self.play.blockSignals(True)
        self.play.setChecked(on)
        self.play.setText("Pause" if on else "Play")
        self.play.blockSignals(False)

    def set_span(self, t0_s: float, t1_s: float, t_s: float) -> None:
        """Reviewable span [t0_s, t1_s] and current position t_s (ignored while dragging)."""
        if self.slider.isSliderDown():
            return
        self.slider.setRange(int(t0_s * 1e3), int(t1_s * 1e3))
        self.slider.setValue(int(t_s * 1e3))
        self.position.setText(f"{t_s:.2f} s / {t1_s:.2f} s")
