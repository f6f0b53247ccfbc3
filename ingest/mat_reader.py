"""MATLAB ``.mat`` files (see docs/format.md): v7.3 (HDF5) read lazily with h5py, v5 with
:func:`scipy.io.loadmat` (the lines variable is loaded whole on the first read), with a
variable mapping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import scipy.io

from mmode.errors import DataError, FormatError, UsageError, describe
from mmode.ingest.h5format import MAX_COMPRESSION_RATIO, check_storage
from mmode.ingest.reader_common import (
    MAX_IN_MEMORY_BYTES,
    SIDECAR_COMMON_KEYS,
    check_overrides,
    check_shape,
    line_dtype,
    meta_from_layers,
    read_sidecar,
    sidecar_annotations,
    whole_array_reader,
)
from mmode.ingest.recording import Recording

#: Largest MATLAB metadata variable (scalar or char array), elements.
MAX_MAT_META_ELEMENTS = 1 << 16
MAT_SIDECAR_KEYS = (*SIDECAR_COMMON_KEYS, "variables", "lines_axis", "beam")
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


def _check_declared(where: str, declared: int, stored: int, shape_text: str, whose: str) -> None:
    """Raise FormatError when a MAT v5 variable declares more bytes than ``stored`` bytes can hold.

    MATLAB compresses v5 variables with zlib, so ``stored`` bytes hold at most
    :data:`~mmode.ingest.h5format.MAX_COMPRESSION_RATIO` times as many: more is a forged or
    damaged file, refused before anything is read or allocated (v7.3 files, which are HDF5,
    get :func:`~mmode.ingest.h5format.check_storage`, as format v1 does).
    """
    if declared > MAX_COMPRESSION_RATIO * stored:
        raise FormatError(describe(where, f"stored data for its declared {shape_text} ({declared} bytes; "
                                          f"at most {MAX_COMPRESSION_RATIO} x {whose} {stored} bytes)",
                                   f"{stored} bytes"))


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
    beam: int | None = None,
    **overrides: Any,
) -> Recording:
    """Open a MATLAB ``.mat`` file (v5 via scipy, v7.3 via h5py).

    ``variables`` maps fields (``lines``, ``kind``, ``fs_hz``, ``f0_hz``, ``prf_hz``,
    ``c_m_s``, ``t0_s``, ``probe``, ``description``, ``timestamps_s``) to variable names;
    unmapped fields try :data:`MAT_DEFAULT_VARIABLES`. ``lines_axis`` is the MATLAB
    dimension that indexes lines: 1 (default, ``rf(:, k)`` is line k, the MATLAB
    convention) or 0. Both may also come from an optional JSON sidecar. Without a kind, a
    complex lines variable is "iq", one named env/envelope is "envelope", else "rf".

    A 3-D lines variable of MATLAB size (n_samples, n_beams, n_lines), as scanners store
    beamformed IQ of several beams (``iq(:, b, k)`` is beam b of frame k), needs ``beam``
    (0-based, option or sidecar): that beam over the frames is the M-mode. ``lines_axis``
    does not apply to it.
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
    if beam is None:
        beam = spec.get("beam")
        if beam is not None and (isinstance(beam, bool) or not isinstance(beam, int) or beam < 0):
            raise FormatError(describe(spec["_path"], "beam, an integer >= 0", repr(beam)))
    elif isinstance(beam, bool) or not isinstance(beam, int) or beam < 0:
        raise UsageError(describe(source, "beam, an integer >= 0", repr(beam)))
    if h5py.is_hdf5(source):
        return _read_mat73(source, spec, variables, lines_axis, beam, overrides)
    return _read_mat5(source, spec, variables, lines_axis, beam, overrides)


def _lines_shape(where: str, matlab_shape: tuple[int, ...], lines_axis: int, beam: int | None,
                 found: str) -> tuple[int, int]:
    """(n_lines, n_samples) of a lines variable of MATLAB size ``matlab_shape``: a 2-D matrix
    (``lines_axis``), or with ``beam`` one beam of a 3-D (n_samples, n_beams, n_lines) array;
    FormatError otherwise (``found`` describes the variable)."""
    if len(matlab_shape) == 2 and beam is None:
        return (matlab_shape[1], matlab_shape[0]) if lines_axis == 1 else tuple(matlab_shape)
    if len(matlab_shape) == 3 and beam is not None:
        if beam >= matlab_shape[1]:
            raise FormatError(describe(where, f"beam {beam} of the {matlab_shape[1]} beams (MATLAB size "
                                              "(samples, beams, lines), beams counted from 0)", found))
        return matlab_shape[2], matlab_shape[0]
    what = ("a 2-D numeric matrix, or with a beam chosen (the sidecar key \"beam\", docs/format.md) a 3-D "
            "(samples, beams, lines) array")
    raise FormatError(describe(where, what, found))


