"""Bad input files: each is exit 3 from ``mmode info`` with one line naming the file and what
was wrong, and sizes are checked before anything is mapped or allocated."""

import json

import h5py
import numpy as np
import pytest

from mmode.app.cli import main
from mmode.ingest.h5format import write_recording
from mmode.ingest.mat_reader import MAX_MAT_META_ELEMENTS
from mmode.ingest.meta import AcquisitionMeta

RF = AcquisitionMeta("rf", fs_hz=40e6, f0_hz=5e6, prf_hz=1000.0)
RF_JSON = {"kind": "rf", "fs_hz": 40e6, "f0_hz": 5e6, "prf_hz": 1000.0}


def _info_fails(capsys, path, *expected, args=(), named=None):
    """Run ``mmode info`` in-process; assert exit 3 and one stderr line naming the file
    (``named``, default ``path``) and each ``expected`` text."""
    code = main(["info", str(path), *args])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(named or path) in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def no_mapping(monkeypatch):
    """Fail the test if a reader maps the file: size checks must come first."""

    def refuse(*a, **k):
        raise AssertionError("np.memmap called before the size check")

    monkeypatch.setattr(np, "memmap", refuse)


def _h5(tmp_path, lines=None):
    path = tmp_path / "rec.h5"
    write_recording(path, RF, np.zeros((20, 64), np.int16) if lines is None else lines)
    return path


def test_truncated_hdf5(tmp_path, capsys):
    path = _h5(tmp_path, lines=np.arange(200 * 512, dtype=np.int16).reshape(200, 512))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _info_fails(capsys, path, "expected a readable HDF5 file", "truncated")


def test_hdf5_missing_attribute(tmp_path, capsys):
    path = _h5(tmp_path)
    with h5py.File(path, "r+") as f:
        del f.attrs["fs_hz"]
    err = _info_fails(capsys, path, "fs_hz", "missing")
    assert err.count(str(path)) == 1, err  # one message, not one wrapped in another


def test_hdf5_not_mmode_and_missing_lines(tmp_path, capsys):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    _info_fails(capsys, path, "root attribute format = 'mmode'")
    path = _h5(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["lines"]
    _info_fails(capsys, path, "dataset /lines")


def test_hdf5_wrong_dtype(tmp_path, capsys):
    path = _h5(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["lines"]
        f["lines"] = np.zeros((20, 64), np.int32)
    _info_fails(capsys, path, ":/lines", "int16 or float32", "int32")


def test_npy_wrong_dtype(tmp_path, capsys):
    path = tmp_path / "flags.npy"
    np.save(path, np.zeros((4, 8), bool))
    (tmp_path / "flags.npy.json").write_text(json.dumps(RF_JSON))
    _info_fails(capsys, path, "bool")


def test_npy_object_array_is_refused_not_unpickled(tmp_path, capsys):
    path = tmp_path / "obj.npy"
    with path.open("wb") as f:  # an object-array header (what a pickle payload needs), no pickle
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1, 1)})
        f.write(b"\x80\x04N.")  # pickle opcodes: would be code execution if loaded
    (tmp_path / "obj.npy.json").write_text(json.dumps(RF_JSON))
    _info_fails(capsys, path, "plain numeric samples", "object")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_found_by_check(tmp_path, capsys, bad):
    path = _h5(tmp_path, lines=np.ones((3000, 64), np.float32))
    with h5py.File(path, "r+") as f:  # the writers refuse non-finite samples; damage the file
        f["lines"][2345, 10] = bad
    assert main(["info", str(path)]) == 0  # headers only: no scan without --check
    capsys.readouterr()
    _info_fails(capsys, path, "NaN or Inf in line 2345", args=["--check"])


def test_nan_in_npy_found_by_check(tmp_path, capsys):
    lines = np.zeros((50, 16), np.float64)
    lines[49, 15] = np.nan
    path = tmp_path / "n.npy"
    np.save(path, lines)
    (tmp_path / "n.json").write_text(json.dumps(RF_JSON))
    _info_fails(capsys, path, "NaN or Inf in line 49", args=["--check"])


