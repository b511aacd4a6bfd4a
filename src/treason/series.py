"""The time-sequence series behind a plot, collected in the same pass that finds the events.

Events say where a receiver took window back; to *show* it a graph needs what happened around
it: the data segments the sender sent and the ACKs and windows the receiver answered with.
Which connections will have events is known only when the capture ends, so every connection
keeps a bounded sample while the scan runs, and only those that made an event are kept at the
end. Collecting is an option of the engines (``series=`` of ``treason.engine.choose.new_engine``
and of ``treason.scanner.scan``): both collect the same points by the same rule into a
``SeriesCollector``, the reference engine with ``SeriesSampler`` here in Python and the compiled
one in ``_fastscan.c`` (its "plot series" section); ``tests/test_series.py`` checks that they
agree point for point.

The rule, per connection (both directions together, points numbered from 0 in capture order):

- every point is kept while the connection has at most ``cap`` sampled points;
- past that, the sampling stride doubles and the sampled points not on the new stride are
  dropped (an overview: one point in ``stride``);
- a segment that makes an event is kept with the ``BEFORE`` points before it and the ``AFTER``
  points after it, whatever the stride: the detail around every event is never thinned, so
  memory is ``cap`` points per open connection plus ``BEFORE + AFTER + 1`` per event, linear
  in the number of events;
- the last point seen is always part of the result, so the graph ends where the flow did;
- a connection the flow table evicts (idle, over ``--max-flows``) ends its series: kept when it
  made an event, freed otherwise. A flow that resumes starts a new series, as it starts a new
  connection in the model;
- the end of the stream (the engine's ``flush``) ends the series of every connection with an
  event still in the table.

``build`` turns the points of one direction into a ``DirectionSeries``: sequence numbers
relative to the sender's first seen sequence number and unwrapped across 2**32 with serial
arithmetic, so a long transfer climbs steadily instead of falling back to zero.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from treason import seq
from treason.events import Event
from treason.packets import ACK, FIN, RST, SYN, Segment

if TYPE_CHECKING:
    from treason.engine.stats import ScanStats

#: Points kept before and after each segment that makes an event.
BEFORE = 40
AFTER = 25
#: Sampled (overview) points per connection before the stride doubles.
CAP = 4096

#: One point: (ts_ns, frame, seq, ack, payload_len, win, flags, from_first), the layout of the
#: compiled scanner's points (``POINT``, which it exports as ``SERIES_POINT``). ``from_first``:
#: sent by the connection key's first endpoint.
Point = tuple[int, int, int, int, int, int, int, int]
POINT = struct.Struct("=qQIIIHBB")
#: A connection: ``FlowTable.flow_key``, its tag path (VLAN ids, tunnel identifiers; a paired
#: connection's first path) and both endpoints, the lower (address, port) first.
ConnKey = tuple[tuple[int, ...], tuple[str, int], tuple[str, int]]
#: One plotted direction: the receiver that shrank (``src``), the data sender (``dst``), the
#: VLAN ids and tunnel layers the receiver's segments came in (``Event.vlan``, ``Event.tunnel``).
Key = tuple[str, int, str, int, tuple[int, ...], tuple[str, ...]]

_I64 = (1 << 63) - 1


def key_of(e: Event) -> Key:
    return (e.src, e.sport, e.dst, e.dport, tuple(e.vlan), tuple(e.tunnel))


class _Conn:
    """One connection's series while the scan runs (see the module docstring)."""

    __slots__ = ("after", "events", "kept", "n", "overview", "ring", "stride")

    def __init__(self) -> None:
        self.kept: list[list[Any]] = []  # [index, detail, point]
        self.n = 0
        self.stride = 1
        self.overview = 0
        self.ring: deque[tuple[int, Point]] | None = None  # the BEFORE points before this one
        self.after = 0
        self.events = 0

    def add(self, point: Point, made_event: bool, cap: int) -> None:
        i = self.n
        self.n += 1
        kept = self.kept
        if made_event:
            self.events += 1
            self._context(i)
            kept.append([i, True, point])
            self.after = AFTER
        elif self.after:
            self.after -= 1
            kept.append([i, True, point])
        elif i % self.stride == 0:
            kept.append([i, False, point])
            self.overview += 1
            if self.overview > cap:
                self._thin()
        if self.ring is not None:
            self.ring.append((i, point))

    def _context(self, i: int) -> None:
        """Keep the ``BEFORE`` points before index ``i`` as detail."""
        lo = i - BEFORE
        kept = self.kept
        if self.ring is None:  # stride 1 so far: they are all kept already
            for entry in reversed(kept):
                if entry[0] < lo:
                    break
                if not entry[1]:
                    entry[1] = True
                    self.overview -= 1
            return
        while kept and kept[-1][0] >= lo:
            if not kept.pop()[1]:
                self.overview -= 1
        kept.extend([j, True, p] for j, p in self.ring)

    def _thin(self) -> None:
        if self.ring is None:  # every point was kept: the ring starts as the last BEFORE
            self.ring = deque(((e[0], e[2]) for e in self.kept[-BEFORE - 1 : -1]), BEFORE)
        self.stride *= 2
        stride = self.stride
        self.kept = [e for e in self.kept if e[1] or e[0] % stride == 0]
        self.overview = sum(not e[1] for e in self.kept)

    def points(self) -> list[Point]:
        """The kept points, and the last point seen: the graph ends where the flow ended."""
        out = [e[2] for e in self.kept]
        if self.ring and self.ring[-1][0] != self.kept[-1][0]:
            out.append(self.ring[-1][1])
        return out


