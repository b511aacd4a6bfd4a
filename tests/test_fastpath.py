"""The compiled engine against the reference engine: same events, same counters, same errors.

The reference engine (readers → decoder → model, plain Python) is the definition; the compiled
scanner must agree with it on every capture: the real ones the suite makes with the Linux
kernel, hypothesis-generated conversations in every container and link type, tiny flow caps
and idle timeouts that force evictions and resumptions, damaged files, and any way of
splitting the bytes into reads. The model's own behaviour, scenario by scenario, is pinned on
the reference engine in ``test_engines.py`` (and checked there on this one too).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import random
import shutil
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captures import MS, Packets, idb, ip, ipv6, link, pcap, shb, spb, tcp, ts_option, ws_option
from captures import block as ng_block
from captures import epb as ng_epb
from treason.engine import compiled
from treason.engine.choose import new_engine
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.readers import open_capture, open_frames
from treason.scanner import drive, scan

ROOT = Path(__file__).resolve().parent.parent

needs_fast = pytest.mark.skipif(
    not compiled.available(), reason="the compiled scanner is not built (no C compiler)"
)


def test_extension_builds_where_a_compiler_exists() -> None:
    """On this machine and CI the package must build its scanner, not silently fall back."""
    if shutil.which("gcc") is None and shutil.which("cc") is None and not os.environ.get("CI"):
        pytest.skip("no C compiler: the reference engine is the documented fallback")
    assert compiled.available(), "treason._fastscan did not build; run pip install -e ."


# --------------------------------------------------------------------------------------------
# Running both engines


class Dribble(io.RawIOBase):
    """A stream that hands out its bytes in reads of the given sizes (cycling), like a pipe."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._pos = 0
        self._sizes = sizes or [1]
        self._i = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._sizes[self._i % len(self._sizes)], len(self._data) - self._pos)
        self._i += 1
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def outcome(events, stats: ScanStats, error) -> tuple:
    return (
        [(dataclasses.asdict(e), e.to_dict()) for e in events],
        stats.to_dict(),
        error,
    )


def run(source, engine: str, **kw) -> tuple:
    stats = ScanStats()
    events = []
    error = None
    try:
        for e in scan(source, engine=engine, retractions=True, stats=stats, **kw):
            events.append(e)
    except CaptureError as exc:
        error = (type(exc).__name__, str(exc), exc.offset)
    return outcome(events, stats, error)


def run_fast_chunked(data: bytes, chunk: int, sizes: list[int], **kw) -> tuple:
    """The compiled engine with a tiny buffer, over a stream of short reads."""
    stats = ScanStats()
    events = []
    error = None
    max_flows = kw.get("max_flows", 500_000)
    idle_ns = int(kw.get("idle_timeout", 600.0) * 1e9)
    engine = compiled.CompiledEngine(stats, max_flows, idle_ns, chunk=chunk)
    try:
        with open_capture(Dribble(data, sizes), "<stream>") as capture:
            for e in drive(engine, capture):
                e.file = "<stream>"
                events.append(e)
    except CaptureError as exc:
        if type(exc).__name__ == "TruncatedCapture":
            stats.warnings.append(str(exc))
        else:
            error = (type(exc).__name__, str(exc), exc.offset)
    return outcome(events, stats, error)


def assert_same(data: bytes, **kw) -> tuple:
    ref = run(io.BytesIO(data), "reference", **kw)
    fast = run(io.BytesIO(data), "fast", **kw)
    assert fast == ref
    return ref


# --------------------------------------------------------------------------------------------
# Capture files from generated packets (the builders are tests/captures.py's)


def pcap_file(frames, linktype: int, snaplen: int, order: str, nanos: bool, modified: bool):
    """``frames`` (ts_ns, data) cut to ``snaplen``, as a pcap file."""
    records = [(ts, data[:snaplen], len(data)) for ts, data in frames]
    return pcap(records, linktype, nanos, order, snaplen, modified=modified and not nanos)


