"""The live pipeline: frames → engine → events, a batch of packets at a time.

It is ``scan``'s engine fed from a socket instead of a file (``treason.engine``), so a live event
is exactly the event ``scan`` finds in a capture of the same packets. The loop waits on the
socket and on a wake-up descriptor (signals), drains what is queued in batches, and hands each
event to the output as soon as the batch that made it final is analysed.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from treason.decode import LINKTYPE_ETHERNET
from treason.engine.choose import new_engine, resolve
from treason.engine.protocol import MARK_EVENT, MARK_SHOWN, MARK_ZERO, Records
from treason.events import Event, Severity
from treason.live.pcapout import FlowRecorder
from treason.live.stats import LiveStats
from treason.packets import Frame
from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS

RETRACTION = Severity.RETRACTION


class FrameSource(Protocol):
    """A packet source; one that also has ``read_records`` (``PacketSocket``) feeds the
    engine pcap records without a ``Frame`` per packet."""

    def fileno(self) -> int: ...

    def read(self, limit: int = ...) -> list[Frame]: ...


class LiveSession:
    """Runs one engine over frames and keeps ``LiveStats`` up to date.

    ``linktype`` is the interface's (every frame has it); records carry none.
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
        self.linktype = linktype
        self.name = f"live:{stats.interface}"
        self.kind = resolve(engine)  # "fast" or "reference"
        self.engine = new_engine(self.kind, stats.scan, max_flows, int(idle_timeout * 1e9))
        if recorder is not None:
            self.engine.mark_flows()
        # Only flows with events the user may see are saved (retractions need --all); an open
        # zero-window event can still become kernel-visible: its flow is saved too.
        self._wanted = MARK_EVENT if retractions else MARK_SHOWN | MARK_ZERO

    def reader(self, source: FrameSource) -> Callable[[int], int]:
        """A function that analyses up to n queued packets of ``source``; how many there were."""
        read_records = getattr(source, "read_records", None)
        if self.recorder is None and read_records is not None and self.engine.prefers_records:
            feed_records = self.feed_records

            def pull_records(n: int) -> int:
                records, count = read_records(n)
                if count:
                    feed_records(records)
                return int(count)

            return pull_records
        read, feed = source.read, self.feed

        def pull_frames(n: int) -> int:
            frames = read(n)
            if frames:
                feed(frames)
            return len(frames)

        return pull_frames

    def feed_records(self, records: Records) -> None:
        """Whole pcap records (``treason.engine.compiled.RECORD``); no recorder."""
        self._final(self.engine.feed_records(records, self.linktype))

    def feed(self, frames: Sequence[Frame]) -> None:
        final = self.engine.feed(frames)
        recorder = self.recorder
        if recorder is not None:
            wanted = self._wanted
            for frame, mark in zip(frames, self.engine.take_marks(), strict=True):
                if mark is not None:
                    key, bits = mark
                    recorder.packet(key, frame, bool(bits & wanted))
        self._final(final)

    def tick(self, now_ns: int) -> None:
        """Wall-clock time passes: zero-window events left open past their time become final."""
        self._final(self.engine.advance(now_ns))

    def finish(self) -> None:
        """Capture over: every open event is final."""
        self._final(self.engine.flush())

    def _final(self, events: list[Event]) -> None:
        stats = self.stats
        for event in events:
            event.file = self.name
            if event.cls is not RETRACTION:
                stats.peers.add(event.src)
            if self.retractions or event.cls is not RETRACTION:
                self.emit(event)
        stats.flows_active = self.engine.active_flows
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
            ready, _, _ = select.select([source.fileno(), wakeup_fd], [], [], timeout)
        except InterruptedError:
            ready = []
        if wakeup_fd in ready:
            _drain(wakeup_fd)
        if source.fileno() in ready:
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
