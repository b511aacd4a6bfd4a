"""The parts of ``treason trace`` that need no kernel: layouts, pages, the socket table.

The formats are those a Linux 6.18 kernel printed; pages are built record by record as the
kernel's ring buffer lays them out (``events/header_event``). The real-kernel behaviour is in
``test_trace.py``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treason.errors import TreasonError
from treason.events import Event, Severity
from treason.ktrace.engine import CA_LOSS, compiled_available
from treason.ktrace.formats import parse_format, parse_header_page
from treason.ktrace.ringbuf import MISSED_EVENTS, page_records
from treason.ktrace.session import PortFilter
from treason.ktrace.sockets import SocketTable, sockaddr_text

TCP_PROBE = """name: tcp_probe
ID: 2273
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:36;\tsize:28;\tsigned:0;
\tfield:__u16 sport;\toffset:64;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:66;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:68;\tsize:2;\tsigned:0;
\tfield:__u32 mark;\toffset:72;\tsize:4;\tsigned:0;
\tfield:__u16 data_len;\toffset:76;\tsize:2;\tsigned:0;
\tfield:__u32 snd_nxt;\toffset:80;\tsize:4;\tsigned:0;
\tfield:__u32 snd_una;\toffset:84;\tsize:4;\tsigned:0;
\tfield:__u32 snd_cwnd;\toffset:88;\tsize:4;\tsigned:0;
\tfield:__u32 ssthresh;\toffset:92;\tsize:4;\tsigned:0;
\tfield:__u32 snd_wnd;\toffset:96;\tsize:4;\tsigned:0;
\tfield:__u32 srtt;\toffset:100;\tsize:4;\tsigned:0;
\tfield:__u32 rcv_wnd;\toffset:104;\tsize:4;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:112;\tsize:8;\tsigned:0;
\tfield:const void * skbaddr;\toffset:120;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:128;\tsize:8;\tsigned:0;

print fmt: "family=%s ..."
"""

HEADER_PAGE = """\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;
\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;
"""


def test_format_fields_and_unpacker() -> None:
    fmt = parse_format("tcp", "tcp_probe", TCP_PROBE)
    assert fmt.id == 2273
    assert fmt.fields["snd_wnd"].offset == 96 and fmt.fields["snd_wnd"].size == 4
    assert fmt.fields["saddr"].array and not fmt.fields["sport"].array
    unpack = fmt.unpacker(("saddr", "sport", "snd_una", "skaddr"))
    payload = bytearray(136)
    payload[8:10] = (2).to_bytes(2, "little")
    payload[12:16] = bytes([10, 0, 0, 1])
    struct.pack_into("<H", payload, 64, 443)
    struct.pack_into("<I", payload, 84, 123456)
    struct.pack_into("<Q", payload, 128, 0xFFFF888812345678)
    saddr, sport, una, sk = unpack.unpack_from(payload, 0)
    assert (sockaddr_text(saddr), sport, una, sk) == ("10.0.0.1", 443, 123456, 0xFFFF888812345678)
    with pytest.raises(TreasonError, match="no field rcv_nxt"):
        fmt.unpacker(("rcv_nxt",))


def _page(records: list[bytes], ts: int = 1_000, flags: int = 0) -> bytes:
    data = b"".join(records)
    head = struct.pack("<Qq", ts, len(data) | flags)
    return (head + data).ljust(4096, b"\0")


def _small(delta: int, payload: bytes) -> bytes:
    assert len(payload) % 4 == 0 and len(payload) <= 112
    return struct.pack("<I", (delta << 5) | (len(payload) // 4)) + payload


def _large(delta: int, payload: bytes) -> bytes:
    return struct.pack("<II", delta << 5, len(payload) + 4) + payload


def test_page_records_follow_deltas_extends_and_padding() -> None:
    layout = parse_header_page(HEADER_PAGE)
    assert layout.page_size == 4096
    extend = struct.pack("<II", (5 << 5) | 30, 1)  # + (1 << 27) + 5
    padding = struct.pack("<II", (7 << 5) | 29, 12) + b"\0" * 8  # a discarded record: 4 + 12
    page = _page(
        [
            _small(10, b"A" * 8),
            _large(20, b"B" * 136),
            extend,
            padding,
            _small(3, b"C" * 4),
        ]
    )
    records, missed = page_records(page, layout)
    assert not missed
    assert [(ts, page[off : off + 1]) for ts, off in records] == [
        (1_010, b"A"),
        (1_030, b"B"),
        (1_030 + (1 << 27) + 5 + 7 + 3, b"C"),
    ]
    _, missed = page_records(_page([_small(1, b"D" * 4)], flags=MISSED_EVENTS), layout)
    assert missed


def test_page_ends_at_its_commit() -> None:
    layout = parse_header_page(HEADER_PAGE)
    page = bytearray(_page([_small(1, b"E" * 4)]))
    page[24:32] = _small(1, b"F" * 4)  # bytes past the commit are not records
    records, _ = page_records(bytes(page), layout)
    assert len(records) == 1


def _sockaddr(addr: bytes, port: int) -> bytes:
    return (2).to_bytes(2, "little") + port.to_bytes(2, "big") + addr + b"\0" * 20


LOCAL = _sockaddr(bytes([192, 0, 2, 1]), 40000)
PEER = _sockaddr(bytes([198, 51, 100, 7]), 443)


class Feed:
    """A socket table fed one socket's states as tcp_probe would show them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.table = SocketTable(self.events.append)
        self.n = 0

    def state(self, una: int, nxt: int, wnd: int, ts: int | None = None) -> None:
        self.n += 1
        ts = self.n * 1000 if ts is None else ts
        self.table.probe(ts, self.n, 0xABC, 7, 40000, 443, una, nxt, wnd, (LOCAL, PEER))


