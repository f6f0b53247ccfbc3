"""Forged sizes (issue 15, point 3): for every reader, a file of a few kB whose header declares
gigabytes or more is exit 3 from ``mmode info`` with one line naming what was declared, before
anything large is read or allocated.

Each file is built here with an independent writer (numpy's .npy header writer, zipfile,
scipy.io.savemat, h5py, pydicom, PyAV, hand-packed bytes) and then patched to declare more
than it holds. "Nothing large allocated" is measured: the peak of Python and numpy
allocations (``tracemalloc``) while ``mmode info`` refuses the file stays under
:data:`PEAK_BOUND_BYTES`, far below what the header declares.
"""

import io
import json
import struct
import tracemalloc
import zipfile

import h5py
import numpy as np

from mmode.app.cli import main
from mmode.ingest import cine

RF_JSON = {"kind": "rf", "fs_hz": 40e6, "f0_hz": 5e6, "prf_hz": 1000.0}
#: Peak of traced allocations allowed while a forged file is refused: 1 MiB, against the
#: gigabytes (or more) each file declares (measured: 0.1 to 0.16 MiB).
PEAK_BOUND_BYTES = 1 << 20


def _refused(capsys, path, *expected):
    """``mmode info path`` is exit 3 with one line naming the file and each ``expected`` text;
    returns the peak of traced allocations during the call (the second call: the first one
    imports the reader's libraries, which is not the file's doing)."""
    main(["info", str(path)])
    capsys.readouterr()
    tracemalloc.start()
    try:
        code = main(["info", str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err, err
    for text in expected:
        assert text in err, err
    assert path.stat().st_size < 64 * 1024
    assert peak < PEAK_BOUND_BYTES, f"{peak} bytes allocated while refusing {path.name}"
    return err


# -- arrays with a JSON sidecar ------------------------------------------------------------------
def test_npy_declaring_1e10_lines(tmp_path, capsys):
    path = tmp_path / "huge.npy"
    (tmp_path / "huge.npy.json").write_text(json.dumps(RF_JSON))
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<i2", "fortran_order": False, "shape": (10**10, 64)})
        fh.write(bytes(1024))
    _refused(capsys, path, f"expected {128 + 10**10 * 64 * 2} bytes", "as the .npy header declares")


def test_npz_deflated_member_declaring_3_gb(tmp_path, capsys):
    """A deflated member whose .npy header and zip sizes agree on 3.2 GB of lines, held in
    a few hundred bytes: more than deflate can expand (1032:1), refused before decompressing."""
    path = tmp_path / "huge.npz"
    (tmp_path / "huge.npz.json").write_text(json.dumps(RF_JSON))
    n_lines = 200_000_000
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 8), np.int16))
    header["shape"] = (n_lines, 8)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    member = buf.getvalue() + bytes(256)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lines.npy", member)
    data = bytearray(path.read_bytes())
    declared = len(buf.getvalue()) + n_lines * 8 * 2  # < 4 GiB: no zip64 needed
    struct.pack_into("<I", data, 22, declared)  # local header: uncompressed size
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, declared)  # central directory
    path.write_bytes(bytes(data))
    _refused(capsys, path, "member lines.npy of at most 1032 x its", f"found {declared} bytes declared")


def test_raw_sidecar_declaring_1e12_lines(tmp_path, capsys):
    path = tmp_path / "rec.bin"
    path.write_bytes(bytes(2000))
    (tmp_path / "rec.bin.json").write_text(json.dumps({**RF_JSON, "n_samples": 100, "n_lines": 10**12}))
    _refused(capsys, path, f"expected {10**12 * 200} bytes", "found 2000 bytes")


# -- MATLAB ------------------------------------------------------------------------------------
def test_mat_v5_dimensions_forged(tmp_path, capsys):
    """A v5 file written by scipy whose lines matrix then declares 2^31-1 x 2^31-1 doubles."""
    import scipy.io

    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"rf": np.zeros((7, 5)), "fs": 40e6, "f0": 5e6, "prf": 1e3}, do_compression=False)
    data = bytearray(path.read_bytes())
    dims = struct.pack("<iiii", 5, 8, 7, 5)  # the miINT32 dimensions sub-element: 7 x 5
    assert data.count(dims) == 1
    i = data.find(dims)
    data[i : i + 16] = struct.pack("<iiii", 5, 8, 2**31 - 1, 2**31 - 1)
    path.write_bytes(bytes(data))
    _refused(capsys, path, f"{path}:rf", "expected stored data for its declared size (2147483647, 2147483647)")


