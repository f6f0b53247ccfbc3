"""``mmode models [--json] [--measure]``: the shipped models and their compression report.

One entry per shipped model: name, task (classify | motion), teacher (name or null),
params, macs and latency_ms (batch 1, one CPU thread, median of at least 100 runs; measured
when the model was trained, or on this machine with ``--measure``) of one input as
``cost_reference`` says (a classifier: its longest window; ``macs_shortest_window`` for
its shortest, null for motion nets), metrics on the held-out test
split (a classifier: at its longest window, per window length in ``metrics.by_length``, and
the same on scanner images in ``metrics.scanner``), the compression steps applied to it with their measured effect,
classes, the input spec and the card's notes.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the shipped models with size, cost, latency and accuracy",
        description="List the shipped neural networks (classifier and motion, teacher and compressed "
        "student) with parameters, multiply-accumulates, latency and held-out metrics.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--measure", action="store_true", help="re-measure latency_ms on this machine (100 runs each)")
    p.add_argument("--markdown", action="store_true", help="print the compression report as Markdown (docs/models.md)")
    p.set_defaults(func=run)


def report(measure: bool = False) -> list[dict]:
    """The ``mmode models --json`` list (see the module docstring)."""
    from mmode.models import registry

    out = []
    for name in registry.model_names():
        card = registry.load_card(name)
        latency = card.get("latency_ms")
        if measure:
            import torch

            from mmode.models.compress import latency_ms

            model, _ = registry.load_model(name)
            spec = card["input"]
            if card["task"] == "classify":
                from mmode.models.data import column_range

                shape = (1, 1, column_range(spec)[1], spec["n_depth"])
            else:
                shape = (1, spec["channels"], spec["n_samples"])
            latency = round(latency_ms(model, torch.zeros(shape), n_runs=100), 4)
        out.append({
            "name": name,
            "task": card["task"],
            "teacher": card["teacher"],
            "params": card["params"],
            "macs": card["macs"],
            "latency_ms": latency,
            "metrics": card["metrics"],
            "steps": card["steps"],
            "classes": card.get("classes"),
            "input": card["input"],
            "cost_reference": card.get("cost_reference"),
            "macs_shortest_window": card.get("macs_shortest_window"),
            "notes": card.get("notes", []),
        })
    return out


def _text(models: list[dict]) -> str:
    head = f"{'name':<20} {'task':<9} {'teacher':<20} {'params':>8} {'macs':>11} {'latency_ms':>10}  metric"
    rows = [head]
    for m in models:
        metric = (f"macro_f1 {_f1_by_length(m['metrics'])}" if m["task"] == "classify"
                  else _motion_metric(m["metrics"], m["name"]))
        rows.append(f"{m['name']:<20} {m['task']:<9} {m['teacher'] or '-':<20} {m['params']:>8} {m['macs']:>11} "
                    f"{m['latency_ms']:>10.3f}  {metric}")
    return "\n".join(rows)


def _f1_by_length(mt: dict) -> str:
    """"6 s 0.981, 4 s 0.968, ...; scanner images 6 s 0.95, ..." (longest window first) from a
    classifier's metrics."""
    rows = sorted(mt["by_length"], key=lambda r: -r["window_s"])
    text = ", ".join(f"{r['window_s']:g} s {r['macro_f1']:.3f}" for r in rows)
    return (text + (f"; scanner images {_f1_by_length(mt['scanner'])}" if "scanner" in mt else "")
            + (f"; lung cine M-line {_f1_by_length(mt['cine'])}" if "cine" in mt else ""))


def _keyframe_metric(mt: dict, name: str) -> str:
    """A keyframe motion net (:mod:`mmode.models.motion_train`): its held-out residual RMSE
    and, from its trace table (:mod:`mmode.models.motion_eval`), the integrated-trace RMSE
    against exact truth, median over the cells, beside the classic tracker's."""
    from statistics import median

    um = lambda v: "-" if v is None else f"{v * 1e6:.2f}"  # noqa: E731
    by = mt["rmse_m_by"]
    text = (f"residual RMSE {um(mt['rmse_m'])} um (SNR <= 10 dB {um(by['snr_le_10db'])}; RF {um(by['rf'])}, "
            f"IQ {um(by['iq'])})")
    cells = [c for c in (mt.get("trace_table") or {}).get("cells", []) if name in c]
    if cells:
        text += (f"; integrated trace vs exact truth, median of {len(cells)} cells: "
                 f"{um(median(c[name]['rmse_m'] for c in cells))} um "
                 f"(classic tracker {um(median(c['combined']['rmse_m'] for c in cells))} um)")
    return text


def _motion_metric(mt: dict, name: str = "") -> str:
    """RMSE overall and at SNR <= 10 dB (all pairs, and the moving ones) beside Kasai and the
    trivial "no motion" estimate on the same pairs, and the test set's displacement range
    (absolute values; no "|" in the text, which would split a Markdown table cell)."""
    if "rmse_m_by" in mt:
        return _keyframe_metric(mt, name)
    um = lambda v: "-" if v is None else f"{v * 1e6:.2f}"  # noqa: E731  (None: no such test pairs)
    d = mt["truth_abs_m"]
    return (f"RMSE {um(mt['rmse_m'])} um; SNR <= 10 dB: {um(mt['rmse_m_10db'])} um "
            f"(Kasai {um(mt['kasai_rmse_m_10db'])}, no motion {um(mt['zero_rmse_m_10db'])}); "
            f"10 dB, moving >= {mt['moving_m'] * 1e6:g} um: {um(mt['rmse_m_10db_moving'])} um "
            f"(Kasai {um(mt['kasai_rmse_m_10db_moving'])}, no motion {um(mt['zero_rmse_m_10db_moving'])}); "
            f"test displacement median {um(d['p50'])}, p90 {um(d['p90'])}, max {um(d['max'])} um")


