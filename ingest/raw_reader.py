"""Headerless raw samples (int16 or float32) with a JSON sidecar, memory-mapped (see
docs/format.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmode.errors import FormatError, describe
from mmode.ingest.h5format import MAX_SAMPLES
from mmode.ingest.reader_common import (
    SIDECAR_COMMON_KEYS,
    check_bytes,
    check_overrides,
    check_shape,
    converting_reader,
    declared_int,
    line_dtype,
    meta_from_layers,
    read_sidecar,
    sidecar_annotations,
)
from mmode.ingest.recording import Recording

RAW_SIDECAR_KEYS = (*SIDECAR_COMMON_KEYS, "dtype", "byte_order", "header_bytes")
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
    meta = meta_from_layers(side, spec, overrides)
    n_samples = declared_int(spec, "n_samples", side, 1, MAX_SAMPLES)
    if n_samples is None:
        raise FormatError(describe(side, "n_samples", "none"))
    dtype_name = spec.get("dtype", "int16")
    order = spec.get("byte_order", "little")
    if dtype_name not in RAW_DTYPES or order not in ("little", "big"):
        raise FormatError(
            describe(side, f"dtype in {RAW_DTYPES} and byte_order 'little' or 'big'", (dtype_name, order))
        )
    header_bytes = declared_int(spec, "header_bytes", side, 0) or 0
    dtype = np.dtype(dtype_name).newbyteorder("<" if order == "little" else ">")
    values = 2 if meta.kind == "iq" else 1
    line_bytes = n_samples * values * dtype.itemsize
    size = Path(path).stat().st_size
    declared_lines = declared_int(spec, "n_lines", side, 1)
    if declared_lines is not None:
        check_bytes(
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
    check_shape({}, n_lines, n_samples, source)
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
        read_fn = converting_reader(mm, out_dtype)
    return Recording(
        source,
        meta,
        (n_lines, n_samples),
        out_dtype,
        read_fn,
        annotations=sidecar_annotations(spec, n_lines),
        file_format=f"raw {dtype_name}+json",
    )

