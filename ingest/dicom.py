"""DICOM ultrasound files: headers, regions, frames on demand, M-mode regions and cine.

Read with pydicom; compressed pixel data are decoded by its plugins (Pillow, GDCM,
pylibjpeg-openjpeg, pylibjpeg-rle): JPEG baseline, extended and lossless, JPEG-LS, JPEG
2000, RLE. Any storage class with pixel data is accepted (Ultrasound Image and Ultrasound
Multi-frame Image storage are the usual ones); the Sequence of Ultrasound Regions
(0018,6011) is read item by item as stored (:mod:`mmode.ingest.regions`).

Laziness: opening a file reads its header up to the pixel data (``stop_before_pixels``),
checks that pixel data follow and, when uncompressed, that the file holds all of them;
frames are decoded only when asked (:func:`pydicom.pixels.iter_pixels`, one frame at a
time), so ``mmode info`` on a 500 MB cine reads a few kilobytes.

Grey levels (0..255, one per pixel): MONOCHROME2 as stored and MONOCHROME1 inverted, both
scaled from Bits Stored; RGB, YBR_FULL, YBR_FULL_422 (converted to RGB by pydicom), YBR_RCT
and YBR_ICT (JPEG 2000, likewise) and PALETTE COLOR (through its lookup table) by their
luminance (:func:`mmode.ingest.cine.luminance`).

Frame timing, first found: Frame Time Vector (0018,1065; increments in ms, the first 0),
Frame Time (0018,1063, ms), Cine Rate (0018,0040, frames/s), Recommended Display Frame Rate
(0008,2144, frames/s).

:func:`read_dicom` (what ``open_recording`` calls for ``.dcm``) opens:

- the first M-mode region (spatial format M-mode, X in s, Y in cm), unless an M-line is
  given: each pixel column of the region in the last frame is a line, line rate
  ``1 / |Physical Delta X|``; columns are put in time order (reversed when Delta X < 0) and
  rows in depth order (reversed when Delta Y < 0); the depth of row ``y`` is the region's Y
  there (:meth:`UltrasoundRegion.physical`), rows above depth 0 are left out;
- else a cine of at least 2 frames as its anatomical M-mode along the M-line
  (:func:`mmode.ingest.cine.mline_recording`).
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmode.errors import DataError, FormatError, describe, exception_text
from mmode.ingest.cine import check_frame_range, check_frame_size, luminance, mline_recording
from mmode.ingest.meta import SPEED_OF_SOUND_M_S, AcquisitionMeta
from mmode.ingest.recording import Recording
from mmode.ingest.regions import M_PER_CM, UltrasoundRegion, region_from_item

#: Photometric interpretations turned into grey levels.
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT",
                "PALETTE COLOR")
#: (0x7FE0, 0x0010): Pixel Data.
PIXEL_DATA_TAG = (0x7FE0, 0x0010)
#: A DICOM Part 10 file: 128 bytes of preamble, then this marker.
PART10_MARKER = b"DICM"


class NoMmodeError(FormatError):
    """A readable DICOM image that holds no M-mode: a single frame without an M-mode region."""


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == PART10_MARKER


def _values(value: Any) -> list:
    """The values of a (possibly multi-valued) element value, as a list."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]


def _number(ds: Any, keyword: str) -> float | None:
    """A finite positive number from ``ds`` (the first value of a multi-valued element), or None."""
    try:
        v = float(_values(ds.get(keyword))[0])
    except Exception:  # pydicom converts the stored bytes on access: damaged ones raise many types
        return None
    return v if math.isfinite(v) and v > 0 else None


def frame_timing(ds: Any, n_frames: int) -> tuple[np.ndarray | None, float | None, str]:
    """(frame times (n_frames,) s from the first frame or None, median frame interval s or
    None, the attribute they come from or "none") from a dataset's timing attributes, in the
    order of the module docstring; values that are missing, malformed or not increasing are
    passed over."""
    try:
        steps_ms = np.asarray([float(v) for v in _values(ds.get("FrameTimeVector"))], np.float64)
    except Exception:  # as in _number
        steps_ms = np.zeros(0)
    if steps_ms.size:
        if steps_ms.shape[0] == n_frames - 1:  # written without the first frame's 0
            steps_ms = np.concatenate(([0.0], steps_ms))
        if n_frames >= 2 and steps_ms.shape[0] == n_frames and np.all(np.isfinite(steps_ms)) and np.all(steps_ms[1:] > 0):
            times_s = np.cumsum(steps_ms) / 1e3 - steps_ms[0] / 1e3
            return times_s, float(np.median(np.diff(times_s))), "Frame Time Vector"
    frame_time_ms = _number(ds, "FrameTime")
    if frame_time_ms is not None:
        return None, frame_time_ms / 1e3, "Frame Time"
    for keyword, name in (("CineRate", "Cine Rate"), ("RecommendedDisplayFrameRate", "Recommended Display Frame Rate")):
        rate = _number(ds, keyword)
        if rate is not None:
            return None, 1.0 / rate, name
    return None, None, "none"


