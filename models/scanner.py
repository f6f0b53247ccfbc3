"""What a scanner's image does to an M-mode, for training and testing the classifier on it.

A sonographer's M-mode is not the product's RF display: it is a scanner's 8-bit image,
log-compressed with the vendor's curve, speckle-reduced and blurred, often JPEG-compressed,
and, when it is an anatomical M-mode cut from a B-mode cine, sampled at the cine's 15-60
frames/s with 200-800 pixels along the line and the pleura wherever the sonographer put it.
:func:`scanner_image` turns a display image of the simulator (``display_db`` rows of
:class:`mmode.dsp.processor.Processor`, line times, line labels) into such an image, drawing
each of those conditions at random within :data:`SCANNER_RANGES`; :func:`scanner_display`
then runs it through the product's own path for grey levels (``amplitude="grey"``, the path
DICOM and cine files take) so that training sees what inference sees.
"""

from __future__ import annotations

import io

import numpy as np
from scipy import ndimage

from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.models.data import draw_uniform

#: Ranges of the scanner conditions (uniform draws unless a list of choices). Frame rates:
#: cine loops of handheld and cart scanners; depth pixels: the line through a 350-800 px
#: image; curve: the 0 dB / -DR points of the grey map and its gamma (vendor curves range from
#: concave to S-shaped); depth fade: attenuation the scanner's TGC leaves (deep lung is often
#: black); blank fraction: the line running past the bottom of a sector into the black
#: background, in a share of images; JPEG quality of DICOM lossy and video exports.
SCANNER_RANGES = {
    "frame_rate_hz": [15.0, 60.0],
    "depth_px": [200, 800],
    "top_fraction": [-0.2, 0.2],
    "bottom_fraction": [0.7, 2.2],
    "curve_low": [0.0, 0.25],
    "curve_high": [0.75, 1.0],
    "curve_gamma": [0.5, 2.0],
    "blur_px": [0.0, 2.0],
    "median_px": [1, 3, 5],
    "jpeg_fraction": 0.7,
    "jpeg_quality": [30, 95],
    "extension_fade_db": [0.0, 40.0],
    "depth_fade_db": [0.0, 30.0],
    "blank_fraction": 0.3,
    "blank_bottom": [0.0, 0.25],
}


def frame_sample(t_s: np.ndarray, frame_rate_hz: float, phase: float) -> np.ndarray:
    """Indices (k,) of the lines a cine at ``frame_rate_hz`` would show: for each frame time
    ``t_s[0] + (phase + j) / frame_rate_hz`` inside the recording, the latest line at or
    before it (a B-mode frame is a snapshot of the line). ``phase`` in [0, 1)."""
    frame_t = t_s[0] + (phase + np.arange(int((t_s[-1] - t_s[0]) * frame_rate_hz) + 1)) / frame_rate_hz
    frame_t = frame_t[frame_t <= t_s[-1]]
    return np.maximum(np.searchsorted(t_s, frame_t, side="right") - 1, 0)


