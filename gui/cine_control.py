"""The M-line of a cine file (a DICOM multi-frame with a 2D region, a video) in the window.

The frames are decoded once, in the worker that opens the file; the window plays the
M-mode along the M-line from memory. :meth:`CineController.show_mline` makes an M-mode the
one the window measures on (times, metadata, calibration, the line on the B-mode pane);
:meth:`CineController.mline_moved` recomputes it when a drag of the line ends and plays it
from the start on a new engine (the calipers and the gate of the old line are cleared).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mmode.errors import MmodeError
from mmode.gui.calibration import caliper_scale, mline_text
from mmode.gui.cine import CineMmode, cine_mmode, clip_line


class CineController:
    """The cine M-line of the window ``w``."""

    def __init__(self, w) -> None:
        self.w = w

    def show_mline(self, mmode: CineMmode) -> None:
        """Make ``mmode`` (the M-mode along an M-line) the file the window measures on: its
        times, metadata and calibration, the line on the B-mode."""
        w = self.w
        n = mmode.lines.shape[0]
        w.file_times_s = np.arange(n, dtype=np.float64) / mmode.meta.prf_hz
        w.file_meta = mmode.meta.to_dict()
        scale = caliper_scale(mmode.meta, mmode.info, w.cine_frames.regions)
        w._set_scale(scale)
        w.bview.set_line(mmode.line, mline_text(mmode.line, mmode.info["mline"]["step_m"], scale.note))

    def mline_moved(self, line: tuple[float, float, float, float]) -> None:
        """A drag of the M-line ended: recompute the M-mode from the frames in memory and play
        it from the start (a line that makes no M-mode puts the old one back)."""
        w = self.w
        if w.cine_frames is None or w.spec is None or w.spec.cine is None:
            return
        try:
            mmode = cine_mmode(w.cine_frames, clip_line(line, w.cine_frames.shape), w.spec.px_per_cm)
        except MmodeError as exc:
            w.show_error(f"M-line: {exc}")
            old = w.spec.cine
            w.bview.set_line(old.line, mline_text(old.line, old.info["mline"]["step_m"], w.scale.note))
            return
        w.clear_measurements()  # they were made on the old line's M-mode
        w._show_gate(None)
        self.show_mline(mmode)
        w.spec = replace(w.spec, mline=mmode.line, cine=mmode, start_line=0)
        w.ring = None  # the new line has its own depths
        w.row_depths_m = None
        w.shown_span_s = None
        w.sweep.reset()
        w.reviewing.frozen = False
        w.reviewing.show_frozen(False)
        w.restart_file(0, clear=False)
        w.statusBar().showMessage("M-mode recomputed along the new M-line", 5000)

