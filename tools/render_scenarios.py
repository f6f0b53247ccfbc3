"""Render one M-mode PNG per simulator scenario into docs/img/ (log envelope via scipy).

Usage: ``python tools/render_scenarios.py [OUT_DIR] [--seconds S] [--seed N]``. Also renders
``demo.png``, the class-changing sequence of ``sample_data/demo.h5``. The image is
depth (rows, top = skin) against time (columns): the analytic-signal envelope from
``scipy.signal.hilbert``, 20 log10, 55 dB dynamic range below the 99.9th percentile,
with a simple time-gain compensation at the scenario's attenuation. Written with a minimal
zlib PNG writer (8-bit grey), so the script needs no GUI toolkit.
"""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

import numpy as np
from scipy.signal import hilbert

from mmode.ingest.scenarios import SCENARIOS
from mmode.ingest.simulator import simulate, simulate_sequence

DYNAMIC_RANGE_DB = 55.0
WIDTH_PX = 640


def write_png(path: Path, grey: np.ndarray) -> None:
    """Write a (rows, cols) uint8 array as an 8-bit greyscale PNG."""
    rows, cols = grey.shape
    raw = b"".join(b"\x00" + grey[r].tobytes() for r in range(rows))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    path.write_bytes(png)


def mmode_image(lines: np.ndarray, depth_m: np.ndarray, f0_hz: float, alpha_db_cm_mhz: float, rows: int) -> np.ndarray:
    """Log-envelope image (rows, n_lines) uint8 from RF lines (n_lines, n_samples)."""
    env = np.abs(hilbert(lines.astype(np.float32), axis=1))
    tgc_db = 2 * alpha_db_cm_mhz * (f0_hz / 1e6) * depth_m * 100
    db = 20 * np.log10(env + 1e-3) + tgc_db[None, :]
    # depth decimation: max over bins keeps bright lines visible
    edges = np.linspace(0, db.shape[1], rows + 1).astype(int)
    img = np.stack([db[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=0)
    top = np.percentile(img, 99.9)
    return (np.clip((img - (top - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0, 1) * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default="docs/img")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="scenario names (default: all)")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or SCENARIOS:
        info = SCENARIOS[name]
        prf = WIDTH_PX / args.seconds
        r = simulate(name, seconds=args.seconds, prf_hz=prf, seed=args.seed)
        depth = r.meta.depth_axis_m(r.lines.shape[1])
        img = mmode_image(r.lines, depth, r.meta.f0_hz, info.attenuation_db_cm_mhz, rows=240)
        write_png(out / f"{name}.png", img)
        print(f"{out / (name + '.png')}: {r.lines.shape[0]} lines, {depth[-1] * 100:.1f} cm")
    if args.only is None:
        segments = [("lung_sliding", 7.0), ("no_sliding", 7.0), ("lung_point", 8.0)]
        r = simulate_sequence(segments, prf_hz=2 * WIDTH_PX / 22.0, fs_hz=14e6, depth_m=0.04, seed=args.seed)
        depth = r.meta.depth_axis_m(r.lines.shape[1])
        img = mmode_image(r.lines, depth, r.meta.f0_hz, SCENARIOS["lung_sliding"].attenuation_db_cm_mhz, rows=240)
        write_png(out / "demo.png", img)
        print(f"{out / 'demo.png'}: {r.lines.shape[0]} lines, {' -> '.join(s for s, _ in segments)}")


if __name__ == "__main__":
    main()
