"""Format v1 HDF5: layout contract, round trips of both writers, crash safety, validation."""

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mmode.errors import DataError, FormatError
from mmode.ingest.h5format import H5Writer, read_h5, write_recording
from mmode.ingest.meta import CLASSES, AcquisitionMeta, Truth
from mmode.ingest.recording import Annotation

RF = AcquisitionMeta("rf", fs_hz=40e6, f0_hz=5e6, prf_hz=1000.0, t0_s=2e-6, probe="L7", description="phantom")
IQ = AcquisitionMeta("iq", fs_hz=10e6, f0_hz=5e6, prf_hz=2000.0)
ENV = AcquisitionMeta("envelope", fs_hz=10e6, f0_hz=0.0, prf_hz=500.0)


def _lines(meta, dtype, n_lines=37, n_samples=129, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal((n_lines, n_samples)) + 1j * rng.standard_normal((n_lines, n_samples))).astype(
            dtype
        )
    if np.dtype(dtype).kind == "i":
        return rng.integers(-32768, 32767, (n_lines, n_samples), endpoint=True).astype(dtype)
    return rng.standard_normal((n_lines, n_samples)).astype(dtype)


@pytest.mark.parametrize(
    "meta, dtype",
    [(RF, "int16"), (RF, "float32"), (ENV, "int16"), (ENV, "float32"), (IQ, "complex64")],
)
@pytest.mark.parametrize("compress", [True, False])
def test_write_recording_round_trip(tmp_path, meta, dtype, compress):
    lines = _lines(meta, dtype)
    ts = 0.5 + np.arange(lines.shape[0]) / meta.prf_hz + 1e-5 * np.sin(np.arange(lines.shape[0]))
    ann = (Annotation(0, 10, "lung_sliding"), Annotation(10, 37, "pneumothorax – suspected"))
    path = tmp_path / "rec.h5"
    write_recording(path, meta, lines, timestamps_s=ts, annotations=ann, compress=compress)
    with read_h5(path) as rec:
        assert rec.meta == meta
        assert rec.meta.probe == meta.probe and rec.meta.description == meta.description
        assert (rec.n_lines, rec.n_samples) == lines.shape and rec.dtype == lines.dtype
        np.testing.assert_array_equal(rec.read(), lines)
        np.testing.assert_array_equal(rec.read(5, 9), lines[5:9])
        np.testing.assert_array_equal(rec.timestamps_s(), ts)
        assert rec.annotations == ann
        assert rec.truth() is None and not rec.has_truth


def test_layout_is_the_documented_contract(tmp_path):
    """Inspect the file with plain h5py, as a third-party tool would."""
    lines = _lines(RF, "int16", n_lines=3000, n_samples=256)
    path = tmp_path / "rec.h5"
    write_recording(path, RF, lines, timestamps_s=np.arange(3000) / 1000.0, annotations=[Annotation(1, 2, "x")])
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "mmode" and int(f.attrs["format_version"]) == 1
        for key, value in (
            ("kind", "rf"),
            ("fs_hz", 40e6),
            ("f0_hz", 5e6),
            ("prf_hz", 1000.0),
            ("c_m_s", 1540.0),
            ("t0_s", 2e-6),
        ):
            assert f.attrs[key] == value
        ds = f["lines"]
        assert ds.shape == (3000, 256) and ds.dtype == np.int16
        assert ds.maxshape == (None, 256)
        assert ds.chunks[1] == 256 and 1 < ds.chunks[0] < 3000  # chunked along lines
        assert ds.compression == "gzip"
        assert f["timestamps_s"].dtype == np.float64
        assert f["annotations/label"].asstr()[()].tolist() == ["x"]
        assert f["annotations/start_line"][()].tolist() == [1] and f["annotations/end_line"][()].tolist() == [2]


