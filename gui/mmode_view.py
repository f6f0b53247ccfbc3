"""The scrolling M-mode image with its overlays (class strip, motion trace, tracking gate,
rate, label).

Plot coordinates are seconds (x, acquisition time) and centimetres (y, depth, increasing
downward). The pixels are a :class:`~mmode.gui.scroll_image.ScrollingImage` (each display
column converted once), the time axis a :class:`~mmode.gui.time_axis.TimeAxis` (painted
directly while it scrolls). Only the GUI thread calls :meth:`MModeView.render`.

Mouse: Shift+click or Shift+drag on the image places the tracking gate
(:attr:`MModeView.gate_requested`); plain clicks belong to the calipers
(:class:`~mmode.gui.calipers.CaliperTool`).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, Qt, pyqtSignal
from PyQt6.QtWidgets import QGraphicsItem

from mmode.gui.class_strip import ClassStrip, class_colour, pretty
from mmode.gui.mmode_data import OverlayRate, Window, trace_by_quality
from mmode.gui.scroll_image import ScrollingImage
from mmode.gui.status import TimedPaint
from mmode.gui.time_axis import TimeAxis
from mmode.ingest.meta import CLASSES

#: Motion trace: opaque yellow, one pixel wide. A 2 px pen went through Qt's stroker and took
#: 0.6 ms of every frame at 2 kHz, three times the 1 px line.
MOTION_PEN = (255, 200, 0)
#: Where the tracker's quality is low (:data:`~mmode.gui.mmode_data.LOW_QUALITY`): the same
#: yellow, faint. A second 1 px curve, not per-point pens.
MOTION_DIM_PEN = (255, 200, 0, 90)
#: The tracking gate the user placed: a horizontal orange line (the trace's colour family)
#: over a dark 3 px band, so that it shows on bright tissue and on black alike. Two straight
#: lines: no stroking cost worth measuring.
GATE_PEN = (255, 140, 0)
#: The learned motion trace (``Results.motion_network``): cyan, one pixel, over the classic one.
MOTION_NET_PEN = (0, 220, 255)
GATE_HALO_PEN = (0, 0, 0, 150)


def quiet_axes(plot: pg.PlotItem) -> None:
    """Axes that cost nothing when the view scrolls: no SI prefix on any of the four axes
    (pyqtgraph re-lays out the label text at every range change otherwise, hidden axes too)
    and the left (depth) axis drawn once into a cached pixmap."""
    for name in ("left", "bottom", "top", "right"):
        plot.getAxis(name).enableAutoSIPrefix(False)
    plot.getAxis("left").setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)


def set_depth_axis(plot: pg.PlotItem, m_per_px: float | None, label: bool = True) -> None:
    """The depth axis of ``plot`` (y in cm) in cm, or, when ``m_per_px`` is given (a depth
    that is not calibrated), in image pixels: never in cm the image does not have."""
    axis = plot.getAxis("left")
    axis.setScale(1.0 if m_per_px is None else 1.0 / (100.0 * m_per_px))
    if label:
        plot.setLabel("left", "Depth (cm)" if m_per_px is None else "Depth (px, not calibrated)")


class GateViewBox(pg.ViewBox):
    """The M-mode plot's view box: a left Shift+click, or a left drag begun with Shift held,
    reports the depth under the mouse to ``on_gate(depth_m, finished)`` (``finished``: the
    click, or the end of the drag). Other mouse events behave as in any ViewBox."""

    def __init__(self, on_gate) -> None:
        super().__init__()
        self._on_gate = on_gate
        self._dragging_gate = False

    def _report(self, ev, finished: bool) -> None:
        ev.accept()
        self._on_gate(self.mapSceneToView(ev.scenePos()).y() / 100.0, finished)

    @staticmethod
    def _shift_left(ev) -> bool:
        return ev.button() == Qt.MouseButton.LeftButton and bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)

    def mouseClickEvent(self, ev) -> None:
        if self._shift_left(ev):
            self._report(ev, True)
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.isStart():
            self._dragging_gate = self._shift_left(ev)
        if not self._dragging_gate:
            super().mouseDragEvent(ev, axis)
            return
        if ev.isFinish():
            self._dragging_gate = False
        self._report(ev, ev.isFinish())


class MModeView(TimedPaint, pg.GraphicsLayoutWidget):
    """Header line (class, confidence, rate), M-mode plot, class strip.

    ``plot`` is the M-mode PlotItem (calipers attach to it); ``header`` the text line;
    ``on_paint(start_s, stop_s)`` is told of every paint (frame timing).
    ``gate_requested(depth_m, finished)`` is emitted on a Shift+click (finished) and during
    a Shift+drag (finished on release) on the image.
    """

    gate_requested = pyqtSignal(float, bool)

    def __init__(self, classes: tuple[str, ...] = CLASSES) -> None:
        super().__init__()
        self.classes = tuple(classes)
        self.setBackground((12, 12, 12))
        self.header = pg.LabelItem(justify="left", size="14pt")
        self.addItem(self.header, row=0, col=0)
        self.plot = self.addPlot(row=1, col=0, axisItems={"bottom": TimeAxis()},
                                 viewBox=GateViewBox(self.gate_requested.emit))
        self.plot.invertY(True)
        set_depth_axis(self.plot, None)
        self.plot.setLabel("bottom", "Time (s)")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=False, y=True, alpha=0.15)
        self.image = ScrollingImage()
        self.plot.addItem(self.image)
        # uncertain stretches underneath, the certain trace on top
        self.motion_dim_curve = pg.PlotCurveItem(pen=pg.mkPen(MOTION_DIM_PEN, width=1), connect="finite")
        self.plot.addItem(self.motion_dim_curve)
        self.motion_curve = pg.PlotCurveItem(pen=pg.mkPen(MOTION_PEN, width=1), connect="finite")
        self.plot.addItem(self.motion_curve)
        self.net_curve = pg.PlotCurveItem(pen=pg.mkPen(MOTION_NET_PEN, width=1), connect="finite")
        self.net_curve.setVisible(False)
        self.plot.addItem(self.net_curve)
        self.legend = pg.LegendItem(offset=(-10, 10), labelTextColor=(220, 220, 220), brush=(0, 0, 0, 150))
        self.legend.setParentItem(self.plot.vb)
        self.legend.addItem(self.motion_curve, "classic tracker")
        self.legend.addItem(self.net_curve, "network")
        self.legend.setVisible(False)
        self.gate_halo = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(GATE_HALO_PEN, width=3))
        self.gate_line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(GATE_PEN, width=1))
        for line in (self.gate_halo, self.gate_line):
            line.setVisible(False)
            self.plot.addItem(line, ignoreBounds=True)
        self.cursor = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((80, 160, 255), width=1))
        self.cursor.setVisible(False)
        self.plot.addItem(self.cursor, ignoreBounds=True)
        self.strip = ClassStrip()
        self.addItem(self.strip, row=2, col=0)
        self.strip.setXLink(self.plot)
        self.ci.layout.setRowStretchFactor(1, 10)
        self.show_classes = True
        self.show_motion = True
        self.show_motion_network = True
        self.show_rate = True
        self.no_class_text = "Class: waiting for a full window"
        self._depth_cm = (0.0, 4.0)
        self.plot.setRange(xRange=(-5.0, 0.0), yRange=self._depth_cm, padding=0)
        self._header_html = ""
        self.set_header(None, None, None)
        quiet_axes(self.plot)
        quiet_axes(self.strip)

    # -- geometry ----------------------------------------------------------------------------
    def set_depths(self, row_depths_m: np.ndarray) -> None:
        """Depth of the display rows (n_rows,), metres; fixes the y range."""
        d = np.asarray(row_depths_m, np.float64)
        step = (d[-1] - d[0]) / max(len(d) - 1, 1)
        # row k covers [d_k - step/2, d_k + step/2]
        self._depth_cm = ((d[0] - step / 2) * 100, (d[-1] + step / 2) * 100)
        self.plot.setYRange(*self._depth_cm, padding=0)

    def plot_width_px(self) -> int:
        return max(1, int(self.plot.vb.width()))

    # -- drawing -----------------------------------------------------------------------------
    def render(self, window: Window, col_dt_s: float, window_s: float, x_end_s: float,
               cursor_t_s: float | None = None, motion: bool = True) -> None:
        """Draw ``window`` in a plot showing ``[x_end_s - window_s, x_end_s]`` seconds.

        col_dt_s : time between display columns, s.  cursor_t_s : review cursor (None = hidden).
        motion : False hides the motion trace whatever its toggle (no tissue to track).
        """
        n = window.n_cols
        if n == 0:
            return
        t0 = float(window.t_s[0]) - col_dt_s  # column k covers (t_s[k] - col_dt_s, t_s[k]]
        # at most one column per screen pixel: every step-th column, chosen by its absolute
        # index so that the same columns stay on screen as the image scrolls (no shimmer)
        step = max(1, -(-n // self.plot_width_px()))
        first = (-window.start) % step
        n_drawn = -(-(n - first) // step)  # not zero: step <= n
        z0, z1 = self._depth_cm
        x0 = t0 + first * col_dt_s
        self.image.show_window(window, step, QRectF(x0, z0, n_drawn * step * col_dt_s, z1 - z0))
        self.plot.setXRange(x_end_s - window_s, x_end_s, padding=0)

        self._render_trace(window, first, step, motion and self.show_motion)
        self._render_net_trace(window, first, step, motion and self.show_motion_network)
        self.strip.setVisible(self.show_classes)
        if self.show_classes:
            self.strip.render(window.label, t0, col_dt_s, self.classes)
        self.cursor.setVisible(cursor_t_s is not None)
        if cursor_t_s is not None:
            self.cursor.setValue(cursor_t_s)
        # settle the view transforms now: left to the paint, they change geometry during it
        # and Qt paints the whole view a second time
        self.plot.vb.prepareForPaint()
        self.strip.vb.prepareForPaint()

    def _render_trace(self, window: Window, first: int, step: int, show: bool) -> None:
        """The motion trace through the drawn columns: certain stretches in the full pen,
        uncertain ones (quality below :data:`~mmode.gui.mmode_data.LOW_QUALITY`) faint."""
        curves = (self.motion_curve, self.motion_dim_curve)
        if not show or not np.isfinite(window.track_depth_m).any():
            for curve in curves:
                curve.setVisible(False)
            return
        # same columns as the image: stroking more points than pixels costs paint time
        t = window.t_s[first::step]
        parts = trace_by_quality(window.track_depth_m[first::step] * 100.0, window.track_quality[first::step])
        for curve, depth_cm in zip(curves, parts):
            visible = bool(np.isfinite(depth_cm).any())
            if visible:
                curve.setData(t, depth_cm)
            curve.setVisible(visible)

    def _render_net_trace(self, window: Window, first: int, step: int, show: bool) -> None:
        """The learned trace (cyan) through the drawn columns, and the legend naming both
        traces while it is drawn."""
        z = window.net_depth_m
        show = show and z is not None and bool(np.isfinite(z[first::step]).any())
        if show:
            self.net_curve.setData(window.t_s[first::step], z[first::step] * 100.0)
        self.net_curve.setVisible(show)
        self.legend.setVisible(show)

    def set_gate(self, depth_m: float | None) -> None:
        """Show the tracking gate at ``depth_m`` (None: automatic, no marker)."""
        for line in (self.gate_halo, self.gate_line):
            line.setVisible(depth_m is not None)
            if depth_m is not None:
                line.setValue(depth_m * 100.0)

    def set_header(self, label: int | None, confidence: float | None, rate: OverlayRate | None) -> None:
        """The text line above the image: current class with confidence, and the rate."""
        parts = []
        if self.show_classes:
            if label is None or label < 0:
                parts.append(f"<span style='color:#999'>{self.no_class_text}</span>")
            else:
                r, g, b = class_colour(label, self.classes)
                conf = "" if confidence is None or not np.isfinite(confidence) else f" {100 * confidence:.0f} %"
                parts.append(f"<b style='color:rgb({r},{g},{b})'>{pretty(self.classes[label])}</b>{conf}")
        if self.show_rate:
            if rate is None:
                parts.append("<span style='color:#999'>Rate -- /min</span>")
            else:
                name = "Heart rate" if rate.kind == "heart" else "Breathing"
                parts.append(f"<span style='color:#ddd'>{name} {rate.rate_per_min:.0f} /min</span>")
        html = "&nbsp;&nbsp;&nbsp;".join(parts) or "&nbsp;"
        if html != self._header_html:  # re-layout of rich text is costly; only on change
            self._header_html = html
            self.header.setText(html)
