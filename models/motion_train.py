"""Training of the keyframe motion networks (teacher, then distilled and pruned student).

``python -m mmode.models.motion_train --out DIR [--recordings N] [--workers W]`` writes
``motion_keyframe_teacher`` and ``motion_keyframe_student`` (safetensors + card) into DIR
(:data:`TEACHER`, :data:`STUDENT`; the per-pair nets ``motion_teacher`` / ``motion_student`` of
``mmode train`` are the earlier design, kept until that command trains these). The recipe is the
one of the first motion nets (:mod:`mmode.models.train`): the teacher on the pairs with the
easy-to-hard SNR curriculum, the student distilled from it (alpha 0.5), then its channels
pruned iteratively (:data:`PRUNE_RATIO`) with distillation fine-tuning (Torch-Pruning), all by
mean absolute error (:data:`LOSS`) of the correction in units of the pair's phase noise
(:func:`mmode.models.motion_data.output_scale_wl`), with the pairs of
:mod:`mmode.models.motion_data` (100-5000 lines/s, RF and coarse IQ, 0-35 dB, clutter). Both
networks are odd under swapping the two lines of a pair (``antisymmetric``,
:func:`mmode.models.networks.reversed_pair`).
The cards record the data recipe and the held-out pair metrics; the integrated-trace table
(:mod:`mmode.models.motion_eval`) is added to them by its ``--card-dir``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmode.models import compress, networks, registry
from mmode.models import motion_data as kdata
from mmode.models.train import FitSettings, _measured_card, _onnx_steps, _step, fit, kd_regression_loss, predict

TEACHER = "motion_keyframe_teacher"
STUDENT = "motion_keyframe_student"
#: The regression loss, for the teacher and both terms of the distillation: mean absolute
#: error. The target (the residual minus the pair's phase estimate, in units of that
#: estimate's noise) is near 0 for most pairs and a whole phase wrap for a few; the median it
#: fits keeps the output at 0 where the phase is right, where the mean squared error's mean
#: hedged towards the wraps and added several um of output noise to the trace
#: (docs/models.md, "Learned motion trace").
LOSS = F.l1_loss
#: Share of the student's channels pruned (in 3 steps): 0.15 leaves 4.8 % of the teacher's
#: parameters and 7.5 % of its MACs (within issue 14's 10 %); 0.3 (3.5 %, 5.6 %) added 3-5 um
#: of output noise to the trace on RF, where the unpruned student had little.
PRUNE_RATIO = 0.15


def pair_metrics(model: nn.Module, test: kdata.KeyframePairs) -> dict[str, Any]:
    """RMS error (m) of the residual over the held-out pairs: all, SNR <= 10 dB, per line-rate
    band (< 350, 350-1000, >= 1000 lines/s), RF and IQ; beside the lag-zero phase of the
    same pair (the classic fine estimate: the residual from the phase of
    ``sum conj(keyframe) current``, which wraps at a quarter wavelength)."""
    wl = test.wavelength_m
    truth = (test.y[:, 0] + test.base) * wl
    pred = (predict(model, test.x)[:, 0] * kdata.output_scale_wl(test.x) + test.base) * wl
    phase_m = test.base * wl

    def rmse(est: np.ndarray, mask: np.ndarray) -> float | None:
        return float(np.sqrt(np.mean((est[mask] - truth[mask]) ** 2))) if mask.any() else None

    masks = {"all": np.ones(len(truth), bool), "snr_le_10db": test.snr_db <= 10, "prf_lt_350": test.prf_hz < 350,
             "prf_350_1000": (test.prf_hz >= 350) & (test.prf_hz < 1000), "prf_ge_1000": test.prf_hz >= 1000,
             "rf": ~test.iq, "iq": test.iq}
    return {
        "rmse_m": rmse(pred, masks["all"]),
        "rmse_m_by": {k: rmse(pred, m) for k, m in masks.items()},
        "phase_rmse_m_by": {k: rmse(phase_m, m) for k, m in masks.items()},
        "residual_abs_m": dict(zip(("p50", "p90", "max"), np.percentile(np.abs(truth), [50, 90, 100]).tolist())),
        "n_test": int(len(truth)),
    }


def train_motion(out_dir: Path, n_recordings: int, seed: int = 0, epochs: int = 16, fine_tune_epochs: int = 4,
                 prune_ratio: float = PRUNE_RATIO, prune_steps: int = 3, workers: int = 1, pairs_per_recording: int | None = None,
                 student_epochs: int | None = None, batch_size: int = 1024,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Train, compress and save the motion teacher and student into ``out_dir``; their cards."""
    spec = kdata.KEYFRAME_SPEC
    ranges = dict(kdata.KEYFRAME_RANGES)
    if pairs_per_recording is not None:
        ranges["pairs_per_recording"] = pairs_per_recording
    student_epochs = epochs if student_epochs is None else student_epochs
    t0 = time.perf_counter()
    train = kdata.keyframe_dataset("train", n_recordings, seed, ranges, workers=workers)
    test = kdata.keyframe_dataset("test", max(4, n_recordings // 4), seed, ranges, workers=workers)
    log(f"keyframe pairs: {len(train.y)} train / {len(test.y)} test ({time.perf_counter() - t0:.0f} s)")
    example = torch.zeros(1, spec["channels"], spec["n_samples"])
    recipe_card = {"seed": seed, "train": train.recipe, "test": test.recipe, "epochs": epochs,
                   "student_epochs": student_epochs, "fine_tune_epochs": fine_tune_epochs, "batch_size": batch_size,
                   "loss": "l1 (mean absolute error) of the target over output_scale_wl, teacher and distillation",
                   "antisymmetric": True}
    # the target in the network's unit: the pair's phase noise
    train_y = (train.y / kdata.output_scale_wl(train.x)[:, None]).astype(np.float32)
    loss = lambda out, y, _x, _idx: LOSS(out, y)  # noqa: E731

    torch.manual_seed(seed)
    teacher = networks.build("motion_teacher", {**networks.DEFAULT_CONFIGS["motion_teacher"], "antisymmetric": True})
    fit(teacher, train.x, train_y, train.snr_db, loss, FitSettings(epochs=epochs, batch_size=batch_size, seed=seed))
    t_metrics = pair_metrics(teacher, test)
    log(f"teacher: residual rmse {t_metrics['rmse_m'] * 1e6:.2f} um ({time.perf_counter() - t0:.0f} s)")

    teacher_pred = torch.from_numpy(predict(teacher, train.x))
    torch.manual_seed(seed + 1)
    student = networks.build("motion_student", {**networks.DEFAULT_CONFIGS["motion_student"], "antisymmetric": True})
    fit(student, train.x, train_y, train.snr_db, kd_regression_loss(teacher_pred, 0.5, LOSS),
        FitSettings(epochs=student_epochs, batch_size=batch_size, seed=seed + 1))
    s_metrics = pair_metrics(student, test)
    steps = [_step("distill_into_compact_student", student, example, _flat(s_metrics), True, alpha=0.5)]
    log(f"student (distilled): residual rmse {s_metrics['rmse_m'] * 1e6:.2f} um")
    fine = FitSettings(epochs=fine_tune_epochs, batch_size=batch_size, lr=1e-3, curriculum_epochs=0, seed=seed + 2)
    compress.prune_structured(
        student, example, prune_ratio, importance="magnitude", steps=prune_steps, ignored_layers=[student.head],
        fine_tune=lambda m, _s: fit(m, train.x, train_y, train.snr_db, kd_regression_loss(teacher_pred, 0.5, LOSS), fine),
    )
    s_metrics = pair_metrics(student, test)
    steps.append(_step("structured_channel_pruning", student, example, _flat(s_metrics), True,
                       importance="group_magnitude_l2", ratio=prune_ratio, iterative_steps=prune_steps,
                       fine_tune="distillation"))
    log(f"student (pruned): residual rmse {s_metrics['rmse_m'] * 1e6:.2f} um ({time.perf_counter() - t0:.0f} s)")
    test_scale = kdata.output_scale_wl(test.x)
    with tempfile.TemporaryDirectory() as tmp:
        steps.extend(_onnx_steps(student, [test.x], lambda outs: {
            "rmse_m": float(np.sqrt(np.mean(((outs[0][:, 0] * test_scale - test.y[:, 0]) * test.wavelength_m) ** 2)))},
            example, Path(tmp)))
    common = {"task": "motion", "classes": None, "input": spec, "data": recipe_card}
    cards = [
        _measured_card(teacher, example, {**common, "name": TEACHER, "teacher": None,
                                          "metrics": t_metrics, "steps": []}),
        _measured_card(student, example, {**common, "name": STUDENT, "teacher": TEACHER,
                                          "metrics": s_metrics, "steps": steps}),
    ]
    for model, card in zip((teacher, student), cards):
        registry.save_model(model, card, Path(out_dir))
    return [registry.load_card(c["name"], Path(out_dir)) for c in cards]


def _flat(metrics: dict) -> dict:
    """The scalar metrics of :func:`pair_metrics` for a compression step's record."""
    return {"rmse_m": metrics["rmse_m"], "rmse_m_snr_le_10db": metrics["rmse_m_by"]["snr_le_10db"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--recordings", type=int, default=96)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--student-epochs", type=int, default=None)
    p.add_argument("--pairs", type=int, default=None, help="pairs per recording (default: the ranges')")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--fine-tune-epochs", type=int, default=4)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cards = train_motion(args.out, args.recordings, args.seed, args.epochs, args.fine_tune_epochs,
                         workers=args.workers, pairs_per_recording=args.pairs, student_epochs=args.student_epochs,
                         batch_size=args.batch_size)
    print(json.dumps([{k: c[k] for k in ("name", "params", "macs", "latency_ms")} for c in cards]))


if __name__ == "__main__":
    main()
