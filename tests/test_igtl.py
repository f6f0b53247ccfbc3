"""OpenIGTLink transport: blocks of lines as IMAGE messages, checked against pyigtl itself."""

from __future__ import annotations

import json
import struct
import threading
import time

import numpy as np
import pyigtl
import pytest

from mmode.app.engine import Engine
from mmode.errors import ProtocolError
from mmode.ingest import igtl
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.sources import ArraySource, IgtlSource
from mmode.ingest.stream import StreamServer
from test_bad_frames import ScriptedServer, StrictPipeline  # scripted loopback server, checking pipeline
from test_stream import fake_server  # one-shot loopback server shared with the protocol v1 tests

RF = AcquisitionMeta("rf", fs_hz=40e6, f0_hz=5e6, prf_hz=1000.0, t0_s=2e-6)
IQ = AcquisitionMeta("iq", fs_hz=10e6, f0_hz=5e6, prf_hz=1000.0)


def read_until_end(source: IgtlSource, timeout_s: float = 20.0) -> list:
    blocks, deadline = [], time.monotonic() + timeout_s
    while not source.finished and time.monotonic() < deadline:
        b = source.read_block(0.2)
        if b is not None:
            blocks.append(b)
    assert source.finished and source.status == "ended"
    return blocks


@pytest.mark.parametrize("meta,lines", [
    (RF, np.random.default_rng(0).integers(-3000, 3000, (300, 128)).astype(np.int16)),
    (IQ, (np.random.default_rng(1).standard_normal((300, 64)) * (1 + 1j)).astype(np.complex64)),
])
def test_lines_seq_and_meta_survive_the_round_trip(meta, lines):
    with igtl.igtl_server(ArraySource(meta, lines, block_lines=40, speed=5.0), port=0, wait_for_client=True) as server:
        source = IgtlSource(*server.address)
        assert source.open() == meta and source.n_samples == lines.shape[1] and source.dtype == lines.dtype
        blocks = read_until_end(source)
        source.stop()
    assert [b.seq for b in blocks] == list(range(0, 300, 40))
    np.testing.assert_array_equal(np.concatenate([b.lines for b in blocks]), lines)
    assert blocks[1].t_s == pytest.approx(0.04)


def test_pyigtl_client_reads_our_image_messages():
    lines = np.arange(50 * 32, dtype=np.int16).reshape(50, 32)
    server = igtl.igtl_server(ArraySource(RF, lines, block_lines=50, speed=1.0), port=0, wait_for_client=True).start()
    client = pyigtl.OpenIGTLinkClient("127.0.0.1", server.address[1])
    try:
        msg = client.wait_for_message(igtl.DEVICE_NAME, timeout=5)
    finally:
        client.stop()
        server.stop()
    assert msg is not None and msg.image.shape == (1, 50, 32)
    np.testing.assert_array_equal(msg.image[0], lines)
    assert msg.metadata["mmode_seq"] == "0"
    assert json.loads(msg.metadata["mmode_meta"])["prf_hz"] == 1000.0
    # i axis: axial sample spacing and depth of sample 0, in mm
    assert msg.ijk_to_world_matrix[0, 0] == pytest.approx(RF.sample_spacing_m * 1e3, rel=1e-6)
    assert msg.ijk_to_world_matrix[0, 3] == pytest.approx(RF.depth_m(0) * 1e3, rel=1e-5)


def test_plain_pyigtl_sender_without_mmode_metadata():
    """A PLUS-like sender: uint8 images, no mmode metadata; meta comes from the caller."""
    server = pyigtl.OpenIGTLinkServer(port=0, local_server=True)
    port = server.server_address[1]
    frames = [np.full((1, 4, 16), k, dtype=np.uint8) for k in range(3)]
    env = AcquisitionMeta("envelope", fs_hz=10e6, f0_hz=0.0, prf_hz=30.0)

    def send():
        deadline = time.monotonic() + 10
        while not server.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        for f in frames:
            server.send_message(pyigtl.ImageMessage(f, device_name="Image_Reference"), wait=True)
            time.sleep(0.1)  # pyigtl's receiver keeps one message per device

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        source = IgtlSource("127.0.0.1", port, meta=env)
        assert source.open() == env and source.dtype == np.float32
        got = [source.read_block(2.0) for _ in range(3)]
        source.stop()
    finally:
        t.join(5)
        server.stop()
    assert [b.seq for b in got] == [0, 4, 8]
    for k, b in enumerate(got):
        np.testing.assert_array_equal(b.lines, np.full((4, 16), k, np.float32))


def test_oversize_body_is_refused_before_reading_it():
    header = struct.pack(">H12s20sIIQQ", 2, b"IMAGE", b"mmode", 0, 0, 1 << 40, 0)
    port, t, seen = fake_server(header)
    with pytest.raises(ProtocolError, match="message body"):
        IgtlSource("127.0.0.1", port).open()
    t.join(5)
    assert seen["peer_closed"]