def test_right_edge_moving_left_is_a_shrink_of_the_peer() -> None:
    f = Feed()
    f.state(1000, 1000, 1024)  # the handshake's unscaled window: no shift evidence
    f.state(1000, 5000, 128 * 300)  # scaled by 2**7
    f.state(2000, 5000, 128 * 301)  # edge 40528 -> 40528 + ... grows
    f.state(3000, 5000, 128 * 200)  # edge 41528 -> 28600: back 12928, before snd_nxt? no
    assert len(f.events) == 1
    e = f.events[0]
    assert (e.src, e.sport, e.dst, e.dport) == ("198.51.100.7", 443, "192.0.2.1", 40000)
    assert (e.old_edge, e.new_edge) == (2000 + 128 * 301, 3000 + 128 * 200)
    assert e.shrink_bytes == 2000 + 128 * 301 - 3000 - 128 * 200
    assert e.cls is Severity.SHRINK and e.scale == 7 and not e.scale_known
    assert e.win == 200 and e.frame == 4 and e.file == "trace"


def test_retreat_below_the_granularity_is_a_retraction() -> None:
    f = Feed()
    f.state(0, 0, 1024)
    f.state(0, 1000, 128 * 300)
    f.state(100, 1000, 128 * 299)  # back 28 bytes < 128
    assert [e.cls for e in f.events] == [Severity.RETRACTION]


def test_edge_before_snd_nxt_is_beyond() -> None:
    f = Feed()
    f.state(0, 0, 1024)
    f.state(0, 30000, 128 * 300)
    f.state(1000, 30000, 128 * 100)  # new edge 13800, 16200 bytes sent beyond it
    (e,) = f.events
    assert e.cls is Severity.BEYOND and e.beyond_bytes == 30000 - 13800


