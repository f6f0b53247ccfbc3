"""The numba kernels of the streaming tracker (:class:`mmode.dsp.tracker.MotionTracker`).

:func:`track_kernel` follows one echo through a run of lines against a keyframe (NCC on
the envelope for the coarse shift, the phase of the complex correlation for the fine one);
:func:`fill_line` makes the IQ and envelope samples it searches, demodulating RF only there
(:mod:`mmode.dsp.demod`). The matching primitives are those of :mod:`mmode.dsp.motion`. Pure
functions of their arrays (the state lives in arrays the tracker owns), compiled once and
cached (``cache=True``).
"""

from __future__ import annotations

import math

from numba import njit

from mmode.dsp.motion import _add_inphase_weights, _ncc_peak, _ncc_peak_near, _phase_at, _phase_shift, _unwrap_to

#: Form of the lines a kernel reads: RF (demodulated in :func:`fill_line`), IQ, envelope.
MODE_RF, MODE_IQ, MODE_ENVELOPE = 0, 1, 2
#: The keyframe is also renewed when the energy agreement of the match (see
#: :func:`mmode.dsp.motion._ncc_peak`) falls below this: the echo faded or brightened by
#: more than about 2 x in amplitude.
KEYFRAME_ENERGY = 0.8
#: Below this complex correlation coefficient the phase is noise: the line keeps the
#: envelope's (NCC) shift instead of the phase-refined one.
PHASE_MIN_COHERENCE = 0.5
#: Weight of each new line's step in the smoothed step that predicts the next line (an
#: exponential average over about 1 / VELOCITY_SMOOTHING lines): one noisy line must not
#: throw the prediction half a wrap off; a lag of a few lines of acceleration is far below it.
VELOCITY_SMOOTHING = 0.3
#: Scanner images: the keyframe is renewed only from a match at least this confident
#: (:func:`mmode.dsp.motion._ncc_peak_near`; 0.5: three times as likely as any other echo),
#: so that an ambiguous line never becomes the reference of the lines after it.
RENEW_MIN_CONFIDENCE = 0.5


@njit(nogil=True, cache=True)
def fill_line(lines, i, mode, carrier, taps, dec, half, a, b, buf_iq, buf_env):
    """IQ and envelope of line ``i`` at IQ samples ``a..b-1`` into ``buf_iq``/``buf_env``.

    RF lines are demodulated only there (:func:`mmode.dsp.demod.demod_design`'s mixer and taps, as :func:`mmode.dsp.demod.rf_to_iq`);
    IQ lines are copied; envelope lines fill ``buf_env`` only.
    """
    n_src = lines.shape[1]
    n_taps = taps.shape[0]
    for m in range(a, b):
        if mode == MODE_RF:
            re = 0.0
            im = 0.0
            centre = m * dec + half
            for k in range(n_taps):
                j = centre - k
                if 0 <= j < n_src:
                    v = taps[k] * lines[i, j].real
                    re += v * carrier[j].real
                    im += v * carrier[j].imag
            buf_iq[m] = complex(re, im)
            buf_env[m] = math.sqrt(re * re + im * im)
        elif mode == MODE_IQ:
            buf_iq[m] = lines[i, m]
            buf_env[m] = abs(lines[i, m])
        else:
            buf_env[m] = abs(lines[i, m])


