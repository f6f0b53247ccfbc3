"""DisplayRing against a naive reference built line by line."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmode.errors import DataError
from mmode.gui.mmode_data import DisplayRing


def reference_columns(db, t, k, dr):
    """Mean of each full group of k lines, mapped to 0..255, written the obvious way."""
    cols, times = [], []
    for i in range(0, (len(t) // k) * k, k):
        m = db[i:i + k].astype(np.float64).mean(axis=0)
        cols.append(np.rint(np.clip((m + dr) / dr * 255, 0, 255)).astype(np.uint8))
        times.append(t[i + k - 1])
    return np.array(cols).reshape(-1, db.shape[1]), np.array(times)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 5), cap=st.integers(1, 23), chunks=st.lists(st.integers(0, 17), min_size=1, max_size=12),
       win=st.integers(1, 30))
def test_ring_matches_reference(k, cap, chunks, win):
    rng = np.random.default_rng(0)
    n = sum(chunks)
    dr = 50.0
    db = rng.uniform(-60, 5, size=(n, 4)).astype(np.float32)
    t = np.arange(n) / 1000.0
    ring = DisplayRing(4, cap, k)
    pos = 0
    for c in chunks:
        ring.push(db[pos:pos + c], t[pos:pos + c], dr)
        pos += c
    ref, ref_t = reference_columns(db, t, k, dr)
    assert ring.n_written == len(ref)
    w = ring.window(ring.n_written, win)
    want = min(win, cap, len(ref))
    assert w.n_cols == want
    if want:
        np.testing.assert_allclose(w.image.astype(int), ref[len(ref) - want:].astype(int), atol=1)
        np.testing.assert_array_equal(w.t_s, ref_t[len(ref) - want:])
        assert w.image.flags.c_contiguous


def test_class_changes_and_time_lookup():
    ring = DisplayRing(2, 100, 1)
    lab = np.array([-1, 0, 0, -1, 0, 2, 2, 2, 1, 1])
    ring.push(np.zeros((10, 2)), np.arange(10) * 0.1, 40, label=lab, confidence=np.full(10, 0.9))
    np.testing.assert_array_equal(ring.class_changes(), [5, 8])
    assert ring.next_change(5) == 8 and ring.previous_change(5) is None and ring.next_change(8) is None
    assert ring.column_at_time(0.44) == 4 and ring.column_at_time(99.0) == 9


def test_missing_lines_become_blank_columns():
    ring = DisplayRing(2, 100, decimation=2, col_dt_s=0.002)  # 1 kHz lines, 500 columns/s
    t = np.arange(20) / 1000.0
    ring.push(np.zeros((10, 2)), t[:10], 40)  # 5 columns, last at t = 9 ms
    ring.push(np.zeros((6, 2)), t[14:], 40)  # lines 10..13 lost: 2 columns missing
    w = ring.window(ring.n_written, 100)
    np.testing.assert_allclose(w.t_s, [0.001, 0.003, 0.005, 0.007, 0.009, 0.011, 0.013, 0.015, 0.017, 0.019])
    assert ring.n_gap_cols == 2
    assert (w.image[5:7] == 0).all() and (w.image[[4, 7]] == 255).all()
    assert (w.label[5:7] == -1).all()


def test_ring_rejects_bad_input():
    ring = DisplayRing(3, 10)
    with pytest.raises(DataError):
        ring.push(np.zeros((2, 4)), np.zeros(2), 40)
    with pytest.raises(DataError):
        ring.push(np.zeros((2, 3)), np.zeros(3), 40)
    with pytest.raises(DataError):
        DisplayRing(4096, 10**6)  # 8 GB of cine: refused before allocating
    r = DisplayRing.for_rate(128, 2000.0, cine_s=10.0, col_rate_hz=500.0)
    assert r.decimation == 4 and r.capacity == 5000 and r.col_dt_s == pytest.approx(0.002)


def test_overlay_rate_of_known_sinusoids():
    from mmode.gui.mmode_data import overlay_rate

    dt = 0.002
    t = np.arange(int(12 / dt)) * dt
    heart = 0.05 + 0.004 * np.sin(2 * np.pi * 72 / 60 * t)
    r = overlay_rate(heart, dt, "cardiac_regular")
    assert r.kind == "heart" and r.rate_per_min == pytest.approx(72, abs=1.5) and r.confidence > 0.9
    breath = 0.02 + 0.003 * np.sin(2 * np.pi * 15 / 60 * t)
    breath[:500] = np.nan  # tracker still choosing its echo
    r = overlay_rate(breath, dt, "lung_sliding")
    assert r.kind == "breathing" and r.rate_per_min == pytest.approx(15, abs=1.0)
    assert overlay_rate(breath, dt, None).kind == "breathing"
    rng = np.random.default_rng(0)
    assert overlay_rate(rng.normal(size=t.size), dt, "cardiac_regular") is None  # no rhythm in noise
    assert overlay_rate(np.full(t.size, np.nan), dt, None) is None


def test_overlay_rate_needs_the_reports_trace_length():
    """A lung view of a few seconds holds no breath: a fast wobble in it (hand or pleura
    jitter) gives no breathing rate, as `mmode process` gives none (rates.summary); a heart
    rate needs its own minimum."""
    from mmode.dsp import rates
    from mmode.gui.mmode_data import overlay_rate

    dt = 0.002
    for seconds, expect in ((4.0, None), (rates.MIN_BREATHING_S + 1.0, 45.0)):
        t = np.arange(int(seconds / dt)) * dt
        wobble = 0.02 + 1e-4 * np.sin(2 * np.pi * 45 / 60 * t)
        r = overlay_rate(wobble, dt, "lung_sliding")
        if expect is None:
            assert r is None and rates.summary(wobble, 1 / dt)["breathing_rate_per_min"] is None
        else:
            assert r.kind == "breathing" and r.rate_per_min == pytest.approx(expect, abs=1.5)
    for seconds in (0.5, 2.0, rates.MIN_CARDIAC_S - 0.1):  # too short: no rate, never an error
        t = np.arange(int(seconds / dt)) * dt
        assert overlay_rate(0.02 + 0.003 * np.sin(2 * np.pi * 1.5 * t), dt, None) is None


def test_model_choice_maps_to_shipped_names():
    from mmode.gui.engine_link import classifier_name

    shipped = ["classifier_student", "classifier_teacher", "motion_student"]
    assert classifier_name("student", shipped) == "classifier_student"
    assert classifier_name("teacher", shipped) == "classifier_teacher"
    assert classifier_name("classic", shipped) is None
    assert classifier_name("teacher", ["classifier_student"]) is None  # not shipped: classic only
    for choice in ("resnet", "int8"):  # int8: the registry loads no such weights, the window offers none
        with pytest.raises(DataError):
            classifier_name(choice, shipped)


def test_health_says_what_needs_the_user_first():
    from mmode.gui.status import LOST_AFTER_S, health

    assert health("running", "connected") == ("", "ok")
    assert health("ended", "end of file", is_file=True) == ("", "ok")
    assert health("reconnecting", "peer closed; reconnecting", reconnecting_s=0.5) == (
        "Reconnecting: peer closed; reconnecting", "warn")
    text, severity = health("reconnecting", "retrying in 1.6 s", reconnecting_s=LOST_AFTER_S + 1)
    assert severity == "alert" and text.startswith("Stream lost for 4 s")
    assert health("failed", "bad\nframe") == ("Engine failed: bad frame", "alert")
    text, severity = health("reconnecting", "x", reconnecting_s=0.1, record_error="Recording failed: disk full")
    assert severity == "alert" and text == "Recording failed: disk full | Reconnecting: x"


def test_frame_stats_add_paint_to_the_frame_that_drew():
    from mmode.gui.status import FrameStats, status_fields

    f = FrameStats()
    for i in range(10):  # 10 frames at 50 Hz: 2 ms of timer work + 1 + 0.5 ms of paint
        t = i * 0.02
        f.add(t, t + 0.002, drew=True)
        f.painted(t + 0.003, t + 0.004)
        f.painted(t + 0.004, t + 0.0045)
    f.add(0.2, 0.2001, drew=False)  # a tick with nothing new: its paint is not a frame
    f.painted(0.201, 0.205)
    assert f.n_frames == 10
    assert f.frame_ms(50) == pytest.approx(3.5)
    assert f.mean_fps() == pytest.approx(50.0)
    assert f.fps(now_s=0.2) == 10
    fields = status_fields({"line_rate_hz": 1999.6, "lines_dropped": 7, "latency_ms": {"p50": 3.0, "p99": 9.4},
                            "inference_ms": {"p50": None}}, f)
    assert fields["line_rate"] == "2000 lines/s" and fields["dropped"] == "dropped 7 lines"
    assert fields["latency"] == "latency 3/9 ms (p50/p99)" and fields["inference"] == "inference -- ms"


def test_late_motion_fills_columns_already_written():
    ring = DisplayRing(2, 50, decimation=2)
    t = np.arange(21) / 100.0
    ring.push(np.zeros((21, 2)), t, 40)  # 10 columns (last lines at 0.01, 0.03, ...), 1 line pending
    ring.set_track(t[4:], 0.03 + t[4:], t[4:])  # the tracker reports lines 4..20 late, quality = t
    w = ring.window(ring.n_written, 50)
    expect = np.where(w.t_s >= 0.04, 0.03 + w.t_s, np.nan)
    np.testing.assert_allclose(w.track_depth_m, expect, rtol=1e-6)
    np.testing.assert_allclose(w.track_quality, np.where(w.t_s >= 0.04, w.t_s, np.nan), rtol=1e-6)
    ring.set_track([0.5, 0.6], [0.01, 0.02], [1.0, 1.0])  # times the ring does not hold: nothing changes
    np.testing.assert_allclose(ring.window(ring.n_written, 50).track_depth_m, expect, rtol=1e-6)


def test_reader_maps_classifier_windows_and_late_motion_to_lines():
    from types import SimpleNamespace

    from mmode.gui.engine_link import ResultsReader

    def window(t_start, t_end, k):  # the fields of mmode.models.inference.WindowResult
        probs = np.full(7, 0.05)
        probs[k] = 0.7
        return SimpleNamespace(t_start_s=t_start, t_end_s=t_end, probs=probs, label="x")

    reader = ResultsReader()
    t = np.arange(10) * 0.1  # lines at 0.0 .. 0.9 s
    motion = SimpleNamespace(t_s=np.arange(-5, 10) * 0.1, displacement_m=np.arange(15) * 1e-4,
                             velocity_m_s=np.zeros(15), quality=np.linspace(0.0, 1.0, 15), depth_m=0.02)
    r = SimpleNamespace(t_s=t, classification=[window(-1.0, 0.25, 2), window(-0.5, 0.65, 4)], motion=motion,
                        features={})
    label, conf, track, quality = reader.read(r)
    np.testing.assert_array_equal(label, [-1, -1, -1, 2, 2, 2, 2, 4, 4, 4])  # newest window ended at or before
    np.testing.assert_allclose(conf[3:], 0.7)
    assert reader.label == 4 and reader.confidence == pytest.approx(0.7)
    # for the timeline each window also relabels the second half of its span (the very first
    # window all of it)
    assert reader.relabel == [pytest.approx((-1.0, 0.25, 2, 0.7)), pytest.approx((0.075, 0.65, 4, 0.7))]
    np.testing.assert_allclose(track, 0.02 + (np.arange(10) + 5) * 1e-4)
    np.testing.assert_allclose(quality, np.linspace(0.0, 1.0, 15)[5:], rtol=1e-6)
    late_t, late_z, late_q = reader.late_track  # the 5 motion samples before this block
    np.testing.assert_allclose(late_t, np.arange(-5, 0) * 0.1)
    np.testing.assert_allclose(late_z, 0.02 + np.arange(5) * 1e-4)
    np.testing.assert_allclose(late_q, np.linspace(0.0, 1.0, 15)[:5])
    # a block without new windows keeps the last class; no motion -> no track
    label, _conf, track, quality = reader.read(SimpleNamespace(t_s=t + 1, classification=[], motion=None, features={}))
    assert (label == 4).all() and np.isnan(track).all() and np.isnan(quality).all() and reader.late_track is None
    reader.read(SimpleNamespace(t_s=t + 2, classification=[window(1.5, 2.5, 1)], motion=None, features={}))
    assert reader.relabel == [pytest.approx((2.0, 2.5, 1, 0.7))]


def test_sweep_clock_scrolls_smoothly_behind_bursty_arrivals():
    from mmode.gui.mmode_data import SweepClock

    clock = SweepClock()
    assert not clock.advance(0.0)  # nothing arrived yet
    edges, newest = [], 0.0
    for frame in range(600):  # 10 s at 60 frames/s; a 50 ms block of data arrives every 3rd frame
        now = frame / 60.0
        if frame % 3 == 0:
            newest = now + 0.05
            clock.arrived(now, newest)
        clock.advance(now)
        edges.append((now, clock.t_s, newest))
    steady = np.array(edges[120:])
    assert (steady[:, 1] <= steady[:, 2]).all()  # never past the data
    steps = np.diff(steady[:, 1])
    assert (steps > 0).all()  # moves every frame
    assert steps.std() < 0.2 * steps.mean()  # evenly: no jumps at the arrivals
    assert np.mean(steady[:, 2] - steady[:, 1]) < 0.15  # and not far behind
    clock.smooth = False
    clock.advance(11.0)
    assert clock.t_s == newest
    clock.reset()
    assert np.isnan(clock.t_s)


def test_overlay_rate_of_a_short_cardiac_trace():
    from mmode.gui.mmode_data import overlay_rate

    dt = 0.0025
    t = np.arange(int(3.0 / dt)) * dt  # 3 s: shorter than two periods at 30/min, enough at 70/min
    r = overlay_rate(0.09 + 0.004 * np.sin(2 * np.pi * 70 / 60 * t), dt, "cardiac_regular")
    assert r is not None and r.kind == "heart" and r.rate_per_min == pytest.approx(70, abs=2)


def test_set_labels_relabels_held_columns():
    ring = DisplayRing(2, 8, decimation=1)
    t = np.arange(12) * 0.1  # 12 columns in a ring of 8: columns 4..11 held (t 0.4 .. 1.1)
    ring.push(np.zeros((12, 2)), t, 40, label=np.zeros(12), confidence=np.full(12, 0.5))
    ring.set_labels(0.55, 0.85, 3, 0.9)
    w = ring.window(ring.n_written, 8)
    np.testing.assert_array_equal(w.label, [0, 0, 3, 3, 3, 0, 0, 0])
    np.testing.assert_allclose(w.confidence[2:5], 0.9)
    assert ring.next_change(4) == 6 and ring.previous_change(11) == 9


def test_time_axis_ticks_and_labels():
    from mmode.gui.time_axis import tick_label, tick_values

    np.testing.assert_allclose(tick_values(12.3, 15.0, 1.0), [13.0, 14.0, 15.0])
    np.testing.assert_allclose(tick_values(-0.45, 0.3, 0.2), [-0.4, -0.2, 0.0, 0.2])
    np.testing.assert_allclose(tick_values(0.0, 1.0, 0.5, offset=0.25), [0.25, 0.75])
    assert tick_values(0.1, 0.9, 1.0).size == 0
    assert [tick_label(v, 1.0) for v in (12.0, -3.0)] == ["12", "-3"]
    assert [tick_label(v, 0.5) for v in (12.5, 13.0)] == ["12.5", "13.0"]
    assert tick_label(1.25, 0.05) == "1.25" and tick_label(-1e-12, 0.2) == "0"


def test_ring_epoch_names_its_content():
    ring = DisplayRing(4, 10)
    ring.push(np.zeros((3, 4)), np.arange(3.0), 40.0)
    first = ring.window(3, 3).epoch
    ring.push(np.zeros((3, 4)), np.arange(3.0, 6.0), 40.0)
    assert ring.window(6, 3).epoch == first  # same content, more of it
    ring.clear()
    ring.push(np.zeros((3, 4)), np.arange(3.0), 40.0)
    assert ring.window(3, 3).epoch != first and DisplayRing(4, 10).epoch not in (first, ring.epoch)


def test_ring_keeps_the_tracking_quality_per_column():
    ring = DisplayRing(2, 50, decimation=2, col_dt_s=0.02)
    t = np.arange(8) / 100.0
    quality = np.array([0.9, 0.8, 0.7, 0.2, 0.9, 0.95, 0.1, 0.3])
    ring.push(np.zeros((8, 2)), t, 40, track_depth_m=np.full(8, 0.03), track_quality=quality)
    ring.push(np.zeros((2, 2)), [0.14, 0.15], 40, track_depth_m=[0.03, 0.03], track_quality=[1.0, 1.0])  # 3 lost columns
    w = ring.window(ring.n_written, 50)
    # a column takes its last line's quality; the blank columns of the gap have none
    assert ring.n_gap_cols == 3
    np.testing.assert_allclose(w.track_quality, [0.8, 0.2, 0.95, 0.3, np.nan, np.nan, np.nan, 1.0])


def test_trace_split_by_quality_joins_its_two_parts():
    from mmode.gui.mmode_data import trace_by_quality

    depth = np.arange(8.0)
    sure, unsure = trace_by_quality(depth, np.array([0.9, 0.9, 0.4, 0.3, 0.9, 0.9, 0.9, np.nan]))
    np.testing.assert_array_equal(np.isfinite(sure), [1, 1, 0, 0, 1, 1, 1, 1])  # NaN quality: certain
    np.testing.assert_array_equal(np.isfinite(unsure), [0, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(np.where(np.isfinite(sure), sure, unsure), depth)


def test_playback_pauses_and_changes_speed_without_touching_the_lines():
    """Paused, no block comes out; resumed (at another speed) the blocks go on with their own
    seq and times, as without the pause: the pipeline sees one timeline."""
    from mmode.gui.playback import Playback
    from mmode.ingest.meta import AcquisitionMeta
    from mmode.ingest.sources import ArraySource

    meta = AcquisitionMeta("rf", 20e6, 5e6, 1000.0)
    lines = np.arange(40 * 4, dtype=np.int16).reshape(40, 4)
    play = Playback(ArraySource(meta, lines, block_lines=10), speed=1e6)  # paced, far beyond real time
    play.open()
    first = play.read_block(1.0)
    assert first.seq == 0 and np.array_equal(first.lines, lines[:10])
    play.pause(True)
    assert [play.read_block(0.001) for _ in range(5)] == [None] * 5 and play.paused
    play.pause(False)
    play.set_speed(2e6)
    rest = []
    while (block := play.read_block(1.0)) is not None:
        rest.append(block)
    assert [b.seq for b in rest] == [10, 20, 30] and play.speed == 2e6
    assert [b.t_s for b in rest] == pytest.approx([0.010, 0.020, 0.030])
    np.testing.assert_array_equal(np.concatenate([first.lines] + [b.lines for b in rest]), lines)
    assert play.finished and play.status == "ended"
    with pytest.raises(DataError):
        play.set_speed(0.0)


def test_motion_status_shows_a_gated_traces_caution():
    """A trace at the user's gate whose echo fails the backwards check is still tracked; the
    status line says it may not follow the echo, and its tooltip is the tracker's caution."""
    from mmode.gui.engine_link import motion_text

    state = {"status": "tracking", "track_depth_m": 0.0612, "depth_m": 0.0616, "representation": "raw", "note": None}
    text, tip = motion_text(state)
    assert text == "Motion: gate 61.2 mm, tracking 61.6 mm" and tip == text
    caution = "the echo at the gate comes back 14.2 mm off when tracked backwards: its trace may not follow it"
    text, tip = motion_text({**state, "note": caution})
    assert text.startswith("Motion: gate 61.2 mm, tracking 61.6 mm") and "may not follow the echo" in text
    assert tip == caution
