"""Training and test pairs for the keyframe motion network (:mod:`mmode.models.motion_stream`).

Input spec (:data:`KEYFRAME_SPEC`): a *keyframe* window of ``n_samples`` IQ samples on the
classic tracker's tracking grid (RF demodulated, coarse IQ interpolated:
:meth:`mmode.dsp.tracker.MotionTracker.tracking_iq`) and the window of a later line placed at
an integer shift near the true one, as the streaming tracker's coarse match places it; the
channels of :func:`mmode.models.data.motion_inputs`. Target: the residual axial displacement
(true shift minus the integer shift) in local wavelengths: ``c / f`` with ``f`` the echo's mean
frequency measured on the pair (:func:`local_cycles_per_sample`), since the phase the
network reads turns with the echo's frequency, which attenuation lowers below f0 with depth.

Pairs are drawn from simulated recordings across the conditions the product meets:
log-uniform 100-5000 lines/s, RF or IQ as a scanner stores it (``iq_fs_hz`` about 1-3 MHz,
coarser than the tracking grid, interpolated), SNR 0-35 dB, the moving phantom's stationary
clutter among the scenes, and at low line rates velocities many times the aliasing limit
(the integer shift carries those). The keyframe is 1 to ``MAX_KEYFRAME_AGE`` lines older
than the current line (log-uniform), and the integer shift is the true one rounded after a
Gaussian error of ``COARSE_ERROR_SAMPLES``, as a coarse match that slips by a sample.
The split is by seed (:data:`mmode.models.data.SPLIT_OFFSETS`); the evaluation of
:mod:`mmode.models.motion_eval` uses seeds from :data:`EVAL_SEED_OFFSET` on, in no split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np

from mmode.models import data as mdata

KEYFRAME_SPEC: dict = {
    "kind": "iq_keyframe_residual_per_sigma",
    "channels": 4,
    "n_samples": 16,
    "grid": "the classic tracker's tracking grid (RF demodulated to about 2 f0; coarse IQ interpolated to >= 2 f0)",
    "channel_order": ["re(conj(keyframe) current) / mean|keyframe||current|", "im(...)", "|keyframe| / rms",
                      "|current| / rms"],
    "target": "residual axial displacement (true minus the integer shift of the current window) / local "
              "wavelength (c / the echo's mean frequency from the pair's depth autocorrelation), positive away from "
              "the probe, minus the lag-zero phase estimate of it (phase_residual), in units of that estimate's "
              "predicted standard deviation (output_scale_wl): the network's output times that scale is added to "
              "the estimate",
}

#: Parameter ranges of the recordings the pairs come from.
KEYFRAME_RANGES = {
    "prf_hz": [100.0, 5000.0],
    "lines_per_recording": 600,
    "seconds_range": [0.5, 3.0],
    "f0_scale": [0.8, 1.2],
    "snr_db": [0.0, 35.0],
    "iq_fraction": 0.5,
    "iq_fs_hz": [0.9e6, 3.2e6],
    "pairs_per_recording": 1500,
    "scenarios": ["cardiac_regular", "cardiac_irregular", "sinusoid", "moving_phantom"],
}
#: Oldest keyframe (lines before the current one) in the pairs.
MAX_KEYFRAME_AGE = 64
#: Standard deviation (tracking samples) of the coarse match's error the pairs carry.
COARSE_ERROR_SAMPLES = 0.35
#: The echo's mean frequency is taken within this range of f0 (attenuation lowers it by up to
#: about 30 % at depth in the simulator's views; the demodulation passes at most +-f0).
LOCAL_FREQUENCY_RANGE = (0.6, 1.3)
#: Pairs whose true shift is further than this (tracking samples) from their integer shift
#: are left out: the coarse error modelled is a sample or so; beyond it the truth is that of
#: a fold (tissue sliding past an interface) or of a window clipped at the line's end.
MAX_RESIDUAL_SAMPLES = 2.5
#: Least standard deviation (wavelengths, about 0.5 um at 3 MHz) of a pair's phase that
#: :func:`output_scale_wl` takes as the network's unit: without it a noise-free pair's unit
#: would be 0. Chosen before training; a floor of 3.5e-4 (the phase's at 35 dB, the top of
#: the training range) fitted the teacher closer but left the pruned student noisier on RF
#: (docs/models.md, "Learned motion trace").
SIGMA_FLOOR_WL = 1e-3
#: The product applies a correction only where the network's output, in its unit (the pair's
#: predicted phase noise, :func:`output_scale_wl`), reaches this: within one standard
#: deviation of the pair's own phase the correction cannot be told from that noise, and in a
#: stream, where the coarse stage places most windows within a fraction of a sample, such
#: small corrections were mostly the network's own noise, carried into the trace at every
#: keyframe renewal (docs/models.md, "A correction within the phase's noise is not applied").
MIN_CORRECTION_SIGMAS = 1.0
#: First seed of the evaluation recordings (never in a training, validation or test split).
EVAL_SEED_OFFSET = 2_000_000


def realign(current: np.ndarray, shift: np.ndarray, f0_cycles_per_sample: float) -> np.ndarray:
    """IQ windows ``current`` (N, n) taken ``shift`` (N,) whole tracking samples deeper than
    their keyframe, with the carrier phase of that shift taken out (complex64).

    Baseband IQ keeps the phase of the echo's whole displacement d (``-4 pi f0 d / c``): moving
    the window with the echo does not remove it. Rotating by ``+2 pi f0_cycles_per_sample
    shift`` (``4 pi f0 shift spacing / c``) leaves the phase of the residual alone, which is
    what the network estimates."""
    rot = np.exp(2j * np.pi * f0_cycles_per_sample * np.asarray(shift, dtype=np.float64))
    return (np.asarray(current) * rot[:, None]).astype(np.complex64)


def phase_residual(x: np.ndarray) -> np.ndarray:
    """The lag-zero phase estimate (N,) of the residual, in local wavelengths, from model
    inputs (N, 4, n) (:func:`mmode.models.data.motion_inputs`): ``-angle(sum conj(keyframe)
    current) / 4 pi``, within a quarter wavelength (it wraps beyond). The network estimates
    the residual *minus* this: near 0 where the phase is right (a high SNR, a coarse match
    within a sample), the wrap or the noise's bias where it is not."""
    return (-np.arctan2(x[:, 1].sum(axis=1), x[:, 0].sum(axis=1)) / (4 * np.pi)).astype(np.float32)


