"""``mmode compress``: each compression step applied to a shipped model, and its effect measured.

The primitives (pruning, low rank, ONNX, int8) are :mod:`mmode.models.compress`; this is the
recipe the command runs on held-out simulated data, with the training helpers of
:mod:`mmode.models.train`.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmode.ingest.meta import CLASSES
from mmode.models import compress, data as mdata, pair_data, registry
from mmode.models.metrics import classifier_report, classifier_test_windows, motion_metrics, predict
from mmode.models.train import (CROPS_PER_RECORDING, FitSettings, _classifier_onnx_metric, _measured_card, _onnx_steps,
                                _step, augment_windows, class_weights, fit, fit_windows, kd_regression_loss,
                                kd_window_loss)


def compress_model(
    name: str,
    *,
    prune_ratio: float = 0.3,
    importance: str = "magnitude",
    prune_steps: int = 1,
    fine_tune_epochs: int = 0,
    sparsity: float = 0.5,
    low_rank_energy: float = 0.9,
    n_recordings: int = 14,
    seed: int = 0,
    out_dir: Path | None = None,
    out_name: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Apply each compression step to shipped model ``name`` and measure its effect.

    Test data: ``n_recordings`` freshly simulated validation-split recordings (seeds never
    used for training; a classifier is scored at every length of :data:`EVAL_WINDOWS_S`). Steps: structured channel pruning (``prune_ratio`` with
    ``importance`` in ``prune_steps`` steps; with ``fine_tune_epochs`` > 0, distillation
    fine-tuning from the model's teacher on as many training-split recordings), then on
    copies of the pruned network: unstructured magnitude pruning at ``sparsity``, low-rank
    factorisation keeping ``low_rank_energy``, ONNX float32 and ONNX Runtime int8. With
    ``out_dir`` the pruned network is saved as ``out_name`` (weights + card) together with
    its ``.onnx`` and ``_int8.onnx`` exports. Returns {"model", "baseline", "steps"}.
    """
    model, card = registry.load_model(name)
    spec = card["input"]
    classify = card["task"] == "classify"
    if classify:
        tests = classifier_test_windows(mdata.classifier_dataset("val", n_recordings, seed, spec=spec), spec)
        test = tests[max(tests)]  # the longest windows: Taylor importance
        example = torch.zeros(1, 1, mdata.column_range(spec)[1], spec["n_depth"])
        metrics = lambda m: classifier_report(m, tests)  # noqa: E731
        onnx_inputs, variable_axes = [t.x for t in tests.values()], (0, 2)
    else:
        test = pair_data.motion_dataset("val", n_recordings, seed)
        example = torch.zeros(1, spec["channels"], spec["n_samples"])
        metrics = lambda m: motion_metrics(m, test)  # noqa: E731
        onnx_inputs, variable_axes = [test.x], (0,)
        out_metric = lambda outs: {  # noqa: E731
            "rmse_m": float(np.sqrt(np.mean(((outs[0][:, 0] - test.y[:, 0]) * test.wavelength_m) ** 2)))}
    baseline = _step("baseline", model, example, metrics(model), False)
    log(f"{name}: {baseline['params']} params, {baseline['macs']} MACs")
    steps = []
    pruned_metrics = card["metrics"]
    if prune_ratio > 0:
        fine_tune = None
        if fine_tune_epochs > 0 and card["teacher"]:
            teacher, _ = registry.load_model(card["teacher"])
            settings = FitSettings(epochs=fine_tune_epochs, lr=1e-3, curriculum_epochs=0, seed=seed)
            if classify:
                windows = mdata.classifier_dataset("train", n_recordings, seed, spec=spec)
                loss = kd_window_loss(teacher, class_weights(windows.label_counts.argmax(axis=1), len(CLASSES)), settings)
                fine_tune = lambda m, _s: fit_windows(m, windows, loss, settings, CROPS_PER_RECORDING, spec,  # noqa: E731
                                                      augment_windows)
            else:
                train = pair_data.motion_dataset("train", n_recordings, seed)
                loss = kd_regression_loss(torch.from_numpy(predict(teacher, train.x)), 0.5)
                fine_tune = lambda m, _s: fit(m, train.x, train.y, train.snr_db, loss, settings)  # noqa: E731
        compress.prune_structured(model, example, prune_ratio, importance=importance, steps=prune_steps,
                                  ignored_layers=[model.head], fine_tune=fine_tune,
                                  taylor_loss=lambda m: _taylor_loss(m, test, classify))
        pruned_metrics = metrics(model)
        steps.append(_step("structured_channel_pruning", model, example, pruned_metrics, True, importance=importance,
                           ratio=prune_ratio, iterative_steps=prune_steps, fine_tune_epochs=fine_tune_epochs))
        log(f"pruned: {steps[-1]['params']} params")
    if sparsity > 0:
        sparse = copy.deepcopy(model)
        stats = compress.prune_unstructured(sparse, sparsity)
        steps.append(_step("unstructured_magnitude", sparse, example, metrics(sparse), False,
                           sparsity=round(stats["total"], 4), nonzero_weights=stats["nonzero"]))
    if low_rank_energy < 1:
        low, ranks = compress.factorize_low_rank(model, low_rank_energy)
        steps.append(_step("low_rank_svd", low, example, metrics(low), False, energy=low_rank_energy, ranks=ranks))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(out_dir) if out_dir is not None else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if classify:
            out_metric = _classifier_onnx_metric(model, tests)
        steps.extend(_onnx_steps(model, onnx_inputs, out_metric, example, workdir, variable_axes))
        if out_dir is not None:
            new_name = out_name or f"{name}_compressed"
            (workdir / "model.onnx").replace(workdir / f"{new_name}.onnx")
            (workdir / "model_int8.onnx").replace(workdir / f"{new_name}_int8.onnx")
            new_card = {**card, "name": new_name, "metrics": pruned_metrics,
                        "steps": list(card["steps"]) + steps}
            registry.save_model(model, _measured_card(model, example, new_card), workdir)
    return {"model": name, "baseline": baseline, "steps": steps}


def _taylor_loss(model: nn.Module, test: Any, classify: bool) -> torch.Tensor:
    """Loss on (up to 256) held-out samples whose gradient ranks channels for Taylor importance."""
    x, y = torch.from_numpy(test.x[:256]), torch.from_numpy(test.y[:256])
    model.eval()
    out = model(x)
    return F.cross_entropy(out, y) if classify else F.mse_loss(out, y)
