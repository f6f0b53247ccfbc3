"""``mmode repair FILE [-o OUT] [--json]``: make a recording cut by a crash open in any HDF5 tool.

A live recording (``mmode record``, the GUI's record button) whose writer died keeps every
line up to its last flush, but HDF5 marks it "open for write": mmode opens it, plain h5py,
HDFView and MATLAB refuse it. ``repair`` copies every flushed line (``/lines`` and
``/timestamps_s`` cut to the lines both hold), the metadata and the other datasets into a
fresh file, checks the copy against the original, and then replaces the original atomically
(or writes ``-o OUT``). ``mmode info`` says when a file needs it. Method and reasons:
:mod:`mmode.ingest.h5repair`.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "repair",
        help="make a recording cut by a crash open in any HDF5 tool",
        description="Copy every flushed line of a format v1 recording whose writer died into a fresh file "
        "that any HDF5 tool opens, then replace the original (or write -o OUT).",
    )
    p.add_argument("file", help="format v1 recording (.h5)")
    p.add_argument("-o", "--output", metavar="OUT.h5", help="write the repaired copy here and leave FILE as it is")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.ingest.h5repair import repair

    report = repair(args.file, args.output)
    if args.json:
        print_json(report)
    elif report["repaired"]:
        times = "" if report["timestamps_declared"] is None else f" and {report['timestamps_declared']} times"
        print(f"{report['output']}: repaired, {report['lines_kept']} lines kept (the file declared "
              f"{report['lines_declared']} lines{times}); opens in any HDF5 tool")
    else:
        print(f"{args.file}: nothing to repair ({report['lines_kept']} lines, closed cleanly)")
    return 0
