"""Scores of echo candidates for the automatic choice of the tracked echo
(:mod:`mmode.dsp.echo_choice`): pure functions of IQ line pairs.

- :func:`moving_echo_score`: a fixed window at every depth (Eulerian): correlated power x
  velocity^2 x coherence^2 of the lag-one autocorrelation.
- :func:`tracked_echo_score`: one candidate along its own track (Lagrangian), with the
  consistency of the track run forwards and back; :func:`track_coherence` the line-to-line
  correlation along it.
- :func:`local_maxima`: the candidates' depths, as ``scipy.signal.find_peaks`` with a
  distance but keeping the array's ends.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from mmode.dsp.motion import phase_to_displacement_m

#: RMS forward-backward track difference, in phase-wrap periods, at which a candidate's
#: score falls to 1/e (:func:`tracked_echo_score`).
CONSISTENCY_WRAPS = 0.25


def moving_echo_score(
    iq_a: np.ndarray,
    iq_b: np.ndarray,
    prf_hz: float,
    f0_hz: float,
    c_m_s: float,
    window_samples: int,
    ensemble: int,
) -> np.ndarray:
    """Score of the coherently moving echo in the window centred on each IQ sample.

    ``iq_a[i]`` and ``iq_b[i]`` (n_pairs, n_samples) complex are line pairs one line apart
    (consecutive, or a subset of them spread over the selection time). From the lag-one
    autocorrelation ``R1 = conj(a) * b`` averaged over ``window_samples`` and ``ensemble``
    pairs, each depth is scored by

    - its correlated echo power ``|mean R1|`` (white noise adds nothing to it),
    - times ``v^2``, ``v`` the RMS Kasai velocity of the averaged ``R1``, each pair weighted
      by its coherence below: a bright static echo scores low, and the random phase of the
      pairs in which only noise fills the window (while a moving echo is elsewhere) does not
      count as motion;
    - times the squared coherence of the motion inside the window, the mean over pairs of
      ``|sum R1| / sum |R1|`` (1 when every sample moves alike): a window straddling a
      static and a moving structure scores low, since no single trace describes it.

    Returns (n_samples,) float64, arbitrary units (power x velocity^2). Beyond the aliasing
    velocity the Kasai ``v`` wraps, so the score is only a rough guide there.
    """
    return score_of_terms(*echo_terms(iq_a, iq_b, prf_hz, f0_hz, c_m_s, window_samples, ensemble))


def score_of_terms(summed, pair_coherence, v):
    """:func:`moving_echo_score` (n_samples,) from the terms of :func:`echo_terms`."""
    tiny = np.finfo(np.float64).tiny
    v_ms = np.sum(pair_coherence * v**2, axis=0) / np.maximum(np.sum(pair_coherence, axis=0), tiny)
    return np.mean(summed, axis=0) * v_ms * np.mean(pair_coherence, axis=0) ** 2


def echo_terms(iq_a, iq_b, prf_hz, f0_hz, c_m_s, window_samples, ensemble):
    """Per pair and depth (n_pairs, n_samples) float64 each: the correlated power ``|mean R1|``,
    the coherence ``|sum R1| / sum |R1|`` and the Kasai velocity (m/s) of the window and
    ensemble averaged lag-one autocorrelation; see :func:`moving_echo_score`."""
    tiny = np.finfo(np.float64).tiny
    r1 = np.conj(iq_a).astype(np.complex128) * iq_b
    size = (max(1, min(int(ensemble), r1.shape[0])), int(window_samples))
    re = ndimage.uniform_filter(r1.real, size=size, mode="nearest")
    im = ndimage.uniform_filter(r1.imag, size=size, mode="nearest")
    summed = np.hypot(re, im)
    pair_coherence = summed / np.maximum(ndimage.uniform_filter(np.abs(r1), size=size, mode="nearest"), tiny)
    v = phase_to_displacement_m(np.arctan2(im, re), f0_hz, c_m_s) * prf_hz
    return summed, pair_coherence, v


def local_maxima(values: np.ndarray, separation: int, count: int) -> list[int]:
    """Indices of at most ``count`` local maxima of ``values`` (n,), largest first, each at
    least ``separation`` samples from every larger one taken (the ends count as maxima when
    they are not below their one neighbour).

    Not ``scipy.signal.find_peaks(x, distance=separation)``, which does the same greedy
    selection but never takes an end of the array for a peak: an echo at the first or last
    depth of the search range must stay a candidate."""
    x = np.asarray(values, dtype=np.float64)
    left = np.concatenate(([-np.inf], x[:-1]))
    right = np.concatenate((x[1:], [-np.inf]))
    peaks = np.flatnonzero((x >= left) & (x >= right))
    taken: list[int] = []
    for p in peaks[np.argsort(-x[peaks], kind="stable")]:
        if all(abs(int(p) - q) >= separation for q in taken):
            taken.append(int(p))
            if len(taken) == count:
                break
    return taken


def tracked_echo_score(
    seg_a: np.ndarray,
    seg_b: np.ndarray,
    displacement_m: np.ndarray,
    rate_hz: float,
    lag_lines: int,
    fb_error_m: float,
    wrap_m: float,
) -> float:
    """Score of one echo candidate along its own track (Lagrangian; cf. :func:`moving_echo_score`).

    ``seg_a[i]``, ``seg_b[i]`` (n_pairs, W) complex are the IQ windows of line pairs one line
    apart, each taken where the track puts the echo in that line; ``displacement_m``
    (n_lines,) is the track, metres, at lines ``1 / rate_hz`` seconds apart (every line, or
    every k-th line at ``prf / k``); ``fb_error_m`` the RMS difference, metres, between that
    track and the same echo tracked back from the last line to the first; ``wrap_m`` the
    phase-wrap period of the combined tracker, metres (c / 2 f0).

    The score is the product of

    - the correlated echo power ``mean |sum conj(a) b| / W`` (noise adds nothing to it),
    - ``mean v^2``, ``v`` the velocity over ``lag_lines`` lines (m/s): a static echo scores
      low; since the window moves with the echo, fast motion does not decorrelate it, and
      the track does not alias,
    - the squared mean coherence ``|sum conj(a) b| / sqrt(Ea Eb)`` of the pairs,
    - ``exp(-(fb_error / (CONSISTENCY_WRAPS wrap))^2)``: a track that slips between echoes
      (a window holding a static and a moving structure) or walks on noise does not come
      back to where it started when run backwards; a tracked echo does, to well under a
      micrometre.

    Returns a float >= 0, arbitrary units (power x velocity^2).
    """
    r1 = np.sum(np.conj(seg_a).astype(np.complex128) * seg_b, axis=1)
    power = float(np.mean(np.abs(r1))) / seg_a.shape[1]
    coherence = track_coherence(seg_a, seg_b)
    lag = max(1, min(int(lag_lines), displacement_m.shape[0] - 1))
    v = (displacement_m[lag:] - displacement_m[:-lag]) * rate_hz / lag
    consistency = math.exp(-((fb_error_m / (CONSISTENCY_WRAPS * wrap_m)) ** 2))
    return power * float(np.mean(v**2)) * coherence**2 * consistency


def track_coherence(seg_a: np.ndarray, seg_b: np.ndarray) -> float:
    """Mean over line pairs of ``|sum conj(a) b| / sqrt(Ea Eb)`` of the windows ``seg_a``,
    ``seg_b`` (n_pairs, W) complex along a track: about 1 for an echo followed from line to
    line, a fraction for a window that holds only noise (white noise: about 1 / sqrt(W))."""
    tiny = np.finfo(np.float64).tiny
    r1 = np.sum(np.conj(seg_a).astype(np.complex128) * seg_b, axis=1)
    energy = np.sqrt(np.sum(np.abs(seg_a) ** 2, axis=1) * np.sum(np.abs(seg_b) ** 2, axis=1))
    return float(np.mean(np.abs(r1) / np.maximum(energy, tiny)))
