"""Stream protocol v1: the codec, pure bytes in and out (no sockets): frame encoding and a
strict parser. The TCP server and client that carry it are :mod:`mmode.ingest.stream`.

Byte layout (little-endian; docs/protocol.md is the full contract):

- hello frame, once per connection, server to client::

      magic b"MMSH" | version uint16 (=1) | reserved uint16 (=0) | json_len uint32 | json

  ``json`` is UTF-8: ``{"meta": {AcquisitionMeta fields}, "n_samples": int, "dtype": str}``.
- data frame, one block of consecutive lines::

      magic b"MMSD" | seq uint64 | t_s float64 | n_lines uint32 | n_samples uint32
      | dtype_code uint8 | 3 reserved bytes | payload_len uint32 | payload

  ``payload`` is n_lines x n_samples samples, C order, little-endian.
- end frame, the source has no more lines::

      magic b"MMSE" | next_seq uint64

Every length is checked against the hello and the limits below *before* anything is
allocated; broken framing (a bad magic, a length or header field outside the limits or
unlike the hello) raises :class:`~mmode.errors.ProtocolError` and the connection is closed.
The parser checks framing only: a well-framed data frame is returned even when its samples
or its ``t_s`` are not finite, and :mod:`mmode.ingest.frame_check` (the engine) drops or
re-times it. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mmode.errors import DataError, ProtocolError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock

PROTOCOL_VERSION = 1
HELLO_MAGIC = b"MMSH"
DATA_MAGIC = b"MMSD"
END_MAGIC = b"MMSE"
MAGIC_SIZE = 4

_HELLO = struct.Struct("<4sHHI")  # magic, version, reserved, json_len
_DATA = struct.Struct("<4sQdIIB3xI")  # magic, seq, t_s, n_lines, n_samples, dtype_code, payload_len
_END = struct.Struct("<4sQ")  # magic, next_seq

#: Largest hello JSON in bytes.
MAX_HELLO_JSON_BYTES = 64 * 1024
#: Largest number of lines in one data frame.
MAX_FRAME_LINES = 4096
#: Largest number of samples per line (same limit as file format v1).
MAX_SAMPLES = 1 << 20
#: Largest payload of one data frame in bytes.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
#: Line numbers are int64 downstream: a frame's last line must be below this.
SEQ_LIMIT = 1 << 63

#: dtype code on the wire -> numpy dtype (little-endian).
DTYPE_CODES = {1: np.dtype("<i2"), 2: np.dtype("<f4"), 3: np.dtype("<c8")}
_CODE_OF_DTYPE = {dt.name: code for code, dt in DTYPE_CODES.items()}
#: dtypes allowed for each kind of line (as in file format v1).
KIND_DTYPES = {"rf": ("int16", "float32"), "envelope": ("int16", "float32"), "iq": ("complex64",)}



@dataclass(frozen=True)
class StreamHello:
    """What a hello frame announces: metadata, samples per line and sample dtype."""

    meta: AcquisitionMeta
    n_samples: int
    dtype: np.dtype


@dataclass(frozen=True)
class DataHeader:
    """A validated data frame header; ``payload_len`` bytes of samples follow it."""

    seq: int
    t_s: float
    n_lines: int
    n_samples: int
    dtype: np.dtype
    payload_len: int


@dataclass(frozen=True)
class EndOfStream:
    """The end frame: the source is exhausted; ``next_seq`` is one past its last line."""

    next_seq: int


# -- encoding ---------------------------------------------------------------------------------
def dtype_code(dtype: np.dtype) -> int:
    """Wire code of a line dtype; raises :class:`DataError` for dtypes the protocol lacks."""
    name = np.dtype(dtype).name
    if name not in _CODE_OF_DTYPE:
        raise DataError(describe("stream", f"line dtype one of {sorted(_CODE_OF_DTYPE)}", name))
    return _CODE_OF_DTYPE[name]


def encode_hello(meta: AcquisitionMeta, n_samples: int, dtype: np.dtype) -> bytes:
    """The hello frame for a stream of ``n_samples``-sample lines of ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype.name not in KIND_DTYPES[meta.kind]:
        raise DataError(describe("stream", f"dtype {' or '.join(KIND_DTYPES[meta.kind])} for kind {meta.kind!r}", dtype))
    body = json.dumps({"meta": meta.to_dict(), "n_samples": int(n_samples), "dtype": dtype.name}).encode("utf-8")
    if len(body) > MAX_HELLO_JSON_BYTES:
        raise DataError(describe("stream hello", f"at most {MAX_HELLO_JSON_BYTES} bytes of JSON", len(body)))
    return _HELLO.pack(HELLO_MAGIC, PROTOCOL_VERSION, 0, len(body)) + body


def encode_block(block: LineBlock) -> bytes:
    """One data frame carrying ``block`` (header and little-endian payload)."""
    lines = block.lines
    code = dtype_code(lines.dtype)
    n_lines, n_samples = lines.shape
    if not 0 < n_lines <= MAX_FRAME_LINES or not 0 < n_samples <= MAX_SAMPLES:
        raise DataError(describe("stream frame", f"1..{MAX_FRAME_LINES} lines of 1..{MAX_SAMPLES} samples", lines.shape))
    payload = np.ascontiguousarray(lines, dtype=DTYPE_CODES[code]).tobytes()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DataError(describe("stream frame", f"payload at most {MAX_PAYLOAD_BYTES} bytes", len(payload)))
    header = _DATA.pack(DATA_MAGIC, block.seq, float(block.t_s), n_lines, n_samples, code, len(payload))
    return header + payload


def encode_end(next_seq: int) -> bytes:
    """The end frame: no line with ``seq >= next_seq`` will follow."""
    return _END.pack(END_MAGIC, next_seq)


