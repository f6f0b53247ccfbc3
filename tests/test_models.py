"""Networks, compression, distillation, metrics and windowing against independent references.

The shipped models are checked in tests/test_models_shipped.py; the training smoke test
in tests/test_models_train.py.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from mmode.errors import DataError, ModelError
from mmode.models import compress, data as mdata, networks, pair_data
from mmode.models.distill import FeatureHint, distillation_loss, logits_and_features, regression_distillation_loss
from mmode.models.metrics import f1_scores, motion_metrics
from mmode.models.train import class_weights, curriculum_indices

torch.set_num_threads(1)


def _net(arch: str) -> nn.Module:
    cfg = dict(networks.DEFAULT_CONFIGS[arch])
    if arch.startswith("classifier"):
        cfg["n_classes"] = 7
    torch.manual_seed(0)
    return networks.build(arch, cfg).eval()


def _input(arch: str, n: int = 3, n_columns: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if arch.startswith("classifier"):
        return torch.randn(n, 1, n_columns, 64, generator=g)
    return torch.randn(n, 4, 16, generator=g)


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics so that eval-mode outputs are not degenerate."""
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


# -- networks ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(networks.ARCHS))
def test_network_shapes_and_config_round_trip(arch):
    model = _net(arch)
    out = model(_input(arch))
    assert out.shape == ((3, 7) if arch.startswith("classifier") else (3, 1))
    rebuilt = networks.build(arch, model.config())
    rebuilt.load_state_dict(model.state_dict())  # strict: identical layer shapes


@pytest.mark.parametrize("arch", ["motion_teacher", "motion_student"])
def test_antisymmetric_motion_nets_are_odd_under_swapping_the_lines(arch):
    """Against motion_inputs of the swapped IQ windows: the swapped inputs are reversed_pair's,
    the output flips sign, a window paired with itself gives 0; the body alone is not odd."""
    torch.manual_seed(0)
    model = networks.build(arch, {**networks.DEFAULT_CONFIGS[arch], "antisymmetric": True}).eval()
    _randomise_bn(model)
    rng = np.random.default_rng(3)
    a, b = (rng.normal(size=(5, 16)) + 1j * rng.normal(size=(5, 16)) for _ in range(2))
    x_ab, x_ba = torch.from_numpy(mdata.motion_inputs(a, b)), torch.from_numpy(mdata.motion_inputs(b, a))
    assert torch.allclose(networks.reversed_pair(x_ab), x_ba, atol=1e-6)
    body = networks.build(arch, {**model.config(), "antisymmetric": False}).eval()
    body.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(x_ba), -model(x_ab), atol=1e-6)
        assert torch.allclose(model(torch.from_numpy(mdata.motion_inputs(a, a))), torch.zeros(5, 1), atol=1e-7)
        assert not torch.allclose(body(x_ba), -body(x_ab), atol=1e-3)
        assert torch.allclose(model(x_ab), (body(x_ab) - body(x_ba)) / 2, atol=1e-6)
    assert networks.build(arch, model.config()).antisymmetric


@pytest.mark.parametrize("arch", ["classifier_teacher", "classifier_student"])
def test_classifiers_take_every_window_length(arch):
    """Global pooling over time: one network classifies 36 to 96 columns (2.25-6 s), and a
    window's logits do not depend on the other windows of its batch."""
    model = _net(arch)
    _randomise_bn(model)
    for n in (36, 37, 61, 96):
        x = _input(arch, 2, n)
        out = model(x)
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        torch.testing.assert_close(model(x[1:]), out[1:], rtol=1e-4, atol=1e-5)


def test_build_rejects_unknown_arch_and_bad_config():
    with pytest.raises(ModelError, match="arch one of"):
        networks.build("resnet50", {})
    with pytest.raises(ModelError, match="valid configuration"):
        networks.build("motion_teacher", {"channels": [8]})


def test_students_are_much_smaller_than_teachers():
    """Before pruning; the shipped (pruned) sizes are checked in test_models_shipped.py."""
    for task in ("classifier", "motion"):
        t = compress.costs(_net(f"{task}_teacher"), _input(f"{task}_teacher", 1))
        s = compress.costs(_net(f"{task}_student"), _input(f"{task}_student", 1))
        assert s["params"] <= 0.2 * t["params"]
        assert s["macs"] <= 0.15 * t["macs"]


