"""One entry point that opens any supported recording file (see docs/format.md).

``open_recording(path, **options)`` picks the reader from the file suffix and returns a lazy
:class:`~mmode.ingest.recording.Recording`: headers and sidecars are read, lines are not.

| suffix            | reader                                                          |
|-------------------|-----------------------------------------------------------------|
| ``.h5``, ``.hdf5`` | format v1 (:func:`mmode.ingest.h5format.read_h5`)               |
| ``.npy``          | array + JSON sidecar (:func:`~mmode.ingest.readers.read_npy`)   |
| ``.npz``          | archive + JSON sidecar (:func:`~mmode.ingest.readers.read_npz`) |
| ``.mat``          | MATLAB v5 / v7.3 (:func:`~mmode.ingest.readers.read_mat`)       |
| ``.bin``, ``.dat`` | raw samples + JSON sidecar (:func:`~mmode.ingest.readers.read_raw`) |
| ``.raw``          | raw samples when a JSON sidecar is beside it, else Clarius       |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mmode
from mmode.errors import DataError, UsageError, describe
from mmode.ingest import readers
from mmode.ingest.h5format import read_h5
from mmode.ingest.recording import Recording

#: Suffixes :func:`open_recording` accepts (lower case).
SUFFIXES = (".h5", ".hdf5", ".npy", ".npz", ".mat", ".bin", ".dat", ".raw")

#: Reader-specific options beyond the metadata overrides of :data:`readers.META_KEYS`.
_READER_OPTIONS = {
    ".npz": ("lines_key",),
    ".mat": ("variables", "lines_axis"),
}


def open_recording(path: str | Path, **options: Any) -> Recording:
    """Open a recording of any supported format, lazily.

    Parameters
    ----------
    path : file to open; the suffix (case-insensitive) selects the reader (:data:`SUFFIXES`).
    options : metadata overrides (``kind``, ``fs_hz``, ``f0_hz``, ``prf_hz``, ``c_m_s``,
        ``t0_s``, ``probe``, ``description``) that win over what the file and its sidecar
        say, plus ``lines_key`` for ``.npz`` and ``variables``, ``lines_axis`` for ``.mat``.

    Raises
    ------
    DataError (or FormatError) : missing file, unknown suffix, or malformed content, with a
        message naming the file and what was expected and found.
    UsageError : an option the reader does not take.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            describe(p, f"a file ending in one of {', '.join(SUFFIXES)}", f"suffix {p.suffix or '(none)'!r}")
        )
    if not p.exists():
        raise DataError(describe(p, "an existing file", "no such file"))
    if not p.is_file():
        raise DataError(describe(p, "a regular file", "a directory or special file"))
    extra = {k: v for k, v in options.items() if k not in readers.META_KEYS}
    allowed = _READER_OPTIONS.get(suffix, ())
    unknown = sorted(set(extra) - set(allowed))
    if unknown:
        raise UsageError(describe(p, f"options among {', '.join((*readers.META_KEYS, *allowed))}", unknown))
    overrides = {k: v for k, v in options.items() if k in readers.META_KEYS}
    if suffix in (".h5", ".hdf5"):
        readers.check_overrides(overrides)
        rec = read_h5(p)
        if overrides:
            try:
                rec.meta = rec.meta.replace(**overrides)
            except DataError:
                rec.close()
                raise
        return rec
    if suffix == ".npy":
        return readers.read_npy(p, **overrides)
    if suffix == ".npz":
        return readers.read_npz(p, **extra, **overrides)
    if suffix == ".mat":
        return readers.read_mat(p, **extra, **overrides)
    if suffix == ".raw" and readers.sidecar_path(p) is None:
        return readers.read_clarius(p, **overrides)
    return readers.read_raw(p, **overrides)


def sample_data_dir() -> Path:
    """The repository's ``sample_data/`` folder (shipped example recordings)."""
    return Path(mmode.__file__).resolve().parents[1] / "sample_data"
