"""File format v1 (HDF5): the reader, a one-shot writer and an append-mode writer.

Layout (contract, see docs/format.md):

- root attributes ``format = "mmode"``, ``format_version = 1`` and the metadata fields of
  :class:`~mmode.ingest.meta.AcquisitionMeta`;
- ``/lines`` (n_lines, n_samples): int16 or float32 for "rf"/"envelope", complex64 for
  "iq"; chunked along lines, resizable along axis 0;
- optional ``/timestamps_s`` (n_lines,) float64;
- optional ``/annotations/{start_line,end_line,label}`` (label utf-8);
- optional ``/truth/labels`` (n_lines,) int with attribute ``classes``,
  ``/truth/depths_m`` (n_depths,) finite and strictly increasing (not necessarily uniform),
  ``/truth/displacement_m`` (n_lines, n_depths).

The append-mode writer uses HDF5 single-writer/multiple-reader (SWMR) mode, so a file whose
writer was killed, or stopped by a failed write, still opens (in SWMR read mode, as
:func:`read_h5` opens) with every line up to the last flush; :func:`write_state` tells such
a file, which other HDF5 tools refuse until ``mmode repair`` (:mod:`mmode.ingest.h5repair`).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import h5py
import numpy as np

from mmode.errors import DataError, FormatError, describe, exception_text
from mmode.ingest.meta import AcquisitionMeta, Truth, check_lines
from mmode.ingest.recording import Annotation, Recording

try:
    import fcntl
except ImportError:  # Windows: no flock, so no telling a file being written from a cut one
    fcntl = None

FORMAT_NAME = "mmode"
FORMAT_VERSION = 1
LINE_DTYPES = {"rf": ("int16", "float32"), "envelope": ("int16", "float32"), "iq": ("complex64",)}
#: Largest n_samples a file may declare (a 2 m deep line sampled at 100 MHz is ~260k).
MAX_SAMPLES = 1 << 20
#: Largest number of annotations a file may declare (read whole by ``mmode info``).
MAX_ANNOTATIONS = 1 << 20
#: Best compression of real data by deflate (gzip), the filter format v1 writes: a
#: 258-byte match coded in about 2 bits gives at most 1032:1 (RFC 1951). A dataset declaring
#: more bytes than that times what the file stores for it (plus one chunk that a crash may
#: have left unwritten) is forged or damaged: reading it would return fill values.
MAX_COMPRESSION_RATIO = 1032
#: Largest dataset read whole into memory (``/timestamps_s``, ``/truth/*``): 1 GiB is the
#: times of 37 hours at 1 kHz, or 37 minutes at 60 kHz.
MAX_WHOLE_BYTES = 1 << 30


def _check_dtype(meta: AcquisitionMeta, dtype: np.dtype, source: str) -> np.dtype:
    dtype = np.dtype(dtype)
    allowed = LINE_DTYPES[meta.kind]
    if dtype.name not in allowed:
        raise FormatError(describe(f"{source}:/lines", f"dtype {' or '.join(allowed)} for kind {meta.kind!r}", dtype))
    return dtype


def _write_meta(f: h5py.File, meta: AcquisitionMeta) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    for k, v in meta.to_dict().items():
        f.attrs[k] = v


def _chunk_lines(n_samples: int, itemsize: int) -> int:
    """Lines per chunk: about 256 KiB per chunk, at least 1."""
    return max(1, min(1024, (256 * 1024) // max(1, n_samples * itemsize)))


def write_recording(
    path: str | Path,
    meta: AcquisitionMeta,
    lines: np.ndarray,
    *,
    timestamps_s: np.ndarray | None = None,
    annotations: list[Annotation] | tuple[Annotation, ...] = (),
    truth: Truth | None = None,
    compress: bool = True,
) -> None:
    """Write a whole recording to a format v1 file (overwrites ``path``).

    ``compress`` stores ``/lines`` with gzip (level 1) and byte shuffle: lossless, still
    readable by any HDF5 tool. Measured on noisy 2048-sample int16 RF: 0.72 of the raw size,
    about 10k lines/s to write and 40-50k lines/s to read (level 4: 0.70, 25 % slower to write).
    """
    path = str(path)
    check_lines(lines, meta, path)
    dtype = _check_dtype(meta, lines.dtype, path)
    n_lines, n_samples = lines.shape
    if n_lines == 0 or n_samples > MAX_SAMPLES:
        raise FormatError(describe(path, f"at least one line of at most {MAX_SAMPLES} samples", lines.shape))
    for a in annotations:
        if not 0 <= a.start_line <= a.end_line <= n_lines:
            raise FormatError(describe(f"{path}:/annotations", f"0 <= start_line <= end_line <= {n_lines}", a))
    if timestamps_s is not None:
        ts = np.asarray(timestamps_s, dtype=np.float64)
        if ts.shape != (n_lines,):
            raise FormatError(describe(f"{path}:/timestamps_s", f"shape ({n_lines},)", ts.shape))
    if truth is not None:
        _check_truth(truth, n_lines, path)
    with h5py.File(path, "w") as f:
        _write_meta(f, meta)
        f.create_dataset(
            "lines",
            data=lines,
            maxshape=(None, n_samples),
            chunks=(min(max(n_lines, 1), _chunk_lines(n_samples, dtype.itemsize)), n_samples),
            **({"compression": "gzip", "compression_opts": 1, "shuffle": True} if compress else {}),
        )
        if timestamps_s is not None:
            f.create_dataset("timestamps_s", data=ts, maxshape=(None,))
        if annotations:
            _write_annotations(f, annotations)
        if truth is not None:
            _write_truth(f, truth)


def _write_annotations(f: h5py.File, annotations: list[Annotation] | tuple[Annotation, ...]) -> None:
    g = f.require_group("annotations")
    for name in ("start_line", "end_line", "label"):
        if name in g:
            del g[name]
    g.create_dataset("start_line", data=np.array([a.start_line for a in annotations], dtype=np.int64))
    g.create_dataset("end_line", data=np.array([a.end_line for a in annotations], dtype=np.int64))
    g.create_dataset("label", data=[a.label for a in annotations], dtype=h5py.string_dtype("utf-8"))


def _check_depths(depths_m: np.ndarray, path: str) -> None:
    """Raise FormatError unless the truth depths (n_depths,) are at least one, finite and
    strictly increasing."""
    if depths_m.shape[0] == 0:
        raise FormatError(describe(f"{path}:/truth/depths_m", "at least one depth", "none"))
    if not np.all(np.isfinite(depths_m)):
        raise FormatError(describe(f"{path}:/truth/depths_m", "finite depths", "NaN or Inf"))
    steps = np.diff(depths_m)
    if np.any(steps <= 0):
        k = int(np.flatnonzero(steps <= 0)[0])
        got = f"depths_m[{k}] = {depths_m[k]:g} m, depths_m[{k + 1}] = {depths_m[k + 1]:g} m"
        raise FormatError(describe(f"{path}:/truth/depths_m", "strictly increasing depths", got))


def _check_truth(truth: Truth, n_lines: int, path: str) -> None:
    labels, depths = np.asarray(truth.labels), np.asarray(truth.depths_m)
    disp_shape = np.shape(truth.displacement_m)
    if labels.shape != (n_lines,):
        raise FormatError(describe(f"{path}:/truth/labels", f"shape ({n_lines},)", labels.shape))
    if depths.ndim != 1:
        raise FormatError(describe(f"{path}:/truth/depths_m", "shape (n_depths,)", depths.shape))
    _check_depths(depths.astype(np.float64), path)
    if disp_shape != (n_lines, depths.shape[0]):
        raise FormatError(describe(f"{path}:/truth/displacement_m", f"shape ({n_lines}, {depths.shape[0]})", disp_shape))


def _write_truth(f: h5py.File, truth: Truth) -> None:
    """Write ``/truth`` (shapes already checked by :func:`_check_truth`)."""
    g = f.create_group("truth")
    ds = g.create_dataset("labels", data=np.asarray(truth.labels).astype(np.int16))
    ds.attrs["classes"] = list(truth.classes)
    g.create_dataset("depths_m", data=np.asarray(truth.depths_m, dtype=np.float64))
    g.create_dataset(
        "displacement_m",
        data=np.asarray(truth.displacement_m, dtype=np.float32),
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )


class H5Writer:
    """Append-mode writer for live recording (format v1, SWMR).

    ``append(lines, timestamps_s)`` adds lines; the file is flushed at most
    ``flush_interval_s`` after the previous flush and on :meth:`close`, so a crash loses at
    most that much. Readers may open the file while it is written (``swmr=True``).

    A write that fails (disk full, quota, a removed disk) raises a :class:`DataError` and
    abandons the file: HDF5 is never asked to write to it again, so the file stays as a
    crash at that moment would leave it, with the :attr:`n_flushed` lines of the last flush
    (:func:`write_state` says ``"needs_repair"``). While open, the writer holds a shared
    ``flock`` on the file (HDF5 holds none in SWMR mode), by which ``mmode repair`` and
    ``mmode info`` tell a file being recorded from one cut by a crash.
    """

    def __init__(
        self,
        path: str | Path,
        meta: AcquisitionMeta,
        n_samples: int,
        dtype: str | np.dtype = "int16",
        *,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.path = str(path)
        if not 0 < n_samples <= MAX_SAMPLES:
            raise FormatError(describe(self.path, f"0 < n_samples <= {MAX_SAMPLES}", n_samples))
        self.meta = meta
        self.dtype = _check_dtype(meta, np.dtype(dtype), self.path)
        self.n_samples = int(n_samples)
        self.flush_interval_s = float(flush_interval_s)
        self.n_lines = 0
        self.n_flushed = 0
        self._lock = None
        self._f = h5py.File(self.path, "w", libver="latest")
        try:
            _write_meta(self._f, meta)
            self._lines = self._f.create_dataset(
                "lines",
                shape=(0, n_samples),
                maxshape=(None, n_samples),
                dtype=self.dtype,
                chunks=(_chunk_lines(n_samples, self.dtype.itemsize), n_samples),
            )
            self._ts = self._f.create_dataset("timestamps_s", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(4096,))
            self._f.swmr_mode = True
        except Exception as exc:  # h5py raises RuntimeError or OSError for a failed write
            self._abandon()
            raise DataError(describe(self.path, "a file that can be written", write_failure(exc))) from None
        self._lock = _hold_shared_lock(self.path)
        self._last_flush = time.monotonic()

    def append(self, lines: np.ndarray, timestamps_s: np.ndarray) -> None:
        """Append (n, n_samples) lines and their (n,) acquisition times in seconds."""
        if self._f is None:
            raise FormatError(describe(self.path, "an open writer", "a closed one"))
        if lines.ndim != 2 or lines.shape[1] != self.n_samples:
            raise FormatError(describe(self.path, f"lines of shape (n, {self.n_samples})", lines.shape))
        check_lines(lines, self.meta, self.path)
        if lines.dtype.kind == "f" and self.dtype.kind == "i":
            raise FormatError(describe(self.path, f"{self.dtype} lines for an {self.dtype} recording", lines.dtype))
        ts = np.asarray(timestamps_s, dtype=np.float64)
        if ts.shape != (lines.shape[0],):
            raise FormatError(describe(self.path, f"timestamps of shape ({lines.shape[0]},)", ts.shape))
        n0, n1 = self.n_lines, self.n_lines + lines.shape[0]
        try:
            self._lines.resize((n1, self.n_samples))
            self._lines[n0:n1] = lines.astype(self.dtype, copy=False)
            self._ts.resize((n1,))
            self._ts[n0:n1] = ts
        except Exception as exc:  # h5py raises RuntimeError or OSError for a failed write
            self._fail(exc)
        self.n_lines = n1
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Make every appended line durable and visible to readers."""
        if self._f is not None:
            try:
                self._lines.flush()
                self._ts.flush()
                self._f.flush()
            except Exception as exc:
                self._fail(exc)
            self.n_flushed = self.n_lines
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._f is not None:
            self.flush()
            self._f.close()
            self._f = None
            self._release_lock()

    def _fail(self, exc: BaseException) -> None:
        """Abandon the file after a failed write; raise the one-line DataError."""
        self._abandon()
        raise DataError(describe(
            self.path, "a disk that takes every line",
            f"{write_failure(exc)}; the file keeps the {self.n_flushed} lines of its last flush "
            f"(`mmode repair {self.path}` lets other HDF5 tools open it)")) from None

    def _abandon(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            abandon(f)
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "H5Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def abandon(f: h5py.File) -> None:
    """Close HDF5 file ``f`` after a failed write without writing to the file on disk again.

    After a failed write HDF5 still holds the data and metadata it could not write, and
    closing the file retries them: the close fails again, and a second close (or the
    interpreter's exit) crashes in HDF5 (segmentation fault, HDF5 2.0.0 / h5py 3.16). So
    HDF5's descriptor is pointed at the null device first: the close then writes there and
    releases everything, and the file on disk keeps exactly what the last successful writes
    left, as a crash at that moment would (in SWMR mode, HDF5 orders those writes so that the
    file opens with every flushed line). Not a scratch file: where the failure is a file size
    limit (``ulimit -f``), writes to that fail the same way."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, f.id.get_vfd_handle())
        os.close(null)
        f.close()
    except Exception:  # nothing more can be done for this file; the write failure is what is reported
        pass


def write_failure(exc: BaseException) -> str:
    """One line for a failed HDF5 write: the system's reason when HDF5 names it (h5py's
    message holds ``errno = 28, error message = 'No space left on device'`` among a dozen
    fields), else the exception's text."""
    m = re.search(r"errno = (\d+), error message = '([^']*)'", str(exc))
    return f"{m.group(2)} (errno {m.group(1)})" if m else exception_text(exc)


