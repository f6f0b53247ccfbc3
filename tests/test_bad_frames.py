"""Bad frames do not end a session: a loopback server speaking stream protocol v1 sends NaN
frames, time stamps that run backwards or jitter, broken framing; the engine (and `mmode
monitor` as a subprocess) runs through, drops and re-times what it must, and says so."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mmode.app.engine import Engine
from mmode.app.ring import LineRing
from mmode.errors import DataError, describe
from mmode.ingest.h5format import read_h5, write_recording
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.sources import ArraySource, FileSource, TcpSource
from mmode.ingest.stream_codec import encode_block, encode_end, encode_hello
from test_engine import ScriptedSource  # plays scripted blocks once, shared with the engine tests

MMODE = str(Path(sys.executable).with_name("mmode"))
META = AcquisitionMeta("rf", fs_hz=20e6, f0_hz=5e6, prf_hz=1000.0)
N_SAMPLES, BLOCK = 256, 20  # 20-line frames: 20 ms at 1000 lines/s


class ScriptedServer:
    """A loopback server that sends connection ``k`` the byte frames ``scripts[k]``, then
    waits for the client to hang up; connections beyond the scripts are closed at once."""

    def __init__(self, scripts: list[list[bytes]]) -> None:
        self.scripts = scripts
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(60)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for script in self.scripts:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    for frame in script:
                        conn.sendall(frame)
                    conn.settimeout(60)
                    conn.recv(1)  # b"" once the client has closed
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@dataclass
class Out:
    seq_start: int
    seq_stop: int
    timings_ms: dict = field(default_factory=dict)
    classification: object = None


class StrictPipeline:
    """Stands in for the Pipeline with the checks of its stages on what it is given: finite
    samples (dsp.envelope.check_block_lines) and strictly increasing line times (the
    classifier), each line at ``t_s + i / prf_hz``. A violation raises DataError, which
    fails the engine. :attr:`line_t_s` keeps the time given to every line, by seq."""

    def __init__(self, prf_hz: float) -> None:
        self.prf_hz = prf_hz
        self.line_t_s: dict[int, float] = {}
        self._last_t_s = -math.inf

    def prepare(self, meta, n_samples) -> None:
        self.line_t_s.clear()
        self._last_t_s = -math.inf

    def update_settings(self, settings) -> None:
        pass

    def process(self, block: LineBlock) -> Out:
        if block.lines.dtype.kind in "fc" and not np.isfinite(block.lines).all():
            raise DataError(describe("strict pipeline", "finite samples", f"NaN or Inf from seq {block.seq}"))
        t_s = block.t_s + np.arange(block.n_lines) / self.prf_hz
        if t_s[0] <= self._last_t_s:
            raise DataError(describe("strict pipeline", f"line times after {self._last_t_s:.6f} s", f"{t_s[0]:.6f} s"))
        self._last_t_s = float(t_s[-1])
        self.line_t_s.update(zip(range(block.seq, block.seq + block.n_lines), t_s.tolist()))
        return Out(block.seq, block.seq + block.n_lines)


def float_lines(k: int) -> np.ndarray:
    """Frame ``k``'s float32 RF lines (BLOCK x N_SAMPLES), different for every frame."""
    return np.random.default_rng(k).standard_normal((BLOCK, N_SAMPLES)).astype(np.float32) * 100


def bad_frames_script() -> tuple[list[bytes], dict[int, float]]:
    """Hello, 40 frames of 20 lines with two NaN/Inf frames (10, 30), a time that runs
    backwards, one that jitters within the 2 ms tolerance, one beyond it, one that is NaN;
    then the end. Returns the frames and, for each frame that must pass, the time of its
    first line as the pipeline must see it (worked out by hand below)."""
    nominal = lambda k: 5.0 + k * BLOCK / META.prf_hz  # noqa: E731  (frame k's true time)
    times = {k: nominal(k) for k in range(40)}
    times[15] = 4.2  # backwards
    times[20] = nominal(20) + 0.0012  # jitter within tolerance: kept
    times[21] = nominal(21) + 0.007  # 7 ms off its prediction (from frame 20): re-timed
    times[25] = float("nan")
    frames = [encode_hello(META, N_SAMPLES, np.float32)]
    for k in range(40):
        lines = float_lines(k)
        if k == 10:
            lines[3, 17] = np.nan
        if k == 30:
            lines[19, 0] = -np.inf
        frames.append(encode_block(LineBlock(k * BLOCK, times[k], lines)))
    frames.append(encode_end(40 * BLOCK))
    # times of the first lines of the frames that pass, as the pipeline must see them:
    # 15 and 25 the time their seq predicts; 21 its prediction from frame 20 (kept 1.2 ms
    # late); 22 and 23, on time again, cannot start before half a line period (0.5 ms) after
    # the previous frame's last line: 1.2 - 1 + 0.5 = 0.7 ms late, then 0.2 ms late
    retimed = {15: nominal(15), 21: nominal(21) + 0.0012, 22: nominal(22) + 0.0007, 23: nominal(23) + 0.0002,
               25: nominal(25)}
    return frames, {k: times[k] for k in range(40) if k not in (10, 30, *retimed)} | retimed


