"""Clarius ``.raw`` files with their ``.yml`` beside them, memory-mapped, frames exposed as
consecutive lines (see docs/format.md)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmode.errors import FormatError, describe
from mmode.ingest.h5format import MAX_SAMPLES
from mmode.ingest.reader_common import MAX_SIDECAR_BYTES, check_bytes, check_overrides, line_dtype, meta_from_layers
from mmode.ingest.recording import Recording

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


def line_geometry(text: str) -> list[tuple[str, str, str]]:
    """(rx element, tx element, angle) of each entry of a Clarius ``.yml``'s ``lines:`` list,
    as written (``- {rx element: 30, tx element: 31.5, angle: 15 °}``); [] when it has none."""
    return re.findall(r"^\s*-\s*\{\s*rx element:\s*([^,}]+?)\s*,\s*tx element:\s*([^,}]+?)\s*,"
                      r"\s*angle:\s*([^,}]+?)\s*\}", text, flags=re.MULTILINE)


def geometry_note(geometry: list[tuple[str, str, str]], lines_per_frame: int) -> str | None:
    """What a frame's lines are, from their :func:`line_geometry`: None when the list does not
    describe the frame's lines, or when they all share one beam (one beam over time, an
    M-mode); else a note that they are an image's beam positions (runs of equal lines: a
    colour-Doppler ensemble per position), so that their line-to-line changes are not motion."""
    if len(geometry) != lines_per_frame or len(set(geometry)) < 2:
        return None
    runs = [len(list(run)) for _, run in itertools.groupby(geometry)]
    where = f"{len(runs)} beam positions"
    if len(set(runs)) == 1 and runs[0] > 1:
        where += f" x {runs[0]} lines each (an ensemble per position)"
    return (f"the yml places a frame's lines at {where}: each frame is an image, not one beam over time, "
            "so its line-to-line changes are not tissue motion")


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
    check_bytes(
        source,
        CLARIUS_HEADER_BYTES + n_frames * frame_bytes,
        size,
        f"header of 20 + {n_frames} frames x (8 + {lines_per_frame} x {n_samples} x {sample_bytes})",
    )
    if frame_bytes > CLARIUS_MAX_FRAME_BYTES:
        raise FormatError(describe(source, f"frames of at most {CLARIUS_MAX_FRAME_BYTES} bytes", f"{frame_bytes} bytes"))

    yml_path = Path(path).with_suffix(".yml")
    fields: dict[str, str] = {}
    geometry = None
    if yml_path.is_file():
        if yml_path.stat().st_size > 16 * MAX_SIDECAR_BYTES:
            raise FormatError(describe(yml_path, f"at most {16 * MAX_SIDECAR_BYTES} bytes", yml_path.stat().st_size))
        text = yml_path.read_text(encoding="utf-8", errors="replace")
        fields = parse_clarius_yml(text)
        geometry = geometry_note(line_geometry(text), lines_per_frame)
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
            + ("" if geometry is None else f"; {geometry}")
        ),
    }
    if file_meta["prf_hz"] is None and "prf_hz" not in overrides:
        raise FormatError(
            describe(source, "a frame rate (two frames or more, a yml 'frame rate', or prf_hz given)", "none")
        )
    meta = meta_from_layers(str(yml_path) if fields else source, file_meta, overrides)
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
