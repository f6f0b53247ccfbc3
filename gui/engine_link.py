"""The window's link to the engine: sources, settings and results (no Qt calls here).

- :class:`SourceSpec` names what to open; :func:`make_engine` builds the source and the
  :class:`mmode.app.engine.Engine` for it (the default engine factory of the window).
- :func:`pipeline_settings` turns the window's :class:`~mmode.gui.settings.GuiSettings` (and
  the tracking gate, and a kept display level) into the engine's ``PipelineSettings``.
- :class:`ResultsReader` turns each ``Results`` into per-line arrays for the display ring
  (class label and confidence per line, tracked tissue depth and its quality per line) and
  keeps the latest class for the header, the latest display level and motion state.
- :func:`level_text` and :func:`motion_text`: what the window says about them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from mmode.errors import DataError, describe
from mmode.gui.cine import CineMmode, CineSource
from mmode.gui.measurements import RF_SCALE, CaliperScale
from mmode.gui.playback import UNPACED_SPEED, Playback
from mmode.gui.settings import TGC_DEPTHS_FRACTION, GuiSettings
from mmode.ingest.igtl import DEFAULT_PORT as DEFAULT_IGTL_PORT
from mmode.ingest.stream import DEFAULT_PORT as DEFAULT_STREAM_PORT

#: Backlog (s of lines) a file may build up before the engine skips to the newest lines.
FILE_BACKLOG_S = 2.0
#: Niceness of the engine's threads under the window: on two cores the drawing thread would
#: otherwise wait for the CPU behind processing (frame time p95 about 1.5 ms longer at 2 kHz).
ENGINE_NICE = 10


@dataclass(frozen=True)
class SourceSpec:
    """What to open. kind: "file" (value = path), "stream" (value = "HOST:PORT", or
    "igtl://HOST:PORT" for OpenIGTLink), "sim" (value = scenario name).
    speed : file playback speed; start_line : first file line; prf_hz : simulator line rate.
    mline, px_per_cm : the M-line (x0, y0, x1, y1 frame pixels; None: the default line) and
    the pixel size of a DICOM cine or video file. cine : the M-mode of such a file along
    ``mline`` in memory (:class:`mmode.gui.cine.CineMmode`; the window sets it), played
    instead of reading the file again."""

    kind: str
    value: str
    speed: float = 1.0
    start_line: int = 0
    prf_hz: float = 1000.0
    mline: tuple[float, float, float, float] | None = None
    px_per_cm: float | None = None
    cine: CineMmode | None = field(default=None, compare=False, repr=False)

    def title(self) -> str:
        return {"file": "File", "stream": "Stream", "sim": "Simulator"}.get(self.kind, self.kind) + f": {self.value}"

    def file_options(self) -> dict:
        """The :func:`~mmode.ingest.files.open_recording` options of a cine file (none unset)."""
        return {k: v for k, v in (("mline", self.mline), ("px_per_cm", self.px_per_cm)) if v is not None}


def make_source(spec: SourceSpec):
    """The :mod:`mmode.ingest.sources` source for ``spec`` (not opened); a file or a cine's
    M-mode comes inside a :class:`~mmode.gui.playback.Playback` (pause, speed)."""
    from mmode.ingest import sources

    if spec.kind == "file" and spec.cine is not None:
        return Playback(CineSource(spec.cine, speed=None, start_line=spec.start_line), spec.speed)
    if spec.kind == "file":
        return Playback(sources.FileSource(spec.value, speed=UNPACED_SPEED, loop=False, start_line=spec.start_line,
                                           options=spec.file_options()), spec.speed)
    if spec.kind == "sim":
        from mmode.ingest.scenarios import SCENARIOS

        if spec.value not in SCENARIOS:
            raise DataError(describe("--sim", f"a scenario in {tuple(SCENARIOS)}", repr(spec.value)))
        return sources.SimSource(spec.value, prf_hz=spec.prf_hz)
    if spec.kind == "stream":
        text = spec.value.strip()
        if text.startswith("igtl://"):
            return sources.IgtlSource(*sources.parse_host_port(text[len("igtl://"):], DEFAULT_IGTL_PORT))
        return sources.TcpSource(*sources.parse_host_port(text, DEFAULT_STREAM_PORT))
    raise DataError(describe("source", "kind file, stream or sim", repr(spec.kind)))


def make_engine(spec: SourceSpec, settings, pipeline=None):
    """Default engine factory: the real :class:`mmode.app.engine.Engine` on ``spec``'s source.

    pipeline : the pipeline of an engine that has stopped (a seek, a replay of the same
    source), reused with ``settings``: no model reload, its kernels compiled; the engine
    prepares it afresh (a new timeline: the classifier window and the echo choice restart).
    Runs in a worker thread (building a pipeline imports torch and loads weights).
    """
    from mmode.app.engine import Engine

    if pipeline is not None:
        pipeline.update_settings(replace(settings, realtime=True))
    if spec.kind == "file":
        # review wants every line of a file: allow a longer backlog before skipping to the newest
        return Engine(make_source(spec), settings, pipeline=pipeline, ring_seconds=FILE_BACKLOG_S * 2,
                      max_latency_s=FILE_BACKLOG_S, worker_nice=ENGINE_NICE)
    return Engine(make_source(spec), settings, pipeline=pipeline, worker_nice=ENGINE_NICE)


def classifier_name(choice: str, shipped: list[str] | None = None) -> str | None:
    """The shipped classifier for a model choice ("student", "teacher", "classic").

    "classic" and a choice with no shipped weights give None (classic processing only, no
    classification). shipped : the registry's model names (default: ``mmode.models.registry``).
    """
    if choice == "classic":
        return None
    if shipped is None:
        from mmode.models.registry import model_names

        shipped = model_names()
    classifiers = [n for n in shipped if n.startswith("classifier")]
    if choice == "student":
        ranked = [n for n in classifiers if "student" in n]
    elif choice == "teacher":
        ranked = [n for n in classifiers if "teacher" in n]
    else:
        raise DataError(describe("model", "student, teacher or classic", repr(choice)))
    return min(ranked, key=len) if ranked else None


def pipeline_settings(s: GuiSettings, depth_range_m: tuple[float, float] | None = None,
                      track_depth_m: float | None = None, reference_db: float | None = None):
    """``PipelineSettings`` for the window's choices.

    TGC knobs sit at :data:`~mmode.gui.settings.TGC_DEPTHS_FRACTION` of ``depth_range_m``
    (no TGC until the depth range is known). The model choice goes to the pipeline's
    ``model`` field as a shipped model name (None when that model is not shipped).
    track_depth_m : the tracking gate the user placed, m (None: the tracker chooses).
    reference_db : a display level to keep (the processor's ``reference_db``; None: set by
    the processing, from full scale or the data).
    """
    from mmode.app.pipeline import PipelineSettings
    from mmode.dsp.processor import ProcessorSettings

    tgc: tuple[tuple[float, float], ...] = ()
    if depth_range_m is not None and any(g != 0 for g in s.tgc_db):
        z0, z1 = depth_range_m
        tgc = tuple((z0 + f * (z1 - z0), float(g)) for f, g in zip(TGC_DEPTHS_FRACTION, s.tgc_db))
    proc = ProcessorSettings(
        gain_db=s.gain_db,
        dynamic_range_db=s.dynamic_range_db,
        tgc=tgc,
        denoise=s.denoise_method,
        denoise_strength=s.denoise_strength,
        reference_db=reference_db,
    )
    return PipelineSettings(processor=proc, track_depth_m=track_depth_m, model=classifier_name(s.model),
                            motion=s.motion_source if s.show_motion_network else "classic")


def _field(obj, name: str, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _windows(c) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(start times (k,) or None, end times (k,), probabilities (k, n_classes)) of a
    classification, or (None, None, None).

    Accepts a sequence of window results (``t_start_s``, ``t_end_s``, ``probs``; see
    :class:`mmode.models.inference.WindowResult`) or one object with ``t_s`` (end times) and
    ``probs``.
    """
    if c is None:
        return None, None, None
    if isinstance(c, (list, tuple)):
        if not c:
            return None, None, None
        start = np.array([float(_field(w, "t_start_s")) for w in c])
        end = np.array([float(_field(w, "t_end_s")) for w in c])
        return start, end, np.stack([np.asarray(_field(w, "probs"), np.float64) for w in c])
    probs = np.asarray(_field(c, "probs"), np.float64)
    if probs.ndim == 1:
        probs = probs[None, :]
    t = _field(c, "t_s")
    t = np.asarray(t, np.float64).reshape(-1) if t is not None else np.zeros(len(probs))
    return None, t, probs


