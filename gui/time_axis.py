"""The time axis under the scrolling M-mode image, drawn directly on every frame.

pyqtgraph's AxisItem records its line, ticks and labels into a QPicture after every range
change and replays it when painted. A live sweep changes the range on every frame, so that
recording is repeated 60 times a second and took 1-2 ms of the GUI thread's frame.
:class:`TimeAxis` keeps pyqtgraph's tick spacing, pens and font but paints straight away.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QLineF, QPointF
from PyQt6.QtGui import QFont, QStaticText, QTransform

#: Tick lengths in pixels, major and minor, pointing towards the labels.
TICK_PX = (5, 3)
#: Labels kept laid out (a label scrolls past in seconds; this is minutes of them).
MAX_CACHED_LABELS = 256


def tick_values(lo: float, hi: float, spacing: float, offset: float = 0.0) -> np.ndarray:
    """Multiples of ``spacing`` (shifted by ``offset``) within ``[lo, hi]``."""
    first = math.ceil((lo - offset) / spacing - 1e-9)
    last = math.floor((hi - offset) / spacing + 1e-9)
    return offset + spacing * np.arange(first, last + 1)


def tick_label(value: float, spacing: float) -> str:
    """``value`` with as many decimals as ``spacing`` needs: ``12`` at 1 s, ``12.5`` at 0.5 s,
    ``12.25`` at 0.05 s."""
    decimals = max(0, -math.floor(math.log10(spacing) + 1e-9))
    text = f"{value:.{decimals}f}"
    return "0" if text.strip("-0.") == "" else text


class TimeAxis(pg.AxisItem):
    """A bottom axis (seconds) for a view whose x range changes on every frame."""

    def __init__(self) -> None:
        super().__init__("bottom")
        self._labels: dict[str, QStaticText] = {}  # laid out once: a label stays for seconds
        self._labels_font = QFont()

    def _label(self, text: str, font: QFont) -> QStaticText:
        """``text`` laid out in ``font`` (kept: a label is drawn for seconds while it scrolls)."""
        if font != self._labels_font or len(self._labels) >= MAX_CACHED_LABELS:
            self._labels.clear()
            self._labels_font = QFont(font)
        label = self._labels.get(text)
        if label is None:
            label = self._labels[text] = QStaticText(text)
            label.prepare(QTransform(), font)  # lays it out now, so that its size is known
        return label

    def paint(self, painter, *args) -> None:
        view = self.linkedView()
        lo, hi = sorted(self.range)
        if view is None or not hi > lo:
            return
        span = view.mapRectToItem(self, view.boundingRect())
        x_of = span.width() / (hi - lo)
        levels = self.tickSpacing(lo, hi, span.width())[:2]
        if not levels:
            return
        font = self.style["tickFont"]
        if font is not None:
            painter.setFont(font)
        painter.setPen(self.pen())
        lines = [QLineF(span.left(), 0.0, span.right(), 0.0)]
        for (spacing, offset), length in zip(levels, TICK_PX):
            for v in tick_values(lo, hi, spacing, offset):
                x = span.left() + (v - lo) * x_of
                lines.append(QLineF(x, 0.0, x, float(length)))
        painter.drawLines(lines)
        painter.setPen(self.textPen())
        spacing, offset = levels[0]
        top = TICK_PX[0] + self.style["tickTextOffset"][1]
        width = self.size().width()
        for v in tick_values(lo, hi, spacing, offset):
            label = self._label(tick_label(v, spacing), painter.font())
            x = span.left() + (v - lo) * x_of - label.size().width() / 2
            if 0.0 <= x and x + label.size().width() <= width:  # a label cut by the edge is left out
                painter.drawStaticText(QPointF(x, top), label)
