"""The learned motion trace in the product path (issue 14): ``mmode process --motion``, the
streaming :class:`~mmode.models.motion_stream.NetworkTracker` against exact simulator truth,
and the typed errors for bad lines and model files that do not match their cards."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mmode.app.cli import main
from mmode.app.pipeline import Pipeline, PipelineSettings
from mmode.errors import DataError, ModelError
from mmode.ingest.files import open_recording
from mmode.ingest.meta import LineBlock
from mmode.ingest.simulator import _displacement_since_line0
from mmode.models import registry
from mmode.models.motion_eval import simulate_with_scene, traces
from mmode.models.motion_stream import DEFAULT_MODEL, NetworkTracker

TEACHER = "motion_keyframe_teacher"
#: A fresh cardiac recording (its seed is in no training, test or evaluation split).
SIM = dict(seconds=2.0, prf_hz=1000.0, snr_db=25.0, seed=7_100_001)


@pytest.fixture(scope="module")
def cardiac(tmp_path_factory):
    from mmode.ingest.h5format import write_recording

    sim, scene = simulate_with_scene("cardiac_regular", **SIM)
    path = tmp_path_factory.mktemp("motionnet") / "cardiac.h5"
    write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s, truth=sim.truth)
    return path, sim, scene


def _process(path, *extra) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["process", str(path), "--json", "--model", "none", *extra]) == 0
    return json.loads(out.getvalue())


def _exact(scene, sim, depth_m: float) -> np.ndarray:
    return _displacement_since_line0(scene, np.array([depth_m]), sim.timestamps_s)[:, 0]


def test_process_json_gives_the_network_trace_beside_the_classic_one(cardiac):
    path, sim, scene = cardiac
    report = _process(path)  # --motion both is the default
    m, n = report["motion"], report["motion_network"]
    assert m is not None and n is not None
    assert n["model"] == DEFAULT_MODEL
    assert n["t_s"] == m["t_s"] and len(n["t_s"]) == sim.lines.shape[0]  # line for line
    assert abs(n["depth_m"] - m["depth_m"]) < 0.5e-3  # the same echo
    q = np.asarray(n["quality"])
    assert q.shape == (len(n["t_s"]),) and np.all((q >= 0) & (q <= 1))
    truth = _exact(scene, sim, n["depth_m"])
    disp = np.asarray(n["displacement_m"])
    rmse = np.sqrt(np.mean((disp - truth) ** 2))
    # the echo moves millimetres; the integrated learned trace stays within 25 um of the
    # exact Lagrangian truth over 2000 lines (no drift), and far better than "no motion"
    assert np.ptp(truth) > 2e-3
    assert rmse < 25e-6, rmse
    assert rmse < 0.05 * np.sqrt(np.mean(truth**2))


@pytest.mark.parametrize("seed_offset", [101, 102])
def test_coarse_iq_under_noise_does_not_slip(seed_offset):
    """IQ stored at 1 MHz (0.77 mm per sample), 350 lines/s, 10 dB, fresh seeds: the learned
    trace stays within a quarter wavelength of the exact truth on every line and within 3 x
    the classic tracker's RMSE. Its coarse stage once extrapolated the envelope match's peak
    alone, and a wrong peak under a weak match slipped 1-3 % of these lines (36-40 um)."""
    from mmode.models.motion_eval import EVAL_SEED_OFFSET, eval_cell

    cell = eval_cell(350.0, 10.0, "iq", EVAL_SEED_OFFSET + seed_offset, models=(DEFAULT_MODEL,), seconds=2.0)
    net, classic = cell[DEFAULT_MODEL], cell["combined"]
    assert net["slip_rate"] == 0.0, net
    assert net["rmse_m"] < 3.0 * classic["rmse_m"] + 2e-6, (net, classic)


def test_the_coarse_stage_reads_the_phase_at_the_echos_own_frequency():
    """Speckle whose mean frequency is 0.8 f0 (attenuation lowers it at depth), moved 0.3
    tracking samples deeper between two lines (an exact Fourier shift), demodulated at f0 onto a
    grid of 0.5 f0 cycles per sample: the coarse stage's refined position is that shift. Read
    at f0, the part within a sample came out 0.25 (about 0.8 x 0.3)."""
    from mmode.models.motion_stream import _coarse_kernel

    rng = np.random.default_rng(11)
    k, f0, f_echo, shift = 128, 0.5, 0.4, 0.3
    nu = np.fft.fftfreq(k)
    spectrum = (rng.normal(size=k) + 1j * rng.normal(size=k)) * np.exp(-0.5 * ((nu - f_echo) / 0.04) ** 2)
    lines = np.fft.ifft(spectrum[None, :] * np.exp(-2j * np.pi * nu[None, :] * np.array([[0.0], [shift]])), axis=1)
    iq = (lines * np.exp(-2j * np.pi * f0 * np.arange(k))).astype(np.complex64)
    env = np.abs(iq).astype(np.float32)
    home, n = 56, 16
    state = np.zeros(6)
    pos, quality, renew = np.zeros(2, np.int64), np.zeros(2), np.zeros(2, np.bool_)
    _coarse_kernel(env, iq, home, n, 0, env[0, home : home + n].copy(), iq[0, home : home + n].copy(), f0, 1.0, 1.0,
                   state, 1, 3, 3, 0.75, pos, quality, renew)
    assert pos[1] == 0 and state[3] == pytest.approx(shift, abs=0.01), (pos, state)


def test_a_cell_of_the_trace_table_pools_the_lines_of_its_recordings():
    """A cell's RMSE and slip rate are those of all its recordings' lines taken together
    (numpy over the concatenated errors), each recording's RMSE is kept, and a recording in
    which no moving echo was found is left out and said so."""
    from mmode.models.motion_eval import pool_recordings

    rng = np.random.default_rng(5)
    quarter = 77e-6
    errors = [rng.normal(0.0, 30e-6, 300), rng.normal(0.0, 90e-6, 500)]
    recordings = [{"prf_hz": 350.0, "snr_db": 10.0, "sampling": "iq", "seed": seed, "n_lines": len(e),
                   "peak_speed_over_nyquist": speed, "depth_m": 0.03,
                   **{name: {"rmse_m": float(np.sqrt(np.mean(e**2))), "slip_rate": float(np.mean(np.abs(e) > quarter))}
                      for name in ("combined", DEFAULT_MODEL)}}
                  for seed, e, speed in zip((1, 2), errors, (1.1, 1.4))]
    recordings.append({"prf_hz": 350.0, "snr_db": 10.0, "sampling": "iq", "seed": 3, "n_lines": 700,
                       "note": "the classic tracker found no moving echo"})
    cell = pool_recordings(recordings)
    every = np.concatenate(errors)
    assert cell["combined"]["rmse_m"] == pytest.approx(np.sqrt(np.mean(every**2)), rel=1e-12)
    assert cell[DEFAULT_MODEL]["slip_rate"] == pytest.approx(np.mean(np.abs(every) > quarter), rel=1e-12)
    assert cell["combined"]["rmse_m_each"] == pytest.approx([np.sqrt(np.mean(e**2)) for e in errors])
    assert cell["n_lines"] == 800 and cell["seeds"] == [1, 2, 3] and cell["peak_speed_over_nyquist"] == 1.4
    assert cell["note_partial"].startswith("1 of 3") and "no moving echo" in cell["note_partial"]


def test_at_high_snr_the_learned_trace_is_no_noisier_than_the_phase_it_corrects():
    """RF at 30 dB, 100 lines/s, a fresh seed: the pair's phase is good to about 0.1 um, and
    corrections within its own noise were the network's noise, carried into the trace at each
    keyframe renewal (0.44 um against the exact truth where the phase alone gives 0.11 um).
    Applied only beyond one unit of that noise, the learned trace is as good as the phase and
    within 1.5 x the classic tracker's."""
    from mmode.models.motion_eval import EVAL_SEED_OFFSET, PHASE_ONLY, eval_cell

    cell = eval_cell(100.0, 30.0, "rf", EVAL_SEED_OFFSET + 104, models=(DEFAULT_MODEL,), seconds=2.0)
    net, phase, classic = cell[DEFAULT_MODEL]["rmse_m"], cell[PHASE_ONLY]["rmse_m"], cell["combined"]["rmse_m"]
    assert phase < 0.2e-6 and classic < 0.2e-6  # the exact truth is followed to a fraction of a um
    assert net < 1.2 * phase and net < 1.5 * classic, (net, phase, classic)