def grey_levels(pixels: np.ndarray, photometric: str, bits_stored: int, signed: bool) -> np.ndarray:
    """Decoded pixels of one frame -> (H, W) float32 grey levels 0..255.

    pixels : (H, W) for MONOCHROME1/2, (H, W, 3) RGB for the colour interpretations (YBR
    already converted to RGB, PALETTE COLOR already through its lookup table, with
    ``bits_stored`` the table's bits). Signed samples are shifted to start at 0.
    """
    full = float(2 ** bits_stored - 1)
    x = np.asarray(pixels, dtype=np.float32)
    if signed:
        x = x + np.float32(2 ** (bits_stored - 1))
    if x.ndim == 3:
        x = luminance(x)
    x = x * np.float32(255.0 / full)
    if photometric == "MONOCHROME1":
        x = np.float32(255.0) - x
    return np.clip(x, 0.0, 255.0, out=x)


class DicomFrames:
    """The frames of a DICOM file as a frame source (:mod:`mmode.ingest.cine`); opening reads
    and checks the header only (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.source = str(path)
        self._path = Path(path)
        self._lock = threading.Lock()
        ds, pixel_length = self._read_header()
        self._ds = ds
        self.n_frames = self._int(ds, "NumberOfFrames", default=1)
        rows, cols = self._int(ds, "Rows"), self._int(ds, "Columns")
        self.shape = (rows, cols)
        self.photometric = str(ds.get("PhotometricInterpretation", "")).strip()
        self.transfer_syntax = ds.file_meta.TransferSyntaxUID
        spp = self._int(ds, "SamplesPerPixel", default=1)
        bits_allocated = self._int(ds, "BitsAllocated")
        self._bits_stored = self._int(ds, "BitsStored", default=bits_allocated)
        self._signed = self._int(ds, "PixelRepresentation", default=0) == 1
        if rows < 1 or cols < 1 or self.n_frames < 1:
            raise FormatError(describe(self.source, "Rows, Columns and Number of Frames >= 1",
                                       (rows, cols, self.n_frames)))
        if self.photometric not in PHOTOMETRICS:
            raise FormatError(describe(self.source, f"Photometric Interpretation one of {', '.join(PHOTOMETRICS)}",
                                       repr(self.photometric)))
        if bits_allocated not in (8, 16) or not 1 <= self._bits_stored <= bits_allocated:
            raise FormatError(describe(self.source, "8 or 16 Bits Allocated, Bits Stored within them",
                                       (bits_allocated, self._bits_stored)))
        self._check_decoder()
        check_frame_size(self.source, self.shape, spp * (bits_allocated // 8))
        if not self.transfer_syntax.is_compressed:
            needed = rows * cols * spp * (bits_allocated // 8) * self.n_frames
            if pixel_length < needed:
                raise FormatError(describe(self.source, f"{needed} bytes of pixel data for {self.n_frames} frames "
                                                        f"of {cols} x {rows} x {spp}", f"{pixel_length} bytes"))
        else:
            # encapsulated pixel data: the Basic Offset Table item, then at least one fragment
            # item (8 bytes of tag and length, then its data) per frame (DICOM PS3.5 A.4)
            most = max(0, (pixel_length - 8) // 8)
            if self.n_frames > most:
                raise FormatError(describe(self.source, f"at most {most} frames in {pixel_length} bytes of "
                                                        "encapsulated pixel data (8 bytes a frame at least)",
                                           f"Number of Frames {self.n_frames}"))
        if self.photometric == "PALETTE COLOR":
            descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
            self._lut_bits = int(descriptor[2]) if descriptor is not None and len(descriptor) == 3 else 16
        self.times_s, self.frame_interval_s, self.timing_source = frame_timing(ds, self.n_frames)
        self.regions = self._read_regions(ds)

    @staticmethod
    def _int(ds: Any, keyword: str, default: int | None = None) -> int:
        value = ds.get(keyword, default)
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1

    def _read_header(self) -> tuple[Any, int]:
        """The dataset up to the pixel data and the byte length the file holds of them."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        size = self._path.stat().st_size
        with open(self._path, "rb") as fh:
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
            except InvalidDicomError as exc:
                raise FormatError(describe(self.source, "a DICOM file (Part 10, 'DICM' after a 128-byte preamble)",
                                           " ".join(str(exc).split()))) from None
            except Exception as exc:  # pydicom raises many types on damaged files
                raise FormatError(describe(self.source, "a complete DICOM header", exception_text(exc))) from None
            if "TransferSyntaxUID" not in ds.file_meta:
                raise FormatError(describe(self.source, "a Transfer Syntax UID in the file meta", "none"))
            # dcmread stops with the file at the tag of the pixel data, if any (pydicom reads
            # pixel data from a file the same way, pydicom.pixels.utils)
            ts = ds.file_meta.TransferSyntaxUID
            start = fh.tell()
            head = fh.read(12)
        endian = "<" if ts.is_little_endian else ">"
        if len(head) < 8 or struct.unpack(endian + "HH", head[:4]) != PIXEL_DATA_TAG:
            raise FormatError(describe(self.source, "Pixel Data (7FE0,0010)", "none"))
        if ts.is_implicit_VR:
            length, value_at = struct.unpack(endian + "L", head[4:8])[0], start + 8
        else:
            length, value_at = struct.unpack(endian + "L", head[8:12])[0], start + 12
        available = size - value_at
        return ds, available if length == 0xFFFFFFFF else min(length, available)

    def _check_decoder(self) -> None:
        from pydicom.pixels import get_decoder

        ts = self.transfer_syntax
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            decoder = None
        if decoder is None or not decoder.is_available:
            raise FormatError(describe(self.source, "pixel data in a transfer syntax mmode decodes (uncompressed, "
                                                    "JPEG, JPEG-LS, JPEG 2000, RLE)", f"{ts.name} ({ts})"))

    def _read_regions(self, ds: Any) -> tuple[UltrasoundRegion, ...]:
        try:
            items = list(ds.get("SequenceOfUltrasoundRegions") or [])
        except Exception:  # a malformed sequence: read as no regions, never a crash
            return ()
        return tuple(region_from_item(item) for item in items)

    # -- frame source ------------------------------------------------------------------------
    def timestamps_s(self) -> np.ndarray | None:
        """(n_frames,) frame times from a Frame Time Vector, else None (uniform frames)."""
        return None if self.times_s is None else self.times_s.copy()

    def frame(self, i: int) -> np.ndarray:
        return self.frames(i, i + 1)[0]

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop-1`` as (n, H, W) float32 grey levels 0..255."""
        from pydicom.pixels import apply_color_lut, iter_pixels

        check_frame_range(self, start, stop)
        out = np.empty((stop - start, *self.shape), np.float32)
        done = 0
        with self._lock:
            try:
                for pixels in iter_pixels(self.source, indices=range(start, stop)):
                    if self.photometric == "PALETTE COLOR":
                        out[done] = grey_levels(apply_color_lut(pixels, self._ds), self.photometric, self._lut_bits,
                                                False)
                    else:
                        out[done] = grey_levels(pixels, self.photometric, self._bits_stored, self._signed)
                    done += 1
            except Exception as exc:  # any decoder failure on damaged pixel data
                raise DataError(describe(self.source, f"decodable frame {start + done} ({self.transfer_syntax.name})",
                                         exception_text(exc))) from None
        if done != stop - start:
            raise DataError(describe(self.source, f"frames {start}..{stop - 1}", f"frame {start + done} missing"))
        return out

    def info(self) -> dict:
        """``{"dicom": {...}}`` as ``mmode info --json`` prints it (docs/format.md)."""
        ds = self._ds
        regions = [{**r.to_dict(), "fits_frame": r.fits(self.shape)} for r in self.regions]
        return {"dicom": {
            "n_frames": self.n_frames,
            "frame_interval_s": self.frame_interval_s,
            "frame_timing": self.timing_source,
            "manufacturer": str(ds.get("Manufacturer", "")) or None,
            "model": str(ds.get("ManufacturerModelName", "")) or None,
            "sop_class": getattr(ds.get("SOPClassUID"), "name", None),
            "transfer_syntax": self.transfer_syntax.name,
            "photometric": self.photometric,
            "shape_px": list(self.shape),
            "regions": regions,
        }}

    def close(self) -> None:
        pass


def mmode_region_recording(frames: DicomFrames, index: int, **overrides: Any) -> Recording:
    """Region ``index`` of ``frames`` (an M-mode region) as an envelope recording of grey
    levels (module docstring); :class:`FormatError` unless it is in seconds and cm."""
    region = frames.regions[index]
    if not region.calibrated("s", "cm"):
        raise FormatError(describe(frames.source, f"M-mode region {index} with Physical Units X in s and Y in cm "
                                                  "and non-zero deltas", f"units {list(region.units)}, "
                                                                         f"delta {list(region.delta)}"))
    height, width = frames.shape
    x0, y0, x1, y1 = region.box_px
    cols = np.arange(max(x0, 0), min(x1, width - 1) + 1)
    rows = np.arange(max(y0, 0), min(y1, height - 1) + 1)
    if cols.size < 2 or rows.size < 2:
        raise FormatError(describe(frames.source, f"M-mode region {index} overlapping the {width} x {height} frame",
                                   f"box {list(region.box_px)}"))
    dx_s, dy_cm = region.delta
    if dx_s < 0:
        cols = cols[::-1]
    if dy_cm < 0:
        rows = rows[::-1]
    depth_cm = np.asarray([region.physical(x0, y)[1] for y in rows])
    keep = depth_cm >= -1e-6 * abs(dy_cm)
    first = int(np.argmax(keep)) if keep.any() else rows.size
    rows = rows[first:]
    if rows.size < 2:
        raise FormatError(describe(frames.source, f"M-mode region {index} with rows at depths >= 0",
                                   f"depths {depth_cm[0]:g}..{depth_cm[-1]:g} cm"))
    depth0_m = max(float(depth_cm[first]), 0.0) * M_PER_CM
    step_m = abs(dy_cm) * M_PER_CM
    c_m_s = overrides.get("c_m_s", SPEED_OF_SOUND_M_S)
    frame_index = frames.n_frames - 1
    notes = [f"frame {frame_index} of {frames.n_frames}"] if frames.n_frames > 1 else []
    if first:
        notes.append(f"{first} rows above depth 0 left out")
    fields = {
        "kind": "envelope", "f0_hz": 0.0, "prf_hz": 1.0 / abs(dx_s), "fs_hz": c_m_s / (2 * step_m),
        "t0_s": 2 * depth0_m / c_m_s, "amplitude": "grey",
        "description": f"M-mode region {index} of a DICOM image" + (f" ({'; '.join(notes)})" if notes else ""),
        **overrides,
    }
    meta = AcquisitionMeta.from_mapping(fields, source=frames.source)
    lines: list[np.ndarray] = []

    def read(start: int, stop: int) -> np.ndarray:
        if not lines:  # the single frame is decoded once, on the first read
            lines.append(np.ascontiguousarray(frames.frame(frame_index)[np.ix_(rows, cols)].T))
        return lines[0][start:stop]

    extra = {**frames.info(), "mmode_region": {"region": index, "frame": frame_index, "columns": int(cols.size),
                                               "rows": int(rows.size)}}
    return Recording(frames.source, meta, (int(cols.size), int(rows.size)), np.dtype(np.float32), read,
                     close_fn=frames.close, file_format="dicom m-mode region", extra_info=extra)


def read_dicom(path: str | Path, *, mline: tuple[float, float, float, float] | None = None,
               px_per_cm: float | None = None, **overrides: Any) -> Recording:
    """Open a DICOM file as a recording: its first M-mode region, or (with ``mline`` or
    ``px_per_cm``, or without an M-mode region) the anatomical M-mode of its cine."""
    frames = DicomFrames(path)
    try:
        mmode_regions = [i for i, r in enumerate(frames.regions) if r.spatial_format == "m_mode"]
        if mmode_regions and mline is None and px_per_cm is None:
            return mmode_region_recording(frames, mmode_regions[0], **overrides)
        if frames.n_frames < 2:
            formats = [r.spatial_format for r in frames.regions]
            raise NoMmodeError(describe(frames.source, "an M-mode region, or a cine of at least 2 frames",
                                       f"a single frame with regions {formats}"))
        return mline_recording(frames, mline, px_per_cm, file_format="dicom cine", **overrides)
    except BaseException:
        frames.close()
        raise
