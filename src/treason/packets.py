"""The packet record: what the rest of treason needs to know about one captured TCP segment.

Capture readers yield raw frames; the decoder turns each frame into one ``Segment`` (or a skip
reason). Everything after that (flow table, endpoint model, events) sees only segments, so the
model is independent of link types, file formats and the capture point.
"""

from __future__ import annotations

from dataclasses import dataclass

# TCP header flag bits, as on the wire.
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80


@dataclass(frozen=True, slots=True)
class Frame:
    """One record of a capture file, before decoding.

    ``number`` is 1-based and counts every record of the file (as Wireshark's ``frame.number``),
    ``ts_ns`` is the capture time in nanoseconds since the Unix epoch, ``linktype`` the
    LINKTYPE_* value of the record's interface, ``data`` the captured bytes (possibly cut by the
    snap length) and ``orig_len`` the length on the wire.
    """

    number: int
    ts_ns: int
    linktype: int
    data: bytes
    orig_len: int


@dataclass(frozen=True, slots=True)
class Segment:
    """One decoded TCP segment.

    ``payload_len`` comes from the IP header's length fields, never from the captured length,
    so segments cut by a snap length still carry their true size. ``ws`` is the window-scale
    option's shift count as sent (not yet capped), or ``None`` when the option is absent.
    ``vlan`` lists the 802.1Q/802.1ad ids outermost first (empty when untagged); it is part of
    the flow key. ``ip_id`` is the IPv4 identification (0 for IPv6); with ``checksum`` it lets the
    model recognise the exact duplicate copies a span port makes. ``tsval`` is the TCP
    timestamp option's TSval (RFC 7323), ``None`` when absent: like PAWS, the model uses it to
    recognise reordered old window updates.

    A segment that came through tunnels is a ``TunnelledSegment``; for the others ``path`` and
    ``outer`` are empty.
    """

    frame: int
    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    win: int
    payload_len: int
    ws: int | None = None
    vlan: tuple[int, ...] = ()
    ip_id: int = 0
    checksum: int = 0
    tsval: int | None = None

    @property
    def path(self) -> tuple[int, ...]:
        return ()

    @property
    def outer(self) -> tuple[tuple[str, str], ...]:
        return ()

    @property
    def key_path(self) -> tuple[int, ...]:
        """The tags the flow key holds: the tag path, or the VLAN ids when not tunnelled."""
        return self.path or self.vlan


@dataclass(frozen=True, slots=True)
class TunnelledSegment(Segment):
    """A segment that came through tunnels (``treason.decode``), with what they added.

    ``path`` is the flow key's tag path: every VLAN id and tunnel identifier (``kind << 32 |
    id``: VNI, GRE key, TEID, MPLS label...) in the order met, outermost first, so tenants with
    overlapping inner addresses never share a flow. ``outer`` holds the (source, destination)
    addresses of every enclosing IP header, outermost first. A subclass, not two more fields
    of ``Segment``, because every field costs time in each plain segment's constructor.
    """

    path: tuple[int, ...] = ()
    outer: tuple[tuple[str, str], ...] = ()
