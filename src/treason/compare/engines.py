"""The engine over each capture being compared: its segments, its events, which frames made one.

Comparison needs, per frame, the decoded segment (to fingerprint it) and whether the engine
judged it a window shrink (to keep it until its twin is known), besides the final events. Any
engine gives that through its flow marks (``Engine.mark_flows``), fed batches of frames as
``live`` feeds it. The compiled scanner takes one link type per stream, so it runs on classic
pcap files, and the reference model on pcapng, where interfaces of other link types can appear
at any point. Both engines give the same events.
"""

from __future__ import annotations

from collections.abc import Sequence

from treason.decode import decode
from treason.engine.choose import ENGINES, compiled_available, new_engine
from treason.engine.protocol import MARK_EVENT, Engine
from treason.engine.stats import ScanStats
from treason.events import Event
from treason.packets import Frame, Segment
from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS

#: A judged frame: its segment, and whether the engine made an event of it.
Judged = tuple[Frame, Segment, bool]

_IDLE_NS = int(DEFAULT_IDLE_TIMEOUT * 1e9)


class Judge:
    """An engine over one capture's frames, saying which TCP segments made an event."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        engine.mark_flows()

    def feed(self, frames: Sequence[Frame]) -> tuple[list[Judged], list[Event]]:
        """The TCP segments among ``frames`` and the events that became final."""
        final = self.engine.feed(frames)
        judged: list[Judged] = []
        for frame, mark in zip(frames, self.engine.take_marks(), strict=True):
            if mark is not None:
                seg = decode(frame)
                if not isinstance(seg, str):
                    judged.append((frame, seg, bool(mark[1] & MARK_EVENT)))
        return judged, final

    def flush(self) -> list[Event]:
        """The capture ended: the events still open."""
        return self.engine.flush()


def engine_for(fmt: str, stats: ScanStats, engine: str) -> Judge:
    """``auto``: the compiled scanner for classic pcap when it is built, else the reference."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    single_linktype = fmt == "pcap"
    if engine == "fast" and not single_linktype:
        raise ValueError(f"the compiled scanner reads one link type; {fmt} may hold several")
    fast = engine == "fast" or (engine == "auto" and single_linktype and compiled_available())
    return Judge(new_engine("fast" if fast else "reference", stats, DEFAULT_MAX_FLOWS, _IDLE_NS))
