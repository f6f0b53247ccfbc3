"""Compression library: structured pruning, unstructured pruning, low-rank, int8, ONNX, costs.

Every function takes a ``torch.nn.Module`` and either returns a new (or modified) module or a
plain statistics dict, so each step's effect can be measured and reported on its own.

- :func:`prune_structured`: channel pruning with Torch-Pruning's dependency graph
  (magnitude, Taylor or BN-scale group importance), iterative, with a fine-tuning callback
  between steps.
- :func:`prune_channels`: remove given output channels of one layer (and everything coupled).
- :func:`prune_unstructured` / :func:`sparsity_stats`: global magnitude pruning of weights.
- :func:`factorize_low_rank`: replace Linear and 1x1 convolution layers by two thinner ones
  (truncated SVD) where it saves parameters.
- :func:`export_onnx`, :func:`quantize_onnx_int8`, :func:`run_onnx`: ONNX export, ONNX
  Runtime int8 dynamic quantisation (weights int8, activations quantised per run; Conv,
  MatMul and Gemm), inference. PyTorch's own eager int8 (``torch.ao.quantization``) is
  deprecated and covers only Linear layers, so int8 goes through ONNX Runtime.
- :func:`costs`: parameters and multiply-accumulates; :func:`latency_ms`: batch-1, one-thread
  median latency.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from mmode.errors import DataError, ModelError, describe

IMPORTANCES = ("magnitude", "taylor", "bn_scale")


def costs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """{"params": n, "macs": m} for one forward pass of ``example_input`` (Torch-Pruning counter)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    model.train(was_training)
    return {"params": int(params), "macs": int(macs)}