def test_costs_count_a_single_conv_analytically():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False))
    c = compress.costs(conv, torch.zeros(1, 1, 10, 10))
    assert c["params"] == 4 * 9
    assert c["macs"] == 4 * 9 * 100  # one multiply-accumulate per weight per output pixel


# -- distillation --------------------------------------------------------------------------
def test_distillation_loss_matches_hand_computation():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    t = torch.tensor([[1.0, 1.5, -0.5], [3.0, -1.0, 0.0]])
    y = torch.tensor([0, 2])
    temp, alpha = 3.0, 0.6

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    sn, tn = s.numpy().astype(np.float64), t.numpy().astype(np.float64)
    ps, pt = softmax(sn / temp), softmax(tn / temp)
    kl = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
    ce = np.mean(-np.log(softmax(sn)[np.arange(2), y.numpy()]))
    expected = alpha * temp**2 * kl + (1 - alpha) * ce
    got = float(distillation_loss(s, t, y, temperature=temp, alpha=alpha))
    assert got == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_with_class_weights_and_limits():
    s = torch.tensor([[2.0, 0.5], [0.1, 0.9], [1.0, -1.0]])
    y = torch.tensor([0, 1, 1])
    w = torch.tensor([1.0, 3.0])
    # alpha = 0: weighted cross-entropy sum(w_y * -log p_y) / sum(w_y)
    logp = torch.log_softmax(s, 1).numpy()
    nll = -logp[np.arange(3), y.numpy()]
    expected = float(np.sum(w.numpy()[y.numpy()] * nll) / np.sum(w.numpy()[y.numpy()]))
    assert float(distillation_loss(s, s, y, alpha=0.0, class_weights=w)) == pytest.approx(expected, rel=1e-5)
    # alpha = 1 and student == teacher: the KL term vanishes
    assert float(distillation_loss(s, s.clone(), y, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DataError):
        distillation_loss(s, s, y, temperature=0.0)


def test_regression_distillation_and_feature_hint():
    s = torch.tensor([[1.0], [2.0]])
    t = torch.tensor([[0.0], [2.0]])
    y = torch.tensor([[1.0], [0.0]])
    # 0.25 * mean((1,0)^2) + 0.75 * mean((0,2)^2) = 0.125 + 1.5
    assert float(regression_distillation_loss(s, t, y, alpha=0.25)) == pytest.approx(1.625)
    hint = FeatureHint(2, 3)
    with torch.no_grad():
        hint.adapter.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    loss = hint(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0, 0.0]]))
    assert float(loss) == pytest.approx(9.0 / 3)


def test_logits_and_features_returns_the_head_input():
    model = _net("classifier_student")
    x = _input("classifier_student")
    out, feats = logits_and_features(model, x)
    torch.testing.assert_close(model.head(feats), out)
    assert feats.shape == (3, model.head.in_features)


# -- structured pruning ----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["classifier_student", "classifier_teacher", "motion_student"])
def test_structured_pruning_reduces_params_and_rebuilds_from_config(arch):
    model = _net(arch)
    x = _input(arch, 1)
    before = compress.costs(model, x)
    calls = []
    compress.prune_structured(model, x, 0.5, steps=2, ignored_layers=[model.head], fine_tune=lambda m, s: calls.append(s))
    after = compress.costs(model, x)
    assert calls == [0, 1]
    assert after["params"] < 0.5 * before["params"]
    assert after["macs"] < 0.5 * before["macs"]
    rebuilt = networks.build(arch, model.config())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(_input(arch)), model(_input(arch)))


def test_taylor_and_bn_scale_importance_prune():
    for importance in ("taylor", "bn_scale"):
        model = _net("classifier_student")
        x = _input("classifier_student", 4)
        before = compress.costs(model, x[:1])["params"]
        compress.prune_structured(model, x[:1], 0.3, importance=importance, ignored_layers=[model.head],
                                  taylor_loss=lambda m: m(x).logsumexp(1).mean())
        assert compress.costs(model, x[:1])["params"] < before
    with pytest.raises(DataError):
        compress.prune_structured(_net("motion_student"), _input("motion_student", 1), 0.3, importance="taylor")