def test_truth_round_trip(tmp_path):
    n = 40
    labels = np.repeat([0, 1, 6, 3], 10)
    depths = np.array([0.01, 0.02, 0.035])
    disp = 1e-4 * np.sin(np.arange(n)[:, None] / 5 + depths[None, :] * 100)
    truth = Truth(labels=labels, classes=CLASSES, depths_m=depths, displacement_m=disp)
    path = tmp_path / "sim.h5"
    write_recording(path, RF, _lines(RF, "float32", n_lines=n), truth=truth)
    with h5py.File(path, "r") as f:
        assert [c if isinstance(c, str) else c.decode() for c in f["truth/labels"].attrs["classes"]] == list(CLASSES)
        assert f["truth/displacement_m"].shape == (n, 3)
    with read_h5(path) as rec:
        assert rec.has_truth
        t = rec.truth()
        np.testing.assert_array_equal(t.labels, labels)
        assert t.classes == CLASSES
        np.testing.assert_array_equal(t.depths_m, depths)
        np.testing.assert_allclose(t.displacement_m, disp, rtol=1e-6, atol=0)  # stored float32


def test_h5writer_append_round_trip(tmp_path):
    path = tmp_path / "live.h5"
    parts = [_lines(IQ, "complex64", n_lines=n, n_samples=64, seed=n) for n in (1, 17, 300, 5)]
    ts = np.arange(sum(len(p) for p in parts)) / IQ.prf_hz
    with H5Writer(path, IQ, 64, "complex64", flush_interval_s=0.0) as w:
        i = 0
        for p in parts:
            w.append(p, ts[i : i + len(p)])
            i += len(p)
        assert w.n_lines == i
    with read_h5(path) as rec:
        assert rec.meta == IQ
        np.testing.assert_array_equal(rec.read(), np.concatenate(parts))
        np.testing.assert_array_equal(rec.timestamps_s(), ts)


def test_reader_sees_flushed_lines_while_writer_is_open(tmp_path):
    path = tmp_path / "live.h5"
    lines = _lines(RF, "int16", n_lines=20, n_samples=32)
    w = H5Writer(path, RF, 32, "int16", flush_interval_s=3600.0)
    try:
        w.append(lines[:12], np.arange(12) / 1000)
        w.flush()
        with read_h5(path) as rec:
            assert rec.n_lines == 12
            np.testing.assert_array_equal(rec.read(), lines[:12])
    finally:
        w.close()


