"""The window's settings at work: processing and view choices, *Auto*, the tracking gate.

Processing choices (gain, range, TGC, denoising, model) go to the running engine as new
pipeline settings (:meth:`SettingsController.send_settings`; the engine applies them in its
processing thread, a model change loads the new network there). *Auto* asks the engine to
set 0 dB from the lines on screen; the tracking gate (Shift+click) restarts the tracker at
a depth. View choices (overlays, calipers) stay in the window.
"""

from __future__ import annotations

import numpy as np

from mmode.errors import MmodeError
from mmode.gui.calipers import HINTS
from mmode.gui.engine_link import classifier_name


class SettingsController:
    """Applies the control panel's choices of the window ``w``."""

    def __init__(self, w) -> None:
        self.w = w

    def apply_processing(self) -> None:
        w = self.w
        model = w.s.model
        w.panel.apply_to(w.s)
        if w.s.model != model:  # the old model's class no longer describes what comes
            w.reader.label, w.reader.confidence = -1, float("nan")
        self.update_class_note()
        self.send_settings()

    def send_settings(self) -> None:
        """Send the current pipeline settings to the running engine, if any."""
        w = self.w
        if w.engine is not None:
            try:
                w.engine.update_settings(w._pipeline_settings())
            except MmodeError as exc:
                w.show_error(str(exc))

    def auto_level(self) -> None:
        """*Auto*: the engine sets 0 dB again from the lines on screen (it applies from the
        next lines processed; a frozen image keeps its pixels) and the gain goes back to 0 dB."""
        w = self.w
        if w._dirty and w.ring is not None and w.ring.n_written:
            w._render()  # the span of what is about to be on screen
        if w.engine is None or w.shown_span_s is None:
            w.statusBar().showMessage("Auto: no lines are being processed now; play, then press Auto", 5000)
            return
        t_from_s, t_to_s = w.shown_span_s
        w.engine.relevel(t_from_s, t_to_s)
        w._auto_level_used = True
        w.panel.set_gain_db(0.0)
        self.apply_processing()
        w.statusBar().showMessage(f"Auto: 0 dB from the lines of {t_from_s:.2f}-{t_to_s:.2f} s, gain 0 dB", 5000)

    def gate_moved(self, depth_m: float, finished: bool) -> None:
        """Shift+click / Shift+drag on the image: the marker follows; the gate is set (and the
        tracker restarted) on the click or at the end of the drag."""
        w = self.w
        if w.row_depths_m is None:
            return
        depth_m = float(np.clip(depth_m, w.row_depths_m[0], w.row_depths_m[-1]))
        if finished:
            self.set_gate(depth_m)
        else:
            w.mview.set_gate(depth_m)

    def set_gate(self, depth_m: float | None) -> None:
        """Track the echo at ``depth_m`` (m), or let the tracker choose (None); the engine's
        tracker restarts there (about 1 s before its trace comes back)."""
        w = self.w
        if depth_m is None and w.gate_depth_m is None:
            self.show_gate(None)  # a drag may have moved the marker
            return
        self.show_gate(depth_m)
        self.send_settings()
        where = "automatic" if depth_m is None else w.scale.depth_text(depth_m)
        w.statusBar().showMessage(f"Tracking gate: {where} (G: automatic)", 4000)

    def show_gate(self, depth_m: float | None) -> None:
        w = self.w
        w.gate_depth_m = None if depth_m is None else float(depth_m)
        w.mview.set_gate(w.gate_depth_m)
        w.panel.show_gate(w.gate_depth_m, w.scale)
        w._dirty = True

    def update_class_note(self) -> None:
        """What the header says while there is no class: waiting, classic mode, or no model."""
        w = self.w
        if w.s.model == "classic":
            note = "Classic processing: no classification"
        elif classifier_name(w.s.model) is None:
            note = f"No {w.s.model} model shipped: no classification"
        else:
            note = "Class: waiting for a full window"
        w.mview.no_class_text = note
        w._dirty = True

    def apply_view(self) -> None:
        w = self.w
        w.panel.apply_to(w.s)
        w.mview.show_classes = w.s.show_classes
        w.mview.show_motion = w.s.show_motion
        w.mview.show_motion_network = w.s.show_motion_network
        w.mview.show_rate = w.s.show_rate
        w._dirty = True

    def apply_caliper(self) -> None:
        w = self.w
        w.panel.apply_to(w.s)
        w.calipers.set_kind(w.s.caliper_kind, w.s.n_cycles)
        w.statusBar().showMessage(HINTS[w.s.caliper_kind], 8000)

