"""The simulator's truth grid and its Lagrangian inversion, against independent references.

References: the scene's displacement field evaluated forwards (tissue at rest depth ``z`` sits
at ``z + d(z, 0)`` in line 0 and has moved ``d(z, t) - d(z, 0)`` since), at a fine set of
rest depths; the scene's bright reflectors; hand-written files for the format checks.
"""

import h5py
import numpy as np
import pytest

from mmode.errors import FormatError
from mmode.ingest.h5format import read_h5, write_recording
from mmode.ingest.meta import CLASSES, AcquisitionMeta, Truth
from mmode.ingest.scene import ALWAYS
from mmode.ingest.simulator import _displacement_since_line0, _setup, simulate_sequence

T_S = np.linspace(0.0, 3.0, 121)
# seed 1 cardiac: the heart drifts up by more than the 1 mm gap between chest wall and RV wall
# at t = 0, so RV wall and chest wall overlap in line 0 (a fold)
CASES = [
    ("cardiac_regular", 1, {}),
    ("cardiac_irregular", 2, {}),
    ("sinusoid", 1, dict(fs_hz=16e6, depth_m=0.04)),
    ("lung_sliding", 1, dict(fs_hz=16e6, depth_m=0.04)),
]


def _setup_of(scenario, seed, kw, **extra):
    params = dict(prf_hz=400.0, f0_hz=None, fs_hz=None, depth_m=None, snr_db=30.0, rate_per_min=None,
                  breath_per_min=None, seed=seed, bandwidth=0.6, attenuation_db_cm_mhz=None, n_samples=None,
                  c_m_s=1540.0)
    params.update(kw, **extra)
    return _setup(scenario, **params)


def _forward_truth(scene, line_depth_m, t_s):
    """Line-0 depths (m,) and exact truth (len(t_s), m) of the tissue found there, from rest
    depths every 2 um; where tissue folds (a line-0 depth reached by two rest depths), the
    shallower tissue is the one found and the 2 um just below the fold's top are left out.
    The profile's nodes are among the rest depths, so that a fold's top is one of them."""
    z = np.union1d(np.arange(-5e-3, line_depth_m + 20e-3, 2e-6), scene.breakpoints_m())
    y = z + scene.displacement_m(z, np.zeros(1))[0]
    shallower = np.maximum.accumulate(np.concatenate(([-np.inf], y[:-1])))  # deepest line-0 depth above
    keep = (y > shallower) & (y >= 0) & (y <= line_depth_m)
    hidden = y <= shallower
    for top in shallower[1:][hidden[1:] & ~hidden[:-1]]:
        keep &= ~((y > top) & (y <= top + 2e-6))
    z, y = z[keep], y[keep]
    return y, scene.displacement_m(z, t_s) - scene.displacement_m(z, np.zeros(1))


@pytest.mark.parametrize("scenario, seed, kw", CASES)
def test_truth_grid_interpolates_to_the_exact_truth_at_every_depth(scenario, seed, kw):
    setup = _setup_of(scenario, seed, kw)
    scene = setup.renderer.scene
    line_depth_m = float(setup.meta.depth_m(setup.n_samples - 1))
    truth = setup.truth(T_S)
    assert np.all(np.diff(truth.depths_m) > 0)
    assert truth.depths_m[0] == 0.0 and truth.depths_m[-1] <= line_depth_m
    # the 1 mm grid is still there
    uniform = np.arange(0.0, line_depth_m + 1e-12, 1e-3)
    assert np.abs(truth.depths_m[np.searchsorted(truth.depths_m, uniform - 1e-12)] - uniform).max() < 1e-12
    y, exact = _forward_truth(scene, line_depth_m, T_S)
    interp = np.stack([np.interp(y, truth.depths_m, row) for row in truth.displacement_m])
    assert np.abs(interp - exact).max() < 0.01e-6  # float32 storage of mm displacements


@pytest.mark.parametrize("scenario, seed, kw", CASES)
def test_truth_grid_holds_every_bright_interface(scenario, seed, kw):
    """The bright interfaces the tracker follows (pleura, lung line, pericardium) are truth
    depths themselves, at their line-0 depth."""
    setup = _setup_of(scenario, seed, kw)
    scene = setup.renderer.scene
    line_depth_m = float(setup.meta.depth_m(setup.n_samples - 1))
    bright = (np.abs(scene.amp) >= 10.0) & (scene.disp_scale == 1.0) & (scene.slide == 0) & (scene.group == ALWAYS)
    y = scene.z_m[bright] + scene.displacement_m(scene.z_m[bright], np.zeros(1))[0]
    y = y[(y > 0.0) & (y < line_depth_m)]
    assert y.size >= 1
    depths = setup.truth(T_S[:2]).depths_m
    assert np.abs(depths[:, None] - y[None, :]).min(axis=0).max() < 1e-12


@pytest.mark.parametrize("scenario, seed, kw", CASES)
def test_displacement_since_line0_is_exact_for_one_depth_alone(scenario, seed, kw):
    """Asked for a single depth (not together with a whole grid), the inversion once missed the
    rest depth of tissue that had moved far (an effusion's lung line)."""
    scene = _setup_of(scenario, seed, kw).renderer.scene
    rng = np.random.default_rng(0)
    z = np.concatenate((scene.breakpoints_m()[1:-1], rng.uniform(0.0, 0.1, 20)))
    y = z + scene.displacement_m(z, np.zeros(1))[0]
    prior = np.array([np.max(yy, initial=-np.inf) for yy in (y[z < zz] for zz in z)])
    z, y = z[y > prior], y[y > prior]  # leave out tissue hidden under shallower tissue (a fold)
    exact = scene.displacement_m(z, T_S) - scene.displacement_m(z, np.zeros(1))
    for i in range(z.shape[0]):
        alone = _displacement_since_line0(scene, y[i : i + 1], T_S)[:, 0]
        np.testing.assert_allclose(alone, exact[:, i], rtol=0, atol=1e-12)


