"""DICOM input: pydicom's bundled ultrasound examples, synthetic files built here with pydicom
(known regions, calibrations, timings, photometric interpretations and compressions), the
M-mode region as an envelope recording of grey levels, `mmode info` on them, and bad files.

References are independent of the reader: pydicom's own ``pixel_array``, the pixel values
and calibrations the tests write, ``scipy.ndimage.map_coordinates``.
"""

import json
import math
import tracemalloc

import numpy as np
import pytest
from pydicom import examples
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut
from pydicom.uid import (JPEG2000Lossless, ExplicitVRLittleEndian, RLELossless, UltrasoundImageStorage,
                         UltrasoundMultiFrameImageStorage, generate_uid)
from scipy import ndimage

from mmode.app.cli import main
from mmode.errors import DataError
from mmode.ingest.dicom import DicomFrames, frame_timing
from mmode.ingest.files import open_recording

BT601 = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma


def _region(fmt, box, units, delta, ref_px=None, ref_value=None, data_type=1, flags=0):
    item = Dataset()
    item.RegionSpatialFormat = fmt
    item.RegionDataType = data_type
    item.RegionFlags = flags
    item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1, item.RegionLocationMaxY1 = box
    item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta
    if ref_px is not None:
        item.ReferencePixelX0, item.ReferencePixelY0 = ref_px
    if ref_value is not None:
        item.ReferencePixelPhysicalValueX, item.ReferencePixelPhysicalValueY = ref_value
    return item


def write_dicom(path, frames, *, photometric="MONOCHROME2", regions=(), bits=8, **timing):
    """A Part 10 file of ``frames`` (n, H, W) or (n, H, W, 3), uncompressed, with the given
    regions (datasets from ``_region``) and timing attributes (FrameTime=..., ...)."""
    frames = np.asarray(frames)
    n = frames.shape[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = UltrasoundMultiFrameImageStorage if n > 1 else UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "US", "Test Corp", "Synth 1"
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits <= 8 else 16), bits, bits - 1, 0
    if n > 1:
        ds.NumberOfFrames = n
    for keyword, value in timing.items():
        setattr(ds, keyword, value)
    if regions:
        ds.SequenceOfUltrasoundRegions = list(regions)
    ds.PixelData = frames.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _pydicom_grey(ds):
    """Grey levels from pydicom's own decoding: luminance of its RGB (YBR converted by pydicom)."""
    arr = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(ds.pixel_array, ds).astype(np.float64) * 255 / 65535
    return arr @ BT601 if arr.shape[-1] == 3 else arr


