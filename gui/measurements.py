"""M-mode measurements: pure math on caliper points, no Qt.

A caliper point is ``(t_s, depth_m)``: time in seconds on the M-mode time axis and depth in
metres (depth increases away from the probe). Every function returns a
:class:`Measurement` whose value carries its unit; presets also carry their usual normal
range and say whether the value lies inside it.

Units follow the calibration of the image (:class:`CaliperScale`, from
:mod:`mmode.gui.calibration`; :func:`measure` applies it): RF lines in ms, mm and mm/s;
scanner images (DICOM, video) in the units of a DICOM region, s, cm and cm/s (TAPSE and
EPSS stay in mm, the unit of their normal ranges); an image whose depth is not calibrated
(a video without a scale, an M-line that leaves the calibrated region) gives lengths and
slopes in pixels, px and px/s, with a note that says why, never in cm it does not have.

Normal ranges (adult, transthoracic; see docs/gui.md for the references):

- TAPSE (tricuspid annular plane systolic excursion): >= 17 mm
  (Lang et al., J Am Soc Echocardiogr 2015;28:1-39; Rudski et al., JASE 2010;23:685-713).
- EPSS (E-point septal separation): <= 7 mm (McKaigney et al., Am J Emerg Med 2014;32:493-7;
  Massie et al., Am J Cardiol 1977;39:1008-16).
- FS (fractional shortening of the left ventricle): 25-43 % for men, 27-45 % for women
  (Lang et al. 2015); the combined range 25-45 % is used here.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from mmode.errors import DataError, describe

Point = tuple[float, float]  # (t_s, depth_m)


@dataclass(frozen=True)
class NormalRange:
    """Usual normal range of a preset, in the unit of its measurement; ``None`` = unbounded."""

    low: float | None
    high: float | None
    source: str

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def text(self, unit: str) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g}-{self.high:g} {unit}"
        if self.low is not None:
            return f">= {self.low:g} {unit}"
        return f"<= {self.high:g} {unit}"


TAPSE_NORMAL = NormalRange(17.0, None, "Lang et al., JASE 2015; Rudski et al., JASE 2010")
EPSS_NORMAL = NormalRange(None, 7.0, "McKaigney et al., Am J Emerg Med 2014; Massie et al., Am J Cardiol 1977")
FS_NORMAL = NormalRange(25.0, 45.0, "Lang et al., JASE 2015 (men 25-43 %, women 27-45 %)")

#: Measurement kinds, in the order the GUI offers them; value = number of caliper points.
KIND_POINTS = {
    "time": 2,
    "depth": 2,
    "slope": 2,
    "heart_rate": 2,
    "tapse": 2,
    "epss": 2,
    "fs": 4,
}


@dataclass(frozen=True)
class CaliperScale:
    """How caliper points ``(t_s, depth_m)`` become values: the calibration of the image.

    image_units : time in s, depth in cm, slopes in cm/s (the units of DICOM regions, for
        scanner images); False: ms, mm and mm/s (RF lines).
    m_per_px : None when the depth is calibrated; else the metres per image pixel of the
        plot's nominal depth axis: lengths are given in pixels, ``depth_m / m_per_px``.
    note : why lengths are in pixels, shown with every measurement given in pixels.
    """

    image_units: bool = False
    m_per_px: float | None = None
    note: str = ""

    @property
    def depth_calibrated(self) -> bool:
        return self.m_per_px is None

    def depth_px(self, depth_m: float) -> float:
        """A point's depth in image pixels (needs ``m_per_px``)."""
        return depth_m / self.m_per_px

    def depth_text(self, depth_m: float) -> str:
        """A depth for the status texts: ``"34.0 mm"``, or ``"340 px"`` when not calibrated."""
        return f"{depth_m * 1e3:.1f} mm" if self.depth_calibrated else f"{self.depth_px(depth_m):.0f} px"


#: Lines of RF recordings: ms, mm, mm/s.
RF_SCALE = CaliperScale()


@dataclass(frozen=True)
class Measurement:
    """One measurement: ``value`` in ``unit``, from caliper ``points`` [(t_s, depth_m), ...].

    ``normal`` is the preset's normal range (``None`` for plain calipers and for values in
    pixels); ``extra`` holds intermediate values (e.g. LVIDd and LVIDs in mm, or px, for FS,
    n cycles for heart rate). ``scale`` is the calibration the value was computed with;
    ``note`` says why a value is in pixels ("" otherwise).
    """

    kind: str
    name: str
    value: float
    unit: str
    points: tuple[Point, ...]
    normal: NormalRange | None = None
    extra: dict[str, float] = field(default_factory=dict)
    scale: CaliperScale = RF_SCALE
    note: str = ""

    @property
    def in_range(self) -> bool | None:
        """True/False against the normal range, None when there is no range."""
        return None if self.normal is None else self.normal.contains(self.value)

    def value_text(self) -> str:
        """The value with its unit, e.g. ``"21.0 mm"``."""
        return f"{self.value:.{_decimals(self.unit)}f} {self.unit}"

    def text(self) -> str:
        """Short label such as ``"TAPSE 21.0 mm (normal >= 17 mm)"``, or with the note of a
        value in pixels, ``"Depth 212 px [depth in pixels: ...]"``."""
        s = f"{self.name} {self.value_text()}"
        if self.normal is not None:
            flag = "normal" if self.in_range else "outside normal"
            s += f" ({flag} {self.normal.text(self.unit)})"
        if self.note:
            s += f" [{self.note}]"
        return s