def _mat_kind(mapping: dict[str, str], file_meta: dict[str, Any], is_complex: bool) -> dict[str, Any]:
    if "kind" not in file_meta:
        name = mapping["lines"].lower()
        file_meta["kind"] = "iq" if is_complex else "envelope" if name in ("env", "envelope") else "rf"
    return file_meta


def _read_mat5(
    source: str, spec: dict, variables: Mapping[str, str] | None, lines_axis: int, beam: int | None, overrides: dict
) -> Recording:
    try:
        listing = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(source)}
    except (ValueError, TypeError, OSError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise FormatError(describe(source, "a MATLAB v5 or v7.3 .mat file", f"{type(exc).__name__}: {exc}")) from None
    mapping = _mat_mapping(variables, set(listing), source)
    var = mapping["lines"]
    shape, cls = listing[var]
    if cls not in _MAT_CLASS_DTYPES:
        raise FormatError(describe(f"{source}:{var}", "a numeric matrix", f"{cls} of size {shape}"))
    n_lines, n_samples = _lines_shape(f"{source}:{var}", tuple(shape), lines_axis, beam, f"{cls} of size {shape}")
    _check_declared(f"{source}:{var}", math.prod(shape) * np.dtype(_MAT_CLASS_DTYPES[cls]).itemsize,
                    Path(source).stat().st_size, f"size {tuple(shape)}", "the file's")
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
    meta = meta_from_layers(source, file_meta, spec, overrides)
    check_shape(spec, n_lines, n_samples, source)
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
        if beam is not None:
            arr = arr[:, beam, :]
        arr = arr.T if lines_axis == 1 or beam is not None else arr
        return np.ascontiguousarray(arr, dtype=out_dtype)

    # the whole variable is loaded (every beam), so its whole size is what is checked
    read_fn = whole_array_reader(
        load_lines, math.prod(shape) * out_dtype.itemsize, f"{source}:{var}", "a MAT v5 variable", "save as -v7.3"
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
        annotations=sidecar_annotations(spec, n_lines),
        file_format="mat v5",
    )


def _read_mat73(
    source: str, spec: dict, variables: Mapping[str, str] | None, lines_axis: int, beam: int | None, overrides: dict
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
        if fields is not None and not is_complex:
            raise FormatError(
                describe(f"{source}:{var}", "a numeric matrix", f"{ds.dtype} of HDF5 shape {ds.shape}")
            )
        # HDF5 stores MATLAB arrays transposed: MATLAB size (a, b) is HDF5 shape (b, a).
        n_lines, n_samples = _lines_shape(f"{source}:{var}", ds.shape[::-1], lines_axis, beam,
                                          f"{ds.dtype} of HDF5 shape {ds.shape}")
        check_storage(ds, f"{source}:{var}", shape_text="HDF5 shape")
        meta_fields = {fld: v for fld, v in mapping.items() if fld not in ("lines", "timestamps_s")}
        for v in meta_fields.values():
            _check_mat_meta_size(f"{source}:{v}", f[v].size)
        file_meta = {fld: _mat_scalar(f[v][()], fld, source) for fld, v in meta_fields.items()}
        meta = meta_from_layers(source, _mat_kind(mapping, file_meta, is_complex), spec, overrides)
        check_shape(spec, n_lines, n_samples, source)
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
        if ts_ds is not None:  # read whole, as float64
            check_storage(ts_ds, f"{source}:{mapping['timestamps_s']}", shape_text="HDF5 shape")
            if ts_ds.size * 8 > MAX_IN_MEMORY_BYTES:
                raise FormatError(describe(f"{source}:{mapping['timestamps_s']}",
                                           f"at most {MAX_IN_MEMORY_BYTES} bytes to read whole", f"{ts_ds.size * 8} bytes"))
    except DataError:
        f.close()
        raise
    except (KeyError, ValueError, TypeError, OSError) as exc:
        f.close()
        raise FormatError(describe(source, "a MATLAB v7.3 file", f"{type(exc).__name__}: {exc}")) from None

    def read_fn(start: int, stop: int) -> np.ndarray:
        try:
            if beam is not None:  # HDF5 shape (lines, beams, samples)
                block = ds[start:stop, beam, :]
            else:
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
        annotations=sidecar_annotations(spec, n_lines),
        close_fn=f.close,
        file_format="mat v7.3",
    )