def _hold_shared_lock(path: str):
    """An open file holding a shared ``flock`` on ``path`` (None where flock is missing)."""
    if fcntl is None:
        return None
    handle = open(path, "rb")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # a lock we cannot take protects nothing; recording goes on without it
        handle.close()
        return None
    return handle


#: File consistency flags of a version 3 superblock (HDF5 File Format Specification,
#: "Superblock Version 2 and 3", byte 11): bit 0 "opened for write", bit 2 "opened for SWMR
#: write". HDF5 sets them while a writer holds the file and clears them on close; a writer
#: that dies leaves them set, and HDF5 then refuses to open the file except in SWMR read mode
#: ("file is already open for write"). Superblocks 0-2 (``libver`` earliest) never set them.
_OPEN_FOR_WRITE_FLAGS = 0x01 | 0x04
_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def write_state(path: str | Path) -> str:
    """``"closed"``, ``"being_written"`` (an open :class:`H5Writer` holds it) or
    ``"needs_repair"`` (its writer died: cut by a crash or a failed write) for an HDF5 file;
    reads its superblock only. Raises FormatError for a file without an HDF5 superblock."""
    path = str(path)
    with open(path, "rb") as fh:
        # the superblock sits at 0 or, after a user block, at 512, 1024, 2048, ...
        offset, size = 0, os.fstat(fh.fileno()).st_size
        while offset + 12 <= size:
            fh.seek(offset)
            head = fh.read(12)
            if head[:8] == _SIGNATURE:
                if head[8] < 3 or not head[11] & _OPEN_FOR_WRITE_FLAGS:
                    return "closed"
                return "being_written" if _locked(fh) else "needs_repair"
            offset = 512 if offset == 0 else offset * 2
    raise FormatError(describe(path, "an HDF5 superblock", "none"))


