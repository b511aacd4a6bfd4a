"""Hand-made captures for the model rules real captures need, each against what RFC 9293 says
the endpoint does, in both engines: a corrupted ACK far past anything sent, a stray segment in
SYN-SENT, and one connection whose two directions carry different VLAN tags."""

from __future__ import annotations

import dataclasses
import io
import random

import pytest

from captures import ether, ipv4, pcap, tcp
from test_tunnels import both
from treason.engine import compiled
from treason.engine.choose import new_engine
from treason.errors import CaptureError
from treason.events import Severity
from treason.model import MAX_WINDOW
from treason.packets import Frame
from treason.scanner import ScanStats, scan

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


def run(data: io.BytesIO, engine: str, **kw: float) -> tuple:
    stats = ScanStats()
    events = []
    error = None
    try:
        events = list(scan(data, engine=engine, retractions=True, stats=stats, **kw))  # type: ignore[arg-type]
    except CaptureError as exc:
        error = str(exc)
    return [dataclasses.asdict(e) for e in events], stats.to_dict(), error


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
    frames = [*handshake()[:1], stray, *handshake()[1:], *shrink()]
    events, stats = scan_frames(frames)
    assert summary(events) == [THE_SHRINK]
    assert events[0]["closing"] is False
    assert stats["model"]["stray_acks"] == 1 and stats["model"]["ignored_syns"] == 0
    assert stats["handshakes"] == 1


def test_without_the_syn_ack_the_clients_ack_shows_it_left_syn_sent() -> None:
    """The SYN-ACK was not captured: the client's ACK proves it arrived (a client in SYN-SENT
    sends no ACK), so the connection is established and the server's data counts."""
    hs = handshake()
    frames = [hs[0], hs[2], hs[3], *shrink()]
    events, stats = scan_frames(frames)
    assert stats["model"]["stray_acks"] == 0
    # The client offered WS: the shift it applies is the server's, unknown without the
    # SYN-ACK; the edge moving back is still seen, judged under the plausible shifts.
    assert events and all(e["src"] == C and not e["scale_known"] for e in events)


# --------------------------------------------------------------------------------------------
# Directions on different VLANs, and copies on several VLANs


def test_a_connection_whose_directions_carry_different_vlans_is_one_connection() -> None:
    """Router on a stick: the client's packets are captured on VLAN 81, the server's on
    VLAN 80. The SYN-ACK acknowledges the SYN's ISN + 1 (RFC 9293 §3.3.2): the handshake pairs
    the two directions into one connection, with its scale, and the shrink is definite."""
    events, stats = scan_frames(handshake(81, 80) + shrink(81, 80))
    assert stats["flows"] == 1 and stats["handshakes"] == 1
    assert summary(events) == [THE_SHRINK]
    assert events[0]["vlan"] == (81,)  # the tag of the segment that made the event


def test_the_same_packets_on_several_vlans_stay_separate_copies() -> None:
    """A SPAN that copies every packet on VLANs 1 and 2: each copy pairs with its own key
    first, so there are two connections, each with its handshake and its shrink."""
    one, two = handshake(1, 1) + shrink(1, 1), handshake(2, 2) + shrink(2, 2)
    events, stats = scan_frames([f for pair in zip(one, two) for f in pair])
    assert stats["flows"] == 2 and stats["handshakes"] == 2
    assert [e["vlan"] for e in events] == [(1,), (2,)]
    assert summary(events) == [THE_SHRINK, THE_SHRINK]


def test_both_sub_interfaces_of_a_router_on_a_stick_are_two_copies() -> None:
    """Every packet seen twice, as it enters and leaves the router (81 and 80 for the client's,
    80 and 81 for the server's): two copies, each a whole connection, never one merged."""
    c81, s80 = handshake(81, 80) + shrink(81, 80), handshake(80, 81) + shrink(80, 81)
    events, stats = scan_frames([f for pair in zip(c81, s80) for f in pair])
    assert stats["flows"] == 2 and stats["handshakes"] == 2
    assert summary(events) == [THE_SHRINK, THE_SHRINK]


def test_a_syn_ack_of_another_syn_does_not_pair() -> None:
    """A SYN-ACK on VLAN 80 that acknowledges some other ISN is not the answer to the SYN on
    VLAN 81: the two stay apart."""
    frames = handshake(81, 80)
    frames[1] = server(tcp(80, 40000, 5000, 4242, 0x12, 65160, options=MSS + WS7), 80)
    _, stats = scan_frames(frames)
    assert stats["flows"] == 2 and stats["handshakes"] == 0


@pytest.mark.parametrize("seed", range(40))
def test_pairing_evictions_and_reuse_agree_in_both_engines(seed: int) -> None:
    """Random handshakes, data and port reuse on three 4-tuples, each direction on a random
    VLAN, under tiny flow caps and idle timeouts: pairing, aliases and SYN-SENT entries must
    come and go identically in both engines."""
    rnd = random.Random(seed)
    isn = {port: 1000 * port for port in (1, 2, 3)}
    frames: list[tuple[int, bytes]] = []
    t = 0
    for _ in range(120):
        port = rnd.choice((1, 2, 3))
        v_c, v_s = rnd.choice((None, 81, 82)), rnd.choice((None, 80, 81))
        kind = rnd.random()
        base = isn[port]
        if kind < 0.15:
            isn[port] = base = rnd.choice((base, base + 77777))
            seg = client(tcp(port, 80, base, 0, 0x02, 64240, options=WS7), v_c)
        elif kind < 0.35:
            ack = base + 1 if rnd.random() < 0.8 else base + 5
            seg = server(tcp(80, port, 9000, ack, 0x12, 65160, options=WS7), v_s)
        elif kind < 0.45:
            seg = client(tcp(port, 80, base + 1, 9001, rnd.choice((0x10, 0x11, 0x04)), 300), v_c)
        else:
            ack = base + 1 + rnd.randrange(0, 3000)
            win = rnd.randrange(0, 600)
            flags = rnd.choice((0x10, 0x18, 0x11))
            seg = server(tcp(80, port, 9001 + rnd.randrange(0, 3000), ack, flags, win), v_s)
        t += rnd.choice((1, 1_000_000, 3_000_000_000))
        frames.append((t, seg))
    data = pcap(frames)
    for max_flows, idle in ((500_000, 600.0), (2, 600.0), (1, 600.0), (3, 2.0)):
        ref = run(io.BytesIO(data), "reference", max_flows=max_flows, idle_timeout=idle)
        if compiled.available():
            assert run(io.BytesIO(data), "fast", max_flows=max_flows, idle_timeout=idle) == ref


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_a_paired_connection_is_one_flow_for_the_live_recorder(engine: str) -> None:
    """``live --write`` keeps a ring per flow: both directions of a router-on-a-stick
    connection must land in one, and copies on two VLANs in two."""
    if engine == "fast" and not compiled.available():
        pytest.skip("the compiled scanner is not built (no C compiler)")
    stick = handshake(81, 80) + shrink(81, 80)
    copies = [f for pair in zip(handshake(1, 1), handshake(2, 2)) for f in pair]
    for frames, flows in ((stick, 1), (copies, 2)):
        eng = new_engine(engine, ScanStats(), 500_000, 600 * 10**9)
        eng.mark_flows()
        eng.feed([Frame(i + 1, i * 1000, 1, f, len(f)) for i, f in enumerate(frames)])
        marks = eng.take_marks()
        assert all(m is not None for m in marks)
        assert len({m[0] for m in marks if m is not None}) == flows
