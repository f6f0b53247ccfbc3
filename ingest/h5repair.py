"""Repair a format v1 file whose writer died (``mmode repair``).

A live recording is written in HDF5 SWMR mode. A writer that dies (killed, crashed, or
stopped by a failed write, see :class:`~mmode.ingest.h5format.H5Writer`) leaves the file
consistent up to its last flush but with the superblock's "open for write" flags set: HDF5
then opens it only in SWMR read mode (mmode does), and plain h5py, HDFView or MATLAB refuse
it ("file is already open for write"). HDF5's ``h5clear -s`` clears the flags in place, but
it is not part of h5py, and a file cut mid-write may also hold space and metadata that
nothing refers to.

:func:`repair` instead copies what a SWMR reader sees into a fresh file: the root attributes
as they are, ``/lines`` and ``/timestamps_s`` up to the last line that both hold (with the
same chunks and filters), every other object (annotations, truth) as it is. The copy is
written beside the original with the default (oldest compatible) HDF5 format, so older tools
read it too, checked with a plain (non-SWMR) open and line for line against the original,
synced, and only then moved over it (``os.replace``, atomic): until that moment the original
is untouched, and a failure (no room for the copy) leaves it as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from mmode.errors import DataError, FormatError, describe
from mmode.ingest.h5format import abandon, read_h5, write_failure, write_state

try:
    import fcntl
except ImportError:
    fcntl = None

#: Lines copied and compared per step, in bytes: bounds memory whatever the file's size.
COPY_BLOCK_BYTES = 64 << 20


def repair(path: str | Path, output: str | Path | None = None) -> dict:
    """Make the file at ``path`` open in any HDF5 tool, keeping every flushed line.

    Writes the repaired file to ``output`` (default: replaces ``path``). Returns
    ``{"path", "output", "state", "repaired", "lines_kept", "lines_declared",
    "timestamps_declared"}`` where ``state`` is :func:`~mmode.ingest.h5format.write_state`
    before the repair. A file that needs no repair is left alone (``repaired`` False); one
    that a live :class:`~mmode.ingest.h5format.H5Writer` is writing is refused (DataError).
    """
    path = str(path)
    output = path if output is None else str(output)
    state = write_state(path)
    report = {"path": path, "output": output, "state": state, "repaired": False}
    if state == "being_written":
        raise DataError(describe(path, "a recording whose writer has stopped", "one being written now (stop it first)"))
    with read_h5(path) as rec:  # opens in SWMR read mode: validates the format and sizes
        n_lines = rec.n_lines
    if state == "closed":
        return {**report, "lines_kept": n_lines}
    tmp = f"{output}.repair-{os.getpid()}.tmp"
    # an exclusive lock while copying: no mmode writer starts on the file meanwhile; it
    # stands for HDF5's own lock, which would conflict with it (``locking=False``)
    with open(path, "rb") as guard, _exclusive(guard, path), h5py.File(path, "r", swmr=True, locking=False) as src:
        report.update(lines_kept=n_lines, lines_declared=src["lines"].shape[0],
                      timestamps_declared=src["timestamps_s"].shape[0] if "timestamps_s" in src else None)
        try:
            _copy(src, tmp, n_lines)
            _verify(src, tmp, n_lines)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            if isinstance(exc, (OSError, RuntimeError)):  # h5py raises either for a failed read or write
                raise DataError(describe(output, "a repaired copy written beside it", write_failure(exc))) from None
            raise
        shutil.copymode(path, tmp)
        os.replace(tmp, output)
    return {**report, "repaired": True}


@contextlib.contextmanager
def _exclusive(fh, path: str):
    """Hold an exclusive ``flock`` on ``fh`` (nothing where flock is missing); DataError
    when another process holds a lock on the file."""
    if fcntl is None:
        yield
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise DataError(describe(path, "a recording no other process holds", "one locked by another process")) from None
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _copy(src: h5py.File, tmp: str, n_lines: int) -> None:
    """Write the repaired copy: root attributes, the first ``n_lines`` of ``/lines`` and
    ``/timestamps_s``, every other object as it is. A failed write abandons the copy
    (:func:`~mmode.ingest.h5format.abandon`: closing it again would crash HDF5)."""
    dst = h5py.File(tmp, "w")
    try:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name, obj in src.items():
            if name in ("lines", "timestamps_s"):
                _copy_prefix(obj, dst, n_lines)
            else:
                src.copy(obj, dst, name=name)
        dst.flush()
    except BaseException:
        abandon(dst)
        raise
    dst.close()


def _copy_prefix(ds: h5py.Dataset, dst: h5py.File, n_lines: int) -> None:
    """Copy the first ``n_lines`` rows of ``ds`` in bounded steps, same chunks and filters."""
    out = dst.create_dataset(
        ds.name.lstrip("/"), shape=(n_lines, *ds.shape[1:]), maxshape=(None, *ds.shape[1:]), dtype=ds.dtype,
        chunks=ds.chunks, compression=ds.compression, compression_opts=ds.compression_opts, shuffle=ds.shuffle,
    )
    for a, b in _steps(ds, n_lines):
        out[a:b] = ds[a:b]
    out.flush()  # a write that fails must fail here, not in the close that drops ``out``


def _steps(ds: h5py.Dataset, n_lines: int):
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = max(1, COPY_BLOCK_BYTES // row_bytes)
    return ((a, min(a + step, n_lines)) for a in range(0, n_lines, step))


def _verify(src: h5py.File, tmp: str, n_lines: int) -> None:
    """Raise FormatError unless the copy opens without SWMR and holds the same lines and
    times as the original, and opens as a format v1 recording."""
    with h5py.File(tmp, "r") as dst:
        for name in ("lines", "timestamps_s"):
            if name not in src:
                continue
            if dst[name].shape[0] != n_lines:
                raise FormatError(describe(f"{tmp}:/{name}", f"{n_lines} rows", dst[name].shape[0]))
            for a, b in _steps(src[name], n_lines):
                if not np.array_equal(src[name][a:b], dst[name][a:b]):
                    raise FormatError(describe(f"{tmp}:/{name}", f"rows {a}:{b} as in the original", "different data"))
    with read_h5(tmp) as rec:
        if rec.n_lines != n_lines:
            raise FormatError(describe(tmp, f"{n_lines} lines", rec.n_lines))
