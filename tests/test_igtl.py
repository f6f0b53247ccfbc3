"""OpenIGTLink transport: blocks of lines as IMAGE messages, checked against pyigtl itself."""

from __future__ import annotations

import json
import struct
import threading
import time

import numpy as np
import pyigtl
import pytest

from mmode.errors import ProtocolError
from mmode.ingest import igtl
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.sources import ArraySource, IgtlSource
from mmode.ingest.stream import StreamServer
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
