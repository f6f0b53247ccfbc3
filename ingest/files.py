"""One entry point that opens any supported recording file (see docs/format.md).

``open_recording(path, **options)`` picks the reader from the file suffix and returns a lazy
:class:`~mmode.ingest.recording.Recording`: headers and sidecars are read, lines are not.

| suffix            | reader                                                          |
|-------------------|-----------------------------------------------------------------|
| ``.h5``, ``.hdf5`` | format v1 (:func:`mmode.ingest.h5format.read_h5`)               |
| ``.npy``          | array + JSON sidecar (:func:`~mmode.ingest.npy_reader.read_npy`)   |
| ``.npz``          | archive + JSON sidecar (:func:`~mmode.ingest.npy_reader.read_npz`) |
| ``.mat``          | MATLAB v5 / v7.3 (:func:`~mmode.ingest.mat_reader.read_mat`)       |
| ``.bin``, ``.dat`` | raw samples + JSON sidecar (:func:`~mmode.ingest.raw_reader.read_raw`) |
| ``.raw``          | raw samples when a JSON sidecar is beside it, else Clarius (:func:`~mmode.ingest.clarius_reader.read_clarius`) |
| ``.dcm``, ``.dicom``, none with the DICOM marker | DICOM: an M-mode region, else the cine's anatomical M-mode (:func:`~mmode.ingest.dicom.read_dicom`) |
| ``.mp4``, ``.avi``, ``.mov`` | video: the anatomical M-mode of the cine (:func:`~mmode.ingest.video.read_video`) |

``open_frames(path)`` opens a DICOM file or a video as a cine frame source
(:mod:`mmode.ingest.cine`), for a display that shows the B-mode frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mmode
from mmode.errors import DataError, UsageError, describe
from mmode.ingest.clarius_reader import read_clarius
from mmode.ingest.h5format import read_h5
from mmode.ingest.mat_reader import read_mat
from mmode.ingest.npy_reader import read_npy, read_npz
from mmode.ingest.raw_reader import read_raw
from mmode.ingest.reader_common import META_KEYS, check_overrides, sidecar_path
from mmode.ingest.recording import Recording

#: Suffixes of DICOM files and videos (lower case); a file without a suffix that has the
#: DICOM Part 10 marker is DICOM too.
DICOM_SUFFIXES = (".dcm", ".dicom")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")
#: Suffixes :func:`open_recording` accepts (lower case).
SUFFIXES = (".h5", ".hdf5", ".npy", ".npz", ".mat", ".bin", ".dat", ".raw", *DICOM_SUFFIXES, *VIDEO_SUFFIXES)
#: Options of the cine readers: the M-line (x0, y0, x1, y1 frame pixels) and the pixel size.
CINE_OPTIONS = ("mline", "px_per_cm")

#: Reader-specific options beyond the metadata overrides of :data:`~mmode.ingest.reader_common.META_KEYS`.
_READER_OPTIONS = {
    ".npz": ("lines_key",),
    ".mat": ("variables", "lines_axis", "beam"),
    **{suffix: CINE_OPTIONS for suffix in (*DICOM_SUFFIXES, *VIDEO_SUFFIXES)},
}


def _suffix(p: Path) -> str:
    """The reader's suffix of ``p``: its own (lower case), ``.dcm`` for a DICOM file without one."""
    suffix = p.suffix.lower()
    if not suffix and p.is_file():
        from mmode.ingest.dicom import is_dicom

        if is_dicom(p):
            return ".dcm"
    return suffix


def open_recording(path: str | Path, **options: Any) -> Recording:
    """Open a recording of any supported format, lazily.

    Parameters
    ----------
    path : file to open; the suffix (case-insensitive) selects the reader (:data:`SUFFIXES`).
    options : metadata overrides (``kind``, ``fs_hz``, ``f0_hz``, ``prf_hz``, ``c_m_s``,
        ``t0_s``, ``probe``, ``description``, ``amplitude``, ``depth_calibrated``) that win
        over what the file and its sidecar say, plus ``lines_key`` for ``.npz``,
        ``variables``, ``lines_axis``, ``beam`` for ``.mat`` and ``mline`` (x0, y0, x1, y1 frame
        pixels), ``px_per_cm`` for DICOM and video.

    Raises
    ------
    DataError (or FormatError) : missing file, unknown suffix, or malformed content, with a
        message naming the file and what was expected and found.
    UsageError : an option the reader does not take.
    """
    p = Path(path)
    suffix = _suffix(p)
    if suffix not in SUFFIXES:
        raise DataError(
            describe(p, f"a file ending in one of {', '.join(SUFFIXES)}", f"suffix {p.suffix or '(none)'!r}")
        )
    if not p.exists():
        raise DataError(describe(p, "an existing file", "no such file"))
    if not p.is_file():
        raise DataError(describe(p, "a regular file", "a directory or special file"))
    extra = {k: v for k, v in options.items() if k not in META_KEYS}
    allowed = _READER_OPTIONS.get(suffix, ())
    unknown = sorted(set(extra) - set(allowed))
    if unknown:
        raise UsageError(describe(p, f"options among {', '.join((*META_KEYS, *allowed))}", unknown))
    overrides = {k: v for k, v in options.items() if k in META_KEYS}
    if suffix in (".h5", ".hdf5"):
        check_overrides(overrides)
        rec = read_h5(p)
        if overrides:
            try:
                rec.meta = rec.meta.replace(**overrides)
            except DataError:
                rec.close()
                raise
        return rec
    if suffix == ".npy":
        return read_npy(p, **overrides)
    if suffix == ".npz":
        return read_npz(p, **extra, **overrides)
    if suffix == ".mat":
        return read_mat(p, **extra, **overrides)
    if suffix == ".raw" and sidecar_path(p) is None:
        return read_clarius(p, **overrides)
    if suffix in DICOM_SUFFIXES:
        from mmode.ingest.dicom import read_dicom

        return read_dicom(p, **extra, **overrides)
    if suffix in VIDEO_SUFFIXES:
        from mmode.ingest.video import read_video

        return read_video(p, **extra, **overrides)
    return read_raw(p, **overrides)


def open_frames(path: str | Path):
    """Open a DICOM file or a video as a cine frame source (:class:`mmode.ingest.cine.FrameSource`),
    headers only; :class:`DataError` for another format or a bad file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(describe(p, "an existing file", "no such file"))
    suffix = _suffix(p)
    if suffix in DICOM_SUFFIXES:
        from mmode.ingest.dicom import DicomFrames

        return DicomFrames(p)
    if suffix in VIDEO_SUFFIXES:
        from mmode.ingest.video import VideoFrames

        return VideoFrames(p)
    raise DataError(describe(p, f"a cine ending in one of {', '.join((*DICOM_SUFFIXES, *VIDEO_SUFFIXES))}",
                             f"suffix {p.suffix or '(none)'!r}"))


def sample_data_dir() -> Path:
    """The repository's ``sample_data/`` folder (shipped example recordings)."""
    return Path(mmode.__file__).resolve().parents[1] / "sample_data"
