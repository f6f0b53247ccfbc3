"""Envelope detection, TGC, log compression and display-row resampling (pure functions).

The real-time path is quadrature demodulation: remove the line mean (DC), mix with
``exp(-2j pi f0 t)``, low-pass with a windowed-sinc FIR and keep only the FIR outputs at the
display rows (decimation), envelope ``= 2 |IQ|``. IQ input skips the mixer (envelope
``= |IQ|``) and envelope input skips both; both still go through the same low-pass so
that rows coarser than the samples are anti-aliased, not point-picked. The FFT Hilbert
envelope (:func:`hilbert_envelope`) is the reference the tests and ``mmode bench`` compare
against.

Display rows: with ``N`` stored samples and ``R`` rows, row ``r`` is the sample
``round(r * N / R)`` (its depth is exact, :func:`row_sample_indices`); for ``N >= R`` the
low-pass cut-off is the row Nyquist frequency, so nothing between two rows is lost. Rows
within half a filter of the line ends use the taps that fall inside the line, rescaled to
unit DC gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal

from mmode.dsp import demod, kernels
from mmode.errors import DataError, UsageError, describe
from mmode.ingest.meta import AcquisitionMeta

#: Smallest number of FIR taps (odd so the filter is centred on the row's sample).
MIN_TAPS = 33


def row_sample_indices(n_samples: int, n_rows: int) -> np.ndarray:
    """Stored-sample index of each display row, ``round(r * n_samples / n_rows)``, (n_rows,) int64."""
    if n_samples <= 0 or n_rows <= 0:
        raise DataError(describe("display rows", "n_samples > 0 and n_rows > 0", (n_samples, n_rows)))
    idx = np.floor(np.arange(n_rows) * (n_samples / n_rows) + 0.5).astype(np.int64)
    return np.minimum(idx, n_samples - 1)


def row_depths_m(meta: AcquisitionMeta, n_samples: int, n_rows: int) -> np.ndarray:
    """Depth in metres of each display row, (n_rows,) float64."""
    return np.asarray(meta.depth_m(row_sample_indices(n_samples, n_rows)), dtype=np.float64)


def lowpass_taps(meta: AcquisitionMeta, n_samples: int, n_rows: int) -> np.ndarray:
    """Low-pass FIR (Hamming windowed sinc, unit DC gain, odd length) used before the rows.

    Cut-off :func:`mmode.dsp.demod.baseband_cutoff_hz`: the row Nyquist ``fs/(2 D)`` with
    ``D = n_samples / n_rows`` (when ``D > 1``), and for RF at most ``f0`` and ``fs/2 - f0``
    so that the mixer's image is rejected (a constant DC is removed exactly by the mean). IQ
    or envelope input without decimation (``D <= 1``) gets the identity filter.
    Length ``max(33, 4 ceil(D) + 1)``. Returns the taps, (n_taps,) float64, symmetric
    (zero phase about the centre tap, so row depths are not delayed).
    """
    decim = n_samples / n_rows
    cutoff_hz = demod.baseband_cutoff_hz(meta.fs_hz, meta.f0_hz, decim, rf=meta.kind == "rf")
    if not math.isfinite(cutoff_hz):
        return np.ones(1)
    n_taps = max(MIN_TAPS, 4 * math.ceil(decim) + 1)
    return scipy.signal.firwin(n_taps, cutoff_hz, fs=meta.fs_hz, window="hamming")


@dataclass(frozen=True)
class EnvelopeTables:
    """Everything the envelope kernels need for one (meta, n_samples, n_rows); see kernels.py.

    kind : "rf", "iq" or "envelope". tab_i / tab_q : (R, W) float32 per-row FIR weights
    (times the mixer for RF; tab_q is unused otherwise). sum_i / sum_q : (R,) row sums.
    start : (R,) int64 first sample of each row's window. n_samples : line length.
    """

    kind: str
    n_samples: int
    tab_i: np.ndarray
    tab_q: np.ndarray
    sum_i: np.ndarray
    sum_q: np.ndarray
    start: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.start.shape[0])


def envelope_tables(meta: AcquisitionMeta, n_samples: int, n_rows: int) -> EnvelopeTables:
    """Precompute mixer and FIR tables for :func:`envelope_rows` (done once, in prepare)."""
    idx = row_sample_indices(n_samples, n_rows)
    taps = lowpass_taps(meta, n_samples, n_rows)
    n_taps = taps.shape[0]
    half = n_taps // 2
    width = min(n_taps, n_samples)
    start = np.clip(idx - half, 0, n_samples - width).astype(np.int64)
    k = start[:, None] + np.arange(width)[None, :]  # (R, W) sample index of each table entry
    tap_index = k - (idx[:, None] - half)  # which tap lands on sample k
    valid = (tap_index >= 0) & (tap_index < n_taps)
    weights = np.where(valid, taps[np.clip(tap_index, 0, n_taps - 1)], 0.0)
    # rows near the ends of the line lose the taps that fall outside it: rescale what is left
    # to unit DC gain (unscaled, a constant-amplitude echo read 4 to 6 dB low at row 0 of 256
    # rows; the one-sided filter there still lets some of the 2 f0 image through, +-1.5 dB)
    weights /= weights.sum(axis=1, keepdims=True)
    if meta.kind == "rf":
        carrier = demod.mixer(k, meta.fs_hz, meta.f0_hz)
        tab_i = 2 * weights * carrier.real
        tab_q = 2 * weights * carrier.imag
    else:
        tab_i = weights
        tab_q = np.zeros_like(weights)
    tab_i = np.ascontiguousarray(tab_i, dtype=np.float32)
    tab_q = np.ascontiguousarray(tab_q, dtype=np.float32)
    return EnvelopeTables(
        kind=meta.kind,
        n_samples=int(n_samples),
        tab_i=tab_i,
        tab_q=tab_q,
        sum_i=tab_i.sum(axis=1).astype(np.float32),
        sum_q=tab_q.sum(axis=1).astype(np.float32),
        start=start,
    )


def check_block_lines(
    lines: np.ndarray, kind: str, n_samples: int, source: str = "block", first_line: int = 0
) -> np.ndarray:
    """Validate a block of lines for the envelope kernels; returns it C-contiguous.

    Raises :class:`DataError` for a non-2-D array, the wrong line length, a dtype that does
    not fit ``kind`` (int16/float32 for rf and envelope, complex64 for iq) or NaN/Inf (the
    message gives the line number ``first_line + index in the block``). float64 and
    complex128 are converted to float32 / complex64.
    """
    if not isinstance(lines, np.ndarray) or lines.ndim != 2:
        raise DataError(describe(source, "lines of shape (n_lines, n_samples)", getattr(lines, "shape", type(lines))))
    if lines.shape[1] != n_samples:
        raise DataError(describe(source, f"{n_samples} samples per line", lines.shape[1]))
    allowed = ("complex64", "complex128") if kind == "iq" else ("int16", "float32", "float64")
    if lines.dtype.name not in allowed:
        raise DataError(describe(source, f"dtype {' or '.join(allowed)} for kind {kind!r}", lines.dtype))
    if lines.dtype.kind in "fc" and lines.size and not np.isfinite(lines).all():
        bad = int(np.flatnonzero(~np.isfinite(lines).all(axis=1))[0])
        raise DataError(describe(source, "finite samples", f"NaN or Inf in line {first_line + bad}"))
    if lines.dtype == np.float64:
        return np.ascontiguousarray(lines, dtype=np.float32)
    if lines.dtype == np.complex128:
        return np.ascontiguousarray(lines, dtype=np.complex64)
    return np.ascontiguousarray(lines)


def envelope_rows(
    lines: np.ndarray, tables: EnvelopeTables, out: np.ndarray | None = None, first_line: int = 0,
    *, check: bool = True,
) -> np.ndarray:
    """Envelope amplitude at the display rows, (n_lines, n_rows) float32, input units.

    lines : (n_lines, n_samples) int16/float32 (rf, envelope) or complex64 (iq), checked
    by :func:`check_block_lines` (``first_line`` numbers the lines in its messages) unless
    ``check`` is False (the caller already did). ``out`` may be a preallocated
    (n_lines, n_rows) float32.
    """
    if check:
        lines = check_block_lines(lines, tables.kind, tables.n_samples, first_line=first_line)
    if out is None:
        out = np.empty((lines.shape[0], tables.n_rows), np.float32)
    if tables.kind == "rf":
        kernels.rf_rows(lines, tables.tab_i, tables.tab_q, tables.sum_i, tables.sum_q, tables.start,
                        False, np.zeros(tables.n_rows, np.float32), np.float32(0.0), out)
    elif tables.kind == "iq":
        kernels.iq_rows(lines, tables.tab_i, tables.start, False, np.zeros(tables.n_rows, np.float32),
                        np.float32(0.0), out)
    else:
        kernels.real_rows_envelope(lines, tables.tab_i, tables.start, out)
    return out


def display_rows_db(
    lines: np.ndarray, tables: EnvelopeTables, offset_db: np.ndarray, dynamic_range_db: float,
    out: np.ndarray | None = None, first_line: int = 0, *, check: bool = True,
) -> np.ndarray:
    """Envelope at the display rows, log-compressed: ``clip(20 log10(env) + offset_db, -DR, 0)``.

    lines : as :func:`envelope_rows` (``check`` likewise). offset_db : (n_rows,) gain + TGC
    minus the level shown as 0 dB (``20 log10(full_scale)`` for integer samples, see
    :mod:`mmode.dsp.levels`). Returns (n_lines, n_rows) float32 dB (``out`` if given). For RF
    and IQ the log is fused into the envelope kernel (one pass, the real-time path).
    """
    if check:
        lines = check_block_lines(lines, tables.kind, tables.n_samples, first_line=first_line)
    if out is None:
        out = np.empty((lines.shape[0], tables.n_rows), np.float32)
    offset = np.ascontiguousarray(np.broadcast_to(np.asarray(offset_db, dtype=np.float32), (tables.n_rows,)))
    if tables.kind == "rf":
        kernels.rf_rows(lines, tables.tab_i, tables.tab_q, tables.sum_i, tables.sum_q, tables.start,
                        True, offset, np.float32(-dynamic_range_db), out)
        return out
    if tables.kind == "iq":
        kernels.iq_rows(lines, tables.tab_i, tables.start, True, offset, np.float32(-dynamic_range_db), out)
        return out
    envelope_rows(lines, tables, out=out, check=False)
    return log_compress_db(out, offset, dynamic_range_db, out=out)


def hilbert_envelope(rf: np.ndarray) -> np.ndarray:
    """Reference envelope ``|scipy.signal.hilbert(rf - mean)|`` along depth, (n, N) float64."""
    x = np.asarray(rf, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    return np.abs(scipy.signal.hilbert(x, axis=-1))


def tgc_db(depths_m: np.ndarray, points: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Time-gain compensation in dB at ``depths_m``: piecewise-linear through ``points``.

    points : ((depth_m, gain_db), ...) in increasing depth; constant beyond the first and
    last point; no points means 0 dB everywhere. Returns float64 of the shape of depths_m.
    """
    depths_m = np.asarray(depths_m, dtype=np.float64)
    if not points:
        return np.zeros_like(depths_m)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise UsageError(describe("tgc", "((depth_m, gain_db), ...) finite pairs", points))
    if np.any(np.diff(pts[:, 0]) <= 0):
        raise UsageError(describe("tgc", "depths strictly increasing", list(pts[:, 0])))
    return np.interp(depths_m, pts[:, 0], pts[:, 1])


