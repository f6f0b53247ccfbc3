"""``mmode monitor (--stream HOST:PORT | --igtl HOST:PORT | --sim SCENARIO | FILE) --seconds S``.

Runs the whole engine headless (acquisition thread, ring, processing thread with the full
pipeline) for S seconds, draining results as a display would, and reports the counters:
lines received / processed / dropped, frames rejected (NaN/Inf samples) and re-timed (time
stamps that ran backwards or jittered), sequence gaps, latency from line arrival to result
(p50, p99, max), inference time, realtime factor (processing speed / line rate), peak
memory, and the classification summary when models are loaded. Exit 3 when the source is
not usable (not a stream server, unreadable file) or the engine fails (a stream that comes
back as another stream, a corrupt file): the report (state "failed" and the message) is
printed first, the error line goes to stderr.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from mmode.app.cmd_serve import add_sim_arguments, sim_source


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "monitor",
        help="run the live engine headless and report line rate, drops, latency",
        description="Run the real-time engine on a stream, the simulator or a file and report its counters.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--stream", metavar="HOST:PORT", help="a protocol v1 stream server (mmode serve)")
    what.add_argument("--igtl", metavar="HOST:PORT", help="an OpenIGTLink server sending IMAGE messages")
    what.add_argument("--sim", metavar="SCENARIO", help="the built-in simulated probe")
    what.add_argument("file", nargs="?", help="a recording, played back at its PRF")
    p.add_argument("--seconds", type=float, required=True, metavar="S", help="how long to run")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--speed", type=float, default=1.0, help="file playback speed factor (default 1)")
    p.add_argument("--loop", action="store_true", help="loop the file")
    p.add_argument("--block-lines", type=int, default=None, metavar="N", help="lines per source block (file, sim)")
    p.add_argument("--max-latency-ms", type=float, default=250.0, help="backlog beyond which processing skips to the newest lines (default 250)")
    p.add_argument("--record", metavar="OUT.h5", help="also record every received line")
    p.add_argument("--model", default="classifier_student",
                   help="classifier to run (see `mmode models`), or none (default: classifier_student)")
    from mmode.app.cmd_process import add_motion_option

    add_motion_option(p, default="auto")
    add_sim_arguments(p)
    p.set_defaults(func=run)


def _text(report: dict) -> str:
    lat, inf = report["latency_ms"], report["inference_ms"]
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    rows = [
        ("state", f"{report['state']} {report['message']}".rstrip()),
        ("lines", f"received {report['lines_received']}, processed {report['lines_processed']}, dropped {report['lines_dropped']}"),
        ("frames", f"rejected {report['frames_rejected']} ({report['lines_rejected']} lines), "
                   f"re-timed {report['frames_retimed']} ({report['lines_retimed']} lines), "
                   f"framing errors {report['framing_errors']}"),
        ("gaps", f"{report['gaps']} ({report['lines_missing']} lines missing), restarts {report['restarts']}, reconnects {report['reconnects']}"),
        ("latency_ms", f"p50 {fmt(lat['p50'])}, p99 {fmt(lat['p99'])}, max {fmt(lat['max'])}"),
        ("inference_ms", f"p50 {fmt(inf['p50'])}, p99 {fmt(inf['p99'])}"),
        ("motion", f"{report['motion']} traces"),
        *([("motion_net_ms", f"p50 {fmt(net['p50'])}, p99 {fmt(net['p99'])} per block (learned trace)")]
          if (net := report.get("stage_ms", {}).get("motion_network")) else []),
        ("line_rate_hz", f"{fmt(report['line_rate_hz'])} (PRF {report['prf_hz']:g})"),
        ("realtime", f"x{fmt(report['realtime_factor'])}"),
        ("peak_rss_mb", f"{report['peak_rss_mb']:.0f}"),
    ]
    if "classification" in report:
        c = report["classification"]
        shares = ", ".join(f"{k} {v:.0%}" for k, v in c["fraction"].items())
        rows.append(("classes", f"{c['label']} ({c['windows']} windows: {shares})"))
    return "\n".join(f"{k:<13} {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.app.engine import Engine
    from mmode.app.pipeline import PipelineSettings
    from mmode.errors import MmodeError, UsageError
    from mmode.ingest import igtl, stream
    from mmode.ingest.sources import FileSource, IgtlSource, TcpSource, parse_host_port

    if not args.seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {args.seconds}")
    if args.stream:
        source = TcpSource(*parse_host_port(args.stream, stream.DEFAULT_PORT))
    elif args.igtl:
        source = IgtlSource(*parse_host_port(args.igtl, igtl.DEFAULT_PORT))
    elif args.sim:
        source = sim_source(args, args.block_lines)
    else:
        source = FileSource(args.file, speed=args.speed, loop=args.loop, block_lines=args.block_lines)
    engine = Engine(source, PipelineSettings(model=args.model, motion=args.motion), max_latency_s=args.max_latency_ms / 1e3)
    engine.start()
    try:
        engine.wait_ready()
        if args.record:
            engine.start_recording(args.record)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and not engine.wait(0.02):
            engine.poll_results()  # a display would draw these
    except KeyboardInterrupt:
        print("mmode monitor: interrupted", file=sys.stderr)
    except MmodeError:
        if engine.error is None:  # not an engine failure (e.g. not ready in time)
            raise
    finally:
        engine.stop()
    report = engine.stats()
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print_json(report)
    else:
        print(_text(report))
    if engine.error is not None:  # after the report: a DataError exits 3 with its one line
        raise engine.error
    return 0
