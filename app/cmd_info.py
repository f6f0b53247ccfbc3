"""``mmode info FILE [--json] [--check]``: summarise a recording without reading its lines.

Reads headers and sidecars only (a gigabyte recording opens in milliseconds). ``--check``
also reads every line, in bounded blocks, and fails (exit 3) at the first line holding NaN
or Inf or at damaged storage.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="summarise a recording (any supported format)",
        description="Print the metadata, shape, duration and depth range of a recording file "
        "(.h5, .npy/.npz + JSON, .mat, raw + JSON, Clarius .raw). Reads headers only unless --check.",
    )
    p.add_argument("file", help="recording file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--check", action="store_true", help="also scan every line for NaN/Inf (reads the whole file)")
    p.set_defaults(func=run)


def _text(info: dict) -> str:
    rows = [
        ("file", info["source"]),
        ("format", info["format"]),
        ("kind", info["kind"]),
        ("lines", f"{info['n_lines']} x {info['n_samples']} samples, {info['dtype']}"),
        ("fs_hz", f"{info['fs_hz']:.6g}"),
        ("f0_hz", f"{info['f0_hz']:.6g}"),
        ("prf_hz", f"{info['prf_hz']:.6g}"),
        ("c_m_s", f"{info['c_m_s']:.6g}"),
        ("t0_s", f"{info['t0_s']:.6g}"),
        ("duration_s", f"{info['duration_s']:.6g}"),
        ("depth_m", f"{info['depth_m'][0]:.4f} .. {info['depth_m'][1]:.4f}"),
        ("has_truth", "yes" if info["has_truth"] else "no"),
    ]
    rows += [(k, info[k]) for k in ("probe", "description") if k in info]
    spans = ", ".join(f"{a['label']} [{a['start_line']}, {a['end_line']})" for a in info["annotations"])
    rows.append(("annotations", f"{len(info['annotations'])}" + (f": {spans}" if spans else "")))
    if "lines_checked" in info:
        rows.append(("check", f"{info['lines_checked']} lines read, all finite"))
    return "\n".join(f"{k:<12} {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import print_json
    from mmode.ingest.files import open_recording

    with open_recording(args.file) as rec:
        info = rec.info()
        if args.check:
            info["lines_checked"] = rec.check_finite()
    if args.json:
        print_json(info)
    else:
        print(_text(info))
    return 0
