"""Scan captures for window shrinks: readers → decoder → flow table → events.

Two engines produce the same events and the same counters: ``reference`` runs the readable
model one Python object at a time; ``fast`` (the compiled scanner in ``treason.fastpath``) does
the same work in C over whole chunks. ``auto`` picks the fast one when it is built.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from treason.errors import CaptureError, TruncatedCapture
from treason.events import Event, Severity
from treason.model import FlowTable, ModelStats
from treason.packets import Frame, Segment

if TYPE_CHECKING:
    from treason.capfilter import CaptureFilter
    from treason.series import SeriesCollector

DEFAULT_MAX_FLOWS = 500_000
DEFAULT_IDLE_TIMEOUT = 600.0  # seconds; longer than Linux's 240 s zero-window give-up

Source = str | os.PathLike | BinaryIO


@dataclass
class ScanStats:
    """What a scan saw, for the capture summary; filled in as events are yielded."""

    frames: int = 0
    segments: int = 0  # decoded TCP segments
    skipped: Counter = field(default_factory=Counter)  # frames not analysed, by reason
    flows: int = 0
    handshakes: int = 0  # flows whose SYN and SYN-ACK were both captured
    evicted_idle: int = 0
    evicted_cap: int = 0
    events: Counter = field(default_factory=Counter)  # by class label, retractions included
    model: ModelStats = field(default_factory=ModelStats)
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: ScanStats) -> None:
        for name in ("frames", "segments", "flows", "handshakes", "evicted_idle", "evicted_cap"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped.update(other.skipped)
        self.events.update(other.events)
        for name, value in asdict(other.model).items():
            setattr(self.model, name, getattr(self.model, name) + value)
        self.warnings.extend(other.warnings)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped"] = dict(self.skipped)
        d["events"] = dict(self.events)
        return d


def source_name(source: Source) -> str:
    if source == "-":
        return "<stdin>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", "<stream>")


def fast_available() -> bool:
    try:
        from treason import fastpath
    except ImportError:
        return False
    return fastpath.available()


def scan(
    source: Source,
    *,
    retractions: bool = False,
    engine: str = "auto",
    max_flows: int = DEFAULT_MAX_FLOWS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    stats: ScanStats | None = None,
    series: SeriesCollector | None = None,
    capture_filter: CaptureFilter | None = None,
) -> Iterator[Event]:
    """Yield every window-shrink event of one capture, in frame order.

    ``source`` is a path, ``"-"`` for standard input, or a binary stream. Retractions (edge
    moved back by less than the scale granularity) are counted in ``stats`` and yielded only
    with ``retractions=True``. A capture that ends inside a record is reported up to that
    point with a warning in ``stats.warnings``; other damage raises ``CaptureError`` after
    every event before it has been yielded. ``series``, when given, collects the graph series
    of the connections with events in the same pass (``treason.series``); ``capture_filter``
    analyses only the frames a tcpdump expression keeps (``treason.capfilter``).
    """
    stats = stats if stats is not None else ScanStats()
    name = source_name(source)
    if engine == "auto":
        engine = "fast" if fast_available() else "reference"
    if engine == "fast":
        from treason import fastpath

        events = fastpath.scan(
            source,
            name,
            stats,
            max_flows,
            int(idle_timeout * 1e9),
            series=series,
            capture_filter=capture_filter,
        )
    elif engine == "reference":
        events = _reference(
            source, name, stats, max_flows, int(idle_timeout * 1e9), series, capture_filter
        )
    else:
        raise ValueError(f"unknown engine {engine!r}")
    try:
        for event in events:
            event.file = name
            stats.events[event.cls.label] += 1
            if retractions or event.cls is not Severity.RETRACTION:
                yield event
    except TruncatedCapture as exc:
        stats.warnings.append(str(exc))


class Analyzer:
    """The reference pipeline for one stream of frames: decoder → flow table, with counters.

    ``scan``'s reference engine runs it over a file and ``live`` over a socket, so both count
    and judge packets the same way.
    """

    def __init__(self, stats: ScanStats, max_flows: int, idle_timeout_ns: int) -> None:
        from treason.decode import decode

        self._decode = decode
        self.stats = stats
        self.table = FlowTable(
            max_flows=max_flows, idle_timeout_ns=idle_timeout_ns, stats=stats.model
        )

    def frame(self, frame: Frame) -> tuple[Segment | None, Event | None, list[Event]]:
        """Decode and judge one frame.

        Returns its segment (None if skipped), the event it made (which may still change
        while it is open, see ``FlowTable``) and the events that became final, in frame order.
        """
        stats = self.stats
        stats.frames += 1
        seg = self._decode(frame)
        if isinstance(seg, str):
            stats.skipped[seg] += 1
            return None, None, []
        stats.segments += 1
        return seg, *self.table.process(seg)

    def flow_counters(self) -> tuple[int, int, int, int]:
        t = self.table
        return t.flows, t.handshakes, t.evicted_idle, t.evicted_cap


def _reference(
    source: Source,
    name: str,
    stats: ScanStats,
    max_flows: int,
    idle_timeout_ns: int,
    series: SeriesCollector | None = None,
    capture_filter: CaptureFilter | None = None,
) -> Iterator[Event]:
    from treason.capfilter import FILTERED
    from treason.readers import open_frames

    analyzer = Analyzer(stats, max_flows, idle_timeout_ns)
    try:
        damage = None
        try:
            for frame in open_frames(source, name):
                if capture_filter is not None and not capture_filter.keeps(frame):
                    stats.frames += 1
                    stats.skipped[FILTERED] += 1
                    continue
                seg, made, final = analyzer.frame(frame)
                if series is not None and seg is not None:
                    series.reference(seg, made is not None, analyzer.table)
                yield from final
        except CaptureError as exc:
            damage = exc  # it ends the capture: first report every event before it
        yield from analyzer.table.flush()
        if damage is not None:
            raise damage
    finally:
        flows, handshakes, evicted_idle, evicted_cap = analyzer.flow_counters()
        stats.flows += flows
        stats.handshakes += handshakes
        stats.evicted_idle += evicted_idle
        stats.evicted_cap += evicted_cap
