"""Simulator physics and determinism, checked against independent references.

References: scipy.signal (Welch spectra, analytic signal, peak finding), the pulse-echo
delay 2z/c, the Doppler phase relation phi = 4 pi f0 dz / c, and the simulator's own
ground truth only where the test measures the RF independently.
"""

import math

import numpy as np
import pytest
from scipy.signal import find_peaks, hilbert, welch

from mmode.errors import UsageError
from mmode.ingest.meta import CLASSES, AcquisitionMeta
from mmode.ingest.scenarios import SCENARIOS, point_reflectors
from mmode.ingest.sim_render import render_rf
from mmode.ingest.simulator import SimulatedProbe, simulate, simulate_sequence

C = 1540.0


def _kasai_displacement_m(lines: np.ndarray, f0_hz: float, rows: slice) -> np.ndarray:
    """Cumulative axial displacement (n_lines,) from lag-one phase of the analytic signal."""
    iq = hilbert(lines.astype(np.float64), axis=1)[:, rows]
    r1 = np.sum(iq[1:] * np.conj(iq[:-1]), axis=1)
    dphi = np.angle(r1)  # phase advance between lines; displacement away -> phase lags
    return np.concatenate([[0.0], np.cumsum(-dphi * C / (4 * math.pi * f0_hz))])


def _spectrum_peak_hz(lines: np.ndarray, fs_hz: float) -> float:
    """Peak of the mean Welch PSD: vertex of a parabola fitted to log PSD over its -6 dB band
    (a Gaussian spectrum is a parabola in log), robust to speckle ripple."""
    f, p = welch(lines.astype(np.float64), fs=fs_hz, nperseg=128, axis=1)
    p = p.mean(axis=0)
    band = p >= p.max() / 4
    a, b, _ = np.polyfit(f[band], np.log(p[band]), 2)
    return -b / (2 * a)


# -- scenario registry ------------------------------------------------------------------------


def test_every_class_has_a_scenario():
    assert sorted(info.label for info in SCENARIOS.values()) == sorted(CLASSES)
    for name, info in SCENARIOS.items():
        assert info.name == name and info.description


# -- pulse physics ----------------------------------------------------------------------------


def test_rf_spectrum_peaks_at_f0_without_attenuation():
    r = simulate("lung_sliding", seconds=2.0, prf_hz=200, f0_hz=5e6, fs_hz=20e6, attenuation_db_cm_mhz=0.0, seed=3)
    assert abs(_spectrum_peak_hz(r.lines, r.meta.fs_hz) - 5e6) <= 0.05 * 5e6


@pytest.mark.parametrize("f0_hz,fs_hz", [(3e6, 12e6), (7.5e6, 40e6)])
def test_rf_spectrum_follows_f0(f0_hz, fs_hz):
    r = simulate("cardiac_regular", seconds=2.0, prf_hz=100, f0_hz=f0_hz, fs_hz=fs_hz, attenuation_db_cm_mhz=0.0, seed=1)
    assert abs(_spectrum_peak_hz(r.lines, fs_hz) - f0_hz) <= 0.05 * f0_hz


def test_fractional_bandwidth_at_minus_6_db():
    meta = AcquisitionMeta("rf", 40e6, 5e6, 1000)
    rf = render_rf(point_reflectors([0.02], [1.0]), meta, 2048, np.array([0.0]), bandwidth=0.6)[0]
    spec = np.abs(np.fft.rfft(rf.astype(np.float64), 1 << 16))
    f = np.fft.rfftfreq(1 << 16, 1 / meta.fs_hz)
    band = f[spec >= spec.max() / 2]
    assert (band.max() - band.min()) / 5e6 == pytest.approx(0.6, rel=0.03)