def test_file_of_killed_writer_opens_up_to_last_flush(tmp_path):
    """A writer process that dies without closing loses only what followed the last flush."""
    path = tmp_path / "crash.h5"
    script = textwrap.dedent(
        f"""
        import os
        import numpy as np
        from mmode.ingest.meta import AcquisitionMeta
        from mmode.ingest.h5format import H5Writer
        meta = AcquisitionMeta("rf", 40e6, 5e6, 1000.0)
        w = H5Writer({str(path)!r}, meta, 64, "int16", flush_interval_s=3600)
        lines = (np.arange(150 * 64) % 1000).astype(np.int16).reshape(150, 64)
        w.append(lines[:100], np.arange(100) / 1000)
        w.flush()
        w.append(lines[100:], np.arange(100, 150) / 1000)
        os._exit(0)  # no close: as if the process crashed
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    expected = (np.arange(150 * 64) % 1000).astype(np.int16).reshape(150, 64)
    with read_h5(path) as rec:
        assert rec.n_lines == 100
        np.testing.assert_array_equal(rec.read(), expected[:100])
        np.testing.assert_array_equal(rec.timestamps_s(), np.arange(100) / 1000)


@pytest.mark.parametrize(
    "meta, lines, match",
    [
        (RF, np.zeros((4, 8), np.int32), "dtype int16 or float32"),
        (IQ, np.zeros((4, 8), np.float32), "complex samples"),
        (RF, np.zeros((0, 8), np.int16), "at least one line"),
        (RF, np.array([[0, 1], [np.nan, 2]], np.float32), "NaN or Inf in line 1"),
    ],
)
def test_write_recording_rejects_bad_lines(tmp_path, meta, lines, match):
    with pytest.raises(DataError, match=match):
        write_recording(tmp_path / "bad.h5", meta, lines)


def test_write_recording_rejects_bad_annotations_and_timestamps(tmp_path):
    lines = np.zeros((10, 8), np.int16)
    with pytest.raises(FormatError, match="start_line <= end_line <= 10"):
        write_recording(tmp_path / "a.h5", RF, lines, annotations=[Annotation(5, 11, "x")])
    with pytest.raises(FormatError, match=r"shape \(10,\)"):
        write_recording(tmp_path / "b.h5", RF, lines, timestamps_s=np.zeros(9))
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()  # checked before writing


def test_h5writer_rejects_bad_blocks(tmp_path):
    with H5Writer(tmp_path / "w.h5", RF, 16, "float32") as w:
        with pytest.raises(FormatError, match=r"shape \(n, 16\)"):
            w.append(np.zeros((3, 15), np.float32), np.zeros(3))
        with pytest.raises(DataError, match="NaN or Inf in line 2"):
            w.append(np.array([[0.0] * 16, [1.0] * 16, [np.inf] * 16], np.float32), np.zeros(3))
        with pytest.raises(DataError, match="integer or float samples"):
            w.append(np.zeros((3, 16), np.complex64), np.zeros(3))
        assert w.n_lines == 0
    with pytest.raises(FormatError, match="dtype complex64"):
        H5Writer(tmp_path / "x.h5", IQ, 16, "float32")


def test_h5writer_refuses_float_lines_for_int16_recording(tmp_path):
    with H5Writer(tmp_path / "r.h5", RF, 16, "int16") as w:
        with pytest.raises(FormatError, match="int16 lines"):
            w.append(np.full((2, 16), 40000.5, np.float32), np.zeros(2))
        assert w.n_lines == 0


def test_recording_stopped_between_resizes_opens_up_to_last_complete_line(tmp_path):
    """An append grows /lines before /timestamps_s; a stop in between leaves one line more."""
    path = tmp_path / "cut.h5"
    lines = _lines(RF, "int16", n_lines=10, n_samples=32)
    with H5Writer(path, RF, 32, "int16") as w:
        w.append(lines, np.arange(10) / 1000.0)
    with h5py.File(path, "a") as f:
        f["timestamps_s"].resize((7,))
    with read_h5(path) as rec:
        assert rec.n_lines == 7
        np.testing.assert_array_equal(rec.read(), lines[:7])
        np.testing.assert_array_equal(rec.timestamps_s(), np.arange(7) / 1000.0)


@pytest.mark.parametrize("forged", ["lines", "timestamps_s", "truth"])
def test_forged_shapes_fail_before_any_read(tmp_path, monkeypatch, forged):
    """A few-kB file whose header declares 10^10 lines (or times, or truth depths): refused
    from the storage the file really holds, without reading a single value (reading would
    return fill values for ever)."""
    path = tmp_path / "forged.h5"
    n = 10**10
    write_recording(path, RF, _lines(RF, "int16", 8, 64), timestamps_s=np.arange(8) / 1000.0,
                    truth=Truth(np.zeros(8, np.int64), CLASSES, np.array([0.01]), np.zeros((8, 1))))
    with h5py.File(path, "a") as f:
        if forged == "lines":
            del f["lines"]
            f.create_dataset("lines", shape=(n, 64), dtype=np.int16, chunks=(256, 64), compression="gzip")
        elif forged == "timestamps_s":
            del f["timestamps_s"]
            f.create_dataset("timestamps_s", shape=(n,), dtype=np.float64, chunks=(4096,))
        else:
            del f["truth/depths_m"], f["truth/displacement_m"]
            f["truth"].create_dataset("depths_m", shape=(n,), dtype=np.float64, chunks=(4096,))
            f["truth"].create_dataset("displacement_m", shape=(8, n), dtype=np.float32, chunks=(8, 4096))
    assert path.stat().st_size < 100_000

    def forbidden(*args, **kwargs):
        raise AssertionError("the reader read data before checking the declared sizes")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", forbidden)
    with pytest.raises(FormatError, match="stored data for its declared shape"):
        read_h5(path)
