"""``mmode simulate`` through real subprocesses: listing, writing, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmode.ingest.meta import CLASSES
from mmode.ingest.scenarios import PHANTOMS

MMODE = [sys.executable, "-m", "mmode"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*MMODE, "simulate", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_list_json_names_all_seven_classes_and_the_phantoms():
    p = _run("--list", "--json")
    assert p.returncode == 0, p.stderr
    items = json.loads(p.stdout)
    assert {i["label"] for i in items if not i["phantom"]} == set(CLASSES)
    assert {i["name"] for i in items if i["phantom"]} == set(PHANTOMS)
    assert all({"name", "label", "description"} <= i.keys() for i in items)


def test_list_text_has_one_line_per_scenario():
    p = _run("--list")
    assert p.returncode == 0
    assert len(p.stdout.strip().splitlines()) == len(CLASSES) + len(PHANTOMS)


def test_writes_a_readable_recording_with_truth(tmp_path):
    out = tmp_path / "cardiac.h5"
    p = _run(
        "cardiac_irregular", "-o", str(out), "--seconds", "0.5", "--prf", "400", "--f0", "3.5e6", "--fs", "14e6",
        "--depth", "0.08", "--snr-db", "25", "--rate-per-min", "90", "--seed", "4", "--json",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["n_lines"] == 200
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "mmode" and int(f.attrs["format_version"]) == 1
        assert f.attrs["kind"] == "rf"
        assert f.attrs["f0_hz"] == 3.5e6 and f.attrs["fs_hz"] == 14e6 and f.attrs["prf_hz"] == 400
        lines = f["lines"]
        assert lines.dtype == np.int16
        n_samples = lines.shape[1]
        # depth of the last sample is the requested depth (within one sample)
        assert abs(1540 * (n_samples - 1) / 14e6 / 2 - 0.08) <= 1540 / 14e6 / 2
        assert lines.shape == (200, n_samples) == (summary["n_lines"], summary["n_samples"])
        labels = f["truth/labels"][()]
        assert set(labels) == {CLASSES.index("cardiac_irregular")}
        assert f["truth/displacement_m"].shape == (200, f["truth/depths_m"].shape[0])
        np.testing.assert_allclose(f["timestamps_s"][()], np.arange(200) / 400)


def test_samples_option_sets_the_line_length(tmp_path):
    out = tmp_path / "s.h5"
    assert _run("no_sliding", "-o", str(out), "--seconds", "0.1", "--samples", "2048").returncode == 0
    with h5py.File(out, "r") as f:
        assert f["lines"].shape == (100, 2048)


def test_same_seed_same_lines_through_the_cli(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for out in (a, b):
        assert _run("lung_point", "-o", str(out), "--seconds", "0.3", "--prf", "500", "--seed", "7").returncode == 0
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert fa["lines"][()].tobytes() == fb["lines"][()].tobytes()


def test_sequence_spec_writes_annotations(tmp_path):
    out = tmp_path / "demo.h5"
    p = _run("lung_sliding:0.4,no_sliding:0.4", "-o", str(out), "--prf", "500")
    assert p.returncode == 0, p.stderr
    with h5py.File(out, "r") as f:
        assert list(f["annotations/start_line"][()]) == [0, 200]
        assert list(f["annotations/end_line"][()]) == [200, 400]
        assert [s.decode() for s in f["annotations/label"][()]] == ["lung_sliding", "no_sliding"]


@pytest.mark.parametrize(
    "args",
    [
        ("no_such_scenario", "-o", "x.h5"),
        ("lung_sliding",),  # no output
        (),  # no scenario
        ("lung_sliding", "-o", "x.h5", "--f0", "9e6", "--fs", "20e6"),
        ("lung_sliding", "-o", "x.h5", "--seconds", "-1"),
        ("lung_sliding", "-o", "x.h5", "--prf", "abc"),
        ("lung_sliding:x", "-o", "x.h5"),
        ("lung_sliding", "-o", "x.h5", "--samples", "0"),
        ("lung_sliding", "-o", "x.h5", "--seed", "-3"),
    ],
)
def test_bad_usage_exits_2(tmp_path, args):
    p = _run(*args, cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("target", ["missing_dir/out.h5", "."])
def test_unwritable_output_exits_3_with_one_line(tmp_path, target):
    p = _run("no_contact", "-o", target, "--seconds", "0.1", cwd=tmp_path)
    assert p.returncode == 3
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