def test_attenuation_lowers_centre_frequency_with_depth():
    """Gaussian spectrum times exp(-beta f z): the peak moves to f0 - beta sigma_f^2 z."""
    alpha = 0.7
    meta = AcquisitionMeta("rf", 40e6, 5e6, 1000)
    z = np.array([0.01, 0.05])
    rf = render_rf(point_reflectors(z, [1.0, 1.0], attenuation_db_cm_mhz=alpha), meta, 3000, np.array([0.0]))[0]
    f = np.fft.rfftfreq(1 << 16, 1 / meta.fs_hz)
    sigma_f = 0.6 * 5e6 / (2 * math.sqrt(2 * math.log(2)))
    beta = 2 * alpha / 8.686 / 1e-2 / 1e6  # Np per m per Hz, round trip
    peaks = []
    for zi in z:
        k = int(round(2 * zi / C * meta.fs_hz))
        seg = np.zeros(1 << 16)
        seg[:200] = rf[k - 100 : k + 100]
        spec = np.abs(np.fft.rfft(seg))
        peaks.append(f[np.argmax(spec)])
        # independent: numeric peak of the Gaussian spectrum times the attenuation
        expected = f[np.argmax(np.exp(-((f - 5e6) ** 2) / (2 * sigma_f**2)) * np.exp(-beta * f * zi))]
        assert peaks[-1] == pytest.approx(expected, rel=0.01)
    assert peaks[1] < peaks[0]


def test_attenuated_echoes_match_frequency_domain_synthesis():
    """Independent path: Gaussian spectrum x exp(-beta f z) x exp(-2 pi i f 2z/c), inverse FFT.
    One common scale factor must fit echoes at two depths (amplitude, shape and delay)."""
    alpha, f0, fs, n = 0.7, 5e6, 40e6, 3000
    meta = AcquisitionMeta("rf", fs, f0, 1000)
    z = np.array([0.01, 0.035])
    rf = render_rf(point_reflectors(z, [1.0, -0.5], attenuation_db_cm_mhz=alpha), meta, n, np.array([0.0]))[0]
    n_fft = 1 << 15
    f = np.fft.rfftfreq(n_fft, 1 / fs)
    sigma_f = 0.6 * f0 / (2 * math.sqrt(2 * math.log(2)))
    beta = 2 * alpha / (20 / math.log(10)) / 1e-2 / 1e6  # Np/(m Hz), round trip
    spec = sum(
        a * np.exp(-((f - f0) ** 2) / (2 * sigma_f**2) - beta * f * zi - 2j * np.pi * f * 2 * zi / C)
        for a, zi in zip([1.0, -0.5], z)
    )
    expected = np.fft.irfft(spec, n_fft)[:n]
    k = np.dot(rf, expected) / np.dot(expected, expected)
    assert np.linalg.norm(rf - k * expected) < 0.005 * np.linalg.norm(rf)


@pytest.mark.parametrize("z_m", [0.00731, 0.0123456, 0.04])
def test_reflector_at_depth_z_echoes_at_2z_over_c(z_m):
    meta = AcquisitionMeta("rf", 20e6, 5e6, 1000)
    rf = render_rf(point_reflectors([z_m], [1.0]), meta, 1400, np.array([0.0]))[0]
    env = np.abs(hilbert(rf.astype(np.float64)))
    k = int(np.argmax(env))
    y0, y1, y2 = env[k - 1 : k + 2]
    k_peak = k + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    t_peak_s = k_peak / meta.fs_hz
    assert t_peak_s == pytest.approx(2 * z_m / C, abs=0.05 / meta.fs_hz)


def test_moving_reflector_phase_shift_is_4pi_f0_dz_over_c():
    prf = 2000.0
    v = 0.012  # m/s away from the probe: 6 um per line, a sub-sample shift (38.5 um/sample)
    meta = AcquisitionMeta("rf", 20e6, 5e6, prf)
    t = np.arange(50) / prf
    rf = render_rf(point_reflectors([0.02], [1.0], velocity_m_s=v), meta, 800, t)
    k = int(round(2 * 0.02 / C * meta.fs_hz))
    est = _kasai_displacement_m(rf, 5e6, slice(k - 15, k + 16))
    np.testing.assert_allclose(est, v * t, rtol=0, atol=2e-7)


