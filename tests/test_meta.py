"""AcquisitionMeta, check_lines and Recording: validation, depth axis, lazy access."""

import math

import numpy as np
import pytest

from mmode.errors import DataError
from mmode.ingest.meta import CLASSES, AcquisitionMeta, check_lines
from mmode.ingest.recording import Annotation, Recording


def test_depth_axis_matches_two_way_travel_time():
    meta = AcquisitionMeta("rf", fs_hz=40e6, f0_hz=5e6, prf_hz=1000, c_m_s=1500, t0_s=4e-6)
    k = np.arange(5)
    expected = 1500 * (4e-6 + k / 40e6) / 2  # z = c t / 2, t = t0 + k / fs
    np.testing.assert_allclose(meta.depth_axis_m(5), expected, rtol=1e-15)
    assert meta.depth_m(0) == pytest.approx(3e-3)
    assert meta.sample_spacing_m == pytest.approx(1500 / 80e6)
    np.testing.assert_allclose(meta.sample_at_depth(expected), k, atol=1e-9)


def test_nyquist_velocity():
    meta = AcquisitionMeta("iq", fs_hz=10e6, f0_hz=5e6, prf_hz=4000)
    assert meta.nyquist_velocity_m_s == pytest.approx(1540 * 4000 / (4 * 5e6))
    assert math.isinf(AcquisitionMeta("envelope", fs_hz=10e6, f0_hz=0, prf_hz=100).nyquist_velocity_m_s)


def test_from_mapping_round_trip_and_types():
    meta = AcquisitionMeta("rf", 40e6, 5e6, 1000, probe="L7", description="x")
    d = meta.to_dict()
    assert d == {
        "kind": "rf",
        "fs_hz": 40e6,
        "f0_hz": 5e6,
        "prf_hz": 1000.0,
        "c_m_s": 1540.0,
        "t0_s": 0.0,
        "probe": "L7",
        "description": "x",
    }
    attrs = {k: (np.float64(v) if isinstance(v, float) else v.encode()) for k, v in d.items()}
    assert AcquisitionMeta.from_mapping(attrs) == meta
    assert len(CLASSES) == 7 and len(set(CLASSES)) == 7


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(kind="bmode", fs_hz=1e6, f0_hz=1e5, prf_hz=10), "kind one of"),
        (dict(kind="rf", fs_hz=0, f0_hz=1e5, prf_hz=10), "fs_hz > 0"),
        (dict(kind="rf", fs_hz=1e6, f0_hz=1e5, prf_hz=float("nan")), "prf_hz > 0 and finite"),
        (dict(kind="rf", fs_hz=1e6, f0_hz=6e5, prf_hz=10), "below fs_hz/2"),
        (dict(kind="iq", fs_hz=1e6, f0_hz=0, prf_hz=10), "f0_hz > 0 for kind 'iq'"),
        (dict(kind="rf", fs_hz=1e6, f0_hz=1e5, prf_hz=10, t0_s=-1e-6), "t0_s >= 0"),
        (dict(kind="rf", fs_hz="fast", f0_hz=1e5, prf_hz=10), "fs_hz a number"),
    ],
)
def test_invalid_metadata_is_a_data_error(kw, match):
    with pytest.raises(DataError, match=match):
        AcquisitionMeta(**kw)


def test_from_mapping_names_source_and_missing_keys():
    with pytest.raises(
        DataError, match=r"^rec\.h5: expected attributes kind, fs_hz, f0_hz, prf_hz, found \['fs_hz'\] missing"
    ):
        AcquisitionMeta.from_mapping({"kind": "rf", "f0_hz": 1, "prf_hz": 1}, source="rec.h5")


def test_check_lines():
    meta = AcquisitionMeta("rf", 40e6, 5e6, 1000)
    check_lines(np.zeros((3, 4), np.int16), meta, "x")
    with pytest.raises(DataError, match="shape"):
        check_lines(np.zeros(4), meta, "x")
    with pytest.raises(DataError, match="n_samples > 0"):
        check_lines(np.zeros((3, 0)), meta, "x")
    bad = np.zeros((5, 4), np.float32)
    bad[3, 2] = -np.inf
    with pytest.raises(DataError, match="NaN or Inf in line 3"):
        check_lines(bad, meta, "x")


def _recording(lines, meta, **kw):
    calls = []

    def read_fn(a, b):
        calls.append((a, b))
        return lines[a:b]

    return Recording("mem", meta, lines.shape, lines.dtype, read_fn, **kw), calls


def test_recording_blocks_info_and_nan_detection():
    meta = AcquisitionMeta("envelope", 10e6, 0, 100)
    lines = np.arange(50 * 8, dtype=np.float32).reshape(50, 8)
    rec, calls = _recording(lines, meta, annotations=(Annotation(0, 5, "a"),))
    blocks = list(rec.blocks(16))
    assert [b.seq for b in blocks] == [0, 16, 32, 48]
    assert [b.t_s for b in blocks] == [0.0, 0.16, 0.32, 0.48]
    np.testing.assert_array_equal(np.concatenate([b.lines for b in blocks]), lines)
    info = rec.info()
    assert info["duration_s"] == pytest.approx(0.5) and info["n_lines"] == 50
    assert info["depth_m"] == pytest.approx([0.0, 1540 * 7 / 10e6 / 2])
    assert info["annotations"] == [{"start_line": 0, "end_line": 5, "label": "a"}]
    with pytest.raises(DataError, match="line range"):
        rec.read(10, 51)
    timed, _ = _recording(lines, meta, timestamps_fn=lambda: np.arange(50) / 100.0)
    with pytest.raises(DataError, match="line range"):
        next(timed.blocks(16, 60, 70))
    lines[37, 1] = np.nan
    with pytest.raises(DataError, match="NaN or Inf in line 37"):
        rec.read(30, 40)


def test_check_finite_reads_in_bounded_blocks():
    meta = AcquisitionMeta("envelope", 10e6, 0, 100)
    lines = np.ones((1000, 256), np.float32)
    rec, calls = _recording(lines, meta)
    assert rec.check_finite(max_block_bytes=64 * 1024) == 1000
    assert max(b - a for a, b in calls) == 64  # 64 KiB / (256 samples x 4 bytes)
    assert calls[0][0] == 0 and calls[-1][1] == 1000
    lines[999, 0] = np.inf
    with pytest.raises(DataError, match="NaN or Inf in line 999"):
        rec.check_finite(max_block_bytes=64 * 1024)
