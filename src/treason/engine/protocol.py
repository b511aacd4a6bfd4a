"""The engine protocol: what ``scan`` and ``live`` ask of an engine, whichever one it is.

An engine is the decoder and the flow table for one stream of frames, with its counters. It
is fed frames in capture order, from one capture file after another (``read``), from a live
socket (``feed``, ``feed_records``), or both, and hands back each event once it is final (in
frame order). The flow table lives as long as the engine; framing (byte order, pcapng
interfaces, frame numbers, the byte offset) belongs to the one capture being read.

Two engines implement it and must agree event for event and counter for counter:
``treason.engine.reference`` (the readable Python model) and ``treason.engine.compiled`` (the
C scanner). Both add their counts to the ``ScanStats`` they were created with, before handing
out the events those counts belong to.

Two options are given when an engine is made (``treason.engine.choose.new_engine``), and both
engines honour them alike: ``capture_filter`` (a ``treason.capfilter.CaptureFilter``: frames its
program rejects are counted as skipped and never decoded) and ``series`` (a
``treason.series.SeriesCollector`` the engine adds the plot series of connections with events
to, as they are evicted and at ``flush``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Protocol

from treason.engine.stats import ScanStats
from treason.events import Event
from treason.packets import Frame
from treason.readers import Capture

#: Bits of a ``FlowMark``: the frame's segment made an event ...
MARK_EVENT = 1
#: ... that was not a retraction when it was made ...
MARK_SHOWN = 2
#: ... of a zero window (which may still become kernel-visible while it is open).
MARK_ZERO = 4

#: Per frame fed with flow marks on: the frame's flow (one key per ``FlowTable.key``, the same
#: again after an eviction or a reused 4-tuple) and its ``MARK_*`` bits; None when the frame
#: is not a TCP segment.
FlowMark = tuple[Hashable, int]

#: Bytes laid out as pcap records (``treason.engine.compiled.RECORD`` headers, each followed by
#: its captured bytes), back to back.
Records = bytes | bytearray | memoryview


class Engine(Protocol):
    """Decoder + flow table + counters over frames that arrive in capture order."""

    stats: ScanStats
    #: Whether ``feed_records`` is this engine's fast path (a live loop then reads the socket's
    #: packets as records, see ``treason.live.capture.PacketSocket.read_records``).
    prefers_records: bool

    def read(self, capture: Capture, base: int = 0) -> Iterator[Event]:
        """Frame ``capture`` and analyse every frame of it; yield the events that became final.

        Its frames are numbered ``base + 1``, ``base + 2``, ... (``segrec.position``: which
        capture of a set and which frame in it).

        Open events stay open (a next capture may continue the flows): ``flush`` ends the
        stream. Damage raises the capture's ``CaptureError`` (``TruncatedCapture`` when it ends
        inside a record) after every event final before it was yielded.
        """
        ...

    def split(self, capture: Capture, buckets: int, base: int = 0) -> Iterator[list[bytes]]:
        """Split mode: frame and decode ``capture`` into segment records
        (``treason.engine.segrec``), in ``buckets`` buckets by flow, instead of analysing it;
        yield each batch's records per bucket. Frames, skipped frames and segments are counted
        here. With 0 buckets only the frames' time span is kept (``span``). An engine that
        splits does nothing else, always into the same number of buckets."""
        ...

    def span(self) -> tuple[int, int, int, int | None] | None:
        """(first frame's time, latest frame time, first frame's link type, latest segment
        time or None) of the frames split so far; None before the first. The latest segment
        time is the flow table's clock after them: what the next capture of a set starts
        from."""
        ...

    def feed_segments(self, records: Records, base_clock: int) -> list[Event]:
        """Analyse segment records (``split``'s output) in order; the table's clock at each is
        at least ``base_clock``. Frames and segments were counted when they were split."""
        ...

    def tick(self, clock: int) -> list[Event]:
        """The table's clock reaches ``clock`` as a segment analysed elsewhere would have made
        it (``FlowTable.tick``): open events due are final, idle flows evicted."""
        ...

    def feed(self, frames: Sequence[Frame]) -> list[Event]:
        """Analyse ``frames`` (in capture order, numbered from 1 in the order fed, as a live
        capture numbers them); the events that became final, in frame order."""
        ...

    def feed_records(self, records: Records, linktype: int) -> list[Event]:
        """As ``feed``, for frames laid out as pcap records, all of link type ``linktype``
        (what the live socket gives without a Python object per packet). They are numbered
        on from the frames fed before."""
        ...

    def advance(self, now_ns: int) -> list[Event]:
        """The clock reaches ``now_ns`` without a packet (``FlowTable.advance``)."""
        ...

    def flush(self) -> list[Event]:
        """The stream is over: every open event is final (``FlowTable.flush``)."""
        ...

    def mark_flows(self) -> None:
        """From now on, record a ``FlowMark`` per frame fed (``take_marks``)."""
        ...

    def take_marks(self) -> list[FlowMark | None]:
        """The flow marks of the frames fed since the last call, in frame order."""
        ...

    @property
    def active_flows(self) -> int:
        """Flows in the flow table now."""
        ...


def count_events(stats: ScanStats, events: Sequence[Event]) -> Sequence[Event]:
    """Count final events by class (retractions too) as an engine hands them out."""
    counts = stats.events
    for event in events:
        counts[event.cls.label] += 1
    return events
