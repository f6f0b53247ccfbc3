"""`mmode gui` on the command line: bad input exits with 3 or 2, --screenshot writes a PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PyQt6.QtGui import QImage

from mmode.app.cli import main


def test_bad_file_exits_3_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    assert main(["gui", str(bad)]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmode gui:") and "\n" not in err and "Traceback" not in err
    assert main(["gui", str(tmp_path / "missing.h5")]) == 3


def test_bad_options_exit_2(capsys):
    assert main(["gui", "--sim", "no_such_scenario"]) == 2
    assert main(["gui", "--sim", "lung_sliding", "--quit-after", "-1"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["gui", "--sweep", "30"])
    assert exc.value.code == 2


def test_screenshot_of_the_simulator(tmp_path):
    """As a user runs it: a process of its own, no display, the picture written, exit 0."""
    png = tmp_path / "shot.png"
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run(
        [sys.executable, "-m", "mmode", "gui", "--sim", "cardiac_regular", "--prf", "500", "--screenshot", str(png),
         "--quit-after", "4", "--json", "--settings", str(tmp_path / "s.ini")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["source"] == "Simulator: cardiac_regular" and stats["last_error"] is None
    img = QImage(str(png))
    assert not img.isNull() and img.width() > 800 and img.height() > 500