def run_engine(engine: Engine, timeout_s: float = 30.0) -> dict:
    engine.start()
    engine.wait_ready()
    deadline = time.monotonic() + timeout_s
    while not engine.wait(0.05):
        engine.poll_results()
        assert time.monotonic() < deadline, "engine did not finish"
    engine.stop()
    return engine.stats()


def test_engine_drops_nan_frames_retimes_bad_times_and_runs_through():
    frames, first_t_s = bad_frames_script()
    server = ScriptedServer([frames])
    pipe = StrictPipeline(META.prf_hz)
    try:
        s = run_engine(Engine(TcpSource("127.0.0.1", server.port), pipeline=pipe, ring_seconds=10, max_latency_s=10))
    finally:
        server.close()
    assert s["state"] == "ended", s["message"]
    assert (s["frames_rejected"], s["lines_rejected"]) == (2, 2 * BLOCK)
    assert (s["frames_retimed"], s["lines_retimed"]) == (5, 5 * BLOCK)
    assert s["lines_received"] == s["lines_processed"] == 38 * BLOCK
    assert s["lines_received"] == s["lines_processed"] + s["lines_dropped"] + s["lines_pending"]
    # a rejected frame's seq range is seen: no gap; every sent line is received or rejected
    assert (s["gaps"], s["lines_missing"], s["restarts"]) == (0, 0, 0)
    assert (s["reconnects"], s["framing_errors"]) == (0, 0)
    good = sorted(k * BLOCK + i for k in first_t_s for i in range(BLOCK))
    assert sorted(pipe.line_t_s) == good
    for k, t0_s in first_t_s.items():
        got = [pipe.line_t_s[k * BLOCK + i] for i in range(BLOCK)]
        np.testing.assert_allclose(got, t0_s + np.arange(BLOCK) / META.prf_hz, rtol=0, atol=1e-9)


def test_bad_magic_closes_the_connection_and_the_client_reconnects():
    first = [encode_hello(META, N_SAMPLES, np.float32)]
    first += [encode_block(LineBlock(k * BLOCK, k * 0.02, float_lines(k))) for k in range(5)]
    first.append(b"XXXX" + bytes(60))  # framing lost mid-stream
    second = [encode_hello(META, N_SAMPLES, np.float32)]
    second += [encode_block(LineBlock(k * BLOCK, k * 0.02, float_lines(k))) for k in range(5, 10)]
    second.append(encode_end(10 * BLOCK))
    server = ScriptedServer([first, second])
    pipe = StrictPipeline(META.prf_hz)
    source = TcpSource("127.0.0.1", server.port, backoff_s=0.05, max_backoff_s=0.2)
    try:
        s = run_engine(Engine(source, pipeline=pipe, ring_seconds=10, max_latency_s=10))
    finally:
        server.close()
    assert server.connections == 2
    assert s["state"] == "ended" and (s["reconnects"], s["framing_errors"]) == (1, 1)
    assert s["lines_received"] == s["lines_processed"] == 10 * BLOCK and s["gaps"] == 0
    assert s["frames_rejected"] == s["frames_retimed"] == 0


def test_reconnecting_source_reports_broken_framing():
    first = [encode_hello(META, N_SAMPLES, np.float32), encode_block(LineBlock(0, 0.0, float_lines(0))), b"MMSD" + bytes(32)]
    server = ScriptedServer([first])
    source = TcpSource("127.0.0.1", server.port, backoff_s=0.05, max_backoff_s=0.2)
    try:
        source.open()
        got = None
        while got is None:
            got = source.read_block(1.0)
        assert got.seq == 0 and source.read_block(1.0) is None
        assert source.status == "reconnecting" and source.framing_errors == 1
        assert "expected n_lines in 1..4096, found 0; reconnecting" in source.message
    finally:
        source.stop()
        server.close()


def test_ring_cuts_a_chunk_where_a_blocks_time_does_not_continue():
    ring = LineRing(100, 4, np.float32, 1000.0)
    ring.push(LineBlock(0, 1.000, np.zeros((10, 4), np.float32)), 0.0)
    ring.push(LineBlock(10, 1.0096, np.zeros((10, 4), np.float32)), 0.0)  # 0.4 ms early: kept by FrameCheck
    ring.push(LineBlock(20, 1.0196, np.zeros((10, 4), np.float32)), 0.0)  # continues the one before
    first, second = ring.pop(100), ring.pop(100)
    assert (first.seq, first.n_lines, first.t_s) == (0, 10, 1.000)
    assert (second.seq, second.n_lines, second.t_s) == (10, 20, 1.0096)


