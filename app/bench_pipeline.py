"""Pipeline throughput behind ``mmode bench``: the live pipeline per block size.

:mod:`mmode.dsp.bench` times the DSP chain alone; this times what a live engine's worker
runs on every block: the display chain, the motion tracker and the student classifier
(:class:`~mmode.app.pipeline.Pipeline` with ``realtime`` on), on simulated int16 RF of a
heart at ``prf_hz`` (20 kHz by default) with 2048 samples per line.

Two block sizes are compared in the same process: the engine's live blocks (10 ms of lines,
:data:`~mmode.ingest.sources.BLOCK_SECONDS`: 200 lines at 20 kHz) and 1024-line blocks. A
block costs about ``fixed + n_lines x per_line``; the two timings give both terms, so the
fixed per-block cost (Python calls, small allocations, per-block set-up) is measured rather
than guessed. The first 1.5 s of lines run before the clock starts (the tracker chooses its
echo in its first second, the classifier's first window ends at 2.25 s); timing is the
thread's CPU time, best of ``repeats`` passes, so a busy machine slows the figures less
than the wall clock would (the load average is reported beside them).
"""

from __future__ import annotations

import os
import time

import numpy as np

from mmode.app.pipeline import Pipeline, PipelineSettings
from mmode.dsp.bench import N_SAMPLES, make_rf
from mmode.ingest.meta import LineBlock
from mmode.ingest.sources import default_block_lines

#: Lines run before timing starts: the tracker's choice of the echo (1 s) and some margin.
WARM_SECONDS = 1.5
LARGE_BLOCK_LINES = 1024


def _time_blocks(meta, lines: np.ndarray, block_lines: int, n_warm: int, model: str) -> float:
    """Thread CPU seconds per block of the blocks that start at or after line ``n_warm``,
    for a fresh pipeline."""
    pipe = Pipeline(PipelineSettings(model=model, realtime=True))
    pipe.prepare(meta, lines.shape[1])
    pipe.settle_level(lines[:n_warm])
    prf = meta.prf_hz
    elapsed, n_timed = 0.0, 0
    for i in range(0, lines.shape[0] - block_lines + 1, block_lines):
        block = LineBlock(seq=i, t_s=i / prf, lines=lines[i:i + block_lines])
        t0 = time.thread_time()
        pipe.process(block)
        if i >= n_warm:
            elapsed += time.thread_time() - t0
            n_timed += 1
    return elapsed / n_timed


def run_pipeline_benchmark(prf_hz: float = 20000.0, seconds: float = 2.0, repeats: int = 2,
                           model: str = "classifier_student") -> dict:
    """Lines per second of the live pipeline for 10 ms blocks and 1024-line blocks, and the
    fixed cost per block; the dict under ``pipeline`` in ``mmode bench --json``."""
    # 0.5 s of the heart tiled: rendering 20 kHz for the whole span would outlast the benchmark
    meta, lines = make_rf(int(round((WARM_SECONDS + seconds) * prf_hz)), scenario="cardiac_regular",
                          prf_hz=prf_hz, loop_s=0.5)
    n_warm = int(round(WARM_SECONDS * prf_hz))
    sizes = {"live": default_block_lines(prf_hz), "large": LARGE_BLOCK_LINES}
    per_block_s = {}
    for name, n in sizes.items():
        per_block_s[name] = min(_time_blocks(meta, lines, n, n_warm, model) for _ in range(repeats))
    n_live, n_large = sizes["live"], sizes["large"]
    per_line_s = (per_block_s["large"] - per_block_s["live"]) / (n_large - n_live)
    fixed_s = per_block_s["live"] - n_live * per_line_s
    live_rate, large_rate = n_live / per_block_s["live"], n_large / per_block_s["large"]
    return {
        "prf_hz": prf_hz,
        "n_samples": N_SAMPLES,
        "model": model,
        "live_block_lines": n_live,
        "large_block_lines": n_large,
        "live_blocks_lines_per_s": live_rate,
        "large_blocks_lines_per_s": large_rate,
        "live_vs_large": live_rate / large_rate,
        "live_realtime_factor": live_rate / prf_hz,
        "ms_per_live_block": per_block_s["live"] * 1e3,
        "fixed_ms_per_block": fixed_s * 1e3,
        "us_per_line": per_line_s * 1e6,
        "timer": "thread CPU time",
        "load_avg_1min": os.getloadavg()[0],
    }
