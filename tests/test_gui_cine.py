"""Cine files in the window (B-mode pane, draggable M-line, the M-mode recomputed from the
frames in memory) and calibrated calipers (region units, pixels with a note elsewhere).

Offscreen. The engine is a stand-in that plays the spec's real source (``make_source``: the
window's in-memory :class:`~mmode.gui.cine.CineSource` for a cine, a ``FileSource`` else)
and shows its grey levels as they are, one block per read, so that what the window shows
is the lines it was given. References are independent of the code under test: the video is
decoded with PyAV here and sampled along the line with ``scipy.ndimage.map_coordinates``;
DICOM files are written here with pydicom, with known calibrations.
"""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid
from PyQt6.QtCore import QPointF, QSettings
from scipy import ndimage

from mmode.app.pipeline import Results
from mmode.dsp.levels import LevelReference
from mmode.gui import measurements as M
from mmode.gui.calibration import caliper_scale, points_region
from mmode.gui.cine import CineSource
from mmode.gui.engine_link import SourceSpec, make_source
from mmode.gui.main_window import MainWindow
from mmode.ingest.meta import AcquisitionMeta
from mmode.ingest.regions import UltrasoundRegion, line_step_m
from test_gui import open_source, wait_jobs  # the window's worker jobs, shared with the GUI tests

FPS = 25
N_FRAMES = 30
H, W = 48, 64
DR_DB = 50.0  # the window's default dynamic range
BT601 = np.array([0.299, 0.587, 0.114])


