"""The pieces of ``mmode batch`` (app/cmd_batch.py): which files, one task per file, the table.

A task (:func:`process_file`) runs the offline analysis of ``mmode process``
(:func:`mmode.app.cmd_process.analyse`) on one file in a dask worker, writes that file's full
process JSON and a one-row JSON into ``OUT_DIR/reports/``, and returns the row (a small dict:
the client never sees an array). A file that fails gives a row with its one-line error.

A row is done when its ``.row.json`` exists with no error and the file's size and mtime are
those the row recorded (:func:`load_done`); both JSON files are written to a temporary name
and renamed, so a worker killed mid-write leaves no half file that passes for a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterable

from mmode.errors import DataError, UsageError, exception_text

#: Columns of the result table, in order, with their Arrow types (:func:`write_tables`).
COLUMNS = (
    ("path", "string"),           # the input file, absolute
    ("kind", "string"),           # rf / iq / envelope / ... (meta.kind); null when it failed
    ("duration_s", "float64"),
    ("label", "string"),          # majority class of the classifier's windows; null without one
    ("label_fraction", "float64"),  # share of windows with that label
    ("confidence", "float64"),    # mean probability the classifier gave that label in its windows
    ("rate_per_min", "float64"),  # heart rate of the motion trace (rates.rate_per_min)
    ("rate_confidence", "float64"),
    ("breathing_per_min", "float64"),
    ("motion_pp_m", "float64"),   # peak-to-peak displacement of the tracked echo, m
    ("seconds", "float64"),       # wall time of the task (open, analyse, write)
    ("error", "string"),          # one line; null when the file was analysed
    ("report", "string"),         # the process JSON, relative to OUT_DIR
    ("size_bytes", "int64"),      # the file's size and mtime when it was analysed (resume)
    ("mtime_ns", "int64"),
    ("worker", "string"),         # the dask worker that ran it
)
#: File names the result table is written to, in OUT_DIR.
TABLE_NAME = "batch.parquet"
CSV_NAME = "batch.csv"
REPORTS_DIR = "reports"
#: A row file larger than this is not one of ours (rows are well under 4 KiB): not read.
_MAX_ROW_BYTES = 1 << 16


def discover(inputs: Iterable[str | Path], exclude: Path | None = None) -> list[Path]:
    """The files to analyse, absolute, sorted, each once.

    A file given by name is taken whatever its suffix (an unknown one is a failed row, as
    ``mmode process`` would say); so is a name that does not exist. A folder is walked
    recursively and gives every file in it except hidden ones (a name starting with ``.``),
    JSON files (sidecars) and anything under ``exclude`` (the output folder): a file of a
    format no reader takes becomes a failed row, so nothing in an archive goes unreviewed
    without saying so.
    """
    found: set[Path] = set()
    exclude = exclude.resolve() if exclude is not None else None
    for item in inputs:
        p = Path(item).resolve()
        if not p.is_dir():
            found.add(p)
            continue
        for root, dirs, files in os.walk(p):
            root_p = Path(root)
            dirs[:] = [d for d in dirs if not d.startswith(".")
                       and (exclude is None or (root_p / d).resolve() != exclude)]
            found.update(root_p / f for f in files if not f.startswith(".") and not f.lower().endswith(".json"))
    return sorted(found)


def fingerprint(path: Path) -> tuple[int | None, int | None]:
    """(size in bytes, mtime in ns) of ``path``; (None, None) when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def report_names(path: Path) -> tuple[str, str]:
    """The process JSON's and the row's file names in ``OUT_DIR/reports/`` for input ``path``:
    its name plus 12 hex digits of the SHA-1 of its absolute path (two files of one name in
    different folders do not collide)."""
    tag = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    base = f"{path.name}-{tag}"
    return f"{base}.json", f"{base}.row.json"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _empty_row(path: Path) -> dict:
    row = {name: None for name, _ in COLUMNS}
    row["path"] = str(path)
    row["size_bytes"], row["mtime_ns"] = fingerprint(path)
    return row


def error_row(path: Path, error: str) -> dict:
    """The row of a file whose task failed outside :func:`process_file` (a killed worker)."""
    return {**_empty_row(path), "error": " ".join(error.split())}


