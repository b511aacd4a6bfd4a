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
def capture(draw, zero: bool | None = None) -> bytes:
    packets = draw(conversation(zero))
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


# --------------------------------------------------------------------------------------------
# Zero-window events held open (model.FlowTable: in flight data, frame order, 200 ms hold)


C, V, W = ADDRS4[0], ADDRS4[1], ADDRS4[2]
T0 = 1_700_000_000 * 10**9
MS = 10**6


class Packets:
    """Hand-made segments with their capture times; every one a distinct copy (no duplicates)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.now = T0

    def add(self, src, dst, sp, dp, seq, ack, flags, win, plen=0, after=MS) -> None:
        self.now += after
        ident = (len(self.frames) + 1) % 65536
        self.frames.append((self.now, _eth(src, dst, sp, dp, seq, ack, flags, win, plen, ident)))

    def c(self, seq, ack, win, plen=0, flags=0x10, after=MS, port=1000) -> None:
        self.add(C, V, port, 80, seq, ack, flags, win, plen, after)

    def v(self, seq, ack, win, flags=0x10, after=MS, port=1000) -> None:
        self.add(V, C, 80, port, seq, ack, flags, win, 0, after)

    def other(self, win, after=MS) -> None:
        """Another flow's ACK: moves the capture clock; a smaller window than before shrinks."""
        self.add(W, V, 2000, 80, 1, 1, 0x10, win, 0, after)

    def pcap(self, cut: int = 0) -> bytes:
        data = pcap_file(self.frames, 1, 65535, "<", True, False)
        return data[: len(data) - cut]


def zero_window_flow(port: int = 1000) -> Packets:
    """Handshake without window scaling, 1000 bytes acknowledged, then the window closes.

    Frame 6 is the event: the edge goes back from 4001 to 2001 with nothing outstanding, a
    plain shrink for now, held open because the window is zero.
    """
    p = Packets()
    p.c(1000, 0, 64240, flags=0x02, port=port)
    p.v(5000, 1001, 65160, flags=0x12, port=port)
    p.c(1001, 5001, 502, port=port)
    p.c(1001, 5001, 502, plen=1000, port=port)
    p.v(5001, 1001, 3000, port=port)  # edge 4001
    p.v(5001, 2001, 0, port=port)  # edge 2001: frame 6
    return p


def released_reference(data: bytes, max_flows: int, idle_ns: int) -> tuple[list, list]:
    """Frames of the events each frame makes final, and those final at the end of the capture."""
    from treason.readers import open_frames
    from treason.scanner import Analyzer

    analyzer = Analyzer(ScanStats(), max_flows, idle_ns)
    per_frame = [
        [e.frame for e in analyzer.frame(f)[2]] for f in open_frames(io.BytesIO(data), "<mem>")
    ]
    return per_frame, [e.frame for e in analyzer.table.flush()]


def released_fast(data: bytes, max_flows: int, idle_ns: int) -> tuple[list, list]:
    """The same from the compiled scanner, fed one pcap record at a time."""
    scanner = fastpath._fastscan.Scanner(1, max_flows, idle_ns, 0)
    assert scanner.feed(data[:24], False) == (24, 16)
    per_frame, pos = [], 24
    while pos + 16 <= len(data):
        end = pos + 16 + struct.unpack_from("<I", data, pos + 8)[0]
        assert scanner.feed(data[pos:end], False)[0] == end - pos
        per_frame.append([raw[0] for raw in scanner.take_events()])
        pos = end
    scanner.flush()
    return per_frame, [raw[0] for raw in scanner.take_events()]


def assert_same_releases(data: bytes, max_flows: int = 500_000, idle_ns: int = 600 * 10**9):
    """Both engines make the same events final at the same frame, not only in the same order."""
    ref = released_reference(data, max_flows, idle_ns)
    assert released_fast(data, max_flows, idle_ns) == ref
    return ref


