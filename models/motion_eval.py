"""The integrated-trace table of the motion networks beside the classic trackers.

Each cell is :data:`RECORDINGS_PER_CELL` simulated recordings (``cardiac_regular``; seeds
from :data:`mmode.models.motion_data.EVAL_SEED_OFFSET`, never in a training, validation or
test split) at a line rate, SNR and sampling (RF, or IQ stored at 1 MHz as a scanner does). The
classic combined tracker chooses the echo (as in the product); the network student and
teacher (:class:`~mmode.models.motion_stream.NetworkTracker`) follow it from line 0, and
naive Kasai (lag-one phase between consecutive lines, integrated) is placed on it, and so is
the network tracker without its network (:class:`PhaseOnlyTracker`: what the network adds
is the difference between the two). Every
trace is scored as the RMSE of the *integrated* displacement against the exact simulator
truth (the scene's Lagrangian displacement of the tissue at the tracked depth in line 0,
``_displacement_since_line0``), so drift counts, and as the share of lines off by more than a
quarter wavelength ("slips"); a cell pools the lines of its recordings (:func:`pool_recordings`).

On the NTNU phantom (real GE IQ, ``../shared/data/ntnu_phantom``) there is no truth: the
traces are compared with an independent Doppler estimate built here (30 Hz zero-phase
Butterworth high-pass along slow time, lag-one phase summed over a band at the tracked
depth, unwrapped over time and integrated).

``python -m mmode.models.motion_eval [--out table.json] [--card-dir DIR] [--seed-offset N]``;
``--card-dir`` writes the table into the motion cards of DIR (``metrics.trace_table``);
``--seed-offset`` scores another set of recordings (a check on seeds the table never saw).
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
from pathlib import Path

import numpy as np

from mmode.models.motion_data import EVAL_SEED_OFFSET

RATES_HZ = (100.0, 350.0, 1000.0, 5000.0)
SNRS_DB = (30.0, 10.0)
SAMPLINGS = ("rf", "iq")
#: Coarse IQ of the table: the complex rate a scanner stores along depth (NTNU's is 0.95 MHz).
COARSE_IQ_FS_HZ = 1.0e6
SCENARIO = "cardiac_regular"
MODELS = ("motion_keyframe_student", "motion_keyframe_teacher")
#: Seconds per recording: at least three heartbeats (70/min).
SECONDS = 3.0
#: Recordings per cell. A trace is scored at the depth it names; in a wall straining by tens
#: of percent a few um of that depth, set by one recording's speckle, are worth about as much
#: RMSE as the tracking error itself, so one recording per cell left the ratio of two traces
#: to chance (on two sets of seeds a different cell missed 1.5 x). Pooling four recordings
#: halves that spread, as the standard error of a mean of four would.
RECORDINGS_PER_CELL = 4


def simulate_with_scene(scenario: str, **kw):
    """``simulate(scenario, **kw)`` and the scene it rendered (as tools/motion_table.py)."""
    from mmode.ingest.simulator import _setup, simulate

    bound = inspect.signature(simulate).bind(scenario, **kw)
    bound.apply_defaults()
    setup_kw = dict(bound.arguments)
    del setup_kw["seconds"], setup_kw["iq_fs_hz"]
    return simulate(scenario, **kw), _setup(**setup_kw).renderer.scene


def _phase_only_tracker():
    """:class:`PhaseOnlyTracker`, defined on first use (torch is imported with the tracker)."""
    from mmode.models.motion_stream import NetworkTracker

    class PhaseOnlyTracker(NetworkTracker):
        """The network tracker with its network's output taken as 0: the coarse stage and the
        pair's phase estimate on the wrap it chose, which the network corrects."""

        def forward(self, x: np.ndarray) -> np.ndarray:
            return np.zeros(len(x), np.float32)

    return PhaseOnlyTracker


#: The column of :class:`PhaseOnlyTracker`'s trace.
PHASE_ONLY = "phase_only"