def test_zero_lines(tmp_path, capsys):
    path = _h5(tmp_path)
    with h5py.File(path, "r+") as f:
        f["lines"].resize((0, 64))
    _info_fails(capsys, path, "at least one line", "0 lines")
    npy = tmp_path / "empty.npy"
    np.save(npy, np.zeros((0, 64), np.int16))
    (tmp_path / "empty.npy.json").write_text(json.dumps(RF_JSON))
    _info_fails(capsys, npy, "at least one line")


def test_sidecar_shape_mismatch(tmp_path, capsys):
    path = tmp_path / "rec.npy"
    np.save(path, np.zeros((10, 64), np.int16))
    (tmp_path / "rec.npy.json").write_text(json.dumps({**RF_JSON, "n_samples": 65}))
    _info_fails(capsys, path, "n_samples = 65 as the sidecar declares", "64 in the data")


def test_sidecar_missing_malformed_or_misspelt(tmp_path, capsys):
    path = tmp_path / "rec.npy"
    np.save(path, np.zeros((10, 64), np.int16))
    _info_fails(capsys, path, "expected a JSON sidecar")
    side = tmp_path / "rec.npy.json"
    side.write_text('{"kind": "rf", ')
    _info_fails(capsys, path, "valid UTF-8 JSON")
    side.write_text(json.dumps({**RF_JSON, "fs": 40e6}))
    _info_fails(capsys, path, "unknown ['fs']")


def test_unknown_suffix(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    _info_fails(capsys, path, "suffix '.txt'", ".h5")


def test_missing_file(tmp_path, capsys):
    _info_fails(capsys, tmp_path / "gone.h5", "no such file")


def test_absurd_sidecar_line_count(tmp_path, capsys, no_mapping):
    path = tmp_path / "rec.bin"
    path.write_bytes(np.zeros((10, 100), "<i2").tobytes())
    (tmp_path / "rec.bin.json").write_text(json.dumps({**RF_JSON, "n_samples": 100, "n_lines": 10**12}))
    _info_fails(capsys, path, f"expected {10**12 * 200} bytes", "found 2000 bytes")


def test_raw_size_not_whole_lines(tmp_path, capsys, no_mapping):
    path = tmp_path / "rec.bin"
    path.write_bytes(bytes(2001))
    (tmp_path / "rec.json").write_text(json.dumps({**RF_JSON, "n_samples": 100}))
    _info_fails(capsys, path, "whole number of 200-byte lines", "2001 bytes")


def test_absurd_npy_header(tmp_path, capsys, no_mapping):
    path = tmp_path / "huge.npy"
    (tmp_path / "huge.json").write_text(json.dumps(RF_JSON))
    # A valid .npy header that declares 10**10 lines, followed by 4 lines of payload.
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<i2", "fortran_order": False, "shape": (10**10, 8)})
        fh.write(np.zeros((4, 8), np.int16).tobytes())
    _info_fails(
        capsys, path, f"expected {128 + 10**10 * 8 * 2} bytes", "as the .npy header declares", "found 192 bytes"
    )


def test_clarius_header_disagrees_with_file_size(tmp_path, capsys, no_mapping):
    path = tmp_path / "scan.raw"
    header = np.array([2, 1000, 4096, 4096, 2], "<u4").tobytes()  # 1000 frames of 32 MiB declared
    path.write_bytes(header + bytes(8 + 16))
    path.with_suffix(".yml").write_text("sampling rate: 30 MHz\ntransmit frequency: 5 MHz\nframe rate: 20 Hz\n")
    _info_fails(capsys, path, f"expected {20 + 1000 * (8 + 4096 * 4096 * 2)} bytes", "found 44 bytes")


def test_clarius_yml_disagrees_with_header(tmp_path, capsys):
    path = tmp_path / "scan.raw"
    path.write_bytes(np.array([1, 1, 2, 3, 1], "<u4").tobytes() + bytes(8 + 6))
    path.with_suffix(".yml").write_text(
        "sampling rate: 30 MHz\nframe rate: 20 Hz\nsize: {samples per line: 4, number of lines: 2, sample size: 1 bytes}\n"
    )
    _info_fails(capsys, path, "samples per line = 3 as in scan.raw", "found 4", named=path.with_suffix(".yml"))


def test_clarius_unknown_id(tmp_path, capsys):
    path = tmp_path / "scan.raw"
    path.write_bytes(np.array([9, 1, 2, 3, 1], "<u4").tobytes() + bytes(8 + 6))
    _info_fails(capsys, path, "Clarius data id", "found 9")


def test_mat_without_lines_variable(tmp_path, capsys):
    import scipy.io

    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"foo": np.zeros((3, 3)), "fs": 1e6})
    _info_fails(capsys, path, "a lines variable", "['foo', 'fs']")


