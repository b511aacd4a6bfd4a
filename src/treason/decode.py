"""Decode one captured frame into a TCP ``Segment``, or say in one word why it was skipped.

This is the reference decoder: plain ``struct.unpack_from`` on the frame's bytes, no per-layer
objects. It trusts the IP header's length fields for the payload size (captures are routinely
cut by a snap length) and refuses headers whose lengths contradict each other, because a
made-up length would become a made-up right edge later. The skip reasons are a fixed
vocabulary (module constants) so the capture summary can count them.

Tunnels (VXLAN, GENEVE, GRE with ERSPAN, GTP-U, IP in IP, PPPoE, MPLS) are opened down to the
innermost TCP header; their identifiers join the VLAN ids in the segment's tag path (the flow
key), the enclosing IP addresses are kept as ``outer``. Nesting is capped (``MAX_TAGS``,
``MAX_TUNNELS``) so a hostile frame costs bounded work and a bounded key. See docs/decoding.md.
"""

from __future__ import annotations

import socket
import struct

from treason.packets import FIN, RST, SYN, Frame, Segment, TunnelledSegment

# Skip reasons.
NOT_IP = "not-ip"
NOT_TCP = "not-tcp"
FRAGMENT = "fragment"
UNKNOWN_LINKTYPE = "unknown-linktype"
MALFORMED = "malformed"
TRUNCATED_HEADER = "truncated-header"
TUNNEL_OTHER = "tunnel-other"

#: Caps on nesting: an input cannot make the decoder (or a flow key) grow without bound.
MAX_TAGS = 16  # VLAN tags and MPLS labels of one frame, together
MAX_TUNNELS = 8  # tunnel headers of one frame (VXLAN, GENEVE, GRE, GTP-U, IP in IP, PPPoE)
TOO_MANY_TAGS = f"over-{MAX_TAGS}-tags"
TOO_MANY_TUNNELS = f"over-{MAX_TUNNELS}-tunnels"

SKIP_REASONS = (
    NOT_IP,
    NOT_TCP,
    FRAGMENT,
    UNKNOWN_LINKTYPE,
    MALFORMED,
    TRUNCATED_HEADER,
    TUNNEL_OTHER,
    TOO_MANY_TAGS,
    TOO_MANY_TUNNELS,
)

# Link types (LINKTYPE_* values as stored in capture files).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_12 = 12  # DLT_RAW on most BSDs
LINKTYPE_RAW_14 = 14  # DLT_RAW on BSD/OS
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239  # tcpdump -i nflog:N: packets a firewall rule logged (log group N)
LINKTYPE_LINUX_SLL2 = 276

LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW_12: "raw IP",
    LINKTYPE_RAW_14: "raw IP",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_NFLOG: "Linux netfilter log (NFLOG)",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
#: 802.1Q, 802.1ad and the pre-standard QinQ tag type: each adds one VLAN id.
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
ETHERTYPE_MPLS = frozenset((0x8847, 0x8848))  # unicast, multicast
ETHERTYPE_PPPOE_SESSION = 0x8864
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging
ETHERTYPE_ERSPAN_2 = 0x88BE  # ERSPAN type I (no GRE sequence number) and II
ETHERTYPE_ERSPAN_3 = 0x22EB
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

GRE_CHECKSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQ = 0x1000
GRE_VERSION = 0x0007

UDP_PORT_VXLAN = 4789
UDP_PORT_VXLAN_LINUX = 8472  # the Linux vxlan driver's default before IANA assigned 4789
UDP_PORT_GENEVE = 6081
UDP_PORT_GTPU = 2152
UDP_TUNNEL_PORTS = frozenset((UDP_PORT_VXLAN, UDP_PORT_VXLAN_LINUX, UDP_PORT_GENEVE, UDP_PORT_GTPU))
GTP_GPDU = 255

# Tunnel kinds, as stored in a flow key's tag path (``kind << 32 | identifier``).
TUNNEL_VXLAN = 1
TUNNEL_GENEVE = 2
TUNNEL_GRE = 3
TUNNEL_GRE_KEY = 4
TUNNEL_ERSPAN = 5
TUNNEL_GTP = 6
TUNNEL_IP = 7
TUNNEL_PPPOE = 8
TUNNEL_MPLS = 9
#: Names of the tunnel kinds; the kinds without an identifier are shown by name alone.
TUNNEL_NAMES = {
    TUNNEL_VXLAN: "vxlan",
    TUNNEL_GENEVE: "geneve",
    TUNNEL_GRE: "gre",
    TUNNEL_GRE_KEY: "gre",
    TUNNEL_ERSPAN: "erspan",
    TUNNEL_GTP: "gtp",
    TUNNEL_IP: "ip",
    TUNNEL_PPPOE: "pppoe",
    TUNNEL_MPLS: "mpls",
}
_NO_IDENTIFIER = frozenset((TUNNEL_GRE, TUNNEL_IP))

