"""Training loops and the full teacher -> distilled, pruned student recipe.

:func:`train_all` reproduces every shipped model from one seed: it generates the data sets
(:mod:`mmode.models.data`), trains each teacher, distils a compact student from it with an
easy-to-hard SNR curriculum, prunes the student's channels iteratively with distillation
fine-tuning, measures each compression step (unstructured pruning, low-rank, int8, ONNX)
and writes weights and model cards.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmode.errors import DataError, describe
from mmode.ingest.meta import CLASSES
from mmode.models import compress, data as mdata, networks, pair_data, registry
from mmode.models.distill import distillation_loss, regression_distillation_loss
from mmode.models.metrics import (EVAL_WINDOWS_S, classifier_report, classifier_test_windows, f1_scores, motion_metrics,
                                  predict)


# -- training helpers --------------------------------------------------------------------
def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (n_classes * count_c)`` (0 for absent classes), (n_classes,)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def curriculum_indices(snr_db: np.ndarray, epoch: int, curriculum_epochs: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffled sample indices for ``epoch``: easy-to-hard by SNR.

    During the first ``curriculum_epochs`` epochs only the highest-SNR fraction
    ``(epoch + 1) / (curriculum_epochs + 1)`` of the samples is used; afterwards all of them.
    """
    n = len(snr_db)
    if epoch >= curriculum_epochs:
        return rng.permutation(n)
    keep = max(1, int(math.ceil(n * (epoch + 1) / (curriculum_epochs + 1))))
    easiest = np.argsort(-np.asarray(snr_db), kind="stable")[:keep]
    return rng.permutation(easiest)


# -- loops ---------------------------------------------------------------------------------
#: A training batch: (inputs (B, ...), targets (B,) or (B, 1), sample or recording indices (B,)).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: ``loss_fn(outputs, targets, inputs, indices)`` -> scalar loss of a batch.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

