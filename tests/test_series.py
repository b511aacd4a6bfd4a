"""The graph series ``plot`` collects in the scanning pass: both engines, point for point.

The reference collector (``treason.series``) and the compiled scanner's "plot series"
section keep the same points of the same connections, also when the flow table evicts flows
and when tiny caps force the sampling stride up many times; the rule itself (detail around
every event, bounded overview, the last point) is checked on a long transfer.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tunnels
from captures import ether, ipv4, pcap, tcp
from strategies import to_pcap
from test_fastpath import LIMITS, capture, damaged
from test_plot import KERNEL, SHRINK, bulk_transfer
from treason.decode import decode
from treason.engine.choose import new_engine
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.model import FlowTable
from treason.packets import Frame, Segment
from treason.readers import open_frames
from treason.scanner import fast_available, scan
from treason.seq import MOD
from treason.series import AFTER, BEFORE, SeriesCollector, directions

needs_fast = pytest.mark.skipif(
    not fast_available(), reason="the compiled scanner is not built (no C compiler)"
)
CAPS = st.sampled_from([1, 2, 3, 7, 4096])


def collect(data: bytes, engine: str, cap: int, **limits) -> tuple[list, list]:
    collector = SeriesCollector(cap=cap)
    events = []
    try:
        for e in scan(io.BytesIO(data), engine=engine, retractions=True, series=collector,
                      **limits):  # fmt: skip
            events.append(e.key())
    except CaptureError:
        pass
    return events, collector.result()


@needs_fast
@pytest.mark.parametrize("cap", [1, 3, 4096])
@pytest.mark.parametrize("path", [KERNEL, SHRINK], ids=["kernel", "shrink"])
def test_examples_agree(path, cap):
    data = path.read_bytes()
    ref = collect(data, "reference", cap)
    assert collect(data, "fast", cap) == ref
    assert ref[1]


@needs_fast
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=capture(), limits=LIMITS, cap=CAPS)
def test_generated_captures_agree(data, limits, cap):
    assert collect(data, "fast", cap, **limits) == collect(data, "reference", cap, **limits)


@needs_fast
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(), cap=CAPS)
def test_damaged_captures_agree(data, cap):
    assert collect(data, "fast", cap) == collect(data, "reference", cap)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_detail_around_the_event_and_a_bounded_overview(engine):
    if engine == "fast" and not fast_available():
        pytest.skip("the compiled scanner is not built")
    n, shrink_at, cap = 3_000, 2_000, 64
    segs = bulk_transfer(n, MOD - 1_000_500, shrink_at)
    events, series = collect(to_pcap(segs), engine, cap)
    (frame,) = [e[0] for e in events]
    ((_, points),) = series
    frames = [p[1] for p in points]
    assert frames == sorted(frames)
    # Frames are numbered from 1 in segment order: the event's neighbours are all there.
    assert set(range(frame - BEFORE, frame + AFTER + 1)) <= set(frames)
    # The overview: about cap points over the whole transfer (2 * cap at most before the
    # stride doubles), plus the detail, plus the last point.
    assert len(points) <= 2 * cap + BEFORE + AFTER + 2
    assert frames[0] == 1 and frames[-1] == len(segs)


def engine_series(engine: str, batches: list[list]) -> tuple[list, list]:
    """Frames fed in batches to one engine made with ``series=`` (as ``live`` feeds it), then
    the end of the stream: the events and the collected series."""
    collector = SeriesCollector(cap=3)
    runner = new_engine(engine, ScanStats(), 2, 10**9, series=collector)
    events = []
    for batch in batches:
        events += runner.feed(batch)
    events += runner.flush()
    return [e.key() for e in events], collector.result()


@needs_fast
def test_frames_fed_in_batches_collect_the_same_series():
    # Two captures one after the other, numbered on as a live capture numbers its frames.
    both = [*open_frames(KERNEL), *open_frames(SHRINK)]
    frames = [dataclasses.replace(f, number=i) for i, f in enumerate(both, 1)]
    batches = [frames[i : i + 97] for i in range(0, len(frames), 97)]
    ref = engine_series("reference", batches)
    assert engine_series("fast", batches) == ref
    assert len(ref[1]) >= 2


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_flush_ends_every_series_and_a_flow_that_goes_on_starts_anew(engine):
    if engine == "fast" and not fast_available():
        pytest.skip("the compiled scanner is not built")
    frames = list(open_frames(SHRINK))
    collector = SeriesCollector()
    runner = new_engine(engine, ScanStats(), 100, 10**12, series=collector)
    runner.feed(frames)
    runner.flush()
    first = collector.result()
    assert first and all(points for _, points in first)
    runner.flush()  # nothing new: nothing more
    assert collector.result() == first


# --------------------------------------------------------------------------- tunnels and tags


def scan_series(data: bytes, engine: str) -> tuple[list, list]:
    """Events (as ``Event``s) and collected series of one engine."""
    collector = SeriesCollector()
    events = list(scan(io.BytesIO(data), engine=engine, series=collector))
    return events, collector.result()


def engines_series(data: bytes) -> tuple[list, list]:
    """The reference engine's events and series, after checking the compiled one's equal."""
    ref = scan_series(data, "reference")
    if fast_available():
        fast = scan_series(data, "fast")
        assert [e.key() for e in fast[0]] == [e.key() for e in ref[0]]
        assert fast[1] == ref[1]
    return ref


@pytest.mark.parametrize("name", sorted(tunnels.ENCAPSULATIONS))
def test_tunnelled_series_are_keyed_as_the_model_keys_the_flow(name):
    """Each encapsulation's two conversations (IPv4, IPv6): one series each, under the flow
    key the model gives the connection (its tag path: VLAN ids and tunnel identifiers), and
    the page's directions find their points."""
    wrap, _ = tunnels.ENCAPSULATIONS[name]
    packets = tunnels.conversation(False) + tunnels.conversation(True)
    frames = [wrap(p) for p in packets]
    events, series = engines_series(pcap((i * 1_000_000, f) for i, f in enumerate(frames)))
    syns = [decode(Frame(n, 0, 1, frames[n - 1], len(frames[n - 1]))) for n in (1, 9)]
    assert all(isinstance(s, Segment) and s.path for s in syns), "the tunnel is in the key"
    assert [key for key, _ in series] == [FlowTable.key(s) for s in syns]  # type: ignore[arg-type]
    assert [len(points) for _, points in series] == [8, 8]
    drawn = directions(series, events)
    assert len(drawn) == 2
    for d in drawn.values():
        assert d.key[5] == d.events[0].tunnel
        first = 8 if d.events[0].frame > 8 else 0  # the IPv6 conversation's frame 1 is 9
        assert [s.frame - first for s in d.sent] == [2, 4, 6]  # the server's SYN-ACK and data
        assert [a.frame - first for a in d.acked] == [3, 5, 7, 8]  # the client's ACKs
        assert [m.event.frame for m in d.marks] == [e.frame for e in d.events]


