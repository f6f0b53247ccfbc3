"""Regenerate the motion evaluation tables of ``docs/motion.md``.

Usage::

    python tools/motion_table.py                      # the main table (4 scenarios x 2 x 3 x 3)
    python tools/motion_table.py --scenarios cardiac_irregular --prf 100 --seconds 10 --snr 30
    python tools/motion_table.py --scenarios sinusoid --prf 400 --seconds 3 --fs 16e6 --depth 0.04
    python tools/motion_table.py --scenarios moving_phantom --prf 350 --rates 96 144 192 --iq-fs 1e6 --seconds 4

Each case is simulated in memory (``mmode.ingest.simulator.simulate``, seed 1 by default)
and scored exactly as ``mmode evaluate --task motion`` scores a file written by ``mmode
simulate`` with the same parameters (:func:`mmode.app.cmd_evaluate.evaluate_motion`, block
256 lines, echo chosen automatically), against

- the **file truth**: ``/truth/displacement_m`` linearly interpolated at the tracked depth
  (what ``mmode evaluate`` reports; its grid, every 1 mm plus the line-0 depth of every kink
  of the displacement profile, makes that exact but within 1 um below a fold), and
- the **exact truth**: the simulator scene's Lagrangian displacement of the tissue found at
  the tracked depth in line 0 (``_displacement_since_line0`` at that one depth), a check of
  the file truth independent of its grid.

Printed as markdown rows: scenario, lines/s, SNR, tracked depth (mm), peak true speed over
the aliasing velocity, then per estimator ``RMSE um / bias um / failure %`` (file truth;
failure = ``|error| > c / (4 f0)``) and the exact-truth RMSE (um) and failure rate. ``--within 5`` also
prints, per estimator, the failure rate (exact truth) over the lines reached from the previous
one at a true speed of at most 5 x the aliasing velocity, and the share of lines that is.
"""

from __future__ import annotations

import argparse
import inspect
import itertools

import numpy as np

from mmode.app.cmd_evaluate import evaluate_motion
from mmode.errors import DataError
from mmode.ingest.recording import Recording
from mmode.ingest.simulator import _displacement_since_line0, _setup, simulate

SCENARIOS = ("cardiac_regular", "cardiac_irregular", "sinusoid", "lung_sliding")
ESTIMATORS = ("combined", "kasai", "ncc")


def _um(x_m: float) -> str:
    """Micrometres with one decimal, or millimetres from 1 mm on."""
    return f"{x_m * 1e3:.1f} mm" if abs(x_m) >= 999.95e-6 else f"{x_m * 1e6:.1f}"


def _signed_um(x_m: float) -> str:
    return ("+" if x_m >= 0 else "-") + _um(abs(x_m))


def run_case(scenario: str, prf_hz: float, snr_db: float, seconds: float, seed: int, estimators, fs_hz=None,
             depth_m=None, track_depth_m=None, within=None, iq_fs_hz=None, rate_per_min=None) -> dict:
    """Score ``estimators`` on one simulated recording; returns a dict of per-estimator results.

    Each result is ``evaluate_motion``'s dict plus ``exact_rmse_m``, ``exact_failure_rate``
    and, with ``within``, ``within_failure_rate`` (exact truth, lines up to ``within`` x the
    aliasing velocity).
    """
    sim, scene = simulate_with_scene(scenario, seconds=seconds, prf_hz=prf_hz, fs_hz=fs_hz, depth_m=depth_m,
                                     snr_db=snr_db, seed=seed, iq_fs_hz=iq_fs_hz, rate_per_min=rate_per_min)
    rec = Recording(f"{scenario}@{prf_hz:g}", sim.meta, sim.lines.shape, sim.lines.dtype,
                    lambda a, b: sim.lines[a:b], truth_fn=lambda: sim.truth)
    out = {}
    for est in estimators:
        r = evaluate_motion(rec, est, track_depth_m)
        trace = _trace(rec, est, track_depth_m)
        exact = _displacement_since_line0(scene, np.array([r["depth_m"]]), sim.timestamps_s)[:, 0]
        err = trace - exact
        fail = np.abs(err) > r["failure_threshold_m"]
        r["exact_rmse_m"] = float(np.sqrt(np.mean(err**2)))
        r["exact_failure_rate"] = float(np.mean(fail))
        if within is not None:
            speed = np.abs(np.diff(exact, prepend=exact[0])) * prf_hz
            keep = speed <= within * r["nyquist_velocity_m_s"]
            r["within_fraction"] = float(np.mean(keep))
            r["within_failure_rate"] = float(np.mean(fail[keep])) if keep.any() else float("nan")
        out[est] = r
    return out


