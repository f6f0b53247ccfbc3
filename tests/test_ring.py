"""LineRing: bounded storage, skip-to-newest overload policy, exact counters."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmode.app.ring import LineRing
from mmode.errors import DataError
from mmode.ingest.meta import LineBlock

N_SAMPLES = 6


def block(seq: int, n: int, t_s: float | None = None) -> LineBlock:
    """Lines whose every sample encodes the line's seq, so content checks are exact."""
    lines = np.repeat((seq + np.arange(n))[:, None], N_SAMPLES, axis=1).astype(np.float32)
    return LineBlock(seq=seq, t_s=seq / 100.0 if t_s is None else t_s, lines=lines)


def test_lines_times_and_arrivals_come_out_as_they_went_in():
    ring = LineRing(100, N_SAMPLES, np.float32, prf_hz=100.0)
    ring.push(block(0, 10), arrival_s=1.0)
    ring.push(block(10, 5), arrival_s=2.0)
    chunk = ring.pop(12)
    assert chunk.seq == 0 and chunk.n_lines == 12 and chunk.t_s == 0.0
    np.testing.assert_array_equal(chunk.lines[:, 0], np.arange(12))
    np.testing.assert_array_equal(chunk.arrival_s, [1.0] * 10 + [2.0] * 2)
    rest = ring.pop(100)
    assert rest.seq == 12 and rest.t_s == pytest.approx(0.12) and rest.n_lines == 3
    assert ring.pop(10) is None
    assert ring.counters() == {"lines_in": 15, "lines_out": 15, "lines_skipped": 0, "unread": 0, "high_water_lines": 15}


def test_full_ring_overwrites_oldest_and_counts_it():
    ring = LineRing(8, N_SAMPLES, np.float32, prf_hz=100.0)
    for s in range(0, 20, 4):
        ring.push(block(s, 4), arrival_s=float(s))
    chunk = ring.pop(100)
    np.testing.assert_array_equal(chunk.lines[:, 0], np.arange(12, 20))
    c = ring.counters()
    assert c["lines_in"] == 20 and c["lines_skipped"] == 12 and c["lines_out"] == 8 and c["high_water_lines"] == 8


def test_block_larger_than_the_ring_keeps_its_newest_lines():
    ring = LineRing(5, N_SAMPLES, np.float32, prf_hz=100.0)
    assert ring.push(block(0, 12), arrival_s=0.0) == 7
    chunk = ring.pop(100)
    np.testing.assert_array_equal(chunk.lines[:, 0], np.arange(7, 12))
    assert chunk.t_s == pytest.approx(0.07)


def test_backlog_beyond_limit_skips_to_newest():
    ring = LineRing(100, N_SAMPLES, np.float32, prf_hz=100.0, max_backlog_lines=20)
    ring.push(block(0, 50), arrival_s=0.0)
    chunk = ring.pop(8)
    np.testing.assert_array_equal(chunk.lines[:, 0], np.arange(42, 50))
    assert ring.counters()["lines_skipped"] == 42
    ring.push(block(50, 15), arrival_s=0.0)  # within the backlog limit: nothing skipped
    assert ring.pop(100).n_lines == 15 and ring.counters()["lines_skipped"] == 42


def test_chunks_stop_at_sequence_jumps():
    ring = LineRing(100, N_SAMPLES, np.float32, prf_hz=100.0)
    ring.push(block(0, 4), 0.0)
    ring.push(block(10, 4), 0.0)  # gap
    ring.push(block(2, 3), 0.0)  # restart backwards
    assert [(c.seq, c.n_lines) for c in iter(lambda: ring.pop(100), None)] == [(0, 4), (10, 4), (2, 3)]


def test_wrong_line_length_is_refused():
    ring = LineRing(10, N_SAMPLES, np.float32, prf_hz=100.0)
    with pytest.raises(DataError):
        ring.push(LineBlock(0, 0.0, np.zeros((2, N_SAMPLES + 1), np.float32)), 0.0)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 40),
    backlog=st.integers(1, 40),
    ops=st.lists(st.tuples(st.booleans(), st.integers(1, 30)), max_size=40),
)
def test_matches_a_reference_model(capacity, backlog, ops):
    """Against a plain deque model of the documented policy."""
    ring = LineRing(capacity, N_SAMPLES, np.float32, prf_hz=100.0, max_backlog_lines=backlog)
    backlog = min(backlog, capacity)
    model: collections.deque[int] = collections.deque()
    skipped = seq = 0
    for is_push, n in ops:
        if is_push:
            ring.push(block(seq, n), 0.0)
            model.extend(range(seq, seq + n))
            seq += n
            while len(model) > capacity:
                model.popleft()
                skipped += 1
        else:
            chunk = ring.pop(n)
            if len(model) > backlog:
                keep = min(n, backlog)
                while len(model) > keep:
                    model.popleft()
                    skipped += 1
            expect = [model.popleft() for _ in range(min(n, len(model)))]
            if not expect:
                assert chunk is None
            else:
                np.testing.assert_array_equal(chunk.lines[:, 0], expect)
                assert chunk.seq == expect[0]
        c = ring.counters()
        assert c["lines_skipped"] == skipped and c["unread"] == len(model)
        assert c["lines_in"] == c["lines_out"] + c["lines_skipped"] + c["unread"]


def test_concurrent_writer_and_reader_lose_nothing_uncounted():
    ring = LineRing(64, N_SAMPLES, np.float32, prf_hz=100.0, max_backlog_lines=48)
    total = 20000
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 40, 2000)
    seen: list[np.ndarray] = []
    done = threading.Event()

    def reader():
        while True:
            chunk = ring.pop(int(rng.integers(1, 30)), timeout_s=0.05)
            if chunk is None:
                if done.is_set() and ring.unread == 0:
                    return
                continue
            assert np.array_equal(chunk.lines[:, 0], chunk.seq + np.arange(chunk.n_lines))
            seen.append(chunk.lines[:, 0].astype(np.int64))

    t = threading.Thread(target=reader)
    t.start()
    seq = 0
    for n in sizes:
        if seq >= total:
            break
        ring.push(block(seq, int(n)), 0.0)
        seq += int(n)
    done.set()
    ring.close()
    t.join(30)
    got = np.concatenate(seen)
    assert np.all(np.diff(got) > 0)  # every line at most once, in order
    c = ring.counters()
    assert c["lines_in"] == seq and c["lines_out"] == got.size and c["lines_in"] == got.size + c["lines_skipped"]


def test_a_fresh_burst_is_worked_through_and_an_old_backlog_skipped():
    """With max_backlog_s, lines that just arrived together (a socket emptied at once) are
    not skipped however many; once the oldest has waited longer than that, they are."""
    ring = LineRing(1000, N_SAMPLES, np.float32, prf_hz=1000.0, max_backlog_lines=100, max_backlog_s=0.05)
    ring.push(LineBlock(0, 0.0, np.zeros((500, N_SAMPLES), np.float32)), time.perf_counter())
    assert ring.pop(50).n_lines == 50 and ring.counters()["lines_skipped"] == 0
    time.sleep(0.06)
    chunk = ring.pop(50)
    assert ring.counters()["lines_skipped"] == 450 - 50 and chunk.seq == 450 and chunk.n_lines == 50
