"""Scenario definitions for the M-mode simulator: anatomy, motion and class label.

A scenario builds a :class:`Scene`: a set of point reflectors (speckle scatterers drawn
in tissue layers, plus bright specular interfaces modelled as single strong points) and a
deterministic :class:`Motion` that says, for any absolute time ``t_s``, where every point
is, how far the sliding lung has moved sideways, which populations are in view, and the
class label. :mod:`mmode.ingest.simulator` turns a scene into RF lines.

Geometry is drawn from the scene's random generator (layer thicknesses, interface
strengths, wall excursions within physiological ranges), so each seed gives a slightly
different patient; the same seed gives the same patient.

The scene model, its motion model and the waveforms are :mod:`mmode.ingest.scene`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mmode.ingest.meta import CLASSES
from mmode.ingest.scene import (
    AIR,
    ALWAYS,
    LUNG,
    N_GROUPS,
    BeatSchedule,
    Motion,
    Points,
    Scene,
    breathing_waveform,
    smoothstep,
)

#: Number of sinusoids in the lateral shimmer of a sliding lung.
SHIMMER_TONES = 6


@dataclass(frozen=True)
class ScenarioInfo:
    """Public description of a scenario (``mmode simulate --list``).

    name : scenario name (the key of :data:`SCENARIOS`).
    label : class name, one of :data:`mmode.ingest.meta.CLASSES` (a test phantom: its own name).
    description : what a sonographer sees on screen.
    depth_m, f0_hz, fs_hz : suggested imaging depth and probe for this view.
    rate_per_min : default of the scenario's main rhythm, per minute: heart rate for the
        cardiac views, breathing rate for the others (0 for no_contact, which has none).
    attenuation_db_cm_mhz : mean attenuation of the tissue in the view.
    """

    name: str
    label: str
    description: str
    depth_m: float
    f0_hz: float
    fs_hz: float
    rate_per_min: float
    attenuation_db_cm_mhz: float

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "depth_m": self.depth_m,
            "f0_hz": self.f0_hz,
            "fs_hz": self.fs_hz,
            "rate_per_min": self.rate_per_min,
            "attenuation_db_cm_mhz": self.attenuation_db_cm_mhz,
        }



# -- lung views -----------------------------------------------------------------------------


def _chest_wall(pts: Points, rng: np.random.Generator) -> float:
    """Skin, subcutaneous fat with septa, intercostal muscle with fascia; returns the depth
    of the pleura in metres (12-20 mm)."""
    skin = rng.uniform(1.5e-3, 2.5e-3)
    fat = skin + rng.uniform(3e-3, 7e-3)
    pleura = fat + rng.uniform(7e-3, 11e-3)
    pts.add(rng.uniform(0.3e-3, 0.6e-3), 6.0)  # skin entry
    pts.speckle(rng, 0.2e-3, skin, 1.0, 20)
    pts.speckle(rng, skin, fat, 0.35, 15)
    n_septa = rng.integers(1, 4)
    pts.add(rng.uniform(skin, fat, n_septa), rng.uniform(1.5, 3.0, n_septa) * rng.choice([-1, 1], n_septa))
    pts.speckle(rng, fat, pleura - 0.3e-3, 0.8, 20)
    n_fascia = rng.integers(2, 5)
    pts.add(rng.uniform(fat, pleura - 1e-3, n_fascia), rng.uniform(2.0, 4.0, n_fascia) * rng.choice([-1, 1], n_fascia))
    return pleura


def _a_lines(pts: Points, pleura_m: float, depth_m: float, amp: float, ratio: float, group: int) -> None:
    """Reverberations of the pleural line at k times its depth, moving k times as far."""
    k = 2
    while k * pleura_m < depth_m + 2e-3:
        pts.add(k * pleura_m, amp * ratio ** (k - 1), group=group, scale=float(k), ref=pleura_m)
        k += 1


def _lung(
    name: str, rng: np.random.Generator, depth_m: float, heart_per_min: float, breath_per_min: float, alpha: float
) -> Scene:
    """Lung views: chest wall, bright pleural line, and under it the sliding lung (LUNG
    group: speckle moving sideways with breathing plus a small lateral "lung pulse" at the
    heart rate, weak A-lines) and/or pneumothorax air (AIR group: static texture, strong
    A-lines)."""
    pts = Points()
    z_p = _chest_wall(pts, rng)
    pleura_amp = rng.uniform(22.0, 32.0)
    pts.add(z_p, pleura_amp)
    # Scalars first and unconditionally, so that every lung view with the same seed has the
    # same chest wall, pleura and breathing phase (seamless scenario changes in a sequence).
    axial_m = rng.uniform(0.1e-3, 0.4e-3)  # axial breathing motion of the pleura
    slide_max_m = rng.uniform(8e-3, 15e-3)  # lateral lung excursion per breath
    pulse_m = rng.uniform(0.3e-3, 0.8e-3)  # lateral lung pulse per heartbeat
    phase0 = rng.uniform()
    beats = BeatSchedule(np.random.default_rng(rng.integers(1 << 62)), heart_per_min, irregular=False)
    # shimmer: small, continuous lateral motion (transmitted pulsations), 1.5-6 Hz, ~0.35 mm rms
    shimmer_hz = rng.uniform(1.5, 6.0, SHIMMER_TONES)
    shimmer_phase = rng.uniform(0, 2 * np.pi, SHIMMER_TONES)
    shimmer_m = 0.35e-3 * math.sqrt(2.0 / SHIMMER_TONES)
    bottom = depth_m + 2e-3
    if name in ("lung_sliding", "lung_point"):
        reach_m = slide_max_m + 1.2 * pulse_m + 2 * shimmer_m * SHIMMER_TONES
        pts.sliding_speckle(rng, z_p + 0.3e-3, bottom, 0.55, 10, reach_m, LUNG)
        _a_lines(pts, z_p, depth_m, pleura_amp, rng.uniform(0.3, 0.45), LUNG)
    if name in ("no_sliding", "lung_point"):
        pts.speckle(rng, z_p + 0.3e-3, bottom, 0.3, 12, group=AIR)
        _a_lines(pts, z_p, depth_m, pleura_amp, rng.uniform(0.5, 0.65), AIR)
    label = CLASSES.index(name)

    def motion(t_s: np.ndarray) -> Motion:
        b = breathing_waveform(t_s, breath_per_min, phase0)
        n = b.shape[0]
        vis = np.zeros((n, N_GROUPS))
        vis[:, ALWAYS] = 1.0
        if name == "lung_sliding":
            vis[:, LUNG] = 1.0
        elif name == "no_sliding":
            vis[:, AIR] = 1.0
        else:  # lung point: the lung slides into view during inspiration
            g = smoothstep((b - 0.35) / 0.3)
            vis[:, LUNG] = g
            vis[:, AIR] = 1.0 - g
        if name == "no_sliding":
            slide = np.zeros(n)
        else:
            shimmer = np.sin(2 * np.pi * shimmer_hz[None, :] * t_s[:, None] + shimmer_phase[None, :])
            # offset by the shimmer's largest swing so that slide_m stays in [0, reach_m]
            shimmer_sum = shimmer_m * (SHIMMER_TONES + shimmer.sum(axis=1))
            slide = slide_max_m * b + pulse_m * beats.contraction(t_s) + shimmer_sum
        return Motion(
            waves=b[:, None].copy(),
            slide_m=slide,
            visibility=vis,
            labels=np.full(n, label, dtype=np.int64),
        )

    nodes = [(0.0, 0.0), (z_p, axial_m), (bottom + 1.0, axial_m)]
    return pts.scene([tuple(zip(*nodes))], motion, alpha)


def _sinusoid(rng: np.random.Generator, depth_m: float, breath_per_min: float, alpha: float) -> Scene:
    """Pleural effusion: anechoic band between parietal pleura and lung; the lung line swings
    towards the pleura on inspiration (sinusoid sign)."""
    pts = Points()
    z_p = _chest_wall(pts, rng)
    pts.add(z_p, rng.uniform(15.0, 22.0))
    avail = max(depth_m - z_p - 8e-3, 6e-3)
    effusion = min(rng.uniform(10e-3, 22e-3), avail)
    z_l = z_p + effusion
    swing = effusion * rng.uniform(0.35, 0.55)
    # sparse faint echoes floating in the fluid
    pts.speckle(rng, z_p + 0.5e-3, z_l - 0.5e-3, 0.08, 1.0)
    pts.add(z_l, rng.uniform(10.0, 16.0))
    bottom = depth_m + swing + 3e-3  # tissue moving up into view must exist below the line
    pts.speckle(rng, z_l + 0.2e-3, bottom, 0.7, 18)  # compressed / consolidated lung
    phase0 = rng.uniform()
    label = CLASSES.index("sinusoid")
    axial_m = rng.uniform(0.1e-3, 0.3e-3)

    def motion(t_s: np.ndarray) -> Motion:
        b = breathing_waveform(t_s, breath_per_min, phase0)
        n = b.shape[0]
        vis = np.zeros((n, N_GROUPS))
        vis[:, ALWAYS] = 1.0
        return Motion(b[:, None].copy(), np.zeros(n), vis, np.full(n, label, dtype=np.int64))

    # displacement: chest wall breathing motion plus the lung swinging up by `swing`
    nodes = [(0.0, 0.0), (z_p, axial_m), (z_l, axial_m - swing), (bottom + 1.0, axial_m - swing)]
    return pts.scene([tuple(zip(*nodes))], motion, alpha)


# -- cardiac view ---------------------------------------------------------------------------


def _cardiac(
    name: str, rng: np.random.Generator, depth_m: float, rate_per_min: float, breath_per_min: float, alpha: float
) -> Scene:
    """Parasternal LV M-mode: chest wall, RV free wall, RV cavity, septum, LV cavity,
    posterior wall, bright pericardium. Geometry is scaled down for views shallower than
    11 cm (a smaller heart), so every depth shows both LV walls. The heart also drifts
    1-2.5 mm with breathing (second motion component)."""
    s = float(np.clip(depth_m / 0.11, 0.45, 1.0)) * rng.uniform(0.92, 1.05)
    pts = Points()
    z_cw = rng.uniform(8e-3, 14e-3) * s
    pts.add(rng.uniform(0.3e-3, 0.6e-3), 6.0)
    pts.speckle(rng, 0.2e-3, z_cw, 0.8, 18)
    pts.add(z_cw, 6.0)
    rv_a = z_cw + 1e-3 * s
    rv_b = rv_a + rng.uniform(3e-3, 5e-3) * s
    ivs_a = rv_b + rng.uniform(12e-3, 18e-3) * s
    ivs_b = ivs_a + rng.uniform(8e-3, 11e-3) * s
    lv_b = ivs_b + rng.uniform(42e-3, 52e-3) * s
    pw_b = lv_b + rng.uniform(8e-3, 11e-3) * s
    peri = pw_b + 1.0e-3 * s
    bottom = depth_m + 15e-3  # deep tissue moves up by up to ~10 mm in systole
    for a, b in ((rv_a, rv_b), (ivs_a, ivs_b), (lv_b, pw_b)):
        pts.speckle(rng, a, b, 0.55, 18)
        pts.add(a, rng.uniform(3.0, 6.0))
        pts.add(b, rng.uniform(3.0, 6.0))
    for a, b in ((rv_b, ivs_a), (ivs_b, lv_b)):
        pts.speckle(rng, a, b, 0.04, 10)  # blood
    pts.add(peri, rng.uniform(25.0, 35.0))
    pts.speckle(rng, peri + 0.5e-3, bottom, 0.45, 15)
    # systolic excursions (m, positive away from the probe)
    e_rv = rng.uniform(1.0e-3, 2.5e-3) * s
    e_ivs_a = rng.uniform(2.5e-3, 4.0e-3) * s
    e_ivs_b = rng.uniform(5.0e-3, 7.0e-3) * s
    e_pw_a = -rng.uniform(9.0e-3, 12.0e-3) * s
    e_pw_b = -rng.uniform(6.5e-3, 8.5e-3) * s
    nodes = [
        (0.0, 0.0),
        (z_cw, 0.0),
        (rv_a, e_rv),
        (rv_b, e_rv),
        (ivs_a, e_ivs_a),
        (ivs_b, e_ivs_b),
        (lv_b, e_pw_a),
        (pw_b, e_pw_b),
        (peri, 0.8 * e_pw_b),
        (bottom + 0.01, 0.2 * e_pw_b),
        (bottom + 1.0, 0.2 * e_pw_b),
    ]
    beats = BeatSchedule(np.random.default_rng(rng.integers(1 << 62)), rate_per_min, name == "cardiac_irregular")
    drift_m = rng.uniform(1.0e-3, 2.5e-3) * rng.choice([-1.0, 1.0])
    phase0 = rng.uniform()
    label = CLASSES.index(name)

    def motion(t_s: np.ndarray) -> Motion:
        c = beats.contraction(t_s)
        b = breathing_waveform(t_s, breath_per_min, phase0)
        n = c.shape[0]
        vis = np.zeros((n, N_GROUPS))
        vis[:, ALWAYS] = 1.0
        return Motion(np.stack([c, b], axis=1), np.zeros(n), vis, np.full(n, label, dtype=np.int64))

    drift = [(0.0, 0.0), (z_cw, 0.0), (rv_a, drift_m), (bottom + 1.0, drift_m)]
    return pts.scene([tuple(zip(*nodes)), tuple(zip(*drift))], motion, alpha)


# -- no contact -----------------------------------------------------------------------------


def _no_contact(rng: np.random.Generator, depth_m: float, alpha: float) -> Scene:
    """Probe in air: the lens rings down (reverberations at multiples of the lens thickness
    decaying with depth); beyond that only electronic noise."""
    pts = Points()
    lens_m = rng.uniform(0.5e-3, 0.9e-3)
    ratio = rng.uniform(0.55, 0.75)
    k = np.arange(1, 40)
    z = k * lens_m
    keep = (ratio ** (k - 1) > 1e-3) & (z < depth_m)
    pts.add(z[keep], 30.0 * ratio ** (k[keep] - 1) * np.where(k[keep] % 2 == 0, -1.0, 1.0))
    label = CLASSES.index("no_contact")

    def motion(t_s: np.ndarray) -> Motion:
        n = np.asarray(t_s).shape[0]
        vis = np.zeros((n, N_GROUPS))
        vis[:, ALWAYS] = 1.0
        return Motion(np.zeros((n, 1)), np.zeros(n), vis, np.full(n, label, dtype=np.int64))

    return pts.scene([((0.0, 1.0), (0.0, 0.0))], motion, alpha)


# -- test phantoms --------------------------------------------------------------------------


def point_reflectors(
    z_m: np.ndarray, amp: np.ndarray, velocity_m_s: float = 0.0, attenuation_db_cm_mhz: float = 0.0
) -> Scene:
    """A phantom of isolated reflectors at depths ``z_m`` (n,) with amplitudes ``amp`` (n,),
    all moving axially at ``velocity_m_s`` (positive away from the probe): displacement
    ``velocity_m_s * t``. Labelled no_contact; for physics checks and motion benchmarks."""
    pts = Points()
    pts.add(np.asarray(z_m, dtype=np.float64), np.asarray(amp, dtype=np.float64))
    label = CLASSES.index("no_contact")

    def motion(t_s: np.ndarray) -> Motion:
        t = np.asarray(t_s, dtype=np.float64)
        n = t.shape[0]
        vis = np.zeros((n, N_GROUPS))
        vis[:, ALWAYS] = 1.0
        return Motion(t[:, None] * velocity_m_s, np.zeros(n), vis, np.full(n, label, dtype=np.int64))

    return pts.scene([((0.0, 1.0), (1.0, 1.0))], motion, attenuation_db_cm_mhz)


#: Peak-to-peak excursion of the moving phantom, metres.
PHANTOM_EXCURSION_M = 10e-3
#: Clutter power over the phantom block's speckle power, dB.
PHANTOM_CLUTTER_DB = 6.0
#: Reference depth of the phantom's clutter points in its displacement profiles (outside
#: the line, so that no tissue depth shares their motion).
PHANTOM_CLUTTER_REF_M = -1.0


def _moving_phantom(rng: np.random.Generator, depth_m: float, rate_per_min: float, alpha: float,
                    clutter_db: float | None = PHANTOM_CLUTTER_DB) -> Scene:
    """A block of tissue-mimicking material in water, driven sinusoidally along the beam
    (``PHANTOM_EXCURSION_M`` peak to peak at ``rate_per_min`` cycles per minute), seen
    through strong clutter: the probe's ring-down and stationary echoes at every depth (the
    set-up, reverberations), drifting by a fraction of a millimetre, as in a scanner's
    phantom recording (docs/scenarios.md, "Test phantoms"); with ``clutter_db`` None, the
    block alone in water. No attenuation by default: a
    scanner's stored IQ is after its time-gain compensation.

    The block (bright top surface, speckle inside) starts 30-38 mm deep. The clutter's
    power is ``PHANTOM_CLUTTER_DB`` above the block's speckle, so the moving echo shows only
    once the stationary part is removed along slow time (a clutter filter). Clutter
    points are displaced through the second motion component (their reference depth is
    ``PHANTOM_CLUTTER_REF_M``, where only that component is non-zero).
    """
    pts = Points()
    z_obj = rng.uniform(30e-3, 38e-3)
    bottom = depth_m + PHANTOM_EXCURSION_M + 2e-3  # material moving up into view exists below
    pts.add(z_obj, rng.uniform(3.0, 5.0))
    pts.speckle(rng, z_obj + 0.3e-3, bottom, 0.5, 15)
    clutter = dict(ref=PHANTOM_CLUTTER_REF_M)
    lens_m = rng.uniform(0.5e-3, 0.9e-3)  # ring-down: lens reverberations decaying with depth
    k = np.arange(1, 12)
    pts.add(k * lens_m, 25.0 * rng.uniform(0.55, 0.7) ** (k - 1) * np.where(k % 2 == 0, -1.0, 1.0), **clutter)
    if clutter_db is not None:
        pts.speckle(rng, 0.0, bottom, 0.5 * 10 ** (clutter_db / 20), 15, **clutter)
    phase0 = rng.uniform(0, 2 * np.pi)
    drift_hz = rng.uniform(0.1, 0.3)
    drift_m = rng.uniform(0.05e-3, 0.2e-3)

    def motion(t_s: np.ndarray) -> Motion:
        t = np.asarray(t_s, dtype=np.float64)
        n = t.shape[0]
        waves = np.stack([0.5 * PHANTOM_EXCURSION_M * np.sin(2 * np.pi * rate_per_min / 60.0 * t + phase0),
                          drift_m * np.sin(2 * np.pi * drift_hz * t)], axis=1)
        vis = np.zeros((n, N_GROUPS))
        vis[:, ALWAYS] = 1.0
        return Motion(waves, np.zeros(n), vis, np.zeros(n, dtype=np.int64))

    # the water above the block follows it smoothly over 10 mm (it holds no scatterers; a
    # continuous field keeps the line-0 truth map free of folds)
    block = [(PHANTOM_CLUTTER_REF_M, 0.0), (z_obj - 10e-3, 0.0), (z_obj, 1.0), (bottom + 1.0, 1.0)]
    drift = [(PHANTOM_CLUTTER_REF_M, 1.0), (PHANTOM_CLUTTER_REF_M / 2, 0.0), (bottom + 1.0, 0.0)]
    return pts.scene([tuple(zip(*block)), tuple(zip(*drift))], motion, alpha)


# -- registry -------------------------------------------------------------------------------

_LUNG = dict(depth_m=0.045, f0_hz=5e6, fs_hz=20e6, rate_per_min=20.0, attenuation_db_cm_mhz=0.5)
_HEART = dict(depth_m=0.12, f0_hz=3e6, fs_hz=12e6, rate_per_min=70.0, attenuation_db_cm_mhz=0.3)

SCENARIOS: dict[str, ScenarioInfo] = {
    i.name: i
    for i in (
        ScenarioInfo(
            "lung_sliding",
            "lung_sliding",
            "Seashore sign: static horizontal chest-wall layers over a bright pleural line; below "
            "it a granular speckle that decorrelates as the lung slides with each breath.",
            **_LUNG,
        ),
        ScenarioInfo(
            "no_sliding",
            "no_sliding",
            "Barcode / stratosphere sign: chest wall and pleural line as in lung sliding, but "
            "below the pleura only stationary horizontal lines and strong A-line reverberations.",
            **_LUNG,
        ),
        ScenarioInfo(
            "lung_point",
            "lung_point",
            "Lung point: the seashore pattern appears during inspiration and gives way to the "
            "barcode pattern during expiration, alternating with every breath.",
            **_LUNG,
        ),
        ScenarioInfo(
            "sinusoid",
            "sinusoid",
            "Sinusoid sign of a pleural effusion: an anechoic band under the pleural line whose "
            "deep border (the lung line) swings towards the pleura with each inspiration.",
            **_LUNG,
        ),
        ScenarioInfo(
            "cardiac_regular",
            "cardiac_regular",
            "Parasternal LV M-mode, sinus rhythm: septum and posterior wall move towards each "
            "other in systole at a steady rate, with an atrial kick before each beat.",
            **_HEART,
        ),
        ScenarioInfo(
            "cardiac_irregular",
            "cardiac_irregular",
            "Parasternal LV M-mode, atrial fibrillation: irregular beat-to-beat intervals, no "
            "atrial kick, wall excursion varying with the preceding filling time.",
            **_HEART,
        ),
        ScenarioInfo(
            "no_contact",
            "no_contact",
            "Probe in air: bright ring-down bands from the lens in the first millimetres, then "
            "electronic noise only.",
            **{**_LUNG, "rate_per_min": 0.0},
        ),
    )
}

#: Test phantoms: scenes for measuring the product on scanner-like data; no clinical class
#: (their truth labels name the phantom). ``mmode simulate --list`` shows them after the scenarios.
PHANTOMS: dict[str, ScenarioInfo] = {
    "moving_phantom": ScenarioInfo(
        "moving_phantom",
        "moving_phantom",
        "Test phantom: a tissue-mimicking block in water moving 1 cm peak to peak along the beam "
        "(1.6 Hz by default), under stationary clutter 6 dB stronger than the block's speckle and "
        "a bright ring-down; a scanner's motion-phantom recording (2.5 MHz). Try --iq-fs 1e6.",
        depth_m=0.115,
        f0_hz=2.5e6,
        fs_hz=10e6,
        rate_per_min=96.0,
        attenuation_db_cm_mhz=0.0,
    ),
    "moving_phantom_clean": ScenarioInfo(
        "moving_phantom_clean",
        "moving_phantom_clean",
        "Test phantom: the moving_phantom block without the stationary clutter (the ring-down "
        "stays): the moving echo is the brightest thing in view. Try --iq-fs 1e6.",
        depth_m=0.115,
        f0_hz=2.5e6,
        fs_hz=10e6,
        rate_per_min=96.0,
        attenuation_db_cm_mhz=0.0,
    ),
}

_BUILDERS: dict[str, Callable[..., Scene]] = {
    "moving_phantom": lambda rng, d, hr, br, a: _moving_phantom(rng, d, hr, a),
    "moving_phantom_clean": lambda rng, d, hr, br, a: _moving_phantom(rng, d, hr, a, clutter_db=None),
    "lung_sliding": lambda rng, d, hr, br, a: _lung("lung_sliding", rng, d, hr, br, a),
    "no_sliding": lambda rng, d, hr, br, a: _lung("no_sliding", rng, d, hr, br, a),
    "lung_point": lambda rng, d, hr, br, a: _lung("lung_point", rng, d, hr, br, a),
    "sinusoid": lambda rng, d, hr, br, a: _sinusoid(rng, d, br, a),
    "cardiac_regular": lambda rng, d, hr, br, a: _cardiac("cardiac_regular", rng, d, hr, br, a),
    "cardiac_irregular": lambda rng, d, hr, br, a: _cardiac("cardiac_irregular", rng, d, hr, br, a),
    "no_contact": lambda rng, d, hr, br, a: _no_contact(rng, d, a),
}


def build_scene(
    name: str,
    rng: np.random.Generator,
    depth_m: float,
    heart_per_min: float,
    breath_per_min: float,
    attenuation_db_cm_mhz: float,
) -> Scene:
    """Build the scene of scenario ``name`` (a key of :data:`SCENARIOS` or :data:`PHANTOMS`).

    ``heart_per_min`` is the mean heart rate (cardiac views; a phantom's oscillation rate),
    ``breath_per_min`` the
    breathing rate. Lung views draw the chest wall first, so lung scenarios built with
    generators in the same state share the same chest wall.
    """
    return _BUILDERS[name](rng, depth_m, heart_per_min, breath_per_min, attenuation_db_cm_mhz)
