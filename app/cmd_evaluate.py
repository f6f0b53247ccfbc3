"""``mmode evaluate --task {motion,classify} --data FILE [--json]``: score against ground truth
(``--model NAME`` without ``--task`` means ``--task classify``).

Task ``motion``: run the classic motion tracker (one or every estimator) over a recording
with ``/truth/displacement_m`` and compare its displacement trace with the truth at the
tracked depth: RMSE, bias, largest error, failure rate (lines off by more than a quarter
wavelength, the signature of a phase-aliasing slip), and the rates of both traces.

Task ``classify``: the shipped classifier ``--model`` runs on the recording's display image
(product display chain, the live stream's windows: 2.25 s first, growing to 6 s, then
sliding; a recording shorter than 6 s as one window over all of it); each window's
prediction is scored against the majority of /truth/labels inside it: macro and per-class
F1, accuracy, confusion matrix.
"""

from __future__ import annotations

import argparse
import math
import time

TASKS = ("motion", "classify")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score motion estimation (or classification) against ground truth",
        description="Compare an estimate with the ground truth stored in a recording (simulator "
        "files hold /truth). --task motion: displacement of the tracked echo against "
        "/truth/displacement_m, per estimator. --task classify: class predictions against "
        "/truth/labels (models stage).",
    )
    p.add_argument("--task", choices=TASKS, help="what to evaluate (required unless --model is given, which means classify)")
    p.add_argument("--data", required=True, metavar="FILE", help="recording with ground truth (.h5)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    motion = p.add_argument_group("motion task")
    motion.add_argument(
        "--estimator",
        choices=("combined", "kasai", "ncc", "all"),
        default="all",
        help="motion estimator to score (default: all three)",
    )
    motion.add_argument(
        "--track-depth",
        type=float,
        metavar="METRES",
        help="depth of the echo to follow (default: the strongest moving echo)",
    )
    motion.add_argument("--block-lines", type=int, default=256, help="lines per processing block (default 256)")
    classify = p.add_argument_group("classify task")
    classify.add_argument("--model", help="shipped classifier (default classifier_student); alone, implies --task classify")
    p.set_defaults(func=run)


def evaluate_motion(rec, estimator: str, track_depth_m: float | None = None, block_lines: int = 256) -> dict:
    """Score one estimator of :class:`~mmode.dsp.motion.MotionTracker` on a recording.

    ``rec`` is an open :class:`~mmode.ingest.recording.Recording` with ground truth. The
    truth is linearly interpolated at the tracked depth between its two neighbours in
    ``/truth/depths_m`` (increasing, not necessarily uniform). Returns a JSON-safe
    dict: estimator, depth_m, n_lines, rmse_m, bias_m, max_abs_error_m, failure_rate,
    failure_threshold_m, lines_per_s (tracker throughput), peak_truth_speed_m_s,
    nyquist_velocity_m_s, rates (estimated trace) and truth_rates (true trace).
    """
    import numpy as np

    from mmode.dsp import rates
    from mmode.dsp.tracker import MotionTracker
    from mmode.errors import DataError, describe

    truth = rec.truth()
    if truth is None:
        raise DataError(describe(rec.source, "/truth/displacement_m for --task motion", "no ground truth"))
    meta = rec.meta
    tracker = MotionTracker(estimator=estimator, track_depth_m=track_depth_m)
    tracker.prepare(meta, rec.n_samples)
    if not tracker.active:
        raise DataError(describe(rec.source, "lines long enough for two tracking windows", f"{rec.n_samples} samples"))
    parts = []
    elapsed_s = 0.0
    for block in rec.blocks(block_lines):
        t0 = time.perf_counter()
        parts.append(tracker.process(block))
        elapsed_s += time.perf_counter() - t0
    parts.append(tracker.flush())
    if tracker.status == "no_motion":
        raise DataError(describe(rec.source, "a moving echo to track", tracker.note))
    est = np.concatenate([p.displacement_m for p in parts])
    n = est.shape[0]
    if n != rec.n_lines:
        raise DataError(describe(rec.source, "at least 2 lines to track motion", rec.n_lines))
    depths = np.asarray(truth.depths_m, dtype=np.float64)
    disp = np.asarray(truth.displacement_m, dtype=np.float64)
    z = tracker.depth_m
    if not depths[0] <= z <= depths[-1]:
        want = f"truth depths covering the tracked depth {z:.4f} m"
        raise DataError(describe(rec.source, want, f"{depths[0]:.4f}..{depths[-1]:.4f} m"))
    k = int(np.searchsorted(depths, z))  # depths[k - 1] < z <= depths[k]
    if depths[k] == z:
        true = disp[:, k]
    else:
        w = (z - depths[k - 1]) / (depths[k] - depths[k - 1])
        true = (1 - w) * disp[:, k - 1] + w * disp[:, k]
    err = est - true
    threshold_m = meta.c_m_s / (4 * meta.f0_hz) if meta.f0_hz > 0 else math.inf
    return {
        "estimator": tracker.effective_estimator,
        "depth_m": z,
        "n_lines": n,
        "rmse_m": float(np.sqrt(np.mean(err**2))),
        "bias_m": float(np.mean(err)),
        "max_abs_error_m": float(np.max(np.abs(err))),
        "failure_rate": float(np.mean(np.abs(err) > threshold_m)),
        "failure_threshold_m": threshold_m if math.isfinite(threshold_m) else None,
        "lines_per_s": n / elapsed_s if elapsed_s > 0 else None,
        "peak_truth_speed_m_s": float(np.max(np.abs(np.diff(true))) * meta.prf_hz) if n > 1 else 0.0,
        "nyquist_velocity_m_s": meta.nyquist_velocity_m_s if math.isfinite(meta.nyquist_velocity_m_s) else None,
        "rates": rates.summary(est, meta.prf_hz),
        "truth_rates": rates.summary(true, meta.prf_hz),
    }


def _text(report: dict) -> str:
    lines = [f"{report['data']}: motion of the tracked echo against /truth/displacement_m"]
    lines.append(f"{'estimator':<10} {'depth mm':>9} {'RMSE um':>9} {'bias um':>9} {'max um':>9} {'fail %':>7} {'rate/min':>9}")
    for r in report["results"]:
        rate = r["rates"]["rate_per_min"]
        lines.append(
            f"{r['estimator']:<10} {r['depth_m'] * 1e3:9.2f} {r['rmse_m'] * 1e6:9.2f} {r['bias_m'] * 1e6:9.2f} "
            f"{r['max_abs_error_m'] * 1e6:9.1f} {100 * r['failure_rate']:7.2f} {'-' if rate is None else f'{rate:9.1f}':>9}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.errors import UsageError
    from mmode.ingest.files import open_recording

    task = args.task or ("classify" if args.model else None)
    if task is None:
        raise UsageError("give --task motion|classify, or --model NAME (which means classify)")
    if task == "classify":
        return _run_classify(args)
    if args.block_lines <= 0:
        raise UsageError(f"--block-lines must be > 0, got {args.block_lines}")
    estimators = ("combined", "kasai", "ncc") if args.estimator == "all" else (args.estimator,)
    with open_recording(args.data) as rec:
        results = [evaluate_motion(rec, e, args.track_depth, args.block_lines) for e in estimators]
        report = {"task": "motion", "data": rec.source, "meta": rec.meta.to_dict(), "results": results}
    if args.json:
        print_json(report)
    else:
        print(_text(report))
    return 0


def _run_classify(args: argparse.Namespace) -> int:
    """``--task classify``: window predictions of ``--model`` against /truth/labels."""
    from mmode.app.cli import print_json
    from mmode.errors import UsageError
    from mmode.ingest.files import open_recording
    from mmode.models.inference import evaluate_classifier

    if args.block_lines <= 0:
        raise UsageError(f"--block-lines must be > 0, got {args.block_lines}")
    model = args.model or "classifier_student"
    with open_recording(args.data) as rec:
        report = evaluate_classifier(rec, model, block_lines=args.block_lines)
    if args.json:
        print_json(report)
    else:
        f1 = "-" if report["macro_f1"] is None else f"{report['macro_f1']:.3f}"
        print(f"{report['data']}: {model}, {report['n_scored']} of {report['n_windows']} windows scored, "
              f"macro F1 {f1}, majority label {report['summary']['label']}")
    return 0
