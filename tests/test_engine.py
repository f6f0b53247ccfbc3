"""Engine: every line delivered once, explicit overload policy, exact counters, error states."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from mmode.app.engine import Engine, Histogram
from mmode.app.pipeline import Pipeline, PipelineSettings
from mmode.errors import DataError, ProtocolError
from mmode.ingest.h5format import read_h5, write_recording
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.sources import ArraySource, FileSource, SimSource, Source, TcpSource
from mmode.ingest.stream import StreamServer

META = AcquisitionMeta("rf", fs_hz=20e6, f0_hz=5e6, prf_hz=2000.0)


def seq_lines(n: int, n_samples: int = 32, start: int = 0) -> np.ndarray:
    """int16 lines whose samples encode the line index (exact content checks)."""
    idx = np.arange(start, start + n)
    return ((idx[:, None] * 7 + np.arange(n_samples)[None, :]) % 30000).astype(np.int16)


@dataclass
class Out:
    seq_start: int
    seq_stop: int
    lines: np.ndarray
    settings: object
    timings_ms: dict = field(default_factory=dict)
    classification: object = None


@dataclass
class Window:
    label: str


class RecordingPipeline:
    """Stands in for mmode.app.pipeline.Pipeline: keeps what it was given, optionally slow."""

    def __init__(self, delay_s: float = 0.0, inference_ms: float | None = None) -> None:
        self.delay_s = delay_s
        self.inference_ms = inference_ms
        self.settings = "initial"
        self.prepared = None
        self.prepared_before_seq: list[int | None] = []
        self._next_seq: int | None = None

    def prepare(self, meta, n_samples):
        self.prepared = (meta, n_samples)
        self.prepared_before_seq.append(self._next_seq)

    def update_settings(self, settings):
        self.settings = settings

    def process(self, block: LineBlock) -> Out:
        self._next_seq = block.seq
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.inference_ms is None:
            return Out(block.seq, block.seq + block.n_lines, block.lines.copy(), self.settings)
        # one classifier window per block: every third block says no_sliding
        window = Window("lung_sliding" if (block.seq // block.n_lines) % 3 else "no_sliding")
        return Out(block.seq, block.seq + block.n_lines, block.lines.copy(), self.settings,
                   {"dsp": 0.1, "classify": self.inference_ms}, [window])


def run_to_end(engine: Engine, timeout_s: float = 30.0) -> list:
    engine.start()
    engine.wait_ready()
    results = []
    deadline = time.monotonic() + timeout_s
    while not engine.wait(0.05):
        results += engine.poll_results()
        assert time.monotonic() < deadline, "engine did not finish"
    results += engine.poll_results()
    engine.stop()
    return results


def test_every_line_is_processed_once_in_order_when_keeping_up():
    lines = seq_lines(5000)
    pipe = RecordingPipeline()
    engine = Engine(ArraySource(META, lines, block_lines=37), pipeline=pipe, ring_seconds=10, max_latency_s=10)
    results = run_to_end(engine)
    got = np.concatenate([r.lines for r in results])
    np.testing.assert_array_equal(got, lines)
    assert [r.seq_start for r in results[1:]] == [r.seq_stop for r in results[:-1]]
    s = engine.stats()
    assert s["state"] == "ended" and pipe.prepared == (META, 32)
    assert s["lines_received"] == s["lines_processed"] == 5000
    assert s["lines_dropped"] == s["gaps"] == s["lines_pending"] == 0
    assert s["latency_ms"]["p50"] is not None and s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert s["latency_recent_ms"] == s["latency_ms"]  # a run shorter than RECENT_S


def test_overload_skips_to_newest_counts_exactly_and_bounds_memory():
    lines = seq_lines(20000)
    pipe = RecordingPipeline(delay_s=0.01)  # 10 ms per block of at most 64 lines: ~6 kHz
    # source paced at 40 kHz: far more than the pipeline handles
    source = ArraySource(AcquisitionMeta("rf", 20e6, 5e6, 40000.0), lines, block_lines=100, speed=1.0)
    engine = Engine(source, pipeline=pipe, ring_seconds=0.05, max_latency_s=0.02, max_block_lines=64)
    results = run_to_end(engine)
    s = engine.stats()
    processed = np.concatenate([r.lines for r in results])
    seqs = np.concatenate([np.arange(r.seq_start, r.seq_stop) for r in results])
    np.testing.assert_array_equal(processed, lines[seqs])  # processed lines are the right ones
    assert np.all(np.diff(seqs) > 0)  # never twice, never backwards
    assert s["lines_received"] == 20000
    assert s["lines_dropped"] > 0
    assert s["lines_processed"] == seqs.size
    assert s["lines_received"] == s["lines_processed"] + s["lines_dropped"]
    # skip-to-newest bounds the backlog (and so the latency) by the ring, whatever the rate
    assert s["ring_high_water_lines"] <= s["ring_capacity_lines"] == 2000


class ScriptedSource(Source):
    """Plays the given blocks once, with their own seq, times and samples (gaps, restarts,
    bad times as scripted), then ends; line width and dtype from the first block."""

    def __init__(self, blocks, meta: AcquisitionMeta = META) -> None:
        super().__init__()
        self.blocks = list(blocks)
        self._meta = meta

    def open(self):
        first = self.blocks[0].lines
        self.meta, self.n_samples, self.dtype = self._meta, first.shape[1], first.dtype
        return self.meta

    def read_block(self, timeout_s):
        if not self.blocks:
            self.finished = True
            return None
        return self.blocks.pop(0)


def test_sequence_gaps_and_restarts_are_counted():
    spans = [(0, 10), (10, 10), (25, 5), (30, 10), (100, 1), (0, 10)]  # gap 5, gap 60, restart
    pipe = RecordingPipeline()
    engine = Engine(ScriptedSource(LineBlock(s, s / 2000, seq_lines(n, start=s)) for s, n in spans), pipeline=pipe)
    results = run_to_end(engine)
    s = engine.stats()
    assert (s["gaps"], s["lines_missing"], s["restarts"]) == (2, 65, 1)
    # prepared, warmed up on noise (seq 0), prepared afresh; prepared again at the restart,
    # i.e. after the block at seq 100 and before the one at seq 0
    assert pipe.prepared_before_seq == [None, 0, 100]
    assert s["lines_processed"] == 46 == sum(r.seq_stop - r.seq_start for r in results)


def test_file_playback_loops_and_seeks_without_false_gaps(tmp_path):
    path = tmp_path / "rec.h5"
    lines = seq_lines(300)
    write_recording(path, META, lines)
    source = FileSource(str(path), speed=20.0, loop=True, block_lines=50)
    engine = Engine(source, pipeline=RecordingPipeline(), ring_seconds=10, max_latency_s=10).start()
    engine.wait_ready()
    results = []
    deadline = time.monotonic() + 10
    while sum(r.seq_stop - r.seq_start for r in results) < 700 and time.monotonic() < deadline:
        results += engine.poll_results()
        time.sleep(0.01)
    source.seek(125)
    jumped = []
    while not jumped and time.monotonic() < deadline:
        jumped = [r for r in engine.poll_results() if r.seq_start % 300 == 125]
        time.sleep(0.01)
    engine.stop()
    for r in results + jumped:  # line seq of loop k is k * 300 + file line
        np.testing.assert_array_equal(r.lines, lines[np.arange(r.seq_start, r.seq_stop) % 300])
    s = engine.stats()
    assert jumped and s["gaps"] == 0 and s["lines_dropped"] == 0


def test_settings_change_reaches_the_processing_thread():
    lines = seq_lines(4000)
    engine = Engine(ArraySource(META, lines, block_lines=20, speed=1.0), pipeline=RecordingPipeline())
    engine.start()
    engine.wait_ready()
    seen: list = []
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        seen += [r.settings for r in engine.poll_results()]
        time.sleep(0.02)
    engine.update_settings("gain +6 dB")
    while seen[-1] != "gain +6 dB" and time.monotonic() < deadline:
        seen += [r.settings for r in engine.poll_results()]
        time.sleep(0.02)
    engine.stop()
    seen += [r.settings for r in engine.poll_results()]
    assert seen[0] == "initial" and seen[-1] == "gain +6 dB"
    assert seen == sorted(seen, key=lambda x: x != "initial")  # switched once, never back


def test_results_are_bounded_when_nobody_polls_and_inference_is_reported():
    lines = seq_lines(3000)
    engine = Engine(
        ArraySource(META, lines, block_lines=10), pipeline=RecordingPipeline(inference_ms=2.0),
        ring_seconds=10, max_latency_s=10, max_block_lines=10, max_results=16,
    )
    engine.start()
    engine.wait_ready()
    assert engine.wait(20)
    s = engine.stats()
    assert len(engine.poll_results()) == 16
    assert engine.stats()["results_dropped"] == 300 - 16 == s["results_dropped"]
    assert s["inference_ms"]["p50"] == pytest.approx(2.0, rel=0.03)
    assert s["classification"] == {
        "windows": 300, "label": "lung_sliding", "fraction": {"lung_sliding": 0.6667, "no_sliding": 0.3333}
    }
    engine.stop()


def test_recording_from_the_engine_holds_every_received_line(tmp_path):
    lines = seq_lines(3000)
    engine = Engine(ArraySource(META, lines, block_lines=25, speed=2.0), pipeline=RecordingPipeline(delay_s=0.002))
    engine.start()
    engine.wait_ready()
    engine.start_recording(tmp_path / "live.h5")
    deadline = time.monotonic() + 10
    while engine.stats()["recording"]["lines_written"] < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    summary = engine.stop_recording()
    engine.stop()
    with read_h5(tmp_path / "live.h5") as rec:
        got = rec.read()
        seq = np.round(rec.timestamps_s() * META.prf_hz).astype(int)
    assert summary["lines_written"] == got.shape[0] > 0 and summary["lines_dropped"] == 0
    np.testing.assert_array_equal(np.diff(seq), 1)
    np.testing.assert_array_equal(got, lines[seq])


def test_real_pipeline_on_the_simulated_probe():
    source = SimSource("lung_sliding", prf_hz=1000.0, n_samples=512, block_lines=20)
    engine = Engine(source)
    engine.start()
    engine.wait_ready()
    time.sleep(1.0)
    engine.stop()
    results = engine.poll_results()
    s = engine.stats()
    assert results and s["lines_processed"] == sum(r.seq_stop - r.seq_start for r in results)
    assert s["lines_received"] == s["lines_processed"] + s["lines_dropped"] + s["lines_pending"]
    assert all(r.display_db.shape[0] == r.seq_stop - r.seq_start for r in results)


def test_engine_reports_reconnecting_then_running_when_the_server_returns():
    lines = seq_lines(40000)
    server = StreamServer(ArraySource(META, lines, block_lines=20, speed=1.0), port=0).start()
    port = server.address[1]
    engine = Engine(TcpSource("127.0.0.1", port, backoff_s=0.05, max_backoff_s=0.2), pipeline=RecordingPipeline())
    engine.start()
    engine.wait_ready()

    def wait_state(state, timeout_s=5.0):
        deadline = time.monotonic() + timeout_s
        while engine.state != state and time.monotonic() < deadline:
            time.sleep(0.02)
        return engine.state

    try:
        assert wait_state("running") == "running"
        deadline = time.monotonic() + 5
        while engine.stats()["lines_received"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.stop()
        assert wait_state("reconnecting") == "reconnecting"
        assert "reconnecting" in engine.message
        # the new server starts from seq 0 when the engine connects: a restart, not a gap
        server = StreamServer(ArraySource(META, lines, block_lines=20, speed=1.0), port=port, wait_for_client=True).start()
        assert wait_state("running") == "running"
        deadline = time.monotonic() + 5
        while engine.stats()["restarts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        s = engine.stats()
        assert s["reconnects"] == 1 and s["restarts"] == 1
    finally:
        engine.stop()
        server.stop()


def test_protocol_violation_fails_the_engine_with_its_message():
    class Broken(ArraySource):
        def read_block(self, timeout_s):
            raise ProtocolError("127.0.0.1:1: expected frame magic b'MMSD', found b'XXXX'")

    engine = Engine(Broken(META, seq_lines(10)), pipeline=RecordingPipeline()).start()
    engine.wait_ready()
    assert engine.wait(5)
    assert engine.state == "failed" and "frame magic" in engine.message
    assert engine.stats()["state"] == "failed"
    engine.stop()


def test_histogram_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.lognormal(mean=1.0, sigma=1.0, size=20000)
    h = Histogram()
    h.add(values[:10000])
    h.add(values[10000:], np.ones(10000, dtype=int))
    for q in (50, 99):
        assert h.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.03)
    assert h.max_ms == values.max() and h.n == 20000
    w = Histogram()
    w.add(np.array([1.0, 10.0]), np.array([99, 1]))
    assert w.percentile(50) == pytest.approx(1.0, rel=0.03) and w.percentile(100) == 10.0
    both = h.merged(w)
    assert both.n == 20100 and both.max_ms == values.max()
    assert both.percentile(50) == pytest.approx(np.percentile(np.r_[values, [1.0] * 99, 10.0], 50), rel=0.03)


# -- simulated probe line rate ------------------------------------------------------------------
def throttle_simulator(monkeypatch, lines_per_s: float) -> None:
    """Make SimulatedProbe render at most ``lines_per_s`` (a simulator too slow for the PRF)."""
    from mmode.ingest.simulator import SimulatedProbe

    render = SimulatedProbe.next_block

    def slow_next_block(self, n_lines):
        t0 = time.perf_counter()
        block = render(self, n_lines)
        time.sleep(max(0.0, n_lines / lines_per_s - (time.perf_counter() - t0)))
        return block

    monkeypatch.setattr(SimulatedProbe, "next_block", slow_next_block)


def read_lines(source: SimSource, n_lines: int) -> list[LineBlock]:
    blocks, got = [], 0
    while got < n_lines:
        block = source.read_block(1.0)
        if block is not None:
            blocks.append(block)
            got += block.n_lines
    return blocks


def test_sim_source_too_slow_for_its_prf_precomputes_a_loop_and_keeps_the_rate(monkeypatch):
    from mmode.ingest import sources
    from mmode.ingest.simulator import SimulatedProbe

    # breathing at 80/min: a breath is 0.75 s, 1500 lines
    prf_hz, render_hz, kwargs = 2000.0, 800.0, dict(n_samples=256, seed=3, breath_per_min=80.0)
    reference = SimulatedProbe("lung_sliding", prf_hz=prf_hz, **kwargs).next_block(1500).lines
    throttle_simulator(monkeypatch, render_hz)
    monkeypatch.setattr(sources, "AUTO_PRECOMPUTE_S", 0.5)

    source = SimSource("lung_sliding", prf_hz=prf_hz, block_lines=20, **kwargs)
    source.open()
    # of the loops of 0.5 to 1 s, a whole breath closes the scene's motion
    assert source.precomputed_s == 0.75 and "precomputed 0.75 s loop" in source.message
    blocks = read_lines(source, 2000)
    source.stop()
    seq = np.concatenate([b.seq + np.arange(b.n_lines) for b in blocks])
    np.testing.assert_array_equal(seq, np.arange(seq.size))  # no line skipped
    np.testing.assert_array_equal([b.t_s for b in blocks], [b.seq / prf_hz for b in blocks])
    lines = np.concatenate([b.lines for b in blocks])
    np.testing.assert_array_equal(lines[:1500], reference)  # the simulator's own lines, from line 0
    np.testing.assert_array_equal(lines[1500:2000], reference[:500])  # then the 1500-line loop again
    # lines delivered per second of the source's own clock: the PRF, not the render rate
    assert 0.85 * prf_hz <= source.delivered_rate_hz <= 1.01 * prf_hz

    live = SimSource("lung_sliding", prf_hz=prf_hz, block_lines=20, precompute_s=0, **kwargs)
    live.open()
    read_lines(live, 400)
    live.stop()
    assert live.precomputed_s == 0 and live.delivered_rate_hz <= 1.01 * render_hz  # what the fix avoids


def test_a_looped_cardiac_simulation_keeps_its_heart_rate(monkeypatch):
    """The loop of a simulator too slow for its PRF closes the scene's motion: the heart rate
    read from the tracked wall over 8 s of the replayed loop is the scenario's 70/min (a 2 s
    loop repeated every 2 s, and the rate read 30/min)."""
    from mmode.dsp import rates
    from mmode.ingest.scenarios import SCENARIOS

    throttle_simulator(monkeypatch, 1900.0)  # under twice the PRF: a loop
    source = SimSource("cardiac_regular", prf_hz=1000.0, seed=1)
    source.open()
    source.stop()
    loop = source._loop
    lines = loop[np.arange(8000) % loop.shape[0]]
    pipe = Pipeline(PipelineSettings())
    pipe.prepare(source.meta, source.n_samples)
    parts = [pipe.process(LineBlock(i, i / 1000.0, lines[i : i + 500])).motion for i in range(0, 8000, 500)]
    trace = np.concatenate([p.displacement_m for p in [*parts, pipe.finish().motion]])
    rate = rates.dominant_rate(trace, 1000.0, *rates.CARDIAC_RANGE_PER_MIN)
    assert rate.rate_per_min == pytest.approx(SCENARIOS["cardiac_regular"].rate_per_min, rel=0.05)


def test_sim_source_fast_enough_renders_live_and_refuses_an_oversize_loop():
    from mmode.ingest import sources

    fast = SimSource("no_contact", prf_hz=50.0, n_samples=256)
    fast.open()
    assert fast.precomputed_s == 0 and fast.message == ""
    fast.stop()
    huge = SimSource("no_contact", prf_hz=20000.0, n_samples=2048, precompute_s=3600.0)  # 295 GB of lines
    with pytest.raises(DataError, match=f"{sources.MAX_PRECOMPUTE_BYTES >> 20} MiB"):
        huge.open()



class NicenessPipeline(RecordingPipeline):
    """Notes the nice value of the thread that processes."""

    def process(self, block: LineBlock) -> Out:
        self.nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return super().process(block)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
def test_worker_nice_lowers_the_engine_threads_only():
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if before > 16:
        pytest.skip(f"the test process already runs at nice {before}: no room to lower a thread by 3")
    pipe = NicenessPipeline()
    run_to_end(Engine(ArraySource(META, seq_lines(200), block_lines=50), pipeline=pipe, worker_nice=3))
    assert pipe.nice == min(19, before + 3)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller is untouched
    pipe = NicenessPipeline()
    run_to_end(Engine(ArraySource(META, seq_lines(200), block_lines=50), pipeline=pipe))
    assert pipe.nice == before


def test_engine_runs_where_thread_priority_cannot_be_changed(monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    pipe = RecordingPipeline()
    engine = Engine(ArraySource(META, seq_lines(200), block_lines=50), pipeline=pipe, worker_nice=10)
    results = run_to_end(engine)
    assert engine.stats()["state"] == "ended" and sum(r.seq_stop - r.seq_start for r in results) == 200


def test_a_file_ending_during_the_echo_choice_still_gets_its_whole_trace_and_level(tmp_path):
    """A 1.5 s recording: the tracker holds its first second back and chooses in 5 ms steps;
    when the file ends, the engine hands over what it still holds, so every line has its
    motion, and the display level is the file's, as `mmode process` sets it."""
    from mmode.app.pipeline import PipelineSettings
    from mmode.ingest.simulator import simulate

    sim = simulate("cardiac_regular", seconds=1.5, prf_hz=400.0, seed=1, n_samples=1024)
    path = tmp_path / "short.h5"
    write_recording(path, sim.meta, sim.lines.astype(np.float32) * 0.01)  # float: levelled from the data
    engine = Engine(FileSource(str(path), speed=4.0), PipelineSettings(model=None))
    results = run_to_end(engine)
    motion_t = np.concatenate([r.motion.t_s for r in results if r.motion is not None])
    np.testing.assert_allclose(np.sort(motion_t), sim.timestamps_s)
    assert results[-1].seq_start == results[-1].seq_stop == sim.lines.shape[0]
    assert results[-1].motion_state["status"] == "tracking"
    levels = {round(r.level.reference_db, 6) for r in results if r.seq_stop > r.seq_start}
    assert len(levels) == 1 and results[0].level.mode == "data" and results[0].level.settled
