"""The simulated patient: point reflectors (:class:`Scene`), their motion (:class:`Motion`)
and the waveforms that drive it (breathing, heartbeat). :mod:`mmode.ingest.scenarios` builds
scenes; :mod:`mmode.ingest.simulator` turns a scene into RF lines.

Motion model
------------
Axial displacement (metres, positive away from the probe) of a point with reference depth
``z`` at time ``t`` is ``d(z, t) = sum_j P_j(z) * W_j(t)``: a few depth profiles ``P_j``
(piecewise linear between nodes) times time waveforms ``W_j`` (breathing, heartbeat).
Reverberation artefacts (A-lines, ring-down) at ``k`` times a reflector's depth move
``k`` times as far as that reflector. Lung sliding is lateral: sliding-lung scatterers sit
on a 2-D (lateral x depth) field that moves sideways by ``slide_m(t)`` through a Gaussian
beam of lateral width ``BEAM_SIGMA_X_M``, so their speckle decorrelates while their axial
truth displacement stays the (small) breathing motion.

Visibility groups: 0 always in view; 1 the aerated lung under the pleura (in contact);
2 the air of a pneumothorax (static reverberations). ``lung_point`` alternates 1 and 2
with breathing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Standard deviation of the (two-way) Gaussian beam profile, metres.
BEAM_SIGMA_X_M = 0.4e-3
#: Lateral support of the beam for sliding scatterers, in standard deviations: a scatterer
#: enters the beam at 4 % amplitude (-27 dB), well below the speckle it joins.
BEAM_HALF_SIGMAS = 2.5
#: Visibility groups.
ALWAYS, LUNG, AIR = 0, 1, 2
N_GROUPS = 3


@dataclass
class Motion:
    """Motion of a scene at ``n`` times.

    waves : (n, n_components) float64, the waveforms ``W_j(t)`` (dimensionless).
    slide_m : (n,) float64, lateral displacement of the sliding lung, metres.
    visibility : (n, N_GROUPS) float64 in [0, 1], weight of each visibility group.
    labels : (n,) int64, index into CLASSES.
    """

    waves: np.ndarray
    slide_m: np.ndarray
    visibility: np.ndarray
    labels: np.ndarray


@dataclass
class Scene:
    """Point reflectors of one simulated patient and their motion.

    z_m : (n_pts,) reference depth of each point, metres.
    amp : (n_pts,) signed reflectivity (arbitrary units; speckle ~1, bright interfaces 10-40).
    x_m : (n_pts,) lateral position, metres (0 for points on the beam axis).
    slide : (n_pts,) uint8, 1 for points that move laterally with ``Motion.slide_m``.
    group : (n_pts,) int64 visibility group (ALWAYS, LUNG, AIR).
    disp_scale : (n_pts,) multiple of the displacement at ``ref_z_m`` (1; k for the k-th
        reverberation of a reflector).
    ref_z_m : (n_pts,) depth at which the displacement field is evaluated for the point.
    profile_nodes : per motion component, (node depths in m, node values): ``P_j``, in
        metres per unit of the component's waveform ``W_j``.
    motion : ``t_s (n,) -> Motion``; deterministic function of absolute time.
    attenuation_db_cm_mhz : mean attenuation along the line.
    """

    z_m: np.ndarray
    amp: np.ndarray
    x_m: np.ndarray
    slide: np.ndarray
    group: np.ndarray
    disp_scale: np.ndarray
    ref_z_m: np.ndarray
    profile_nodes: list[tuple[np.ndarray, np.ndarray]]
    motion: Callable[[np.ndarray], Motion]
    attenuation_db_cm_mhz: float

    def profiles(self, z_m: np.ndarray) -> np.ndarray:
        """``P_j(z)`` at depths ``z_m`` (n,), shape (n, n_components), metres."""
        z = np.asarray(z_m, dtype=np.float64)
        out = np.empty((z.shape[0], len(self.profile_nodes)), dtype=np.float64)
        for j, (nz, nv) in enumerate(self.profile_nodes):
            out[:, j] = np.interp(z, nz, nv)
        return out

    def displacement_m(self, z_m: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Absolute axial displacement ``d(z, t)``, shape (len(t_s), len(z_m)), metres."""
        return self.motion(np.asarray(t_s, dtype=np.float64)).waves @ self.profiles(z_m).T

    def breakpoints_m(self) -> np.ndarray:
        """Node depths of every profile ``P_j``, sorted and unique, (n_nodes,) metres.

        Between consecutive breakpoints every ``P_j``, hence ``d(z, t)``, is linear in ``z``;
        beyond the first and last it is constant.
        """
        return np.unique(np.concatenate([nz for nz, _ in self.profile_nodes]))