#: BSD address-family values for IPv6 differ by OS: NetBSD/OpenBSD, FreeBSD, macOS.
BSD_AF_INET = 2
BSD_AF_INET6 = frozenset((24, 28, 30))

IPPROTO_TCP = 6
IPPROTO_IPIP = 4
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
TUNNEL_PROTOS = frozenset((IPPROTO_IPIP, IPPROTO_UDP, IPPROTO_IPV6, IPPROTO_GRE))
# IPv6 extension headers we walk through to find TCP.
_EXT_HOPOPTS = 0
_EXT_ROUTING = 43
_EXT_FRAGMENT = 44
_EXT_AH = 51
_EXT_DSTOPTS = 60
_EXT_HEADERS = frozenset((_EXT_HOPOPTS, _EXT_ROUTING, _EXT_FRAGMENT, _EXT_AH, _EXT_DSTOPTS))

TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_WSCALE = 3
TCPOPT_TIMESTAMP = 8

_H = struct.Struct("!H").unpack_from
_HH = struct.Struct("!HH").unpack_from
_TCP = struct.Struct("!HHIIBBHH").unpack_from
_U32 = struct.Struct("!I").unpack_from
_ntop = socket.inet_ntop
_ntoa = socket.inet_ntoa
_AF_INET6 = socket.AF_INET6


def tunnel_names(path: tuple[int, ...]) -> tuple[str, ...]:
    """The tunnel layers of a flow key's tag path as text, outermost first (``vxlan:42``)."""
    names = []
    for entry in path:
        kind = entry >> 32
        if kind:
            name = TUNNEL_NAMES[kind]
            names.append(name if kind in _NO_IDENTIFIER else f"{name}:{entry & 0xFFFFFFFF}")
    return tuple(names)


class _Stack:
    """What the layers below the TCP header said: VLAN ids, the flow key's tag path, outer
    addresses, and how deep the frame is nested (lists, so a deep stack costs linear time)."""

    __slots__ = ("outer", "path", "tags", "tunnels", "vlan")

    def __init__(self) -> None:
        self.vlan: list[int] = []
        self.path: list[int] = []
        self.outer: list[tuple[str, str]] = []
        self.tags = 0
        self.tunnels = 0

    def tag(self, entry: int, vlan: int | None = None) -> str | None:
        """A VLAN tag (``vlan`` its id) or an MPLS label; a skip reason past ``MAX_TAGS``."""
        self.tags += 1
        if self.tags > MAX_TAGS:
            return TOO_MANY_TAGS
        self.path.append(entry)
        if vlan is not None:
            self.vlan.append(vlan)
        return None

    def tunnel(self, kind: int, ident: int) -> str | None:
        """One tunnel header opened; a skip reason past ``MAX_TUNNELS``."""
        self.tunnels += 1
        if self.tunnels > MAX_TUNNELS:
            return TOO_MANY_TUNNELS
        self.path.append(kind << 32 | ident)
        return None


def decode(frame: Frame) -> Segment | str:
    """The frame's TCP segment, or a skip reason from ``SKIP_REASONS``."""
    data = frame.data
    lt = frame.linktype
    # The _Stack is made at the first VLAN tag or tunnel: plain frames never need one.
    if lt == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return TRUNCATED_HEADER
        (etype,) = _H(data, 12)
        off = 14
    elif lt == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return TRUNCATED_HEADER
        (etype,) = _H(data, 0)
        off = 20
    elif lt == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return TRUNCATED_HEADER
        (etype,) = _H(data, 14)
        off = 16
    else:
        return _not_ethernet(frame, data, lt)
    if etype == ETHERTYPE_IPV4:
        return _ipv4(frame, data, off, None)
    return _ethertype(frame, data, off, etype, None)


