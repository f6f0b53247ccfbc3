"""The processing pipeline: one block of lines in, :class:`Results` for those lines out.

``Pipeline`` chains the stages every consumer (engine thread, ``mmode process``, tests)
runs: the DSP :class:`~mmode.dsp.processor.Processor` (display image and features), then
the motion and classifier stages as they are added. ``prepare`` once per acquisition,
``process`` per block, ``update_settings`` between blocks (e.g. a gain change from the GUI).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mmode.app import motion_modes
from mmode.app.catch_up import CatchUp
from mmode.dsp.tracker import MotionTracker
from mmode.dsp.processor import Processor, ProcessorSettings
from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock


@dataclass(frozen=True)
class PipelineSettings:
    """Settings of every stage. processor : the display chain (gain, range, TGC, denoise).

    track_depth_m : depth of the echo the motion tracker follows (a gate the user places);
    None chooses the moving echo automatically (see :class:`~mmode.dsp.tracker.MotionTracker`).
    model : shipped classifier name (``mmode models``) run on sliding windows of the display
    image; None or "none": classic processing only, no classification.
    realtime : a live stream: one-off work (the motion tracker's choice of the echo) is
    spread over several blocks, ``REALTIME_STEP_BUDGET_S`` per block, instead of finishing
    in the block that completes it (offline runs, where nobody waits for the next block),
    and the lines held back meanwhile are caught up on with the time each block leaves
    (:class:`~mmode.app.catch_up.CatchUp`).
    motion : which motion traces the results carry: "classic" (the tracker's), "network"
    (the learned :class:`~mmode.models.motion_stream.NetworkTracker`'s; the classic tracker
    still runs, to choose the echo it follows), "both", or "auto": "both" for a line rate up
    to :data:`mmode.app.motion_modes.NETWORK_AUTO_MAX_RATE_HZ`, where the learned trace keeps
    a live stream within its latency budget, else "classic" (decided in
    :meth:`Pipeline.prepare`, from the stream's line rate). motion_model : the shipped
    motion network the learned trace uses.
    """

    processor: ProcessorSettings = ProcessorSettings()
    track_depth_m: float | None = None
    model: str | None = None
    realtime: bool = False
    motion: str = "classic"
    motion_model: str = "motion_keyframe_student"


#: Wall time the one-off choice of the tracked echo may take per block in a live stream, s:
#: well inside the 30 ms latency target with the rest of a block's work.
REALTIME_STEP_BUDGET_S = 0.005


@dataclass
class Results:
    """What the pipeline made of lines ``[seq_start, seq_stop)``.

    t_s : (n,) float64 line times. display_db : (n, n_rows) float32 dB in
    [-dynamic_range_db, 0]. row_depths_m : (n_rows,) depth of each display row.
    features : per-block feature values (see mmode.dsp.features). motion : the
    :class:`~mmode.dsp.motion.MotionBlock` of the lines the tracker finished with this block
    (while it chooses the echo, during its first ``select_s`` seconds, it holds lines back
    and returns them later, with their own ``t_s``). classification : list of
    :class:`~mmode.models.inference.WindowResult` for the classifier windows this block
    completed (often empty), or None without a classifier. level : how 0 dB of
    ``display_db`` was set (:class:`~mmode.dsp.levels.LevelReference`). motion_state : the
    tracker's ``status`` ("choosing", "tracking", "no_motion", "inactive"), ``note`` (why
    there is no trace, or None), ``representation`` ("raw" or "clutter"), ``depth_m``,
    ``track_depth_m`` (the gate the user set, or None for automatic) and ``motion`` (the
    traces carried, :attr:`Pipeline.motion_mode`). motion_network : the
    learned trace of the same lines (:class:`~mmode.dsp.tracker.MotionBlock`), or None when
    ``settings.motion`` is "classic" (``motion`` is None when it is "network"). timings_ms :
    wall time per stage ("motion_network" the learned tracker's, "motion_inference" its
    network's forward pass).
    """

    seq_start: int
    seq_stop: int
    t_s: np.ndarray
    display_db: np.ndarray
    row_depths_m: np.ndarray
    features: dict
    motion: object | None = None
    classification: object | None = None
    level: object | None = None
    motion_state: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)
    motion_network: object | None = None


class Pipeline:
    """Runs the stages on each block in order; one thread at a time."""

    def __init__(self, settings: PipelineSettings = PipelineSettings()) -> None:
        self.settings = settings
        self.processor = Processor(settings.processor)
        self.motion = _tracker(settings)
        self.network = _load_network(settings)
        self.classifier = _load_classifier(settings.model)
        self.catch_up = CatchUp()
        self.meta: AcquisitionMeta | None = None
        self.n_samples = 0
        self._seq_stop = 0

    @property
    def row_depths_m(self) -> np.ndarray:
        """(n_rows,) depth in metres of each display row (after :meth:`prepare`)."""
        return self.processor.row_depths_m

    def prepare(self, meta: AcquisitionMeta, n_samples: int) -> None:
        """Allocate and settle shapes for lines of ``n_samples`` from ``meta``; resets state."""
        self.meta = meta
        self.n_samples = int(n_samples)
        self.processor.prepare(meta, n_samples)
        self.motion.prepare(meta, n_samples)
        self._prepare_network()
        self.catch_up.reset()
        if self.classifier is not None:
            self.classifier.reset()

    @property
    def motion_mode(self) -> str:
        """The traces this stream carries: ``settings.motion``, with "auto" decided ("both"
        or "classic") once :meth:`prepare` has seen the line rate."""
        if self.settings.motion != "auto":
            return self.settings.motion
        return "both" if self.network is not None else "classic"

    def _prepare_network(self) -> None:
        """Load (for "auto" at a line rate that allows it, :func:`mmode.app.motion_modes.resolve`)
        or drop the learned tracker for this stream, and prepare it."""
        if self.settings.motion == "auto":
            if motion_modes.resolve("auto", self.meta.prf_hz) == "classic":
                self.network = None
            elif self.network is None:
                self.network = _network_tracker(self.settings)
        if self.network is not None:
            self.network.prepare(self.meta, self.n_samples, self.motion)

    def settle_level(self, lines: np.ndarray) -> None:
        """Fix the automatic display level from a recording's first lines before processing
        it (:meth:`mmode.dsp.processor.Processor.settle_level`)."""
        self.processor.settle_level(lines)

    def motion_state(self) -> dict:
        """The motion tracker's state (see :class:`Results`)."""
        m = self.motion
        return {"status": getattr(m, "status", "inactive"), "note": getattr(m, "note", None),
                "representation": getattr(m, "representation", "raw"), "depth_m": getattr(m, "depth_m", float("nan")),
                "track_depth_m": m.track_depth_m, "motion": self.motion_mode}

    def finish(self) -> Results:
        """End of stream: the lines the motion tracker still holds back (its choice finished
        on whatever it has), as Results with no new display lines (``seq_start ==
        seq_stop``): ``motion`` carries their trace with their own times; ``classification``
        is one window over the whole stream when it is shorter than the classifier's longest
        window (:meth:`mmode.models.inference.Classifier.finish`; [] otherwise, None without a
        classifier)."""
        n_rows = self.processor.row_depths_m.shape[0]
        motion = self.motion.flush()
        network = None if self.network is None else self.network.flush(motion.t_s.shape[0])
        return Results(
            seq_start=self._seq_stop, seq_stop=self._seq_stop, t_s=np.zeros(0),
            display_db=np.zeros((0, n_rows), np.float32), row_depths_m=self.processor.row_depths_m, features={},
            motion=None if self.motion_mode == "network" else motion,
            classification=None if self.classifier is None else self.classifier.finish(),
            level=self.processor.level,
            motion_state=self.motion_state(),
            motion_network=network,
        )

    def relevel(self, t_from_s: float | None = None, t_to_s: float | None = None) -> None:
        """Set the display level from the data of times ``t_from_s..t_to_s`` (the GUI's
        *Auto*; :meth:`mmode.dsp.processor.Processor.relevel`)."""
        self.processor.relevel(t_from_s, t_to_s)

    def update_settings(self, settings: PipelineSettings) -> None:
        """Apply new settings before the next block."""
        new_network = (settings.motion, settings.motion_model) != (self.settings.motion, self.settings.motion_model)
        if new_network:
            self.network = _load_network(settings)
        restart = (settings.track_depth_m, settings.realtime) != (self.settings.track_depth_m, self.settings.realtime) \
            or new_network
        if settings.model != self.settings.model:
            self.classifier = _load_classifier(settings.model)
        self.settings = settings
        if restart:
            self.motion = _tracker(settings)  # a new echo: the traces restart
            self.catch_up.reset()
            if self.meta is not None:
                self.motion.prepare(self.meta, self.n_samples)
                self._prepare_network()
        self.processor.update_settings(settings.processor)

    def process(self, block: LineBlock) -> Results:
        """Run every stage on ``block``; returns the results for its lines."""
        if self.meta is None:
            raise DataError(describe("pipeline", "prepare(meta, n_samples) before process()", "no prepare"))
        n_lines = block.lines.shape[0]
        t0 = time.perf_counter()
        out = self.processor.process(block)
        t1 = time.perf_counter()
        catch_up_lines = self.catch_up.lines(n_lines, n_lines / self.meta.prf_hz) if self.settings.realtime else None
        # the block that ends the echo's choice also takes its last step: not a per-line cost
        choosing = self.motion.status == "choosing"
        motion = self.motion.process(block, catch_up_lines)
        t2 = time.perf_counter()
        timings_ms = {"dsp": (t1 - t0) * 1e3, "motion": (t2 - t1) * 1e3}
        network = None
        if self.network is not None:
            network = self.network.process(block, motion.t_s.shape[0])
            if self.network.active:  # grey levels (a cine) carry no phase: no learned trace, no cost to show
                timings_ms["motion_network"] = self.network.last_ms
                timings_ms["motion_inference"] = self.network.inference_ms
        t3 = time.perf_counter()
        classification = None
        if self.classifier is not None:
            classification = self.classifier.push(out.display_db, out.t_s, self.processor.row_depths_m)
            timings_ms["classify"] = (time.perf_counter() - t3) * 1e3
        if self.settings.realtime:
            self.catch_up.update(n_lines, (t1 - t0) + (time.perf_counter() - t3),
                                 0 if choosing else motion.t_s.shape[0], t3 - t1)
        self._seq_stop = block.seq + out.display_db.shape[0]
        return Results(
            seq_start=block.seq,
            seq_stop=self._seq_stop,
            t_s=out.t_s,
            display_db=out.display_db,
            row_depths_m=self.processor.row_depths_m,
            features=out.features,
            motion=None if self.motion_mode == "network" else motion,
            classification=classification,
            level=self.processor.level,
            motion_state=self.motion_state(),
            timings_ms=timings_ms,
            motion_network=network,
        )


def _tracker(settings: PipelineSettings) -> MotionTracker:
    return MotionTracker(track_depth_m=settings.track_depth_m,
                         step_budget_s=REALTIME_STEP_BUDGET_S if settings.realtime else None)


def _load_network(settings: PipelineSettings):
    """The learned :class:`~mmode.models.motion_stream.NetworkTracker` when ``settings.motion``
    asks for its trace ("auto": loaded in :meth:`Pipeline.prepare` if the line rate allows),
    else None; DataError for an unknown mode."""
    if settings.motion not in motion_modes.MOTION_MODES:
        raise DataError(describe("--motion", f"one of {motion_modes.MOTION_MODES}", repr(settings.motion)))
    if settings.motion in ("classic", "auto"):
        return None
    return _network_tracker(settings)


def _network_tracker(settings: PipelineSettings):
    from mmode.models.motion_stream import NetworkTracker  # torch loads only when asked for

    return NetworkTracker(settings.motion_model)


def _load_classifier(model: str | None):
    """The :class:`~mmode.models.inference.Classifier` for ``model``, or None for None / "none"."""
    if model is None or model == "none":
        return None
    from mmode.models.inference import Classifier  # torch loads only when a model is asked for

    return Classifier(model)
