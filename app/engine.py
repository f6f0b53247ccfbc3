"""The real-time engine: acquisition thread -> bounded ring -> processing thread -> results.

::

    source.read_block() --(acquisition thread)--> LineRing --(processing thread)--> Pipeline
         |                                          skip to newest,                   |
         +--> Recorder (own thread, bounded queue)  counted                            v
                                                                      results deque -> poll_results()

The acquisition thread only reads the source, stamps arrival times, checks sequence numbers
and pushes into the ring: it never waits for processing, recording or consumers. The
processing thread takes the oldest unread lines (or skips to the newest when more than
``max_latency_s`` of lines are waiting), runs the pipeline and appends its Results to a
bounded deque that consumers drain with :meth:`Engine.poll_results` (never blocks). Memory
is bounded whatever the input rate: the ring, the recorder queue and the results deque have
fixed capacities and count what they drop. The same engine runs the GUI, ``mmode monitor``
and the tests.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmode.errors import DataError, describe
from mmode.ingest.frame_check import FrameCheck, FrameCounts
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.app.recorder import Recorder
from mmode.app.ring import LineRing
from mmode.dsp.levels import LEVEL_S

#: Largest memory the ring may take, bytes.
MAX_RING_BYTES = 256 * 1024 * 1024
#: ``latency_recent_ms`` covers the last RECENT_S to 2 * RECENT_S seconds.
RECENT_S = 5.0


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps nicer (Linux, where a thread has its own nice
    value; elsewhere, or when ``nice <= 0``, nothing). Raising it back needs privileges. A
    system that refuses the call (a sandbox) leaves the thread as it is: priority is a
    preference, not a reason to stop."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


class Histogram:
    """Fixed-memory histogram of durations in milliseconds with log-spaced bins.

    Percentiles are exact to one bin (about 2.3 % with 100 bins per decade), the maximum is
    exact, and memory does not grow with the number of samples (hours of streaming).
    """

    def __init__(self, lo_ms: float = 1e-3, hi_ms: float = 1e6, bins_per_decade: int = 100) -> None:
        self._log_lo = math.log10(lo_ms)
        self._per_decade = bins_per_decade
        n_bins = int(round((math.log10(hi_ms) - self._log_lo) * bins_per_decade)) + 2
        self.counts = np.zeros(n_bins, dtype=np.int64)
        self.n = 0
        self.max_ms = 0.0

    def add(self, values_ms: np.ndarray | float, weights: np.ndarray | int = 1) -> None:
        """Count ``values_ms`` (each ``weights`` times)."""
        v = np.atleast_1d(np.asarray(values_ms, dtype=np.float64))
        w = np.broadcast_to(np.asarray(weights, dtype=np.int64), v.shape)
        idx = np.floor((np.log10(np.maximum(v, 1e-12)) - self._log_lo) * self._per_decade).astype(np.int64) + 1
        np.add.at(self.counts, np.clip(idx, 0, self.counts.size - 1), w)
        self.n += int(w.sum())
        if v.size:
            self.max_ms = max(self.max_ms, float(v.max()))

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bin holding the ``q``-th percentile (0..100); None if empty."""
        if self.n == 0:
            return None
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.n)))
        upper = 10 ** (self._log_lo + k / self._per_decade)
        return min(upper, self.max_ms)

    def merged(self, other: "Histogram") -> "Histogram":
        """A new histogram holding the samples of both (same bins)."""
        out = Histogram.__new__(Histogram)
        out._log_lo, out._per_decade = self._log_lo, self._per_decade
        out.counts = self.counts + other.counts
        out.n = self.n + other.n
        out.max_ms = max(self.max_ms, other.max_ms)
        return out

    def summary(self) -> dict[str, float | None]:
        """``{"p50", "p99", "max"}`` in ms (None before the first sample)."""
        r = lambda x: None if x is None else round(x, 3)  # noqa: E731
        return {"p50": r(self.percentile(50)), "p99": r(self.percentile(99)), "max": r(self.max_ms) if self.n else None}


