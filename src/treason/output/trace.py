"""The time-sequence series behind a plot: one direction of a connection, read from a capture.

Events say where a receiver took window back; to *show* it the graph needs what happened
around it: every data segment the sender sent and every ACK and window the receiver answered
with. Only the directions being plotted are kept, so a big capture costs memory for those
flows alone. Sequence numbers are made relative to the sender's first seen sequence number
and unwrapped across 2**32 with serial arithmetic, so a long transfer climbs steadily instead
of falling back to zero.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from treason import seq
from treason.decode import decode
from treason.errors import CaptureError
from treason.events import Event
from treason.packets import ACK, FIN, RST, SYN, Segment
from treason.readers import open_frames

#: One plotted direction: the receiver that shrank (``src``) and the data sender (``dst``).
Key = tuple[str, int, str, int, tuple[int, ...]]


def key_of(e: Event) -> Key:
    return (e.src, e.sport, e.dst, e.dport, tuple(e.vlan))


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
class Trace:
    """Everything one graph draws. Times are seconds since ``t0`` (epoch seconds)."""

    key: Key
    scale: int
    events: list[Event]
    t0: float = 0.0
    seq0: int = 0  # absolute sequence number drawn as 0: the sender's first seen
    sent: list[Sent] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    marks: list[Marked] = field(default_factory=list)

    @property
    def retransmits(self) -> int:
        return sum(s.retransmit for s in self.sent)


def read_traces(path: str | os.PathLike[str], events: Iterable[Event]) -> dict[Key, Trace]:
    """The series of every direction that ``events`` fall in, from one capture file.

    The capture is read again with the reference reader and decoder; damage after the valid
    part ends the reading quietly, as the scan that found the events has reported it already.
    """
    by_key: dict[Key, list[Event]] = {}
    for e in events:
        by_key.setdefault(key_of(e), []).append(e)
    sender_side = {(k[2], k[3], k[0], k[1], k[4]): k for k in by_key}
    raw: dict[Key, list[tuple[bool, Segment]]] = {k: [] for k in by_key}  # (from sender, seg)
    try:
        for frame in open_frames(path):
            s = decode(frame)
            if isinstance(s, str):
                continue
            fk = (s.src, s.sport, s.dst, s.dport, s.vlan)
            if fk in raw:
                raw[fk].append((False, s))
            elif fk in sender_side:
                raw[sender_side[fk]].append((True, s))
    except CaptureError:
        pass
    return {k: build(k, evs, raw[k]) for k, evs in by_key.items()}


def build(key: Key, events: Sequence[Event], packets: Sequence[tuple[bool, Segment]]) -> Trace:
    """Relative, unwrapped series from the raw segments of one direction, in capture order.

    The edges use the events' window shift: that is the shift treason judged them with, so the
    drawn right edge steps down exactly where an event says it did.
    """
    scale = events[-1].scale if events else 0
    trace = Trace(key=key, scale=scale, events=list(events))
    if not packets:
        return trace
    trace.t0 = packets[0][1].ts_ns / 1e9
    first = next((p for from_sender, p in packets if from_sender), None)
    base = first.seq if first is not None else packets[0][1].ack
    trace.seq0 = base
    # Serial arithmetic from the last value seen: each step is less than 2**31, so the running
    # sum is the true distance however many times the 32-bit numbers wrapped.
    ref_raw, ref_rel = base, 0

    def rel(v: int) -> int:
        nonlocal ref_raw, ref_rel
        ref_rel += seq.diff(v, ref_raw)
        ref_raw = v
        return ref_rel

    by_frame = {e.frame: e for e in events}
    t0_ns = packets[0][1].ts_ns
    highest: int | None = None
    for from_sender, p in packets:
        t = (p.ts_ns - t0_ns) / 1e9
        if from_sender:
            if p.flags & RST:
                continue
            start = rel(p.seq)
            span = p.payload_len + (1 if p.flags & SYN else 0) + (1 if p.flags & FIN else 0)
            if span == 0:
                continue
            end = start + span
            retransmit = highest is not None and start < highest
            highest = end if highest is None else max(highest, end)
            trace.sent.append(Sent(t, p.frame, start, end, retransmit, p.flags))
            continue
        if not p.flags & ACK or p.flags & RST:
            continue
        ack = rel(p.ack)
        shift = 0 if p.flags & SYN else scale
        trace.acked.append(Acked(t, p.frame, ack, ack + (p.win << shift), p.win))
        e = by_frame.pop(p.frame, None)
        if e is not None:
            trace.marks.append(_mark(e, t, ack, p.ack))
    for e in by_frame.values():  # not among the decoded segments: place it by its own numbers
        ack = ref_rel + seq.diff(e.ack, ref_raw)
        trace.marks.append(_mark(e, e.time - trace.t0, ack, e.ack))
    trace.marks.sort(key=lambda m: m.event.frame)
    return trace


def _mark(e: Event, t: float, ack_rel: int, ack_raw: int) -> Marked:
    return Marked(
        event=e,
        t=t,
        old_edge=ack_rel + seq.diff(e.old_edge, ack_raw),
        new_edge=ack_rel + seq.diff(e.new_edge, ack_raw),
        snd_nxt=ack_rel + seq.diff(e.snd_nxt, ack_raw),
    )
