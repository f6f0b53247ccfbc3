"""A B-mode cine of a lung, frame by frame, for training the classifier on anatomical M-mode.

The RF simulator (:mod:`mmode.ingest.simulator`) renders lines; a sonographer's anatomical
M-mode is the samples along an M-line of each frame of a B-mode cine at 15-60 frames/s
(:mod:`mmode.ingest.mline`). :func:`lung_cine` renders such a cine of a narrow strip of a
lung view around the M-line, in pixels, and :func:`cine_mmode` samples the product's default
M-line of it with the product's own code, so that the classifier trains on what the product
computes from a real clip.

The picture, from the skin down (rows ``y``, columns ``x``):

- chest wall: fully developed speckle (a complex Gaussian field convolved with an
  anisotropic point spread function, its magnitude) under a few horizontal layers of a
  few dB; it moves with the probe: a slow hand drift and the breath, sideways and in depth;
- the pleura: a bright line 1-4 px thick at ``pleura_y``, textured by the lung's field;
- below it, in an aerated lung, no anatomy but reverberation: the lung's own speckle field
  (the "sand" of the seashore sign), fading with depth, and A-lines, copies of the pleura at
  2 and 3 times its depth. With sliding the lung's field moves sideways with the breath
  relative to the wall (mm per breath), so the sub-pleural texture decorrelates while the
  wall's stays; without sliding it moves with the wall (the "barcode"); a lung point
  shows the sliding lung during one part of each breath and a static pneumothorax pattern
  (the same reverberations, moving with the wall) during the rest; no contact is a probe in
  air: noise and a static near-field ring-down.

Grey levels: the image in dB goes through a vendor-like grey curve of a random dynamic
range, blur and speckle reduction, 8 bits, and the per-frame compression of a clip (JPEG) or
a video codec (H.264 through PyAV, as MP4 clips are). Every condition is drawn within
:data:`CINE_RANGES`. Pure numpy and scipy but for the codec.
"""

from __future__ import annotations

import io

import numpy as np
from scipy import ndimage

from mmode.ingest.mline import default_mline, sample_mline
from mmode.models.data import draw_uniform
from mmode.models.scanner import grey_curve, jpeg_roundtrip

#: Classes a lung cine is simulated in (model class names).
CINE_CLASSES = ("lung_sliding", "no_sliding", "lung_point", "no_contact")

#: Ranges of the cine conditions (uniform draws unless a list of choices). Frame rate: cine
#: loops of handheld and cart scanners; height: the M-line through a 200-800 px image;
#: depth_cm: the imaged depth of a lung view (sets mm per pixel); pleura_fraction: the
#: pleura anywhere in the upper half (issue 13); speckle sizes: the PSF's standard deviations,
#: axial 0.15-0.4 mm and lateral 0.4-1.2 mm (a 2-5 MHz convex or linear probe);
#: slide_mm: peak-to-peak lateral excursion of a sliding lung per breath (apex to base,
#: 1-15 mm) and shimmer_mm the range of its smaller continuous sideways jitter; boil_mm: the
#: sliding over which the lung's reverberation texture renews itself (it is no rigid pattern:
#: the seashore's "sand" decorrelates faster than a translated speckle would); hand drift of the probe, mm per s; wall_axial_mm: the chest wall's excursion
#: with the breath; sub_pleura_db / a_line_db: the brightness of the lung's texture and of
#: the A-lines relative to the chest wall; dynamic range and curve of the grey map; blank:
#: the share of clips whose line ends in black, and how much of the line: below a convex
#: sector's edge, or below the image of a depth setting shallower than a fixed-size exported
#: frame (a handheld probe's 350 px clip may hold its image in the top half);
#: codec: the share of H.264 (else JPEG) compressed clips.
CINE_RANGES = {
    "frame_rate_hz": [15.0, 60.0],
    "height_px": [200, 800],
    "depth_cm": [6.0, 16.0],
    "pleura_fraction": [0.06, 0.5],
    "breath_per_min": [10.0, 30.0],
    "axial_psf_mm": [0.15, 0.4],
    "lateral_psf_mm": [0.4, 1.2],
    "slide_mm": [1.0, 15.0],
    "shimmer_mm": [0.0, 1.0],
    "boil_mm": [0.3, 3.0],
    "hand_drift_mm_s": [0.0, 1.5],
    "wall_axial_mm": [0.0, 1.5],
    "wall_layers_db": [0.0, 8.0],
    "pleura_db": [4.0, 16.0],
    "sub_pleura_db": [-12.0, 2.0],
    "a_line_db": [-8.0, 4.0],
    "depth_fade_db": [0.0, 45.0],
    "lung_point_share": [0.3, 0.7],
    "dynamic_range_db": [40.0, 70.0],
    "gain_db": [-20.0, 0.0],
    "noise_floor_db": [-50.0, -25.0],
    "curve_low": [0.0, 0.25],
    "curve_high": [0.75, 1.0],
    "curve_gamma": [0.5, 2.0],
    "blur_px": [0.0, 1.5],
    "median_px": [1, 3],
    "blank_fraction": 0.4,
    "blank_bottom": [0.0, 0.6],
    "h264_fraction": 0.5,
    "h264_crf": [18, 35],
    "jpeg_quality": [30, 95],
}

