"""Shipped models: ``models/weights/<name>.safetensors`` plus a ``<name>.json`` model card.

Weights are read with safetensors only (never unpickled). The model card is a JSON object:

``name``, ``task`` ("classify" | "motion"), ``arch`` and ``config`` (rebuild the network with
:func:`mmode.models.networks.build`), ``teacher`` (name or null), ``classes`` (classifiers),
``input`` (the input spec, see :mod:`mmode.models.data`), ``params``, ``macs``,
``latency_ms``, ``metrics``, ``steps`` (compression steps with their measured effect),
``data`` (training data recipe: seeds, counts, parameter ranges) and ``format_version``.
Classifier cards add ``cost_reference`` (the input ``params``, ``macs`` and ``latency_ms``
are measured on: the longest window), ``macs_shortest_window``, ``metrics.by_length``
(held-out metrics per window length) and ``notes`` (plain sentences, e.g. how short windows
do on lung_point).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mmode.errors import ModelError, describe

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CARD_FORMAT_VERSION = 1
MAX_WEIGHTS_BYTES = 5 * 1024 * 1024
MAX_CARD_BYTES = 1024 * 1024
DEFAULT_CLASSIFIER = "classifier_student"
DEFAULT_MOTION = "motion_student"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_REQUIRED = ("name", "task", "arch", "config", "teacher", "input", "params", "macs", "metrics", "steps")
#: Input spec keys a classifier card needs (:data:`mmode.models.data.CLASSIFIER_SPEC`; cards
#: written before 0.2.0 had fixed ``window_s`` / ``n_time`` windows instead).
_CLASSIFIER_INPUT = ("column_s", "min_window_s", "max_window_s", "hop_s", "n_depth")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelError(describe("model name", "lower-case letters, digits and _ (e.g. classifier_student)", repr(name)))
    return name


def model_names(directory: Path | None = None) -> list[str]:
    """Names of the models in ``directory`` (default: the shipped weights), sorted."""
    directory = WEIGHTS_DIR if directory is None else Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json") if (directory / f"{p.stem}.safetensors").is_file())


def load_card(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The model card of ``name`` as a dict; ModelError if missing or malformed."""
    directory = WEIGHTS_DIR if directory is None else Path(directory)
    path = directory / f"{_check_name(name)}.json"
    if not path.is_file():
        raise ModelError(describe("model", f"one of {model_names(directory)}", repr(name)))
    if path.stat().st_size > MAX_CARD_BYTES:
        raise ModelError(describe(path, f"a model card under {MAX_CARD_BYTES} bytes", path.stat().st_size))
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(describe(path, "a JSON model card", f"invalid JSON ({exc})")) from None
    if not isinstance(card, dict):
        raise ModelError(describe(path, "a JSON object", type(card).__name__))
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise ModelError(describe(path, f"keys {list(_REQUIRED)}", f"{missing} missing"))
    if card["task"] not in ("classify", "motion"):
        raise ModelError(describe(path, "task 'classify' or 'motion'", repr(card["task"])))
    if card["task"] == "classify":
        spec = card["input"]
        missing = [k for k in _CLASSIFIER_INPUT if not isinstance(spec, dict) or k not in spec]
        if missing:
            raise ModelError(describe(path, f"a classifier input spec with {list(_CLASSIFIER_INPUT)} "
                                            "(retrain with mmode train)", f"{missing} missing"))
    return card


def load_model(name: str, directory: Path | None = None):
    """(network in eval mode, model card) for ``name``; weights read with safetensors only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mmode.models.networks import build

    directory = WEIGHTS_DIR if directory is None else Path(directory)
    card = load_card(name, directory)
    path = directory / f"{name}.safetensors"
    if not path.is_file():
        raise ModelError(describe(path, "a safetensors weights file", "no such file"))
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ModelError(describe(path, f"weights under {MAX_WEIGHTS_BYTES} bytes", path.stat().st_size))
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(describe(path, "a safetensors weights file", f"unreadable ({exc})")) from None
    model = build(card["arch"], card["config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise ModelError(describe(path, f"weights matching {card['arch']} {card['config']}", first)) from None
    model.eval()
    return model, card


def save_model(model, card: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` into ``directory``; returns the weights path."""
    from safetensors.torch import save_file

    directory = WEIGHTS_DIR if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = _check_name(card["name"])
    card = {**card, "arch": model.arch, "config": model.config(), "format_version": CARD_FORMAT_VERSION}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path = directory / f"{name}.safetensors"
    save_file(state, str(path))
    path.chmod(0o644)  # safetensors writes owner-only; shipped files must be world-readable
    (directory / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path
