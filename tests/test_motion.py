"""Motion estimators against analytic cases, scipy references and simulator truth."""

import time

import numpy as np
import pytest
from scipy import signal

from mmode.dsp import demod, echo_choice, echo_score, motion
from mmode.dsp.tracker import MotionTracker
from mmode.errors import DataError
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest import sim_render, simulator
from mmode.ingest.scenarios import point_reflectors
from mmode.ingest.simulator import simulate

C = 1540.0
FS = 40e6
F0 = 5e6


def gaussian_pulse_rf(delays_s, n=512, fs=FS, f0=F0, bandwidth=0.6, amplitude=1.0):
    """One point scatterer per line at round-trip delay ``delays_s[i]``; exact sub-sample delay."""
    t = np.arange(n) / fs
    sigma_t = 1.0 / (2 * np.pi * bandwidth * f0 / 2.355)
    tt = t[None, :] - np.asarray(delays_s)[:, None]
    return (amplitude * np.exp(-(tt**2) / (2 * sigma_t**2)) * np.cos(2 * np.pi * f0 * tt)).astype(np.float32)


def speckle_rf(disp_m, n=2048, fs=FS, f0=F0, snr_db=30.0, seed=0, bandwidth=0.6):
    """Speckle (400 random scatterers) rigidly displaced by ``disp_m[i]`` in line i, plus noise.

    Built in the frequency domain, so any sub-sample displacement is exact.
    """
    rng = np.random.default_rng(seed)
    z = rng.uniform(0, n / fs * C / 2, 400)
    a = rng.normal(size=400)
    f = np.fft.rfftfreq(n, 1 / fs)
    spectrum = np.exp(-((f - f0) ** 2) / (2 * (bandwidth * f0 / 2.355) ** 2))
    spec0 = (a[:, None] * np.exp(-2j * np.pi * f[None, :] * 2 * z[:, None] / C)).sum(0) * spectrum
    tau = 2 * np.asarray(disp_m)[:, None] / C
    rf = np.fft.irfft(spec0[None, :] * np.exp(-2j * np.pi * f[None, :] * tau), n, axis=1)
    noise_sd = np.sqrt(np.mean(rf**2) / 10 ** (snr_db / 10))
    return (rf + rng.normal(size=rf.shape) * noise_sd).astype(np.float32)


def track(lines, meta, estimator, block=100, **kw):
    tracker = MotionTracker(estimator=estimator, **kw)
    tracker.prepare(meta, lines.shape[1])
    parts = [tracker.process(LineBlock(i, i / meta.prf_hz, lines[i : i + block])) for i in range(0, len(lines), block)]
    parts.append(tracker.flush())  # lines held back while the tracker chose how to follow the echo
    return tracker, np.concatenate([p.displacement_m for p in parts]), np.concatenate([p.velocity_m_s for p in parts]), np.concatenate([p.t_s for p in parts])


# -- demodulation ---------------------------------------------------------------------------
@pytest.mark.parametrize("fs", [FS, 4 * F0, 3.2 * F0])  # 3.2 f0: the sample data's rate, below 4 f0
def test_rf_to_iq_matches_hilbert_analytic_signal(fs):
    n = int(512 * fs / FS)
    rf = gaussian_pulse_rf([4e-6, 6.3e-6], n=n, fs=fs)
    iq = demod.rf_to_iq(rf, fs, F0)
    dec = demod.iq_decimation(fs, F0)
    ref = signal.hilbert(rf.astype(np.float64), axis=1)[:, ::dec] * np.exp(-2j * np.pi * F0 / fs * np.arange(0, n, dec))
    strong = np.abs(ref) > 0.2
    np.testing.assert_allclose(np.abs(iq[strong]), np.abs(ref[strong]), rtol=0.04)
    np.testing.assert_allclose(np.angle(iq[strong] * np.conj(ref[strong])), 0.0, atol=0.04)


@pytest.mark.parametrize("fs", [2 * F0, 1.5 * F0])
def test_rf_below_twice_f0_is_a_data_error(fs):
    with pytest.raises(DataError, match="fs_hz > 2"):
        demod.rf_to_iq(np.ones((2, 64), np.float32), fs, F0)


def test_to_iq_rejects_envelope():
    meta = AcquisitionMeta("envelope", FS, 0.0, 1000.0)
    with pytest.raises(DataError, match="kind 'rf' or 'iq'"):
        demod.to_iq(np.ones((2, 64), np.float32), meta)


# -- analytic single scatterer --------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.13, 0.37, 0.5, 0.81])
def test_single_scatterer_subsample_shift(fraction):
    spacing_rf = C / (2 * FS)
    d_m = np.array([0.0, (3 + fraction) * spacing_rf])  # 3.x RF samples
    rf = gaussian_pulse_rf(5e-6 + 2 * d_m / C)
    iq = demod.rf_to_iq(rf, FS, F0)
    spacing_iq = spacing_rf * demod.iq_decimation(FS, F0)
    win = 24
    start = int(round((5e-6 * FS / 4))) - win // 2
    iq_win = iq[:, start : start + win + 8]
    comb = motion.combined_displacement(iq_win, spacing_iq, F0, C, win, 100, 4)[0, 0]
    ncc_rf = motion.ncc_displacement(rf[:, 4 * start : 4 * start + 4 * win + 32], spacing_rf, 4 * win, 1000, 8)[0, 0]
    assert abs(comb - d_m[1]) < 0.2e-6
    assert abs(ncc_rf - d_m[1]) < 2e-6


