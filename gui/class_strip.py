"""The class timeline: a coloured strip under the M-mode image, one colour per class.

The strip shares the time axis of the M-mode plot. Its colours come from a 256-entry lookup
table indexed by ``label + 1`` (index 0 = no classification yet, drawn dark).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF

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


def class_lut(classes: tuple[str, ...] = CLASSES) -> np.ndarray:
    """(256, 3) uint8 lookup table: entry ``label + 1`` is the colour of ``label``."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = NO_CLASS_COLOUR
    for i in range(len(classes)):
        lut[i + 1] = class_colour(i, classes)
    return lut


def pretty(name: str) -> str:
    """``"lung_sliding"`` -> ``"Lung sliding"``."""
    return name.replace("_", " ").capitalize()


class ClassStrip(pg.PlotItem):
    """A thin plot showing the label of every display column as a colour."""

    def __init__(self, classes: tuple[str, ...] = CLASSES) -> None:
        super().__init__()
        self.classes = tuple(classes)
        self.setMaximumHeight(22)
        self.setMinimumHeight(22)
        self.hideAxis("left")
        self.hideAxis("bottom")
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(class_lut(self.classes))
        self.image.setLevels((0, 255))
        self.addItem(self.image)
        self.setYRange(0, 1, padding=0)
        self._row = np.zeros((1, 0), np.uint8)

    def render(self, labels: np.ndarray, t0_s: float, width_s: float) -> None:
        """Draw ``labels`` (n_cols,) int (-1 = none) spanning ``[t0_s, t0_s + width_s]``."""
        n = labels.shape[0]
        if self._row.shape[1] != n:
            self._row = np.zeros((1, n), np.uint8)
        np.add(labels, 1, out=self._row[0], casting="unsafe")
        self.image.setImage(self._row, autoLevels=False, levels=(0, 255))
        self.image.setRect(QRectF(t0_s, 0.0, max(width_s, 1e-9), 1.0))
