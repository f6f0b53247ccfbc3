"""``.npy`` / ``.npz`` arrays with a JSON sidecar (see docs/format.md).

``.npy`` and stored ``.npz`` members are memory-mapped; ``np.savez_compressed`` members,
which have no random access, are decompressed whole on the first read.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from mmode.errors import FormatError, describe
from mmode.ingest.h5format import MAX_COMPRESSION_RATIO
from mmode.ingest.reader_common import (
    SIDECAR_COMMON_KEYS,
    check_bytes,
    check_overrides,
    check_shape,
    converting_reader,
    line_dtype,
    meta_from_layers,
    read_sidecar,
    sidecar_annotations,
    whole_array_reader,
)
from mmode.ingest.recording import Recording

NPY_SIDECAR_KEYS = SIDECAR_COMMON_KEYS
NPZ_SIDECAR_KEYS = (*SIDECAR_COMMON_KEYS, "lines_key")


def _npy_header(fh: Any, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, fortran_order and dtype from an open ``.npy`` stream (positioned at its start)."""
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, OSError) as exc:
        raise FormatError(describe(source, "a .npy array header", str(exc))) from None
    return tuple(int(n) for n in shape), bool(fortran), np.dtype(dtype)


def _lines_array_shape(shape: tuple[int, ...], dtype: np.dtype, source: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise FormatError(describe(source, "a 2-D array (n_lines, n_samples)", f"shape {shape}"))
    if dtype.hasobject or dtype.fields is not None:
        raise FormatError(describe(source, "plain numeric samples", dtype))
    return shape


def read_npy(path: str | Path, **overrides: Any) -> Recording:
    """Open an ``.npy`` array of shape (n_lines, n_samples) with its JSON sidecar, memory-mapped."""
    check_overrides(overrides)
    source = str(path)
    spec = read_sidecar(path, NPY_SIDECAR_KEYS, required=True)
    meta = meta_from_layers(spec["_path"], spec, overrides)
    with open(path, "rb") as fh:
        shape, fortran, dtype = _npy_header(fh, source)
        offset = fh.tell()
    n_lines, n_samples = _lines_array_shape(shape, dtype, source)
    check_shape(spec, n_lines, n_samples, source)
    out_dtype = line_dtype(meta.kind, dtype, source)
    check_bytes(
        source,
        offset + n_lines * n_samples * dtype.itemsize,
        Path(path).stat().st_size,
        f"header of {offset} + {n_lines} x {n_samples} x {dtype.itemsize} as the .npy header declares",
    )
    # np.load(path, mmap_mode="r", allow_pickle=False) parses the same header with the same
    # numpy functions and maps the same bytes, but it maps before any check: a short or forged
    # file fails inside mmap ("mmap length is greater than file size", naming neither the file
    # nor the sizes). So: numpy's header parser, the size check above, then np.memmap.
    mm = np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=(n_lines, n_samples), order="F" if fortran else "C"
    )
    return Recording(
        source,
        meta,
        (n_lines, n_samples),
        out_dtype,
        converting_reader(mm, out_dtype),
        annotations=sidecar_annotations(spec, n_lines),
        file_format="npy+json",
    )