# -- Kasai against theory -------------------------------------------------------------------
def test_kasai_constant_velocity_phase_and_aliasing():
    prf = 2000.0
    v_nyq = C * prf / (4 * F0)
    n_lines = 8
    for v, expected in ((0.3 * v_nyq, 0.3 * v_nyq), (-0.7 * v_nyq, -0.7 * v_nyq), (1.4 * v_nyq, -0.6 * v_nyq)):
        d = v * np.arange(n_lines) / prf
        iq = demod.rf_to_iq(speckle_rf(d, snr_db=60), FS, F0)
        # theory: lag-one phase -4 pi f0 v / (c prf); the mean over depth recovers v
        vel = motion.kasai_velocity(iq, prf, F0, C, depth_samples=64, ensemble=4)
        est = float(np.median(vel[:, 100:-100]))
        assert est == pytest.approx(expected, rel=0.03, abs=0.01 * v_nyq)


def test_kasai_velocity_rejects_real_input():
    with pytest.raises(DataError):
        motion.kasai_velocity(np.ones((4, 16), np.float32), 1000.0, F0)


# -- combined beyond the aliasing limit -----------------------------------------------------
@pytest.mark.parametrize("multiple", [0.5, 2.0, 5.0])
def test_combined_tracker_does_not_alias(multiple):
    prf, fm = 300.0, 2.0
    v_nyq = C * prf / (4 * F0)
    t = np.arange(600) / prf
    d = multiple * v_nyq / (2 * np.pi * fm) * np.sin(2 * np.pi * fm * t)  # peak speed = multiple * v_nyq
    rf = speckle_rf(d, snr_db=30, seed=3)
    meta = AcquisitionMeta("rf", FS, F0, prf)
    _, comb, vel, t_s = track(rf, meta, "combined", track_depth_m=0.02)
    assert comb.shape == vel.shape == t_s.shape == (600,)
    np.testing.assert_allclose(t_s, t)
    assert np.sqrt(np.mean((comb - d) ** 2)) < 5e-6
    v_true = np.gradient(d, 1 / prf)
    assert np.max(np.abs(vel[1:] - v_true[1:])) < 0.1 * multiple * v_nyq
    _, kas, _, _ = track(rf, meta, "kasai", track_depth_m=0.02)
    if multiple > 1:
        assert np.sqrt(np.mean((kas - d) ** 2)) > 100e-6  # classic phase tracking aliases
    else:
        assert np.sqrt(np.mean((kas - d) ** 2)) < 30e-6


@pytest.mark.parametrize("multiple", [0.5, 5.0])
def test_combined_tracker_at_rf_rate_below_four_f0(multiple):
    # fs = 3.2 f0 as in sample_data: no decimation, the mixer image sits at 1.2 f0
    fs, prf, fm = 3.2 * F0, 300.0, 2.0
    v_nyq = C * prf / (4 * F0)
    t = np.arange(600) / prf
    d = multiple * v_nyq / (2 * np.pi * fm) * np.sin(2 * np.pi * fm * t)
    rf = speckle_rf(d, n=820, fs=fs, snr_db=30, seed=3)
    _, est, _, _ = track(rf, AcquisitionMeta("rf", fs, F0, prf), "combined", track_depth_m=0.02)
    assert np.sqrt(np.mean((est - d) ** 2)) < 5e-6


def test_combined_tracker_follows_abrupt_velocity_changes():
    # the speed steps by 1.6 x v_Nyq every 2 lines, up to 4.8 x v_Nyq (about 11 m/s^2 at
    # 300 lines/s): a constant-velocity prediction is then off by 0.8 of a phase wrap, so the
    # phase must be unwrapped around the NCC shift, not around the prediction
    prf = 300.0
    v_nyq = C * prf / (4 * F0)
    up = np.array([0.0, 1.6, 3.2, 4.8])
    cycle = np.concatenate([up, up[-2:0:-1], -up, -up[-2:0:-1]])
    v = np.tile(np.repeat(cycle, 2), 40)[:600] * v_nyq
    d = np.concatenate(([0.0], np.cumsum(v[:-1]) / prf))
    rf = speckle_rf(d, snr_db=30, seed=4)
    _, est, _, _ = track(rf, AcquisitionMeta("rf", FS, F0, prf), "combined", track_depth_m=0.02)
    assert np.max(np.abs(est - d)) < C / (4 * F0)  # no phase slip
    assert np.sqrt(np.mean((est - d) ** 2)) < 5e-6


def test_tracker_is_block_size_independent():
    prf = 1000.0
    d = 0.4e-3 * np.sin(2 * np.pi * 1.5 * np.arange(700) / prf)
    rf = speckle_rf(d, snr_db=30, seed=5)
    meta = AcquisitionMeta("rf", FS, F0, prf)
    _, a, _, _ = track(rf, meta, "combined", block=700, track_depth_m=0.015)
    _, b, _, _ = track(rf, meta, "combined", block=37, track_depth_m=0.015)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_tracker_iq_input_matches_truth():
    prf = 1000.0
    d = 0.3e-3 * np.sin(2 * np.pi * 1.0 * np.arange(800) / prf)
    iq = demod.rf_to_iq(speckle_rf(d, snr_db=30, seed=7), FS, F0)
    meta = AcquisitionMeta("iq", FS / demod.iq_decimation(FS, F0), F0, prf)
    _, est, _, _ = track(iq, meta, "combined", track_depth_m=0.02)
    assert np.sqrt(np.mean((est - d) ** 2)) < 5e-6