# -- a cine video and DICOM files with known content -------------------------------------------
@pytest.fixture(scope="module")
def cine_mp4(tmp_path_factory):
    """A 64 x 48 px H.264 video of 30 frames: texture plus a bright band moving down; and its
    frames as PyAV decodes them, as grey levels (BT.601 luma), (n, H, W) float64."""
    rng = np.random.default_rng(3)
    texture = rng.uniform(20, 120, (H, W))
    path = tmp_path_factory.mktemp("cine") / "cine.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for k in range(N_FRAMES):
            f = texture.copy()
            f[10 + k:14 + k] = 230
            rgb = np.repeat(f.astype(np.uint8)[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") @ BT601 for f in container.decode(video=0)])
    return path, decoded


def region(fmt, box, units, delta):
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = fmt, 1, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1, item.RegionLocationMaxY1 = box
    item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta
    item.ReferencePixelX0, item.ReferencePixelY0 = 0, 0
    item.ReferencePixelPhysicalValueX, item.ReferencePixelPhysicalValueY = 0.0, 0.0
    return item


def write_dicom(path, frames, regions, **timing):
    """An uncompressed MONOCHROME2 Part 10 file of ``frames`` (n, H, W) uint8 with ``regions``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundMultiFrameImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames.shape[0]
    for keyword, value in timing.items():
        setattr(ds, keyword, value)
    ds.SequenceOfUltrasoundRegions = list(regions)
    ds.PixelData = frames.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(path)


# -- the window on a stand-in engine --------------------------------------------------------------
class SourceEngine:
    """The engine interface on the spec's real source: each poll reads what the source has
    ready and returns its grey levels as display dB (255 -> 0 dB, linear, as for scanner
    images); "ended" after the last line, as the real engine."""

    instances: list = []

    def __init__(self, spec, settings):
        self.spec, self.settings = spec, settings
        self.source = make_source(spec)
        self.meta = self.source.open()
        self.depths_m = self.meta.depth_axis_m(self.source.n_samples)
        self.state = "running"
        SourceEngine.instances.append(self)

    def start(self):
        return self

    def stop(self):
        self.source.stop()
        self.state = "stopped"

    def poll_results(self):
        blocks = []
        while (block := self.source.read_block(0.01)) is not None:
            blocks.append(block)
        if self.source.finished and self.state == "running":
            self.state = "ended"
        return [Results(b.seq, b.seq + b.n_lines, b.t_s + np.arange(b.n_lines) / self.meta.prf_hz,
                        (np.asarray(b.lines, np.float32) / 255 - 1) * DR_DB, self.depths_m, {},
                        level=LevelReference("grey", 0.0, "scanner grey levels"))
                for b in blocks]

    def stats(self):
        return {"state": self.state}

    def update_settings(self, settings):
        self.settings = settings


@pytest.fixture
def window(qtbot, tmp_path):
    SourceEngine.instances.clear()
    w = MainWindow(None, QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat),
                   engine_factory=SourceEngine)
    qtbot.addWidget(w)
    w.resize(1400, 850)
    w.show()
    qtbot.waitExposed(w)
    w.timer.stop()  # the tests tick by hand
    w.sweep.smooth = False
    return w


def play_to_end(w, max_ticks=200):
    for _ in range(max_ticks):
        wait_jobs(w)
        w._tick()
        if w.frozen:
            return
    raise AssertionError("the file did not end")


def reference_mline(frames, line):
    """Bilinear samples one pixel apart along ``line`` in each frame (n, n_samples)."""
    x0, y0, x1, y1 = line
    length = math.hypot(x1 - x0, y1 - y0)
    k = np.arange(int(math.floor(length + 1e-9)) + 1)
    x, y = x0 + k * (x1 - x0) / length, y0 + k * (y1 - y0) / length
    return np.stack([ndimage.map_coordinates(f, [y, x], order=1) for f in frames])


def drag_line(w, line):
    """Move the M-line's handles as a drag would and release it."""
    start, end = w.bview.roi.getHandles()
    w.bview.roi.movePoint(start, QPointF(line[0], line[1]), finish=False)
    w.bview.roi.movePoint(end, QPointF(line[2], line[3]))  # finish: the release


def caliper(w, kind, *points):
    """Measure ``kind`` with the window's calipers at ``points`` (t_s, depth_m)."""
    w.calipers.set_kind(kind)
    for t_s, depth_m in points:
        m = w.calipers.add_point(t_s, depth_m)
    return m


# -- the unit logic, pure --------------------------------------------------------------------------
REGIONS = (
    UltrasoundRegion("2d", "tissue", (0, 0, 99, 99), ("cm", "cm"), (0.02, 0.02), (0, 0), (0.0, 0.0), 0),
    UltrasoundRegion("2d", "tissue", (100, 0, 199, 99), ("cm", "cm"), (0.03, 0.03), (0, 0), (0.0, 0.0), 0),
    UltrasoundRegion("2d", "tissue", (0, 100, 99, 199), ("none", "none"), (0.0, 0.0), None, None, 0),
    UltrasoundRegion("m_mode", "tissue", (100, 100, 199, 199), ("s", "cm"), (0.01, 0.05), (0, 0), (0.0, 0.0), 0),
)


def test_points_region_says_where_and_why_not():
    assert points_region([(10, 10), (90, 50)], REGIONS) == (0, "")
    assert points_region([(10, 10), (150, 50)], REGIONS) == (
        None, "the points lie in different regions (region 0 and region 1)")
    assert points_region([(10, 110), (50, 150)], REGIONS) == (None, "region 2 (2d) has no physical units")
    assert points_region([(10, 10), (300, 10)], REGIONS) == (None, "(300, 10) px lies outside every region")
    assert points_region([(110, 110), (150, 150)], REGIONS) == (
        None, "region 3 (m_mode) has units s x cm, not cm x cm")
    assert points_region([(110, 110), (150, 150)], REGIONS, "m_mode", ("s", "cm")) == (3, "")
    assert points_region([(10, 10)], ()) == (None, "no calibrated region")
    # for M-lines it agrees with the reader's calibration (regions.line_step_m)
    for line in ((50, 0, 50, 99), (50, 0, 150, 50), (10, 50, 10, 150), (150, 110, 150, 190), (120, 5, 190, 95)):
        calibrated = any(line_step_m(r, line) is not None for r in REGIONS)
        assert (points_region([line[:2], line[2:]], REGIONS)[0] is not None) == calibrated


def test_units_follow_the_calibration():
    p1, p2 = (1.0, 0.030), (1.5, 0.040)  # 10 mm deeper in 0.5 s
    rf = M.measure("slope", [p1, p2])
    assert (rf.value, rf.unit, rf.note) == (pytest.approx(20.0), "mm/s", "")
    image = M.CaliperScale(image_units=True)
    assert [(m.value, m.unit) for m in (M.measure(k, [p1, p2], scale=image) for k in ("time", "depth", "slope"))] == [
        (pytest.approx(0.5), "s"), (pytest.approx(1.0), "cm"), (pytest.approx(2.0), "cm/s")]
    assert M.measure("heart_rate", [p1, p2], scale=image).unit == "bpm"
    tapse = M.measure("tapse", [p1, p2], scale=image)
    assert (tapse.value, tapse.unit, tapse.normal) == (pytest.approx(10.0), "mm", M.TAPSE_NORMAL)
    # depth not calibrated: lengths in pixels with the note, no normal range; time stays
    px = M.CaliperScale(image_units=True, m_per_px=1e-4, note="depth in pixels: why")
    depth = M.measure("depth", [p1, p2], scale=px)
    assert (depth.value, depth.unit, depth.note) == (pytest.approx(100.0), "px", "depth in pixels: why")
    assert depth.text() == "Depth 100 px [depth in pixels: why]"
    slope = M.measure("slope", [p1, p2], scale=px)
    assert (slope.value, slope.unit) == (pytest.approx(200.0), "px/s")
    tapse = M.measure("tapse", [p1, p2], scale=px)
    assert (tapse.unit, tapse.normal, tapse.in_range) == ("px", None, None)
    time_ = M.measure("time", [p1, p2], scale=px)
    assert (time_.value, time_.unit, time_.note) == (pytest.approx(0.5), "s", "")
    fs = M.measure("fs", [(0, 0.03), (0, 0.08), (0.3, 0.04), (0.3, 0.075)], scale=px)
    assert fs.value == pytest.approx(30.0) and fs.extra == pytest.approx({"lvidd_px": 500.0, "lvids_px": 350.0})
    # exports give the points' depths in pixels, never in mm
    rows = M.to_csv([depth]).splitlines()[1].split(",")
    row = dict(zip(M.CSV_COLUMNS, rows))
    assert row["points_depth_mm"] == "" and row["points_depth_px"] == "300.00;400.00" and row["note"] == depth.note
    assert M.to_dict(depth)["points"] == [{"t_s": 1.0, "depth_px": pytest.approx(300.0)},
                                          {"t_s": 1.5, "depth_px": pytest.approx(400.0)}]
    # the scale of a recording
    meta = AcquisitionMeta("envelope", 1540 / (2 * 1e-4), 0.0, 25.0, amplitude="grey", depth_calibrated=False)
    scale = caliper_scale(meta, {"mline": {"px": [10, 10, 150, 50]}}, REGIONS)
    assert scale.m_per_px == pytest.approx(1e-4) and scale.image_units
    assert scale.note == "depth in pixels: M-line ends: the points lie in different regions (region 0 and region 1)"
    assert caliper_scale(meta, {"mline": {"px": [0, 0, 0, 9]}}).note == (
        "depth in pixels: the file has no scale (give --px-per-cm)")
    assert caliper_scale(AcquisitionMeta("rf", 20e6, 5e6, 1000.0), {}) == M.RF_SCALE


# -- the window ----------------------------------------------------------------------------------
def test_cine_shows_the_bmode_and_a_moved_mline_recomputes_the_mmode(window, cine_mp4):
    path, decoded = cine_mp4
    open_source(window, SourceSpec("file", str(path), speed=1000.0))
    assert window.bview.isVisible() and window.cine_frames.n_frames == N_FRAMES
    # the default line, vertical through the frame's centre, drawn on the first frame
    default = ((W - 1) / 2, 0.0, (W - 1) / 2, H - 1.0)
    assert window.bview.line() == pytest.approx(default)
    assert window.spec.cine.line == pytest.approx(default)
    np.testing.assert_allclose(window.spec.cine.lines, reference_mline(decoded, default), atol=1e-3)
    assert "no scale" in window.bview.header.text()
    assert window.mview.plot.getAxis("left").labelText == "Depth (px, not calibrated)"
    assert isinstance(SourceEngine.instances[-1].source.inner, CineSource)
    play_to_end(window)

    # the B-mode plays with the M-mode: the frame of the review cursor's line
    window.seek(0.6)
    window._tick()
    assert window.bview.frame_index == round(0.6 * FPS)
    shown = np.clip(window.cine_frames.frame(15), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(window.bview.image.image, shown)

    # drag the line: the M-mode is recomputed from the frames in memory and played again
    window.calipers.set_kind("time")
    window.calipers.add_point(0.1, 0.001)
    window.calipers.add_point(0.3, 0.001)
    assert len(window.measurements) == 1
    new = (10.5, 3.0, 50.0, 40.0)
    drag_line(window, new)
    assert window.spec.cine.line == pytest.approx(new) and window.bview.line() == pytest.approx(new)
    reference = reference_mline(decoded, new)
    np.testing.assert_allclose(window.spec.cine.lines, reference, atol=1e-3)
    wait_jobs(window)
    engine = SourceEngine.instances[-1]
    assert engine.spec.cine is window.spec.cine and engine.spec.start_line == 0 and not window.frozen
    assert window.measurements == []  # made on the old line's M-mode
    play_to_end(window)
    assert window.ring.n_rows == reference.shape[1] == 55  # floor(hypot(39.5, 37)) + 1
    held = window.ring.window(window.ring.n_written, window.ring.capacity)
    assert held.n_cols == N_FRAMES
    np.testing.assert_allclose(held.image.astype(float), reference, atol=1.0)  # grey levels, rounded

    # a line dragged past the edge is clipped to the frame
    drag_line(window, (-20.0, 5.0, 30.0, 80.0))
    assert window.spec.cine.line == pytest.approx((0.0, 5.0, 30.0, H - 1.0))

    # depth in pixels: a caliper says so; time in s
    m_px = window.scale.m_per_px
    depth = caliper(window, "depth", (0.2, 10 * m_px), (0.2, 30 * m_px))
    assert (depth.value, depth.unit) == (pytest.approx(20.0), "px") and "no scale" in depth.note
    assert caliper(window, "time", (0.2, 0.0), (0.6, 0.0)).unit == "s"

    # with --px-per-cm the depth is in cm
    open_source(window, SourceSpec("file", str(path), speed=1000.0, px_per_cm=10.0))
    assert window.scale.depth_calibrated and window.mview.plot.getAxis("left").labelText == "Depth (cm)"
    assert "4.70 cm" in window.bview.header.text()  # 47 px at 10 px/cm
    depth = caliper(window, "depth", (0.2, 0.01), (0.2, 0.03))
    assert (depth.value, depth.unit, depth.note) == (pytest.approx(2.0), "cm", "")


def test_calipers_measure_in_the_units_of_a_calibrated_dicom_mmode_region(window, tmp_path):
    # one M-mode region: 0.01 s and 0.05 cm per pixel, depth 0 at its top row
    box = (20, 10, 179, 109)
    frames = np.random.default_rng(0).integers(0, 255, (1, 120, 200), dtype=np.uint8)
    path = write_dicom(tmp_path / "mmode.dcm", frames, [region(2, box, (4, 3), (0.01, 0.05))])
    open_source(window, SourceSpec("file", path, speed=1000.0))
    assert not window.bview.isVisible()  # not a cine: today's layout
    meta = SourceEngine.instances[-1].meta
    assert meta.prf_hz == pytest.approx(100.0)

    def at(col, row):  # a pixel of the region as a point of the M-mode plot
        return (col - box[0]) / meta.prf_hz, meta.depth_m(row - box[1])

    p1, p2 = at(40, 30), at(140, 70)  # 100 columns (1.0 s) and 40 rows (2.0 cm) apart
    time_ = caliper(window, "time", p1, p2)
    depth = caliper(window, "depth", p1, p2)
    slope = caliper(window, "slope", p1, p2)
    rate = caliper(window, "heart_rate", p1, p2)
    assert (time_.value, time_.unit) == (pytest.approx(1.0), "s")
    assert (depth.value, depth.unit) == (pytest.approx(2.0), "cm")
    assert (slope.value, slope.unit) == (pytest.approx(2.0), "cm/s")
    assert (rate.value, rate.unit) == (pytest.approx(60.0), "bpm")
    assert all(m.note == "" for m in (time_, depth, slope, rate))
    assert window.mview.plot.getAxis("left").labelText == "Depth (cm)"


def test_calipers_in_pixels_with_a_note_across_regions(window, qtbot, tmp_path):
    # a cine with two 2D regions side by side, both in cm (0.02 cm per pixel)
    frames = np.random.default_rng(1).integers(0, 255, (8, 60, 120), dtype=np.uint8)
    regions = [region(1, (0, 0, 59, 59), (3, 3), (0.02, 0.02)), region(1, (60, 0, 119, 59), (3, 3), (0.02, 0.02))]
    path = write_dicom(tmp_path / "cine.dcm", frames, regions, FrameTime=40.0)
    across = (20.0, 30.0, 100.0, 30.0)
    open_source(window, SourceSpec("file", path, speed=1000.0, mline=across))
    assert window.bview.isVisible() and not window.scale.depth_calibrated
    note = "depth in pixels: M-line ends: the points lie in different regions (region 0 and region 1)"
    assert note in window.bview.header.text()
    m_px = window.scale.m_per_px
    depth = caliper(window, "depth", (0.04, 10 * m_px), (0.04, 50 * m_px))
    slope = caliper(window, "slope", (0.04, 10 * m_px), (0.12, 50 * m_px))
    assert (depth.value, depth.unit, depth.note) == (pytest.approx(40.0), "px", note)
    assert (slope.value, slope.unit, slope.note) == (pytest.approx(500.0), "px/s", note)
    assert note in depth.text() and window.panel.table.item(0, 2).text() == note
    # the line dragged into region 0: calibrated, in cm (40 px x 0.02 cm)
    drag_line(window, (20.0, 5.0, 20.0, 55.0))
    assert window.scale.depth_calibrated and "1.00 cm" in window.bview.header.text()
    step_m = window.spec.cine.info["mline"]["step_m"]
    depth = caliper(window, "depth", (0.04, 10 * step_m), (0.04, 50 * step_m))
    assert (depth.value, depth.unit, depth.note) == (pytest.approx(0.8), "cm", "")
    # the report's file analysis runs along the line on screen
    window.export_report(tmp_path / "report.json")
    qtbot.waitUntil(lambda: window._tick() or not window.report_pending, timeout=60_000)  # ticks write it
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["process"]["n_samples"] == 51 and report["measurements"][0]["unit"] == "cm"


def test_gui_command_passes_the_mline_and_pixel_size(cine_mp4, capsys):
    from mmode.app import cmd_gui
    from mmode.app.cli import build_parser, main

    path, _ = cine_mp4
    args = build_parser().parse_args(["gui", str(path), "--mline", "5,2,40,45", "--px-per-cm", "20"])
    spec = cmd_gui._spec(args)
    assert (spec.mline, spec.px_per_cm) == ((5.0, 2.0, 40.0, 45.0), 20.0)
    assert main(["gui", str(path), "--mline", "5,2,400,45", "--screenshot", "x.png"]) == 3  # outside the frame
    assert "M-line within the frame" in capsys.readouterr().err


def test_demo_cine_is_small_and_opens():
    from mmode.ingest.files import open_frames, sample_data_dir

    path = sample_data_dir() / "demo_cine.mp4"
    assert path.stat().st_size < 2e6
    src = open_frames(path)
    try:
        assert (src.n_frames, src.shape, src.frame_interval_s) == (100, (288, 320), pytest.approx(0.04))
    finally:
        src.close()