@needs_fast
def test_in_flight_data_after_a_zero_window_is_kernel_visible() -> None:
    """Data the capture shows after the zero-window ACK was in flight: it counts toward Y."""
    p = zero_window_flow()
    p.c(2001, 5001, 502, plen=1000)  # in flight
    p.c(3001, 5001, 502, plen=500)  # in flight
    p.c(2000, 5001, 502, plen=1)  # a zero-window probe: SND.NXT stays
    p.c(3501, 5001, 502)  # pure ACK: no new data
    events, _stats, error = assert_same(p.pcap())
    assert error is None
    ((event, record),) = events
    assert (event["frame"], event["cls"], event["certainty"]) == (6, 4, "definite")
    assert (event["snd_una"], event["snd_nxt"], event["beyond_bytes"]) == (2001, 3501, 1500)
    assert record["kernel_line"].endswith("shrunk window 2001:3501 (repaired)")
    assert assert_same_releases(p.pcap()) == ([[]] * 10, [6])


@needs_fast
def test_reopened_window_releases_the_event_in_frame_order() -> None:
    """A window update above zero makes the event final; later data no longer counts, and
    another flow's event made while it was open waits behind it."""
    p = zero_window_flow()
    p.other(100)
    p.other(50)  # frame 8: another flow's shrink, made while frame 6 is open
    p.v(5001, 2001, 4000)  # frame 9: the window reopens
    p.c(2001, 5001, 502, plen=1000)  # sent into the open window: not in flight
    events, _stats, _ = assert_same(p.pcap())
    assert [(e["frame"], e["cls"], e["snd_nxt"]) for e, _ in events] == [(6, 2, 2001), (8, 2, 1)]
    per_frame, at_end = assert_same_releases(p.pcap())
    assert per_frame == [[]] * 8 + [[6, 8], []] and at_end == []


@needs_fast
def test_each_zero_window_event_takes_only_its_own_in_flight_data() -> None:
    """A side holds one event open; once the window reopens, data counts toward the next."""
    p = zero_window_flow()
    p.v(5001, 2001, 0)  # same update again (a copy with another IP ID): no event
    p.c(2001, 5001, 502, plen=1000)  # in flight: frame 6 becomes kernel-visible
    p.v(5001, 3001, 10)  # frame 9, edge 3011: the window reopens, frame 6 is final
    p.v(5001, 3001, 0)  # frame 10: a second zero window
    p.c(3001, 5001, 502, plen=100)  # in flight for frame 10 only
    events, _stats, _ = assert_same(p.pcap())
    got = [(e["frame"], e["cls"], e["snd_nxt"]) for e, _ in events]
    assert got == [(6, 4, 3001), (10, 4, 3101)]
    assert assert_same_releases(p.pcap()) == ([[]] * 8 + [[6], [], []], [10])


@needs_fast
@pytest.mark.parametrize(
    ("gap", "cls"), [(200 * MS - 1, 4), (200 * MS, 2), (200 * MS + 1, 2), (10 * MS, 4)]
)
def test_open_event_is_final_after_the_minimum_rto(gap: int, cls: int) -> None:
    """200 ms of capture time after the zero window, data is no longer in flight."""
    p = zero_window_flow()
    p.c(2001, 5001, 502, plen=1000, after=gap)
    events, _stats, _ = assert_same(p.pcap())
    assert [e["cls"] for e, _ in events] == [cls]
    assert assert_same_releases(p.pcap())[0][6] == ([6] if cls == 2 else [])


@needs_fast
def test_the_hold_runs_on_the_capture_clock_of_every_flow() -> None:
    """Another flow's packet 300 ms later ends the hold; a frame stamped earlier after it
    (clocks going backwards) does not reopen it."""
    p = zero_window_flow()
    p.other(100, after=300 * MS)
    p.c(2001, 5001, 502, plen=1000, after=-290 * MS)
    events, _stats, _ = assert_same(p.pcap())
    assert [(e["frame"], e["cls"]) for e, _ in events] == [(6, 2)]
    assert assert_same_releases(p.pcap())[0][6] == [6]


