"""OpenIGTLink transport (for PLUS / 3D Slicer users): blocks of lines as IMAGE messages.

Messages are packed and unpacked with ``pyigtl`` (``ImageMessage``, ``MessageBase``); the
sockets are ours, because pyigtl's own communication classes keep only the newest message
per device (a consumer a moment late loses lines silently), read any announced body size
without a limit, accept a single client, and replace the process's SIGINT/SIGTERM handlers.

Mapping (docs/protocol.md): one IMAGE message (header version 2) per block of lines,
device name ``"mmode"``, image size (i, j, k) = (n_samples, n_lines, 1), scalar int16 or
float32 (IQ: float32 with 2 components, real and imaginary), little-endian; spacing along
i is the axial sample spacing in mm and the origin the depth of sample 0 in mm. Message
metadata: ``mmode_seq`` (seq of the first line), ``mmode_t_s`` (its time, seconds) and
``mmode_meta`` (the acquisition metadata as JSON). The end of a finite source is a STRING
message from device ``"mmode_end"`` whose text is the next seq.
"""

from __future__ import annotations

import json
import math
import struct
import time

import numpy as np
import pyigtl

from mmode.errors import DataError, ProtocolError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.stream import Connection, FrameEncoder, StreamServer
from mmode.ingest.stream_codec import KIND_DTYPES, MAX_PAYLOAD_BYTES, SEQ_LIMIT, EndOfStream, StreamHello

DEFAULT_PORT = 18944
DEVICE_NAME = "mmode"
END_DEVICE_NAME = "mmode_end"
HEADER_SIZE = pyigtl.MessageBase.IGTL_HEADER_SIZE
#: Largest IMAGE message body accepted (payload limit of protocol v1 plus headers).
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024
#: OpenIGTLink stores each image dimension in 16 bits.
MAX_DIM = 0xFFFF


def encode_image(block: LineBlock, meta: AcquisitionMeta, device_name: str = DEVICE_NAME) -> bytes:
    """One IMAGE message (bytes) carrying ``block`` and the metadata."""
    lines = block.lines
    n_lines, n_samples = lines.shape
    if not (0 < n_lines <= MAX_DIM and 0 < n_samples <= MAX_DIM):
        raise DataError(describe("OpenIGTLink", f"at most {MAX_DIM} lines of at most {MAX_DIM} samples per message", lines.shape))
    if lines.dtype.kind == "c":
        image = np.ascontiguousarray(lines, dtype="<c8").view("<f4").reshape(1, n_lines, n_samples, 2)
    elif lines.dtype.name in ("int16", "float32"):
        image = np.ascontiguousarray(lines, dtype=lines.dtype.newbyteorder("<"))[np.newaxis]
    else:
        raise DataError(describe("OpenIGTLink", "int16, float32 or complex64 lines", lines.dtype))
    matrix = np.eye(4)
    matrix[0, 0] = meta.sample_spacing_m * 1e3
    matrix[0, 3] = float(meta.depth_m(0)) * 1e3
    msg = pyigtl.ImageMessage(image, ijk_to_world_matrix=matrix, timestamp=time.time(), device_name=device_name)
    msg.header_version = 2
    msg.metadata = {
        "mmode_seq": str(int(block.seq)),
        "mmode_t_s": repr(float(block.t_s)),
        "mmode_meta": json.dumps(meta.to_dict()),
    }
    return msg.pack()


def encode_end(next_seq: int) -> bytes:
    """The STRING message that ends a finite stream."""
    return pyigtl.StringMessage(str(int(next_seq)), device_name=END_DEVICE_NAME).pack()


class IgtlEncoder(FrameEncoder):
    """Frame encoder of :class:`StreamServer` for OpenIGTLink (no hello; metadata per message)."""

    def hello(self) -> bytes:
        return b""

    def block(self, block: LineBlock) -> bytes:
        return encode_image(block, self.meta)

    def end(self, next_seq: int) -> bytes:
        return encode_end(next_seq)


def igtl_server(source, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **kwargs) -> StreamServer:
    """A :class:`StreamServer` that sends IMAGE messages to any number of clients."""
    return StreamServer(source, host, port, encoder_factory=IgtlEncoder, **kwargs)


def _as_lines(image: np.ndarray, source: str) -> np.ndarray:
    """(k, j, i[, components]) image of one slice -> (n_lines, n_samples) native lines."""
    if image.ndim == 4 and image.shape[0] == 1 and image.shape[3] == 2 and image.dtype.kind == "f":
        pairs = image[0].astype("=f4")
        return (pairs[..., 0] + 1j * pairs[..., 1]).astype(np.complex64)
    if image.ndim != 3 or image.shape[0] != 1:
        raise ProtocolError(describe(source, "an IMAGE of one slice (k = 1) and one or two components", image.shape))
    lines = image[0]
    if lines.dtype.name in ("int16", "float32"):  # any byte order -> native
        return np.ascontiguousarray(lines, dtype=lines.dtype.newbyteorder("="))
    return np.ascontiguousarray(lines, dtype=np.float32)  # other scalar types (uint8 B-mode, ...)