def _decimals(unit: str) -> int:
    return {"s": 3, "ms": 0, "mm": 1, "mm/s": 1, "cm/s": 1, "bpm": 0, "%": 1, "px": 0, "px/s": 0}.get(unit, 2)


def _check(points: Sequence[Point], n: int, what: str) -> tuple[Point, ...]:
    if len(points) != n:
        raise DataError(describe(what, f"{n} caliper points", len(points)))
    out = []
    for t_s, depth_m in points:
        t, z = float(t_s), float(depth_m)
        if not (math.isfinite(t) and math.isfinite(z)):
            raise DataError(describe(what, "finite caliper coordinates", (t_s, depth_m)))
        out.append((t, z))
    return tuple(out)


def time_interval(p1: Point, p2: Point) -> Measurement:
    """Time between two points in ms (absolute)."""
    pts = _check((p1, p2), 2, "time caliper")
    return Measurement("time", "Time", abs(pts[1][0] - pts[0][0]) * 1e3, "ms", pts)


def depth_distance(p1: Point, p2: Point) -> Measurement:
    """Axial distance between two points in mm (absolute)."""
    pts = _check((p1, p2), 2, "depth caliper")
    return Measurement("depth", "Depth", abs(pts[1][1] - pts[0][1]) * 1e3, "mm", pts)


def slope(p1: Point, p2: Point) -> Measurement:
    """Axial velocity between two points in mm/s, signed: positive = moving away from the probe.

    Raises DataError when both points are at the same time.
    """
    pts = _check((p1, p2), 2, "slope caliper")
    dt_s = pts[1][0] - pts[0][0]
    if dt_s == 0:
        raise DataError(describe("slope caliper", "two points at different times", "equal times"))
    return Measurement("slope", "Slope", (pts[1][1] - pts[0][1]) / dt_s * 1e3, "mm/s", pts)


def heart_rate(p1: Point, p2: Point, n_cycles: int = 1) -> Measurement:
    """Heart (or breathing) rate in beats per minute from ``n_cycles`` cycles between two points."""
    pts = _check((p1, p2), 2, "heart-rate caliper")
    if int(n_cycles) != n_cycles or n_cycles < 1:
        raise DataError(describe("heart-rate caliper", "n_cycles a whole number >= 1", n_cycles))
    dt_s = abs(pts[1][0] - pts[0][0])
    if dt_s == 0:
        raise DataError(describe("heart-rate caliper", "two points at different times", "equal times"))
    return Measurement("heart_rate", f"HR ({int(n_cycles)} cycles)", 60.0 * n_cycles / dt_s, "bpm", pts,
                       extra={"n_cycles": float(n_cycles), "interval_ms": dt_s * 1e3})


def tapse(p1: Point, p2: Point) -> Measurement:
    """TAPSE: axial excursion of the tricuspid annulus in mm, end-diastole to peak systole."""
    pts = _check((p1, p2), 2, "TAPSE caliper")
    return Measurement("tapse", "TAPSE", abs(pts[1][1] - pts[0][1]) * 1e3, "mm", pts, TAPSE_NORMAL)


def epss(p1: Point, p2: Point) -> Measurement:
    """EPSS: distance from the mitral E point to the septum in mm."""
    pts = _check((p1, p2), 2, "EPSS caliper")
    return Measurement("epss", "EPSS", abs(pts[1][1] - pts[0][1]) * 1e3, "mm", pts, EPSS_NORMAL)


def fractional_shortening(lvidd: tuple[Point, Point], lvids: tuple[Point, Point]) -> Measurement:
    """FS = (LVIDd - LVIDs) / LVIDd in %, from two depth calipers (diastole, then systole)."""
    pts = _check(tuple(lvidd) + tuple(lvids), 4, "FS calipers")
    d_mm = abs(pts[1][1] - pts[0][1]) * 1e3
    s_mm = abs(pts[3][1] - pts[2][1]) * 1e3
    if d_mm == 0:
        raise DataError(describe("FS calipers", "LVIDd > 0", "0 mm"))
    fs = (d_mm - s_mm) / d_mm * 100.0
    return Measurement("fs", "FS", fs, "%", pts, FS_NORMAL, extra={"lvidd_mm": d_mm, "lvids_mm": s_mm})


