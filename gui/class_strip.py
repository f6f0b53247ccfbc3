"""The class timeline: a coloured strip under the M-mode image, one colour per class.

The strip shares the time axis of the M-mode plot. It is drawn as one rectangle per run of
columns with the same label (a few per screen), in the colour of :func:`class_colour`.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF
from PyQt6.QtGui import QColor

from mmode.ingest.meta import CLASSES

#: RGB colour of each class of :data:`mmode.ingest.meta.CLASSES`, chosen to be told apart at a glance.
CLASS_COLOURS = {
    "lung_sliding": (46, 204, 64),
    "no_sliding": (255, 65, 54),
    "lung_point": (255, 153, 0),
    "sinusoid": (0, 176, 255),
    "cardiac_regular": (240, 18, 190),
    "cardiac_irregular": (177, 13, 201),
    "no_contact": (170, 170, 170),
}
NO_CLASS_COLOUR = (40, 40, 40)


def class_colour(index: int, classes: tuple[str, ...] = CLASSES) -> tuple[int, int, int]:
    """RGB colour of class ``index`` (-1 or unknown -> the no-class colour)."""
    if 0 <= index < len(classes):
        return CLASS_COLOURS.get(classes[index], (255, 255, 255))
    return NO_CLASS_COLOUR


def pretty(name: str) -> str:
    """``"lung_sliding"`` -> ``"Lung sliding"``."""
    return name.replace("_", " ").capitalize()


class ClassRuns(pg.GraphicsObject):
    """Runs of equal labels as coloured rectangles, plot coordinates (x: s, y: 0..1).

    ``runs`` is the list of ``(t_start_s, t_stop_s, label)`` drawn, label -1 = none.
    """

    def __init__(self) -> None:
        super().__init__()
        self.classes: tuple[str, ...] = CLASSES
        self.runs: list[tuple[float, float, int]] = []
        self._rect = QRectF()

    def set_labels(self, labels: np.ndarray, t0_s: float, col_dt_s: float, classes: tuple[str, ...]) -> None:
        """Column ``k`` of ``labels`` (n,) int, an index into ``classes``, covers
        ``[t0_s + k dt, t0_s + (k + 1) dt]``."""
        lab = np.asarray(labels)
        n = lab.shape[0]
        self.classes = tuple(classes)
        self.runs = []
        if n:
            edges = np.concatenate(([0], np.flatnonzero(lab[1:] != lab[:-1]) + 1, [n]))
            self.runs = [(t0_s + a * col_dt_s, t0_s + b * col_dt_s, int(lab[a])) for a, b in pairwise(edges)]
        self.prepareGeometryChange()
        self._rect = QRectF(t0_s, 0.0, n * col_dt_s, 1.0)
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(self._rect)

    def paint(self, painter, *args) -> None:
        for t_start, t_stop, label in self.runs:
            painter.fillRect(QRectF(t_start, 0.0, t_stop - t_start, 1.0), QColor(*class_colour(label, self.classes)))


class ClassStrip(pg.PlotItem):
    """A thin plot showing the label of every display column as a colour."""

    def __init__(self) -> None:
        super().__init__()
        self.setMaximumHeight(22)
        self.setMinimumHeight(22)
        self.hideAxis("left")
        self.hideAxis("bottom")
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.setMenuEnabled(False)
        self.runs = ClassRuns()
        self.addItem(self.runs)
        self.setYRange(0, 1, padding=0)

    def render(self, labels: np.ndarray, t0_s: float, col_dt_s: float, classes: tuple[str, ...]) -> None:
        """Draw ``labels`` (n_cols,) int (-1 = none, else an index into ``classes``), column k
        spanning ``t0_s + [k, k + 1] col_dt_s``."""
        self.runs.set_labels(labels, t0_s, col_dt_s, classes)
