"""The live pipeline: frames → decoder → flow table → events, one packet at a time.

It is ``scan``'s reference engine (``treason.scanner.Analyzer``: decoder + flow table) fed from a
socket instead of a file, so a live event is exactly the event ``scan`` finds in a capture of
the same packets. The loop waits on the socket and on a wake-up descriptor (signals), drains
what is queued in batches, and hands each event to the output the moment the model emits it.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from treason.events import Event, Severity
from treason.live.pcapout import FlowRecorder
from treason.live.stats import LiveStats
from treason.packets import Frame
from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, Analyzer

RETRACTION = Severity.RETRACTION


class FrameSource(Protocol):
    def fileno(self) -> int: ...

    def read(self, limit: int = ...) -> list[Frame]: ...


class LiveSession:
    """Runs the model over frames and keeps ``LiveStats`` up to date."""

    def __init__(
        self,
        stats: LiveStats,
        emit: Callable[[Event], None],
        *,
        retractions: bool = False,
        max_flows: int = DEFAULT_MAX_FLOWS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        recorder: FlowRecorder | None = None,
    ) -> None:
        self.stats = stats
        self.emit = emit
        self.retractions = retractions
        self.recorder = recorder
        self.analyzer = Analyzer(stats.scan, max_flows, int(idle_timeout * 1e9))
        self.name = f"live:{stats.interface}"

    def feed(self, frames: Iterable[Frame]) -> None:
        analyzer = self.analyzer
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

    def tick(self, now_ns: int) -> None:
        """Wall-clock time passes: zero-window events left open past their time become final."""
        self._final(self.analyzer.table.advance(now_ns))
        self._counters()

    def finish(self) -> None:
        """Capture over: every open event is final."""
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
        scan.flows, scan.handshakes, scan.evicted_idle, scan.evicted_cap = analyzer.flow_counters()
        stats.flows_active = len(analyzer.table)
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
                frames = source.read(batch)
                if frames:
                    session.feed(frames)
                if len(frames) < batch:
                    break
        if next_tick is not None and time.monotonic() >= next_tick:
            periodic()
            next_tick = time.monotonic() + every  # type: ignore[operator]
    while True:
        frames = source.read(batch)
        if not frames:
            break
        session.feed(frames)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