class IgtlClient(Connection):
    """Reads IMAGE messages of lines from an OpenIGTLink server.

    The first IMAGE message plays the part of the protocol v1 hello: its ``mmode_meta``
    metadata (or ``meta`` when the sender has none) gives :attr:`hello`. Messages of other
    types or other devices are skipped. A message that cannot be read (a header beyond
    :data:`MAX_BODY_BYTES`, refused before the body is allocated; a body pyigtl cannot
    unpack; an image unlike the first; a bad ``mmode_seq``) raises :class:`ProtocolError`
    and closes the connection. Samples and times are returned as sent: the engine's
    :class:`~mmode.ingest.frame_check.FrameCheck` drops NaN/Inf images and re-times a
    ``mmode_t_s`` (or header time stamp) that is not finite or disagrees with the seq.
    """

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        device_name: str | None = None,
        meta: AcquisitionMeta | None = None,
        connect_timeout_s: float = 5.0,
        stall_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(host, port, connect_timeout_s=connect_timeout_s, stall_timeout_s=stall_timeout_s)
        self.source = f"igtl://{host}:{port}"
        self.device_name = device_name
        self._meta = meta
        self._count = 0
        self._t0_stamp: float | None = None
        try:
            first = self._next(connect_timeout_s)
            if isinstance(first, EndOfStream):
                raise ProtocolError(describe(self.source, "an IMAGE message of lines", "the end of the stream"))
            self._pending: LineBlock | None = first
        except BaseException:
            self.close()
            raise

    def _message(self, patience_s: float) -> tuple[dict, bytes]:
        raw = self._read_exact(HEADER_SIZE, patience_s)
        version = struct.unpack(">H", raw[:2])[0]
        if version not in (1, 2):
            raise ProtocolError(describe(self.source, "an OpenIGTLink header (version 1 or 2)", f"version field {version}"))
        try:
            fields = pyigtl.MessageBase.parse_header(raw)
        except (UnicodeDecodeError, struct.error) as exc:
            raise ProtocolError(describe(self.source, "an OpenIGTLink header with ASCII type and device", exc)) from None
        if fields["body_size"] > MAX_BODY_BYTES:
            raise ProtocolError(describe(self.source, f"a message body of at most {MAX_BODY_BYTES} bytes", fields["body_size"]))
        return fields, self._read_exact(fields["body_size"], patience_s)

    def _decode_image(self, fields: dict, body: bytes) -> LineBlock:
        msg = pyigtl.ImageMessage()
        try:
            msg.unpack(fields, body)
            lines = _as_lines(msg.image, self.source)
        except ProtocolError:
            raise
        except Exception as exc:  # pyigtl raises whatever its parsing meets on malformed bytes
            raise ProtocolError(describe(self.source, "a well-formed IMAGE message", f"{type(exc).__name__}: {exc}")) from None
        md = msg.metadata
        if not hasattr(self, "hello"):
            self.hello = self._hello(md, lines)
        if lines.shape[1] != self.hello.n_samples or lines.dtype != self.hello.dtype:
            raise ProtocolError(
                describe(self.source, f"lines of {self.hello.n_samples} {self.hello.dtype} samples", f"{lines.shape[1]} {lines.dtype}")
            )
        try:
            seq = int(md["mmode_seq"]) if "mmode_seq" in md else self._count
        except (TypeError, ValueError) as exc:
            raise ProtocolError(describe(self.source, "an integer mmode_seq", exc)) from None
        if not 0 <= seq <= SEQ_LIMIT - lines.shape[0]:
            raise ProtocolError(describe(self.source, "mmode_seq >= 0 with seq + n_lines <= 2**63", seq))
        self._count = seq + lines.shape[0]
        return LineBlock(seq=seq, t_s=self._time_s(md, fields["timestamp"]), lines=lines)

    def _time_s(self, md: dict, stamp_s: float) -> float:
        """``mmode_t_s`` (NaN when it is not a number), else the header time stamp since the
        first message's; the engine re-times what is not finite or disagrees with the seq."""
        if "mmode_t_s" in md:
            try:
                return float(md["mmode_t_s"])
            except (TypeError, ValueError):
                return math.nan
        self._t0_stamp = stamp_s if self._t0_stamp is None else self._t0_stamp
        return stamp_s - self._t0_stamp

    def _hello(self, md: dict, lines: np.ndarray) -> StreamHello:
        if "mmode_meta" in md:
            try:
                meta = AcquisitionMeta.from_mapping(json.loads(md["mmode_meta"]), source=f"{self.source} mmode_meta")
            except (ValueError, TypeError, AttributeError, RecursionError) as exc:
                raise ProtocolError(describe(self.source, "mmode_meta metadata as a JSON object", exc)) from None
        elif self._meta is not None:
            meta = self._meta
        else:
            raise ProtocolError(describe(self.source, "mmode_meta metadata in the IMAGE message (or meta= given)", "none"))
        if lines.dtype.name not in KIND_DTYPES[meta.kind]:
            raise ProtocolError(describe(self.source, f"{' or '.join(KIND_DTYPES[meta.kind])} lines for kind {meta.kind!r}", lines.dtype))
        return StreamHello(meta=meta, n_samples=lines.shape[1], dtype=lines.dtype)

    def _next(self, patience_s: float) -> LineBlock | EndOfStream:
        while True:
            fields, body = self._message(patience_s)
            if fields["message_type"] == "STRING" and fields["device_name"] == END_DEVICE_NAME:
                msg = pyigtl.StringMessage()
                try:
                    msg.unpack(fields, body)
                    return EndOfStream(next_seq=int(msg.string))
                except Exception as exc:  # malformed STRING body
                    raise ProtocolError(describe(self.source, "an end message holding the next seq", exc)) from None
            if fields["message_type"] != "IMAGE" or (self.device_name and fields["device_name"] != self.device_name):
                continue
            return self._decode_image(fields, body)

    def read_frame(self) -> LineBlock | EndOfStream:
        """The next block of lines (or the end of the stream)."""
        if self._pending is not None:
            block, self._pending = self._pending, None
            return block
        try:
            return self._next(self.stall_timeout_s)
        except ProtocolError:
            self.close()
            raise

    def wait_readable(self, timeout_s: float) -> bool:
        return self._pending is not None or super().wait_readable(timeout_s)
