"""How many held-back lines a live stream's motion stages track with each block.

The motion tracker holds its first ``select_s`` of lines back while it chooses the echo, then
tracks them with the blocks that follow (:meth:`mmode.dsp.tracker.MotionTracker.process`),
and the learned tracker follows it line for line. Those lines cost what new lines cost, so a
fixed number of them per block is wrong one way or the other: with the network's trace
(about 0.08 ms a line on the 2-core machine) two blocks' worth made every block of a 5 kHz
stream take longer than its 10 ms, and the latency climbed to 30-200 ms for the second that
the catch-up lasted (docs/models.md); with the classic trace alone it could go much faster.

:class:`CatchUp` therefore gives the catch-up part of the time a block leaves: the block's
duration less its own work (every stage, its own lines), ``CATCH_UP_SHARE`` of that, at the
per-line motion cost measured on the lines tracked so far. That running mean prices the extra
lines at the average cost per line, which the learned tracker's fixed cost per call (its
forward pass) makes higher than their marginal cost: the catch-up errs on the slow side.

The block's duration is its lines over the line rate: a file played faster than real time
(the GUI's review at 2x, 4x) leaves less than that, and its catch-up may then fall behind by
at most the time that tracking the held-back lines takes (within the engine's latency bound,
2 s for file review).
"""

from __future__ import annotations

import math

#: Share of a block's spare time (its duration less its own processing) that catching up may
#: take; the rest is headroom for the jitter of a shared machine.
CATCH_UP_SHARE = 0.5
#: The catch-up tracks at least this share of a block's lines per block, so that it ends
#: (within ``1 / MIN_CATCH_UP_SHARE`` times the held-back span: ``select_s`` and the lines
#: that came while the choice ran) even on a stream with no time to spare.
MIN_CATCH_UP_SHARE = 0.1
#: Weight of the newest block in the running per-line costs (an exponential mean over about
#: the last four blocks: one slow or fast block does not set the pace).
COST_WEIGHT = 0.25


class CatchUp:
    """Running per-line costs of a stream's stages, and the catch-up they allow per block.

    ``lines(n, block_s)`` before a block's motion stages, ``update(...)`` after the block.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the costs (a new stream, a new tracker)."""
        self.motion_s_per_line: float | None = None
        self.other_s_per_line: float | None = None

    def lines(self, n_lines: int, block_s: float) -> int:
        """Held-back lines to track beyond a block's own ``n_lines`` (of ``block_s`` seconds of
        stream): none measured yet, the least share; else ``CATCH_UP_SHARE`` of the block's
        spare time at the measured motion cost per line."""
        least = math.ceil(MIN_CATCH_UP_SHARE * n_lines)
        if self.motion_s_per_line is None or self.other_s_per_line is None:
            return least
        own_s = n_lines * (self.motion_s_per_line + self.other_s_per_line)
        spare_s = block_s - own_s
        return max(least, int(CATCH_UP_SHARE * spare_s / max(self.motion_s_per_line, 1e-9)))

    def update(self, n_lines: int, other_s: float, n_tracked: int, motion_s: float) -> None:
        """A block of ``n_lines`` took ``other_s`` in the stages that process its own lines
        (display, classifier) and ``motion_s`` in the motion stages, which tracked
        ``n_tracked`` lines (0 while the echo is chosen: that time is not a per-line cost)."""
        if n_lines > 0:
            self.other_s_per_line = _mean(self.other_s_per_line, other_s / n_lines)
        if n_tracked > 0:
            self.motion_s_per_line = _mean(self.motion_s_per_line, motion_s / n_tracked)


def _mean(old: float | None, new: float) -> float:
    """The running mean after ``new`` (``COST_WEIGHT`` on it; ``new`` itself when none yet)."""
    return new if old is None else (1.0 - COST_WEIGHT) * old + COST_WEIGHT * new
