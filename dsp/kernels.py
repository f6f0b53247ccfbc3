"""Numba kernels of the DSP chain: pure functions on arrays, GIL released.

Every kernel is ``@njit(nogil=True, cache=True)`` and writes into an output array the
caller allocates (SRAD and the persistence state work in place), so a streaming wrapper
can reuse its buffers block after block. Inputs
are C-contiguous with slow time (line index) on axis 0 and depth on axis 1. Tables (mixer,
FIR taps, row positions) are computed once by the callers in :mod:`mmode.dsp.envelope`.

Row tables: the envelope is computed only at the display rows. Row ``r`` is the output of
a FIR whose window starts at sample ``start[r]`` and is ``W`` samples long; the tap
weights for that row (already multiplied by the mixer for RF) are row ``r`` of a
``(n_rows, W)`` table. Taps that would fall outside the line are zero in the table, so
the kernels never test bounds.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Lines processed together by :func:`rf_rows` (held as samples x lines, so the innermost
#: loop runs across lines and vectorises).
LINE_CHUNK = 32

_LN2 = np.float32(math.log(2.0))
#: ``10 log10(p) = _DB_PER_NEPER * ln(p)``.
_DB_PER_NEPER = np.float32(10.0 / math.log(10.0))
#: Added to the IEEE-754 bits so the exponent field rounds the mantissa into [sqrt(1/2), sqrt(2)).
_MANTISSA_SHIFT_BITS = np.int32(0x3F800000 - 0x3F3504F3)
#: Added to every power before the log (keeps log finite for a zero envelope).
_TINY_POWER = np.float32(1e-30)


@njit(nogil=True, cache=True, fastmath=True, inline="always")
def _split_exponent(bits, exponent, mantissa_bits, m):
    """Split positive float32 values (given as their int32 bits) into ``2**e * mantissa``.

    bits, exponent, mantissa_bits : (>= m,) int32; the mantissa, read through a float32
    view of ``mantissa_bits``, lies in [sqrt(1/2), sqrt(2)). Branch-free, vectorises.
    """
    for l in range(m):
        e = ((bits[l] + _MANTISSA_SHIFT_BITS) >> 23) - np.int32(127)
        exponent[l] = e
        mantissa_bits[l] = bits[l] - (e << 23)


@njit(nogil=True, cache=True, fastmath=True, inline="always")
def _power_db(exponent, mantissa, offset_db, floor_db):
    """``clip(10 log10(2**exponent * mantissa) + offset_db, floor_db, 0)``, float32.

    ``ln(mantissa) = 2 atanh(s)``, ``s = (m-1)/(m+1)`` in [-0.172, 0.172], summed to s^9:
    absolute error below 1e-4 dB, no vector math library needed.
    """
    s = (mantissa - np.float32(1.0)) / (mantissa + np.float32(1.0))
    s2 = s * s
    ln_m = s * (np.float32(2.0) + s2 * (np.float32(2.0 / 3.0) + s2 * (np.float32(0.4) + s2 * (
        np.float32(2.0 / 7.0) + s2 * np.float32(2.0 / 9.0)))))
    d = _DB_PER_NEPER * (np.float32(exponent) * _LN2 + ln_m) + offset_db
    return min(np.float32(0.0), max(floor_db, d))


@njit(nogil=True, cache=True, fastmath=True, inline="always")
def _store_column(power, power_bits, exponent, mantissa_bits, mantissa, m, b0, r, to_db, offset_db, floor_db, out):
    """Write ``m`` powers of row ``r`` into ``out[b0:b0+m, r]`` as amplitude or dB."""
    if to_db:
        _split_exponent(power_bits, exponent, mantissa_bits, m)
        off = offset_db[r]
        for l in range(m):
            out[b0 + l, r] = _power_db(exponent[l], mantissa[l], off, floor_db)
    else:
        for l in range(m):
            out[b0 + l, r] = math.sqrt(power[l])


@njit(nogil=True, cache=True, fastmath=True)
def rf_rows(rf, tab_i, tab_q, sum_i, sum_q, start, to_db, offset_db, floor_db, out):
    """Quadrature-demodulated envelope of real RF lines at the display rows, optionally in dB.

    rf : (n, N) int16/float32 RF lines.
    tab_i, tab_q : (R, W) float32, ``2 * taps[j] * cos / -sin(2 pi f0 k / fs)`` for the
        sample ``k = start[r] + j`` of row ``r`` (zero outside the line).
    sum_i, sum_q : (R,) float32 row sums of ``tab_i`` / ``tab_q``; the line mean times
        these is subtracted, which removes DC exactly.
    start : (R,) int64 first sample of each row's window.
    to_db : False: ``out`` = envelope amplitude (units of ``rf``); True: ``out`` =
        ``clip(20 log10(envelope) + offset_db[r], floor_db, 0)``.
    offset_db : (R,) float32 gain + TGC - full-scale dB. floor_db : float32 (-dynamic range).
    out : (n, R) float32.
    """
    n, n_samples = rf.shape
    n_rows, width = tab_i.shape
    xt = np.empty((n_samples, LINE_CHUNK), np.float32)
    mean = np.empty(LINE_CHUNK, np.float32)
    acc_i = np.empty(LINE_CHUNK, np.float32)
    acc_q = np.empty(LINE_CHUNK, np.float32)
    power = np.empty(LINE_CHUNK, np.float32)
    power_bits = power.view(np.int32)
    exponent = np.empty(LINE_CHUNK, np.int32)
    mantissa_bits = np.empty(LINE_CHUNK, np.int32)
    mantissa = mantissa_bits.view(np.float32)
    inv_n = np.float32(1.0 / n_samples)
    for b0 in range(0, n, LINE_CHUNK):
        m = min(LINE_CHUNK, n - b0)
        for l in range(m):
            s = np.float32(0.0)
            for k in range(n_samples):
                v = np.float32(rf[b0 + l, k])
                xt[k, l] = v
                s += v
            mean[l] = s * inv_n
        for r in range(n_rows):
            s0 = start[r]
            for l in range(m):
                acc_i[l] = -mean[l] * sum_i[r]
                acc_q[l] = -mean[l] * sum_q[r]
            for j in range(width):
                ci = tab_i[r, j]
                cq = tab_q[r, j]
                for l in range(m):
                    v = xt[s0 + j, l]
                    acc_i[l] += v * ci
                    acc_q[l] += v * cq
            for l in range(m):
                power[l] = acc_i[l] * acc_i[l] + acc_q[l] * acc_q[l] + _TINY_POWER
            _store_column(power, power_bits, exponent, mantissa_bits, mantissa, m, b0, r, to_db, offset_db,
                          floor_db, out)


@njit(nogil=True, cache=True, fastmath=True)
def iq_rows(iq, tab, start, to_db, offset_db, floor_db, out):
    """``|FIR(IQ)|`` of complex baseband lines at the display rows, optionally in dB.

    iq : (n, N) complex64. tab : (R, W) float32 low-pass taps per row (zero outside the
    line). start : (R,) int64. to_db, offset_db, floor_db, out : as :func:`rf_rows`.
    Same blocking as :func:`rf_rows` (real and imaginary parts held as samples x lines).
    """
    n, n_samples = iq.shape
    n_rows, width = tab.shape
    xt_re = np.empty((n_samples, LINE_CHUNK), np.float32)
    xt_im = np.empty((n_samples, LINE_CHUNK), np.float32)
    acc_i = np.empty(LINE_CHUNK, np.float32)
    acc_q = np.empty(LINE_CHUNK, np.float32)
    power = np.empty(LINE_CHUNK, np.float32)
    power_bits = power.view(np.int32)
    exponent = np.empty(LINE_CHUNK, np.int32)
    mantissa_bits = np.empty(LINE_CHUNK, np.int32)
    mantissa = mantissa_bits.view(np.float32)
    for b0 in range(0, n, LINE_CHUNK):
        m = min(LINE_CHUNK, n - b0)
        for l in range(m):
            for k in range(n_samples):
                v = iq[b0 + l, k]
                xt_re[k, l] = v.real
                xt_im[k, l] = v.imag
        for r in range(n_rows):
            s0 = start[r]
            for l in range(m):
                acc_i[l] = np.float32(0.0)
                acc_q[l] = np.float32(0.0)
            for j in range(width):
                c = tab[r, j]
                for l in range(m):
                    acc_i[l] += xt_re[s0 + j, l] * c
                    acc_q[l] += xt_im[s0 + j, l] * c
            for l in range(m):
                power[l] = acc_i[l] * acc_i[l] + acc_q[l] * acc_q[l] + _TINY_POWER
            _store_column(power, power_bits, exponent, mantissa_bits, mantissa, m, b0, r, to_db, offset_db,
                          floor_db, out)


@njit(nogil=True, cache=True, fastmath=True)
def real_rows_envelope(env, tab, start, out):
    """|FIR(envelope)| at the display rows (anti-aliased decimation of detected lines).

    env : (n, N) int16/float32 envelope lines. tab, start : as :func:`iq_rows`.
    out : (n, R) float32.
    """
    n = env.shape[0]
    n_rows, width = tab.shape
    for i in range(n):
        for r in range(n_rows):
            s0 = start[r]
            acc = np.float32(0.0)
            for j in range(width):
                acc += np.float32(env[i, s0 + j]) * tab[r, j]
            out[i, r] = abs(acc)


@njit(nogil=True, cache=True, fastmath=True)
def log_compress(env, offset_db, floor_db, out):
    """``out = clip(20 log10(env) + offset_db[r], floor_db, 0)`` (fast log, error < 1e-4 dB).

    env : (n, R) float32 amplitude. offset_db : (R,) float32 gain + TGC - full-scale dB.
    floor_db : float32 lowest value (``-dynamic_range_db``). out : (n, R) float32 (may be ``env``).
    """
    n, n_rows = env.shape
    power = np.empty(n_rows, np.float32)
    power_bits = power.view(np.int32)
    exponent = np.empty(n_rows, np.int32)
    mantissa_bits = np.empty(n_rows, np.int32)
    mantissa = mantissa_bits.view(np.float32)
    for i in range(n):
        for r in range(n_rows):
            power[r] = env[i, r] * env[i, r] + _TINY_POWER
        _split_exponent(power_bits, exponent, mantissa_bits, n_rows)
        for r in range(n_rows):
            out[i, r] = _power_db(exponent[r], mantissa[r], offset_db[r], floor_db)


# -- denoising ---------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def median_depth(img, half, out):
    """Median along depth over ``2*half+1`` rows, edges replicated (scipy mode 'nearest').

    img, out : (n, R) float32, distinct arrays.
    """
    n, n_rows = img.shape
    k = 2 * half + 1
    buf = np.empty(k, np.float32)
    for i in range(n):
        for r in range(n_rows):
            for j in range(k):
                rr = min(max(r - half + j, 0), n_rows - 1)
                v = img[i, rr]
                p = j
                while p > 0 and buf[p - 1] > v:
                    buf[p] = buf[p - 1]
                    p -= 1
                buf[p] = v
            out[i, r] = buf[half]


@njit(nogil=True, cache=True, fastmath=True)
def persistence(img, alpha, state, out):
    """Causal temporal persistence ``y[i] = alpha*y[i-1] + (1-alpha)*x[i]``.

    img, out : (n, R) float32 (may be the same array). state : (R,) float32, ``y`` of the
    line before this block; updated in place to the last output line.
    """
    n, n_rows = img.shape
    b = np.float32(1.0) - alpha
    for i in range(n):
        for r in range(n_rows):
            y = alpha * state[r] + b * img[i, r]
            state[r] = y
            out[i, r] = y


#: Pixel stride of the SRAD ``q0^2`` median (odd, so it does not alias with the row count).
_SRAD_Q0_STRIDE = 7


@njit(nogil=True, cache=True, fastmath=True)
def srad(img, n_iter, dt):
    """Speckle-reducing anisotropic diffusion (Yu and Acton 2002) in place.

    img : (T, R) float64 positive intensity image (M-mode window: lines x rows).
    n_iter : iterations. dt : time step (stable for dt <= 0.25).
    Neumann (replicated) boundaries. The speckle scale ``q0^2`` is re-estimated every
    iteration as the median of the instantaneous coefficient of variation ``q^2`` over the
    window (robust: interfaces are a minority of pixels), taken on every
    ``_SRAD_Q0_STRIDE``-th pixel (the median of 1/7 of the pixels is as good and 7x cheaper).
    """
    n_t, n_r = img.shape
    q2 = np.empty((n_t, n_r))
    c = np.empty((n_t, n_r))
    nxt = np.empty((n_t, n_r))
    for _ in range(n_iter):
        for i in range(n_t):
            for r in range(n_r):
                v = img[i, r]
                d_n = img[max(i - 1, 0), r] - v
                d_s = img[min(i + 1, n_t - 1), r] - v
                d_w = img[i, max(r - 1, 0)] - v
                d_e = img[i, min(r + 1, n_r - 1)] - v
                inv = 1.0 / max(v, 1e-12)
                g2 = (d_n * d_n + d_s * d_s + d_w * d_w + d_e * d_e) * inv * inv
                lap = (d_n + d_s + d_w + d_e) * inv
                num = 0.5 * g2 - 0.0625 * lap * lap
                den = 1.0 + 0.25 * lap
                q2[i, r] = max(num / max(den * den, 1e-12), 0.0)
        q02 = max(np.median(q2.ravel()[::_SRAD_Q0_STRIDE]), 1e-12)
        for i in range(n_t):
            for r in range(n_r):
                cc = 1.0 / (1.0 + (q2[i, r] - q02) / (q02 * (1.0 + q02)))
                c[i, r] = min(max(cc, 0.0), 1.0)
        for i in range(n_t):
            for r in range(n_r):
                v = img[i, r]
                i_s = min(i + 1, n_t - 1)
                r_e = min(r + 1, n_r - 1)
                div = (
                    c[i_s, r] * (img[i_s, r] - v)
                    + c[i, r] * (img[max(i - 1, 0), r] - v)
                    + c[i, r_e] * (img[i, r_e] - v)
                    + c[i, r] * (img[i, max(r - 1, 0)] - v)
                )
                nxt[i, r] = v + 0.25 * dt * div
        img[:, :] = nxt