@needs_fast
@pytest.mark.parametrize("how", ["idle", "cap", "reuse"])
def test_dropped_flow_makes_its_open_event_final(how: str) -> None:
    """Idle eviction, cap eviction and a reused 4-tuple end the flow and its in-flight data."""
    p = zero_window_flow()
    limits = {"max_flows": 500_000, "idle_timeout": 600.0}
    if how == "idle":
        limits["idle_timeout"] = 0.05
        p.other(100, after=60 * MS)  # the zero-window flow has been idle too long
    elif how == "cap":
        limits["max_flows"] = 1
        p.other(100)  # a second flow evicts it
    else:
        p.c(2001, 5001, 502, flags=0x14)  # RST: the 4-tuple may be reused
        p.c(77000, 0, 64240, flags=0x02)  # new SYN on the same 4-tuple
    p.c(2001, 5001, 502, plen=1000)  # too late: a different (resumed or new) flow
    p.other(50)
    events, stats, _ = assert_same(p.pcap(), **limits)
    first = events[0][0]
    assert (first["frame"], first["cls"], first["snd_nxt"]) == (6, 2, 2001)
    expected = {"idle": ("evicted_idle", 1), "cap": ("evicted_cap", 1), "reuse": ("flows", 3)}
    counter, at_least = expected[how]
    assert stats[counter] >= at_least
    idle_ns = int(limits["idle_timeout"] * 10**9)
    per_frame, _ = assert_same_releases(p.pcap(), limits["max_flows"], idle_ns)
    dropped_at = 8 if how == "reuse" else 7  # the frame that ends the flow
    assert per_frame[dropped_at - 1] == [6] and not any(per_frame[: dropped_at - 1])


@needs_fast
@pytest.mark.parametrize("damage", ["cut", "bad-record"])
def test_damage_while_an_event_is_open_reports_every_event_before_it(damage: str) -> None:
    """The capture ends (or breaks) with a zero-window event open and another flow's event
    behind it: both are reported, in frame order, with data in flight counted."""
    p = zero_window_flow()
    p.other(100)
    p.other(50)  # frame 8, waits behind frame 6
    p.c(2001, 5001, 502, plen=1000)  # in flight
    p.c(3001, 5001, 502, plen=1000)  # the damaged last record
    data = p.pcap()
    if damage == "cut":
        data = data[:-10]
    else:
        last = len(data) - (16 + len(p.frames[-1][1]))
        data = data[: last + 8] + struct.pack("<I", 300_000) + data[last + 12 :]
    events, stats, error = assert_same(data)
    assert [(e["frame"], e["cls"], e["snd_nxt"]) for e, _ in events] == [(6, 4, 3001), (8, 2, 1)]
    if damage == "cut":
        assert error is None and stats["warnings"]
    else:
        assert error is not None and error[0] == "CaptureError"
    assert run_fast_chunked(data, 64, [5, 17]) == run(io.BytesIO(data), "fast")


@needs_fast
def test_many_open_events_stay_linear() -> None:
    """Thousands of flows each closing the window, none reopened within 200 ms of each other:
    the queue behind the oldest open event grows and drains without losing order."""
    p = Packets()
    for i in range(3000):
        port = 1024 + i
        p.c(1000, 0, 64240, flags=0x02, after=0, port=port)
        p.v(5000, 1001, 65160, flags=0x12, after=0, port=port)
        p.v(5001, 1001, 3000, after=0, port=port)
        p.v(5001, 1001, 0, after=MS // 10, port=port)
        p.c(1001, 5001, 502, plen=100, after=0, port=port)
    data = p.pcap()
    events, _stats, _ = assert_same(data, max_flows=1000)
    assert [e["frame"] for e, _ in events] == [5 * i + 4 for i in range(3000)]
    assert {e["cls"] for e, _ in events} == {4}
    assert_same_releases(data, 1000, 600 * 10**9)


@needs_fast
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=conversation(zero=True), limits=LIMITS)
def test_zero_window_events_are_released_at_the_same_frame(packets, limits: dict) -> None:
    frames = [(ts, link(1, v6, pkt, vl)) for ts, _i, v6, pkt, vl in packets]
    data = pcap_file(frames, 1, 65535, "<", True, False)
    assert_same(data, **limits)
    assert_same_releases(data, limits["max_flows"], int(limits["idle_timeout"] * 10**9))


