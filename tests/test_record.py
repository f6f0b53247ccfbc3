"""Recording: every line written exactly, flushed, and a killed recorder leaves a readable file;
a failed write (a full disk) ends the recording with one line and a file that opens.

The write failures are real ones: a file size limit (``RLIMIT_FSIZE``) makes ``write(2)``
fail with EFBIG past it, through HDF5's own file driver, as ENOSPC does on a full disk
(Python ignores SIGXFSZ, so the process gets the error instead of the signal)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmode.app.engine import Engine
from mmode.app.recorder import Recorder
from mmode.errors import DataError
from mmode.ingest.h5format import read_h5, write_state
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.sources import ArraySource, SimSource
from mmode.ingest.simulator import simulate
from mmode.ingest.stream import StreamServer

MMODE = str(Path(sys.executable).with_name("mmode"))
META = AcquisitionMeta("rf", fs_hz=20e6, f0_hz=5e6, prf_hz=1000.0)
SIM = dict(prf_hz=1000.0, n_samples=128, seed=3)


def test_recorder_writes_blocks_with_line_times_and_counts_what_it_drops(tmp_path):
    path = tmp_path / "r.h5"
    rng = np.random.default_rng(0)
    lines = rng.integers(-2000, 2000, (2000, 64)).astype(np.int16)
    rec = Recorder(path, META, 64, np.int16, max_queue_bytes=100 * 64 * 2)  # 100 lines
    accepted = []
    for s in range(0, 2000, 50):
        if rec.submit(LineBlock(seq=s, t_s=10.0 + s / META.prf_hz, lines=lines[s : s + 50])):
            accepted.append(s)
    summary = rec.close()
    assert summary["lines_written"] == 50 * len(accepted) and summary["error"] is None
    assert summary["lines_written"] + summary["lines_dropped"] == 2000
    assert not rec.submit(LineBlock(seq=0, t_s=0.0, lines=lines[:5]))  # closed: refused, counted
    with read_h5(path) as r:
        seq = np.concatenate([np.arange(s, s + 50) for s in accepted])
        np.testing.assert_array_equal(r.read(), lines[seq])
        np.testing.assert_allclose(r.timestamps_s(), 10.0 + seq / META.prf_hz)


def test_recorder_refuses_an_unwritable_path(tmp_path):
    with pytest.raises(DataError, match="created for writing"):
        Recorder(tmp_path / "missing" / "r.h5", META, 64, np.int16)


def start_record(port: int, out: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [MMODE, "record", "--stream", f"127.0.0.1:{port}", "-o", str(out), "--seconds", str(seconds), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_lines(path: Path, timeout_s: float = 30.0) -> int:
    """Poll the file (SWMR read) until it holds flushed lines; returns how many."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            try:
                with read_h5(path) as r:
                    return r.n_lines
            except DataError:
                pass  # not flushed yet
        time.sleep(0.2)
    raise AssertionError(f"{path} never showed flushed lines")


def check_against_simulator(path: Path) -> int:
    with read_h5(path) as r:
        lines, ts = r.read(), r.timestamps_s()
    seq = np.round(ts * SIM["prf_hz"]).astype(np.int64)
    np.testing.assert_array_equal(np.diff(seq), 1)
    truth = simulate("lung_sliding", seconds=(seq[-1] + 1) / SIM["prf_hz"], **SIM).lines
    np.testing.assert_array_equal(lines, truth[seq])
    return lines.shape[0]


def record_then_kill(out: Path) -> int:
    """Record a simulated stream into ``out``, keep it running past its second flush, then
    kill it without warning (SIGKILL); the lines of its first flush."""
    with StreamServer(SimSource("lung_sliding", block_lines=20, **SIM), port=0) as server:
        proc = start_record(server.address[1], out, seconds=60)
        try:
            first = wait_for_lines(out)
            deadline = time.monotonic() + 20
            while wait_for_lines(out) == first and time.monotonic() < deadline:
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return first


def test_killed_recording_opens_with_everything_up_to_its_last_flush(tmp_path):
    out = tmp_path / "killed.h5"
    first = record_then_kill(out)
    n = check_against_simulator(out)
    assert n > first > 0


def test_terminated_recording_closes_cleanly_and_reports(tmp_path):
    out = tmp_path / "term.h5"
    with StreamServer(SimSource("lung_sliding", block_lines=20, **SIM), port=0) as server:
        proc = start_record(server.address[1], out, seconds=60)
        try:
            wait_for_lines(out)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["lines_dropped"] == 0 and report["gaps"] == 0
    assert check_against_simulator(out) == report["lines_written"]


#: File size at which writes fail in the fault tests: a few seconds of the streams below.
LIMIT_BYTES = 1 << 20


