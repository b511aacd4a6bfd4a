"""A real Linux kernel shrinking its window, recorded by tcpdump, checked against tshark.

The receiver in one network namespace runs with ``net.ipv4.tcp_shrink_window=1`` and reads
slowly while the sender writes small segments; its kernel then moves the advertised right edge
left. The oracle computes every right edge from tshark's fields; treason must report exactly
those shrinks with exactly those edges. The same traffic with the sysctl at 0, and a bulk
iperf3 transfer, must give no events at all.

The second recipe (``netns.capture_kernel_shrink``) makes the receiver close its window to zero
over segments still in flight, recorded at the writer: the ``kernel`` class, checked against
tshark's numbers and against the writer's own TCB read with ``TCP_INFO``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import oracle
import treason
from conftest import require_tshark
from treason.events import Event, Severity

netns = pytest.mark.netns

RECEIVER_PORTS = {5001, 5002}


@pytest.fixture(autouse=True)
def _tshark() -> None:
    require_tshark()


def by_frame(path: Path) -> dict[int, oracle.EdgeUpdate]:
    return {u.frame: u for u in oracle.right_edges(path)}


@netns
def test_kernel_shrinks_with_sysctl_on(shrink_capture: Path) -> None:
    """The oracle sees the receiver, and only the receiver, move its right edge left."""
    updates = oracle.right_edges(shrink_capture)
    shrinks = [u for u in updates if u.is_shrink]
    receivers = {(u.src, u.sport) for u in shrinks}
    assert {port for _, port in receivers} == RECEIVER_PORTS, receivers
    for u in shrinks:
        # Linux shrinks only a window it scales (tcp_select_window checks rcv_wscale).
        assert u.scale > 0
    # Typically twice per connection: once while the buffer fills, once closing it to zero.
    assert len(shrinks) >= len(RECEIVER_PORTS)


def assert_same_shrinks(path: Path) -> None:
    """treason reports exactly the oracle's shrinks, each with the oracle's right edges."""
    expected = {u.frame: u for u in oracle.shrinks(path)}
    events = list(treason.scan(path))
    assert [e.frame for e in events] == sorted(expected)
    for e in events:
        u = expected[e.frame]
        assert (e.src, e.sport, e.dst, e.dport) == (u.src, u.sport, u.dst, u.dport)
        assert e.scale == u.scale and e.scale_known
        assert e.new_edge == u.edge, f"frame {e.frame}: new right edge"
        assert e.old_edge == u.prev_edge, f"frame {e.frame}: previous accepted right edge"
        assert e.shrink_bytes == u.retreat
        assert e.cls >= Severity.SHRINK
        assert e.certainty == "definite"


@netns
def test_treason_finds_the_kernel_shrinks(shrink_capture: Path) -> None:
    """Every shrink the oracle computes is reported at its frame with the oracle's edges."""
    assert_same_shrinks(shrink_capture)


def test_bundled_example(example_capture: Path) -> None:
    """The README's example: three connections, each shrinking twice, all found."""
    frames = [u.frame for u in oracle.shrinks(example_capture)]
    assert len(frames) == 6, frames
    assert_same_shrinks(example_capture)


@netns
def test_retractions_match_the_oracle(shrink_capture: Path) -> None:
    """Sub-granularity retreats (RFC 7323 rounding) are retractions, at the oracle's frames."""
    updates = by_frame(shrink_capture)
    events = list(treason.scan(shrink_capture, retractions=True))
    retreats = sorted(f for f, u in updates.items() if u.retreat)
    assert [e.frame for e in events] == retreats
    for e in events:
        u = updates[e.frame]
        assert (e.old_edge, e.new_edge) == (u.prev_edge, u.edge)
        assert (e.cls is Severity.RETRACTION) == (not u.is_shrink)


@netns
def test_no_events_with_sysctl_off(noshrink_capture: Path) -> None:
    """Same slow reader, shrinking forbidden: the window closes to zero but never retreats."""
    updates = oracle.right_edges(noshrink_capture)
    assert any(u.win == 0 for u in updates), "the receive buffer never filled"
    assert not [u for u in updates if u.retreat]
    assert list(treason.scan(noshrink_capture, retractions=True)) == []


@netns
def test_no_events_in_bulk_iperf3(iperf3_capture: Path) -> None:
    """Four parallel bulk streams: thousands of window updates, none of them a retreat."""
    updates = oracle.right_edges(iperf3_capture)
    flows = {(u.src, u.sport, u.dst, u.dport) for u in updates}
    assert len(flows) >= 5  # control connection plus four data streams, one direction each
    assert len(updates) > 1000
    assert not [u for u in updates if u.is_shrink]
    assert list(treason.scan(iperf3_capture)) == []


# -- kernel-visible: a zero window over data already sent --------------------------------------

