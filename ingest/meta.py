"""Acquisition metadata, blocks of lines and ground truth: the data contract of every stage.

Conventions (docs/ARCHITECTURE.md): slow time (line index) is axis 0, fast time (depth) is
axis 1, arrays are C-contiguous. The depth of stored sample ``k`` is
``c_m_s * (t0_s + k / fs_hz) / 2``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from mmode.errors import DataError, describe

KINDS = ("rf", "iq", "envelope")
#: What the stored amplitudes are: "linear" (echo amplitude, log-compressed by the display)
#: or "grey" (display grey levels 0..255 of a scanner image, already log-compressed: the
#: display maps them linearly to dB, :func:`mmode.dsp.levels.grey_db`). "grey" is an envelope.
AMPLITUDES = ("linear", "grey")

#: The class taxonomy (DESIGN section 4), in the order every model and file uses.
CLASSES = (
    "lung_sliding",
    "no_sliding",
    "lung_point",
    "sinusoid",
    "cardiac_regular",
    "cardiac_irregular",
    "no_contact",
)
#: Classes whose motion is breathing: a rate of their trace is a breathing rate.
BREATHING_CLASSES = ("lung_sliding", "no_sliding", "lung_point", "sinusoid")
#: Classes whose motion is the heartbeat: a rate of their trace is a heart rate.
CARDIAC_CLASSES = ("cardiac_regular", "cardiac_irregular")

SPEED_OF_SOUND_M_S = 1540.0


def _finite_positive(name: str, value: float, source: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(describe(source, f"{name} a number", repr(value))) from None
    if not math.isfinite(v) or v <= 0:
        raise DataError(describe(source, f"{name} > 0 and finite", v))
    return v


@dataclass(frozen=True)
class AcquisitionMeta:
    """Immutable description of one acquisition; travels with the data.

    Attributes
    ----------
    kind : "rf" (real radio-frequency samples), "iq" (complex baseband, demodulated at
        ``f0_hz``) or "envelope" (detected amplitude, linear scale).
    fs_hz : rate of the stored samples along depth (Hz). For IQ, the complex sample rate.
    f0_hz : centre (rf) or demodulation (iq) frequency in Hz; 0 allowed for "envelope".
    prf_hz : lines per second (pulse repetition frequency of this scan line).
    c_m_s : speed of sound in m/s.
    t0_s : time of the first stored sample after the transmit, in seconds.
    probe, description : free text.
    amplitude : one of :data:`AMPLITUDES`; "grey" only with kind "envelope".
    depth_calibrated : False when the stored samples are image pixels of unknown size (a
        video without a scale): one sample per pixel, and ``fs_hz``/``t0_s`` give a nominal
        depth that is not a physical one; reports give depths in pixels then.
    """

    kind: str
    fs_hz: float
    f0_hz: float
    prf_hz: float
    c_m_s: float = SPEED_OF_SOUND_M_S
    t0_s: float = 0.0
    probe: str | None = None
    description: str | None = None
    amplitude: str = "linear"
    depth_calibrated: bool = True
    source: str = field(default="metadata", compare=False, repr=False)

    def __post_init__(self) -> None:
        src = self.source
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise DataError(describe(src, f"kind one of {KINDS}", repr(self.kind)))
        for name in ("fs_hz", "prf_hz", "c_m_s"):
            object.__setattr__(self, name, _finite_positive(name, getattr(self, name), src))
        try:
            f0 = float(self.f0_hz)
            t0 = float(self.t0_s)
        except (TypeError, ValueError):
            raise DataError(describe(src, "f0_hz and t0_s numbers", (self.f0_hz, self.t0_s))) from None
        if not math.isfinite(f0) or f0 < 0:
            raise DataError(describe(src, "f0_hz >= 0 and finite", f0))
        if self.kind in ("rf", "iq") and f0 == 0:
            raise DataError(describe(src, f"f0_hz > 0 for kind {self.kind!r}", f0))
        if self.kind == "rf" and f0 >= self.fs_hz / 2:
            raise DataError(
                describe(src, f"f0_hz below fs_hz/2 = {self.fs_hz / 2:g} Hz for rf", f"{f0:g} Hz")
            )
        if not math.isfinite(t0) or t0 < 0:
            raise DataError(describe(src, "t0_s >= 0 and finite", t0))
        object.__setattr__(self, "f0_hz", f0)
        object.__setattr__(self, "t0_s", t0)
        if self.amplitude not in AMPLITUDES:
            raise DataError(describe(src, f"amplitude one of {AMPLITUDES}", repr(self.amplitude)))
        if self.amplitude == "grey" and self.kind != "envelope":
            raise DataError(describe(src, "kind 'envelope' for grey-level amplitudes", repr(self.kind)))
        if not isinstance(self.depth_calibrated, (bool, np.bool_)):
            raise DataError(describe(src, "depth_calibrated true or false", repr(self.depth_calibrated)))
        object.__setattr__(self, "depth_calibrated", bool(self.depth_calibrated))
        for name in ("probe", "description"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                object.__setattr__(self, name, str(v))

    # -- depth axis -------------------------------------------------------------------------
    def depth_m(self, sample_index: float | np.ndarray) -> float | np.ndarray:
        """Depth in metres of (possibly fractional) stored sample index/indices."""
        return self.c_m_s * (self.t0_s + np.asarray(sample_index, dtype=np.float64) / self.fs_hz) / 2

    def depth_axis_m(self, n_samples: int) -> np.ndarray:
        """Depths in metres of samples ``0 .. n_samples-1``, shape (n_samples,), float64."""
        return self.depth_m(np.arange(n_samples))

    def sample_at_depth(self, depth_m: float | np.ndarray) -> float | np.ndarray:
        """Fractional sample index of a depth in metres (inverse of :meth:`depth_m`)."""
        return (2 * np.asarray(depth_m, dtype=np.float64) / self.c_m_s - self.t0_s) * self.fs_hz

    @property
    def sample_spacing_m(self) -> float:
        """Axial distance between two stored samples, metres."""
        return self.c_m_s / (2 * self.fs_hz)

    @property
    def nyquist_velocity_m_s(self) -> float:
        """Largest axial velocity phase (Kasai) estimation measures unaliased: c*PRF/(4*f0)."""
        if self.f0_hz <= 0:
            return math.inf
        return self.c_m_s * self.prf_hz / (4 * self.f0_hz)

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the contract fields (optional ones only when set, ``amplitude`` and
        ``depth_calibrated`` only when not "linear" / True); JSON-safe."""
        d = asdict(self)
        d.pop("source")
        if d["amplitude"] == "linear":
            d.pop("amplitude")
        if d["depth_calibrated"]:
            d.pop("depth_calibrated")
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_mapping(cls, attrs: Mapping[str, Any], source: str = "metadata") -> "AcquisitionMeta":
        """Build from a mapping (HDF5 attributes, JSON sidecar); errors name ``source``."""
        missing = [k for k in ("kind", "fs_hz", "f0_hz", "prf_hz") if k not in attrs]
        if missing:
            raise DataError(describe(source, "attributes kind, fs_hz, f0_hz, prf_hz", f"{missing} missing"))

        def text(v: Any) -> Any:
            if isinstance(v, bytes):
                return v.decode("utf-8", errors="replace")
            if isinstance(v, np.ndarray) and v.shape == ():
                return v.item()
            if isinstance(v, np.generic):
                return v.item()
            return v

        kw: dict[str, Any] = {k: text(attrs[k]) for k in ("kind", "fs_hz", "f0_hz", "prf_hz")}
        for k in ("c_m_s", "t0_s", "probe", "description", "amplitude", "depth_calibrated"):
            if k in attrs and attrs[k] is not None:
                kw[k] = text(attrs[k])
        return cls(**kw, source=source)

    def replace(self, **changes: Any) -> "AcquisitionMeta":
        """A copy with some fields changed (validated again)."""
        d = asdict(self)
        d.update(changes)
        return AcquisitionMeta(**d)


