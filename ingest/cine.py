"""B-mode cine loops as frame sources, and the anatomical M-mode recording along an M-line.

A **frame source** is what a DICOM multi-frame (:class:`mmode.ingest.dicom.DicomFrames`), a
video (:class:`mmode.ingest.video.VideoFrames`) or frames in memory (:class:`ArrayFrames`)
look like to the rest of the program (and to a GUI that shows the B-mode and lets the user
drag the M-line)::

    src = mmode.ingest.files.open_frames("loop.dcm")   # or .mp4/.avi/.mov; headers only
    src.source           # str, the path (used in messages)
    src.n_frames         # int
    src.shape            # (H, W) pixels of one frame
    src.frame_interval_s # float seconds between frames (median), or None without timing
    src.timestamps_s()   # (n_frames,) float64 seconds from the first frame, or None
    src.regions          # tuple of mmode.ingest.regions.UltrasoundRegion (DICOM; () for video)
    src.frame(i)         # (H, W) float32 grey levels 0..255, decoded on demand
    src.frames(a, b)     # (b - a, H, W) float32, frames a..b-1 (sequential decoding)
    src.info()           # {"dicom": {...}} or {"video": {...}}, what `mmode info` prints
    src.close()

    frames = load_frames(src)            # all frames decoded into memory (ArrayFrames)
    line = default_mline_of(frames)      # (x0, y0, x1, y1) frame pixels
    rec = mline_recording(frames, line)  # Recording: one line per frame along the M-line

Grey levels: one value per pixel, 0..255, as displayed (already log-compressed by the
scanner); colour pixels become their luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R
BT.601, the Y of YCbCr that JPEG and DICOM YBR_FULL use).

The M-mode recording (kind "envelope", ``amplitude="grey"``): line ``i`` holds the
bilinear samples of frame ``i`` along the line, one per pixel of line length
(:func:`mmode.ingest.mline.sample_mline`); its line rate is the frame rate and its line times
the frame times. Sample ``k`` lies at ``k * step_m`` from the line's start, ``step_m`` from
``px_per_cm`` when given, else from the first 2D region calibrated in cm that holds both ends
of the line (:func:`mmode.ingest.regions.line_step_m`), else the depth is uncalibrated
(``meta.depth_calibrated`` False, :data:`NOMINAL_PIXEL_M` per pixel, reported in pixels).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from mmode.errors import DataError, FormatError, UsageError, describe
from mmode.ingest.meta import SPEED_OF_SOUND_M_S, AcquisitionMeta
from mmode.ingest.mline import check_mline, default_mline, mline_points, sample_mline
from mmode.ingest.recording import Recording
from mmode.ingest.regions import M_PER_CM, UltrasoundRegion, line_step_m

#: ITU-R BT.601 luma weights (R, G, B): the Y of JPEG's and DICOM YBR_FULL's YCbCr.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Nominal pixel size (m) of an uncalibrated image, so that the motion tracker's windows and
#: speed limits (in metres) keep a sensible size in pixels: a 4-8 cm lung preset is shown on
#: 400-800 rows, about 0.1 mm per pixel. Never reported as a depth (depth_calibrated False).
NOMINAL_PIXEL_M = 1e-4
#: Largest cine :func:`load_frames` decodes into memory (float32 grey).
MAX_FRAMES_BYTES = 4 << 30
#: Most bytes of float32 frames an M-mode read decodes at once: a read of many lines (``mmode
#: process`` reads 1024) samples the line chunk by chunk, so its memory is its output plus
#: one chunk (at least one frame), not 1024 decoded frames (8.5 GB of 1920 x 1080).
READ_CHUNK_BYTES = 64 << 20
#: Largest frame a cine reader decodes, bytes: the frame as float32 grey levels, or the
#: decoder's own pixels when they are larger. 256 MiB is 8192 x 8192 pixels; scanners export
#: frames of at most about 1920 x 1080 (8 MB), so only a forged header declares more.
MAX_FRAME_BYTES = 256 << 20


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey level of colour pixels (..., 3) -> (...) float32: BT.601 luma, same scale as input."""
    rgb = np.asarray(rgb, dtype=np.float32)
    r, g, b = LUMA_WEIGHTS
    return rgb[..., 0] * np.float32(r) + rgb[..., 1] * np.float32(g) + rgb[..., 2] * np.float32(b)


