"""What the readers of the formats other than format v1 HDF5 share (see docs/format.md):
JSON sidecars, metadata layers, declared sizes and the conversion of stored samples.

Each reader (:mod:`~mmode.ingest.npy_reader`, :mod:`~mmode.ingest.raw_reader`,
:mod:`~mmode.ingest.mat_reader`, :mod:`~mmode.ingest.clarius_reader`) returns a lazy
:class:`~mmode.ingest.recording.Recording`: opening a file reads its headers and sidecar only;
lines are read on demand by line range.

Metadata comes, in increasing priority, from the file itself (MAT variables, Clarius
``.yml``), the JSON sidecar, and keyword overrides (``fs_hz=...``) given by the caller.
Sizes declared by headers and sidecars are checked against the file size before anything
is allocated. uint8/uint16/float64 samples are returned as float32 and complex128 as
complex64; int16, float32 and complex64 are returned as stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mmode.errors import FormatError, UsageError, describe
from mmode.ingest.h5format import MAX_SAMPLES
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest.recording import Annotation

#: Metadata fields a sidecar or a keyword override may set.
META_KEYS = ("kind", "fs_hz", "f0_hz", "prf_hz", "c_m_s", "t0_s", "probe", "description", "amplitude",
             "depth_calibrated")
#: A JSON sidecar larger than this is refused unread.
MAX_SIDECAR_BYTES = 1 << 20
#: Largest array a reader loads whole (compressed .npz member, MAT v5 variable).
MAX_IN_MEMORY_BYTES = 4 << 30
#: Sidecar keys every format takes (each adds its own).
SIDECAR_COMMON_KEYS = (*META_KEYS, "n_lines", "n_samples", "annotations")


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


def meta_from_layers(source: str, *layers: Mapping[str, Any]) -> AcquisitionMeta:
    """Metadata from layers of increasing priority (only :data:`META_KEYS` are taken)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k in META_KEYS and v is not None})
    return AcquisitionMeta.from_mapping(merged, source=source)


def declared_int(spec: Mapping[str, Any], key: str, source: str, lo: int, hi: int | None = None) -> int | None:
    if key not in spec:
        return None
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bounds = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise FormatError(describe(source, f"{key} {bounds}", repr(v)))
    return v


def check_shape(spec: Mapping[str, Any], n_lines: int, n_samples: int, source: str) -> None:
    """Sidecar ``n_lines``/``n_samples``, when given, must match the data; lines must exist."""
    for key, actual in (("n_lines", n_lines), ("n_samples", n_samples)):
        declared = declared_int(spec, key, source, 0)
        if declared is not None and declared != actual:
            raise FormatError(describe(source, f"{key} = {declared} as the sidecar declares", f"{actual} in the data"))
    if n_lines == 0:
        raise FormatError(describe(source, "at least one line", "0 lines"))
    if not 0 < n_samples <= MAX_SAMPLES:
        raise FormatError(describe(source, f"0 < n_samples <= {MAX_SAMPLES}", n_samples))


def sidecar_annotations(spec: Mapping[str, Any], n_lines: int) -> tuple[Annotation, ...]:
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


def converting_reader(array: np.ndarray, out_dtype: np.dtype) -> Callable[[int, int], np.ndarray]:
    """``(start, stop) -> copy of array[start:stop] as out_dtype`` (array may be a memmap)."""

    def read(start: int, stop: int) -> np.ndarray:
        return np.array(array[start:stop], dtype=out_dtype, order="C")

    return read


def check_bytes(source: str, declared: int, actual: int, how: str) -> None:
    if declared != actual:
        raise FormatError(describe(source, f"{declared} bytes ({how})", f"{actual} bytes"))



def whole_array_reader(
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
