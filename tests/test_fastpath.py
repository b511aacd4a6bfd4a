"""The fast engine against the reference engine: same events, same counters, same errors.

The reference engine (readers → decoder → model, plain Python) is the definition; the compiled
scanner must agree with it on every capture: the real ones the suite makes with the Linux
kernel, hypothesis-generated conversations in every container and link type, tiny flow caps
and idle timeouts that force evictions and resumptions, damaged files, and any way of
splitting the bytes into reads.
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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treason import fastpath
from treason.errors import CaptureError
from treason.scanner import ScanStats, scan

ROOT = Path(__file__).resolve().parent.parent

needs_fast = pytest.mark.skipif(
    not fastpath.available(), reason="the compiled scanner is not built (no C compiler)"
)


def test_extension_builds_where_a_compiler_exists() -> None:
    """On this machine and CI the package must build its scanner, not silently fall back."""
    if shutil.which("gcc") is None and shutil.which("cc") is None and not os.environ.get("CI"):
        pytest.skip("no C compiler: the reference engine is the documented fallback")
    assert fastpath.available(), "treason._fastscan did not build; run pip install -e ."


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
        [(dataclasses.asdict(e), e.time) for e in events],
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
    """The fast engine directly, with a tiny buffer and a stream of short reads."""
    stats = ScanStats()
    events = []
    error = None
    max_flows = kw.get("max_flows", 500_000)
    idle_ns = int(kw.get("idle_timeout", 600.0) * 1e9)
    try:
        for e in fastpath.scan(Dribble(data, sizes), "<stream>", stats, max_flows, idle_ns, chunk):
            e.file = "<stream>"
            stats.events[e.cls.label] += 1
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
# Building captures (independent of treason's readers)


def tcp_header(sport, dport, seq, ack, flags, win, ws=None, extra=b"", csum=0) -> bytes:
    opts = extra
    if ws is not None:
        opts += b"\x01\x03\x03" + bytes([ws])
    opts += b"\0" * (-len(opts) % 4)
    doff = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, csum, 0) + opts


def ip_packet(v6: bool, src: bytes, dst: bytes, tcp: bytes, plen: int, ident: int) -> bytes:
    """IP header + TCP header + ``plen`` zero bytes of payload."""
    body = tcp + bytes(plen)
    if v6:
        return struct.pack("!IHBB", 6 << 28, len(body), 6, 64) + src + dst + body
    return (
        struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(body), ident, 0x4000, 64, 6, 0)
        + src
        + dst
        + body
    )


def link(lt: int, v6: bool, pkt: bytes, vlans: tuple[int, ...]) -> bytes:
    etype = 0x86DD if v6 else 0x0800
    if lt == 1:
        head = b"\x02" * 6 + b"\x04" * 6
        if vlans:
            out = head + struct.pack("!H", 0x8100)
            for i, v in enumerate(vlans):
                nxt = 0x8100 if i + 1 < len(vlans) else etype
                out += struct.pack("!HH", v, nxt)
            return out + pkt
        return head + struct.pack("!H", etype) + pkt
    if lt == 113:
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, etype) + pkt
    if lt == 276:
        return struct.pack("!HHIHBB8s", etype, 0, 1, 1, 0, 6, b"\x02" * 8) + pkt
    if lt in (101, 12, 14, 228, 229):
        return pkt
    if lt == 0:
        return struct.pack("<I", 30 if v6 else 2) + pkt
    if lt == 108:
        return struct.pack("!I", 24 if v6 else 2) + pkt
    raise AssertionError(lt)


def pcap_file(
    frames, linktype: int, snaplen: int, order: str, nanos: bool, modified: bool
) -> bytes:
    magic = 0xA1B23C4D if nanos else (0xA1B2CD34 if modified else 0xA1B2C3D4)
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts_ns, data in frames:
        cap = data[:snaplen]
        frac = ts_ns % 10**9 if nanos else ts_ns % 10**9 // 1000
        out.append(struct.pack(order + "IIII", ts_ns // 10**9, frac, len(cap), len(data)))
        if modified:
            out.append(bytes(8))
        out.append(cap)
    return b"".join(out)


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def pcapng_file(frames, linktypes, snaplen: int, order: str, tsres: int | None, spb: bool) -> bytes:
    """One section; interface i has link type linktypes[i]; frames carry their interface."""
    out = [block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for lt in linktypes:
        opts = b""
        if tsres is not None:
            opts += struct.pack(order + "HH", 9, 1) + bytes([tsres, 0, 0, 0])
            opts += struct.pack(order + "HHq", 14, 8, 3)
        opts += struct.pack(order + "HH", 0, 0)
        out.append(block(order, 1, struct.pack(order + "HHI", lt, 0, snaplen) + opts))
    for iface, ts_ns, data in frames:
        cap = data[:snaplen]
        if spb and iface == 0:
            out.append(block(order, 3, struct.pack(order + "I", len(data)) + cap))
            continue
        if tsres is None:
            ticks = ts_ns // 1000
        elif tsres & 0x80:
            ticks = (ts_ns - 3 * 10**9) * (1 << (tsres & 0x7F)) // 10**9
        else:
            ticks = (ts_ns - 3 * 10**9) * 10 ** (tsres & 0x7F) // 10**9
        ticks = max(ticks, 0)
        out.append(
            block(
                order,
                6,
                struct.pack(
                    order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(cap), len(data)
                )
                + cap,
            )
        )
        if len(out) == 5:
            out.append(block(order, 0xBAD, b"unknown block"))
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Conversations


ADDRS4 = [bytes([10, 0, 0, i]) for i in (1, 2, 3)]
ADDRS6 = [socket.inet_pton(socket.AF_INET6, f"2001:db8::{i}") for i in (1, 2, 3)]
WINDOWS = st.one_of(st.sampled_from([0, 0, 0, 1, 2, 100, 1000, 4096, 65535]), st.integers(0, 65535))
LENGTHS = st.sampled_from([0, 0, 1, 100, 536, 1448])


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


def odd_packet(how: str, f: dict, d: int, tcp: bytes, plen: int, ident: int) -> bytes:
    """A packet the decoder must skip or decode by a rarely taken path."""
    src, dst = f["addr"][d], f["addr"][1 - d]
    body = tcp + bytes(plen)
    if f["v6"] and how in ("hop-by-hop", "v6-fragment"):
        ext = bytes([6, 0]) + bytes(6)
        nh = 0 if how == "hop-by-hop" else 44
        if how == "v6-fragment":
            ext = bytes([6, 0]) + struct.pack("!HI", 1, 7)  # offset 0, more fragments
        payload = ext + body
        return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + src + dst + payload
    if f["v6"]:
        return ip_packet(True, src, dst, tcp, plen, ident)
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
    return head + src + dst + opts + body


@st.composite
def conversation(draw) -> list[tuple[int, int, bool, bytes, tuple[int, ...]]]:
    """Packets as (ts_ns, iface, v6, ip packet, vlans): plausible TCP with every kind of noise."""
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
        st.sampled_from(KINDS),
        WINDOWS,
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
    steps += draw(st.lists(step, min_size=1, max_size=40))
    out: list = []
    now = 1_700_000_000 * 10**9
    for fi, d, kind, win, plen, jitter, odd in steps:
        f = flows[fi]
        now += draw(st.integers(0, 2 * 10**8))
        if kind == "gap":
            now += 3 * 10**9
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
            win = max(0, last_win - 1 - jitter % 3)
        if flags & 0x10:
            f["last"][d] = (ack, win)
        if kind in ("syn", "synack"):
            f["nxt"][d] = (f["isn"][d] + 1) % 2**32
        f["ident"][d] = (f["ident"][d] + 1) % 65536
        extra = b""
        if f["ts"][d] is not None:
            f["ts"][d] = (f["ts"][d] + 1) % 2**32
            extra = b"\x01\x01\x08\x0a" + struct.pack("!II", f["ts"][d], 0)
        tcp = tcp_header(f["port"][d], f["port"][o], seq, ack, flags, win, ws, extra, f["ident"][d])
        if kind == "odd":
            pkt = odd_packet(odd, f, d, tcp, length, f["ident"][d])
        else:
            pkt = ip_packet(f["v6"], f["addr"][d], f["addr"][o], tcp, length, f["ident"][d])
        out.append((now, f["iface"], f["v6"], pkt, f["vlans"]))
    return out


LINKTYPES = [1, 113, 276, 101, 12, 14, 0, 108]


@st.composite
def capture(draw) -> bytes:
    packets = draw(conversation())
    snaplen = draw(st.sampled_from([65535, 262144, 128, 80, 60]))
    order = draw(st.sampled_from("<>"))
    lts = [draw(st.sampled_from(LINKTYPES)) for _ in range(2)]

    def framed(lt: int, v6: bool, pkt: bytes, vlans: tuple[int, ...]) -> bytes:
        if lt in (228, 229):
            lt = 229 if v6 else 228
        return link(lt, v6, pkt, vlans if lt == 1 else ())

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
def damaged(draw) -> bytes:
    data = draw(capture())
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


def _shrink_conversation() -> list[bytes]:
    """A handshake with WS 7 both ways, data, then an ACK that takes window back."""
    a, b = ADDRS4[0], ADDRS4[1]
    p = []

    def seg(src, dst, sp, dp, seq, ack, flags, win, ws=None, plen=0, ident=1):
        return link(
            1,
            False,
            ip_packet(False, src, dst, tcp_header(sp, dp, seq, ack, flags, win, ws), plen, ident),
            (),
        )

    p.append(seg(a, b, 1000, 80, 100, 0, 0x02, 64240, 7, ident=1))
    p.append(seg(b, a, 80, 1000, 500, 101, 0x12, 65160, 7, ident=2))
    p.append(seg(a, b, 1000, 80, 101, 501, 0x10, 502, ident=3))
    p.append(seg(b, a, 80, 1000, 501, 101, 0x10, 500, ident=4))
    p.append(seg(a, b, 1000, 80, 101, 501, 0x18, 502, plen=1448, ident=5))
    p.append(seg(b, a, 80, 1000, 501, 101 + 1000, 0x10, 0, ident=6))
    p.append(seg(b, a, 80, 1000, 501, 101 + 1000, 0x10, 0, ident=6))  # span-port copy
    p.append(seg(b, a, 80, 1000, 501, 101 + 1000, 0x14, 0, ident=7))
    return p


@needs_fast
def test_kernel_visible_shrink_and_duplicate() -> None:
    frames = [(1_700_000_000 * 10**9 + i * 10**6, f) for i, f in enumerate(_shrink_conversation())]
    events, stats, error = assert_same(pcap_file(frames, 1, 65535, "<", False, False))
    assert error is None
    assert [e["cls"] for e, _ in events] == [4]
    assert stats["model"]["duplicates"] == 1 and stats["model"]["resets"] == 1
    assert stats["handshakes"] == 1


def _frames(packets: list[bytes]) -> list[tuple[int, bytes]]:
    return [(1_700_000_000 * 10**9 + i * 10**6, p) for i, p in enumerate(packets)]


def _eth(src, dst, sp, dp, seq, ack, flags, win, plen=0, ident=1, ws=None, tsval=None) -> bytes:
    extra = b"" if tsval is None else b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, 0)
    tcp = tcp_header(sp, dp, seq, ack, flags, win, ws, extra, ident)
    return link(1, False, ip_packet(False, src, dst, tcp, plen, ident), ())


@needs_fast
def test_beyond_and_unknown_scale() -> None:
    """Mid-connection capture (scale unknown): a shrink past data already sent."""
    a, b = ADDRS4[0], ADDRS4[1]
    packets = [
        _eth(a, b, 1000, 80, 5000, 9000, 0x10, 500, plen=1000, ident=1),
        _eth(b, a, 80, 1000, 9000, 5000, 0x10, 4000, ident=2),
        _eth(a, b, 1000, 80, 5000, 9000, 0x10, 500, plen=3000, ident=3),
        _eth(b, a, 80, 1000, 9000, 5500, 0x10, 10, ident=4),
        _eth(b, a, 80, 1000, 9000, 6000, 0x10, 5, ident=5),
    ]
    events, _stats, error = assert_same(pcap_file(_frames(packets), 1, 65535, "<", False, False))
    assert error is None
    assert [(e["cls"], e["scale_known"]) for e, _ in events] == [(3, False)]


@needs_fast
def test_reordered_update_rejected_by_timestamps() -> None:
    """PAWS: the same ACK with an older TSval arrives after a newer one and is not an update."""
    a, b = ADDRS4[0], ADDRS4[1]
    packets = [
        _eth(a, b, 1000, 80, 5000, 9000, 0x10, 500, plen=100, ident=1, tsval=10),
        _eth(b, a, 80, 1000, 9000, 5100, 0x10, 4000, ident=2, tsval=100),
        _eth(b, a, 80, 1000, 9000, 5100, 0x10, 4100, ident=3, tsval=102),
        _eth(b, a, 80, 1000, 9000, 5100, 0x10, 1000, ident=4, tsval=101),
    ]
    data = pcap_file(_frames(packets), 1, 65535, "<", False, False)
    events, stats, _ = assert_same(data)
    assert stats["model"]["paws_rejects"] == 1 and events == []


@needs_fast
@pytest.mark.parametrize("tail", [b"garbage!", b"\0" * 10, b"\x1f\x8b\x08"])
def test_gzip_members_and_trailers_agree(tail: bytes) -> None:
    frames = _frames(_shrink_conversation())
    data = pcap_file(frames, 1, 65535, "<", False, False)
    half = len(data) // 2
    assert_same(gzip.compress(data[:half]) + gzip.compress(data[half:]) + tail)


@needs_fast
def test_deep_vlan_stack_and_huge_timestamps() -> None:
    """A 9-tag VLAN stack is part of the flow key; pcapng timestamps beyond 64-bit nanoseconds."""
    conv = _shrink_conversation()
    tagged = [
        f[:12] + b"".join(struct.pack("!HH", 0x8100, 100 + i) for i in range(9)) + f[12:]
        for f in conv
    ]
    frames = [(0, 2**63 + i, f) for i, f in enumerate(tagged)]
    data = pcapng_file(frames, [1], 65535, "<", 0x80 | 2, False)
    events, _stats, error = assert_same(data)
    assert error is None and events and events[0][0]["vlan"] == tuple(range(100, 109))


@needs_fast
def test_flows_evicted_and_resumed() -> None:
    """Two interleaved flows under a cap of one: every packet evicts the other flow."""
    conv = _shrink_conversation()
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
    data = pcap_file(_frames(_shrink_conversation()), 1, 65535, "<", False, False)
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
    clients = [bytes([10, rnd.randrange(256), rnd.randrange(256), 1]) for _ in range(3000)]
    server = bytes([192, 0, 2, 1])
    packets = []
    for i in range(12_000):
        c = rnd.choice(clients)
        port = 1024 + clients.index(c) % 7
        kind = rnd.random()
        if kind < 0.5:
            p = _eth(c, server, port, 80, rnd.getrandbits(32), 0, 0x02, 64240, ident=i, ws=7)
        elif kind < 0.8:
            p = _eth(server, c, 80, port, 5000, 7000 + i, 0x10, rnd.choice([0, 10, 900]), ident=i)
        else:
            p = _eth(c, server, port, 80, 7000 + i, 5000, 0x10, 500, plen=100, ident=i)
        packets.append((1_700_000_000 * 10**9 + i * 5 * 10**6, p))
    data = pcap_file(packets, 1, 65535, "<", True, False)
    _events, stats, _ = assert_same(data, max_flows=max_flows, idle_timeout=20.0)
    assert stats["evicted_cap"] + stats["evicted_idle"] > 0