def phase_sigma_wl(x: np.ndarray) -> np.ndarray:
    """Standard deviation (N,) in wavelengths of :func:`phase_residual`, predicted from the
    pair's coherence ``rho = |sum conj(a) b| / sqrt(sum |a|^2 sum |b|^2)`` (model inputs
    (N, 4, n)): the phase of a cross-correlation of ``n`` independent complex Gaussian samples
    has variance ``(1 - rho^2) / (2 n rho^2)`` rad^2 at high coherence (the Cramer-Rao bound of
    the phase of a correlation; Rife and Boorstyn 1974, as in Kasai's estimator's error), and a
    phase of ``phi`` is ``phi / 4 pi`` wavelengths of displacement. Speckle makes neighbouring
    samples correlated, so on real pairs it is a lower bound that ranks pairs by how far their
    phase can be trusted."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[2]
    # conj(a) b and |a|, |b| are stored scaled by 1/mean(|a||b|) and 1/rms: the scales cancel in rho
    cross = np.hypot(x[:, 0].sum(axis=1), x[:, 1].sum(axis=1)) * np.mean(x[:, 2] * x[:, 3], axis=1)
    power = np.sqrt(np.sum(x[:, 2] ** 2, axis=1) * np.sum(x[:, 3] ** 2, axis=1))
    rho = np.clip(cross / np.maximum(power, 1e-30), 1e-3, 1.0)
    return np.sqrt(1.0 - rho**2) / (rho * np.sqrt(2.0 * n)) / (4 * np.pi)


def output_scale_wl(x: np.ndarray) -> np.ndarray:
    """The unit (N,) float32, in wavelengths, of the network's output for model inputs ``x``
    (N, 4, n): the predicted standard deviation of the pair's phase estimate
    (:func:`phase_sigma_wl`), at least :data:`SIGMA_FLOOR_WL`.

    The network corrects the phase in units of the phase's own noise. Its regression noise
    then scales with the pair's: on a pair whose phase is good to a tenth of a um the
    correction is a small multiple of that, where a correction in wavelengths kept a floor of
    output noise of about half a um whatever the pair (docs/models.md). It also makes the
    network's L1 fit weigh each pair's error by the precision of its phase."""
    return np.maximum(phase_sigma_wl(x), SIGMA_FLOOR_WL).astype(np.float32)


def applied_correction_wl(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The correction (N,) float32 in wavelengths that the product adds to the pair's phase
    estimate (:func:`phase_residual`): the network's outputs ``out`` (N,) for inputs ``x``
    (N, 4, n) times :func:`output_scale_wl`, and 0 where ``|out|`` is below
    :data:`MIN_CORRECTION_SIGMAS`."""
    out = np.asarray(out, dtype=np.float32)
    return np.where(np.abs(out) >= MIN_CORRECTION_SIGMAS, out * output_scale_wl(x), np.float32(0.0)).astype(np.float32)


