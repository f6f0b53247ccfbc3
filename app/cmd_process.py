"""``mmode process FILE [--json] [-o OUT.json|OUT.csv] [--image OUT.npy]``: offline analysis.

Runs the whole :class:`~mmode.app.pipeline.Pipeline` over a recording, block by block, and
reports the metadata, the processing speed and the features (schema: docs/process.md).
``--image`` writes the display image (float32 dB, n_lines x n_rows) as ``.npy``, written
block by block through a memory map so a long file never sits in memory, and its row
depths in the sidecar ``OUT.npy.json`` (``depth_m``; ``depth_px`` instead for an image
without a depth calibration). A progress bar goes to stderr when it is a terminal.
DICOM cine and video files take ``--mline`` and ``--px-per-cm`` (docs/format.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

from mmode.app.cli import add_cine_arguments

#: Lines per block (about 4 MiB of int16 RF at 2048 samples per line).
DEFAULT_BLOCK_LINES = 1024
#: Feature summary window of the CSV / JSON ``windows`` list, seconds.
DEFAULT_WINDOW_S = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "process",
        help="analyse a recording headless (display image, features, speed)",
        description="Run the processing chain over a recording and report metadata, timing and "
        "features. Schema: docs/process.md.",
    )
    p.add_argument("file", help="recording file (any format `mmode info` reads)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("-o", "--output", metavar="OUT", help="write the report to OUT.json, or the feature windows to OUT.csv")
    p.add_argument("--image", metavar="OUT.npy", help="write the display image (float32 dB) and OUT.npy.json (row depths)")
    p.add_argument("--n-rows", type=int, default=256, help="display rows (default 256)")
    p.add_argument("--gain-db", type=float, default=0.0, help="gain in dB around the level shown as 0 dB (default 0)")
    p.add_argument("--reference-db", type=float, metavar="DB",
                   help="envelope level shown as 0 dB, dB re one stored unit (default: integer full scale, "
                        "else the 99th percentile of the first second + 6 dB)")
    p.add_argument("--dynamic-range-db", type=float, default=60.0, help="displayed range in dB (default 60)")
    p.add_argument("--denoise", default="none", choices=("none", "median_persist", "wavelet", "srad"),
                   help="speckle reduction (default none)")
    p.add_argument("--denoise-strength", type=float, default=0.5, help="0..1 (default 0.5)")
    p.add_argument("--block-lines", type=int, default=DEFAULT_BLOCK_LINES, help=f"lines per block (default {DEFAULT_BLOCK_LINES})")
    p.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_S, help="feature window in seconds (default 1)")
    p.add_argument("--track-depth", type=float, metavar="METRES",
                   help="depth of the echo whose motion is tracked (default: the strongest moving echo)")
    add_cine_arguments(p)
    add_motion_option(p)
    p.add_argument("--model", default="classifier_student", metavar="NAME",
                   help="shipped classifier run on sliding windows (`mmode models`), or 'none' (default classifier_student)")
    p.set_defaults(func=run)


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.enabled = sys.stderr.isatty()
        self._last = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        pct = int(100 * done / self.total)
        if pct != self._last:
            self._last = pct
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\rprocessing [{bar:<25}] {pct:3d}%")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _finite(x: float) -> float | None:
    """JSON has no NaN: None for a missing value."""
    return float(x) if math.isfinite(x) else None


class _FeatureLog:
    """Per-line features of the whole recording, filled block by block."""

    KEYS = ("mean_db", "decorrelation", "decorrelation_rate_per_s", "wavelet_entropy")

    def __init__(self, n_lines: int) -> None:
        import numpy as np

        self.per_line = {k: np.zeros(n_lines, np.float32) for k in self.KEYS}
        self.rel_energy = None
        self.n_lines = n_lines

    def add(self, start: int, features: dict) -> None:
        import numpy as np

        stop = start + features["mean_db"].shape[0]
        for k in self.KEYS:
            self.per_line[k][start:stop] = features[k]
        rel = features["wavelet_rel_energy"]
        if self.rel_energy is None:
            self.rel_energy = np.zeros((self.n_lines, rel.shape[1]), np.float32)
        self.rel_energy[start:stop] = rel

    def windows(self, prf_hz: float, t_s, window_s: float) -> list[dict]:
        per = max(1, int(round(window_s * prf_hz)))
        out = []
        for i in range(0, self.n_lines, per):
            j = min(i + per, self.n_lines)
            row = {"seq_start": i, "seq_stop": j, "t_start_s": float(t_s[i]), "t_stop_s": float(t_s[j - 1])}
            for k in self.KEYS:
                row[k] = float(self.per_line[k][i:j].mean())
            for b, v in enumerate(self.rel_energy[i:j].mean(axis=0)):
                row[f"wavelet_rel_energy_{b}"] = float(v)
            out.append(row)
        return out

    def summary(self, prf_hz: float) -> dict:
        from mmode.dsp.features import periodicity

        period_s, strength = periodicity(self.per_line["mean_db"], prf_hz)
        return {
            "mean_db": float(self.per_line["mean_db"].mean()),
            "decorrelation": float(self.per_line["decorrelation"].mean()),
            "decorrelation_rate_per_s": float(self.per_line["decorrelation_rate_per_s"].mean()),
            "wavelet_entropy": float(self.per_line["wavelet_entropy"].mean()),
            "wavelet_rel_energy": [float(v) for v in self.rel_energy.mean(axis=0)],
            "period_s": _finite(period_s),
            "periodicity": float(strength),
        }


def _motion_report(parts: list, tracker) -> tuple[dict | None, str | None, dict]:
    """The ``motion`` object (None when nothing is tracked), ``motion_note`` (why not; with a
    trace, the tracker's caution about it, e.g. a gated echo that does not come back when
    tracked backwards; else None) and ``rates`` of the report from the pipeline's MotionBlocks."""
    import numpy as np

    from mmode.dsp import rates

    t_s = np.concatenate([m.t_s for m in parts])
    disp = np.concatenate([m.displacement_m for m in parts])
    if tracker.status != "tracking" or disp.shape[0] == 0:
        note = tracker.note or "no trace"
        return None, note, {**rates.summary(np.zeros(0), tracker.meta.prf_hz), "note": f"no motion trace: {note}"}
    motion = {
        "estimator": tracker.effective_estimator,
        "representation": tracker.representation,
        "track_depth_m": tracker.track_depth_m,
        "depth_m": _finite(tracker.depth_m),
        "t_s": t_s.tolist(),
        "displacement_m": disp.tolist(),
        "velocity_m_s": np.concatenate([m.velocity_m_s for m in parts]).tolist(),
        "quality": np.round(np.concatenate([m.quality for m in parts]), 4).tolist(),
    }
    return motion, tracker.note, rates.summary(disp, tracker.meta.prf_hz)