@contextlib.contextmanager
def file_size_limit(n_bytes: int):
    """Writes of this process past ``n_bytes`` fail with EFBIG while the block runs."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN  # else the kernel kills us instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def wait_until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_failed_write_ends_the_recording_and_the_file_keeps_its_flushed_lines(tmp_path):
    path = tmp_path / "full.h5"
    lines = np.random.default_rng(1).integers(-2000, 2000, (20000, 64)).astype(np.int16)  # 2.5 MB
    with file_size_limit(LIMIT_BYTES):
        rec = Recorder(path, META, 64, np.int16, flush_interval_s=0.01)
        submitted = 0
        for s in range(0, lines.shape[0], 100):
            if not rec.submit(LineBlock(seq=s, t_s=s / META.prf_hz, lines=lines[s : s + 100])):
                break
            submitted = s + 100
            time.sleep(0.002)  # let the writer flush between blocks
        wait_until(lambda: rec.state == "failed")
        assert not rec.submit(LineBlock(seq=0, t_s=0.0, lines=lines[:100]))  # over: refused, not counted
        summary = rec.close()
    assert summary["state"] == "failed"
    assert "File too large (errno 27)" in summary["error"] and "\n" not in summary["error"]
    assert f"keeps the {summary['lines_written']} lines of its last flush" in summary["error"]
    assert summary["lines_written"] + summary["lines_dropped"] == submitted
    # the file holds exactly the flushed lines, opens with mmode's (SWMR) reader, and other
    # tools refuse it until it is repaired
    with read_h5(path) as r:
        got, t_s = r.read(), r.timestamps_s()
    assert got.shape[0] == summary["lines_written"] > 0
    np.testing.assert_array_equal(got, lines[: got.shape[0]])
    np.testing.assert_allclose(t_s, np.arange(got.shape[0]) / META.prf_hz)
    assert write_state(path) == "needs_repair"
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")


class PassPipeline:
    """Stands in for the pipeline: the recording test needs none."""

    def prepare(self, meta, n_samples):
        pass

    def update_settings(self, settings):
        pass

    def process(self, block):
        return types.SimpleNamespace(timings_ms={}, classification=None)


def test_engine_stats_show_a_failed_recording_while_processing_goes_on(tmp_path):
    lines = np.random.default_rng(2).integers(-2000, 2000, (60000, 64)).astype(np.int16)
    engine = Engine(ArraySource(META, lines, block_lines=50, speed=4.0), pipeline=PassPipeline())
    with file_size_limit(LIMIT_BYTES):
        engine.start()
        engine.wait_ready()
        engine.start_recording(tmp_path / "live.h5", flush_interval_s=0.05)
        assert engine.stats()["recording"]["state"] == "recording"
        wait_until(lambda: engine.stats()["recording"]["state"] == "failed")
        written = engine.stats()["recording"]["lines_written"]
        wait_until(lambda: engine.stats()["lines_processed"] > written + 2000)  # the engine goes on
        stats = engine.stats()
        engine.stop()
    assert stats["state"] == "running"
    assert set(stats["recording"]) == {"path", "state", "lines_written", "lines_dropped", "error"}
    assert stats["recording"]["error"].startswith(f"{tmp_path / 'live.h5'}: expected a disk that takes every line, "
                                                  "found File too large")
    assert stats["recording"]["lines_written"] == written  # nothing written after the failure
    with read_h5(tmp_path / "live.h5") as r:
        assert r.n_lines == written > 0


def record_with_size_limit(port: int, out: Path, limit_bytes: int) -> subprocess.CompletedProcess:
    """``mmode record`` in a process whose writes fail past ``limit_bytes`` (set, then exec)."""
    limit = f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes})); " \
            "os.execv(sys.argv[1], sys.argv[1:])"
    cmd = [MMODE, "record", "--stream", f"127.0.0.1:{port}", "-o", str(out), "--seconds", "60", "--json"]
    return subprocess.run([sys.executable, "-c", limit, *cmd], capture_output=True, text=True, timeout=90)


def test_record_on_a_full_disk_exits_3_with_one_line_and_keeps_the_flushed_lines(tmp_path):
    out = tmp_path / "full.h5"
    with StreamServer(SimSource("lung_sliding", block_lines=20, **SIM), port=0) as server:
        r = record_with_size_limit(server.address[1], out, LIMIT_BYTES)  # 256 kB/s: full after ~4 s
    assert r.returncode == 3, r.stderr  # was a segmentation fault (139) after several tracebacks
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    m = re.fullmatch(rf"mmode record: {re.escape(str(out))}: expected a disk that takes every line, found File too "
                     rf"large \(errno 27\); the file keeps the (\d+) lines of its last flush \(`mmode repair .*`.*\)\n",
                     r.stderr)
    assert m, r.stderr
    assert check_against_simulator(out) == int(m.group(1)) > 0
