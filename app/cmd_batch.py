"""``mmode batch INPUT... -o OUT_DIR [--workers N | --scheduler ADDRESS] [--force] [--json]``.

The offline analysis of ``mmode process`` over many files, one task per file on
``dask.distributed``: a ``LocalCluster`` on this machine (worker processes of one thread,
a memory limit each; every listener, the dashboard's too, on 127.0.0.1), or an existing cluster at
``--scheduler``. Each worker writes the file's process JSON and its row into
``OUT_DIR/reports/``; the client collects only the rows and writes ``OUT_DIR/batch.parquet``
and ``batch.csv``. A second run skips the files done before (unchanged size and mtime);
``--force`` redoes them. Exit 0 when every file was analysed, 3 when some failed (the
summary lists them). docs/batch.md says how to run it on a cluster, and what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator

#: How long to wait for a scheduler to answer, and for its first worker, s.
CONNECT_TIMEOUT_S = 30
#: dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which turns off glibc's
#: adaptive mmap threshold: every numpy array over 128 KiB is then mapped and unmapped afresh,
#: and the analysis ran 1.6-2.5x slower per file (docs/batch.md). None unsets it.
TRIM_CONFIG = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="analyse many recordings, one task per file on dask.distributed",
        description="Run the analysis of `mmode process` over files and folders (walked recursively) as "
        "tasks on a local dask cluster or an existing one, and write one table (Parquet + CSV) with a "
        "row per file and each file's process JSON. See docs/batch.md.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="recording files and folders")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder of the results (created)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes, one thread each (default: the machine's cores)")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="memory limit of each local worker, e.g. 2GiB (default: the machine's memory / N)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="use the dask cluster whose scheduler is at ADDRESS (tcp://HOST:PORT) instead of a local one")
    p.add_argument("--force", action="store_true", help="redo files whose results are already in OUT_DIR")
    p.add_argument("--model", default="classifier_student", metavar="NAME",
                   help="shipped classifier (`mmode models`), or 'none' (default classifier_student)")
    from mmode.app.cmd_process import add_motion_option

    add_motion_option(p)  # as `mmode process`, so each report is what process says of its file
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator:
    """A dask Client: of the scheduler at ``--scheduler``, or of a new LocalCluster."""
    import dask
    from distributed import Client, LocalCluster

    from mmode.app import batch
    from mmode.errors import DataError, describe, exception_text

    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise DataError(describe(args.scheduler, "a dask scheduler", exception_text(exc))) from None
        with client:
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise DataError(describe(args.scheduler, "at least one worker",
                                         f"none after {CONNECT_TIMEOUT_S} s")) from None
            n_trimmed = sum(v is not None for v in client.run(batch.malloc_trim_threshold).values())
            if n_trimmed:
                print(f"mmode batch: {n_trimmed} workers run with MALLOC_TRIM_THRESHOLD_ set (dask's default), "
                      "which slows the analysis down 1.6-2.5x: docs/batch.md says how to start them without",
                      file=sys.stderr)
            yield client
        return
    n_workers = args.workers or len(os.sched_getaffinity(0))
    with dask.config.set({TRIM_CONFIG: None}), \
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                         memory_limit=args.memory_limit or "auto",
                         host="127.0.0.1", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


def _run_tasks(client, files: list[Path], out_dir: Path, settings) -> list[dict]:
    """Submit one :func:`~mmode.app.batch.process_file` task per file and collect the rows as
    they finish, with a progress bar on stderr when it is a terminal. A task that dask gave
    up on (its workers killed again and again) becomes a failed row."""
    from distributed import as_completed
    from tqdm import tqdm

    from mmode.app import batch
    from mmode.errors import exception_text

    futures = {client.submit(batch.process_file, path, out_dir, settings,
                             key=f"mmode-process-{batch.report_names(path)[0]}"): path for path in files}
    rows = []
    with tqdm(total=len(files), unit="file", desc="mmode batch", file=sys.stderr, disable=None) as bar:
        for future in as_completed(futures):
            try:
                rows.append(future.result())
            except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost connection: that file fails
                rows.append(batch.error_row(futures[future], exception_text(exc)))
            future.release()
            bar.update(1)
    return rows


def _text(summary: dict) -> str:
    lines = [f"{summary['files']} files: {summary['ok']} ok, {summary['failed']} failed, "
             f"{summary['skipped']} done before (skipped)",
             f"{summary['run']} analysed in {summary['seconds']:.1f} s ({summary['files_per_s']:.2f} files/s) "
             f"on {summary['workers']} workers, after {summary['startup_s']:.1f} s to start",
             f"table: {summary['table']} (and {summary['csv']})"]
    lines += [f"failed: {f['error']}" for f in summary["failures"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mmode.app import batch
    from mmode.app.cli import print_json
    from mmode.app.pipeline import PipelineSettings
    from mmode.errors import DataError, UsageError, describe
    from mmode.models.registry import model_names

    if args.workers is not None and args.workers < 1:
        raise UsageError(describe("--workers", "at least 1", args.workers))
    if args.scheduler and (args.workers is not None or args.memory_limit is not None):
        raise UsageError("--workers, --memory-limit: the workers of a --scheduler are started with it, "
                         "not by mmode batch")
    if args.memory_limit not in (None, "auto"):
        from dask.utils import parse_bytes

        try:
            parse_bytes(args.memory_limit)
        except ValueError:
            raise UsageError(describe("--memory-limit", "a size such as 2GiB, or auto", repr(args.memory_limit))) from None
    if args.model != "none" and args.model not in model_names():
        raise UsageError(describe("--model", f"one of {', '.join(model_names())} or none", repr(args.model)))
    out_dir = Path(args.output).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(describe("-o", "a folder", f"the file {out_dir}"))
    files = batch.discover(args.inputs, exclude=out_dir)
    if not files:
        raise DataError(describe(" ".join(args.inputs), "at least one file", "none (empty folders)"))
    (out_dir / batch.REPORTS_DIR).mkdir(parents=True, exist_ok=True)
    done = {} if args.force else batch.load_done(out_dir, files)
    todo = [f for f in files if f not in done]
    settings = PipelineSettings(model=args.model, motion=args.motion)

    t0 = time.perf_counter()
    with _client(args) as client:
        workers = len(client.scheduler_info()["workers"])
        t1 = time.perf_counter()
        rows = _run_tasks(client, todo, out_dir, settings) if todo else []
        t2 = time.perf_counter()
    rows += done.values()
    parquet, csv = batch.write_tables(out_dir, rows)
    failures = sorted(({"path": r["path"], "error": r["error"]} for r in rows if r["error"] is not None),
                      key=lambda f: f["path"])
    summary = {
        "files": len(files), "ok": len(files) - len(failures), "failed": len(failures), "skipped": len(done),
        "run": len(todo), "seconds": t2 - t1, "files_per_s": len(todo) / max(t2 - t1, 1e-9),
        "startup_s": t1 - t0, "workers": workers, "scheduler": args.scheduler,
        "table": str(parquet), "csv": str(csv), "reports": str(out_dir / batch.REPORTS_DIR), "failures": failures,
    }
    if args.json:
        print_json(summary)
    else:
        print(_text(summary))
    return 3 if failures else 0