def _not_ethernet(frame: Frame, data: bytes, lt: int) -> Segment | str:
    """Link types without an EtherType: raw IP and BSD loopback."""
    if lt in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14):
        if not data:
            return TRUNCATED_HEADER
        version = data[0] >> 4
        if version == 4:
            return _ipv4(frame, data, 0, None)
        if version == 6:
            return _ipv6(frame, data, 0, None)
        return NOT_IP
    if lt == LINKTYPE_IPV4:
        return _ipv4(frame, data, 0, None)
    if lt == LINKTYPE_IPV6:
        return _ipv6(frame, data, 0, None)
    if lt == LINKTYPE_NFLOG:
        return _nflog(frame, data)
    if lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return TRUNCATED_HEADER
        # The family is in the writer's byte order (NULL) or network order (LOOP, but not
        # every writer obeys): small values are unambiguous either way.
        af = int.from_bytes(data[:4], "big")
        if af > 0xFFFF:
            af = int.from_bytes(data[:4], "little")
        if af == BSD_AF_INET:
            return _ipv4(frame, data, 4, None)
        if af in BSD_AF_INET6:
            return _ipv6(frame, data, 4, None)
        return NOT_IP
    return UNKNOWN_LINKTYPE


#: The NFLOG attribute that holds the logged packet (NFULA_PAYLOAD).
NFULA_PAYLOAD = 9


def nflog_payload(data: bytes) -> int | str:
    """Where the IP packet of an NFLOG record starts, or a skip reason.

    The record is a 4-byte header (family, version, group), then type-length-value
    attributes, each padded to 4 bytes, one of which (NFULA_PAYLOAD) is the packet. Lengths
    and types are in the capturing host's byte order: the first attribute's says which (its
    length is at least 4 and its type small one way, not the other).
    """
    if len(data) < 4:
        return TRUNCATED_HEADER
    off, little = 4, True
    if len(data) >= 8:
        length, kind = data[4] | data[5] << 8, data[6] | data[7] << 8
        little = 4 <= length <= len(data) - 4 and kind < 0x100
    while off + 4 <= len(data):
        if little:
            length, kind = data[off] | data[off + 1] << 8, data[off + 2] | data[off + 3] << 8
        else:
            length, kind = data[off] << 8 | data[off + 1], data[off + 2] << 8 | data[off + 3]
        if length < 4:
            return MALFORMED
        if kind & 0x7FFF == NFULA_PAYLOAD:  # the top bit flags nested attributes
            return off + 4
        off += (length + 3) & ~3
    return NOT_IP


def _nflog(frame: Frame, data: bytes) -> Segment | str:
    """An NFLOG record's packet: IPv4 or IPv6 as its family says (AF_INET 2, AF_INET6 10),
    else as the packet's version says."""
    off = nflog_payload(data)
    if isinstance(off, str):
        return off
    family = data[0]
    if family == 2 or (family != 10 and off < len(data) and data[off] >> 4 == 4):
        return _ipv4(frame, data, off, None)
    return _ipv6(frame, data, off, None)


def _ether(frame: Frame, data: bytes, off: int, st: _Stack | None) -> Segment | str:
    """An Ethernet frame carried by a tunnel (VXLAN, GENEVE, GRE bridging, ERSPAN)."""
    if len(data) < off + 14:
        return TRUNCATED_HEADER
    (etype,) = _H(data, off + 12)
    return _ethertype(frame, data, off + 14, etype, st)


def _ethertype(frame: Frame, data: bytes, off: int, etype: int, st: _Stack | None) -> Segment | str:
    """What follows an EtherType (Ethernet, cooked headers): VLAN tags, then the payload."""
    while etype in VLAN_TPIDS:
        if len(data) < off + 4:
            return TRUNCATED_HEADER
        tci, etype = _HH(data, off)
        if st is None:
            st = _Stack()
        reason = st.tag(tci & 0x0FFF, tci & 0x0FFF)
        if reason is not None:
            return reason
        off += 4
    if etype == ETHERTYPE_IPV4:
        return _ipv4(frame, data, off, st)
    if etype == ETHERTYPE_IPV6:
        return _ipv6(frame, data, off, st)
    if etype in ETHERTYPE_MPLS:
        return _mpls(frame, data, off, st)
    if etype == ETHERTYPE_PPPOE_SESSION:
        return _pppoe(frame, data, off, st)
    return NOT_IP