def test_effusion_lung_line_alone_moves_with_the_lung():
    """Analytic: the lung line moves ``(axial - swing) * (b(t) - b(0))`` (last profile node)."""
    scene = _setup_of("sinusoid", 1, dict(fs_hz=16e6, depth_m=0.04)).renderer.scene
    (nz, nv), = scene.profile_nodes
    z_l, lung_m = nz[2], nv[2]
    b = scene.motion(T_S).waves[:, 0]
    y_l = z_l + lung_m * b[0]
    assert abs(lung_m * b[0]) > 2e-3  # the lung has moved mm at line 0: the trap's case
    np.testing.assert_allclose(_displacement_since_line0(scene, np.array([y_l]), T_S)[:, 0], lung_m * (b - b[0]),
                               rtol=0, atol=1e-12)


def test_sequence_grid_holds_every_segment_kinks():
    kw = dict(prf_hz=200.0, fs_hz=14e6, depth_m=0.04, seed=1)
    r = simulate_sequence([("lung_sliding", 0.5), ("sinusoid", 0.5)], **kw)
    pinned = dict(fs_hz=14e6, n_samples=r.lines.shape[1])
    for scenario, rows in (("lung_sliding", slice(0, 100)), ("sinusoid", slice(100, 200))):
        setup = _setup_of(scenario, 1, pinned, prf_hz=200.0)
        assert np.isin(setup.depths_m, r.truth.depths_m).all()
        scene = setup.renderer.scene
        y, exact = _forward_truth(scene, float(setup.meta.depth_m(setup.n_samples - 1)), r.timestamps_s[rows])
        interp = np.stack([np.interp(y, r.truth.depths_m, row) for row in r.truth.displacement_m[rows]])
        assert np.abs(interp - exact).max() < 0.01e-6


# -- file format ------------------------------------------------------------------------------
META = AcquisitionMeta("rf", 20e6, 5e6, 100.0)


def _truth(depths):
    n = 4
    disp = np.arange(n * len(depths), dtype=np.float32).reshape(n, len(depths)) * 1e-6
    return Truth(labels=np.zeros(n, int), classes=CLASSES, depths_m=np.asarray(depths), displacement_m=disp)


def test_nonuniform_depths_round_trip(tmp_path):
    depths = np.array([0.0, 1e-3, 1.2345e-3, 1.2355e-3, 2e-3])
    path = tmp_path / "t.h5"
    write_recording(path, META, np.zeros((4, 64), np.int16), truth=_truth(depths))
    with read_h5(path) as rec:
        np.testing.assert_array_equal(rec.truth().depths_m, depths)


@pytest.mark.parametrize("depths", [[0.0, 2e-3, 1e-3], [0.0, 1e-3, 1e-3], [0.0, np.nan]])
def test_non_increasing_depths_are_refused_on_write_and_read(tmp_path, depths):
    path = tmp_path / "bad.h5"
    with pytest.raises(FormatError, match="strictly increasing|finite"):
        write_recording(path, META, np.zeros((4, 64), np.int16), truth=_truth(depths))
    write_recording(path, META, np.zeros((4, 64), np.int16), truth=_truth([0.0, 1e-3, 2e-3][: len(depths)]))
    with h5py.File(path, "r+") as f:
        f["truth/depths_m"][...] = depths
    with read_h5(path) as rec:
        with pytest.raises(FormatError, match="/truth/depths_m"):
            rec.truth()


class _PiecewiseScene:
    """A scene whose displacement at t = 0 is piecewise linear through (z_m, d_m) nodes and
    constant beyond them (as the simulator's profiles are)."""

    def __init__(self, z_m, d_m):
        self.z_m, self.d_m = np.asarray(z_m, float), np.asarray(d_m, float)

    def breakpoints_m(self):
        return self.z_m

    def displacement_m(self, z_m, t_s):
        return np.interp(np.asarray(z_m, float), self.z_m, self.d_m)[None, :] * np.ones((len(t_s), 1))


def _dense_line0_inversion(scene, y_m):
    """Rest depth of the tissue found at line-0 depth y: the shallowest rest depth whose tissue
    (or shallower tissue) reaches y, on a 0.1 um grid (brute force)."""
    z = np.arange(-0.01, 0.05, 1e-7)
    reach = np.maximum.accumulate(z + scene.displacement_m(z, np.zeros(1))[0])
    return z[np.searchsorted(reach, y_m, side="left")]


@pytest.mark.parametrize("z_m, d_m", [
    ([0.010, 0.011], [0.0, -0.003]),  # the last breakpoint hidden: the tissue rises beyond it
    ([0.010, 0.011, 0.012, 0.014], [0.0, -0.002, -0.002, 0.0]),  # a hidden node exactly at the fold's top
    ([0.010, 0.012, 0.013, 0.020], [0.0, 0.0, -0.003, -0.001]),  # a fold in the middle
])
def test_line0_inversion_of_folds_matches_brute_force(z_m, d_m):
    from mmode.ingest.simulator import _line0_rest_depths

    scene = _PiecewiseScene(z_m, d_m)
    y = np.linspace(0.008, 0.03, 441) + 1.7e-6  # not exactly at a fold's top, where both tissues are
    np.testing.assert_allclose(_line0_rest_depths(scene, y), _dense_line0_inversion(scene, y), atol=5e-7)
    assert np.isfinite(_line0_rest_depths(scene, np.asarray(z_m) + np.asarray(d_m))).all()  # at every knot