class FrameSource(Protocol):
    """What every cine source offers (module docstring)."""

    source: str
    n_frames: int
    shape: tuple[int, int]
    frame_interval_s: float | None
    regions: tuple[UltrasoundRegion, ...]

    def frame(self, i: int) -> np.ndarray: ...

    def frames(self, start: int, stop: int) -> np.ndarray: ...

    def timestamps_s(self) -> np.ndarray | None: ...

    def info(self) -> dict: ...

    def close(self) -> None: ...


def check_frame_range(src: FrameSource, start: int, stop: int) -> None:
    """Raise :class:`DataError` unless ``0 <= start < stop <= n_frames`` (or ``start == stop``)."""
    if not 0 <= start <= stop <= src.n_frames:
        raise DataError(describe(src.source, f"frames within [0, {src.n_frames}]", (start, stop)))


def check_frame_size(source: str, shape: tuple[int, int], decoded_bytes_per_px: int) -> None:
    """Raise :class:`FormatError` when one frame of ``shape`` (H, W) pixels, decoded at
    ``decoded_bytes_per_px`` bytes (or as float32 grey, whichever is larger), exceeds
    :data:`MAX_FRAME_BYTES`: checked on the header, before any frame is decoded."""
    rows, cols = shape
    n_bytes = rows * cols * max(4, decoded_bytes_per_px)
    if n_bytes > MAX_FRAME_BYTES:
        raise FormatError(describe(source, f"frames of at most {MAX_FRAME_BYTES} bytes decoded",
                                   f"{cols} x {rows} pixels, {n_bytes} bytes"))


class ArrayFrames:
    """A cine held in memory: ``frames`` (n, H, W) grey levels 0..255 (any real dtype, uint8
    to save memory), ``frame_interval_s`` (None without timing), optional ``timestamps_s``
    (n,) and ``regions``; ``info`` is what :meth:`info` returns."""

    def __init__(self, frames: np.ndarray, frame_interval_s: float | None, *, timestamps_s: np.ndarray | None = None,
                 regions: tuple[UltrasoundRegion, ...] = (), source: str = "frames", info: dict | None = None) -> None:
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.shape[0] == 0 or frames.dtype.kind not in "iuf":
            raise DataError(describe(source, "frames (n >= 1, H, W) of real grey levels", f"{frames.dtype} {frames.shape}"))
        self._frames = frames
        self.source = source
        self.n_frames = int(frames.shape[0])
        self.shape = (int(frames.shape[1]), int(frames.shape[2]))
        self.frame_interval_s = frame_interval_s
        self._timestamps_s = timestamps_s
        self.regions = tuple(regions)
        self._info = dict(info or {})

    def frame(self, i: int) -> np.ndarray:
        return self.frames(i, i + 1)[0]

    def frames(self, start: int, stop: int) -> np.ndarray:
        check_frame_range(self, start, stop)
        return np.ascontiguousarray(self._frames[start:stop], dtype=np.float32)

    def timestamps_s(self) -> np.ndarray | None:
        return self._timestamps_s

    def info(self) -> dict:
        return dict(self._info)

    def close(self) -> None:
        pass


def load_frames(src: FrameSource, max_bytes: int = MAX_FRAMES_BYTES) -> ArrayFrames:
    """Decode every frame of ``src`` into memory (float32), e.g. for a GUI that recomputes
    the M-mode as the line moves; :class:`DataError` above ``max_bytes``."""
    size = src.n_frames * src.shape[0] * src.shape[1] * 4
    if size > max_bytes:
        raise DataError(describe(src.source, f"a cine of at most {max_bytes} bytes decoded", f"{size} bytes"))
    return ArrayFrames(src.frames(0, src.n_frames), src.frame_interval_s, timestamps_s=src.timestamps_s(),
                       regions=src.regions, source=src.source, info=src.info())


def default_mline_of(src: FrameSource) -> tuple[float, float, float, float]:
    """The default M-line: vertical through the centre of the first 2D region (clipped to the
    frame), or of the frame, from top to bottom (:func:`mmode.ingest.mline.default_mline`)."""
    box = next((r.box_px for r in src.regions if r.spatial_format == "2d" and r.box_px is not None), None)
    return default_mline(src.shape, box)


