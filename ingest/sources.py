"""Live sources of lines behind one interface: file playback, simulated probe, TCP, OpenIGTLink.

Every source is used the same way by the engine's acquisition thread::

    meta = source.open()                  # raises DataError / ProtocolError when unusable
    while not source.finished:
        block = source.read_block(0.1)    # LineBlock, or None when nothing arrived in time
    source.stop()                         # from any thread; read_block returns soon after

or, the same loop, ``for block in source.iter_blocks(stop_event): ...``.

``status`` ("idle", "running", "reconnecting", "ended", "stopped") and ``message`` say
what the source is doing, for a GUI to show. ``discontinuities`` counts intentional jumps of
the sequence number (a seek), so that the engine does not count them as lost lines.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from mmode.errors import DataError, ProtocolError, describe
from mmode.ingest.meta import AcquisitionMeta, LineBlock
from mmode.ingest.stream import StreamClient, StreamClosed
from mmode.ingest.stream_codec import EndOfStream, StreamHello

#: Default block length of paced sources, in seconds of lines.
BLOCK_SECONDS = 0.01
#: Seconds of lines :class:`SimSource` renders to time the simulator.
CALIBRATION_S = 0.05
#: The simulator renders live only when it is this many times faster than the PRF.
LIVE_RENDER_MARGIN = 2.0
#: Shortest loop :class:`SimSource` precomputes when the simulator is too slow, s; the loop
#: is the length up to twice that which best closes the scene's motion.
AUTO_PRECOMPUTE_S = 2.0
#: Largest precomputed loop, bytes.
MAX_PRECOMPUTE_BYTES = 512 * 1024 * 1024


def default_block_lines(prf_hz: float) -> int:
    """Lines per block for about :data:`BLOCK_SECONDS` of acquisition, at least 1."""
    return max(1, int(round(prf_hz * BLOCK_SECONDS)))


class Source(ABC):
    """Interface of every live source (see the module docstring)."""

    meta: AcquisitionMeta | None = None
    n_samples: int = 0
    dtype: np.dtype = np.dtype("int16")

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.status = "idle"
        self.message = ""
        self.finished = False
        self.discontinuities = 0

    @abstractmethod
    def open(self) -> AcquisitionMeta:
        """Start acquiring; returns the metadata (also in :attr:`meta`)."""

    @abstractmethod
    def read_block(self, timeout_s: float) -> LineBlock | None:
        """The next block, or None if none is ready within ``timeout_s`` or the source ended."""

    def stop(self) -> None:
        """Ask the source to stop; safe from any thread, idempotent."""
        self._stop.set()
        if not self.finished:
            self.status = "stopped"
        self.finished = True

    def iter_blocks(self, stop: threading.Event, poll_s: float = 0.1) -> Iterator[LineBlock]:
        """Blocks of the opened source until it is finished or ``stop`` is set; ``stop`` is
        checked at least every ``poll_s`` seconds."""
        while not stop.is_set():
            block = self.read_block(poll_s)
            if block is not None:
                yield block
            elif self.finished:
                return


class _Pacer:
    """Real-time pacing: line ``n`` after the anchor is due ``n / rate_hz`` s after it.

    The anchor is the first :meth:`wait_for` after construction or :meth:`reset`, so a
    reader that starts late (a pipeline still compiling) does not get a burst of lines.
    """

    def __init__(self, rate_hz: float) -> None:
        self.rate_hz = float(rate_hz)
        self.reset()

    def reset(self) -> None:
        self.anchor_s: float | None = None
        self.lines = 0

    def wait_for(self, n_lines: int, timeout_s: float, stop: threading.Event) -> bool:
        """Wait until ``n_lines`` more lines are due; False if that is beyond ``timeout_s``."""
        if self.anchor_s is None:
            self.anchor_s = time.perf_counter()
        delay = self.anchor_s + (self.lines + n_lines) / self.rate_hz - time.perf_counter()
        if delay > timeout_s:
            stop.wait(max(0.0, timeout_s))
            return False
        if delay > 0:
            stop.wait(delay)
        if stop.is_set():
            return False
        self.lines += n_lines
        return True


class ArraySource(Source):
    """Lines already in memory (a simulation result, a decoded capture) as a source.

    ``speed=None`` delivers as fast as the reader asks (for tests and batch runs);
    otherwise blocks are paced at ``prf_hz * speed``. ``seq`` is the line index.
    """

    def __init__(self, meta: AcquisitionMeta, lines: np.ndarray, *, block_lines: int = 64, speed: float | None = None) -> None:
        super().__init__()
        if lines.ndim != 2 or lines.shape[0] == 0 or block_lines < 1:
            raise DataError(describe("array source", "(n_lines >= 1, n_samples) lines and block_lines >= 1", (lines.shape, block_lines)))
        self._meta, self._lines = meta, lines
        self.block_lines = int(block_lines)
        self.speed = speed
        self.position = 0

    def open(self) -> AcquisitionMeta:
        self.meta, self.n_samples, self.dtype = self._meta, self._lines.shape[1], self._lines.dtype
        self._pacer = _Pacer(self._meta.prf_hz * self.speed) if self.speed else None
        self.status = "running"
        return self.meta

    def read_block(self, timeout_s: float) -> LineBlock | None:
        if self.finished:
            return None
        if self.position >= self._lines.shape[0]:
            self.finished, self.status, self.message = True, "ended", "end of lines"
            return None
        start = self.position
        n = min(self.block_lines, self._lines.shape[0] - start)
        if self._pacer is not None and not self._pacer.wait_for(n, timeout_s, self._stop):
            return None
        self.position = start + n
        return LineBlock(seq=start, t_s=start / self._meta.prf_hz, lines=self._lines[start : start + n])


class FileSource(Source):
    """Plays a recording back at its PRF times ``speed``, optionally looping; seekable.
    ``options`` go to :func:`~mmode.ingest.files.open_recording` (e.g. ``mline`` of a cine).

    ``seq`` of a block is ``loop_index * n_lines + line`` and ``t_s`` the file time of its
    first line plus ``loop_index`` times the file duration, so a loop continues the sequence
    without a gap. :meth:`seek` (any thread) jumps to a line; it counts as a discontinuity.
    """

    def __init__(
        self,
        path: str,
        *,
        speed: float = 1.0,
        loop: bool = False,
        start_line: int = 0,
        block_lines: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not speed > 0:
            raise DataError(describe("playback", "speed > 0", speed))
        self.path = str(path)
        self.speed = float(speed)
        self.loop = bool(loop)
        self._start_line = int(start_line)
        self._block_lines = block_lines
        self._lock = threading.Lock()
        self._pending_seek: int | None = None
        self._recording = None
        self.options = dict(options or {})

    def open(self) -> AcquisitionMeta:
        from mmode.ingest.files import open_recording

        rec = open_recording(self.path, **self.options)
        if not 0 <= self._start_line < rec.n_lines:
            rec.close()
            raise DataError(describe(self.path, f"start line in [0, {rec.n_lines})", self._start_line))
        self._recording = rec
        self.meta, self.n_samples, self.dtype = rec.meta, rec.n_samples, rec.dtype
        self.n_lines = rec.n_lines
        self._timestamps_s = rec.timestamps_s()
        self._loop_period_s = float(self._timestamps_s[-1] - self._timestamps_s[0]) + 1.0 / rec.meta.prf_hz
        self.block_lines = self._block_lines or default_block_lines(rec.meta.prf_hz)
        self.position = self._start_line
        self.loop_index = 0
        self._pacer = _Pacer(rec.meta.prf_hz * self.speed)
        self.status = "running"
        return self.meta

    def head_lines(self, n_lines: int) -> np.ndarray:
        """The recording's first ``n_lines`` lines (fewer when it is shorter), (n, n_samples),
        e.g. to set the display level from the start of the file before playing it."""
        with self._lock:
            if self._recording is None:
                raise DataError(describe(self.path, "an open recording", "closed"))
            return self._recording.read(0, min(int(n_lines), self.n_lines))

    def seek(self, line: int) -> None:
        """Continue playback from ``line`` (0 <= line < n_lines); thread-safe. Once a
        non-looping playback has reached the end it stays ended (open a new source)."""
        if self._recording is None or not 0 <= line < self.n_lines:
            raise DataError(describe(self.path, f"seek line in [0, {getattr(self, 'n_lines', 0)})", line))
        with self._lock:
            self._pending_seek = int(line)

    def read_block(self, timeout_s: float) -> LineBlock | None:
        if self.finished:
            return None
        with self._lock:
            if self._pending_seek is not None:
                self.position, self._pending_seek = self._pending_seek, None
                self.discontinuities += 1
                self._pacer.reset()
        if self.position >= self.n_lines:
            if not self.loop:
                self.finished, self.status, self.message = True, "ended", "end of file"
                return None
            self.position = 0
            self.loop_index += 1
        n = min(self.block_lines, self.n_lines - self.position)
        if not self._pacer.wait_for(n, timeout_s, self._stop):
            return None
        start = self.position
        with self._lock:  # stop() closes the file under the same lock
            if self._recording is None:
                return None
            lines = self._recording.read(start, start + n)
        self.position = start + n
        t_s = float(self._timestamps_s[start]) + self.loop_index * self._loop_period_s
        return LineBlock(seq=self.loop_index * self.n_lines + start, t_s=t_s, lines=lines)

    def stop(self) -> None:
        super().stop()
        with self._lock:
            if self._recording is not None:
                self._recording.close()
                self._recording = None


class SimSource(Source):
    """The simulated probe (:class:`mmode.ingest.simulator.SimulatedProbe`) paced in real time.

    Extra keyword arguments go to ``SimulatedProbe`` (``n_samples``, ``f0_hz``, ``fs_hz``,
    ``depth_m``, ``snr_db``, ``seed``, ...). Rendering 2048-sample lines runs at a few
    thousand lines per second on one core, which is not enough for every PRF, so the
    source keeps its line rate by replaying a precomputed loop (sequence numbers and times
    run on; the echoes repeat every loop):

    - ``precompute_s=None`` (default): :meth:`open` times the rendering of
      :data:`CALIBRATION_S` of lines; when it is slower than :data:`LIVE_RENDER_MARGIN`
      times the PRF (the pipeline shares the machine), :data:`AUTO_PRECOMPUTE_S` to twice that
      seconds are rendered once and looped, and :attr:`message` says so. The loop is the
      length that best closes the scene's motion
      (:meth:`~mmode.ingest.simulator.SimulatedProbe.closing_loop_s`), so that the replayed
      rhythm keeps its rate and its echoes jump least where it restarts (a 2 s loop of a
      70/min heart repeated every 2 s: the displayed heart rate read 30/min); where the memory
      cap leaves less than :data:`AUTO_PRECOMPUTE_S`, the loop is what the cap allows (4 s of
      2048-sample lines at 20 kHz are 328 MB). Rendering it is the start-up wait: the cardiac
      loop of 3.8 s at 20 kHz x 2048 samples takes about 14 s at ~5 400 lines/s (the 2 s loop
      took 7.5 s);
    - ``precompute_s > 0``: always loop that many seconds;
    - ``precompute_s = 0``: always render live (slower than real time if the PRF is too high).

    A loop is at most :data:`MAX_PRECOMPUTE_BYTES` (an automatic one is shortened to fit;
    an asked-for one beyond it is a :class:`DataError`). :attr:`delivered_rate_hz` is the
    line rate actually delivered, on the source's own clock.
    """

    def __init__(
        self,
        scenario: str,
        *,
        prf_hz: float = 1000.0,
        block_lines: int | None = None,
        precompute_s: float | None = None,
        **probe_kwargs,
    ) -> None:
        super().__init__()
        self.scenario = scenario
        self.prf_hz = float(prf_hz)
        self._block_lines = block_lines
        self.precompute_s = precompute_s
        self._probe_kwargs = probe_kwargs
        self._loop: np.ndarray | None = None

    def open(self) -> AcquisitionMeta:
        from mmode.ingest.simulator import SimulatedProbe

        self._probe = SimulatedProbe(self.scenario, prf_hz=self.prf_hz, **self._probe_kwargs)
        self.meta, self.n_samples = self._probe.meta, self._probe.n_samples
        self.dtype = np.dtype(np.int16)  # SimulatedProbe renders int16 RF
        self.block_lines = self._block_lines or default_block_lines(self.prf_hz)
        self.precomputed_s = self._loop_seconds()
        if self.precomputed_s > 0:
            n_loop = max(self.block_lines, int(round(self.precomputed_s * self.prf_hz)))
            self._loop = self._probe.next_block(n_loop).lines
            self.precomputed_s = n_loop / self.prf_hz
            if self.precompute_s is None:
                self.message += f"; replaying a precomputed {self.precomputed_s:.3g} s loop"
        self._seq = 0
        self._pacer = _Pacer(self.prf_hz)
        self.lines_delivered = 0
        self._last_delivery_s: float | None = None
        self.status = "running"
        return self.meta

    def _loop_seconds(self) -> float:
        """Seconds of lines to precompute (0: render live); see the class docstring."""
        line_bytes = self.n_samples * self.dtype.itemsize
        max_s = MAX_PRECOMPUTE_BYTES / (line_bytes * self.prf_hz)
        if self.precompute_s is not None:
            if not 0 <= self.precompute_s <= max_s:
                raise DataError(describe(
                    "--precompute-s", f"0..{max_s:.3g} s ({MAX_PRECOMPUTE_BYTES >> 20} MiB of lines at {self.prf_hz:g} Hz)",
                    self.precompute_s,
                ))
            return float(self.precompute_s)
        n_test = max(self.block_lines, int(round(CALIBRATION_S * self.prf_hz)))
        t0 = time.perf_counter()
        self._probe.next_block(n_test)
        render_hz = n_test / max(time.perf_counter() - t0, 1e-9)
        self._probe.next_seq = 0  # lines are a function of seq: start again from line 0
        if render_hz >= LIVE_RENDER_MARGIN * self.prf_hz:
            return 0.0
        self.message = f"simulator renders ~{render_hz:.0f} lines/s, under {LIVE_RENDER_MARGIN:g} x the PRF of {self.prf_hz:g} Hz"
        if max_s < AUTO_PRECOMPUTE_S:
            return max_s
        return self._probe.closing_loop_s(AUTO_PRECOMPUTE_S, min(2 * AUTO_PRECOMPUTE_S, max_s))

    @property
    def delivered_rate_hz(self) -> float | None:
        """Lines delivered per second from the first read to the latest block (source clock)."""
        if self._last_delivery_s is None or self._last_delivery_s <= self._pacer.anchor_s:
            return None
        return self.lines_delivered / (self._last_delivery_s - self._pacer.anchor_s)

    def read_block(self, timeout_s: float) -> LineBlock | None:
        if self.finished or not self._pacer.wait_for(self.block_lines, timeout_s, self._stop):
            return None
        seq, n = self._seq, self.block_lines
        self._seq += n
        if self._loop is None:
            block = self._probe.next_block(n)
        else:
            idx = np.arange(seq, seq + n) % self._loop.shape[0]
            block = LineBlock(seq=seq, t_s=seq / self.prf_hz, lines=self._loop[idx])
        self.lines_delivered += n
        self._last_delivery_s = time.perf_counter()
        return block


class ReconnectingSource(Source):
    """A network source that reconnects with exponential backoff when the peer goes away.

    ``connect()`` (supplied by the subclass) returns a client with ``hello``
    (:class:`StreamHello`), ``wait_readable(timeout_s)``, ``read_frame()`` and ``close()``.
    A lost connection, or broken framing after a good hello (a :class:`ProtocolError` from
    ``read_frame``, which closes the client; counted in :attr:`framing_errors`), sets
    ``status = "reconnecting"`` and a message, then retries after ``backoff_s``, doubling up
    to ``max_backoff_s`` until a frame is read again. The peer must announce the same
    metadata as before, or :meth:`read_block` raises a :class:`ProtocolError`; so does
    :meth:`open` for a first peer that is not a server of the protocol. Frames are returned
    as the client decoded them: the engine checks their samples and times
    (:mod:`mmode.ingest.frame_check`).
    """

    def __init__(self, name: str, connect: Callable[[], object], *, backoff_s: float = 0.2, max_backoff_s: float = 5.0) -> None:
        super().__init__()
        self.name = name
        self._connect = connect
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._client = None
        self._next_attempt_s = 0.0
        self._delay_s = self.backoff_s
        self.reconnects = 0
        self.framing_errors = 0

    def open(self) -> AcquisitionMeta:
        try:
            self._client = self._connect()
        except StreamClosed as exc:
            raise DataError(str(exc)) from None
        hello: StreamHello = self._client.hello
        self.meta, self.n_samples, self.dtype = hello.meta, hello.n_samples, hello.dtype
        self.status, self.message = "running", f"connected to {self.name}"
        return self.meta

    def _try_reconnect(self, timeout_s: float) -> None:
        wait_s = self._next_attempt_s - time.monotonic()
        if wait_s > 0:
            self._stop.wait(min(wait_s, timeout_s))
            return
        try:
            client = self._connect()
        except (StreamClosed, ProtocolError) as exc:
            self._delay_s = min(self._delay_s * 2, self.max_backoff_s)
            self._next_attempt_s = time.monotonic() + self._delay_s
            self.message = f"{self.name}: connection lost ({exc}); retrying in {self._delay_s:.1f} s"
            return
        hello: StreamHello = client.hello
        if (hello.meta, hello.n_samples, hello.dtype) != (self.meta, self.n_samples, self.dtype):
            client.close()
            raise ProtocolError(
                describe(self.name, f"the same stream after reconnecting ({self.n_samples} x {self.dtype})", f"{hello.n_samples} x {hello.dtype}, {hello.meta}")
            )
        self._client = client
        self.reconnects += 1
        self.status, self.message = "running", f"reconnected to {self.name}"

    def read_block(self, timeout_s: float) -> LineBlock | None:
        client = self._client  # stop() may clear it from another thread
        if self.finished:
            return None
        if client is None:
            self._try_reconnect(timeout_s)
            return None
        if not client.wait_readable(timeout_s):
            return None
        try:
            frame = client.read_frame()
        except (StreamClosed, ProtocolError) as exc:  # the client has closed the connection
            if self._stop.is_set():
                return None
            self._client = None
            self._next_attempt_s = time.monotonic() + self._delay_s
            if isinstance(exc, ProtocolError):  # a peer that keeps breaking is retried less often
                self.framing_errors += 1
                self._delay_s = min(self._delay_s * 2, self.max_backoff_s)
            self.status, self.message = "reconnecting", f"{exc}; reconnecting"
            return None
        self._delay_s = self.backoff_s
        if isinstance(frame, EndOfStream):
            client.close()
            self._client = None
            self.finished, self.status, self.message = True, "ended", f"{self.name}: end of stream"
            return None
        return frame

    def stop(self) -> None:
        super().stop()
        if self._client is not None:
            self._client.close()
            self._client = None


class TcpSource(ReconnectingSource):
    """Client of stream protocol v1 (:mod:`mmode.ingest.stream`), reconnecting with backoff."""

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 5.0, stall_timeout_s: float = 10.0, **backoff) -> None:
        self.host, self.port = host, int(port)

        def connect() -> StreamClient:
            return StreamClient(host, self.port, connect_timeout_s=connect_timeout_s, stall_timeout_s=stall_timeout_s)

        super().__init__(f"{host}:{port}", connect, **backoff)


class IgtlSource(ReconnectingSource):
    """OpenIGTLink client (:mod:`mmode.ingest.igtl`): IMAGE messages of lines, reconnecting.

    ``meta`` is used when the sender does not put the acquisition metadata in the message
    metadata (a PLUS server, for instance); ``device_name`` filters one device.
    """

    def __init__(
        self,
        host: str,
        port: int = 18944,
        *,
        device_name: str | None = None,
        meta: AcquisitionMeta | None = None,
        connect_timeout_s: float = 5.0,
        stall_timeout_s: float = 10.0,
        **backoff,
    ) -> None:
        from mmode.ingest.igtl import IgtlClient

        self.host, self.port = host, int(port)

        def connect() -> IgtlClient:
            return IgtlClient(
                host, self.port, device_name=device_name, meta=meta,
                connect_timeout_s=connect_timeout_s, stall_timeout_s=stall_timeout_s,
            )

        super().__init__(f"igtl://{host}:{port}", connect, **backoff)


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"HOST"`` -> (host, port); raises DataError on a bad port."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise DataError(describe(text, "HOST:PORT with a port in 1..65535", repr(port)))
    return host or "127.0.0.1", int(port)
