"""The reference model against the rules of docs/model.md: worked example and properties."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from strategies import R_ADDR, conversations
from treason import seq as sq
from treason.events import Severity
from treason.model import FlowTable
from treason.packets import ACK, RST, SYN, Segment
from treason.simulate import SEED_ACKS, replay, seed_example

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(segments, **kw):
    table = FlowTable(**kw)
    events = [e for seg in segments for e in table.process(seg)[1]]
    return events + table.flush(), table


def test_seed_example_flags_exactly_the_fifth_ack():
    steps = seed_example()
    assert [s.event is not None for s in steps] == [False, False, False, False, True]
    event = steps[4].event
    assert event.cls is Severity.SHRINK
    assert event.shrink_bytes == 50
    assert event.certainty == "definite"
    assert [s.right_edge for s in steps] == [1024, 1024, 1924, 2124, 2074]


def test_seed_example_wraps_sequence_space():
    # The simulation's sender starts 256 bytes before 2**32: the edges wrap and still compare.
    steps = replay(1024, SEED_ACKS)
    assert sq.before(steps[4].event.old_edge, 2000)  # absolute numbers wrapped past zero


@given(conversations())
@PROPS
def test_well_behaved_conversations_give_no_events(conv):
    events, _ = run(conv.segments)
    reported = [e for e in events if e.cls >= Severity.SHRINK]
    assert reported == []
    if conv.handshake:
        assert events == []  # rounding up: the edge never moves back at all


@given(conversations(inject=True, handshake=True))
@PROPS
def test_injected_shrink_is_found_at_its_frame_with_its_size(conv):
    events, _ = run(conv.segments)
    if conv.injected_frame is None:
        assert events == []
        return
    assert len(events) == 1
    (event,) = events
    assert event.frame == conv.injected_frame
    assert event.shrink_bytes == conv.injected_bytes
    assert event.src == R_ADDR
    assert event.cls >= Severity.SHRINK
    assert event.certainty == "definite"
    assert event.scale == conv.shift


@given(conversations(inject=True, handshake=False))
@PROPS
def test_injected_shrink_without_handshake_is_found(conv):
    events, _ = run(conv.segments)
    frames = {e.frame for e in events if e.cls >= Severity.SHRINK}
    if conv.injected_frame is None:
        assert frames == set()
    else:
        assert frames == {conv.injected_frame}
        (event,) = [e for e in events if e.frame == conv.injected_frame]
        assert not event.scale_known


@given(conversations(round_down=True, handshake=True, min_shift=1))
@PROPS
def test_sub_granularity_retractions_are_only_retractions(conv):
    events, _ = run(conv.segments)
    for e in events:
        assert e.cls is Severity.RETRACTION
        assert 0 < e.shrink_bytes < 1 << conv.shift


def seg(frame, src, dst, seq, ack, flags, win, length=0, ws=None, **kw):
    return Segment(
        frame=frame,
        ts_ns=frame * 10**6,
        src=src[0],
        sport=src[1],
        dst=dst[0],
        dport=dst[1],
        seq=seq,
        ack=ack,
        flags=flags,
        win=win,
        payload_len=length,
        ws=ws,
        ip_id=frame,
        checksum=frame,
        **kw,
    )


C, V = ("192.0.2.10", 50000), ("192.0.2.20", 443)


def handshake(ws_c=7, ws_v=7):
    return [
        seg(1, C, V, 1000, 0, SYN, 64240, ws=ws_c),
        seg(2, V, C, 5000, 1001, SYN | ACK, 65160, ws=ws_v),
        seg(3, C, V, 1001, 5001, ACK, 502),
    ]


def test_zero_window_with_data_outstanding_is_kernel_visible_with_log_lines():
    segs = [
        *handshake(),
        seg(4, C, V, 1001, 5001, ACK, 502, length=1000),  # client sends 1000 bytes
        seg(5, V, C, 5001, 1001, ACK, 100),  # server window: edge 1001 + 12800
        seg(6, C, V, 2001, 5001, ACK, 502, length=1000),
        seg(7, V, C, 5001, 1501, ACK, 0),  # acks 500, window 0: 1500 bytes outstanding
    ]
    events, _ = run(segs)
    (event,) = events
    assert event.cls is Severity.KERNEL
    assert (event.snd_una, event.snd_nxt) == (1501, 3001)
    assert event.new_edge == 1501 and event.old_edge == 1001 + (100 << 7)
    assert event.beyond_bytes == 1500
    assert event.kernel_line == (
        "Peer 192.0.2.20:443/50000 unexpectedly shrunk window 1501:3001 (repaired)"
    )
    assert event.kernel_lines["2.4.17"] == (
        "TCP: Treason uncloaked! Peer 192.0.2.20:443/50000 shrinks window 1501:3001. Repaired."
    )


def test_mid_connection_syn_does_not_reset_scales():
    segs = [
        *handshake(ws_c=7, ws_v=7),
        seg(4, V, C, 5001, 1001, ACK, 100),
        seg(5, V, C, 9999, 1001, SYN, 65535, ws=0),  # bogus SYN inside the connection
        seg(6, V, C, 5001, 1001, ACK, 99),  # one granule back: 128 bytes under shift 7
    ]
    events, table = run(segs)
    (event,) = events
    assert event.scale == 7 and event.shrink_bytes == 128
    assert table.stats.model.ignored_syns == 1


def test_rst_windows_are_ignored():
    segs = [
        *handshake(),
        seg(4, V, C, 5001, 1001, ACK, 100),
        seg(5, V, C, 5001, 1001, RST | ACK, 0),
    ]
    events, table = run(segs)
    assert events == [] and table.stats.model.resets == 1


def test_old_ack_and_stale_update_are_never_shrinks():
    segs = [
        *handshake(ws_c=0, ws_v=0),
        seg(4, C, V, 1001, 5001, ACK, 502, length=3000),
        seg(5, V, C, 5001, 3001, ACK, 1000),  # edge 4001
        seg(6, V, C, 5001, 2001, ACK, 1000),  # reordered older ACK: edge 3001
    ]
    events, table = run(segs)
    assert events == [] and table.stats.model.old_acks == 1


def test_paws_rejects_reordered_window_update():
    segs = [
        *handshake(ws_c=0, ws_v=0),
        seg(4, V, C, 5001, 1001, ACK, 2000, tsval=20),
        seg(5, V, C, 5001, 1001, ACK, 1000, tsval=10),  # overtaken on the way
        seg(6, V, C, 5001, 1001, ACK, 900, tsval=30),  # a real shrink: edge 1901 < 2001... 3001
    ]
    events, table = run(segs)
    assert table.stats.model.paws_rejects == 1
    (event,) = events
    assert event.frame == 6 and event.shrink_bytes == 1100


def test_exact_duplicate_copies_are_dropped():
    a = seg(4, V, C, 5001, 1001, ACK, 100)
    _, table = run([*handshake(), a, a])
    assert table.stats.model.duplicates == 1


def test_vlans_separate_flows():
    """The same 4-tuple on another VLAN is another flow: its smaller window is no shrink of
    the untagged flow's (in one flow, frame 5 would be a same-SEQ/ACK update moving the edge
    from 1101 back to 1011)."""
    untagged = [*handshake(ws_c=0, ws_v=0), seg(4, V, C, 5001, 1001, ACK, 100)]
    tagged = seg(5, V, C, 5001, 1001, ACK, 10, vlan=(20,))
    events, table = run([*untagged, tagged])
    assert events == []
    assert table.stats.flows == 2 and table.stats.handshakes == 1
    events, _ = run([*untagged, seg(5, V, C, 5001, 1001, ACK, 10)])
    assert [(e.frame, e.old_edge, e.new_edge) for e in events] == [(5, 1101, 1011)]


def test_unknown_scale_zero_window_is_definite():
    segs = [
        seg(1, C, V, 1001, 5001, ACK, 502, length=1000),
        seg(2, V, C, 5001, 1001, ACK, 300),
        seg(3, V, C, 5001, 1501, ACK, 0),
    ]
    events, _ = run(segs)
    (event,) = events
    assert event.cls is Severity.KERNEL and not event.scale_known
    assert event.new_edge == 1501


def test_idle_eviction_and_resumption():
    segs = [*handshake(ws_c=7, ws_v=7), seg(4, V, C, 5001, 1001, ACK, 100)]
    late = seg(5, V, C, 5001, 1001, ACK, 99)
    late = Segment(**{f: getattr(late, f) for f in late.__slots__} | {"ts_ns": 10**12})
    events, table = run([*segs, late], idle_timeout_ns=10**9)
    assert table.stats.evicted_idle == 1 and table.stats.flows == 2
    assert events == []  # resumed flow has no baseline yet


def test_flow_cap_evicts_least_recent():
    segs = [seg(i, ("10.0.0.1", 1000 + i), V, 1, 1, ACK, 10) for i in range(1, 6)]
    _, table = run(segs, max_flows=3)
    assert table.stats.evicted_cap == 2 and len(table) == 3


def test_data_in_flight_after_a_zero_window_counts_toward_y():
    """At a capture point near the sender, segments it sent before it saw the zero window can
    be recorded just after the ACK; they are part of X:Y and make the stall kernel-visible."""
    segs = [
        *handshake(ws_c=0, ws_v=0),
        seg(4, C, V, 1001, 5001, ACK, 502, length=1000),
        seg(5, V, C, 5001, 1001, ACK, 3000),  # edge 4001
        seg(6, V, C, 5001, 2001, ACK, 0),  # edge back to 2001: nothing outstanding yet
        seg(7, C, V, 2001, 5001, ACK, 502, length=1000),  # was in flight
        seg(8, C, V, 3001, 5001, ACK, 502, length=500),  # was in flight
        seg(9, C, V, 1999 + 1, 5001, ACK, 502),  # probe-free pure ACK: no data
    ]
    table = FlowTable()
    released = [table.process(s)[1] for s in segs]
    assert released[5] == [] and released[6] == []  # the event is still open
    (event,) = [e for r in released for e in r] + table.flush()
    assert event.frame == 6 and event.cls is Severity.KERNEL
    assert (event.snd_una, event.snd_nxt, event.beyond_bytes) == (2001, 3501, 1500)
    assert event.kernel_line.endswith("shrunk window 2001:3501 (repaired)")


def test_open_zero_window_event_is_final_when_the_window_reopens_and_keeps_frame_order():
    other = (("192.0.2.30", 50001), ("192.0.2.40", 80))
    segs = [
        *handshake(ws_c=0, ws_v=0),
        seg(4, V, C, 5001, 1001, ACK, 3000),
        seg(5, V, C, 5001, 1001, ACK, 0),  # shrink to zero: open
        seg(6, other[1], other[0], 1, 1, ACK, 100),
        seg(7, other[1], other[0], 1, 1, ACK, 50),  # another flow's shrink waits behind it
        seg(8, V, C, 5001, 1001, ACK, 4000),  # window reopens: frame 5 final
    ]
    table = FlowTable()
    released = [table.process(s)[1] for s in segs]
    assert [[e.frame for e in r] for r in released[4:]] == [[], [], [], [5, 7]]
    assert released[7][0].cls is Severity.SHRINK  # nothing was in flight


def test_open_event_is_final_after_the_minimum_rto():
    late = 10**9  # one second later, nothing from either side in between
    segs = [
        *handshake(ws_c=0, ws_v=0),
        seg(4, V, C, 5001, 1001, ACK, 3000),
        seg(5, V, C, 5001, 1001, ACK, 0),
    ]
    table = FlowTable()
    assert [table.process(s)[1] for s in segs][-1] == []
    assert [e.frame for e in table.advance(segs[-1].ts_ns + late)] == [5]