def test_tracker_auto_depth_picks_the_moving_layer():
    # static speckle everywhere, a bright layer at 20-23 mm moving 0.5 mm
    prf, n = 1000.0, 1000
    d = 0.5e-3 * np.sin(2 * np.pi * 2.0 * np.arange(n) / prf)
    static = speckle_rf(np.zeros(n), snr_db=60, seed=11)
    moving = speckle_rf(d, snr_db=60, seed=12)
    z = np.arange(2048) * C / (2 * FS)
    layer = ((z > 0.020) & (z < 0.023)).astype(np.float32)
    rf = static * (1 - layer) + 3 * moving * layer
    meta = AcquisitionMeta("rf", FS, F0, prf)
    tracker, est, _, t_s = track(rf, meta, "combined", select_s=0.2)
    assert 0.020 < tracker.depth_m < 0.023
    assert t_s.shape == (n,)
    assert np.sqrt(np.mean((est - d) ** 2)) < 5e-6


def test_tracker_rejects_depth_outside_line():
    meta = AcquisitionMeta("rf", FS, F0, 1000.0)
    tracker = MotionTracker(track_depth_m=0.5)
    with pytest.raises(DataError, match="track-depth"):
        tracker.prepare(meta, 2048)


# -- simulator truth ------------------------------------------------------------------------
def test_tracker_against_simulator_truth():
    sim = simulate("cardiac_regular", seconds=3.0, prf_hz=1000.0, snr_db=30.0, seed=1)
    truth = sim.truth
    # the 1 mm points of the grid (it may hold extra points at the profile's kinks)
    mm = np.flatnonzero(np.abs(truth.depths_m / 1e-3 - np.round(truth.depths_m / 1e-3)) < 1e-6)
    disp = truth.displacement_m.astype(np.float64)[:, mm]
    # a rigidly moving layer (equal truth at neighbouring 1 mm depths, moving): there the
    # trace does not depend on which point inside the window is followed
    rigid = (np.ptp(disp, axis=0) > 1e-3) & (np.abs(disp - np.roll(disp, 1, axis=1)).max(axis=0) < 1e-6)
    rigid &= np.roll(rigid, -1)
    k = int(np.flatnonzero(rigid)[0])
    depth = float(truth.depths_m[mm[k]])
    _, est, _, _ = track(sim.lines, sim.meta, "combined", block=256, track_depth_m=depth)
    err = est - disp[:, k]
    assert np.sqrt(np.mean(err**2)) < 5e-6


def test_auto_echo_is_centred_on_the_echo_it_follows():
    """Effusion (sample_data/sinusoid.h5): the echo chosen over the first second is the lung
    line, which at line 0 lay below the best-scoring fixed window. The window is centred on
    it: the reported depth is the lung line's (envelope peak of line 0) and the trace is the
    truth of the rigid lung there, not of the compressing fluid above."""
    sim = simulate("sinusoid", seconds=2.0, prf_hz=400.0, fs_hz=16e6, depth_m=0.04, seed=1)
    truth = sim.truth
    disp = truth.displacement_m.astype(np.float64)
    moving = np.ptp(disp, axis=0) > 0.5e-3
    rigid = moving & (np.abs(disp - np.roll(disp, -1, axis=1)).max(axis=0) < 1e-6)
    k = int(np.flatnonzero(rigid)[0])  # first grid depth in the lung: the lung line is above it
    z = sim.meta.depth_m(np.arange(sim.lines.shape[1]))
    env = np.abs(signal.hilbert(sim.lines[0].astype(np.float64)))
    bracket = (z > truth.depths_m[k - 1]) & (z <= truth.depths_m[k])
    lung_line = z[bracket][np.argmax(env[bracket])]
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=256)
    assert abs(tracker.depth_m - lung_line) < 0.1e-3
    assert np.sqrt(np.mean((est - disp[:, k]) ** 2)) < 5e-6


def test_auto_echo_at_a_steep_displacement_gradient_matches_exact_truth():
    """The pericardium (cardiac_regular) sits where the simulated displacement changes by up
    to 1.4 mm per mm of depth, so the 1 mm truth grid cannot score it: the trace is compared
    with the scene's exact Lagrangian displacement at the reported depth."""
    kw = dict(prf_hz=1000.0, fs_hz=None, depth_m=None, snr_db=30.0, seed=1)
    sim = simulate("cardiac_regular", seconds=3.0, **kw)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=256)
    scene = simulator._setup(
        "cardiac_regular", f0_hz=None, rate_per_min=None, breath_per_min=None, bandwidth=0.6,
        attenuation_db_cm_mhz=None, n_samples=None, c_m_s=C, **kw,
    ).renderer.scene
    exact = simulator._displacement_since_line0(scene, np.array([tracker.depth_m]), sim.timestamps_s)[:, 0]
    assert np.ptp(exact) > 5e-3  # a fast echo: 0.44 x v_Nyq at 1000 lines/s
    assert np.sqrt(np.mean((est - exact) ** 2)) < 5e-6


