"""Display levels (dsp/levels.py): the reference against numpy, sampling, settling, re-levelling."""

import math

import numpy as np
import pytest

from mmode.dsp import levels


def test_full_scale_of_integers_only():
    assert levels.full_scale_db(np.int16) == pytest.approx(20 * math.log10(32768))
    assert levels.full_scale_db(np.uint8) == pytest.approx(20 * math.log10(256))
    assert levels.full_scale_db(np.float32) is None
    assert levels.full_scale_db(np.complex64) is None


def test_auto_reference_is_the_percentile_plus_headroom():
    rng = np.random.default_rng(1)
    env_db = 20 * np.log10(rng.rayleigh(size=(100, 64)))
    expected = np.percentile(env_db, levels.AUTO_PERCENTILE) + levels.AUTO_HEADROOM_DB
    assert levels.auto_reference_db(env_db) == pytest.approx(expected, abs=1e-4)
    # fully developed speckle then sits where the module docstring says: median 14 dB under the top
    median_below_top = expected - np.median(env_db)
    assert 13.0 < median_below_top < 15.5


def test_envelope_db_floors_zeros():
    out = levels.envelope_db(np.array([[0.0, 1.0, 10.0]]))
    np.testing.assert_allclose(out, [[levels.FLOOR_DB, 0.0, 20.0]], atol=1e-4)


@pytest.mark.parametrize("block", [1, 7, 64, 500])
def test_sampled_lines_do_not_depend_on_the_blocks(block):
    meter = levels.LevelMeter()
    meter.prepare(5000.0, np.float32)
    picked = [seq + i for seq in range(0, 2000, block) for i in meter.sampled(seq, min(block, 2000 - seq))]
    assert picked == list(range(0, 2000, meter.step))
    assert meter.step == round(5000 / levels.SAMPLED_LINES_PER_S)


def test_the_first_second_sets_the_level_then_it_stays():
    meter = levels.LevelMeter()
    meter.prepare(100.0, np.float32)  # step 2: every other line is measured
    quiet = np.full((1, 8), 0.0, np.float32)
    for seq in range(0, 100, 10):
        idx = meter.sampled(seq, 10)
        meter.add(10, (seq + idx) / 100.0, np.repeat(quiet, idx.size, axis=0) + seq / 10.0)
    assert meter.reference.settled and meter.reference.mode == "data"
    # the 99th percentile of the values seen in the first second (0 .. 9 dB), plus headroom
    assert meter.reference.reference_db == pytest.approx(np.percentile(np.arange(10.0), 99) + 6.0, abs=0.1)
    meter.add(10, np.array([1.05, 1.07]), np.full((2, 8), 50.0, np.float32))
    assert meter.reference.reference_db < 20.0  # later lines do not move a settled level


def test_relevel_takes_the_span_asked_for_or_the_whole_history():
    meter = levels.LevelMeter()
    meter.prepare(64.0, np.float32)  # step 1
    t = np.arange(128) / 64.0
    db = np.where(t[:, None] < 1.0, 10.0, 40.0) * np.ones((1, 4), np.float32)
    meter.add(128, t, db.astype(np.float32))
    assert meter.relevel(1.2, 1.9).reference_db == pytest.approx(46.0)
    assert "on screen" in meter.reference.detail
    assert meter.relevel(5.0, 6.0).reference_db == pytest.approx(46.0)  # nothing there: all kept lines
    assert "last" in meter.reference.detail


def test_integer_data_near_or_far_from_full_scale():
    for amplitude, mode in ((8000, "full_scale"), (40, "data")):
        meter = levels.LevelMeter()
        meter.prepare(10.0, np.int16)
        meter.settle(10, np.full((10, 4), 20 * np.log10(amplitude), np.float32))
        assert meter.reference.mode == mode


def test_a_manual_level_is_kept():
    meter = levels.LevelMeter()
    meter.prepare(100.0, np.float32, manual_db=42.0)
    meter.settle(100, np.full((50, 4), 80.0, np.float32))
    meter.add(10, np.zeros(5), np.full((5, 4), 80.0, np.float32))
    assert meter.reference.mode == "manual" and meter.reference.reference_db == 42.0
