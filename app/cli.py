"""The ``mmode`` command: one entry point, one module per subcommand.

Each subcommand lives in ``mmode.app.cmd_<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (``args -> int`` exit code). Command modules import
heavy libraries (numba, torch, Qt) inside ``func`` so that ``mmode --help`` stays fast.

Exit codes: 0 success, 2 bad usage, 3 bad input data (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Sequence

from mmode import __version__
from mmode.errors import DataError, UsageError

COMMANDS = (
    "simulate",
    "info",
    "process",
    "serve",
    "record",
    "repair",
    "monitor",
    "gui",
    "train",
    "compress",
    "evaluate",
    "models",
    "bench",
    "batch",
)

EXIT_OK, EXIT_USAGE, EXIT_DATA = 0, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmode", description="Real-time M-mode ultrasound: ingest, process, classify, display."
    )
    parser.add_argument("--version", action="version", version=f"mmode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mmode.app.cmd_{name}").register(sub)
    return parser


def _mline(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 (four numbers, frame pixels), found {text!r}")
    return values


def _px_per_cm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected pixels per cm > 0, found {text!r}")
    return value


def add_cine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--mline`` and ``--px-per-cm``, the options of DICOM cine and video files."""
    parser.add_argument("--mline", type=_mline, metavar="X0,Y0,X1,Y1",
                        help="DICOM cine or video: the M-line in frame pixels (default: vertical through the centre "
                             "of the 2D region, or of the frame)")
    parser.add_argument("--px-per-cm", type=_px_per_cm, metavar="N",
                        help="DICOM cine or video: pixels per cm, for a depth in metres without a calibrated region")


def cine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`~mmode.ingest.files.open_recording` options given by :func:`add_cine_arguments`."""
    return {k: v for k, v in (("mline", args.mline), ("px_per_cm", args.px_per_cm)) if v is not None}


def print_json(obj: Any) -> None:
    """Write ``obj`` as indented JSON to stdout (the ``--json`` output of every command)."""
    json.dump(obj, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"mmode {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataError as exc:
        print(f"mmode {args.command}: {exc}", file=sys.stderr)
        return EXIT_DATA
    except FileNotFoundError as exc:
        print(f"mmode {args.command}: {exc.filename or exc}: no such file", file=sys.stderr)
        return EXIT_DATA
    except (IsADirectoryError, PermissionError) as exc:
        print(f"mmode {args.command}: {exc.filename or exc}: {exc.strerror}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print(f"mmode {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (``mmode info --json f | head``): quietly stop
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