# --------------------------------------------------------------------------------------------
# The clock moving without packets, and frames fed a batch at a time (``treason live``)


def _records(data: bytes) -> list[bytes]:
    """The records of a little-endian pcap made by ``pcap_file``, header first."""
    out, pos = [data[:24]], 24
    while pos + 16 <= len(data):
        end = pos + 16 + struct.unpack_from("<I", data, pos + 8)[0]
        out.append(data[pos:end])
        pos = end
    return out


def advanced_reference(data: bytes, clocks: list, max_flows: int, idle_ns: int) -> list:
    """Per step, the events made final: after each frame, then after ``advance(clock)``."""
    from treason.readers import open_frames
    from treason.scanner import Analyzer

    analyzer = Analyzer(ScanStats(), max_flows, idle_ns)
    steps = []
    for frame, clock in zip(open_frames(io.BytesIO(data), "<mem>"), clocks, strict=True):
        steps.append([dataclasses.asdict(e) for e in analyzer.frame(frame)[2]])
        if clock is not None:
            steps.append([dataclasses.asdict(e) for e in analyzer.table.advance(clock)])
    steps.append([dataclasses.asdict(e) for e in analyzer.table.flush()])
    return steps


def advanced_fast(data: bytes, clocks: list, max_flows: int, idle_ns: int) -> list:
    """The same from the scanner, fed one record at a time with ``advance`` in between."""
    scanner = fastpath._fastscan.Scanner(1, max_flows, idle_ns, 0)
    head, *records = _records(data)
    scanner.feed(head, False)

    def taken() -> list:
        return [dataclasses.asdict(fastpath._event(raw)) for raw in scanner.take_events()]

    steps = []
    for record, clock in zip(records, clocks, strict=True):
        assert scanner.feed(record, False)[0] == len(record)
        steps.append(taken())
        if clock is not None:
            scanner.advance(clock)
            steps.append(taken())
    scanner.flush()
    steps.append(taken())
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
    """``Scanner.advance`` ↔ ``FlowTable.advance``: the same events final at the same step,
    with the same values, and the table's own clock (idle eviction, holds) left alone."""
    frames = [(ts, link(1, v6, pkt, vl)) for ts, _i, v6, pkt, vl in packets]
    data = pcap_file(frames, 1, 65535, "<", True, False)
    clocks = _clocks(frames, offsets)
    idle_ns = int(limits["idle_timeout"] * 10**9)
    ref = advanced_reference(data, clocks, limits["max_flows"], idle_ns)
    assert advanced_fast(data, clocks, limits["max_flows"], idle_ns) == ref


@needs_fast
@pytest.mark.parametrize(
    ("clock", "released"), [(200 * MS - 1, []), (200 * MS, [6]), (-(1 << 130), []), (1 << 90, [6])]
)
def test_advance_makes_an_open_event_final_on_the_wall_clock(clock: int, released: list) -> None:
    """No packet after the zero window: ``advance`` alone ends the hold, at exactly 200 ms."""
    p = zero_window_flow()
    zero_at = p.frames[-1][0]
    clocks = [None] * 5 + [clock if abs(clock) >= 1 << 64 else zero_at + clock]
    ref = advanced_reference(p.pcap(), clocks, 500_000, 600 * 10**9)
    assert advanced_fast(p.pcap(), clocks, 500_000, 600 * 10**9) == ref
    assert [e["frame"] for e in ref[-2]] == released
    assert [e["frame"] for e in ref[-1]] == ([] if released else [6])


