"""Video files (MP4, AVI, MOV) as cine frame sources, decoded with PyAV (FFmpeg).

:class:`VideoFrames` is a :class:`mmode.ingest.cine.FrameSource`. Opening reads the
container's headers and the timestamps of the first video stream's packets (demuxed, not
decoded), so frame ``i`` is the ``i``-th frame in presentation order and its time is its
presentation time relative to the first frame. Frames are decoded on demand: a read seeks to
the key frame before its first frame and decodes forward. Pixels become grey levels 0..255
by their luminance (:func:`mmode.ingest.cine.luminance` of FFmpeg's RGB conversion).
A video has no physical scale: its M-mode depth is in pixels unless ``px_per_cm`` is given.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np

from mmode.errors import DataError, FormatError, describe, exception_text
from mmode.ingest.cine import check_frame_range, check_frame_size, luminance, mline_recording
from mmode.ingest.recording import Recording


def _ffmpeg_error(path: str, expected: str, exc: Exception) -> FormatError:
    return FormatError(describe(path, expected, exception_text(exc)))


class VideoFrames:
    """The first video stream of a file as a frame source (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.source = str(path)
        self.regions = ()
        try:
            self._container = av.open(self.source)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise _ffmpeg_error(self.source, "a video file FFmpeg can open (MP4, AVI, MOV)", exc) from None
        try:
            self._open_stream()
        except BaseException:
            self._container.close()
            raise
        self._lock = threading.Lock()
        # the decoder of the last read and the frame it decoded past that read's end, so that
        # a read starting there goes on decoding instead of seeking back to a key frame
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._ahead: tuple[int, av.VideoFrame] | None = None

    def _open_stream(self) -> None:
        if not self._container.streams.video:
            raise FormatError(describe(self.source, "a video stream", "none"))
        stream = self._container.streams.video[0]
        self._stream = stream
        self.codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        if not (width > 0 and height > 0):
            raise FormatError(describe(self.source, "video frames of a known size", f"{width} x {height}"))
        self.shape = (int(height), int(width))
        check_frame_size(self.source, self.shape, 3)  # decoded as rgb24
        try:
            stamps = [p.pts if p.pts is not None else p.dts for p in self._container.demux(stream) if p.size]
        except av.FFmpegError as exc:
            raise _ffmpeg_error(self.source, "a readable video stream", exc) from None
        if len(stamps) < 1 or any(t is None for t in stamps):
            raise FormatError(describe(self.source, "video frames with timestamps", f"{len(stamps)} packets"))
        self._pts = np.sort(np.asarray(stamps, dtype=np.int64))
        self._index = {int(t): i for i, t in enumerate(self._pts)}
        self.n_frames = int(self._pts.shape[0])
        time_base = stream.time_base or Fraction(1, 1)
        self._times_s = (self._pts - self._pts[0]) * float(time_base)
        steps = np.diff(self._times_s)
        if steps.size and np.all(steps > 0):
            self.frame_interval_s: float | None = float(np.median(steps))
        else:
            rate = stream.average_rate or stream.guessed_rate
            self.frame_interval_s = float(1 / rate) if rate else None
            self._times_s = None

    def timestamps_s(self) -> np.ndarray | None:
        """(n_frames,) presentation times from the first frame, seconds (None when the
        packets' times do not increase: then frames are ``frame_interval_s`` apart)."""
        return None if self._times_s is None else self._times_s.copy()

    def frame(self, i: int) -> np.ndarray:
        return self.frames(i, i + 1)[0]

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop-1`` as (n, H, W) float32 grey levels."""
        check_frame_range(self, start, stop)
        out = np.empty((stop - start, *self.shape), np.float32)
        done = np.zeros(stop - start, bool)
        if stop == start:
            return out
        with self._lock:
            try:
                for i, frame in self._decoded_from(start):
                    if i >= stop:
                        self._ahead = (i, frame)
                        break
                    if i >= start:
                        out[i - start] = luminance(frame.to_ndarray(format="rgb24"))
                        done[i - start] = True
                else:
                    self._decoder = None
            except (av.FFmpegError, ValueError) as exc:
                self._decoder = None
                raise _ffmpeg_error(self.source, f"decodable frames {start}..{stop - 1}", exc) from None
        if not done.all():
            missing = start + int(np.flatnonzero(~done)[0])
            raise DataError(describe(self.source, f"decodable frames {start}..{stop - 1}", f"frame {missing} missing"))
        return out

    def _decoded_from(self, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """(frame index, decoded frame) in presentation order, from frame ``start`` or a key
        frame before it: the last read's decoder goes on when that read stopped at ``start``
        (sequential reads decode each frame once), else a seek to the key frame before it."""
        ahead, self._ahead = self._ahead, None
        if self._decoder is not None and ahead is not None and ahead[0] == start:
            yield ahead
        else:
            self._container.seek(int(self._pts[start]), stream=self._stream, backward=True)
            self._decoder = self._container.decode(self._stream)
        for frame in self._decoder:
            i = self._index.get(frame.pts if frame.pts is not None else -1)
            if i is not None:
                yield i, frame

    def info(self) -> dict:
        """``{"video": {n_frames, frame_interval_s, codec, shape_px [H, W]}}``."""
        return {"video": {"n_frames": self.n_frames, "frame_interval_s": self.frame_interval_s, "codec": self.codec,
                          "shape_px": list(self.shape)}}

    def close(self) -> None:
        self._container.close()


def read_video(path: str | Path, *, mline: tuple[float, float, float, float] | None = None,
               px_per_cm: float | None = None, **overrides: Any) -> Recording:
    """Open a video as its anatomical M-mode along ``mline`` (default: the vertical line
    through the frame's centre), :func:`mmode.ingest.cine.mline_recording`."""
    frames = VideoFrames(path)
    try:
        return mline_recording(frames, mline, px_per_cm, file_format="video", **overrides)
    except BaseException:
        frames.close()
        raise