# -- maps and strain ------------------------------------------------------------------------
def test_displacement_map_and_lsq_strain_of_uniform_compression():
    strain_true = -0.01  # 1 % compression towards the probe-side anchor at z = 0
    n = 6
    z = np.arange(2048) * C / (2 * FS)
    rng = np.random.default_rng(2)
    zs = rng.uniform(0, z[-1], 3000)
    amp = rng.normal(size=3000)
    sigma_t = 1.0 / (2 * np.pi * 0.6 * F0 / 2.355)
    t = np.arange(2048) / FS
    lines = []
    for i in range(n):
        zi = zs * (1 + strain_true * i / (n - 1))
        tt = t[None, :] - 2 * zi[:, None] / C
        lines.append((amp[:, None] * np.exp(-(tt**2) / (2 * sigma_t**2)) * np.cos(2 * np.pi * F0 * tt)).sum(0))
    rf = np.asarray(lines, np.float32)
    meta = AcquisitionMeta("rf", FS, F0, 1000.0)
    dmap = motion.displacement_map(rf, meta, window_m=1.5e-3, step_m=0.5e-3)
    inner = (dmap.depths_m > 0.003) & (dmap.depths_m < 0.035)
    np.testing.assert_allclose(dmap.displacement_m[-1, inner], strain_true * dmap.depths_m[inner], atol=5e-6)
    strain = motion.lsq_strain(dmap.displacement_m[-1], float(np.diff(dmap.depths_m)[0]), kernel=9)
    assert np.nanmedian(strain[inner]) == pytest.approx(strain_true, rel=0.05)
    assert motion.strain_snr(strain[inner]) > 10


def test_lsq_strain_equals_polyfit_slope():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 20))
    s = motion.lsq_strain(u, 0.25e-3, kernel=5)
    z = np.arange(5) * 0.25e-3
    for r in range(3):
        for k in range(2, 18):
            assert s[r, k] == pytest.approx(np.polyfit(z, u[r, k - 2 : k + 3], 1)[0], rel=1e-9)
    assert np.isnan(s[:, :2]).all() and np.isnan(s[:, -2:]).all()


def test_strain_snr_and_cnr_formulas():
    a = np.array([0.9, 1.0, 1.1, 1.0])
    b = np.array([1.9, 2.1, 2.0, 2.0])
    assert motion.strain_snr(a) == pytest.approx(1.0 / np.std(a, ddof=1))
    assert motion.strain_cnr(a, b) == pytest.approx(2 * 1.0**2 / (np.var(a, ddof=1) + np.var(b, ddof=1)))
    with pytest.raises(DataError):
        motion.strain_snr(np.array([1.0]))


def test_tracker_on_envelope_input_uses_ncc():
    prf = 1000.0
    d = 0.3e-3 * np.sin(2 * np.pi * 1.0 * np.arange(600) / prf)
    env = np.abs(demod.rf_to_iq(speckle_rf(d, snr_db=30, seed=9), FS, F0, decimation=1)).astype(np.float32)
    meta = AcquisitionMeta("envelope", FS, 0.0, prf)
    tracker, est, _, _ = track(env, meta, "combined", track_depth_m=0.02)
    assert tracker.effective_estimator == "ncc"
    assert np.sqrt(np.mean((est - d) ** 2)) < 10e-6  # envelope NCC: sub-sample by parabola only


def test_tracker_gives_no_trace_for_lines_too_short():
    meta = AcquisitionMeta("rf", FS, F0, 1000.0)
    tracker = MotionTracker()
    tracker.prepare(meta, 64)
    assert not tracker.active
    out = tracker.process(LineBlock(0, 0.0, np.zeros((10, 64), np.int16)))
    assert out.t_s.shape == out.displacement_m.shape == (0,)
    assert tracker.flush().t_s.shape == (0,)


def test_tracker_trace_does_not_depend_on_block_size():
    """The echo is chosen on the same lines however the stream is cut, so the trace and its
    depth are the same for any block size (here an effusion, whose choice once varied)."""
    sim = simulate("sinusoid", seconds=2.0, prf_hz=400.0, fs_hz=16e6, depth_m=0.04, seed=1)

    def trace(block_lines):
        tracker = MotionTracker()
        tracker.prepare(sim.meta, sim.lines.shape[1])
        parts = [
            tracker.process(LineBlock(i, i / 400.0, sim.lines[i : i + block_lines]))
            for i in range(0, sim.lines.shape[0], block_lines)
        ]
        parts.append(tracker.flush())
        return np.concatenate([p.displacement_m for p in parts]), tracker.depth_m

    whole, depth = trace(sim.lines.shape[0])
    assert whole.shape == (sim.lines.shape[0],)
    for block_lines in (37, 256):
        part, part_depth = trace(block_lines)
        np.testing.assert_allclose(part, whole, atol=1e-9)
        assert part_depth == depth


def _exact_truth(scenario, sim, tracked_m, **kw):
    """The scene's Lagrangian displacement (n_lines,) since line 0 of the tissue at
    ``tracked_m`` in line 0, and the scene (independent of the tracker)."""
    scene = simulator._setup(
        scenario, f0_hz=None, rate_per_min=None, breath_per_min=None, bandwidth=0.6,
        attenuation_db_cm_mhz=None, n_samples=None, c_m_s=C, **kw,
    ).renderer.scene
    return simulator._displacement_since_line0(scene, np.array([tracked_m]), sim.timestamps_s)[:, 0], scene


def _bright_reflector_at_line0(scene, near_m):
    """Line-0 depth (m) of the bright reflector (amplitude >= 10: pericardium, pleura, lung
    line; speckle and walls are below 6) nearest ``near_m``."""
    bright = np.flatnonzero(np.abs(scene.amp) >= 10.0)
    z = scene.z_m[bright]
    line0 = z + scene.displacement_m(scene.ref_z_m[bright], np.zeros(1))[0] * scene.disp_scale[bright]
    return float(line0[np.argmin(np.abs(line0 - near_m))])


