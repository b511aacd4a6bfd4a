"""Segment records: a decoded TCP segment as bytes, so a capture is decoded once and its
segments analysed elsewhere (another process or machine), grouped by flow.

Splitting (``Engine.split``) frames and decodes a capture, counts its frames, skipped frames and
segments (there and only there), and writes each segment as one record into the bucket of its
flow; ``Engine.feed_segments`` analyses records later, in any grouping that keeps each flow's
segments in capture order. A record carries what the model reads of the segment, its frame
number (with the capture's base, ``position``) and the flow table's clock at it: the latest
segment time of its capture so far, to which the analyser adds the clock the captures before
reached. Both engines write and read the same layout (the compiled scanner's ``SegRec``,
whose struct format it exports and ``treason.engine.compiled`` checks).
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Iterator
from typing import Any

from treason.packets import Segment, TunnelledSegment

#: ``SegRec`` in ``_fastscan.c``: size, tag-path word count, v6, flags, frame, time and clock
#: (each two 64-bit halves), payload length, seq, ack, TSval, ports, window, IP id, checksum,
#: window scale, option bits (the high four: enclosing IP headers), addresses. The flow key's
#: tag path follows as uint16 words (a VLAN id, or a tunnel entry in three: ``0x8000 | kind``,
#: the identifier's high and low halves), then each enclosing IP header (v6 byte, source,
#: destination), padded to 8 bytes.
FORMAT = "=IHBBQQQQQqIIIHHHHHBB16s16s"
_REC = struct.Struct(FORMAT)
_VLAN = struct.Struct("=H")
_MASK64 = (1 << 64) - 1
_OPT_WS = 1
_OPT_TSVAL = 2
_OUTER_SHIFT = 4
_OUTER = struct.Struct("=B16s16s")
_TUNNEL_WORD = 0x8000

#: Frame numbers of the ``k``-th capture of a set are ``k << POSITION_BITS`` plus the frame's
#: number in its file, so one number says which file and which frame an event comes from.
POSITION_BITS = 40
FRAME_MASK = (1 << POSITION_BITS) - 1


#: An analyser's outside clock when there is none: records carry their own.
EARLIEST = -(1 << 127)


def position(index: int, frame: int = 0) -> int:
    """The frame number an engine uses for frame ``frame`` of the ``index``-th capture."""
    return (index << POSITION_BITS) | frame


def unposition(number: int) -> tuple[int, int]:
    """(capture index, frame number within that capture) of a ``position``."""
    return number >> POSITION_BITS, number & FRAME_MASK


def halves(value: int) -> tuple[int, int]:
    """A 128-bit signed time as the (low, high) 64-bit halves the compiled scanner takes."""
    return value & _MASK64, value >> 64


def _raw(addr: str) -> tuple[int, bytes]:
    if ":" in addr:
        return 1, socket.inet_pton(socket.AF_INET6, addr)
    return 0, socket.inet_pton(socket.AF_INET, addr).ljust(16, b"\0")


def _text(v6: int, raw: bytes) -> str:
    if v6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def _words(path: tuple[int, ...]) -> list[int]:
    """A tag path as the compiled scanner's uint16 words."""
    words: list[int] = []
    for entry in path:
        if entry < 1 << 32:
            words.append(entry)
        else:
            ident = entry & 0xFFFFFFFF
            words += [_TUNNEL_WORD | entry >> 32, ident >> 16, ident & 0xFFFF]
    return words


def _entries(words: list[int]) -> tuple[int, ...]:
    """The compiled scanner's path words as ``Segment`` tag-path entries."""
    out: list[int] = []
    i = 0
    while i < len(words):
        if words[i] & _TUNNEL_WORD:
            out.append((words[i] & ~_TUNNEL_WORD) << 32 | words[i + 1] << 16 | words[i + 2])
            i += 3
        else:
            out.append(words[i])
            i += 1
    return tuple(out)