def _motion_track(m) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(t_s (k,), tracked echo depth (k,) m, quality (k,) 0..1) of a MotionBlock, or None when
    it has no trace. A block without ``quality`` counts as fully certain."""
    if m is None:
        return None
    mt = np.asarray(_field(m, "t_s"), np.float64).reshape(-1)
    disp = np.asarray(_field(m, "displacement_m"), np.float64)
    if disp.ndim == 2:  # several depths: follow the first
        disp = disp[:, 0]
    depth = _field(m, "depth_m")
    depth0 = float(np.asarray(depth, np.float64).reshape(-1)[0]) if depth is not None else float("nan")
    if not mt.size or disp.shape[0] != mt.shape[0] or not math.isfinite(depth0):
        return None
    quality = _field(m, "quality")
    quality = np.ones_like(mt) if quality is None else np.asarray(quality, np.float64).reshape(-1)
    if quality.shape != mt.shape:
        return None
    return mt, depth0 + disp, quality


class ResultsReader:
    """Per-line overlay arrays from a stream of ``Results``; remembers the latest class.

    Attributes after each :meth:`read`: ``label`` (int, -1 = none), ``confidence`` (0..1 or
    NaN), ``classes`` (names, when the classification carries them), ``level`` (the latest
    ``Results.level``, a :class:`~mmode.dsp.levels.LevelReference`, or None) and
    ``motion_state`` (the latest non-empty ``Results.motion_state``, or {}).
    """

    def __init__(self) -> None:
        self.label = -1
        self.confidence = float("nan")
        self.classes: tuple[str, ...] | None = None
        self.level = None
        self.motion_state: dict = {}
        self.late_track: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.net_track: tuple[np.ndarray, np.ndarray] | None = None
        self.net_ms = float("nan")
        self.relabel: list[tuple[float, float, int, float]] = []

    def read(self, r) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(label (n,) int16, confidence (n,) float32, track_depth_m (n,) float32,
        track_quality (n,) float32) for the lines of ``r``.

        Motion the tracker returns late (lines before this block, e.g. while it chose its
        echo) is left in :attr:`late_track` as (t_s (k,), depth_m (k,), quality (k,)) for
        :meth:`mmode.gui.mmode_data.DisplayRing.set_track`, else None. The learned trace
        (``Results.motion_network``) is left in :attr:`net_track` as (t_s (k,), depth_m (k,))
        for :meth:`~mmode.gui.mmode_data.DisplayRing.set_net_track`, and the wall time of its
        last block in :attr:`net_ms`.

        A classifier window describes the lines it spans, but arrives when it ends. For the
        timeline, each window with a start time also relabels the second half of its span
        (:attr:`relabel`: list of (t_from_s, t_to_s, label, confidence) for
        :meth:`mmode.gui.mmode_data.DisplayRing.set_labels`; the first window ever relabels
        its whole span), so the colours line up with the image (to within a hop) instead of
        lagging by half a window.
        """
        t = np.asarray(r.t_s, np.float64)
        n = t.shape[0]
        label = np.full(n, self.label, np.int16)
        conf = np.full(n, self.confidence, np.float32)
        win_start, win_t, probs = _windows(r.classification)
        self.relabel = []
        if r.classification is not None:
            classes = _field(r.classification, "classes")
            if classes is not None:
                self.classes = tuple(classes)
        if probs is not None and probs.size:
            labels = probs.argmax(axis=1)
            confs = probs.max(axis=1)
            # each line takes the newest window that ends at or before it; earlier lines keep
            # the previous class
            idx = np.searchsorted(win_t, t, side="right") - 1
            has = idx >= 0
            label[has] = labels[idx[has]]
            conf[has] = confs[idx[has]]
            first = self.label < 0  # the very first window also covers the lines before its middle
            self.label, self.confidence = int(labels[-1]), float(confs[-1])
            if win_start is not None:
                self.relabel = [(a if first and i == 0 else 0.5 * (a + b), b, int(k), float(p))
                                for i, (a, b, k, p) in enumerate(zip(win_start, win_t, labels, confs))]
        level = getattr(r, "level", None)
        if level is not None:
            self.level = level
        state = getattr(r, "motion_state", None)
        if state:
            self.motion_state = dict(state)
        self.late_track = None
        net = _motion_track(getattr(r, "motion_network", None))
        self.net_track = None if net is None else net[:2]  # for DisplayRing.set_net_track
        timings = getattr(r, "timings_ms", None) or {}
        if timings:  # a processed block (the end of a stream has none): NaN once the network is off
            self.net_ms = float(timings.get("motion_network", float("nan")))
        track = np.full(n, np.nan, np.float32)
        quality = np.full(n, np.nan, np.float32)
        motion = _motion_track(r.motion)
        if motion is not None:
            mt, depth_m, q = motion
            track = np.interp(t, mt, depth_m, left=np.nan, right=np.nan).astype(np.float32)
            quality = np.interp(t, mt, q, left=np.nan, right=np.nan).astype(np.float32)
            if mt.size and (n == 0 or mt[0] < t[0]):  # the tracker returned lines of earlier blocks
                early = mt < t[0] if n else np.ones(mt.shape, bool)
                self.late_track = (mt[early], depth_m[early], q[early])
        return label, conf, track, quality