def test_zero_window_stall_reported_at_the_probe_retransmission() -> None:
    f = Feed()
    f.state(0, 0, 1024)
    f.state(0, 30000, 128 * 300)
    f.state(1000, 30000, 0)  # zero window, 29000 bytes outstanding
    assert f.events == []  # the kernel prints when its timer sends the probe
    f.table.clock_offset_ns = 1_700_000_000 * 10**9
    f.table.timer(999_000, 0xABC)
    (e,) = f.events
    assert e.cls is Severity.KERNEL and (e.snd_una, e.snd_nxt) == (1000, 30000)
    assert e.time == pytest.approx(1_700_000_000 + 999_000 / 1e9)
    assert (
        e.kernel_line
        == "Peer 198.51.100.7:443/40000 unexpectedly shrunk window 1000:30000 (repaired)"
    )
    f.state(1000, 30000, 0)  # the probe's answer: the same stall, no second event
    f.table.timer(1_999_000, 0xABC)
    assert len(f.events) == 1


def test_stall_seen_after_the_probe_is_reported_with_the_probe_time() -> None:
    f = Feed()
    f.state(0, 0, 1024)
    f.state(0, 30000, 128 * 300)
    f.table.timer(2500, 0xABC)
    f.state(1000, 30000, 0, ts=3000)
    (e,) = f.events
    assert e.cls is Severity.KERNEL and e.time == pytest.approx(2500 / 1e9)


def test_stall_reopened_before_the_timer_is_still_reported() -> None:
    f = Feed()
    f.state(0, 0, 1024)
    f.state(0, 30000, 128 * 300)
    f.state(1000, 30000, 0)
    f.state(30000, 30000, 128 * 300)
    assert [e.cls for e in f.events] == [Severity.KERNEL]


def test_zero_window_with_nothing_outstanding_is_no_stall() -> None:
    f = Feed()
    f.state(0, 0, 1024)
    f.state(0, 1000, 128 * 300)
    f.state(1000 + 128 * 300, 1000 + 128 * 300, 0)  # all acknowledged, edge where it was
    f.table.timer(10**9, 0xABC)
    assert f.events == []


def test_a_new_socket_at_the_same_address_starts_over() -> None:
    f = Feed()
    f.state(0, 0, 1024)
    f.state(0, 1000, 128 * 300)
    f.table.probe(10**6, 9, 0xABC, 8, 40000, 443, 5, 5, 128, (LOCAL, PEER))  # other cookie
    assert f.events == []
    f.table.destroy(0xABC)
    assert f.table.sockets == {}


def test_address_filter_is_asked_once_per_socket() -> None:
    asked: list[tuple[str, str]] = []
    events: list[Event] = []

    def accept(local: str, peer: str) -> bool:
        asked.append((local, peer))
        return False

    table = SocketTable(events.append, accept=accept)
    for n, (una, wnd) in enumerate([(0, 1024), (0, 128 * 300), (1000, 128 * 10)], 1):
        table.probe(n, n, 1, 1, 40000, 443, una, 30000, wnd, (LOCAL, PEER))
    assert asked == [("192.0.2.1", "198.51.100.7")] and events == []


def test_port_filter_expression() -> None:
    assert PortFilter().expression() is None
    assert PortFilter(either=[443, 80]).expression() == (
        "(sport == 443 || dport == 443 || sport == 80 || dport == 80)"
    )
    assert PortFilter(local=[8080], peer=[5001]).expression() == (
        "(sport == 8080) && (dport == 5001)"
    )


# -- the compiled tracer against the reference, on the same pages ----------------------------

TCP_RETRANSMIT = """name: tcp_retransmit_skb
ID: 2281
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;
"""

TCP_CONG_STATE = """name: tcp_cong_state_set
ID: 2271
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u8 cong_state;\toffset:62;\tsize:1;\tsigned:0;
"""

# (kind, socket, una, nxt, wnd): kind 0 tcp_probe, 1 retransmission, 2 destroy, 3 the timer's
# entry into Loss, 4 another congestion state
Step = tuple[int, int, int, int, int]