@needs_fast
def test_advance_does_not_move_the_idle_clock() -> None:
    """A wall clock far ahead ends holds but evicts nothing: eviction runs on capture time."""
    p = zero_window_flow()
    clocks = [None] * 5 + [p.frames[-1][0] + 10**15]
    p.c(2001, 5001, 502, plen=1000)
    clocks.append(None)
    stats = ScanStats()
    inc = fastpath.Incremental(1, stats, 500_000, 10**9)
    frames = list(_frames_of(p.pcap()))
    inc.feed(frames[:6])
    assert [e.frame for e in inc.advance(clocks[5])] == [6]
    inc.feed(frames[6:])
    assert stats.evicted_idle == 0 and stats.flows == 1 and inc.active == 1


def _frames_of(data: bytes):
    from treason.readers import open_frames

    return open_frames(io.BytesIO(data), "<mem>")


def incremental_outcome(frames: list, batches: list[int], clocks: list, engine: str, **kw):
    """Frames fed in batches with the clock advanced after each, through either engine."""
    from treason.scanner import Analyzer

    stats = ScanStats()
    max_flows, idle_ns = kw.get("max_flows", 500_000), int(kw.get("idle_timeout", 600) * 1e9)
    steps = []
    if engine == "fast":
        inc = fastpath.Incremental(frames[0].linktype if frames else 1, stats, max_flows, idle_ns)
        feed, advance, flush = inc.feed, inc.advance, inc.flush
    else:
        analyzer = Analyzer(stats, max_flows, idle_ns)

        def feed(batch):
            out = []
            for f in batch:
                out.extend(analyzer.frame(f)[2])
            stats.flows, stats.handshakes, stats.evicted_idle, stats.evicted_cap = (
                analyzer.flow_counters()
            )
            return out

        advance, flush = analyzer.table.advance, analyzer.table.flush
    pos = i = 0
    while pos < len(frames):
        size = batches[i % len(batches)]
        steps.append([dataclasses.asdict(e) for e in feed(frames[pos : pos + size])])
        steps.append(stats.to_dict())
        if clocks[i % len(clocks)] is not None:
            now = frames[min(pos + size, len(frames)) - 1].ts_ns + clocks[i % len(clocks)]
            steps.append([dataclasses.asdict(e) for e in advance(now)])
        pos += size
        i += 1
    steps.append([dataclasses.asdict(e) for e in flush()])
    steps.append(stats.to_dict())
    return steps


@needs_fast
@pytest.mark.parametrize(
    "path",
    [p for p in _repo_captures() if "damaged" not in p.name and ".pcapng" not in p.name],
    ids=lambda p: p.name,
)
@pytest.mark.parametrize("limits", [{}, {"max_flows": 1, "idle_timeout": 0.001}])
def test_incremental_agrees_with_the_analyzer(path: Path, limits: dict) -> None:
    """``Incremental`` (live's fast engine) gives what ``Analyzer`` + ``FlowTable`` give,
    batch by batch: the same final events and the same counters after every call."""
    from treason.readers import open_frames

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
def test_incremental_agrees_on_generated_traffic(packets, batches, offsets, limits) -> None:
    frames_raw = [(ts, link(1, v6, pkt, vl)) for ts, _i, v6, pkt, vl in packets]
    frames = list(_frames_of(pcap_file(frames_raw, 1, 65535, "<", True, False)))
    if not frames:
        return
    ref = incremental_outcome(frames, batches, offsets, "reference", **limits)
    assert incremental_outcome(frames, batches, offsets, "fast", **limits) == ref


@needs_fast
def test_incremental_rejects_a_frame_of_another_link_type() -> None:
    from treason.packets import Frame

    inc = fastpath.Incremental(1, ScanStats(), 10, 10**9)
    with pytest.raises(ValueError, match="link type 101"):
        inc.feed([Frame(1, T0, 101, b"\x45" + bytes(39), 40)])
