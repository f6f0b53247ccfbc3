"""Drawing the window's views from the engine's Results (GUI thread, from the draw timer).

:meth:`Drawing.ingest` pushes each Results into the :class:`~mmode.gui.mmode_data.DisplayRing`
(the cine memory: image, class, trace per column; a new timeline clears it and the class it
carried); :meth:`Drawing.render` draws the window of it that the sweep (live) or the review
cursor (frozen) shows: the M-mode with its overlays, the B-mode frame of a cine, the A-line,
the review bar and the header's class and rate.
"""

from __future__ import annotations

import math
import time

import numpy as np

from mmode.gui.cine import frame_at
from mmode.gui.mmode_data import DisplayRing, overlay_rate
from mmode.ingest.meta import CLASSES

COLUMN_RATE_HZ = 500.0
LIVE_CINE_S = 60.0
MAX_FILE_CINE_S = 300.0
RATE_INTERVAL_S = 0.5
SLOW_VIEWS_INTERVAL_S = 0.1
#: Trace the overlay rate is measured on: twice the report's minimum for a breathing rate
#: (dsp.rates.MIN_BREATHING_S), four breaths at 12/min.
RATE_TRACE_S = 20.0


class Drawing:
    """The draw steps of the window ``w`` (its ring, reader, sweep and views)."""

    def __init__(self, w) -> None:
        self.w = w

    def ingest(self, r) -> None:
        w = self.w
        db = np.asarray(r.display_db)
        if w.ring is None or db.shape[1] != w.ring.n_rows:
            prf_hz = float(w.engine.meta.prf_hz)
            cine_s = LIVE_CINE_S
            if w.file_times_s is not None:
                cine_s = min(MAX_FILE_CINE_S, len(w.file_times_s) / prf_hz + 1.0)
            w.ring = DisplayRing.for_rate(db.shape[1], prf_hz, cine_s, COLUMN_RATE_HZ)
            w.col_dt_s = w.ring.decimation / prf_hz
            w.line_dt_s = 1.0 / prf_hz
            w.row_depths_m = np.asarray(r.row_depths_m, np.float64)
            w.mview.set_depths(w.row_depths_m)
            if any(g != 0 for g in w.s.tgc_db):
                w._apply_processing()  # TGC knobs need the depth range
        if len(r.t_s) and w.ring.n_written and r.t_s[0] < w.ring.window(w.ring.n_written, 1).t_s[-1]:
            # a new timeline (a stream restarted): a new cine, and no class of the old one on it
            w.ring.clear()
            w.sweep.reset()
            w.reader.label, w.reader.confidence = -1, float("nan")
        label, conf, track, quality = w.reader.read(r)
        w._last_seq = int(r.seq_stop)
        if len(r.t_s) == 0:  # the end of a stream: only the tracker's last held-back lines
            if w.reader.late_track is not None:
                w.ring.set_track(*w.reader.late_track)
                w._dirty = True
            if w.reader.net_track is not None:
                w.ring.set_net_track(*w.reader.net_track)
                w._dirty = True
            return
        live = w.spec is not None and w.spec.kind != "file"
        if w.frozen and live:
            return  # live source keeps running; the frozen cine stays as it is
        w.ring.push(db, r.t_s, w.s.dynamic_range_db, label, conf, track, quality)
        if w.reader.late_track is not None:
            w.ring.set_track(*w.reader.late_track)
        if w.reader.net_track is not None:
            w.ring.set_net_track(*w.reader.net_track)
        for t_from, t_to, label_k, conf_k in w.reader.relabel:
            w.ring.set_labels(t_from, t_to, label_k, conf_k)
        w.sweep.arrived(time.perf_counter(), float(r.t_s[-1]))
        w._dirty = True

    def check_file_end(self) -> None:
        w = self.w
        if w.file_times_s is None or w.frozen or w.engine is None:
            return
        # "ended": the engine has processed the last line and handed over what the motion
        # tracker still held (the last line's arrival alone would stop it before that)
        if getattr(w.engine, "state", "") == "ended":
            w.set_frozen(True)

    def render(self) -> None:
        win = self.w
        ring = win.ring
        n_cols = win.window_cols()
        if win.frozen:
            win.cursor_col = int(min(max(win.cursor_col, ring.oldest), ring.n_written - 1))
            end = ring.clamp_end(win.cursor_col + n_cols // 2 + 1, n_cols)
        else:
            held = ring.window(ring.n_written, ring.capacity)
            end = held.start + int(np.searchsorted(held.t_s, win.sweep.t_s, side="right"))
            end = max(end, held.start + 1)
        w = ring.window(end, n_cols)
        if w.n_cols == 0:
            return
        # lines on screen: from the first line of the first column to the last column's
        win.shown_span_s = (float(w.t_s[0]) - (ring.decimation - 1) * win.line_dt_s, float(w.t_s[-1]))
        cursor = win.cursor_col - w.start if win.frozen else w.n_cols - 1
        x_end = float(w.t_s[-1]) + win.col_dt_s
        if not win.frozen and math.isfinite(win.sweep.t_s):
            x_end = max(x_end, win.sweep.t_s + win.col_dt_s)
        classes = win.reader.classes or CLASSES
        label = int(w.label[cursor]) if win.frozen else win.reader.label
        # probe in air: the tracker follows noise, a trace there would suggest tissue motion
        in_air = 0 <= label < len(classes) and classes[label] == "no_contact"
        win.mview.classes = classes
        win.mview.render(w, win.col_dt_s, win.window_s(), x_end, float(w.t_s[cursor]) if win.frozen else None,
                          motion=not in_air)
        if win.cine_frames is not None:  # the B-mode frame of the current line
            prf_hz = win.spec.cine.meta.prf_hz
            win.bview.show_frame(frame_at(float(w.t_s[cursor]), prf_hz, win.cine_frames.n_frames))
        now = time.perf_counter()
        # the A-line and the review bar change little between frames: a few times a second
        # while live (their repaint would double the frame time), every frame in review
        slow_due = win.frozen or now - win._last_slow_s >= SLOW_VIEWS_INTERVAL_S
        if slow_due:
            win._last_slow_s = now
            win.aline.render(w.image[cursor], win.row_depths_m, win.s.dynamic_range_db)
            self.update_review(float(w.t_s[cursor]))
        if win.frozen or now - win._last_rate_s >= RATE_INTERVAL_S:
            win._last_rate_s = now
            trace = ring.window(w.start + cursor + 1, int(RATE_TRACE_S / win.col_dt_s)).track_depth_m
            win.rate = overlay_rate(trace, win.col_dt_s, classes[label] if 0 <= label < len(classes) else None)
        if win.frozen:
            win.mview.set_header(label, float(w.confidence[cursor]), win.rate)
        else:
            win.mview.set_header(label, win.reader.confidence, win.rate)
        win._dirty = False

    def update_review(self, cursor_t: float) -> None:
        w = self.w
        ring = w.ring
        held = ring.window(ring.n_written, ring.capacity)
        if w.file_times_s is not None:
            w.review.set_span(float(w.file_times_s[0]), float(w.file_times_s[-1]), cursor_t)
        elif held.n_cols:
            w.review.set_span(float(held.t_s[0]), float(held.t_s[-1]), cursor_t)

