"""Hand-made captures for the model rules real captures need, each against what RFC 9293 says
the endpoint does, in both engines: a corrupted ACK far past anything sent, a stray segment in
SYN-SENT, and one connection whose two directions carry different VLAN tags."""

from __future__ import annotations

from captures import ether, ipv4, pcap, tcp
from test_tunnels import both
from treason.events import Severity
from treason.model import MAX_WINDOW

C, S = "10.0.0.1", "10.0.0.2"
WS7 = b"\x03\x03\x07"
MSS = b"\x02\x04\x05\xb4"


def client(seg: bytes, vlan: int | None = None) -> bytes:
    return ether(ipv4(C, S, seg), vlans=[vlan] if vlan is not None else [])


def server(seg: bytes, vlan: int | None = None) -> bytes:
    return ether(ipv4(S, C, seg), vlans=[vlan] if vlan is not None else [])


def handshake(cv: int | None = None, sv: int | None = None) -> list[bytes]:
    """SYN and SYN-ACK with window scale 7, the client's ACK, and the server's first data."""
    return [
        client(tcp(40000, 80, 1000, 0, 0x02, 64240, options=MSS + WS7), cv),
        server(tcp(80, 40000, 5000, 1001, 0x12, 65160, options=MSS + WS7), sv),
        client(tcp(40000, 80, 1001, 5001, 0x10, 502), cv),
        server(tcp(80, 40000, 5001, 1001, 0x18, 509, payload=b"x" * 1000), sv),
    ]


def shrink(cv: int | None = None, sv: int | None = None) -> list[bytes]:
    """The client offers up to 6001 + 500·128, then, after more data, only 7001 + 100·128."""
    return [
        client(tcp(40000, 80, 1001, 6001, 0x10, 500), cv),
        server(tcp(80, 40000, 6001, 1001, 0x18, 509, payload=b"y" * 1000), sv),
        client(tcp(40000, 80, 1001, 7001, 0x10, 100), cv),
    ]


def scan_frames(frames: list[bytes]) -> tuple[list[dict], dict]:
    events, stats, error = both(pcap((i * 1000, f) for i, f in enumerate(frames)))
    assert error is None
    for e in events:  # the invariant every event keeps
        assert 0 < e["shrink_bytes"] <= MAX_WINDOW and e["beyond_bytes"] <= MAX_WINDOW
    return events, stats


THE_SHRINK = (C, Severity.SHRINK, 70001, 19801, 7, True, "definite")


def summary(events: list[dict]) -> list[tuple]:
    keys = ("src", "cls", "old_edge", "new_edge", "scale", "scale_known", "certainty")
    return [tuple(e[k] for k in keys) for e in events]


def test_the_capture_finds_the_plain_shrink() -> None:
    """The baseline every case below is a variation of."""
    events, stats = scan_frames(handshake() + shrink())
    assert summary(events) == [THE_SHRINK]
    assert stats["handshakes"] == 1


def test_an_ack_past_every_edge_ever_offered_is_corrupt() -> None:
    """RFC 9293 §3.10.7.4: a sender drops an ACK of something not yet sent (SEG.ACK > SND.NXT).
    The model accepts such an ACK only as data the capture missed, which can never lie past
    the furthest edge the receiver ever offered: this one (1.8 GB ahead) is dropped and leaves
    SND.UNA alone, so the real shrink after it is still found, and a second corrupted ACK with
    a zero window is no 1.7 GB "shrink" either."""
    corrupt = client(tcp(40000, 80, 1001, 6001 + 0x70000000, 0x10, 300))
    late = client(tcp(40000, 80, 1001, 7001 + 0x66000000, 0x10, 0))
    frames = handshake() + shrink()[:2] + [corrupt] + shrink()[2:] + [late]
    events, stats = scan_frames(frames)
    assert summary(events) == [THE_SHRINK]
    assert stats["model"]["impossible_acks"] == 2
    assert stats["model"]["unseen_acks"] == 0


def test_an_ack_of_data_the_capture_missed_is_still_accepted() -> None:
    """Data the capture lost, inside the window offered, is acknowledged: that ACK is real."""
    missed = [client(tcp(40000, 80, 1001, 6001, 0x10, 500))]
    missed.append(client(tcp(40000, 80, 1001, 9001, 0x10, 500)))  # 2000 unseen bytes
    missed.append(client(tcp(40000, 80, 1001, 9001, 0x10, 10)))  # and a shrink after
    events, stats = scan_frames(handshake() + missed)
    assert stats["model"]["unseen_acks"] == 1 and stats["model"]["impossible_acks"] == 0
    assert [(e["old_edge"], e["new_edge"]) for e in events] == [(9001 + 64000, 9001 + 1280)]


def test_a_fin_ack_in_syn_sent_is_dropped_and_the_real_syn_ack_sets_the_scale() -> None:
    """RFC 9293 §3.10.7.3: in SYN-SENT a segment with neither SYN nor RST is dropped. A stray
    FIN/ACK that acknowledges the SYN must not stand in for the SYN-ACK: the SYN-ACK after it
    still completes the handshake with scale 7, and the connection is not closing."""
    stray = server(tcp(80, 40000, 777, 1001, 0x11, 200))
    frames = handshake()[:1] + [stray] + handshake()[1:] + shrink()
    events, stats = scan_frames(frames)
    assert summary(events) == [THE_SHRINK]
    assert events[0]["closing"] is False
    assert stats["model"]["stray_acks"] == 1 and stats["model"]["ignored_syns"] == 0
    assert stats["handshakes"] == 1


def test_without_the_syn_ack_the_clients_ack_shows_it_left_syn_sent() -> None:
    """The SYN-ACK was not captured: the client's ACK proves it arrived (a client in SYN-SENT
    sends no ACK), so the connection is established and the server's data counts."""
    hs = handshake()
    frames = [hs[0], hs[2], hs[3]] + shrink()
    events, stats = scan_frames(frames)
    assert stats["model"]["stray_acks"] == 0
    # The client offered WS: the shift it applies is the server's, unknown without the
    # SYN-ACK; the edge moving back is still seen, judged under the plausible shifts.
    assert events and all(e["src"] == C and not e["scale_known"] for e in events)
