"""The engine over each capture being compared: its segments, its events, which frames made one.

Comparison needs, per frame, the decoded segment (to fingerprint it) and whether the engine
judged it a window shrink (to keep it until its twin is known), besides the final events. The
compiled scanner does the judging fastest, fed batches of frames as ``live`` feeds it, with its
per-frame trace saying which frames made an event; it takes one link type per stream, so it runs
on classic pcap files, and the reference model (``Analyzer``) on pcapng, where interfaces of
other link types can appear at any point. Both engines give the same events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from treason.decode import decode
from treason.events import Event
from treason.packets import Frame, Segment
from treason.scanner import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FLOWS,
    Analyzer,
    ScanStats,
    fast_available,
)

#: A judged frame: its segment, and whether the engine made an event of it.
Judged = tuple[Frame, Segment, bool]

_IDLE_NS = int(DEFAULT_IDLE_TIMEOUT * 1e9)


class Engine(Protocol):
    def feed(self, frames: Sequence[Frame]) -> tuple[list[Judged], list[Event]]:
        """The TCP segments among ``frames`` and the events that became final."""
        ...

    def flush(self) -> list[Event]:
        """The capture ended: the events still open."""
        ...


class Reference:
    """The reference model, one frame at a time."""

    def __init__(self, stats: ScanStats) -> None:
        self.analyzer = Analyzer(stats, DEFAULT_MAX_FLOWS, _IDLE_NS)

    def feed(self, frames: Sequence[Frame]) -> tuple[list[Judged], list[Event]]:
        judged: list[Judged] = []
        final: list[Event] = []
        for frame in frames:
            seg, made, done = self.analyzer.frame(frame)
            final += done
            if seg is not None:
                judged.append((frame, seg, made is not None))
        return judged, final

    def flush(self) -> list[Event]:
        stats = self.analyzer.stats
        stats.flows, stats.handshakes, stats.evicted_idle, stats.evicted_cap = (
            self.analyzer.flow_counters()
        )
        return self.analyzer.table.flush()


class Compiled:
    """The compiled scanner over batches of frames of one link type."""

    def __init__(self, linktype: int, stats: ScanStats) -> None:
        from treason.fastpath import TRACE_EVENT, Incremental

        self.made = TRACE_EVENT
        self.scanner = Incremental(linktype, stats, DEFAULT_MAX_FLOWS, _IDLE_NS, trace=True)

    def feed(self, frames: Sequence[Frame]) -> tuple[list[Judged], list[Event]]:
        final = self.scanner.feed(frames)
        judged: list[Judged] = []
        for frame, traced in zip(frames, self.scanner.take_trace(), strict=True):
            if traced is not None:
                seg = decode(frame)
                if not isinstance(seg, str):
                    judged.append((frame, seg, bool(traced[1] & self.made)))
        return judged, final

    def flush(self) -> list[Event]:
        return self.scanner.flush()


def engine_for(fmt: str, linktype: int, stats: ScanStats, engine: str) -> Engine:
    """``auto``: the compiled scanner for classic pcap when it is built, else the reference."""
    if engine not in ("auto", "fast", "reference"):
        raise ValueError(f"unknown engine {engine!r}")
    single_linktype = fmt in ("pcap", "pcap-ns")
    if engine == "fast" or (engine == "auto" and single_linktype and fast_available()):
        if not single_linktype:
            raise ValueError(f"the compiled scanner reads one link type; {fmt} may hold several")
        return Compiled(linktype, stats)
    return Reference(stats)