def pack(seg: Segment, clock: int) -> bytes:
    """The record of ``seg`` (its ``frame`` already a position) at table clock ``clock``."""
    v6, src = _raw(seg.src)
    _, dst = _raw(seg.dst)
    words = _words(seg.key_path)
    outer = seg.outer
    size = (_REC.size + 2 * len(words) + _OUTER.size * len(outer) + 7) & ~7
    opts = (_OPT_WS if seg.ws is not None else 0) | (_OPT_TSVAL if seg.tsval is not None else 0)
    opts |= len(outer) << _OUTER_SHIFT
    head = _REC.pack(
        size,
        len(words),
        v6,
        seg.flags,
        seg.frame,
        seg.ts_ns & _MASK64,
        (seg.ts_ns >> 64) & _MASK64,
        clock & _MASK64,
        (clock >> 64) & _MASK64,
        seg.payload_len,
        seg.seq,
        seg.ack,
        seg.tsval or 0,
        seg.sport,
        seg.dport,
        seg.win,
        seg.ip_id,
        seg.checksum,
        seg.ws or 0,
        opts,
        src,
        dst,
    )
    tail = b"".join(_VLAN.pack(w) for w in words)
    for a, b in outer:
        a_v6, a_raw = _raw(a)
        tail += _OUTER.pack(a_v6, a_raw, _raw(b)[1])
    return (head + tail).ljust(size, b"\0")


def _signed128(lo: int, hi: int) -> int:
    value = hi << 64 | lo
    return value - (1 << 128) if value >> 127 else value


def unpack(records: bytes | bytearray | memoryview) -> Iterator[tuple[Segment, int]]:
    """(segment, clock) of each record, in order."""
    data = memoryview(records)
    pos = 0
    while pos < len(data):
        fields = _REC.unpack_from(data, pos)
        size, nvlan, v6, flags, frame, ts_lo, ts_hi, ck_lo, ck_hi, plen = fields[:10]
        seq, ack, tsval, sport, dport, win, ip_id, checksum, ws, opts, src, dst = fields[10:]
        nouter = opts >> _OUTER_SHIFT
        if size < _REC.size + 2 * nvlan + _OUTER.size * nouter or pos + size > len(data):
            raise ValueError(f"malformed segment record at byte {pos}")
        at = pos + _REC.size
        path = _entries([_VLAN.unpack_from(data, at + 2 * i)[0] for i in range(nvlan)])
        at += 2 * nvlan
        outer = []
        for _ in range(nouter):
            o_v6, o_src, o_dst = _OUTER.unpack_from(data, at)
            outer.append((_text(o_v6, o_src), _text(o_v6, o_dst)))
            at += _OUTER.size
        vlan = tuple(entry for entry in path if entry < 1 << 32)
        common: dict[str, Any] = dict(
            frame=frame,
            ts_ns=_signed128(ts_lo, ts_hi),
            src=_text(v6, src),
            sport=sport,
            dst=_text(v6, dst),
            dport=dport,
            seq=seq,
            ack=ack,
            flags=flags,
            win=win,
            payload_len=plen,
            ws=ws if opts & _OPT_WS else None,
            vlan=vlan,
            ip_id=ip_id,
            checksum=checksum,
            tsval=tsval if opts & _OPT_TSVAL else None,
        )
        if len(vlan) == len(path) and not outer:
            seg = Segment(**common)
        else:  # came through tunnels (treason.decode)
            seg = TunnelledSegment(**common, path=path, outer=tuple(outer))
        yield seg, _signed128(ck_lo, ck_hi)
        pos += size


#: The first fields of a record: size, VLAN count, v6, flags, frame, time (two halves).
_HEAD = struct.Struct("=IHBBQQQ")


def heads(records: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(offset, size, frame, time) of each record, without decoding the rest (to merge or
    reorder records as bytes)."""
    data = memoryview(records)
    pos = 0
    while pos < len(data):
        size, _nvlan, _v6, _flags, frame, lo, hi = _HEAD.unpack_from(data, pos)
        if size < _REC.size or pos + size > len(data):
            raise ValueError(f"malformed segment record at byte {pos}")
        yield pos, size, frame, _signed128(lo, hi)
        pos += size


def bucket(seg: Segment, buckets: int) -> int:
    """The bucket of ``seg``'s connection: the same for both directions and in every process.
    Endpoints only, not the tag path: a connection whose directions carry different tags
    (``FlowTable``'s aliases) stays in one bucket."""
    a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
    lo, hi = (a, b) if a <= b else (b, a)
    return zlib.crc32(repr((lo, hi)).encode()) % buckets
