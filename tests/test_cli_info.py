"""``mmode info`` through real subprocesses (exit codes, text and JSON output), and proof that
it reads headers only."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmode.app.cli import main
from mmode.ingest.h5format import write_recording
from mmode.ingest.meta import CLASSES, AcquisitionMeta, Truth
from mmode.ingest.recording import Annotation, Recording

CLARIUS_IQ = Path(__file__).resolve().parents[2] / "shared/data/clarius_carotid/carotid_iq.raw"
META = AcquisitionMeta("rf", fs_hz=40e6, f0_hz=5e6, prf_hz=1000.0, c_m_s=1500.0, t0_s=4e-6, probe="L7")


def mmode(*args):
    """Run the installed ``mmode`` entry point as a user would."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run(
        [sys.executable, "-m", "mmode", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def rec_h5(tmp_path):
    n, n_samples = 2500, 200
    truth = Truth(labels=np.zeros(n, int), classes=CLASSES, depths_m=np.array([0.01]), displacement_m=np.zeros((n, 1)))
    path = tmp_path / "rec.h5"
    write_recording(
        path,
        META,
        np.ones((n, n_samples), np.int16),
        truth=truth,
        annotations=[Annotation(0, 1000, "lung_sliding"), Annotation(1000, 2500, "no_sliding")],
    )
    return path


def test_info_json(rec_h5):
    r = mmode("info", rec_h5, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert {k: info[k] for k in ("kind", "fs_hz", "f0_hz", "prf_hz", "c_m_s", "t0_s", "probe")} == {
        "kind": "rf",
        "fs_hz": 40e6,
        "f0_hz": 5e6,
        "prf_hz": 1000.0,
        "c_m_s": 1500.0,
        "t0_s": 4e-6,
        "probe": "L7",
    }
    assert (info["n_lines"], info["n_samples"], info["dtype"]) == (2500, 200, "int16")
    assert info["duration_s"] == pytest.approx(2.5)
    # depth = c (t0 + k / fs) / 2 for k = 0 and 199
    assert info["depth_m"] == pytest.approx([1500 * 4e-6 / 2, 1500 * (4e-6 + 199 / 40e6) / 2])
    assert info["has_truth"] is True
    assert info["annotations"] == [
        {"start_line": 0, "end_line": 1000, "label": "lung_sliding"},
        {"start_line": 1000, "end_line": 2500, "label": "no_sliding"},
    ]
    assert info["format"] == "mmode-h5 v1" and "lines_checked" not in info


def test_info_text_and_check(rec_h5):
    r = mmode("info", rec_h5, "--check")
    assert r.returncode == 0, r.stderr
    rows = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert rows["kind"] == "rf" and rows["prf_hz"] == "1000" and rows["has_truth"] == "yes"
    assert rows["lines"] == "2500 x 200 samples, int16"
    assert rows["check"] == "2500 lines read, all finite"
    assert rows["annotations"].startswith("2: lung_sliding [0, 1000)")


@pytest.mark.skipif(not CLARIUS_IQ.is_file(), reason=f"Clarius sample not present at {CLARIUS_IQ}")
def test_info_clarius_sample():
    r = mmode("info", CLARIUS_IQ, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["kind"], info["n_lines"], info["n_samples"], info["fs_hz"]) == ("iq", 1248, 352, 15e6)


def test_exit_codes(tmp_path):
    usage = mmode("info")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    assert mmode("info", tmp_path / "x.h5", "--bogus").returncode == 2
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    r = mmode("info", bad)
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.startswith(f"mmode info: {bad}: expected a readable HDF5 file")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_info_reads_headers_only(tmp_path, monkeypatch, capsys):
    """A recording of 8 GB of lines (allocated in the file, which stays sparse on disk) is
    summarised without one call to Recording.read or its timestamps."""
    path = tmp_path / "huge.h5"
    n_lines = 1_000_000
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "mmode", "format_version": 1, **META.to_dict()})
        for name, shape, h5type in (("lines", (n_lines, 4096), h5py.h5t.NATIVE_INT16),
                                    ("timestamps_s", (n_lines,), h5py.h5t.NATIVE_DOUBLE)):
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)  # storage allocated now, never filled
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            h5py.h5d.create(f.id, name.encode(), h5type, h5py.h5s.create_simple(shape), dcpl=dcpl)
    assert path.stat().st_blocks * 512 < 1_000_000  # sparse: nothing written

    def forbidden(*args, **kwargs):
        raise AssertionError("mmode info read line data")

    monkeypatch.setattr(Recording, "read", forbidden)
    monkeypatch.setattr(Recording, "timestamps_s", forbidden)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", forbidden)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_lines"] == 1_000_000 and info["duration_s"] == pytest.approx(1000.0)


def test_info_memmapped_formats_read_headers_only(tmp_path, monkeypatch, capsys):
    """A 1 GB raw file (sparse on disk) opens without reading its lines."""
    path = tmp_path / "big.bin"
    with open(path, "wb") as fh:
        fh.truncate(2048 * 2 * 262_144)  # 262144 lines of 2048 int16 samples = 1 GiB
    (tmp_path / "big.bin.json").write_text(json.dumps({**META.to_dict(), "n_samples": 2048}))
    monkeypatch.setattr(Recording, "read", lambda *a, **k: pytest.fail("mmode info read line data"))
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_lines"] == 262_144