@dataclass(frozen=True)
class FitSettings:
    """Optimisation settings: epochs, batch size, Adam learning rate (cosine decay),
    weight decay, curriculum epochs, distillation temperature and alpha, seed."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    curriculum_epochs: int = 2
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0


def _train(model: nn.Module, epoch_batches: Callable[[int, np.random.Generator, torch.Generator], Iterator[Batch]],
           n_steps: int, loss_fn: LossFn, settings: FitSettings) -> list[float]:
    """AdamW with a one-cycle learning rate over ``n_steps`` steps; ``epoch_batches(epoch,
    rng, generator)`` yields the (inputs, targets, sample indices) batches of each epoch.
    Returns the mean loss of every epoch."""
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=max(n_steps, 1))
    history = []
    model.train()
    for epoch in range(settings.epochs):
        total, count = 0.0, 0
        for xb, yb, idx in epoch_batches(epoch, rng, gen):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb, xb, idx)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
        history.append(total / max(count, 1))
    model.eval()
    return history


def fit(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    snr_db: np.ndarray,
    loss_fn: LossFn,
    settings: FitSettings,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> list[float]:
    """Train ``model`` on fixed samples (x, y) minimising ``loss_fn(outputs, y_batch, x_batch,
    batch_indices)``.

    x : (N, ...) float32 inputs; y : (N,) int64 labels or (N, 1) float32 targets;
    snr_db : (N,) per-sample SNR for the curriculum; ``augment(x_batch, generator)``
    (optional) transforms each training batch. Returns the mean loss of every epoch.
    """
    if len(x) == 0:
        raise DataError(describe("training data", "at least one sample", 0))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def epoch_batches(epoch: int, rng: np.random.Generator, gen: torch.Generator) -> Iterator[Batch]:
        idx = curriculum_indices(snr_db, epoch, settings.curriculum_epochs, rng)
        for i in range(0, len(idx), settings.batch_size):
            b = torch.from_numpy(idx[i : i + settings.batch_size])
            if len(b) < 2:  # batch norm needs two samples
                continue
            yield (xt[b] if augment is None else augment(xt[b], gen)), yt[b], b

    rng = np.random.default_rng(settings.seed)
    n_steps = sum(len(range(0, len(curriculum_indices(snr_db, e, settings.curriculum_epochs, rng)), settings.batch_size))
                  for e in range(settings.epochs))
    return _train(model, epoch_batches, n_steps, loss_fn, settings)


def fit_windows(
    model: nn.Module,
    data: "mdata.ClassifierData",
    loss_fn: LossFn,
    settings: FitSettings,
    crops_per_recording: int,
    spec: dict = mdata.CLASSIFIER_SPEC,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> list[float]:
    """Train a classifier on windows of random length cut afresh every epoch from the
    recordings of ``data`` (:meth:`~mmode.models.data.ClassifierData.crops`).

    Each epoch visits every recording ``crops_per_recording`` times (the SNR curriculum
    choosing the recordings in the first ``settings.curriculum_epochs`` epochs); each batch
    has one length, drawn log-uniformly from the spec's column range (as many batches per
    doubling of the length: short windows, the harder ones, come more often than under a
    uniform draw), and one window per recording at a random start whose majority label
    covers at least ``min_label_purity``.
    ``loss_fn(outputs, y_batch, x_batch, recordings)``. Returns the mean loss of every epoch.
    """
    if data.n_recordings == 0:
        raise DataError(describe("training data", "at least one recording", 0))
    lo, hi = mdata.column_range(spec)

    def recordings(epoch: int, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([curriculum_indices(data.snr_db, epoch, settings.curriculum_epochs, rng)
                               for _ in range(crops_per_recording)])

    def epoch_batches(epoch: int, rng: np.random.Generator, gen: torch.Generator) -> Iterator[Batch]:
        recs = recordings(epoch, rng)
        for i in range(0, len(recs), settings.batch_size):
            n_columns = min(int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1)))), hi)
            x, y, used = data.crops(recs[i : i + settings.batch_size], n_columns, rng, spec["min_label_purity"])
            if len(y) < 2:  # batch norm needs two samples
                continue
            xb = torch.from_numpy(x)
            yield (xb if augment is None else augment(xb, gen)), torch.from_numpy(y), torch.from_numpy(used)

    rng = np.random.default_rng(settings.seed)
    n_steps = sum(len(range(0, len(recordings(e, rng)), settings.batch_size)) for e in range(settings.epochs))
    return _train(model, epoch_batches, n_steps, loss_fn, settings)


def augment_windows(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Classifier augmentation of a batch (N, 1, n_time, n_depth), per window at random:

    - reverse slow time (half of the windows): every class keeps its meaning backwards in
      time (texture, periodicity, irregularity, alternation);
    - depth zoom: keep a random 75-100 % of the depth range (from the top, where the probe
      is) and stretch it back to n_depth rows, as a shallower imaging depth would show it;
    - contrast: scale by 0.8-1.2.
    """
    n, _, n_time, n_depth = x.shape
    out = x.clone()
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = torch.flip(out[flip], dims=(2,))
    keep = (n_depth * (0.75 + 0.25 * torch.rand(n, generator=gen))).long().clamp(8, n_depth)
    for i in torch.nonzero(keep < n_depth).flatten().tolist():
        crop = out[i : i + 1, :, :, : int(keep[i])]
        out[i : i + 1] = F.interpolate(crop, size=(n_time, n_depth), mode="bilinear", align_corners=False)
    return out * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen))


def classification_loss(weights: torch.Tensor) -> LossFn:
    """Weighted cross-entropy ``loss_fn`` for :func:`fit` / :func:`fit_windows`."""
    return lambda out, y, _x, _idx: F.cross_entropy(out, y, weight=weights)