@dataclass(frozen=True)
class LineBlock:
    """A block of consecutive lines from one source.

    seq : sequence number of the first line (0 for the first line of an acquisition).
    t_s : acquisition time of the first line in seconds (source clock).
    lines : (n_lines, n_samples) array; int16/float32 for rf/envelope, complex64 for iq.
    """

    seq: int
    t_s: float
    lines: np.ndarray

    @property
    def n_lines(self) -> int:
        return int(self.lines.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.lines.shape[1])


@dataclass(frozen=True)
class Truth:
    """Simulator ground truth for a recording of ``n_lines`` lines.

    labels : (n_lines,) int, index into ``classes``.
    classes : class names (normally :data:`CLASSES`).
    depths_m : (n_depths,) depths at which displacement is given, metres, strictly
        increasing but not necessarily uniform (the simulator adds the depths of the
        interfaces to a 1 mm grid); read by linear interpolation between them.
    displacement_m : (n_lines, n_depths) float, axial displacement in metres relative to
        the first line (positive = away from the probe) of the tissue found at
        ``depths_m`` in the first line (Lagrangian).
    """

    labels: np.ndarray
    classes: tuple[str, ...]
    depths_m: np.ndarray
    displacement_m: np.ndarray


def check_lines(lines: np.ndarray, meta: AcquisitionMeta, source: str) -> None:
    """Raise :class:`DataError` unless ``lines`` is a finite 2-D array of the kind's dtype."""
    if not isinstance(lines, np.ndarray) or lines.ndim != 2:
        raise DataError(describe(source, "lines of shape (n_lines, n_samples)", getattr(lines, "shape", type(lines))))
    if lines.shape[1] == 0:
        raise DataError(describe(source, "n_samples > 0", lines.shape))
    ok = lines.dtype.kind == "c" if meta.kind == "iq" else lines.dtype.kind in "iuf"
    if not ok:
        want = "complex samples" if meta.kind == "iq" else "integer or float samples"
        raise DataError(describe(source, f"{want} for kind {meta.kind!r}", lines.dtype))
    if lines.dtype.kind in "fc" and lines.size and not np.isfinite(lines).all():
        bad = int(np.flatnonzero(~np.isfinite(lines).all(axis=1))[0])
        raise DataError(describe(source, "finite samples", f"NaN or Inf in line {bad}"))
