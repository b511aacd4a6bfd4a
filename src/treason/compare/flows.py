"""What the path did to each paired connection: windows, options and sequence numbers.

Every paired segment is compared field by field between the two points. Per direction this
counts the windows the path changed (shrink or not), the offsets it added to sequence
numbers (a randomising firewall), and which point the segments pass first: a router lowers
the TTL, so the point that sees the higher TTL is upstream. The SYNs of both points give the
MSS and window-scale options each end sent and each end received. Where the TTL does not
change between the points (a bridge, a transparent IPS), the delays say it instead: a segment
travelling from NEAR to FAR arrives later there, so its direction has the larger mean of
(far time - near time) of the two, whatever the offset between the clocks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from treason.compare.fingerprint import DirKey, Packet
from treason.compare.pairing import FAR, NEAR, reverse
from treason.packets import ACK, SYN

#: Distinct sequence offsets remembered per direction (more means no constant offset).
MAX_OFFSETS = 8

#: Shift limit of RFC 7323: larger window-scale values are used as 14.
MAX_SHIFT = 14


@dataclass
class Direction:
    """One direction of a paired connection, named as each point sees it."""

    near: DirKey
    far: DirKey
    paired: int = 0
    carrying: int = 0  # paired segments with payload
    win_changed: int = 0
    #: first rewrite: (near frame, near window, far frame, far window)
    example: tuple[int, int, int, int] | None = None
    ttl_votes: int = 0  # > 0: NEAR saw higher TTLs (NEAR is upstream), < 0: FAR did
    delay_ns: int = 0  # sum of (far time - near time) over the paired segments
    by_time: int | None = None  # the upstream point by delays, set by ``settle``
    seq_offsets: Counter[int] = field(default_factory=Counter)  # far seq - near seq

    def add(self, near: Packet, far: Packet) -> None:
        self.paired += 1
        if near.seg.payload_len:
            self.carrying += 1
        if near.seg.win != far.seg.win:
            self.win_changed += 1
            if self.example is None:
                self.example = (near.seg.frame, near.seg.win, far.seg.frame, far.seg.win)
        if near.ttl is not None and far.ttl is not None and near.ttl != far.ttl:
            self.ttl_votes += 1 if near.ttl > far.ttl else -1
        self.delay_ns += far.seg.ts_ns - near.seg.ts_ns
        offset = (far.seg.seq - near.seg.seq) & 0xFFFFFFFF
        if offset in self.seq_offsets or len(self.seq_offsets) < MAX_OFFSETS:
            self.seq_offsets[offset] += 1

    @property
    def upstream(self) -> int | None:
        """The point these segments pass first (NEAR or FAR), None when nothing says."""
        if self.ttl_votes == 0:
            return self.by_time
        return NEAR if self.ttl_votes > 0 else FAR

    def settle(self, back: Direction | None) -> None:
        """Compare the delays with the opposite direction's (``back``) to find upstream."""
        if back is None or not self.paired or not back.paired:
            return
        mine, theirs = self.delay_ns / self.paired, back.delay_ns / back.paired
        if mine != theirs:
            self.by_time = NEAR if mine > theirs else FAR

    @property
    def seq_offset(self) -> int | None:
        """The constant offset the path added to sequence numbers, None if not one offset."""
        if len(self.seq_offsets) != 1:
            return None
        return next(iter(self.seq_offsets))


@dataclass(frozen=True)
class Rewrite:
    """A header field of one direction that differs between the points.

    ``what`` is ``mss``, ``window-scale`` or ``sequence``; ``segment`` names the packet
    (``SYN``, ``SYN-ACK``, or ``every segment``); ``sender`` is its sender as NEAR names it.
    ``None`` stands for an absent option.
    """

    what: str
    segment: str
    sender: DirKey
    near: int | None
    far: int | None
    upstream: int | None = None  # the point the segment passed first, when known

    @property
    def before_after(self) -> tuple[int | None, int | None]:
        """The value as sent and as delivered (NEAR's first when the order is unknown)."""
        return (self.far, self.near) if self.upstream == FAR else (self.near, self.far)

    def to_dict(self) -> dict[str, object]:
        src, sport, *_ = self.sender
        return {
            "what": self.what,
            "segment": self.segment,
            "sender": f"{src}:{sport}",
            "near": self.near,
            "far": self.far,
            "first_seen_at": None if self.upstream is None else ("near", "far")[self.upstream],
        }


class Handshakes:
    """The last SYN (or SYN-ACK) each one-way flow sent, per point."""

    def __init__(self) -> None:
        self.syns: tuple[dict[DirKey, Packet], dict[DirKey, Packet]] = ({}, {})

    def add(self, pkt: Packet) -> None:
        if pkt.seg.flags & SYN:
            self.syns[pkt.point][pkt.dirkey] = pkt

    def shift(self, point: int, receiver: DirKey) -> int | None:
        """The shift ``point``'s view of the handshake gives ``receiver``'s windows, or None.

        As RFC 7323 says: the receiver's own window-scale value when both SYNs carried the
        option, 0 when either lacked it; None when the handshake was not captured there.
        """
        mine = self.syns[point].get(receiver)
        theirs = self.syns[point].get(reverse(receiver))
        if mine is None or theirs is None:
            return None
        if mine.seg.ws is None or theirs.seg.ws is None:
            return 0
        return min(mine.seg.ws, MAX_SHIFT)

    def rewrites(self, near: DirKey, far: DirKey, upstream: int | None = None) -> list[Rewrite]:
        """Options of ``near``'s SYN that the path changed on the way (either way round)."""
        a, b = self.syns[NEAR].get(near), self.syns[FAR].get(far)
        if a is None or b is None:
            return []
        segment = "SYN-ACK" if a.seg.flags & ACK else "SYN"
        out = []
        if a.mss != b.mss:
            out.append(Rewrite("mss", segment, near, a.mss, b.mss, upstream))
        if a.seg.ws != b.seg.ws:
            out.append(Rewrite("window-scale", segment, near, a.seg.ws, b.seg.ws, upstream))
        return out
