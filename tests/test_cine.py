"""Anatomical M-mode from cine: the M-line sampling against scipy, videos written here with
PyAV (a bright band whose position is known in every frame), the grey-level contract
(``amplitude="grey"``, ``depth_calibrated``) through the processor, the .h5 format and
`mmode info`/`process`, bad videos, and the real lung clips of ../shared/data when present.
"""

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from scipy import ndimage

from mmode.app.cli import main
from mmode.dsp.processor import Processor, ProcessorSettings
from mmode.errors import DataError
from mmode.ingest import cine
from mmode.ingest.cine import load_frames, mline_recording
from mmode.ingest.files import open_frames, open_recording
from mmode.ingest.h5format import read_h5, write_recording
from mmode.ingest.meta import CLASSES, AcquisitionMeta, LineBlock
from mmode.ingest.mline import default_mline, sample_mline
from mmode.ingest.sources import FileSource
from mmode.ingest.video import VideoFrames

LUNG = Path(__file__).resolve().parents[2] / "shared" / "data" / "lung_videos"
FPS, N_FRAMES, HEIGHT, WIDTH = 30, 90, 160, 120


def band_frames(n=N_FRAMES, fps=FPS, seed=0):
    """(frames (n, H, W) uint8, band row per frame (n,)): speckle moving with a bright band
    at ``60 + 15 sin(2 pi 0.7 t)`` rows."""
    t = np.arange(n) / fps
    y = 60 + 15 * np.sin(2 * np.pi * 0.7 * t)
    speckle = np.random.default_rng(seed).uniform(20, 60, (HEIGHT, WIDTH))
    rows = np.arange(HEIGHT)[:, None]
    frames = [np.roll(speckle, int(round(yi - 60)), axis=0) + 180 * np.exp(-0.5 * ((rows - yi) / 1.5) ** 2)
              for yi in y]
    return np.clip(frames, 0, 255).astype(np.uint8), y


def write_video(path, frames, fps=FPS, codec="libx264", pix_fmt="yuv420p"):
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "10"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.repeat(f[..., None], 3, axis=2), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def band_video(tmp_path_factory):
    frames, y = band_frames()
    return write_video(tmp_path_factory.mktemp("video") / "band.mp4", frames), frames, y


# -- the M-line --------------------------------------------------------------------------------
@pytest.mark.parametrize("line", [(10, 0, 10, 39), (0.5, 3.25, 48.75, 30.5), (49, 39, 0, 0), (7.3, 20, 41.9, 20),
                                  (3, 3, 4, 4)])
def test_sample_mline_matches_map_coordinates(line):
    frames = np.random.default_rng(1).uniform(0, 255, (3, 40, 50)).astype(np.float32)
    x0, y0, x1, y1 = line
    length = math.hypot(x1 - x0, y1 - y0)
    s = np.arange(int(np.floor(length)) + 1) / length  # one sample per pixel of length
    x, y = x0 + s * (x1 - x0), y0 + s * (y1 - y0)
    ref = [ndimage.map_coordinates(f, [y, x], order=1, mode="nearest") for f in frames]
    np.testing.assert_allclose(sample_mline(frames, *line), ref, rtol=1e-5, atol=1e-3)


def test_mline_outside_the_frame_and_default_lines():
    frames = np.zeros((2, 40, 50), np.float32)
    for line in [(0, 0, 50, 0), (-1, 5, 10, 5), (5, 5, 5, 5.5), (0, 0, math.nan, 3)]:
        with pytest.raises(DataError, match="M-line"):
            sample_mline(frames, *line)
    assert default_mline((40, 50)) == (24.5, 0, 24.5, 39)
    assert default_mline((40, 50), (10, 5, 30, 35)) == (20, 5, 20, 35)
    assert default_mline((40, 50), (10, 5, 90, 95)) == (29.5, 5, 29.5, 39)  # clipped to the frame
    assert default_mline((40, 50), (60, 50, 90, 95)) == (24.5, 0, 24.5, 39)  # outside: the frame