def pcapng_file(frames, linktypes, snaplen: int, order: str, tsres: int | None, use_spb: bool):
    """One section; interface i has link type linktypes[i]; frames (iface, ts_ns, data).

    With ``tsres`` the interfaces have that resolution and a 3 s offset; with ``use_spb``
    interface 0's packets are simple packet blocks; an unknown block follows the fifth block.
    """
    offset = None if tsres is None else 3
    out = [shb(order)] + [idb(lt, snaplen, tsres, offset, order) for lt in linktypes]
    for iface, ts_ns, data in frames:
        cap = data[:snaplen]
        if use_spb and iface == 0:
            out.append(spb(cap, len(data), order))
            continue
        if tsres is None:
            ticks = ts_ns // 1000
        elif tsres & 0x80:
            ticks = (ts_ns - 3 * 10**9) * (1 << (tsres & 0x7F)) // 10**9
        else:
            ticks = (ts_ns - 3 * 10**9) * 10 ** (tsres & 0x7F) // 10**9
        out.append(ng_epb(iface, max(ticks, 0), cap, len(data), order))
        if len(out) == 5:
            out.append(ng_block(0xBAD, b"unknown block", order))
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Conversations


ADDRS4 = [f"10.0.0.{i}" for i in (1, 2, 3)]
ADDRS6 = [f"2001:db8::{i}" for i in (1, 2, 3)]
WINDOWS = st.one_of(st.sampled_from([0, 0, 0, 1, 2, 100, 1000, 4096, 65535]), st.integers(0, 65535))
LENGTHS = st.sampled_from([0, 0, 1, 100, 536, 1448])
#: Zero-window-heavy conversations: zero windows, then data in flight, close to the 200 ms hold.
ZERO_WINDOWS = st.sampled_from([0, 0, 1, 100, 4096, 65535])
#: The time one step of a zero-window conversation takes, and what "hold" adds to it.
ZERO_STEP = st.integers(0, 5 * 10**6)
HOLD = st.sampled_from([199_999_999, 2 * 10**8, 200_000_001])


KINDS = [
    "syn",
    "synack",
    "data",
    "data",
    "data",
    "ack",
    "ack",
    "shrink",
    "shrink",
    "fin",
    "rst",
    "dup",
    "swap",
    "probe",
    "old",
    "gap",
    "back",
    "odd",
]
ZERO_KINDS = [k for k in KINDS if k not in ("gap", "odd")] + ["shrink", "data", "data", "hold"]
ODD = [
    "fragment",
    "first-fragment",
    "udp",
    "hop-by-hop",
    "v6-fragment",
    "short-doff",
    "syn-fin",
    "bad-option",
    "zero-length",
    "ip-options",
    "not-v4",
]


def odd_packet(how: str, f: dict, d: int, segment: bytes, ident: int) -> bytes:
    """A packet the decoder must skip or decode by a rarely taken path."""
    src, dst = f["addr"][d], f["addr"][1 - d]
    if f["v6"] and how in ("hop-by-hop", "v6-fragment"):
        if how == "hop-by-hop":
            return ipv6(src, dst, segment, ext=[(0, bytes(8))])
        return ipv6(src, dst, segment, ext=[(44, bytes([6, 0]) + struct.pack("!HI", 1, 7))])
    if f["v6"]:
        return ip(src, dst, segment, ident)
    body = segment
    frag, proto, vihl, total, opts = 0x4000, 6, 0x45, 20 + len(body), b""
    if how == "fragment":
        frag = 0x2000 | 100
    elif how == "first-fragment":
        frag, body = 0x2000, body[:12]
        total = 20 + len(body)
    elif how == "udp":
        proto = 17
    elif how == "short-doff":
        body = body[:12] + bytes([0x40]) + body[13:]
    elif how == "syn-fin":
        body = body[:13] + bytes([0x03]) + body[14:]
    elif how == "bad-option":
        body = body[:12] + bytes([0x60]) + body[13:20] + b"\x02\x01\x00\x00" + body[20:]
        total += 4
    elif how == "zero-length":
        total = 0
    elif how == "ip-options":
        vihl, opts = 0x46, b"\x01\x01\x01\x00"
        total += 4
    elif how == "not-v4":
        vihl = 0x55
    head = struct.pack("!BBHHHBBH", vihl, 0, total, ident, frag, 64, proto, 0)
    return head + socket.inet_aton(src) + socket.inet_aton(dst) + opts + body


