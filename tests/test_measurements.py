"""Caliper math and presets against hand-computed values; CSV/JSON output is parseable."""

import csv
import io
import json

import pytest

from mmode.errors import DataError
from mmode.gui import measurements as M


def test_time_depth_slope_known_geometry():
    # a reflector moving from 30 mm to 45 mm deep in 0.25 s
    p1, p2 = (1.00, 0.030), (1.25, 0.045)
    assert M.time_interval(p1, p2).value == pytest.approx(250.0)
    assert M.depth_distance(p1, p2).value == pytest.approx(15.0)
    s = M.slope(p1, p2)
    assert s.value == pytest.approx(60.0) and s.unit == "mm/s"
    assert M.slope(p2, p1).value == pytest.approx(60.0)  # same line, either click order
    assert M.slope((0.0, 0.05), (0.5, 0.04)).value == pytest.approx(-20.0)  # towards the probe


def test_heart_rate_over_cycles():
    # 3 cycles in 2.4 s -> 0.8 s per beat -> 75 bpm
    hr = M.heart_rate((0.3, 0.02), (2.7, 0.02), n_cycles=3)
    assert hr.value == pytest.approx(75.0)
    assert hr.extra["interval_ms"] == pytest.approx(2400.0)
    with pytest.raises(DataError):
        M.heart_rate((1.0, 0.0), (1.0, 0.0))
    with pytest.raises(DataError):
        M.heart_rate((1.0, 0.0), (2.0, 0.0), n_cycles=0)


def test_presets_and_normal_ranges():
    t = M.tapse((0.0, 0.080), (0.2, 0.058))  # 22 mm excursion
    assert t.value == pytest.approx(22.0) and t.in_range is True and t.value_text() == "22.0 mm"
    assert M.tapse((0.0, 0.080), (0.2, 0.068)).in_range is False  # 12 mm
    e = M.epss((0.0, 0.040), (0.0, 0.052))  # 12 mm: reduced EF suspected
    assert e.value == pytest.approx(12.0) and e.in_range is False
    assert M.epss((0.0, 0.040), (0.0, 0.045)).in_range is True
    fs = M.fractional_shortening(((0.0, 0.03), (0.0, 0.08)), ((0.3, 0.04), (0.3, 0.075)))
    # LVIDd 50 mm, LVIDs 35 mm -> 30 %
    assert fs.value == pytest.approx(30.0) and fs.in_range is True
    assert fs.extra == pytest.approx({"lvidd_mm": 50.0, "lvids_mm": 35.0})
    assert "normal" in fs.text() and "%" in fs.text()


def test_measure_dispatch_and_bad_input():
    assert M.measure("fs", [(0, 0.03), (0, 0.08), (0.3, 0.04), (0.3, 0.075)]).value == pytest.approx(30.0)
    with pytest.raises(DataError):
        M.measure("fs", [(0, 0.03), (0, 0.08)])
    with pytest.raises(DataError):
        M.measure("area", [(0, 0), (1, 1)])
    with pytest.raises(DataError):
        M.measure("time", [(0, float("nan")), (1, 1)])


def test_csv_and_dict_roundtrip():
    ms = [M.tapse((0.0, 0.080), (0.2, 0.058)), M.time_interval((0.0, 0.0), (0.5, 0.0))]
    rows = list(csv.DictReader(io.StringIO(M.to_csv(ms))))
    assert [r["name"] for r in rows] == ["TAPSE", "Time"]
    assert float(rows[0]["value"]) == pytest.approx(22.0)
    assert rows[0]["normal_low"] == "17" and rows[0]["in_range"] == "true"
    assert rows[1]["in_range"] == "" and float(rows[1]["value"]) == pytest.approx(500.0)
    d = json.loads(json.dumps([M.to_dict(m) for m in ms], allow_nan=False))
    assert d[0]["points"][1] == {"t_s": 0.2, "depth_m": 0.058}
