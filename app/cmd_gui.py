"""``mmode gui``: the desktop app (PyQt6 + pyqtgraph).

``mmode gui`` opens the demo recording from ``sample_data/``; ``mmode gui FILE``,
``--stream HOST:PORT`` (``igtl://HOST:PORT`` for OpenIGTLink) or ``--sim SCENARIO`` open
another source. ``--screenshot PNG --quit-after SECONDS`` saves the window and quits (headless
use, the README picture).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmode.app.cli import add_cine_arguments, cine_options
from mmode.app.motion_modes import MOTION_MODES, NETWORK_AUTO_MAX_RATE_HZ

DEMO_NAME = "demo.h5"
DESCRIPTION = """The desktop app. With no source it opens the demo recording from sample_data/.
--screenshot PNG --quit-after SECONDS saves the window and quits (works without a display).
Guide: docs/gui.md."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gui", help="open the desktop app (demo recording by default)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("file", nargs="?", help="recording to open (default: sample_data/demo.h5)")
    src.add_argument("--stream", metavar="HOST:PORT", help="connect to a stream (igtl://HOST:PORT for OpenIGTLink)")
    src.add_argument("--sim", metavar="SCENARIO", help="run the simulated probe on SCENARIO")
    p.add_argument("--prf", type=float, default=1000.0, metavar="HZ", help="simulator line rate (default 1000)")
    p.add_argument("--speed", type=float, default=1.0, help="file playback speed (default 1)")
    p.add_argument("--screenshot", metavar="PNG", help="save the window as PNG before quitting")
    p.add_argument("--quit-after", type=float, metavar="SECONDS", help="quit after SECONDS")
    p.add_argument("--sweep", type=int, choices=(25, 50, 100, 200), help="sweep speed, mm/s")
    p.add_argument("--settings", metavar="INI", help="settings file (default: the user's QSettings)")
    p.add_argument("--json", action="store_true", help="on exit, print the drawing statistics as JSON")
    p.add_argument("--motion", choices=MOTION_MODES, default=None,
                   help="motion traces drawn: the classic tracker's, the learned network's, both, or auto (both "
                        f"up to {NETWORK_AUTO_MAX_RATE_HZ:g} lines/s, else classic) (default: the window's setting, "
                        "auto at first; the Network overlay toggle runs the network)")
    add_cine_arguments(p)
    p.set_defaults(func=run)


def _spec(args: argparse.Namespace):
    from mmode.errors import DataError, UsageError, describe
    from mmode.gui.engine_link import SourceSpec

    if args.speed is not None and not args.speed > 0:
        raise UsageError(describe("--speed", "> 0", args.speed))
    if not args.prf > 0:
        raise UsageError(describe("--prf", "> 0", args.prf))
    if (args.stream or args.sim) and cine_options(args):
        raise UsageError(describe("--mline/--px-per-cm", "a DICOM or video file to open", "a stream or simulator"))
    if args.stream:
        return SourceSpec("stream", args.stream)
    if args.sim:
        from mmode.ingest.scenarios import SCENARIOS

        if args.sim not in SCENARIOS:
            raise UsageError(describe("--sim", f"one of {', '.join(SCENARIOS)}", repr(args.sim)))
        return SourceSpec("sim", args.sim, prf_hz=args.prf)
    if args.file:
        path = Path(args.file)
    else:
        from mmode.ingest.files import sample_data_dir

        path = sample_data_dir() / DEMO_NAME
        if not path.exists():
            raise DataError(describe(path, "the demo recording (make it with `mmode simulate`)", "no such file"))
    from mmode.ingest.files import open_recording

    # a bad file (or an M-line outside the frame) fails here with exit 3, before any window
    open_recording(str(path), **cine_options(args)).close()
    return SourceSpec("file", str(path), speed=args.speed, mline=args.mline, px_per_cm=args.px_per_cm)


def run(args: argparse.Namespace) -> int:
    from mmode.errors import UsageError, describe

    if args.quit_after is not None and not args.quit_after > 0:
        raise UsageError(describe("--quit-after", "> 0 seconds", args.quit_after))
    spec = _spec(args)
    from mmode.gui.app import run_app

    stats = run_app(spec, screenshot=args.screenshot, quit_after_s=args.quit_after,
                    sweep_mm_s=args.sweep, settings_path=args.settings, motion=args.motion)
    if args.json:
        from mmode.app.cli import print_json

        print_json(stats)
    return 0
