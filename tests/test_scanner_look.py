"""Scanner-image conditions for the classifier (models/scanner.py): each step against a
hand-made reference, and the whole chain through the product's grey-level path."""

import numpy as np
import pytest
from scipy import ndimage

from mmode.models import data as mdata
from mmode.models.scanner import (SCANNER_RANGES, depth_window, frame_sample, grey_curve, jpeg_roundtrip,
                                  scanner_display, scanner_image)


def test_frame_sample_takes_the_latest_line_before_each_frame():
    t_s = np.arange(1000) / 300.0  # 300 lines/s for 3.33 s
    idx = frame_sample(t_s, 25.0, 0.5)
    frame_t = (0.5 + np.arange(len(idx))) / 25.0
    assert len(idx) == 83 and frame_t[-1] <= t_s[-1] < frame_t[-1] + 1 / 25.0
    for i, ft in zip(idx, frame_t):
        assert t_s[i] <= ft + 1e-12 and (i == len(t_s) - 1 or t_s[i + 1] > ft)


def test_depth_window_is_the_identity_on_the_full_range_and_interpolates_inside():
    rng = np.random.default_rng(0)
    rows = rng.normal(-30, 5, (7, 40)).astype(np.float32)
    np.testing.assert_allclose(depth_window(rows, 0.0, 1.0, 40, 0.0, rng), rows, atol=1e-5)
    # the middle half on 80 pixels: linear interpolation between the rows (map_coordinates order 1)
    out = depth_window(rows, 0.25, 0.75, 80, 0.0, rng)
    pos = 0.25 * 40 + (np.arange(80) + 0.5) / 80 * 20 - 0.5
    ref = np.stack([ndimage.map_coordinates(r, [pos], order=1) for r in rows])
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # beyond the rows: the chest wall above, the deep texture below, faded by up to fade_db
    out = depth_window(rows, -0.5, 2.0, 250, 20.0, rng)
    assert out.shape == (7, 250) and np.isfinite(out).all()
    assert out[:, -1].mean() < rows[:, -6:].mean() - 15


def test_grey_curve_maps_the_range_monotonically_onto_0_255():
    db = np.linspace(-60, 0, 121)
    for low, high, gamma in ((0.0, 1.0, 1.0), (0.2, 0.8, 0.5), (0.1, 0.9, 2.0)):
        g = grey_curve(db, 60.0, low, high, gamma)
        assert g[0] == 0 and g[-1] == 255 and np.all(np.diff(g) >= 0)
        x = (db + 60) / 60
        np.testing.assert_allclose(g, 255 * np.clip((x - low) / (high - low), 0, 1) ** gamma, rtol=1e-5, atol=1e-3)


def test_jpeg_roundtrip_loses_more_at_low_quality():
    rng = np.random.default_rng(1)
    img = ndimage.gaussian_filter(rng.uniform(0, 255, (120, 300)), 2).astype(np.uint8)
    err = {q: np.abs(jpeg_roundtrip(img, q) - img).mean() for q in (30, 95)}
    assert jpeg_roundtrip(img, 95).shape == img.shape
    assert err[95] < 1.5 < err[30]


def test_scanner_image_and_display_follow_the_drawn_conditions():
    """A simulated lung recording as a scanner image: frames at the drawn rate with their
    labels, the drawn pixel count, 8-bit; through the product's grey path its columns are
    ordinary classifier columns."""
    db, t_s, labels, _, info = mdata.classifier_recording(3, 4321)
    rng = np.random.default_rng(2)
    grey, frame_t, frame_labels, cond = scanner_image(db, t_s, labels, info["dynamic_range_db"], rng)
    assert SCANNER_RANGES["frame_rate_hz"][0] <= cond["frame_rate_hz"] <= SCANNER_RANGES["frame_rate_hz"][1]
    assert grey.dtype == np.uint8 and grey.shape == (len(frame_t), cond["depth_px"])
    assert np.median(np.diff(frame_t)) == pytest.approx(1 / cond["frame_rate_hz"], abs=1 / info["prf_hz"])
    np.testing.assert_array_equal(frame_labels, labels[np.searchsorted(t_s, frame_t)])
    display_db, t = scanner_display(grey, frame_t, 128)
    assert display_db.shape == (len(frame_t), 128) and np.isfinite(display_db).all()
    columns, counts = mdata.recording_columns(display_db, t, frame_labels)
    assert columns.shape[1] == 64 and counts.sum() <= len(frame_t)