def local_cycles_per_sample(x0: np.ndarray, x1: np.ndarray, f0_cycles_per_sample: float) -> np.ndarray:
    """The echo's mean frequency (N,) in cycles per tracking sample, from the lag-one
    autocorrelation along depth of both windows (Loupas 1995, as the classic tracker's
    :func:`mmode.dsp.motion._phase_at`): f0's plus the depth phase / 2 pi, held within
    :data:`LOCAL_FREQUENCY_RANGE` of f0's (noise alone gives any phase). Attenuation lowers the echo's frequency with
    depth, and a displacement's phase scales with it, not with f0."""
    z = np.sum(np.conj(x0[:, :-1]) * x0[:, 1:] + np.conj(x1[:, :-1]) * x1[:, 1:], axis=1)
    f = f0_cycles_per_sample + np.angle(z) / (2 * np.pi)
    return np.clip(f, LOCAL_FREQUENCY_RANGE[0] * f0_cycles_per_sample, LOCAL_FREQUENCY_RANGE[1] * f0_cycles_per_sample)


@dataclass
class KeyframePairs:
    """x (N, 4, n_samples) float32; y (N, 1) float32 the target (residual / local wavelength
    minus base); base (N,) the phase estimate (:func:`phase_residual`); wavelength_m (N,) that wavelength;
    snr_db (N,); prf_hz (N,); iq (N,) bool (stored as IQ); truth_m (N,) the whole true shift;
    recipe (JSON-safe)."""

    x: np.ndarray
    y: np.ndarray
    base: np.ndarray
    wavelength_m: np.ndarray
    snr_db: np.ndarray
    prf_hz: np.ndarray
    iq: np.ndarray
    truth_m: np.ndarray
    recipe: dict


def recording_params(rng: np.random.Generator, scenario: str, ranges: dict) -> dict:
    """simulate() keyword arguments for one recording (random line rate, f0, SNR, RF or IQ)."""
    from mmode.ingest.scenarios import PHANTOMS, SCENARIOS

    info = {**SCENARIOS, **PHANTOMS}[scenario]
    prf = math.exp(mdata.draw_uniform(rng, [math.log(v) for v in ranges["prf_hz"]]))
    f0 = info.f0_hz * mdata.draw_uniform(rng, ranges["f0_scale"])
    fs = 4.0 * f0 if scenario != "moving_phantom" else info.fs_hz
    fs = 1e5 * round(fs / 1e5)
    seconds = float(np.clip(ranges["lines_per_recording"] / prf, *ranges["seconds_range"]))
    params = dict(seconds=seconds, prf_hz=prf, f0_hz=f0, fs_hz=fs, snr_db=mdata.draw_uniform(rng, ranges["snr_db"]))
    if rng.random() < ranges["iq_fraction"]:
        lo, hi = ranges["iq_fs_hz"]
        ks = [k for k in range(1, 200) if lo <= fs / k <= hi]
        if ks:
            params["iq_fs_hz"] = fs / ks[int(rng.integers(len(ks)))]
    return params


def _tissue_shift_m(truth, k0: int, k1: int, depth_m: float) -> float:
    """True axial shift (m) from line k0 to k1 of the tissue at ``depth_m`` in line k0
    (truth is indexed by line-0 depth: the line-0 depth is found by fixed-point iteration)."""
    z0 = depth_m
    for _ in range(4):
        z0 = depth_m - float(np.interp(z0, truth.depths_m, truth.displacement_m[k0]))
    return float(np.interp(z0, truth.depths_m, truth.displacement_m[k1]) - np.interp(z0, truth.depths_m,
                                                                                       truth.displacement_m[k0]))


