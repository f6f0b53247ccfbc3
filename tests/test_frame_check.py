"""Frame checks (ingest/frame_check.py): non-finite frames dropped, times re-timed by the rule,
counters of rejected, re-timed, missing and restarted lines. Expected times are worked out by
hand in the comments (1000 lines/s: one line per ms, 20-line blocks of 20 ms)."""

from __future__ import annotations

import numpy as np
import pytest

from mmode.ingest.frame_check import FrameCheck, LineClock, all_finite
from mmode.ingest.meta import LineBlock

PRF_HZ = 1000.0  # tolerance max(2 ms, 2 line periods) = 2 ms


def clock(**kwargs) -> LineClock:
    return LineClock(PRF_HZ, **kwargs)


def feed(c: LineClock, blocks: list[tuple[int, float]], n_lines: int = 20) -> list[tuple[float, bool]]:
    return [c.time_block(seq, n_lines, t_s) for seq, t_s in blocks]


def test_tolerance_is_two_ms_or_two_line_periods():
    assert LineClock(1000.0).tolerance_s == 0.002
    assert LineClock(5000.0).tolerance_s == 0.002
    assert LineClock(100.0).tolerance_s == 0.02  # 2 line periods of 10 ms


def test_good_times_are_kept():
    out = feed(clock(), [(0, 10.0), (20, 10.020), (40, 10.040)])
    assert out == [(10.0, False), (10.020, False), (10.040, False)]


def test_backwards_time_gets_the_predicted_time():
    # block 2 says 9.5 s: backwards; seq 40 is 40 ms after the anchor (seq 20 at 10.020)
    out = feed(clock(), [(0, 10.0), (20, 10.020), (40, 9.5), (60, 10.060)])
    assert out[2] == (pytest.approx(10.040, abs=1e-12), True)
    assert out[3] == (10.060, False)  # the sender's clock is good again: its own time


def test_a_plausible_time_too_close_to_the_previous_line_is_moved_half_a_period_after_it():
    # previous block's last line: 10.0 + 19 ms = 10.019; 10.0185 is 1.5 ms from 10.020 but
    # would put the new first line before it; 10.0193 after it by less than half a period
    for t_s in (10.0185, 10.0193):
        out = feed(clock(), [(0, 10.0), (20, t_s)])
        assert out[1] == (pytest.approx(10.0195, abs=1e-12), True)
    assert feed(clock(), [(0, 10.0), (20, 10.0196)])[1] == (10.0196, False)  # 0.6 periods after: kept


def test_after_a_late_block_the_sender_clock_is_rejoined_half_a_period_per_block():
    # block 1 is 1.2 ms late (plausible, kept); blocks 2.. are on time again, but block 2
    # cannot start before line 39 (10.0402) + 0.5 ms: 10.0407, block 3 before line 59
    # (10.0597) + 0.5 ms: 10.0602; block 4 (10.080) is 0.8 ms after line 79 (10.0792): kept
    out = feed(clock(), [(0, 10.0), (20, 10.0212), (40, 10.040), (60, 10.060), (80, 10.080)])
    assert out[1] == (10.0212, False)
    assert out[2] == (pytest.approx(10.0407, abs=1e-12), True)
    assert out[3] == (pytest.approx(10.0602, abs=1e-12), True)
    assert out[4] == (10.080, False)


def test_jitter_within_tolerance_is_kept_and_beyond_is_retimed():
    # +1.5 ms and -0.4 ms: kept (the anchor moves to each); +2.5 ms past its prediction: re-timed
    out = feed(clock(), [(0, 0.0), (20, 0.0215), (40, 0.0411), (60, 0.0636), (80, 0.0808)])
    assert out[1] == (0.0215, False)
    # predicted 0.0215 + 0.020 = 0.0415: 0.4 ms early, 0.6 ms after the last line (0.0405)
    assert out[2] == (0.0411, False)
    # predicted from the anchor at seq 40: 0.0411 + 0.020 = 0.0611; 0.0636 is 2.5 ms late
    assert out[3] == (pytest.approx(0.0611, abs=1e-12), True)
    # predicted from seq 40: 0.0811; 0.0808 is 0.3 ms early, 0.7 ms after line 79 (0.0801)
    assert out[4] == (0.0808, False)