def _ip_by_version(frame: Frame, data: bytes, off: int, st: _Stack | None) -> Segment | str:
    """A payload whose carrier does not say its type (MPLS, GTP-U): the IP version nibble."""
    if len(data) < off + 1:
        return TRUNCATED_HEADER
    version = data[off] >> 4
    if version == 4:
        return _ipv4(frame, data, off, st)
    if version == 6:
        return _ipv6(frame, data, off, st)
    return TUNNEL_OTHER


def _mpls(frame: Frame, data: bytes, off: int, st: _Stack | None) -> Segment | str:
    """An MPLS label stack (RFC 3032): every label joins the flow key, down to bottom of stack."""
    if st is None:
        st = _Stack()
    while True:
        if len(data) < off + 4:
            return TRUNCATED_HEADER
        (entry,) = _U32(data, off)
        reason = st.tag(TUNNEL_MPLS << 32 | entry >> 12)
        if reason is not None:
            return reason
        off += 4
        if entry & 0x100:
            return _ip_by_version(frame, data, off, st)


def _pppoe(frame: Frame, data: bytes, off: int, st: _Stack | None) -> Segment | str:
    """A PPPoE session frame (RFC 2516) and its PPP protocol field."""
    if len(data) < off + 8:
        return TRUNCATED_HEADER
    if data[off] != 0x11 or data[off + 1] != 0:
        return MALFORMED
    if st is None:
        st = _Stack()
    session, _length, proto = struct.unpack_from("!HHH", data, off + 2)
    reason = st.tunnel(TUNNEL_PPPOE, session)
    if reason is not None:
        return reason
    if proto == PPP_IPV4:
        return _ipv4(frame, data, off + 8, st)
    if proto == PPP_IPV6:
        return _ipv6(frame, data, off + 8, st)
    return NOT_IP


def _ipv4(frame: Frame, data: bytes, off: int, st: _Stack | None) -> Segment | str:
    if len(data) < off + 20:
        return TRUNCATED_HEADER
    vihl = data[off]
    if vihl >> 4 != 4:
        return MALFORMED
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        return MALFORMED
    total_len, ip_id, frag = struct.unpack_from("!HHH", data, off + 2)
    if total_len == 0:
        # TSO/"BIG TCP" packets seen before segmentation carry 0: the wire length is all we have.
        total_len = frame.orig_len - off
    if total_len < ihl:
        return MALFORMED
    if frag & 0x1FFF:
        return FRAGMENT
    proto = data[off + 9]
    if proto != IPPROTO_TCP and proto not in TUNNEL_PROTOS:
        return NOT_TCP
    if len(data) < off + ihl:
        return TRUNCATED_HEADER
    src = _ntoa(data[off + 12 : off + 16])
    dst = _ntoa(data[off + 16 : off + 20])
    if proto != IPPROTO_TCP:
        return _tunnel(frame, data, off + ihl, proto, bool(frag & 0x2000), src, dst, st)
    return _tcp(frame, data, off + ihl, total_len - ihl, bool(frag & 0x2000), src, dst, ip_id, st)


def _ipv6(frame: Frame, data: bytes, off: int, st: _Stack | None) -> Segment | str:
    if len(data) < off + 40:
        return TRUNCATED_HEADER
    if data[off] >> 4 != 6:
        return MALFORMED
    (plen,) = _H(data, off + 4)
    if plen == 0:
        # Jumbograms and unsegmented GSO packets: fall back to the wire length.
        plen = frame.orig_len - off - 40
    nh = data[off + 6]
    src = _ntop(_AF_INET6, data[off + 8 : off + 24])
    dst = _ntop(_AF_INET6, data[off + 24 : off + 40])
    pos = off + 40
    remaining = plen  # bytes of the IPv6 payload from pos on
    more_fragments = False
    while nh in _EXT_HEADERS:
        if remaining < 8:
            return MALFORMED
        if len(data) < pos + 8:
            return TRUNCATED_HEADER
        if nh == _EXT_FRAGMENT:
            (offset_flags,) = _H(data, pos + 2)
            if offset_flags & 0xFFF8:
                return FRAGMENT
            more_fragments = bool(offset_flags & 1)
            hlen = 8
        elif nh == _EXT_AH:
            hlen = (data[pos + 1] + 2) * 4
        else:
            hlen = (data[pos + 1] + 1) * 8
        if hlen > remaining:
            return MALFORMED
        nh = data[pos]
        pos += hlen
        remaining -= hlen
    if nh == IPPROTO_TCP:
        return _tcp(frame, data, pos, remaining, more_fragments, src, dst, 0, st)
    if nh in TUNNEL_PROTOS:
        return _tunnel(frame, data, pos, nh, more_fragments, src, dst, st)
    return NOT_TCP