@pytest.mark.parametrize(
    "scenario, prf_hz, snr_db",
    [
        ("sinusoid", 1000.0, 30.0),  # the lung line swings 1.7 mm higher during the first second
        ("cardiac_regular", 1000.0, 20.0),  # line 0 in systole: the pericardium 5.6 mm above diastole
    ],
)
def test_auto_echo_is_found_at_line0_when_it_moved_away_during_selection(scenario, prf_hz, snr_db):
    """Seed 2: the window scored best over the selection second holds the bright echo most of
    that time, but at line 0, the line the trace is relative to, the echo was elsewhere (and
    the window held fluid or deep speckle, whose motion differs: 1.1 mm / 0.66 mm RMSE). The
    echo is located where it fills the window and tracked back to line 0."""
    kw = dict(prf_hz=prf_hz, fs_hz=None, depth_m=None, snr_db=snr_db, seed=2)
    sim = simulate(scenario, seconds=2.5, **kw)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=256)
    exact, scene = _exact_truth(scenario, sim, tracker.depth_m, **kw)
    assert abs(tracker.depth_m - _bright_reflector_at_line0(scene, tracker.depth_m)) < 0.15e-3
    assert np.ptp(exact) > 2e-3
    assert np.sqrt(np.mean((est - exact) ** 2)) < 5e-6


def test_low_line_rate_tracker_keeps_the_bright_echo_not_a_faint_one_nearby():
    """Seed 2, cardiac_regular at 100 lines/s (10 ms per line, 4.3 x v_Nyq): the NCC search
    around the prediction spans +-1.2 mm to allow for systolic acceleration, and at 0.29 s
    it holds, 1.2 mm above the pericardium, a lone echo 15 % as bright. NCC ignores
    amplitude, so that echo matched as well (0.96 against 0.95) and the trace jumped onto it
    (2.9 mm RMSE over 10 s, 2.7 mm over these 2 s). Of the NCC maxima the one whose energy agrees is taken."""
    kw = dict(prf_hz=100.0, fs_hz=None, depth_m=None, snr_db=30.0, seed=2)
    sim = simulate("cardiac_regular", seconds=2.0, **kw)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=256)
    exact, scene = _exact_truth("cardiac_regular", sim, tracker.depth_m, **kw)
    assert abs(tracker.depth_m - _bright_reflector_at_line0(scene, tracker.depth_m)) < 0.15e-3
    assert np.ptp(exact) > 4e-3
    assert np.sqrt(np.mean((est - exact) ** 2)) < 5e-6


def test_ncc_peak_prefers_the_echo_whose_energy_matches():
    """A lone pulse as reference; the line holds a copy 15 % as bright 9.3 samples before the
    echo. Both match with NCC ~1; the echo whose energy agrees is taken, sub-sample."""
    pulse = lambda centre: np.exp(-0.5 * ((np.arange(80) - centre) / 1.2) ** 2)
    ref = pulse(6.0)[:12].astype(np.float32)
    cur = (0.15 * pulse(30.0) + pulse(39.3)).astype(np.float32)
    shift, peak, _ = motion._ncc_peak(ref, cur, 20, 0, 30)  # the copy at lag 4, the echo at 13.3
    assert abs(shift - 13.3) < 0.1 and peak > 0.95


@pytest.mark.parametrize("fade", [0.5, 0.7])
def test_ncc_peak_stays_on_a_fading_echo_not_a_bright_echo_of_another_shape(fade):
    """The reference is a lone pulse; the line holds that echo faded to 50 % / 70 % (NCC 1,
    energy agreement 0.8 / 0.94) and, 10 samples further, an echo as bright as the reference
    but wider (NCC 0.936 / 0.978 against the reference). The shape decides: the shift stays on
    the faded echo (ranking by NCC x agreement took the other one)."""
    pulse = lambda centre, width: np.exp(-0.5 * ((np.arange(80) - centre) / width) ** 2)
    ref = pulse(6.0, 1.2)[:12].astype(np.float32)
    width = {0.5: 2.0, 0.7: 1.6}[fade]  # the competitor's NCC: 0.936 at 50 %, 0.978 at 70 %
    cur = (fade * pulse(33.0, 1.2) + pulse(43.0, width)).astype(np.float32)
    seg = lambda lag: cur[20 + lag : 32 + lag].astype(np.float64)
    ncc = lambda lag: np.corrcoef(ref, seg(lag))[0, 1]
    assert ncc(17) > {0.5: 0.93, 0.7: 0.975}[fade]  # the competitor matches well (lag 17)
    shift, peak, agreement = motion._ncc_peak(ref, cur, 20, 0, 30)  # the faded echo at lag 7
    assert abs(shift - 7.0) < 0.1 and peak > 0.99
    assert agreement == pytest.approx(2 * fade / (1 + fade**2), abs=0.02)