def test_each_trace_names_the_depth_its_phase_measures():
    """A straining wall at 350 lines/s, 10 dB, RF (a fresh seed): each trace is scored against
    the exact truth over depths around the one it names, and must name a depth within 15 um
    of the best-fitting one. The energy centroid of the learned trace's window at the first
    line was 59 um shallow here (43.8 um from the truth there, 1.5 um at the best depth); the
    centroid of the samples' in-phase shares of the correlation, summed over the trace, is
    where a window's phase measures the displacement."""
    sim, scene = simulate_with_scene("cardiac_regular", seconds=2.0, prf_hz=350.0, snr_db=10.0, seed=2_000_753)
    tr = traces(sim.meta, sim.lines, (DEFAULT_MODEL,))
    for name in (DEFAULT_MODEL, "combined"):
        named = tr[name + "_depth_m"]
        depths = named + np.arange(-100, 101) * 1e-6
        exact = _displacement_since_line0(scene, depths, sim.timestamps_s)[: len(tr[name])]
        rmse = np.sqrt(np.mean((tr[name][:, None] - exact) ** 2, axis=0))
        assert abs(depths[np.argmin(rmse)] - named) < 15e-6, (name, depths[np.argmin(rmse)] - named)
        assert rmse[100] < 5e-6, (name, rmse[100])  # 43.8 um at the learned window's energy centroid