@dataclass
class SeriesCollector:
    """The series of every connection that made an event, from one engine's stream.

    Pass it to ``treason.scanner.scan(..., series=collector)`` (or to an engine): the engine
    adds each connection's points as the connection ends and, at ``flush``, those of the
    connections still in its table. ``result`` then holds them, by connection, in the order
    they ended. ``cap`` is the overview size per connection (the module docstring's rule).
    """

    cap: int = CAP
    _done: list[tuple[ConnKey, list[Point]]] = field(default_factory=list)

    def add(self, key: ConnKey, points: list[Point]) -> None:
        """A connection that made an event ended its series."""
        self._done.append((key, points))

    def result(self) -> list[tuple[ConnKey, list[Point]]]:
        """Every connection that made an event and its points, in the order they ended."""
        return list(self._done)


class SeriesSampler:
    """The reference engine's side of the rule: every connection's ``_Conn`` while it lives.

    The flow table evicts least recently active flows first, the order the sampler keeps its
    connections in, so as many as the table evicted since the last segment are ended here,
    oldest first (the table's eviction counters in ``stats`` say how many).
    """

    def __init__(self, collector: SeriesCollector, stats: ScanStats) -> None:
        self.collector = collector
        self._stats = stats
        self._live: OrderedDict[ConnKey, _Conn] = OrderedDict()
        self._evicted = self._evictions()

    def _evictions(self) -> int:
        return self._stats.evicted_idle + self._stats.evicted_cap

    def segment(self, seg: Segment, key: ConnKey, made_event: bool) -> None:
        """One segment the model judged, of the flow ``key`` (``made_event``: it made one)."""
        evicted = self._evictions()
        live = self._live
        while self._evicted < evicted:
            self._evicted += 1
            old, conn = live.popitem(last=False)
            if conn.events:
                self.collector.add(old, conn.points())
        conn = live.pop(key) if key in live else _Conn()
        live[key] = conn
        first = (seg.src, seg.sport) == key[1]
        ts = max(-_I64 - 1, min(seg.ts_ns, _I64))
        point = (
            ts,
            seg.frame,
            seg.seq,
            seg.ack,
            min(seg.payload_len, 0xFFFFFFFF),
            seg.win,
            seg.flags,
            int(first),
        )
        conn.add(point, made_event, self.collector.cap)

    def finish(self) -> None:
        """The stream is over: the connections with events end their series (one that goes on
        starts a new one, as after an eviction)."""
        for key, conn in list(self._live.items()):
            if conn.events:
                self.collector.add(key, conn.points())
                self._live[key] = _Conn()


# --------------------------------------------------------------------------- graphs


@dataclass(slots=True)
class Sent:
    """A sender segment: ``start..end`` relative sequence numbers (SYN and FIN count one)."""

    t: float
    frame: int
    start: int
    end: int
    retransmit: bool
    flags: int


@dataclass(slots=True)
class Acked:
    """A receiver ACK: the acknowledged sequence and the right edge it offered."""

    t: float
    frame: int
    ack: int
    edge: int
    win: int


@dataclass(slots=True)
class Marked:
    """An event placed on the graph: relative edges and ``snd_nxt`` at its time."""

    event: Event
    t: float
    old_edge: int
    new_edge: int
    snd_nxt: int


