"""Stream protocol v1 over TCP: the server (:class:`StreamServer`) and the client
(:class:`StreamClient`). The bytes on the wire are :mod:`mmode.ingest.stream_codec`'s
(docs/protocol.md is the full contract); this module only moves them: bounded waits on the
client, a bounded queue per client on the server.
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time
from typing import Callable

import numpy as np

from mmode.errors import ProtocolError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.stream_codec import (
    EndOfStream,
    decode_payload,
    encode_block,
    encode_end,
    encode_hello,
    parse_frame_header,
    parse_hello,
)

DEFAULT_PORT = 7700


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
