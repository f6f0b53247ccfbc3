"""The pixels of the scrolling M-mode image, converted once per column and drawn without a copy.

:class:`ScrollingImage` keeps the display columns in a persistent RGBX buffer. A display
column is converted from grey levels when it first comes into view and never again; each
frame only moves the source rectangle that is drawn. This replaces pyqtgraph's ImageItem,
which converts and wraps the whole visible image on every frame.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF
from PyQt6.QtGui import QImage

from mmode.gui.mmode_data import Window


def _grey_rgbx() -> np.ndarray:
    """(256,) uint32 whose bytes in memory are (g, g, g, 255): grey level g as an RGBX pixel."""
    rgbx = np.full((256, 4), 255, np.uint8)
    rgbx[:, :3] = np.arange(256, dtype=np.uint8)[:, None]
    return rgbx.view(np.uint32).reshape(256)


#: Grey lookup table applied here rather than by Qt: an RGBX image is drawn by Qt about four
#: times faster than an 8-bit indexed one.
GREY_RGBX = _grey_rgbx()


class ScrollingImage(pg.GraphicsObject):
    """Display columns of the M-mode ring, drawn in plot coordinates (s, cm).

    Display column ``d`` shows ring column ``d * step``: columns are picked by absolute index,
    so the same columns stay on screen while the image scrolls (no shimmer). The buffer is
    ``(n_rows, 2 * width)`` RGBX pixels and holds display column ``d`` twice, at slots
    ``d % width`` and ``d % width + width``; any ``width`` consecutive columns are then one
    contiguous rectangle of it, drawn with a single ``drawImage``.

    ``n_converted`` counts the display columns converted so far (for tests and benchmarks).
    """

    def __init__(self) -> None:
        super().__init__()
        self._rgbx = np.zeros((1, 2), np.uint32)
        self._qimage = QImage()
        self._width = 1
        self._key: tuple | None = None  # (ring epoch, step, n_rows) of the columns held
        self._lo = self._hi = 0  # display columns held in the buffer, [lo, hi)
        self._source = QRectF()  # buffer pixels drawn
        self._rect = QRectF()  # where they are drawn, plot coordinates
        self.n_converted = 0

    def show_window(self, window: Window, step: int, rect: QRectF) -> None:
        """Show the display columns of ``window`` (every ``step``-th ring column, by absolute
        index) stretched over ``rect`` (x: seconds, y: cm, top = shallowest row)."""
        d_a = -(-window.start // step)  # first and one past the last display column
        d_b = -(-window.stop // step)
        n = d_b - d_a
        n_rows = window.image.shape[1]
        key = (window.epoch, step, n_rows)
        if key != self._key or n > self._width:
            self._allocate(n, n_rows)
            self._key = key
            self._lo = self._hi = d_a
        if d_b <= self._lo or d_a >= self._hi:  # nothing held is in view (seek, first frame)
            self._convert(window, step, d_a, d_b)
        else:
            if d_a < self._lo:
                self._convert(window, step, d_a, self._lo)
            if d_b > self._hi:
                self._convert(window, step, self._hi, d_b)
        self._lo, self._hi = d_a, d_b
        self.prepareGeometryChange()
        self._source = QRectF(d_a % self._width, 0, n, n_rows)
        self._rect = QRectF(rect)
        self.update()

    def drawn(self) -> np.ndarray:
        """The RGBX pixels on screen, (n_rows, display columns, 4) uint8 (a view)."""
        s = int(self._source.left())
        cols = self._rgbx[:, s:s + int(self._source.width())]
        return cols.view(np.uint8).reshape(*cols.shape, 4)

    def _allocate(self, n_cols: int, n_rows: int) -> None:
        # room for a quarter more columns than now: a slightly wider plot needs no new buffer
        self._width = n_cols + n_cols // 4 + 16
        self._rgbx = np.zeros((n_rows, 2 * self._width), np.uint32)
        pixels = self._rgbx.view(np.uint8).reshape(n_rows, 2 * self._width, 4)
        self._qimage = pg.functions.ndarray_to_qimage(pixels, QImage.Format.Format_RGBX8888)

    def _convert(self, window: Window, step: int, d_a: int, d_b: int) -> None:
        """Convert display columns ``[d_a, d_b)`` of ``window`` into both of their slots."""
        grey = window.image[d_a * step - window.start:d_b * step - window.start:step]  # (m, n_rows)
        slots = np.arange(d_a, d_b) % self._width
        rgbx = GREY_RGBX[grey.T]
        self._rgbx[:, slots] = rgbx
        self._rgbx[:, slots + self._width] = rgbx
        self.n_converted += d_b - d_a

    def boundingRect(self) -> QRectF:
        return QRectF(self._rect)

    def paint(self, painter, *args) -> None:
        if self._source.width() > 0:
            painter.drawImage(self._rect, self._qimage, self._source)
