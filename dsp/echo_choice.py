"""Automatic choice of the echo to track (docs/motion.md, "Which echo").

The tracker (:class:`mmode.dsp.tracker.MotionTracker`) holds back its first ``select_s``
of lines and runs :func:`choose_echo` on them, a few bounded steps per call so that a live
stream is never stalled. In short:

1. Candidates: the best windows of a fixed-window score
   (:func:`mmode.dsp.echo_score.moving_echo_score`: power x velocity^2 x coherence^2 of the
   lag-one autocorrelation) and of the correlated power,
   on the lines as stored ("raw"), and the best windows of the same score on
   clutter-filtered IQ ("clutter", :mod:`mmode.dsp.clutter`), where stationary echoes
   score nothing. None starts in the probe's ring-down (``RING_DOWN_M``).
2. Each candidate is centred on its echo at the first line, tracked through the selection
   lines in its representation and back, and scored along its own track
   (:func:`~mmode.dsp.echo_score.tracked_echo_score`). The best raw candidate is kept
   unless the best clutter candidate scores ``CLUTTER_PREFERENCE`` times more (the moving echo is hidden under
   clutter in the stored lines: their track follows the clutter).
3. If the winner does not move measurably (its track's spread within ``MOTION_SNR`` times
   its own line-to-line noise) or does not track back to where it started, nothing is
   tracked and the tracker says so. A winner on the stored lines that moves less than the
   clutter filter's cut-off velocity would, while the clutter-filtered lines' top candidate
   lost only by the backwards check, is tracked with a caution: it may be stationary clutter.

Envelope input has no phase: the candidate is the bright echo whose amplitude changes most.
Scanner images (grey levels) take the best such candidate that tracks back to where it
started, and measure how much that echo changes its step from line to line
(:func:`_choose_on_grey`, :func:`_follow_grey`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mmode.dsp import clutter
from mmode.dsp.echo_score import echo_terms, local_maxima, score_of_terms, track_coherence, tracked_echo_score
from mmode.dsp.tracker import MODE_ENVELOPE, MODE_IQ

#: Line pairs (at most) and averaging time used to choose the echo automatically.
SELECTION_PAIRS = 256
SELECTION_ENSEMBLE_S = 0.02
#: Candidates for the automatic choice: this many local maxima of the selection score
#: (:func:`moving_echo_score`) and as many of the correlated echo power, each then scored
#: along its own track (:func:`tracked_echo_score`); as many again on clutter-filtered IQ.
SELECTION_CANDIDATES = 6
#: A winner whose forward-backward error exceeds this many phase-wrap periods is not
#: tracked reliably (it walks on noise or slips between echoes by whole wraps); below it,
#: a noisy track still counts (its score is already lowered by
#: :data:`mmode.dsp.echo_score.CONSISTENCY_WRAPS`).
RELIABLE_WRAPS = 0.5
#: A winner whose windows along its track correlate less than this from line to line
#: (:func:`track_coherence`) holds noise or decorrelating speckle, not an echo to follow.
ECHO_MIN_COHERENCE = 0.5
#: Times the automatically chosen window is moved to the energy centroid of its echo, and
#: the least selection score (relative to the chosen window's) a move may reach.
CENTRING_STEPS = 3
CENTRING_MIN_SCORE = 0.5
#: No candidate window reaches shallower than this, metres: a probe's lens rings down over
#: its first millimetres (a few reverberations of a 0.5-1 mm lens), a flicker that no
#: tissue makes.
RING_DOWN_M = 3e-3
#: The clutter-filtered representation is taken only when its best candidate scores this
#: many times the best candidate on the stored lines (scored on the same line pairs): it
#: costs a full demodulation per line for RF and loses an echo for as long as it stands
#: still, so it must clearly see motion the stored lines hide.
CLUTTER_PREFERENCE = 4.0
#: A winner moves when its track's standard deviation over the selection exceeds this many
#: times its line-to-line noise (RMS second difference / sqrt(6), the noise of each line
#: for white errors).
MOTION_SNR = 3.0
#: Scanner images: a candidate tracked through the selection lines and back must return to
#: within this many window lengths of where it started (:func:`_choose_on_grey`); further,
#: it has left its echo for another on the way (half a window: the two windows then share
#: less than half their samples).
GREY_RELIABLE_WINDOWS = 0.5
#: Lines demodulated, and depth samples scored, per step of the choice (bound the time of
#: one step to a few milliseconds at 2048 samples per line).
CHUNK_LINES = 32
CHUNK_SAMPLES = 128


# -- the choice -------------------------------------------------------------------------------
@dataclass
class _Candidate:
    """An echo candidate: ``centre`` (tracking sample at the first line), ``track`` (tracking
    samples at the tracked lines), its score without and with the forward-backward check
    (``bound``, ``score``), ``fb_m`` that check's RMS error (metres) and the line-pair
    windows along its track the score uses."""

    centre: int
    track: np.ndarray
    bound: float
    seg_a: np.ndarray
    seg_b: np.ndarray
    score: float = -1.0
    fb_m: float = math.inf


@dataclass
class _Selection:
    """The lines of one representation the choice works on.

    lines, mode : the tracked lines (every ``stride``-th held line) in kernel form;
    renew_min_step : the tracker's keyframe condition on them (clutter-filtered lines).
    iq_a, iq_b : (n_pairs, n_iq) complex IQ of the scored line pairs; ``a_idx``, ``b_idx``
    their line indices. tracked : (m,) line index of each tracked line; rate_hz their rate.
    """

    lines: np.ndarray
    mode: int
    iq_a: np.ndarray
    iq_b: np.ndarray
    a_idx: np.ndarray
    b_idx: np.ndarray
    tracked: np.ndarray
    rate_hz: float
    renew_min_step: float = 0.0


def choose_echo(tr, n: int):
    """Generator: choose the echo ``tr`` (a prepared :class:`~mmode.dsp.tracker.MotionTracker`)
    tracks from the first ``n`` lines it holds back, yielding after each bounded step; at the
    end it calls ``tr.set_echo(centre, representation)`` or ``tr.set_no_motion(note)``.

    The lines used are every ``stride``-th of the ``n`` (at most ``2 x SELECTION_PAIRS``,
    at 256 lines/s or more, or the line rate where that is lower), so the choice costs about
    the same at any line rate and does not depend on how the lines were cut into blocks.
    """
    stride = max(1, (n - 1) // SELECTION_PAIRS)
    tracked = np.arange(0, n, stride)
    rate_hz = tr.meta.prf_hz / stride
    lags = tr.search_lags(rate_hz)
    guard = tr.window // 2 + 1  # window and its first search inside the line
    ring_down = int(math.ceil(float(tr.meta.sample_at_depth(RING_DOWN_M)) / tr.stride))
    bounds = (max(guard, ring_down + tr.window // 2), tr.n_iq - guard - 1)
    raw_lines = yield from _in_steps(tr, tracked, lambda lines: tr.kernel_lines(lines)[0])
    raw_mode = tr.mode
    if raw_mode == MODE_ENVELOPE:  # no phase, no clutter filter
        yield from _choose_on_envelope(tr, n, raw_lines, tracked, lags, bounds)
        return
    first = np.arange(0, n - 1, stride)
    iq_a = yield from _in_steps(tr, first, tr.tracking_iq)
    iq_b = yield from _in_steps(tr, first + 1, tr.tracking_iq)
    raw = _Selection(raw_lines, raw_mode, iq_a, iq_b, first, first + 1, tracked, rate_hz)
    filt = tr.clutter_filter(rate_hz)
    if tr.fixed_centre is not None:
        yield from _choose_at_fixed_depth(tr, raw, filt, rate_hz, lags)
        return
    best, _ = yield from _best_candidate(tr, raw, rate_hz, lags, bounds)
    representation, caution = "raw", None
    if filt is not None and tracked.shape[0] > 2:
        iq_t = yield from _in_steps(tr, tracked, tr.tracking_iq)
        clu = _clutter_selection(tr, iq_t, filt, tracked)
        yield
        best_clu = top_clu = None
        if clu is not None:
            best_clu, top_clu = yield from _best_candidate(tr, clu, rate_hz, lags, bounds, proposals="score")
        raw_score = _rescore(tr, best, iq_t, tracked, rate_hz)
        if best_clu is not None and best_clu.score > CLUTTER_PREFERENCE * raw_score:
            best, representation = best_clu, "clutter"
        else:
            caution = _hidden_echo_note(tr, top_clu, raw_score, best)
    note = _why_not_moving(tr, best)
    if note is not None:
        tr.set_no_motion(note)
        return
    if representation == "clutter":
        yield from tr.prepare_clutter()
    tr.set_echo(best.centre, representation)
    tr.note = caution


def _in_steps(tr, index: np.ndarray, convert):
    """Generator returning ``convert`` (a tracker method of stored lines: ``tracking_iq``, or
    the kernel's form) of held lines ``index``, ``CHUNK_LINES`` per step (coarse IQ
    interpolated at once: 23 ms for the NTNU phantom's selection)."""
    parts = []
    for a in range(0, index.shape[0], CHUNK_LINES):
        parts.append(convert(tr.held_lines(index[a : a + CHUNK_LINES])))
        yield
    return np.concatenate(parts)


def _clutter_selection(tr, iq_t: np.ndarray, filt, tracked: np.ndarray) -> _Selection | None:
    """The clutter-filtered selection: the tracked lines high-passed along slow time at their
    own spacing (stationary echoes are removed at any line rate; backwards in time, so that
    the filter has settled at the first line, :func:`mmode.dsp.clutter.wall_filter`) but
    for the last lines, where it has not; pairs of consecutive tracked lines. None when too
    few lines remain."""
    rate_hz = tr.meta.prf_hz / (tracked[1] - tracked[0])
    keep = tracked.shape[0] - clutter.settle_lines(rate_hz, tr.meta.f0_hz, tr.meta.c_m_s)
    if keep < 4:
        return None
    f = clutter.wall_filter(iq_t, *filt)[:keep]
    tracked = tracked[:keep]
    return _Selection(f, MODE_IQ, f[:-1], f[1:], tracked[:-1], tracked[1:], tracked, rate_hz,
                      tr.renew_min_step(rate_hz))


def _echo_terms_in_steps(tr, sel: _Selection, rate_hz: float):
    """Generator returning :func:`echo_terms` of ``sel``'s pairs, computed over
    ``CHUNK_SAMPLES`` depth samples per step (each with the half window either side that its
    box filter reads, so the result is the same as in one go)."""
    ensemble = max(1, int(round(SELECTION_ENSEMBLE_S * rate_hz)))
    n = sel.iq_a.shape[1]
    halo = tr.window // 2 + 1
    parts = []
    for a in range(0, n, CHUNK_SAMPLES):
        b = min(n, a + CHUNK_SAMPLES)
        lo, hi = max(0, a - halo), min(n, b + halo)
        terms = echo_terms(sel.iq_a[:, lo:hi], sel.iq_b[:, lo:hi], rate_hz, tr.meta.f0_hz, tr.meta.c_m_s,
                            tr.window, ensemble)
        parts.append([t[:, a - lo : b - lo] for t in terms])
        yield
    return tuple(np.concatenate([p[k] for p in parts], axis=1) for k in range(3))


def _windows(tr, start: np.ndarray) -> np.ndarray:
    """(k, W) sample indices of windows starting at ``start`` (k,) (floats, rounded, kept in the line)."""
    w = tr.window
    return np.clip(np.floor(start + 0.5).astype(np.int64), 0, tr.n_iq - w)[:, None] + np.arange(w)


def _segments(tr, sel: _Selection, home: int, track: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IQ windows (n_pairs, W) of each scored line pair where ``track`` (at ``sel.tracked``)
    puts the echo; a line past the last tracked one is extrapolated from the last step."""
    pairs = np.arange(sel.a_idx.shape[0])[:, None]
    step = sel.tracked[1] - sel.tracked[0] if sel.tracked.shape[0] > 1 else 1
    slope = (track[-1] - track[-2]) / step if track.shape[0] > 1 else 0.0

    def at(idx):
        return np.interp(idx, sel.tracked, track) + np.maximum(idx - sel.tracked[-1], 0) * slope

    return sel.iq_a[pairs, _windows(tr, home + at(sel.a_idx))], sel.iq_b[pairs, _windows(tr, home + at(sel.b_idx))]


def _score_track(tr, sel: _Selection, home: int, track: np.ndarray, rate_hz: float, fb_m: float):
    """:func:`tracked_echo_score` of a track on ``sel`` and its segments."""
    seg_a, seg_b = _segments(tr, sel, home, track)
    lag_lines = max(1, int(round(SELECTION_ENSEMBLE_S * rate_hz)))
    score = tracked_echo_score(seg_a, seg_b, track * tr.spacing_m, rate_hz, lag_lines, fb_m, tr.wrap_m)
    return score, seg_a, seg_b


def _forward_backward_m(tr, sel: _Selection, centre: int, track: np.ndarray, lags, step_sigma=None) -> float:
    """RMS difference (m) between ``track`` and the same echo tracked back from the last line
    (``step_sigma``: that of :meth:`~mmode.dsp.tracker.MotionTracker.track_lines`)."""
    _, back = tr.track_lines(int(round(centre + track[-1])), sel.lines[::-1], sel.mode, lags, sel.renew_min_step,
                             sel.rate_hz, step_sigma=step_sigma)
    return float(np.sqrt(np.mean(((track - track[-1]) - back[::-1]) ** 2))) * tr.spacing_m


def _best_candidate(tr, sel: _Selection, rate_hz: float, lags, bounds, proposals: str = "score and power"):
    """Generator returning ``(best, top)``: the best :class:`_Candidate` of ``sel`` and the one
    that would score highest if its track came back when tracked backwards (``bound``; its
    ``fb_m`` is measured), both None without candidates.

    Candidates are the ``SELECTION_CANDIDATES`` best local maxima of the fixed-window score
    (and, with ``proposals="score and power"``, of the correlated power) inside ``bounds``;
    each is centred in the pair its echo fills best, placed at the first line and tracked;
    the forward-backward check runs on them in order of the score they would have if their
    tracks agreed, until none can beat the best found.
    """
    summed, coherence, v = yield from _echo_terms_in_steps(tr, sel, rate_hz)
    score = score_of_terms(summed, coherence, v)
    yield
    lo, hi = bounds
    if hi <= lo:
        return None, None
    maps = (score, np.mean(summed, axis=0)) if proposals == "score and power" else (score,)
    centres = []
    for values in maps:
        centres += [lo + i for i in local_maxima(values[lo:hi], tr.window // 2, SELECTION_CANDIDATES)]
    # each candidate is centred in the pair its echo fills best (index k), and at line 0
    fill = {c: int(np.argmax(summed[:, c] * coherence[:, c] ** 2)) for c in centres}
    energy = {k: np.abs(sel.iq_a[k]).astype(np.float64) ** 2 for k in {0, *fill.values()}}
    placed: list[_Candidate] = []
    for centre, k in fill.items():
        centre0 = place_at_line0(tr, centre, k, bounds, sel, lags, score, energy)
        if any(centre0 == p.centre for p in placed):
            continue
        home, track = tr.track_lines(centre0, sel.lines, sel.mode, lags, sel.renew_min_step, sel.rate_hz)
        bound, seg_a, seg_b = _score_track(tr, sel, home, track, rate_hz, 0.0)
        placed.append(_Candidate(centre0, track, bound, seg_a, seg_b))
        yield
    best: _Candidate | None = None
    lag_lines = max(1, int(round(SELECTION_ENSEMBLE_S * rate_hz)))
    placed.sort(key=lambda p: -p.bound)
    for cand in placed:
        if best is not None and cand.bound <= best.score:
            break
        cand.fb_m = _forward_backward_m(tr, sel, cand.centre, cand.track, lags)
        cand.score = tracked_echo_score(cand.seg_a, cand.seg_b, cand.track * tr.spacing_m, rate_hz, lag_lines,
                                        cand.fb_m, tr.wrap_m)
        if best is None or cand.score > best.score:
            best = cand
        yield
    return best, (placed[0] if placed else None)


def _rescore(tr, cand: _Candidate | None, iq_t: np.ndarray, tracked: np.ndarray, rate_hz: float) -> float:
    """Score of a raw candidate on the pairs the clutter selection uses (consecutive tracked
    lines), so that the two representations are compared on the same lines."""
    if cand is None:
        return 0.0
    sel = _Selection(np.empty(0), MODE_IQ, iq_t[:-1], iq_t[1:], tracked[:-1], tracked[1:], tracked, rate_hz)
    home = min(max(cand.centre - tr.window // 2, 0), tr.n_iq - tr.window)
    score, _, _ = _score_track(tr, sel, home, cand.track, rate_hz, cand.fb_m)
    return score


def _why_not_moving(tr, best: _Candidate | None) -> str | None:
    """None when ``best`` moves measurably and consistently, else the note saying why not."""
    if best is None:
        return "no echo below the ring-down to track"
    depth = tr.length_text(tr.depth_of(best.centre))
    coherence = track_coherence(best.seg_a, best.seg_b)
    if coherence < ECHO_MIN_COHERENCE:
        return (f"no moving echo: the best candidate ({depth}) holds no echo that stays alike from "
                f"line to line (coherence {coherence:.2f}), only noise or speckle that decorrelates")
    if best.fb_m > RELIABLE_WRAPS * tr.wrap_m:
        return (f"no moving echo tracked reliably: the best candidate ({depth}) comes back "
                f"{_offset_text(tr, best.fb_m)} off when tracked backwards")
    return _spread_note(tr, best.track, depth)


def _offset_text(tr, offset_m: float) -> str:
    """A forward-backward miss for a note: in mm from 1 mm up, else in um."""
    return tr.length_text(offset_m) if offset_m >= 1e-3 else tr.length_text(offset_m, "um", 0)


def _gate_note(tr, fb_m: float) -> str | None:
    """At a depth the user set, the caution when its echo fails the check the automatic
    choice makes (comes back more than ``RELIABLE_WRAPS`` phase wraps off when tracked
    backwards over the selection), else None. The trace is still shown there, as asked: under
    clutter at low SNR a window on the stored lines can walk off by centimetres with a
    line-to-line correlation that looks good (docs/motion.md)."""
    if fb_m <= RELIABLE_WRAPS * tr.wrap_m:
        return None
    return (f"the echo at the gate comes back {_offset_text(tr, fb_m)} off when tracked backwards (an "
            f"automatically chosen echo must come back within {_offset_text(tr, RELIABLE_WRAPS * tr.wrap_m)}): "
            "its trace may not follow it")


def _hidden_echo_note(tr, top: _Candidate | None, raw_score: float, chosen: _Candidate | None) -> str | None:
    """The caution when the echo ``chosen`` on the stored lines may be stationary clutter: it
    moves over the selection less than an echo at the wall filter's cut-off velocity would
    (``clutter.CUTOFF_M_S`` x ``select_s``: what the filter treats as clutter), and the
    clutter-filtered lines' top candidate ``top`` (by its score without the backwards check)
    would have won, beating ``CLUTTER_PREFERENCE`` x ``raw_score`` (the chosen echo's on the
    same line pairs), but failed that check (more than ``RELIABLE_WRAPS`` phase wraps off):
    motion the stored lines hide is there and could not be followed reliably. Else None.
    Under clutter at low SNR the stored lines' winner can be a stationary echo that barely
    moves while the tissue under it moves millimetres (docs/motion.md)."""
    if top is None or chosen is None or top.bound <= CLUTTER_PREFERENCE * raw_score:
        return None
    moved_m = float(np.ptp(chosen.track)) * tr.spacing_m
    if top.fb_m <= RELIABLE_WRAPS * tr.wrap_m or moved_m >= clutter.CUTOFF_M_S * tr.select_s:
        return None
    ratio = top.bound / raw_score if raw_score > 0 else math.inf
    moved = tr.length_text(moved_m, "mm", 2)
    return (f"the clutter-filtered lines show stronger motion than the echo tracked ({ratio:.0f} x its score) "
            f"that does not come back when tracked backwards ({_offset_text(tr, top.fb_m)} off; an automatically "
            f"chosen echo must come back within {_offset_text(tr, RELIABLE_WRAPS * tr.wrap_m)}): the echo tracked, "
            f"which moves {moved} over the first {tr.select_s:g} s, may be stationary clutter")


def _spread_note(tr, track: np.ndarray, depth: str) -> str | None:
    """None when ``track`` (tracking samples) spreads beyond ``MOTION_SNR`` x its noise."""
    track_m = track * tr.spacing_m
    if track_m.shape[0] < 4:
        return None
    noise_m = float(np.sqrt(np.mean(np.diff(track_m, 2) ** 2) / 6.0))
    spread_m = float(np.std(track_m))
    if spread_m > MOTION_SNR * noise_m:
        return None
    return (f"no moving echo: the best candidate ({depth}) moved {tr.length_text(spread_m, 'um')} RMS over "
            f"{tr.select_s:g} s, within {MOTION_SNR:g} x its tracking noise ({tr.length_text(noise_m, 'um')})")


def _choose_at_fixed_depth(tr, raw: _Selection, filt, rate_hz: float, lags):
    """A depth the user set: the window stays there; only whether to follow it on the
    stored or the clutter-filtered lines is chosen, by the same scores."""
    centre = tr.fixed_centre
    home, track = tr.track_lines(centre, raw.lines, raw.mode, lags, rate_hz=rate_hz)
    cand = _Candidate(centre, track, 0.0, np.empty(0), np.empty(0))
    cand.fb_m = _forward_backward_m(tr, raw, centre, track, lags)
    yield
    representation, fb_m = "raw", cand.fb_m
    if filt is not None and raw.tracked.shape[0] > 2:
        iq_t = yield from _in_steps(tr, raw.tracked, tr.tracking_iq)
        clu = _clutter_selection(tr, iq_t, filt, raw.tracked)
        if clu is not None:
            home_c, track_c = tr.track_lines(centre, clu.lines, clu.mode, lags, clu.renew_min_step, clu.rate_hz)
            fb_c = _forward_backward_m(tr, clu, centre, track_c, lags)
            score_c, _, _ = _score_track(tr, clu, home_c, track_c, rate_hz, fb_c)
            if score_c > CLUTTER_PREFERENCE * _rescore(tr, cand, iq_t, raw.tracked, rate_hz):
                representation, fb_m = "clutter", fb_c
        yield
    if representation == "clutter":
        yield from tr.prepare_clutter()
    tr.set_echo(centre, representation)
    tr.note = _gate_note(tr, fb_m)


def _choose_on_envelope(tr, n: int, lines: np.ndarray, tracked: np.ndarray, lags, bounds):
    """Envelope input (no phase): the bright echo whose amplitude changes most, placed at the
    first line, or the depth the user set; nothing moving is reported as for IQ. Scanner
    images choose among several such echoes by how well each is followed (:func:`_choose_on_grey`),
    and measure how the echo moves (:func:`_follow_grey`), also at a depth the user set."""
    lo, hi = bounds
    sel = _Selection(lines, MODE_ENVELOPE, np.empty(0), np.empty(0), tracked, tracked, tracked,
                     tr.meta.prf_hz / (tracked[1] - tracked[0]) if tracked.shape[0] > 1 else tr.meta.prf_hz)
    if tr.fixed_centre is not None:
        if tr.grey:
            track, sigma, _ = _follow_grey(tr, sel, tr.fixed_centre, lags)
            tr.set_echo_motion(track, sigma, sel.rate_hz)
        tr.set_echo(tr.fixed_centre, "raw")
        return
    env = tr.held_lines(np.arange(n)).astype(np.float64)
    yield
    power = ndimage.uniform_filter1d(np.mean(env**2, axis=0), tr.window)
    change = ndimage.uniform_filter1d(np.std(env, axis=0), tr.window)
    score = power * change
    if hi <= lo:
        tr.set_no_motion("no echo below the ring-down to track")
        return
    if tr.grey:
        yield from _choose_on_grey(tr, sel, env, score, power, lags, bounds)
        return
    centre0 = _place_envelope(tr, int(lo + np.argmax(score[lo:hi])), env, sel, score, lags, bounds)
    yield
    _, track = tr.track_lines(centre0, lines, MODE_ENVELOPE, lags, rate_hz=sel.rate_hz)
    note = _spread_note(tr, track, tr.length_text(tr.depth_of(centre0)))
    if note is not None:
        tr.set_no_motion(note)
    else:
        tr.set_echo(centre0, "raw")


def _place_envelope(tr, centre: int, env: np.ndarray, sel: _Selection, score: np.ndarray, lags, bounds) -> int:
    """:func:`place_at_line0` for envelope lines ``env`` (n, n_samples): from the tracked line
    where the window centred at ``centre`` holds the most energy."""
    start = centre - tr.window // 2  # the window centred on ``centre``, inside the line
    k = int(np.argmax(np.mean(env[sel.tracked, start : start + tr.window] ** 2, axis=1)))
    energy = {0: env[0] ** 2, k: env[sel.tracked[k]] ** 2}
    return place_at_line0(tr, centre, k, bounds, sel, lags, score, energy)


def _choose_on_grey(tr, sel: _Selection, env: np.ndarray, score: np.ndarray, power: np.ndarray, lags, bounds):
    """Scanner images (grey levels): the echo among the ``SELECTION_CANDIDATES`` best local
    maxima of the envelope score (bright x changing) and of the power that is followed
    reliably, and how much it may change its step from line to line.

    On a scanner image every bright line looks alike, and the best-scoring window may hold a
    flickering artefact, a faint echo in noise or the edge of the ring-down, which no trace
    follows: there the trace wandered between echoes. So each candidate is placed at the
    first line and followed through the selection lines and back (:func:`_follow_grey`);
    one that does not come back is dropped, and the best score among the rest wins. Nothing
    reliable, or nothing moving: no trace.
    """
    lo, hi = bounds
    centres = []
    for values in (score, power):
        centres += [lo + i for i in local_maxima(values[lo:hi], tr.window // 2, SELECTION_CANDIDATES)]
    best, unreliable = None, None
    for centre in sorted(dict.fromkeys(centres), key=lambda c: -score[c]):
        centre0 = _place_envelope(tr, centre, env, sel, score, lags, bounds)
        track, sigma, fb_m = _follow_grey(tr, sel, centre0, lags)
        yield
        if fb_m <= GREY_RELIABLE_WINDOWS * tr.window * tr.spacing_m:
            best = (centre0, track, sigma)
            break
        if unreliable is None:
            unreliable = (centre0, fb_m)
    if best is None:
        centre0, fb_m = unreliable
        tr.set_no_motion(f"no echo tracked reliably: the best candidate ({tr.length_text(tr.depth_of(centre0))}) "
                         f"comes back {tr.length_text(fb_m)} off when tracked backwards")
        return
    centre0, track, sigma = best
    note = _spread_note(tr, track, tr.length_text(tr.depth_of(centre0)))
    if note is not None:
        tr.set_no_motion(note)
        return
    tr.set_echo_motion(track, sigma, sel.rate_hz)
    tr.set_echo(centre0, "raw")


def _follow_grey(tr, sel: _Selection, centre0: int, lags) -> tuple[np.ndarray, float, float]:
    """Scanner images: ``(track, sigma, fb_m)`` of the echo centred at ``centre0`` in the first
    selection line, followed under the narrowest expected change of step ``sigma`` (tracking
    samples: 1, 2, 4, ... up to what ``TISSUE_ACCELERATION_M_S2`` allows) with which it comes
    back to within ``GREY_RELIABLE_WINDOWS`` of a window when tracked backwards (``fb_m``,
    metres, :func:`_forward_backward_m`). A wide expectation lets a slow echo wander between
    the bright lines near it (a pleura among fascia and A-lines); a narrow one loses a fast
    echo (a heart wall in systole), which then does not come back."""
    cap = tr.step_sigma(sel.rate_hz)
    sigma = 1.0
    while True:
        sigma = min(sigma, cap)
        _, track = tr.track_lines(centre0, sel.lines, MODE_ENVELOPE, lags, rate_hz=sel.rate_hz, step_sigma=sigma)
        fb_m = _forward_backward_m(tr, sel, centre0, track, lags, sigma)
        if fb_m <= GREY_RELIABLE_WINDOWS * tr.window * tr.spacing_m or sigma >= cap:
            return track, sigma, fb_m
        sigma *= 2.0


def place_at_line0(tr, centre: int, k: int, bounds, sel: _Selection, lags, score: np.ndarray,
                   energy: dict[int, np.ndarray]) -> int:
    """Centre (tracking sample) at the first line of the echo in the window centred at ``centre``.

    The echo that fills a fixed window best over the selection time may lie elsewhere at
    the first line (a lung line that swings 2 mm further up, a pericardium caught in
    systole: the window then held fluid or deep speckle there). So the window is centred on
    its echo (:func:`centre_on_energy`, with the selection ``score`` as floor) in
    ``sel.lines[k]`` (evenly spaced held-back lines from the first one; search half-ranges
    ``lags`` for that spacing), where the echo fills it best, tracked back
    to ``lines[0]`` and centred there again; ``energy`` holds the ``|IQ|^2`` (envelope^2) of
    lines ``k`` and 0, by index. ``bounds`` (lo, hi) keep the centre in the line.
    """
    centre = centre_on_energy(tr, centre, bounds, energy[k], score)
    if k == 0:
        return centre
    _, back = tr.track_lines(centre, sel.lines[k::-1], sel.mode, lags, sel.renew_min_step, sel.rate_hz)
    centre = min(max(int(round(centre + back[-1])), bounds[0]), bounds[1])
    return centre_on_energy(tr, centre, bounds, energy[0])


def centre_on_energy(tr, centre: int, bounds, energy: np.ndarray, score: np.ndarray | None = None) -> int:
    """Centre (tracking sample) of the window moved onto the energy of its echo in a line whose
    ``|IQ|^2`` is ``energy`` (n_iq,).

    The selection scores fixed depth windows over many lines, so the best one may hold
    only the edge of its echo at a given line. The window is moved to the centroid of
    ``|IQ|^2`` (envelope^2) inside it, up to ``CENTRING_STEPS`` times, so that the reported
    depth is the echo's; with ``score`` (n_iq,), the selection score, a move is taken only
    where it stays at least ``CENTRING_MIN_SCORE`` times its value at the chosen centre, so
    that the window is not pulled off a moving echo onto a brighter neighbour that moves
    otherwise. The centre stays within ``bounds`` (lo, hi).
    """
    w = tr.window
    floor = -math.inf if score is None else CENTRING_MIN_SCORE * score[centre]
    for _ in range(CENTRING_STEPS):
        start = centre - w // 2
        seg = energy[start : start + w]
        if not seg.sum() > 0:
            break
        moved = int(round(start + float(np.sum(seg * np.arange(w))) / seg.sum()))
        moved = min(max(moved, bounds[0]), bounds[1])
        if moved == centre or (score is not None and score[moved] < floor):
            break
        centre = moved
    return centre
