"""Training and test pairs of the per-pair motion net (``motion_teacher`` / ``motion_student``).

Input spec :data:`mmode.models.data.MOTION_SPEC` (two consecutive IQ lines around a depth);
the pairs come from simulated cardiac and sinusoid recordings at 500-1500 lines/s, each with
its true displacement and the classic Kasai estimate on the same samples. The keyframe
motion net of the product's learned trace has its own pairs (:mod:`mmode.models.motion_data`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmode.models import data as mdata


@dataclass
class MotionData:
    """x (N, 4, n_samples) float32; y (N, 1) float32 displacement / wavelength;
    wavelength_m (N,), snr_db (N,), kasai_m (N,) classic Kasai estimate on the same pair
    (metres); recipe (JSON-safe)."""

    x: np.ndarray
    y: np.ndarray
    wavelength_m: np.ndarray
    snr_db: np.ndarray
    kasai_m: np.ndarray
    recipe: dict


#: Parameter ranges of the motion recordings.
MOTION_RANGES = {
    "seconds": 1.0,
    "prf_hz": [500.0, 1500.0],
    "f0_scale": [0.7, 1.3],
    "snr_db": [0.0, 30.0],
    "pairs_per_recording": 2000,
    "scenarios": ["cardiac_regular", "cardiac_irregular", "sinusoid"],
}


def motion_dataset(split: str, n_recordings: int, seed: int = 0, ranges: dict = MOTION_RANGES,
                   spec: dict = mdata.MOTION_SPEC, cache: bool = True) -> MotionData:
    """IQ segment pairs with true displacement from ``n_recordings`` simulated recordings.

    Random line pairs and depths (at least half a segment from either end of the line) where
    the echo is above the recording's median power (tissue, not anechoic blood or effusion);
    the true inter-line displacement is interpolated from the simulator's 1 mm truth grid.
    Each pair also carries the classic Kasai estimate on the same samples.
    """
    from mmode.dsp.demod import to_iq
    from mmode.dsp.motion import phase_to_displacement_m
    from mmode.ingest.scenarios import SCENARIOS

    mdata._check_split(split, n_recordings)
    recipe = {"task": "motion", "split": split, "n_recordings": n_recordings, "seed": seed,
              "seed_offset": mdata.SPLIT_OFFSETS[split], "ranges": ranges, "spec": spec, "version": 1}
    path = mdata._cache_path("motion", recipe)
    fields = ("x", "y", "wavelength_m", "snr_db", "kasai_m")
    cached = mdata._load_cached(path, fields) if cache else None
    if cached is None:
        n = spec["n_samples"]
        parts: dict[str, list[np.ndarray]] = {f: [] for f in fields}
        for i in range(n_recordings):
            rec_seed = seed + mdata.SPLIT_OFFSETS[split] + i
            rng = np.random.default_rng(rec_seed)
            name = ranges["scenarios"][i % len(ranges["scenarios"])]
            info = SCENARIOS[name]
            f0 = info.f0_hz * mdata.draw_uniform(rng, ranges["f0_scale"])
            snr_db = mdata.draw_uniform(rng, ranges["snr_db"])
            _, lines, _, sims = mdata._simulate_recording(
                [name], [ranges["seconds"]],
                dict(prf_hz=mdata.draw_uniform(rng, ranges["prf_hz"]), f0_hz=f0, fs_hz=f0 * mdata.draw_uniform(rng, [4.0, 5.0]),
                     depth_m=info.depth_m, snr_db=snr_db), rec_seed)
            sim = sims[0]
            iq, _fs, stride = to_iq(lines, sim.meta)
            m = ranges["pairs_per_recording"]
            k = rng.integers(0, iq.shape[0] - 1, 4 * m)
            c = rng.integers(n // 2, iq.shape[1] - n // 2, 4 * m)
            x0, x1 = mdata.iq_segments(iq, k, c, n)
            echo = np.flatnonzero(np.mean(np.abs(x0) ** 2, axis=1) > np.median(np.abs(iq) ** 2))[:m]
            k, c, x0, x1 = k[echo], c[echo], x0[echo], x1[echo]
            m = len(echo)
            depth = np.asarray(sim.meta.depth_m(c * stride))
            disp = sim.truth.displacement_m
            d_truth = np.array([
                np.interp(z, sim.truth.depths_m, disp[kk + 1]) - np.interp(z, sim.truth.depths_m, disp[kk])
                for kk, z in zip(k, depth)
            ])
            wavelength = sim.meta.c_m_s / sim.meta.f0_hz
            phase = np.angle(np.sum(np.conj(x0) * x1, axis=1))
            parts["x"].append(mdata.motion_inputs(x0, x1))
            parts["y"].append((d_truth / wavelength).astype(np.float32)[:, None])
            parts["wavelength_m"].append(np.full(m, wavelength))
            parts["snr_db"].append(np.full(m, snr_db, np.float32))
            parts["kasai_m"].append(np.asarray(phase_to_displacement_m(phase, sim.meta.f0_hz, sim.meta.c_m_s)))
        cached = {f: np.concatenate(v) for f, v in parts.items()}
        if cache:
            mdata._save_cached(path, cached)
    return MotionData(cached["x"], cached["y"], cached["wavelength_m"], cached["snr_db"], cached["kasai_m"], recipe)
