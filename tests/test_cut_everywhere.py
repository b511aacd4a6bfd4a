"""A capture cut at every byte of its last three records: what tcpdump leaves when it is killed.

Each of the last three records holds one event. Whatever the cut, the scan must report every
event whose record is complete, none of the others, and a truncation warning that names the
byte where the cut record starts (or none, when the cut falls between records); no exception
escapes. Plain pcap (both byte orders, both time precisions), pcapng (both byte orders) and
both of them gzip-compressed, cut inside the compressed stream; both engines, which must also
agree with each other word for word.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib

import pytest

from captures import epb, ether, idb, ipv4, pcap, shb, tcp
from treason import scan
from treason.errors import CaptureError
from treason.scanner import ScanStats, fast_available

ENGINES = ["reference"] + (["fast"] if fast_available() else [])

SYN, ACK = 0x02, 0x10
A, B = "10.0.0.1", "10.0.0.2"
WS2 = bytes([1, 3, 3, 2])


def pkt(src: str, seq: int, ack: int, flags: int, win: int, ident: int, **kw: object) -> bytes:
    sport, dport, dst = (40000, 80, B) if src == A else (80, 40000, A)
    seg = tcp(sport, dport, seq, ack, flags, win, **kw)  # type: ignore[arg-type]
    return ether(ipv4(src, dst, seg, ident=ident, total_len=20 + len(seg) + 100 * (src == A)))


#: Handshake (scale 2), 100 bytes of data, then six window updates from B; frames 5..9 shrink.
FRAMES = [
    pkt(A, 1000, 0, SYN, 65535, 1, options=WS2),
    pkt(B, 5000, 1001, SYN | ACK, 65535, 2, options=WS2),
    pkt(A, 1001, 5001, ACK, 1000, 3),
    pkt(B, 5001, 1101, ACK, 1000, 4),
    pkt(B, 5001, 1101, ACK, 900, 5),
    pkt(B, 5001, 1101, ACK, 800, 6),
    pkt(B, 5001, 1101, ACK, 700, 7),
    pkt(B, 5001, 1101, ACK, 600, 8, options=b"\x01\x01\x08\x0a" + b"\0" * 8),
    pkt(B, 5001, 1101, ACK, 500, 9),
]
LAST = 3


def pcap_capture(order: str, nano: bool) -> tuple[bytes, list[int]]:
    """The capture and the byte offset where each record starts."""
    data = pcap([(10**18 + i, f) for i, f in enumerate(FRAMES)], order=order, nano=nano)
    starts, pos = [], 24
    for f in FRAMES:
        starts.append(pos)
        pos += 16 + len(f)
    return data, starts


def pcapng_capture(order: str) -> tuple[bytes, list[int]]:
    head = shb(order) + idb(order=order)
    blocks = [epb(0, i, f, order=order) for i, f in enumerate(FRAMES)]
    starts, pos = [], len(head)
    for b in blocks:
        starts.append(pos)
        pos += len(b)
    return head + b"".join(blocks), starts


CAPTURES = {
    "pcap-le-usec": pcap_capture("<", False),
    "pcap-be-nsec": pcap_capture(">", True),
    "pcapng-le": pcapng_capture("<"),
    "pcapng-be": pcapng_capture(">"),
}


def run(data: bytes, engine: str) -> tuple[list[int], list[str]]:
    """Frames of the events and the warnings; any exception fails the test by escaping."""
    stats = ScanStats()
    frames = [e.frame for e in scan(io.BytesIO(data), engine=engine, stats=stats)]
    return frames, stats.warnings


def expected(starts: list[int], total: int, cut: int) -> tuple[list[int], int | None]:
    """Events of complete records (frames 5..9) and where the cut record starts, if any."""
    ends = [*starts[1:], total]
    complete = sum(1 for end in ends if end <= cut)
    events = [n for n in range(5, 10) if n <= complete]
    cut_record = None if cut in starts or cut == total else starts[complete]
    return events, cut_record


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_cut_of_the_last_records(name: str) -> None:
    data, starts = CAPTURES[name]
    first_cut = starts[-LAST]
    assert run(data, "reference") == ([5, 6, 7, 8, 9], [])
    for cut in range(first_cut, len(data) + 1):
        events, at = expected(starts, len(data), cut)
        results = {engine: run(data[:cut], engine) for engine in ENGINES}
        for engine, (found, warnings) in results.items():
            assert found == events, (engine, cut)
            if at is None:
                assert warnings == [], (engine, cut)
            else:
                assert len(warnings) == 1 and warnings[0].startswith("<stream>: truncated ")
                assert warnings[0].endswith(f" (at byte {at})"), (engine, cut, warnings)
        assert len(set(map(repr, results.values()))) == 1, (cut, results)


@pytest.mark.parametrize("name", sorted(CAPTURES))
@pytest.mark.parametrize("level", [0, 9])
def test_every_cut_of_the_compressed_stream(name: str, level: int) -> None:
    """Cut the gzip file itself: every record zlib can still inflate is reported."""
    data, starts = CAPTURES[name]
    packed = gzip.compress(data, compresslevel=level, mtime=0)
    for cut in range(len(packed) + 1):
        inflated = _inflate(packed[:cut])
        if len(inflated) < starts[-LAST]:
            # Before the last three records: only the documented error may come out.
            for engine in ENGINES:
                with contextlib.suppress(CaptureError):
                    run(packed[:cut], engine)
            continue
        events, _ = expected(starts, len(data), len(inflated))
        results = {engine: run(packed[:cut], engine) for engine in ENGINES}
        for engine, (found, warnings) in results.items():
            assert found == events, (engine, cut)
            if cut == len(packed):
                assert warnings == []
            else:
                # Either a record is cut, or the records are whole and the stream is not.
                assert len(warnings) == 1, (engine, cut)
                assert warnings[0].startswith("<stream>: truncated "), warnings
        assert len(set(map(repr, results.values()))) == 1, (cut, results)


def _inflate(prefix: bytes) -> bytes:
    """What an independent gunzip gets out of a cut gzip stream."""
    z = zlib.decompressobj(31)
    try:
        return z.decompress(prefix)
    except zlib.error:
        return b""
