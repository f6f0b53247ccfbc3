"""The window's list of caliper measurements: added, moved, undone, cleared.

:class:`~mmode.gui.calipers.CaliperTool` does the clicking and the math; this keeps the
list the exports read in step with the table of the control panel.
"""

from __future__ import annotations

from mmode.gui.measurements import Measurement


class MeasurementController:
    """``panel`` : the ControlPanel (its table); ``calipers`` : the CaliperTool;
    ``say(text)`` : a transient status-bar message."""

    def __init__(self, panel, say) -> None:
        self.panel = panel
        self.say = say
        self.calipers = None  # set once the tool exists (it calls back into this)
        self.items: list[Measurement] = []

    def add(self, m: Measurement) -> None:
        self.items.append(m)
        self.panel.add_measurement(m)
        self.say(m.text())

    def changed(self, old: Measurement, new: Measurement) -> None:
        i = next(k for k, m in enumerate(self.items) if m is old)
        self.items[i] = new
        self.panel.set_measurement(i, new)
        self.say(new.text())

    def undo(self) -> None:
        """Delete key: drop unfinished caliper points, or else the last measurement."""
        if self.calipers.undo():
            self.items.pop()
            self.panel.table.removeRow(self.panel.table.rowCount() - 1)

    def clear(self) -> None:
        self.items = []
        self.calipers.clear()
        self.panel.clear_table()
