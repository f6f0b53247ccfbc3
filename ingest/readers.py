"""Readers for the input formats other than format v1 HDF5 (see docs/format.md).

Each reader returns a lazy :class:`~mmode.ingest.recording.Recording`: opening a file reads
its headers and sidecar only; lines are read on demand by line range.

- ``.npy`` / ``.npz`` + JSON sidecar: memory-mapped (``np.savez_compressed`` members, which
  have no random access, are decompressed whole on the first read);
- raw binary (int16 or float32) + JSON sidecar: memory-mapped;
- MATLAB ``.mat``: v7.3 (HDF5) read lazily with h5py, v5 with :func:`scipy.io.loadmat`
  (the lines variable is loaded whole on the first read), with a variable mapping;
- Clarius ``.raw`` + ``.yml``: memory-mapped, frames exposed as consecutive lines.

Metadata comes, in increasing priority, from the file itself (MAT variables, Clarius
``.yml``), the JSON sidecar, and keyword overrides (``fs_hz=...``) given by the caller.
Sizes declared by headers and sidecars are checked against the file size before anything
is allocated. uint8/uint16/float64 samples are returned as float32 and complex128 as
complex64; int16, float32 and complex64 are returned as stored.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import h5py
import numpy as np
import scipy.io
from numpy.lib import format as npy_format

from mmode.errors import DataError, FormatError, UsageError, describe
from mmode.ingest.h5format import MAX_SAMPLES
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest.recording import Annotation, Recording

#: Metadata fields a sidecar or a keyword override may set.
META_KEYS = ("kind", "fs_hz", "f0_hz", "prf_hz", "c_m_s", "t0_s", "probe", "description", "amplitude",
             "depth_calibrated")
#: A JSON sidecar larger than this is refused unread.
MAX_SIDECAR_BYTES = 1 << 20
#: Largest array a reader loads whole (compressed .npz member, MAT v5 variable).
MAX_IN_MEMORY_BYTES = 4 << 30
#: Largest MATLAB metadata variable (scalar or char array), elements.
MAX_MAT_META_ELEMENTS = 1 << 16

_SIDECAR_COMMON = (*META_KEYS, "n_lines", "n_samples", "annotations")
NPY_SIDECAR_KEYS = _SIDECAR_COMMON
NPZ_SIDECAR_KEYS = (*_SIDECAR_COMMON, "lines_key")
RAW_SIDECAR_KEYS = (*_SIDECAR_COMMON, "dtype", "byte_order", "header_bytes")
MAT_SIDECAR_KEYS = (*_SIDECAR_COMMON, "variables", "lines_axis")


# -- shared helpers ---------------------------------------------------------------------------
def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Raise :class:`UsageError` for a keyword override that is not a metadata field."""
    unknown = sorted(set(overrides) - set(META_KEYS))
    if unknown:
        raise UsageError(describe("metadata overrides", f"keys among {', '.join(META_KEYS)}", unknown))


def sidecar_path(path: str | Path) -> Path | None:
    """The JSON sidecar of ``path``: ``<file>.json`` (preferred) or ``<stem>.json``, or None."""
    path = Path(path)
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: str | Path, allowed_keys: tuple[str, ...], *, required: bool) -> dict[str, Any]:
    """Parse the JSON sidecar of data file ``path``; ``{}`` when absent and not required.

    Raises :class:`FormatError` for a missing (when required), oversize or malformed sidecar,
    or for a key outside ``allowed_keys`` (a misspelt key must not be silently ignored).
    """
    side = sidecar_path(path)
    if side is None:
        if required:
            raise FormatError(
                describe(path, f"a JSON sidecar {Path(path).name}.json or {Path(path).stem}.json", "none")
            )
        return {}
    size = side.stat().st_size
    if size > MAX_SIDECAR_BYTES:
        raise FormatError(describe(side, f"a JSON sidecar of at most {MAX_SIDECAR_BYTES} bytes", f"{size} bytes"))
    try:
        spec = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(describe(side, "valid UTF-8 JSON", str(exc))) from None
    if not isinstance(spec, dict):
        raise FormatError(describe(side, "a JSON object", type(spec).__name__))
    unknown = sorted(set(spec) - set(allowed_keys))
    if unknown:
        raise FormatError(describe(side, f"keys among {', '.join(allowed_keys)}", f"unknown {unknown}"))
    spec["_path"] = str(side)
    return spec