#: Width of the simulated strip around the M-line, pixels (even, for the codec; the default
#: M-line is its centre column).
STRIP_PX = 48


def _speckle_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: tuple[float, float]) -> np.ndarray:
    """A complex speckle field (H, W) complex64: white complex Gaussian scatterers convolved
    with a Gaussian PSF of standard deviations ``sigma_px`` (rows, columns), unit mean power."""
    z = rng.standard_normal(shape).astype(np.float32) + 1j * rng.standard_normal(shape).astype(np.float32)
    f = ndimage.gaussian_filter(z.real, sigma_px) + 1j * ndimage.gaussian_filter(z.imag, sigma_px)
    return (f / np.sqrt(np.mean(np.abs(f) ** 2))).astype(np.complex64)


def _shifted(field: np.ndarray, x0_px: float, width: int, y_shift_px: float = 0.0) -> np.ndarray:
    """Columns ``x0_px .. x0_px + width`` of a complex field (H, Wf), bilinear in x and, by
    ``y_shift_px`` (field content moves down by it), in y; clipped at the field's edges."""
    h, wf = field.shape
    x = x0_px + np.arange(width)
    xi = np.clip(np.floor(x).astype(np.int64), 0, wf - 2)
    fx = np.clip(x - xi, 0.0, 1.0).astype(np.float32)
    cols = field[:, xi] * (1 - fx) + field[:, xi + 1] * fx
    if abs(y_shift_px) < 1e-3:
        return cols
    y = np.arange(h) - y_shift_px
    yi = np.clip(np.floor(y).astype(np.int64), 0, h - 2)
    fy = np.clip(y - yi, 0.0, 1.0).astype(np.float32)[:, None]
    return cols[yi] * (1 - fy) + cols[yi + 1] * fy


def _breath(t_s: np.ndarray, breath_hz: float, phase: float, rng: np.random.Generator) -> np.ndarray:
    """A breathing waveform in 0..1 (0 end-expiration): a raised cosine with a pause at
    end-expiration (inspiration and expiration take 60-100 % of the cycle), (n,)."""
    cyc = (t_s * breath_hz + phase) % 1.0
    active = draw_uniform(rng, [0.6, 1.0])
    x = np.clip(cyc / active, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(2 * np.pi * x)).astype(np.float64)