def row_from_report(report: dict) -> dict:
    """The summary columns of one ``mmode process`` report (docs/process.md)."""
    rates = report["rates"]
    row = {"kind": report["meta"]["kind"], "duration_s": report["duration_s"],
           "rate_per_min": rates["rate_per_min"], "rate_confidence": rates["confidence"],
           "breathing_per_min": rates["breathing_rate_per_min"],
           "label": None, "label_fraction": None, "confidence": None, "motion_pp_m": None}
    c = report["classification"]
    if c is not None and c["summary"]["label"] is not None:
        label = c["summary"]["label"]
        k = c["classes"].index(label)
        row.update(label=label, label_fraction=c["summary"]["fraction"][label],
                   confidence=sum(w["probs"][k] for w in c["windows"] if w["label"] == label)
                   / sum(w["label"] == label for w in c["windows"]))
    if report["motion"] is not None:
        d = report["motion"]["displacement_m"]
        row["motion_pp_m"] = max(d) - min(d)
    return row


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # not in a dask worker (a serial loop)
        return None


def malloc_trim_threshold() -> str | None:
    """``MALLOC_TRIM_THRESHOLD_`` of this process's environment (run on each worker:
    app/cmd_batch.py says why it matters)."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def process_file(path: Path, out_dir: Path, settings) -> dict:
    """Analyse one file as ``mmode process`` does, in the calling process (a dask task).

    Writes ``OUT_DIR/reports/<name>-<hash>.json`` (the full process report) and then
    ``<name>-<hash>.row.json`` (the row); returns the row. Never raises for a bad file: its
    row carries the one-line error ``mmode process`` prints (any other exception, a bug,
    is written as ``<type>: <message>`` so that one file never stops a batch).
    ``settings``: :class:`~mmode.app.pipeline.PipelineSettings`.
    """
    from mmode.app.cmd_process import analyse
    from mmode.ingest.files import open_recording

    t0 = time.perf_counter()
    report_name, row_name = report_names(path)
    reports = Path(out_dir) / REPORTS_DIR
    row = _empty_row(path)
    row["worker"] = _worker_address()
    try:
        if settings.model not in (None, "none"):
            import torch

            torch.set_num_threads(1)  # one task per core: the worker's one thread
        with open_recording(path) as rec:
            report = analyse(rec, settings)
        _write_atomic(reports / report_name, json.dumps(report, indent=2, allow_nan=False) + "\n")
        row.update(row_from_report(report), report=f"{REPORTS_DIR}/{report_name}")
    except (DataError, UsageError) as exc:
        row["error"] = " ".join(str(exc).split())
    except Exception as exc:  # noqa: BLE001 - an OSError, or a bug, on one file must not stop the others
        row["error"] = f"{path}: {exception_text(exc)}"
    row["seconds"] = time.perf_counter() - t0
    _write_atomic(reports / row_name, json.dumps(row, allow_nan=False) + "\n")
    return row


def load_done(out_dir: Path, files: list[Path]) -> dict[Path, dict]:
    """The rows of ``files`` a previous run finished: no error, the process JSON present, and
    the file's size and mtime unchanged since. Unreadable or foreign row files count as not
    done. Failed rows are not done: their error may have been passing (memory, a killed
    worker), so the next run tries them again."""
    done = {}
    reports = Path(out_dir) / REPORTS_DIR
    for path in files:
        report_name, row_name = report_names(path)
        row_file = reports / row_name
        try:
            if row_file.stat().st_size > _MAX_ROW_BYTES:
                continue
            row = json.loads(row_file.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(row, dict) and row.get("path") == str(path) and row.get("error") is None
                and (row.get("size_bytes"), row.get("mtime_ns")) == fingerprint(path)
                and (reports / report_name).is_file()):
            done[path] = {name: row.get(name) for name, _ in COLUMNS}
    return done


def write_tables(out_dir: Path, rows: list[dict]) -> tuple[Path, Path]:
    """Write ``rows`` (sorted by path) as ``OUT_DIR/batch.parquet`` and its CSV twin
    ``batch.csv`` (nulls as empty fields); returns both paths."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["path"]), schema=schema)
    out_dir = Path(out_dir)
    parquet, csv = out_dir / TABLE_NAME, out_dir / CSV_NAME
    for target, write in ((parquet, pq.write_table), (csv, pa_csv.write_csv)):
        tmp = target.with_name(f".{target.name}.tmp")
        write(table, str(tmp))
        os.replace(tmp, target)
    return parquet, csv
