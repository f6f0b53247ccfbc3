"""The motion traces a stream carries: the values of ``--motion`` (process, monitor, gui) and
how "auto" is decided. No heavy imports: the command-line parsers read these constants."""

from __future__ import annotations

#: "classic" (the tracker's trace), "network" (the learned one; the classic tracker still runs
#: to choose the echo it follows), "both", or "auto" (:func:`resolve`).
MOTION_MODES = ("auto", "classic", "network", "both")
#: Highest line rate at which "auto" runs the learned trace beside the classic one. Measured
#: on the 2-core machine (docs/models.md): at 5 kHz x 2048 samples both traces kept the
#: latency p99 at 8.5-14.5 ms (budget 30 ms) with 0 lines dropped; at 20 kHz the network costs
#: 17 ms per 10 ms block and 2.1 % of the lines were dropped.
NETWORK_AUTO_MAX_RATE_HZ = 5000.0


def resolve(mode: str, prf_hz: float) -> str:
    """The traces of a stream at ``prf_hz`` lines/s: ``mode``, with "auto" made "both" up to
    :data:`NETWORK_AUTO_MAX_RATE_HZ`, else "classic"."""
    if mode != "auto":
        return mode
    return "both" if prf_hz <= NETWORK_AUTO_MAX_RATE_HZ else "classic"