def lung_cine(label: str, seconds: float, rng: np.random.Generator,
              ranges: dict = CINE_RANGES) -> tuple[np.ndarray, float, dict]:
    """A simulated B-mode cine of a lung strip in class ``label`` (:data:`CINE_CLASSES`).

    Returns (frames (n, H, :data:`STRIP_PX`) uint8, frame rate Hz, the drawn conditions as a
    JSON-safe dict). Row 0 is the skin; ``H`` is drawn within ``height_px``.
    """
    if label not in CINE_CLASSES:
        raise ValueError(f"cine class: expected one of {CINE_CLASSES}, found {label!r}")
    r = ranges
    u = lambda key: draw_uniform(rng, r[key])  # noqa: E731 - one draw per named range
    fps = u("frame_rate_hz")
    height = int(rng.integers(r["height_px"][0], r["height_px"][1] + 1))
    px_per_mm = height / (10.0 * u("depth_cm"))
    cond = {"label": label, "frame_rate_hz": fps, "height_px": height, "px_per_mm": px_per_mm}
    n = max(2, int(seconds * fps))
    t_s = np.arange(n) / fps
    w = STRIP_PX
    sig = (u("axial_psf_mm") * px_per_mm, u("lateral_psf_mm") * px_per_mm)
    breath = _breath(t_s, u("breath_per_min") / 60.0, float(rng.uniform()), rng)
    # probe motion: a slow random-walk drift sideways plus the wall's breath excursion in depth
    drift = np.cumsum(rng.standard_normal(n)) / np.sqrt(max(n, 1))
    drift = ndimage.gaussian_filter1d(drift, max(fps / 2, 1.0)) * u("hand_drift_mm_s") * seconds * px_per_mm
    wall_dy = breath * u("wall_axial_mm") * px_per_mm
    # a sliding lung also shimmers: a smoothed random walk sideways through the whole cycle
    shimmer = ndimage.gaussian_filter1d(np.cumsum(rng.standard_normal(n)), max(fps / 8, 1.0))
    shimmer *= u("shimmer_mm") * px_per_mm / max(float(np.ptp(shimmer)), 1e-6)
    slide = breath * u("slide_mm") * px_per_mm + shimmer - shimmer.min()
    # renewal phase: a quarter turn (a new texture) per boil_mm of sliding, either way
    boil = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(slide)))]) * (np.pi / 2) / (u("boil_mm") * px_per_mm)
    margin = int(np.ceil(np.max(np.abs(drift)) + np.max(slide))) + w + 4
    wall = _speckle_field(rng, (height, margin + w), sig)
    lung = _speckle_field(rng, (height, margin + w), sig)
    lung_b = _speckle_field(rng, (height, margin + w), sig)  # the texture the sliding lung renews into
    air = _speckle_field(rng, (height, margin + w), (sig[0], sig[1] * 3))  # pneumothorax: smooth reverberation
    y = np.arange(height, dtype=np.float32)
    pleura_y = u("pleura_fraction") * height
    # depth profile (dB) of each population; the wall's layers are a smoothed random walk
    layers = ndimage.gaussian_filter1d(rng.standard_normal(height), max(2.0, 1.5 * px_per_mm)).astype(np.float32)
    layers *= u("wall_layers_db") / max(float(np.std(layers)), 1e-6)
    thick = draw_uniform(rng, [0.3, 1.2]) * px_per_mm
    pleura_db, sub_db, a_db = u("pleura_db"), u("sub_pleura_db"), u("a_line_db")
    fade = np.float32(u("depth_fade_db")) * y / height
    above = y < pleura_y
    wall_profile = np.where(above, layers, -80.0).astype(np.float32) - fade
    below_db = sub_db - 12.0 * np.clip((y - pleura_y) / max(height - pleura_y, 1.0), 0, 1)
    a_lines = np.zeros(height, np.float32)
    for k, drop in ((1, 0.0), (2, a_db), (3, a_db - 6.0)):
        a_lines = np.maximum(a_lines, np.float32(10 ** ((pleura_db + drop - 6.0 * (k - 1)) / 20))
                             * np.exp(-0.5 * ((y - k * pleura_y) / max(thick, 0.7)) ** 2).astype(np.float32))
    lung_profile = np.where(~above, below_db, -80.0).astype(np.float32) - fade
    lung_amp = (10 ** (lung_profile / 20))[:, None]
    wall_amp = (10 ** (wall_profile / 20))[:, None]
    a_amp = a_lines[:, None]
    share = u("lung_point_share")
    noise_db = u("noise_floor_db")
    frames_db = np.empty((n, height, w), np.float32)
    x_base = margin / 2
    for i in range(n):
        x_wall = x_base + drift[i]
        wall_c = _shifted(wall, x_wall, w, wall_dy[i])
        if label == "no_contact":
            ring = np.float32(10 ** (draw_uniform(rng, [-20.0, 0.0]) / 20)) * np.exp(-y / (0.05 * height))[:, None]
            img = np.abs(wall_c) * ring + np.float32(10 ** (noise_db / 20)) * np.abs(
                rng.standard_normal((height, w)) + 1j * rng.standard_normal((height, w))).astype(np.float32)
            frames_db[i] = 20 * np.log10(img + 1e-6)
            continue
        sliding = label == "lung_sliding" or (label == "lung_point" and breath[i] > share)
        x_lung = x_wall + (slide[i] if sliding else 0.0)
        if sliding:
            lung_c = (np.cos(boil[i]) * _shifted(lung, x_lung, w, wall_dy[i])
                      + np.sin(boil[i]) * _shifted(lung_b, x_lung, w, wall_dy[i]))
        else:
            lung_c = _shifted(lung if label == "no_sliding" else air, x_wall, w, wall_dy[i])
        img = np.abs(wall_c) * wall_amp + np.abs(lung_c) * (lung_amp + a_amp)
        frames_db[i] = 20 * np.log10(img + 10 ** (noise_db / 20))
    cond.update({"pleura_y_px": float(pleura_y), "psf_px": [float(s) for s in sig], "seconds": float(seconds)})
    return _to_grey(frames_db, fps, rng, r, cond), fps, cond