def _locked(fh) -> bool:
    """True when another open file holds a lock on ``fh``'s file (an exclusive one fails)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


def _attr_text(v: object) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def check_storage(ds: h5py.Dataset, where: str, whole: bool = False, shape_text: str = "shape") -> None:
    """Raise FormatError naming ``where`` unless dataset ``ds`` can hold the data its shape
    declares (at most :data:`MAX_COMPRESSION_RATIO` times the bytes the file stores for it,
    plus one chunk) and, when it is read ``whole``, fits :data:`MAX_WHOLE_BYTES`. Reads no
    data: a forged header declaring 10^10 samples fails at once, in bounded memory. Format v1
    and MATLAB v7.3 files (``shape_text`` "HDF5 shape") use it."""
    declared = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
    chunk = int(np.prod(ds.chunks)) * ds.dtype.itemsize if ds.chunks else 0
    stored = ds.id.get_storage_size()
    if declared > MAX_COMPRESSION_RATIO * stored + chunk:
        raise FormatError(describe(where, f"stored data for its declared {shape_text} {ds.shape} ({declared} bytes)",
                                   f"{stored} bytes stored"))
    if whole and declared > MAX_WHOLE_BYTES:
        raise FormatError(describe(where, f"at most {MAX_WHOLE_BYTES} bytes to read whole", f"{declared} bytes"))


def read_h5(path: str | Path) -> Recording:
    """Open a format v1 file; raises :class:`FormatError` naming what is wrong."""
    path = str(path)
    try:
        f = h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise FormatError(describe(path, "a readable HDF5 file", f"unreadable ({exc})")) from None
    try:
        fmt = f.attrs.get("format")
        if fmt is None or _attr_text(fmt) != FORMAT_NAME:
            raise FormatError(describe(path, f"root attribute format = {FORMAT_NAME!r}", repr(fmt)))
        ver = f.attrs.get("format_version")
        if ver is None or int(ver) != FORMAT_VERSION:
            raise FormatError(describe(path, f"root attribute format_version = {FORMAT_VERSION}", ver))
        meta = AcquisitionMeta.from_mapping(dict(f.attrs), source=path)
        if "lines" not in f or not isinstance(f["lines"], h5py.Dataset):
            raise FormatError(describe(path, "dataset /lines", "none"))
        ds = f["lines"]
        if ds.ndim != 2:
            raise FormatError(describe(f"{path}:/lines", "2 dimensions (n_lines, n_samples)", ds.shape))
        n_lines, n_samples = ds.shape
        if not 0 < n_samples <= MAX_SAMPLES:
            raise FormatError(describe(f"{path}:/lines", f"0 < n_samples <= {MAX_SAMPLES}", n_samples))
        if n_lines == 0:
            raise FormatError(describe(f"{path}:/lines", "at least one line", "0 lines"))
        _check_dtype(meta, ds.dtype, path)
        check_storage(ds, f"{path}:{ds.name}")
        timestamps_fn = None
        if "timestamps_s" in f:
            tds = f["timestamps_s"]
            if tds.ndim != 1 or tds.shape[0] == 0 or tds.dtype.kind != "f":
                raise FormatError(describe(f"{path}:/timestamps_s", f"float shape ({n_lines},)", f"{tds.dtype} {tds.shape}"))
            check_storage(tds, f"{path}:{tds.name}", whole=True)
            # a live recording stopped between the two resizes of an append holds more
            # lines than times: open it up to its last complete line
            n_lines = min(n_lines, tds.shape[0])

            def timestamps_fn() -> np.ndarray:
                return np.asarray(tds[:n_lines], dtype=np.float64)

        annotations = _read_annotations(f, path, n_lines)
        truth_fn = _truth_loader(f, path, n_lines) if "truth" in f else None
    except DataError:
        f.close()
        raise
    except (KeyError, IndexError, ValueError, TypeError, OSError) as exc:
        f.close()
        raise FormatError(describe(path, "a valid mmode v1 file", f"{type(exc).__name__}: {exc}")) from None

    def read_fn(start: int, stop: int) -> np.ndarray:
        try:
            return ds[start:stop]
        except OSError as exc:
            raise FormatError(describe(f"{path}:/lines", f"readable lines {start}:{stop}", f"damaged ({exc})")) from None

    return Recording(
        path,
        meta,
        (n_lines, n_samples),
        ds.dtype,
        read_fn,
        timestamps_fn=timestamps_fn,
        truth_fn=truth_fn,
        annotations=annotations,
        close_fn=f.close,
        file_format=f"{FORMAT_NAME}-h5 v{FORMAT_VERSION}",
    )


def _read_annotations(f: h5py.File, path: str, n_lines: int) -> tuple[Annotation, ...]:
    if "annotations" not in f:
        return ()
    g = f["annotations"]
    try:
        sizes = [g[name].size for name in ("start_line", "end_line", "label")]
        if max(sizes) > MAX_ANNOTATIONS:
            raise FormatError(describe(f"{path}:/annotations", f"at most {MAX_ANNOTATIONS} annotations", sizes))
        start, end, label = g["start_line"][()], g["end_line"][()], g["label"][()]
    except KeyError as exc:
        raise FormatError(describe(f"{path}:/annotations", "datasets start_line, end_line, label", f"missing ({exc})")) from None
    if not (len(start) == len(end) == len(label)):
        raise FormatError(describe(f"{path}:/annotations", "equal lengths", (len(start), len(end), len(label))))
    out = []
    for s, e, lab in zip(start, end, label):
        if not 0 <= s <= e <= n_lines:
            raise FormatError(describe(f"{path}:/annotations", f"0 <= start_line <= end_line <= {n_lines}", (s, e)))
        out.append(Annotation(int(s), int(e), _attr_text(lab)))
    return tuple(out)


def _truth_loader(f: h5py.File, path: str, n_lines: int):
    g = f["truth"]
    for name in ("labels", "depths_m", "displacement_m"):
        if name not in g:
            raise FormatError(describe(f"{path}:/truth", f"dataset {name}", "none"))
    if "classes" not in g["labels"].attrs:
        raise FormatError(describe(f"{path}:/truth/labels", "attribute classes", "none"))
    if g["labels"].shape != (n_lines,) or g["labels"].dtype.kind not in "iu":
        raise FormatError(describe(f"{path}:/truth/labels", f"integer labels of shape ({n_lines},)", f"{g['labels'].dtype} {g['labels'].shape}"))
    if g["depths_m"].ndim != 1:
        raise FormatError(describe(f"{path}:/truth/depths_m", "shape (n_depths,)", g["depths_m"].shape))
    n_depths = g["depths_m"].shape[0]
    if g["displacement_m"].shape != (n_lines, n_depths):
        raise FormatError(describe(f"{path}:/truth/displacement_m", f"shape ({n_lines}, {n_depths})", g["displacement_m"].shape))
    for name in ("labels", "depths_m", "displacement_m"):
        check_storage(g[name], f"{path}:{g[name].name}", whole=True)

    def load() -> Truth:
        classes = tuple(_attr_text(c) for c in g["labels"].attrs["classes"])
        labels = np.asarray(g["labels"][()], dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise FormatError(describe(f"{path}:/truth/labels", f"values in [0, {len(classes)})", (labels.min(), labels.max())))
        depths = np.asarray(g["depths_m"][()], dtype=np.float64)
        _check_depths(depths, path)
        return Truth(
            labels=labels,
            classes=classes,
            depths_m=depths,
            displacement_m=np.asarray(g["displacement_m"][()], dtype=np.float64),
        )

    return load
