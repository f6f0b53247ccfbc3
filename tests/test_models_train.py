"""Training smoke test: the whole ``mmode train`` recipe on tiny data, in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmode.app.cli import main
from mmode.ingest.meta import CLASSES
from mmode.models import registry
from mmode.models.inference import Classifier, MotionNet
from mmode.models.train import FitSettings, classification_loss, class_weights, fit, fit_windows


def test_fit_learns_a_separable_toy_problem():
    """Two classes that differ by image brightness: a few epochs reach (near) zero error."""
    from mmode.models import networks

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 128)
    x = (rng.standard_normal((128, 1, 64, 64)) * 0.1 + y[:, None, None, None]).astype(np.float32)
    model = networks.build("classifier_student", {**networks.DEFAULT_CONFIGS["classifier_student"], "n_classes": 2})
    history = fit(model, x, y, np.full(128, 20.0), classification_loss(class_weights(y, 2)),
                  FitSettings(epochs=8, batch_size=16, lr=2e-3, curriculum_epochs=0))
    assert history[-1] < history[0]
    with torch.inference_mode():
        acc = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc > 0.95


def test_fit_windows_learns_from_random_length_crops():
    """Recordings of a static depth profile (class 0) or of columns that change every 62.5 ms
    (class 1), as time columns: windows of random length cut afresh each epoch train a
    student that tells them apart at the shortest and the longest window."""
    from mmode.models import data as mdata, networks

    rng = np.random.default_rng(0)
    n_rec, n_cols = 24, 120
    label = np.arange(n_rec) % 2
    columns = []
    for k in label:
        profile = rng.normal(size=64)
        change = rng.normal(size=(n_cols, 64)) if k else 0.05 * rng.normal(size=(n_cols, 64))
        columns.append((profile + change).astype(np.float32))
    counts = np.zeros((n_rec * n_cols, 7), np.int32)
    counts[np.arange(n_rec * n_cols), np.repeat(label, n_cols)] = 20
    data = mdata.ClassifierData(np.concatenate(columns), counts, np.arange(n_rec + 1) * n_cols,
                                np.full(n_rec, 20.0, np.float32), {})
    torch.manual_seed(0)
    model = networks.build("classifier_student", {**networks.DEFAULT_CONFIGS["classifier_student"], "n_classes": 7})
    history = fit_windows(model, data, classification_loss(class_weights(label, 7)),
                          FitSettings(epochs=8, batch_size=16, lr=3e-3, curriculum_epochs=0), crops_per_recording=6)
    assert history[-1] < history[0]
    for n_columns in mdata.column_range():
        w = data.windows(n_columns, 16, 0.75)
        with torch.inference_mode():
            assert (model(torch.from_numpy(w.x)).argmax(1).numpy() == w.y).mean() > 0.95


@pytest.mark.slow
def test_train_smoke_writes_loadable_models(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the data cache goes to ./runs/cache
    out = tmp_path / "weights"
    rc = main(["train", "--recipe", "smoke", "--out", str(out), "--threads", "1", "--json"])
    assert rc == 0
    cards = json.loads(capsys.readouterr().out)
    names = {c["name"] for c in cards}
    assert names == {"classifier_teacher", "classifier_student", "motion_teacher", "motion_student"}
    assert set(registry.model_names(out)) == names
    for card in cards:
        assert (out / f"{card['name']}.safetensors").stat().st_size < registry.MAX_WEIGHTS_BYTES
        model, loaded = registry.load_model(card["name"], out)
        assert loaded["params"] == sum(p.numel() for p in model.parameters())
    student = next(c for c in cards if c["name"] == "classifier_student")
    teacher = next(c for c in cards if c["name"] == "classifier_teacher")
    assert student["teacher"] == "classifier_teacher"
    assert student["params"] < 0.1 * teacher["params"]
    assert [s["step"] for s in student["steps"]][:2] == ["distill_into_compact_student", "structured_channel_pruning"]
    assert student["steps"][1]["params"] < student["steps"][0]["params"]
    assert any(s["step"] == "onnx_int8_dynamic" for s in student["steps"])
    # the trained files work through the product wrappers
    clf = Classifier("classifier_student", out)
    t_s = np.arange(1600) / 200.0  # 8 s: windows ending at 2.25, 3, 4, 5, 6 and 7 s
    windows = clf.classify_image(np.random.default_rng(0).normal(-30, 5, (1600, 128)).astype(np.float32), t_s)
    assert [w.t_end_s for w in windows] == [2.25, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert all(abs(w.probs.sum() - 1) < 1e-5 for w in windows)
    assert {r["window_s"] for r in student["metrics"]["by_length"]} == {2.25, 3.0, 4.0, 5.0, 6.0}
    # scored on scanner images too (issue 13.5), per length
    assert {r["window_s"] for r in student["metrics"]["scanner"]["by_length"]} == {2.25, 3.0, 4.0, 5.0, 6.0}
    # and on the default M-line of simulated lung cines: only the four classes a lung cine has
    cine = student["metrics"]["cine"]["by_length"][0]["confusion"]
    lung = {CLASSES.index(c) for c in ("lung_sliding", "no_sliding", "lung_point", "no_contact")}
    assert all(sum(row) == 0 for k, row in enumerate(cine) if k not in lung) and sum(map(sum, cine)) > 0
    assert MotionNet("motion_student", out).spec["n_samples"] == 16


@pytest.mark.slow
def test_fine_tune_starts_from_the_given_weights_and_keeps_the_student_small(tmp_path, monkeypatch, capsys):
    """``mmode train --fine-tune DIR``: the classifiers of DIR trained further on every look;
    the pruned student keeps its channels, its card its compression steps plus the new one."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tuned"
    rc = main(["train", "--recipe", "smoke", "--task", "classify", "--fine-tune", str(registry.WEIGHTS_DIR),
               "--out", str(out), "--threads", "1", "--json"])
    assert rc == 0
    cards = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert set(cards) == {"classifier_teacher", "classifier_student"}
    for name, card in cards.items():
        shipped_model, shipped = registry.load_model(name, registry.WEIGHTS_DIR)
        model, _ = registry.load_model(name, out)
        assert card["config"] == shipped["config"] and card["params"] == shipped["params"]
        changed = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(), shipped_model.state_dict().values())]
        assert any(changed)  # trained further, not copied
        assert [s["step"] for s in card["steps"]] == [s["step"] for s in shipped["steps"]] + ["fine_tune_all_looks"]
        assert {"rf", "scanner", "cine"} & set(card["metrics"]) == {"scanner", "cine"}
        assert card["data"]["fine_tuned_from"][name] == shipped["data"]


@pytest.mark.slow
def test_compress_reports_each_step_and_saves_a_loadable_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "compressed"
    rc = main(["compress", "--model", "motion_student", "--recordings", "1", "--prune-ratio", "0.3", "--threads", "1",
               "--out", str(out), "--name", "motion_small", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == ["structured_channel_pruning", "unstructured_magnitude", "low_rank_svd", "onnx_float32",
                           "onnx_int8_dynamic"]
    assert steps["structured_channel_pruning"]["params"] < report["baseline"]["params"]
    assert steps["unstructured_magnitude"]["sparsity"] > 0.3
    assert steps["onnx_float32"]["max_abs_diff_vs_torch"] < 1e-4
    model, card = registry.load_model("motion_small", out)
    assert card["params"] == steps["structured_channel_pruning"]["params"] == sum(p.numel() for p in model.parameters())
    assert (out / "motion_small.onnx").is_file() and (out / "motion_small_int8.onnx").is_file()


def test_compress_rejects_bad_ratio(capsys):
    assert main(["compress", "--model", "motion_student", "--prune-ratio", "1.5"]) == 2
    assert "--prune-ratio" in capsys.readouterr().err