def test_pruning_zeroed_channels_leaves_outputs_unchanged():
    """Channels whose conv weights and BN scale/shift are zero output exactly 0 after ReLU;
    removing them (and the next layer's matching input channels) cannot change the output."""
    model = _net("classifier_teacher")
    _randomise_bn(model)
    x = _input("classifier_teacher")
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.features.modules() if isinstance(m, nn.BatchNorm2d)]
    dead = [1, 4, 5]
    with torch.no_grad():
        convs[2].weight[dead] = 0
        bns[2].weight[dead] = 0
        bns[2].bias[dead] = 0
    reference = model(x)
    n_params = networks.count_params(model)
    compress.prune_channels(model, x[:1], convs[2], dead)
    assert convs[2].out_channels == networks.DEFAULT_CONFIGS["classifier_teacher"]["stages"][1][0] - 3
    assert networks.count_params(model) < n_params
    torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-6)


def test_pruning_zeroed_expansion_channels_of_a_residual_block():
    model = _net("classifier_student")
    _randomise_bn(model)
    x = _input("classifier_student")
    block = model.blocks[1]
    dead = [0, 7, 9]
    with torch.no_grad():
        block.expand[0].weight[dead] = 0
        block.expand[1].weight[dead] = 0
        block.expand[1].bias[dead] = 0
    reference = model(x)
    compress.prune_channels(model, x[:1], block.expand[0], dead)
    assert block.depthwise[0].out_channels == networks.DEFAULT_CONFIGS["classifier_student"]["blocks"][1][0] - 3
    torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-5)  # float32 summation order


# -- unstructured pruning, low rank ------------------------------------------------------------
def test_unstructured_pruning_zeroes_the_smallest_weights_globally():
    model = _net("motion_teacher")
    eligible = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear)) and m.weight.numel() >= 100]
    mags = np.concatenate([m.weight.detach().abs().numpy().ravel() for m in eligible])
    threshold = np.sort(mags)[int(0.6 * mags.size) - 1]
    expected_zero = [(m.weight.detach().abs().numpy() <= threshold) for m in eligible]
    stats = compress.prune_unstructured(model, 0.6)
    for m, z in zip(eligible, expected_zero):
        np.testing.assert_array_equal(m.weight.detach().numpy() == 0, z)
    small = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear)) and m.weight.numel() < 100]
    assert all(int((m.weight == 0).sum()) == 0 for m in small)
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear)))
    assert stats["total"] == pytest.approx(sum(z.sum() for z in expected_zero) / total)
    assert stats["nonzero"] == total - sum(int(z.sum()) for z in expected_zero)


def test_low_rank_factorisation_error_is_the_discarded_spectrum():
    torch.manual_seed(3)
    lin = nn.Linear(64, 48)
    model = nn.Sequential(lin)
    low, ranks = compress.factorize_low_rank(model, energy=0.5)
    r = ranks["0"]
    s = np.linalg.svd(lin.weight.detach().numpy().astype(np.float64), compute_uv=False)
    cum = np.cumsum(s**2) / np.sum(s**2)
    assert r == int(np.searchsorted(cum, 0.5)) + 1
    w_low = (low[0][1].weight @ low[0][0].weight).detach().numpy()
    err = np.linalg.norm(w_low - lin.weight.detach().numpy())
    assert err == pytest.approx(np.sqrt(np.sum(s[r:] ** 2)), rel=1e-4)
    x = torch.randn(5, 64)
    torch.testing.assert_close(low(x), torch.from_numpy(x.numpy() @ w_low.T) + lin.bias, rtol=1e-4, atol=1e-5)
    assert networks.count_params(low) < networks.count_params(model)


def test_low_rank_keeps_layers_where_factorising_would_not_save():
    model = nn.Sequential(nn.Linear(8, 8))
    low, ranks = compress.factorize_low_rank(model, energy=1.0)
    assert ranks == {}
    assert isinstance(low[0], nn.Linear)


# -- int8 and ONNX -----------------------------------------------------------------------------
def test_int8_and_onnx_agree_with_float(tmp_path):
    """ONNX float32 within 1e-4 of PyTorch; ONNX Runtime dynamic int8 within 5 % of the output range."""
    model = _net("classifier_student")
    _randomise_bn(model)
    x = _input("classifier_student", 8)
    ref = model(x).detach().numpy()
    scale = float(np.ptp(ref))
    path = compress.export_onnx(model, x, tmp_path / "m.onnx", variable_axes=(0, 2))
    np.testing.assert_allclose(compress.run_onnx(path, x.numpy()), ref, atol=1e-4)
    short = _input("classifier_student", 2, 36)  # the time axis is dynamic too
    np.testing.assert_allclose(compress.run_onnx(path, short.numpy()), model(short).detach().numpy(), atol=1e-4)
    q = compress.quantize_onnx_int8(path, tmp_path / "q.onnx")
    assert np.max(np.abs(compress.run_onnx(q, x.numpy()) - ref)) < 0.05 * scale
    assert compress.onnx_latency_ms(path, x.numpy()) > 0