def kd_window_loss(teacher: nn.Module, weights: torch.Tensor, settings: FitSettings) -> LossFn:
    """Distillation ``loss_fn`` for :func:`fit_windows`: the teacher (eval mode, no gradient)
    classifies the same (augmented) batch the student sees."""
    teacher.eval()

    def loss(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor, _idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        return distillation_loss(out, teacher_logits, y, settings.temperature, settings.alpha, weights)

    return loss


def kd_regression_loss(teacher_pred: torch.Tensor, alpha: float, loss=F.mse_loss) -> LossFn:
    """Regression distillation ``loss_fn`` for :func:`fit`; ``teacher_pred`` (N, 1) precomputed;
    ``loss`` of :func:`regression_distillation_loss`."""
    return lambda out, y, _x, idx: regression_distillation_loss(out, teacher_pred[idx], y, alpha, loss)


# -- the full recipe -----------------------------------------------------------------------
#: Random-length windows cut from each training recording per epoch (:func:`fit_windows`);
#: every simulated recording is in the training set twice, in each look (:data:`mdata.LOOKS`).
CROPS_PER_RECORDING = 2


@dataclass(frozen=True)
class Recipe:
    """Sizes of one ``mmode train`` run. ``full`` builds the shipped models (minutes on a
    CPU); ``smoke`` is the seconds-long version the tests run."""

    n_train_recordings: int
    n_test_recordings: int
    n_motion_recordings: int
    teacher_epochs: int
    student_epochs: int
    motion_epochs: int
    prune_ratio: float
    prune_steps: int
    fine_tune_epochs: int
    recording_s: tuple[float, float]
    motion_prune_ratio: float
    motion_fine_tune_epochs: int
    crops_per_recording: int

    n_cine_train_recordings: int
    n_cine_test_recordings: int

    @classmethod
    def named(cls, name: str) -> "Recipe":
        if name == "full":
            return cls(700, 140, 24, 30, 60, 16, 0.25, 3, 12, (8.0, 11.0), 0.3, 4, CROPS_PER_RECORDING, 630, 70)
        if name == "smoke":
            return cls(3, 2, 1, 1, 1, 1, 0.3, 1, 1, (7.0, 7.5), 0.3, 1, 1, 4, 4)
        raise DataError(describe("training recipe", "'full' or 'smoke'", repr(name)))


def _step(name: str, model: nn.Module, example: torch.Tensor, metrics: dict, applied: bool, **extra: Any) -> dict:
    """One compression step's record: params, MACs, batch-1 latency and metrics after it
    (a classifier's macro-F1 per window length as ``macro_f1_by_window_s``)."""
    c = compress.costs(model, example)
    lat = {"latency_ms": round(compress.latency_ms(model, example), 4)}
    kept = {k: metrics[k] for k in metrics if k not in ("per_class_f1", "by_length", "confusion", "scanner", "cine")}
    if "by_length" in metrics:
        kept["macro_f1_by_window_s"] = {f"{m['window_s']:g}": m["macro_f1"] for m in metrics["by_length"]}
    for look in ("scanner", "cine"):
        if look in metrics:
            kept[f"{look}_macro_f1_by_window_s"] = {f"{m['window_s']:g}": m["macro_f1"] for m in metrics[look]["by_length"]}
    return {"step": name, "applied": applied, **c, **lat, **kept, **extra}


def _measured_card(model: nn.Module, example: torch.Tensor, card: dict[str, Any]) -> dict[str, Any]:
    c = compress.costs(model, example)
    return {**card, **c, "latency_ms": round(compress.latency_ms(model, example), 4)}


def _classifier_onnx_metric(model: nn.Module, tests: dict[float, "mdata.ClassifierWindows"]) -> Callable[[list[np.ndarray]], dict]:
    """``metric(outputs per length)`` for :func:`_onnx_steps`: macro-F1 at the longest window,
    per length, and the share of windows where the export decides as ``model`` does."""
    ref_pred = [predict(model, t.x).argmax(axis=1) for t in tests.values()]
    longest = int(np.argmax(list(tests)))

    def metric(outs: list[np.ndarray]) -> dict:
        f1 = [round(f1_scores(t.y, o.argmax(axis=1), len(CLASSES))[0], 4) for t, o in zip(tests.values(), outs)]
        agree = np.concatenate([o.argmax(axis=1) == r for o, r in zip(outs, ref_pred)])
        return {"macro_f1": f1[longest], "macro_f1_by_window_s": {f"{w:g}": f for w, f in zip(tests, f1)},
                "decision_agreement": float(np.mean(agree))}

    return metric


def _classifier_steps(student: nn.Module, tests: dict[float, "mdata.ClassifierWindows"], example: torch.Tensor,
                      workdir: Path) -> list[dict]:
    """Measured, not-applied compression steps on the final classifier student."""
    steps = []
    sparse = copy.deepcopy(student)
    stats = compress.prune_unstructured(sparse, 0.5)
    steps.append(_step("unstructured_magnitude_50", sparse, example, classifier_report(sparse, tests), False,
                       sparsity=round(stats["total"], 4), nonzero_weights=stats["nonzero"]))
    low, ranks = compress.factorize_low_rank(student, energy=0.9)
    steps.append(_step("low_rank_svd_0.9", low, example, classifier_report(low, tests), False, ranks=ranks))
    steps.extend(_onnx_steps(student, [t.x for t in tests.values()], _classifier_onnx_metric(student, tests),
                             example, workdir, variable_axes=(0, 2)))
    return steps


def _onnx_steps(model: nn.Module, inputs: list[np.ndarray], metric: Callable[[list[np.ndarray]], dict],
                example: torch.Tensor, workdir: Path, variable_axes: tuple[int, ...] = (0,)) -> list[dict]:
    """ONNX float32 and ONNX Runtime int8 exports (``variable_axes`` of the input left
    dynamic): largest difference from PyTorch over the test ``inputs``, ``metric(outputs per
    input)``, file size and latency on ``example``."""
    refs = [predict(model, x) for x in inputs]
    onnx_path = compress.export_onnx(model, example, workdir / "model.onnx", variable_axes)
    q_path = compress.quantize_onnx_int8(onnx_path, workdir / "model_int8.onnx")
    steps = []
    for name, path in (("onnx_float32", onnx_path), ("onnx_int8_dynamic", q_path)):
        outs = [compress.run_onnx(path, x) for x in inputs]
        steps.append({
            "step": name,
            "applied": False,
            "max_abs_diff_vs_torch": max(float(np.max(np.abs(o - r))) for o, r in zip(outs, refs)),
            **metric(outs),
            "file_bytes": path.stat().st_size,
            "latency_ms": round(compress.onnx_latency_ms(path, example.numpy()), 4),
        })
    return steps


def classifier_sets(recipe: Recipe, seed: int, log: Callable[[str], None]) -> tuple:
    """(train data, rf test data, and the rf, scanner and cine test windows by length) of a
    recipe: training holds every simulated recording in the rf and scanner looks and the
    recipe's simulated lung cines (:data:`mdata.LOOKS`)."""
    spec = mdata.CLASSIFIER_SPEC
    ranges = {**mdata.CLASSIFIER_RANGES, "seconds": list(recipe.recording_s)}
    count = {"train": {"rf": recipe.n_train_recordings, "scanner": recipe.n_train_recordings,
                       "cine": recipe.n_cine_train_recordings},
             "test": {"rf": recipe.n_test_recordings, "scanner": recipe.n_test_recordings,
                      "cine": recipe.n_cine_test_recordings}}
    train = mdata.concatenate([mdata.classifier_dataset("train", count["train"][look], seed, ranges, look=look)
                               for look in mdata.LOOKS])
    test = mdata.classifier_dataset("test", recipe.n_test_recordings, seed, ranges)
    tests = {look: classifier_test_windows(
        test if look == "rf" else mdata.classifier_dataset("test", count["test"][look], seed, ranges, look=look), spec)
        for look in mdata.LOOKS}
    log(f"classifier data: {train.n_recordings} train recordings ({len(train.columns)} columns, all looks), "
        + "; ".join(f"{look} test: " + ", ".join(f"{len(t.y)} windows of {w:g} s" for w, t in tests[look].items())
                    for look in mdata.LOOKS))
    return train, test, tests["rf"], tests["scanner"], tests["cine"]


def train_classifiers(recipe: Recipe, seed: int, log: Callable[[str], None]) -> list[tuple[nn.Module, dict]]:
    """(model, card) for the classifier teacher and its distilled, pruned student, trained on
    windows of random length (:func:`fit_windows`) of every simulated recording in both looks
    (the product's display and a scanner's image of it) and scored per length and look."""
    spec = mdata.CLASSIFIER_SPEC
    train, test, tests, scanner_tests, cine_tests = classifier_sets(recipe, seed, log)
    lo, hi = mdata.column_range(spec)
    example = torch.zeros(1, 1, hi, spec["n_depth"])
    shortest = torch.zeros(1, 1, lo, spec["n_depth"])
    weights = class_weights(train.label_counts.argmax(axis=1), len(CLASSES))
    n_classes = len(CLASSES)
    crops = recipe.crops_per_recording
    recipe_card = {"seed": seed, "train": train.recipe, "test": test.recipe, "crops_per_recording": crops,
                   "window_columns": [lo, hi], "eval_windows_s": list(EVAL_WINDOWS_S)}

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    teacher = networks.build("classifier_teacher", {**networks.DEFAULT_CONFIGS["classifier_teacher"], "n_classes": n_classes})
    fit_windows(teacher, train, classification_loss(weights), FitSettings(epochs=recipe.teacher_epochs, seed=seed),
                crops, spec, augment_windows)
    t_metrics = classifier_report(teacher, tests, scanner_tests, cine_tests)
    log(f"teacher: macro_f1 {_by_length(t_metrics)} ({time.perf_counter() - t0:.0f} s)")

    kd = FitSettings(epochs=recipe.student_epochs, seed=seed + 1)
    t0 = time.perf_counter()
    torch.manual_seed(seed + 1)
    student = networks.build("classifier_student", {**networks.DEFAULT_CONFIGS["classifier_student"], "n_classes": n_classes})
    fit_windows(student, train, kd_window_loss(teacher, weights, kd), kd, crops, spec, augment_windows)
    s_metrics = classifier_report(student, tests, scanner_tests, cine_tests)
    steps = [_step("distill_into_compact_student", student, example, s_metrics, True,
                   temperature=kd.temperature, alpha=kd.alpha, curriculum_epochs=kd.curriculum_epochs)]
    log(f"student (distilled): macro_f1 {_by_length(s_metrics)} ({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    fine = FitSettings(epochs=recipe.fine_tune_epochs, lr=1e-3, curriculum_epochs=0, seed=seed + 2)
    compress.prune_structured(
        student, example, recipe.prune_ratio, importance="magnitude", steps=recipe.prune_steps,
        ignored_layers=[student.head],
        fine_tune=lambda m, _s: fit_windows(m, train, kd_window_loss(teacher, weights, fine), fine, crops, spec,
                                            augment_windows),
    )
    p_metrics = classifier_report(student, tests, scanner_tests, cine_tests)
    steps.append(_step("structured_channel_pruning", student, example, p_metrics, True,
                       importance="group_magnitude_l2", ratio=recipe.prune_ratio, iterative_steps=recipe.prune_steps,
                       fine_tune="distillation"))
    log(f"student (pruned): macro_f1 {_by_length(p_metrics)} ({time.perf_counter() - t0:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        steps.extend(_classifier_steps(student, tests, example, Path(tmp)))

    common = {"task": "classify", "classes": list(CLASSES), "input": spec, "data": recipe_card,
              "cost_reference": f"one window of {hi} columns ({spec['max_window_s']:g} s) x {spec['n_depth']} depth bins"}
    lung_point = ("lung_point alternates sliding and no sliding with breathing (3-5 s per cycle); a window "
                  "shorter than a cycle may hold one phase only. Held-out test split, ")
    t_card = _measured_card(teacher, example, {**common, "name": "classifier_teacher", "teacher": None,
                                               "metrics": t_metrics, "steps": [],
                                               "macs_shortest_window": compress.costs(teacher, shortest)["macs"],
                                               "notes": [lung_point + confusion_note(t_metrics, "lung_point")]})
    s_card = _measured_card(student, example, {**common, "name": "classifier_student", "teacher": "classifier_teacher",
                                               "metrics": p_metrics, "steps": steps,
                                               "macs_shortest_window": compress.costs(student, shortest)["macs"],
                                               "notes": [lung_point + confusion_note(p_metrics, "lung_point")]})
    return [(teacher, t_card), (student, s_card)]


def confusion_note(metrics: dict, name: str) -> str:
    """One plain sentence per window length on class ``name`` from :func:`classifier_report`:
    its F1, what its windows were called, and which other windows were called ``name``."""
    k = CLASSES.index(name)
    parts = []
    for m in metrics["by_length"]:
        conf = np.asarray(m["confusion"])
        called = ", ".join(f"{int(conf[k, j])} {CLASSES[j]}" for j in np.argsort(-conf[k]) if conf[k, j] and j != k)
        taken = ", ".join(f"{int(conf[i, k])} {CLASSES[i]}" for i in np.argsort(-conf[:, k]) if conf[i, k] and i != k)
        parts.append(f"{m['window_s']:g} s windows: F1 {m['per_class_f1'][name]:.3f}, {int(conf[k, k])} of "
                     f"{int(conf[k].sum())} {name} windows right" + (f" (called {called})" if called else "")
                     + (f", other windows called {name}: {taken}" if taken else ""))
    return "; ".join(parts)


def _by_length(metrics: dict) -> str:
    """"2.25 s 0.912, 3 s 0.94, ...; scanner 2.25 s 0.85, ..." from :func:`classifier_report`."""
    text = ", ".join(f"{m['window_s']:g} s {m['macro_f1']:.3f}" for m in metrics["by_length"])
    return text + (f"; scanner {_by_length(metrics['scanner'])}" if "scanner" in metrics else "")


def train_motion(recipe: Recipe, seed: int, log: Callable[[str], None]) -> list[tuple[nn.Module, dict]]:
    """(model, card) for the motion teacher and its distilled, pruned student."""
    spec = mdata.MOTION_SPEC
    train = pair_data.motion_dataset("train", recipe.n_motion_recordings, seed)
    test = pair_data.motion_dataset("test", max(1, recipe.n_motion_recordings // 3), seed)
    log(f"motion data: {len(train.y)} train / {len(test.y)} test pairs")
    example = torch.zeros(1, spec["channels"], spec["n_samples"])
    recipe_card = {"seed": seed, "train": train.recipe, "test": test.recipe}
    mse = lambda out, y, _x, _idx: F.mse_loss(out, y)  # noqa: E731

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    teacher = networks.build("motion_teacher", networks.DEFAULT_CONFIGS["motion_teacher"])
    fit(teacher, train.x, train.y, train.snr_db, mse, FitSettings(epochs=recipe.motion_epochs, batch_size=256, seed=seed))
    t_metrics = motion_metrics(teacher, test)
    log(f"motion teacher: rmse {t_metrics['rmse_m']:.3g} m ({time.perf_counter() - t0:.0f} s)")

    teacher_pred = torch.from_numpy(predict(teacher, train.x))
    kd = FitSettings(epochs=recipe.motion_epochs, batch_size=256, seed=seed + 1)
    torch.manual_seed(seed + 1)
    student = networks.build("motion_student", networks.DEFAULT_CONFIGS["motion_student"])
    fit(student, train.x, train.y, train.snr_db, kd_regression_loss(teacher_pred, 0.5), kd)
    s_metrics = motion_metrics(student, test)
    steps = [_step("distill_into_compact_student", student, example, s_metrics, True, alpha=0.5)]
    log(f"motion student (distilled): rmse {s_metrics['rmse_m']:.3g} m")
    fine = FitSettings(epochs=recipe.motion_fine_tune_epochs, batch_size=256, lr=1e-3, curriculum_epochs=0, seed=seed + 2)
    compress.prune_structured(
        student, example, recipe.motion_prune_ratio, importance="magnitude", steps=recipe.prune_steps,
        ignored_layers=[student.head],
        fine_tune=lambda m, _s: fit(m, train.x, train.y, train.snr_db, kd_regression_loss(teacher_pred, 0.5), fine),
    )
    s_metrics = motion_metrics(student, test)
    steps.append(_step("structured_channel_pruning", student, example, s_metrics, True,
                       importance="group_magnitude_l2", ratio=recipe.motion_prune_ratio,
                       iterative_steps=recipe.prune_steps, fine_tune="distillation"))
    log(f"motion student (pruned): rmse {s_metrics['rmse_m']:.3g} m")
    with tempfile.TemporaryDirectory() as tmp:
        steps.extend(_onnx_steps(student, [test.x], lambda outs: {
            "rmse_m": float(np.sqrt(np.mean(((outs[0][:, 0] - test.y[:, 0]) * test.wavelength_m) ** 2)))}, example, Path(tmp)))

    common = {"task": "motion", "classes": None, "input": spec, "data": recipe_card}
    t_card = _measured_card(teacher, example, {**common, "name": "motion_teacher", "teacher": None,
                                               "metrics": t_metrics, "steps": []})
    s_card = _measured_card(student, example, {**common, "name": "motion_student", "teacher": "motion_teacher",
                                               "metrics": s_metrics, "steps": steps})
    return [(teacher, t_card), (student, s_card)]


def train_all(out_dir: Path, seed: int = 0, recipe: str = "full", tasks: tuple[str, ...] = ("classify", "motion"),
              threads: int = 2, log: Callable[[str], None] = print, fine_tune_from: Path | None = None) -> list[dict]:
    """Train every model of ``tasks`` with ``recipe`` from ``seed``; write weights and cards
    into ``out_dir``; return the cards. With ``fine_tune_from`` (a weights folder), the
    classifiers are fine-tuned from the ones there (:mod:`mmode.models.finetune`)."""
    torch.set_num_threads(threads)
    r = Recipe.named(recipe)
    cards = []
    for task in tasks:
        if task == "classify" and fine_tune_from is not None:
            from mmode.models.finetune import fine_tune_classifiers

            pairs = fine_tune_classifiers(r, seed, log, Path(fine_tune_from))
        elif task == "classify":
            pairs = train_classifiers(r, seed, log)
        elif task == "motion":
            pairs = train_motion(r, seed, log)
        else:
            raise DataError(describe("training task", "'classify' or 'motion'", repr(task)))
        for model, card in pairs:
            registry.save_model(model, card, Path(out_dir))
            cards.append(registry.load_card(card["name"], Path(out_dir)))
    (Path(out_dir) / "train_report.json").write_text(json.dumps(cards, indent=2) + "\n")
    return cards