def test_motion_option_selects_the_traces(cardiac):
    path, _, _ = cardiac
    network_only = _process(path, "--motion", "network")
    assert network_only["motion"] is None and network_only["motion_network"] is not None
    assert "not asked for" in network_only["motion_note"]
    classic = _process(path, "--motion", "classic")
    assert classic["motion"] is not None and classic["motion_network"] is None
    assert set(network_only["rates"]) == set(classic["rates"])  # the rates of the learned trace instead


@pytest.mark.parametrize("prf_hz, mode", [(1000.0, "both"), (20000.0, "classic")])
def test_auto_runs_the_network_where_the_line_rate_allows(prf_hz, mode):
    """``--motion auto`` (monitor's and the GUI's default): both traces up to 5 kHz, where
    the learned trace keeps a live stream within budget, the classic one above."""
    from mmode.app.motion_modes import NETWORK_AUTO_MAX_RATE_HZ
    from mmode.ingest.simulator import simulate

    assert NETWORK_AUTO_MAX_RATE_HZ == 5000.0
    sim = simulate("cardiac_regular", seconds=0.3, prf_hz=prf_hz, snr_db=25.0, seed=7_100_002)
    pipe = Pipeline(PipelineSettings(motion="auto"))
    pipe.prepare(sim.meta, sim.lines.shape[1])
    r = pipe.process(LineBlock(seq=0, t_s=0.0, lines=sim.lines))
    assert pipe.motion_mode == mode and r.motion_state["motion"] == mode
    assert (pipe.network is not None) == (mode == "both") and r.motion is not None
    assert ("motion_network" in r.timings_ms) == (mode == "both")


def test_block_cutting_does_not_change_the_learned_trace(cardiac):
    _, sim, _ = cardiac
    a = traces(sim.meta, sim.lines[:1200], models=(DEFAULT_MODEL,), block_lines=256)
    b = traces(sim.meta, sim.lines[:1200], models=(DEFAULT_MODEL,), block_lines=97)
    np.testing.assert_allclose(a[DEFAULT_MODEL], b[DEFAULT_MODEL], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(a[DEFAULT_MODEL + "_quality"], b[DEFAULT_MODEL + "_quality"])


def test_non_finite_lines_are_a_typed_error(cardiac):
    _, sim, _ = cardiac
    pipe = Pipeline(PipelineSettings(motion="network"))
    pipe.prepare(sim.meta, sim.lines.shape[1])
    bad = sim.lines[:100].astype(np.float32)
    bad[40, 10] = np.nan
    with pytest.raises(DataError, match="finite"):
        pipe.process(LineBlock(0, 0.0, bad))
    net = NetworkTracker()
    from mmode.dsp.tracker import MotionTracker

    classic = MotionTracker()
    classic.prepare(sim.meta, sim.lines.shape[1])
    net.prepare(sim.meta, sim.lines.shape[1], classic)
    bad[40, 10] = np.inf
    with pytest.raises(DataError, match="motion network.*finite"):
        net.process(LineBlock(0, 0.0, bad), 0)


def test_model_files_that_do_not_match_their_card_are_typed_errors(tmp_path):
    with pytest.raises(ModelError, match="iq_keyframe_residual_per_sigma"):
        NetworkTracker("motion_student")  # the per-pair net: another input
    for suffix in (".json", ".safetensors"):
        shutil.copy(registry.WEIGHTS_DIR / f"{DEFAULT_MODEL}{suffix}", tmp_path / f"{DEFAULT_MODEL}{suffix}")
    card = json.loads((tmp_path / f"{DEFAULT_MODEL}.json").read_text())
    (tmp_path / f"{DEFAULT_MODEL}.json").write_text(json.dumps({**card, "input": {**card["input"], "n_samples": 2}}))
    with pytest.raises(ModelError, match="n_samples"):
        NetworkTracker(DEFAULT_MODEL, tmp_path)
    # weights whose output is in wavelengths (the earlier unit) are refused, not read in the wrong unit
    (tmp_path / f"{DEFAULT_MODEL}.json").write_text(json.dumps({**card, "input": {**card["input"],
                                                                                  "kind": "iq_keyframe_residual"}}))
    with pytest.raises(ModelError, match="'iq_keyframe_residual'"):
        NetworkTracker(DEFAULT_MODEL, tmp_path)
    (tmp_path / f"{DEFAULT_MODEL}.json").write_text(json.dumps(card))
    shutil.copy(registry.WEIGHTS_DIR / f"{TEACHER}.safetensors", tmp_path / f"{DEFAULT_MODEL}.safetensors")
    with pytest.raises(ModelError, match="weights matching"):
        NetworkTracker(DEFAULT_MODEL, tmp_path)
    with pytest.raises(DataError, match="--motion"):
        Pipeline(PipelineSettings(motion="sideways"))


def test_motion_option_rejects_unknown_values(cardiac, capsys):
    path, _, _ = cardiac
    with pytest.raises(SystemExit) as exc:
        main(["process", str(path), "--motion", "sideways"])
    assert exc.value.code == 2


def test_student_is_a_compressed_teacher():
    """Measured on the shipped networks, not read from their cards: the student has at most
    10 % of the teacher's parameters and MACs."""
    from mmode.models.compress import costs

    student, card = registry.load_model(DEFAULT_MODEL)
    teacher, _ = registry.load_model(TEACHER)
    x = torch.zeros(1, card["input"]["channels"], card["input"]["n_samples"])
    s, t = costs(student, x), costs(teacher, x)
    assert s["params"] <= 0.10 * t["params"] and s["macs"] <= 0.10 * t["macs"]
    for name in (DEFAULT_MODEL, TEACHER):
        assert (registry.WEIGHTS_DIR / f"{name}.safetensors").stat().st_size < 2 * 1024 * 1024


def test_envelope_lines_give_no_learned_trace_and_no_error(cardiac, tmp_path):
    """A video's grey levels carry no phase: the report has the classic trace only."""
    from mmode.dsp.demod import to_iq
    from mmode.ingest.h5format import write_recording

    _, sim, _ = cardiac
    iq, iq_fs, _ = to_iq(sim.lines[:1500], sim.meta)
    path = tmp_path / "envelope.h5"
    write_recording(path, sim.meta.replace(kind="envelope", fs_hz=iq_fs), np.abs(iq).astype(np.float32))
    report = _process(path)
    assert report["motion_network"] is None
    with open_recording(path) as rec:  # ... and no network time in the blocks (the GUI's status bar)
        pipe = Pipeline(PipelineSettings(motion="auto"))
        pipe.prepare(rec.meta, rec.n_samples)
        r = pipe.process(LineBlock(seq=0, t_s=0.0, lines=rec.read(0, 500)))
    assert pipe.motion_mode == "both" and "motion_network" not in r.timings_ms


def test_compress_refuses_a_keyframe_net_instead_of_scoring_it_on_other_data(capsys):
    assert main(["compress", "--model", DEFAULT_MODEL]) == 2
    assert "motion_train" in capsys.readouterr().err


def _complex_gaussian(rng, shape) -> np.ndarray:
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)