def test_simulated_phase_shift_matches_truth_displacement():
    """Sinusoid: the lung below the lung line moves rigidly; Kasai on the RF must follow truth."""
    r = simulate(
        "sinusoid", seconds=3.0, prf_hz=500, snr_db=40, attenuation_db_cm_mhz=0.0, seed=5, breath_per_min=24
    )
    d = r.truth.displacement_m
    span = d.max(axis=0) - d.min(axis=0)
    rigid = np.flatnonzero(span > 0.99 * span.max())
    assert span.max() > 3e-3 and rigid.size >= 5
    z_lo, z_hi = r.truth.depths_m[rigid[1]], r.truth.depths_m[rigid[-2]]
    rows = slice(int(r.meta.sample_at_depth(z_lo)), int(r.meta.sample_at_depth(z_hi)))
    est = _kasai_displacement_m(r.lines, r.meta.f0_hz, rows)
    truth = d[:, rigid[1] : rigid[-1]].mean(axis=1)
    np.testing.assert_allclose(est, truth, atol=0.03 * span.max())


def test_cardiac_at_low_prf_exceeds_kasai_limit():
    r = simulate("cardiac_regular", seconds=3.0, prf_hz=400, seed=2)
    v = np.diff(r.truth.displacement_m, axis=0) * r.meta.prf_hz
    assert np.abs(v).max() > r.meta.nyquist_velocity_m_s


# -- noise and quantisation --------------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [10.0, 25.0])
def test_snr_definition_on_a_static_scene(snr_db):
    """no_contact is static: the mean over lines is the echo, the rest is noise."""
    r = simulate("no_contact", seconds=0.5, prf_hz=1000, snr_db=snr_db, seed=4)
    x = r.lines.astype(np.float64)
    signal = x.mean(axis=0)
    noise = x - signal
    measured = 10 * np.log10(np.mean(signal**2) / noise.var())
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_int16_uses_the_range_without_clipping():
    r = simulate("lung_sliding", seconds=1.0, prf_hz=500, seed=8)
    assert r.lines.dtype == np.int16
    peak = np.abs(r.lines.astype(np.int32)).max()
    assert 8000 < peak
    assert np.mean(np.abs(r.lines.astype(np.int32)) >= 32767) < 1e-5


# -- determinism, streaming, sequences ---------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes():
    a = simulate("cardiac_irregular", seconds=0.5, prf_hz=500, seed=11)
    b = simulate("cardiac_irregular", seconds=0.5, prf_hz=500, seed=11)
    c = simulate("cardiac_irregular", seconds=0.5, prf_hz=500, seed=12)
    assert a.lines.tobytes() == b.lines.tobytes()
    assert a.truth.displacement_m.tobytes() == b.truth.displacement_m.tobytes()
    assert a.lines.tobytes() != c.lines.tobytes()


@pytest.mark.parametrize("cuts", [[1, 255, 256, 300], [700, 157], [37] * 23])
def test_probe_stream_equals_recording_however_cut(cuts):
    n = sum(cuts)
    rec = simulate("lung_point", seconds=n / 500, prf_hz=500, seed=6)
    probe = SimulatedProbe("lung_point", prf_hz=500, seed=6)
    assert probe.meta == rec.meta and probe.n_samples == rec.lines.shape[1]
    blocks = [probe.next_block(k) for k in cuts]
    assert [b.seq for b in blocks] == list(np.cumsum([0] + cuts[:-1]))
    assert blocks[3 if len(blocks) > 3 else 1].t_s == pytest.approx(blocks[3 if len(blocks) > 3 else 1].seq / 500)
    np.testing.assert_array_equal(np.concatenate([b.lines for b in blocks]), rec.lines)
    t = probe.truth(0, n)
    np.testing.assert_allclose(t.displacement_m, rec.truth.displacement_m, atol=1e-9)


def test_probe_rejects_bad_parameters():
    with pytest.raises(UsageError):
        SimulatedProbe("lung_sliding", prf_hz=0.0)
    with pytest.raises(UsageError):
        SimulatedProbe("lung_sliding", n_samples=16).next_block(0)
    with pytest.raises(TypeError):
        SimulatedProbe("lung_sliding", seconds=3)