def traces(meta, lines: np.ndarray, models=MODELS, directory: Path | None = None, block_lines: int = 256,
           track_depth_m: float | None = None) -> dict:
    """{"depth_m", "t_s", "representation", "combined", "kasai", "phase_only" and one per
    model: (n,) metres, "<model>_quality"} of lines (n, n_samples) as the product computes
    them (blocks of ``block_lines``); {} when the classic tracker finds no moving echo."""
    from mmode.dsp.tracker import MotionTracker
    from mmode.ingest.meta import LineBlock
    from mmode.models.motion_stream import NetworkTracker

    classic = MotionTracker(track_depth_m=track_depth_m)
    classic.prepare(meta, lines.shape[1])
    names = (*models, PHASE_ONLY)
    nets = [NetworkTracker(m, directory) for m in models] + [_phase_only_tracker()(models[0], directory)]
    for n in nets:
        n.prepare(meta, lines.shape[1], classic)
    parts: dict[str, list] = {"combined": [], **{m: [] for m in names}}
    for s in range(0, lines.shape[0], block_lines):
        block = LineBlock(s, s / meta.prf_hz, lines[s : s + block_lines])
        out = classic.process(block)
        parts["combined"].append(out)
        for m, n in zip(names, nets):
            parts[m].append(n.process(block, out.t_s.shape[0]))
    out = classic.flush()
    parts["combined"].append(out)
    for m, n in zip(names, nets):
        parts[m].append(n.flush(out.t_s.shape[0]))
    if classic.status != "tracking":
        return {}
    res = {"depth_m": classic.depth_m, "representation": classic.representation,
           "t_s": np.concatenate([p.t_s for p in parts["combined"]])}
    for k, v in parts.items():
        res[k] = np.concatenate([p.displacement_m for p in v])
        res[k + "_quality"] = np.concatenate([p.quality for p in v])
        res[k + "_depth_m"] = v[-1].depth_m
    kasai = MotionTracker(estimator="kasai", track_depth_m=classic.depth_m)
    kasai.prepare(meta, lines.shape[1])
    kp = [kasai.process(LineBlock(s, s / meta.prf_hz, lines[s : s + block_lines]))
          for s in range(0, lines.shape[0], block_lines)]
    kp.append(kasai.flush())
    res["kasai"] = np.concatenate([p.displacement_m for p in kp])
    res["kasai_depth_m"] = kasai.depth_m
    return res


def eval_cell(prf_hz: float, snr_db: float, sampling: str, seed: int, models=MODELS,
              directory: Path | None = None, seconds: float = SECONDS) -> dict:
    """RMSE (m) of each integrated trace against exact truth, and its slip rate, for one cell."""
    from mmode.ingest.simulator import _displacement_since_line0

    kw = dict(seconds=seconds, prf_hz=prf_hz, snr_db=snr_db, seed=seed)
    if sampling == "iq":
        kw["iq_fs_hz"] = COARSE_IQ_FS_HZ
    sim, scene = simulate_with_scene(SCENARIO, **kw)
    tr = traces(sim.meta, sim.lines, models, directory)
    cell = {"prf_hz": prf_hz, "snr_db": snr_db, "sampling": sampling, "seed": seed, "n_lines": int(sim.lines.shape[0])}
    if not tr:
        return {**cell, "note": "the classic tracker found no moving echo"}
    quarter = sim.meta.c_m_s / (4 * sim.meta.f0_hz)
    t = sim.timestamps_s
    cell["depth_m"] = float(tr["depth_m"])
    for name in ("combined", "kasai", PHASE_ONLY, *models):
        depth = tr[name + "_depth_m"]
        exact = _displacement_since_line0(scene, np.array([depth]), t)[:, 0]
        err = tr[name] - exact[: tr[name].shape[0]]
        cell[name] = {"rmse_m": float(np.sqrt(np.mean(err**2))), "slip_rate": float(np.mean(np.abs(err) > quarter))}
    cell["truth_pp_m"] = float(np.ptp(_displacement_since_line0(scene, np.array([tr["depth_m"]]), t)))
    cell["peak_speed_over_nyquist"] = float(np.max(np.abs(np.diff(
        _displacement_since_line0(scene, np.array([tr["depth_m"]]), t)[:, 0]))) * prf_hz / sim.meta.nyquist_velocity_m_s)
    return cell


def doppler_reference(iq: np.ndarray, meta, band_m: tuple[float, float]) -> np.ndarray:
    """Independent displacement estimate (n_lines,) m of a rigid body filling the depths
    ``band_m``: lag-one autocorrelation of zero-phase high-passed IQ (4th-order Butterworth
    at 30 Hz along slow time, forward and backward, removing the clutter) summed over the
    band, its phase unwrapped over time and integrated (Kasai 1985 with temporal
    unwrapping). The band must hold many samples: over a few, noise turns the phase by more
    than half a turn between lines and the unwrapping walks off."""
    from scipy import signal

    b, a = signal.butter(4, 30.0, "highpass", fs=meta.prf_hz)
    hp = signal.filtfilt(b, a, iq.astype(np.complex128), axis=0)
    depth = np.asarray(meta.depth_axis_m(iq.shape[1]))
    band = (depth > band_m[0]) & (depth < band_m[1])
    r1 = np.sum(np.conj(hp[:-1, band]) * hp[1:, band], axis=1)
    velocity = -meta.c_m_s * meta.prf_hz * np.unwrap(np.angle(r1)) / (4 * np.pi * meta.f0_hz)
    return np.concatenate([[0.0], np.cumsum(velocity) / meta.prf_hz])


