"""Make ``sample_data/demo_cine.mp4``: a small synthetic B-mode cine of a sliding lung.

Usage: ``python tools/make_demo_cine.py [OUT] [--seconds S] [--seed N]``.

The simulator renders one M-mode line (``lung_sliding``, 25 lines/s, the frame rate); a
frame is a sector of :data:`N_BEAMS` beams, and beam ``j`` of frame ``k`` is simulated line
``k + j * BEAM_OFFSET_FRAMES``: the chest wall and the pleura are static and the same on
every beam, the lung below the pleura shows its speckle at a different moment of the breath
on each beam and moves on from frame to frame. So the beam down the centre of the sector
(the default M-line of the video: the vertical through the frame's centre) is the simulated
M-mode itself. Each line: analytic-signal envelope (``scipy.signal.hilbert``), 20 log10, a
time-gain compensation at the scenario's attenuation, :data:`DYNAMIC_RANGE_DB` below the
99.9th percentile to 0..255; the sector is scan-converted (bilinear) onto a
:data:`WIDTH_PX` x :data:`HEIGHT_PX` frame from a virtual apex above it, as a convex probe
shows it, :data:`PX_PER_CM` pixels per cm of range; written as H.264 MP4 with PyAV.

The video carries no scale (as every MP4): open it with ``--px-per-cm 60`` for depths in cm.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from scipy import ndimage
from scipy.signal import hilbert

from mmode.ingest.scenarios import SCENARIOS
from mmode.ingest.simulator import simulate

FRAME_RATE_HZ = 25
N_BEAMS = 48
#: Frames between the simulated lines of neighbouring beams (0.28 s of the breath).
BEAM_OFFSET_FRAMES = 7
SECTOR_HALF_ANGLE_DEG = 30.0
DEPTH_M = 0.045
PX_PER_CM = 60.0
#: Distance from the virtual apex to the skin (the probe's radius of curvature), pixels.
APEX_RADIUS_PX = 60.0
#: Rows above the skin at the sector's centre.
TOP_MARGIN_PX = 8
WIDTH_PX = 320
HEIGHT_PX = 288
DYNAMIC_RANGE_DB = 45.0
#: Standard deviation of the static chest-wall speckle added across beams, dB.
CHEST_SPECKLE_DB = 6.0
#: The pleura is looked for below this depth (the skin entry echo is brighter), metres.
PLEURA_MIN_M = 0.008
#: H.264 constant rate factor: the clip stays well under 1 MB.
CRF = 23


def envelope_grey(lines: np.ndarray, depth_m: np.ndarray, f0_hz: float, alpha_db_cm_mhz: float,
                  n_rows: int) -> np.ndarray:
    """RF lines (n, n_samples) -> log envelope (n, n_rows) float32 grey levels 0..255, the
    envelope averaged over ``n_rows`` equal bins of depth."""
    env = np.abs(hilbert(lines.astype(np.float32), axis=1))
    edges = np.linspace(0, env.shape[1], n_rows + 1).astype(int)
    env = np.stack([env[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    centre_m = np.stack([depth_m[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    tgc_db = 2 * alpha_db_cm_mhz * (f0_hz / 1e6) * centre_m * 100
    db = 20 * np.log10(env + 1e-3) + tgc_db[None, :]
    top = np.percentile(db, 99.9)
    return (np.clip((db - (top - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0, 1) * 255).astype(np.float32)


def chest_wall_speckle(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A static grey-level pattern (N_BEAMS, n_rows) to add above the pleura: the simulated
    chest wall is the same on every beam, which would draw it as rings; the centre beam
    (the M-line) gets none, so the M-mode stays the simulated one. The pleura is the
    brightest row deeper than :data:`PLEURA_MIN_M` in the mean image."""
    n_rows = grey.shape[1]
    mean = grey.mean(axis=0)
    first = int(PLEURA_MIN_M / DEPTH_M * n_rows)
    pleura_row = first + int(np.argmax(mean[first:]))
    field = ndimage.gaussian_filter(rng.standard_normal((N_BEAMS, n_rows)), (0.7, 1.0))
    field *= CHEST_SPECKLE_DB / field.std() * 255 / DYNAMIC_RANGE_DB
    field[:, pleura_row - 2:] = 0
    field[N_BEAMS // 2 - 1:N_BEAMS // 2 + 1] = 0
    return field.astype(np.float32)


def sector_coordinates(n_beams: int, n_samples: int, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    """For every frame pixel, its (beam, sample) coordinates in the polar image (n_beams,
    n_samples), each (HEIGHT_PX, WIDTH_PX) float64; NaN outside the sector."""
    apex_x = (WIDTH_PX - 1) / 2
    apex_y = TOP_MARGIN_PX - APEX_RADIUS_PX
    y, x = np.mgrid[0:HEIGHT_PX, 0:WIDTH_PX].astype(np.float64)
    r_px = np.hypot(x - apex_x, y - apex_y)
    theta_deg = np.degrees(np.arctan2(x - apex_x, y - apex_y))
    beam = (theta_deg + SECTOR_HALF_ANGLE_DEG) / (2 * SECTOR_HALF_ANGLE_DEG) * (n_beams - 1)
    sample = (r_px - APEX_RADIUS_PX) / (PX_PER_CM * depth_m * 100) * (n_samples - 1)
    outside = (beam < 0) | (beam > n_beams - 1) | (sample < 0) | (sample > n_samples - 1)
    beam[outside] = np.nan
    sample[outside] = np.nan
    return beam, sample


def make_frames(seconds: float, seed: int) -> np.ndarray:
    """The cine, (n_frames, HEIGHT_PX, WIDTH_PX) uint8."""
    n_frames = int(round(seconds * FRAME_RATE_HZ))
    n_lines = n_frames + (N_BEAMS - 1) * BEAM_OFFSET_FRAMES
    sim = simulate("lung_sliding", seconds=n_lines / FRAME_RATE_HZ, prf_hz=FRAME_RATE_HZ, depth_m=DEPTH_M, seed=seed)
    depth = sim.meta.depth_axis_m(sim.lines.shape[1])
    n_rows = int(round(PX_PER_CM * DEPTH_M * 100))
    grey = envelope_grey(sim.lines, depth, sim.meta.f0_hz, SCENARIOS["lung_sliding"].attenuation_db_cm_mhz, n_rows)
    wall = chest_wall_speckle(grey, np.random.default_rng(seed))
    beam, sample = sector_coordinates(N_BEAMS, n_rows, DEPTH_M)
    inside = np.isfinite(beam)
    coords = np.stack([beam[inside], sample[inside]])
    frames = np.zeros((n_frames, HEIGHT_PX, WIDTH_PX), np.uint8)
    for k in range(n_frames):
        polar = grey[k + BEAM_OFFSET_FRAMES * np.arange(N_BEAMS)] + wall  # (n_beams, n_rows)
        frames[k][inside] = np.clip(ndimage.map_coordinates(polar, coords, order=1), 0, 255).astype(np.uint8)
    return frames


def write_mp4(path: Path, frames: np.ndarray) -> None:
    """Grey frames (n, H, W) uint8 as H.264 (yuv420p) at FRAME_RATE_HZ."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FRAME_RATE_HZ)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(CRF)}
        for f in frames:
            rgb = np.repeat(f[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="sample_data/demo_cine.mp4")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    frames = make_frames(args.seconds, args.seed)
    out = Path(args.out)
    write_mp4(out, frames)
    print(f"{out}: {frames.shape[0]} frames of {WIDTH_PX} x {HEIGHT_PX} px at {FRAME_RATE_HZ} frames/s, "
          f"{PX_PER_CM:g} px/cm, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
