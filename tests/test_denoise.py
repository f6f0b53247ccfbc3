"""Speckle reduction: reference implementations, and measured effect on simulator data.

Simulator set-up (docs/dsp.md): lung_sliding, seed 0, 1 s at 1 kHz, no attenuation, 256
display rows. The interface is the pleural line (the brightest row of the time-averaged
image); the homogeneous region is the sliding-lung speckle from 2 mm below the pleura to
2 mm above its first reverberation (twice its depth).
"""

import numpy as np
import pytest
import pywt
import scipy.ndimage
import scipy.signal

from mmode.dsp import denoise
from mmode.dsp.processor import Processor, ProcessorSettings
from mmode.errors import UsageError
from mmode.ingest.meta import LineBlock

RNG = np.random.default_rng(11)

#: Speckle SNR gain each denoiser must reach at the default strength (0.5); measured values
#: are in docs/dsp.md.
MIN_SNR_GAIN = {"median_persist": 1.25, "wavelet": 1.3, "srad": 1.4}


def test_median_depth_matches_scipy():
    img = RNG.normal(-30, 8, (20, 64)).astype(np.float32)
    for half in (0, 1, 2):
        ref = scipy.ndimage.median_filter(img, size=(1, 2 * half + 1), mode="nearest")
        np.testing.assert_array_equal(denoise.median_depth(img, half), ref)
    with pytest.raises(UsageError):
        denoise.median_depth(img, -1)


def test_persistence_matches_lfilter_and_carries_state():
    img = RNG.normal(-30, 8, (50, 16)).astype(np.float32)
    alpha = 0.8
    out, state = denoise.persistence(img, alpha)
    ref = scipy.signal.lfilter([1 - alpha], [1, -alpha], img.astype(np.float64), axis=0, zi=alpha * img[:1])[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)
    np.testing.assert_array_equal(state, out[-1])
    first, s1 = denoise.persistence(img[:17], alpha)
    second, _ = denoise.persistence(img[17:], alpha, s1)
    np.testing.assert_allclose(np.concatenate([first, second]), out, atol=1e-6)
    with pytest.raises(UsageError):
        denoise.persistence(img, 1.0)


def _bayes_shrink_reference(img, wavelet, level, scale):
    """BayesShrink written with PyWavelets (independent of mmode.dsp.wavelets)."""
    out = np.empty_like(img, dtype=np.float64)
    for i, line in enumerate(img.astype(np.float64)):
        coeffs = pywt.wavedec(line, wavelet, mode="periodization", level=level)
        sigma = np.median(np.abs(coeffs[-1])) / 0.6745
        new = [coeffs[0]]
        for d in coeffs[1:]:
            sx = np.sqrt(max(np.mean(d**2) - sigma**2, 0.0))
            t = sigma**2 / sx if sx > 0 else np.abs(d).max()
            new.append(pywt.threshold(d, scale * t, mode="soft"))
        out[i] = pywt.waverec(new, wavelet, mode="periodization")
    return out


def test_wavelet_shrink_matches_pywavelets_bayesshrink():
    img = (np.sin(np.linspace(0, 6, 128))[None, :] * 10 + RNG.normal(0, 2, (6, 128))).astype(np.float32)
    ours = denoise.wavelet_shrink(img, "db4", 4, "bayes", 1.0)
    np.testing.assert_allclose(ours, _bayes_shrink_reference(img, "db4", 4, 1.0), atol=1e-4)
    # VisuShrink removes more: closer to the clean sine than the noisy input
    clean = np.sin(np.linspace(0, 6, 128)) * 10
    visu = denoise.wavelet_shrink(img, "db4", 4, "visu")
    assert np.abs(visu - clean).mean() < np.abs(img - clean).mean()
    # rows not a multiple of 2**level are edge-padded, shape kept
    assert denoise.wavelet_shrink(img[:, :100], "db4", 4).shape == (6, 100)
    with pytest.raises(UsageError):
        denoise.wavelet_shrink(img, rule="hard")


def test_srad_conserves_intensity_and_keeps_a_constant_image():
    flat = np.full((30, 40), -20.0, np.float32)
    np.testing.assert_allclose(denoise.srad_db(flat, 10), flat, atol=1e-4)
    img = RNG.normal(-30, 5, (30, 40)).astype(np.float32)
    out = denoise.srad_db(img, 20)
    # the divergence form with zero-flux borders conserves the sum of intensity
    assert np.sum(10 ** (out / 10.0)) == pytest.approx(np.sum(10 ** (img / 10.0)), rel=1e-5)
    assert out.std() < img.std()
    with pytest.raises(UsageError):
        denoise.srad_db(img, 5, dt=0.5)


