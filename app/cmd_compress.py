"""``mmode compress --model NAME``: apply each compression step to a shipped model and report it.

Steps: structured channel pruning (Torch-Pruning dependency graph; magnitude, Taylor or
BN-scale importance; iterative; optional distillation fine-tuning from the model's teacher),
then, measured on copies: unstructured magnitude pruning with sparsity statistics, low-rank
(SVD) factorisation, ONNX float32 export and ONNX Runtime int8 dynamic quantisation. Each
step reports params, MACs, latency and the held-out metric on freshly simulated recordings.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compress",
        help="prune / factorise / quantise / export a shipped model and report each step",
        description="Compress a shipped model step by step and report parameters, MACs, latency and "
        "accuracy after each step; optionally save the pruned model with ONNX and int8 exports.",
    )
    p.add_argument("--model", required=True, help="shipped model name (see `mmode models`)")
    p.add_argument("--prune-ratio", type=float, default=0.3, help="fraction of channels to remove (default 0.3; 0: none)")
    p.add_argument("--importance", choices=("magnitude", "taylor", "bn_scale"), default="magnitude",
                   help="channel importance (default magnitude)")
    p.add_argument("--steps", type=int, default=1, help="iterative pruning steps (default 1)")
    p.add_argument("--fine-tune-epochs", type=int, default=0, help="distillation epochs after each pruning step (default 0)")
    p.add_argument("--sparsity", type=float, default=0.5, help="unstructured magnitude sparsity to measure (default 0.5; 0: skip)")
    p.add_argument("--low-rank-energy", type=float, default=0.9, help="SVD energy kept by low-rank layers (default 0.9; 1: skip)")
    p.add_argument("--recordings", type=int, default=14, help="simulated recordings for evaluation / fine-tuning (default 14)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument("--out", help="folder to save the pruned model (safetensors + card) and its ONNX / int8 exports")
    p.add_argument("--name", help="name of the saved model (default NAME_compressed)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _text(report: dict) -> str:
    rows = [f"{'step':<28} {'applied':<8} {'params':>8} {'macs':>10} {'latency_ms':>10}  metric"]
    for s in [report["baseline"], *report["steps"]]:
        metric = next((f"{k} {s[k]:.4g}" for k in ("macro_f1", "rmse_m") if k in s), "")
        lat = s.get("latency_ms")
        rows.append(f"{s['step']:<28} {str(s['applied']):<8} {s.get('params', ''):>8} {s.get('macs', ''):>10} "
                    f"{'' if lat is None else f'{lat:.3f}':>10}  {metric}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import torch

    from mmode.app.cli import print_json
    from mmode.errors import UsageError, describe
    from mmode.models.compress_recipe import compress_model

    if not 0 <= args.prune_ratio < 1:
        raise UsageError(describe("--prune-ratio", "0 <= r < 1", args.prune_ratio))
    if not 0 <= args.sparsity < 1:
        raise UsageError(describe("--sparsity", "0 <= s < 1", args.sparsity))
    if not 0 < args.low_rank_energy <= 1:
        raise UsageError(describe("--low-rank-energy", "0 < e <= 1", args.low_rank_energy))
    if args.steps < 1 or args.fine_tune_epochs < 0 or not 1 <= args.recordings <= 10_000:
        raise UsageError(describe("--steps/--fine-tune-epochs/--recordings", ">= 1, >= 0, 1..10000",
                                  (args.steps, args.fine_tune_epochs, args.recordings)))
    if not 1 <= args.threads <= 256:
        raise UsageError(describe("--threads", "1 .. 256", args.threads))
    from mmode.models import registry
    from mmode.models.motion_data import KEYFRAME_SPEC

    if registry.load_card(args.model)["input"].get("kind") == KEYFRAME_SPEC["kind"]:
        raise UsageError(describe("--model", "a model whose data mmode compress builds (classifier or per-pair motion net)",
                                  f"{args.model}, a keyframe motion net: python -m mmode.models.motion_train compresses it"))
    torch.set_num_threads(args.threads)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    report = compress_model(
        args.model, prune_ratio=args.prune_ratio, importance=args.importance, prune_steps=args.steps,
        fine_tune_epochs=args.fine_tune_epochs, sparsity=args.sparsity, low_rank_energy=args.low_rank_energy,
        n_recordings=args.recordings, seed=args.seed, out_dir=Path(args.out) if args.out else None,
        out_name=args.name, log=log)
    if args.json:
        print_json(report)
    else:
        print(_text(report))
    return 0