KERNEL_EXAMPLE_FRAMES = [149]


def kernel_line(u: oracle.EdgeUpdate) -> str:
    """The line Linux 3.13-6.5 on the writer prints, built from tshark's numbers alone."""
    return (
        f"Peer {u.src}:{u.sport}/{u.dport} unexpectedly shrunk window "
        f"{u.ack}:{u.sender_nxt} (repaired)"
    )


def assert_same_kernel_events(path: Path) -> list[oracle.EdgeUpdate]:
    """treason's kernel events are the oracle's zero windows over outstanding data, exactly."""
    visible = oracle.kernel_visible(path)
    assert visible, "no zero window with data outstanding in the capture"
    for u in visible:
        assert u.sender_nxt is not None and oracle.before(u.ack, u.sender_nxt)
        assert u.retreat > 0 and u.edge == u.ack
    events = [e for e in treason.scan(path) if e.cls is Severity.KERNEL]
    assert [e.frame for e in events] == [u.frame for u in visible]
    for e, u in zip(events, visible, strict=True):
        assert (e.src, e.sport, e.dst, e.dport) == (u.src, u.sport, u.dst, u.dport)
        assert (e.snd_una, e.snd_nxt) == (u.ack, u.sender_nxt), f"frame {e.frame}: X:Y"
        assert (e.old_edge, e.new_edge) == (u.prev_edge, u.edge)
        assert e.beyond_bytes == (u.sender_nxt - u.ack) % oracle.MOD
        assert e.win == 0 and e.scale == u.scale and e.certainty == "definite"
        assert e.kernel_line == kernel_line(u)
    return visible


@netns
def test_zero_window_over_data_in_flight(kernel_capture) -> None:
    """A fresh capture at the writer: the receiver closes its window over segments in flight."""
    visible = assert_same_kernel_events(kernel_capture.path)
    assert {u.src for u in visible} == {"10.213.0.2"}


def writer_isns(path: Path) -> dict[int, int]:
    return {
        int(r["tcp.srcport"]): int(r["tcp.seq_raw"])
        for r in oracle.tshark_rows(path)
        if r["tcp.flags.syn"] in ("1", "True") and r["tcp.flags.ack"] in ("0", "False")
    }


@netns
def test_the_writer_itself_had_a_zero_window_with_data_out(kernel_capture) -> None:
    """The writer's own TCB (TCP_INFO) confirms the stall: the condition Linux logs.

    The first kernel event of a connection is the window closing while the reader pauses, so
    it lasts until the writer's retransmission timer fires. At its X the writer's kernel held
    a zero send window with snd_una = X and data outstanding. Its snd_nxt can exceed the
    event's Y: a segment tcpdump saw after the ACK may have left before the writer's stack
    processed that ACK.
    """
    path = kernel_capture.path
    isn = writer_isns(path)
    first: dict[int, Event] = {}
    for e in treason.scan(path):
        if e.cls is Severity.KERNEL:
            first.setdefault(e.dport, e)
    assert first
    for e in first.values():
        held = kernel_capture.stalls[e.sport - 5001]
        x = (e.snd_una - isn[e.dport]) % oracle.MOD
        y = (e.snd_nxt - isn[e.dport]) % oracle.MOD
        nxt = [n for una, n in held if una == x]
        assert nxt, f"frame {e.frame}: the writer never had a zero window at X={x}: {held}"
        assert all(n > x and n >= y for n in nxt), (e.frame, x, y, held)


@netns
def test_zero_window_at_the_old_edge_with_sysctl_off(kernel_noshrink_capture) -> None:
    """Same traffic, shrinking forbidden: the window closes only once the data reached the edge.

    The writer's own TCB agrees: every zero send window it saw had nothing outstanding.
    """
    path = kernel_noshrink_capture.path
    updates = oracle.right_edges(path)
    assert any(u.win == 0 for u in updates), "the receive buffer never filled"
    assert not [u for u in updates if u.retreat]
    assert list(treason.scan(path, retractions=True)) == []
    stalls = [tcb for conn in kernel_noshrink_capture.stalls for tcb in conn]
    assert stalls and all(una == nxt for una, nxt in stalls), stalls


def test_bundled_kernel_example() -> None:
    """examples/kernel.pcap: one zero window over 2896 bytes in flight, at frame 149."""
    from conftest import KERNEL_EXAMPLE

    visible = assert_same_kernel_events(KERNEL_EXAMPLE)
    assert [u.frame for u in visible] == KERNEL_EXAMPLE_FRAMES
    (e,) = list(treason.scan(KERNEL_EXAMPLE))
    assert e.kernel_line == (
        "Peer 10.213.0.2:5001/33644 unexpectedly shrunk window 822422677:822425573 (repaired)"
    )
    assert e.beyond_bytes == 2896 and e.shrink_bytes == 4696