def test_seq_gap_moves_the_time_forward_by_the_gap():
    # 100 lines missing between seq 20 and 140; the sender says 5.0 s: predicted 10.140
    out = feed(clock(), [(0, 10.0), (20, 10.020), (140, 5.0), (160, 10.160)])
    assert out[2] == (pytest.approx(10.140, abs=1e-12), True)
    assert out[3] == (10.160, False)


def test_time_after_a_gap_is_the_senders_within_the_rate_tolerance():
    # a 60 s gap (60 000 lines) over which the sender's clock gained 50 ms on the nominal
    # line rate: 50 ms > 2 ms, but within 2 ms + 0.1 % of 60.02 s = 62 ms, so kept
    out = feed(clock(), [(0, 0.0), (20, 0.020), (60_040, 60.090), (60_060, 60.110)])
    assert out[2] == (60.090, False)
    assert out[3] == (60.110, False)


def test_slow_drift_is_followed_not_corrected():
    # the sender's clock runs 300 ppm fast for one hour of 20 ms blocks: its times end 1.08 s
    # ahead of seq / prf; each block is 6 us off its prediction and is kept
    c = clock()
    n_blocks = 180_000
    seq = np.arange(n_blocks) * 20
    t_sender = seq / PRF_HZ * (1 + 300e-6)
    out = [c.time_block(int(s), 20, float(t)) for s, t in zip(seq, t_sender)]
    assert not any(retimed for _, retimed in out)
    assert out[-1][0] == t_sender[-1]
    assert t_sender[-1] - seq[-1] / PRF_HZ == pytest.approx(1.08, rel=1e-3)


