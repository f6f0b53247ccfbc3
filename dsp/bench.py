"""DSP throughput benchmark behind ``mmode bench``: numba chain against a scipy reference.

Part of the package (``mmode.dsp.bench``) so that ``mmode bench`` works from an installed
wheel; imports neither torch nor Qt.

Data: simulated int16 RF (lung view, 5 MHz probe sampled at 40 MHz), 2048 samples per line,
to 256 display rows, in blocks of ``BLOCK_LINES`` lines. One thread: the kernels use no
``prange`` and numba is pinned to one thread. All timings are the best of ``repeats``
passes over the same data, in the same process, so the ratios compare like with like.

Measured:

- ``envelope_lines_per_s``: DC removal + demodulation + 33-tap FIR at the rows (decimate by
  8) + envelope + log compression (kernels only, no allocation in the loop);
- ``chain_lines_per_s``: the whole :class:`~mmode.dsp.processor.Processor` with the live
  denoiser (median along depth + persistence) and the per-line features;
- ``reference_lines_per_s``: ``scipy.signal.hilbert`` + numpy ``abs``/``log10``/row pick on
  the same lines (:func:`mmode.dsp.envelope.reference_display_db`);
- ``chain_by_denoise_lines_per_s``: the chain with each denoiser;
- ``envelope_two_threads_lines_per_s``: two Python threads running the envelope kernel at
  once, wall clock (the kernels release the GIL, so this approaches twice
  ``envelope_wall_lines_per_s``, the same work on one thread timed by the wall clock, when
  a second core is free).

Single-thread rates are timed with the thread's CPU time (see :func:`_best_rates`); the
machine's load average is reported beside them.
"""

from __future__ import annotations

import os
import threading
import time

import numba
import numpy as np

from mmode.dsp import envelope, levels
from mmode.dsp.processor import DENOISE_METHODS, Processor, ProcessorSettings
from mmode.ingest.meta import LineBlock

N_SAMPLES = 2048
N_ROWS = 256
BLOCK_LINES = 1024
PRF_HZ = 2000.0


def _best_rates(cases: dict, repeats: int, clock=time.thread_time) -> dict:
    """Lines per second of each case ``name -> (fn, n_lines)``, best of ``repeats``.

    ``clock`` is the CPU time of the calling thread by default: on a shared machine, time
    the process spends waiting for a core is not counted, so the rate is that of one core.
    The cases are timed in turns (one pass of each per round), so a load that comes and
    goes hits all of them alike and the ratios stay fair.
    """
    best = {name: float("inf") for name in cases}
    for fn, _ in cases.values():
        fn()  # warm-up (compilation, caches)
    for _ in range(repeats):
        for name, (fn, _) in cases.items():
            t0 = clock()
            fn()
            best[name] = min(best[name], clock() - t0)
    return {name: cases[name][1] / best[name] for name in cases}


