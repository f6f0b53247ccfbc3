"""A B-mode cine held in memory for the window: its frames, the M-mode along an M-line, and
the source that plays that M-mode to the engine. No Qt here.

The window decodes a cine (a DICOM multi-frame with a 2D region, a video) once
(:func:`load_cine`); each new M-line recomputes the anatomical M-mode from those frames
(:func:`cine_mmode`, through :func:`mmode.ingest.cine.mline_recording`: the same lines as
``mmode process FILE --mline ...``), and a :class:`CineSource` plays it with a file's review
semantics (a start line, paced at the frame rate times the playback speed). Line ``i`` of
the M-mode is frame ``i`` at ``t = i / prf_hz`` (frames evenly spaced at the median frame
interval), so :func:`frame_at` gives the frame that belongs to a time of the M-mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmode.ingest.cine import ArrayFrames, load_frames, mline_recording
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest.sources import ArraySource, default_block_lines

#: ``Recording.file_format`` of the cine readers: files the window shows with a B-mode pane.
CINE_FORMATS = ("video", "dicom cine")

Line = tuple[float, float, float, float]  # (x0, y0, x1, y1), frame pixels


@dataclass(frozen=True)
class CineMmode:
    """The anatomical M-mode of a cine along one M-line, in memory.

    line : (x0, y0, x1, y1) frame pixels.  meta : its metadata (line rate = frame rate).
    lines : (n_frames, n_samples) float32 grey levels 0..255, one line per frame.
    info : ``Recording.info()`` of it (``mline``: ``px``, ``n_samples``, ``step_m`` metres
    per pixel along the line or None, ``calibration``).
    """

    line: Line
    meta: AcquisitionMeta
    lines: np.ndarray
    info: dict


def load_cine(path: str | Path) -> ArrayFrames:
    """Every frame of the DICOM cine or video at ``path``, decoded into memory (float32 grey
    levels); the file is closed. :class:`~mmode.errors.DataError` for a bad or too large file."""
    from mmode.ingest.files import open_frames

    src = open_frames(path)
    try:
        return load_frames(src)
    finally:
        src.close()


def cine_mmode(frames: ArrayFrames, line: Line, px_per_cm: float | None = None) -> CineMmode:
    """The M-mode of ``frames`` along ``line`` (:func:`mmode.ingest.cine.mline_recording`);
    :class:`~mmode.errors.DataError` for a line outside the frame or shorter than 1 px."""
    rec = mline_recording(frames, line, px_per_cm, close_source=False)
    try:
        return CineMmode(tuple(rec.info()["mline"]["px"]), rec.meta, rec.read(0, rec.n_lines), rec.info())
    finally:
        rec.close()


def clip_line(line: Line, shape: tuple[int, int]) -> Line:
    """``line`` with both ends moved into a frame of ``shape`` (H, W) pixels (a line dragged
    past the edge of the B-mode)."""
    height, width = shape
    x0, y0, x1, y1 = line
    return (float(np.clip(x0, 0, width - 1)), float(np.clip(y0, 0, height - 1)),
            float(np.clip(x1, 0, width - 1)), float(np.clip(y1, 0, height - 1)))


def frame_at(t_s: float, prf_hz: float, n_frames: int) -> int:
    """The frame index of M-mode time ``t_s`` (line ``i`` at ``i / prf_hz``), within the cine."""
    if not math.isfinite(t_s):
        return 0
    return int(np.clip(round(t_s * prf_hz), 0, n_frames - 1))


class CineSource(ArraySource):
    """Plays a :class:`CineMmode` from line ``start_line`` at ``prf_hz * speed``, blocks of
    about 10 ms of lines (one line at cine frame rates); ``seq`` is the line index, the
    block time ``seq / prf_hz``. Ends after the last line, as a file does."""

    def __init__(self, mmode: CineMmode, speed: float = 1.0, start_line: int = 0) -> None:
        super().__init__(mmode.meta, mmode.lines, block_lines=default_block_lines(mmode.meta.prf_hz), speed=speed)
        self.position = int(start_line)
