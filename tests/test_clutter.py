"""Clutter (wall) filter along slow time (dsp/clutter.py) against scipy.signal."""

import numpy as np
import pytest
from scipy import signal

from mmode.dsp import clutter
from mmode.errors import DataError

PRF, F0, C = 350.0, 2.5e6, 1540.0


def test_cutoff_is_the_doppler_frequency_of_the_cutoff_velocity():
    b, a = clutter.design(PRF, F0, C)
    fc = 2 * clutter.CUTOFF_M_S * F0 / C
    _, h = signal.freqz(b, a, worN=[fc], fs=PRF)
    assert abs(h[0]) ** 2 == pytest.approx(0.5, rel=1e-3)  # Butterworth: -3 dB at the cut-off


def test_cutoff_beyond_half_the_line_rate_is_refused():
    with pytest.raises(DataError, match="half the line rate"):
        clutter.design(10.0, 7.5e6, C)


def test_stationary_echo_is_removed_from_the_first_line_and_a_moving_one_passes():
    b, a = clutter.design(PRF, F0, C)
    n = np.arange(350)[:, None]
    stationary = np.full((350, 3), 5.0 - 2.0j)
    f_d = 100.0  # Hz: an echo at 31 mm/s
    moving = 0.5 * np.exp(2j * np.pi * f_d * n / PRF)
    out = clutter.WallFilter(b, a).process(stationary + moving, stationary=stationary[0])
    _, h = signal.freqz(b, a, worN=[f_d], fs=PRF)
    # from the first line on, what is left is the moving echo, through the filter's response
    np.testing.assert_allclose(out[60:], (h[0] * moving[60:]) * np.ones((1, 3)), atol=2e-3)
    # the tone switched on at the first line: a transient of about fc / f_d of its amplitude
    # (6.5 / 100 Hz) that has died out by the filter's settle time
    transient = np.abs(out[:60, 0] - h[0] * moving[:60, 0]) / 0.5
    assert transient.max() < 0.12
    assert transient[clutter.settle_lines(PRF, F0, C):].max() < 0.01


def test_streaming_in_blocks_equals_one_call_and_lfilter():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 5)) + 1j * rng.standard_normal((200, 5))
    b, a = clutter.design(PRF, F0, C)
    whole = clutter.WallFilter(b, a).process(x)
    w = clutter.WallFilter(b, a)
    parts = np.concatenate([w.process(x[i:i + 37]) for i in range(0, 200, 37)])
    np.testing.assert_allclose(parts, whole, atol=1e-5)
    zi = signal.lfilter_zi(b, a)[:, None] * x[0][None, :]
    ref, _ = signal.lfilter(b, a, x, axis=0, zi=zi)
    np.testing.assert_allclose(whole, ref, atol=1e-5)


def test_batch_filter_runs_backwards_from_the_mean():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((120, 4)) + 1j * rng.standard_normal((120, 4))
    b, a = clutter.design(PRF, F0, C)
    zi = signal.lfilter_zi(b, a)[:, None] * x.mean(axis=0)[None, :]
    ref, _ = signal.lfilter(b, a, x[::-1], axis=0, zi=zi)
    np.testing.assert_allclose(clutter.wall_filter(x, b, a), ref[::-1], atol=1e-5)


def test_settle_lines_follow_the_time_constant():
    # three time constants of a Butterworth pole pair with damping 1/sqrt(2)
    fc = 2 * clutter.CUTOFF_M_S * F0 / C
    expected = 3 * PRF / (2 * np.pi * fc / np.sqrt(2))
    assert clutter.settle_lines(PRF, F0, C) == int(np.ceil(expected))
