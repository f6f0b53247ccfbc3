"""Checks of every block of a stream before the engine takes it: finite samples, sane times.

A live source can deliver a frame whose samples are NaN or Inf, or whose time runs backwards
or jitters (a sender that stamps blocks from a system clock, OpenIGTLink header times).
Neither ends a session. :class:`FrameCheck` (one per stream, used by the engine's
acquisition thread) drops a block with non-finite samples and counts it, gives a block whose
time disagrees with its sequence number the time its sequence number predicts (counted), and
counts sequence gaps and restarts, so that the pipeline only sees finite lines whose times
increase strictly, at the line rate.

The re-timing rule (:class:`LineClock`), for a block of ``n`` lines at ``seq`` with time ``t_s``:

- the *anchor* is the last block whose own time was plausible: the latest reading of the
  sender's clock. The *predicted* time of ``seq`` is ``t_anchor + (seq - seq_anchor) /
  prf_hz`` (a gap in seq moves it forward by the gap);
- ``t_s`` is plausible when it is finite (and within :data:`MAX_TIME_S`) and within
  ``tolerance_s + rate_tolerance * (seq - seq_anchor) / prf_hz`` of the prediction; the
  block then becomes the anchor, so a sender clock that drifts slowly against the nominal
  line rate is followed, not "corrected" into a growing error;
- the block gets ``t_s`` if plausible, else the predicted time, but never less than
  :data:`MIN_SPACING_LINES` (half a line period) after the previous line: lines never
  overlap or run backwards. A block that does not get its own ``t_s`` is *re-timed*.

So a time that runs backwards, or jitters beyond the tolerance, gets the predicted time; a
plausible time that would start the block too close to the previous line (after a block
whose own time was late) is moved later, and the following blocks come back to the
sender's clock by up to half a line period each. Line times increase strictly. The engine's
ring cuts its chunks where a block's time does not continue the one before
(:data:`mmode.app.ring.CHUNK_TIME_TOLERANCE_LINES`, a tenth of a period, less than the half
period), so the times the pipeline gives the lines of a chunk (its first time + i / prf_hz)
increase strictly too.

``tolerance_s`` is the larger of :data:`TOLERANCE_S` and :data:`TOLERANCE_LINES` line
periods; see their comments for why. ``rate_tolerance`` (:data:`RATE_TOLERANCE`) widens the
tolerance with the time since the anchor, by as much as a sender clock can disagree with the
nominal line rate: after a gap, or after a step of the sender's clock, its times are taken
back once they agree again, instead of being re-timed for ever (a step of ``d`` seconds is
re-timed for about ``d / rate_tolerance`` seconds; a step back is then approached by half a
line period per block).

A sequence number that goes backwards (a restart: the engine prepares its pipeline afresh
there) starts a new timeline: the next block keeps its own time. A seek (a source
discontinuity) forgets the anchor but keeps times increasing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from mmode.ingest.meta import LineBlock

#: A block time this close to its predicted time is the sender's own (seconds): above the
#: jitter of a sender that stamps blocks from a system clock when it hands them over (about
#: 1 ms of timer granularity and thread wake-up), below what any consumer resolves (a sweep
#: column is 10 ms at 1000 columns per 10 s, classifier windows hop by 1 s).
TOLERANCE_S = 0.002
#: ... or this many line periods, when that is longer (line rates under 1 kHz): a sender that
#: stamps a block with a neighbouring line's time keeps its clock.
TOLERANCE_LINES = 2.0
#: Relative clock-rate disagreement allowed between the sender's times and the nominal line
#: rate, over the time since the anchor: 0.1 %, above crystal tolerances (20-100 ppm per
#: clock) and a line rate announced rounded (4995 Hz as 5000 Hz); 10 us per 10 ms block.
RATE_TOLERANCE = 1e-3
#: A block starts at least this many line periods after the previous line: lines never
#: overlap, with a margin above the ring's tolerance on even spacing (0.1 period).
MIN_SPACING_LINES = 0.5
#: Largest time magnitude used as it is (seconds, about 300 years: epoch times fit; float64
#: still resolves 2 us there). Larger ones are treated like non-finite times.
MAX_TIME_S = 1e10


def all_finite(lines: np.ndarray) -> bool:
    """True unless float or complex ``lines`` (any shape) hold a NaN or an Inf.

    Integer samples are always finite and are not looked at. Complex arrays are checked as
    their float components (one pass over a real view, several times faster than
    ``np.isfinite`` on complex numbers).
    """
    if lines.dtype.kind not in "fc":
        return True
    if lines.dtype.kind == "c" and lines.flags.c_contiguous:
        lines = lines.view(lines.real.dtype)
    return bool(np.isfinite(lines).all())


class LineClock:
    """Times of the first lines of a stream's blocks (see the module docstring for the rule).

    Parameters
    ----------
    prf_hz : nominal line rate, lines per second.
    tolerance_s : largest disagreement with the predicted time for a block's own time to be
        plausible (default: the larger of :data:`TOLERANCE_S` and :data:`TOLERANCE_LINES` /
        prf_hz).
    rate_tolerance : the tolerance grows by this times the seconds since the anchor.
    """

    def __init__(self, prf_hz: float, *, tolerance_s: float | None = None, rate_tolerance: float = RATE_TOLERANCE) -> None:
        self.prf_hz = float(prf_hz)
        self.tolerance_s = max(TOLERANCE_S, TOLERANCE_LINES / self.prf_hz) if tolerance_s is None else float(tolerance_s)
        self.rate_tolerance = float(rate_tolerance)
        self._anchor: tuple[int, float] | None = None  # (seq, t_s) of the last plausible block
        self._next_seq: int | None = None  # one past the last line given a time
        self._last_line_t_s = -math.inf  # time given to that last line

    def forget_anchor(self) -> None:
        """After a seek: the anchor's prediction no longer applies; the next block's own
        time, if finite, is the sender's clock again (still at least half a line period
        after the last line given a time, unless the seq went backwards)."""
        self._anchor = None

    def time_block(self, seq: int, n_lines: int, t_s: float) -> tuple[float, bool]:
        """(time of the block's first line, True when that is not ``t_s``) for ``n_lines``
        lines from ``seq``; line ``i`` of the block is at that time ``+ i / prf_hz``."""
        if self._next_seq is not None and seq < self._next_seq:  # a restart: a new timeline
            self._anchor, self._next_seq, self._last_line_t_s = None, None, -math.inf
        plausible = math.isfinite(t_s) and abs(t_s) <= MAX_TIME_S
        if self._anchor is not None:
            seq_a, t_a = self._anchor
            since_s = (seq - seq_a) / self.prf_hz
            target_s = t_a + since_s
            plausible = plausible and abs(t_s - target_s) <= self.tolerance_s + self.rate_tolerance * since_s
        elif self._next_seq is not None:  # no anchor since a seek, or no finite time yet
            target_s = self._last_line_t_s + (seq - self._next_seq + 1) / self.prf_hz
        else:
            target_s = seq / self.prf_hz
        if plausible:
            self._anchor = (seq, float(t_s))
            target_s = float(t_s)
        out_s = max(target_s, self._last_line_t_s + MIN_SPACING_LINES / self.prf_hz)
        self._next_seq = seq + n_lines
        self._last_line_t_s = out_s + (n_lines - 1) / self.prf_hz
        return out_s, out_s != t_s


@dataclass
class FrameCounts:
    """What :class:`FrameCheck` counted; every line of a stream whose seq runs on is in
    exactly one of: passed on (the engine's ``lines_received``), ``lines_rejected``,
    ``lines_missing``.

    frames_rejected, lines_rejected : blocks dropped for NaN/Inf samples, and their lines
        (their seq range counts as seen: not missing, not received).
    frames_retimed, lines_retimed : blocks passed on with their predicted time instead of
        their own, and their lines.
    gaps, lines_missing : forward jumps of seq that no block covered (lines lost before
        reaching us, or while reconnecting), and the lines skipped; not counted after a seek.
    restarts : backward jumps of seq (the source started again); not counted after a seek.
    """

    frames_rejected: int = 0
    lines_rejected: int = 0
    frames_retimed: int = 0
    lines_retimed: int = 0
    gaps: int = 0
    lines_missing: int = 0
    restarts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class FrameCheck:
    """Checks the blocks of one stream in order; :meth:`check` returns the block to use or None.

    ``prf_hz`` and the keyword arguments go to :class:`LineClock`. Counters are in
    :attr:`counts` (:class:`FrameCounts`); they are plain integers, safe to read from another
    thread.
    """

    def __init__(self, prf_hz: float, **clock_kwargs) -> None:
        self.clock = LineClock(prf_hz, **clock_kwargs)
        self.counts = FrameCounts()
        self._expected_seq: int | None = None

    def check(self, block: LineBlock, *, discontinuity: bool = False) -> LineBlock | None:
        """``block`` (re-timed if needed), or None when its samples are not all finite.

        discontinuity : the source jumped on purpose before this block (a seek): its seq is
        neither a gap nor a restart, and the clock forgets its anchor.
        """
        c = self.counts
        n = block.n_lines
        if discontinuity:
            self.clock.forget_anchor()
        elif self._expected_seq is not None:
            if block.seq > self._expected_seq:
                c.gaps += 1
                c.lines_missing += block.seq - self._expected_seq
            elif block.seq < self._expected_seq:
                c.restarts += 1
        self._expected_seq = block.seq + n
        if not all_finite(block.lines):
            c.frames_rejected += 1
            c.lines_rejected += n
            return None
        t_s, retimed = self.clock.time_block(block.seq, n, block.t_s)
        if not retimed:
            return block
        c.frames_retimed += 1
        c.lines_retimed += n
        return replace(block, t_s=t_s)