def _probe_record(sock: int, una: int, nxt: int, wnd: int) -> bytes:
    p = bytearray(136)
    struct.pack_into("<H", p, 0, 2273)
    p[8:36] = LOCAL[:2] + ((40000 + sock) % 65536).to_bytes(2, "big") + LOCAL[4:]
    p[36:64] = PEER
    struct.pack_into("<HH", p, 64, (40000 + sock) % 65536, 443)
    struct.pack_into("<II", p, 80, nxt, una)
    struct.pack_into("<I", p, 96, wnd)
    struct.pack_into("<Q", p, 112, 1000 + sock)  # sock_cookie
    struct.pack_into("<Q", p, 128, 0xFFFF000000000000 + sock)  # skaddr
    return _large(0, bytes(p))


def _other_record(type_id: int, sock: int) -> bytes:
    p = bytearray(80)
    struct.pack_into("<H", p, 0, type_id)
    struct.pack_into("<Q", p, 16, 0xFFFF000000000000 + sock)
    return _small(0, bytes(p))


def _loss_record(sock: int, state: int) -> bytes:
    p = bytearray(64)
    struct.pack_into("<H", p, 0, 2271)
    struct.pack_into("<Q", p, 8, 0xFFFF000000000000 + sock)
    p[62] = state
    return _small(0, bytes(p))


