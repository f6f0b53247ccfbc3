"""Streaming processor: lines in, display image (dB) and features out, block after block.

``Processor(settings).prepare(meta, n_samples)`` settles every table and buffer once;
``process(block)`` runs the chain on a :class:`~mmode.ingest.meta.LineBlock`:

    envelope at the display rows (RF: DC removal, demodulation, FIR, decimation;
    IQ: |FIR(IQ)|; envelope: FIR) -> TGC + gain + log compression against the level shown
    as 0 dB (integer full scale, or set from the data: :mod:`mmode.dsp.levels`), clipped to
    [-dynamic_range_db, 0] -> features -> denoise

Scanner grey levels (``meta.amplitude == "grey"``) are already log-compressed: they take the
same FIR to the display rows, then :func:`mmode.dsp.levels.grey_db` (linear, 255 -> 0 dB)
instead of the log, with the same TGC, gain and clipping.

Features are computed before denoising, so they do not change with the display's denoise
setting (persistence, in particular, would hide the speckle decorrelation they measure).

Block invariance: every stage but SRAD is per line or causal with carried state, so a
file processed in blocks of any size gives the same image and per-line features as when
processed whole, once the display level is settled (a reference taken from the data follows
the lines seen during the first second of a stream; :meth:`Processor.settle_level` fixes it
from a recording's first second before processing). SRAD is a window method for review: each block is diffused together with
the last ``SRAD_CONTEXT_LINES`` lines before it (their output is discarded), so only lines
near a block start depend (slightly) on the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mmode.dsp import denoise, envelope, levels, wavelets
from mmode.dsp.features import FeatureExtractor
from mmode.errors import DataError, UsageError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock

DENOISE_METHODS = ("none", "median_persist", "wavelet", "srad")
#: Lines of history SRAD sees before each block (streaming use).
SRAD_CONTEXT_LINES = 64
#: Persistence time constant at denoise_strength 1 (seconds of slow time).
PERSISTENCE_MAX_TAU_S = 0.04
#: Longest line the processor accepts (a 2 m deep line at 100 MHz is about 260k samples).
MAX_SAMPLES = 1 << 20


@dataclass(frozen=True)
class ProcessorSettings:
    """What the user can change about the display chain (immutable; swap to change).

    n_rows : display rows. gain_db : overall gain, around the level shown as 0 dB.
    reference_db : that level, dB re one stored unit (the envelope amplitude shown at the top
    of the grey scale before gain and TGC); None sets it automatically (integer full scale,
    or from the data: :mod:`mmode.dsp.levels`). dynamic_range_db : the displayed range,
    output in [-dynamic_range_db, 0]. tgc : ((depth_m, gain_db), ...) piecewise-linear
    time-gain compensation. denoise : one of :data:`DENOISE_METHODS`. denoise_strength :
    0..1 (median over 3 rows and persistence time constant 0..40 ms; wavelet threshold
    x0..2 of BayesShrink; SRAD 5..45 iterations). feature_depth_m : features use rows at or below
    this depth (None: lower half). wavelet, wavelet_levels : DWT of the features.
    """

    n_rows: int = 256
    gain_db: float = 0.0
    reference_db: float | None = None
    dynamic_range_db: float = 60.0
    tgc: tuple[tuple[float, float], ...] = ()
    denoise: str = "none"
    denoise_strength: float = 0.5
    feature_depth_m: float | None = None
    wavelet: str = "db4"
    wavelet_levels: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.n_rows, int) or not 8 <= self.n_rows <= 8192:
            raise UsageError(describe("n_rows", "an integer in [8, 8192]", self.n_rows))
        if not math.isfinite(self.gain_db):
            raise UsageError(describe("gain_db", "a finite number", self.gain_db))
        if self.reference_db is not None and not math.isfinite(self.reference_db):
            raise UsageError(describe("reference_db", "None or a finite level in dB", self.reference_db))
        if not (math.isfinite(self.dynamic_range_db) and self.dynamic_range_db > 0):
            raise UsageError(describe("dynamic_range_db", "> 0", self.dynamic_range_db))
        if self.denoise not in DENOISE_METHODS:
            raise UsageError(describe("denoise", f"one of {DENOISE_METHODS}", repr(self.denoise)))
        if not 0.0 <= self.denoise_strength <= 1.0:
            raise UsageError(describe("denoise_strength", "in [0, 1]", self.denoise_strength))
        if self.feature_depth_m is not None and not (math.isfinite(self.feature_depth_m) and self.feature_depth_m >= 0):
            raise UsageError(describe("feature_depth_m", "None or a depth >= 0 in metres", self.feature_depth_m))
        if not isinstance(self.wavelet_levels, int) or not 1 <= self.wavelet_levels <= 8:
            raise UsageError(describe("wavelet_levels", "an integer in [1, 8]", self.wavelet_levels))
        wavelets.filters(self.wavelet)  # validates the name
        object.__setattr__(self, "tgc", tuple((float(d), float(g)) for d, g in self.tgc))
        envelope.tgc_db(np.zeros(1), self.tgc)  # validates the points

    @property
    def median_half_width(self) -> int:
        # 3 rows: a median over 2h+1 rows erases lines thinner than h+1 rows, and a specular
        # interface (pleura, pericardium) is 2 display rows thick
        return 1

    @property
    def persistence_tau_s(self) -> float:
        """Time constant of the persistence filter: 0..40 ms with strength (PRF-independent)."""
        return PERSISTENCE_MAX_TAU_S * self.denoise_strength

    @property
    def srad_iterations(self) -> int:
        return 5 + int(round(40 * self.denoise_strength))


@dataclass
class ProcessedBlock:
    """Output of :meth:`Processor.process` for one block of ``n`` lines.

    seq : sequence number of the first line. t_s : (n,) float64 line times.
    display_db : (n, n_rows) float32 in [-dynamic_range_db, 0]. features : see
    :mod:`mmode.dsp.features`.
    """

    seq: int
    t_s: np.ndarray
    display_db: np.ndarray
    features: dict = field(default_factory=dict)


class Processor:
    """The streaming display chain; see the module docstring. Not thread-safe: one thread."""

    def __init__(self, settings: ProcessorSettings = ProcessorSettings()) -> None:
        self.settings = settings
        self.meta: AcquisitionMeta | None = None
        self.n_samples = 0
        self.row_depths_m = np.zeros(0)
        self._levels = levels.LevelMeter()
        self._levels_dtype: np.dtype | None = None

    def prepare(self, meta: AcquisitionMeta, n_samples: int) -> None:
        """Settle tables and state for lines of ``n_samples`` from ``meta``; resets the stream."""
        if not isinstance(meta, AcquisitionMeta):
            raise DataError(describe("processor", "AcquisitionMeta", type(meta).__name__))
        if not 0 < int(n_samples) <= MAX_SAMPLES:
            raise DataError(describe("processor", f"0 < n_samples <= {MAX_SAMPLES}", n_samples))
        old_meta, old_n = self.meta, self.n_samples
        self.meta, self.n_samples = meta, int(n_samples)
        try:
            self._apply_settings(self.settings, reset=True)
        except Exception:
            self.meta, self.n_samples = old_meta, old_n
            raise

    def update_settings(self, settings: ProcessorSettings) -> None:
        """Change settings between blocks. Gain, range, TGC and denoise strength keep the
        stream state; a change of n_rows, denoise method or features restarts it. On an
        error (e.g. a feature depth below the image) the old settings stay in force."""
        if self.meta is None:
            self.settings = settings
            return
        old = self.settings
        reset = (settings.n_rows, settings.denoise, settings.feature_depth_m, settings.wavelet,
                 settings.wavelet_levels) != (
                old.n_rows, old.denoise, old.feature_depth_m, old.wavelet, old.wavelet_levels)
        self._apply_settings(settings, reset=reset)

    def _apply_settings(self, s: ProcessorSettings, reset: bool) -> None:
        """Build everything the settings need first, then swap it in (all or nothing)."""
        meta = self.meta
        if reset:
            tables = envelope.envelope_tables(meta, self.n_samples, s.n_rows)
            depths = envelope.row_depths_m(meta, self.n_samples, s.n_rows)
            features = FeatureExtractor(depths, meta.prf_hz, s.feature_depth_m, s.wavelet, s.wavelet_levels)
            self._tables, self.row_depths_m, self._features = tables, depths, features
            self._persist_state: np.ndarray | None = None
            self._srad_context = np.zeros((0, s.n_rows), np.float32)
            self._levels_dtype = None
        elif s.reference_db != self.settings.reference_db and self._levels_dtype is not None:
            self._prepare_levels(self._levels_dtype, s.reference_db)
        self._tgc_gain_db = (envelope.tgc_db(self.row_depths_m, s.tgc) + s.gain_db).astype(np.float32)
        self.settings = s

    def _prepare_levels(self, dtype: np.dtype, reference_db: float | None) -> None:
        self._levels.prepare(self.meta.prf_hz, dtype, reference_db, grey=self.meta.amplitude == "grey")
        self._levels_dtype = np.dtype(dtype)

    @property
    def level(self) -> levels.LevelReference | None:
        """How 0 dB is set now (None before the first line)."""
        return self._levels.reference

    def settle_level(self, lines: np.ndarray) -> None:
        """Fix the automatic level from the first lines of a recording (its first
        ``levels.LEVEL_S`` or all of a shorter one), (n, n_samples), before processing it, so
        that the whole image is levelled alike and does not depend on the block size."""
        lines = envelope.check_block_lines(lines, self.meta.kind, self.n_samples)
        self._prepare_levels(lines.dtype, self.settings.reference_db)
        pick = np.unique(np.linspace(0, lines.shape[0] - 1, levels.SETTLE_LINES).round().astype(np.int64))
        env_db = levels.envelope_db(envelope.envelope_rows(lines[pick], self._tables, check=False))
        self._levels.settle(lines.shape[0], env_db)

    def relevel(self, t_from_s: float | None = None, t_to_s: float | None = None) -> levels.LevelReference | None:
        """Set the level from the data again, on the lines of times ``t_from_s..t_to_s``
        (what a display shows; see :meth:`mmode.dsp.levels.LevelMeter.relevel`). An explicit
        ``reference_db`` in the settings is replaced until the settings change it again."""
        return self._levels.relevel(t_from_s, t_to_s)

    def process(self, block: LineBlock) -> ProcessedBlock:
        """Run the chain on one block; returns the display rows and features of its lines."""
        if self.meta is None:
            raise DataError(describe("processor", "prepare(meta, n_samples) before process()", "no prepare"))
        s = self.settings
        lines = block.lines
        if not isinstance(lines, np.ndarray):
            raise DataError(describe("block", "lines as a numpy array", type(lines).__name__))
        lines = envelope.check_block_lines(lines, self.meta.kind, self.n_samples, first_line=block.seq)
        n = lines.shape[0]
        t_s = block.t_s + np.arange(n, dtype=np.float64) / self.meta.prf_hz
        if lines.dtype != self._levels_dtype:
            self._prepare_levels(lines.dtype, s.reference_db)
        grey = self.meta.amplitude == "grey"
        pick = np.zeros(0, np.int64) if grey else self._levels.sampled(block.seq, n)
        if self._levels.reference is None and n and not pick.size:  # the stream's first line sets a level
            pick = np.zeros(1, np.int64)
        if pick.size:
            env_db = levels.envelope_db(envelope.envelope_rows(lines[pick], self._tables, check=False))
            self._levels.add(n, t_s[pick], env_db)
        reference_db = self._levels.reference.reference_db if self._levels.reference is not None else 0.0
        offset_db = self._tgc_gain_db - np.float32(reference_db)
        if grey:
            db = levels.grey_db(envelope.envelope_rows(lines, self._tables, check=False), s.dynamic_range_db)
            np.clip(db + offset_db, -s.dynamic_range_db, 0.0, out=db)
        else:
            db = envelope.display_rows_db(lines, self._tables, offset_db, s.dynamic_range_db, check=False)
        features = self._features.process(db)
        db = self._denoise(db)
        if s.denoise != "none":
            np.clip(db, -s.dynamic_range_db, 0.0, out=db)
        return ProcessedBlock(seq=block.seq, t_s=t_s, display_db=db, features=features)

    def _denoise(self, db: np.ndarray) -> np.ndarray:
        s = self.settings
        if s.denoise == "none" or db.shape[0] == 0:
            return db
        if s.denoise == "median_persist":
            med = denoise.median_depth(db, s.median_half_width)
            alpha = math.exp(-1.0 / (s.persistence_tau_s * self.meta.prf_hz)) if s.persistence_tau_s > 0 else 0.0
            out, self._persist_state = denoise.persistence(med, alpha, self._persist_state)
            return out
        if s.denoise == "wavelet":
            return denoise.wavelet_shrink(db, s.wavelet, s.wavelet_levels, "bayes", 2.0 * s.denoise_strength)
        window = np.concatenate([self._srad_context, db])
        out = denoise.srad_db(window, s.srad_iterations)[self._srad_context.shape[0]:]
        self._srad_context = window[-SRAD_CONTEXT_LINES:].copy()
        return np.ascontiguousarray(out)
