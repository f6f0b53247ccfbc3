"""``mmode batch``: rows and errors against ``mmode process`` on the same files, on a
LocalCluster and on a scheduler + workers this module starts (loopback), resume and --force."""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from mmode.app.cli import main
from mmode.ingest.h5format import write_recording

#: The dask configuration docs/batch.md gives for workers started from a shell.
DASK_YAML = "distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n"
#: Heart rate the cardiac recording is simulated at, /min (the truth the rate is checked against).
HEART_PER_MIN = 70.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A folder of two good 4 s recordings (one in a subfolder), a truncated copy of one, a
    file of an unknown format, and a hidden file and a JSON file that are no recordings."""
    from mmode.ingest.simulator import simulate

    root = tmp_path_factory.mktemp("archive")
    (root / "sub").mkdir()
    heart = root / "heart.h5"
    sim = simulate("cardiac_regular", seconds=4.0, prf_hz=400.0, seed=1, n_samples=512, rate_per_min=HEART_PER_MIN)
    write_recording(heart, sim.meta, sim.lines, timestamps_s=sim.timestamps_s)
    sim = simulate("lung_sliding", seconds=4.0, prf_hz=400.0, seed=2, n_samples=512)
    write_recording(root / "sub" / "lung.h5", sim.meta, sim.lines, timestamps_s=sim.timestamps_s)
    (root / "cut.h5").write_bytes(heart.read_bytes()[: heart.stat().st_size // 2])
    (root / "notes.txt").write_text("not a recording\n")
    (root / ".hidden.h5").write_text("ignored\n")
    (root / "notes.json").write_text("{}\n")
    return root


@pytest.fixture(scope="module")
def single(archive):
    """What ``mmode process`` says about each file, run one file at a time: (exit code,
    report without its timing, or the one-line error)."""
    out = {}
    for path in (archive / "heart.h5", archive / "sub" / "lung.h5", archive / "cut.h5", archive / "notes.txt"):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["process", str(path), "--json"])
        if code == 0:
            report = json.loads(stdout.getvalue())
            del report["timing"]
            out[str(path)] = (0, report)
        else:
            err = stderr.getvalue()
            assert err.startswith("mmode process: ") and err.count("\n") == 1
            out[str(path)] = (code, err.removeprefix("mmode process: ").strip())
    return out


def _batch(capsys, *args):
    code = main(["batch", *map(str, args), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _check_results(out_dir, summary, single):
    """The table, its CSV twin and the process JSONs say what ``mmode process`` said."""
    assert summary["files"] == 4 and summary["ok"] == 2 and summary["failed"] == 2
    rows = {r["path"]: r for r in pq.read_table(out_dir / "batch.parquet").to_pylist()}
    assert set(rows) == set(single)  # hidden files and JSON are no recordings
    with open(out_dir / "batch.csv", newline="") as f:
        twin = {r["path"]: r for r in csv.DictReader(f)}
    assert set(twin) == set(rows)
    for path, (code, expected) in single.items():
        row = rows[path]
        if code != 0:
            assert code == 3 and row["error"] == expected and twin[path]["error"] == expected
            assert row["label"] is None and row["report"] is None
            continue
        assert row["error"] is None and twin[path]["error"] == ""
        report = json.loads((out_dir / row["report"]).read_text())
        del report["timing"]
        assert report == expected
        c, rates = report["classification"], report["rates"]
        label = c["summary"]["label"]
        probs = [w["probs"][c["classes"].index(label)] for w in c["windows"] if w["label"] == label]
        d = report["motion"]["displacement_m"]
        assert row["kind"] == report["meta"]["kind"] and row["duration_s"] == report["duration_s"]
        assert row["label"] == label and row["label_fraction"] == c["summary"]["fraction"][label]
        assert row["confidence"] == pytest.approx(sum(probs) / len(probs))
        assert row["rate_per_min"] == rates["rate_per_min"]
        assert row["breathing_per_min"] == rates["breathing_rate_per_min"]
        assert row["motion_pp_m"] == pytest.approx(max(d) - min(d))
        assert row["seconds"] > 0 and float(twin[path]["duration_s"]) == row["duration_s"]
    # and what it says is right: the simulator's heart rate and its classes
    heart = rows[next(p for p in rows if p.endswith("heart.h5"))]
    assert heart["rate_per_min"] == pytest.approx(HEART_PER_MIN, rel=0.05)
    assert heart["label"] == "cardiac_regular"
    assert rows[next(p for p in rows if p.endswith("lung.h5"))]["label"] == "lung_sliding"
    assert sorted(f["path"] for f in summary["failures"]) == sorted(p for p, (c, _) in single.items() if c)


def test_local_cluster_rows_and_errors(archive, single, tmp_path, capsys):
    code, summary = _batch(capsys, archive, "-o", tmp_path / "out", "--workers", "1")
    assert code == 3 and summary["workers"] == 1 and summary["run"] == 4 and summary["skipped"] == 0
    _check_results(tmp_path / "out", summary, single)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A dask scheduler and two worker processes started as a user would from a shell, on
    127.0.0.1; yields the scheduler's address."""
    d = tmp_path_factory.mktemp("dask")
    info = d / "scheduler.json"
    (d / "mmode.yaml").write_text(DASK_YAML)  # docs/batch.md: no MALLOC_TRIM_THRESHOLD_ in workers
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--port", "0", "--scheduler-file",
                               str(info), *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)]
    try:
        deadline = time.monotonic() + 60
        while not info.is_file() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", "--scheduler-file", str(info),
                                       "--nworkers", "2", "--nthreads", "1", "--memory-limit", "2GiB", *common],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d,
                                      env={**os.environ, "DASK_CONFIG": str(d)}))
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_scheduler_rows_errors_resume_and_force(archive, single, scheduler, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["batch", str(archive), "-o", str(out), "--scheduler", scheduler, "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 3 and summary["scheduler"] == scheduler and summary["run"] == 4
    assert "MALLOC_TRIM_THRESHOLD_" not in captured.err
    _check_results(out, summary, single)
    reports = {p: p.stat().st_mtime_ns for p in (out / "reports").glob("*.json")}

    # again: the good files are skipped (their results untouched), the failed ones retried
    code, summary = _batch(capsys, archive, "-o", out, "--scheduler", scheduler)
    assert code == 3 and summary["skipped"] == 2 and summary["run"] == 2
    _check_results(out, summary, single)
    good = [p for p in reports if not p.name.endswith(".row.json")]
    assert len(good) == 2 and all(p.stat().st_mtime_ns == reports[p] for p in good)

    # a changed file is redone; so is every file with --force
    heart = archive / "heart.h5"
    st = heart.stat()
    os.utime(heart, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    code, summary = _batch(capsys, archive, "-o", out, "--scheduler", scheduler)
    assert summary["skipped"] == 1 and summary["run"] == 3
    code, summary = _batch(capsys, archive, "-o", out, "--scheduler", scheduler, "--force")
    assert code == 3 and summary["skipped"] == 0 and summary["run"] == 4
    _check_results(out, summary, single)
    assert all(p.stat().st_mtime_ns > reports[p] for p in good)

    # a good file alone: exit 0
    code, summary = _batch(capsys, heart, "-o", tmp_path / "one", "--scheduler", scheduler)
    assert code == 0 and summary["files"] == summary["ok"] == 1 and summary["failures"] == []


def test_bad_usage(archive, tmp_path, capsys):
    assert main(["batch", str(archive), "-o", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert main(["batch", str(archive), "-o", str(tmp_path / "o"), "--workers", "1",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert main(["batch", str(archive), "-o", str(tmp_path / "o"), "--model", "nonesuch"]) == 2
    assert main(["batch", str(archive), "-o", str(tmp_path / "o"), "--memory-limit", "lots"]) == 2
    assert main(["batch", str(archive), "-o", str(tmp_path / "o"), "--memory-limit", "1GiB",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 6 and "Traceback" not in err and "expected at least one file" in err
    assert "--memory-limit: expected a size such as 2GiB, or auto, found 'lots'" in err


def test_discover_takes_every_file_but_hidden_json_and_the_output(tmp_path):
    from mmode.app.batch import discover

    for name in ("a.h5", "b.txt", "c", ".d.h5", "e.npy.json", "sub/f.dcm", ".git/g.h5", "out/reports/a.h5-x.json",
                 "out/batch.csv", "out/x.h5"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = discover([tmp_path, tmp_path / "a.h5", tmp_path / "missing.h5"], exclude=tmp_path / "out")
    assert found == sorted(tmp_path / n for n in ("a.h5", "b.txt", "c", "sub/f.dcm", "missing.h5"))
