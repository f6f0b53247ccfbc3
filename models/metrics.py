"""Metrics of the trained networks on held-out simulated data (pure functions of a model and
a data set): macro-F1 and confusion of the classifiers per window length and look, the motion
net's RMS error beside Kasai and "no motion". Used by training (:mod:`mmode.models.train`),
``mmode compress``, ``mmode evaluate`` and the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mmode.ingest.meta import CLASSES
from mmode.models import data as mdata

if TYPE_CHECKING:
    from mmode.models.pair_data import MotionData


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[float, list[float]]:
    """(macro F1 over the classes present in ``y_true``, per-class F1 list of length n_classes).

    Per-class F1 = 2 TP / (2 TP + FP + FN); a class absent from both truth and prediction
    gets F1 1.0 in the list and is left out of the macro mean.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    per_class, present = [], []
    for c in range(n_classes):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        per_class.append(f1)
        if np.any(y_true == c):
            present.append(f1)
    return (float(np.mean(present)) if present else 0.0), per_class


@torch.inference_mode()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Model outputs for (N, ...) float32 inputs, in eval mode, as a float32 array."""
    model.eval()
    outs = [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def classifier_metrics(model: nn.Module, test: "mdata.ClassifierWindows") -> dict[str, Any]:
    """{"macro_f1", "per_class_f1" {class: f1}, "accuracy", "n_test", "confusion" (rows truth,
    columns prediction, in class order)} on held-out windows of one length."""
    pred = predict(model, test.x).argmax(axis=1) if len(test.y) else np.zeros(0, np.int64)
    macro, per = f1_scores(test.y, pred, len(CLASSES))
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    np.add.at(confusion, (test.y, pred), 1)
    return {
        "macro_f1": round(macro, 4),
        "per_class_f1": {c: round(f, 4) for c, f in zip(CLASSES, per)},
        "accuracy": round(float(np.mean(pred == test.y)), 4) if len(test.y) else None,
        "n_test": int(len(test.y)),
        "confusion": confusion.tolist(),
    }


#: Window lengths (s) the classifiers are scored at; the longest is the reference of the
#: card's top-level metrics, MACs and latency. 2.25 s (36 columns) is the shortest window,
#: what a recording of 2.3 s gets.
EVAL_WINDOWS_S = (2.25, 3.0, 4.0, 5.0, 6.0)


def classifier_test_windows(data: "mdata.ClassifierData", spec: dict = mdata.CLASSIFIER_SPEC,
                            windows_s: tuple[float, ...] = EVAL_WINDOWS_S) -> dict[float, "mdata.ClassifierWindows"]:
    """{window_s: windows of that length every ``hop_s`` from each recording's first line,
    those at least ``min_label_purity`` pure} of a held-out set."""
    hop = mdata.n_columns_in(spec["hop_s"], spec)
    return {w: data.windows(mdata.n_columns_in(w, spec), hop, spec["min_label_purity"]) for w in windows_s}


def classifier_report(model: nn.Module, tests: dict[float, "mdata.ClassifierWindows"],
                      scanner: dict[float, "mdata.ClassifierWindows"] | None = None,
                      cine: dict[float, "mdata.ClassifierWindows"] | None = None) -> dict[str, Any]:
    """The classifier's metrics: :func:`classifier_metrics` of the longest window at the top
    level (with ``reference_window_s``) and of every length in ``by_length`` (a list of
    dicts with ``window_s`` and ``n_columns`` added), on the rf look; with ``scanner`` (or
    ``cine``) test windows, the same report of those under ``scanner`` (or ``cine``)."""
    by_length = [{"window_s": w, "n_columns": int(t.x.shape[2]), **classifier_metrics(model, t)} for w, t in tests.items()]
    ref = max(by_length, key=lambda m: m["window_s"])
    top = {k: ref[k] for k in ("macro_f1", "per_class_f1", "accuracy", "n_test")}
    out = {**top, "reference_window_s": ref["window_s"], "by_length": by_length}
    if scanner is not None:
        out["scanner"] = classifier_report(model, scanner)
    if cine is not None:
        out["cine"] = classifier_report(model, cine)
    return out


#: Pairs whose true displacement is at least this (m) count as "moving" in :func:`motion_metrics`.
MOVING_M = 10e-6


def motion_metrics(model: nn.Module, test: "MotionData") -> dict[str, Any]:
    """{"rmse_m", "rmse_m_10db", "kasai_rmse_m", "kasai_rmse_m_10db", "zero_rmse_m",
    "zero_rmse_m_10db", the same six with suffix "_10db_moving" replaced for the 10 dB ones
    ("rmse_m_10db_moving", ...), "truth_abs_m" {"p50", "p90", "p99", "max"}, "moving_m",
    "n_test", "n_10db", "n_10db_moving"}: RMS error in metres over all test pairs, over those
    simulated at SNR <= 10 dB, and over those at SNR <= 10 dB whose true displacement is at
    least ``MOVING_M`` (None without such pairs), beside classic Kasai on the same pairs and
    beside the trivial "no motion" estimate (the RMS of the true displacement). Most pairs are
    slow tissue, where "no motion" is hard to beat; the moving subset is where an estimator
    has to estimate. ``truth_abs_m``: percentiles of |true displacement| over the test set."""
    pred_m = predict(model, test.x)[:, 0] * test.wavelength_m
    truth_m = test.y[:, 0] * test.wavelength_m
    low = test.snr_db <= 10.0
    moving = low & (np.abs(truth_m) >= MOVING_M)

    def rmse(a: np.ndarray, mask: np.ndarray) -> float | None:
        return float(np.sqrt(np.mean((a[mask] - truth_m[mask]) ** 2))) if mask.any() else None

    every = np.ones_like(low)
    return {
        "rmse_m": rmse(pred_m, every),
        "rmse_m_10db": rmse(pred_m, low),
        "kasai_rmse_m": rmse(test.kasai_m, every),
        "kasai_rmse_m_10db": rmse(test.kasai_m, low),
        "zero_rmse_m": rmse(np.zeros_like(truth_m), every),
        "zero_rmse_m_10db": rmse(np.zeros_like(truth_m), low),
        "rmse_m_10db_moving": rmse(pred_m, moving),
        "kasai_rmse_m_10db_moving": rmse(test.kasai_m, moving),
        "zero_rmse_m_10db_moving": rmse(np.zeros_like(truth_m), moving),
        "truth_abs_m": dict(zip(("p50", "p90", "p99", "max"), np.percentile(np.abs(truth_m), [50, 90, 99, 100]).tolist())),
        "moving_m": MOVING_M,
        "n_test": int(len(truth_m)),
        "n_10db": int(low.sum()),
        "n_10db_moving": int(moving.sum()),
    }
