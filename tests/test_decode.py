"""The packet decoder on hand-built frames: every link type, tag stacks, options, damage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captures import (
    ether,
    ext_header,
    fragment_header,
    ipv4,
    ipv6,
    null,
    sll,
    sll2,
    tcp,
)
from treason import decode as d
from treason.packets import ACK, FIN, PSH, RST, SYN, Frame, Segment

V4 = ("192.0.2.1", "198.51.100.7")
V6 = ("2001:db8::1", "2001:db8:0:0:1::2")
WS_OPTS = b"\x02\x04\x05\xb4" + b"\x01\x03\x03\x07"  # MSS 1460, NOP, WS 7

SEG_V4 = tcp(40000, 443, 0xFFFFFFF0, 12345, ACK | PSH, 501, payload=b"p" * 33, checksum=0xABCD)
SEG_V6 = tcp(40000, 443, 7, 8, SYN, 65535, options=WS_OPTS)


def frame(data: bytes, linktype: int = 1, orig_len: int | None = None) -> Frame:
    return Frame(7, 123_456_789, linktype, data, len(data) if orig_len is None else orig_len)


def seg(data: bytes, linktype: int = 1, **kw: object) -> Segment:
    result = d.decode(frame(data, linktype, **kw))  # type: ignore[arg-type]
    assert isinstance(result, Segment), result
    return result


def reason(data: bytes, linktype: int = 1, **kw: object) -> str:
    result = d.decode(frame(data, linktype, **kw))  # type: ignore[arg-type]
    assert isinstance(result, str), result
    assert result in d.SKIP_REASONS
    return result


def test_ipv4_fields() -> None:
    s = seg(ether(ipv4(*V4, SEG_V4, ident=0x4242)))
    assert s == Segment(
        frame=7,
        ts_ns=123_456_789,
        src="192.0.2.1",
        sport=40000,
        dst="198.51.100.7",
        dport=443,
        seq=0xFFFFFFF0,
        ack=12345,
        flags=ACK | PSH,
        win=501,
        payload_len=33,
        ws=None,
        vlan=(),
        ip_id=0x4242,
        checksum=0xABCD,
    )


def test_ipv6_fields_and_window_scale() -> None:
    s = seg(ether(ipv6(*V6, SEG_V6), etype=0x86DD))
    assert (s.src, s.dst, s.seq, s.ack, s.flags, s.win, s.ws) == (
        "2001:db8::1",
        "2001:db8::1:0:0:2",
        7,
        8,
        SYN,
        65535,
        7,
    )
    assert (s.payload_len, s.ip_id) == (0, 0)


def test_ipv4_mapped_ipv6_address_is_standard_text() -> None:
    s = seg(ether(ipv6("::ffff:198.51.100.7", "::1", SEG_V4), etype=0x86DD))
    assert (s.src, s.dst) == ("::ffff:198.51.100.7", "::1")


V4_PACKET = ipv4(*V4, SEG_V4)
V6_PACKET = ipv6(*V6, SEG_V6)


@pytest.mark.parametrize(
    ("linktype", "data"),
    [
        (1, ether(V4_PACKET)),
        (113, sll(V4_PACKET)),
        (276, sll2(V4_PACKET)),
        (12, V4_PACKET),
        (14, V4_PACKET),
        (101, V4_PACKET),
        (228, V4_PACKET),
        (0, null(V4_PACKET, 2, "<")),
        (0, null(V4_PACKET, 2, ">")),
        (108, null(V4_PACKET, 2, ">")),
        (108, null(V4_PACKET, 2, "<")),
    ],
)
def test_every_link_type_ipv4(linktype: int, data: bytes) -> None:
    s = seg(data, linktype)
    assert (s.src, s.sport, s.seq, s.payload_len) == ("192.0.2.1", 40000, 0xFFFFFFF0, 33)


@pytest.mark.parametrize(
    ("linktype", "data"),
    [
        (1, ether(V6_PACKET, 0x86DD)),
        (113, sll(V6_PACKET, 0x86DD)),
        (276, sll2(V6_PACKET, 0x86DD)),
        (12, V6_PACKET),
        (101, V6_PACKET),
        (229, V6_PACKET),
        *[(0, null(V6_PACKET, af, order)) for af in (24, 28, 30) for order in "<>"],
        *[(108, null(V6_PACKET, af, order)) for af in (24, 28, 30) for order in "<>"],
    ],
)
def test_every_link_type_ipv6(linktype: int, data: bytes) -> None:
    s = seg(data, linktype)
    assert (s.dst, s.dport, s.ws) == ("2001:db8::1:0:0:2", 443, 7)


def test_raw_ipv4_and_ipv6_link_types_check_the_version() -> None:
    assert reason(V6_PACKET, 228) == d.MALFORMED
    assert reason(V4_PACKET, 229) == d.MALFORMED
    assert reason(b"\x50" + V4_PACKET[1:], 101) == d.NOT_IP


def test_null_with_other_families_and_unknown_link_types() -> None:
    assert reason(null(V4_PACKET, 7), 0) == d.NOT_IP
    assert reason(null(V6_PACKET, 10), 0) == d.NOT_IP  # Linux AF_INET6 is not a BSD value
    assert reason(V4_PACKET, 105) == d.UNKNOWN_LINKTYPE
    assert reason(ether(b"\0" * 28, etype=0x0806)) == d.NOT_IP  # ARP
    assert reason(sll2(b"\0" * 28, proto=0x0806), 276) == d.NOT_IP


@pytest.mark.parametrize(
    ("vlans", "tpids"),
    [
        ((100,), (0x8100,)),
        ((10, 20), (0x88A8, 0x8100)),
        ((1, 2, 4095), (0x9100, 0x88A8, 0x8100)),
        ((0,), (0x8100,)),  # priority tag only
    ],
)
def test_vlan_stacks_outermost_first(vlans: tuple[int, ...], tpids: tuple[int, ...]) -> None:
    s = seg(ether(V4_PACKET, vlans=vlans, tpids=tpids))
    assert s.vlan == vlans and s.seq == 0xFFFFFFF0
    s6 = seg(ether(V6_PACKET, 0x86DD, vlans=vlans, tpids=tpids))
    assert s6.vlan == vlans and s6.ws == 7


def test_vlan_tag_inside_cooked_capture() -> None:
    tagged = struct.pack("!HH", 0x2000 | 300, 0x0800) + V4_PACKET
    assert seg(sll2(tagged, proto=0x8100), 276).vlan == (300,)
    assert seg(sll(tagged, proto=0x8100), 113).vlan == (300,)


def test_ipv4_options_move_the_tcp_header() -> None:
    opts = b"\x07\x07\x04" + b"\0" * 4 + b"\x01"  # record route + NOP: 8 bytes, IHL 7
    s = seg(ether(ipv4(*V4, SEG_V4, options=opts)))
    assert (s.sport, s.seq, s.payload_len) == (40000, 0xFFFFFFF0, 33)


def test_payload_length_comes_from_the_ip_header_not_the_capture() -> None:
    full = ether(ipv4(*V4, SEG_V4))
    cut = full[:54]  # headers only, as with a small snap length
    assert seg(cut, orig_len=len(full)).payload_len == 33
    six = ether(ipv6(*V6, tcp(payload=b"z" * 1000)), 0x86DD)
    assert seg(six[:74], orig_len=len(six)).payload_len == 1000
    # Ethernet padding after a short IP packet is not payload.
    assert seg(ether(ipv4(*V4, tcp())) + b"\0" * 6).payload_len == 0


def test_zero_ip_length_of_offloaded_packets_falls_back_to_the_wire_length() -> None:
    packet = ipv4(*V4, tcp(payload=b"q" * 100), total_len=0)
    assert seg(packet, 101).payload_len == 100
    packet6 = ipv6(*V6, tcp(payload=b"q" * 100), plen=0)
    assert seg(packet6, 101).payload_len == 100


def test_ipv4_fragments() -> None:
    whole = tcp(payload=b"f" * 100)
    assert reason(ether(ipv4(*V4, whole[:40], frag=0x0005))) == d.FRAGMENT  # offset 40
    assert reason(ether(ipv4(*V4, whole[:40], frag=0x2005))) == d.FRAGMENT
    first = seg(ether(ipv4(*V4, whole[:48], frag=0x2000)))  # MF, offset 0, header complete
    assert first.seq == 1000 and first.payload_len == 28  # this fragment's share
    assert reason(ether(ipv4(*V4, whole[:16], frag=0x2000))) == d.FRAGMENT  # header split


def test_ipv6_extension_headers() -> None:
    chain = [(0, ext_header(0)), (43, ext_header(1)), (60, ext_header(2))]
    s = seg(ether(ipv6(*V6, SEG_V4, ext=chain), 0x86DD))
    assert (s.seq, s.payload_len) == (0xFFFFFFF0, 33)
    ah = bytes([0, 2]) + b"\0" * 10  # AH: (2 + 2) * 4 = 16 bytes
    ah += b"\0" * 4
    assert seg(ether(ipv6(*V6, SEG_V4, ext=[(51, ah)]), 0x86DD)).payload_len == 33


def test_ipv6_fragments() -> None:
    whole = tcp(payload=b"f" * 100)
    first = ipv6(*V6, whole[:60], ext=[(44, fragment_header(0, True))])
    s = seg(ether(first, 0x86DD))
    assert s.seq == 1000 and s.payload_len == 40
    later = ipv6(*V6, whole[60:], ext=[(44, fragment_header(8, False))])
    assert reason(ether(later, 0x86DD)) == d.FRAGMENT
    # An atomic fragment (offset 0, no more fragments) is a whole packet.
    atomic = ipv6(*V6, whole, ext=[(0, ext_header()), (44, fragment_header(0, False))])
    assert seg(ether(atomic, 0x86DD)).payload_len == 100


def test_ipv6_without_tcp() -> None:
    assert reason(ether(ipv6(*V6, b"", nh=59), 0x86DD)) == d.NOT_TCP  # no next header
    assert reason(ether(ipv6(*V6, b"\0" * 8, nh=58), 0x86DD)) == d.NOT_TCP  # ICMPv6
    assert reason(ether(ipv6(*V6, b"\0" * 8, ext=[(0, ext_header())], nh=17), 0x86DD)) == (
        d.NOT_TCP
    )
    assert reason(ether(ipv4(*V4, b"\0" * 8, proto=17))) == d.NOT_TCP


def test_ipv6_extension_header_longer_than_the_payload_is_malformed() -> None:
    packet = ipv6(*V6, SEG_V4, ext=[(60, ext_header(30))])
    plen = 40 + 8  # claims less than the extension header's own length
    packet = packet[:4] + struct.pack("!H", plen) + packet[6:]
    assert reason(ether(packet, 0x86DD)) == d.MALFORMED


@pytest.mark.parametrize(
    ("options", "ws"),
    [
        (b"\x03\x03\x0e", 14),
        (b"\x03\x03\x0f", 15),  # beyond 14: kept raw, the model caps it
        (b"\x03\x03\xc8", 200),
        (b"\x01\x01\x01\x03\x03\x02", 2),
        (b"\x00\x03\x03\x05", None),  # after EOL nothing counts
        (b"\x03\x04\x05\x00", None),  # wrong length: ignored, as Linux does
        (b"\x08\x0a" + b"\0" * 8 + b"\x01\x03\x03\x09", 9),
        (b"", None),
    ],
)
def test_window_scale_option(options: bytes, ws: int | None) -> None:
    assert seg(ether(ipv4(*V4, tcp(flags=SYN, options=options)))).ws == ws


@pytest.mark.parametrize(
    "options",
    [
        b"\x02\x00\x00\x00",  # length 0
        b"\x02\x01\x00\x00",  # length 1
        b"\x01\x01\x01\x08",  # the length byte itself is past the header
        b"\x02\x04\x05\xb4\x08\x0a\x00\x00",  # timestamp runs past the header
    ],
)
def test_malformed_option_lists(options: bytes) -> None:
    assert reason(ether(ipv4(*V4, tcp(flags=ACK, options=options)))) == d.MALFORMED


def test_options_cut_by_the_snap_length() -> None:
    ack = ether(ipv4(*V4, tcp(flags=ACK, options=b"\x01\x01\x08\x0a" + b"\0" * 8)))
    s = seg(ack[:58], orig_len=len(ack))
    assert (s.flags, s.ws, s.payload_len) == (ACK, None, 0)
    syn = ether(ipv4(*V4, tcp(flags=SYN, options=WS_OPTS)))
    assert seg(syn).ws == 7
    # A SYN whose window scale option may be missing must not look like one without it.
    assert reason(syn[:58], orig_len=len(syn)) == d.TRUNCATED_HEADER


@pytest.mark.parametrize(
    ("packet", "etype"),
    [
        (ipv4(*V4, tcp(doff=4)), 0x0800),  # TCP data offset below 5
        (ipv4(*V4, tcp(doff=15)), 0x0800),  # TCP header beyond the IP packet
        (ipv4(*V4, tcp(), total_len=19), 0x0800),  # IP total length below its header
        (ipv4(*V4, tcp(), total_len=30), 0x0800),  # no room for a TCP header
        (ipv4(*V4, tcp(), ihl=4), 0x0800),
        (ipv4(*V4, tcp(), ihl=15, total_len=40), 0x0800),
        (ipv4(*V4, tcp(flags=SYN | RST)), 0x0800),
        (ipv4(*V4, tcp(flags=SYN | FIN | ACK)), 0x0800),
        (ipv6(*V6, tcp(flags=SYN | RST)), 0x86DD),
        (ipv6(*V6, tcp(), plen=10), 0x86DD),
        (ipv6(*V6, tcp(doff=3)), 0x86DD),
        (ipv4(*V4, tcp()), 0x86DD),  # IPv6 ethertype, IPv4 version nibble
    ],
)
def test_impossible_lengths_and_flag_combinations_are_malformed(packet: bytes, etype: int) -> None:
    assert reason(ether(packet, etype) + b"\0" * 40) == d.MALFORMED


def test_rst_and_fin_without_syn_are_fine() -> None:
    assert seg(ether(ipv4(*V4, tcp(flags=RST | ACK)))).flags == RST | ACK
    assert seg(ether(ipv4(*V4, tcp(flags=FIN | ACK)))).flags == FIN | ACK


@pytest.mark.parametrize(
    ("linktype", "data"),
    [
        (1, ether(V4_PACKET)[:13]),
        (1, ether(V4_PACKET, vlans=(5,))[:16]),
        (113, sll(V4_PACKET)[:15]),
        (276, sll2(V4_PACKET)[:19]),
        (0, b"\x02\0\0"),
        (101, b""),
        (1, ether(V4_PACKET)[:33]),  # inside the IPv4 header
        (1, ether(ipv4(*V4, SEG_V4, options=b"\x01" * 8))[:38]),  # inside IPv4 options
        (1, ether(V4_PACKET)[:53]),  # inside the TCP header
        (1, ether(V6_PACKET, 0x86DD)[:53]),
        (1, ether(ipv6(*V6, SEG_V4, ext=[(0, ext_header(0))]), 0x86DD)[:60]),
    ],
)
def test_truncated_headers(linktype: int, data: bytes) -> None:
    assert reason(data, linktype, orig_len=1500) == d.TRUNCATED_HEADER


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 65535),
    st.binary(max_size=64),
    st.lists(st.integers(0, 4095), max_size=3),
    st.booleans(),
)
def test_round_trip(
    sport: int,
    dport: int,
    seqn: int,
    ackn: int,
    win: int,
    payload: bytes,
    vlans: list[int],
    six: bool,
) -> None:
    header = tcp(sport, dport, seqn, ackn, ACK, win, payload=payload)
    packet = ipv6(*V6, header) if six else ipv4(*V4, header)
    s = seg(ether(packet, 0x86DD if six else 0x0800, vlans=vlans))
    assert (s.sport, s.dport, s.seq, s.ack, s.win) == (sport, dport, seqn, ackn, win)
    assert (s.payload_len, s.vlan) == (len(payload), tuple(vlans))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999]), st.binary(max_size=120))
def test_random_bytes_never_raise(linktype: int, data: bytes) -> None:
    result = d.decode(Frame(1, 0, linktype, data, len(data)))
    assert isinstance(result, Segment) or result in d.SKIP_REASONS


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_damaged_real_headers_never_raise(at: int, junk: bytes) -> None:
    base = ether(ipv6(*V6, SEG_V6, ext=[(0, ext_header()), (44, fragment_header(0, True))]), 0x86DD)
    damaged = base[:at] + junk + base[at + len(junk) :]
    result = d.decode(Frame(1, 0, 1, damaged, len(damaged)))
    assert isinstance(result, Segment) or result in d.SKIP_REASONS
