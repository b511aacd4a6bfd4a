"""What identifies one packet at two capture points, whatever the path did to it.

A packet seen on both sides of a router, NAT or firewall keeps what its sender wrote that
devices rarely touch: TCP flags, payload length, the TCP timestamps (TSval/TSecr, which Linux
also offsets per connection, so they differ between connections) and the IPv4 identification
(a per-socket counter). Addresses, ports (NAT), TTL and checksums (every hop), the window
(shapers, normalisers) and the sequence numbers (randomising firewalls) are left out of the
content key, so a rewritten packet still finds its twin. A packet with neither timestamps nor
an IP ID (IPv6 without timestamps) has only its sequence numbers and first payload bytes to
go by; those pair only where the path leaves sequence numbers alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from treason.packets import SYN, Frame, Segment

TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
#: The timestamp option's kind and length bytes.
_TS_HEAD = bytes((8, 10))

#: Payload bytes that tell segments apart when nothing else does.
PAYLOAD_PREFIX = 8

_HEAD = struct.Struct("!HHII")

#: A one-way flow as one capture point names it: (src, sport, dst, dport, vlan).
DirKey = tuple[str, int, str, int, tuple[int, ...]]


#: Segments of a flow an event keeps from before it (an ACK overtaken by a few others still
#: has the one it shrinks from among them).
BEFORE = 4
#: Flows whose last segments are kept before the idle ones are let go.
HISTORY_FLOWS = 65536


class FlowHistory:
    """The last ``BEFORE`` segments of each flow at each point, for ``Packet.before``.

    Memory follows the active flows: once more than ``HISTORY_FLOWS`` flows are kept, those
    quiet for longer than ``idle_ns`` (the time a packet waits for its twin: a reordering
    never spans more) are let go; an event of such a flow is judged without them.
    """

    def __init__(self, idle_ns: int) -> None:
        self.idle_ns = idle_ns
        self._flows: dict[tuple[int, DirKey], tuple[Packet, ...]] = {}
        self._limit = HISTORY_FLOWS

    def add(self, pkt: Packet) -> tuple[Packet, ...]:
        """Keep ``pkt`` as its flow's latest segment; the segments kept before it."""
        flow = (pkt.point, pkt.dirkey)
        before = self._flows.get(flow, ())
        self._flows[flow] = (*before[1 - BEFORE :], pkt)
        if len(self._flows) > self._limit:
            self._let_go(pkt.seg.ts_ns)
        return before

    def _let_go(self, now_ns: int) -> None:
        """Forget the flows quiet for longer than ``idle_ns`` (on this point's clock)."""
        flows = self._flows
        for flow in [f for f, kept in flows.items() if now_ns - kept[-1].seg.ts_ns > self.idle_ns]:
            del flows[flow]
        self._limit = max(HISTORY_FLOWS, 2 * len(flows))  # a pass per doubling at most


@dataclass(slots=True, eq=False)
class Packet:
    """One TCP segment at one capture point, with what pairing and attribution need.

    ``dirkey`` is the flow as this point names it. ``mss`` is the MSS option (SYNs only),
    ``tsecr`` the timestamp echo, ``ttl`` the IPv4 TTL or IPv6 hop limit (which tells which
    point a packet passed first), each ``None`` when absent; ``prefix`` holds the first payload
    bytes, kept only when neither timestamps nor an IP ID identify the packet. ``event``
    marks a segment the engine reported as a window shrink at this point; ``matched`` says it
    was paired, and for events ``twin`` is the same packet at the other point. Every paired
    packet keeps its twin's frame number and window (``other_frame``, ``other_win``: plain
    numbers, no reference cycle), and an event keeps ``before``, the last segments of its flow
    this point saw before it (``BEFORE`` at most, oldest first): whether the one it shrinks
    from reached the other point in the same order and with the same window tells a shrink
    the path made by reordering from the receiver's own.
    """

    seg: Segment
    point: int
    dirkey: DirKey
    mss: int | None
    tsecr: int | None
    ttl: int | None
    prefix: bytes
    event: bool = False
    matched: bool = False
    twin: Packet | None = None
    other_frame: int | None = None
    other_win: int | None = None
    before: tuple[Packet, ...] = ()

    def key(self) -> tuple[object, ...]:
        """The content key: equal for the same packet at both points, different otherwise."""
        s = self.seg
        if s.tsval is not None or s.ip_id:
            return (s.flags, s.payload_len, s.tsval, self.tsecr, s.ip_id)
        return (s.flags, s.payload_len, s.seq, s.ack, self.prefix)


def fingerprint(frame: Frame, seg: Segment, point: int) -> Packet:
    """Read the MSS, TSecr, TTL and first payload bytes of ``seg`` in ``frame``.

    The decoder has already found and checked the header; it is located again by its first
    twelve bytes (ports, sequence and acknowledgement numbers), which do not depend on the
    link type or encapsulation in front of it.
    """
    data = frame.data
    off = data.find(_HEAD.pack(seg.sport, seg.dport, seg.seq, seg.ack))
    mss = tsecr = ttl = None
    prefix = b""
    if off >= 0 and len(data) >= off + 13:
        ttl = _ttl(data, off)
        doff = (data[off + 12] >> 4) * 4
        end = min(off + doff, len(data))
        if seg.tsval is not None:
            # The decoder read TSval from this option: kind, length and TSval, then TSecr.
            at = data.find(_TS_HEAD + seg.tsval.to_bytes(4, "big"), off + 20, end)
            if at >= 0 and at + 10 <= end:
                tsecr = int.from_bytes(data[at + 6 : at + 10], "big")
        elif not seg.ip_id:
            want = min(PAYLOAD_PREFIX, seg.payload_len)
            prefix = data[off + doff : off + doff + want]
            if len(prefix) < want:
                prefix = b""  # cut by the snap length: unknown, not empty
        if seg.flags & SYN:
            mss = _mss(data, off + 20, end)
    key = (seg.src, seg.sport, seg.dst, seg.dport, seg.vlan)
    return Packet(seg, point, key, mss, tsecr, ttl, prefix)


def _mss(data: bytes, i: int, end: int) -> int | None:
    """The MSS option among the TCP options from ``i`` to ``end``, None if absent."""
    while i < end:
        kind = data[i]
        if kind == TCPOPT_EOL:
            return None
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end or data[i + 1] < 2 or i + data[i + 1] > end:
            return None
        if kind == TCPOPT_MSS and data[i + 1] == 4:
            return int.from_bytes(data[i + 2 : i + 4], "big")
        i += data[i + 1]
    return None


def _ttl(data: bytes, tcp: int) -> int | None:
    """The TTL of the IP header that carries the TCP header at ``tcp`` (None if not found)."""
    for ihl in range(20, 61, 4):
        i = tcp - ihl
        if i >= 0 and data[i] == 0x40 | ihl // 4 and data[i + 9] == 6:
            return data[i + 8]
    i = tcp - 40
    if i >= 0 and data[i] >> 4 == 6 and data[i + 6] == 6:
        return data[i + 7]
    return None