#: The published figure the compression is compared with (CDP-KDNet, RF elastography).
PUBLISHED = {"name": "CDP-KDNet student (published)", "params_ratio": 0.453, "macs_ratio": 0.678}


def _look_rows(m: dict) -> list[tuple[str, dict | None]]:
    """(row suffix, metrics) of a classifier card per look: the product's display, scanner
    images, the default M-line of simulated lung cines (the last only where scored)."""
    mt = m["metrics"]
    return [("", mt), (" (scanner images)", mt.get("scanner")), (" (lung cine M-line)", mt.get("cine"))]


def markdown(models: list[dict]) -> str:
    """Teacher-beside-student table plus each student's compression steps, as Markdown."""
    by_name = {m["name"]: m for m in models}
    out = ["| model | task | teacher | params | MACs | params / teacher | MACs / teacher | latency ms | metric |",
           "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for m in models:
        t = by_name.get(m["teacher"]) if m["teacher"] else None
        pr = f"{m['params'] / t['params']:.1%}" if t else "-"
        mr = f"{m['macs'] / t['macs']:.1%}" if t else "-"
        if m["task"] == "classify":
            metric = f"macro-F1 {_f1_by_length(m['metrics'])}"
        else:
            metric = _motion_metric(m["metrics"], m["name"])
        out.append(f"| {m['name']} | {m['task']} | {m['teacher'] or '-'} | {m['params']:,} | {m['macs']:,} | {pr} | {mr} "
                   f"| {m['latency_ms']:.3f} | {metric} |")
    out.append(f"| {PUBLISHED['name']} | motion | its teacher | - | - | {PUBLISHED['params_ratio']:.1%} "
               f"| {PUBLISHED['macs_ratio']:.1%} | - | strain SNR/CNR kept |")
    tables = [m for m in models if (m["metrics"] or {}).get("trace_table")]
    if tables:
        from mmode.models.motion_eval import markdown as trace_markdown

        out += ["", "### Motion networks beside the classic trackers: integrated trace vs exact truth", "",
                trace_markdown(tables[0]["metrics"]["trace_table"])]
    classifiers = [m for m in models if m["task"] == "classify"]
    if classifiers:
        lengths = [r["window_s"] for r in classifiers[0]["metrics"]["by_length"]]
        out += ["", "### Classifiers: macro-F1 per window length (held-out test split)", "",
                "| model | " + " | ".join(f"{w:g} s" for w in lengths) + " | windows |",
                "|---|" + "---:|" * len(lengths) + "---|"]
        for m in classifiers:
            for look, mt in _look_rows(m):
                if mt is None:
                    continue
                rows = {r["window_s"]: r for r in mt["by_length"]}
                out.append(f"| {m['name']}{look} | " + " | ".join(f"{rows[w]['macro_f1']:.3f}" for w in lengths)
                           + " | " + ", ".join(f"{rows[w]['n_test']}" for w in lengths) + " |")
        classes = classifiers[0]["classes"]
        out += ["", "### Classifiers: per-class F1 per window length", "",
                "| model | window | " + " | ".join(classes) + " |", "|---|---|" + "---:|" * len(classes)]
        for m in classifiers:
            for look, mt in _look_rows(m):
                for r in [] if mt is None else mt["by_length"]:
                    out.append(f"| {m['name']}{look} | {r['window_s']:g} s | "
                               + " | ".join(f"{r['per_class_f1'][c]:.3f}" for c in classes) + " |")
    for m in models:
        if not m["steps"]:
            continue
        out += ["", f"### {m['name']}: compression steps", "",
                "| step | applied | params | MACs | latency ms | metric | notes |", "|---|---|---:|---:|---:|---|---|"]
        for s in m["steps"]:
            if "macro_f1_by_window_s" in s:
                by = s["macro_f1_by_window_s"]
                metric = "macro-F1 " + ", ".join(f"{w} s {by[w]:.3f}" for w in sorted(by, key=float, reverse=True))
            else:
                metric = f"RMSE {s['rmse_m'] * 1e6:.2f} um" if "rmse_m" in s else ""
            notes = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items() if k in (
                "sparsity", "max_abs_diff_vs_torch", "decision_agreement", "file_bytes", "ratio", "iterative_steps",
                "temperature", "alpha", "epochs", "lr"))
            lat = s.get("latency_ms")
            out.append(f"| {s['step']} | {'yes' if s['applied'] else 'measured only'} | {s.get('params', '-')} "
                       f"| {s.get('macs', '-')} | {'-' if lat is None else f'{lat:.3f}'} | {metric} | {notes} |")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json

    models = report(args.measure)
    if args.markdown:
        print(markdown(models))
    elif args.json:
        print_json(models)
    else:
        print(_text(models))
    return 0