@dataclass
class DirectionSeries:
    """Everything one graph draws. Times are seconds since ``t0`` (epoch seconds)."""

    key: Key
    scale: int
    events: list[Event]
    file: str = ""
    t0: float = 0.0
    seq0: int = 0  # absolute sequence number drawn as 0: the sender's first seen
    sent: list[Sent] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    marks: list[Marked] = field(default_factory=list)

    @property
    def retransmits(self) -> int:
        return sum(s.retransmit for s in self.sent)


def directions(
    series: Iterable[tuple[ConnKey, list[Point]]], events: Iterable[Event], file: str = ""
) -> dict[Key, DirectionSeries]:
    """The series of every direction ``events`` fall in, from the series of their connections.

    An event names the path of the segment that made it, not its connection's key (a
    connection whose directions carry different tags has its first direction's path as key),
    so it is found by its frame: the segment that makes an event is always among its
    connection's points.
    """
    by_key: dict[Key, list[Event]] = {}
    for e in events:
        by_key.setdefault(key_of(e), []).append(e)
    wanted = {e.frame for evs in by_key.values() for e in evs}
    by_conn: dict[ConnKey, list[Point]] = {}
    conn_of: dict[int, ConnKey] = {}
    for ckey, pts in series:
        by_conn.setdefault(ckey, []).extend(pts)  # an evicted flow that resumed: later points
        conn_of.update((p[1], ckey) for p in pts if p[1] in wanted)
    out = {}
    for k, evs in by_key.items():
        found = next((conn_of[e.frame] for e in evs if e.frame in conn_of), None)
        pts = by_conn[found] if found is not None else []
        sender_first = found is not None and found[1] == (k[2], k[3])
        packets = [(bool(p[7]) == sender_first, p) for p in pts]
        out[k] = build(k, evs, packets, file)
    return out


def build(
    key: Key, events: Sequence[Event], packets: Sequence[tuple[bool, Point]], file: str = ""
) -> DirectionSeries:
    """Relative, unwrapped series of one direction from its points (from sender?, point).

    The edges use the events' window shift: that is the shift treason judged them with, so the
    drawn right edge steps down exactly where an event says it did.
    """
    scale = events[-1].scale if events else 0
    series = DirectionSeries(key=key, scale=scale, events=list(events), file=file)
    if not packets:
        for e in events:
            series.marks.append(_mark(e, 0.0, 0, e.ack))
        return series
    t0_ns = packets[0][1][0]
    series.t0 = t0_ns / 1e9
    first = next((p for from_sender, p in packets if from_sender), None)
    base = first[2] if first is not None else packets[0][1][3]
    series.seq0 = base
    # Serial arithmetic from the last value seen: each step is less than 2**31, so the running
    # sum is the true distance however many times the 32-bit numbers wrapped.
    ref_raw, ref_rel = base, 0

    def rel(v: int) -> int:
        nonlocal ref_raw, ref_rel
        ref_rel += seq.diff(v, ref_raw)
        ref_raw = v
        return ref_rel

    by_frame = {e.frame: e for e in events}
    highest: int | None = None
    for from_sender, p in packets:
        ts, frame, sq, ack_raw, plen, win, flags, _ = p
        t = (ts - t0_ns) / 1e9
        if from_sender:
            if flags & RST:
                continue
            start = rel(sq)
            span = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            if span == 0:
                continue
            end = start + span
            retransmit = highest is not None and start < highest
            highest = end if highest is None else max(highest, end)
            series.sent.append(Sent(t, frame, start, end, retransmit, flags))
            continue
        if not flags & ACK or flags & RST:
            continue
        ack = rel(ack_raw)
        shift = 0 if flags & SYN else scale
        series.acked.append(Acked(t, frame, ack, ack + (win << shift), win))
        if frame in by_frame:
            series.marks.append(_mark(by_frame.pop(frame), t, ack, ack_raw))
    for e in by_frame.values():  # not among the points: place it by its own numbers
        ack = ref_rel + seq.diff(e.ack, ref_raw)
        series.marks.append(_mark(e, e.time - series.t0, ack, e.ack))
    series.marks.sort(key=lambda m: m.event.frame)
    return series


def _mark(e: Event, t: float, ack_rel: int, ack_raw: int) -> Marked:
    return Marked(
        event=e,
        t=t,
        old_edge=ack_rel + seq.diff(e.old_edge, ack_raw),
        new_edge=ack_rel + seq.diff(e.new_edge, ack_raw),
        snd_nxt=ack_rel + seq.diff(e.snd_nxt, ack_raw),
    )
