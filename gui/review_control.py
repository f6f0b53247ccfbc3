"""Freeze, pause, step, jump to a class change and seek: the review of the cine memory.

Live sources keep running while frozen (results are counted, not drawn) and the frozen cine
can be scrolled; unfreezing restarts the sweep. A file plays once (no loop): freezing pauses
its playback (the engine and its pipeline state stay), playing goes on from there, a file
that has ended plays again from its start, and a seek outside the cine memory plays from
that line on a new engine (a new timeline, built off the GUI thread; the class strip stays
empty until the first classifier window of the new timeline).
"""

from __future__ import annotations

import math

import numpy as np


class ReviewController:
    """The review state of the window ``w``: ``frozen`` and the ``cursor_col`` (absolute
    display column of the review cursor while frozen)."""

    def __init__(self, w) -> None:
        self.w = w
        self.frozen = False
        self.cursor_col = 0

    def toggle(self) -> None:
        self.set_frozen(not self.frozen)

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (files: pause) or unfreeze (files: play on; live: restart the sweep)."""
        w = self.w
        if frozen == self.frozen:
            return
        self.frozen = frozen
        self.show_frozen(frozen)
        is_file = w.spec is not None and w.spec.kind == "file"
        if frozen:
            if is_file:
                w.source.pause(True)  # an ended file's engine stays, for its pipeline and stats
            self.cursor_col = self.live_end() - 1
        elif is_file:
            # still opening: it plays once open; ended (or none): play from the next line again
            if not w.source.opening and not w.source.pause(False):
                line = w.next_file_line()
                w.restart_file(line, clear=line == 0)
        elif w.ring is not None:
            w.ring.clear()
        w.sweep.reset()
        w._dirty = True

    def live_end(self) -> int:
        """Exclusive end column of what the live sweep shows now."""
        ring, sweep = self.w.ring, self.w.sweep
        if ring is None or not ring.n_written:
            return 0
        if not math.isfinite(sweep.t_s):
            return ring.n_written
        held = ring.window(ring.n_written, ring.capacity)
        return max(held.start + 1, held.start + int(np.searchsorted(held.t_s, sweep.t_s, side="right")))

    def show_frozen(self, frozen: bool) -> None:
        """Freeze button and play button show the state, without emitting signals."""
        freeze = self.w.panel.freeze
        freeze.blockSignals(True)
        freeze.setChecked(frozen)
        freeze.setText("Unfreeze (Space)" if frozen else "Freeze (Space)")
        freeze.blockSignals(False)
        self.w.review.set_playing(not frozen)

    def step(self, direction: int) -> None:
        """Move the review cursor by 1/100 of the window (freezes first)."""
        ring = self.w.ring
        if ring is None:
            return
        if not self.frozen:
            self.set_frozen(True)
        step = max(1, self.w.window_cols() // 100)
        self.cursor_col = int(min(max(self.cursor_col + direction * step, ring.oldest), ring.n_written - 1))
        self.w._dirty = True

    def jump_class_change(self, direction: int) -> None:
        """Centre the review cursor on the previous (-1) or next (+1) change of class."""
        ring = self.w.ring
        if ring is None:
            return
        if not self.frozen:
            self.set_frozen(True)
        c = self.cursor_col
        target = ring.next_change(c) if direction > 0 else ring.previous_change(c)
        if target is None:
            self.w.statusBar().showMessage("no further class change in the cine memory", 3000)
            return
        self.cursor_col = target
        self.w._dirty = True

    def seek(self, t_s: float) -> None:
        """Review time ``t_s``: inside the cine memory move the view, else (files) play from
        there on a new engine."""
        w = self.w
        ring = w.ring
        held = ring.window(ring.n_written, ring.capacity) if ring is not None else None
        if held is not None and held.n_cols and held.t_s[0] <= t_s <= held.t_s[-1]:
            if not self.frozen:
                self.set_frozen(True)
            self.cursor_col = ring.column_at_time(t_s)
            w._dirty = True
        elif w.file_times_s is not None:
            line = int(np.clip(np.searchsorted(w.file_times_s, t_s), 0, len(w.file_times_s) - 1))
            self.frozen = False
            self.show_frozen(False)
            w.restart_file(line, clear=True)
