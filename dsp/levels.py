"""Display levels: which echo amplitude is shown as 0 dB (the top of the grey scale).

Integer RF has a known full scale (an ADC's): 0 dB is full scale, so a weak recording
looks weak, as on the scanner that made it. Float data and scanner exports have none: a
GE Vingmed IQ file holds amplitudes of about 1e4, a normalised one about 1e-3, and no fixed
reference shows both. There 0 dB is set from the data, as a scanner's auto-gain does: the
``AUTO_PERCENTILE`` (99th) percentile of the envelope over the first ``LEVEL_S`` (1 s) of
lines is placed ``AUTO_HEADROOM_DB`` (6 dB) below the top. Integer data far below full scale
(the 99th percentile more than ``FULL_SCALE_MIN_DB`` below it) are levelled from the data too.

Why these numbers: the 99th percentile ignores the few brightest pixels (a specular
interface, a ring-down) but not the tissue; 6 dB headroom leaves the brightest echoes room
before they clip and puts the 99th percentile where the simulator's int16 recordings have
it against their full scale (-8 to -10 dB, ``sample_data/``), so a float copy of a simulated
file looks like the original. For fully developed speckle (Rayleigh amplitude) the median
then sits 14 dB below the top and the 5th percentile 25 dB below it.

:class:`LevelMeter` keeps a thin sample of the envelope (one line in every
``prf / SAMPLED_LINES_PER_S``, chosen by sequence number so that the sample does not depend
on how lines are cut into blocks) for the last ``HISTORY_S`` seconds, so that the reference
can be set again on any recent stretch (the GUI's *Auto* on what is on screen).

Scanner images (``meta.amplitude == "grey"``: DICOM M-mode regions, anatomical M-mode from
cine) hold display grey levels 0..255 that the scanner has already log-compressed with its
own curve. They are not logged again: :func:`grey_db` maps them linearly, 255 to 0 dB and 0
to ``-dynamic_range_db``, so the image looks as it did on the scanner; their level is fixed
(mode "grey"), and neither the first second nor *Auto* moves it.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from mmode.errors import UsageError, describe

#: Percentile of the envelope (dB) that sets the automatic reference.
AUTO_PERCENTILE = 99.0
#: The automatic reference puts that percentile this far below the top of the grey scale.
AUTO_HEADROOM_DB = 6.0
#: Seconds of lines the automatic reference is taken from when a stream starts.
LEVEL_S = 1.0
#: Integer data whose 99th percentile lies more than this below full scale are levelled from
#: the data (a 16-bit capture using 3 % of its range would otherwise be nearly black).
FULL_SCALE_MIN_DB = 30.0
#: Lines per second of slow time kept by :class:`LevelMeter` (each n_rows values).
SAMPLED_LINES_PER_S = 64.0
#: Lines, evenly spread over a recording's first second, that set its level offline
#: (:meth:`LevelMeter.settle`); a live stream samples SAMPLED_LINES_PER_S.
SETTLE_LINES = 64
#: Seconds of sampled lines kept for re-levelling.
HISTORY_S = 60.0
#: Envelope amplitudes below this (dB re one stored unit) are treated as this: an all-zero
#: line (a dead channel, a blanked ring-down) must not pull the reference to -inf.
FLOOR_DB = -300.0

#: Top of the display grey scale of scanner images (8-bit grey levels).
GREY_MAX = 255.0


def grey_db(grey: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """Display grey levels (any shape, 0..:data:`GREY_MAX`, already log-compressed) in dB of
    the display: ``(grey / GREY_MAX - 1) * dynamic_range_db``, float32, linear (no log)."""
    scale = np.float32(dynamic_range_db / GREY_MAX)
    return (np.asarray(grey, dtype=np.float32) - np.float32(GREY_MAX)) * scale


def full_scale_db(dtype: np.dtype) -> float | None:
    """Full scale of stored integer samples in dB re one unit (int16: 20 log10 32768 = 90.3);
    None for float and complex samples, which have none."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return 20.0 * math.log10(float(np.iinfo(dtype).max) + 1.0)
    return None


def envelope_db(env: np.ndarray) -> np.ndarray:
    """``20 log10(env)`` (float32, same shape), floored at :data:`FLOOR_DB`."""
    return (20.0 * np.log10(np.maximum(np.asarray(env, dtype=np.float32), np.float32(10 ** (FLOOR_DB / 20))))).astype(
        np.float32)


def auto_reference_db(env_db: np.ndarray, percentile: float = AUTO_PERCENTILE,
                      headroom_db: float = AUTO_HEADROOM_DB) -> float:
    """The 0 dB level (dB re one stored unit) that puts ``percentile`` of ``env_db`` (any
    shape, dB re one stored unit) ``headroom_db`` below the top of the grey scale."""
    values = np.asarray(env_db, dtype=np.float32).ravel()
    if values.size == 0:
        raise UsageError(describe("auto level", "at least one envelope value", "none"))
    return float(np.percentile(values, percentile)) + headroom_db


@dataclass(frozen=True)
class LevelReference:
    """How 0 dB of the display was set.

    mode : "full_scale" (integer samples' full scale), "data" (auto-gain from the data) or
        "manual" (a level the caller gave). reference_db : the envelope amplitude shown as
        0 dB before gain and TGC, dB re one stored unit (int16 full scale: 90.3).
    detail : one line a user reads, e.g. "99th percentile of the first 1.0 s + 6 dB".
    settled : False while an automatic reference is still being taken from the first
        ``LEVEL_S`` of a stream (it can still move a little).
    """

    mode: str
    reference_db: float
    detail: str
    settled: bool = True

    def to_dict(self) -> dict:
        return {"mode": self.mode, "reference_db": round(self.reference_db, 3), "detail": self.detail,
                "settled": self.settled}


