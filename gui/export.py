"""Exports of the review: the view as PNG, measurements as CSV, a JSON report.

The JSON report is ``{"mmode_version", "source", "meta", "view", "stats", "measurements",
"process"}`` (the window adds ``"cine"``: seconds held and seconds per class shown);
``process`` is the output of the ``mmode process`` analysis of the file (files only;
``null`` for live sources), built by the same function that command uses.
"""

from __future__ import annotations

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


def export_csv(measurements: Iterable[M.Measurement], path: str | Path) -> Path:
    """Write the measurements as CSV (:func:`mmode.gui.measurements.to_csv`)."""
    path = Path(path)
    path.write_text(M.to_csv(measurements), encoding="utf-8")
    return path


def build_report(
    source: str,
    meta: dict | None,
    view: dict,
    stats: dict,
    measurements: Iterable[M.Measurement],
    process: dict | None,
) -> dict:
    """The JSON report as a JSON-safe dict."""
    return json_safe({
        "mmode_version": __version__,
        "source": source,
        "meta": meta,
        "view": view,
        "stats": stats,
        "measurements": [M.to_dict(m) for m in measurements],
        "process": process,
    })


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``report`` as indented, strict JSON."""
    path = Path(path)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
