"""Stream protocol v1 (TCP): frame encoding, a strict parser, the server and the client.

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
import queue
import select
import socket
import struct
import threading
import time
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

DEFAULT_PORT = 7700


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


# -- client -----------------------------------------------------------------------------------
class StreamClosed(ConnectionError):
    """The peer closed the connection or went silent (not a protocol violation)."""


class Connection:
    """A client TCP connection with bounded waits, shared by the protocol clients.

    ``connect_timeout_s`` bounds connecting; ``stall_timeout_s`` bounds the silence inside a
    frame or between frames before the connection counts as lost (:class:`StreamClosed`).
    """

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 5.0, stall_timeout_s: float = 10.0) -> None:
        self.source = f"{host}:{port}"
        self.stall_timeout_s = float(stall_timeout_s)
        self._stop = threading.Event()
        try:
            self._sock: socket.socket | None = socket.create_connection((host, port), timeout=connect_timeout_s)
        except OSError as exc:
            raise StreamClosed(describe(self.source, "a stream server accepting connections", exc.strerror or exc)) from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(0.1)
        self._last_byte_s = time.monotonic()

    def _read_into(self, buf: memoryview, patience_s: float) -> None:
        got = 0
        while got < len(buf):
            if self._sock is None or self._stop.is_set():
                raise StreamClosed(describe(self.source, "an open connection", "closed"))
            try:
                n = self._sock.recv_into(buf[got:])
            except socket.timeout:
                if time.monotonic() - self._last_byte_s > patience_s:
                    raise StreamClosed(describe(self.source, f"data within {patience_s:g} s", "silence")) from None
                continue
            except OSError as exc:
                raise StreamClosed(describe(self.source, "an open connection", exc.strerror or exc)) from None
            if n == 0:
                raise StreamClosed(
                    describe(self.source, f"{len(buf) - got} more bytes", "the connection closed by the server")
                )
            got += n
            self._last_byte_s = time.monotonic()

    def _read_exact(self, n: int, patience_s: float) -> bytes:
        buf = bytearray(n)
        self._read_into(memoryview(buf), patience_s)
        return bytes(buf)

    def wait_readable(self, timeout_s: float) -> bool:
        """True when bytes (or a close) are waiting, False after ``timeout_s`` of nothing."""
        sock = self._sock  # close() may clear it from another thread
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], max(0.0, timeout_s))
        except (OSError, ValueError):  # closed meanwhile: the next read says so
            return True
        return bool(readable)

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class StreamClient(Connection):
    """One connection to a protocol v1 server: reads the hello (:attr:`hello`), then frames.

    The hello must arrive within ``connect_timeout_s``. Broken framing raises
    :class:`ProtocolError` and closes the socket; a lost peer raises :class:`StreamClosed`.
    """

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 5.0, stall_timeout_s: float = 10.0) -> None:
        super().__init__(host, port, connect_timeout_s=connect_timeout_s, stall_timeout_s=stall_timeout_s)
        try:
            self.hello = parse_hello(lambda n: self._read_exact(n, connect_timeout_s), self.source)
        except BaseException:
            self.close()
            raise

    def read_frame(self) -> LineBlock | EndOfStream:
        """Read one whole frame (blocks up to ``stall_timeout_s`` of silence)."""
        try:
            header = parse_frame_header(lambda n: self._read_exact(n, self.stall_timeout_s), self.hello, self.source)
            if isinstance(header, EndOfStream):
                return header
            payload = bytearray(header.payload_len)  # size validated by parse_frame_header
            self._read_into(memoryview(payload), self.stall_timeout_s)
            return decode_payload(header, payload, self.source)
        except (ProtocolError, StreamClosed):
            self.close()
            raise



# -- server -----------------------------------------------------------------------------------
class FrameEncoder:
    """How a server turns its source into bytes; subclassed for OpenIGTLink (ingest/igtl.py)."""

    def __init__(self, meta: AcquisitionMeta, n_samples: int, dtype: np.dtype) -> None:
        self.meta, self.n_samples, self.dtype = meta, int(n_samples), np.dtype(dtype)

    def hello(self) -> bytes:
        """Bytes every new client gets first (empty when the transport has none)."""
        return encode_hello(self.meta, self.n_samples, self.dtype)

    def block(self, block: LineBlock) -> bytes:
        return encode_block(block)

    def end(self, next_seq: int) -> bytes:
        """Bytes that tell a client the stream is over (empty when the transport has none)."""
        return encode_end(next_seq)


class _ClientConn:
    """One connected client: a bounded queue of frames and a sender thread."""

    def __init__(self, sock: socket.socket, address: tuple, queue_frames: int) -> None:
        self.sock = sock
        self.address = address
        self.frames: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_frames)
        self.frames_dropped = 0
        self.alive = True
        self.thread = threading.Thread(target=self._send_loop, name=f"stream-client-{address}", daemon=True)

    def offer(self, frame: bytes) -> None:
        """Queue a frame without blocking; a full queue drops it (the client sees a seq gap)."""
        try:
            self.frames.put_nowait(frame)
        except queue.Full:
            self.frames_dropped += 1

    def finish(self, last_frame: bytes, timeout_s: float = 10.0) -> None:
        """Send ``last_frame`` after those already queued, then close; a client that does not
        take them within ``timeout_s`` is disconnected."""
        deadline = time.monotonic() + timeout_s
        for item in ((last_frame,) if last_frame else ()) + (None,):
            while self.alive:
                try:
                    self.frames.put(item, timeout=0.1)
                    break
                except queue.Full:
                    if time.monotonic() > deadline:
                        self.close()
                        return

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _send_loop(self) -> None:
        try:
            while True:
                frame = self.frames.get()
                if frame is None:
                    break
                self.sock.sendall(frame)
        except OSError:
            pass  # the client went away; the server keeps serving the others
        finally:
            self.alive = False
            self.close()


class StreamServer:
    """Serves one source in real time to several clients (protocol v1 by default).

    A producer thread reads blocks from ``source`` (already opened or not) and offers each
    frame to every client's bounded queue; a client too slow to keep up loses whole frames
    (counted in :attr:`frames_dropped`, visible to it as a sequence gap) and never slows
    the others or the source. Binds ``127.0.0.1`` unless told otherwise; ``port=0`` picks
    a free port (see :attr:`address`). With ``wait_for_client`` the source is read only once
    the first client has connected (file playback from its first line). Memory is bounded
    by ``max_clients`` (further connections are closed at once) times
    ``client_queue_frames`` frames.
    """

    def __init__(
        self,
        source,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        encoder_factory: Callable[[AcquisitionMeta, int, np.dtype], FrameEncoder] = FrameEncoder,
        client_queue_frames: int = 256,
        max_clients: int = 16,
        wait_for_client: bool = False,
    ) -> None:
        self.source = source
        self._encoder_factory = encoder_factory
        self._queue_frames = int(client_queue_frames)
        self.max_clients = int(max_clients)
        self.clients_refused = 0
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._clients: list[_ClientConn] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._first_client = threading.Event()
        if not wait_for_client:
            self._first_client.set()
        self._encoder: FrameEncoder | None = None
        self.lines_sent = 0
        self.clients_served = 0
        self._dropped_past = 0
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    @property
    def frames_dropped(self) -> int:
        """Frames dropped for slow clients, summed over clients (current and past)."""
        with self._lock:
            return self._dropped_past + sum(c.frames_dropped for c in self._clients)

    def start(self) -> "StreamServer":
        meta = self.source.open() if getattr(self.source, "meta", None) is None else self.source.meta
        self._encoder = self._encoder_factory(meta, self.source.n_samples, self.source.dtype)
        for target, name in ((self._accept_loop, "stream-accept"), (self._produce_loop, "stream-produce")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the source is exhausted (or :meth:`stop`); True if it ended."""
        return self._done.wait(timeout_s)

    def stop(self) -> None:
        """Stop serving: close the listener and every client; idempotent."""
        self._stop.set()
        self.source.stop()
        for t in self._threads:
            t.join(timeout=5.0)
        self._listener.close()
        with self._lock:
            clients, self._clients = self._clients, []
            self._dropped_past += sum(c.frames_dropped for c in clients)
        for c in clients:
            c.close()
        self._done.set()

    def __enter__(self) -> "StreamServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _ClientConn(sock, address, self._queue_frames)
            hello = self._encoder.hello()
            if hello:
                conn.offer(hello)
            with self._lock:
                full = sum(c.alive for c in self._clients) >= self.max_clients
                if self._done.is_set() or full:
                    self.clients_refused += full
                    sock.close()
                    continue
                self._clients.append(conn)
                self.clients_served += 1
            conn.thread.start()
            self._first_client.set()

    def _broadcast(self, frame: bytes) -> None:
        with self._lock:
            gone = [c for c in self._clients if not c.alive]
            for c in gone:
                self._dropped_past += c.frames_dropped
                self._clients.remove(c)
            clients = list(self._clients)
        for c in clients:
            c.offer(frame)

    def _produce_loop(self) -> None:
        next_seq = 0
        while not self._first_client.wait(0.1):
            if self._stop.is_set():
                return
        try:
            for block in self.source.iter_blocks(self._stop):
                self._broadcast(self._encoder.block(block))
                self.lines_sent += block.n_lines
                next_seq = block.seq + block.n_lines
        except BaseException as exc:  # reported by the serve command; clients see the end
            if not self._stop.is_set():  # a source torn down by stop() is not an error
                self.error = exc
        if self._stop.is_set():
            return
        end = self._encoder.end(next_seq)
        with self._lock:
            self._done.set()
            clients = list(self._clients)
        for c in clients:
            c.finish(end)
        for c in clients:
            c.thread.join(timeout=5.0)