def add_motion_option(p: argparse.ArgumentParser, default: str = "both") -> None:
    """``--motion auto|classic|network|both`` (process: default both; monitor: auto, the
    learned trace only where the line rate keeps a live stream within its latency budget,
    :data:`mmode.app.motion_modes.NETWORK_AUTO_MAX_RATE_HZ`)."""
    from mmode.app.motion_modes import MOTION_MODES, NETWORK_AUTO_MAX_RATE_HZ

    p.add_argument("--motion", default=default, choices=MOTION_MODES,
                   help="motion traces: the classic tracker's, the learned network's (following the same echo), "
                        f"both, or auto (both up to {NETWORK_AUTO_MAX_RATE_HZ:g} lines/s, else classic; "
                        f"default {default})")


def _network_report(parts: list, pipeline) -> dict | None:
    """The ``motion_network`` object: the learned trace (t_s, displacement_m, quality per
    line), its depth and model, beside ``motion``; None without the network or a trace."""
    import numpy as np

    net = pipeline.network
    parts = [m for m in parts if m is not None]
    if net is None or not parts or pipeline.motion.status != "tracking":
        return None
    t_s = np.concatenate([m.t_s for m in parts])
    if t_s.shape[0] == 0:
        return None
    return {
        "model": net.name,
        "representation": pipeline.motion.representation,
        "depth_m": _finite(net.depth_m),
        "t_s": t_s.tolist(),
        "displacement_m": np.concatenate([m.displacement_m for m in parts]).tolist(),
        "velocity_m_s": np.concatenate([m.velocity_m_s for m in parts]).tolist(),
        "quality": np.round(np.concatenate([m.quality for m in parts]), 4).tolist(),
    }