def simulate_with_scene(scenario: str, **kw):
    """``simulate(scenario, **kw)`` and the scene it rendered.

    The scene is rebuilt by ``_setup`` from exactly the arguments ``simulate`` received, its
    own defaults included (read from its signature, not copied here), less ``seconds``: if
    ``simulate`` changes a default, the exact truth follows; if it gains an argument that
    ``_setup`` lacks, this fails instead of scoring against another scene.
    """
    bound = inspect.signature(simulate).bind(scenario, **kw)
    bound.apply_defaults()
    setup_kw = dict(bound.arguments)
    del setup_kw["seconds"], setup_kw["iq_fs_hz"]  # IQ is demodulated from the scene's RF
    return simulate(scenario, **kw), _setup(**setup_kw).renderer.scene


def _trace(rec: Recording, estimator: str, track_depth_m) -> np.ndarray:
    """The tracked displacement (n_lines,) metres, as ``evaluate_motion`` computes it."""
    from mmode.dsp.tracker import MotionTracker

    tracker = MotionTracker(estimator=estimator, track_depth_m=track_depth_m)
    tracker.prepare(rec.meta, rec.n_samples)
    parts = [tracker.process(b) for b in rec.blocks(256)]
    parts.append(tracker.flush())
    return np.concatenate([p.displacement_m for p in parts])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    p.add_argument("--prf", nargs="+", type=float, default=[1000.0, 300.0])
    p.add_argument("--snr", nargs="+", type=float, default=[30.0, 20.0, 10.0])
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fs", type=float, default=None, help="RF sample rate (default: the scenario's probe)")
    p.add_argument("--depth", type=float, default=None, help="view depth, m (default: the scenario's)")
    p.add_argument("--track-depth", type=float, default=None)
    p.add_argument("--within", type=float, default=None, help="also the failure rate up to this x v_Nyq")
    p.add_argument("--iq-fs", type=float, default=None, help="store IQ at this complex rate, as a scanner does")
    p.add_argument("--rates", nargs="+", type=float, default=[None],
                   help="the scenario's main rhythm, per minute (default: the scenario's)")
    args = p.parse_args()
    head = "| scenario | lines/s | SNR dB | echo depth mm | peak v / v_Nyq | " + " | ".join(args.estimators)
    head += " | exact truth: RMSE um (failure %), " + " / ".join(args.estimators)
    if args.within is not None:
        head += f" | failure % within {args.within:g} x v_Nyq, share of lines kept"
    print(head + " |")
    print("|---|---:|---:|---:|---:|" + "---|" * len(args.estimators) + "---:|" + ("---|" if args.within is not None else ""))
    for scenario, rate, prf, snr in itertools.product(args.scenarios, args.rates, args.prf, args.snr):
        name = scenario if rate is None else f"{scenario} {rate:g}/min"
        try:
            res = run_case(scenario, prf, snr, args.seconds, args.seed, args.estimators, args.fs, args.depth,
                           args.track_depth, args.within, args.iq_fs, rate)
        except DataError as exc:  # e.g. the tracker found no moving echo: say so in the row
            print(f"| {name} | {prf:g} | {snr:g} | - | - | {exc} |", flush=True)
            continue
        first = res[args.estimators[0]]
        cells = [
            f"{_um(r['rmse_m'])} / {_signed_um(r['bias_m'])} / {100 * r['failure_rate']:.1f}" for r in res.values()
        ]
        exact = " / ".join(f"{_um(r['exact_rmse_m'])} ({100 * r['exact_failure_rate']:.1f} %)" for r in res.values())
        row = (f"| {name} | {prf:g} | {snr:g} | {first['depth_m'] * 1e3:.1f} | "
               f"{first['peak_truth_speed_m_s'] / first['nyquist_velocity_m_s']:.2f} | " + " | ".join(cells)
               + f" | {exact}")
        if args.within is not None:
            row += " | " + " / ".join(
                f"{100 * r['within_failure_rate']:.1f} % ({100 * r['within_fraction']:.0f} %)" for r in res.values()
            )
        print(row + " |", flush=True)


if __name__ == "__main__":
    main()
