"""``mmode info FILE [--json] [--check]``: summarise a recording without reading its lines.

Reads headers and sidecars only (a gigabyte recording opens in milliseconds). ``--check``
also reads every line, in bounded blocks, and fails (exit 3) at the first line holding NaN
or Inf or at damaged storage. A format v1 file whose writer died says it needs ``mmode
repair`` (``needs_repair`` in JSON; ``being_written`` while a live recording writes it). A
DICOM file or video also shows its frames, timing and regions; one that holds no M-mode (a
single B-mode frame) shows those with a note saying why.
"""

from __future__ import annotations

import argparse

from mmode.app.cli import add_cine_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="summarise a recording (any supported format)",
        description="Print the metadata, shape, duration and depth range of a recording file "
        "(.h5, .npy/.npz + JSON, .mat, raw + JSON, Clarius .raw, DICOM, MP4/AVI/MOV). Reads headers only "
        "unless --check.",
    )
    p.add_argument("file", help="recording file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--check", action="store_true", help="also scan every line for NaN/Inf (reads the whole file)")
    add_cine_arguments(p)
    p.set_defaults(func=run)


def _cine_rows(info: dict) -> list[tuple[str, object]]:
    """Rows for the ``dicom`` / ``video`` / ``mline`` / ``mmode_region`` parts of the summary."""
    rows: list[tuple[str, object]] = []
    if "dicom" in info:
        d = info["dicom"]
        interval = "none" if d["frame_interval_s"] is None else f"{d['frame_interval_s'] * 1e3:.6g} ms ({d['frame_timing']})"
        rows += [("dicom", f"{d['manufacturer'] or '?'} {d['model'] or ''}".strip() + f", {d['sop_class']}"),
                 ("frames", f"{d['n_frames']} of {d['shape_px'][1]} x {d['shape_px'][0]} px, {d['photometric']}, "
                            f"{d['transfer_syntax']}"),
                 ("frame time", interval)]
        for i, r in enumerate(d["regions"]):
            units = "/".join(r["units"])
            delta = ", ".join("none" if v is None else f"{v:.6g}" for v in r["delta"])
            where = "" if r["fits_frame"] else " (box exceeds the frame)"
            rows.append((f"region {i}", f"{r['spatial_format']} {r['data_type']}, box {r['box_px']}{where}, "
                                        f"{units}, delta [{delta}], reference {r['reference_px']} = "
                                        f"{r['reference_value']}, flags {r['flags']}"))
    if "video" in info:
        v = info["video"]
        interval = "none" if v["frame_interval_s"] is None else f"{v['frame_interval_s'] * 1e3:.6g} ms"
        rows += [("video", f"{v['n_frames']} frames of {v['shape_px'][1]} x {v['shape_px'][0]} px, {v['codec']}"),
                 ("frame time", interval)]
    if "mline" in info:
        m = info["mline"]
        step = "" if m["step_m"] is None else f", {m['step_m'] * 1e3:.4g} mm per sample"
        rows.append(("m-line", "({:g}, {:g}) -> ({:g}, {:g}) px".format(*m["px"]) + f", {m['n_samples']} samples"
                     + f"{step}; depth: {m['calibration']}"))
    if "mmode_region" in info:
        m = info["mmode_region"]
        rows.append(("m-mode", f"region {m['region']} of frame {m['frame']}: {m['columns']} columns x {m['rows']} rows"))
    return rows


def _text(info: dict) -> str:
    if info.get("kind") is None:  # a cine without an M-mode: its frames and the reason
        return "\n".join(f"{k:<12} {v}" for k, v in [("file", info["source"]), *_cine_rows(info),
                                                      ("recording", info["note"])])
    depth = (("depth_m", f"{info['depth_m'][0]:.4f} .. {info['depth_m'][1]:.4f}") if info["depth_m"] is not None
             else ("depth_px", f"{info['depth_px'][0]} .. {info['depth_px'][1]} (uncalibrated)"))
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
        depth,
        ("has_truth", "yes" if info["has_truth"] else "no"),
    ]
    if "amplitude" in info:
        rows.append(("amplitude", f"{info['amplitude']} (display grey levels, already log-compressed)"))
    rows += [(k, info[k]) for k in ("probe", "description") if k in info]
    spans = ", ".join(f"{a['label']} [{a['start_line']}, {a['end_line']})" for a in info["annotations"])
    rows.append(("annotations", f"{len(info['annotations'])}" + (f": {spans}" if spans else "")))
    rows += _cine_rows(info)
    if info.get("needs_repair"):
        rows.append(("repair", f"needs `mmode repair {info['source']}`: its writer died (a crash or a failed write); "
                               "mmode opens it, other HDF5 tools refuse it"))
    elif info.get("being_written"):
        rows.append(("writing", "being recorded now (opens in other HDF5 tools once closed)"))
    if "lines_checked" in info:
        rows.append(("check", f"{info['lines_checked']} lines read, all finite"))
    return "\n".join(f"{k:<12} {v}" for k, v in rows)


def _without_mmode(path: str, error: Exception) -> dict:
    """The frames' summary of a DICOM image that holds no M-mode (``error`` says why)."""
    from mmode.ingest.files import open_frames

    frames = open_frames(path)
    try:
        return {"source": path, "format": "dicom", "kind": None, "note": str(error), **frames.info()}
    finally:
        frames.close()


def run(args: argparse.Namespace) -> int:
    from mmode.app.cli import cine_options, print_json
    from mmode.ingest.dicom import NoMmodeError
    from mmode.ingest.files import open_recording
    from mmode.ingest.h5format import FORMAT_NAME, write_state

    rec = None
    try:
        rec = open_recording(args.file, **cine_options(args))
    except NoMmodeError as exc:
        if args.check:
            raise
        info = _without_mmode(args.file, exc)
    if rec is not None:
        with rec:
            info = rec.info()
            if args.check:
                info["lines_checked"] = rec.check_finite()
        if info["format"].startswith(f"{FORMAT_NAME}-h5"):
            state = write_state(args.file)
            info.update(needs_repair=state == "needs_repair", being_written=state == "being_written")
    if args.json:
        print_json(info)
    else:
        print(_text(info))
    return 0