def test_sequence_labels_annotations_and_seamless_chest_wall():
    r = simulate_sequence([("lung_sliding", 1.0), ("no_sliding", 1.0), ("lung_point", 1.0)], prf_hz=400, seed=9)
    assert r.lines.shape[0] == 1200
    assert [(a.start_line, a.end_line, a.label) for a in r.annotations] == [
        (0, 400, "lung_sliding"),
        (400, 800, "no_sliding"),
        (800, 1200, "lung_point"),
    ]
    expect = np.repeat([CLASSES.index(s) for s in ("lung_sliding", "no_sliding", "lung_point")], 400)
    np.testing.assert_array_equal(r.truth.labels, expect)
    # the chest wall (first 8 mm) is the same tissue on both sides of each change
    rows = slice(0, int(r.meta.sample_at_depth(0.008)))
    for k in (400, 800):
        a, b = r.lines[k - 1, rows].astype(float), r.lines[k, rows].astype(float)
        assert np.corrcoef(a, b)[0, 1] > 0.9
    np.testing.assert_allclose(np.diff(r.timestamps_s), 1 / 400)


# -- what each scenario looks like --------------------------------------------------------------


def _subpleural_correlation(name: str, seed: int) -> np.ndarray:
    """Correlation (n_lines - 10,) of envelope lines 40 ms apart, 3-12 mm below the pleura
    (the brightest line in the first 3 cm)."""
    r = simulate(name, seconds=3.0, prf_hz=250, seed=seed)
    env = np.abs(hilbert(r.lines.astype(np.float64), axis=1))
    mean_profile = env.mean(axis=0)
    k_pleura = int(np.argmax(mean_profile[: int(r.meta.sample_at_depth(0.03))]))
    a = k_pleura + int(0.003 / r.meta.sample_spacing_m)
    b = k_pleura + int(0.012 / r.meta.sample_spacing_m)
    x = env[:, a:b]
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    return np.sum(x[10:] * x[:-10], axis=1) / x.shape[1]


@pytest.mark.parametrize("seed", [1, 2])
def test_lung_sliding_decorrelates_below_pleura_and_no_sliding_does_not(seed):
    sliding = _subpleural_correlation("lung_sliding", seed)
    static = _subpleural_correlation("no_sliding", seed)
    assert static.min() > 0.8
    assert np.percentile(sliding, 10) < 0.5
    assert sliding.mean() < static.mean() - 0.1


def test_lung_point_alternates_with_breathing():
    """Decorrelation below the pleura comes and goes once per breath (20/min here)."""
    r = simulate("lung_point", seconds=9.0, prf_hz=250, rate_per_min=20, seed=3)
    env = np.abs(hilbert(r.lines.astype(np.float64), axis=1))
    k_pleura = int(np.argmax(env.mean(axis=0)[: int(r.meta.sample_at_depth(0.03))]))
    x = env[:, k_pleura + int(0.003 / r.meta.sample_spacing_m) : k_pleura + int(0.012 / r.meta.sample_spacing_m)]
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    corr = np.sum(x[10:] * x[:-10], axis=1) / x.shape[1]
    smooth = np.convolve(corr, np.ones(125) / 125, mode="valid")  # 0.5 s
    assert smooth.max() > 0.85 and smooth.min() < 0.7
    spec = np.abs(np.fft.rfft(smooth - smooth.mean()))
    f = np.fft.rfftfreq(smooth.size, 1 / r.meta.prf_hz)
    assert f[np.argmax(spec)] == pytest.approx(20 / 60, abs=1.5 / (smooth.size / r.meta.prf_hz))


def test_no_contact_is_ring_down_then_noise():
    r = simulate("no_contact", seconds=0.5, prf_hz=1000, seed=2)
    x = r.lines.astype(np.float64)
    echo = x.mean(axis=0)  # static scene: the mean over lines is the echo
    noise_std = (x - echo).std()
    shallow = np.abs(echo[: int(r.meta.sample_at_depth(0.005))]).max()
    deep = np.abs(echo[int(r.meta.sample_at_depth(0.03)) :]).max()
    assert shallow > 30 * noise_std
    assert deep < 5 * noise_std / np.sqrt(x.shape[0])  # only averaged noise is left


def test_septum_and_posterior_wall_move_towards_each_other():
    r = simulate("cardiac_regular", seconds=3.0, prf_hz=200, seed=4)
    d = r.truth.displacement_m
    septum = d[:, np.argmax(d.max(axis=0))]  # moves away from the probe in systole
    posterior = d[:, np.argmin(d.min(axis=0))]  # moves towards the probe
    assert np.corrcoef(septum, posterior)[0, 1] < -0.8
    assert r.truth.depths_m[np.argmax(d.max(axis=0))] < r.truth.depths_m[np.argmin(d.min(axis=0))]
    assert 0.007 < np.ptp(posterior) < 0.016