@st.composite
def conversation(
    draw, zero: bool | None = None
) -> list[tuple[int, int, bool, bytes, tuple[int, ...]]]:
    """Packets as (ts_ns, iface, v6, ip packet, vlans): plausible TCP with every kind of noise.

    ``zero`` makes zero windows the common case and time steps short or right at the 200 ms
    an open zero-window event lasts, so data in flight after one is common too; ``None``
    draws either.
    """
    if zero is None:
        zero = draw(st.booleans())
    n_flows = draw(st.integers(1, 3))
    flows = []
    for _ in range(n_flows):
        v6 = draw(st.booleans())
        pool = ADDRS6 if v6 else ADDRS4
        flows.append(
            {
                "v6": v6,
                "addr": (draw(st.sampled_from(pool)), draw(st.sampled_from(pool))),
                "port": (draw(st.sampled_from([1000, 2000, 80])), draw(st.sampled_from([80, 443]))),
                "vlans": tuple(draw(st.lists(st.integers(0, 4095), max_size=2))),
                "isn": [
                    draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 5000, 2**32 - 1)))
                    for _ in range(2)
                ],
                "ws": [draw(st.one_of(st.none(), st.integers(0, 16))) for _ in range(2)],
                "iface": draw(st.integers(0, 1)),
                "ts": [draw(st.one_of(st.none(), st.integers(0, 2**32 - 1))) for _ in range(2)],
                "handshake": draw(st.sampled_from([0, 1, 2, 3])),  # how much of it was captured
            }
        )
        f = flows[-1]
        f["nxt"] = [f["isn"][0], f["isn"][1]]
        f["ident"] = [draw(st.integers(0, 65535)), draw(st.integers(0, 65535))]
        f["last"] = [(0, 65535), (0, 65535)]  # (ack, window) each side sent last
    step = st.tuples(
        st.integers(0, n_flows - 1),
        st.integers(0, 1),
        st.sampled_from(ZERO_KINDS if zero else KINDS),
        ZERO_WINDOWS if zero else WINDOWS,
        LENGTHS,
        st.sampled_from([0, 0, 0, 1, 100, 1000, -1000, 3000]),
        st.sampled_from(ODD),
    )
    steps = []
    for fi, f in enumerate(flows):
        hs = f["handshake"]
        opening = [(fi, 0, "syn"), (fi, 1, "synack"), (fi, 0, "ack")][: 3 if hs == 3 else hs]
        if hs == 2 and draw(st.booleans()):
            opening = [(fi, 1, "synack"), (fi, 0, "ack")]  # SYN not captured
        steps += [(i, d, k, 65535, 0, 0, "") for i, d, k in opening]
    steps += draw(st.lists(step, min_size=10 if zero else 1, max_size=40))
    if zero:
        # Data the sender had in flight, captured just after the window closed on it.
        expanded = []
        for fi, d, kind, win, plen, jitter, odd in steps:
            expanded.append((fi, d, kind, win, plen, jitter, odd))
            if kind == "shrink" and draw(st.booleans()):
                expanded.append((fi, 1 - d, "data", win, draw(st.sampled_from([1, 1448])), 0, odd))
        steps = expanded
    out: list = []
    now = 1_700_000_000 * 10**9
    for fi, d, kind, win, plen, jitter, odd in steps:
        f = flows[fi]
        now += draw(ZERO_STEP if zero else st.integers(0, 2 * 10**8))
        if kind == "gap":
            now += 3 * 10**9
            continue
        if kind == "hold":
            now += draw(HOLD)  # about when an open zero-window event becomes final
            continue
        if kind == "back":
            now -= 10**9
            continue
        if kind == "dup" and out:
            out.append(out[-1])
            continue
        if kind == "swap" and len(out) >= 2:
            out[-1], out[-2] = out[-2], out[-1]
            continue
        o = 1 - d
        # ACKs lag what was sent (data outstanding) or run ahead of it (data not captured).
        seq, ack = f["nxt"][d], (f["nxt"][o] - jitter) % 2**32
        flags, ws, length = 0x10, None, 0
        if kind == "syn":
            seq, flags, ws, ack = f["isn"][d], 0x02, f["ws"][d], 0
        elif kind == "synack":
            seq, flags, ws = f["isn"][d], 0x12, f["ws"][d]
            ack = (f["isn"][o] + 1) % 2**32
        elif kind == "data":
            length = plen
            f["nxt"][d] = (seq + length) % 2**32
        elif kind == "fin":
            flags = 0x11
            f["nxt"][d] = (seq + 1) % 2**32
        elif kind == "rst":
            flags = 0x14
        elif kind == "probe":
            seq, length = (seq - 1) % 2**32, plen % 2
        elif kind == "old":
            seq = (seq - jitter) % 2**32
        elif kind == "shrink":
            # Take back a little: the previous ACK moved on by a few bytes, a few units less window.
            last_ack, last_win = f["last"][d]
            ack = (last_ack + plen % 200) % 2**32
            win = 0 if zero else max(0, last_win - 1 - jitter % 3)
        if flags & 0x10:
            f["last"][d] = (ack, win)
        if kind in ("syn", "synack"):
            f["nxt"][d] = (f["isn"][d] + 1) % 2**32
        f["ident"][d] = (f["ident"][d] + 1) % 65536
        opts = b""
        if f["ts"][d] is not None:
            f["ts"][d] = (f["ts"][d] + 1) % 2**32
            opts = ts_option(f["ts"][d])
        if ws is not None:
            opts += ws_option(ws)
        segment = tcp(
            f["port"][d],
            f["port"][o],
            seq,
            ack,
            flags,
            win,
            opts,
            bytes(length),
            None,
            f["ident"][d],
        )
        if kind == "odd":
            pkt = odd_packet(odd, f, d, segment, f["ident"][d])
        else:
            pkt = ip(f["addr"][d], f["addr"][o], segment, f["ident"][d])
        out.append((now, f["iface"], f["v6"], pkt, f["vlans"]))
    return out