def _meta(source: str, *layers: Mapping[str, Any]) -> AcquisitionMeta:
    """Metadata from layers of increasing priority (only :data:`META_KEYS` are taken)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k in META_KEYS and v is not None})
    return AcquisitionMeta.from_mapping(merged, source=source)


def _declared_int(spec: Mapping[str, Any], key: str, source: str, lo: int, hi: int | None = None) -> int | None:
    if key not in spec:
        return None
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bounds = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise FormatError(describe(source, f"{key} {bounds}", repr(v)))
    return v


def _check_shape(spec: Mapping[str, Any], n_lines: int, n_samples: int, source: str) -> None:
    """Sidecar ``n_lines``/``n_samples``, when given, must match the data; lines must exist."""
    for key, actual in (("n_lines", n_lines), ("n_samples", n_samples)):
        declared = _declared_int(spec, key, source, 0)
        if declared is not None and declared != actual:
            raise FormatError(describe(source, f"{key} = {declared} as the sidecar declares", f"{actual} in the data"))
    if n_lines == 0:
        raise FormatError(describe(source, "at least one line", "0 lines"))
    if not 0 < n_samples <= MAX_SAMPLES:
        raise FormatError(describe(source, f"0 < n_samples <= {MAX_SAMPLES}", n_samples))


def _annotations(spec: Mapping[str, Any], n_lines: int) -> tuple[Annotation, ...]:
    """Sidecar ``annotations``: a list of ``{"start_line", "end_line", "label"}`` objects."""
    items = spec.get("annotations", [])
    source = spec.get("_path", "sidecar")
    if not isinstance(items, list):
        raise FormatError(describe(source, "annotations as a list", type(items).__name__))
    out = []
    for i, a in enumerate(items):
        if not (isinstance(a, dict) and set(a) == {"start_line", "end_line", "label"}):
            raise FormatError(describe(f"{source}: annotations[{i}]", "keys start_line, end_line, label", a))
        s, e, label = a["start_line"], a["end_line"], a["label"]
        if not (isinstance(s, int) and isinstance(e, int) and 0 <= s <= e <= n_lines and isinstance(label, str)):
            raise FormatError(
                describe(f"{source}: annotations[{i}]", f"0 <= start_line <= end_line <= {n_lines} and a text label", a)
            )
        out.append(Annotation(s, e, label))
    return tuple(out)


def line_dtype(kind: str, dtype: np.dtype, source: str) -> np.dtype:
    """dtype :meth:`Recording.read` returns for stored samples of ``dtype`` and ``kind``.

    rf/envelope: int16 and float32 as stored; int8, uint8, uint16, float16, float64 as
    float32. iq: complex64 as stored, complex128 as complex64. Anything else is a
    :class:`FormatError`.
    """
    dtype = np.dtype(dtype)
    if kind == "iq":
        if dtype.kind == "c" and dtype.itemsize in (8, 16):
            return np.dtype(np.complex64)
        raise FormatError(describe(source, "complex64 or complex128 samples for kind 'iq'", dtype))
    if dtype.kind == "i" and dtype.itemsize == 2:
        return np.dtype(np.int16)
    if (dtype.kind in "iu" and dtype.itemsize <= 2) or (dtype.kind == "f" and dtype.itemsize in (2, 4, 8)):
        return np.dtype(np.float32)
    raise FormatError(describe(source, f"int8/16, uint8/16 or float samples for kind {kind!r}", dtype))


def _converting_reader(array: np.ndarray, out_dtype: np.dtype) -> Callable[[int, int], np.ndarray]:
    """``(start, stop) -> copy of array[start:stop] as out_dtype`` (array may be a memmap)."""

    def read(start: int, stop: int) -> np.ndarray:
        return np.array(array[start:stop], dtype=out_dtype, order="C")

    return read


# -- .npy / .npz -------------------------------------------------------------------------------
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


def _check_bytes(source: str, declared: int, actual: int, how: str) -> None:
    if declared != actual:
        raise FormatError(describe(source, f"{declared} bytes ({how})", f"{actual} bytes"))


def read_npy(path: str | Path, **overrides: Any) -> Recording:
    """Open an ``.npy`` array of shape (n_lines, n_samples) with its JSON sidecar, memory-mapped."""
    check_overrides(overrides)
    source = str(path)
    spec = read_sidecar(path, NPY_SIDECAR_KEYS, required=True)
    meta = _meta(spec["_path"], spec, overrides)
    with open(path, "rb") as fh:
        shape, fortran, dtype = _npy_header(fh, source)
        offset = fh.tell()
    n_lines, n_samples = _lines_array_shape(shape, dtype, source)
    _check_shape(spec, n_lines, n_samples, source)
    out_dtype = line_dtype(meta.kind, dtype, source)
    _check_bytes(
        source,
        offset + n_lines * n_samples * dtype.itemsize,
        Path(path).stat().st_size,
        f"header of {offset} + {n_lines} x {n_samples} x {dtype.itemsize} as the .npy header declares",
    )
    mm = np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=(n_lines, n_samples), order="F" if fortran else "C"
    )
    return Recording(
        source,
        meta,
        (n_lines, n_samples),
        out_dtype,
        _converting_reader(mm, out_dtype),
        annotations=_annotations(spec, n_lines),
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
    _check_bytes(
        source,
        header_len + n_bytes,
        info.file_size,
        f"member {name}: header of {header_len} + shape {shape} x {dtype.itemsize}",
    )
    if info.compress_type != zipfile.ZIP_STORED:
        return shape, fortran, dtype, None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise FormatError(describe(source, f"a zip local header for member {name}", "damaged archive"))
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    data_offset = info.header_offset + 30 + name_len + extra_len + header_len
    size = Path(path).stat().st_size
    if data_offset + n_bytes > size:
        raise FormatError(
            describe(source, f"member {name} inside the archive ({data_offset} + {n_bytes} bytes)", f"{size} bytes")
        )
    return shape, fortran, dtype, data_offset



def _whole_array_reader(
    load_lines: Callable[[], np.ndarray], n_bytes: int, source: str, what: str, advice: str
) -> Callable[[int, int], np.ndarray]:
    """``read_fn`` for lines that can only be read whole (compressed ``.npz``, MAT v5).

    Refuses more than :data:`MAX_IN_MEMORY_BYTES` before reading anything; loads on the
    first read and keeps the array for the next ones.
    """
    if n_bytes > MAX_IN_MEMORY_BYTES:
        raise FormatError(describe(source, f"{what} of at most {MAX_IN_MEMORY_BYTES} bytes ({advice})", f"{n_bytes} bytes"))
    cache: list[np.ndarray] = []

    def read_fn(start: int, stop: int) -> np.ndarray:
        if not cache:
            cache.append(load_lines())
        return cache[0][start:stop].copy()

    return read_fn

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
    meta = _meta(spec["_path"], spec, overrides)
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
    _check_shape(spec, n_lines, n_samples, source)
    out_dtype = line_dtype(meta.kind, dtype, f"{source}:{key}")
    if offset is not None:
        mm = np.memmap(
            path, dtype=dtype, mode="r", offset=offset, shape=(n_lines, n_samples), order="F" if fortran else "C"
        )
        read_fn = _converting_reader(mm, out_dtype)
    else:

        def load_lines() -> np.ndarray:
            with np.load(path, allow_pickle=False) as z:
                return np.ascontiguousarray(z[key], dtype=out_dtype)

        read_fn = _whole_array_reader(
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
        annotations=_annotations(spec, n_lines),
        file_format="npz+json",
    )


# -- raw binary + JSON sidecar -----------------------------------------------------------------
RAW_DTYPES = ("int16", "float32")


def read_raw(path: str | Path, **overrides: Any) -> Recording:
    """Open headerless raw samples described by a JSON sidecar, memory-mapped.

    Sidecar keys beyond the metadata: ``n_samples`` (required), ``dtype`` ("int16" default,
    or "float32"), ``byte_order`` ("little" default, or "big"), ``header_bytes`` (bytes to
    skip, default 0), ``n_lines`` (optional; derived from the file size when absent). Lines
    are stored one after the other; for kind "iq" each sample is an interleaved I, Q pair.
    """
    check_overrides(overrides)
    source = str(path)
    spec = read_sidecar(path, RAW_SIDECAR_KEYS, required=True)
    side = spec["_path"]
    meta = _meta(side, spec, overrides)
    n_samples = _declared_int(spec, "n_samples", side, 1, MAX_SAMPLES)
    if n_samples is None:
        raise FormatError(describe(side, "n_samples", "none"))
    dtype_name = spec.get("dtype", "int16")
    order = spec.get("byte_order", "little")
    if dtype_name not in RAW_DTYPES or order not in ("little", "big"):
        raise FormatError(
            describe(side, f"dtype in {RAW_DTYPES} and byte_order 'little' or 'big'", (dtype_name, order))
        )
    header_bytes = _declared_int(spec, "header_bytes", side, 0) or 0
    dtype = np.dtype(dtype_name).newbyteorder("<" if order == "little" else ">")
    values = 2 if meta.kind == "iq" else 1
    line_bytes = n_samples * values * dtype.itemsize
    size = Path(path).stat().st_size
    declared_lines = _declared_int(spec, "n_lines", side, 1)
    if declared_lines is not None:
        _check_bytes(
            source,
            header_bytes + declared_lines * line_bytes,
            size,
            f"{header_bytes} + {declared_lines} lines x {line_bytes} bytes as {side} declares",
        )
        n_lines = declared_lines
    else:
        payload = size - header_bytes
        if payload <= 0 or payload % line_bytes:
            raise FormatError(
                describe(
                    source,
                    f"a whole number of {line_bytes}-byte lines after {header_bytes} header bytes",
                    f"{payload} bytes",
                )
            )
        n_lines = payload // line_bytes
    _check_shape({}, n_lines, n_samples, source)
    mm = np.memmap(path, dtype=dtype, mode="r", offset=header_bytes, shape=(n_lines, n_samples * values))
    if meta.kind == "iq":
        out_dtype = np.dtype(np.complex64)

        def read_fn(start: int, stop: int) -> np.ndarray:
            pairs = np.asarray(mm[start:stop], dtype=np.float32).reshape(stop - start, n_samples, 2)
            out = np.empty((stop - start, n_samples), dtype=np.complex64)
            out.real, out.imag = pairs[..., 0], pairs[..., 1]
            return out
    else:
        out_dtype = line_dtype(meta.kind, dtype, source)
        read_fn = _converting_reader(mm, out_dtype)
    return Recording(
        source,
        meta,
        (n_lines, n_samples),
        out_dtype,
        read_fn,
        annotations=_annotations(spec, n_lines),
        file_format=f"raw {dtype_name}+json",
    )


# -- MATLAB .mat -------------------------------------------------------------------------------
#: Variable names tried, in order, for each field when no mapping names one.
MAT_DEFAULT_VARIABLES: dict[str, tuple[str, ...]] = {
    "lines": ("lines", "rf", "iq", "env", "envelope", "data"),
    "kind": ("kind",),
    "fs_hz": ("fs_hz", "fs"),
    "f0_hz": ("f0_hz", "f0", "fc"),
    "prf_hz": ("prf_hz", "prf"),
    "c_m_s": ("c_m_s", "c0", "c"),
    "t0_s": ("t0_s", "t0"),
    "probe": ("probe",),
    "description": ("description",),
    "timestamps_s": ("timestamps_s",),
}
_MAT_CLASS_DTYPES = {
    "double": np.float64,
    "single": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
}


def _mat_mapping(variables: Mapping[str, str] | None, present: set[str], source: str) -> dict[str, str]:
    """Field -> variable name; explicitly mapped variables must exist."""
    variables = dict(variables or {})
    unknown = sorted(set(variables) - set(MAT_DEFAULT_VARIABLES))
    if unknown:
        raise FormatError(describe(source, f"variable mapping keys among {', '.join(MAT_DEFAULT_VARIABLES)}", unknown))
    not_names = {k: v for k, v in variables.items() if not isinstance(v, str)}
    if not_names:
        raise FormatError(describe(source, "variable mapping values that are variable names", not_names))
    mapping = {}
    for field, names in MAT_DEFAULT_VARIABLES.items():
        if field in variables:
            if variables[field] not in present:
                raise FormatError(
                    describe(
                        source, f"variable {variables[field]!r} (mapped to {field})", f"variables {sorted(present)}"
                    )
                )
            mapping[field] = variables[field]
        else:
            found = next((n for n in names if n in present), None)
            if found is not None:
                mapping[field] = found
    if "lines" not in mapping:
        raise FormatError(
            describe(
                source,
                f"a lines variable (one of {MAT_DEFAULT_VARIABLES['lines']} or mapped)",
                f"variables {sorted(present)}",
            )
        )
    return mapping


def _check_mat_meta_size(source: str, n_elements: int) -> None:
    """A metadata variable is read whole: refuse one declaring more than MAX_MAT_META_ELEMENTS."""
    if n_elements > MAX_MAT_META_ELEMENTS:
        raise FormatError(describe(source, f"a metadata variable of at most {MAX_MAT_META_ELEMENTS} elements", n_elements))


def _mat_scalar(value: Any, field: str, source: str) -> Any:
    arr = np.asarray(value)
    if field in ("kind", "probe", "description"):
        if arr.dtype.kind == "U":
            return "".join(arr.ravel().tolist())
        if arr.dtype.kind in "iu" and arr.ndim:  # v7.3 char arrays are uint16 code points
            return "".join(chr(int(c)) for c in arr.ravel())
        raise FormatError(describe(f"{source}:{field}", "a char array", arr.dtype))
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise FormatError(describe(f"{source}:{field}", "a real numeric scalar", f"{arr.dtype} shape {arr.shape}"))
    return float(arr.ravel()[0])


def read_mat(
    path: str | Path,
    *,
    variables: Mapping[str, str] | None = None,
    lines_axis: int | None = None,
    **overrides: Any,
) -> Recording:
    """Open a MATLAB ``.mat`` file (v5 via scipy, v7.3 via h5py).

    ``variables`` maps fields (``lines``, ``kind``, ``fs_hz``, ``f0_hz``, ``prf_hz``,
    ``c_m_s``, ``t0_s``, ``probe``, ``description``, ``timestamps_s``) to variable names;
    unmapped fields try :data:`MAT_DEFAULT_VARIABLES`. ``lines_axis`` is the MATLAB
    dimension that indexes lines: 1 (default, ``rf(:, k)`` is line k, the MATLAB
    convention) or 0. Both may also come from an optional JSON sidecar. Without a kind, a
    complex lines variable is "iq", one named env/envelope is "envelope", else "rf".
    """
    check_overrides(overrides)
    source = str(path)
    spec = read_sidecar(path, MAT_SIDECAR_KEYS, required=False)
    variables = variables if variables is not None else spec.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise FormatError(describe(spec.get("_path", source), "variables as a JSON object", type(variables).__name__))
    if lines_axis is None:
        lines_axis = spec.get("lines_axis", 1)
        if lines_axis not in (0, 1) or isinstance(lines_axis, bool):
            raise FormatError(describe(spec["_path"], "lines_axis 0 or 1", repr(lines_axis)))
    elif lines_axis not in (0, 1) or isinstance(lines_axis, bool):
        raise UsageError(describe(source, "lines_axis 0 or 1", repr(lines_axis)))
    if h5py.is_hdf5(source):
        return _read_mat73(source, spec, variables, lines_axis, overrides)
    return _read_mat5(source, spec, variables, lines_axis, overrides)


def _mat_kind(mapping: dict[str, str], file_meta: dict[str, Any], is_complex: bool) -> dict[str, Any]:
    if "kind" not in file_meta:
        name = mapping["lines"].lower()
        file_meta["kind"] = "iq" if is_complex else "envelope" if name in ("env", "envelope") else "rf"
    return file_meta


def _read_mat5(
    source: str, spec: dict, variables: Mapping[str, str] | None, lines_axis: int, overrides: dict
) -> Recording:
    try:
        listing = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(source)}
    except (ValueError, TypeError, OSError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise FormatError(describe(source, "a MATLAB v5 or v7.3 .mat file", f"{type(exc).__name__}: {exc}")) from None
    mapping = _mat_mapping(variables, set(listing), source)
    var = mapping["lines"]
    shape, cls = listing[var]
    if len(shape) != 2 or cls not in _MAT_CLASS_DTYPES:
        raise FormatError(describe(f"{source}:{var}", "a 2-D numeric matrix", f"{cls} of size {shape}"))
    n_lines, n_samples = (shape[1], shape[0]) if lines_axis == 1 else shape
    small = [v for f, v in mapping.items() if f not in ("lines", "timestamps_s")]
    for v in small:
        _check_mat_meta_size(f"{source}:{v}", math.prod(listing[v][0]))
    try:
        scalars = scipy.io.loadmat(source, variable_names=small) if small else {}
    except (ValueError, TypeError, OSError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise FormatError(describe(source, "readable metadata variables", f"{type(exc).__name__}: {exc}")) from None
    file_meta = {
        f: _mat_scalar(scalars[v], f, source) for f, v in mapping.items() if f not in ("lines", "timestamps_s")
    }
    file_meta = _mat_kind(mapping, file_meta, is_complex=False)
    meta = _meta(source, file_meta, spec, overrides)
    _check_shape(spec, n_lines, n_samples, source)
    # whosmat does not say whether a v5 variable is complex: the kind decides, the load checks.
    stored = np.dtype(np.complex128) if meta.kind == "iq" else np.dtype(_MAT_CLASS_DTYPES[cls])
    out_dtype = line_dtype(meta.kind, stored, f"{source}:{var}")
    def load(name: str) -> np.ndarray:
        try:
            return np.asarray(scipy.io.loadmat(source, variable_names=[name])[name])
        except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as exc:
            raise FormatError(
                describe(f"{source}:{name}", "a readable variable", f"{type(exc).__name__}: {exc}")
            ) from None

    def load_lines() -> np.ndarray:
        arr = load(var)
        if (arr.dtype.kind == "c") != (meta.kind == "iq"):
            raise FormatError(
                describe(
                    f"{source}:{var}",
                    f"{'complex' if meta.kind == 'iq' else 'real'} samples for kind {meta.kind!r}",
                    arr.dtype,
                )
            )
        arr = arr.T if lines_axis == 1 else arr
        return np.ascontiguousarray(arr, dtype=out_dtype)

    read_fn = _whole_array_reader(
        load_lines, n_lines * n_samples * out_dtype.itemsize, f"{source}:{var}", "a MAT v5 variable", "save as -v7.3"
    )

    timestamps_fn = None
    if "timestamps_s" in mapping:
        ts_shape, _ = listing[mapping["timestamps_s"]]
        if math.prod(ts_shape) != n_lines:
            raise FormatError(describe(f"{source}:{mapping['timestamps_s']}", f"{n_lines} values", f"size {ts_shape}"))

        def timestamps_fn() -> np.ndarray:
            return load(mapping["timestamps_s"]).astype(np.float64).ravel()

    return Recording(
        source,
        meta,
        (n_lines, n_samples),
        out_dtype,
        read_fn,
        timestamps_fn=timestamps_fn,
        annotations=_annotations(spec, n_lines),
        file_format="mat v5",
    )


def _read_mat73(
    source: str, spec: dict, variables: Mapping[str, str] | None, lines_axis: int, overrides: dict
) -> Recording:
    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        raise FormatError(describe(source, "a readable MATLAB v7.3 (HDF5) file", str(exc))) from None
    try:
        present = {k for k, v in f.items() if isinstance(v, h5py.Dataset)}
        mapping = _mat_mapping(variables, present, source)
        var = mapping["lines"]
        ds = f[var]
        fields = ds.dtype.fields
        is_complex = fields is not None and set(fields) == {"real", "imag"}
        stored = np.dtype(np.result_type(fields["real"][0], np.complex64)) if is_complex else ds.dtype
        if ds.ndim != 2 or (fields is not None and not is_complex):
            raise FormatError(
                describe(f"{source}:{var}", "a 2-D numeric matrix", f"{ds.dtype} of HDF5 shape {ds.shape}")
            )
        # HDF5 stores MATLAB arrays transposed: MATLAB size (a, b) is HDF5 shape (b, a).
        n_lines, n_samples = ds.shape if lines_axis == 1 else ds.shape[::-1]
        meta_fields = {fld: v for fld, v in mapping.items() if fld not in ("lines", "timestamps_s")}
        for v in meta_fields.values():
            _check_mat_meta_size(f"{source}:{v}", f[v].size)
        file_meta = {fld: _mat_scalar(f[v][()], fld, source) for fld, v in meta_fields.items()}
        meta = _meta(source, _mat_kind(mapping, file_meta, is_complex), spec, overrides)
        _check_shape(spec, n_lines, n_samples, source)
        if is_complex != (meta.kind == "iq"):
            raise FormatError(
                describe(
                    f"{source}:{var}",
                    f"{'complex' if meta.kind == 'iq' else 'real'} samples for kind {meta.kind!r}",
                    ds.dtype,
                )
            )
        out_dtype = line_dtype(meta.kind, stored, f"{source}:{var}")
        ts_ds = f[mapping["timestamps_s"]] if "timestamps_s" in mapping else None
        if ts_ds is not None and ts_ds.size != n_lines:
            raise FormatError(
                describe(f"{source}:{mapping['timestamps_s']}", f"{n_lines} values", f"HDF5 shape {ts_ds.shape}")
            )
    except DataError:
        f.close()
        raise
    except (KeyError, ValueError, TypeError, OSError) as exc:
        f.close()
        raise FormatError(describe(source, "a MATLAB v7.3 file", f"{type(exc).__name__}: {exc}")) from None

    def read_fn(start: int, stop: int) -> np.ndarray:
        try:
            block = ds[start:stop] if lines_axis == 1 else ds[:, start:stop].T
        except OSError as exc:
            raise FormatError(
                describe(f"{source}:{var}", f"readable lines {start}:{stop}", f"damaged ({exc})")
            ) from None
        if is_complex:
            out = np.empty(block.shape, dtype=out_dtype)
            out.real, out.imag = block["real"], block["imag"]
            return out
        return np.asarray(block, dtype=out_dtype, order="C")

    timestamps_fn = None if ts_ds is None else (lambda: np.asarray(ts_ds[()], dtype=np.float64).ravel())
    return Recording(
        source,
        meta,
        (n_lines, n_samples),
        out_dtype,
        read_fn,
        timestamps_fn=timestamps_fn,
        annotations=_annotations(spec, n_lines),
        close_fn=f.close,
        file_format="mat v7.3",
    )


# -- Clarius .raw + .yml ----------------------------------------------------------------------
#: Clarius header id -> kind. 0 IQ, 1 envelope (B pre-scan), 2 RF, 3 pulsed-wave IQ.
CLARIUS_KINDS = {0: "iq", 1: "envelope", 2: "rf", 3: "iq"}
#: Bytes per sample for each kind: int16 I + int16 Q, uint8 envelope, int16 RF.
CLARIUS_SAMPLE_BYTES = {"iq": 4, "envelope": 1, "rf": 2}
CLARIUS_HEADER_BYTES = 20
#: Largest frame (timestamp + samples) the reader maps: numpy record types are limited to 2 GiB.
CLARIUS_MAX_FRAME_BYTES = (1 << 31) - 1
_UNITS = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9, "mm": 1e-3, "cm": 1e-2, "m": 1.0, "": 1.0}


def parse_clarius_yml(text: str) -> dict[str, str]:
    """Top-level ``key: value`` pairs of a Clarius ``.yml`` (first occurrence of each key).

    Clarius files are not strict YAML (repeated keys, ``{..}{..}`` values), so only
    unindented lines with a value on the same line are taken; nested blocks are skipped.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z][A-Za-z0-9 _]*):\s*(\S.*?)\s*$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def _yml_quantity(fields: Mapping[str, str], key: str, source: str) -> float | None:
    """``"15 MHz"`` -> 15e6 (SI); None when the key is absent."""
    if key not in fields:
        return None
    m = re.fullmatch(r"([-+0-9.eE]+)\s*([A-Za-z]*)", fields[key])
    if not m or m.group(2).lower() not in _UNITS:
        raise FormatError(describe(f"{source}: {key}", "a number with a unit (Hz, kHz, MHz, mm)", repr(fields[key])))
    try:
        return float(m.group(1)) * _UNITS[m.group(2).lower()]
    except ValueError:
        raise FormatError(describe(f"{source}: {key}", "a number", repr(fields[key]))) from None