# -- pydicom's bundled ultrasound examples -----------------------------------------------------
def test_bundled_multiframe_ybr_jpeg(capsys):
    ds = examples.ybr_color  # SonoSite, 30 frames, JPEG baseline, YBR_FULL_422, one 2D region
    src = DicomFrames(ds.filename)
    np.testing.assert_allclose(src.frames(0, src.n_frames), _pydicom_grey(ds), atol=1e-3)
    info = src.info()["dicom"]
    assert info["n_frames"] == 30 and info["frame_interval_s"] == pytest.approx(float(ds.FrameTime) / 1e3)
    assert info["manufacturer"] == ds.Manufacturer and info["model"] == ds.ManufacturerModelName
    assert info["transfer_syntax"] == "JPEG Baseline (Process 1)" and info["photometric"] == "YBR_FULL_422"
    item = ds.SequenceOfUltrasoundRegions[0]
    (r,) = info["regions"]
    assert r["spatial_format"] == "2d" and r["data_type"] == "tissue" and r["units"] == ["cm", "cm"]
    assert r["box_px"] == [item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1,
                           item.RegionLocationMaxY1]
    assert r["delta"] == [item.PhysicalDeltaX, item.PhysicalDeltaY] and r["flags"] == item.RegionFlags
    assert r["reference_px"] is None and r["fits_frame"] is False  # the box is larger than the 320 x 240 frame

    assert main(["info", ds.filename, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dicom"] == info and out["amplitude"] == "grey" and out["prf_hz"] == pytest.approx(1e3 / 33.333)
    # default M-line: vertical through the centre of the region clipped to the frame
    x = (item.RegionLocationMinX0 + ds.Columns - 1) / 2
    assert out["mline"]["px"] == [x, item.RegionLocationMinY0, x, ds.Rows - 1]
    assert out["mline"]["step_m"] == pytest.approx(item.PhysicalDeltaY / 100)
    with open_recording(ds.filename) as rec:
        lines = rec.read()
    y = np.arange(item.RegionLocationMinY0, ds.Rows, dtype=float)
    ref = [ndimage.map_coordinates(f, [y, np.full_like(y, x)], order=1) for f in _pydicom_grey(ds)]
    np.testing.assert_allclose(lines, ref, atol=1e-3)


@pytest.mark.parametrize("name", ["rgb_color", "jpeg2k", "palette_color"])
def test_bundled_single_frames_grey(name):
    ds = getattr(examples, name)
    src = DicomFrames(ds.filename)
    np.testing.assert_allclose(src.frame(0), _pydicom_grey(ds), atol=1e-2)


def test_bundled_palette_regions_as_stored(capsys):
    """Philips CX50: a 2D region and an ECG strip, reference pixels outside the boxes, boxes
    that do not fit the 800 x 350 frame; a single frame without M-mode: `info` shows it and says why."""
    ds = examples.palette_color
    assert main(["info", ds.filename, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] is None and "expected an M-mode region" in out["note"]
    two_d, ecg = out["dicom"]["regions"]
    items = ds.SequenceOfUltrasoundRegions
    assert two_d["spatial_format"] == "2d" and ecg["spatial_format"] == "waveform" and ecg["data_type"] == "ecg_trace"
    assert ecg["units"] == ["s", "none"] and ecg["reference_px"] == [items[1].ReferencePixelX0, items[1].ReferencePixelY0]
    assert ecg["reference_px"] == [-176, -522] and ecg["delta"] == [items[1].PhysicalDeltaX, 0.0]
    assert two_d["reference_px"] == [340, 36] and two_d["reference_value"] == [0.0, 0.0]
    assert not two_d["fits_frame"] and not ecg["fits_frame"]
    assert main(["info", ds.filename]) == 0
    assert "region 1     waveform ecg_trace" in capsys.readouterr().out
    assert main(["process", ds.filename, "--model", "none"]) == 3
    assert "expected an M-mode region" in capsys.readouterr().err


# -- synthetic M-mode regions ------------------------------------------------------------------
DX_S, DY_CM = 0.004, 0.02  # 250 lines/s, 0.2 mm per row


@pytest.mark.parametrize("sign_x, sign_y, ref_py, ref_vy", [
    (1, 1, 40, 1.0),  # row 140 is 1 cm deep: the box top is 0.2 cm deep
    (1, 1, 40, 0.0),  # row 140 is 0 cm deep: the 40 rows above it are left out
    (-1, 1, 40, 1.0),  # time runs right to left
    (1, -1, 180, 0.2),  # depth grows upwards: row 280 is 0.2 cm deep
])
def test_mmode_region_echo_lands_at_its_depth_and_time(tmp_path, sign_x, sign_y, ref_py, ref_vy):
    """A 2D region on top, an M-mode region below (X in s, Y in cm, a reference pixel inside
    the box with non-zero values): an echo drawn at depth d(t) is found at d(t) at time t."""
    height, width = 300, 260
    box = (20, 100, 239, 289)  # 220 columns x 190 rows
    ref_px, ref_value = (10, ref_py), (2.5, ref_vy)  # column 30 is t = 2.5 s
    dx, dy = sign_x * DX_S, sign_y * DY_CM
    frame = np.full((height, width), 20, np.uint8)
    cols = np.arange(box[0], box[2] + 1)
    t = ref_value[0] + (cols - box[0] - ref_px[0]) * dx
    depth_cm = 1.8 + 0.6 * np.sin(2 * np.pi * 1.5 * t)  # within the rows that are >= 0 deep
    rows = np.round(box[1] + ref_px[1] + (depth_cm - ref_value[1]) / dy).astype(int)
    frame[rows, cols] = 250
    regions = [_region(1, (20, 0, 239, 95), (3, 3), (0.02, 0.02)),
               _region(2, box, (4, 3), (dx, dy), ref_px, ref_value)]
    path = write_dicom(tmp_path / "mm.dcm", frame[None], regions=regions)
    with open_recording(path) as rec:
        assert rec.meta.kind == "envelope" and rec.meta.amplitude == "grey" and rec.meta.depth_calibrated
        assert rec.meta.prf_hz == pytest.approx(1 / DX_S) and rec.n_lines == cols.size
        lines = rec.read()
        found_cm = rec.meta.depth_m(lines.argmax(axis=1)) * 100
        info = rec.info()
    drawn_cm = ref_value[1] + (rows - box[1] - ref_px[1]) * dy  # the depth of the row each echo was drawn in
    assert np.abs(drawn_cm - depth_cm).max() <= DY_CM / 2 + 1e-9
    order = np.argsort(t)  # lines come in time order whatever the sign of delta X
    np.testing.assert_allclose(found_cm, drawn_cm[order], atol=1e-9)
    # the first sample is the shallowest row at a depth >= 0; rows above depth 0 are left out
    box_depths_cm = ref_value[1] + (np.arange(box[1], box[3] + 1) - box[1] - ref_px[1]) * dy
    assert rec.meta.depth_m(0) * 100 == pytest.approx(box_depths_cm[box_depths_cm >= -1e-9].min(), abs=1e-9)
    assert rec.n_samples == np.count_nonzero(box_depths_cm >= -1e-9)
    assert info["mmode_region"]["region"] == 1 and info["dicom"]["regions"][1]["delta"] == [dx, dy]


def test_mmode_region_without_time_units_is_exit_3(tmp_path, capsys):
    frame = np.zeros((1, 120, 100), np.uint8)
    path = write_dicom(tmp_path / "nounits.dcm", frame, regions=[_region(2, (0, 0, 99, 119), (0, 0), (1.0, 1.0))])
    assert main(["info", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Physical Units X in s and Y in cm" in err
    assert "units ['none', 'none']" in err


# -- cine: regions, timing, photometric interpretations, compression ----------------------------
def test_cine_two_regions_default_line_and_calibration(tmp_path):
    """A 2D region beside an ECG strip: the default M-line runs down the 2D region's centre,
    calibrated by its Delta Y; the frame times come from the Frame Time Vector."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (6, 120, 200), dtype=np.uint8)
    regions = [_region(1, (10, 5, 129, 114), (3, 3), (0.03, 0.025), (60, 0), (0.0, 0.0)),
               _region(4, (140, 5, 199, 114), (4, 0), (0.01, 0.0), data_type=10)]
    steps_ms = [0, 40, 40, 50, 40, 40]
    path = write_dicom(tmp_path / "cine.dcm", frames, regions=regions, FrameTimeVector=steps_ms, FrameTime=99)
    with open_recording(path) as rec:
        assert rec.info()["mline"]["px"] == [69.5, 5, 69.5, 114]
        assert rec.meta.depth_calibrated and rec.meta.sample_spacing_m == pytest.approx(0.025 / 100)
        np.testing.assert_allclose(rec.timestamps_s(), np.cumsum(steps_ms) / 1e3)
        assert rec.meta.prf_hz == pytest.approx(25.0)
        lines = rec.read(2, 5)
    y = np.arange(5, 115, dtype=float)
    ref = [ndimage.map_coordinates(f.astype(float), [y, np.full_like(y, 69.5)], order=1) for f in frames[2:5]]
    np.testing.assert_allclose(lines, ref, atol=1e-3)
    # a line leaving the 2D region is not calibrated by it: depth in pixels, said so
    with open_recording(path, mline=(100, 50, 160, 50)) as rec:
        assert not rec.meta.depth_calibrated and rec.info()["depth_m"] is None
        assert "uncalibrated" in rec.meta.description


def test_odd_regions_are_read_as_stored_never_an_error(tmp_path, capsys):
    """Unknown codes, a region without box or deltas, a sequence of three: `info` lists them
    as they are (null where missing) and the cine still opens, uncalibrated."""
    frames = np.zeros((3, 50, 60), np.uint8)
    odd = _region(7, (0, 0, 59, 49), (99, 3), (0.1, -0.1), data_type=40, flags=31)
    bare = Dataset()
    bare.RegionSpatialFormat = 1
    two_d = _region(1, (5, 5, 54, 44), (3, 0), (0.1, 0.1), ref_px=(-1000, 5000), ref_value=(-3.5, 12.0))
    path = write_dicom(tmp_path / "odd.dcm", frames, regions=[odd, bare, two_d], CineRate=20)
    assert main(["info", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    first, second, third = out["dicom"]["regions"]
    assert first["spatial_format"] == "other (7)" and first["data_type"] == "other (40)"
    assert first["units"] == ["other (99)", "cm"] and first["delta"] == [0.1, -0.1] and first["flags"] == 31
    assert second == {"spatial_format": "2d", "data_type": "none", "box_px": None, "units": ["none", "none"],
                      "delta": [None, None], "reference_px": None, "reference_value": None, "flags": None,
                      "fits_frame": False}
    assert third["reference_px"] == [-1000, 5000] and third["reference_value"] == [-3.5, 12.0]
    # the default line runs down the first 2D region with a box; its Y has no unit: uncalibrated
    assert out["depth_m"] is None and out["mline"]["px"] == [29.5, 5, 29.5, 44]
    assert out["prf_hz"] == pytest.approx(20.0) and out["dicom"]["frame_timing"] == "Cine Rate"


def test_frame_timing_sources():
    def ds(**kw):
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    times, interval, src = frame_timing(ds(FrameTimeVector=[0, 20, 30, 20], FrameTime=5), 4)
    np.testing.assert_allclose(times, [0, 0.02, 0.05, 0.07])
    assert interval == pytest.approx(0.02) and src == "Frame Time Vector"
    assert frame_timing(ds(FrameTimeVector=[0, -1, 3], FrameTime=25), 3)[1:] == (0.025, "Frame Time")
    assert frame_timing(ds(CineRate=50), 3)[1:] == (0.02, "Cine Rate")
    assert frame_timing(ds(RecommendedDisplayFrameRate=20), 3)[1:] == (0.05, "Recommended Display Frame Rate")
    assert frame_timing(ds(FrameTime=0), 3) == (None, None, "none")


def test_photometric_interpretations_to_grey(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    mono = rng.integers(0, 256, (2, 16, 24), dtype=np.uint8)
    cases = {
        "rgb": (rgb, dict(photometric="RGB"), rgb @ BT601),
        "mono1": (mono, dict(photometric="MONOCHROME1"), 255.0 - mono),
        "mono12": (mono.astype(np.uint16) * 16, dict(bits=12), mono * 16.0 * 255 / 4095),
    }
    for name, (pixels, kw, expected) in cases.items():
        path = write_dicom(tmp_path / f"{name}.dcm", pixels, FrameTime=40, **kw)
        np.testing.assert_allclose(DicomFrames(path).frames(0, 2), expected, atol=1e-3, err_msg=name)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, "jpeg_lossless"])
def test_compressed_cine_decodes_to_the_stored_values(tmp_path, syntax):
    import pydicom

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3, 32, 40), dtype=np.uint8)
    plain = write_dicom(tmp_path / "plain.dcm", frames, FrameTime=40)
    path = tmp_path / "packed.dcm"
    if syntax == "jpeg_lossless":  # GDCM writes it; pydicom has no JPEG lossless encoder
        import gdcm

        reader = gdcm.ImageReader()
        reader.SetFileName(str(plain))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(path))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
    else:
        ds = pydicom.dcmread(plain)
        ds.compress(syntax)
        ds.save_as(path)
    src = DicomFrames(path)
    assert src.transfer_syntax.is_compressed
    np.testing.assert_array_equal(src.frames(0, 3), frames)
    np.testing.assert_array_equal(src.frame(1), frames[1])


# -- laziness ----------------------------------------------------------------------------------
def test_info_on_a_500_mb_cine_reads_the_header_only(tmp_path, capsys, monkeypatch):
    """A 500 MB uncompressed cine (sparse on disk): `mmode info` answers without decoding."""
    import pydicom
    import pydicom.pixels

    n, height, width = 1000, 500, 1000
    small = write_dicom(tmp_path / "head.dcm", np.zeros((2, height, width), np.uint8), FrameTime=20,
                        regions=[_region(1, (0, 0, width - 1, height - 1), (3, 3), (0.01, 0.01))])
    ds = pydicom.dcmread(small, stop_before_pixels=True)
    ds.NumberOfFrames = n
    big = tmp_path / "big.dcm"
    ds.save_as(big, enforce_file_format=True)
    with open(big, "ab") as fh:  # Pixel Data (7FE0,0010), VR OB, explicit VR little endian; sparse zeros
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00" + (n * height * width).to_bytes(4, "little"))
        fh.truncate(fh.tell() + n * height * width)
    assert big.stat().st_size > 500e6
    monkeypatch.setattr(pydicom.pixels, "iter_pixels", lambda *a, **k: pytest.fail("info decoded pixels"))
    tracemalloc.start()
    try:
        assert main(["info", str(big), "--json"]) == 0
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 20e6  # the header only: not the 500 MB of pixels
    out = json.loads(capsys.readouterr().out)
    assert out["n_lines"] == n and out["dicom"]["n_frames"] == n


# -- bad files (exit 3, one line naming the file) -----------------------------------------------
def _fails(capsys, path, *expected, args=()):
    code = main(["info", str(path), *args])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and "expected" in err, err
    for text in expected:
        assert text in err, err


def test_bad_dicom_files(tmp_path, capsys):
    import pydicom

    tmp = tmp_path
    (tmp / "text.dcm").write_text("not a DICOM file at all")
    _fails(capsys, tmp / "text.dcm", "a DICOM file")
    frames = np.random.default_rng(4).integers(0, 256, (4, 40, 50), dtype=np.uint8)
    good = write_dicom(tmp / "good.dcm", frames, FrameTime=40)
    data = good.read_bytes()
    (tmp / "cut_pixels.dcm").write_bytes(data[:-3000])
    _fails(capsys, tmp / "cut_pixels.dcm", "bytes of pixel data")
    (tmp / "cut_header.dcm").write_bytes(data[:400])
    _fails(capsys, tmp / "cut_header.dcm")
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(tmp / "nopixels.dcm")
    _fails(capsys, tmp / "nopixels.dcm", "Pixel Data")
    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264
    ds.PixelData = encapsulate([bytes(100)])
    ds.save_as(tmp / "h264.dcm")
    _fails(capsys, tmp / "h264.dcm", "transfer syntax", "H.264")
    _fails(capsys, good, "M-line within the frame", args=("--mline", "10,5,60,5"))


def test_truncated_compressed_cine_fails_on_read(tmp_path, capsys):
    import pydicom

    frames = np.random.default_rng(5).integers(0, 256, (4, 40, 50), dtype=np.uint8)
    ds = pydicom.dcmread(write_dicom(tmp_path / "p.dcm", frames, FrameTime=40))
    ds.compress(RLELossless)
    path = tmp_path / "rle.dcm"
    ds.save_as(path)
    path.write_bytes(path.read_bytes()[:-2000])
    _fails(capsys, path, "decodable frame", args=("--check",))
    with pytest.raises(DataError):
        DicomFrames(path).frames(0, 4)
    assert math.isfinite(DicomFrames(path).frame_interval_s)
