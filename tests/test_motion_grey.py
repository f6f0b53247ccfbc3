"""The motion tracker on scanner images (grey levels, video line rates; docs/motion.md,
"Scanner images"): a synthetic lung-like M-mode with A-lines against its exact truth, and
the NCC peak choice that weighs where the echo is expected."""

import numpy as np
import pytest
from scipy import ndimage

from mmode.dsp import motion
from mmode.dsp.tracker import MotionTracker
from mmode.ingest.cine import NOMINAL_PIXEL_M, ArrayFrames, mline_recording
from mmode.ingest.meta import AcquisitionMeta, LineBlock

RATE_HZ, SECONDS, N_PX = 25.0, 10.0, 400
PLEURA_PX, AMPLITUDE_PX, BREATH_HZ = 80.0, 10.0, 0.3  # 2 mm peak to peak at the nominal 0.1 mm per pixel


def lung_cine(seed):
    """A cine whose every column is the same grey M-mode line (so the default vertical M-line
    reads it exactly): a pleura-like bright line at ``PLEURA_PX + AMPLITUDE_PX sin(2 pi
    BREATH_HZ t)`` rows under a static chest wall (smoothed speckle and two fascia lines),
    its A-lines at 2 and 3 times its depth (reverberations: 0.7 and 0.45 of its brightness,
    moving 2 and 3 times as far), flickering by 10 % together, a decorrelating lung pattern
    below it; blurred, noisy, 8-bit. Returns ``(cine, truth_px)``, the pleura's row minus
    its row in the first frame."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * RATE_HZ)) / RATE_HZ
    pleura = PLEURA_PX + AMPLITUDE_PX * np.sin(2 * np.pi * BREATH_HZ * t)
    rows = np.arange(N_PX, dtype=np.float64)
    wall = ndimage.gaussian_filter1d(rng.uniform(0, 1, N_PX), 2.0)
    wall = 40 + 200 * (wall - wall.min()) / np.ptp(wall)
    wall += 120 * np.exp(-0.5 * ((rows - 25) / 1.5) ** 2) + 90 * np.exp(-0.5 * ((rows - 48) / 1.5) ** 2)
    lines = np.empty((t.size, N_PX))
    for i, z in enumerate(pleura):
        above = 1.0 / (1.0 + np.exp((rows - (z - 6)) / 1.0))
        brightness = 200 * (1 + 0.1 * rng.standard_normal())
        line = 0.6 * wall * above + brightness * np.exp(-0.5 * ((rows - z) / 1.5) ** 2)
        for k, gain in ((2, 0.7), (3, 0.45)):
            line += gain * brightness * np.exp(-0.5 * ((rows - k * z) / (1.5 * np.sqrt(k))) ** 2)
        lines[i] = line + (1 - above) * 50 * ndimage.gaussian_filter1d(rng.uniform(0, 1, N_PX), 2.0)
    lines = ndimage.gaussian_filter1d(lines, 1.0, axis=1) + 4 * rng.standard_normal(lines.shape)
    grey = np.clip(np.round(lines), 0, 255).astype(np.uint8)
    return ArrayFrames(np.repeat(grey[:, :, None], 3, axis=2), 1 / RATE_HZ), pleura - pleura[0]


@pytest.mark.parametrize("seed", range(4))
def test_pleura_with_a_lines_is_followed_without_jumps(seed):
    cine, truth_px = lung_cine(seed)
    rec = mline_recording(cine)
    assert rec.meta.amplitude == "grey" and not rec.meta.depth_calibrated and rec.meta.prf_hz == pytest.approx(RATE_HZ)
    lines = rec.read()
    tracker = MotionTracker()
    tracker.prepare(rec.meta, lines.shape[1])
    parts = [tracker.process(LineBlock(i, i / RATE_HZ, lines[i : i + 50])) for i in range(0, len(lines), 50)]
    parts.append(tracker.flush())
    d_px = np.concatenate([p.displacement_m for p in parts]) / NOMINAL_PIXEL_M
    quality = np.concatenate([p.quality for p in parts])
    assert tracker.status == "tracking" and d_px.shape == truth_px.shape
    assert tracker.depth_m / NOMINAL_PIXEL_M == pytest.approx(PLEURA_PX, abs=2)  # the pleura, not an A-line
    assert np.sqrt(np.mean((d_px - truth_px) ** 2)) < 0.5  # 0.07-0.15 px; before: up to 55 px (onto other bright lines)
    assert np.abs(np.diff(d_px)).max() < 2.0  # the truth's largest step is 0.75 px
    assert np.median(quality) > 0.9


def test_ncc_peak_near_takes_the_expected_echo_and_says_when_another_is_as_likely():
    bump = np.exp(-0.5 * (np.arange(-7, 8) / 1.5) ** 2).astype(np.float32)
    cur = np.zeros(200, np.float32)
    cur[53:68] += 0.8 * bump  # the echo itself, fainter, where the reference was (lag 0)
    cur[113:128] += bump  # a copy 60 samples further (an A-line), matching as well
    ref = bump.copy()
    shift, peak, agreement, confidence = motion._ncc_peak_near(ref, cur, 53, -50, 100, 0.0, 5.0)
    assert shift == pytest.approx(0.0, abs=0.1) and peak > 0.99 and confidence > 0.99
    # the copy is taken only when the echo is expected near it; with a wide expectation the
    # two are nearly as likely and the confidence says so
    assert motion._ncc_peak_near(ref, cur, 53, -50, 100, 55.0, 5.0)[0] == pytest.approx(60.0, abs=0.1)
    assert motion._ncc_peak_near(ref, cur, 53, -50, 100, 30.0, 1000.0)[3] < 0.1


def test_only_scanner_images_weigh_the_expected_position():
    """RF, IQ and linear envelopes keep ``_ncc_peak`` (``step_sigma`` 0), at any line rate."""
    tracker = MotionTracker()
    for meta in (AcquisitionMeta("rf", 40e6, 5e6, 1000.0), AcquisitionMeta("envelope", 1e7, 0.0, 25.0)):
        tracker.prepare(meta, 512)
        assert tracker.step_sigma(meta.prf_hz) == 0.0
