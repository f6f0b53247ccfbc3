"""DICOM ultrasound regions (Sequence of Ultrasound Regions, (0018,6011)) and their calibration.

A region is a box of frame pixels holding one kind of picture (2D, M-mode, spectral Doppler,
a waveform such as the ECG) with its own physical scale. Its attributes are read as stored,
whatever they say (DICOM PS3.3 C.8.5.5, "US Region Calibration Module"): a negative Physical
Delta X, a reference pixel outside the box, non-zero reference values, a box that does not
fit the frame are all kept; a missing or malformed attribute becomes None, never an error.

Pixel ``(x, y)`` of the frame (column, row) has the physical coordinates

    X = reference_value[0] + (x - box_px[0] - reference_px[0]) * delta[0]
    Y = reference_value[1] + (y - box_px[1] - reference_px[1]) * delta[1]

in ``units`` (the reference pixel is relative to the box's top-left corner, C.8.5.5.1.16);
a region without a reference pixel is taken as referenced at its top-left corner, value 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Region Spatial Format (0018,6012) codes, C.8.5.5.1.1; any other code is "other".
SPATIAL_FORMATS = {0: "none", 1: "2d", 2: "m_mode", 3: "spectral", 4: "waveform", 5: "graphics"}
#: Region Data Type (0018,6014) codes, C.8.5.5.1.2.
DATA_TYPES = {
    0: "none", 1: "tissue", 2: "color_flow", 3: "pw_spectral_doppler", 4: "cw_spectral_doppler",
    5: "doppler_mean_trace", 6: "doppler_mode_trace", 7: "doppler_max_trace", 8: "volume_trace",
    9: "volume_rate_trace", 10: "ecg_trace", 11: "pulse_trace", 12: "phonocardiogram_trace", 13: "gray_bar",
    14: "color_bar", 15: "integrated_backscatter", 16: "area_trace", 17: "area_rate_trace",
    18: "other_physiological",
}
#: Physical Units X/Y Direction (0018,6024/6026) codes, C.8.5.5.1.15.
UNITS = {0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "s", 5: "Hz", 6: "dB/s", 7: "cm/s", 8: "cm2",
         9: "cm2/s", 10: "cm3", 11: "cm3/s", 12: "deg"}
#: Metres per cm.
M_PER_CM = 0.01


def _code_name(table: dict[int, str], value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return table.get(value, f"other ({value})")
    return "none" if value is None else f"other ({value!r})"


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions, as stored.

    spatial_format : "none", "2d", "m_mode", "spectral", "waveform", "graphics" or "other (n)".
    data_type : "tissue", "ecg_trace", ... (:data:`DATA_TYPES`), "other (n)" or "none".
    box_px : (x0, y0, x1, y1) inclusive pixel bounds, or None when missing.
    units : (x, y) names from :data:`UNITS` ("none" when missing).
    delta : (Physical Delta X, Physical Delta Y), signed, in ``units`` per pixel (None when missing).
    reference_px : (Reference Pixel X0, Y0) relative to the box, or None.
    reference_value : (Reference Pixel Physical Value X, Y), or None.
    flags : Region Flags (bit 0 priority, 1 scaling protection, 2 Doppler scale type, 3-4
        scrolling), or None.
    """

    spatial_format: str
    data_type: str
    box_px: tuple[int, int, int, int] | None
    units: tuple[str, str]
    delta: tuple[float | None, float | None]
    reference_px: tuple[int, int] | None
    reference_value: tuple[float, float] | None
    flags: int | None

    def to_dict(self) -> dict:
        """JSON-safe dict with the field names above (lists for tuples)."""
        return {
            "spatial_format": self.spatial_format,
            "data_type": self.data_type,
            "box_px": None if self.box_px is None else list(self.box_px),
            "units": list(self.units),
            "delta": list(self.delta),
            "reference_px": None if self.reference_px is None else list(self.reference_px),
            "reference_value": None if self.reference_value is None else list(self.reference_value),
            "flags": self.flags,
        }

    def fits(self, shape: tuple[int, int]) -> bool:
        """Whether the box lies within a frame of ``shape`` (H, W)."""
        if self.box_px is None:
            return False
        x0, y0, x1, y1 = self.box_px
        return 0 <= x0 <= x1 < shape[1] and 0 <= y0 <= y1 < shape[0]

    def contains(self, x: float, y: float) -> bool:
        """Whether frame pixel ``(x, y)`` lies in the box."""
        if self.box_px is None:
            return False
        x0, y0, x1, y1 = self.box_px
        return x0 <= x <= x1 and y0 <= y <= y1

    def calibrated(self, unit_x: str, unit_y: str) -> bool:
        """Whether the region is in ``unit_x`` / ``unit_y`` with finite non-zero deltas and a box."""
        return (self.box_px is not None and self.units == (unit_x, unit_y)
                and all(d is not None and math.isfinite(d) and d != 0 for d in self.delta))

    def physical(self, x: float, y: float) -> tuple[float, float]:
        """Physical coordinates (X, Y) in :attr:`units` of frame pixel ``(x, y)`` (module
        docstring); needs :meth:`calibrated`."""
        ref_x, ref_y = self.reference_px or (0, 0)
        val_x, val_y = self.reference_value or (0.0, 0.0)
        return (val_x + (x - self.box_px[0] - ref_x) * self.delta[0],
                val_y + (y - self.box_px[1] - ref_y) * self.delta[1])


