"""Every reader on files the tests make (independent encoders: numpy, scipy.io.savemat, h5py,
hand-packed bytes), and the Clarius reader on the real sample in ../shared/data."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from mmode.errors import DataError, FormatError, UsageError
from mmode.ingest.clarius_reader import parse_clarius_yml
from mmode.ingest.files import open_recording, sample_data_dir
from mmode.ingest.h5format import write_recording
from mmode.ingest.meta import AcquisitionMeta

CLARIUS_DIR = Path(__file__).resolve().parents[2] / "shared/data/clarius_carotid"
RF_META = {"kind": "rf", "fs_hz": 40e6, "f0_hz": 5e6, "prf_hz": 1000.0}
IQ_META = {"kind": "iq", "fs_hz": 10e6, "f0_hz": 5e6, "prf_hz": 2000.0, "t0_s": 1e-6}
RNG = np.random.default_rng(7)


def _sidecar(data_path: Path, spec: dict, stem_style: bool = False) -> None:
    side = data_path.with_suffix(".json") if stem_style else data_path.with_name(data_path.name + ".json")
    side.write_text(json.dumps(spec))


# -- .npy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype, out",
    [("int16", "int16"), ("float32", "float32"), ("uint8", "float32"), ("float64", "float32"), (">i2", "int16")],
)
@pytest.mark.parametrize("fortran", [False, True])
def test_npy_round_trip(tmp_path, dtype, out, fortran):
    lines = (RNG.standard_normal((31, 77)) * 100).astype(dtype)
    if fortran:
        lines = np.asfortranarray(lines)
    path = tmp_path / "rec.npy"
    np.save(path, lines)
    _sidecar(
        path,
        {
            **RF_META,
            "n_lines": 31,
            "n_samples": 77,
            "probe": "P4",
            "annotations": [{"start_line": 2, "end_line": 9, "label": "a"}],
        },
    )
    with open_recording(path) as rec:
        assert rec.meta == AcquisitionMeta(**RF_META, probe="P4")
        assert rec.dtype == np.dtype(out) and (rec.n_lines, rec.n_samples) == (31, 77)
        got = rec.read()
        assert got.dtype == np.dtype(out) and got.flags.c_contiguous and got.flags.writeable
        np.testing.assert_array_equal(got, lines.astype(out))
        np.testing.assert_array_equal(rec.read(30, 31), lines[30:31].astype(out))
        assert rec.annotations[0].label == "a" and rec.file_format == "npy+json"


def test_npy_stem_sidecar_and_overrides(tmp_path):
    lines = (RNG.standard_normal((5, 8)) + 1j * RNG.standard_normal((5, 8))).astype(np.complex128)
    path = tmp_path / "iq.npy"
    np.save(path, lines)
    _sidecar(path, IQ_META, stem_style=True)
    with open_recording(path, prf_hz=123.0) as rec:
        assert rec.meta.prf_hz == 123.0 and rec.meta.kind == "iq" and rec.dtype == np.complex64
        np.testing.assert_array_equal(rec.read(), lines.astype(np.complex64))


# -- .npz ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_round_trip_with_timestamps(tmp_path, save):
    lines = RNG.integers(-3000, 3000, (40, 64)).astype(np.int16)
    ts = 3.0 + np.cumsum(RNG.uniform(0.9e-3, 1.1e-3, 40))
    path = tmp_path / "rec.npz"
    save(path, rf=lines, timestamps_s=ts)
    _sidecar(path, {**RF_META, "lines_key": "rf"})
    with open_recording(path) as rec:
        np.testing.assert_array_equal(rec.read(), lines)
        np.testing.assert_array_equal(rec.read(13, 17), lines[13:17])
        np.testing.assert_array_equal(rec.timestamps_s(), ts)
        assert [b.t_s for b in rec.blocks(20)] == [ts[0], ts[20]]


def test_npz_picks_the_only_array_and_option_wins(tmp_path):
    a, b = np.ones((3, 4), np.float32), np.full((2, 4), 2, np.float32)
    path = tmp_path / "one.npz"
    np.savez(path, anything=a)
    _sidecar(path, RF_META)
    with open_recording(path) as rec:
        np.testing.assert_array_equal(rec.read(), a)
    two = tmp_path / "two.npz"
    np.savez(two, lines=a, other=b)
    _sidecar(two, RF_META)
    with open_recording(two) as rec:
        np.testing.assert_array_equal(rec.read(), a)
    with open_recording(two, lines_key="other") as rec:
        np.testing.assert_array_equal(rec.read(), b)


# -- raw + sidecar --------------------------------------------------------------------------------
@pytest.mark.parametrize("declare_lines", [True, False])
def test_raw_int16_rf(tmp_path, declare_lines):
    lines = RNG.integers(-32768, 32767, (25, 100)).astype("<i2")
    path = tmp_path / "rec.bin"
    path.write_bytes(b"HEADER" + lines.tobytes())
    spec = {**RF_META, "n_samples": 100, "header_bytes": 6}
    if declare_lines:
        spec["n_lines"] = 25
    _sidecar(path, spec)
    with open_recording(path) as rec:
        assert rec.n_lines == 25 and rec.dtype == np.int16
        np.testing.assert_array_equal(rec.read(), lines)


def test_raw_big_endian_iq_pairs(tmp_path):
    i = RNG.integers(-2000, 2000, (6, 10))
    q = RNG.integers(-2000, 2000, (6, 10))
    path = tmp_path / "iq.raw"
    interleaved = np.empty((6, 20), ">i2")
    interleaved[:, 0::2], interleaved[:, 1::2] = i, q
    path.write_bytes(interleaved.tobytes())
    _sidecar(path, {**IQ_META, "n_samples": 10, "byte_order": "big"})
    with open_recording(path) as rec:  # .raw with a JSON sidecar is raw, not Clarius
        assert rec.file_format == "raw int16+json"
        np.testing.assert_array_equal(rec.read(), (i + 1j * q).astype(np.complex64))


def test_raw_float32_envelope(tmp_path):
    lines = RNG.uniform(0, 5, (9, 33)).astype("<f4")
    path = tmp_path / "env.dat"
    path.write_bytes(lines.tobytes())
    _sidecar(path, {"kind": "envelope", "fs_hz": 20e6, "f0_hz": 0, "prf_hz": 50, "n_samples": 33, "dtype": "float32"})
    with open_recording(path) as rec:
        np.testing.assert_array_equal(rec.read(), lines)


# -- MATLAB ---------------------------------------------------------------------------------------
def test_mat_v5_default_names_real_rf(tmp_path):
    lines = RNG.standard_normal((12, 300))  # 12 lines of 300 samples
    path = tmp_path / "rf.mat"
    # MATLAB convention: one column per line, rf(:, k) is line k.
    scipy.io.savemat(path, {"rf": lines.T, "fs": 40e6, "f0": 5e6, "prf": 800.0, "t0": 3e-6})
    with open_recording(path) as rec:
        assert rec.meta == AcquisitionMeta("rf", 40e6, 5e6, 800.0, t0_s=3e-6)
        assert (rec.n_lines, rec.n_samples) == (12, 300) and rec.dtype == np.float32
        np.testing.assert_allclose(rec.read(), lines.astype(np.float32))
        np.testing.assert_allclose(rec.read(3, 5), lines[3:5].astype(np.float32))


def test_mat_v5_complex_iq_with_mapping_and_sidecar(tmp_path):
    iq = RNG.standard_normal((7, 50)) + 1j * RNG.standard_normal((7, 50))
    path = tmp_path / "scan.mat"
    scipy.io.savemat(path, {"IQdata": iq, "Fs": 10e6, "Fc": 5e6, "kind": "iq"})
    _sidecar(path, {"variables": {"lines": "IQdata", "fs_hz": "Fs", "f0_hz": "Fc"}, "lines_axis": 0, "prf_hz": 400})
    with open_recording(path) as rec:
        assert rec.meta == AcquisitionMeta("iq", 10e6, 5e6, 400.0)
        np.testing.assert_allclose(rec.read(), iq.astype(np.complex64))


def _write_mat73(path: Path, variables: dict) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte user block, arrays
    stored transposed, complex as a {real, imag} compound, MATLAB_class attributes."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            arr = np.asarray(value)
            if arr.dtype.kind == "U":
                ds = f.create_dataset(name, data=np.array([[ord(c)] for c in str(arr)], np.uint16))
                ds.attrs["MATLAB_class"] = np.bytes_("char")
                continue
            arr = np.atleast_2d(arr)
            if arr.dtype.kind == "c":
                comp = np.empty(arr.T.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
                comp["real"], comp["imag"] = arr.T.real, arr.T.imag
                ds = f.create_dataset(name, data=comp)
            else:
                ds = f.create_dataset(name, data=arr.T)
            ds.attrs["MATLAB_class"] = np.bytes_(
                {"f": "double", "i": "int16"}[arr.dtype.kind if arr.dtype.kind != "c" else "f"]
            )
    with open(path, "r+b") as fh:
        text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sat Nov 21 12:00:00 2026 HDF5 schema 1.00 ."
        fh.write(text.ljust(116) + bytes(8) + b"\x00\x02IM")  # text, subsystem offset, version 0x0200, endian


def test_mat_v73_int16_rf_lazy(tmp_path):
    lines = RNG.integers(-3000, 3000, (20, 128)).astype(np.int16)
    path = tmp_path / "big.mat"
    _write_mat73(path, {"rf": lines.T, "fs_hz": 40e6, "f0_hz": 5e6, "prf_hz": 1000.0, "probe": "C5-2"})
    assert scipy.io.matlab.matfile_version(str(path))[0] == 2  # scipy agrees it is v7.3
    with open_recording(path) as rec:
        assert rec.file_format == "mat v7.3" and rec.meta.probe == "C5-2"
        assert rec.dtype == np.int16
        np.testing.assert_array_equal(rec.read(), lines)
        np.testing.assert_array_equal(rec.read(19, 20), lines[19:20])


def test_mat_v73_complex_lines_axis0(tmp_path):
    iq = RNG.standard_normal((9, 40)) + 1j * RNG.standard_normal((9, 40))
    path = tmp_path / "iq.mat"
    _write_mat73(path, {"IQ": iq, "fs": 10e6, "fc": 5e6, "prf": 250.0})
    with open_recording(path, variables={"lines": "IQ"}, lines_axis=0) as rec:
        assert rec.meta.kind == "iq" and rec.dtype == np.complex64
        np.testing.assert_allclose(rec.read(), iq.astype(np.complex64))
        np.testing.assert_allclose(rec.read(2, 4), iq[2:4].astype(np.complex64))


def test_mat_3d_beams_v5_and_v73(tmp_path):
    """A 3-D (samples, beams, lines) IQ variable, as scanners store several beams: the chosen
    beam over the frames is the M-mode, in both MAT versions, from the option or the sidecar."""
    iq = RNG.standard_normal((30, 5, 11)) + 1j * RNG.standard_normal((30, 5, 11))  # MATLAB iq(:, b, k)
    v5, v73 = tmp_path / "beams5.mat", tmp_path / "beams73.mat"
    scipy.io.savemat(v5, {"iq": iq, "fs": 1e6, "f0": 2.5e6, "prf": 349.0, "kind": "iq"})
    _write_mat73(v73, {"iq": iq, "fs": 1e6, "f0": 2.5e6, "prf": 349.0})
    _sidecar(v5, {"beam": 3})
    with open_recording(v5) as rec:
        assert (rec.n_lines, rec.n_samples) == (11, 30) and rec.meta.kind == "iq"
        np.testing.assert_allclose(rec.read(), iq[:, 3, :].T.astype(np.complex64))
    with open_recording(v73, beam=1) as rec:
        assert (rec.n_lines, rec.n_samples) == (11, 30)
        np.testing.assert_allclose(rec.read(), iq[:, 1, :].T.astype(np.complex64))
        np.testing.assert_allclose(rec.read(4, 7), iq[:, 1, 4:7].T.astype(np.complex64))


# -- Clarius --------------------------------------------------------------------------------------
def _write_clarius(path: Path, ident: int, frames: np.ndarray, t_ns: list[int], yml: str | None) -> None:
    """frames: (n_frames, lines, samples[, 2]) in the on-disk sample type."""
    n_frames, n_lines, n_samples = frames.shape[:3]
    sample_bytes = frames.dtype.itemsize * (2 if frames.ndim == 4 else 1)
    out = [np.array([ident, n_frames, n_lines, n_samples, sample_bytes], "<u4").tobytes()]
    for f, t in zip(frames, t_ns):
        out += [np.array([t], "<u8").tobytes(), f.tobytes()]
    path.write_bytes(b"".join(out))
    if yml is not None:
        path.with_suffix(".yml").write_text(yml)


YML = """# raw data parameters