LINKTYPES = [1, 113, 276, 101, 12, 14, 0, 108, 239]


@st.composite
def capture(draw, zero: bool | None = None) -> bytes:
    packets = draw(conversation(zero))
    snaplen = draw(st.sampled_from([65535, 262144, 128, 80, 60]))
    order = draw(st.sampled_from("<>"))
    lts = [draw(st.sampled_from(LINKTYPES)) for _ in range(2)]

    def framed(lt: int, v6: bool, pkt: bytes, vlans: tuple[int, ...]) -> bytes:
        return link(lt, pkt, vlans if lt == 1 else ())

    if draw(st.booleans()):
        lt = lts[0]
        if lt in (228, 229):
            lt = 101
        frames = [(ts, framed(lt, v6, pkt, vl)) for ts, _i, v6, pkt, vl in packets]
        data = pcap_file(frames, lt, snaplen, order, draw(st.booleans()), draw(st.booleans()))
    else:
        tsres = draw(st.sampled_from([None, 6, 9, 3, 0x80 | 20, 0x80 | 10]))
        frames = [(i, ts, framed(lts[i], v6, pkt, vl)) for ts, i, v6, pkt, vl in packets]
        data = pcapng_file(frames, lts, snaplen, order, tsres, draw(st.booleans()))
    return data


@st.composite
def damaged(draw, zero: bool | None = None) -> bytes:
    data = draw(capture(zero))
    how = draw(st.sampled_from(["cut", "flip", "garbage", "none", "none"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    elif how == "garbage":
        data += draw(st.binary(min_size=1, max_size=40))
    return data


LIMITS = st.fixed_dictionaries(
    {
        "max_flows": st.sampled_from([1, 2, 3, 500_000]),
        "idle_timeout": st.sampled_from([0.0, 0.5, 2.0, 600.0]),
    }
)


# --------------------------------------------------------------------------------------------
# Properties


@needs_fast
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=capture(), limits=LIMITS)
def test_generated_captures_agree(data: bytes, limits: dict) -> None:
    assert_same(data, **limits)


@needs_fast
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(), limits=LIMITS)
def test_damaged_captures_agree(data: bytes, limits: dict) -> None:
    assert_same(data, **limits)


@needs_fast
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=damaged(),
    chunk=st.integers(1, 300),
    sizes=st.lists(st.integers(1, 200), min_size=1, max_size=5),
)
def test_chunk_boundaries_change_nothing(data: bytes, chunk: int, sizes: list[int]) -> None:
    whole = run(io.BytesIO(data), "fast")
    assert run_fast_chunked(data, chunk, sizes) == whole


