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

from mmode.dsp.motion import MotionTracker
from mmode.dsp.processor import Processor, ProcessorSettings
from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock


@dataclass(frozen=True)
class PipelineSettings:
    """Settings of every stage. processor : the display chain (gain, range, TGC, denoise).

    track_depth_m : depth of the echo the motion tracker follows; None chooses the strongest
    moving echo (see :class:`~mmode.dsp.motion.MotionTracker`).
    model : shipped classifier name (``mmode models``) run on sliding windows of the display
    image; None or "none": classic processing only, no classification.
    """

    processor: ProcessorSettings = ProcessorSettings()
    track_depth_m: float | None = None
    model: str | None = None


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
    completed (often empty), or None without a classifier. timings_ms : wall time per stage.
    """

    seq_start: int
    seq_stop: int
    t_s: np.ndarray
    display_db: np.ndarray
    row_depths_m: np.ndarray
    features: dict
    motion: object | None = None
    classification: object | None = None
    timings_ms: dict = field(default_factory=dict)


class Pipeline:
    """Runs the stages on each block in order; one thread at a time."""

    def __init__(self, settings: PipelineSettings = PipelineSettings()) -> None:
        self.settings = settings
        self.processor = Processor(settings.processor)
        self.motion = MotionTracker(track_depth_m=settings.track_depth_m)
        self.classifier = _load_classifier(settings.model)
        self.meta: AcquisitionMeta | None = None
        self.n_samples = 0

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
        if self.classifier is not None:
            self.classifier.reset()

    def update_settings(self, settings: PipelineSettings) -> None:
        """Apply new settings before the next block."""
        if settings.track_depth_m != self.settings.track_depth_m:  # a new echo: the trace restarts
            self.motion = MotionTracker(track_depth_m=settings.track_depth_m)
            if self.meta is not None:
                self.motion.prepare(self.meta, self.n_samples)
        if settings.model != self.settings.model:
            self.classifier = _load_classifier(settings.model)
        self.settings = settings
        self.processor.update_settings(settings.processor)

    def process(self, block: LineBlock) -> Results:
        """Run every stage on ``block``; returns the results for its lines."""
        if self.meta is None:
            raise DataError(describe("pipeline", "prepare(meta, n_samples) before process()", "no prepare"))
        t0 = time.perf_counter()
        out = self.processor.process(block)
        t1 = time.perf_counter()
        motion = self.motion.process(block)
        t2 = time.perf_counter()
        timings_ms = {"dsp": (t1 - t0) * 1e3, "motion": (t2 - t1) * 1e3}
        classification = None
        if self.classifier is not None:
            classification = self.classifier.push(out.display_db, out.t_s, self.processor.row_depths_m)
            timings_ms["classify"] = (time.perf_counter() - t2) * 1e3
        return Results(
            seq_start=block.seq,
            seq_stop=block.seq + out.display_db.shape[0],
            t_s=out.t_s,
            display_db=out.display_db,
            row_depths_m=self.processor.row_depths_m,
            features=out.features,
            motion=motion,
            classification=classification,
            timings_ms=timings_ms,
        )


def _load_classifier(model: str | None):
    """The :class:`~mmode.models.inference.Classifier` for ``model``, or None for None / "none"."""
    if model is None or model == "none":
        return None
    from mmode.models.inference import Classifier  # torch loads only when a model is asked for

    return Classifier(model)