def test_moving_echo_score_equals_a_direct_evaluation():
    """moving_echo_score against box sums written out per pair and depth (edges repeat the
    nearest value, as ``mode='nearest'``): power |<R1>| x coherence-weighted mean v^2 x mean
    coherence^2, v the Kasai velocity of <R1>."""
    rng = np.random.default_rng(3)
    iq_a = (rng.normal(size=(7, 40)) + 1j * rng.normal(size=(7, 40))).astype(np.complex64)
    iq_b = (iq_a * np.exp(-0.4j) + 0.3 * (rng.normal(size=(7, 40)) + 1j * rng.normal(size=(7, 40)))).astype(np.complex64)
    prf, window, ensemble = 1000.0, 5, 3
    score = echo_score.moving_echo_score(iq_a, iq_b, prf, F0, C, window, ensemble)
    r1 = np.conj(iq_a.astype(np.complex128)) * iq_b
    n_p, n_s = r1.shape
    summed = np.empty(r1.shape)
    coherence = np.empty(r1.shape)
    v = np.empty(r1.shape)
    for i in range(n_p):
        rows = np.clip(np.arange(i - ensemble // 2, i - ensemble // 2 + ensemble), 0, n_p - 1)
        for k in range(n_s):
            cols = np.clip(np.arange(k - window // 2, k - window // 2 + window), 0, n_s - 1)
            box = r1[np.ix_(rows, cols)]
            mean = box.mean()
            summed[i, k] = abs(mean)
            coherence[i, k] = abs(mean) / np.abs(box).mean()
            v[i, k] = -C * prf * np.angle(mean) / (4 * np.pi * F0)
    v_ms = (coherence * v**2).sum(0) / coherence.sum(0)
    expected = summed.mean(0) * v_ms * coherence.mean(0) ** 2
    np.testing.assert_allclose(score, expected, rtol=1e-9)
    # the phase -0.4 rad per pair is the velocity 0.4 c PRF / (4 pi f0) everywhere
    assert np.median(v) == pytest.approx(0.4 * C * prf / (4 * np.pi * F0), rel=0.05)


def _smoothed_noise(rng, n):
    """(n,) random values smoothed over 5 samples: peaks without plateaus."""
    return np.convolve(rng.normal(size=n), np.ones(5) / 5, mode="same")


@pytest.mark.parametrize("seed", [3, 4])
def test_local_maxima_match_scipy_find_peaks(seed):
    """Largest first, each at least ``separation`` from every larger one taken: the rule of
    scipy.signal.find_peaks(distance=...) (ends kept low here, where find_peaks never sees a peak)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate(([-10.0], _smoothed_noise(rng, 300), [-10.0]))
    peaks, _ = signal.find_peaks(x, distance=7)
    expected = peaks[np.argsort(-x[peaks])][:6]
    assert echo_score.local_maxima(x, 7, 6) == [int(p) for p in expected]


def test_tracked_echo_score_of_an_analytic_track():
    """An echo of amplitude A moving at constant v, its windows taken where it is: power A^2,
    coherence 1, mean v^2 = v^2, so the score is A^2 v^2; it falls by e when the forward and
    backward tracks differ by CONSISTENCY_WRAPS wraps RMS, and is 0 for a static echo."""
    amp, v_m_s, prf = 3.0, 0.02, 200.0
    rng = np.random.default_rng(0)
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, size=(40, 12)))
    seg = (amp * phase).astype(np.complex64)
    track_m = v_m_s * np.arange(100) / prf
    wrap_m = C / (2 * F0)
    score = echo_score.tracked_echo_score(seg, seg, track_m, prf, 4, 0.0, wrap_m)
    assert score == pytest.approx(amp**2 * v_m_s**2, rel=1e-5)
    slipped = echo_score.tracked_echo_score(seg, seg, track_m, prf, 4, echo_score.CONSISTENCY_WRAPS * wrap_m, wrap_m)
    assert slipped == pytest.approx(score / np.e, rel=1e-9)
    assert echo_score.tracked_echo_score(seg, seg, np.zeros(100), prf, 4, 0.0, wrap_m) == 0.0


@pytest.mark.parametrize("scenario", ["cardiac_regular", "cardiac_irregular"])
def test_low_line_rate_auto_echo_is_the_pericardium_not_a_wall_beside_a_static_echo(scenario):
    """Seed 3 at 100 lines/s (10 ms per line): the pericardium moves up to 0.6 mm per line,
    more than its pulse length, so over fixed windows it decorrelates and aliases, and the
    fixed-window score chose the RV wall beside the static chest wall (10.2-10.6 mm), which
    the tracker loses between the two (1.9 and 2.0 mm RMSE over 10 s). Scored along each
    candidate's own track, with the forward-backward check, the pericardium is taken."""
    kw = dict(prf_hz=100.0, fs_hz=None, depth_m=None, snr_db=30.0, seed=3)
    sim = simulate(scenario, seconds=3.0, **kw)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=256)
    exact, scene = _exact_truth(scenario, sim, tracker.depth_m, **kw)
    assert abs(tracker.depth_m - _bright_reflector_at_line0(scene, tracker.depth_m)) < 0.15e-3
    assert tracker.depth_m > 0.05
    assert np.ptp(exact) > 4e-3
    assert np.sqrt(np.mean((est - exact) ** 2)) < 5e-6


def test_tracker_rejects_non_finite_lines_while_choosing_the_echo():
    """A NaN in the selection second is a typed error naming what was expected, not a crash
    inside the candidate tracks (readers reject such lines before they reach the tracker)."""
    sim = simulate("cardiac_regular", seconds=1.2, prf_hz=300.0, snr_db=30.0, seed=1)
    lines = sim.lines.astype(np.float32)
    lines[100, 7] = np.nan
    tracker = MotionTracker()
    tracker.prepare(sim.meta, lines.shape[1])
    with pytest.raises(DataError, match="finite line samples"):
        for start in range(0, lines.shape[0], 128):
            tracker.process(LineBlock(start, start / 300.0, lines[start : start + 128]))
        tracker.flush()


# -- scanner-like data: coarse IQ, clutter, nothing moving ------------------------------------
def _phantom(scenario, rate_per_min, snr_db=30.0, seed=1, seconds=3.0):
    """A simulated motion phantom as a scanner stores it (IQ every 0.77 mm at 2.5 MHz, more
    than two phase wraps per sample; 350 lines/s) and its exact truth function."""
    kw = dict(prf_hz=350.0, fs_hz=None, depth_m=None, snr_db=snr_db, seed=seed)
    sim = simulate(scenario, seconds=seconds, rate_per_min=rate_per_min, iq_fs_hz=1e6, **kw)
    scene = simulator._setup(
        scenario, f0_hz=None, rate_per_min=rate_per_min, breath_per_min=None, bandwidth=0.6,
        attenuation_db_cm_mhz=None, n_samples=None, c_m_s=C, **kw,
    ).renderer.scene

    def exact(depth_m):
        return simulator._displacement_since_line0(scene, np.array([depth_m]), sim.timestamps_s)[:, 0]

    return sim, exact


def test_inphase_weights_are_what_the_correlations_phase_averages():
    """The phase of sum(conj(a) b) over a window whose samples' phases differ by small delta_k
    from a common phase is, to first order, the mean of phase + delta_k weighted by the
    in-phase shares (what names a trace's depth); with no differences the shares are the
    samples' energies. Checked against numpy's angle of the sum, and the kernel's per-pair
    sums against the batched ones."""
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(200, 16)) + 1j * rng.normal(size=(200, 16))).astype(np.complex64)
    base = rng.uniform(-np.pi, np.pi, size=(200, 1))
    delta = 1e-3 * rng.normal(size=(200, 16))
    b = (a * np.exp(1j * (base + delta))).astype(np.complex64)
    np.testing.assert_allclose(motion.inphase_weights(a[:1], (a * np.exp(1j * base))[:1]), np.abs(a[0]) ** 2, rtol=1e-5)
    for i in range(5):
        w = motion.inphase_weights(a[i : i + 1], b[i : i + 1])
        phase = np.angle(np.sum(np.conj(a[i].astype(np.complex128)) * b[i]))
        assert np.angle(np.exp(1j * (phase - base[i, 0]))) == pytest.approx(np.sum(w * delta[i]) / np.sum(w), abs=1e-6)
    out = np.zeros(16)
    for i in range(200):
        phase = np.angle(np.sum(np.conj(a[i].astype(np.complex128)) * b[i]))
        motion._add_inphase_weights(a[i], b[i], 0, phase, out)
    np.testing.assert_allclose(out, motion.inphase_weights(a, b), rtol=1e-4)
    assert motion.inphase_depth_index(np.zeros(16)) is None
    assert motion.inphase_depth_index(np.r_[0.0, 1.0, -5.0, 1.0]) == pytest.approx(2.0)  # negative sums count as 0


@pytest.mark.parametrize("rate_per_min", [96.0, 192.0])  # 0.93 and 1.86 x the aliasing velocity
def test_coarse_iq_is_tracked_without_slips(rate_per_min):
    """A block moving 1 cm peak to peak, IQ sampled every 0.77 mm: the earlier tracker (NCC
    on 4 coarse samples, its phase unwrapped around that NCC) slipped by wraps on 99.8 % of
    the lines (2.7 mm RMSE at the right depth). Interpolated onto a quarter-wavelength grid and
    unwrapped around the constant-velocity prediction it follows the exact truth."""
    sim, exact = _phantom("moving_phantom_clean", rate_per_min)
    assert sim.meta.kind == "iq" and 1540 / (2 * sim.meta.fs_hz) > 2 * 1540 / (2 * 2.5e6)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=128)
    truth = exact(tracker.depth_m)
    assert tracker.representation == "raw" and tracker.upsample >= 5
    assert np.ptp(truth) > 9e-3
    assert np.sqrt(np.mean((est - truth) ** 2)) < 5e-6
    assert np.max(np.abs(est - truth)) < 1540 / (4 * 2.5e6) / 4  # far from a slip (a quarter wrap)
    assert tracker.note is None  # a moving echo, no caution


