"""``mmode repair``: a recording whose writer died opens in plain h5py afterwards, with every
flushed line; ``mmode info`` says when a file needs it; a file being written, or one that
needs nothing, is left alone.

The cut files are real ones: a ``mmode record`` process killed with SIGKILL, or a process
that writes with plain h5py in SWMR mode and exits without closing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmode.errors import DataError
from mmode.ingest.h5format import FORMAT_NAME, FORMAT_VERSION, H5Writer, read_h5, write_state
from mmode.ingest.h5repair import repair
from mmode.ingest.meta import AcquisitionMeta
from test_record import check_against_simulator, record_then_kill

MMODE = str(Path(sys.executable).with_name("mmode"))
META = AcquisitionMeta("rf", fs_hz=20e6, f0_hz=5e6, prf_hz=1000.0)

#: Writes a format v1 file with plain h5py in SWMR mode, flushes, and exits without closing
#: it, as a writer that dies does: argv = path, n_lines, n_times.
CUT_WRITER = """
import os, sys
import h5py, numpy as np
from mmode.ingest.h5format import FORMAT_NAME, FORMAT_VERSION
from mmode.ingest.meta import AcquisitionMeta
path, n_lines, n_times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
meta = AcquisitionMeta("rf", fs_hz=20e6, f0_hz=5e6, prf_hz=1000.0)
lines = np.random.default_rng(5).integers(-3000, 3000, (n_lines, 16)).astype(np.int16)
f = h5py.File(path, "w", libver="latest")
f.attrs.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, note="kept", **meta.to_dict())
f.create_dataset("lines", data=lines, maxshape=(None, 16), chunks=(64, 16))
f.create_dataset("timestamps_s", data=np.arange(n_times) / meta.prf_hz, maxshape=(None,), chunks=(64,))
g = f.create_group("annotations")
g.create_dataset("start_line", data=np.array([0, 10]))
g.create_dataset("end_line", data=np.array([10, 20]))
g.create_dataset("label", data=["a", "b"], dtype=h5py.string_dtype("utf-8"))
f.swmr_mode = True
f.flush()
os._exit(0)
"""


def cut_file(path: Path, n_lines: int, n_times: int) -> np.ndarray:
    """Write a cut file (:data:`CUT_WRITER`); returns the lines it holds."""
    subprocess.run([sys.executable, "-c", CUT_WRITER, str(path), str(n_lines), str(n_times)], check=True, timeout=60)
    return np.random.default_rng(5).integers(-3000, 3000, (n_lines, 16)).astype(np.int16)


def mmode(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run ``mmode``; with ``limit_bytes``, in a process whose writes fail past that size."""
    cmd = [MMODE, *args]
    if limit_bytes is not None:
        cmd = [sys.executable, "-c", "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
               f"({limit_bytes}, {limit_bytes})); os.execv(sys.argv[1], sys.argv[1:])", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def info(path: Path) -> dict:
    r = mmode("info", str(path), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_recording_killed_mid_write_opens_in_plain_h5py_after_repair(tmp_path):
    out = tmp_path / "killed.h5"
    record_then_kill(out)
    with read_h5(out) as r:  # mmode's SWMR reader: every flushed line
        flushed = r.n_lines
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(out, "r")
    report = info(out)
    assert report["needs_repair"] is True and report["being_written"] is False
    assert f"needs `mmode repair {out}`" in mmode("info", str(out)).stdout

    r = mmode("repair", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["repaired"] is True and summary["lines_kept"] == flushed
    with h5py.File(out, "r") as f:  # plain h5py, no SWMR
        assert f["lines"].shape == (flushed, 128) and f["timestamps_s"].shape == (flushed,)
        assert f.attrs["format"] == FORMAT_NAME
    assert check_against_simulator(out) == flushed  # every line as the simulator made it
    assert info(out)["needs_repair"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.h5"]  # no copy left behind


def test_repair_cuts_lines_and_times_to_the_lines_both_hold_and_keeps_the_rest(tmp_path):
    path = tmp_path / "cut.h5"
    lines = cut_file(path, n_lines=300, n_times=250)
    assert write_state(path) == "needs_repair"
    summary = repair(path)
    assert summary == {"path": str(path), "output": str(path), "state": "needs_repair", "repaired": True,
                       "lines_kept": 250, "lines_declared": 300, "timestamps_declared": 250}
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["lines"][()], lines[:250])
        np.testing.assert_array_equal(f["timestamps_s"][()], np.arange(250) / META.prf_hz)
        assert f.attrs["note"] == "kept" and f.attrs["prf_hz"] == META.prf_hz
        assert f["lines"].chunks == (64, 16) and f["lines"].maxshape == (None, 16)
        assert [s.decode() for s in f["annotations/label"][()]] == ["a", "b"]
    assert write_state(path) == "closed"


def test_repair_to_another_file_leaves_the_original_as_it_was(tmp_path):
    path, fixed = tmp_path / "cut.h5", tmp_path / "fixed.h5"
    lines = cut_file(path, n_lines=200, n_times=200)
    before = path.read_bytes()
    r = mmode("repair", str(path), "-o", str(fixed))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{fixed}: repaired, 200 lines kept (the file declared 200 lines and 200 times); opens in any HDF5 tool\n"
    assert path.read_bytes() == before
    with h5py.File(fixed, "r") as f:
        np.testing.assert_array_equal(f["lines"][()], lines)


def test_repair_without_room_for_the_copy_fails_in_one_line_and_leaves_the_original(tmp_path):
    path = tmp_path / "cut.h5"
    cut_file(path, n_lines=20000, n_times=20000)  # 640 kB of lines
    before = path.read_bytes()
    r = mmode("repair", str(path), limit_bytes=256 << 10)
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"mmode repair: {path}: expected a repaired copy written beside it, found File too large (errno 27)")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.h5"]


def test_a_file_being_written_is_refused_and_a_closed_one_left_alone(tmp_path):
    path = tmp_path / "live.h5"
    writer = H5Writer(path, META, 16, np.int16)
    try:
        writer.append(np.ones((10, 16), np.int16), np.arange(10) / META.prf_hz)
        writer.flush()
        assert write_state(path) == "being_written"
        with pytest.raises(DataError, match="being written now"):
            repair(path)
        report = info(path)
        assert report["being_written"] is True and report["needs_repair"] is False
    finally:
        writer.close()
    before = path.read_bytes()
    assert write_state(path) == "closed"
    assert repair(path)["repaired"] is False
    assert path.read_bytes() == before
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION and f["lines"].shape == (10, 16)
