"""The learned motion estimate in the product path: :class:`NetworkTracker`.

It follows the echo the classic :class:`~mmode.dsp.tracker.MotionTracker` chose (or the
gate the user set), from line 0, with its own integrated position, so that the two traces
can be compared line for line. Like the classic tracker it matches each line against a
*keyframe* (the window of an earlier line, renewed only when the match weakens), so that the
trace does not drift as a sum of per-pair estimates would (their errors add as a random walk):

1. **Coarse, per line (numpy):** the envelope of the keyframe window is matched (NCC) against
   the current line at integer shifts around the constant-velocity prediction of the
   coarse position; the best integer shift places the current window. Its NCC peak is the
   line's quality; below ``keyframe_ncc`` the line becomes the next keyframe.
2. **Fine, per block (the network, one batched forward pass):** the keyframe window and the
   current window at that integer shift go into the motion network
   (:func:`mmode.models.data.motion_inputs`), which gives the residual displacement in
   local wavelengths (of the echo's mean frequency measured on the pair, which attenuation
   lowers below f0). A coarse shift off by a sample is corrected by the residual (the network is
   trained on shifts off by up to about 1.5 samples); velocities many times the aliasing
   limit are a larger integer shift plus a residual.

Displacement of line n: ``D(keyframe) + (p_n - p_keyframe) + residual_n`` (tracking samples
x spacing). Lines are IQ on the classic tracker's tracking grid (RF demodulated, coarse IQ
interpolated, :meth:`MotionTracker.tracking_iq`); on clutter-filtered lines when the classic
tracker follows its echo there (a causal wall filter from the stream's start). Torch lives
here, not in ``dsp/`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from mmode.dsp import clutter
from mmode.dsp.demod import to_iq
from mmode.dsp.tracker import MotionBlock, MotionTracker
from mmode.errors import DataError, ModelError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.models import data as mdata
from mmode.models import motion_data as kdata
from mmode.models.registry import load_model

#: The shipped student the product runs.
DEFAULT_MODEL = "motion_keyframe_student"
#: The input kind the streaming tracker feeds.
KEYFRAME_KIND = kdata.KEYFRAME_SPEC["kind"]
#: Keyframe renewal threshold on the envelope NCC of the coarse match: lower than the
#: classic tracker's 0.9 on the complex correlation, since at 0-10 dB SNR the envelope NCC of
#: two noisy views of the same echo rarely reaches 0.9 and renewing on every line would make
#: the trace a random walk again.
KEYFRAME_NCC = 0.75


def check_motion_card(card: dict, name: str) -> dict:
    """The input spec of a motion card the streaming tracker can feed; ModelError otherwise."""
    spec = card.get("input")
    if card.get("task") != "motion" or not isinstance(spec, dict) or spec.get("kind") != KEYFRAME_KIND:
        found = spec.get("kind") if isinstance(spec, dict) else spec
        raise ModelError(describe(f"model {name}", f"a motion model with input kind {KEYFRAME_KIND!r}", repr(found)))
    n = spec.get("n_samples")
    if not isinstance(n, int) or not 4 <= n <= 256 or spec.get("channels") != 4:
        raise ModelError(describe(f"model {name}", "input n_samples 4..256 and 4 channels",
                                  (n, spec.get("channels"))))
    return spec


class NetworkTracker:
    """Streaming learned tracker of the classic tracker's echo.

    ``prepare(meta, n_samples, classic)`` once (``classic`` prepared on the same stream),
    then ``process(block, n_done)`` per block, where ``n_done`` is the number of lines the
    classic tracker finished with that block (its :class:`MotionBlock` length): the network
    tracks the same lines, so both traces cover the same line times. ``flush(n_done)`` at
    the end. ``last_ms`` is the wall time of the last call, ``inference_ms`` that of its
    network forward pass.
    """

    def __init__(self, name: str = DEFAULT_MODEL, directory: Path | None = None,
                 keyframe_ncc: float = KEYFRAME_NCC) -> None:
        self.model, self.card = load_model(name, directory)
        self.spec = check_motion_card(self.card, name)
        self.name = name
        self.keyframe_ncc = float(keyframe_ncc)
        self.last_ms = 0.0
        self.inference_ms = 0.0
        self.meta: AcquisitionMeta | None = None
        self.forward(np.zeros((2, 4, self.spec["n_samples"]), np.float32))  # torch's lazy start-up

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network output (N,) float32, residual displacement in local wavelengths, of inputs (N, 4, n)."""
        if len(x) == 0:
            return np.zeros(0, np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()[:, 0]
        finally:
            torch.set_num_threads(threads)

    def prepare(self, meta: AcquisitionMeta, n_samples: int, classic: MotionTracker) -> None:
        """Reset for a stream of lines of ``n_samples`` described by ``meta``."""
        self.meta = meta
        self.classic = classic
        self._n_samples = int(n_samples)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._started = False
        self._wall: clutter.WallFilter | None = None
        self.depth_m = math.nan
        self.n_lines = 0

    # -- per block -----------------------------------------------------------------------------
    def process(self, block: LineBlock, n_done: int) -> MotionBlock:
        """Queue ``block``'s lines; track the oldest ``n_done`` queued lines."""
        t0 = time.perf_counter()
        if self.meta is None:
            raise DataError(describe("motion network", "prepare(meta, n_samples, classic) before process", "none"))
        lines = np.asarray(block.lines)
        if lines.ndim != 2 or lines.shape[1] != self._n_samples:
            raise DataError(describe("motion network", f"blocks of (n, {self._n_samples}) lines", lines.shape))
        if not np.all(np.isfinite(lines.view(np.float32) if lines.dtype == np.complex64 else lines)):
            raise DataError(describe(f"motion network, block at line {block.seq}", "finite line samples",
                                     "NaN or infinite values"))
        t_s = block.t_s + np.arange(lines.shape[0], dtype=np.float64) / self.meta.prf_hz
        if self.classic.status in ("inactive", "no_motion"):
            self._pending = []
        else:
            self._pending.append((lines, t_s))
        out = self._take(n_done)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out

    def flush(self, n_done: int) -> MotionBlock:
        """End of stream: track the ``n_done`` lines the classic tracker released in its flush."""
        t0 = time.perf_counter()
        out = self._take(n_done)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out

    def _take(self, n: int) -> MotionBlock:
        parts, taken = [], 0
        while self._pending and taken < n:
            lines, t_s = self._pending.pop(0)
            k = min(lines.shape[0], n - taken)
            if k < lines.shape[0]:
                self._pending.insert(0, (lines[k:], t_s[k:]))
            parts.append((lines[:k], t_s[:k]))
            taken += k
        self.inference_ms = 0.0
        if not parts:
            e = np.zeros(0)
            return MotionBlock(e, e.copy(), e.copy(), e.copy(), self.depth_m)
        return self._run(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _iq(self, lines: np.ndarray) -> np.ndarray:
        """Lines on the classic tracker's tracking grid, clutter-filtered when it follows its
        echo on clutter-filtered lines: (m, n_iq) complex64."""
        c = self.classic
        if c.representation != "clutter":
            return c.tracking_iq(lines)
        iq, _, _ = to_iq(lines, self.meta)
        if self._wall is None:
            b, a = c.clutter_filter(self.meta.prf_hz)
            self._wall = clutter.WallFilter(b, a)
            return c.interpolate(self._wall.process(iq, stationary=iq.mean(axis=0)))
        return c.interpolate(self._wall.process(iq))

    def _start(self, iq0: np.ndarray) -> None:
        c = self.classic
        n = self.spec["n_samples"]
        self.depth_m = c.depth_m
        centre = float(self.meta.sample_at_depth(c.depth_m)) / c.stride
        self._home = int(min(max(round(centre) - n // 2, 0), iq0.shape[0] - n))
        self._max_lag, self._track_lag = c.search_lags(self.meta.prf_hz)
        self._spacing_m = c.spacing_m
        self._kf_iq = iq0[self._home : self._home + n].copy()
        weight = np.abs(self._kf_iq).astype(np.float64) ** 2  # the depth its window follows, as the classic one's
        if weight.sum() > 0:
            self.depth_m = float(self.meta.depth_m((self._home + np.sum(weight * np.arange(n)) / weight.sum()) * c.stride))
        self._kf_pos = 0  # keyframe window's integer shift from home
        self._kf_disp = 0.0  # keyframe's displacement, tracking samples (network)
        self._kf_coarse = 0.0  # the same from the coarse match
        self._coarse = [0.0, 0.0]  # coarse displacement of the last two lines
        self._prev_disp = 0.0
        self._started = True

    def _run(self, lines: np.ndarray, t_s: np.ndarray) -> MotionBlock:
        iq = self._iq(lines)
        first = not self._started
        if first:
            self._start(iq[0])
        n = self.spec["n_samples"]
        m = iq.shape[0]
        env = np.abs(iq)
        pos = np.zeros(m, np.int64)
        kf_id = np.zeros(m, np.int64)  # index into keyframes (this block's list)
        renew = np.zeros(m, bool)
        quality = np.ones(m)
        keyframes = [(self._kf_iq, self._kf_pos)]
        start = 1 if first else 0
        for i in range(start, m):
            kf_iq, kf_pos = keyframes[-1]
            c1, c0 = self._coarse[-1], self._coarse[-2]
            lag = self._max_lag if self.n_lines + i < 2 else self._track_lag
            pred = c1 + (c1 - c0 if self.n_lines + i >= 2 else 0.0)
            p, sub, q = _coarse_match(np.abs(kf_iq), env[i], self._home, kf_pos, pred - self._kf_coarse, lag)
            pos[i], quality[i], kf_id[i] = p, q, len(keyframes) - 1
            coarse = self._kf_coarse + (p - kf_pos) + sub
            self._coarse = [c1, coarse]
            if q < self.keyframe_ncc:
                renew[i] = True
                self._kf_coarse = coarse
                keyframes.append((iq[i, self._home + p : self._home + p + n].copy(), p))
        idx = np.arange(start, m)
        ref = np.stack([keyframes[kf_id[i]][0] for i in idx]) if len(idx) else np.zeros((0, n), np.complex64)
        cols = self._home + pos[idx, None] + np.arange(n)[None, :]
        shift = pos[idx] - np.array([keyframes[kf_id[i]][1] for i in idx], np.int64)
        cur = kdata.realign(iq[idx[:, None], cols], shift, self.classic.f0_cycles_per_sample)
        t0 = time.perf_counter()
        residual_wl = self.forward(mdata.motion_inputs(ref, cur))
        self.inference_ms = (time.perf_counter() - t0) * 1e3
        f_cycles = kdata.local_cycles_per_sample(ref, cur, self.classic.f0_cycles_per_sample)
        residual = residual_wl.astype(np.float64) * 2.0 / f_cycles  # local wavelengths -> tracking samples
        disp = np.zeros(m)
        kf_disp = [self._kf_disp]
        for j, i in enumerate(idx):
            d = kf_disp[kf_id[i]] + (pos[i] - keyframes[kf_id[i]][1]) + residual[j]
            disp[i] = d
            if renew[i]:
                kf_disp.append(d)
        self._kf_iq, self._kf_pos = keyframes[-1]
        self._kf_disp = kf_disp[-1]
        disp_m = disp * self._spacing_m
        vel = np.diff(np.concatenate(([self._prev_disp], disp_m))) * self.meta.prf_hz
        if first:
            vel[0] = 0.0
        self._prev_disp = float(disp_m[-1])
        self.n_lines += m
        return MotionBlock(t_s, disp_m, vel, np.clip(quality, 0.0, 1.0), self.depth_m)


def _coarse_match(ref_env: np.ndarray, env: np.ndarray, home: int, kf_pos: int, pred: float,
                  lag: int) -> tuple[int, float, float]:
    """Integer shift p (from ``home``) of the window in ``env`` (n_iq,) that best matches the
    keyframe envelope ``ref_env`` (n,) by NCC, searched within ``lag`` of the predicted shift
    ``kf_pos + pred``; its parabolic sub-sample offset and NCC peak. An envelope without
    contrast gives NCC 0 (and the prediction)."""
    n = ref_env.shape[0]
    centre = kf_pos + int(round(pred))
    lo = max(home + centre - lag, 0)
    hi = min(home + centre + lag, env.shape[0] - n)
    if hi < lo:
        return int(min(max(centre, -home), env.shape[0] - n - home)), 0.0, 0.0
    seg = np.lib.stride_tricks.sliding_window_view(env[lo : hi + n], n)
    r = ref_env - ref_env.mean()
    s = seg - seg.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(s * s, axis=1) * np.sum(r * r))
    ncc = np.where(den > 0, s @ r / np.where(den > 0, den, 1.0), 0.0)
    k = int(np.argmax(ncc))
    sub = 0.0
    if 0 < k < len(ncc) - 1:
        a, b, c = ncc[k - 1], ncc[k], ncc[k + 1]
        curv = a - 2 * b + c
        if curv < 0:
            sub = float(np.clip(0.5 * (a - c) / curv, -0.5, 0.5))
    return lo + k - home, sub, float(ncc[k])
