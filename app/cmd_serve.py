"""``mmode serve (--sim SCENARIO | --file FILE)``: stream lines in real time over TCP.

Protocol v1 (docs/protocol.md) on port 7700, or OpenIGTLink IMAGE messages on port 18944
(``--protocol igtl``), to any number of clients; binds 127.0.0.1 unless ``--host`` says
otherwise. The listening address goes to stderr as soon as the port is open
(``mmode serve: serving ... on HOST:PORT``); with ``--json`` a summary goes to stdout at
the end. Runs until Ctrl-C / SIGTERM, ``--seconds``, or the end of a file played without
``--loop``. A file starts playing when the first client connects.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the simulated probe shared by ``serve`` and ``monitor``."""
    p.add_argument("--prf", type=float, default=None, metavar="HZ", help="simulated line rate (default 1000 Hz)")
    p.add_argument("--samples", type=int, default=None, metavar="N", help="samples per simulated line (default: the scenario's depth)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    p.add_argument(
        "--precompute-s", type=float, default=None, metavar="S",
        help="render S seconds of the simulation once and loop them; 0 renders live "
        "(default: automatic, a 2-4 s loop that closes the scene's motion, when the simulator renders slower "
        "than twice the PRF)",
    )


def sim_source(args: argparse.Namespace, block_lines: int | None):
    """The :class:`SimSource` that ``--sim`` and its options describe."""
    from mmode.ingest.sources import SimSource

    extra = {} if args.samples is None else {"n_samples": args.samples}
    return SimSource(
        args.sim, prf_hz=args.prf or 1000.0, block_lines=block_lines, precompute_s=args.precompute_s, seed=args.seed, **extra
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="stream a simulation or a file in real time (protocol v1 or OpenIGTLink)",
        description="Serve lines in real time to any number of clients. Protocol: docs/protocol.md.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sim", metavar="SCENARIO", help="serve the simulated probe (see `mmode simulate --list`)")
    what.add_argument("--file", metavar="FILE", help="play a recording back at its PRF")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 7700, 18944 for igtl; 0 picks a free one)")
    p.add_argument("--protocol", choices=("mmode", "igtl"), default="mmode", help="wire protocol (default mmode)")
    p.add_argument("--block-lines", type=int, default=None, metavar="N", help="lines per frame (default: 10 ms of lines)")
    p.add_argument("--speed", type=float, default=1.0, help="file playback speed factor (default 1)")
    p.add_argument("--loop", action="store_true", help="loop the file")
    p.add_argument("--seconds", type=float, default=None, metavar="S", help="stop after S seconds (default: run until stopped)")
    p.add_argument("--json", action="store_true", help="print a summary as JSON at the end")
    add_sim_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.errors import UsageError
    from mmode.ingest import igtl, stream, stream_codec
    from mmode.ingest.sources import FileSource

    if args.block_lines is not None and not 0 < args.block_lines <= stream_codec.MAX_FRAME_LINES:
        raise UsageError(f"--block-lines must be in 1..{stream_codec.MAX_FRAME_LINES}, got {args.block_lines}")
    if args.file is not None:
        if args.prf is not None or args.samples is not None or args.precompute_s is not None:
            raise UsageError("--prf, --samples and --precompute-s apply to --sim; a file plays at its own PRF times --speed")
        source = FileSource(args.file, speed=args.speed, loop=args.loop, block_lines=args.block_lines)
        what = args.file
    else:
        source = sim_source(args, args.block_lines)
        what = f"simulated {args.sim}"
    source.open()
    default_port = igtl.DEFAULT_PORT if args.protocol == "igtl" else stream.DEFAULT_PORT
    port = default_port if args.port is None else args.port
    factory = igtl.IgtlEncoder if args.protocol == "igtl" else stream.FrameEncoder
    try:
        server = stream.StreamServer(
            source, args.host, port, encoder_factory=factory, wait_for_client=args.file is not None
        )
    except OSError as exc:
        source.stop()
        raise UsageError(f"cannot listen on {args.host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    host, port = server.address
    print(
        f"mmode serve: serving {what} ({source.meta.prf_hz:g} Hz, {source.n_samples} samples, {source.dtype}) "
        f"on {host}:{port} ({args.protocol}); Ctrl-C stops",
        file=sys.stderr, flush=True,
    )
    t0 = time.monotonic()
    try:
        while not stop.is_set() and not server.wait(0.2):
            if args.seconds is not None and time.monotonic() - t0 >= args.seconds:
                break
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    if server.error is not None:
        raise server.error
    if args.json:
        print_json({
            "host": host,
            "port": port,
            "protocol": args.protocol,
            "lines_sent": server.lines_sent,
            "clients_served": server.clients_served,
            "frames_dropped": server.frames_dropped,
            "seconds": round(time.monotonic() - t0, 3),
        })
    return 0
