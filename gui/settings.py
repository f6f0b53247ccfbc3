"""What the user chose in the window, and its persistence in QSettings.

:class:`GuiSettings` is a plain dataclass (processing choices that go to the engine, and
view choices that stay in the window); :func:`load` and :func:`save` move it to and from a
``QSettings`` store, tolerating missing or malformed entries (a corrupt store never stops
the window from opening: the default is used for that key).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from PyQt6.QtCore import QSettings

from mmode.app.motion_modes import MOTION_MODES
from mmode.dsp.processor import DENOISE_METHODS

SWEEP_SPEEDS_MM_S = (25, 50, 100, 200)
#: What the Model box offers: the shipped float32 classifiers, or none. (No int8 here: the
#: registry loads safetensors float32 weights; int8 exists only as an ONNX Runtime export of
#: ``mmode compress``, which the engine does not run.)
MODEL_CHOICES = ("student", "teacher", "classic")
#: The motion traces (``PipelineSettings.motion``): auto, the classic tracker's, the learned one's, both.
MOTION_CHOICES = MOTION_MODES
TGC_DEPTHS_FRACTION = (0.125, 0.375, 0.625, 0.875)  # TGC knob positions, fraction of the depth range
CALIPER_KINDS = ("time", "depth", "slope", "heart_rate", "tapse", "epss", "fs")
#: Range of the gain slider, dB around the level shown as 0 dB (set by *Auto*, full scale or
#: the data): wide enough to bring a float recording levelled on a bright interface up, or a
#: saturated one down, without re-levelling.
GAIN_RANGE_DB = (-40.0, 40.0)


@dataclass
class GuiSettings:
    """Processing (sent to the engine) and view settings of the window.

    gain_db : overall gain around the level shown as 0 dB, dB (:data:`GAIN_RANGE_DB`).
    dynamic_range_db : displayed range, dB (> 0).
    tgc_db : gain added at each of :data:`TGC_DEPTHS_FRACTION`, dB.
    denoise_method / denoise_strength (0..1) : speckle reduction.
    model : one of :data:`MODEL_CHOICES` ("classic" = no network).
    sweep_mm_s : one of :data:`SWEEP_SPEEDS_MM_S`.
    motion_source : one of :data:`MOTION_CHOICES`: the motion traces the pipeline computes
        while ``show_motion_network`` is on (off: "classic"); "auto" runs the learned trace
        up to :data:`mmode.app.motion_modes.NETWORK_AUTO_MAX_RATE_HZ` lines/s, where it keeps a
        live stream within its latency budget (docs/models.md).
    show_classes / show_motion / show_motion_network / show_rate : overlay toggles (the
    classic tracker's trace, the learned network's).
    caliper_kind / n_cycles : the active measurement tool.
    """

    gain_db: float = 0.0
    dynamic_range_db: float = 50.0
    tgc_db: list[float] = field(default_factory=lambda: [0.0] * len(TGC_DEPTHS_FRACTION))
    denoise_method: str = "median_persist"
    denoise_strength: float = 0.5
    model: str = "student"
    sweep_mm_s: int = 50
    show_classes: bool = True
    show_motion: bool = True
    show_motion_network: bool = True
    show_rate: bool = True
    motion_source: str = "auto"
    caliper_kind: str = "time"
    n_cycles: int = 1
    last_file: str = ""
    last_stream: str = "127.0.0.1:7700"
    last_scenario: str = "lung_sliding"


_CHOICES = {
    "denoise_method": DENOISE_METHODS,
    "model": MODEL_CHOICES,
    "motion_source": MOTION_CHOICES,
    "sweep_mm_s": SWEEP_SPEEDS_MM_S,
    "caliper_kind": CALIPER_KINDS,
}
_BOUNDS = {
    "gain_db": GAIN_RANGE_DB,
    "dynamic_range_db": (20.0, 90.0),
    "denoise_strength": (0.0, 1.0),
    "n_cycles": (1, 20),
}


def _coerce(name: str, raw: object, default: object) -> object:
    """``raw`` converted to the type of ``default`` and checked, else ``default``."""
    try:
        if isinstance(default, bool):
            value = raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1")
        elif isinstance(default, list):
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            value = [max(-30.0, min(30.0, float(v))) for v in items]
            if len(value) != len(default):
                return default
        else:
            value = type(default)(raw)
    except (TypeError, ValueError):
        return default
    if name in _CHOICES and value not in _CHOICES[name]:
        return default
    if name in _BOUNDS:
        lo, hi = _BOUNDS[name]
        if not lo <= value <= hi:
            return default
    return value


def load(store: QSettings) -> GuiSettings:
    """Settings from ``store``; missing or malformed keys keep their defaults."""
    s = GuiSettings()
    for f in fields(s):
        if store.contains(f.name):
            setattr(s, f.name, _coerce(f.name, store.value(f.name), getattr(s, f.name)))
    return s


def save(store: QSettings, s: GuiSettings) -> None:
    """Write every field of ``s`` to ``store`` and flush."""
    for name, value in asdict(s).items():
        store.setValue(name, ",".join(str(v) for v in value) if isinstance(value, list) else value)
    store.sync()