def test_mat_that_is_not_a_mat_file(tmp_path, capsys):
    path = tmp_path / "x.mat"
    path.write_bytes(b"MATLAB? no. " * 20)
    _info_fails(capsys, path, "expected a MATLAB v5 or v7.3 .mat file")


def test_hdf5_absurd_annotation_count(tmp_path, capsys):
    path = _h5(tmp_path)
    with h5py.File(path, "r+") as f:  # declared, never written: tiny on disk, 32 GB if read
        g = f.create_group("annotations")
        for name in ("start_line", "end_line"):
            g.create_dataset(name, shape=(2**32,), chunks=(1024,), dtype=np.int64)
        g.create_dataset("label", shape=(1,), dtype=h5py.string_dtype())
    _info_fails(capsys, path, ":/annotations", "at most 1048576 annotations")


def test_hdf5_truth_depths_not_a_vector(tmp_path, capsys):
    path = _h5(tmp_path)
    with h5py.File(path, "r+") as f:
        g = f.create_group("truth")
        g.create_dataset("labels", data=np.zeros(20, np.int16)).attrs["classes"] = ["lung_sliding"]
        g["depths_m"] = 0.01  # scalar, not (n_depths,)
        g["displacement_m"] = np.zeros((20, 1))
    _info_fails(capsys, path, ":/truth/depths_m", "shape (n_depths,)")


def test_mat_mapping_value_not_a_name_and_oversize_metadata(tmp_path, capsys):
    import scipy.io

    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"rf": np.zeros((8, 4)), "fs": np.zeros((300, 300)), "f0": 5e6, "prf": 1e3})
    _info_fails(capsys, path, "x.mat:fs", f"at most {MAX_MAT_META_ELEMENTS} elements", "found 90000")
    (tmp_path / "x.mat.json").write_text(json.dumps({"variables": {"lines": ["rf"]}}))
    _info_fails(capsys, path, "variable mapping values that are variable names")


def test_npz_member_declared_beyond_the_archive(tmp_path, capsys, no_mapping):
    """A stored member whose zip sizes and .npy header agree but run past the end of the file."""
    import struct
    import zipfile

    path = tmp_path / "forged.npz"
    np.savez(path, lines=np.zeros((4, 8), np.int16))
    (tmp_path / "forged.npz.json").write_text(json.dumps(RF_JSON))
    data = bytearray(path.read_bytes())
    i = data.find(b"(4, 8)")
    data[i : i + 6] = b"(9, 8)"  # 5 more lines of 16 bytes
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("lines.npy")
    grown = info.file_size + 80
    struct.pack_into("<II", data, info.header_offset + 18, grown, grown)  # local header sizes
    struct.pack_into("<II", data, data.find(b"PK\x01\x02") + 20, grown, grown)  # central directory
    path.write_bytes(bytes(data))
    _info_fails(capsys, path, "member lines.npy inside the archive", f"found {len(data)} bytes")


def test_mat_3d_needs_a_beam_within_range(tmp_path, capsys):
    import scipy.io

    from mmode.errors import FormatError, UsageError
    from mmode.ingest.files import open_recording

    path = tmp_path / "beams.mat"
    scipy.io.savemat(path, {"iq": np.ones((6, 4, 5), complex), "fs": 1e6, "f0": 2.5e6, "prf": 100.0, "kind": "iq"})
    _info_fails(capsys, path, "sidecar key \"beam\"", "(6, 4, 5)")
    with pytest.raises(FormatError, match="beam 4 of the 4 beams"):
        open_recording(path, beam=4)
    with pytest.raises(UsageError, match="beam, an integer >= 0"):
        open_recording(path, beam=-1)
    flat = tmp_path / "flat.mat"
    scipy.io.savemat(flat, {"rf": np.ones((6, 5)), "fs": 1e6, "f0": 2.5e6, "prf": 100.0})
    with pytest.raises(FormatError, match="with a beam chosen"):
        open_recording(flat, beam=0)