def level_text(level) -> tuple[str, str]:
    """(short line, tooltip) saying how 0 dB of the image is set, from ``Results.level``
    (a :class:`~mmode.dsp.levels.LevelReference`, or None before the first result).

    "0 dB: full scale" for integer samples; "0 dB: auto, <how>" when set from the data (the
    processing's own description, up to its first ";"); "0 dB: kept from Auto" for a level
    the window pinned (an *Auto* level kept when a file restarts).
    """
    if level is None:
        return "0 dB: --", "No display level yet"
    mode, detail = _field(level, "mode", ""), str(_field(level, "detail", ""))
    if mode == "full_scale":
        short = "0 dB: full scale"
    elif mode == "manual":
        short = "0 dB: kept from Auto"
    else:
        short = "0 dB: auto, " + detail.split(";")[0]
    if not _field(level, "settled", True):
        short += " (settling)"
    reference_db = float(_field(level, "reference_db", float("nan")))
    return short, f"{detail}; 0 dB = {reference_db:.1f} dB re one stored unit"


def motion_text(state: dict, running: bool = True, scale: CaliperScale = RF_SCALE) -> tuple[str, str]:
    """(short line, tooltip) of the motion tracker's state (``Results.motion_state``).

    Says where it tracks (the user's gate or automatic), whether it is still choosing, on
    which lines it follows the echo (clutter-filtered or stored), and when there is no trace
    why not (the tracker's note; while tracking, its caution, e.g. a gated echo that does not
    come back when tracked backwards, in the tooltip). Empty before the first state. running : False once the
    engine has stopped (a file paused or ended): a choice still open then never finishes.
    Depths in the units of ``scale`` (pixels on an uncalibrated depth).
    """
    status = state.get("status")
    gate_m = state.get("track_depth_m")
    where = "auto" if gate_m is None else f"gate {scale.depth_text(gate_m)}"
    note = state.get("note") or ""
    if status == "choosing":
        text = (f"Motion: {where}, choosing the echo (about 1 s)" if running else
                f"Motion: {where}, stopped before an echo was chosen")
    elif status == "tracking":
        depth_m = state.get("depth_m")
        at = f" {scale.depth_text(depth_m)}" if depth_m is not None and math.isfinite(depth_m) else ""
        lines = ", clutter-filtered" if state.get("representation") == "clutter" else ""
        text = f"Motion: {where}, tracking{at}{lines}" + (", may not follow the echo (see tooltip)" if note else "")
    elif status == "no_motion":
        text = f"No trace: {note}"
    elif status == "inactive":
        text = "Motion: off"
    else:
        return "", ""
    return text, note or text