def _beat_times_s(r) -> np.ndarray:
    d = r.truth.displacement_m
    k = int(np.argmax(d.max(axis=0) - d.min(axis=0)))  # the depth that moves most
    x = d[:, k] - np.median(d[:, k])
    if abs(x.min()) > abs(x.max()):  # systole is the largest excursion from the resting level
        x = -x
    x = x - x.min()
    peaks, _ = find_peaks(x, height=0.5 * x.max(), distance=int(0.25 * r.meta.prf_hz))
    return peaks / r.meta.prf_hz


def test_cardiac_rates_and_rhythm():
    reg = simulate("cardiac_regular", seconds=12.0, prf_hz=100, rate_per_min=75, seed=3)
    irr = simulate("cardiac_irregular", seconds=12.0, prf_hz=100, rate_per_min=75, seed=3)
    rr_reg = np.diff(_beat_times_s(reg))
    rr_irr = np.diff(_beat_times_s(irr))
    assert 60 / rr_reg.mean() == pytest.approx(75, rel=0.05)
    assert rr_reg.std() / rr_reg.mean() < 0.06
    assert rr_irr.std() / rr_irr.mean() > 0.12


def test_sinusoid_swings_at_the_breathing_rate():
    r = simulate("sinusoid", seconds=10.0, prf_hz=100, rate_per_min=18, seed=2)
    d = r.truth.displacement_m
    k = int(np.argmax(d.max(axis=0) - d.min(axis=0)))
    spec = np.abs(np.fft.rfft(d[:, k] - d[:, k].mean()))
    f = np.fft.rfftfreq(d.shape[0], 1 / r.meta.prf_hz)
    assert f[np.argmax(spec)] == pytest.approx(18 / 60, abs=1 / 10.0)


def test_lung_sliding_axial_truth_is_small():
    r = simulate("lung_sliding", seconds=4.0, prf_hz=100, seed=7)
    assert np.abs(r.truth.displacement_m).max() < 1e-3
    assert r.truth.depths_m[1] - r.truth.depths_m[0] == pytest.approx(1e-3)


# -- bad parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(scenario="heart"),
        dict(scenario="lung_sliding", f0_hz=9e6, fs_hz=20e6),
        dict(scenario="lung_sliding", seconds=0.0),
        dict(scenario="lung_sliding", prf_hz=-5.0),
        dict(scenario="lung_sliding", seconds=1e6, prf_hz=5000, n_samples=4096),
        dict(scenario="cardiac_regular", rate_per_min=1000),
        dict(scenario="lung_sliding", snr_db=float("nan")),
        dict(scenario="lung_sliding", rate_per_min=12, breath_per_min=20),
        dict(scenario="lung_sliding", seed=-1),
        dict(scenario="lung_sliding", bandwidth=0.0),
    ],
)
def test_impossible_parameters_raise_usage_error(kwargs):
    name = kwargs.pop("scenario")
    with pytest.raises(UsageError):
        simulate(name, **kwargs)


@pytest.mark.parametrize("breath_per_min", [15.0, 24.0])
def test_a_closing_loop_of_a_lung_view_is_a_whole_breath(breath_per_min):
    """A lung view moves with the breath alone: of the loops of 2 to 4 s, the one that closes
    its motion is the whole breath (4 s at 15/min, 2.5 s at 24/min)."""
    probe = SimulatedProbe("lung_sliding", prf_hz=1000.0, breath_per_min=breath_per_min)
    assert probe.closing_loop_s(2.0, 4.0) == pytest.approx(60.0 / breath_per_min, abs=2e-3)


@pytest.mark.parametrize("span_s", [(0.7, 0.7), (0.35, 0.35), (2.001, 2.0012)])
def test_a_closing_loop_is_whole_lines_within_its_range(span_s):
    probe = SimulatedProbe("cardiac_regular", prf_hz=5000.0)
    loop_s = probe.closing_loop_s(*span_s)
    lines = loop_s * 5000.0
    assert lines == pytest.approx(round(lines)) and span_s[0] - 1e-9 <= loop_s <= span_s[1] + 1e-9