# -- videos ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, codec, pix_fmt, decoder", [("mp4", "libx264", "yuv420p", "h264"),
                                                             ("avi", "mjpeg", "yuvj420p", "mjpeg"),
                                                             ("mov", "mpeg4", "yuv420p", "mpeg4")])
def test_video_band_found_at_its_row_in_every_frame(tmp_path, suffix, codec, pix_fmt, decoder, capsys):
    frames, y = band_frames(n=30)
    path = write_video(tmp_path / f"band.{suffix}", frames, codec=codec, pix_fmt=pix_fmt)
    with open_recording(path) as rec:
        assert rec.meta.amplitude == "grey" and not rec.meta.depth_calibrated
        assert rec.meta.prf_hz == pytest.approx(FPS) and rec.n_lines == 30 and rec.n_samples == HEIGHT
        np.testing.assert_allclose(rec.timestamps_s(), np.arange(30) / FPS, atol=1e-6)
        peak = rec.read().argmax(axis=1)
    assert np.abs(peak - y).max() <= 1.0
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["depth_m"] is None and info["depth_px"] == [0, HEIGHT - 1] and info["depth_calibrated"] is False
    assert info["video"] == {"n_frames": 30, "frame_interval_s": pytest.approx(1 / FPS), "codec": decoder,
                             "shape_px": [HEIGHT, WIDTH]}
    assert info["mline"]["px"] == [(WIDTH - 1) / 2, 0, (WIDTH - 1) / 2, HEIGHT - 1]
    assert main(["info", str(path)]) == 0
    assert "depth_px     0 .. 159 (uncalibrated)" in capsys.readouterr().out