def depth_window(rows: np.ndarray, top_fraction: float, bottom_fraction: float, n_px: int,
                 fade_db: float, rng: np.random.Generator) -> np.ndarray:
    """Resample display rows (n, n_rows) dB onto ``n_px`` pixels spanning the depth fractions
    ``top_fraction .. bottom_fraction`` of the rows (linear interpolation). Above the first
    row the image continues with its top 5 % of rows (the chest wall); below the last, with
    its bottom 15 % tiled in a random order and faded linearly by up to ``fade_db`` (deeper
    tissue of the same texture: a lung's seashore or barcode goes on)."""
    n_rows = rows.shape[1]
    top = rows[:, : max(1, n_rows // 20)]
    bottom = rows[:, -max(1, (3 * n_rows) // 20):]
    n_above = max(0, int(np.ceil(-top_fraction * n_rows)))
    n_below = max(0, int(np.ceil((bottom_fraction - 1.0) * n_rows)))
    above = top[:, rng.integers(top.shape[1], size=n_above)]
    below = bottom[:, rng.integers(bottom.shape[1], size=n_below)]
    below = below - np.linspace(0.0, fade_db, n_below, dtype=np.float32)[None, :]
    full = np.concatenate([above, rows, below], axis=1)
    # pixel centres in row units of ``full`` (row i of ``rows`` is at i + n_above)
    pos = n_above + (top_fraction + (np.arange(n_px) + 0.5) / n_px * (bottom_fraction - top_fraction)) * n_rows - 0.5
    pos = np.clip(pos, 0, full.shape[1] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, full.shape[1] - 1)
    w = (pos - lo).astype(np.float32)
    return full[:, lo] * (1 - w) + full[:, hi] * w


def grey_curve(db: np.ndarray, dynamic_range_db: float, low: float, high: float, gamma: float) -> np.ndarray:
    """A vendor's grey map: dB (any shape, 0 at the top) to grey 0..255 float32. The display's
    range ``-dynamic_range_db .. 0`` is mapped to 0..1, then ``low .. high`` of it stretched
    to the whole grey scale with ``gamma`` (< 1 brightens the mid-tones, > 1 darkens them)."""
    x = (np.asarray(db, np.float32) + np.float32(dynamic_range_db)) / np.float32(dynamic_range_db)
    x = np.clip((x - low) / (high - low), 0.0, 1.0)
    return (255.0 * x ** np.float32(gamma)).astype(np.float32)


def jpeg_roundtrip(grey: np.ndarray, quality: int) -> np.ndarray:
    """An 8-bit image (n, n_px) after JPEG encoding at ``quality`` (1-95) and decoding
    (Pillow's baseline encoder, 4:2:0 does not apply to grey), float32."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey.T)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32).T


def scanner_image(display_db: np.ndarray, t_s: np.ndarray, labels: np.ndarray, dynamic_range_db: float,
                  rng: np.random.Generator, ranges: dict = SCANNER_RANGES) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The M-mode a scanner would show of a simulated display image.

    display_db (n, n_rows) dB in ``-dynamic_range_db .. 0``; t_s (n,) s; labels (n,).
    Returns (grey (k, n_px) uint8 at the drawn frame rate, frame times (k,) s, frame labels
    (k,), the drawn conditions as a JSON-safe dict). Steps: frames sampled at 15-60 Hz
    (:func:`frame_sample`), the depth window and pixel count (:func:`depth_window`), a linear
    fade with depth, the grey curve (:func:`grey_curve`), for a share of images a black band
    at the bottom, blur and median speckle reduction along depth, 8-bit quantisation and,
    for a share of images, a JPEG round trip.
    """
    r = ranges
    cond = {
        "frame_rate_hz": draw_uniform(rng, r["frame_rate_hz"]),
        "depth_px": int(rng.integers(r["depth_px"][0], r["depth_px"][1] + 1)),
        "top_fraction": draw_uniform(rng, r["top_fraction"]),
        "bottom_fraction": draw_uniform(rng, r["bottom_fraction"]),
        "curve_low": draw_uniform(rng, r["curve_low"]),
        "curve_high": draw_uniform(rng, r["curve_high"]),
        "curve_gamma": float(np.exp(rng.uniform(np.log(r["curve_gamma"][0]), np.log(r["curve_gamma"][1])))),
        "blur_px": draw_uniform(rng, r["blur_px"]),
        "median_px": int(rng.choice(r["median_px"])),
        "jpeg_quality": int(rng.integers(r["jpeg_quality"][0], r["jpeg_quality"][1] + 1))
        if rng.uniform() < r["jpeg_fraction"] else None,
        "extension_fade_db": draw_uniform(rng, r["extension_fade_db"]),
        "depth_fade_db": draw_uniform(rng, r["depth_fade_db"]),
        "blank_bottom": draw_uniform(rng, r["blank_bottom"]) if rng.uniform() < r["blank_fraction"] else 0.0,
    }
    pick = frame_sample(np.asarray(t_s, np.float64), cond["frame_rate_hz"], float(rng.uniform()))
    rows = depth_window(np.asarray(display_db, np.float32)[pick], cond["top_fraction"], cond["bottom_fraction"],
                        cond["depth_px"], cond["extension_fade_db"], rng)
    rows -= np.linspace(0.0, cond["depth_fade_db"], rows.shape[1], dtype=np.float32)[None, :]
    grey = grey_curve(rows, dynamic_range_db, cond["curve_low"], cond["curve_high"], cond["curve_gamma"])
    grey[:, rows.shape[1] - int(cond["blank_bottom"] * rows.shape[1]):] = 0.0
    if cond["blur_px"] > 0.3:
        grey = ndimage.gaussian_filter1d(grey, cond["blur_px"], axis=1)
    if cond["median_px"] > 1:
        grey = ndimage.median_filter(grey, size=(1, cond["median_px"]))
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    if cond["jpeg_quality"] is not None:
        grey = np.clip(np.round(jpeg_roundtrip(grey, cond["jpeg_quality"])), 0, 255).astype(np.uint8)
    return grey, np.asarray(t_s, np.float64)[pick], np.asarray(labels)[pick], cond


def scanner_display(grey: np.ndarray, frame_t_s: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The product's display image of a scanner M-mode: grey (k, n_px) uint8 lines at times
    frame_t_s (k,) s through :class:`~mmode.dsp.processor.Processor` as scanner grey levels
    (``amplitude="grey"``, uncalibrated pixels), as a DICOM M-mode or a cine's M-line is.
    Returns (display_db (k, n_rows), t_s (k,)); frame times need not be evenly spaced."""
    from mmode.dsp.processor import Processor, ProcessorSettings

    frame_rate_hz = (len(frame_t_s) - 1) / max(float(frame_t_s[-1] - frame_t_s[0]), 1e-9)
    meta = AcquisitionMeta(kind="envelope", fs_hz=1.0, f0_hz=0.0, prf_hz=frame_rate_hz, amplitude="grey",
                           depth_calibrated=False)
    proc = Processor(ProcessorSettings(n_rows=n_rows))
    proc.prepare(meta, grey.shape[1])
    out = proc.process(LineBlock(0, float(frame_t_s[0]), grey.astype(np.float32)))
    return out.display_db, np.asarray(frame_t_s, np.float64)
