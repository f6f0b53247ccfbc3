"""Exports of the review: the view as PNG, measurements as CSV, a JSON report.

The JSON report is ``{"mmode_version", "source", "meta", "view", "stats", "measurements",
"motion", "level", "process"}`` (the window adds ``"cine"``: seconds held and seconds per
class shown); ``motion`` is :func:`motion_summary` (the tracking gate and the tracker's
state), ``level`` how 0 dB of the image was set (``LevelReference.to_dict()``), ``process``
the output of the ``mmode process`` analysis of the file (files only; ``null`` for live
sources), built by the same function that command uses.

The CSV has one row per measurement, then rows that record the motion tracking (kinds
``track_gate``, ``motion_status``, ``motion_representation``, ``motion_note``; only their
``name``, ``kind``, ``value`` and ``unit`` are filled).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from PyQt6.QtWidgets import QWidget

from mmode import __version__
from mmode.errors import DataError, describe
from mmode.gui import measurements as M


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays made plain and NaN/Inf replaced by None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy array or scalar
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def export_png(widget: QWidget, path: str | Path) -> Path:
    """Save what ``widget`` shows (with its overlays) as a PNG; returns the path."""
    path = Path(path)
    if not widget.grab().save(str(path), "PNG"):
        raise DataError(describe(path, "a writable PNG path", "save failed"))
    return path


def motion_summary(gate_depth_m: float | None, state: dict) -> dict:
    """What the exports record of the motion tracking: ``track_gate_m`` (the gate the user
    placed, metres, or "automatic"), and from the tracker's state (``Results.motion_state``)
    ``status``, ``representation`` ("raw" or "clutter": the lines it follows the echo on),
    ``note`` (why there is no trace, or None) and ``tracked_depth_m`` (the echo followed)."""
    return {
        "track_gate_m": "automatic" if gate_depth_m is None else float(gate_depth_m),
        "status": state.get("status"),
        "representation": state.get("representation"),
        "note": state.get("note"),
        "tracked_depth_m": state.get("depth_m"),
    }


def _motion_rows(motion: dict) -> str:
    """CSV rows (no header) recording :func:`motion_summary` ``motion``."""
    gate = motion["track_gate_m"]
    rows = [
        ("Tracking gate", "track_gate", gate if isinstance(gate, str) else f"{gate:.6g}",
         "" if isinstance(gate, str) else "m"),
        ("Motion status", "motion_status", motion["status"] or "", ""),
        ("Motion tracked on", "motion_representation", motion["representation"] or "", ""),
        ("Motion note", "motion_note", motion["note"] or "", ""),
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in rows:
        w.writerow([*row, *[""] * (len(M.CSV_COLUMNS) - len(row))])
    return buf.getvalue()


def export_csv(measurements: Iterable[M.Measurement], path: str | Path, motion: dict | None = None) -> Path:
    """Write the measurements as CSV (:func:`mmode.gui.measurements.to_csv`), followed by the
    rows of ``motion`` (:func:`motion_summary`) when given."""
    path = Path(path)
    text = M.to_csv(measurements)
    if motion is not None:
        text += _motion_rows(motion)
    path.write_text(text, encoding="utf-8")
    return path


def build_report(
    source: str,
    meta: dict | None,
    view: dict,
    stats: dict,
    measurements: Iterable[M.Measurement],
    process: dict | None,
    motion: dict | None = None,
    level: dict | None = None,
) -> dict:
    """The JSON report as a JSON-safe dict (``motion``: :func:`motion_summary`; ``level``:
    how 0 dB was set, ``LevelReference.to_dict()``)."""
    return json_safe({
        "mmode_version": __version__,
        "source": source,
        "meta": meta,
        "view": view,
        "stats": stats,
        "measurements": [M.to_dict(m) for m in measurements],
        "motion": motion,
        "level": level,
        "process": process,
    })


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``report`` as indented, strict JSON."""
    path = Path(path)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
