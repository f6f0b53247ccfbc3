"""``mmode process``: JSON report, CSV windows, display image + sidecar, exit codes."""

import csv
import json

import numpy as np
import pytest

from mmode.app.cli import main
from mmode.dsp import envelope
from mmode.ingest.h5format import write_recording
from mmode.ingest.meta import AcquisitionMeta


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from mmode.ingest.simulator import simulate

    sim = simulate("cardiac_regular", seconds=3.0, prf_hz=400.0, seed=2, n_samples=1024)
    path = tmp_path_factory.mktemp("rec") / "heart.h5"
    write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s)
    return path, sim


def test_json_report(recording, capsys):
    path, sim = recording
    assert main(["process", str(path), "--json", "--block-lines", "300"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["meta"]["kind"] == "rf" and report["meta"]["prf_hz"] == 400.0
    assert report["n_lines"] == sim.lines.shape[0] and report["n_samples"] == 1024
    t = report["timing"]
    assert t["lines_per_s"] > 0 and t["realtime_factor"] == pytest.approx(t["lines_per_s"] / 400.0)
    f = report["features"]
    assert len(f["windows"]) == 3 and f["windows"][0]["seq_start"] == 0 and f["windows"][-1]["seq_stop"] == 1200
    assert sum(f["summary"]["wavelet_rel_energy"]) == pytest.approx(1.0, abs=1e-4)
    # the heart beats at 70/min (simulator default): the mean intensity trace repeats
    assert f["summary"]["period_s"] == pytest.approx(60 / 70, rel=0.05)
    assert f["summary"]["periodicity"] > 0.5



def test_a_recording_shorter_than_the_longest_window_is_classified_whole(recording, capsys):
    """3 s (last line at 2.9975 s): the stream's first window (2.25 s) and then one window over
    all of it, 47 whole columns of 62.5 ms, which the report keeps with a note saying so."""
    path, _ = recording
    assert main(["process", str(path), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["classification"]
    assert [(w["t_start_s"], w["t_end_s"]) for w in c["windows"]] == [(0.0, 47 / 16)]
    assert c["window_s"] == 47 / 16 and c["max_window_s"] == 6.0
    assert c["summary"]["label"] == c["windows"][0]["label"]
    assert "shorter than the classifier's 6 s window: classified as one window of 2.9375 s" in c["summary"]["note"]
    assert main(["process", str(path)]) == 0
    assert "(1 window of 2.9375 s" in capsys.readouterr().out


def test_image_and_sidecar_match_the_processor(recording, tmp_path, capsys):
    path, sim = recording
    image = tmp_path / "img.npy"
    out_json = tmp_path / "report.json"
    assert main(["process", str(path), "--image", str(image), "-o", str(out_json), "--n-rows", "128",
                 "--denoise", "median_persist"]) == 0
    assert "lines/s" in capsys.readouterr().out
    img = np.load(image, allow_pickle=False)
    assert img.dtype == np.float32 and img.shape == (sim.lines.shape[0], 128)
    assert img.min() >= -60.0 and img.max() <= 0.0
    side = json.loads((tmp_path / "img.npy.json").read_text())
    np.testing.assert_allclose(side["depth_m"], envelope.row_depths_m(sim.meta, 1024, 128))
    assert json.loads(out_json.read_text())["settings"]["denoise"] == "median_persist"
    # the brightest echo of the image sits where the Hilbert envelope of the RF puts it
    ref = envelope.hilbert_envelope(sim.lines[:50]).mean(axis=0)
    depth_ref = sim.meta.depth_m(np.argmax(ref))
    depth_img = side["depth_m"][int(np.argmax(img[:50].mean(axis=0)))]
    assert abs(depth_img - depth_ref) <= 2 * (side["depth_m"][1] - side["depth_m"][0])


def test_csv_windows(recording, tmp_path, capsys):
    path, _ = recording
    out = tmp_path / "f.csv"
    assert main(["process", str(path), "-o", str(out), "--window-s", "0.5"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert {"t_start_s", "mean_db", "decorrelation", "decorrelation_rate_per_s", "wavelet_entropy",
            "wavelet_rel_energy_0"} <= set(rows[0])
    assert float(rows[1]["t_start_s"]) == pytest.approx(0.5)


def test_bad_input_exit_3_one_line(tmp_path, capsys):
    assert main(["process", str(tmp_path / "missing.h5")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    meta = AcquisitionMeta("rf", 20e6, 5e6, 1000.0)
    lines = np.zeros((10, 512), np.float32)
    lines[4, 3] = np.nan
    bad = tmp_path / "nan.h5"
    import h5py

    with h5py.File(bad, "w") as f:  # written raw: the writer itself refuses NaN
        f.attrs.update({"format": "mmode", "format_version": 1, **meta.to_dict()})
        f.create_dataset("lines", data=lines)
    assert main(["process", str(bad), "--json"]) == 3
    err = capsys.readouterr().err
    assert "line 4" in err and err.count("\n") == 1


def test_bad_usage_exit_2(recording, capsys):
    path, _ = recording
    assert main(["process", str(path), "-o", "out.txt"]) == 2
    assert main(["process", str(path), "--dynamic-range-db", "-3"]) == 2
    capsys.readouterr()


def test_bench_reports_the_rates(capsys):
    assert main(["bench", "--json", "--lines", "1024", "--repeats", "1", "--pipeline-seconds", "0.2"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("envelope_lines_per_s", "chain_lines_per_s", "reference_lines_per_s"):
        assert result[key] > 0
    assert result["envelope_vs_reference"] == pytest.approx(
        result["envelope_lines_per_s"] / result["reference_lines_per_s"])
    assert set(result["chain_by_denoise_lines_per_s"]) == {"none", "median_persist", "wavelet", "srad"}
    # the pipeline at 20 kHz: 10 ms blocks (200 lines) beside 1024-line blocks, and the
    # fixed + per-line cost model that both timings give back
    pl = result["pipeline"]
    assert (pl["prf_hz"], pl["live_block_lines"], pl["large_block_lines"]) == (20000.0, 200, 1024)
    assert pl["live_blocks_lines_per_s"] > 0 and pl["large_blocks_lines_per_s"] > 0
    for n, rate in ((200, pl["live_blocks_lines_per_s"]), (1024, pl["large_blocks_lines_per_s"])):
        assert pl["fixed_ms_per_block"] + n * pl["us_per_line"] * 1e-3 == pytest.approx(n / rate * 1e3)
    assert main(["bench", "--lines", "10"]) == 2
    capsys.readouterr()


def test_bench_is_in_the_package_without_torch_or_qt():
    """``mmode bench`` must work from an installed wheel: its code is mmode.dsp.bench, not a
    script of the source tree, and importing it pulls in neither torch nor Qt."""
    import subprocess
    import sys

    code = ("import sys, mmode.dsp.bench as b; assert callable(b.run_benchmark); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PyQt6', 'pyqtgraph')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_rates_follow_the_class():
    """A trace with a 72/min beat on a 15/min breath (analytic sines, 12 s): the heart rate
    is given for a cardiac class only, the breathing rate for a lung class only, neither for
    no_contact, both without a class."""
    from mmode.app.cmd_process import rates_for_class
    from mmode.dsp import rates

    fs_hz = 100.0
    t = np.arange(int(12 * fs_hz)) / fs_hz
    trace = np.sin(2 * np.pi * 72 / 60 * t) + 2.0 * np.sin(2 * np.pi * 15 / 60 * t)
    measured = rates.summary(trace, fs_hz)
    assert measured["rate_per_min"] == pytest.approx(72, abs=1.5)
    assert measured["breathing_rate_per_min"] == pytest.approx(15, abs=1.0)
    assert rates_for_class(measured, None) == measured
    heart = rates_for_class(measured, "cardiac_regular")
    assert heart["rate_per_min"] == measured["rate_per_min"] and heart["breathing_rate_per_min"] is None
    assert "no breathing rate for a cardiac_regular recording" in heart["note"]
    lung = rates_for_class(measured, "lung_sliding")
    assert lung["breathing_rate_per_min"] == measured["breathing_rate_per_min"]
    assert lung["rate_per_min"] is None and lung["rhythm"] == "unknown" and lung["intervals_s"] == []
    assert "no heart rate for a lung_sliding recording" in lung["note"]
    none = rates_for_class(measured, "no_contact")
    assert none["rate_per_min"] is None and none["breathing_rate_per_min"] is None
    assert measured["rate_per_min"] is not None  # the measured rates are not changed in place