def test_moving_echo_under_clutter_is_chosen_and_tracked_on_filtered_lines():
    """Stationary clutter 6 dB above the moving block's speckle: the earlier choice took an
    echo 26.7 mm deep (clutter) and reported 2.6 mm of motion for 10 mm (2 mm RMSE). The
    clutter-filtered candidates win, and the trace follows the block, quality high."""
    sim, exact = _phantom("moving_phantom", 96.0)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=128)
    truth = exact(tracker.depth_m)
    assert tracker.representation == "clutter" and tracker.status == "tracking"
    assert tracker.depth_m > 0.029  # in the block (its surface rests 30-38 mm deep, +-5 mm)
    assert np.ptp(est) == pytest.approx(np.ptp(truth), rel=0.02)
    assert np.sqrt(np.mean((est - truth) ** 2)) < 30e-6
    assert np.max(np.abs(est - truth)) < 1540 / (4 * 2.5e6)  # no slip
    assert tracker.note is None
    parts_quality = MotionTracker()
    parts_quality.prepare(sim.meta, sim.lines.shape[1])
    q = np.concatenate([parts_quality.process(LineBlock(0, 0.0, sim.lines)).quality, parts_quality.flush().quality])
    assert q.shape == (sim.lines.shape[0],) and 0.0 <= q.min() and q.max() <= 1.0 and np.median(q) > 0.9


def test_a_gate_on_the_moving_echo_under_clutter_follows_it():
    """The user's gate on the block's surface: the window stays there, and is followed on
    clutter-filtered lines (tracked as stored it followed the clutter: 10 mm RMSE)."""
    sim, exact = _phantom("moving_phantom", 96.0, seed=2)
    auto, _, _, _ = track(sim.lines, sim.meta, "combined", block=128)
    gate = auto.depth_m
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=128, track_depth_m=gate)
    assert tracker.representation == "clutter" and abs(tracker.depth_m - gate) < 1e-3
    assert np.sqrt(np.mean((est - exact(tracker.depth_m)) ** 2)) < 30e-6
    assert tracker.note is None  # it comes back when tracked backwards: no caution


