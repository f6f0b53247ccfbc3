"""Wavelet transforms (PyWavelets behind our checks), wavelet features and periodicity."""

import numpy as np
import pytest

from mmode.dsp import features, wavelets
from mmode.errors import UsageError

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("name", ["db1", "db2", "db4", "db8"])
@pytest.mark.parametrize("level", [1, 3, 4])
def test_wavedec_is_an_orthogonal_transform_that_waverec_inverts(name, level):
    x = RNG.normal(size=(5, 256))
    coeffs = wavelets.wavedec(x, name, level)
    # [cA_L, cD_L, ..., cD_1]: cD_j holds N / 2**j coefficients per line
    assert [c.shape for c in coeffs] == [(5, 256 >> level)] + [(5, 256 >> j) for j in range(level, 0, -1)]
    # orthogonal and periodised: Parseval holds exactly, and the inverse gives x back
    np.testing.assert_allclose(sum(np.sum(c**2, axis=-1) for c in coeffs), np.sum(x**2, axis=-1), rtol=1e-9)
    np.testing.assert_allclose(wavelets.waverec(coeffs, name), x, atol=1e-9)
    # one line in, one line out
    one = wavelets.wavedec(x[2], name, level)
    for a, b in zip(one, coeffs):
        np.testing.assert_allclose(a, b[2])
    np.testing.assert_allclose(wavelets.waverec(one, name), x[2], atol=1e-9)


def test_haar_coefficients_by_hand():
    """db1 (Haar), one level: cA = (x0 + x1) / sqrt 2, cD = (x0 - x1) / sqrt 2 up to sign."""
    x = np.array([4.0, 2.0, 1.0, 7.0])
    ca, cd = wavelets.wavedec(x, "db1", 1)
    np.testing.assert_allclose(ca, np.array([6.0, 8.0]) / np.sqrt(2))
    np.testing.assert_allclose(np.abs(cd), np.array([2.0, 6.0]) / np.sqrt(2))


def test_bad_levels_wavelets_and_shapes():
    x = RNG.normal(size=96)
    assert len(wavelets.wavedec(x, "db2", 5)) == 6
    with pytest.raises(UsageError):
        wavelets.wavedec(x, "db2", 6)  # 96 is not divisible by 64
    with pytest.raises(UsageError):
        wavelets.wavedec(x, "no_such_wavelet", 1)
    with pytest.raises(UsageError):
        wavelets.wavedec(x, "bior2.2", 1)  # not orthogonal
    with pytest.raises(UsageError, match="detail of shape"):
        wavelets.waverec([np.zeros((1, 8)), np.zeros((1, 4))], "db2")
    assert wavelets.max_level(96) == 5


def test_energies_and_entropy():
    x = RNG.normal(size=(4, 64))
    coeffs = wavelets.wavedec(x, "db4", 3)
    e = wavelets.subband_energies(coeffs)
    np.testing.assert_allclose(e.sum(axis=-1), np.sum(x**2, axis=-1), rtol=1e-9)  # orthogonal: Parseval
    rel = wavelets.relative_energies(e)
    np.testing.assert_allclose(rel.sum(axis=-1), 1.0)
    uniform = np.full((1, 4), 0.25)
    assert wavelets.wavelet_entropy(uniform)[0] == pytest.approx(np.log(4))
    assert wavelets.wavelet_entropy(np.array([[1.0, 0, 0, 0]]))[0] == 0.0
    assert np.all(wavelets.relative_energies(np.zeros((2, 3))) == 0)


def test_white_noise_puts_half_the_energy_in_the_finest_band():
    x = RNG.normal(size=(200, 256))
    rel = wavelets.relative_energies(wavelets.subband_energies(wavelets.wavedec(x, "db4", 4)))
    # white noise: each DWT level halves the band, cD1 holds half the energy
    assert rel[:, -1].mean() == pytest.approx(0.5, abs=0.02)
    assert rel[:, -2].mean() == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("period_s", [0.8, 3.0])
def test_periodicity_finds_the_period(period_s):
    rate = 100.0
    t = np.arange(int(12 * rate)) / rate
    trace = np.sin(2 * np.pi * t / period_s) + 0.3 * RNG.normal(size=t.shape)
    p, strength = features.periodicity(trace, rate)
    assert p == pytest.approx(period_s, rel=0.02)
    assert strength > 0.7


def test_periodicity_of_noise_is_weak_and_of_flat_is_none():
    rate = 100.0
    _, strength = features.periodicity(RNG.normal(size=1200), rate)
    assert strength < 0.3
    p, strength = features.periodicity(np.ones(1200), rate)
    assert np.isnan(p) and strength == 0.0


def test_decorrelation_feature_separates_still_and_renewed_speckle():
    depths = np.linspace(0.0, 0.04, 256)
    still = np.tile(RNG.normal(-30, 5, 256).astype(np.float32), (50, 1))
    renewed = RNG.normal(-30, 5, (50, 256)).astype(np.float32)
    f_still = features.FeatureExtractor(depths, 1000.0).process(still)
    f_new = features.FeatureExtractor(depths, 1000.0).process(renewed)
    assert np.all(f_still["decorrelation"] < 1e-5)
    assert f_new["decorrelation"][1:].mean() == pytest.approx(1.0, abs=0.1)
    # independent reference: numpy corrcoef of consecutive lines below the middle row
    ref = [1 - np.corrcoef(renewed[i, 128:], renewed[i - 1, 128:])[0, 1] for i in range(1, 50)]
    np.testing.assert_allclose(f_new["decorrelation"][1:], ref, atol=1e-4)


def test_decorrelation_rate_of_an_ar1_speckle_and_noise_cancels():
    """Each row follows x_i = rho x_(i-1) + sqrt(1 - rho^2) w_i, so corr at lag k is rho^k."""
    rng = np.random.default_rng(11)  # its own draws: the result must not hang on test order
    prf, rho, n = 1000.0, 0.995, 3000
    x = np.empty((n, 256))
    x[0] = rng.normal(size=256)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * rng.normal(size=256)
    depths = np.linspace(0.0, 0.04, 256)
    fx = features.FeatureExtractor(depths, prf, lag_s=0.05)
    f = fx.process(x.astype(np.float32))
    lag = fx.lag_lines
    assert lag == 50
    steady = slice(500, None)
    assert f["decorrelation"][steady].mean() == pytest.approx(1 - rho, rel=0.05)
    assert f["decorrelation_lag"][steady].mean() == pytest.approx(1 - rho**lag, rel=0.05)
    expected_rate = (rho - rho**lag) * prf / (lag - 1)
    assert f["decorrelation_rate_per_s"][steady].mean() == pytest.approx(expected_rate, rel=0.05)
    # white noise of the same power: the lag-1 and lag decorrelation rise alike (no false
    # rate from the noise floor); the rate scales with the signal's share of the power, 1/2
    noisy = x + rng.normal(size=x.shape)
    f_noisy = features.FeatureExtractor(depths, prf, lag_s=0.05).process(noisy.astype(np.float32))
    assert f_noisy["decorrelation"][steady].mean() > 0.4
    assert f_noisy["decorrelation_rate_per_s"][steady].mean() == pytest.approx(expected_rate / 2, rel=0.1)
