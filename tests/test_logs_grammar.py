"""The message grammar: every kernel wording, and nothing that only looks like one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treason.kernel import WORDINGS, kernel_lines
from treason.logs.grammar import parse_marker, parse_shrink

PEERS = {
    "192.0.2.7": "192.0.2.7",
    "2001:db8::1": "2001:db8::1",
    "::ffff:198.51.100.7": "198.51.100.7",  # v4-mapped: shown as IPv4
}


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("wording", [w.key for w in WORDINGS])
def test_every_wording_gives_its_fields(wording: str, peer: str) -> None:
    line = kernel_lines(peer, 443, 22, 4294967290, 5, snd_wnd=0, recv_ms=12, lasting_ms=3400)
    found = parse_shrink(line[wording])
    assert found is not None, line[wording]
    assert (found.peer, found.peer_port, found.local_port) == (PEERS[peer], 443, 22)
    assert (found.x, found.y) == (4294967290, 5)
    assert found.outstanding == 11  # across the 2**32 wrap
    assert found.wording == wording
    if wording == "6.6":
        assert (found.recv_ms, found.lasting_ms) == (12, 3400)


def test_ipv6_is_printed_uncompressed_and_read_back() -> None:
    line = kernel_lines("2001:db8::1", 80, 8080, 1, 2)["3.13"]
    assert "2001:0db8:0000:0000:0000:0000:0000:0001:80/8080" in line
    assert parse_shrink(line).peer_raw == "2001:0db8:0000:0000:0000:0000:0000:0001"


@pytest.mark.parametrize(
    ("text", "era"),
    [
        ("TCP:Peer 192.0.2.1:1/2 unexpectedly shrunk window 1:2 (repaired)", "2.6.29"),
        ("Peer 192.0.2.1:1/2 unexpectedly shrunk window 1:2 (repaired)", "3.13"),
        ("Treason uncloaked! Peer 192.0.2.1:1/2 shrinks window 1:2. Repaired.", "2.4.17"),
        ("tcp_retransmit_timer: Peer 192.0.2.1:1/2 unexpectedly shrunk window 1:2 (repaired)",
         "3.13"),
        ("TCP: Probing zero-window on 192.0.2.1:1/2, seq=1:2, recv ?ms ago, lasting ?ms", "6.6"),
    ],
)  # fmt: skip
def test_prefix_variations(text: str, era: str) -> None:
    assert parse_shrink(text).wording == era


@pytest.mark.parametrize(
    "text",
    [
        "nf_ct_tcp: SEQ is over the upper bound (over the window of the receiver) IN= OUT= "
        "SRC=192.0.2.1 DST=192.0.2.2",
        "IN=eth0 OUT= SRC=192.0.2.1 DST=192.0.2.2 LEN=40 PROTO=TCP SPT=80 DPT=22 WINDOW=0 RES=0x00",
        "TCP: tcp_parse_options: Illegal window scaling value 15 > 14 received",
        "myapp: TCP: Treason uncloaked! Peer 192.0.2.1:1/2 shrinks window 1:2. Repaired.",
        "TCP: Treason uncloaked! Peer 192.0.2.1:1/2 shrinks window 1:2. Repaired. (just kidding)",
        "Treason uncloaked! said the Klingon captain",
        "Peer 192.0.2.1:1/2 unexpectedly shrunk window 1:2",
        "Peer 192.0.2.1:70000/2 unexpectedly shrunk window 1:2 (repaired)",
        "Peer 192.0.2.1:1/2 unexpectedly shrunk window 4294967296:2 (repaired)",
        "Peer 999.0.2.1:1/2 unexpectedly shrunk window 1:2 (repaired)",
        "Peer 2001:db8:::::1:1/2 unexpectedly shrunk window 1:2 (repaired)",
        "Peer 1:2:3:4:5:6:7:8:9:10:1/2 unexpectedly shrunk window 1:2 (repaired)",
        "Peer 192.0.2.1:1/2 unexpectedly shrunk window 1:2 (repaired)\x00",
    ],
)
def test_look_alikes_never_match(text: str) -> None:
    assert parse_shrink(text) is None


def test_markers_mean_up_to_n_more() -> None:
    assert parse_marker("net_ratelimit: 37 callbacks suppressed").count == 37
    assert parse_marker("NET: 5 messages suppressed.").count == 5
    assert parse_marker("last message repeated 4 times").count == 4
    assert parse_marker("tcp_retransmit_timer: 9 callbacks suppressed").count == 9
    assert parse_marker("37 callbacks were fine") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    parse_shrink(text)
    parse_marker(text)


@settings(max_examples=200, deadline=None)
@given(
    addr=st.text(alphabet="0123456789abcdefABCDEF:.", min_size=1, max_size=80),
    a=st.integers(0, 10**12),
    b=st.integers(0, 10**12),
)
def test_absurd_addresses_and_numbers_never_crash(addr: str, a: int, b: int) -> None:
    found = parse_shrink(f"Peer {addr}:{a}/{b} unexpectedly shrunk window {a}:{b} (repaired)")
    if found is not None:
        assert found.peer_port <= 0xFFFF and found.local_port <= 0xFFFF
        assert found.x < 2**32 and found.y < 2**32
