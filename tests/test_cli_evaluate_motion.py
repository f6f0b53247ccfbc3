"""``mmode evaluate --task motion`` and the motion/rates objects of ``mmode process --json``."""

import json

import numpy as np
import pytest

from mmode.app.cli import main
from mmode.ingest.h5format import write_recording
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest import simulator
from mmode.ingest.simulator import simulate


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    sim = simulate("cardiac_regular", seconds=4.0, prf_hz=500.0, snr_db=30.0, seed=1)
    path = tmp_path_factory.mktemp("motion") / "heart.h5"
    write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s, truth=sim.truth)
    return path, sim


def rigid_depth(truth):
    """A depth of the 1 mm part of the truth grid inside a rigidly moving layer (truth equal
    at its 1 mm neighbours), so that the 1.5 mm window there holds that layer only."""
    mm = np.isclose(truth.depths_m * 1e3, np.round(truth.depths_m * 1e3), rtol=0, atol=1e-6)
    depths, d = truth.depths_m[mm], truth.displacement_m[:, mm].astype(np.float64)
    rigid = (np.ptp(d, axis=0) > 1e-3) & (np.abs(d - np.roll(d, 1, axis=1)).max(axis=0) < 1e-6)
    rigid &= np.roll(rigid, -1)
    return float(depths[np.flatnonzero(rigid)[0]])


def test_evaluate_motion_json_scores_against_truth(sim_file, capsys):
    path, sim = sim_file
    depth = rigid_depth(sim.truth)
    rc = main(["evaluate", "--task", "motion", "--data", str(path), "--track-depth", str(depth), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["task"] == "motion"
    res = {r["estimator"]: r for r in out["results"]}
    assert set(res) == {"combined", "kasai", "ncc"}
    comb = res["combined"]
    assert abs(comb["depth_m"] - depth) < 1e-3
    assert comb["n_lines"] == sim.lines.shape[0]
    assert comb["rmse_m"] < 5e-6 and comb["failure_rate"] == 0.0
    assert comb["failure_threshold_m"] == pytest.approx(1540.0 / (4 * sim.meta.f0_hz))
    # the truth's own rhythm and the estimate's agree
    assert comb["rates"]["rate_per_min"] == pytest.approx(comb["truth_rates"]["rate_per_min"], abs=1.0)


def test_evaluate_auto_echo_at_a_kink_scores_within_a_few_um(sim_file, capsys):
    """The automatically chosen echo is the pericardium, where the displacement profile has a
    kink (0.8 x the posterior wall above, 0.2 x below): the truth grid holds its line-0 depth,
    so the file truth there is the pericardium's own motion (on the 1 mm grid alone: 70-90 um
    and 13-18 % 'failures'). Reference: the scene's displacement of the pericardium point."""
    path, sim = sim_file
    rc = main(["evaluate", "--task", "motion", "--data", str(path), "--estimator", "combined", "--json"])
    (comb,) = json.loads(capsys.readouterr().out)["results"]
    assert rc == 0
    scene = _scene("cardiac_regular", prf_hz=500.0, seed=1)
    peri = scene.z_m[np.argmax(np.abs(scene.amp))]  # the brightest reflector
    peri_line0 = peri + scene.displacement_m(np.array([peri]), np.zeros(1))[0, 0]
    assert abs(comb["depth_m"] - peri_line0) < 0.1e-3
    assert comb["rmse_m"] < 3e-6 and comb["failure_rate"] == 0.0


def _scene(scenario, **kw):
    """The simulator scene of ``simulate(scenario, **kw)`` (default probe and view)."""
    params = dict(f0_hz=None, fs_hz=None, depth_m=None, snr_db=30.0, rate_per_min=None, breath_per_min=None,
                  bandwidth=0.6, attenuation_db_cm_mhz=None, n_samples=None, c_m_s=1540.0)
    return simulator._setup(scenario, **{**params, **kw}).renderer.scene


def test_evaluate_text_output_and_single_estimator(sim_file, capsys):
    path, sim = sim_file
    rc = main(["evaluate", "--task", "motion", "--data", str(path), "--estimator", "kasai",
               "--track-depth", str(rigid_depth(sim.truth))])
    text = capsys.readouterr().out
    assert rc == 0
    assert "kasai" in text and "combined" not in text


def test_evaluate_without_truth_exits_3(tmp_path, capsys):
    meta = AcquisitionMeta("rf", 40e6, 5e6, 1000.0)
    path = tmp_path / "plain.h5"
    write_recording(path, meta, np.zeros((10, 256), np.int16))
    rc = main(["evaluate", "--task", "motion", "--data", str(path)])
    err = capsys.readouterr().err
    assert rc == 3
    assert "truth" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_track_depth_outside_line_exits_3(sim_file, capsys):
    path, _ = sim_file
    rc = main(["evaluate", "--task", "motion", "--data", str(path), "--track-depth", "5.0"])
    assert rc == 3
    assert "track-depth" in capsys.readouterr().err


def test_process_json_has_motion_and_rates(sim_file, capsys):
    path, sim = sim_file
    depth = rigid_depth(sim.truth)
    rc = main(["process", str(path), "--json", "--track-depth", str(depth)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    m = out["motion"]
    n = sim.lines.shape[0]
    assert len(m["t_s"]) == len(m["displacement_m"]) == len(m["velocity_m_s"]) == n
    np.testing.assert_allclose(m["t_s"], sim.timestamps_s)
    k = int(np.argmin(np.abs(sim.truth.depths_m - depth)))
    assert np.sqrt(np.mean((np.array(m["displacement_m"]) - sim.truth.displacement_m[:, k]) ** 2)) < 5e-6
    r = out["rates"]
    assert set(r) >= {"rate_per_min", "confidence", "intervals_s"}
    assert r["rate_per_min"] == pytest.approx(70.0, abs=3.0)  # scenario default 70/min, 2 % sinus variability
    assert r["rhythm"] == "regular"
    assert "breathing rate needs" in r["note"]  # 4 s: a heart rate, but too short to breathe twice


def test_process_short_recording_still_gets_a_trace(tmp_path, capsys):
    sim = simulate("cardiac_regular", seconds=0.3, prf_hz=500.0, snr_db=30.0, seed=2)
    path = tmp_path / "short.h5"
    write_recording(path, sim.meta, sim.lines, truth=sim.truth)
    assert main(["process", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["motion"]["displacement_m"]) == sim.lines.shape[0]
    assert out["rates"]["rate_per_min"] is None
    # the report says why there is no rate rather than a silent null
    assert "heart rate needs at least 3 s" in out["rates"]["note"]
    assert "breathing rate needs at least 10 s" in out["rates"]["note"]


def test_evaluate_effusion_view_scores_the_echo_it_tracks(tmp_path, capsys):
    """sample_data/sinusoid.h5's view: the automatically chosen echo is the lung line, and
    the reported depth is its own, so the file truth sampled there is the lung's motion (it
    once reported the fluid above it: 816 um, every line a 'failure'). The truth grid holds
    the lung line's line-0 depth (on the 1 mm grid alone the truth there was interpolated
    between a fluid point and a lung point: about 10 um)."""
    sim = simulate("sinusoid", seconds=3.0, prf_hz=400.0, fs_hz=16e6, depth_m=0.04, seed=1)
    path = tmp_path / "effusion.h5"
    write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s, truth=sim.truth)
    assert main(["evaluate", "--task", "motion", "--data", str(path), "--json"]) == 0
    for r in json.loads(capsys.readouterr().out)["results"]:
        assert r["failure_rate"] == 0.0
        assert r["rmse_m"] < 5e-6
