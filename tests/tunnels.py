"""Building tunnelled frames for tests: every encapsulation treason opens, byte by byte.

Each builder follows its RFC or specification (cited), independently of treason's decoder, so
that tshark can judge both. A conversation is a list of inner IP packets; ``wrap`` functions
put one inner packet into one frame.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from captures import ether, ipv4, ipv6, tcp

Wrap = Callable[[bytes], bytes]

OUTER4 = ("192.0.2.1", "192.0.2.2")
OUTER6 = ("2001:db8:ff::1", "2001:db8:ff::2")


def _inner_version(packet: bytes) -> int:
    return packet[0] >> 4


def udp(dport: int, payload: bytes, sport: int = 51000) -> bytes:
    """RFC 768 (checksum 0: allowed over IPv4, and not checked by the decoders here)."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def vxlan(vni: int, frame: bytes) -> bytes:
    """RFC 7348 §5: flags with the I bit, 24 reserved bits, the VNI, 8 reserved bits."""
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def geneve(vni: int, proto: int, payload: bytes, options: bytes = b"") -> bytes:
    """RFC 8926 §3.4: version 0, options length in 4-byte words, protocol type, VNI."""
    assert len(options) % 4 == 0
    return struct.pack("!BBHI", len(options) // 4, 0, proto, vni << 8) + options + payload


def geneve_option(cls: int, otype: int, data: bytes) -> bytes:
    """RFC 8926 §3.5: class, type, length in 4-byte words, data."""
    assert len(data) % 4 == 0
    return struct.pack("!HBB", cls, otype, len(data) // 4) + data


def gre(
    proto: int,
    payload: bytes,
    key: int | None = None,
    seq: int | None = None,
    checksum: bool = False,
) -> bytes:
    """RFC 2784 with the RFC 2890 key and sequence number fields."""
    flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0)
    flags |= 0x1000 if seq is not None else 0
    head = struct.pack("!HH", flags, proto)
    if checksum:
        head += struct.pack("!HH", 0, 0)
    if key is not None:
        head += struct.pack("!I", key)
    if seq is not None:
        head += struct.pack("!I", seq)
    return head + payload


def erspan2(session: int, frame: bytes, vlan: int = 0) -> bytes:
    """ERSPAN type II header (draft-foschiano-erspan §4.1): version 1, VLAN, session, index."""
    return struct.pack("!HHI", 1 << 12 | vlan, session & 0x3FF, 0) + frame


def erspan3(session: int, frame: bytes, subheader: bool = False) -> bytes:
    """ERSPAN type III header (§4.2): version 2, session, timestamp, SGT, frame type 0, O bit."""
    head = struct.pack("!HHIHH", 2 << 12, session & 0x3FF, 123456, 0, 1 if subheader else 0)
    return head + (b"\x00" * 8 if subheader else b"") + frame


def gtpu(teid: int, packet: bytes, extension: bool = False) -> bytes:
    """3GPP TS 29.281 §5: version 1, PT 1, message type 255 (G-PDU), length, TEID.

    With ``extension`` the E bit adds sequence number, N-PDU number and a PDU session
    container extension header (type 0x85, one 4-byte unit).
    """
    if not extension:
        return struct.pack("!BBHI", 0x30, 255, len(packet), teid) + packet
    ext = bytes([1, 0x00, 0x09, 0x00])  # length 1 (4 bytes), content, next type 0
    body = struct.pack("!HBB", 0, 0, 0x85) + ext + packet
    return struct.pack("!BBHI", 0x34, 255, len(body), teid) + body


def mpls(labels: Sequence[int], payload: bytes) -> bytes:
    """RFC 3032 label stack entries: label, traffic class 0, bottom-of-stack on the last."""
    out = b""
    for i, label in enumerate(labels):
        out += struct.pack("!I", label << 12 | (0x100 if i == len(labels) - 1 else 0) | 64)
    return out + payload


def pppoe(session: int, packet: bytes) -> bytes:
    """RFC 2516 session stage: version 1, type 1, code 0, session id, length, PPP protocol."""
    proto = 0x0021 if _inner_version(packet) == 4 else 0x0057
    return struct.pack("!BBHHH", 0x11, 0, session, len(packet) + 2, proto) + packet


def ether_ip(packet: bytes, vlans: Sequence[int] = ()) -> bytes:
    """Ethernet (with VLAN tags) around an IP packet of either version."""
    etype = 0x0800 if _inner_version(packet) == 4 else 0x86DD
    return ether(packet, etype, vlans=vlans)


def outer_ip(payload: bytes, proto: int, v6: bool = False) -> bytes:
    if v6:
        return ipv6(*OUTER6, payload, nh=proto)
    return ipv4(*OUTER4, payload, proto=proto)


def ip_proto(packet: bytes) -> int:
    """IP-in-IP protocol number for an inner packet: 4 (IPv4) or 41 (IPv6)."""
    return 4 if _inner_version(packet) == 4 else 41


def ethertype(packet: bytes) -> int:
    return 0x0800 if _inner_version(packet) == 4 else 0x86DD


# --------------------------------------------------------------------------------------------
# Every encapsulation: name -> (wrap, extra tshark options)

ENCAPSULATIONS: dict[str, tuple[Wrap, tuple[str, ...]]] = {
    "vxlan": (
        lambda p: ether(outer_ip(udp(4789, vxlan(42, ether_ip(p, vlans=(7,)))), 17)),
        (),
    ),
    "vxlan-8472-v6": (
        lambda p: ether(outer_ip(udp(8472, vxlan(0xABCDEF, ether_ip(p))), 17, v6=True), 0x86DD),
        ("-d", "udp.port==8472,vxlan"),
    ),
    "geneve-options": (
        lambda p: ether(
            outer_ip(
                udp(
                    6081,
                    geneve(
                        99,
                        0x6558,
                        ether_ip(p),
                        geneve_option(0x0102, 0x80, b"\1\2\3\4\5\6\7\x08"),
                    ),
                ),
                17,
            )
        ),
        (),
    ),
    "geneve-ip": (
        lambda p: ether(outer_ip(udp(6081, geneve(5, ethertype(p), p)), 17)),
        (),
    ),
    "gre": (lambda p: ether(outer_ip(gre(ethertype(p), p), 47)), ()),
    "gre-key-seq-csum": (
        lambda p: ether(
            outer_ip(gre(ethertype(p), p, key=0x01020304, seq=9, checksum=True), 47, v6=True),
            0x86DD,
        ),
        (),
    ),
    "gre-teb": (lambda p: ether(outer_ip(gre(0x6558, ether_ip(p), key=77), 47)), ()),
    "erspan-1": (lambda p: ether(outer_ip(gre(0x88BE, ether_ip(p)), 47)), ()),
    "erspan-2": (
        lambda p: ether(outer_ip(gre(0x88BE, erspan2(300, ether_ip(p, vlans=(12,))), seq=1), 47)),
        (),
    ),
    "erspan-3": (
        lambda p: ether(outer_ip(gre(0x22EB, erspan3(301, ether_ip(p)), seq=2), 47)),
        (),
    ),
    "erspan-3-subheader": (
        lambda p: ether(outer_ip(gre(0x22EB, erspan3(302, ether_ip(p), True), seq=3), 47)),
        (),
    ),
    "gtpu": (lambda p: ether(outer_ip(udp(2152, gtpu(0xDEADBEEF, p), sport=2152), 17)), ()),
    "gtpu-extension": (
        lambda p: ether(outer_ip(udp(2152, gtpu(0x1234, p, extension=True), sport=2152), 17)),
        (),
    ),
    "ip-in-ip4": (lambda p: ether(outer_ip(p, ip_proto(p))), ()),
    "ip-in-ip6": (lambda p: ether(outer_ip(p, ip_proto(p), v6=True), 0x86DD), ()),
    "pppoe": (lambda p: ether(pppoe(0x2A, p), 0x8864), ()),
    "mpls": (lambda p: ether(mpls((16, 1000, 1048575), p), 0x8847), ()),
    "mpls-over-gre": (lambda p: ether(outer_ip(gre(0x8847, mpls((2001,), p)), 47)), ()),
    "nested": (
        # MPLS, then IPv4 in GRE with a key, then VXLAN to an Ethernet frame with a VLAN tag
        lambda p: ether(
            mpls(
                (300,),
                outer_ip(
                    gre(
                        0x0800,
                        ipv4(
                            "10.9.9.1", "10.9.9.2", udp(4789, vxlan(7, ether_ip(p, (5,)))), proto=17
                        ),
                        key=11,
                    ),
                    47,
                ),
            ),
            0x8847,
            vlans=(100,),
        ),
        (),
    ),
}


# --------------------------------------------------------------------------------------------
# The inner conversation


def conversation(v6: bool, client: str | None = None, server: str | None = None) -> list[bytes]:
    """A handshake with window scale 7 both ways, data from the server, and a client ACK that
    moves the right edge it offers from 6001 + 500·128 back to 7001 + 100·128: one shrink."""
    c = client or ("2001:db8::c" if v6 else "10.0.0.1")
    s = server or ("2001:db8::5" if v6 else "10.0.0.2")
    ip = ipv6 if v6 else ipv4
    ws7 = b"\x03\x03\x07"
    steps = [
        (True, tcp(40000, 80, 1000, 0, 0x02, 64240, options=b"\x02\x04\x05\xb4" + ws7)),
        (False, tcp(80, 40000, 5000, 1001, 0x12, 65160, options=b"\x02\x04\x05\xb4" + ws7)),
        (True, tcp(40000, 80, 1001, 5001, 0x10, 502)),
        (False, tcp(80, 40000, 5001, 1001, 0x18, 509, payload=b"x" * 1000)),
        (True, tcp(40000, 80, 1001, 6001, 0x10, 500)),
        (False, tcp(80, 40000, 6001, 1001, 0x18, 509, payload=b"y" * 1000)),
        (True, tcp(40000, 80, 1001, 7001, 0x10, 100)),
        (True, tcp(40000, 80, 1001, 7001, 0x11, 100)),
    ]
    return [ip(c, s, seg) if from_client else ip(s, c, seg) for from_client, seg in steps]