def _yml_size(fields: Mapping[str, str], source: str) -> dict[str, int]:
    """``size: {samples per line: 592, number of lines: 304, sample size: 1 bytes}``."""
    if "size" not in fields:
        return {}
    out = {}
    for part in fields["size"].strip("{}").split(","):
        m = re.fullmatch(r"\s*([a-z ]+?)\s*:\s*(\d+)\s*(bytes)?\s*", part)
        if not m:
            raise FormatError(
                describe(
                    f"{source}: size",
                    "{samples per line: N, number of lines: N, sample size: N bytes}",
                    repr(fields["size"]),
                )
            )
        out[m.group(1)] = int(m.group(2))
    return out


def read_clarius(path: str | Path, **overrides: Any) -> Recording:
    """Open a Clarius ``.raw`` file (with ``<stem>.yml`` beside it), memory-mapped.

    Layout (little-endian): five uint32 (id, frames, lines, samples, bytes per sample),
    then per frame a uint64 timestamp in ns and lines x samples samples, line after line.
    Frames are exposed as consecutive lines: shape (frames * lines, samples). Metadata:
    ``fs_hz`` = yml "sampling rate", ``f0_hz`` = "transmit frequency", ``t0_s`` = "delay
    samples" / fs_hz, ``prf_hz`` = lines per frame x frame rate, the frame rate taken from
    the median interval of the frame timestamps (two frames or more), else from the yml
    "frame rate". Keyword overrides win over all of these.
    """
    check_overrides(overrides)
    source = str(path)
    size = Path(path).stat().st_size
    if size < CLARIUS_HEADER_BYTES:
        raise FormatError(describe(source, f"a Clarius header of {CLARIUS_HEADER_BYTES} bytes", f"{size} bytes"))
    with open(path, "rb") as fh:
        ident, n_frames, lines_per_frame, n_samples, sample_bytes = (
            int(v) for v in np.frombuffer(fh.read(20), dtype="<u4")
        )
    if ident not in CLARIUS_KINDS:
        raise FormatError(describe(source, f"Clarius data id in {sorted(CLARIUS_KINDS)}", ident))
    kind = CLARIUS_KINDS[ident]
    if sample_bytes != CLARIUS_SAMPLE_BYTES[kind]:
        raise FormatError(
            describe(source, f"{CLARIUS_SAMPLE_BYTES[kind]} bytes per sample for Clarius {kind}", sample_bytes)
        )
    if n_frames < 1 or lines_per_frame < 1 or not 0 < n_samples <= MAX_SAMPLES:
        raise FormatError(
            describe(
                source, f"frames >= 1, lines >= 1, 0 < samples <= {MAX_SAMPLES}", (n_frames, lines_per_frame, n_samples)
            )
        )
    frame_bytes = 8 + lines_per_frame * n_samples * sample_bytes
    _check_bytes(
        source,
        CLARIUS_HEADER_BYTES + n_frames * frame_bytes,
        size,
        f"header of 20 + {n_frames} frames x (8 + {lines_per_frame} x {n_samples} x {sample_bytes})",
    )
    if frame_bytes > CLARIUS_MAX_FRAME_BYTES:
        raise FormatError(describe(source, f"frames of at most {CLARIUS_MAX_FRAME_BYTES} bytes", f"{frame_bytes} bytes"))

    yml_path = Path(path).with_suffix(".yml")
    fields: dict[str, str] = {}
    if yml_path.is_file():
        if yml_path.stat().st_size > 16 * MAX_SIDECAR_BYTES:
            raise FormatError(describe(yml_path, f"at most {16 * MAX_SIDECAR_BYTES} bytes", yml_path.stat().st_size))
        fields = parse_clarius_yml(yml_path.read_text(encoding="utf-8", errors="replace"))
        declared = _yml_size(fields, str(yml_path))
        for key, actual in (
            ("samples per line", n_samples),
            ("number of lines", lines_per_frame),
            ("sample size", sample_bytes),
        ):
            if key in declared and declared[key] != actual:
                raise FormatError(describe(yml_path, f"{key} = {actual} as in {Path(path).name}", declared[key]))
    elif not {"fs_hz", "f0_hz"} <= set(overrides):
        raise FormatError(describe(source, f"a Clarius sidecar {yml_path.name} (or fs_hz and f0_hz given)", "none"))

    sample_dtype: np.dtype = np.dtype(("<i2", (2,))) if kind == "iq" else np.dtype("<i2" if kind == "rf" else "u1")
    record = np.dtype([("t_ns", "<u8"), ("data", sample_dtype, (lines_per_frame, n_samples))])
    frames = np.memmap(path, dtype=record, mode="r", offset=CLARIUS_HEADER_BYTES, shape=(n_frames,))
    frame_t_ns = np.asarray(frames["t_ns"], dtype=np.int64)

    fs_hz = _yml_quantity(fields, "sampling rate", str(yml_path))
    frame_rate_hz = _yml_quantity(fields, "frame rate", str(yml_path))
    if n_frames >= 2:
        dt_ns = float(np.median(np.diff(frame_t_ns)))
        if dt_ns > 0:
            frame_rate_hz = 1e9 / dt_ns
    delay = _yml_quantity(fields, "delay samples", str(yml_path))
    file_meta: dict[str, Any] = {
        "kind": kind,
        "fs_hz": fs_hz,
        "f0_hz": _yml_quantity(fields, "transmit frequency", str(yml_path)),
        "prf_hz": None if frame_rate_hz is None else frame_rate_hz * lines_per_frame,
        "t0_s": None if delay is None or not fs_hz else delay / fs_hz,
        "description": (
            f"Clarius {fields.get('type', kind)}: {n_frames} frame(s) x {lines_per_frame} image lines, "
            "exposed as consecutive lines; prf_hz is the line rate within a frame"
        ),
    }
    if file_meta["prf_hz"] is None and "prf_hz" not in overrides:
        raise FormatError(
            describe(source, "a frame rate (two frames or more, a yml 'frame rate', or prf_hz given)", "none")
        )
    meta = _meta(str(yml_path) if fields else source, file_meta, overrides)
    out_dtype = np.dtype(np.complex64) if kind == "iq" else line_dtype(kind, sample_dtype, source)

    def read_fn(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, n_samples), dtype=out_dtype)
        i = start
        while i < stop:
            frame, first = divmod(i, lines_per_frame)
            last = min(lines_per_frame, first + stop - i)
            block = frames["data"][frame, first:last]
            if kind == "iq":
                out[i - start : i - start + last - first].real = block[..., 0]
                out[i - start : i - start + last - first].imag = block[..., 1]
            else:
                out[i - start : i - start + last - first] = block
            i += last - first
        return out

    def timestamps_fn() -> np.ndarray:
        line = np.arange(n_frames * lines_per_frame)
        frame_s = (frame_t_ns - frame_t_ns[0]) * 1e-9
        return frame_s[line // lines_per_frame] + (line % lines_per_frame) / meta.prf_hz

    return Recording(
        source,
        meta,
        (n_frames * lines_per_frame, n_samples),
        out_dtype,
        read_fn,
        timestamps_fn=timestamps_fn,
        file_format=f"clarius-raw id {ident}",
    )
