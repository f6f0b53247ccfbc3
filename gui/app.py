"""Start the Qt application with one window (``mmode gui``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PyQt6.QtCore import QSettings, QTimer, qInstallMessageHandler
from PyQt6.QtGui import QColor, QPalette
from PyQt6.QtWidgets import QApplication

from mmode.errors import DataError, UsageError, describe
from mmode.gui import export
from mmode.gui.engine_link import SourceSpec
from mmode.gui.settings import SWEEP_SPEEDS_MM_S


def run_app(spec: SourceSpec, *, screenshot: str | None = None, quit_after_s: float | None = None,
            sweep_mm_s: int | None = None, settings_path: str | None = None, motion: str | None = None) -> dict:
    """Open the window on ``spec`` and run the event loop; returns drawing statistics.

    screenshot : PNG path written just before quitting (needs ``quit_after_s``; default 6 s).
    settings_path : an INI file for the settings; default the user's QSettings, except for
        screenshots, which use the defaults so that the picture is reproducible.
    """
    from mmode.gui.main_window import MainWindow
    from mmode.ingest.scenarios import SCENARIOS

    if QApplication.instance() is None and _no_display():
        if screenshot is None:
            raise UsageError(describe("display", "DISPLAY or WAYLAND_DISPLAY set (or --screenshot for headless use)",
                                      "none"))
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # headless picture
        qInstallMessageHandler(_quiet_offscreen)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("mmode")
    app.setApplicationName("mmode")
    apply_dark_theme(app)
    tmp = None
    if settings_path is not None:
        store = QSettings(settings_path, QSettings.Format.IniFormat)
    elif screenshot is not None:
        tmp = tempfile.TemporaryDirectory()
        store = QSettings(str(Path(tmp.name) / "settings.ini"), QSettings.Format.IniFormat)
    else:
        store = QSettings()
    if motion is not None:  # --motion: which traces the pipeline computes (GuiSettings.motion_source)
        store.setValue("motion_source", motion)
        store.setValue("show_motion_network", motion != "classic")
    window = MainWindow(spec, store, scenarios=tuple(SCENARIOS))
    if sweep_mm_s is not None:
        window.panel.sweep.setCurrentIndex(SWEEP_SPEEDS_MM_S.index(sweep_mm_s))
    window.show()
    if screenshot is not None and quit_after_s is None:
        quit_after_s = 6.0
    error: list[str] = []
    engine_stats: dict = {}

    def finish() -> None:
        if window.engine is not None:
            engine_stats.update(window.engine.stats())
        if screenshot is not None:
            window._tick()
            if not window.grab().save(screenshot, "PNG"):
                error.append(describe(screenshot, "a writable PNG path", "save failed"))
        window.close()
        app.quit()

    if quit_after_s is not None:
        QTimer.singleShot(int(quit_after_s * 1000), finish)
    app.exec()
    stats = {
        "source": spec.title(),
        "frames_drawn": window.frames.n_frames,
        "fps": window.frames.mean_fps(),
        "frame_ms_p50": window.frames.frame_ms(50),
        "frame_ms_p95": window.frames.frame_ms(95),
        "last_error": window.last_error or None,
        "engine": {k: engine_stats[k] for k in ("state", "line_rate_hz", "prf_hz", "lines_processed", "lines_dropped",
                                                "latency_ms", "inference_ms", "realtime_factor") if k in engine_stats},
    }
    if tmp is not None:
        tmp.cleanup()
    if error:
        raise DataError(error[0])
    return export.json_safe(stats)


def _no_display() -> bool:
    """True on a Linux machine without a display server and no Qt platform chosen."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _quiet_offscreen(mode, context, message: str) -> None:
    """Qt messages to stderr, without the offscreen plugin's harmless size-hint warning."""
    if "does not support propagateSizeHints" not in message:
        sys.stderr.write(message + "\n")


def apply_dark_theme(app: QApplication) -> None:
    """Fusion style with a dark palette: scanning rooms are dim, the image should stand out."""
    app.setStyle("Fusion")
    pal = QPalette()
    role = QPalette.ColorRole
    for r, rgb in ((role.Window, (40, 40, 42)), (role.WindowText, (220, 220, 220)), (role.Base, (28, 28, 30)),
                   (role.AlternateBase, (45, 45, 48)), (role.Text, (220, 220, 220)), (role.Button, (52, 52, 56)),
                   (role.ButtonText, (220, 220, 220)), (role.Highlight, (42, 110, 190)),
                   (role.HighlightedText, (255, 255, 255)), (role.ToolTipBase, (60, 60, 64)),
                   (role.ToolTipText, (230, 230, 230)), (role.PlaceholderText, (140, 140, 140))):
        pal.setColor(r, QColor(*rgb))
    pal.setColor(QPalette.ColorGroup.Disabled, role.ButtonText, QColor(120, 120, 120))
    pal.setColor(QPalette.ColorGroup.Disabled, role.Text, QColor(120, 120, 120))
    app.setPalette(pal)