@needs_fast
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged())
def test_gzip_agrees(data: bytes) -> None:
    packed = gzip.compress(data)
    ref = assert_same(packed)
    assert ref[:2] == run(io.BytesIO(data), "reference")[:2]


@needs_fast
@settings(max_examples=30, deadline=None)
@given(data=capture(), cut=st.integers(1, 200))
def test_truncated_gzip_agrees(data: bytes, cut: int) -> None:
    packed = gzip.compress(data)
    assert_same(packed[: max(1, len(packed) - cut)])


@needs_fast
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_agree(data: bytes) -> None:
    assert_same(data)
    assert_same(b"\xd4\xc3\xb2\xa1" + data)
    assert_same(b"\x0a\x0d\x0d\x0a" + data)


# --------------------------------------------------------------------------------------------
# Hand-made cases the generator reaches rarely


def shrink_conversation() -> Packets:
    """A handshake with WS 7 both ways, data, then an ACK that takes the window back to zero,
    a span-port copy of it and a reset."""
    p = Packets()
    p.c(100, 0, 64240, flags=0x02, ws=7)
    p.v(500, 101, 65160, flags=0x12, ws=7)
    p.c(101, 501, 502)
    p.v(501, 101, 500)
    p.c(101, 501, 502, plen=1448, flags=0x18)
    p.v(501, 1101, 0)
    p.frames.append(p.frames[-1])
    p.v(501, 1101, 0, flags=0x14)
    return p


@needs_fast
@pytest.mark.parametrize("tail", [b"garbage!", b"\0" * 10, b"\x1f\x8b\x08"])
def test_gzip_members_and_trailers_agree(tail: bytes) -> None:
    data = shrink_conversation().pcap()
    half = len(data) // 2
    assert_same(gzip.compress(data[:half]) + gzip.compress(data[half:]) + tail)


