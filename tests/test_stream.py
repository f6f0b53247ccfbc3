"""Stream protocol v1: byte layout, strict limits, fuzzing, loopback server and client."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmode.errors import DataError, ProtocolError
from mmode.ingest import stream_codec
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.sources import ArraySource, TcpSource
from mmode.ingest.stream import StreamClient, StreamClosed, StreamServer
from mmode.ingest.stream_codec import EndOfStream, decode_stream, encode_block, encode_end, encode_hello

RF = AcquisitionMeta("rf", fs_hz=40e6, f0_hz=5e6, prf_hz=1000.0)
IQ = AcquisitionMeta("iq", fs_hz=10e6, f0_hz=5e6, prf_hz=1000.0)
ENV = AcquisitionMeta("envelope", fs_hz=10e6, f0_hz=0.0, prf_hz=500.0, probe="L7")


def documented_hello(meta: AcquisitionMeta, n_samples: int, dtype: str) -> bytes:
    """The hello frame as docs/protocol.md lays it out, built independently of the encoder."""
    body = json.dumps({"meta": meta.to_dict(), "n_samples": n_samples, "dtype": dtype}).encode()
    return b"MMSH" + struct.pack("<HHI", 1, 0, len(body)) + body


def documented_frame(seq: int, t_s: float, lines: np.ndarray, code: int, payload_len: int | None = None) -> bytes:
    payload = lines.astype(lines.dtype.newbyteorder("<")).tobytes()
    n = len(payload) if payload_len is None else payload_len
    return b"MMSD" + struct.pack("<QdIIB3xI", seq, t_s, lines.shape[0], lines.shape[1], code, n) + payload


def rng_lines(n: int, n_samples: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "complex64":
        return (rng.standard_normal((n, n_samples)) + 1j * rng.standard_normal((n, n_samples))).astype(np.complex64)
    if dtype == "float32":
        return rng.standard_normal((n, n_samples)).astype(np.float32)
    return rng.integers(-32768, 32767, (n, n_samples)).astype(np.int16)


# -- byte layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("meta,dtype,code", [(RF, "int16", 1), (ENV, "float32", 2), (IQ, "complex64", 3)])
def test_documented_bytes_decode_and_encoder_matches_them(meta, dtype, code):
    a, b = rng_lines(5, 32, dtype, 1), rng_lines(7, 32, dtype, 2)
    data = documented_hello(meta, 32, dtype) + documented_frame(10, 0.01, a, code) + documented_frame(15, 0.015, b, code)
    data += b"MMSE" + struct.pack("<Q", 22)
    hello, frames = decode_stream(data)
    assert hello.meta == meta and hello.n_samples == 32 and hello.dtype == np.dtype(dtype)
    assert [f.seq for f in frames[:2]] == [10, 15] and frames[2] == EndOfStream(22)
    np.testing.assert_array_equal(frames[0].lines, a)
    np.testing.assert_array_equal(frames[1].lines, b)
    assert frames[1].t_s == 0.015
    encoded = encode_hello(meta, 32, np.dtype(dtype)) + encode_block(LineBlock(10, 0.01, a))
    encoded += encode_block(LineBlock(15, 0.015, b)) + encode_end(22)
    assert encoded == data


def test_big_endian_input_is_sent_little_endian():
    a = rng_lines(3, 8, "int16").astype(">i2")
    _, (frame,) = decode_stream(encode_hello(RF, 8, np.int16) + encode_block(LineBlock(0, 0.0, a)))
    np.testing.assert_array_equal(frame.lines, a.astype(np.int16))


# -- rejections -------------------------------------------------------------------------------
def good_hello() -> bytes:
    return documented_hello(RF, 16, "int16")


BAD_STREAMS = {
    "wrong hello magic": b"HTTP" + good_hello()[4:],
    "wrong version": b"MMSH" + struct.pack("<HHI", 2, 0, 2) + b"{}",
    "oversize json length": b"MMSH" + struct.pack("<HHI", 1, 0, 0xFFFFFFFF),
    "zero json length": b"MMSH" + struct.pack("<HHI", 1, 0, 0),
    "json not utf-8": b"MMSH" + struct.pack("<HHI", 1, 0, 2) + b"\xff\xfe",
    "json not an object": b"MMSH" + struct.pack("<HHI", 1, 0, 2) + b"[]",
    "json nested absurdly deep": b"MMSH" + struct.pack("<HHI", 1, 0, 60000) + b"[" * 60000,
    "bad metadata": documented_hello(RF, 16, "int16").replace(b'"rf"', b'"xx"'),
    "dtype not allowed for kind": documented_hello(RF, 16, "complex64"),
    "n_samples too large": documented_hello(RF, stream_codec.MAX_SAMPLES + 1, "int16"),
    "truncated hello": good_hello()[:-3],
    "wrong frame magic": good_hello() + b"XXXX" + bytes(32),
    "oversize n_lines": good_hello() + b"MMSD" + struct.pack("<QdIIB3xI", 0, 0.0, 1 << 30, 16, 1, 0xFFFFFFFF),
    "zero n_lines": good_hello() + b"MMSD" + struct.pack("<QdIIB3xI", 0, 0.0, 0, 16, 1, 0),
    "n_samples differs from hello": good_hello() + documented_frame(0, 0.0, rng_lines(2, 17, "int16"), 1),
    "dtype code differs from hello": good_hello() + documented_frame(0, 0.0, rng_lines(2, 16, "float32"), 2),
    "unknown dtype code": good_hello() + documented_frame(0, 0.0, rng_lines(2, 16, "int16"), 9),
    "payload length mismatch": good_hello() + documented_frame(0, 0.0, rng_lines(2, 16, "int16"), 1, payload_len=65),
    "oversize payload length": good_hello() + b"MMSD" + struct.pack("<QdIIB3xI", 0, 0.0, 2, 16, 1, 0xFFFFFFFF),
    "truncated payload": (good_hello() + documented_frame(0, 0.0, rng_lines(4, 16, "int16"), 1))[:-10],
    "truncated header": good_hello() + b"MMSD" + bytes(10),
    "seq beyond int64 line numbers": good_hello() + documented_frame((1 << 63) - 1, 0.0, rng_lines(2, 16, "int16"), 1),
}


def logging_reader(data: bytes):
    """``(read_exact, requested)``: a reader over ``data`` that logs every size asked for
    (what a socket reader would allocate) and raises ProtocolError past the end."""
    requested, pos = [], 0

    def read_exact(n):
        nonlocal pos
        requested.append(n)
        if pos + n > len(data):
            raise ProtocolError("truncated")
        pos += n
        return data[pos - n : pos]

    return read_exact, requested


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
def test_malformed_input_is_a_protocol_error_before_allocating(name):
    data = BAD_STREAMS[name]
    read_exact, requested = logging_reader(data)
    with pytest.raises(ProtocolError):
        hello = stream_codec.parse_hello(read_exact)
        while True:
            header = stream_codec.parse_frame_header(read_exact, hello)
            stream_codec.decode_payload(header, read_exact(header.payload_len))
    # nothing larger than the bytes actually present was ever asked for (no blind allocation)
    assert max(requested) <= max(len(data), stream_codec._DATA.size)
    with pytest.raises(ProtocolError):
        decode_stream(data)


def test_non_finite_samples_and_times_are_framing_that_parses():
    """The parser checks framing only: a frame with NaN/Inf samples or t_s comes back as sent
    (the engine's FrameCheck drops or re-times it, tests/test_bad_frames.py)."""
    bad = np.array([[0, np.nan, 0, np.inf]], np.float32)
    iq = np.array([[1 + 1j, complex(0.0, -np.inf)]], np.complex64)
    data = documented_hello(ENV, 4, "float32") + documented_frame(0, float("nan"), bad, 2)
    data += documented_frame(1, float("-inf"), bad, 2)
    _, frames = decode_stream(data)
    np.testing.assert_array_equal(frames[0].lines, bad)
    assert np.isnan(frames[0].t_s) and frames[1].t_s == float("-inf")
    _, (frame,) = decode_stream(documented_hello(IQ, 2, "complex64") + documented_frame(3, 0.5, iq, 3))
    np.testing.assert_array_equal(frame.lines, iq)


def test_encoder_refuses_what_the_protocol_cannot_carry():
    with pytest.raises(DataError):
        encode_block(LineBlock(0, 0.0, np.zeros((2, 4), np.float64)))
    with pytest.raises(DataError):
        encode_block(LineBlock(0, 0.0, np.zeros((stream_codec.MAX_FRAME_LINES + 1, 4), np.int16)))
    with pytest.raises(DataError):
        encode_hello(IQ, 16, np.int16)


# -- fuzzing ----------------------------------------------------------------------------------
def valid_stream() -> bytes:
    return (
        encode_hello(RF, 8, np.int16)
        + encode_block(LineBlock(0, 0.0, rng_lines(3, 8, "int16")))
        + encode_block(LineBlock(3, 0.003, rng_lines(2, 8, "int16")))
        + encode_end(5)
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_never_crash(data):
    try:
        decode_stream(data)
    except ProtocolError:
        pass


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), min_size=1, max_size=6), st.integers(0, 300))
def test_fuzz_mutated_valid_streams_never_crash(mutations, cut):
    data = bytearray(valid_stream())
    for pos, value in mutations:
        data[pos % len(data)] = value
    data = bytes(data[: len(data) - cut % 40])
    try:
        hello, frames = decode_stream(data)
    except ProtocolError:
        return
    for f in frames:  # whatever parses is consistent with its hello
        if isinstance(f, LineBlock):
            assert f.lines.shape[1] == hello.n_samples and f.lines.dtype == hello.dtype