def _tunnel(
    frame: Frame,
    data: bytes,
    off: int,
    proto: int,
    more_fragments: bool,
    src: str,
    dst: str,
    st: _Stack | None,
) -> Segment | str:
    """An IP packet that carries another protocol layer (IP, UDP or GRE) instead of TCP."""
    if more_fragments:
        return FRAGMENT  # the inner packet is cut at the fragment's end
    if st is None:
        st = _Stack()
    if proto == IPPROTO_UDP:
        return _udp(frame, data, off, src, dst, st)
    st.outer.append((src, dst))
    if proto == IPPROTO_GRE:
        return _gre(frame, data, off, st)
    reason = st.tunnel(TUNNEL_IP, 0)
    if reason is not None:
        return reason
    if proto == IPPROTO_IPIP:
        return _ipv4(frame, data, off, st)
    return _ipv6(frame, data, off, st)


def _udp(frame: Frame, data: bytes, off: int, src: str, dst: str, st: _Stack) -> Segment | str:
    """UDP to a tunnel port (by destination port, as the tunnel endpoints address it)."""
    if len(data) < off + 8:
        return TRUNCATED_HEADER
    (dport,) = _H(data, off + 2)
    if dport not in UDP_TUNNEL_PORTS:
        return NOT_TCP
    st.outer.append((src, dst))
    off += 8
    if dport == UDP_PORT_GTPU:
        return _gtpu(frame, data, off, st)
    if len(data) < off + 8:
        return TRUNCATED_HEADER
    (word,) = _U32(data, off + 4)
    vni = word >> 8
    if dport == UDP_PORT_GENEVE:
        # RFC 8926: version 0, options length in 4-byte words, then the protocol type.
        if data[off] >> 6:
            return TUNNEL_OTHER
        (etype,) = _H(data, off + 2)
        reason = st.tunnel(TUNNEL_GENEVE, vni)
        if reason is not None:
            return reason
        payload = off + 8 + (data[off] & 0x3F) * 4
        if etype == ETHERTYPE_TEB:
            return _ether(frame, data, payload, st)
        if etype == ETHERTYPE_IPV4:
            return _ipv4(frame, data, payload, st)
        if etype == ETHERTYPE_IPV6:
            return _ipv6(frame, data, payload, st)
        return TUNNEL_OTHER
    reason = st.tunnel(TUNNEL_VXLAN, vni)  # RFC 7348: 8-byte header, then Ethernet
    if reason is not None:
        return reason
    return _ether(frame, data, off + 8, st)


def _gtpu(frame: Frame, data: bytes, off: int, st: _Stack) -> Segment | str:
    """GTP-U (3GPP TS 29.281): only G-PDUs (message type 255) carry user packets."""
    if len(data) < off + 8:
        return TRUNCATED_HEADER
    flags, mtype = data[off], data[off + 1]
    if flags >> 5 != 1 or not flags & 0x10 or mtype != GTP_GPDU:
        return TUNNEL_OTHER
    (teid,) = _U32(data, off + 4)
    pos = off + 8
    if flags & 0x07:
        # Sequence number, N-PDU number and next extension type are present together.
        if len(data) < pos + 4:
            return TRUNCATED_HEADER
        next_ext = data[pos + 3]
        pos += 4
        while next_ext:
            if len(data) < pos + 1:
                return TRUNCATED_HEADER
            size = data[pos] * 4
            if size == 0:
                return MALFORMED
            if len(data) < pos + size:
                return TRUNCATED_HEADER
            next_ext = data[pos + size - 1]
            pos += size
    reason = st.tunnel(TUNNEL_GTP, teid)
    if reason is not None:
        return reason
    return _ip_by_version(frame, data, pos, st)