def test_a_gate_whose_echo_does_not_come_back_gets_a_caution(tmp_path, capsys):
    """10 dB under clutter, a gate inside the block (61.2 mm): on the stored lines the trace
    walks off by centimetres against exact truth while its lines correlate well, so it is
    still shown, as asked, with a caution: its echo fails the backwards check that an
    automatically chosen echo must pass. ``mmode process`` reports it beside the trace."""
    import json

    from mmode.app.cli import main
    from mmode.ingest.h5format import write_recording

    sim, exact = _phantom("moving_phantom", 96.0, snr_db=10.0, seed=1)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=128, track_depth_m=0.0612)
    assert tracker.status == "tracking"
    assert np.sqrt(np.mean((est - exact(tracker.depth_m)) ** 2)) > 10e-3
    assert "comes back" in tracker.note and "may not follow it" in tracker.note
    path = tmp_path / "phantom.h5"
    write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s)
    assert main(["process", str(path), "--json", "--model", "none", "--motion", "classic", "--track-depth", "0.0612"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["motion"] is not None and report["motion_note"] == tracker.note


def test_a_stationary_echo_chosen_over_motion_hidden_under_clutter_gets_a_caution(tmp_path, capsys):
    """5 dB under clutter: the clutter-filtered lines show the block's motion but none of it
    tracks back within half a wrap, so the automatic choice keeps an echo of the stored lines
    that barely moves (under a millimetre where the exact truth at its depth moves 10 mm).
    The trace is shown with a caution that it may be stationary clutter; ``mmode process``
    reports it."""
    import json

    from mmode.app.cli import main
    from mmode.ingest.h5format import write_recording

    sim, exact = _phantom("moving_phantom", 96.0, snr_db=5.0, seed=1)
    tracker, est, _, _ = track(sim.lines, sim.meta, "combined", block=128)
    assert tracker.status == "tracking" and tracker.representation == "raw"
    assert np.ptp(est) < 1e-3 and np.ptp(exact(tracker.depth_m)) > 9e-3
    assert "may be stationary clutter" in tracker.note and "does not come back" in tracker.note
    path = tmp_path / "phantom.h5"
    write_recording(path, sim.meta, sim.lines, timestamps_s=sim.timestamps_s)
    assert main(["process", str(path), "--json", "--model", "none", "--motion", "classic"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["motion"] is not None and report["motion_note"] == tracker.note


@pytest.mark.parametrize("scenario", ["no_contact", "static"])
def test_nothing_moving_gives_no_trace_and_says_why(scenario):
    """Probe in air (ring-down and noise), or bright echoes that stand still: no trace at the
    probe face, a note instead."""
    if scenario == "static":
        meta = AcquisitionMeta("rf", FS, F0, 500.0)
        scene = point_reflectors(np.array([0.01, 0.02, 0.03]), np.array([20.0, 15.0, 10.0]))
        rf = sim_render.render_rf(scene, meta, 2048, np.arange(600) / 500.0)
        rf = rf + np.random.default_rng(0).normal(size=rf.shape).astype(np.float32) * 0.05 * rf.std()
        lines = rf.astype(np.float32)
    else:
        sim = simulate("no_contact", seconds=1.5, prf_hz=500.0, seed=1)
        meta, lines = sim.meta, sim.lines
    tracker, est, _, _ = track(lines, meta, "combined", block=100)
    assert tracker.status == "no_motion" and est.shape == (0,)
    assert tracker.note.startswith("no moving echo") and np.isnan(tracker.depth_m)


def test_the_choice_keeps_out_of_the_ring_down():
    sim, _ = _phantom("moving_phantom", 96.0, seed=3)
    tracker, _, _, _ = track(sim.lines, sim.meta, "combined", block=128)
    assert tracker.depth_m - tracker.window * tracker.spacing_m / 2 >= echo_choice.RING_DOWN_M - tracker.spacing_m


def test_a_budgeted_call_stops_before_a_step_that_would_overrun(monkeypatch):
    """Steps of 4 ms on a 5.5 ms budget: one step per call (a second would end at 8 ms); steps
    of 1 ms: five per call (a sixth would end at 6 ms)."""
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    meta = AcquisitionMeta(kind="rf", fs_hz=FS, f0_hz=F0, prf_hz=1000.0)
    for step_s, per_call in ((0.004, 1), (0.001, 5)):
        steps = []

        def choice(tr, n, step_s=step_s, steps=steps):
            for _ in range(40):
                clock[0] += step_s
                steps.append(clock[0])
                yield

        monkeypatch.setattr(echo_choice, "choose_echo", choice)
        tracker = MotionTracker(step_budget_s=0.0055, select_s=0.01)
        tracker.prepare(meta, 256)
        counts = []
        for i in range(4):
            before = len(steps)
            tracker.process(LineBlock(10 * i, i / 100.0, np.ones((10, 256), np.float32)))
            counts.append(len(steps) - before)
        assert counts == [per_call] * 4


def test_the_choice_is_spread_over_calls_with_a_step_budget():
    """Live streams: the choice runs a few milliseconds per call; the trace is the same as
    when the choice runs in one go (coarse IQ under clutter: the interpolation of the
    selection and of the clutter-filtered lines goes in steps too)."""
    sim, _ = _phantom("moving_phantom", 96.0)
    whole, est_whole, _, _ = track(sim.lines, sim.meta, "combined", block=35)
    stepped, est_stepped, _, _ = track(sim.lines, sim.meta, "combined", block=35, step_budget_s=1e-6)
    assert stepped.representation == whole.representation == "clutter" and stepped.upsample > 1
    np.testing.assert_allclose(est_stepped, est_whole, atol=1e-12)
    assert stepped.depth_m == whole.depth_m
