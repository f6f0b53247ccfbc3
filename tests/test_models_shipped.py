"""The shipped models: load, run, report, and behave on recordings they never saw."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mmode.app.cli import main
from mmode.dsp.processor import Processor, ProcessorSettings
from mmode.errors import ModelError
from mmode.ingest.meta import CLASSES, LineBlock
from mmode.ingest.simulator import simulate
from mmode.models import data as mdata
from mmode.models import registry
from mmode.models.inference import Classifier, MotionNet, summarize

SHIPPED = ("classifier_teacher", "classifier_student", "motion_teacher", "motion_student")


def test_every_shipped_model_loads_and_runs():
    assert set(SHIPPED) <= set(registry.model_names())
    for name in SHIPPED:
        path = registry.WEIGHTS_DIR / f"{name}.safetensors"
        assert path.stat().st_size < 2 * 1024 * 1024  # well under 5 MB
        model, card = registry.load_model(name)
        spec = card["input"]
        shape = (2, 1, spec["n_time"], spec["n_depth"]) if card["task"] == "classify" else (2, spec["channels"], spec["n_samples"])
        with torch.inference_mode():
            out = model(torch.randn(shape))
        assert out.shape == ((2, len(CLASSES)) if card["task"] == "classify" else (2, 1))
        assert torch.isfinite(out).all()
        assert card["params"] == sum(p.numel() for p in model.parameters())
        assert card["data"]["seed"] == 0


def test_models_json_report(capsys):
    assert main(["models", "--json"]) == 0
    report = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    for name in SHIPPED:
        m = report[name]
        assert {"name", "task", "teacher", "params", "macs", "latency_ms", "metrics", "steps"} <= set(m)
        assert m["latency_ms"] > 0
    assert report["classifier_student"]["teacher"] == "classifier_teacher"
    student, teacher = report["classifier_student"], report["classifier_teacher"]
    assert student["params"] <= 0.10 * teacher["params"]  # issue 5 targets
    assert student["macs"] <= 0.15 * teacher["macs"]
    assert student["metrics"]["macro_f1"] >= 0.95
    assert report["motion_student"]["teacher"] == "motion_teacher"
    assert report["classifier_teacher"]["teacher"] is None
    assert set(report["classifier_student"]["metrics"]["per_class_f1"]) == set(CLASSES)
    ms, mt = report["motion_student"]["metrics"], report["motion_teacher"]["metrics"]
    assert ms["rmse_m"] <= 1.1 * mt["rmse_m"]  # issue 5 targets
    assert ms["rmse_m_10db"] < ms["kasai_rmse_m_10db"]


def test_registry_rejects_bad_names_and_files(tmp_path):
    with pytest.raises(ModelError, match="lower-case"):
        registry.load_card("../etc/passwd")
    with pytest.raises(ModelError, match="one of"):
        registry.load_model("no_such_model")
    shutil.copy(registry.WEIGHTS_DIR / "motion_student.json", tmp_path / "motion_student.json")
    (tmp_path / "motion_student.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="safetensors"):
        registry.load_model("motion_student", tmp_path)
    shutil.copy(registry.WEIGHTS_DIR / "motion_teacher.safetensors", tmp_path / "motion_student.safetensors")
    with pytest.raises(ModelError, match="weights matching"):
        registry.load_model("motion_student", tmp_path)
    (tmp_path / "motion_student.json").write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        registry.load_card("motion_student", tmp_path)


def _display(scenario: str, seed: int, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sim = simulate(scenario, seed=seed, **kw)
    proc = Processor(ProcessorSettings(n_rows=200))
    proc.prepare(sim.meta, sim.lines.shape[1])
    out = proc.process(LineBlock(0, 0.0, sim.lines))
    return out.display_db, out.t_s, proc.row_depths_m, sim.truth.labels


def test_streaming_classification_equals_offline():
    db, t_s, depths, _ = _display("cardiac_regular", 4242, seconds=9.5, prf_hz=250.0)
    clf = Classifier()
    offline = clf.classify_image(db, t_s)
    streamed = []
    for i in range(0, len(t_s), 173):
        streamed += clf.push(db[i : i + 173], t_s[i : i + 173], depths)
    assert len(streamed) == len(offline) == 4
    for a, b in zip(streamed, offline):
        assert a.t_start_s == pytest.approx(b.t_start_s)
        np.testing.assert_allclose(a.probs, b.probs, rtol=1e-5, atol=1e-6)


def test_streamed_window_inputs_equal_the_batch_binning():
    """Incremental window formation (running sums kept across pushes, buffer compacted as
    lines are dropped) gives the inputs of binning each window from scratch, bit for bit,
    with jittered line times and block sizes, and keeps only about one window of lines."""
    rng = np.random.default_rng(5)
    prf_hz, n_lines, n_rows = 2000.0, 2000 * 25, 90
    t_s = 3.0 + (np.arange(n_lines) + rng.uniform(0.0, 0.9, n_lines)) / prf_hz
    db = rng.normal(-40.0, 8.0, (n_lines, n_rows)).astype(np.float32)
    clf = Classifier()
    spec = clf.spec
    starts, inputs, kept = [], [], []
    i = 0
    while i < n_lines:
        m = int(rng.integers(1, 900))
        s, x = clf.push_inputs(db[i : i + m], t_s[i : i + m], np.arange(n_rows) * 1e-4)
        starts.append(s), inputs.append(x), kept.append(len(clf._lines))
        i += m
    starts, inputs = np.concatenate(starts), np.concatenate(inputs)
    binned = mdata.depth_bins(db, spec["n_depth"])
    expected_starts = t_s[0] + np.arange(int((t_s[-1] - t_s[0] - spec["window_s"]) // clf.hop_s) + 1) * clf.hop_s
    np.testing.assert_allclose(starts, expected_starts, rtol=0, atol=1e-9)
    for t0, x in zip(starts, inputs):
        np.testing.assert_array_equal(x, mdata.window_input(binned, t_s, float(t0), spec))
    assert max(kept) <= (spec["window_s"] + clf.hop_s) * prf_hz + 900


UNSEEN = [  # seeds far from every training seed; depth, f0 and SNR off the defaults
    ("lung_sliding", dict(depth_m=0.05, f0_hz=6.0e6, fs_hz=24e6, snr_db=14.0)),
    ("no_sliding", dict(depth_m=0.04, f0_hz=4.2e6, fs_hz=20e6, snr_db=22.0)),
    ("lung_point", dict(depth_m=0.055, f0_hz=5.5e6, fs_hz=22e6, snr_db=18.0)),
    ("sinusoid", dict(depth_m=0.05, f0_hz=4.5e6, fs_hz=18e6, snr_db=12.0)),
    ("cardiac_regular", dict(depth_m=0.13, f0_hz=2.7e6, fs_hz=11e6, snr_db=16.0)),
    ("cardiac_irregular", dict(depth_m=0.10, f0_hz=3.4e6, fs_hz=14e6, snr_db=24.0)),
    ("no_contact", dict(depth_m=0.06, f0_hz=5.0e6, fs_hz=20e6, snr_db=10.0)),
]


def test_classifier_on_recordings_it_never_trained_on():
    clf = Classifier()
    correct = 0
    for i, (scenario, kw) in enumerate(UNSEEN):
        db, t_s, _, _ = _display(scenario, 7_000_000 + i, seconds=8.0, prf_hz=330.0, **kw)
        summary = summarize(clf.classify_image(db, t_s), clf.classes)
        correct += summary["label"] == scenario
    assert correct >= 6


def test_motion_student_beats_kasai_at_10_db():
    """Against simulator truth on a fresh cardiac recording at 10 dB SNR."""
    from mmode.dsp.motion import phase_to_displacement_m, to_iq
    from mmode.models import data as mdata

    sim = simulate("cardiac_regular", seed=8_000_001, seconds=0.6, prf_hz=1000.0, snr_db=10.0, f0_hz=3e6, fs_hz=12e6)
    net = MotionNet()
    depths = np.array([0.03, 0.045, 0.06, 0.08])
    pred = net.displacement_m(sim.lines, sim.meta, depths)
    truth = np.stack([np.interp(depths, sim.truth.depths_m, row) for row in sim.truth.displacement_m])
    d_truth = np.diff(truth, axis=0)
    iq, _, stride = to_iq(sim.lines, sim.meta)
    centre = np.rint(sim.meta.sample_at_depth(depths) / stride).astype(int)
    k = np.repeat(np.arange(iq.shape[0] - 1), len(depths))
    x0, x1 = mdata.iq_segments(iq, k, np.tile(centre, iq.shape[0] - 1), net.spec["n_samples"])
    kasai = phase_to_displacement_m(np.angle(np.sum(np.conj(x0) * x1, axis=1)), sim.meta.f0_hz, sim.meta.c_m_s)
    rmse_net = np.sqrt(np.mean((pred - d_truth) ** 2))
    rmse_kasai = np.sqrt(np.mean((kasai.reshape(d_truth.shape) - d_truth) ** 2))
    assert pred.shape == d_truth.shape
    assert rmse_net < rmse_kasai


@pytest.fixture(scope="module")
def sliding_then_barcode(tmp_path_factory):
    """8 s of lung sliding then 8 s of no sliding (one patient), with /truth/labels."""
    from mmode.ingest.h5format import write_recording
    from mmode.ingest.simulator import simulate_sequence

    sim = simulate_sequence([("lung_sliding", 8.0), ("no_sliding", 8.0)], prf_hz=400.0, seed=5_550_001, snr_db=25.0)
    path = tmp_path_factory.mktemp("models") / "sequence.h5"
    write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s, truth=sim.truth)
    return path


def test_process_json_reports_classification(sliding_then_barcode, capsys):
    assert main(["process", str(sliding_then_barcode), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["classification"]
    assert c["model"] == "classifier_student" and c["classes"] == list(CLASSES)
    starts = [w["t_start_s"] for w in c["windows"]]
    np.testing.assert_allclose(starts, np.arange(len(starts)) * c["hop_s"], atol=1e-9)
    assert len(starts) == 10  # 6 s windows every 1 s; the last line is at 16 s - 1/PRF
    for w in c["windows"]:
        assert w["t_end_s"] == pytest.approx(w["t_start_s"] + 6.0)
        assert sum(w["probs"]) == pytest.approx(1.0, abs=1e-4)
        assert w["label"] == CLASSES[int(np.argmax(w["probs"]))]
    assert c["windows"][0]["label"] == "lung_sliding" and c["windows"][-1]["label"] == "no_sliding"
    assert sum(c["summary"]["fraction"].values()) == pytest.approx(1.0)
    assert main(["process", str(sliding_then_barcode), "--json", "--model", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["classification"] is None


def test_evaluate_classify_scores_against_truth(sliding_then_barcode, capsys):
    assert main(["evaluate", "--task", "classify", "--data", str(sliding_then_barcode), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "classifier_student" and r["n_windows"] == 10
    scored = [w for w in r["windows"] if w["scored"]]
    assert r["n_scored"] == len(scored) == 7  # windows with >= 75 % of their lines in one class: 0-3 s, 7-9 s
    assert r["accuracy"] == pytest.approx(np.mean([w["label"] == w["truth"] for w in scored]))
    assert sum(map(sum, r["confusion"])) == r["n_scored"]
    assert r["accuracy"] >= 0.75


def test_evaluate_model_alone_means_classify(sliding_then_barcode, capsys):
    assert main(["evaluate", "--model", "classifier_teacher", "--data", str(sliding_then_barcode), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["task"] == "classify" and r["model"] == "classifier_teacher" and r["n_scored"] == 7
    assert main(["evaluate", "--data", str(sliding_then_barcode)]) == 2  # neither --task nor --model
    assert "--task" in capsys.readouterr().err


def test_unknown_model_is_a_data_error(sliding_then_barcode, capsys):
    assert main(["process", str(sliding_then_barcode), "--model", "no_such_model"]) == 3
    assert "no_such_model" in capsys.readouterr().err