class Points:
    """Accumulates point reflectors while a scene is built."""

    def __init__(self) -> None:
        self.cols: dict[str, list[np.ndarray]] = {k: [] for k in ("z", "amp", "x", "slide", "group", "scale", "ref")}

    def add(self, z, amp, *, x=0.0, slide=0, group=ALWAYS, scale=1.0, ref=None) -> None:
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        n = z.shape[0]
        self.cols["z"].append(z)
        self.cols["amp"].append(np.broadcast_to(np.asarray(amp, dtype=np.float64), (n,)))
        self.cols["x"].append(np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)))
        self.cols["slide"].append(np.full(n, slide, dtype=np.uint8))
        self.cols["group"].append(np.full(n, group, dtype=np.int64))
        self.cols["scale"].append(np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,)))
        self.cols["ref"].append(z if ref is None else np.broadcast_to(np.asarray(ref, dtype=np.float64), (n,)))

    def speckle(self, rng, z_top, z_bottom, echogenicity, density_per_mm, **kw) -> None:
        """Random scatterers uniform in [z_top, z_bottom), Gaussian amplitudes."""
        if z_bottom <= z_top:
            return
        n = rng.poisson(density_per_mm * (z_bottom - z_top) * 1e3)
        self.add(rng.uniform(z_top, z_bottom, n), echogenicity * rng.standard_normal(n), **kw)

    def sliding_speckle(self, rng, z_top, z_bottom, echogenicity, density_per_mm, reach_m, group) -> None:
        """Scatterers on a lateral x depth field covering every position the beam visits
        while ``slide_m`` stays in [0, reach_m]; ``density_per_mm`` is the on-axis density."""
        if z_bottom <= z_top:
            return
        x_lo, x_hi = -reach_m - BEAM_HALF_SIGMAS * BEAM_SIGMA_X_M, BEAM_HALF_SIGMAS * BEAM_SIGMA_X_M
        # effective on-axis density: integral of the Gaussian beam weight is sqrt(2 pi) sigma_x
        per_mm = density_per_mm * (x_hi - x_lo) / (math.sqrt(2 * math.pi) * BEAM_SIGMA_X_M)
        n = rng.poisson(per_mm * (z_bottom - z_top) * 1e3)
        self.add(
            rng.uniform(z_top, z_bottom, n),
            echogenicity * rng.standard_normal(n),
            x=rng.uniform(x_lo, x_hi, n),
            slide=1,
            group=group,
        )

    def scene(self, profile_nodes, motion, attenuation_db_cm_mhz) -> Scene:
        c = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in self.cols.items()}
        return Scene(
            z_m=c["z"],
            amp=c["amp"],
            x_m=c["x"],
            slide=c["slide"],
            group=c["group"],
            disp_scale=c["scale"],
            ref_z_m=c["ref"],
            profile_nodes=[(np.asarray(z, float), np.asarray(v, float)) for z, v in profile_nodes],
            motion=motion,
            attenuation_db_cm_mhz=attenuation_db_cm_mhz,
        )


# -- waveforms ------------------------------------------------------------------------------