def _srad_reference(img, n_iter, dt, q0_stride):
    """Yu and Acton (2002) SRAD, written with numpy from the paper's discretisation.

    q^2 = (|grad I|^2 / (2 I^2) - (lap I / I)^2 / 16) / (1 + lap I / (4 I))^2,
    c = 1 / (1 + (q^2 - q0^2) / (q0^2 (1 + q0^2))) clipped to [0, 1],
    I += dt / 4 * (c_S dI_S + c dI_N + c_E dI_E + c dI_W), replicated borders;
    q0^2 = median of q^2 (every ``q0_stride``-th pixel), as mmode documents.
    """
    x = img.astype(np.float64).copy()
    for _ in range(n_iter):
        p = np.pad(x, 1, mode="edge")
        d_n, d_s = p[:-2, 1:-1] - x, p[2:, 1:-1] - x
        d_w, d_e = p[1:-1, :-2] - x, p[1:-1, 2:] - x
        g2 = (d_n**2 + d_s**2 + d_w**2 + d_e**2) / x**2
        lap = (d_n + d_s + d_w + d_e) / x
        q2 = np.maximum((0.5 * g2 - lap**2 / 16) / (1 + lap / 4) ** 2, 0.0)
        q02 = np.median(q2.ravel()[::q0_stride])
        c = np.clip(1 / (1 + (q2 - q02) / (q02 * (1 + q02))), 0.0, 1.0)
        cp = np.pad(c, 1, mode="edge")
        x = x + dt / 4 * (cp[2:, 1:-1] * d_s + c * d_n + cp[1:-1, 2:] * d_e + c * d_w)
    return x


def test_srad_matches_a_numpy_reference():
    from mmode.dsp import kernels

    intensity = np.ascontiguousarray(10 ** (RNG.normal(-30, 5, (24, 36)) / 10))
    ref = _srad_reference(intensity, 4, 0.2, kernels._SRAD_Q0_STRIDE)
    ours = intensity.copy()
    kernels.srad(ours, 4, 0.2)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert not np.allclose(ours, intensity, rtol=1e-3)  # it did diffuse


def test_speckle_snr_of_rayleigh_amplitude():
    amp = np.abs(RNG.normal(size=200000) + 1j * RNG.normal(size=200000))
    assert denoise.speckle_snr(amp) == pytest.approx(np.sqrt(np.pi / (4 - np.pi)), rel=0.01)  # 1.91


@pytest.fixture(scope="module")
def lung():
    from mmode.ingest.simulator import simulate

    sim = simulate("lung_sliding", seconds=1.0, prf_hz=1000.0, seed=0, attenuation_db_cm_mhz=0.0)

    def display(method):
        p = Processor(ProcessorSettings(denoise=method))
        p.prepare(sim.meta, sim.lines.shape[1])
        blocks = [p.process(LineBlock(i, i / 1000.0, sim.lines[i:i + 250])).display_db for i in range(0, 1000, 250)]
        return np.concatenate(blocks)[100:], p.row_depths_m  # skip the persistence start-up

    base, depths = display("none")
    profile = base.mean(axis=0)
    pleura = int(np.argmax(profile))
    r0 = int(np.searchsorted(depths, depths[pleura] + 2e-3))
    r1 = int(np.searchsorted(depths, 2 * depths[pleura] - 2e-3))
    return display, base, pleura, (r0, r1)


def _half_max_width_rows(profile_db):
    lin = 10 ** (profile_db / 20)
    k = int(np.argmax(lin))
    above = lin > lin[k] / 2
    lo, hi = k, k
    while above[lo - 1]:
        lo -= 1
    while above[hi + 1]:
        hi += 1
    return hi - lo + 1


@pytest.mark.parametrize("method", ["median_persist", "wavelet", "srad"])
def test_denoiser_raises_speckle_snr_and_keeps_the_interface(lung, method):
    display, base, pleura, (r0, r1) = lung
    assert r1 - r0 > 20  # a real homogeneous region
    out, _ = display(method)
    snr_before = denoise.speckle_snr(10 ** (base[:, r0:r1] / 20))
    snr_after = denoise.speckle_snr(10 ** (out[:, r0:r1] / 20))
    assert snr_after >= MIN_SNR_GAIN[method] * snr_before
    profile = out.mean(axis=0)
    assert abs(int(np.argmax(profile)) - pleura) <= 1
    assert _half_max_width_rows(profile) <= _half_max_width_rows(base.mean(axis=0)) + 1