def test_forward_clock_step_is_retimed_then_followed_and_a_backward_step_stays_retimed():
    # at seq 200 the sender's clock jumps 30.05 ms ahead without a seq gap: re-timed while
    # 30.05 ms > 2 ms + 0.1 % of the time since the anchor (seq 180), i.e. for 28 s of lines
    c = clock()
    blocks = [(s, s / PRF_HZ + (0.03005 if s >= 200 else 0.0)) for s in range(0, 40_000, 20)]
    out = [c.time_block(s, 20, t) for s, t in blocks]
    retimed = [s for (s, _), (_, r) in zip(blocks, out) if r]
    assert retimed[0] == 200
    first_kept = max(retimed) + 20
    # kept at the first seq where 0.03005 <= 0.002 + 1e-3 * (seq - 180) / 1000, i.e.
    # seq >= 28 230: the block at 28 240
    assert first_kept == 28_240
    assert retimed == list(range(200, first_kept, 20))
    assert out[-1] == (blocks[-1][1], False)

    # the same step backwards: implausible (re-timed from seq) until seq 28 240 as above;
    # then the sender's clock is rejoined half a line period (0.5 ms) per block: block k
    # after 28 240 starts 0.5 * (k + 1) ms behind seq / prf, until 30.05 ms at k = 60
    c = clock()
    back = [(s, s / PRF_HZ - (0.03005 if s >= 200 else 0.0)) for s in range(0, 40_000, 20)]
    out = [c.time_block(s, 20, t) for s, t in back]
    retimed = [s for (s, _), (_, r) in zip(back, out) if r]
    assert retimed == list(range(200, 28_240 + 60 * 20, 20))
    offsets_ms = [(t - s / PRF_HZ) * 1e3 for (s, _), (t, _) in zip(back, out)]
    assert offsets_ms[28_220 // 20] == pytest.approx(0.0, abs=1e-6)  # still seq / prf
    np.testing.assert_allclose(offsets_ms[28_240 // 20 : 28_240 // 20 + 60], -0.5 * np.arange(1, 61), atol=1e-6)
    assert out[-1] == (back[-1][1], False)


def test_non_finite_and_absurd_times_are_retimed_even_for_the_first_block():
    c = clock()
    out = feed(c, [(100, float("nan")), (120, 7.0), (140, float("inf")), (160, 1e300)])
    assert out[0] == (0.100, True)  # no anchor yet: seq / prf
    assert out[1] == (7.0, False)  # the first usable time, later than line 119 at 0.119
    assert out[2] == (pytest.approx(7.020, abs=1e-12), True)
    assert out[3] == (pytest.approx(7.040, abs=1e-12), True)


def test_restart_starts_a_new_timeline_and_a_seek_keeps_times_increasing():
    c = clock()
    out = feed(c, [(1000, 50.0), (1020, 50.020), (0, 3.0), (20, 3.020)])
    assert out[2:] == [(3.0, False), (3.020, False)]  # seq went back: the sender's new times
    c.forget_anchor()  # a seek forward: its own time, if later than the last line
    assert c.time_block(500, 20, 3.500) == (3.500, False)
    c.forget_anchor()  # a time before the last line: half a period after it
    assert c.time_block(900, 20, 3.0) == (pytest.approx(3.5195, abs=1e-12), True)


def lines(n: int, value: float = 1.0, dtype=np.float32) -> np.ndarray:
    return np.full((n, 8), value, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_any_non_finite_component(dtype, bad):
    x = lines(4, dtype=dtype)
    assert all_finite(x)
    y = x.copy()
    y[2, 5] = bad
    assert not all_finite(y)
    if np.dtype(dtype).kind == "c":
        z = x.copy()
        z[3, 7] = complex(1.0, bad)  # only the imaginary part
        assert not all_finite(z)
        assert not all_finite(z[:, 1::2])  # a strided view, checked without the real view
    assert all_finite(np.zeros((3, 4), np.int16))


def test_frame_check_drops_non_finite_frames_without_a_false_gap_and_retimes():
    check = FrameCheck(PRF_HZ)
    iq_inf = lines(20, dtype=np.complex64)
    iq_inf[7, 3] = complex(0.0, np.inf)
    frames = [
        LineBlock(0, 0.0, lines(20)),
        LineBlock(20, 0.020, lines(20, np.nan)),  # rejected
        LineBlock(40, 0.030, lines(20)),  # 10 ms early (backwards past the rejected frame)
        LineBlock(60, 0.060, lines(20)),
        LineBlock(100, 0.100, lines(20)),  # 20 lines lost in transport
        LineBlock(120, 0.120, iq_inf),  # rejected
        LineBlock(0, 9.0, lines(20)),  # the source restarted
    ]
    out = [check.check(f) for f in frames]
    assert [o is None for o in out] == [False, True, False, False, False, True, False]
    assert out[2].t_s == pytest.approx(0.040, abs=1e-12) and out[2].seq == 40
    assert out[2].lines is frames[2].lines
    assert out[3] is frames[3] and out[4] is frames[4] and out[6] is frames[6]
    assert check.counts.as_dict() == {
        "frames_rejected": 2, "lines_rejected": 40, "frames_retimed": 1, "lines_retimed": 20,
        "gaps": 1, "lines_missing": 20, "restarts": 1,
    }


def test_frame_check_seek_is_neither_gap_nor_restart():
    check = FrameCheck(PRF_HZ)
    check.check(LineBlock(0, 0.0, lines(20)))
    assert check.check(LineBlock(500, 0.5, lines(20)), discontinuity=True).t_s == 0.5
    assert check.check(LineBlock(100, 0.1, lines(20)), discontinuity=True).t_s == 0.1
    c = check.counts
    assert (c.gaps, c.lines_missing, c.restarts, c.frames_retimed) == (0, 0, 0, 0)