def latency_ms(model: nn.Module, example_input: torch.Tensor, n_runs: int = 100, warmup: int = 10) -> float:
    """Median wall time in ms of one forward pass at batch 1 on one CPU thread (``n_runs`` >= 100)."""
    if n_runs < 100:
        raise DataError(describe("latency_ms", "n_runs >= 100", n_runs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.eval()
    x = example_input[:1]
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(n_runs):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * statistics.median(times)


# -- structured pruning --------------------------------------------------------------------
def _importance(name: str) -> tp.importance.Importance:
    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise DataError(describe("pruning importance", f"one of {IMPORTANCES}", repr(name)))


def prune_structured(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: float,
    *,
    importance: str = "magnitude",
    steps: int = 1,
    ignored_layers: list[nn.Module] | None = None,
    taylor_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    fine_tune: Callable[[nn.Module, int], None] | None = None,
    round_to: int | None = None,
) -> nn.Module:
    """Remove a fraction ``ratio`` of the channels of every prunable layer, in ``steps`` steps.

    Channels are grouped by Torch-Pruning's dependency graph (residual additions, depthwise
    convolutions, batch norms and SE layers stay consistent) and ranked by group importance
    (``"magnitude"``: L2 norm of the weights, ``"taylor"``: |weight * gradient| using
    ``taylor_loss(model)`` for the gradient, ``"bn_scale"``: |BN gamma|). After each step
    ``fine_tune(model, step)`` (if given) retrains the smaller network. ``ignored_layers``
    (typically the classification head) keep their output channels. Modifies and returns
    ``model``.
    """
    if not 0.0 <= ratio < 1.0:
        raise DataError(describe("pruning ratio", "0 <= ratio < 1", ratio))
    if steps < 1:
        raise DataError(describe("pruning steps", ">= 1", steps))
    if importance == "taylor" and taylor_loss is None:
        raise DataError(describe("taylor importance", "a taylor_loss function", None))
    pruner = tp.pruner.MetaPruner(
        model,
        example_input,
        importance=_importance(importance),
        pruning_ratio=ratio,
        iterative_steps=steps,
        ignored_layers=list(ignored_layers or []),
        round_to=round_to,
    )
    for step in range(steps):
        if importance == "taylor":
            model.zero_grad()
            taylor_loss(model).backward()
        pruner.step()
        if importance == "taylor":
            model.zero_grad()
        if fine_tune is not None:
            fine_tune(model, step)
    return model


def prune_channels(model: nn.Module, example_input: torch.Tensor, layer: nn.Module, idxs: list[int]) -> nn.Module:
    """Remove output channels ``idxs`` of ``layer`` (Conv or Linear) and all coupled channels.

    Uses the dependency graph, so the next layer's input channels, batch norms, depthwise
    convolutions and residual partners shrink with it. Modifies and returns ``model``.
    """
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    if isinstance(layer, nn.modules.conv._ConvNd):
        fn = tp.prune_conv_out_channels
    elif isinstance(layer, nn.Linear):
        fn = tp.prune_linear_out_channels
    else:
        raise ModelError(describe("prune_channels", "a Conv or Linear layer", type(layer).__name__))
    group = graph.get_pruning_group(layer, fn, idxs=list(idxs))
    if not graph.check_pruning_group(group):
        raise ModelError(describe("prune_channels", "a group that leaves every layer >= 1 channel", idxs))
    group.prune()
    return model


# -- unstructured pruning ------------------------------------------------------------------
def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def prune_unstructured(model: nn.Module, sparsity: float) -> dict:
    """Zero the globally smallest-magnitude fraction ``sparsity`` of conv/linear weights.

    Depthwise convolutions and layers with fewer than 100 weights are left dense (they are
    tiny and fragile). Modifies ``model`` in place; returns :func:`sparsity_stats`.
    """
    if not 0.0 <= sparsity < 1.0:
        raise DataError(describe("sparsity", "0 <= sparsity < 1", sparsity))
    layers = [
        m
        for _, m in _weight_layers(model)
        if m.weight.numel() >= 100 and not (isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1)
    ]
    if layers and sparsity > 0:
        mags = torch.cat([m.weight.detach().abs().flatten() for m in layers])
        k = int(sparsity * mags.numel())
        if k > 0:
            threshold = torch.kthvalue(mags, k).values
            with torch.no_grad():
                for m in layers:
                    m.weight.mul_((m.weight.abs() > threshold).to(m.weight.dtype))
    return sparsity_stats(model)


def sparsity_stats(model: nn.Module) -> dict:
    """{"total": fraction of zero conv/linear weights, "layers": {name: fraction}, "nonzero": n}."""
    per_layer, zeros, total = {}, 0, 0
    for name, m in _weight_layers(model):
        w = m.weight.detach()
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros += z
        total += w.numel()
    return {"total": zeros / max(total, 1), "nonzero": total - zeros, "layers": per_layer}


# -- low-rank factorisation ----------------------------------------------------------------
def _low_rank_pair(weight: torch.Tensor, energy: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(A (r, in), B (out, r)) with B @ A ~ weight keeping ``energy`` of the squared singular values."""
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    cum = torch.cumsum(s**2, 0) / torch.sum(s**2)
    rank = int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype)).item()) + 1
    n_out, n_in = weight.shape
    if rank * (n_in + n_out) >= n_out * n_in:
        return None
    root = torch.sqrt(s[:rank])
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :]


def factorize_low_rank(model: nn.Module, energy: float = 0.95) -> tuple[nn.Module, dict]:
    """Copy of ``model`` whose Linear and 1x1 (non-grouped) conv layers are replaced by two
    thinner layers from a truncated SVD keeping ``energy`` of the spectrum, where that saves
    parameters. Returns (new model, {layer name: rank}).
    """
    if not 0.0 < energy <= 1.0:
        raise DataError(describe("low-rank energy", "0 < energy <= 1", energy))
    model = copy.deepcopy(model)
    ranks: dict[str, int] = {}
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear):
            pair = _low_rank_pair(m.weight.detach(), energy)
            if pair is None:
                continue
            a, b = pair
            first, second = nn.Linear(m.in_features, a.shape[0], bias=False), nn.Linear(a.shape[0], m.out_features, bias=m.bias is not None)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups == 1 and all(k == 1 for k in m.kernel_size) and all(s == 1 for s in m.stride):
            pair = _low_rank_pair(m.weight.detach().flatten(1), energy)
            if pair is None:
                continue
            a, b = pair
            conv = type(m)
            first, second = conv(m.in_channels, a.shape[0], 1, bias=False), conv(a.shape[0], m.out_channels, 1, bias=m.bias is not None)
        else:
            continue
        with torch.no_grad():
            first.weight.copy_(a.reshape(first.weight.shape))
            second.weight.copy_(b.reshape(second.weight.shape))
            if m.bias is not None:
                second.bias.copy_(m.bias)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Sequential(first, second))
        ranks[name] = int(a.shape[0])
    return model, ranks


# -- quantisation and ONNX -----------------------------------------------------------------
def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path,
                variable_axes: tuple[int, ...] = (0,)) -> Path:
    """Export ``model`` (eval mode) to ONNX at ``path``; returns path. ``variable_axes``: the
    input axes left dynamic (0, the batch, always; a classifier adds 2, its time columns)."""
    path = Path(path)
    model = copy.deepcopy(model).eval()
    axes = {a: "batch" if a == 0 else f"axis{a}" for a in sorted({0, *variable_axes})}
    torch.onnx.export(
        model,
        (example_input[:1],),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": axes, "output": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def quantize_onnx_int8(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime dynamic int8 quantisation of ``src`` (Conv, MatMul, Gemm) written to ``dst``."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a generic "consider pre-processing" hint on every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(dst)


def run_onnx(path: str | Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Outputs of the ONNX model at ``path`` for float32 input ``x`` on ``threads`` CPU threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def onnx_latency_ms(path: str | Path, example_input: np.ndarray, n_runs: int = 100) -> float:
    """Median ms of one ONNX Runtime run at batch 1 on one thread (``n_runs`` >= 100)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(example_input[:1], dtype=np.float32)
    for _ in range(10):
        session.run(None, {"input": x})
    times = []
    for _ in range(max(n_runs, 100)):
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)
