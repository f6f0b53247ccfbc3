"""Fine-tune the shipped classifiers on every look, the simulated lung cines included.

``mmode train --task classify --fine-tune`` starts from the classifier teacher and student in
a weights folder (the shipped ones by default) instead of from scratch: the teacher is
trained further with the weighted cross-entropy, then the (already distilled and pruned)
student is distilled again from it, both on random-length windows of every training
recording in the rf, scanner and cine looks (:func:`mmode.models.train.classifier_sets`),
with a lower learning rate and no curriculum, on the cines and a share of the rf and scanner
recordings (:data:`FINE_TUNE`). The student keeps its pruned channels, so its
cost is unchanged. The cards keep their compression steps and gain a ``fine_tune`` step
with the new held-out figures per look.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from torch import nn

from mmode.ingest.meta import CLASSES
from mmode.models import compress, registry
from mmode.models import data as mdata
from mmode.models.metrics import classifier_report
from mmode.models.train import (FitSettings, Recipe, augment_windows, class_weights, classification_loss,
                                classifier_sets, confusion_note, fit_windows, kd_window_loss, _by_length,
                                _measured_card, _step)

#: The fine-tuning: epochs, peak learning rate (a third of ``FitSettings.lr``), and how many
#: of the recipe's rf and scanner training recordings join the cines (420 of 700 each, so
#: that an epoch costs minutes on two CPU cores; with 140 the student's rf-path macro-F1
#: fell from 0.919 to 0.882 at 2.25 s, docs/models.md).
FINE_TUNE = {"teacher_epochs": 2, "student_epochs": 6, "lr": 1e-3, "n_train_recordings": 420}


def fine_tune_classifiers(recipe: Recipe, seed: int, log: Callable[[str], None],
                          start_dir: Path | None = None,
                          settings: dict = FINE_TUNE) -> list[tuple[nn.Module, dict]]:
    """(model, card) of the classifier teacher and student of ``start_dir`` (None: the
    shipped weights) fine-tuned on :func:`classifier_sets` of ``recipe`` (module docstring)."""
    spec = mdata.CLASSIFIER_SPEC
    subset = dataclasses.replace(recipe, n_train_recordings=min(recipe.n_train_recordings, settings["n_train_recordings"]))
    train, test, tests, scanner_tests, cine_tests = classifier_sets(subset, seed, log)
    teacher, t_card = registry.load_model("classifier_teacher", start_dir)
    student, s_card = registry.load_model("classifier_student", start_dir)
    weights = class_weights(train.label_counts.argmax(axis=1), len(CLASSES))
    crops = recipe.crops_per_recording
    lo, hi = mdata.column_range(spec)
    import torch

    example = torch.zeros(1, 1, hi, spec["n_depth"])
    before = {"classifier_teacher": classifier_report(teacher, tests, scanner_tests, cine_tests),
              "classifier_student": classifier_report(student, tests, scanner_tests, cine_tests)}
    for name, m in before.items():
        log(f"{name} before fine-tuning: macro_f1 {_by_length(m)}; cine {_by_length(m['cine'])}")

    t0 = time.perf_counter()
    t_fit = FitSettings(epochs=settings["teacher_epochs"], lr=settings["lr"], curriculum_epochs=0, seed=seed + 3)
    fit_windows(teacher, train, classification_loss(weights), t_fit, crops, spec, augment_windows)
    t_metrics = classifier_report(teacher, tests, scanner_tests, cine_tests)
    log(f"teacher fine-tuned: macro_f1 {_by_length(t_metrics)}; cine {_by_length(t_metrics['cine'])} "
        f"({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    s_fit = FitSettings(epochs=settings["student_epochs"], lr=settings["lr"], curriculum_epochs=0, seed=seed + 4)
    fit_windows(student, train, kd_window_loss(teacher, weights, s_fit), s_fit, crops, spec, augment_windows)
    s_metrics = classifier_report(student, tests, scanner_tests, cine_tests)
    log(f"student fine-tuned: macro_f1 {_by_length(s_metrics)}; cine {_by_length(s_metrics['cine'])} "
        f"({time.perf_counter() - t0:.0f} s)")

    data_card = {"seed": seed, "train": train.recipe, "test": test.recipe, "crops_per_recording": crops,
                 "window_columns": [lo, hi], "eval_windows_s": t_card["data"].get("eval_windows_s"),
                 "fine_tuned_from": {"classifier_teacher": t_card["data"], "classifier_student": s_card["data"]}}
    out = []
    for model, card, metrics, fit in ((teacher, t_card, t_metrics, t_fit), (student, s_card, s_metrics, s_fit)):
        step = _step("fine_tune_all_looks", model, example, metrics, True, epochs=fit.epochs, lr=fit.lr,
                     n_rf_scanner_recordings=subset.n_train_recordings, n_cine_recordings=subset.n_cine_train_recordings,
                     loss="cross_entropy" if model is teacher else "distillation from the fine-tuned teacher")
        new = {k: v for k, v in card.items() if k not in ("params", "macs", "latency_ms", "arch", "config",
                                                          "format_version")}
        new.update({"metrics": metrics, "data": data_card, "steps": [*card["steps"], step],
                    "macs_shortest_window": compress.costs(model, torch.zeros(1, 1, lo, spec["n_depth"]))["macs"],
                    "notes": [card["notes"][0].split(" Held-out test split, ")[0] + " Held-out test split, "
                              + confusion_note(metrics, "lung_point")]})
        out.append((model, _measured_card(model, example, new)))
    return out
