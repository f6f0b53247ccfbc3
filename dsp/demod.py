"""Quadrature demodulation of RF lines: one mixer and one low-pass rule for every stage.

RF is moved to complex baseband by mixing with ``exp(-2j pi f0 k / fs)`` (:func:`mixer`)
and low-passed with a Hamming windowed sinc whose cut-off :func:`baseband_cutoff_hz` sets:
the output's Nyquist frequency after decimation, and for RF at most ``f0`` and
``fs/2 - f0``, midway to the mixer's image (which aliases to ``fs - 2 f0`` when
``fs < 4 f0``). Three stages use it, each evaluating only what it needs:

- the display (:func:`mmode.dsp.envelope.envelope_tables`): mixer x low-pass folded into
  one table per display row, evaluated by the numba row kernels;
- the streaming tracker (:mod:`mmode.dsp.track_kernel`): :func:`demod_design`'s mixer and
  taps, evaluated at the IQ samples around the tracked echo only;
- the motion estimators and the motion network's input: :func:`rf_to_iq` / :func:`to_iq`,
  whole lines.

The filter lengths differ by use (the display's cost grows with its taps; IQ samples must
sit on RF samples, so the tracker's delay is a multiple of the decimation): each caller's
docstring says its rule. Phase convention: a scatterer moving ``d`` metres away from the
probe turns the baseband phase by ``-4 pi f0 d / c`` (:mod:`mmode.dsp.motion`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from mmode.errors import DataError, describe
from mmode.ingest.meta import AcquisitionMeta


def mixer(sample_index: np.ndarray, fs_hz: float, f0_hz: float) -> np.ndarray:
    """``exp(-2j pi f0 k / fs)`` at sample indices ``k`` (any shape), complex128."""
    return np.exp(-2j * np.pi * f0_hz / fs_hz * np.asarray(sample_index, dtype=np.float64))


def baseband_cutoff_hz(fs_hz: float, f0_hz: float, decimation: float, rf: bool) -> float:
    """Low-pass cut-off before keeping every ``decimation``-th sample (may be fractional: the
    display's rows), Hz: ``fs / (2 decimation)`` when ``decimation > 1`` (inf otherwise), and
    for RF at most ``f0`` (up to 100 % fractional bandwidth passes) and ``fs/2 - f0`` (midway
    to the mixer's image below ``fs = 4 f0``)."""
    cutoff_hz = fs_hz / (2.0 * decimation) if decimation > 1 else math.inf
    if rf:
        cutoff_hz = min(cutoff_hz, f0_hz, fs_hz / 2.0 - f0_hz)
    return cutoff_hz


def iq_decimation(fs_hz: float, f0_hz: float) -> int:
    """Decimation factor for RF -> IQ: complex output rate about ``2*f0`` (at least 1)."""
    return max(1, int(fs_hz // (2.0 * f0_hz)))


def rf_to_iq(rf: np.ndarray, fs_hz: float, f0_hz: float, decimation: int | None = None) -> np.ndarray:
    """Quadrature demodulation of RF lines: mix with ``exp(-2j*pi*f0*k/fs)``, low-pass, decimate.

    The whole-line form of the demodulation, for the motion estimators and the motion
    network's input; the display (:mod:`mmode.dsp.envelope`) and the streaming tracker
    (:mod:`mmode.dsp.track_kernel`) evaluate the same mixer and low-pass only at the samples
    they need.

    Parameters
    ----------
    rf : (n_lines, n_samples) real RF, any integer or float dtype.
    fs_hz, f0_hz : RF sample rate and centre frequency, Hz.
    decimation : output keeps every ``decimation``-th sample; default :func:`iq_decimation`.

    Returns
    -------
    (n_lines, ceil(n_samples / decimation)) complex64; output sample ``m`` lies at RF sample
    ``m * decimation`` (the FIR delay is compensated). Low-pass cut-off
    ``min(fs/(2*decimation), f0, fs/2 - f0)``: up to 100 % fractional bandwidth passes, and
    below ``fs = 4*f0`` the mixer's image at ``fs - 2*f0`` is rejected (see
    :func:`demod_design`). RF needs ``fs > 2*f0`` (else :class:`DataError`).
    """
    rf = np.asarray(rf)
    if rf.ndim != 2 or rf.dtype.kind not in "iuf":
        raise DataError(describe("rf_to_iq", "real RF lines of shape (n_lines, n_samples)", f"{rf.dtype} {rf.shape}"))
    if not (math.isfinite(fs_hz) and math.isfinite(f0_hz) and 0 < 2.0 * f0_hz < fs_hz):
        raise DataError(describe("rf_to_iq", "RF with fs_hz > 2 * f0_hz > 0", f"fs_hz={fs_hz:g}, f0_hz={f0_hz:g}"))
    dec = iq_decimation(fs_hz, f0_hz) if decimation is None else int(decimation)
    if dec < 1:
        raise DataError(describe("rf_to_iq", "decimation >= 1", dec))
    n = rf.shape[1]
    carrier, taps, half = demod_design(n, fs_hz, f0_hz, dec)
    full = signal.upfirdn(taps, rf.astype(np.float32) * carrier, up=1, down=dec, axis=1)
    n_out = -(-n // dec)
    return np.ascontiguousarray(full[:, half // dec : half // dec + n_out], dtype=np.complex64)


def demod_design(n_samples: int, fs_hz: float, f0_hz: float, dec: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Mixer ``exp(-2j pi f0 k / fs)`` (n_samples,) complex64, low-pass taps (2*half+1,) float32, half.

    Mixing moves the echo to 0 Hz and its negative-frequency half to ``-2 f0``, which
    aliases to ``fs - 2 f0`` when ``fs < 4 f0`` (1.2 f0 at the sample data's fs = 3.2 f0).
    Cut-off ``min(fs/(2 dec), f0, fs/2 - f0)``: the output band, at most f0, and midway to
    that image. ``half`` (the FIR delay, a multiple of ``dec`` so IQ sample ``m`` lies on RF
    sample ``m * dec``) is at least ``4 dec`` and grows as the image comes closer, so the
    Hamming transition stays narrower than the gap. The taps are doubled so ``|IQ|`` is
    the RF amplitude. Needs ``fs > 2 f0`` (checked by :func:`rf_to_iq`; AcquisitionMeta
    refuses RF metadata without it).
    """
    carrier = mixer(np.arange(n_samples), fs_hz, f0_hz).astype(np.complex64)
    half = dec * max(4, math.ceil(24.0 * f0_hz / (fs_hz - 2.0 * f0_hz) / dec))
    cutoff_hz = baseband_cutoff_hz(fs_hz, f0_hz, dec, rf=True)
    taps = (signal.firwin(2 * half + 1, cutoff_hz, fs=fs_hz) * 2.0).astype(np.float32)
    return carrier, taps, half


def to_iq(lines: np.ndarray, meta: AcquisitionMeta) -> tuple[np.ndarray, float, int]:
    """IQ lines for the motion estimators from RF or IQ input.

    Returns ``(iq, iq_fs_hz, stride)``: complex64 (n_lines, n_iq), the complex sample rate,
    and the number of stored samples per IQ sample (IQ sample ``m`` is stored sample
    ``m * stride``). Envelope data carry no phase: :class:`DataError`.
    """
    if meta.kind == "iq":
        return np.ascontiguousarray(lines, dtype=np.complex64), meta.fs_hz, 1
    if meta.kind == "rf":
        dec = iq_decimation(meta.fs_hz, meta.f0_hz)
        return rf_to_iq(lines, meta.fs_hz, meta.f0_hz, dec), meta.fs_hz / dec, dec
    raise DataError(describe(meta.source, "kind 'rf' or 'iq' for phase-based motion estimation", repr(meta.kind)))