def test_process_video_motion_follows_the_band(band_video, tmp_path, capsys):
    path, _, y = band_video
    image = tmp_path / "mm.npy"
    assert main(["process", str(path), "--json", "--model", "none", "--image", str(image),
                 "--mline", "40,0,40,159"]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = report["meta"]
    assert meta["amplitude"] == "grey" and meta["depth_calibrated"] is False and report["level"]["mode"] == "grey"
    pixel_m = meta["c_m_s"] / (2 * meta["fs_hz"])  # nominal metres per pixel of an uncalibrated image
    m = report["motion"]
    assert m is not None and m["estimator"] == "ncc"
    assert m["depth_m"] / pixel_m == pytest.approx(y[0], abs=2)
    t = np.arange(N_FRAMES) / FPS
    truth_px = np.interp(m["t_s"], t, y - y[0])
    assert np.abs(np.asarray(m["displacement_m"]) / pixel_m - truth_px).max() < 1.0
    sidecar = json.loads(Path(str(image) + ".json").read_text())
    assert "depth_m" not in sidecar and sidecar["depth_calibrated"] is False
    assert sidecar["depth_px"][0] == 0 and sidecar["depth_px"][-1] <= HEIGHT - 1
    img = np.load(image)
    assert img.shape == (N_FRAMES, 256) and img.max() <= 0 and img.min() >= -60
    assert main(["process", str(path), "--model", "none"]) == 0
    text = capsys.readouterr().out
    assert "uncalibrated: in pixels" in text and " px peak to peak" in text


def test_px_per_cm_and_classification(band_video, capsys):
    path, _, _ = band_video
    with open_recording(path, px_per_cm=40.0) as rec:
        assert rec.meta.depth_calibrated and rec.meta.sample_spacing_m == pytest.approx(0.01 / 40)
        assert rec.info()["depth_m"][1] == pytest.approx((HEIGHT - 1) / 40 / 100)
    assert main(["process", str(path), "--json", "--px-per-cm", "40"]) == 0
    c = json.loads(capsys.readouterr().out)["classification"]
    assert c["windows"] and c["summary"]["label"] in CLASSES


def test_frame_source_api_for_a_display(band_video):
    """What a GUI uses: the frames, all in memory, the M-mode recomputed along a moved line,
    and a FileSource playing the cine's M-mode along a chosen line."""
    path, frames, _ = band_video
    src = open_frames(path)
    assert (src.n_frames, src.shape, src.regions) == (N_FRAMES, (HEIGHT, WIDTH), ())
    assert src.frame_interval_s == pytest.approx(1 / FPS)
    np.testing.assert_allclose(src.frame(45), frames[45], atol=6)  # H.264 at crf 10
    cine = load_frames(src)
    src.close()
    np.testing.assert_array_equal(cine.frame(45), open_frames(path).frame(45))
    line = (10.0, 20.0, 100.0, 150.0)
    with mline_recording(cine, line) as rec:
        np.testing.assert_allclose(rec.read(), sample_mline(cine.frames(0, N_FRAMES), *line), atol=1e-4)
    source = FileSource(str(path), options={"mline": line})
    meta = source.open()
    block = source.read_block(1.0)
    source.stop()
    assert meta.amplitude == "grey" and block.n_samples == rec.n_samples



def test_long_read_decodes_in_chunks_each_frame_once(band_video, monkeypatch):
    """A read of many lines (``mmode process`` reads 1024) decodes at most READ_CHUNK_BYTES of
    frames at a time, and the chunks of a sequential read go on decoding where the previous
    one stopped (one seek for the whole read); the lines are those of one decode of every frame."""
    path, _, _ = band_video
    line = (10.0, 20.0, 100.0, 150.0)
    whole = open_frames(path)
    reference = sample_mline(whole.frames(0, N_FRAMES), *line)
    whole.close()
    monkeypatch.setattr(cine, "READ_CHUNK_BYTES", 7 * HEIGHT * WIDTH * 4)
    spans, seeks = [], []
    frames, seek = VideoFrames.frames, av.container.InputContainer.seek
    monkeypatch.setattr(VideoFrames, "frames", lambda self, a, b: spans.append((a, b)) or frames(self, a, b))
    monkeypatch.setattr(av.container.InputContainer, "seek", lambda self, *a, **k: seeks.append(a) or seek(self, *a, **k))
    with open_recording(path, mline=line) as rec:
        lines = rec.read()
        np.testing.assert_array_equal(lines, reference)
        assert max(b - a for a, b in spans) == 7 and spans[0] == (0, 7) and spans[-1][1] == N_FRAMES
        assert len(seeks) == 1
        np.testing.assert_array_equal(rec.read(40, 45), reference[40:45])  # a jump back seeks again
        assert len(seeks) == 2

# -- the grey-level contract -------------------------------------------------------------------
def test_grey_levels_are_mapped_linearly_not_logged():
    meta = AcquisitionMeta("envelope", fs_hz=1e6, f0_hz=0, prf_hz=30, amplitude="grey")
    grey = np.repeat(np.linspace(0, 255, 64, dtype=np.float32)[None], 40, axis=0)
    proc = Processor(ProcessorSettings(n_rows=64, dynamic_range_db=50.0))
    proc.prepare(meta, 64)
    proc.settle_level(grey)
    out = proc.process(LineBlock(0, 0.0, grey)).display_db
    np.testing.assert_allclose(out, np.broadcast_to((grey[0] / 255 - 1) * 50.0, out.shape), atol=1e-4)
    assert proc.level.mode == "grey" and proc.relevel().mode == "grey"
    proc = Processor(ProcessorSettings(n_rows=64, dynamic_range_db=50.0, gain_db=5.0, reference_db=-10.0))
    proc.prepare(meta, 64)
    out = proc.process(LineBlock(0, 0.0, grey)).display_db
    np.testing.assert_allclose(out, np.clip((grey / 255 - 1) * 50.0 + 15.0, -50, 0), atol=1e-4)


def test_meta_contract_round_trips_and_is_validated(tmp_path, capsys):
    meta = AcquisitionMeta("envelope", fs_hz=7.7e6, f0_hz=0, prf_hz=25, amplitude="grey", depth_calibrated=False)
    assert meta.to_dict()["amplitude"] == "grey" and meta.to_dict()["depth_calibrated"] is False
    assert "amplitude" not in AcquisitionMeta("rf", 40e6, 5e6, 1000).to_dict()
    path = tmp_path / "grey.h5"
    write_recording(path, meta, np.full((50, 80), 128, np.float32))
    with read_h5(path) as rec:
        assert rec.meta == meta
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["amplitude"] == "grey" and info["depth_m"] is None and info["depth_px"] == [0, 79]
    for bad, match in [(dict(kind="rf", f0_hz=1e5, amplitude="grey"), "kind 'envelope'"),
                       (dict(amplitude="log"), "amplitude one of"), (dict(depth_calibrated="no"), "true or false")]:
        with pytest.raises(DataError, match=match):
            AcquisitionMeta(**{"kind": "envelope", "fs_hz": 1e6, "f0_hz": 0, "prf_hz": 10, **bad})


# -- bad input ---------------------------------------------------------------------------------
def _exit(capsys, code, *args):
    assert main(list(args)) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_videos_and_lines(band_video, tmp_path, capsys):
    path, _, _ = band_video
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not a video " * 100)
    err = _exit(capsys, 3, "info", str(junk))
    assert str(junk) in err and "expected a video file FFmpeg can open" in err
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    err = _exit(capsys, 3, "info", str(cut), "--check")
    assert str(cut) in err and "expected" in err
    err = _exit(capsys, 3, "process", str(path), "--mline", "0,0,0,400")
    assert str(path) in err and "M-line within the frame, x in 0..119 and y in 0..159 px" in err
    for option, value in (("--mline", "1,2,3"), ("--px-per-cm", "-4")):
        with pytest.raises(SystemExit) as stop:  # argparse's usage error
            main(["info", str(path), option, value])
        assert stop.value.code == 2 and "expected" in capsys.readouterr().err
    h5 = tmp_path / "grey.h5"
    write_recording(h5, AcquisitionMeta("envelope", 1e6, 0, 10), np.ones((4, 8), np.float32))
    assert "mline" in _exit(capsys, 2, "info", str(h5), "--mline", "1,2,3,4")


# -- real lung clips (../shared/data/lung_videos, when present) --------------------------------
@pytest.mark.skipif(not LUNG.is_dir(), reason=f"lung clips not found at {LUNG}")
@pytest.mark.parametrize("name", ["patient_4_L1.mp4", "patient_26_R2.mp4"])
def test_real_lung_clip_info_and_process(name, capsys):
    path = LUNG / name
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["video"]["shape_px"] == [350, 350] and 60 <= info["video"]["n_frames"] <= 100
    assert info["video"]["frame_interval_s"] == pytest.approx(0.04, rel=0.1)
    assert info["depth_calibrated"] is False and info["mline"]["px"] == [174.5, 0, 174.5, 349]
    assert main(["process", str(path), "--json", "--model", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_lines"] == info["n_lines"] and report["level"]["mode"] == "grey"


@pytest.mark.skipif(not LUNG.is_dir(), reason=f"lung clips not found at {LUNG}")
def test_real_lung_clip_reports_no_heart_rate(capsys):
    """A 4 s lung clip: its pleura trace (hand and pleura jitter) has a periodicity in the
    heart's range, which `process` once reported as "rate 31.5/min"; classified as a lung view,
    the report gives no heart rate and says why."""
    from mmode.dsp import rates
    from mmode.ingest.meta import BREATHING_CLASSES

    assert main(["process", str(LUNG / "patient_42_L1.mp4"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classification"]["summary"]["label"] in BREATHING_CLASSES
    trace = np.asarray(report["motion"]["displacement_m"])
    assert rates.summary(trace, report["meta"]["prf_hz"])["rate_per_min"] is not None
    assert report["rates"]["rate_per_min"] is None and "not the heartbeat" in report["rates"]["note"]
