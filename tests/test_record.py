"""Recording: every line written exactly, flushed, and a killed recorder leaves a readable file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmode.app.engine import Recorder
from mmode.errors import DataError
from mmode.ingest.h5format import read_h5
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.simulator import simulate
from mmode.ingest.sources import SimSource
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


def test_killed_recording_opens_with_everything_up_to_its_last_flush(tmp_path):
    out = tmp_path / "killed.h5"
    with StreamServer(SimSource("lung_sliding", block_lines=20, **SIM), port=0) as server:
        proc = start_record(server.address[1], out, seconds=60)
        try:
            first = wait_for_lines(out)
            # keep it running past another flush, then kill it without warning
            deadline = time.monotonic() + 20
            while wait_for_lines(out) == first and time.monotonic() < deadline:
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
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
