"""``mmode bench [--json]``: DSP throughput on one thread against a scipy reference, and the
live pipeline's throughput per block size.

Runs :func:`mmode.dsp.bench.run_benchmark` (see that module for what is measured) and
prints lines per second of the envelope path, of the whole chain and of the scipy
reference, with the ratios; then :func:`mmode.app.bench_pipeline.run_pipeline_benchmark`
(DSP + motion tracker + student classifier at 20 kHz: 10 ms blocks against 1024-line blocks,
and the fixed cost per block), unless ``--no-pipeline``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure DSP and pipeline throughput (lines/s) against references in the same run",
        description="Benchmark the numba DSP chain on int16 RF (2048 samples per line to 256 rows, "
        "one thread) against scipy.signal.hilbert + numpy on the same data, then the live pipeline "
        "(DSP, motion tracker, student classifier) at 20 kHz in 10 ms blocks against 1024-line blocks.",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--lines", type=int, default=8192, help="lines per pass (default 8192)")
    p.add_argument("--repeats", type=int, default=5, help="passes; the best is reported (default 5)")
    p.add_argument("--pipeline-seconds", type=float, default=2.0,
                   help="seconds of 20 kHz lines timed per pass of the pipeline benchmark (default 2)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the pipeline benchmark (it loads torch)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.errors import UsageError, describe

    if args.lines < 1024 or args.lines > 1 << 20:
        raise UsageError(describe("--lines", "1024 <= lines <= 1048576", args.lines))
    if args.repeats < 1:
        raise UsageError(describe("--repeats", ">= 1", args.repeats))
    if not 0.1 <= args.pipeline_seconds <= 60:
        raise UsageError(describe("--pipeline-seconds", "0.1 to 60", args.pipeline_seconds))
    from mmode.dsp.bench import run_benchmark

    result = run_benchmark(n_lines=args.lines, repeats=args.repeats)
    if not args.no_pipeline:
        from mmode.app.bench_pipeline import run_pipeline_benchmark

        result["pipeline"] = run_pipeline_benchmark(seconds=args.pipeline_seconds, repeats=max(1, args.repeats // 2))
    if args.json:
        print_json(result)
        return 0
    rows = [
        ("envelope+log+decimate", f"{result['envelope_lines_per_s']:>12,.0f} lines/s  "
                                   f"({result['envelope_vs_reference']:.1f}x reference)"),
        ("whole chain", f"{result['chain_lines_per_s']:>12,.0f} lines/s  ({result['chain_vs_reference']:.1f}x reference, "
                        f"{result['chain_realtime_factor_at_2khz']:.0f}x real time at 2 kHz)"),
        ("scipy reference", f"{result['reference_lines_per_s']:>12,.0f} lines/s"),
        ("envelope, 2 threads", f"{result['envelope_two_threads_lines_per_s']:>12,.0f} lines/s wall clock "
                                f"(one thread: {result['envelope_wall_lines_per_s']:,.0f})"),
    ]
    rows += [(f"chain, denoise={k}", f"{v:>12,.0f} lines/s") for k, v in result["chain_by_denoise_lines_per_s"].items()]
    print(f"int16 RF, {result['n_samples']} samples/line -> {result['n_rows']} rows, one thread, "
          f"timer: {result['timer']}, load average {result['load_avg_1min']:.2f}")
    if "pipeline" in result:
        pl = result["pipeline"]
        rows += [
            (f"pipeline, {pl['live_block_lines']}-line blocks",
             f"{pl['live_blocks_lines_per_s']:>12,.0f} lines/s  ({pl['live_realtime_factor']:.1f}x real time at "
             f"{pl['prf_hz'] / 1e3:g} kHz, {pl['ms_per_live_block']:.2f} ms per block)"),
            (f"pipeline, {pl['large_block_lines']}-line blocks",
             f"{pl['large_blocks_lines_per_s']:>12,.0f} lines/s  (10 ms blocks: {pl['live_vs_large']:.2f}x of this; "
             f"fixed cost {pl['fixed_ms_per_block']:.2f} ms per block + {pl['us_per_line']:.1f} us per line)"),
        ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}} {v}" for k, v in rows))
    return 0
