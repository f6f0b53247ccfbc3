"""Streaming processor and pipeline: block invariance, settings, shapes, errors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmode.app.pipeline import Pipeline, PipelineSettings, Results
from mmode.dsp import envelope
from mmode.dsp.features import FeatureExtractor
from mmode.dsp.processor import Processor, ProcessorSettings
from mmode.errors import DataError, UsageError
from mmode.ingest.meta import AcquisitionMeta, LineBlock


@pytest.fixture(scope="module")
def sim():
    from mmode.ingest.simulator import simulate

    return simulate("cardiac_regular", seconds=0.6, prf_hz=500.0, seed=4, n_samples=1024)


def run_blocks(settings, meta, lines, block):
    p = Processor(settings)
    p.prepare(meta, lines.shape[1])
    outs = [p.process(LineBlock(i, i / meta.prf_hz, lines[i:i + block])) for i in range(0, lines.shape[0], block)]
    return outs


def concat(outs, key):
    return np.concatenate([o.features[key] for o in outs])


@pytest.mark.parametrize("method", ["none", "median_persist", "wavelet"])
def test_any_block_split_gives_the_same_output(sim, method):
    settings = ProcessorSettings(n_rows=128, denoise=method)
    whole = run_blocks(settings, sim.meta, sim.lines, sim.lines.shape[0])[0]
    for block in (1, 7, 64, 200):
        outs = run_blocks(settings, sim.meta, sim.lines, block)
        np.testing.assert_allclose(np.concatenate([o.display_db for o in outs]), whole.display_db, atol=1e-4)
        np.testing.assert_allclose(np.concatenate([o.t_s for o in outs]), whole.t_s)
        for key in ("mean_db", "decorrelation", "decorrelation_lag", "decorrelation_rate_per_s",
                    "wavelet_entropy", "wavelet_rel_energy"):
            np.testing.assert_allclose(concat(outs, key), whole.features[key], atol=1e-4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=299), max_size=6, unique=True))
def test_random_block_splits_match_the_whole(sim, cuts):
    settings_ = ProcessorSettings(n_rows=64, denoise="median_persist")
    lines = sim.lines[:300]
    whole = run_blocks(settings_, sim.meta, lines, 300)[0].display_db
    p = Processor(settings_)
    p.prepare(sim.meta, lines.shape[1])
    edges = [0, *sorted(cuts), 300]
    parts = [p.process(LineBlock(a, a / sim.meta.prf_hz, lines[a:b])).display_db for a, b in zip(edges, edges[1:])]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-4)


def test_srad_streaming_uses_context_and_stays_in_range(sim):
    settings = ProcessorSettings(n_rows=64, denoise="srad", denoise_strength=0.2)
    outs = run_blocks(settings, sim.meta, sim.lines, 100)
    img = np.concatenate([o.display_db for o in outs])
    assert img.shape == (sim.lines.shape[0], 64) and img.dtype == np.float32
    assert img.min() >= -60.0 and img.max() <= 0.0


def test_display_range_gain_and_row_depths(sim):
    p = Processor(ProcessorSettings(n_rows=256, gain_db=0.0, dynamic_range_db=50.0))
    p.prepare(sim.meta, 1024)
    out = p.process(LineBlock(0, 0.0, sim.lines[:50]))
    assert out.display_db.shape == (50, 256) and out.display_db.dtype == np.float32
    assert out.display_db.min() >= -50.0 and out.display_db.max() <= 0.0
    np.testing.assert_allclose(p.row_depths_m, sim.meta.depth_m(np.arange(256) * 4))
    np.testing.assert_allclose(out.t_s, np.arange(50) / sim.meta.prf_hz)
    # raising the gain by 6 dB shifts every unclipped pixel by 6 dB
    p.update_settings(ProcessorSettings(n_rows=256, gain_db=6.0, dynamic_range_db=50.0))
    louder = p.process(LineBlock(0, 0.0, sim.lines[:50])).display_db
    inside = (out.display_db > -44.0) & (out.display_db < -7.0)
    np.testing.assert_allclose(louder[inside], out.display_db[inside] + 6.0, atol=1e-3)


def test_tgc_and_full_scale_on_envelope_input():
    meta = AcquisitionMeta("envelope", 10e6, 0.0, 1000.0)
    n = 512
    expected_tgc = None
    # int16 lines within 30 dB of full scale: 0 dB is full scale (here -20 dBFS)
    ints = np.full((4, n), round(32768 * 10 ** (-20 / 20)), np.int16)
    p = Processor(ProcessorSettings(n_rows=n, tgc=((0.0, 0.0), (0.03, 30.0))))
    p.prepare(meta, n)
    db_int = p.process(LineBlock(0, 0.0, ints)).display_db
    expected_tgc = np.interp(p.row_depths_m, [0.0, 0.03], [0.0, 30.0])
    level_db = 20 * np.log10(ints[0, 0] / 32768.0)
    np.testing.assert_allclose(db_int[0], np.minimum(level_db + expected_tgc, 0.0), atol=0.01)
    assert p.level.mode == "full_scale" and p.level.reference_db == pytest.approx(20 * np.log10(32768))
    # float lines have no full scale: the same amplitude in any unit sits 6 dB under the top
    for scale in (1e-3, 1.0, 2e4):
        p = Processor(ProcessorSettings(n_rows=n, tgc=((0.0, 0.0), (0.03, 30.0))))
        p.prepare(meta, n)
        db_float = p.process(LineBlock(0, 0.0, np.full((4, n), scale, np.float32))).display_db
        np.testing.assert_allclose(db_float[0], np.minimum(-6.0 + expected_tgc, 0.0), atol=0.01)
        assert p.level.mode == "data" and p.level.reference_db == pytest.approx(20 * np.log10(scale) + 6.0, abs=1e-3)


def test_integers_far_below_full_scale_are_levelled_from_the_data():
    meta = AcquisitionMeta("envelope", 10e6, 0.0, 1000.0)
    p = Processor(ProcessorSettings(n_rows=64))
    p.prepare(meta, 256)
    faint = np.full((8, 256), 40, np.int16)  # -58 dBFS
    db = p.process(LineBlock(0, 0.0, faint)).display_db
    assert p.level.mode == "data"
    np.testing.assert_allclose(db, -6.0, atol=0.01)


def test_level_settles_after_a_second_and_moves_only_when_asked():
    from mmode.ingest.simulator import simulate

    sim = simulate("cardiac_regular", seconds=1.5, prf_hz=500.0, seed=4, n_samples=512)
    lines = sim.lines.astype(np.float32) * 3.0  # float: no full scale
    one_s = int(sim.meta.prf_hz)
    p = Processor(ProcessorSettings(n_rows=64))
    p.prepare(sim.meta, lines.shape[1])
    for i in range(0, lines.shape[0], 25):
        p.process(LineBlock(i, i / sim.meta.prf_hz, lines[i:i + 25]))
        assert p.level.settled == (i + 25 >= one_s)
    settled = p.level.reference_db
    # the streamed level is the 99th percentile of the sampled envelope of the first second
    q = Processor(ProcessorSettings(n_rows=64))
    q.prepare(sim.meta, lines.shape[1])
    q.settle_level(lines[:one_s])
    assert settled == pytest.approx(q.level.reference_db, abs=0.5)
    # louder lines later do not move it; Auto on them does, by what they gained
    louder = lines * 10.0
    p.process(LineBlock(750, 750 / sim.meta.prf_hz, louder[:100]))
    assert p.level.reference_db == settled
    p.relevel(750 / sim.meta.prf_hz, 850 / sim.meta.prf_hz)
    assert p.level.reference_db == pytest.approx(settled + 20.0, abs=1.0)
    # an explicit level wins; gain moves the image around it by exactly the gain
    p.update_settings(ProcessorSettings(n_rows=64, reference_db=settled))
    a = p.process(LineBlock(900, 900 / sim.meta.prf_hz, lines[:20])).display_db
    p.update_settings(ProcessorSettings(n_rows=64, reference_db=settled, gain_db=-40.0))
    b = p.process(LineBlock(920, 920 / sim.meta.prf_hz, lines[:20])).display_db
    inside = a > -19.0
    np.testing.assert_allclose(b[inside], a[inside] - 40.0, atol=1e-3)
    assert p.level.mode == "manual"


def test_settled_level_makes_the_image_independent_of_the_block_size(sim):
    lines = sim.lines.astype(np.float32)
    outs = []
    for block in (7, 300):
        p = Processor(ProcessorSettings(n_rows=64))
        p.prepare(sim.meta, lines.shape[1])
        p.settle_level(lines[: int(sim.meta.prf_hz)])
        outs.append(np.concatenate([p.process(LineBlock(i, i / 500.0, lines[i:i + block])).display_db
                                    for i in range(0, lines.shape[0], block)]))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)


def test_bad_blocks_raise_data_error(sim):
    p = Processor()
    with pytest.raises(DataError, match="prepare"):
        p.process(LineBlock(0, 0.0, sim.lines[:2]))
    with pytest.raises(DataError):
        p.prepare(sim.meta, 0)
    p.prepare(sim.meta, 1024)
    bad = sim.lines[:3].astype(np.float32)
    bad[1, 5] = np.inf
    with pytest.raises(DataError, match="NaN or Inf in line 101"):
        p.process(LineBlock(100, 0.2, bad))
    with pytest.raises(DataError, match="dtype"):
        p.process(LineBlock(0, 0.0, sim.lines[:3].astype(np.complex64)))
    with pytest.raises(DataError, match="1024 samples"):
        p.process(LineBlock(0, 0.0, sim.lines[:3, :512]))
    empty = p.process(LineBlock(0, 0.0, sim.lines[:0]))
    assert empty.display_db.shape == (0, 256)


def test_settings_are_validated():
    with pytest.raises(UsageError):
        ProcessorSettings(denoise="blur")
    with pytest.raises(UsageError):
        ProcessorSettings(dynamic_range_db=0)
    with pytest.raises(UsageError):
        ProcessorSettings(n_rows=3)
    with pytest.raises(UsageError):
        ProcessorSettings(denoise_strength=2.0)
    with pytest.raises(UsageError):
        ProcessorSettings(tgc=((0.02, 0.0), (0.01, 1.0)))
    with pytest.raises(UsageError):
        ProcessorSettings(wavelet="nope")
    with pytest.raises(UsageError):
        ProcessorSettings(feature_depth_m=float("nan"))
    # a decorrelation tail larger than MAX_TAIL_VALUES is refused before it is allocated
    with pytest.raises(UsageError, match="decorrelation lag"):
        FeatureExtractor(np.linspace(0.0, 0.05, 256), 1e7)


def test_failed_settings_change_keeps_the_old_settings(sim):
    p = Processor(ProcessorSettings(n_rows=64))
    p.prepare(sim.meta, 1024)
    deep = float(sim.meta.depth_m(1024)) + 0.01
    with pytest.raises(UsageError, match="feature_depth_m"):
        p.update_settings(ProcessorSettings(n_rows=128, feature_depth_m=deep))
    assert p.settings.n_rows == 64 and p.row_depths_m.shape == (64,)
    assert p.process(LineBlock(0, 0.0, sim.lines[:5])).display_db.shape == (5, 64)


def test_pipeline_results(sim):
    pipe = Pipeline(PipelineSettings(ProcessorSettings(n_rows=128)))
    pipe.prepare(sim.meta, 1024)
    res = pipe.process(LineBlock(seq=10, t_s=0.02, lines=sim.lines[10:74]))
    assert isinstance(res, Results)
    assert (res.seq_start, res.seq_stop) == (10, 74)
    assert res.display_db.shape == (64, 128) and res.row_depths_m.shape == (128,)
    np.testing.assert_allclose(res.t_s, 0.02 + np.arange(64) / sim.meta.prf_hz)
    assert res.timings_ms["dsp"] >= 0
    np.testing.assert_array_equal(pipe.row_depths_m, envelope.row_depths_m(sim.meta, 1024, 128))
    pipe.update_settings(PipelineSettings(ProcessorSettings(n_rows=64)))
    assert pipe.process(LineBlock(74, 0.148, sim.lines[74:80])).display_db.shape == (6, 64)
    assert pipe.row_depths_m.shape == (64,)
