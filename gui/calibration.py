"""The calibration of the image on screen: in which units the calipers may measure, and why.

A DICOM image says per region (Sequence of Ultrasound Regions, :mod:`mmode.ingest.regions`)
what its pixels measure; a caliper measurement is physical only when all its points lie in
one region that has those physical units. A measurement across regions, or in a region
without physical units, would mix scales: a known patient-safety trap of DICOM viewers. So
such a measurement is given in pixels, with a note, never in units it does not have.

What the M-mode plot shows, and its calibration (:func:`caliper_scale`):

- an M-mode region of a DICOM file (X in s, Y in cm; the reader refuses other units):
  calibrated, in the region's units (s, cm, cm/s);
- the anatomical M-mode along the M-line of a cine (DICOM or video): time from the frame
  rate, depth calibrated when one 2D region in cm holds both ends of the line, or with
  ``--px-per-cm`` (the reader decides: ``meta.depth_calibrated``); otherwise the depth is in
  pixels and :func:`mline_note` says why (the ends lie in different regions, in a region
  without physical units, outside every region, or a video has no scale at all);
- RF lines and other recordings: ms, mm, mm/s, in pixels only when their metadata say the
  depth is not calibrated.

Pure functions: no Qt.
"""

from __future__ import annotations

import math
from typing import Sequence

from mmode.gui.measurements import RF_SCALE, CaliperScale
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest.regions import UltrasoundRegion


def points_region(points_px: Sequence[tuple[float, float]], regions: Sequence[UltrasoundRegion],
                  spatial_format: str = "2d", units: tuple[str, str] = ("cm", "cm")) -> tuple[int | None, str]:
    """The first region of ``spatial_format``, calibrated in ``units`` (x, y), that holds every
    point ``(x, y)`` (frame pixels), as ``(index, "")``; else ``(None, why not)`` in words:
    no regions, a point outside every region, the points in different regions, or the region
    that holds them all without those units."""
    points = [(float(x), float(y)) for x, y in points_px]
    for index, region in enumerate(regions):
        if (region.spatial_format == spatial_format and region.calibrated(*units)
                and all(region.contains(x, y) for x, y in points)):
            return index, ""
    if not regions:
        return None, "no calibrated region"
    holders = [{i for i, r in enumerate(regions) if r.contains(x, y)} for x, y in points]
    for (x, y), held_by in zip(points, holders):
        if not held_by:
            return None, f"({x:.0f}, {y:.0f}) px lies outside every region"
    common = set.intersection(*holders)
    if not common:
        names = " and ".join(f"region {min(h)}" for h in holders)
        return None, f"the points lie in different regions ({names})"
    index = min(common)
    region = regions[index]
    if region.units == ("none", "none"):
        what = "no physical units"
    elif region.units != units:
        what = f"units {region.units[0]} x {region.units[1]}, not {units[0]} x {units[1]}"
    elif region.spatial_format != spatial_format:
        what = f"spatial format {region.spatial_format}, not {spatial_format}"
    else:
        what = f"no usable physical deltas ({region.delta[0]}, {region.delta[1]})"
    return None, f"region {index} ({region.spatial_format}) has {what}"


def mline_note(line: Sequence[float], regions: Sequence[UltrasoundRegion]) -> str:
    """Why the depth along the M-line ``(x0, y0, x1, y1)`` (frame pixels) is in pixels: its
    ends are not both in one 2D region calibrated in cm (:func:`points_region`)."""
    x0, y0, x1, y1 = line
    if not regions:
        return "depth in pixels: the file has no scale (give --px-per-cm)"
    _, why = points_region([(x0, y0), (x1, y1)], regions)
    return f"depth in pixels: M-line ends: {why}"


def nominal_m_per_px(meta: AcquisitionMeta) -> float:
    """Metres per sample of ``meta``'s depth axis (``c / (2 fs)``): one image pixel along the
    M-line when the depth is not calibrated."""
    return meta.c_m_s / (2 * meta.fs_hz)


def caliper_scale(meta: AcquisitionMeta, info: dict, regions: Sequence[UltrasoundRegion] = ()) -> CaliperScale:
    """The calibration of the recording on the M-mode plot (module docstring).

    meta : its metadata; info : its ``Recording.info()`` (``mmode_region`` for a DICOM
    M-mode region, ``mline`` for the M-mode of a cine); regions : the cine's regions (for
    the note when the M-line is not calibrated).
    """
    scanner = "mmode_region" in info or "mline" in info
    if meta.depth_calibrated:
        return CaliperScale(image_units=True) if scanner else RF_SCALE
    if "mline" in info:
        note = mline_note(info["mline"]["px"], regions)
    else:
        note = "depth in pixels: the recording's depth is not calibrated"
    return CaliperScale(image_units=scanner, m_per_px=nominal_m_per_px(meta), note=note)


def mline_text(line: Sequence[float], step_m: float | None, note: str) -> str:
    """What the B-mode pane says of the M-line: its ends and length, in cm when ``step_m``
    (metres per pixel along it) is known, else in pixels with ``note``."""
    x0, y0, x1, y1 = line
    length_px = math.hypot(x1 - x0, y1 - y0)
    ends = f"M-line ({x0:.0f}, {y0:.0f}) -> ({x1:.0f}, {y1:.0f}) px"
    if step_m is not None:
        return f"{ends}, {length_px * step_m * 100:.2f} cm"
    return f"{ends}, {length_px:.0f} px ({note})"