def recording_pairs(args: tuple) -> dict[str, np.ndarray]:
    """Pairs of one recording: ``args`` = (seed, scenario, ranges, spec)."""
    from mmode.dsp.tracker import MotionTracker
    from mmode.ingest.simulator import simulate

    rec_seed, scenario, ranges, spec = args
    rng = np.random.default_rng(rec_seed)
    params = recording_params(rng, scenario, ranges)
    sim = simulate(scenario, seed=rec_seed, **params)
    tracker = MotionTracker()
    tracker.prepare(sim.meta, sim.lines.shape[1])
    iq = tracker.tracking_iq(sim.lines)
    n = spec["n_samples"]
    m = ranges["pairs_per_recording"]
    n_lines, n_iq = iq.shape
    age = np.minimum(np.exp(rng.uniform(0, math.log(MAX_KEYFRAME_AGE), 4 * m)).astype(np.int64), n_lines - 1)
    k0 = rng.integers(0, n_lines - age)
    k1 = k0 + age
    start = rng.integers(n, n_iq - 2 * n, 4 * m)
    power = np.mean(np.abs(iq[k0[:, None], start[:, None] + np.arange(n)]) ** 2, axis=1)
    keep = np.flatnonzero(power > np.median(np.abs(iq) ** 2))[:m]
    k0, k1, start = k0[keep], k1[keep], start[keep]
    depth = np.array([tracker.depth_of(s + (n - 1) / 2.0) for s in start])
    shift_m = np.array([_tissue_shift_m(sim.truth, a, b, z) for a, b, z in zip(k0, k1, depth)])
    shift = shift_m / tracker.spacing_m
    offset = np.rint(shift + rng.normal(0.0, COARSE_ERROR_SAMPLES, len(shift))).astype(np.int64)
    inside = (start + offset >= 0) & (start + offset <= n_iq - n) & (np.abs(shift - offset) <= MAX_RESIDUAL_SAMPLES)
    k0, k1, start, offset, shift, shift_m = k0[inside], k1[inside], start[inside], offset[inside], shift[inside], shift_m[inside]
    cols = np.arange(n)[None, :]
    x0 = iq[k0[:, None], start[:, None] + cols]
    x1 = realign(iq[k1[:, None], (start + offset)[:, None] + cols], offset, tracker.f0_cycles_per_sample)
    # the local wavelength (m): a phase wrap (2 pi) is half of it, 1 / f_cycles tracking samples
    wavelength = 2.0 * tracker.spacing_m / local_cycles_per_sample(x0, x1, tracker.f0_cycles_per_sample)
    residual_m = shift_m - offset * tracker.spacing_m
    k = len(k0)
    x = mdata.motion_inputs(x0, x1)
    base = phase_residual(x)
    return {"x": x, "y": (residual_m / wavelength - base).astype(np.float32)[:, None], "base": base,
            "wavelength_m": np.full(k, wavelength), "snr_db": np.full(k, params["snr_db"], np.float32),
            "prf_hz": np.full(k, params["prf_hz"]), "iq": np.full(k, "iq_fs_hz" in params), "truth_m": shift_m}


def keyframe_dataset(split: str, n_recordings: int, seed: int = 0, ranges: dict = KEYFRAME_RANGES,
                     spec: dict = KEYFRAME_SPEC, workers: int = 1, cache: bool = True) -> KeyframePairs:
    """Keyframe pairs from ``n_recordings`` simulated recordings of ``split`` (cached as .npz);
    ``workers`` processes simulate in parallel (the slow part)."""
    mdata._check_split(split, n_recordings)
    recipe = {"task": "motion", "split": split, "n_recordings": n_recordings, "seed": seed,
              "seed_offset": mdata.SPLIT_OFFSETS[split], "ranges": ranges, "spec": spec,
              "max_keyframe_age": MAX_KEYFRAME_AGE, "coarse_error_samples": COARSE_ERROR_SAMPLES,
              "max_residual_samples": MAX_RESIDUAL_SAMPLES, "local_frequency_range": LOCAL_FREQUENCY_RANGE, "version": 6}
    path = mdata._cache_path("motion_keyframe", recipe)
    fields = ("x", "y", "base", "wavelength_m", "snr_db", "prf_hz", "iq", "truth_m")
    cached = mdata._load_cached(path, fields) if cache else None
    if cached is None:
        jobs = [(seed + mdata.SPLIT_OFFSETS[split] + i, ranges["scenarios"][i % len(ranges["scenarios"])], ranges, spec)
                for i in range(n_recordings)]
        if workers > 1:
            with get_context("spawn").Pool(workers) as pool:
                parts = pool.map(recording_pairs, jobs, chunksize=1)
        else:
            parts = [recording_pairs(j) for j in jobs]
        cached = {f: np.concatenate([p[f] for p in parts]) for f in fields}
        if cache:
            mdata._save_cached(path, cached)
    return KeyframePairs(*(cached[f] for f in fields), recipe)