def test_tenants_on_the_same_inner_addresses_keep_their_own_series():
    """Two VXLAN tenants run the same 4-tuple: two series, and each graph is its own tenant's."""
    one = tunnels.conversation(False)
    two = tunnels.conversation(False, client="10.0.0.1", server="10.0.0.2")

    def vx(vni: int, p: bytes) -> bytes:
        return ether(
            tunnels.outer_ip(tunnels.udp(4789, tunnels.vxlan(vni, tunnels.ether_ip(p))), 17)
        )

    frames = [f for a, b in zip(one, two) for f in (vx(1, a), vx(2, b))]
    events, series = engines_series(pcap((i, f) for i, f in enumerate(frames)))
    assert sorted(key[0] for key, _ in series) == [(1 << 32 | 1,), (1 << 32 | 2,)]
    drawn = directions(series, events)
    assert sorted(d.key[5] for d in drawn.values()) == [("vxlan:1",), ("vxlan:2",)]
    for d in drawn.values():
        vni = int(d.key[5][0].split(":")[1])
        mine = {i + 1 for i in range(len(frames)) if i % 2 == vni - 1}
        assert {s.frame for s in d.sent} | {a.frame for a in d.acked} <= mine


def test_a_connection_whose_directions_carry_different_vlans_is_one_series():
    """Router on a stick: the client's segments on VLAN 81, the server's on VLAN 80. The
    handshake pairs them into one connection keyed by the SYN's path; the server's shrink
    names VLAN 80, and its graph still gets the whole connection's points."""

    def client(seg: bytes) -> bytes:
        return ether(ipv4("10.0.0.1", "10.0.0.2", seg), vlans=[81])

    def server(seg: bytes) -> bytes:
        return ether(ipv4("10.0.0.2", "10.0.0.1", seg), vlans=[80])

    ws7 = b"\x02\x04\x05\xb4\x03\x03\x07"
    frames = [
        client(tcp(40000, 80, 1000, 0, 0x02, 64240, options=ws7)),
        server(tcp(80, 40000, 5000, 1001, 0x12, 65160, options=ws7)),
        client(tcp(40000, 80, 1001, 5001, 0x10, 502)),
        client(tcp(40000, 80, 1001, 5001, 0x18, 502, payload=b"x" * 1000)),
        server(tcp(80, 40000, 5001, 2001, 0x10, 500)),
        client(tcp(40000, 80, 2001, 5001, 0x18, 502, payload=b"y" * 1000)),
        server(tcp(80, 40000, 5001, 3001, 0x10, 100)),
    ]
    events, series = engines_series(pcap((i * 1000, f) for i, f in enumerate(frames)))
    assert [(e.src, e.vlan, e.frame) for e in events] == [("10.0.0.2", (80,), 7)]
    ((key, points),) = series
    assert key == ((81,), ("10.0.0.1", 40000), ("10.0.0.2", 80))
    assert [p[1] for p in points] == list(range(1, 8))
    ((k, d),) = directions(series, events).items()
    assert k == ("10.0.0.2", 80, "10.0.0.1", 40000, (80,), ())
    assert [s.frame for s in d.sent] == [1, 4, 6]  # the client's SYN and data
    assert [a.frame for a in d.acked] == [2, 5, 7]  # the server's ACKs
    assert [m.event.frame for m in d.marks] == [7]
