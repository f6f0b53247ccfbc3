"""``mmode train``: reproduce the shipped models from a seed.

Simulates the data sets, trains each teacher, distils and prunes its student, measures the
compression steps and writes ``<name>.safetensors`` + ``<name>.json`` for every model into
``--out`` (default ``runs/train``; ``--out`` set to the package's ``models/weights`` folder
replaces the shipped models). ``--recipe smoke`` is a seconds-long run for tests.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the classifier and motion networks (teacher, distilled + pruned student)",
        description="Reproduce the shipped models from a seed on the CPU: simulated data, teacher, "
        "distillation with an SNR curriculum, structured pruning with fine-tuning, compression report.",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and order (default 0)")
    p.add_argument("--out", default="runs/train", help="folder for weights and model cards (default runs/train)")
    p.add_argument("--recipe", choices=("full", "smoke"), default="full", help="data and epoch sizes (default full)")
    p.add_argument("--task", choices=("all", "classify", "motion"), default="all", help="which models (default all)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--fine-tune", nargs="?", const="shipped", default=None, metavar="DIR",
                   help="fine-tune the classifiers of DIR (default: the shipped ones) on every look instead of "
                        "training them from scratch")
    p.add_argument("--json", action="store_true", help="print the model cards as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmode.app.cli import print_json
    from mmode.errors import UsageError, describe
    from mmode.models.registry import WEIGHTS_DIR
    from mmode.models.train import train_all

    if not 1 <= args.threads <= 256:
        raise UsageError(describe("--threads", "1 .. 256", args.threads))
    tasks = ("classify", "motion") if args.task == "all" else (args.task,)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    start = None if args.fine_tune is None else WEIGHTS_DIR if args.fine_tune == "shipped" else Path(args.fine_tune)
    cards = train_all(Path(args.out), seed=args.seed, recipe=args.recipe, tasks=tasks, threads=args.threads, log=log,
                      fine_tune_from=start)
    if args.json:
        print_json(cards)
    else:
        for c in cards:
            print(f"wrote {Path(args.out) / c['name']}.safetensors ({c['params']} params, {c['macs']} MACs)")
    return 0