def analyse(rec, settings, *, block_lines: int = DEFAULT_BLOCK_LINES, window_s: float = DEFAULT_WINDOW_S,
            image_path: str | Path | None = None, progress: _Progress | None = None) -> dict:
    """Run the pipeline over an open :class:`~mmode.ingest.recording.Recording`.

    Returns the report dict (docs/process.md). Writes the display image to ``image_path``
    (``.npy``, plus ``<image_path>.json`` with ``depth_m``) when given.
    """
    import numpy as np

    from mmode.app.pipeline import Pipeline
    from mmode.dsp.levels import LEVEL_S
    from mmode.errors import DataError, describe

    if rec.n_lines == 0:
        raise DataError(describe(rec.source, "at least one line", "0 lines"))
    pipeline = Pipeline(settings)
    pipeline.prepare(rec.meta, rec.n_samples)
    pipeline.settle_level(rec.read(0, min(rec.n_lines, max(1, round(LEVEL_S * rec.meta.prf_hz)))))
    n_rows = pipeline.row_depths_m.shape[0]
    image = None
    if image_path is not None:
        image = np.lib.format.open_memmap(str(image_path), mode="w+", dtype=np.float32, shape=(rec.n_lines, n_rows))
    log = _FeatureLog(rec.n_lines)
    t_s = rec.timestamps_s()
    dsp_s = 0.0
    motion_parts = []
    network_parts = []
    class_windows = []
    t_start = time.perf_counter()
    for block in rec.blocks(block_lines):
        res = pipeline.process(block)
        dsp_s += sum(res.timings_ms.values()) / 1e3
        if image is not None:
            image[res.seq_start:res.seq_stop] = res.display_db
        log.add(res.seq_start, res.features)
        motion_parts.append(res.motion)
        network_parts.append(res.motion_network)
        class_windows += res.classification or []
        if progress is not None:
            progress.update(res.seq_stop)
    wall_s = time.perf_counter() - t_start
    if image is not None:
        image.flush()
        del image
        if rec.meta.depth_calibrated:
            depth = {"depth_m": [float(d) for d in pipeline.row_depths_m]}
        else:  # one stored sample per pixel
            depth = {"depth_px": [round(float(k), 6) for k in rec.meta.sample_at_depth(pipeline.row_depths_m)],
                     "depth_calibrated": False}
        sidecar = {**depth, "shape": [rec.n_lines, n_rows],
                   "dtype": "float32", "units": "dB", "dynamic_range_db": settings.processor.dynamic_range_db,
                   "prf_hz": rec.meta.prf_hz, "t0_s": float(t_s[0])}
        Path(str(image_path) + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    lines_per_s = rec.n_lines / max(dsp_s, 1e-9)
    end = pipeline.finish()
    motion_parts.append(end.motion)  # the lines the tracker still holds
    network_parts.append(end.motion_network)
    motion_network = _network_report(network_parts, pipeline)
    if settings.motion == "network":  # the classic tracker ran only to choose the echo
        from mmode.dsp import rates as rate_analysis

        motion, motion_note = None, "classic trace not asked for (--motion network)"
        disp = np.asarray(motion_network["displacement_m"] if motion_network else [], dtype=np.float64)
        rates = rate_analysis.summary(disp, rec.meta.prf_hz)
    else:
        motion, motion_note, rates = _motion_report(motion_parts, pipeline.motion)
    p = settings.processor
    classification = _classification_report(pipeline.classifier, class_windows, end.classification, rec.duration_s)
    label = None if classification is None else classification["summary"]["label"]
    return {
        "file": str(rec.source),
        "meta": rec.meta.to_dict(),
        "n_lines": rec.n_lines,
        "n_samples": rec.n_samples,
        "duration_s": rec.duration_s,
        "level": pipeline.processor.level.to_dict(),
        "settings": {"n_rows": p.n_rows, "gain_db": p.gain_db, "dynamic_range_db": p.dynamic_range_db,
                     "tgc": [list(x) for x in p.tgc], "denoise": p.denoise, "denoise_strength": p.denoise_strength,
                     "block_lines": block_lines},
        "timing": {"wall_s": wall_s, "processing_s": dsp_s, "lines_per_s": lines_per_s,
                   "realtime_factor": lines_per_s / rec.meta.prf_hz},
        "features": {"summary": log.summary(rec.meta.prf_hz), "window_s": window_s,
                     "windows": log.windows(rec.meta.prf_hz, t_s, window_s)},
        "motion": motion,
        "motion_note": motion_note,
        "motion_network": motion_network,
        "rates": rates_for_class(rates, label),
        "classification": classification,
    }


def rates_for_class(rates: dict, label: str | None) -> dict:
    """The trace's rates (:func:`mmode.dsp.rates.summary`) as the recording's class reads
    them, as the GUI's overlay does: the trace of a lung view (``BREATHING_CLASSES``) moves
    with the breath, the probe and the pleura's jitter, so a periodicity in the heart's range
    is no heart rate; that of a cardiac view is the heartbeat, whose slow periodicity is no
    breathing rate; ``no_contact`` has neither. Without a class (no model, a recording
    shorter than the classifier's shortest window) both stay as measured. A rate taken away
    is None with its reason added to ``note``."""
    from mmode.ingest.meta import BREATHING_CLASSES, CARDIAC_CLASSES

    if label is None:
        return rates
    out = dict(rates)
    notes = [rates["note"]] if rates.get("note") else []
    if label not in CARDIAC_CLASSES and out["rate_per_min"] is not None:
        out.update(rate_per_min=None, confidence=None, intervals_s=[], interval_cv=None, rmssd_s=None, rhythm="unknown")
        notes.append(f"no heart rate for a {label} recording: its motion is not the heartbeat")
    if label not in BREATHING_CLASSES and out["breathing_rate_per_min"] is not None:
        out.update(breathing_rate_per_min=None, breathing_confidence=None)
        notes.append(f"no breathing rate for a {label} recording: its motion is not the breath")
    out["note"] = "; ".join(notes) or None
    return out


def _classification_report(classifier, windows: list, whole: list | None, duration_s: float) -> dict | None:
    """``classification`` of the report: model, classes, the classifier's window lengths
    (min_window_s, max_window_s, column_s), hop_s, window_s (the longest window reported,
    None without one), windows (t_start_s, t_end_s, probs, label) and summary (majority
    label, fraction of windows per class). A recording shorter than the longest window is
    classified as one window over all of it (``whole``, from ``Pipeline.finish``), with a
    ``note`` saying so; one shorter than the shortest window has no class and a ``note``
    giving the minimum. None without a model."""
    if classifier is None:
        return None
    from mmode.models.inference import summarize

    spec = classifier.spec
    windows = whole or windows
    summary = summarize(windows, classifier.classes)
    window_s = max((w.t_end_s - w.t_start_s for w in windows), default=None)
    if whole:
        summary["note"] = (f"recording of {duration_s:.2f} s is shorter than the classifier's {spec['max_window_s']:g} s "
                           f"window: classified as one window of {window_s:g} s")
    elif not windows:
        summary["note"] = (f"recording of {duration_s:.2f} s is shorter than the classifier's shortest window: "
                           f"it needs {spec['min_window_s']:g} s of lines")
    return {
        "model": classifier.name,
        "classes": list(classifier.classes),
        "window_s": window_s,
        "min_window_s": spec["min_window_s"],
        "max_window_s": spec["max_window_s"],
        "column_s": spec["column_s"],
        "hop_s": classifier.hop_s,
        "windows": [w.to_dict() for w in windows],
        "summary": summary,
    }


def _write_csv(path: Path, windows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(windows[0].keys()))
        w.writeheader()
        w.writerows(windows)


def _text(report: dict) -> str:
    s = report["features"]["summary"]
    t = report["timing"]
    period = f"{s['period_s']:.3f} s (strength {s['periodicity']:.2f})" if s["period_s"] is not None else "none found"
    rows = [
        ("file", report["file"]),
        ("lines", f"{report['n_lines']} x {report['n_samples']} ({report['meta']['kind']}), {report['duration_s']:.3f} s"),
        ("speed", f"{t['lines_per_s']:.0f} lines/s, {t['realtime_factor']:.1f}x real time"),
        ("level", f"0 dB = {report['level']['reference_db']:.1f} dB re 1 ({report['level']['detail']})"),
        ("mean_db", f"{s['mean_db']:.1f}"),
        ("decorrelation", f"{s['decorrelation']:.3f} per line, {s['decorrelation_rate_per_s']:.2f}/s speckle renewal"),
        ("entropy", f"{s['wavelet_entropy']:.3f} nats"),
        ("period", period),
    ]
    meta = report["meta"]
    if meta.get("description"):  # what the file's lines are (a cine's M-line, an image frame's beams)
        rows.insert(2, ("source", meta["description"]))
    if meta.get("depth_calibrated", True):
        def length(x_m: float, digits: int) -> str:
            return f"{x_m * 1e3:.{digits}f} mm"
    else:  # one stored sample per pixel: every length in metres counts pixels of the nominal size
        pixel_m = meta["c_m_s"] / (2 * meta["fs_hz"])
        rows.append(("depth", f"uncalibrated: in pixels (no physical scale; {pixel_m * 1e3:g} mm per pixel "
                              "in the JSON's metres)"))

        def length(x_m: float, digits: int) -> str:
            return f"{x_m / pixel_m:.{digits}f} px"
    if "amplitude" in meta:
        rows.append(("amplitude", f"{meta['amplitude']}: display grey levels, mapped linearly (no log)"))
    m, r = report["motion"], report["rates"]
    if m is None:
        rows.append(("motion", report["motion_note"]))
    else:
        d = m["displacement_m"]
        how = m["estimator"] + (", clutter-filtered" if m["representation"] == "clutter" else "")
        gate = "" if m["track_depth_m"] is None else f", gate at {length(m['track_depth_m'], 1)}"
        rows.append(("motion", f"echo at {length(m['depth_m'], 1)}{gate}, {length(max(d) - min(d), 2)} "
                               f"peak to peak ({how})"))
        if report["motion_note"]:
            rows.append(("caution", report["motion_note"]))
    n = report.get("motion_network")
    if n is not None:
        d = n["displacement_m"]
        rows.append(("motion (net)", f"{length(max(d) - min(d), 2)} peak to peak ({n['model']}, same echo)"))
    if r["rate_per_min"] is not None:
        rows.append(("heart rate", f"{r['rate_per_min']:.1f}/min (confidence {r['confidence']:.2f}), rhythm {r['rhythm']}"))
    if r.get("breathing_rate_per_min") is not None:
        rows.append(("breathing", f"{r['breathing_rate_per_min']:.1f}/min (confidence {r['breathing_confidence']:.2f})"))
    if r["rate_per_min"] is None and r.get("breathing_rate_per_min") is None and r.get("note"):
        rows.append(("rate", r["note"]))
    c = report["classification"]
    if c is not None:
        summary = c["summary"]
        if summary["label"] is None:
            rows.append(("class", summary.get("note", "no window")))
        else:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in summary["fraction"].items() if v > 0)
            lengths = sorted({round(w["t_end_s"] - w["t_start_s"], 4) for w in c["windows"]})
            span = f"{lengths[0]:g} s" if len(lengths) == 1 else f"{lengths[0]:g}-{lengths[-1]:g} s"
            n = len(c["windows"])
            rows.append(("class", f"{summary['label']} ({n} window{'s' if n > 1 else ''} of {span}: {shares})"))
    return "\n".join(f"{k:<14} {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import cine_options, print_json
    from mmode.app.pipeline import PipelineSettings
    from mmode.dsp.processor import ProcessorSettings
    from mmode.errors import UsageError, describe
    from mmode.ingest.files import open_recording

    if args.block_lines <= 0:
        raise UsageError(describe("--block-lines", "> 0", args.block_lines))
    if not args.window_s > 0:
        raise UsageError(describe("--window-s", "> 0", args.window_s))
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        raise UsageError(describe("-o", "a path ending in .json or .csv", args.output))
    if args.image and not args.image.endswith(".npy"):
        raise UsageError(describe("--image", "a path ending in .npy", args.image))
    settings = PipelineSettings(processor=ProcessorSettings(
        n_rows=args.n_rows, gain_db=args.gain_db, reference_db=args.reference_db, dynamic_range_db=args.dynamic_range_db,
        denoise=args.denoise, denoise_strength=args.denoise_strength), track_depth_m=args.track_depth,
        model=args.model, motion=args.motion)
    with open_recording(args.file, **cine_options(args)) as rec:
        progress = _Progress(rec.n_lines)
        try:
            report = analyse(rec, settings, block_lines=args.block_lines, window_s=args.window_s,
                             image_path=args.image, progress=progress)
        finally:
            progress.close()
    if out is not None:
        if out.suffix.lower() == ".csv":
            _write_csv(out, report["features"]["windows"])
        else:
            out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    if args.json:
        print_json(report)
    else:
        print(_text(report))
    return 0
