"""The live pipeline: frames → decoder → flow table → events, a batch of packets at a time.

It is one of ``scan``'s engines fed from a socket instead of a file, so a live event is exactly
the event ``scan`` finds in a capture of the same packets: the compiled scanner
(``treason.fastpath.Incremental``, fed pcap records built straight from the socket) when it is
built, or the reference engine (``treason.scanner.Analyzer``: decoder + flow table). The loop
waits on the socket and on a wake-up descriptor (signals), drains what is queued in batches,
and hands each event to the output as soon as the batch that made it final is analysed.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from treason.events import Event, Severity
from treason.fastpath import TRACE_EVENT, TRACE_SHOWN, TRACE_ZERO
from treason.live.pcapout import FlowRecorder
from treason.live.stats import LiveStats
from treason.packets import Frame
from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, Analyzer, fast_available

if TYPE_CHECKING:
    from treason.fastpath import Incremental

RETRACTION = Severity.RETRACTION
LINKTYPE_ETHERNET = 1


class FrameSource(Protocol):
    """A packet source; one that also has ``read_records`` (``PacketSocket``) feeds the
    compiled scanner without a ``Frame`` per packet."""

    def fileno(self) -> int: ...

    def read(self, limit: int = ...) -> list[Frame]: ...


def resolve_engine(engine: str) -> str:
    """``auto`` is the compiled scanner when it is built, as for ``scan``."""
    if engine == "auto":
        return "fast" if fast_available() else "reference"
    if engine not in ("fast", "reference"):
        raise ValueError(f"unknown engine {engine!r}")
    return engine


class LiveSession:
    """Runs the model over frames and keeps ``LiveStats`` up to date.

    ``linktype`` is the interface's (every frame has it); the compiled scanner needs it before
    the first packet.
    """

    def __init__(
        self,
        stats: LiveStats,
        emit: Callable[[Event], None],
        *,
        retractions: bool = False,
        max_flows: int = DEFAULT_MAX_FLOWS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        recorder: FlowRecorder | None = None,
        engine: str = "auto",
        linktype: int = LINKTYPE_ETHERNET,
    ) -> None:
        self.stats = stats
        self.emit = emit
        self.retractions = retractions
        self.recorder = recorder
        self.engine = resolve_engine(engine)
        idle_ns = int(idle_timeout * 1e9)
        self.name = f"live:{stats.interface}"
        self.analyzer: Analyzer | None = None
        self.fast: Incremental | None = None
        if self.engine == "fast":
            from treason.fastpath import Incremental

            self.fast = Incremental(
                linktype, stats.scan, max_flows, idle_ns, trace=recorder is not None
            )
        else:
            self.analyzer = Analyzer(stats.scan, max_flows, idle_ns)

    def reader(self, source: FrameSource) -> Callable[[int], int]:
        """A function that analyses up to n queued packets of ``source``; how many there were."""
        read_records = getattr(source, "read_records", None)
        if self.fast is not None and self.recorder is None and read_records is not None:
            feed_records = self.feed_records

            def pull_records(n: int) -> int:
                records, count = read_records(n)
                if count:
                    feed_records(records)
                return count

            return pull_records
        read, feed = source.read, self.feed

        def pull_frames(n: int) -> int:
            frames = read(n)
            if frames:
                feed(frames)
            return len(frames)

        return pull_frames

    def feed_records(self, records: bytes | bytearray | memoryview) -> None:
        """Whole pcap records (``treason.fastpath.RECORD``), for the compiled scanner."""
        assert self.fast is not None and self.recorder is None
        self._final(self.fast.feed_records(records))
        self._counters()

    def feed(self, frames: Sequence[Frame]) -> None:
        if self.fast is not None:
            self._feed_fast(frames)
            return
        analyzer = self.analyzer
        assert analyzer is not None
        table = analyzer.table
        recorder = self.recorder
        for frame in frames:
            seg, event, final = analyzer.frame(frame)
            if seg is None:
                continue
            if recorder is not None:
                # Only flows with events the user may see are saved (retractions need --all).
                # An open zero-window event can still become kernel-visible: save its flow.
                seen = event is not None and (
                    self.retractions or event.cls is not RETRACTION or event.win == 0
                )
                recorder.packet(table.key(seg), frame, seen)
            self._final(final)
        self._counters()

    def _feed_fast(self, frames: Sequence[Frame]) -> None:
        fast, recorder = self.fast, self.recorder
        assert fast is not None
        final = fast.feed(frames)
        if recorder is not None:
            # As in the reference loop: only flows with events the user may see are saved
            # (retractions need --all); an open zero-window event may become kernel-visible.
            wanted = TRACE_EVENT if self.retractions else TRACE_SHOWN | TRACE_ZERO
            for frame, traced in zip(frames, fast.take_trace(), strict=True):
                if traced is not None:
                    key, bits = traced
                    recorder.packet(key, frame, bool(bits & wanted))
        self._final(final)
        self._counters()

    def tick(self, now_ns: int) -> None:
        """Wall-clock time passes: zero-window events left open past their time become final."""
        if self.fast is not None:
            self._final(self.fast.advance(now_ns))
        else:
            assert self.analyzer is not None
            self._final(self.analyzer.table.advance(now_ns))
        self._counters()

    def finish(self) -> None:
        """Capture over: every open event is final."""
        if self.fast is not None:
            self._final(self.fast.flush())
        else:
            assert self.analyzer is not None
            self._final(self.analyzer.table.flush())
        self._counters()

    def _final(self, events: list[Event]) -> None:
        stats = self.stats
        for event in events:
            event.file = self.name
            stats.scan.events[event.cls.label] += 1
            if event.cls is not RETRACTION:
                stats.peers.add(event.src)
            if self.retractions or event.cls is not RETRACTION:
                self.emit(event)

    def _counters(self) -> None:
        stats, scan, analyzer = self.stats, self.stats.scan, self.analyzer
        if analyzer is not None:
            counters = analyzer.flow_counters()
            scan.flows, scan.handshakes, scan.evicted_idle, scan.evicted_cap = counters
            stats.flows_active = len(analyzer.table)
        else:
            assert self.fast is not None  # keeps the flow counters in stats.scan itself
            stats.flows_active = self.fast.active
        if self.recorder is not None:
            stats.written = self.recorder.sink.packets


def capture_loop(
    source: FrameSource,
    session: LiveSession,
    *,
    wakeup_fd: int,
    stopping: Callable[[], bool],
    every: float | None,
    periodic: Callable[[], None],
    batch: int = 512,
) -> None:
    """Read until ``stopping()``; call ``periodic`` every ``every`` seconds (status, rotation).

    ``wakeup_fd`` becomes readable when a signal arrives (``signal.set_wakeup_fd``), so a
    SIGTERM ends the wait at once. What is already queued in the socket when the stop comes
    is still read: those packets were captured before the user asked to stop.
    """
    pull = session.reader(source)
    next_tick = time.monotonic() + every if every else None
    while not stopping():
        timeout = None if next_tick is None else max(0.0, next_tick - time.monotonic())
        try:
            ready, _, _ = select.select([source, wakeup_fd], [], [], timeout)
        except InterruptedError:
            ready = []
        if wakeup_fd in ready:
            _drain(wakeup_fd)
        if source in ready:
            # Bounded bursts, so the status line and a stop request are never starved.
            for _ in range(64):
                if pull(batch) < batch:
                    break
        if next_tick is not None and time.monotonic() >= next_tick:
            periodic()
            next_tick = time.monotonic() + every  # type: ignore[operator]
    while pull(batch):
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