def _npz_member(
    path: str, zf: zipfile.ZipFile, name: str, source: str
) -> tuple[tuple[int, ...], bool, np.dtype, int | None]:
    """Header of array member ``name``: shape, fortran, dtype and, for a stored (uncompressed)
    member, the byte offset of its data in the file (None for a compressed member)."""
    info = zf.getinfo(name)
    with zf.open(info) as fh:
        shape, fortran, dtype = _npy_header(fh, source)
        header_len = fh.tell()
    n_bytes = math.prod(shape) * dtype.itemsize
    check_bytes(
        source,
        header_len + n_bytes,
        info.file_size,
        f"member {name}: header of {header_len} + shape {shape} x {dtype.itemsize}",
    )
    size = Path(path).stat().st_size
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise FormatError(describe(source, f"member {name} stored or deflated (as numpy writes them)",
                                   f"compression method {info.compress_type}"))
    if info.header_offset + info.compress_size > size:
        raise FormatError(describe(source, f"member {name} inside the archive ({info.header_offset} + "
                                           f"{info.compress_size} bytes)", f"{size} bytes"))
    if info.compress_type == zipfile.ZIP_DEFLATED:
        # a forged size would be decompressed whole on the first read: bound it by deflate's best ratio
        if info.file_size > MAX_COMPRESSION_RATIO * info.compress_size:
            raise FormatError(describe(source, f"member {name} of at most {MAX_COMPRESSION_RATIO} x its "
                                               f"{info.compress_size} deflated bytes", f"{info.file_size} bytes declared"))
        return shape, fortran, dtype, None
    # zipfile has no public offset of a member's data, and np.load(mmap_mode=...) does not map
    # .npz members: the offset is read from the member's 30-byte local header (PKWARE APPNOTE 4.3.7)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise FormatError(describe(source, f"a zip local header for member {name}", "damaged archive"))
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    data_offset = info.header_offset + 30 + name_len + extra_len + header_len
    if data_offset + n_bytes > size:
        raise FormatError(
            describe(source, f"member {name} inside the archive ({data_offset} + {n_bytes} bytes)", f"{size} bytes")
        )
    return shape, fortran, dtype, data_offset


def read_npz(path: str | Path, *, lines_key: str | None = None, **overrides: Any) -> Recording:
    """Open an ``.npz`` archive with its JSON sidecar.

    The lines are member ``lines_key`` (argument, else sidecar ``lines_key``, else
    ``"lines"``, else the only member that is not ``timestamps_s``); an optional member
    ``timestamps_s`` (n_lines,) holds acquisition times in seconds. Stored members are
    memory-mapped; compressed ones are decompressed whole on the first read (size checked).
    """
    check_overrides(overrides)
    source = str(path)
    spec = read_sidecar(path, NPZ_SIDECAR_KEYS, required=True)
    meta = meta_from_layers(spec["_path"], spec, overrides)
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            key = lines_key or spec.get("lines_key")
            if key is None:
                others = [k for k in members if k != "timestamps_s"]
                key = "lines" if "lines" in members or len(others) != 1 else others[0]
            if key not in members:
                raise FormatError(describe(source, f"an array named {key!r}", f"members {sorted(members)}"))
            shape, fortran, dtype, offset = _npz_member(source, zf, members[key], f"{source}:{key}")
            ts_header = (
                _npz_member(source, zf, members["timestamps_s"], f"{source}:timestamps_s")
                if "timestamps_s" in members
                else None
            )
    except zipfile.BadZipFile as exc:
        raise FormatError(describe(source, "an .npz (zip) archive", str(exc))) from None
    n_lines, n_samples = _lines_array_shape(shape, dtype, f"{source}:{key}")
    check_shape(spec, n_lines, n_samples, source)
    out_dtype = line_dtype(meta.kind, dtype, f"{source}:{key}")
    if offset is not None:
        mm = np.memmap(
            path, dtype=dtype, mode="r", offset=offset, shape=(n_lines, n_samples), order="F" if fortran else "C"
        )
        read_fn = converting_reader(mm, out_dtype)
    else:

        def load_lines() -> np.ndarray:
            with np.load(path, allow_pickle=False) as z:
                return np.ascontiguousarray(z[key], dtype=out_dtype)

        read_fn = whole_array_reader(
            load_lines, n_lines * n_samples * out_dtype.itemsize, f"{source}:{key}",
            "a compressed member", "store it uncompressed",
        )

    timestamps_fn = None
    if ts_header is not None:
        if ts_header[0] != (n_lines,) or ts_header[2].kind != "f":
            raise FormatError(
                describe(f"{source}:timestamps_s", f"float shape ({n_lines},)", f"{ts_header[2]} shape {ts_header[0]}")
            )

        def timestamps_fn() -> np.ndarray:
            with np.load(path, allow_pickle=False) as z:
                return np.asarray(z["timestamps_s"], dtype=np.float64)

    return Recording(
        source,
        meta,
        (n_lines, n_samples),
        out_dtype,
        read_fn,
        timestamps_fn=timestamps_fn,
        annotations=sidecar_annotations(spec, n_lines),
        file_format="npz+json",
    )