@njit(nogil=True, cache=True)
def track_kernel(lines, mode, carrier, taps, dec, half, use_ncc, use_phase, state, ref_iq, ref_env, home,
                  max_lag, track_lag, f0_cycles_per_sample, keyframe_ncc, renew_min_step, sigma_pred, sigma_ncc,
                  step_sigma, buf_iq, buf_env, out, out_quality, depth_weights):
    """Follow one echo through the lines of a block; displacement in IQ samples into ``out``
    and the quality of each line's match (its correlation coefficient, 0..1) into
    ``out_quality``.

    state : float64 [ref_start, d_ref, d_prev, d_prev2, n_done, quality, step], updated in
    place (``step``: the displacement per line, exponentially smoothed); the
    reference segment (``ref_iq``/``ref_env``, length W) is the keyframe line's window at
    ``ref_start``; ``home`` is the window start of the echo at line 0 (its window now starts
    at home + d). The next displacement is predicted at constant velocity (scaled by the
    squared quality of the last match, so noise cannot build up speed); NCC searches
    ``max_lag`` around it for the first two lines, then ``track_lag`` (what acceleration can
    change in one line). The phase gives the shift modulo one wrap; of its candidates, the one
    nearest the two other estimates weighted by their precision is taken: the NCC shift
    (standard deviation ``sigma_ncc`` samples) and, from the third line on, the
    constant-velocity prediction with the smoothed step (``sigma_pred``, what the largest
    acceleration changes in one line). On finely sampled lines NCC is the sharper and decides (it follows any
    acceleration); on coarse IQ, where NCC cannot resolve half a wrap, the prediction does.
    Where the complex correlation is below ``PHASE_MIN_COHERENCE`` the phase is not used and
    the line takes that weighted mean of NCC and prediction. With ``step_sigma`` > 0
    (scanner images) the NCC maximum is chosen by :func:`_ncc_peak_near` around the
    prediction (standard deviation ``step_sigma`` samples, or the search half-range for the
    first two lines, whose velocity is not known yet), the line's quality is its NCC times
    the confidence of that choice, and the keyframe is renewed only from a match at least
    ``RENEW_MIN_CONFIDENCE`` confident. Each line whose phase is used adds its samples'
    in-phase shares of the correlation to ``depth_weights`` (W,)
    (:func:`mmode.dsp.motion._add_inphase_weights`: the depth the trace measures). The
    keyframe is renewed when the match quality falls below ``keyframe_ncc`` or the energy
    agreement of the NCC match below ``KEYFRAME_ENERGY``, on a line whose step, aliased to
    within half a wrap as the line rate sees it, is at least ``renew_min_step`` samples (clutter-filtered lines:
    the filter distorts an echo that stands still, or moves a whole number of wraps per
    line, which looks the same to it). Per line only the searched IQ samples are made
    (:func:`fill_line`). ``state`` and the buffers carry over, so a run of lines may be split into
    several calls with the same result.
    """
    n_lines = lines.shape[0]
    n = buf_env.shape[0]
    w = ref_env.shape[0]
    for i in range(n_lines):
        ref_start = int(state[0])
        d_ref = state[1]
        d_prev = state[2]
        peak = 1.0
        agreement = 1.0
        confidence = 1.0
        if use_ncc:
            if state[4] >= 2.0:  # constant velocity, trusted as far as the last match was good
                expected = d_prev + state[5] * state[5] * (d_prev - state[3]) - d_ref
                reach = track_lag
            else:
                expected = d_prev - d_ref
                reach = max_lag
            pred = int(math.floor(expected + 0.5))
            pred = min(max(pred, -ref_start), n - w - ref_start)
            lo = max(pred - reach, -ref_start)
            hi = min(pred + reach, n - w - ref_start)
            fill_line(lines, i, mode, carrier, taps, dec, half, ref_start + lo, ref_start + hi + w, buf_iq, buf_env)
            if step_sigma > 0.0:  # scanner images: the candidate likeliest where the echo is expected
                sigma = step_sigma if state[4] >= 2.0 else float(reach)
                coarse, peak, agreement, confidence = _ncc_peak_near(ref_env, buf_env, ref_start, lo, hi, expected,
                                                                     sigma)
            else:
                coarse, peak, agreement = _ncc_peak(ref_env, buf_env, ref_start, lo, hi)
            shift = coarse
            if use_phase:
                lag = int(math.floor(coarse + 0.5))
                phase, peak, depth_phase = _phase_at(ref_iq, buf_iq, ref_start + lag)
                anchor = coarse
                if state[4] >= 2.0:
                    w_pred = 1.0 / (sigma_pred * sigma_pred)
                    w_ncc = 1.0 / (sigma_ncc * sigma_ncc)
                    predicted = d_prev + state[6] - d_ref
                    anchor = (w_pred * predicted + w_ncc * coarse) / (w_pred + w_ncc)
                shift = anchor
                if peak >= PHASE_MIN_COHERENCE:
                    fine, wrap = _phase_shift(phase, depth_phase, lag, f0_cycles_per_sample)
                    shift = _unwrap_to(fine, anchor, wrap)
                    _add_inphase_weights(ref_iq, buf_iq, ref_start + lag, phase, depth_weights)
        else:
            fill_line(lines, i, mode, carrier, taps, dec, half, ref_start, ref_start + w, buf_iq, buf_env)
            phase, peak, depth_phase = _phase_at(ref_iq, buf_iq, ref_start)
            shift, _ = _phase_shift(phase, depth_phase, 0, f0_cycles_per_sample)
            _add_inphase_weights(ref_iq, buf_iq, ref_start, phase, depth_weights)
        d = d_ref + shift
        out[i] = d
        state[3] = d_prev
        state[2] = d
        if state[4] >= 1.0:  # the smoothed step, from the second line on
            state[6] += VELOCITY_SMOOTHING * ((d - d_prev) - state[6]) if state[4] >= 2.0 else d - d_prev
        state[4] += 1.0
        state[5] = min(max(peak, 0.0), 1.0)
        out_quality[i] = state[5] * confidence
        renew = not use_ncc or peak < keyframe_ncc or agreement < KEYFRAME_ENERGY
        if step_sigma > 0.0:  # never from an ambiguous match: the keyframe would hold another echo
            renew = renew and confidence >= RENEW_MIN_CONFIDENCE
        if renew_min_step > 0.0:  # the step as the filter sees it: aliased to within half a wrap
            wrap_samples = 1.0 / f0_cycles_per_sample
            step = d - d_prev
            renew = renew and abs(step - math.floor(step / wrap_samples + 0.5) * wrap_samples) >= renew_min_step
        if renew:
            start = int(math.floor(home + d + 0.5))
            start = min(max(start, 0), n - w)
            fill_line(lines, i, mode, carrier, taps, dec, half, start, start + w, buf_iq, buf_env)
            state[0] = start
            state[1] = d
            for k in range(w):
                ref_env[k] = buf_env[start + k]
                ref_iq[k] = buf_iq[start + k]
