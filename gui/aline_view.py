"""The A-line view: echo level of the current line against depth, beside the M-mode image.

Depth (cm) runs downward on the y axis, shared with the M-mode plot; the x axis is the
displayed level in dB (-DR .. 0), recovered from the grey level of the display column.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QGraphicsItem

from mmode.gui.mmode_view import quiet_axes
from mmode.gui.status import TimedPaint


class ALineView(TimedPaint, pg.PlotWidget):
    """One line, level (dB) against depth (cm)."""

    def __init__(self) -> None:
        super().__init__()
        self.setBackground((12, 12, 12))
        self.plot = self.getPlotItem()
        self.plot.invertY(True)
        self.plot.setLabel("bottom", "Level (dB)")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.curve = self.plot.plot(pen=pg.mkPen((200, 230, 255), width=1))
        self.setMinimumWidth(140)
        self.setMaximumWidth(220)
        self._dr_db = None
        quiet_axes(self.plot)
        # the level axis never scrolls either: drawn once into a cached pixmap
        self.plot.getAxis("bottom").setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def render(self, grey_column: np.ndarray, row_depths_m: np.ndarray, dynamic_range_db: float) -> None:
        """Draw one display column (n_rows,) uint8 at depths (n_rows,) m, mapped to dB."""
        level_db = grey_column.astype(np.float32) * (dynamic_range_db / 255.0) - dynamic_range_db
        self.curve.setData(level_db, np.asarray(row_depths_m) * 100.0)
        if self._dr_db != dynamic_range_db:
            self.plot.setXRange(-dynamic_range_db, 0, padding=0.02)
            self._dr_db = dynamic_range_db