@pytest.mark.parametrize("rho", [0.9, 0.99])
def test_phase_sigma_predicts_the_spread_of_the_pairs_phase(rho):
    """Monte Carlo: 16 independent samples of a common echo under noise of coherence ``rho``
    (echo power 1, noise 1 / rho - 1 on each line), turned by a known phase: the spread of
    the pair's phase estimate is the one ``phase_sigma_wl`` predicts from each pair."""
    from mmode.models import data as mdata
    from mmode.models.motion_data import phase_residual, phase_sigma_wl

    rng = np.random.default_rng(11)
    echo = _complex_gaussian(rng, (20_000, 16))
    noise = np.sqrt(1 / rho - 1)
    x = mdata.motion_inputs(echo + noise * _complex_gaussian(rng, echo.shape),
                            echo * np.exp(0.4j) + noise * _complex_gaussian(rng, echo.shape))
    estimate = phase_residual(x)
    assert np.mean(estimate) == pytest.approx(-0.4 / (4 * np.pi), abs=1e-3)
    assert np.mean(phase_sigma_wl(x)) == pytest.approx(np.std(estimate), rel=0.1)


@pytest.mark.parametrize("name", [DEFAULT_MODEL, TEACHER])
def test_shipped_nets_read_a_pair_backwards_as_minus_its_estimate(name):
    """The displacement from the later line to the earlier one is minus that from the earlier
    to the later: the shipped nets give exactly that (their inputs built by swapping the IQ
    windows), and 0 for a window paired with itself."""
    from mmode.models import data as mdata

    net = NetworkTracker(name)
    rng = np.random.default_rng(12)
    a, b = _complex_gaussian(rng, (64, 16)), _complex_gaussian(rng, (64, 16))
    forward = net.forward(mdata.motion_inputs(a, b))
    assert np.std(forward) > 1e-3  # a real output, not a constant
    np.testing.assert_allclose(net.forward(mdata.motion_inputs(b, a)), -forward, atol=1e-6)
    np.testing.assert_allclose(net.forward(mdata.motion_inputs(a, a)), 0.0, atol=1e-6)