def test_a_slow_sender_clock_is_followed_and_chunk_times_still_increase():
    """Each 16-line frame starts 0.45 ms (under half a line period) earlier than the last
    one's lines continue: every frame keeps its own time, and the pipeline, given chunks of
    up to 64 lines timed from their first line, still sees strictly increasing times."""
    blocks = [LineBlock(16 * k, k * (0.016 - 0.00045), np.ones((16, 16), np.float32)) for k in range(200)]
    pipe = StrictPipeline(META.prf_hz)
    s = run_engine(Engine(ScriptedSource(blocks, META), pipeline=pipe, ring_seconds=10, max_latency_s=10, max_block_lines=64))
    assert s["state"] == "ended", s["message"]
    assert s["frames_retimed"] == 0 and s["lines_processed"] == 3200
    np.testing.assert_allclose([pipe.line_t_s[16 * k] for k in range(200)], [b.t_s for b in blocks], rtol=0, atol=1e-12)


def test_every_source_is_checked_and_a_corrupt_file_still_fails(tmp_path):
    """An in-memory source with a NaN line loses that block only; a recording with a NaN
    sample is a corrupt file: its reader raises a DataError and the engine fails with it."""
    lines = np.ones((100, 16), np.float32)
    lines[45, 3] = np.nan
    pipe = StrictPipeline(META.prf_hz)
    s = run_engine(Engine(ArraySource(META, lines, block_lines=20), pipeline=pipe, ring_seconds=10, max_latency_s=10))
    assert s["state"] == "ended" and (s["frames_rejected"], s["lines_rejected"], s["gaps"]) == (1, 20, 0)
    assert sorted(pipe.line_t_s) == [*range(40), *range(60, 100)]

    path = tmp_path / "corrupt.h5"
    write_recording(path, META, np.ones((100, 16), np.float32))
    with h5py.File(path, "r+") as f:  # the writers refuse non-finite samples; damage the file
        f["lines"][45, 3] = np.nan
    engine = Engine(FileSource(str(path), speed=50.0, block_lines=20), pipeline=StrictPipeline(META.prf_hz))
    engine.start()
    engine.wait_ready()
    assert engine.wait(20)
    engine.stop()
    s = engine.stats()
    assert s["state"] == "failed" and "NaN or Inf in line 45" in s["message"] and s["frames_rejected"] == 0


def monitor(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MMODE, "monitor", "--stream", f"127.0.0.1:{port}", "--seconds", "60", "--json", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_monitor_reports_rejected_and_retimed_frames_and_runs_through():
    """The real pipeline (DSP, motion, student classifier) behind `mmode monitor`."""
    frames, _ = bad_frames_script()
    server = ScriptedServer([frames])
    try:
        r = monitor(server.port, "--max-latency-ms", "10000")
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["state"] == "ended"
    assert (s["frames_rejected"], s["lines_rejected"], s["frames_retimed"], s["lines_retimed"]) == (2, 40, 5, 100)
    assert s["lines_received"] == s["lines_processed"] == 38 * BLOCK and s["gaps"] == 0


def test_monitor_prints_its_report_when_the_engine_fails():
    """After broken framing the client reconnects, and the server now announces another
    stream: the engine fails; the report still comes (state failed, the message), exit 3."""
    first = [encode_hello(META, N_SAMPLES, np.float32)]
    first += [encode_block(LineBlock(k * BLOCK, k * 0.02, float_lines(k))) for k in range(3)]
    first.append(b"HTTP/1.1 400")
    other = [encode_hello(META, 128, np.float32)]
    server = ScriptedServer([first, other])
    try:
        r = monitor(server.port, "--model", "none")
    finally:
        server.close()
    assert r.returncode == 3, r.stderr
    s = json.loads(r.stdout)
    assert s["state"] == "failed" and "same stream" in s["message"]
    assert s["framing_errors"] == 1 and s["lines_received"] == 3 * BLOCK
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "same stream" in err[0] and "Traceback" not in r.stderr


def test_record_writes_the_good_lines_with_increasing_times(tmp_path):
    frames, first_t_s = bad_frames_script()
    server = ScriptedServer([frames])
    out = tmp_path / "rec.h5"
    try:
        r = subprocess.run([MMODE, "record", "--stream", f"127.0.0.1:{server.port}", "-o", str(out), "--seconds", "30",
                            "--json"], capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["state"] == "ended" and s["lines_written"] == 38 * BLOCK
    assert (s["frames_rejected"], s["frames_retimed"], s["gaps"]) == (2, 5, 0)
    kept = sorted(first_t_s)
    with read_h5(out) as rec:
        np.testing.assert_array_equal(rec.read(), np.concatenate([float_lines(k) for k in kept]))
        t_s = rec.timestamps_s()
    expected = np.concatenate([first_t_s[k] + np.arange(BLOCK) / META.prf_hz for k in kept])
    np.testing.assert_allclose(t_s, expected, rtol=0, atol=1e-9)
    assert np.all(np.diff(t_s) > 0)