def test_latency_requires_at_least_100_runs():
    with pytest.raises(DataError):
        compress.latency_ms(_net("motion_student"), _input("motion_student", 1), n_runs=10)


# -- metrics and training helpers ---------------------------------------------------------------
def test_f1_scores_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    macro, per = f1_scores(y, p, 4)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
    assert per[:3] == pytest.approx([0.5, 0.8, 2 / 3])
    assert per[3] == 1.0  # absent from truth and prediction, left out of the macro mean
    assert macro == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_motion_metrics_by_hand():
    """A "network" that predicts 2 um everywhere (wavelength 1 mm), four pairs: RMSE over all,
    at SNR <= 10 dB, and at SNR <= 10 dB moving >= 10 um, beside Kasai and no motion."""
    truth_um = np.array([0.0, 20.0, -30.0, 5.0])
    kasai_um = np.array([1.0, 18.0, -26.0, 9.0])
    snr_db = np.array([5.0, 10.0, 20.0, 0.0])
    test = pair_data.MotionData(np.zeros((4, 1), np.float32), (truth_um / 1000.0).astype(np.float32)[:, None],
                            np.full(4, 1e-3), snr_db.astype(np.float32), kasai_um * 1e-6, {})

    class Constant(nn.Module):
        def forward(self, x):
            return torch.full((len(x), 1), 2e-3)  # 2 um / 1 mm

    m = motion_metrics(Constant(), test)
    rms = lambda e: np.sqrt(np.mean(np.square(e))) * 1e-6  # noqa: E731
    assert m["rmse_m"] == pytest.approx(rms([2, -18, 32, -3]), rel=1e-5)
    assert m["rmse_m_10db"] == pytest.approx(rms([2, -18, -3]), rel=1e-5)
    assert m["rmse_m_10db_moving"] == pytest.approx(rms([-18]), rel=1e-5)  # only the 20 um pair
    assert m["kasai_rmse_m_10db_moving"] == pytest.approx(2e-6, rel=1e-5)
    assert m["zero_rmse_m_10db"] == pytest.approx(rms([0, 20, 5]), rel=1e-5)
    assert m["zero_rmse_m_10db_moving"] == pytest.approx(20e-6, rel=1e-5)
    assert m["truth_abs_m"]["max"] == pytest.approx(30e-6, rel=1e-5)
    assert m["truth_abs_m"]["p50"] == pytest.approx(12.5e-6, rel=1e-5)
    assert (m["n_test"], m["n_10db"], m["n_10db_moving"]) == (4, 3, 1)


def test_class_weights_balance_the_classes():
    w = class_weights(np.array([0, 0, 0, 1]), 3).numpy()
    np.testing.assert_allclose(w, [4 / 9, 4 / 3, 0.0])


def test_curriculum_goes_from_high_to_low_snr():
    snr = np.array([5.0, 30.0, 10.0, 20.0, 0.0, 25.0])
    rng = np.random.default_rng(0)
    first = curriculum_indices(snr, 0, 2, rng)
    assert sorted(snr[first]) == [25.0, 30.0]
    second = curriculum_indices(snr, 1, 2, rng)
    assert sorted(snr[second]) == [10.0, 20.0, 25.0, 30.0]
    assert sorted(curriculum_indices(snr, 2, 2, rng)) == list(range(6))


# -- windowing ---------------------------------------------------------------------------------
def test_depth_bins_are_bin_means():
    img = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    np.testing.assert_allclose(mdata.depth_bins(img, 4), img.reshape(2, 4, 3).mean(axis=2))
    few = mdata.depth_bins(img[:, :3], 5)  # fewer rows than bins: linear interpolation
    np.testing.assert_allclose(few[0], np.interp(np.linspace(0, 2, 5), [0, 1, 2], img[0, :3]))


def test_window_input_averages_lines_in_time_bins():
    """Rows whose value is the line time: each column is the mean time of its lines."""
    prf = 317.0
    t_s = np.arange(4000) / prf
    binned = np.repeat(t_s[:, None], 64, axis=1).astype(np.float32)
    spec = mdata.CLASSIFIER_SPEC
    dt = spec["column_s"]
    for n in (36, 57, 96):  # any number of columns, each column_s long
        x = mdata.window_input(binned, t_s, 1.3, n, spec)
        expected = np.array([t_s[(t_s >= 1.3 + j * dt) & (t_s < 1.3 + (j + 1) * dt)].mean() for j in range(n)])
        expected = (expected - expected.mean()) / expected.std()
        np.testing.assert_allclose(x[0, :, 0], expected, atol=1e-4)
        assert x.shape == (1, n, spec["n_depth"])