class Engine:
    """Runs a source through the pipeline in two threads; consumers poll for results.

    Parameters
    ----------
    source : an :class:`mmode.ingest.sources.Source` (not yet opened).
    pipeline_settings : settings for :class:`mmode.app.pipeline.Pipeline`.
    pipeline : an object with ``prepare(meta, n_samples)``, ``process(LineBlock)`` and
        ``update_settings(settings)`` used instead of building a Pipeline.
    ring_seconds : ring capacity in seconds of lines (capped at :data:`MAX_RING_BYTES`).
    max_latency_s : backlog beyond which processing skips to the newest lines.
    max_block_lines : most lines processed in one call (default 50 ms of lines, >= 64); a
        backlog is processed in blocks this large, which costs less per line than many small ones.
    max_results : results kept for consumers; older ones are dropped and counted.
    worker_nice : niceness added to both engine threads (Linux; elsewhere ignored). A
        display passes a positive value so that drawing keeps the CPU under load: processing
        then falls behind and skips to the newest lines (counted as dropped) instead.
    """

    def __init__(
        self,
        source,
        pipeline_settings: Any = None,
        *,
        pipeline: Any = None,
        ring_seconds: float = 1.0,
        max_latency_s: float = 0.25,
        max_block_lines: int | None = None,
        max_results: int = 512,
        worker_nice: int = 0,
    ) -> None:
        if pipeline is None:
            from mmode.app.pipeline import Pipeline, PipelineSettings

            settings = pipeline_settings if pipeline_settings is not None else PipelineSettings()
            pipeline = Pipeline(dataclasses.replace(settings, realtime=True))
        self.source = source
        self.pipeline = pipeline
        self.ring_seconds = float(ring_seconds)
        self.max_latency_s = float(max_latency_s)
        self.worker_nice = int(worker_nice)
        self._max_block_lines = max_block_lines
        self._results: collections.deque = collections.deque(maxlen=max_results)
        self._results_appended = 0
        self._results_taken = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._pending_settings: Any = None
        self._pending_relevel: tuple[float | None, float | None] | None = None
        self._recorder: Recorder | None = None
        self._recordings: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []
        self.meta: AcquisitionMeta | None = None
        self.ring: LineRing | None = None
        self.error: BaseException | None = None
        self._prepare_error: BaseException | None = None
        self._state = "idle"
        self._acquisition_done = False
        # counters owned by the acquisition thread: rejected and re-timed frames, seq gaps
        # and restarts (FrameCheck.counts, made when acquisition starts)
        self.frame_check: FrameCheck | None = None
        self._discontinuities_seen = 0
        # counters owned by the processing thread
        self.lines_processed = 0
        self.busy_s = 0.0
        self.latency = Histogram()
        self._recent = (Histogram(), Histogram())  # (previous, current) RECENT_S period
        self._recent_since = 0.0
        self.inference = Histogram()
        self.stages: dict[str, Histogram] = {}
        self._class_counts: collections.Counter[str] = collections.Counter()
        self._t_start = 0.0
        self._t_end: float | None = None

    # -- lifetime ---------------------------------------------------------------------------
    def start(self) -> "Engine":
        """Open the source (errors raise here) and start both threads; returns at once.

        The pipeline is prepared in the processing thread (numba compilation may take a
        while on the first run); acquisition starts when it is ready (:meth:`wait_ready`).
        """
        self.meta = self.source.open()
        n_samples = self.source.n_samples
        prf = self.meta.prf_hz
        line_bytes = n_samples * np.dtype(self.source.dtype).itemsize
        capacity = max(1, min(int(math.ceil(self.ring_seconds * prf)), MAX_RING_BYTES // line_bytes))
        self.ring = LineRing(
            capacity, n_samples, self.source.dtype, prf,
            max_backlog_lines=max(1, int(math.ceil(self.max_latency_s * prf))), max_backlog_s=self.max_latency_s,
        )
        self.max_block_lines = self._max_block_lines or max(64, int(prf * 0.05))
        self._state = "starting"
        for target, name in ((self._process_loop, "engine-process"), (self._acquire_loop, "engine-acquire")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the pipeline is prepared; re-raises a failure to prepare it."""
        if not self._ready.wait(timeout_s):
            raise DataError(describe("engine", f"pipeline ready within {timeout_s:g} s", "still preparing"))
        if self._prepare_error is not None:
            raise self._prepare_error

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the source ended and every line was processed (or failure/stop)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Stop threads, source and recording; idempotent. Results stay pollable."""
        self._stop.set()
        self.source.stop()
        if self.ring is not None:
            self.ring.close()
        for t in self._threads:
            t.join(timeout=10.0)
        self.stop_recording()
        if self._state not in ("failed", "ended"):
            self._state = "stopped"
        if self._t_end is None:
            self._t_end = time.perf_counter()

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- consumers --------------------------------------------------------------------------
    def poll_results(self, max_n: int | None = None) -> list:
        """Results ready since the last call, oldest first (never blocks)."""
        out = []
        while max_n is None or len(out) < max_n:
            try:
                out.append(self._results.popleft())
            except IndexError:
                break
        self._results_taken += len(out)
        return out

    def update_settings(self, pipeline_settings: Any) -> None:
        """New pipeline settings, applied by the processing thread before its next block
        (a live engine keeps ``realtime`` on)."""
        if dataclasses.is_dataclass(pipeline_settings) and hasattr(pipeline_settings, "realtime"):
            pipeline_settings = dataclasses.replace(pipeline_settings, realtime=True)
        with self._lock:
            self._pending_settings = pipeline_settings

    def relevel(self, t_from_s: float | None = None, t_to_s: float | None = None) -> None:
        """Set the display level from the data of times ``t_from_s..t_to_s`` (what a display
        shows), in the processing thread before its next block (the GUI's *Auto*)."""
        with self._lock:
            self._pending_relevel = (t_from_s, t_to_s)

    @property
    def state(self) -> str:
        """"idle", "starting", "running", "reconnecting", "ended", "stopped" or "failed"."""
        if self._state == "running" and getattr(self.source, "status", "") == "reconnecting":
            return "reconnecting"
        return self._state

    @property
    def message(self) -> str:
        """What a status bar shows: the error, or the source's latest message."""
        if self.error is not None:
            return str(self.error)
        return getattr(self.source, "message", "")

    # -- recording --------------------------------------------------------------------------
    def start_recording(self, path: str | Path, *, flush_interval_s: float = 1.0) -> None:
        """Record every received line (raw, before processing) to a format v1 file."""
        if self.meta is None:
            raise DataError(describe("engine", "a started engine before recording", "not started"))
        recorder = Recorder(path, self.meta, self.source.n_samples, self.source.dtype, flush_interval_s=flush_interval_s)
        with self._lock:
            old, self._recorder = self._recorder, recorder
        if old is not None:
            self._recordings.append(old.close())

    def stop_recording(self) -> dict[str, Any] | None:
        """Close the current recording; returns its summary (None if none was running)."""
        with self._lock:
            recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        summary = recorder.close()
        self._recordings.append(summary)
        return summary

    # -- statistics -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and timings (the ``mmode monitor --json`` report); cheap, any thread.

        ``lines_received == lines_processed + lines_dropped + lines_pending`` always holds:
        received lines are those that passed the acquisition thread's check and entered the
        ring. ``frames_rejected`` / ``lines_rejected`` count frames dropped there for NaN or
        Inf samples (neither received nor missing); ``frames_retimed`` / ``lines_retimed``
        frames passed on with the time their seq predicts (their own ran backwards, was not
        finite or was off); ``gaps`` / ``lines_missing`` seq ranges no frame covered (lost
        before reaching the engine); ``restarts`` backward jumps of seq (seeks excepted);
        ``framing_errors`` connections the source closed for broken framing, then
        reconnected (:class:`~mmode.ingest.frame_check.FrameCounts`, docs/protocol.md).
        ``realtime_factor`` is the processing speed relative to the line rate (lines
        processed per second of processing-thread busy time / PRF): above 1 keeps up.
        ``latency_ms`` runs per line from its arrival in the ring to its Results being
        ready (whole run; ``latency_recent_ms`` the last 5 to 10 s, for a live display);
        ``inference_ms`` is the classifier's time in the blocks that completed at
        least one window; ``stage_ms`` the pipeline's time per block and stage;
        ``classification`` (with a classifier) counts window labels. ``motion`` the traces
        the stream carries (the pipeline's ``motion_mode``: "auto" decided by the line rate).
        ``recording`` is None or
        the current (else the last) recording's :meth:`Recorder.summary`: ``{"path", "state":
        "recording" | "failed" | "closed", "lines_written", "lines_dropped", "error": None |
        one line}``; a failed recording writes nothing more while the engine runs on.
        """
        ring = self.ring.counters() if self.ring is not None else {"lines_in": 0, "lines_skipped": 0, "high_water_lines": 0}
        processed = self.lines_processed
        end = self._t_end if self._t_end is not None else time.perf_counter()
        elapsed = max(0.0, end - self._t_start) if self._t_start else 0.0
        prf = self.meta.prf_hz if self.meta is not None else float("nan")
        recorder = self._recorder
        check = self.frame_check
        out: dict[str, Any] = {
            "state": self.state,
            "message": self.message,
            "lines_received": ring["lines_in"],
            "lines_processed": processed,
            "lines_dropped": ring["lines_skipped"],
            "lines_pending": ring["lines_in"] - processed - ring["lines_skipped"],
            **(check.counts if check is not None else FrameCounts()).as_dict(),
            "reconnects": getattr(self.source, "reconnects", 0),
            "framing_errors": getattr(self.source, "framing_errors", 0),
            "latency_ms": self.latency.summary(),
            "latency_recent_ms": self._recent[0].merged(self._recent[1]).summary(),
            "inference_ms": self.inference.summary(),
            "stage_ms": {name: h.summary() for name, h in list(self.stages.items())},
            "realtime_factor": round(processed / (self.busy_s * prf), 3) if self.busy_s > 0 else None,
            "line_rate_hz": round(ring["lines_in"] / elapsed, 1) if elapsed > 0 else None,
            "elapsed_s": round(elapsed, 3),
            "prf_hz": prf,
            "motion": getattr(self.pipeline, "motion_mode", None),
            "results_dropped": max(0, self._results_appended - self._results_taken - len(self._results)),
            "ring_capacity_lines": self.ring.capacity if self.ring is not None else 0,
            "ring_high_water_lines": ring["high_water_lines"],
            "recording": recorder.summary() if recorder is not None else (self._recordings[-1] if self._recordings else None),
        }
        if self._class_counts:
            n = sum(self._class_counts.values())
            out["classification"] = {
                "windows": n,
                "label": self._class_counts.most_common(1)[0][0],
                "fraction": {k: round(v / n, 4) for k, v in sorted(self._class_counts.items())},
            }
        return out

    # -- threads ----------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._state = "failed"
        self._stop.set()
        self.source.stop()
        if self.ring is not None:
            self.ring.close()

    def _acquire_loop(self) -> None:
        """Read the source; check every block (:class:`~mmode.ingest.frame_check.FrameCheck`:
        NaN/Inf frames dropped, times re-timed, seq gaps and restarts counted); push the rest
        into the ring and the recorder. Every source passes here, so the pipeline only sees
        finite lines with strictly increasing, rate-consistent times (a new timeline only
        where the seq goes backwards, where the processing thread prepares afresh)."""
        lower_thread_priority(self.worker_nice)
        check = self.frame_check = FrameCheck(self.meta.prf_hz)
        while not self._ready.is_set():
            if self._stop.wait(0.05):
                return
        try:
            for block in self.source.iter_blocks(self._stop):
                arrival_s = time.perf_counter()
                jumps = getattr(self.source, "discontinuities", 0)
                block = check.check(block, discontinuity=jumps != self._discontinuities_seen)
                self._discontinuities_seen = jumps
                if block is None:
                    continue
                self.ring.push(block, arrival_s)
                recorder = self._recorder
                if recorder is not None:
                    recorder.submit(block)
        except BaseException as exc:  # protocol violation, unreadable file: the engine fails
            if not self._stop.is_set():  # errors of a source being torn down are not failures
                self._fail(exc)
        finally:
            self._acquisition_done = True
            self.ring.close()

    def _prepare_warm(self) -> None:
        """Prepare the pipeline and run it once on noise, so that compiling its kernels
        (first call) does not hold up the first live lines; then prepare it afresh.

        The motion tracker holds its first ``select_s`` of lines back to choose an echo, so
        its tracking kernels would first run (and compile) a second into the stream: its
        ``flush`` runs them on the noise now."""
        n_samples, dtype = self.source.n_samples, np.dtype(self.source.dtype)
        self.pipeline.prepare(self.meta, n_samples)
        noise = np.random.default_rng(0).standard_normal((2, min(self.max_block_lines, 64), n_samples)) * 100
        lines = (noise[0] + 1j * noise[1]) if dtype.kind == "c" else noise[0]
        self.pipeline.process(LineBlock(seq=0, t_s=0.0, lines=lines.astype(dtype)))
        motion = getattr(self.pipeline, "motion", None)
        if motion is not None:
            motion.flush()
        self._prepare_pipeline()

    def _prepare_pipeline(self) -> None:
        """Prepare the pipeline for the stream; a recording played back (a source with
        ``head_lines``) has its display level set from its first second at once, so that
        playback and seeks show it as ``mmode process`` does."""
        self.pipeline.prepare(self.meta, self.source.n_samples)
        head = getattr(self.source, "head_lines", None)
        if head is not None and hasattr(self.pipeline, "settle_level"):
            self.pipeline.settle_level(head(max(1, int(round(LEVEL_S * self.meta.prf_hz)))))

    def _process_loop(self) -> None:
        lower_thread_priority(self.worker_nice)
        try:
            self._prepare_warm()
        except BaseException as exc:
            self._prepare_error = exc
            self._fail(exc)
            self._ready.set()
            return
        self._t_start = time.perf_counter()
        self._state = "running"
        self._ready.set()
        next_seq: int | None = None
        try:
            while True:
                with self._lock:
                    settings, self._pending_settings = self._pending_settings, None
                    relevel, self._pending_relevel = self._pending_relevel, None
                if settings is not None:
                    self.pipeline.update_settings(settings)
                if relevel is not None:
                    self.pipeline.relevel(*relevel)
                chunk = self.ring.pop(self.max_block_lines, timeout_s=0.1)
                if chunk is None:
                    if self._acquisition_done or self._stop.is_set():
                        if self.ring.unread == 0:
                            break
                    continue
                if next_seq is not None and chunk.seq < next_seq:
                    # the source restarted or seeked backwards: start the stages afresh
                    self._prepare_pipeline()
                next_seq = chunk.seq + chunk.n_lines
                t0 = time.perf_counter()
                results = self.pipeline.process(chunk.block())
                t1 = time.perf_counter()
                self.busy_s += t1 - t0
                arrivals, counts = np.unique(chunk.arrival_s, return_counts=True)
                self.latency.add((t1 - arrivals) * 1e3, counts)
                if t1 - self._recent_since >= RECENT_S:
                    self._recent, self._recent_since = (self._recent[1], Histogram()), t1
                self._recent[1].add((t1 - arrivals) * 1e3, counts)
                for stage, ms in results.timings_ms.items():
                    self.stages.setdefault(stage, Histogram()).add(float(ms))
                windows = results.classification or []
                if windows:
                    self.inference.add(float(results.timings_ms["classify"]))
                    self._class_counts.update(w.label for w in windows)
                self._results.append(results)
                self._results_appended += 1
                self.lines_processed += chunk.n_lines
            finish = getattr(self.pipeline, "finish", None)
            if finish is not None and not self._stop.is_set() and next_seq is not None:
                # the source ended: what the motion tracker still holds (a short file's last second)
                self._results.append(finish())
                self._results_appended += 1
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._t_end = time.perf_counter()
            if self._state == "running":
                self._state = "stopped" if self._stop.is_set() else "ended"