def _gre(frame: Frame, data: bytes, off: int, st: _Stack) -> Segment | str:
    """GRE (RFC 2784/2890): checksum, key and sequence fields by their flag bits."""
    if len(data) < off + 4:
        return TRUNCATED_HEADER
    flags, proto = _HH(data, off)
    if flags & (GRE_ROUTING | GRE_VERSION):
        return TUNNEL_OTHER  # source routing (RFC 1701) or enhanced GRE (PPTP)
    hlen = 4 + 4 * (bool(flags & GRE_CHECKSUM) + bool(flags & GRE_KEY) + bool(flags & GRE_SEQ))
    if len(data) < off + hlen:
        return TRUNCATED_HEADER
    if flags & GRE_KEY:
        (key,) = _U32(data, off + (8 if flags & GRE_CHECKSUM else 4))
        reason = st.tunnel(TUNNEL_GRE_KEY, key)
    else:
        reason = st.tunnel(TUNNEL_GRE, 0)
    if reason is not None:
        return reason
    pos = off + hlen
    if proto == ETHERTYPE_IPV4:
        return _ipv4(frame, data, pos, st)
    if proto == ETHERTYPE_IPV6:
        return _ipv6(frame, data, pos, st)
    if proto == ETHERTYPE_TEB:
        return _ether(frame, data, pos, st)
    if proto in ETHERTYPE_MPLS:
        return _mpls(frame, data, pos, st)
    if proto == ETHERTYPE_ERSPAN_2:
        if not flags & GRE_SEQ:
            return _ether(frame, data, pos, st)  # type I: no ERSPAN header
        return _erspan(frame, data, pos, 1, 8, st)
    if proto == ETHERTYPE_ERSPAN_3:
        return _erspan(frame, data, pos, 2, 12, st)
    return TUNNEL_OTHER


def _erspan(
    frame: Frame, data: bytes, off: int, version: int, hlen: int, st: _Stack
) -> Segment | str:
    """ERSPAN type II (version 1) or III (version 2) header, then the mirrored Ethernet frame."""
    if len(data) < off + hlen:
        return TRUNCATED_HEADER
    if data[off] >> 4 != version:
        return TUNNEL_OTHER
    if version == 2:
        if (data[off + 10] >> 2) & 0x1F:
            return TUNNEL_OTHER  # frame type other than Ethernet
        if data[off + 11] & 1:
            hlen += 8  # platform-specific subheader
    (session,) = _H(data, off + 2)
    reason = st.tunnel(TUNNEL_ERSPAN, session & 0x3FF)
    if reason is not None:
        return reason
    return _ether(frame, data, off + hlen, st)


def _tcp(
    frame: Frame,
    data: bytes,
    off: int,
    ip_payload: int,
    more_fragments: bool,
    src: str,
    dst: str,
    ip_id: int,
    st: _Stack | None,
) -> Segment | str:
    """``ip_payload`` is what the IP header says follows ``off``: TCP header plus data."""
    if ip_payload < 20:
        # A first fragment too small to hold the whole TCP header is still just a fragment.
        return FRAGMENT if more_fragments else MALFORMED
    if len(data) < off + 20:
        return TRUNCATED_HEADER
    sport, dport, seq, ack, doff_byte, flags, win, checksum = _TCP(data, off)
    doff = (doff_byte >> 4) * 4
    if doff < 20:
        return MALFORMED
    if doff > ip_payload:
        return FRAGMENT if more_fragments else MALFORMED
    if flags & SYN and flags & (RST | FIN):
        return MALFORMED
    ws = tsval = None
    if doff > 20:
        end = off + doff
        captured_end = len(data)
        if captured_end < end:
            # Options cut by the snap length. They matter only on SYNs (window scale); a SYN
            # whose options are unknown must not pass for one without window scaling.
            if flags & SYN:
                return TRUNCATED_HEADER
            end = captured_end
            cut = True
        else:
            cut = False
        i = off + 20
        while i < end:
            kind = data[i]
            if kind == TCPOPT_EOL:
                break
            if kind == TCPOPT_NOP:
                i += 1
                continue
            if i + 1 >= end:
                if cut:
                    break
                return MALFORMED
            length = data[i + 1]
            if length < 2:
                return MALFORMED
            if i + length > end:
                if cut:
                    break
                return MALFORMED
            if kind == TCPOPT_WSCALE and length == 3:
                ws = data[i + 2]
            elif kind == TCPOPT_TIMESTAMP and length == 10:
                tsval = _U32(data, i + 2)[0]
            i += length
    fields = (
        frame.number,
        frame.ts_ns,
        src,
        sport,
        dst,
        dport,
        seq,
        ack,
        flags,
        win,
        ip_payload - doff,
        ws,
        () if st is None else tuple(st.vlan),
        ip_id,
        checksum,
        tsval,
    )
    if st is None or len(st.path) == len(st.vlan):  # no tunnel: VLAN tags at most
        return Segment(*fields)
    return TunnelledSegment(*fields, tuple(st.path), tuple(st.outer))