def test_window_input_interpolates_bins_without_lines():
    """At 5 lines/s most columns are empty: they take the linearly interpolated value."""
    t_s = np.arange(60) / 5.0
    binned = np.repeat((2.0 * t_s)[:, None], 64, axis=1).astype(np.float32)
    spec = mdata.CLASSIFIER_SPEC
    n, dt = 96, spec["column_s"]
    x = mdata.window_input(binned, t_s, 0.0, n, spec)
    edges = np.arange(n + 1) * dt
    expected = np.array([2 * t_s[(t_s >= a) & (t_s < b)].mean() if np.any((t_s >= a) & (t_s < b)) else a + b
                         for a, b in zip(edges[:-1], edges[1:])])
    expected = (expected - expected.mean()) / expected.std()
    np.testing.assert_allclose(x[0, :, 5], expected, atol=1e-4)


def test_stream_windows_grow_from_the_minimum_then_slide():
    """The schedule written out by hand: 2.25 s, then ends on the 1 s grid, growing to 6 s
    from the first line, then 6 s windows sliding by 1 s."""
    t_s = 5.0 + np.arange(2001) / 200.0  # lines from 5 to 15 s
    starts, x = mdata.image_windows(np.zeros((len(t_s), 100), np.float32), t_s)
    ends = [7.25, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    expected = [(max(5.0, e - 6.0), int(round((e - max(5.0, e - 6.0)) * 16))) for e in ends]
    assert [(float(a), xi.shape[1]) for a, xi in zip(starts, x)] == expected
    assert [xi.shape[1] for xi in x][:5] == [36, 48, 64, 80, 96]
    assert all(np.all(xi == 0) for xi in x)  # a constant image standardises to zeros, not NaN
    assert mdata.stream_windows(t_s[t_s < 7.2]) == []  # under 2.25 s of lines: no window
    assert mdata.whole_stream_window(5.0, 9.8) == (5.0, 76)  # 4.8 s: 76 whole columns
    assert mdata.whole_stream_window(5.0, 7.2) is None and mdata.whole_stream_window(5.0, 11.0) is None
    with pytest.raises(DataError):
        mdata.image_windows(np.zeros((10, 5)), np.arange(9.0))


def test_window_labels_majority_and_purity():
    t_s = np.arange(10.0)
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    lab, purity = mdata.window_labels(labels, t_s, np.array([0.0, 4.0, 0.0]), np.array([4.0, 8.0, 10.0]))
    np.testing.assert_array_equal(lab, [0, 1, 1])
    np.testing.assert_allclose(purity, [0.75, 1.0, 0.5])


def test_recording_columns_cut_into_the_windows_the_product_makes():
    """A window cut from a recording's columns is bit-identical to window_input at that time
    (column edges are binary fractions), and the label counts are the line labels per column."""
    rng = np.random.default_rng(3)
    t_s = np.arange(3000) / 297.0
    db = rng.normal(-30.0, 6.0, (len(t_s), 128)).astype(np.float32)
    labels = (t_s > 4.1).astype(np.int64) * 4
    columns, counts = mdata.recording_columns(db, t_s, labels)
    assert columns.shape == (int(t_s[-1] * 16), 64)
    binned = mdata.depth_bins(db, 64)
    for first, n in ((0, 36), (7, 51), (40, 96)):
        np.testing.assert_array_equal(mdata.standardise(columns[first : first + n])[None],
                                      mdata.window_input(binned, t_s, first * 0.0625, n))
    col = np.floor(t_s * 16).astype(int)
    for j in (0, 65, 66, 100):
        np.testing.assert_array_equal(counts[j], np.bincount(labels[col == j], minlength=7))


def test_classifier_data_windows_and_crops_keep_pure_windows():
    """Two recordings of 40 columns: class 1 throughout, and class 2 then class 3 from column
    20. Fixed windows and random crops carry their majority label and are at least 75 % pure."""
    counts = np.zeros((80, 7), np.int32)
    counts[:40, 1] = 10
    counts[40:60, 2] = 10
    counts[60:, 3] = 10
    columns = np.random.default_rng(0).normal(size=(80, 64)).astype(np.float32)
    data = mdata.ClassifierData(columns, counts, np.array([0, 40, 80]), np.array([20.0, 10.0], np.float32), {})
    w = data.windows(36, 4, 0.75)
    # recording 0: starts 0, 4; recording 1: starts 40 (20/36 = 56 % class 2) and 44 (16 of class 2): not pure
    np.testing.assert_array_equal(w.recording, [0, 0])
    np.testing.assert_array_equal(w.y, [1, 1])
    np.testing.assert_array_equal(w.x[1], mdata.standardise(columns[4:40])[None])
    rng = np.random.default_rng(1)
    x, y, used = data.crops(np.array([0, 1, 1, 1]), 24, rng, 0.75)
    assert x.shape == (4, 1, 24, 64)
    np.testing.assert_array_equal(used, [0, 1, 1, 1])
    for xi, yi, r in zip(x, y, used):
        starts = [s for s in range(40) if s + 24 <= 40]
        match = [s for s in starts if np.array_equal(xi, mdata.standardise(columns[40 * r + s : 40 * r + s + 24])[None])]
        assert len(match) == 1
        lab = counts[40 * r + match[0] : 40 * r + match[0] + 24].sum(axis=0)
        assert yi == lab.argmax() and lab.max() >= 0.75 * lab.sum()
    assert len(data.crops(np.array([1]), 41, rng, 0.75)[1]) == 0  # longer than the recording: left out


def test_motion_inputs_carry_the_phase_shift():
    """Two segments with a known phase rotation: the lag-one channels hold cos and sin of it."""
    rng = np.random.default_rng(0)
    x0 = (rng.standard_normal((2, 16)) + 1j * rng.standard_normal((2, 16))).astype(np.complex64)
    phi = np.array([0.3, -1.1])
    x1 = x0 * np.exp(1j * phi)[:, None]
    feats = mdata.motion_inputs(x0, x1)
    assert feats.shape == (2, 4, 16)
    a = np.abs(x0) ** 2
    np.testing.assert_allclose(feats[:, 0], np.cos(phi)[:, None] * a / a.mean(axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats[:, 1], np.sin(phi)[:, None] * a / a.mean(axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats[:, 2], feats[:, 3], rtol=1e-5)


def test_iq_segments_are_clipped_inside_the_line():
    iq = (np.arange(3 * 20) + 1j * np.arange(3 * 20)).reshape(3, 20).astype(np.complex64)
    a, b = mdata.iq_segments(iq, np.array([0, 1]), np.array([2, 19]), 8)
    np.testing.assert_array_equal(a[0], iq[0, 0:8])
    np.testing.assert_array_equal(b[1], iq[2, 12:20])


def test_classifier_line_buffer_keeps_lines_in_place_and_sums_exact():
    """The classifier's line buffer (a mirrored ring) against arrays built from scratch, through
    wraps and growth with random block sizes and drops; and a kept line never moves when
    lines are appended (moving 6 s of lines at once stalled a 20 kHz stream for 140 ms)."""
    from mmode.models.inference import _LineBuffer

    rng = np.random.default_rng(11)
    lines = rng.normal(-40.0, 8.0, (6000, 5)).astype(np.float32)
    t_s = np.arange(6000) / 1000.0
    buf = _LineBuffer(5)
    buf.reserve(300)
    first = end = 0
    for _ in range(200):
        m = int(rng.integers(1, 120))
        if end + m > len(t_s):
            break
        buf.append(lines[end : end + m], t_s[end : end + m])
        end += m
        drop = int(rng.integers(0, max(1, (end - first) // 4)))
        buf.drop_first(drop)
        first += drop
        np.testing.assert_array_equal(buf.binned, lines[first:end])
        np.testing.assert_array_equal(buf.t_s, t_s[first:end])
        sums = mdata.running_sums(lines[:end])[first : end + 1]
        np.testing.assert_allclose(buf.sums - buf.sums[0], sums - sums[0], rtol=1e-12, atol=1e-9)  # any offset
    assert buf._cap > 300  # it grew at least once on the way

    buf = _LineBuffer(5)
    buf.reserve(100)
    buf.append(lines[:60], t_s[:60])
    view = buf.binned
    buf.drop_first(50)
    buf.append(lines[60:105], t_s[60:105])  # past the end of the ring: it wraps
    np.testing.assert_array_equal(view[50:], lines[50:60])  # the kept lines stayed where they were
    np.testing.assert_array_equal(buf.binned, lines[50:105])