def _pages(steps: list[Step], per_page: int) -> list[list[bytes]]:
    """Two CPUs' pages: steps alternate CPUs in runs, each record 1 µs after the last."""
    cpus: list[list[tuple[int, bytes]]] = [[], []]
    for i, (kind, sock, una, nxt, wnd) in enumerate(steps):
        if kind == 0:
            rec = _probe_record(sock, una, nxt, wnd)
        elif kind in (1, 2):
            rec = _other_record(2281 if kind == 1 else 2290, sock)
        else:
            rec = _loss_record(sock, CA_LOSS if kind == 3 else 1)
        cpus[(i // 3) % 2].append((1000 * (i + 1), rec))
    out: list[list[bytes]] = []
    for recs in cpus:
        pages = []
        for start in range(0, len(recs), per_page):
            chunk = recs[start : start + per_page]
            page_ts, last, body = chunk[0][0], chunk[0][0], []
            for ts, rec in chunk:
                head = struct.unpack_from("<I", rec)[0]
                body.append(struct.pack("<I", head | ((ts - last) << 5)) + rec[4:])
                last = ts
            pages.append(_page(body, ts=page_ts))
        out.append(pages)
    return out


def _run(
    engine_name: str, pages: list[list[bytes]], cut: int, cap: int = 1_000_000, loss: bool = True
) -> list[tuple]:
    from treason.ktrace.engine import CompiledEngine, Layouts, ReferenceEngine

    layouts = Layouts(
        parse_header_page(HEADER_PAGE),
        parse_format("tcp", "tcp_probe", TCP_PROBE),
        parse_format("tcp", "tcp_retransmit_skb", TCP_RETRANSMIT),
        parse_format(
            "tcp",
            "tcp_destroy_sock",
            TCP_RETRANSMIT.replace("ID: 2281", "ID: 2290"),
        ),
        parse_format("tcp", "tcp_cong_state_set", TCP_CONG_STATE) if loss else None,
    )
    events: list[Event] = []
    if engine_name == "fast":
        engine = CompiledEngine(layouts, events.append, lambda: 0, accept=None, max_sockets=cap)
    else:
        engine = ReferenceEngine(layouts, SocketTable(events.append, max_sockets=cap))
    every = [p for cpu in pages for p in cpu]
    for i, page in enumerate(every):
        engine.add_page(page)
        if i == cut:
            engine.run(1000 * cut, False)  # a drain in the middle: later records wait
    engine.run(0, True)
    fed = len(events)
    engine.flush()  # held events of several sockets: in no particular order
    c = engine.counters
    seen = [(*e.key(), e.time, e.win) for e in events]
    return [*seen[:fed], *sorted(seen[fed:]), (c.records, c.probes, c.seen, c.evicted)]


def _steps(sockets: int = 2, size: int = 120) -> st.SearchStrategy[list[Step]]:
    window = st.sampled_from([0, 0, 128, 256, 1024, 4096, 128 * 300, 65536, 1 << 20])
    step = st.tuples(
        st.sampled_from([0, 0, 0, 0, 0, 1, 2, 3, 4]),
        st.integers(0, sockets),
        st.integers(0, 6).map(lambda n: (0xFFFFF000 + n * 1000) & 0xFFFFFFFF),
        st.integers(0, 8).map(lambda n: (0xFFFFF000 + n * 1000) & 0xFFFFFFFF),
        window,
    )
    return st.lists(step, min_size=1, max_size=size)


@pytest.mark.skipif(not compiled_available(), reason="the compiled tracer is not built")
@given(steps=_steps(), per_page=st.integers(1, 28), cut=st.integers(0, 8), loss=st.booleans())
def test_compiled_tracer_agrees_with_the_reference(
    steps: list[Step], per_page: int, cut: int, loss: bool
) -> None:
    """With tcp_cong_state_set (the timer) and without (each retransmission stands for it)."""
    pages = _pages(steps, per_page)
    assert _run("fast", pages, cut, loss=loss) == _run("reference", pages, cut, loss=loss)


@pytest.mark.skipif(not compiled_available(), reason="the compiled tracer is not built")
@given(steps=_steps(sockets=3000, size=600), cap=st.integers(1, 40))
def test_compiled_socket_table_churn_agrees(steps: list[Step], cap: int) -> None:
    """Many sockets through a small table: eviction, destruction and reuse in both."""
    pages = _pages(steps, 28)
    assert _run("fast", pages, 0, cap) == _run("reference", pages, 0, cap)


def test_host_filter_matches_either_end_by_network() -> None:
    from treason.commands.trace import address_filter, network

    assert address_filter([]) is None
    accept = address_filter([network("198.51.100.0/24"), network("2001:db8::/32")])
    assert accept is not None
    assert accept("192.0.2.1", "198.51.100.7")
    assert accept("2001:db8::1", "2001:db9::1")
    assert not accept("192.0.2.1", "203.0.113.9")
    assert not accept("::ffff:192.0.2.1", "?")


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_the_timer_not_any_retransmission_marks_the_kernel_message(engine: str) -> None:
    """A tail loss probe retransmits too, without the message: with tcp_cong_state_set the
    stall is reported at the timer's entry into Loss; without it, at the first retransmission."""
    if engine == "fast" and not compiled_available():
        pytest.skip("the compiled tracer is not built")
    stall = [(0, 0, 0, 0, 1024), (0, 0, 0, 30000, 128 * 300), (0, 0, 1000, 30000, 0)]
    pages = _pages([*stall, (1, 0, 0, 0, 0), (4, 0, 0, 0, 0), (3, 0, 0, 0, 0)], 28)
    (with_timer, *_), (without, *_) = _run(engine, pages, 99), _run(engine, pages, 99, loss=False)
    assert with_timer[6] == without[6] == int(Severity.KERNEL)  # Event.key(): class at 6
    assert with_timer[-2] == pytest.approx(6000 / 1e9)  # the Loss record, sixth
    assert without[-2] == pytest.approx(4000 / 1e9)  # the retransmission, fourth


def test_summary_says_where_retractions_went() -> None:
    """Without --all the summary counts the retractions it hid; with --all they were shown."""
    from treason.ktrace.report import summary
    from treason.ktrace.session import TraceCounters
    from treason.live.stats import LiveStats

    stats = LiveStats(interface="trace")
    stats.scan.events["retraction"] = 3
    hidden = "\n".join(summary(stats, TraceCounters(), 1.0))
    assert "3 sub-granularity retractions (--all shows them)" in hidden
    shown = "\n".join(summary(stats, TraceCounters(), 1.0, retractions_shown=True))
    assert "3 sub-granularity retractions (shown above)" in shown and "--all" not in shown