def _int(item: Any, keyword: str) -> int | None:
    try:
        value = item.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:  # pydicom converts the stored bytes on access: damaged ones raise many types
        return None


def _float(item: Any, keyword: str) -> float | None:
    try:
        value = item.get(keyword)
        v = None if value is None or value == "" else float(value)
    except Exception:  # as in _int
        return None
    return v if v is not None and math.isfinite(v) else None


def region_from_item(item: Any) -> UltrasoundRegion:
    """Read one region from a sequence item (a pydicom Dataset, or any mapping-like object
    with ``get(keyword)``), tolerating missing and malformed attributes."""
    box = tuple(_int(item, k) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                        "RegionLocationMaxX1", "RegionLocationMaxY1"))
    ref_px = (_int(item, "ReferencePixelX0"), _int(item, "ReferencePixelY0"))
    ref_value = (_float(item, "ReferencePixelPhysicalValueX"), _float(item, "ReferencePixelPhysicalValueY"))
    return UltrasoundRegion(
        spatial_format=_code_name(SPATIAL_FORMATS, _int(item, "RegionSpatialFormat")),
        data_type=_code_name(DATA_TYPES, _int(item, "RegionDataType")),
        box_px=None if None in box else box,
        units=(_code_name(UNITS, _int(item, "PhysicalUnitsXDirection")),
               _code_name(UNITS, _int(item, "PhysicalUnitsYDirection"))),
        delta=(_float(item, "PhysicalDeltaX"), _float(item, "PhysicalDeltaY")),
        reference_px=None if None in ref_px else ref_px,
        reference_value=None if None in ref_value else ref_value,
        flags=_int(item, "RegionFlags"),
    )


def line_step_m(region: UltrasoundRegion, line: tuple[float, float, float, float]) -> float | None:
    """Physical length in metres of one pixel step along ``line`` (x0, y0, x1, y1, frame
    pixels) in a region scaled in cm on both axes: ``hypot(ux dX, uy dY)`` with ``(ux, uy)``
    the line's unit vector and ``dX``, ``dY`` the deltas in cm. None unless the region is a
    2D region calibrated in cm and both ends of the line lie in its box."""
    x0, y0, x1, y1 = line
    if region.spatial_format != "2d" or not region.calibrated("cm", "cm"):
        return None
    if not (region.contains(x0, y0) and region.contains(x1, y1)):
        return None
    length = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    return math.hypot(ux * region.delta[0], uy * region.delta[1]) * M_PER_CM