@needs_fast
def test_deep_vlan_stack_and_huge_timestamps() -> None:
    """A 9-tag VLAN stack is part of the flow key; pcapng timestamps beyond 64-bit nanoseconds
    (2**38 quarter seconds: year 4147)."""
    conv = [f for _ts, f in shrink_conversation().frames]
    tagged = [
        f[:12] + b"".join(struct.pack("!HH", 0x8100, 100 + i) for i in range(9)) + f[12:]
        for f in conv
    ]
    frames = [(0, 2**38 * 10**9 // 4 + 3 * 10**9 + i, f) for i, f in enumerate(tagged)]
    data = pcapng_file(frames, [1], 65535, "<", 0x80 | 2, False)
    events, _stats, error = assert_same(data)
    assert error is None and events and events[0][0]["vlan"] == tuple(range(100, 109))


@needs_fast
def test_flows_evicted_and_resumed() -> None:
    """Two interleaved flows under a cap of one: every packet evicts the other flow."""
    conv = [f for _ts, f in shrink_conversation().frames]
    other = [f[:26] + bytes([10, 0, 0, 3]) + f[30:] if i % 2 else f for i, f in enumerate(conv)]
    frames = []
    for i, (x, y) in enumerate(zip(conv, other, strict=True)):
        frames += [(i * 10**9, x), (i * 10**9 + 1, y)]
    data = pcap_file(frames, 1, 65535, ">", True, False)
    _events, stats, _ = assert_same(data, max_flows=1)
    assert stats["evicted_cap"] > 0
    _events, stats, _ = assert_same(data, idle_timeout=0.5)
    assert stats["evicted_idle"] > 0


# --------------------------------------------------------------------------------------------
# Real captures


def _repo_captures() -> list[Path]:
    found = sorted(ROOT.glob("tests/**/*.pcap*")) + sorted(ROOT.glob("examples/*.pcap*"))
    return [p for p in found if p.is_file()]


@needs_fast
@pytest.mark.parametrize("path", _repo_captures(), ids=lambda p: p.name)
def test_repo_captures_agree(path: Path) -> None:
    ref = run(path, "reference")
    assert run(path, "fast") == ref
    assert run(path, "fast", max_flows=1, idle_timeout=0.001) == run(
        path, "reference", max_flows=1, idle_timeout=0.001
    )


@needs_fast
@pytest.mark.netns
@pytest.mark.parametrize("fixture", ["shrink_capture", "noshrink_capture", "iperf3_capture"])
def test_kernel_captures_agree(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    ref = run(path, "reference")
    assert run(path, "fast") == ref
    if fixture == "shrink_capture":
        assert ref[0], "the shrinking kernel capture should produce events"
    data = path.read_bytes()
    assert run_fast_chunked(data, 1000, [7, 1, 4096]) == run(io.BytesIO(data), "reference")


@needs_fast
def test_stdin_and_paths_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``"-"`` reads standard input; a path and a gzipped path give the same as a stream."""
    data = shrink_conversation().pcap()
    plain, packed = tmp_path / "a.pcap", tmp_path / "a.pcap.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    piped = {}
    for engine in ("reference", "fast"):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        piped[engine] = run("-", engine)
    assert piped["fast"] == piped["reference"]
    assert piped["fast"][0] and all(e["file"] == "<stdin>" for e, _ in piped["fast"][0])
    assert run(plain, "fast") == run(plain, "reference")
    assert run(packed, "fast") == run(packed, "reference")
    assert run(tmp_path / "missing.pcap", "fast") == run(tmp_path / "missing.pcap", "reference")
    assert run(tmp_path, "fast") == run(tmp_path, "reference")


@needs_fast
@pytest.mark.parametrize("max_flows", [700, 5000])
def test_syn_flood_with_evictions_agrees(max_flows: int) -> None:
    """Thousands of flows through a small table: hashing, deletion and resumption at scale."""
    rnd = random.Random(max_flows)
    clients = [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.1" for _ in range(3000)]
    server = "192.0.2.1"
    p = Packets()
    for i in range(12_000):
        c = rnd.choice(clients)
        port = 1024 + clients.index(c) % 7
        kind = rnd.random()
        if kind < 0.5:
            p.add(c, server, port, 80, rnd.getrandbits(32), 0, 0x02, 64240, after=5 * MS, ws=7)
        elif kind < 0.8:
            win = rnd.choice([0, 10, 900])
            p.add(server, c, 80, port, 5000, 7000 + i, 0x10, win, after=5 * MS)
        else:
            p.add(c, server, port, 80, 7000 + i, 5000, 0x10, 500, plen=100, after=5 * MS)
    data = p.pcap()
    _events, stats, _ = assert_same(data, max_flows=max_flows, idle_timeout=20.0)
    assert stats["evicted_cap"] + stats["evicted_idle"] > 0


# --------------------------------------------------------------------------------------------
# Zero-window events held open, the clock moving without packets, frames fed in batches


def released(engine: str, data: bytes, max_flows: int, idle_ns: int) -> tuple[list, list]:
    """Frames of the events each frame makes final, and those final at the end."""
    runner = new_engine(engine, ScanStats(), max_flows, idle_ns)
    per_frame = [[e.frame for e in runner.feed([f])] for f in open_frames(io.BytesIO(data))]
    return per_frame, [e.frame for e in runner.flush()]


@needs_fast
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=conversation(zero=True), limits=LIMITS)
def test_zero_window_events_are_released_at_the_same_frame(packets, limits: dict) -> None:
    frames = [(ts, link(1, pkt, vl)) for ts, _i, _v6, pkt, vl in packets]
    data = pcap_file(frames, 1, 65535, "<", True, False)
    assert_same(data, **limits)
    idle_ns = int(limits["idle_timeout"] * 10**9)
    ref = released("reference", data, limits["max_flows"], idle_ns)
    assert released("fast", data, limits["max_flows"], idle_ns) == ref


def advanced(engine: str, data: bytes, clocks: list, max_flows: int, idle_ns: int) -> list:
    """Per step, the events made final: after each frame, then after ``advance(clock)``."""
    runner = new_engine(engine, ScanStats(), max_flows, idle_ns)
    steps = []
    for frame, clock in zip(open_frames(io.BytesIO(data)), clocks, strict=True):
        steps.append([dataclasses.asdict(e) for e in runner.feed([frame])])
        if clock is not None:
            steps.append([dataclasses.asdict(e) for e in runner.advance(clock)])
    steps.append([dataclasses.asdict(e) for e in runner.flush()])
    return steps


#: Where ``advance`` moves the clock, relative to the frame just fed: around the 200 ms hold,
#: before the frame (a wall clock behind the capture's), or not at all.
ADVANCES = st.lists(
    st.one_of(
        st.none(),
        st.sampled_from([0, 200 * MS - 1, 200 * MS, 200 * MS + 1, -10 * MS, 10**12]),
        st.integers(-300 * MS, 500 * MS),
    ),
    min_size=1,
    max_size=40,
)


def _clocks(packets: list[tuple[int, bytes]], offsets: list) -> list:
    return [
        None if (d := offsets[i % len(offsets)]) is None else ts + d
        for i, (ts, _pkt) in enumerate(packets)
    ]


@needs_fast
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=conversation(zero=True), offsets=ADVANCES, limits=LIMITS)
def test_advance_releases_what_the_model_releases(packets, offsets, limits: dict) -> None:
    """``advance`` on both engines: the same events final at the same step, with the same
    values, and the table's own clock (idle eviction, holds) left alone."""
    frames = [(ts, link(1, pkt, vl)) for ts, _i, _v6, pkt, vl in packets]
    data = pcap_file(frames, 1, 65535, "<", True, False)
    clocks = _clocks(frames, offsets)
    idle_ns = int(limits["idle_timeout"] * 10**9)
    ref = advanced("reference", data, clocks, limits["max_flows"], idle_ns)
    assert advanced("fast", data, clocks, limits["max_flows"], idle_ns) == ref


def incremental_outcome(frames: list, batches: list[int], clocks: list, engine: str, **kw: Any):
    """Frames fed in batches with the clock advanced after each: events and counters per call."""
    stats = ScanStats()
    max_flows, idle_ns = kw.get("max_flows", 500_000), int(kw.get("idle_timeout", 600) * 1e9)
    runner = new_engine(engine, stats, max_flows, idle_ns)
    steps: list[Any] = []
    pos = i = 0
    while pos < len(frames):
        size = batches[i % len(batches)]
        steps.append([dataclasses.asdict(e) for e in runner.feed(frames[pos : pos + size])])
        steps.append((stats.to_dict(), runner.active_flows))
        if clocks[i % len(clocks)] is not None:
            now = frames[min(pos + size, len(frames)) - 1].ts_ns + clocks[i % len(clocks)]
            steps.append([dataclasses.asdict(e) for e in runner.advance(now)])
        pos += size
        i += 1
    steps.append([dataclasses.asdict(e) for e in runner.flush()])
    steps.append((stats.to_dict(), runner.active_flows))
    return steps


@needs_fast
@pytest.mark.parametrize(
    "path",
    [p for p in _repo_captures() if "damaged" not in p.name and ".pcapng" not in p.name],
    ids=lambda p: p.name,
)
@pytest.mark.parametrize("limits", [{}, {"max_flows": 1, "idle_timeout": 0.001}])
def test_frames_fed_in_batches_agree(path: Path, limits: dict) -> None:
    """Live's way of feeding (batches of frames, the clock advanced between): the same final
    events and the same counters after every call on both engines."""
    frames = list(open_frames(path))
    batches, clocks = [7, 1, 30], [None, 150 * MS, 200 * MS, -MS]
    ref = incremental_outcome(frames, batches, clocks, "reference", **limits)
    assert incremental_outcome(frames, batches, clocks, "fast", **limits) == ref


@needs_fast
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    packets=conversation(zero=True),
    batches=st.lists(st.integers(1, 20), min_size=1, max_size=5),
    offsets=ADVANCES,
    limits=LIMITS,
)
def test_frames_fed_in_batches_agree_on_generated_traffic(packets, batches, offsets, limits):
    frames_raw = [(ts, link(1, pkt, vl)) for ts, _i, _v6, pkt, vl in packets]
    frames = list(open_frames(io.BytesIO(pcap_file(frames_raw, 1, 65535, "<", True, False))))
    if not frames:
        return
    ref = incremental_outcome(frames, batches, offsets, "reference", **limits)
    assert incremental_outcome(frames, batches, offsets, "fast", **limits) == ref
