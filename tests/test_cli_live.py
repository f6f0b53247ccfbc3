"""`mmode serve`, `mmode monitor`, `mmode record` end to end on loopback, faults included."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from mmode.app.engine import Engine
from mmode.ingest.h5format import read_h5, write_recording
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest.sources import TcpSource

MMODE = str(Path(sys.executable).with_name("mmode"))
META = AcquisitionMeta("rf", fs_hz=20e6, f0_hz=5e6, prf_hz=1000.0)


def free_port() -> int:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Serve:
    """`mmode serve ...` in a subprocess; knows its port once it listens."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([MMODE, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()  # printed as soon as the port is open
        m = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        if m is None:
            self.stop()
            raise AssertionError(f"serve did not start: {line!r}")
        self.port = int(m.group(1))

    def stop(self, sig: int = signal.SIGTERM) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.communicate(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def mmode(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([MMODE, *args], capture_output=True, text=True, timeout=timeout)


def test_monitor_a_served_simulation_reports_exact_counters():
    server = Serve("--sim", "lung_sliding", "--port", "0", "--samples", "256", "--prf", "1000")
    try:
        r = mmode("monitor", "--stream", f"127.0.0.1:{server.port}", "--seconds", "2", "--json")
    finally:
        out, _ = server.stop()
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("lines_received", "lines_processed", "lines_dropped", "gaps", "realtime_factor"):
        assert key in s
    assert set(s["latency_ms"]) == {"p50", "p99", "max"} and {"p50", "p99"} <= set(s["inference_ms"])
    assert s["lines_received"] > 0 and s["gaps"] == 0
    assert s["lines_received"] == s["lines_processed"] + s["lines_dropped"] + s["lines_pending"]
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert server.proc.returncode == 0


def test_served_file_is_recorded_line_for_line(tmp_path):
    lines = np.random.default_rng(0).integers(-3000, 3000, (1500, 64)).astype(np.int16)
    src = tmp_path / "src.h5"
    write_recording(src, META, lines)
    server = Serve("--file", str(src), "--port", "0", "--speed", "2", "--json")
    out = tmp_path / "copy.h5"
    try:
        r = mmode("record", "--stream", f"127.0.0.1:{server.port}", "-o", str(out), "--seconds", "30", "--json")
    finally:
        served, _ = server.stop()
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["state"] == "ended" and report["lines_written"] == 1500 and report["gaps"] == 0
    with read_h5(out) as rec:
        np.testing.assert_array_equal(rec.read(), lines)
        np.testing.assert_allclose(rec.timestamps_s(), np.arange(1500) / META.prf_hz)
    assert json.loads(served)["lines_sent"] == 1500


def test_monitor_a_file_processes_every_line(tmp_path):
    lines = np.random.default_rng(1).integers(-3000, 3000, (600, 128)).astype(np.int16)
    path = tmp_path / "f.h5"
    write_recording(path, META, lines)
    r = mmode("monitor", str(path), "--speed", "4", "--seconds", "20", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["state"] == "ended" and s["lines_received"] == s["lines_processed"] == 600 and s["lines_dropped"] == 0


def test_openigtlink_serve_and_monitor():
    server = Serve("--sim", "cardiac_regular", "--port", "0", "--samples", "128", "--protocol", "igtl")
    try:
        r = mmode("monitor", "--igtl", f"127.0.0.1:{server.port}", "--seconds", "1.5", "--json")
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["lines_received"] > 0 and s["gaps"] == 0


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 3, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_monitor_against_something_that_is_not_a_stream_server_exits_3():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def banner():
        listener.settimeout(30)
        try:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                conn.settimeout(10)
                conn.recv(1)
        except OSError:
            pass

    t = threading.Thread(target=banner, daemon=True)
    t.start()
    try:
        msg = one_line_error(mmode("monitor", "--stream", f"127.0.0.1:{port}", "--seconds", "1", "--json"))
    finally:
        listener.close()
    assert "hello magic" in msg and f"127.0.0.1:{port}" in msg
    msg = one_line_error(mmode("monitor", "--stream", f"127.0.0.1:{free_port()}", "--seconds", "1"))
    assert "accepting connections" in msg


def test_killed_server_is_reported_and_the_client_reconnects_when_it_returns():
    port = free_port()
    args = ("--sim", "lung_sliding", "--port", str(port), "--samples", "128")
    server = Serve(*args)
    engine = Engine(TcpSource("127.0.0.1", port, backoff_s=0.1, max_backoff_s=0.5))

    def wait_for(predicate, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            engine.poll_results()
            time.sleep(0.05)
        return predicate()

    try:
        engine.start()
        engine.wait_ready()
        assert wait_for(lambda: engine.stats()["lines_processed"] > 0)
        server.stop(signal.SIGKILL)  # killed mid-stream
        assert wait_for(lambda: engine.state == "reconnecting")
        assert "closed by the server" in engine.message and "reconnecting" in engine.message
        server = Serve(*args)
        assert wait_for(lambda: engine.state == "running" and engine.stats()["reconnects"] == 1)
        before = engine.stats()["lines_processed"]
        assert wait_for(lambda: engine.stats()["lines_processed"] > before)
    finally:
        engine.stop()
        server.stop()
    assert engine.error is None


def test_bad_usage_and_unwritable_output():
    r = mmode("serve", "--file", "x.h5", "--prf", "100")
    assert r.returncode == 2 and "--prf" in r.stderr
    server = Serve("--sim", "lung_sliding", "--port", "0", "--samples", "64")
    try:
        msg = one_line_error(mmode("record", "--stream", f"127.0.0.1:{server.port}", "-o", "/nonexistent/dir/x.h5", "--seconds", "1"))
    finally:
        server.stop()
    assert "/nonexistent/dir/x.h5" in msg