def breathing_waveform(t_s: np.ndarray, breath_per_min: float, phase0: float) -> np.ndarray:
    """Lung volume over time in [0, 1]: raised-cosine inspiration (40 % of the cycle), then
    expiration. ``phase0`` in [0, 1) is the phase at t = 0. Shape of ``t_s``."""
    phase = np.mod(np.asarray(t_s, dtype=np.float64) * breath_per_min / 60.0 + phase0, 1.0)
    insp = 0.4
    return np.where(
        phase < insp,
        0.5 * (1 - np.cos(np.pi * phase / insp)),
        0.5 * (1 + np.cos(np.pi * (phase - insp) / (1 - insp))),
    )


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class BeatSchedule:
    """Beat onset times for a heart at ``rate_per_min``; deterministic, extended on demand.

    Regular rhythm: RR intervals vary by 2 % (sinus variability) and every beat has an atrial
    kick. Irregular rhythm (atrial fibrillation): RR intervals are log-normal with a 30 %
    spread (0.35 to 2.2 times the mean, never below 0.3 s), there is no atrial kick, and the
    excursion of a beat grows with the preceding filling time.
    """

    def __init__(self, rng: np.random.Generator, rate_per_min: float, irregular: bool) -> None:
        self.mean_rr_s = 60.0 / rate_per_min
        self.irregular = irregular
        self._rng = rng
        # onset (s), RR interval (s) and excursion gain of each beat; capacity doubles
        self._beats = np.empty((3, 64), dtype=np.float64)
        rr = self._draw()
        self._beats[:, 0] = (-rng.uniform(0, rr), rr, 1.0)
        self._n = 1

    def _draw(self) -> float:
        if self.irregular:
            f = math.exp(0.3 * self._rng.standard_normal())
            return max(0.3, self.mean_rr_s * min(max(f, 0.35), 2.2))
        return self.mean_rr_s * (1 + 0.02 * self._rng.standard_normal())

    def extend_to(self, t_s: float) -> None:
        """Draw beats until the last one covers ``t_s``."""
        while self._beats[0, self._n - 1] + self._beats[1, self._n - 1] <= t_s:
            if self._n == self._beats.shape[1]:
                self._beats = np.concatenate([self._beats, np.empty_like(self._beats)], axis=1)
            onset, prev_rr = self._beats[0, self._n - 1], self._beats[1, self._n - 1]
            rr = self._draw()
            if self.irregular:
                gain = float(np.clip((prev_rr / self.mean_rr_s) ** 0.5, 0.5, 1.2))
            else:
                gain = 1.0 + 0.03 * self._rng.standard_normal()
            self._beats[:, self._n] = (onset + prev_rr, rr, gain)
            self._n += 1

    def contraction(self, t_s: np.ndarray) -> np.ndarray:
        """Wall contraction in [0, ~1.2] at times ``t_s`` (0 end-diastole, 1 end-systole)."""
        t = np.asarray(t_s, dtype=np.float64)
        if t.size == 0:
            return np.zeros_like(t)
        if t.min() < self._beats[0, 0]:
            raise ValueError("beat schedule starts after the requested time")
        self.extend_to(float(t.max()))
        onsets, rr, gain = self._beats[:, : self._n]
        idx = np.searchsorted(onsets, t, side="right") - 1
        return gain[idx] * _beat_shape(t - onsets[idx], rr[idx], atrial_kick=not self.irregular)


def _beat_shape(tau: np.ndarray, rr: np.ndarray, atrial_kick: bool) -> np.ndarray:
    """Contraction within one beat of length ``rr`` at time ``tau`` after its onset.

    Systole (raised cosine 0 -> 1, about 0.3 s at 60/min), rapid filling back to 0.15,
    diastasis, then the atrial kick 0.15 -> 0 (or, without one, a slow passive decline).
    """
    ts = np.minimum(0.3 * rr**0.4, 0.45 * rr)
    tf = np.minimum(0.15, 0.4 * (rr - ts))
    ta = np.minimum(0.12, 0.25 * (rr - ts))
    rest = 0.15
    out = np.zeros_like(tau)
    sys = tau < ts
    out[sys] = 0.5 * (1 - np.cos(np.pi * tau[sys] / ts[sys]))
    fill = (~sys) & (tau < ts + tf)
    out[fill] = 1 - (1 - rest) * 0.5 * (1 - np.cos(np.pi * (tau[fill] - ts[fill]) / tf[fill]))
    dia = tau >= ts + tf
    if atrial_kick:
        kick_start = rr - ta
        hold = dia & (tau < kick_start)
        out[hold] = rest
        kick = dia & (tau >= kick_start)
        out[kick] = rest * 0.5 * (1 + np.cos(np.pi * (tau[kick] - kick_start[kick]) / ta[kick]))
    else:
        span = np.maximum(rr - ts - tf, 1e-6)
        out[dia] = rest * (1 - (tau[dia] - ts[dia] - tf[dia]) / span[dia])
    return out

