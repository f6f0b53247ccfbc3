"""The learned motion trace on the window: its own colour, a legend, a toggle, and its
inference time in the status bar (the fake engine of test_gui.py with a second trace)."""

from __future__ import annotations

import numpy as np
import pytest

from mmode.dsp.tracker import MotionBlock
from mmode.gui.engine_link import SourceSpec

from test_gui import BREATH_HZ, PRF_HZ, TRACK_DEPTH_M, FakeEngine, open_source, run_ticks, store, window  # noqa: F401

NET_MS = 2.5


class WithNetwork(FakeEngine):
    """Results also carry a learned trace: the classic one plus 0.5 mm, and its timing."""

    def poll_results(self):
        out = FakeEngine.poll_results(self)
        for r in out:
            disp = r.motion.displacement_m + 0.0005
            r.motion_network = MotionBlock(r.motion.t_s, disp, np.gradient(disp) * PRF_HZ,
                                           np.ones_like(disp), TRACK_DEPTH_M)
            r.timings_ms = {"dsp": 1.0, "motion": 0.5, "motion_network": NET_MS}
        return out


def test_network_trace_drawn_in_its_colour_with_legend_and_toggle(window):
    from mmode.gui.mmode_view import MOTION_NET_PEN, MOTION_PEN

    window.engine_factory = WithNetwork
    window.panel.show_motion_network.setChecked(False)
    open_source(window, SourceSpec("sim", "lung_sliding"))
    assert window.engine.settings.motion == "classic"  # toggle off: the classic trace only
    window.panel.show_motion_network.setChecked(True)
    assert window.engine.updates[-1].motion == "auto"  # the toggle runs the network where the rate allows
    run_ticks(window, 30)
    x, y = window.mview.net_curve.getData()
    assert window.mview.net_curve.isVisible() and window.mview.legend.isVisible()
    expect = (TRACK_DEPTH_M + 0.0005 + 0.002 * np.sin(2 * np.pi * BREATH_HZ * x)) * 100
    np.testing.assert_allclose(y, expect, atol=1e-4)
    xc, yc = window.mview.motion_curve.getData()
    np.testing.assert_allclose(y - yc, 0.05, atol=1e-4)  # the same columns, 0.5 mm apart
    pen = window.mview.net_curve.opts["pen"].color()
    assert (pen.red(), pen.green(), pen.blue()) == MOTION_NET_PEN and MOTION_NET_PEN != MOTION_PEN
    labels = [label.text for _, label in window.mview.legend.items]
    assert labels == ["classic tracker", "network"]
    window._update_status()
    assert f"network {NET_MS:.1f} ms/block" in window.motion_label.text()
    window.panel.show_motion_network.setChecked(False)
    run_ticks(window, 1)
    assert not window.mview.net_curve.isVisible() and not window.mview.legend.isVisible()
    assert window.mview.motion_curve.isVisible()
    assert window.s.show_motion_network is False
    assert window.engine.updates[-1].motion == "classic"
    window.engine_factory = FakeEngine  # results without a learned trace: its time leaves the status bar
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 2)
    window._update_status()
    assert "network" not in window.motion_label.text()


def test_without_a_network_trace_no_legend(window):
    open_source(window, SourceSpec("sim", "lung_sliding"))
    run_ticks(window, 10)
    assert not window.mview.net_curve.isVisible() and not window.mview.legend.isVisible()
    window._update_status()
    assert "network" not in window.motion_label.text()


def test_network_on_at_first_and_says_when_auto_turns_it_off(window):
    """A new window runs the learned trace where the line rate allows ("auto", on); above
    that rate the status bar says why there is no cyan trace."""
    from mmode.gui.settings import GuiSettings

    assert GuiSettings().show_motion_network and GuiSettings().motion_source == "auto"
    open_source(window, SourceSpec("sim", "lung_sliding"))
    assert window.engine.settings.motion == "auto"
    run_ticks(window, 2)
    window.reader.motion_state = {**window.reader.motion_state, "motion": "classic"}  # as a 20 kHz pipeline says
    window._update_status()
    assert window.motion_label.text().endswith("network off")
    assert "up to 5000 lines/s" in window.motion_label.toolTip()


@pytest.mark.parametrize("mode", ["auto", "classic", "network", "both"])
def test_motion_setting_reaches_the_pipeline(window, mode):
    window.s.motion_source = mode
    window.s.show_motion_network = True
    open_source(window, SourceSpec("sim", "lung_sliding"))
    assert window.engine.settings.motion == mode
