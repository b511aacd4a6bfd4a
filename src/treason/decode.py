"""Decode one captured frame into a TCP ``Segment``, or say in one word why it was skipped.

This is the reference decoder: plain ``struct.unpack_from`` on the frame's bytes, no per-layer
objects. It trusts the IP header's length fields for the payload size (captures are routinely
cut by a snap length) and refuses headers whose lengths contradict each other, because a
made-up length would become a made-up right edge later. The skip reasons are a fixed
vocabulary (module constants) so the capture summary can count them.
"""

from __future__ import annotations

import socket
import struct

from treason.packets import FIN, RST, SYN, Frame, Segment

# Skip reasons.
NOT_IP = "not-ip"
NOT_TCP = "not-tcp"
FRAGMENT = "fragment"
UNKNOWN_LINKTYPE = "unknown-linktype"
MALFORMED = "malformed"
TRUNCATED_HEADER = "truncated-header"

SKIP_REASONS = (NOT_IP, NOT_TCP, FRAGMENT, UNKNOWN_LINKTYPE, MALFORMED, TRUNCATED_HEADER)

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
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
#: 802.1Q, 802.1ad and the pre-standard QinQ tag type: each adds one VLAN id.
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))

#: BSD address-family values for IPv6 differ by OS: NetBSD/OpenBSD, FreeBSD, macOS.
BSD_AF_INET = 2
BSD_AF_INET6 = frozenset((24, 28, 30))

IPPROTO_TCP = 6
# IPv6 extension headers we walk through to find TCP.
_EXT_HOPOPTS = 0
_EXT_ROUTING = 43
_EXT_FRAGMENT = 44
_EXT_AH = 51
_EXT_DSTOPTS = 60

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


def decode(frame: Frame) -> Segment | str:
    """The frame's TCP segment, or a skip reason from ``SKIP_REASONS``."""
    data = frame.data
    lt = frame.linktype
    vlan: tuple[int, ...] = ()
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
    elif lt in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14):
        if not data:
            return TRUNCATED_HEADER
        version = data[0] >> 4
        if version == 4:
            return _ipv4(frame, data, 0, vlan)
        if version == 6:
            return _ipv6(frame, data, 0, vlan)
        return NOT_IP
    elif lt == LINKTYPE_IPV4:
        return _ipv4(frame, data, 0, vlan)
    elif lt == LINKTYPE_IPV6:
        return _ipv6(frame, data, 0, vlan)
    elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return TRUNCATED_HEADER
        # The family is in the writer's byte order (NULL) or network order (LOOP, but not
        # every writer obeys): small values are unambiguous either way.
        af = int.from_bytes(data[:4], "big")
        if af > 0xFFFF:
            af = int.from_bytes(data[:4], "little")
        if af == BSD_AF_INET:
            return _ipv4(frame, data, 4, vlan)
        if af in BSD_AF_INET6:
            return _ipv6(frame, data, 4, vlan)
        return NOT_IP
    else:
        return UNKNOWN_LINKTYPE

    while etype in VLAN_TPIDS:
        if len(data) < off + 4:
            return TRUNCATED_HEADER
        tci, etype = _HH(data, off)
        vlan += (tci & 0x0FFF,)
        off += 4
    if etype == ETHERTYPE_IPV4:
        return _ipv4(frame, data, off, vlan)
    if etype == ETHERTYPE_IPV6:
        return _ipv6(frame, data, off, vlan)
    return NOT_IP


def _ipv4(frame: Frame, data: bytes, off: int, vlan: tuple[int, ...]) -> Segment | str:
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
    if data[off + 9] != IPPROTO_TCP:
        return NOT_TCP
    if len(data) < off + ihl:
        return TRUNCATED_HEADER
    src = _ntoa(data[off + 12 : off + 16])
    dst = _ntoa(data[off + 16 : off + 20])
    return _tcp(frame, data, off + ihl, total_len - ihl, bool(frag & 0x2000), src, dst, ip_id, vlan)


def _ipv6(frame: Frame, data: bytes, off: int, vlan: tuple[int, ...]) -> Segment | str:
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
    while nh != IPPROTO_TCP:
        if nh in (_EXT_HOPOPTS, _EXT_ROUTING, _EXT_DSTOPTS, _EXT_FRAGMENT, _EXT_AH):
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
        else:
            return NOT_TCP
    return _tcp(frame, data, pos, remaining, more_fragments, src, dst, 0, vlan)


def _tcp(
    frame: Frame,
    data: bytes,
    off: int,
    ip_payload: int,
    more_fragments: bool,
    src: str,
    dst: str,
    ip_id: int,
    vlan: tuple[int, ...],
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
    return Segment(
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
        vlan,
        ip_id,
        checksum,
        tsval,
    )