def measure(kind: str, points: Sequence[Point], n_cycles: int = 1, scale: CaliperScale = RF_SCALE) -> Measurement:
    """Dispatch on ``kind`` (a key of :data:`KIND_POINTS`) with its number of points, in the
    units of ``scale`` (:func:`in_scale`)."""
    if kind not in KIND_POINTS:
        raise DataError(describe("measurement", f"kind one of {tuple(KIND_POINTS)}", repr(kind)))
    pts = _check(points, KIND_POINTS[kind], f"{kind} calipers")
    if kind == "time":
        m = time_interval(*pts)
    elif kind == "depth":
        m = depth_distance(*pts)
    elif kind == "slope":
        m = slope(*pts)
    elif kind == "heart_rate":
        m = heart_rate(*pts, n_cycles=n_cycles)
    elif kind == "tapse":
        m = tapse(*pts)
    elif kind == "epss":
        m = epss(*pts)
    else:
        m = fractional_shortening(pts[:2], pts[2:])
    return in_scale(m, scale)


#: Kinds whose value is a length along depth (or a length per time).
LENGTH_KINDS = ("depth", "slope", "tapse", "epss")
#: RF unit -> (unit of DICOM regions, factor), for the plain calipers on scanner images.
IMAGE_UNITS = {"ms": ("s", 1e-3), "mm": ("cm", 0.1), "mm/s": ("cm/s", 0.1)}


def in_scale(m: Measurement, scale: CaliperScale) -> Measurement:
    """``m`` (computed in ms, mm, mm/s from points in seconds and metres) in the units of
    ``scale``: without a depth calibration, lengths in px and slopes in px/s, with the
    scale's note and no normal range (FS, a ratio of two lengths along one line, keeps its
    value; its LVIDd and LVIDs become px); with ``image_units``, the plain time, depth and
    slope calipers in s, cm, cm/s. Time and heart rate need no depth calibration."""
    if not scale.depth_calibrated and m.kind in LENGTH_KINDS:
        mm_per_px = scale.m_per_px * 1e3
        return replace(m, value=m.value / mm_per_px, unit="px/s" if m.kind == "slope" else "px", normal=None,
                       scale=scale, note=scale.note)
    if not scale.depth_calibrated and m.kind == "fs":
        mm_per_px = scale.m_per_px * 1e3
        extra = {"lvidd_px": m.extra["lvidd_mm"] / mm_per_px, "lvids_px": m.extra["lvids_mm"] / mm_per_px}
        return replace(m, extra=extra, scale=scale)
    if scale.image_units and m.kind in ("time", "depth", "slope"):
        unit, factor = IMAGE_UNITS[m.unit]
        return replace(m, value=m.value * factor, unit=unit, scale=scale)
    return replace(m, scale=scale)


CSV_COLUMNS = ("name", "kind", "value", "unit", "normal_low", "normal_high", "in_range", "points_t_s",
               "points_depth_mm", "normal_source", "points_depth_px", "note")


def to_csv(measurements: Iterable[Measurement]) -> str:
    """CSV text, one row per measurement, header :data:`CSV_COLUMNS`; points joined by ';'.
    The points' depths are in ``points_depth_mm`` on a calibrated depth, else in
    ``points_depth_px`` (the other column empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for m in measurements:
        n = m.normal
        w.writerow([
            m.name, m.kind, f"{m.value:.6g}", m.unit,
            "" if n is None or n.low is None else f"{n.low:g}",
            "" if n is None or n.high is None else f"{n.high:g}",
            "" if m.in_range is None else str(m.in_range).lower(),
            ";".join(f"{t:.6f}" for t, _ in m.points),
            ";".join(f"{z * 1e3:.4f}" for _, z in m.points) if m.scale.depth_calibrated else "",
            "" if n is None else n.source,
            "" if m.scale.depth_calibrated else ";".join(f"{m.scale.depth_px(z):.2f}" for _, z in m.points),
            m.note,
        ])
    return buf.getvalue()


def to_dict(m: Measurement) -> dict:
    """JSON-safe dict of one measurement (for the JSON report); points as ``{t_s, depth_m}``,
    or ``{t_s, depth_px}`` on an uncalibrated depth, and the ``note`` when there is one."""
    if m.scale.depth_calibrated:
        points = [{"t_s": t, "depth_m": z} for t, z in m.points]
    else:
        points = [{"t_s": t, "depth_px": m.scale.depth_px(z)} for t, z in m.points]
    d = {
        "name": m.name,
        "kind": m.kind,
        "value": m.value,
        "unit": m.unit,
        "points": points,
    }
    if m.note:
        d["note"] = m.note
    if m.normal is not None:
        d["normal"] = {"low": m.normal.low, "high": m.normal.high, "source": m.normal.source}
        d["in_range"] = m.in_range
    if m.extra:
        d["extra"] = dict(m.extra)
    return d
