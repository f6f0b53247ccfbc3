"""The B-mode pane of a cine: the frame at the time of the M-mode's current line, with the
M-line drawn on it and draggable.

Plot coordinates are frame pixels, as those of the M-line and ``--mline``: x the column, y
the row (downward), both from 0 at the centre of the top-left pixel; the aspect is locked.
The M-line is a :class:`pyqtgraph.LineSegmentROI`: drag one of its ends to move that end,
the line itself to move both. When the mouse is released :attr:`BModeView.line_moved`
gives the new line ``(x0, y0, x1, y1)`` (its first end is depth 0 of the M-mode); the window
recomputes the M-mode from the cine in memory (:mod:`mmode.gui.cine`).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, pyqtSignal
from PyQt6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from mmode.gui.status import TimedPaint
from mmode.ingest.cine import ArrayFrames

#: The M-line: the cyan of the calipers' family, 2 px, over the grey B-mode.
MLINE_PEN = (0, 200, 255)
MLINE_HOVER_PEN = (255, 220, 0)


class _FramePlot(TimedPaint, pg.PlotWidget):
    """The plot of the B-mode frame (its paints are timed with the window's frames)."""


class BModeView(QWidget):
    """A text line (the M-line, its length or why it is in pixels), the B-mode frame and the
    M-line on it.

    ``line_moved(line)`` is emitted with ``(x0, y0, x1, y1)`` frame pixels when a drag of the
    M-line ends. :meth:`show_frame` draws a frame only when it differs from the one shown.
    ``view.on_paint(start_s, stop_s)`` is told of every paint of the frame (frame timing).
    """

    line_moved = pyqtSignal(object)

    def __init__(self) -> None:
        super().__init__()
        self.header = QLabel("")
        self.header.setWordWrap(True)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.view = _FramePlot()
        self.view.setBackground((12, 12, 12))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.view, stretch=1)
        self.plot = self.view.getPlotItem()
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("left", "y (px)")
        self.plot.setLabel("bottom", "x (px)")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.roi = pg.LineSegmentROI([(0.0, 0.0), (0.0, 1.0)], pen=pg.mkPen(MLINE_PEN, width=2),
                                     hoverPen=pg.mkPen(MLINE_HOVER_PEN, width=2))
        self.roi.sigRegionChangeFinished.connect(lambda _roi: self.line_moved.emit(self.line()))
        self.plot.addItem(self.roi)
        self.frames: ArrayFrames | None = None
        self.frame_index = -1

    def set_cine(self, frames: ArrayFrames) -> None:
        """Show ``frames`` (the cine in memory), from its first frame."""
        height, width = frames.shape
        self.frames = frames
        self.frame_index = -1
        self.show_frame(0)
        # pixel (x, y) covers [x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]: its centre at (x, y)
        self.image.setRect(QRectF(-0.5, -0.5, width, height))
        self.plot.setRange(xRange=(-0.5, width - 0.5), yRange=(-0.5, height - 0.5), padding=0)

    def clear(self) -> None:
        """Drop the cine (its frames' memory) and the picture."""
        self.frames = None
        self.frame_index = -1
        self.image.clear()

    def show_frame(self, index: int) -> None:
        """Draw frame ``index`` of the cine (nothing when it is already shown)."""
        if self.frames is None or index == self.frame_index:
            return
        self.frame_index = index
        grey = np.clip(self.frames.frame(index), 0, 255).astype(np.uint8)
        self.image.setImage(grey, levels=(0, 255), autoLevels=False)

    def set_line(self, line: tuple[float, float, float, float], text: str) -> None:
        """Draw the M-line ``(x0, y0, x1, y1)`` (no :attr:`line_moved`) and ``text`` above the frame."""
        x0, y0, x1, y1 = line
        start, end = self.roi.getHandles()
        self.roi.setPos((0.0, 0.0), update=False, finish=False)
        self.roi.movePoint(start, (x0, y0), finish=False)
        self.roi.movePoint(end, (x1, y1), finish=False)
        self.header.setText(text)

    def line(self) -> tuple[float, float, float, float]:
        """The M-line as drawn, ``(x0, y0, x1, y1)`` frame pixels."""
        (x0, y0), (x1, y1) = ((p.x(), p.y()) for p in (self.roi.mapToParent(h.pos()) for h in self.roi.getHandles()))
        return float(x0), float(y0), float(x1), float(y1)
