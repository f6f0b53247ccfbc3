"""``mmode simulate``: write a simulated M-mode recording (format v1) or list the scenarios.

Examples::

    mmode simulate --list --json
    mmode simulate lung_sliding -o sliding.h5 --seconds 3 --prf 500
    mmode simulate lung_sliding:4,no_sliding:4,lung_point:4 -o demo.h5   # class changes
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmode.errors import DataError, UsageError, describe


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="write a simulated recording, or list the scenarios",
        description="Physics-based M-mode RF simulator. SCENARIO is a scenario name, or "
        "NAME:SECONDS,NAME:SECONDS,... for a recording whose class changes.",
    )
    p.add_argument("scenario", nargs="?", metavar="SCENARIO", help="scenario name (see --list)")
    p.add_argument("-o", "--output", metavar="OUT.h5", help="output file (format v1 HDF5)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--seconds", type=float, default=4.0, help="duration in s (default 4; ignored for NAME:SECONDS lists)")
    p.add_argument("--prf", type=float, default=1000.0, metavar="HZ", help="lines per second (default 1000)")
    p.add_argument("--f0", type=float, default=None, metavar="HZ", help="centre frequency (default: the scenario's probe)")
    p.add_argument("--fs", type=float, default=None, metavar="HZ", help="RF sampling rate (default: the scenario's probe)")
    p.add_argument("--depth", type=float, default=None, metavar="M", help="depth of the last sample in m (default: the scenario's view)")
    p.add_argument("--samples", type=int, default=None, metavar="N", help="samples per line (overrides --depth)")
    p.add_argument("--snr-db", type=float, default=30.0, help="signal-to-noise ratio in dB (default 30)")
    p.add_argument(
        "--rate-per-min", type=float, default=None, help="heart rate (cardiac) or breathing rate (lung views)"
    )
    p.add_argument("--breath-per-min", type=float, default=None, help="breathing rate of the cardiac views")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--iq-fs", type=float, default=None, metavar="HZ",
                   help="store IQ as a scanner does, at this complex rate along depth (must divide --fs), instead of RF")
    p.set_defaults(func=run)


def _segments(spec: str) -> list[tuple[str, float]] | None:
    """``"a:2,b:3"`` -> [("a", 2.0), ("b", 3.0)]; a plain name -> None."""
    if ":" not in spec and "," not in spec:
        return None
    out = []
    for part in spec.split(","):
        name, sep, sec = part.strip().partition(":")
        if not sep:
            raise UsageError(f"segment {part!r}: expected NAME:SECONDS")
        try:
            out.append((name, float(sec)))
        except ValueError:
            raise UsageError(f"segment {part!r}: SECONDS must be a number") from None
    return out


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.ingest.scenarios import PHANTOMS, SCENARIOS

    if args.list:
        if args.json:
            print_json([{**info.to_dict(), "phantom": info.name in PHANTOMS}
                        for info in (*SCENARIOS.values(), *PHANTOMS.values())])
        else:
            for info in (*SCENARIOS.values(), *PHANTOMS.values()):
                print(f"{info.name:18s} {info.description}")
        return 0
    if not args.scenario:
        raise UsageError("give a SCENARIO (or --list)")
    if not args.output:
        raise UsageError("give the output file with -o OUT.h5")

    from mmode.ingest.h5format import write_recording
    from mmode.ingest.simulator import simulate, simulate_sequence

    out = Path(args.output)
    if out.is_dir():
        raise DataError(describe(args.output, "an output file path", "a directory"))
    if not out.parent.is_dir():
        raise DataError(describe(args.output, "an existing folder for the output", f"no folder {out.parent}"))

    params = dict(
        prf_hz=args.prf,
        f0_hz=args.f0,
        fs_hz=args.fs,
        depth_m=args.depth,
        n_samples=args.samples,
        snr_db=args.snr_db,
        rate_per_min=args.rate_per_min,
        breath_per_min=args.breath_per_min,
        seed=args.seed,
    )
    segments = _segments(args.scenario)
    if segments is None:
        result = simulate(args.scenario, seconds=args.seconds, iq_fs_hz=args.iq_fs, **params)
    elif args.iq_fs is not None:
        raise UsageError("--iq-fs applies to one scenario, not to a NAME:SECONDS sequence")
    else:
        result = simulate_sequence(segments, **params)
    try:
        write_recording(
            out,
            result.meta,
            result.lines,
            timestamps_s=result.timestamps_s,
            annotations=result.annotations,
            truth=result.truth,
        )
    except OSError as exc:
        raise DataError(describe(args.output, "a writable file", f"{type(exc).__name__}: {exc.strerror or exc}")) from None
    summary = {
        "output": args.output,
        "scenario": args.scenario,
        "n_lines": int(result.lines.shape[0]),
        "n_samples": int(result.lines.shape[1]),
        "duration_s": result.lines.shape[0] / result.meta.prf_hz,
        "depth_m": float(result.meta.depth_m(result.lines.shape[1] - 1)),
        **result.meta.to_dict(),
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"{args.output}: {summary['n_lines']} lines x {summary['n_samples']} samples, "
            f"{summary['duration_s']:g} s, depth {summary['depth_m'] * 100:.1f} cm"
        )
    return 0