def test_corrupt_image_body_and_missing_metadata_are_protocol_errors():
    good = igtl.encode_image(LineBlock(0, 0.0, np.zeros((4, 8), np.int16)), RF)
    corrupt = good[:58] + b"\xff" * (len(good) - 58)
    port, t, _ = fake_server(corrupt)
    with pytest.raises(ProtocolError):
        IgtlSource("127.0.0.1", port).open()
    t.join(5)
    bare = pyigtl.ImageMessage(np.zeros((1, 4, 8), np.int16), device_name="x").pack()
    port, t, _ = fake_server(bare)
    with pytest.raises(ProtocolError, match="mmode_meta"):
        IgtlSource("127.0.0.1", port).open()
    t.join(5)


def test_an_mmode_stream_server_is_not_mistaken_for_openigtlink():
    lines = np.zeros((100, 8), np.int16)
    with StreamServer(ArraySource(RF, lines, block_lines=10, speed=1.0), port=0) as server:
        with pytest.raises(ProtocolError, match="OpenIGTLink header"):
            IgtlSource(*server.address).open()


def plus_like_image(k: int, stamp_s: float, nan: bool = False) -> bytes:
    """IMAGE message ``k`` as PLUS sends it: 20 float32 lines of 64 samples (one NaN with
    ``nan``), no mmode metadata, the time in the header."""
    image = np.random.default_rng(k).standard_normal((1, 20, 64)).astype(np.float32)
    if nan:
        image[0, 5, 5] = np.nan
    return pyigtl.ImageMessage(image, timestamp=stamp_s, device_name="Image_Reference").pack()


def test_jittery_header_times_are_retimed_and_nan_images_rejected():
    """A sender without mmode_t_s: lines numbered by arrival, timed by jittery header time
    stamps (epoch seconds). Frame 8 has a NaN sample; frame 12 is 0.3 ms late (kept), 13 is
    3 ms early (beyond the 2 ms tolerance) and 20 runs 25 ms backwards: both get the time
    their seq predicts."""
    meta = AcquisitionMeta("rf", fs_hz=40e6, f0_hz=5e6, prf_hz=1000.0)
    jitter_s = {12: 0.0003, 13: -0.003, 20: -0.025}
    stamps = [1.7e9 + k * 0.020 + jitter_s.get(k, 0.0) for k in range(30)]
    script = [plus_like_image(k, stamp, nan=k == 8) for k, stamp in enumerate(stamps)]
    script.append(pyigtl.StringMessage("600", device_name=igtl.END_DEVICE_NAME).pack())
    server = ScriptedServer([script])
    pipe = StrictPipeline(meta.prf_hz)
    engine = Engine(IgtlSource("127.0.0.1", server.port, meta=meta), pipeline=pipe, ring_seconds=10, max_latency_s=10)
    try:
        engine.start()
        engine.wait_ready()
        assert engine.wait(30)
        engine.stop()
    finally:
        server.close()
    s = engine.stats()
    assert s["state"] == "ended", s["message"]
    assert (s["frames_rejected"], s["lines_rejected"], s["frames_retimed"], s["lines_retimed"]) == (1, 20, 2, 40)
    assert s["lines_received"] == s["lines_processed"] == 29 * 20 and s["gaps"] == 0
    first = {k: pipe.line_t_s[20 * k] for k in range(30) if k != 8}
    # header times count from the first message's; 13 predicted from 12 (0.3 ms late), 20 from 19
    expected = {k: k * 0.020 + (jitter_s.get(k, 0.0) if k not in (13, 20) else 0.0) for k in first}
    expected[13] = 13 * 0.020 + 0.0003
    np.testing.assert_allclose([first[k] for k in sorted(first)], [expected[k] for k in sorted(first)], atol=1e-6)


def test_unreadable_mmode_t_s_is_a_time_to_retime_but_a_bad_mmode_seq_closes():
    def message(seq: str, t_s: str) -> bytes:
        msg = pyigtl.ImageMessage(np.zeros((1, 4, 8), np.int16), device_name=igtl.DEVICE_NAME)
        msg.header_version = 2
        msg.metadata = {"mmode_seq": seq, "mmode_t_s": t_s, "mmode_meta": json.dumps(RF.to_dict())}
        return msg.pack()

    port, t, _ = fake_server(message("0", "soon"))
    source = IgtlSource("127.0.0.1", port)
    source.open()
    block = source.read_block(2.0)
    source.stop()
    t.join(5)
    assert block.seq == 0 and np.isnan(block.t_s)  # the engine's FrameCheck re-times it
    for seq in ("minus one", "-1", str(1 << 63)):
        port, t, _ = fake_server(message(seq, "0.0"))
        with pytest.raises(ProtocolError, match="mmode_seq"):
            IgtlSource("127.0.0.1", port).open()
        t.join(5)
