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
    "monitor",
    "gui",
    "train",
    "compress",
    "evaluate",
    "models",
    "bench",
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
