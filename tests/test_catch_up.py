"""A live stream's catch-up on the lines the motion tracker held back while it chose the echo
(:class:`mmode.app.catch_up.CatchUp`): it takes the share of each block's spare time it is
given, at the measured cost per line, and leaves the traces as they are offline."""

from __future__ import annotations

import math

import numpy as np
from mmode.app.catch_up import CATCH_UP_SHARE, MIN_CATCH_UP_SHARE, CatchUp
from mmode.app.pipeline import Pipeline, PipelineSettings
from mmode.ingest.meta import LineBlock
from mmode.ingest.simulator import simulate


def test_the_catch_up_takes_its_share_of_the_time_a_block_leaves():
    c = CatchUp()
    assert c.lines(50, 0.01) == math.ceil(MIN_CATCH_UP_SHARE * 50)  # nothing measured yet
    # 50 lines of 10 ms: 2 ms for the display and classifier, 4 ms for the motion stages
    c.update(50, 0.002, 50, 0.004)
    extra, line_s = c.lines(50, 0.01), 0.004 / 50
    allowed_s = CATCH_UP_SHARE * (0.01 - 0.002 - 0.004)
    assert extra * line_s <= allowed_s * (1 + 1e-9) and (extra + 1) * line_s > allowed_s * (1 - 1e-9)
    # the echo being chosen (no line tracked) is no per-line motion cost
    c.update(50, 0.002, 0, 0.009)
    assert c.lines(50, 0.01) == extra
    # a block that leaves no time still catches up on its least share, so that it ends
    c.update(50, 0.02, 50, 0.004)
    for _ in range(30):
        c.update(50, 0.02, 50, 0.004)
    assert c.lines(50, 0.01) == math.ceil(MIN_CATCH_UP_SHARE * 50)
    c.reset()
    assert c.lines(200, 0.01) == math.ceil(MIN_CATCH_UP_SHARE * 200)


def _run(sim, realtime: bool, block: int):
    pipe = Pipeline(PipelineSettings(motion="both", realtime=realtime))
    pipe.prepare(sim.meta, sim.lines.shape[1])
    classic, network, per_call = [], [], []
    for i in range(0, sim.lines.shape[0], block):
        lines = sim.lines[i : i + block]
        held = pipe.motion._held_count() if pipe.motion.status == "tracking" else 0
        allowed = lines.shape[0] + pipe.catch_up.lines(lines.shape[0], lines.shape[0] / sim.meta.prf_hz)
        r = pipe.process(LineBlock(i, i / sim.meta.prf_hz, lines))
        if held:
            per_call.append((r.motion.t_s.shape[0], min(allowed, held + lines.shape[0])))
        classic.append(r.motion)
        network.append(r.motion_network)
    end = pipe.finish()
    classic.append(end.motion)
    network.append(end.motion_network)
    join = lambda parts, f: np.concatenate([getattr(p, f) for p in parts])
    return {f"{name}_{f}": join(parts, f) for name, parts in (("classic", classic), ("network", network))
            for f in ("t_s", "displacement_m")}, per_call


def test_a_live_stream_catches_up_as_allowed_and_its_traces_are_the_offline_ones():
    # blocks of 10 ms, as a live source sends them: the choice (a few ms per step, a step or
    # more per block) ends well before the recording does
    sim = simulate("cardiac_regular", seconds=2.5, prf_hz=1000.0, snr_db=25.0, seed=7_100_002)
    live, per_call = _run(sim, realtime=True, block=10)
    offline, _ = _run(sim, realtime=False, block=10)
    assert per_call, "the held-back lines were caught up on"
    assert all(done == allowed for done, allowed in per_call)
    np.testing.assert_allclose(live["classic_t_s"], np.arange(sim.lines.shape[0]) / sim.meta.prf_hz, rtol=0, atol=1e-12)
    for key in offline:
        np.testing.assert_allclose(live[key], offline[key], rtol=0, atol=1e-9, err_msg=key)
