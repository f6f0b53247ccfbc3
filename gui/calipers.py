"""Calipers on the M-mode plot: clicks become points, points become measurements.

The tool listens to left clicks inside the M-mode plot (Shift+click places the tracking
gate instead: :class:`mmode.gui.mmode_view.GateViewBox`), converts them to
``(t_s, depth_m)`` with the plot's own view mapping (x in s, y in cm) and, once the active
kind (:data:`mmode.gui.measurements.KIND_POINTS`) has enough points, computes the
measurement with :mod:`mmode.gui.measurements` in the units of the image's calibration
(:meth:`CaliperTool.set_scale`, :mod:`mmode.gui.calibration`) and draws it: a movable handle
per point, a line per point pair and a label. The measurement goes to the
``on_measurement`` callback; dragging a handle afterwards recomputes it (with the scale it
was made with) and calls ``on_changed(old, new)``.
"""

from __future__ import annotations

from typing import Callable

import pyqtgraph as pg
from PyQt6.QtCore import QPointF, Qt

from mmode.errors import DataError, describe
from mmode.gui import measurements as M

CALIPER_PEN = (0, 230, 255)
PENDING_BRUSH = (255, 255, 0)

#: What to click for each kind (shown when the tool is chosen).
HINTS = {
    "time": "Time: click the start, then the end",
    "depth": "Depth: click two echoes",
    "slope": "Slope: click two points along the moving echo",
    "heart_rate": "Heart rate: click the same phase of the first and of the last of n cycles",
    "tapse": "TAPSE: click the tricuspid annulus at end-diastole, then at peak systole",
    "epss": "EPSS: click the mitral E point, then the septum",
    "fs": "FS: click the LV walls at end-diastole (2 points), then at end-systole (2 points)",
}


class CaliperTool:
    """Collects caliper points on ``plot`` for the active ``kind``.

    on_measurement : called with each completed :class:`~mmode.gui.measurements.Measurement`.
    on_changed : called with (old, new) when a handle of a drawn measurement is dragged.
    on_error : called with a one-line message when the points do not make a measurement.
    """

    def __init__(self, plot: pg.PlotItem, on_measurement: Callable[[M.Measurement], None],
                 on_changed: Callable[[M.Measurement, M.Measurement], None],
                 on_error: Callable[[str], None] | None = None) -> None:
        self.plot = plot
        self.kind = "time"
        self.n_cycles = 1
        self.enabled = True
        self.scale = M.RF_SCALE
        self.points: list[M.Point] = []
        self._on_measurement = on_measurement
        self._on_changed = on_changed
        self._on_error = on_error or (lambda msg: None)
        self._pending = pg.ScatterPlotItem(size=12, symbol="+", pen=pg.mkPen(PENDING_BRUSH, width=2))
        plot.addItem(self._pending, ignoreBounds=True)
        self._drawn: list[_Drawn] = []
        plot.scene().sigMouseClicked.connect(self._clicked)

    def set_kind(self, kind: str, n_cycles: int = 1) -> None:
        """Change the measurement kind; drops unfinished points."""
        if kind not in M.KIND_POINTS:
            raise DataError(describe("caliper", f"kind one of {tuple(M.KIND_POINTS)}", repr(kind)))
        self.kind, self.n_cycles = kind, int(n_cycles)
        self.points = []
        self._pending.setData([], [])

    def set_scale(self, scale: M.CaliperScale) -> None:
        """The calibration of the image new measurements are made on."""
        self.scale = scale

    def _clicked(self, event) -> None:
        if not self.enabled or event.button() != Qt.MouseButton.LeftButton:
            return
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:  # the tracking gate's click
            return
        vb = self.plot.vb
        pos = event.scenePos()
        if not vb.sceneBoundingRect().contains(pos):
            return
        p = vb.mapSceneToView(pos)
        self.add_point(p.x(), p.y() / 100.0)
        event.accept()

    def add_point(self, t_s: float, depth_m: float) -> M.Measurement | None:
        """Add a point in data coordinates; return the measurement when it completes one."""
        self.points.append((float(t_s), float(depth_m)))
        need = M.KIND_POINTS[self.kind]
        if len(self.points) < need:
            self._pending.setData([t for t, _ in self.points], [z * 100 for _, z in self.points])
            return None
        pts, self.points = self.points, []
        self._pending.setData([], [])
        try:
            m = M.measure(self.kind, pts, self.n_cycles, self.scale)
        except DataError as exc:
            self._on_error(str(exc))
            return None
        self.draw(m)
        self._on_measurement(m)
        return m

    def draw(self, m: M.Measurement) -> None:
        """Draw a measurement: a movable handle per point, a segment per pair, a label.

        Dragging a handle recomputes the measurement and reports it to ``on_changed``.
        """
        pen = pg.mkPen(CALIPER_PEN, width=2)
        drawn = _Drawn(m)
        for t, z in m.points:
            h = pg.TargetItem(pos=(t, z * 100), size=13, symbol="+", pen=pen, movable=True)
            h.sigPositionChanged.connect(lambda _h, d=drawn: self._moved(d))
            drawn.handles.append(h)
        for _ in range(len(m.points) // 2):
            drawn.segments.append(pg.PlotDataItem(pen=pen))
        drawn.label = pg.TextItem("", color=CALIPER_PEN, anchor=(0, 1), fill=(0, 0, 0, 160))
        for item in drawn.items():
            self.plot.addItem(item, ignoreBounds=True)
        drawn.update(m)
        self._drawn.append(drawn)

    def _moved(self, drawn: "_Drawn") -> None:
        pts = [(h.pos().x(), h.pos().y() / 100.0) for h in drawn.handles]
        try:
            m = M.measure(drawn.m.kind, pts, int(drawn.m.extra.get("n_cycles", 1)), drawn.m.scale)
        except DataError as exc:  # e.g. a slope dragged to zero duration: keep the last value
            self._on_error(str(exc))
            return
        old = drawn.m
        drawn.update(m)
        self._on_changed(old, m)

    def undo(self) -> bool:
        """Drop the unfinished points, or else the last drawn measurement; True if one was removed."""
        if self.points:
            self.points = []
            self._pending.setData([], [])
            return False
        if not self._drawn:
            return False
        for item in self._drawn.pop().items():
            self.plot.removeItem(item)
        return True

    def clear(self) -> None:
        """Remove every drawn measurement and unfinished point."""
        for drawn in self._drawn:
            for item in drawn.items():
                self.plot.removeItem(item)
        self._drawn = []
        self.points = []
        self._pending.setData([], [])

    @property
    def handles(self) -> list[list[pg.TargetItem]]:
        """The movable handles of each drawn measurement, oldest first."""
        return [d.handles for d in self._drawn]


class _Drawn:
    """The plot items of one drawn measurement."""

    def __init__(self, m: M.Measurement) -> None:
        self.m = m
        self.handles: list[pg.TargetItem] = []
        self.segments: list[pg.PlotDataItem] = []
        self.label: pg.TextItem | None = None

    def items(self) -> list:
        return [*self.segments, *self.handles, self.label]

    def update(self, m: M.Measurement) -> None:
        """Move segments and label to the points of ``m`` and show its value."""
        self.m = m
        for seg, a, b in zip(self.segments, m.points[0::2], m.points[1::2]):
            seg.setData([a[0], b[0]], [a[1] * 100, b[1] * 100])
        t, z = m.points[-1]
        self.label.setText(m.text())
        self.label.setPos(QPointF(t, z * 100))