def make_rf(n_lines: int, seed: int = 0, scenario: str = "lung_sliding", prf_hz: float = PRF_HZ,
            loop_s: float = 1.0, **params):
    """(meta, int16 lines (n_lines, 2048)): up to ``loop_s`` of the simulator's ``scenario`` at
    ``prf_hz`` (other simulator ``params`` as given) tiled to n_lines; rendering every line
    would take longer than the benchmark."""
    # the only use of the simulator in dsp/ (test data), imported here so that importing
    # the DSP package never pulls it in
    from mmode.ingest.simulator import simulate

    sim = simulate(scenario, seconds=min(loop_s, n_lines / prf_hz), prf_hz=prf_hz, n_samples=N_SAMPLES, seed=seed,
                   **params)
    reps = -(-n_lines // sim.lines.shape[0])
    return sim.meta, np.ascontiguousarray(np.tile(sim.lines, (reps, 1))[:n_lines])


def run_benchmark(n_lines: int = 8192, repeats: int = 5, reference_lines: int = 2048) -> dict:
    """Run every measurement; returns the dict ``mmode bench --json`` prints."""
    numba.set_num_threads(1)
    meta, rf = make_rf(n_lines, f0_hz=5e6, fs_hz=40e6)
    tables = envelope.envelope_tables(meta, N_SAMPLES, N_ROWS)
    env = np.empty((BLOCK_LINES, N_ROWS), np.float32)
    offset = np.full(N_ROWS, -levels.full_scale_db(rf.dtype), np.float32)
    blocks = [rf[i:i + BLOCK_LINES] for i in range(0, n_lines, BLOCK_LINES)]

    def envelope_log(parts=blocks, out=env):
        for b in parts:
            envelope.display_rows_db(b, tables, offset, 60.0, out=out[: b.shape[0]])

    def two_threads():
        half = len(blocks) // 2
        outs = [np.empty_like(env), np.empty_like(env)]
        ts = [threading.Thread(target=envelope_log, args=(blocks[:half], outs[0])),
              threading.Thread(target=envelope_log, args=(blocks[half:], outs[1]))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def whole_chain(method):
        proc = Processor(ProcessorSettings(n_rows=N_ROWS, denoise=method))

        def fn():
            proc.prepare(meta, N_SAMPLES)
            for i, b in enumerate(blocks):
                proc.process(LineBlock(seq=i * BLOCK_LINES, t_s=i * BLOCK_LINES / PRF_HZ, lines=b))

        return fn

    reference_lines = min(reference_lines, n_lines)
    ref_rf = rf[:reference_lines]
    row_idx = envelope.row_sample_indices(N_SAMPLES, N_ROWS)

    def reference():
        for i in range(0, reference_lines, BLOCK_LINES):
            envelope.reference_display_db(ref_rf[i:i + BLOCK_LINES], row_idx, 32768.0, 60.0)

    cases = {"envelope": (envelope_log, n_lines), "reference": (reference, reference_lines)}
    cases.update({f"chain_{m}": (whole_chain(m), n_lines) for m in DENOISE_METHODS if m != "srad"})
    rates = _best_rates(cases, repeats)
    # two threads: wall clock (the point is that they overlap)
    rates.update(_best_rates({"two_threads": (two_threads, n_lines),
                              "envelope_wall": (envelope_log, n_lines)}, repeats, clock=time.perf_counter))
    # SRAD is two orders slower (review mode): fewer lines, fewer passes
    srad_blocks = blocks[:2]
    srad_lines = sum(b.shape[0] for b in srad_blocks)
    srad_proc = Processor(ProcessorSettings(n_rows=N_ROWS, denoise="srad"))

    def srad_chain():
        srad_proc.prepare(meta, N_SAMPLES)
        for i, b in enumerate(srad_blocks):
            srad_proc.process(LineBlock(seq=i * BLOCK_LINES, t_s=i * BLOCK_LINES / PRF_HZ, lines=b))

    rates.update(_best_rates({"chain_srad": (srad_chain, srad_lines)}, max(1, repeats // 2)))
    chain = {m: rates[f"chain_{m}"] for m in DENOISE_METHODS}
    env_rate, ref_rate = rates["envelope"], rates["reference"]

    return {
        "n_lines": n_lines,
        "n_samples": N_SAMPLES,
        "n_rows": N_ROWS,
        "dtype": "int16",
        "block_lines": BLOCK_LINES,
        "threads": 1,
        "envelope_lines_per_s": env_rate,
        "chain_lines_per_s": chain["median_persist"],
        "reference_lines_per_s": ref_rate,
        "envelope_vs_reference": env_rate / ref_rate,
        "chain_vs_reference": chain["median_persist"] / ref_rate,
        "chain_realtime_factor_at_2khz": chain["median_persist"] / PRF_HZ,
        "chain_by_denoise_lines_per_s": chain,
        "envelope_wall_lines_per_s": rates["envelope_wall"],
        "envelope_two_threads_lines_per_s": rates["two_threads"],
        "timer": "thread CPU time (two-thread and *_wall figures: wall clock)",
        "load_avg_1min": os.getloadavg()[0],
    }