#: The NTNU phantom's moving block: from its top (about 31 mm at the first line, the echo the
#: classic tracker follows) to 52 mm (tests/test_real_data.py checks the classic tracker against it).
PHANTOM_BAND_M = (0.027, 0.052)


def sine_fit(t: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """(peak to peak m, frequency Hz) of the least-squares sinusoid through ``x``."""
    from scipy import optimize

    spectrum = np.abs(np.fft.rfft(x - x.mean()))
    f_guess = np.fft.rfftfreq(x.shape[0], t[1] - t[0])[1 + np.argmax(spectrum[1:])]
    model = lambda tt, amp, f, ph, c: amp * np.sin(2 * np.pi * f * tt + ph) + c  # noqa: E731
    (amp, f, _, _), _ = optimize.curve_fit(model, t, x, p0=[np.ptp(x) / 2, f_guess, 0.0, x.mean()])
    return 2 * abs(amp), abs(f)


def eval_phantom(path: Path, models=MODELS, directory: Path | None = None, beam: int = 3) -> dict | None:
    """The NTNU phantom's centre beam: each trace's peak to peak and frequency (sine fit) and
    its RMSE against the independent Doppler estimate (after removing each one's mean)."""
    import scipy.io

    from mmode.ingest.meta import AcquisitionMeta

    if not Path(path).is_file():
        return None
    m = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    p = m["pars"]
    iq = np.ascontiguousarray(m["iq"][:, beam, :].T.astype(np.complex64))
    c = 1540.0
    meta = AcquisitionMeta(kind="iq", fs_hz=c / (2 * p.depth_inc), f0_hz=float(p.f0), prf_hz=float(p.fps),
                           t0_s=2 * p.depth_start / c)
    tr = traces(meta, iq, models, directory)
    if not tr:
        return {"note": "the classic tracker found no moving echo"}
    ref = doppler_reference(iq, meta, PHANTOM_BAND_M)
    n = tr["t_s"].shape[0]
    t = np.arange(n) / meta.prf_hz
    out = {"depth_m": float(tr["depth_m"]), "representation": tr["representation"], "n_lines": n}
    pp, f = sine_fit(t, ref[:n])
    out["doppler_reference"] = {"pp_m": pp, "f_hz": f}
    for name in ("combined", "kasai", PHASE_ONLY, *models):
        x = tr[name]
        pp, f = sine_fit(t, x)
        err = (x - x.mean()) - (ref[:n] - ref[:n].mean())
        out[name] = {"pp_m": pp, "f_hz": f, "rmse_vs_doppler_m": float(np.sqrt(np.mean(err**2)))}
    return out


def _cell_job(args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    return eval_cell(*args)


def pool_recordings(recordings: list[dict]) -> dict:
    """One cell of the table from :func:`eval_cell` of each of its recordings (same line rate,
    SNR and sampling): per trace the RMSE and slip rate over all their lines pooled, and each
    recording's RMSE (``rmse_m_each``); the largest peak speed; a note when the classic
    tracker found no moving echo in some of them (those are left out)."""
    cell = {k: recordings[0][k] for k in ("prf_hz", "snr_db", "sampling")}
    cell["seeds"] = [r["seed"] for r in recordings]
    scored = [r for r in recordings if "note" not in r]
    missing = len(recordings) - len(scored)
    if not scored:
        return {**cell, "note": recordings[0]["note"]}
    if missing:
        cell["note_partial"] = f"{missing} of {len(recordings)}: " + next(r["note"] for r in recordings if "note" in r)
    n = np.array([r["n_lines"] for r in scored], dtype=np.float64)
    cell["n_lines"] = int(n.sum())
    for name in [k for k, v in scored[0].items() if isinstance(v, dict)]:
        rmse = np.array([r[name]["rmse_m"] for r in scored])
        slips = np.array([r[name]["slip_rate"] for r in scored])
        cell[name] = {"rmse_m": float(np.sqrt(np.sum(n * rmse**2) / n.sum())),
                      "slip_rate": float(np.sum(n * slips) / n.sum()), "rmse_m_each": rmse.tolist()}
    cell["peak_speed_over_nyquist"] = max(r["peak_speed_over_nyquist"] for r in scored)
    return cell


def evaluate(models=MODELS, directory: Path | None = None, phantom: Path | None = None,
             seconds: float = SECONDS, workers: int = 1, log=print, seed_offset: int = EVAL_SEED_OFFSET,
             recordings_per_cell: int = RECORDINGS_PER_CELL) -> dict:
    """Every cell of the table (and the phantom when its file is there); ``workers``
    processes score recordings in parallel. Recording ``j`` of cell ``i`` has seed
    ``seed_offset + n_cells * j + i``."""
    grid = list(itertools.product(RATES_HZ, SNRS_DB, SAMPLINGS))
    jobs = [(prf, snr, sampling, seed_offset + len(grid) * j + i, models, directory, seconds)
            for j in range(recordings_per_cell) for i, (prf, snr, sampling) in enumerate(grid)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            recordings = pool.map(_cell_job, jobs, chunksize=1)
    else:
        recordings = [_cell_job(j) for j in jobs]
    cells = [pool_recordings(recordings[i :: len(grid)]) for i in range(len(grid))]
    for cell in cells:
        log(markdown_row(cell, models))
    return {"scenario": SCENARIO, "seconds": seconds, "coarse_iq_fs_hz": COARSE_IQ_FS_HZ,
            "seed_offset": seed_offset, "recordings_per_cell": recordings_per_cell, "cells": cells,
            "phantom": None if phantom is None else eval_phantom(phantom, models, directory)}


def _um(x: float) -> str:
    """Metres as um (one decimal below 10 um), or mm from 1 mm."""
    if x >= 1e-3:
        return f"{x * 1e3:.2f} mm"
    return f"{x * 1e6:.1f}" if x < 10e-6 else f"{x * 1e6:.0f}"


def markdown_row(cell: dict, models=MODELS) -> str:
    head = f"| {cell['prf_hz']:g} | {cell['snr_db']:g} | {cell['sampling'].upper()} | "
    if "note" in cell:
        return head + cell["note"] + " |"
    names = (*models, PHASE_ONLY, "combined", "kasai")
    ratio = cell[models[0]]["rmse_m"] / max(cell["combined"]["rmse_m"], 1e-12)
    each = zip(cell[models[0]].get("rmse_m_each", []), cell["combined"].get("rmse_m_each", []))
    within = [a <= 1.5 * b for a, b in each]
    partial = f" ({cell['note_partial']})" if "note_partial" in cell else ""
    return head + " | ".join(f"{_um(cell[n]['rmse_m'])} ({100 * cell[n]['slip_rate']:.0f} %)" for n in names) \
        + f" | {ratio:.2f} | {sum(within)} of {len(within)}{partial} | {cell['peak_speed_over_nyquist']:.1f} |"


MARKDOWN_HEAD = ("| lines/s | SNR dB | sampling | student um (slips) | teacher um (slips) | network output zeroed um (slips) "
                 "| classic combined um (slips) | naive Kasai um (slips) | student / classic | recordings within 1.5 x "
                 "| peak v / v_Nyq |\n"
                 "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def markdown(table: dict, models=MODELS) -> str:
    rows = [MARKDOWN_HEAD] + [markdown_row(c, models) for c in table["cells"]]
    ph = table.get("phantom")
    if ph and "note" not in ph:
        rows.append("")
        rows.append("| NTNU phantom (real GE IQ, 349 lines/s) | peak to peak mm | frequency Hz | RMSE vs Doppler mm |")
        rows.append("|---|---:|---:|---:|")
        ref = ph["doppler_reference"]
        rows.append(f"| independent Doppler estimate | {ref['pp_m'] * 1e3:.2f} | {ref['f_hz']:.3f} | - |")
        for name in (*models, PHASE_ONLY, "combined", "kasai"):
            r = ph[name]
            label = "network output zeroed" if name == PHASE_ONLY else name
            rows.append(f"| {label} | {r['pp_m'] * 1e3:.2f} | {r['f_hz']:.3f} | {r['rmse_vs_doppler_m'] * 1e3:.2f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="weights directory (default: the shipped ones)")
    p.add_argument("--phantom", type=Path, default=None)
    p.add_argument("--seconds", type=float, default=SECONDS)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--card-dir", type=Path, default=None, help="write the table into these motion cards")
    p.add_argument("--seed-offset", type=int, default=EVAL_SEED_OFFSET, help="first seed (default: the table's)")
    args = p.parse_args()
    print(MARKDOWN_HEAD, flush=True)
    table = evaluate(MODELS, args.dir, args.phantom, args.seconds, args.workers, log=lambda s: print(s, flush=True),
                     seed_offset=args.seed_offset)
    print(markdown(table))
    if args.out is not None:
        args.out.write_text(json.dumps(table, indent=1) + "\n")
    if args.card_dir is not None:
        for name in MODELS:
            path = args.card_dir / f"{name}.json"
            card = json.loads(path.read_text())
            card["metrics"]["trace_table"] = table
            path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
