"""The simulated lung cine (models/cine_lung.py) that trains the classifier on anatomical
M-mode: its M-mode is the product's bilinear M-line (checked against scipy), and the physics
that tells the lung classes apart holds (measured on the frames with plain numpy): with
sliding the texture under the pleura decorrelates over a breath while the chest wall's does
not; without sliding both stay; a lung point alternates."""

import numpy as np
import pytest
from scipy import ndimage

from mmode.ingest.meta import CLASSES
from mmode.models import cine_lung
from mmode.models.cine_lung import CINE_CLASSES, CINE_RANGES, STRIP_PX, cine_mmode, h264_roundtrip, lung_cine

#: Conditions that make the classes plain to measure: a fixed frame rate and image, a large
#: slide, a steady probe, little blur and a gentle JPEG (no H.264).
PLAIN = {**CINE_RANGES, "frame_rate_hz": [30.0, 30.0], "height_px": [300, 300], "depth_cm": [10.0, 10.0],
         "pleura_fraction": [0.25, 0.25], "breath_per_min": [20.0, 20.0], "slide_mm": [10.0, 12.0],
         "hand_drift_mm_s": [0.0, 0.0], "wall_axial_mm": [0.0, 0.0], "shimmer_mm": [0.0, 0.0],
         "sub_pleura_db": [0.0, 0.0], "gain_db": [-10.0, -10.0],
         "wall_layers_db": [0.0, 0.0], "pleura_db": [14.0, 14.0], "a_line_db": [0.0, 0.0], "dynamic_range_db": [60.0, 60.0],
         "depth_fade_db": [0.0, 0.0], "curve_low": [0.0, 0.0], "curve_high": [1.0, 1.0], "curve_gamma": [1.0, 1.0],
         "blur_px": [0.0, 0.0], "median_px": [1], "blank_fraction": 0.0, "h264_fraction": 0.0, "jpeg_quality": [95, 95]}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _decorrelation(mmode: np.ndarray, rows: slice, lag: int) -> np.ndarray:
    """1 - correlation of each line's ``rows`` with the line ``lag`` frames later, (n - lag,)."""
    return np.array([1 - _corr(mmode[i, rows], mmode[i + lag, rows]) for i in range(len(mmode) - lag)])


def test_cine_shape_rate_and_grey_levels_follow_the_draws():
    frames, fps, cond = lung_cine("lung_sliding", 3.0, np.random.default_rng(1), PLAIN)
    assert fps == 30.0 and frames.dtype == np.uint8
    assert frames.shape == (90, 300, STRIP_PX)
    assert cond["pleura_y_px"] == pytest.approx(75.0)
    assert cond["codec"] == "jpeg 95"


def test_cine_mmode_is_the_bilinear_centre_line_scipy_samples():
    frames, _, _ = lung_cine("no_sliding", 1.0, np.random.default_rng(2), PLAIN)
    m = cine_mmode(frames)
    x = (STRIP_PX - 1) / 2  # the default M-line: the centre column, top to bottom
    y = np.arange(frames.shape[1], dtype=np.float64)
    ref = np.stack([ndimage.map_coordinates(f.astype(np.float64), [y, np.full_like(y, x)], order=1) for f in frames])
    np.testing.assert_allclose(m, ref, atol=1e-3)


def test_sliding_decorrelates_under_the_pleura_and_not_above_it():
    lag = 10  # a third of a second at 30 frames/s
    above, below = slice(10, 65), slice(85, 145)  # chest wall; lung under the pleura at row 75
    slide = cine_mmode(lung_cine("lung_sliding", 6.0, np.random.default_rng(3), PLAIN)[0])
    still = cine_mmode(lung_cine("no_sliding", 6.0, np.random.default_rng(3), PLAIN)[0])
    # the sliding lung moves during the breath: its sub-pleural texture changes, the wall's not
    assert np.percentile(_decorrelation(slide, below, lag), 90) > 0.5
    assert np.percentile(_decorrelation(slide, above, lag), 90) < 0.1
    # without sliding the lung moves with the (here steady) wall: nothing changes
    assert np.percentile(_decorrelation(still, below, lag), 90) < 0.1
    assert np.percentile(_decorrelation(still, above, lag), 90) < 0.1


def test_lung_point_alternates_still_and_moving_phases():
    lag = 3
    below = slice(85, 145)
    m = cine_mmode(lung_cine("lung_point", 9.0, np.random.default_rng(4), PLAIN)[0])
    d = _decorrelation(m, below, lag)
    assert np.mean(d < 0.05) > 0.2  # the pneumothorax phase (and end-expiration): static
    assert np.mean(d > 0.3) > 0.05  # the sliding lung's phase: changing


def test_no_contact_has_no_pleura_and_falls_to_noise():
    m = cine_mmode(lung_cine("no_contact", 2.0, np.random.default_rng(5), PLAIN)[0])
    lung = cine_mmode(lung_cine("no_sliding", 2.0, np.random.default_rng(5), PLAIN)[0])
    profile, lung_profile = m.mean(axis=0), lung.mean(axis=0)
    # a lung's pleura is the brightest row band; a probe in air has none below its ring-down
    assert lung_profile[70:80].max() > np.median(lung_profile[10:65]) + 40
    assert profile[100:].max() < np.median(profile[100:]) + 10


def test_h264_roundtrip_keeps_the_frames_and_loses_more_at_higher_crf():
    rng = np.random.default_rng(6)
    frames = ndimage.gaussian_filter(rng.uniform(0, 255, (12, 64, STRIP_PX)), (0, 2, 2)).astype(np.uint8)
    good, bad = h264_roundtrip(frames, 25.0, 15), h264_roundtrip(frames, 25.0, 40)
    assert good.shape == bad.shape == frames.shape
    err_good = np.abs(good.astype(float) - frames).mean()
    err_bad = np.abs(bad.astype(float) - frames).mean()
    assert err_good < 3 < err_bad


def test_cine_recordings_are_balanced_over_the_lung_classes():
    from mmode.models.data import cine_recording

    labels = set()
    for i in range(4):
        db, t_s, lab = cine_recording(i, 100 + i, [2.5, 2.6])
        assert db.shape[0] == len(t_s) == len(lab) and np.all(lab == lab[0])
        assert np.all(np.diff(t_s) > 0) and np.all(np.isfinite(db))
        labels.add(CLASSES[int(lab[0])])
    assert labels == set(CINE_CLASSES)


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="cine class"):
        cine_lung.lung_cine("cardiac_regular", 1.0, np.random.default_rng(0))
