"""Measure ``mmode batch`` against a serial loop, in one run (the numbers of docs/batch.md).

    python tools/batch_bench.py --files 200 --workdir /tmp/batch_bench [--workers 2]

Writes FILES simulated recordings (scenarios in turn, a seed each) into WORKDIR/data, then
times, one after the other under the same load:

1. ``serial``: :func:`mmode.app.batch.process_file` in a plain loop in this process (the
   analysis without dask: what a script looping over the files gets);
2. ``local``: ``mmode batch WORKDIR/data --workers N --force`` (a LocalCluster);
3. ``shell``: ``dask scheduler`` and ``dask worker --nworkers N --nthreads 1`` started as
   from a shell on 127.0.0.1 (with the configuration of docs/batch.md that leaves
   ``MALLOC_TRIM_THRESHOLD_`` unset), then ``mmode batch --scheduler ADDRESS --force``.

Prints one JSON object: per run the wall time of the command, the seconds from the first
task to the last, files per second, the ratio to the serial loop, and the load average
(``os.getloadavg``) before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


#: The dask configuration docs/batch.md gives for workers started from a shell.
DASK_YAML = "distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n"


def _simulate(data: Path, n_files: int, seconds: float, prf_hz: float, n_samples: int) -> list[Path]:
    from mmode.ingest.h5format import write_recording
    from mmode.ingest.simulator import simulate

    names = ("cardiac_regular", "lung_sliding", "no_sliding", "cardiac_irregular", "lung_point")
    data.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        path = data / f"rec{i:04d}.h5"
        if not path.is_file():
            sim = simulate(names[i % len(names)], seconds=seconds, prf_hz=prf_hz, seed=i, n_samples=n_samples)
            write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s)
        paths.append(path)
    return paths


def _serial(paths: list[Path], out: Path) -> dict:
    from mmode.app.batch import REPORTS_DIR, process_file
    from mmode.app.pipeline import PipelineSettings

    (out / REPORTS_DIR).mkdir(parents=True, exist_ok=True)
    settings = PipelineSettings(model="classifier_student")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows = [process_file(p, out, settings) for p in paths]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "tasks_s": wall, "files_per_s": len(paths) / wall, "failed": sum(r["error"] is not None
            for r in rows), "first_file_s": rows[0]["seconds"], "load_before": load, "load_after": os.getloadavg()[0]}


def _batch(args: list[str]) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mmode", "batch", *args, "--force", "--json"], capture_output=True,
                       text=True, check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"mmode batch exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    s = json.loads(r.stdout)
    return {"wall_s": wall, "tasks_s": s["seconds"], "files_per_s": s["files_per_s"], "startup_s": s["startup_s"],
            "workers": s["workers"], "failed": s["failed"], "load_before": load, "load_after": os.getloadavg()[0]}


def _shell_cluster(workdir: Path, n_workers: int, batch_args: list[str]) -> dict:
    info = workdir / "scheduler.json"
    info.unlink(missing_ok=True)
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    dask = [sys.executable, "-m", "dask"]
    config = workdir / "dask-config"  # docs/batch.md: workers without dask's MALLOC_TRIM_THRESHOLD_
    config.mkdir(exist_ok=True)
    (config / "mmode.yaml").write_text(DASK_YAML)
    env = {**os.environ, "DASK_CONFIG": str(config)}
    procs = [subprocess.Popen([*dask, "scheduler", "--port", "0", "--scheduler-file", str(info), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        while not info.is_file():
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        t0 = time.perf_counter()
        procs.append(subprocess.Popen([*dask, "worker", "--scheduler-file", str(info), "--nworkers", str(n_workers),
                                       "--nthreads", "1", *common],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        result = _batch([*batch_args, "--scheduler", address])
        result["wall_s_with_worker_start"] = time.perf_counter() - t0
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each recording, s")
    ap.add_argument("--prf", type=float, default=400.0, help="lines per second")
    ap.add_argument("--samples", type=int, default=512, help="samples per line")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, required=True)
    args = ap.parse_args()
    paths = _simulate(args.workdir / "data", args.files, args.seconds, args.prf, args.samples)
    runs = {"serial": _serial(paths, args.workdir / "serial")}
    data = str(args.workdir / "data")
    runs["local"] = _batch([data, "-o", str(args.workdir / "local"), "--workers", str(args.workers)])
    runs["shell"] = _shell_cluster(args.workdir, args.workers, [data, "-o", str(args.workdir / "shell")])
    for name in ("local", "shell"):
        runs[name]["vs_serial_wall"] = runs["serial"]["wall_s"] / runs[name]["wall_s"]
        runs[name]["vs_serial_tasks"] = runs["serial"]["wall_s"] / runs[name]["tasks_s"]
    print(json.dumps({"files": args.files, "seconds": args.seconds, "prf_hz": args.prf, "n_samples": args.samples,
                      "cpus": os.cpu_count(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