def log_compress_db(
    env: np.ndarray, offset_db: np.ndarray | float, dynamic_range_db: float, out: np.ndarray | None = None
) -> np.ndarray:
    """``clip(20 log10(env) + offset_db, -dynamic_range_db, 0)`` as float32 (n, R).

    offset_db : gain + TGC (per row, (R,)) minus the level shown as 0 dB.
    """
    env = np.ascontiguousarray(env, dtype=np.float32)
    offset = np.broadcast_to(np.asarray(offset_db, dtype=np.float32), (env.shape[1],))
    offset = np.ascontiguousarray(offset)
    if out is None:
        out = np.empty_like(env)
    kernels.log_compress(env, offset, np.float32(-dynamic_range_db), out)
    return out


def reference_display_db(
    rf: np.ndarray, row_idx: np.ndarray, full_scale_amplitude: float, dynamic_range_db: float
) -> np.ndarray:
    """scipy/numpy reference of envelope+log+decimate: Hilbert envelope picked at the rows.

    What ``mmode bench`` times against the numba path (no DC removal, the leanest fair
    equivalent), (n, R) float32.
    """
    env = np.abs(scipy.signal.hilbert(rf, axis=-1))[:, row_idx]
    db = 20 * np.log10(env / full_scale_amplitude + 1e-30)
    return np.clip(db, -dynamic_range_db, 0).astype(np.float32)