def _to_grey(frames_db: np.ndarray, fps: float, rng: np.random.Generator, r: dict, cond: dict) -> np.ndarray:
    """Frames in dB (n, H, W) to a scanner's 8-bit frames: the 99.5th percentile at the drawn
    gain (0 dB or below: real clips keep tissue mid-grey), the grey curve, blur, speckle
    reduction, for a share of clips a black band at the bottom, 8 bits, then H.264 or JPEG."""
    dr = draw_uniform(rng, r["dynamic_range_db"])
    top = float(np.percentile(frames_db[:: max(1, len(frames_db) // 8)], 99.5))
    grey = grey_curve(frames_db - top + draw_uniform(rng, r["gain_db"]), dr, draw_uniform(rng, r["curve_low"]), draw_uniform(rng, r["curve_high"]),
                      float(np.exp(rng.uniform(np.log(r["curve_gamma"][0]), np.log(r["curve_gamma"][1])))))
    blur = draw_uniform(rng, r["blur_px"])
    if blur > 0.3:
        grey = ndimage.gaussian_filter(grey, (0, blur, blur))
    med = int(rng.choice(r["median_px"]))
    if med > 1:
        grey = ndimage.median_filter(grey, size=(1, med, med))
    if rng.uniform() < r["blank_fraction"]:
        grey[:, grey.shape[1] - int(draw_uniform(rng, r["blank_bottom"]) * grey.shape[1]):] = 0.0
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    if rng.uniform() < r["h264_fraction"]:
        crf = int(rng.integers(r["h264_crf"][0], r["h264_crf"][1] + 1))
        cond["codec"] = f"h264 crf {crf}"
        return h264_roundtrip(grey, fps, crf)
    q = int(rng.integers(r["jpeg_quality"][0], r["jpeg_quality"][1] + 1))
    cond["codec"] = f"jpeg {q}"
    return np.stack([np.clip(np.round(jpeg_roundtrip(f.T, q).T), 0, 255).astype(np.uint8) for f in grey])


def h264_roundtrip(frames: np.ndarray, fps: float, crf: int) -> np.ndarray:
    """Grey frames (n, H, W) uint8 (H, W even) encoded as H.264 (libx264, yuv420p, ``crf``)
    in an in-memory MP4 at ``fps`` and decoded again with PyAV: (n, H, W) uint8."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=max(1, int(round(fps))))
        stream.width, stream.height = frames.shape[2], frames.shape[1] - frames.shape[1] % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: stream.height]), format="gray")
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    buf.seek(0)
    with av.open(buf) as inp:
        got = [fr.to_ndarray(format="gray") for fr in inp.decode(video=0)]
    dec = np.stack(got)
    if dec.shape[1] < frames.shape[1]:  # an odd height: the last row as it was
        dec = np.concatenate([dec, frames[: len(dec), dec.shape[1]:]], axis=1)
    return dec


def cine_mmode(frames: np.ndarray) -> np.ndarray:
    """The product's default anatomical M-mode of a cine: the vertical line through the
    centre of the frame, top to bottom (:func:`mmode.ingest.mline.default_mline`), sampled
    bilinearly (:func:`mmode.ingest.mline.sample_mline`): (n, H) float32 grey levels."""
    return sample_mline(frames, *default_mline(frames.shape[1:]))
