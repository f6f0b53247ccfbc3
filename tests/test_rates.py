"""Rates on known periodic and irregular traces, and on simulator truth."""

import numpy as np
import pytest

from mmode.dsp import features, rates
from mmode.errors import DataError
from mmode.ingest.simulator import simulate


def pulse_train(beat_times_s, fs_hz, seconds, width_s=0.08):
    """A cardiac-like trace: one Gaussian excursion per beat, plus slow drift."""
    t = np.arange(int(seconds * fs_hz)) / fs_hz
    x = np.zeros_like(t)
    for b in beat_times_s:
        x += np.exp(-((t - b) ** 2) / (2 * width_s**2))
    return t, 1e-3 * x + 2e-4 * np.sin(2 * np.pi * 0.25 * t)


@pytest.mark.parametrize("rate", [48.0, 72.5, 131.0])
def test_dominant_rate_of_periodic_trace_within_one_per_minute(rate):
    fs = 1000.0
    period = 60.0 / rate
    _, x = pulse_train(np.arange(0.3, 10.0, period), fs, 10.0)
    est = rates.dominant_rate(x, fs)
    assert abs(est.rate_per_min - rate) < 1.0
    assert est.confidence > 0.8


def test_sinusoid_rate_and_breathing_range():
    fs = 200.0
    t = np.arange(int(30 * fs)) / fs
    x = np.sin(2 * np.pi * (14.0 / 60.0) * t + 0.3)
    est = rates.breathing_rate(x, fs)
    assert est.rate_per_min == pytest.approx(14.0, abs=0.3)
    assert est.confidence > 0.95


def test_noise_has_low_confidence():
    x = np.random.default_rng(1).normal(size=10000)
    est = rates.dominant_rate(x, 1000.0)
    assert est.confidence < 0.3


def test_regular_rhythm_intervals():
    fs = 500.0
    beats = np.arange(0.5, 12.0, 0.8)
    _, x = pulse_train(beats, fs, 12.0)
    rh = rates.rhythm(x, fs)
    assert rh.regular
    assert rh.interval_cv < 0.02
    np.testing.assert_allclose(rh.intervals_s, 0.8, atol=0.01)
    assert rh.rate_per_min == pytest.approx(75.0, abs=1.0)
    d = rh.to_dict()
    assert d["rhythm"] == "regular" and len(d["intervals_s"]) == len(rh.intervals_s)


def test_irregular_rhythm_intervals_match_the_beats():
    fs = 500.0
    rng = np.random.default_rng(4)
    intervals = 0.85 * np.exp(0.3 * rng.standard_normal(14)).clip(0.5, 2.0)
    beats = 0.6 + np.concatenate(([0.0], np.cumsum(intervals)))
    beats = beats[beats < 14.3]
    _, x = pulse_train(beats, fs, 15.0)
    rh = rates.rhythm(x, fs)
    assert not rh.regular
    np.testing.assert_allclose(rh.beat_times_s, beats, atol=0.01)
    np.testing.assert_allclose(rh.intervals_s, np.diff(beats), atol=0.02)
    assert rh.interval_cv == pytest.approx(np.std(np.diff(beats), ddof=1) / np.mean(np.diff(beats)), rel=0.05)
    assert rh.to_dict()["rhythm"] == "irregular"


@pytest.mark.parametrize("scenario,regular", [("cardiac_regular", True), ("cardiac_irregular", False)])
def test_rhythm_of_simulated_heart(scenario, regular):
    sim = simulate(scenario, seconds=12.0, prf_hz=100.0, snr_db=30.0, seed=2, rate_per_min=75.0)
    disp = sim.truth.displacement_m.astype(np.float64)
    trace = disp[:, int(np.argmax(np.ptp(disp, axis=0)))]
    rh = rates.rhythm(trace, 100.0)
    assert rh.regular is regular
    if regular:
        assert rh.rate_per_min == pytest.approx(75.0, abs=2.0)  # sinus variability of the simulator: 2 %


def test_simulated_breathing_rate():
    sim = simulate("lung_sliding", seconds=20.0, prf_hz=50.0, snr_db=30.0, seed=1, rate_per_min=16.0)
    disp = sim.truth.displacement_m.astype(np.float64)
    est = rates.breathing_rate(disp[:, int(np.argmax(np.ptp(disp, axis=0)))], 50.0)
    assert est.rate_per_min == pytest.approx(16.0, abs=0.5)


def test_rates_reject_bad_traces():
    with pytest.raises(DataError):
        rates.dominant_rate(np.ones((3, 3)), 100.0)
    with pytest.raises(DataError):
        rates.dominant_rate(np.array([0.0, np.nan, 1.0, 2.0]), 100.0)
    with pytest.raises(DataError, match="at least"):
        rates.dominant_rate(np.zeros(50), 100.0)


@pytest.mark.parametrize("seed", range(8))
def test_breathing_under_a_faster_ripple_over_the_whole_range(seed):
    # a slow rhythm correlates highly at short lags, where a faster small component puts
    # ripples on the decaying correlation: those are no period (the per-block feature
    # period_s once reported 170/min for 20/min breathing from such a ripple)
    rng = np.random.default_rng(seed)
    fs, rate = 100.0, rng.uniform(12.0, 24.0)
    t = np.arange(int(20 * fs)) / fs
    x = np.sin(2 * np.pi * rate / 60 * t + rng.uniform(0, 6)) + 0.3 * rng.normal(size=t.size)
    x += 0.2 * np.sin(2 * np.pi * rng.uniform(60.0, 120.0) / 60 * t)
    est = rates.dominant_rate(x, fs, 6.0, 200.0)
    assert est.rate_per_min == pytest.approx(rate, abs=1.0)
    period_s, strength = features.periodicity(x, fs)  # the display feature uses the same estimator
    assert period_s == pytest.approx(60.0 / rate, rel=0.05) and strength == pytest.approx(est.confidence)


def test_flat_trace_has_no_rate():
    est = rates.dominant_rate(np.full(2000, 3.0), 100.0)
    assert np.isnan(est.rate_per_min) and est.confidence == 0.0