class LevelMeter:
    """Sampled envelope history of a stream and the reference taken from it.

    ``prepare(prf_hz, dtype)`` once per stream; ``add(n_lines, t_s, env_db)`` with the envelope
    (dB re one stored unit) of the lines :meth:`sampled` selected; :attr:`reference` is the
    current :class:`LevelReference`. Until ``LEVEL_S`` of lines have been seen the automatic
    reference follows all samples so far, then it stays fixed until :meth:`relevel`.
    """

    def __init__(self) -> None:
        self.reference: LevelReference | None = None

    def prepare(self, prf_hz: float, dtype: np.dtype, manual_db: float | None = None, grey: bool = False) -> None:
        """Reset for a stream of ``dtype`` lines at ``prf_hz``; ``manual_db`` pins the reference;
        ``grey``: display grey levels, whose level is fixed (:func:`grey_db`; nothing to add)."""
        self.grey = grey
        self.step = max(1, int(round(prf_hz / SAMPLED_LINES_PER_S)))
        self.level_lines = max(1, int(round(LEVEL_S * prf_hz)))
        self.full_scale_db = full_scale_db(dtype)
        self._history: collections.deque[tuple[float, np.ndarray]] = collections.deque(
            maxlen=max(1, int(math.ceil(HISTORY_S * SAMPLED_LINES_PER_S))))
        self._first: list[np.ndarray] = []
        self._lines_seen = 0
        self.reference = None if manual_db is None else LevelReference("manual", float(manual_db), "set by the user")
        if grey and manual_db is None:
            self.reference = LevelReference("grey", 0.0, f"scanner grey levels, already log-compressed: "
                                            f"{GREY_MAX:g} is 0 dB, 0 the bottom of the range, linear")

    def sampled(self, seq: int, n_lines: int) -> np.ndarray:
        """Indices within a block (first line ``seq``, ``n_lines`` lines) of the lines to measure."""
        first = (-seq) % self.step
        return np.arange(first, n_lines, self.step)

    def add(self, n_lines: int, t_s: np.ndarray, env_db: np.ndarray) -> None:
        """Record a block of ``n_lines`` lines: ``t_s`` (k,) and ``env_db`` (k, n_rows) are
        those of its :meth:`sampled` lines."""
        for t, row in zip(t_s, env_db):
            self._history.append((float(t), row))
        if self.reference is not None and self.reference.settled:
            return
        self._first.append(env_db)
        self._lines_seen += n_lines
        settled = self._lines_seen >= self.level_lines
        first = np.concatenate(self._first)
        if first.shape[0]:
            self.reference = self._initial(first, min(self._lines_seen, self.level_lines), settled)
        if settled:
            self._first = []

    def settle(self, n_lines: int, env_db: np.ndarray) -> None:
        """Fix the initial reference from the sampled lines ``env_db`` (k, n_rows) of the first
        ``n_lines`` lines of a recording (its first ``LEVEL_S``, or all of a shorter one), so
        that an offline run does not depend on how it is cut into blocks."""
        if self.grey:
            return
        if self.reference is None or self.reference.mode != "manual":
            self.reference = self._initial(env_db, n_lines, True)
            self._first = []

    def _initial(self, env_db: np.ndarray, n_lines: int, settled: bool) -> LevelReference:
        """Full scale for integer samples that reach within FULL_SCALE_MIN_DB of it, else auto,
        from the sampled lines ``env_db`` of the first ``n_lines`` lines."""
        seconds = n_lines / self.level_lines * LEVEL_S
        auto_db = auto_reference_db(env_db)
        if self.full_scale_db is not None:
            p_db = auto_db - AUTO_HEADROOM_DB - self.full_scale_db
            if p_db >= -FULL_SCALE_MIN_DB:
                return LevelReference("full_scale", self.full_scale_db, "integer full scale", settled)
            why = f"; integer data {-p_db:.0f} dB below full scale"
        else:
            why = "; float samples have no full scale"
        return LevelReference("data", auto_db, f"{AUTO_PERCENTILE:g}th percentile of the first {seconds:.2f} s "
                              f"+ {AUTO_HEADROOM_DB:g} dB{why}", settled)

    def relevel(self, t_from_s: float | None = None, t_to_s: float | None = None) -> LevelReference | None:
        """Set the reference from the sampled lines with ``t_from_s <= t <= t_to_s`` (all kept
        lines when none falls in that span, the last ``HISTORY_S`` s); None when nothing has
        been seen yet (the reference is unchanged). Grey levels keep their fixed level."""
        if self.grey:
            return self.reference
        lo = -math.inf if t_from_s is None else t_from_s
        hi = math.inf if t_to_s is None else t_to_s
        rows = [r for t, r in self._history if lo <= t <= hi]
        span = "the lines on screen"
        if not rows:
            rows = [r for _, r in self._history]
            span = f"the last {HISTORY_S:g} s"
        if not rows:
            return None
        self.reference = LevelReference("data", auto_reference_db(np.stack(rows)),
                                        f"{AUTO_PERCENTILE:g}th percentile of {span} + {AUTO_HEADROOM_DB:g} dB (Auto)")
        return self.reference