def mline_calibration(src: FrameSource, line: tuple[float, float, float, float],
                      px_per_cm: float | None = None) -> tuple[float | None, str]:
    """Metres per sample along ``line`` and where it comes from: ``px_per_cm`` when given,
    else the first region of ``src`` that calibrates the line (``regions.line_step_m``);
    ``(None, "pixels, uncalibrated (why)")`` when nothing does."""
    if px_per_cm is not None:
        if not (isinstance(px_per_cm, (int, float)) and math.isfinite(px_per_cm) and px_per_cm > 0):
            raise UsageError(describe("--px-per-cm", "pixels per cm > 0", px_per_cm))
        return M_PER_CM / px_per_cm, f"px_per_cm {px_per_cm:g}"
    for index, region in enumerate(src.regions):
        step_m = line_step_m(region, line)
        if step_m is not None:
            fits = "" if region.fits(src.shape) else "; its box exceeds the frame"
            return step_m, f"region {index} (2D, cm{fits})"
    if src.regions:
        return None, "pixels, uncalibrated (no 2D region in cm holds the line)"
    return None, "pixels, uncalibrated (no calibrated region; give px_per_cm)"


def mline_recording(src: FrameSource, line: tuple[float, float, float, float] | None = None,
                    px_per_cm: float | None = None, *, close_source: bool = True, file_format: str = "cine",
                    **overrides: Any) -> Recording:
    """The anatomical M-mode of ``src`` along ``line`` (x0, y0, x1, y1 frame pixels; None:
    :func:`default_mline_of`) as a lazy :class:`Recording` (module docstring). ``overrides``
    are metadata overrides (``prf_hz`` replaces the frame rate, and is needed when the source
    has no timing). ``close_source``: closing the recording closes ``src``. ``file_format``
    names the container in :meth:`Recording.info`.

    Raises :class:`DataError` for a line outside the frame, a single frame, or no frame rate.
    """
    if src.n_frames < 2:
        raise FormatError(describe(src.source, "a cine of at least 2 frames for an M-mode", f"{src.n_frames} frame"))
    line = default_mline_of(src) if line is None else check_mline(line, src.shape, src.source)
    n_samples = mline_points(*line)[0].shape[0]
    step_m, calibration = mline_calibration(src, line, px_per_cm)
    timestamps = src.timestamps_s() if "prf_hz" not in overrides else None
    prf_hz = overrides.pop("prf_hz", None)
    if prf_hz is None:
        if src.frame_interval_s is None:
            raise FormatError(describe(src.source, "a frame rate (Frame Time, Frame Time Vector, Cine Rate or "
                                                   "Recommended Display Frame Rate; or give prf_hz)", "none"))
        prf_hz = 1.0 / src.frame_interval_s
    c_m_s = overrides.get("c_m_s", SPEED_OF_SOUND_M_S)
    line_text = "({:g}, {:g}) -> ({:g}, {:g}) px".format(*line)
    fields = {
        "kind": "envelope", "f0_hz": 0.0, "prf_hz": prf_hz, "amplitude": "grey",
        "fs_hz": c_m_s / (2 * (step_m or NOMINAL_PIXEL_M)), "depth_calibrated": step_m is not None,
        "description": f"anatomical M-mode along {line_text} of {src.n_frames} frames; depth: {calibration}",
        **overrides,
    }
    meta = AcquisitionMeta.from_mapping(fields, source=src.source)

    chunk = max(1, READ_CHUNK_BYTES // (src.shape[0] * src.shape[1] * 4))

    def read(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, n_samples), np.float32)
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            out[a - start : b - start] = sample_mline(src.frames(a, b), *line)
        return out

    extra = {**src.info(), "mline": {"px": list(line), "n_samples": n_samples, "step_m": step_m,
                                     "calibration": calibration}}
    return Recording(src.source, meta, (src.n_frames, n_samples), np.dtype(np.float32), read,
                     timestamps_fn=None if timestamps is None else (lambda: timestamps),
                     close_fn=src.close if close_source else None, file_format=file_format,
                     extra_info=extra)
