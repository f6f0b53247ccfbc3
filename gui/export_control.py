"""Exports of the window: the views as PNG, the measurements as CSV, the JSON report.

The report of a file adds the ``mmode process`` analysis of the whole file, run in a worker
thread (:meth:`ExportController.export_report`); the report is written on the GUI thread
when it is done (:meth:`ExportController.poll`, from the draw timer).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from mmode.gui import export
from mmode.ingest.meta import CLASSES


class ExportController:
    """Reads what it exports from the window ``w`` (views, ring, results, measurements)."""

    def __init__(self, w) -> None:
        self.w = w
        self._report_job: tuple[threading.Thread, dict, Path] | None = None

    def png(self, path: str | Path) -> Path:
        """The M-mode and A-line views with their overlays and calipers, as PNG."""
        w = self.w
        if w._dirty and w.ring is not None and w.ring.n_written:
            w._render()
        return export.export_png(w.view_area, path)

    def csv(self, path: str | Path) -> Path:
        """The measurements, then the tracking gate and the motion state, as CSV."""
        return export.export_csv(self.w.measurements, path, self.motion_summary())

    def motion_summary(self) -> dict:
        return export.motion_summary(self.w.gate_depth_m, self.w.reader.motion_state)

    def report(self, process: dict | None = None) -> dict:
        """The JSON report of this review (``process``: the file analysis, if any)."""
        w = self.w
        stats = dict(w.engine.stats()) if w.engine is not None else {}
        meta = w.file_meta
        if meta is None and w.engine is not None and getattr(w.engine, "meta", None) is not None:
            meta = w.engine.meta.to_dict()
        s = w.s
        view = {"sweep_mm_s": s.sweep_mm_s, "gain_db": s.gain_db, "dynamic_range_db": s.dynamic_range_db,
                "tgc_db": list(s.tgc_db), "denoise": s.denoise_method, "denoise_strength": s.denoise_strength,
                "model": s.model, "frozen": w.frozen}
        level = w.reader.level
        report = export.build_report(w.spec.title() if w.spec else "", meta, view, stats, w.measurements, process,
                                     self.motion_summary(), None if level is None else level.to_dict())
        report["cine"] = self.cine_summary()
        return report

    def cine_summary(self) -> dict:
        """Seconds held in the cine memory and seconds of each class shown in it."""
        w = self.w
        if w.ring is None or not w.ring.n_written:
            return {"seconds": 0.0, "class_seconds": {}}
        held = w.ring.window(w.ring.n_written, w.ring.capacity)
        classes = w.reader.classes or CLASSES
        labels, counts = np.unique(held.label[held.label >= 0], return_counts=True)
        return {"seconds": held.n_cols * w.col_dt_s, "t_start_s": float(held.t_s[0]), "t_stop_s": float(held.t_s[-1]),
                "class_seconds": {classes[int(k)]: float(c) * w.col_dt_s for k, c in zip(labels, counts)
                                  if int(k) < len(classes)}}

    def export_report(self, path: str | Path) -> None:
        """Write the JSON report; for files the ``mmode process`` analysis runs in a worker
        thread first and the report is written when it is done (see :attr:`pending`)."""
        w = self.w
        path = Path(path)
        if w.spec is None or w.spec.kind != "file":
            export.write_json(self.report(), path)
            return
        box: dict = {}
        path_in, settings_in = w.spec.value, w._pipeline_settings()
        options = w.spec.file_options()  # a cine's current M-line and pixel size

        def work() -> None:
            try:
                from mmode.app.cmd_process import analyse
                from mmode.ingest.files import open_recording

                rec = open_recording(path_in, **options)
                try:
                    box["process"] = analyse(rec, settings_in)
                finally:
                    rec.close()
            except Exception as exc:  # reported in the JSON and the status bar, never lost
                box["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=work, name="mmode-report", daemon=True)
        thread.start()
        self._report_job = (thread, box, path)
        w.statusBar().showMessage("analysing the file for the report...", 5000)

    @property
    def pending(self) -> bool:
        return self._report_job is not None

    def poll(self) -> None:
        """Write a report whose analysis has finished (GUI thread)."""
        if self._report_job is None or self._report_job[0].is_alive():
            return
        _thread, box, path = self._report_job
        self._report_job = None
        report = self.report(box.get("process"))
        if "error" in box:
            report["process_error"] = box["error"]
            self.w.show_error(f"report: file analysis failed: {box['error']}")
        try:
            export.write_json(report, path)
        except OSError as exc:
            self.w.show_error(f"report: {exc}")
            return
        self.w.statusBar().showMessage(f"report written to {path}", 5000)