# -- parsing ----------------------------------------------------------------------------------
def parse_hello(read_exact: Callable[[int], bytes], source: str = "stream") -> StreamHello:
    """Read and validate a hello frame with ``read_exact(n) -> n bytes``."""
    magic, version, _reserved, json_len = _HELLO.unpack(read_exact(_HELLO.size))
    if magic != HELLO_MAGIC:
        raise ProtocolError(describe(source, f"hello magic {HELLO_MAGIC!r} (an mmode stream server)", repr(magic)))
    if version != PROTOCOL_VERSION:
        raise ProtocolError(describe(source, f"protocol version {PROTOCOL_VERSION}", version))
    if not 0 < json_len <= MAX_HELLO_JSON_BYTES:
        raise ProtocolError(describe(source, f"hello JSON length 1..{MAX_HELLO_JSON_BYTES}", json_len))
    raw = read_exact(json_len)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise ProtocolError(describe(source, "hello JSON in UTF-8", f"{type(exc).__name__}: {exc}")) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict):
        raise ProtocolError(describe(source, 'hello JSON object with a "meta" object', type(doc).__name__))
    n_samples, dtype_name = doc.get("n_samples"), doc.get("dtype")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or not 0 < n_samples <= MAX_SAMPLES:
        raise ProtocolError(describe(source, f"hello n_samples an integer in 1..{MAX_SAMPLES}", repr(n_samples)))
    try:
        meta = AcquisitionMeta.from_mapping(doc["meta"], source=f"{source} hello")
    except (DataError, TypeError) as exc:
        raise ProtocolError(str(exc)) from None
    if dtype_name not in KIND_DTYPES[meta.kind]:
        raise ProtocolError(describe(source, f"hello dtype one of {KIND_DTYPES[meta.kind]} for kind {meta.kind!r}", repr(dtype_name)))
    return StreamHello(meta=meta, n_samples=n_samples, dtype=np.dtype(dtype_name).newbyteorder("<"))


def parse_frame_header(
    read_exact: Callable[[int], bytes], hello: StreamHello, source: str = "stream"
) -> DataHeader | EndOfStream:
    """Read the next frame header and validate its framing against ``hello`` and the limits.

    Returns a :class:`DataHeader` (its payload still to be read) or :class:`EndOfStream`.
    ``t_s`` is not checked (a non-finite one is re-timed, :mod:`mmode.ingest.frame_check`).
    """
    magic = read_exact(MAGIC_SIZE)
    if magic == END_MAGIC:
        (next_seq,) = struct.unpack("<Q", read_exact(_END.size - MAGIC_SIZE))
        return EndOfStream(next_seq=next_seq)
    if magic != DATA_MAGIC:
        raise ProtocolError(describe(source, f"frame magic {DATA_MAGIC!r} or {END_MAGIC!r}", repr(magic)))
    _m, seq, t_s, n_lines, n_samples, code, payload_len = _DATA.unpack(magic + read_exact(_DATA.size - MAGIC_SIZE))
    if not 0 < n_lines <= MAX_FRAME_LINES:
        raise ProtocolError(describe(source, f"n_lines in 1..{MAX_FRAME_LINES}", n_lines))
    if n_samples != hello.n_samples:
        raise ProtocolError(describe(source, f"n_samples {hello.n_samples} as announced in the hello", n_samples))
    if code not in DTYPE_CODES or DTYPE_CODES[code] != hello.dtype:
        raise ProtocolError(describe(source, f"dtype code {_CODE_OF_DTYPE[hello.dtype.name]} ({hello.dtype.name})", code))
    expected = n_lines * n_samples * hello.dtype.itemsize
    if payload_len != expected or payload_len > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            describe(source, f"payload_len = n_lines*n_samples*itemsize = {expected} (max {MAX_PAYLOAD_BYTES})", payload_len)
        )
    if seq + n_lines > SEQ_LIMIT:
        raise ProtocolError(describe(source, "seq + n_lines <= 2**63 (int64 line numbers)", seq))
    return DataHeader(seq, t_s, n_lines, n_samples, hello.dtype, payload_len)


def decode_payload(header: DataHeader, payload: bytes | bytearray, source: str = "stream") -> LineBlock:
    """The :class:`LineBlock` of a data frame, samples as sent (NaN and Inf included: the
    engine's :class:`~mmode.ingest.frame_check.FrameCheck` drops such a frame)."""
    if len(payload) != header.payload_len:
        raise ProtocolError(describe(source, f"{header.payload_len} payload bytes", len(payload)))
    lines = np.frombuffer(payload, dtype=header.dtype).reshape(header.n_lines, header.n_samples)
    return LineBlock(seq=header.seq, t_s=header.t_s, lines=lines)


def decode_stream(data: bytes, source: str = "stream") -> tuple[StreamHello, list[LineBlock | EndOfStream]]:
    """Parse a complete byte string (hello then frames); for tests, fuzzing and captures.

    Raises :class:`ProtocolError` for broken framing, including a truncated last frame;
    frames with non-finite samples or ``t_s`` are returned as sent.
    """
    view = memoryview(data)
    pos = 0

    def read_exact(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise ProtocolError(describe(source, f"{n} more bytes", f"{len(view) - pos} (truncated frame)"))
        out = bytes(view[pos : pos + n])
        pos += n
        return out

    hello = parse_hello(read_exact, source)
    frames: list[LineBlock | EndOfStream] = []
    while pos < len(view):
        header = parse_frame_header(read_exact, hello, source)
        if isinstance(header, EndOfStream):
            frames.append(header)
            continue
        frames.append(decode_payload(header, read_exact(header.payload_len), source))
    return hello, frames
