"""Clutter (wall) filter along slow time: removes the stationary part of IQ lines.

Stationary echoes (a probe's ring-down, reverberations of the set-up, a chest wall that does
not move) keep the same complex value at a depth from line to line: their slow-time
spectrum sits at 0 Hz. An echo moving at ``v`` m/s rotates its phase at the Doppler
frequency ``2 v f0 / c`` (Hz). A high-pass filter along slow time, applied to each depth
sample independently, therefore keeps what moves faster than its cut-off velocity and
removes what does not, as a scanner's wall filter does for Doppler and tissue-motion modes
(Jensen, *Estimation of blood velocities using ultrasound*, 1996, ch. 7).

Here: a Butterworth high-pass of order ``ORDER`` (2: -12 dB per octave below the cut-off,
no ringing worth the name) with the cut-off set as a velocity, ``CUTOFF_M_S`` (2 mm/s:
6.5 Hz at 2.5 MHz, 19 Hz at 7.5 MHz). Echoes slower than that over a second move by
less than 2 mm, i.e. by about one pulse length: they are clutter for the purpose of
finding the moving echo. The filter is causal and streaming (:class:`WallFilter` carries
its state across blocks, so a stream cut into blocks gives the same output as when
filtered whole), and it starts in the steady state of the stationary echoes, estimated as
the mean of the first lines at each depth: they are removed from the first line on, and a
moving echo is not (the first line of a stream has no past to filter against).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from mmode.errors import DataError, describe

#: Order of the Butterworth high-pass.
ORDER = 2
#: Cut-off velocity, m/s: slower echoes are treated as clutter.
CUTOFF_M_S = 2e-3
#: The filter is settled this many time constants of its slowest decay after its start:
#: 5 % of a stationary echo that drifted since the state it started from is left.
SETTLE_TIME_CONSTANTS = 3.0


def cutoff_hz(f0_hz: float, c_m_s: float, cutoff_m_s: float = CUTOFF_M_S) -> float:
    """Doppler frequency (Hz) of an echo moving at ``cutoff_m_s``: ``2 v f0 / c``."""
    return 2.0 * cutoff_m_s * f0_hz / c_m_s


def settle_lines(prf_hz: float, f0_hz: float, c_m_s: float, cutoff_m_s: float = CUTOFF_M_S) -> int:
    """Lines at ``prf_hz`` the filter needs from its start to settle: ``SETTLE_TIME_CONSTANTS``
    of its slowest decay (the Butterworth poles' damping 1/sqrt(2))."""
    fc = cutoff_hz(f0_hz, c_m_s, cutoff_m_s)
    return int(math.ceil(SETTLE_TIME_CONSTANTS * prf_hz / (2.0 * math.pi * fc / math.sqrt(2.0))))


def design(prf_hz: float, f0_hz: float, c_m_s: float, cutoff_m_s: float = CUTOFF_M_S) -> tuple[np.ndarray, np.ndarray]:
    """Butterworth high-pass ``(b, a)`` along slow time at line rate ``prf_hz`` with the
    cut-off velocity ``cutoff_m_s`` for echoes demodulated at ``f0_hz``.

    Raises :class:`DataError` when the cut-off is not below half the line rate (the line
    rate is too low to tell that velocity from standing still).
    """
    fc = cutoff_hz(f0_hz, c_m_s, cutoff_m_s)
    if not (math.isfinite(fc) and 0.0 < fc < 0.5 * prf_hz):
        raise DataError(describe("clutter filter", f"a cut-off below half the line rate ({prf_hz / 2:g} Hz)",
                                 f"{fc:g} Hz for {cutoff_m_s * 1e3:g} mm/s at {f0_hz / 1e6:g} MHz"))
    b, a = signal.butter(ORDER, fc, btype="highpass", fs=prf_hz)
    return b, a


def wall_filter(iq: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """High-pass every depth sample of lines held in memory, ``iq`` (n_lines, n_samples)
    complex, along slow time (axis 0), backwards in time; complex64 of the same shape.

    Run from the last line to the first, the filter has settled by the first lines, which a
    stream's causal filter has not (it has no past there, and a stationary echo that
    drifted away from where the filter assumed it still shows for a few time constants);
    it is the last lines that are unsettled instead. It starts in the steady state of the
    lines' mean at each depth (the stationary echoes, :meth:`WallFilter.process`). Its
    phase response is the conjugate of the causal filter's.
    """
    iq = np.asarray(iq)
    if iq.ndim != 2 or iq.shape[0] < 1:
        raise DataError(describe("clutter filter", "lines of shape (n_lines >= 1, n_samples)", iq.shape))
    return WallFilter(b, a).process(iq[::-1], stationary=iq.mean(axis=0))[::-1].copy()


class WallFilter:
    """Streaming :func:`wall_filter`: ``process(block)`` per block of lines, state carried."""

    def __init__(self, b: np.ndarray, a: np.ndarray) -> None:
        self.b = np.asarray(b, dtype=np.float64)
        self.a = np.asarray(a, dtype=np.float64)
        self._zi_unit = signal.lfilter_zi(self.b, self.a)  # (order,) steady state for a unit step
        self._state: np.ndarray | None = None

    def process(self, iq: np.ndarray, stationary: np.ndarray | None = None) -> np.ndarray:
        """Filtered lines (n, n_samples) complex64 of the next ``n`` lines of the stream.

        The first call starts the filter in the steady state of ``stationary`` (n_samples,),
        the stationary echo at each depth, as if it had been there forever: it is removed
        from the first line on, and an echo moving at the first line passes at once (a
        switched-on Doppler tone, its transient small when it is well above the cut-off).
        Without it, the first line is taken as stationary: a moving echo then starts at zero.
        """
        iq = np.asarray(iq)
        if iq.ndim != 2:
            raise DataError(describe("clutter filter", "lines of shape (n_lines, n_samples)", iq.shape))
        if iq.shape[0] == 0:
            return np.zeros(iq.shape, np.complex64)
        x = iq.astype(np.complex128)
        if self._state is None:
            start = x[0] if stationary is None else np.asarray(stationary, dtype=np.complex128)
            self._state = self._zi_unit[:, None] * start[None, :]
        y, self._state = signal.lfilter(self.b, self.a, x, axis=0, zi=self._state)
        return y.astype(np.complex64)