FUZZ_HELLO = documented_hello(ENV, 4, "float32")  # frames: float32 lines of 4 samples (16 bytes)
U32 = st.one_of(st.integers(0, 8), st.sampled_from([16, 32, 4096, 4097, 1 << 20, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF))


def mostly(good, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` three times in four, else something from ``bad`` (so that valid frames occur)."""
    return st.one_of(st.just(good), st.just(good), st.just(good), bad)


@settings(max_examples=800, deadline=None)
@given(
    n_lines=st.one_of(st.integers(1, 8), U32),
    n_samples=mostly(4, st.one_of(st.sampled_from([0, 3, 5]), U32)),
    code=mostly(2, st.integers(0, 255)),
    payload_len=mostly(None, U32),  # None: the consistent n_lines * 16
    t_s=mostly(0.25, st.floats(allow_nan=True, allow_infinity=True)),
    extra=mostly(0, st.integers(-20, 20)),
    data=st.data(),
)
def test_fuzz_frame_headers_against_the_documented_rules(n_lines, n_samples, code, payload_len, t_s, extra, data):
    """Every header field, random: the parser accepts exactly the frames docs/protocol.md
    allows, and never asks for more bytes than a frame's header before validating it."""
    payload_len = (n_lines * 16) & 0xFFFFFFFF if payload_len is None else payload_len
    n_bytes = max(0, min(payload_len, 4096) + extra)  # about the announced length, short or long
    payload = data.draw(st.binary(min_size=n_bytes, max_size=n_bytes))
    data = FUZZ_HELLO + b"MMSD" + struct.pack("<QdIIB3xI", 7, t_s, n_lines, n_samples, code, payload_len) + payload
    read_exact, requested = logging_reader(data)
    samples = np.frombuffer(payload[: min(payload_len, len(payload)) // 4 * 4], "<f4")
    header_ok = 1 <= n_lines <= 4096 and n_samples == 4 and code == 2 and payload_len == n_lines * 16
    valid = header_ok and len(payload) >= payload_len  # NaN/Inf samples or t_s: framing is fine
    hello = stream_codec.parse_hello(read_exact)
    try:
        header = stream_codec.parse_frame_header(read_exact, hello)
        block = stream_codec.decode_payload(header, read_exact(header.payload_len))
    except ProtocolError:
        assert not valid
        # a request beyond the hello and a header is the payload of a header that passed every check
        assert max(requested) <= max(len(FUZZ_HELLO), stream_codec._DATA.size) or (header_ok and max(requested) == payload_len)
        return
    assert valid
    assert (block.seq, block.n_lines) == (7, n_lines)
    np.testing.assert_array_equal([block.t_s], [t_s])  # NaN included
    np.testing.assert_array_equal(block.lines.ravel(), samples)


# -- loopback ---------------------------------------------------------------------------------
def read_all(client: StreamClient) -> list:
    frames = []
    while True:
        f = client.read_frame()
        frames.append(f)
        if isinstance(f, EndOfStream):
            return frames


def test_server_serves_every_client_the_same_lines():
    lines = rng_lines(500, 64, "int16")
    server = StreamServer(ArraySource(RF, lines, block_lines=50, speed=4.0), port=0, wait_for_client=True)
    with server:
        assert server.address[0] == "127.0.0.1"
        first = StreamClient(*server.address, connect_timeout_s=5)
        second = StreamClient(*server.address, connect_timeout_s=5)
        frames = read_all(first)
        assert frames[-1] == EndOfStream(500)
        got = np.concatenate([f.lines for f in frames[:-1]])
        np.testing.assert_array_equal(got, lines)
        late = read_all(second)  # joined a moment later: a suffix of the same stream
        assert late[-1] == EndOfStream(500)
        start = late[0].seq
        np.testing.assert_array_equal(np.concatenate([f.lines for f in late[:-1]]), lines[start:])
        assert server.wait(5.0)


def test_slow_client_loses_whole_frames_counted_and_memory_stays_bounded():
    block, n_blocks = 64, 400  # 400 frames of 32 KiB: far more than the socket buffers hold
    lines = rng_lines(block * n_blocks, 256, "int16")
    server = StreamServer(ArraySource(RF, lines, block_lines=block), port=0, client_queue_frames=4, wait_for_client=True)
    with server:
        client = StreamClient(*server.address)
        deadline = time.monotonic() + 20
        while server.lines_sent < len(lines) and time.monotonic() < deadline:
            time.sleep(0.05)  # the client reads nothing meanwhile
        assert max(len(c.frames.queue) for c in server._clients) <= 4
        frames = read_all(client)
    blocks = frames[:-1]
    received = sum(b.n_lines for b in blocks)
    missing = len(lines) - received
    assert server.frames_dropped > 0
    assert missing == server.frames_dropped * block
    for b in blocks:
        np.testing.assert_array_equal(b.lines, lines[b.seq : b.seq + b.n_lines])


def fake_server(payload: bytes, *, then_wait: float = 2.0):
    """A one-shot TCP server that sends ``payload`` and records whether the peer hung up."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    seen = {"peer_closed": False}

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(payload)
            conn.settimeout(then_wait)
            try:
                seen["peer_closed"] = conn.recv(1) == b""
            except OSError:
                seen["peer_closed"] = True
        listener.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return listener.getsockname()[1], t, seen


def test_client_rejects_a_server_that_is_not_an_mmode_stream():
    port, t, seen = fake_server(b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(ProtocolError, match="hello magic"):
        StreamClient("127.0.0.1", port, connect_timeout_s=2)
    t.join(5)
    assert seen["peer_closed"]


def test_oversize_frame_closes_the_connection_with_a_clear_error():
    payload = good_hello() + b"MMSD" + struct.pack("<QdIIB3xI", 0, 0.0, 4000, 16, 1, 0xFFFFFFF0)
    port, t, seen = fake_server(payload)
    client = StreamClient("127.0.0.1", port, connect_timeout_s=2)
    with pytest.raises(ProtocolError, match="payload_len"):
        client.read_frame()
    t.join(5)
    assert seen["peer_closed"]


def test_silent_server_and_refused_port_are_clear_errors():
    port, t, _ = fake_server(b"", then_wait=3)
    with pytest.raises(StreamClosed, match="silence"):
        StreamClient("127.0.0.1", port, connect_timeout_s=0.5)
    t.join(5)
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(DataError, match="accepting connections"):
        TcpSource("127.0.0.1", port, connect_timeout_s=1).open()


def test_tcp_source_reconnects_when_the_server_returns():
    lines = rng_lines(20000, 32, "int16")
    server = StreamServer(ArraySource(RF, lines, block_lines=20, speed=1.0), port=0)
    server.start()
    port = server.address[1]
    source = TcpSource("127.0.0.1", port, backoff_s=0.05, max_backoff_s=0.2)
    source.open()
    try:
        got = [b for b in (source.read_block(1.0) for _ in range(3)) if b is not None]
        assert got and source.status == "running"
        server.stop()  # the server goes away mid-stream
        deadline = time.monotonic() + 5
        while source.status != "reconnecting" and time.monotonic() < deadline:
            source.read_block(0.1)
        assert source.status == "reconnecting"
        assert "reconnecting" in source.message and f"127.0.0.1:{port}" in source.message
        for _ in range(5):  # still away: the source keeps trying without raising
            assert source.read_block(0.05) is None
        server = StreamServer(ArraySource(RF, lines, block_lines=20, speed=1.0), port=port).start()
        deadline = time.monotonic() + 5
        block = None
        while block is None and time.monotonic() < deadline:
            block = source.read_block(0.1)
        assert block is not None and source.status == "running" and source.reconnects == 1
        np.testing.assert_array_equal(block.lines, lines[block.seq : block.seq + block.n_lines])
    finally:
        source.stop()
        server.stop()


def test_reconnect_to_a_different_stream_is_refused():
    a = StreamServer(ArraySource(RF, rng_lines(5000, 32, "int16"), block_lines=10, speed=1.0), port=0).start()
    port = a.address[1]
    source = TcpSource("127.0.0.1", port, backoff_s=0.05)
    source.open()
    a.stop()
    b = StreamServer(ArraySource(RF, rng_lines(5000, 48, "int16"), block_lines=10, speed=1.0), port=port).start()
    try:
        with pytest.raises(ProtocolError, match="same stream"):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                source.read_block(0.1)
    finally:
        source.stop()
        b.stop()


def test_clients_beyond_the_limit_are_turned_away():
    lines = rng_lines(5000, 16, "int16")
    with StreamServer(ArraySource(RF, lines, block_lines=10, speed=1.0), port=0, max_clients=2) as server:
        a, b = StreamClient(*server.address), StreamClient(*server.address)
        with pytest.raises(StreamClosed):
            StreamClient(*server.address, connect_timeout_s=2)
        assert server.clients_refused == 1
        assert isinstance(a.read_frame(), LineBlock) and isinstance(b.read_frame(), LineBlock)
        a.close()
        b.close()