def test_mat_v73_lines_declared_never_written(tmp_path, capsys):
    path = tmp_path / "x.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("rf", shape=(10**10, 64), dtype=np.int16, chunks=(64, 64))  # MATLAB rf(:, k): HDF5 (k, :)
        for name, value in (("fs", 40e6), ("f0", 5e6), ("prf", 1e3)):
            f[name] = np.array([[value]])
    _refused(capsys, path, f"{path}:rf", "expected stored data for its declared HDF5 shape (10000000000, 64)",
             "found 0 bytes")


# -- Clarius -----------------------------------------------------------------------------------
def test_clarius_header_declaring_1000_frames_of_32_mib(tmp_path, capsys):
    path = tmp_path / "scan.raw"
    path.write_bytes(np.array([2, 1000, 4096, 4096, 2], "<u4").tobytes() + bytes(8 + 16))
    path.with_suffix(".yml").write_text("sampling rate: 30 MHz\ntransmit frequency: 5 MHz\nframe rate: 20 Hz\n")
    _refused(capsys, path, f"expected {20 + 1000 * (8 + 4096 * 4096 * 2)} bytes", "found 44 bytes")


# -- DICOM -------------------------------------------------------------------------------------
def _dicom(path, *, rows, cols, frames, spp=1, compressed=False, pixel_data=b"\x00" * 16):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, UltrasoundMultiFrameImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = RLELossless if compressed else ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundMultiFrameImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = rows, cols, frames, spp
    ds.PhotometricInterpretation = "RGB" if spp == 3 else "MONOCHROME2"
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 33.3
    ds.PixelData = encapsulate([pixel_data]) if compressed else pixel_data
    if compressed:
        ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_uncompressed_declaring_a_million_frames(tmp_path, capsys):
    path = _dicom(tmp_path / "cine.dcm", rows=4096, cols=4096, frames=10**6)
    _refused(capsys, path, f"expected {4096 * 4096 * 10**6} bytes of pixel data for 1000000 frames", "found 16 bytes")


def test_dicom_compressed_declaring_a_billion_frames(tmp_path, capsys):
    """RLE pixel data of one 64-byte fragment that claims 10^9 frames: each frame needs at
    least one 8-byte fragment item, so the file cannot hold them."""
    path = _dicom(tmp_path / "cine.dcm", rows=64, cols=64, frames=10**9, compressed=True, pixel_data=bytes(64))
    _refused(capsys, path, "frames in", "bytes of encapsulated pixel data", "found Number of Frames 1000000000")


def test_dicom_compressed_frame_of_65535_squared_pixels(tmp_path, capsys):
    """One compressed frame of 65535 x 65535 RGB pixels would decode to 17 GB of grey levels."""
    path = _dicom(tmp_path / "big.dcm", rows=65535, cols=65535, frames=2, spp=3, compressed=True, pixel_data=bytes(64))
    _refused(capsys, path, f"frames of at most {cine.MAX_FRAME_BYTES} bytes decoded",
             f"found 65535 x 65535 pixels, {65535 * 65535 * 4} bytes")


# -- video -------------------------------------------------------------------------------------
def _mjpeg_avi(path, size_px=16, n_frames=2):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width = stream.height = size_px
        stream.pix_fmt = "yuvj420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size_px, size_px, 3), 60 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_video_headers_and_jpeg_frames_declaring_30000_squared(tmp_path, capsys):
    """An MJPEG AVI whose AVI headers and JPEG frame headers all declare 30000 x 30000
    pixels while each frame holds the bytes of 16 x 16: refused at open, without a frame of
    that size decoded (FFmpeg's probe finds no frame of a known size)."""
    path = _mjpeg_avi(tmp_path / "forged.avi")
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, data.find(b"avih") + 8 + 32, 30000, 30000)  # dwWidth, dwHeight
    struct.pack_into("<ii", data, data.find(b"strf") + 12, 30000, 30000)  # biWidth, biHeight
    sof = 0
    while (sof := data.find(b"\xff\xc0", sof + 1)) > 0:  # JPEG SOF0: length, precision, height, width
        struct.pack_into(">HH", data, sof + 5, 30000, 30000)
    path.write_bytes(bytes(data))
    _refused(capsys, path, "expected video frames of a known size")


def test_video_frame_over_the_budget_refused_before_decoding(tmp_path, capsys, monkeypatch):
    """The frame budget applies to what the container declares, before any frame is decoded:
    with the budget lowered below one 64 x 64 frame (FFmpeg will not open a few-kB file that
    declares gigabyte frames, see the test above), opening fails and nothing is decoded."""
    import av

    path = _mjpeg_avi(tmp_path / "small.avi", size_px=64)
    monkeypatch.setattr(cine, "MAX_FRAME_BYTES", 64 * 64 * 4 - 1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded before the frame size was checked")

    monkeypatch.setattr(av.container.InputContainer, "decode", no_decoding)
    _refused(capsys, path, f"frames of at most {64 * 64 * 4 - 1} bytes decoded", "found 64 x 64 pixels")