frames: 3
frame rate: 20 Hz
transmit frequency: 4 MHz
tgc: { 0.00mm, 23.00dB }{ 30.00mm, 26.00dB }
size: {samples per line: 16, number of lines: 5, sample size: %d bytes}
type: %s
sampling rate: 30 MHz
delay samples: 60
lines:
  - {rx element: 0, tx element: 0.9, angle: 0 °}
focus:
  - depth: 13.706 mm
    tx frequency: 5 MHz
"""


def test_clarius_rf_frames_become_consecutive_lines(tmp_path):
    frames = RNG.integers(-1000, 1000, (3, 5, 16)).astype("<i2")
    t_ns = [10_000_000_000, 10_040_000_000, 10_080_000_000]  # 25 frames/s, not the yml's 20
    path = tmp_path / "scan_rf.raw"
    _write_clarius(path, 2, frames, t_ns, YML % (2, "RF"))
    with open_recording(path) as rec:
        assert rec.meta.replace(description=None) == AcquisitionMeta("rf", 30e6, 4e6, prf_hz=25 * 5, t0_s=60 / 30e6)
        assert "3 frame(s) x 5 image lines" in rec.meta.description
        assert (rec.n_lines, rec.n_samples) == (15, 16) and rec.dtype == np.int16
        np.testing.assert_array_equal(rec.read(), frames.reshape(15, 16))
        np.testing.assert_array_equal(rec.read(4, 11), frames.reshape(15, 16)[4:11])  # spans 3 frames
        ts = rec.timestamps_s()
        np.testing.assert_allclose(ts[[0, 1, 5, 14]], [0.0, 1 / 125, 0.04, 0.08 + 4 / 125])


def test_clarius_single_frame_uses_yml_frame_rate_and_override(tmp_path):
    iq = RNG.integers(-500, 500, (1, 5, 16, 2)).astype("<i2")
    path = tmp_path / "one_iq.raw"
    _write_clarius(path, 0, iq, [123], YML % (4, "IQ"))
    with open_recording(path) as rec:
        assert rec.meta.kind == "iq" and rec.meta.prf_hz == 20 * 5
        np.testing.assert_array_equal(rec.read(), (iq[0, ..., 0] + 1j * iq[0, ..., 1]).astype(np.complex64))
    with open_recording(path, prf_hz=1000.0) as rec:
        assert rec.meta.prf_hz == 1000.0


def test_clarius_without_yml_needs_metadata(tmp_path):
    env = RNG.integers(0, 255, (2, 5, 16)).astype(np.uint8)
    path = tmp_path / "env.raw"
    _write_clarius(path, 1, env, [0, 50_000_000], None)
    with pytest.raises(FormatError, match=r"env\.raw: expected a Clarius sidecar env\.yml"):
        open_recording(path)
    with open_recording(path, fs_hz=15e6, f0_hz=5e6) as rec:
        assert rec.meta.prf_hz == pytest.approx(20 * 5)  # from the 50 ms frame interval
        np.testing.assert_array_equal(rec.read(), env.reshape(10, 16).astype(np.float32))


def test_parse_clarius_yml_takes_top_level_scalars_only():
    fields = parse_clarius_yml(YML % (1, "B pre-scan"))
    assert fields["sampling rate"] == "30 MHz" and fields["type"] == "B pre-scan"
    assert "depth" not in fields and "tx frequency" not in fields and "lines" not in fields


def test_clarius_line_list_tells_an_image_from_one_beam(tmp_path, capsys):
    """The yml's ``lines:`` list says where each line of a frame points: the same beam for
    every line is an M-mode (no note); distinct positions are an image, said in the description
    and by ``mmode process``."""
    from mmode.app.cli import main

    frames = RNG.integers(-1000, 1000, (3, 4, 16)).astype("<i2")
    entry = "  - {rx element: %s, tx element: %s, angle: 0 °}\n"
    one_beam = YML.replace("size: {samples per line: 16, number of lines: 5", "size: {samples per line: 16, number of lines: 4")
    one_beam = one_beam.replace(entry % (0, 0.9), entry % (7, 7.5) * 4)
    image = one_beam.replace(entry % (7, 7.5) * 4, "".join(entry % (k, k) for k in (1, 1, 2, 2)))
    for name, yml, note in (("mmode", one_beam, None), ("image", image, "2 beam positions x 2 lines each")):
        path = tmp_path / f"{name}.raw"
        _write_clarius(path, 2, frames, [0, 50_000_000, 100_000_000], yml % (2, "RF"))
        with open_recording(path) as rec:
            if note is None:
                assert "beam positions" not in rec.meta.description
            else:
                assert note in rec.meta.description and "not one beam over time" in rec.meta.description
    assert main(["process", str(path), "--model", "none"]) == 0
    source = [r for r in capsys.readouterr().out.splitlines() if r.startswith("source")]
    assert len(source) == 1 and "not one beam over time" in source[0]


@pytest.mark.skipif(not CLARIUS_DIR.is_dir(), reason=f"Clarius sample not present at {CLARIUS_DIR}")
def test_clarius_sample_iq():
    path = CLARIUS_DIR / "carotid_iq.raw"
    raw = np.fromfile(path, dtype="<i2", offset=28).reshape(1248, 352, 2)  # 20-byte header + 8-byte timestamp
    with open_recording(path) as rec:
        assert (rec.n_lines, rec.n_samples) == (1248, 352) and rec.meta.kind == "iq"
        assert rec.meta.fs_hz == 15e6 and rec.meta.f0_hz == 5e6
        assert rec.meta.t0_s == pytest.approx(108 / 15e6)
        assert rec.meta.prf_hz == pytest.approx(18 * 1248)
        np.testing.assert_array_equal(rec.read(100, 110), raw[100:110, :, 0] + 1j * raw[100:110, :, 1])
        assert rec.check_finite() == 1248
        # its README: a colour-Doppler frame, 104 positions x 12 ensemble
        assert "104 beam positions x 12 lines each" in rec.meta.description


@pytest.mark.skipif(not CLARIUS_DIR.is_dir(), reason=f"Clarius sample not present at {CLARIUS_DIR}")
def test_clarius_sample_envelope():
    path = CLARIUS_DIR / "carotid_env.raw"
    raw = np.fromfile(path, dtype=np.uint8, offset=28).reshape(304, 592)
    with open_recording(path) as rec:
        assert rec.meta.kind == "envelope" and rec.meta.f0_hz == 10e6 and rec.dtype == np.float32
        assert rec.depth_range_m == pytest.approx((1540 * 16 / 15e6 / 2, 1540 * (16 + 591) / 15e6 / 2))
        np.testing.assert_array_equal(rec.read(), raw.astype(np.float32))
        # Samples along a line are smoother than across the interleaved image lines would be
        # if the layout were transposed: a check that lines are read as lines.
        assert np.abs(np.diff(raw.astype(float), axis=1)).mean() < 20


# -- dispatch -------------------------------------------------------------------------------------
def test_open_recording_h5_with_override(tmp_path):
    path = tmp_path / "r.HDF5"
    write_recording(path, AcquisitionMeta(**RF_META), np.ones((4, 8), np.int16))
    with open_recording(path, c_m_s=1480.0) as rec:
        assert rec.meta.c_m_s == 1480.0 and rec.file_format == "mmode-h5 v1"


def test_open_recording_rejects_unknown_options_and_suffix(tmp_path):
    path = tmp_path / "r.h5"
    write_recording(path, AcquisitionMeta(**RF_META), np.ones((4, 8), np.int16))
    with pytest.raises(UsageError, match="lines_key"):
        open_recording(path, lines_key="x")
    with pytest.raises(DataError, match=r"suffix '\.wav'"):
        open_recording(tmp_path / "a.wav")
    with pytest.raises(DataError, match="no such file"):
        open_recording(tmp_path / "missing.h5")


def test_sample_data_dir_is_repository_folder():
    assert sample_data_dir() == Path(__file__).resolve().parents[1] / "sample_data"
    assert (sample_data_dir() / "demo.h5").is_file()
