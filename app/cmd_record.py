"""``mmode record --stream HOST:PORT -o OUT.h5 --seconds S [--json]``: record a live stream.

Writes every received line, untouched, to a format v1 file (``/lines`` and
``/timestamps_s``), flushed at least once a second: a recording whose process is killed
opens afterwards with everything up to its last flush. Stops after S seconds, at the end of
the stream, or on Ctrl-C / SIGTERM (the file is then closed cleanly). A lost connection is
retried with backoff; the lines missed meanwhile show up as gaps. A write that fails (disk
full) stops the recording at once with exit 3 and one line saying how many lines the file
keeps (those of its last flush); ``mmode repair`` then lets other HDF5 tools open it.
Frames are checked as the engine checks them (:class:`mmode.ingest.frame_check.FrameCheck`):
NaN/Inf frames are not written (``frames_rejected``), times that run backwards or jitter are
written re-timed (``frames_retimed``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record",
        help="record a live stream to a format v1 file",
        description="Record a protocol v1 (or OpenIGTLink) stream to HDF5 format v1, flushed every second.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--stream", metavar="HOST:PORT", help="a protocol v1 stream server (mmode serve)")
    what.add_argument("--igtl", metavar="HOST:PORT", help="an OpenIGTLink server sending IMAGE messages")
    p.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="file to write (overwritten)")
    p.add_argument("--seconds", type=float, required=True, metavar="S", help="how long to record")
    p.add_argument("--flush-s", type=float, default=1.0, help="flush interval in seconds (default 1)")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.app.recorder import Recorder
    from mmode.errors import UsageError
    from mmode.ingest import igtl, stream
    from mmode.ingest.frame_check import FrameCheck
    from mmode.ingest.sources import IgtlSource, TcpSource, parse_host_port

    if not args.seconds > 0 or not 0 < args.flush_s <= 1.0:
        raise UsageError(f"need --seconds > 0 and 0 < --flush-s <= 1, got {args.seconds}, {args.flush_s}")
    if args.stream:
        source = TcpSource(*parse_host_port(args.stream, stream.DEFAULT_PORT))
    else:
        source = IgtlSource(*parse_host_port(args.igtl, igtl.DEFAULT_PORT))
    meta = source.open()
    recorder = Recorder(args.output, meta, source.n_samples, source.dtype, flush_interval_s=args.flush_s)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    check = FrameCheck(meta.prf_hz)
    t0 = time.monotonic()
    try:
        while (not stop.is_set() and time.monotonic() - t0 < args.seconds and not source.finished
               and recorder.error is None):
            block = source.read_block(0.1)
            if block is not None:
                block = check.check(block)
            if block is not None:
                recorder.submit(block)
    except KeyboardInterrupt:
        print("mmode record: interrupted; closing the file", file=sys.stderr)
    finally:
        source.stop()
        summary = recorder.close()
        signal.signal(signal.SIGTERM, previous)
    if recorder.error is not None:  # one line: what failed and how many lines the file keeps
        raise recorder.error
    summary.update(
        seconds=round(time.monotonic() - t0, 3),
        **check.counts.as_dict(),
        reconnects=source.reconnects,
        framing_errors=source.framing_errors,
        state=source.status,
    )
    if args.json:
        print_json(summary)
    else:
        print(f"{summary['path']}: {summary['lines_written']} lines in {summary['seconds']:g} s "
              f"({summary['gaps']} gaps, {summary['lines_missing']} lines missing, {summary['lines_dropped']} dropped, "
              f"{summary['frames_rejected']} frames rejected, {summary['frames_retimed']} re-timed)")
    return 0
