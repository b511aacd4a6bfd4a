"""Records longer than their capture's snap length: read whole and counted, as Wireshark reads
them (``docs/decoding.md``), in both engines, pcap and pcapng; 256 KiB stays the hard limit.

Each capture has one such record in the middle (a 1000-byte data segment written whole under a
snap length of 200, as some writers do) and the flow's only event after it, so "everything
after it is scanned" is the event being found. tshark is the independent reader: it must see
the same frames, with the same length for the long one.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from pathlib import Path
from typing import Any

import pytest

from captures import Packets, epb, idb, pb, pcap, shb, tshark_fields
from conftest import require_tshark
from treason.engine.choose import compiled_available
from treason.engine.compiled import CompiledEngine
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.readers import open_capture, open_frames
from treason.scanner import drive, scan

FAST = compiled_available()
SNAPLEN = 200
DATA = 1000  # payload of the long record, frame 4


def flow() -> Packets:
    """Handshake, 1000 bytes C→V in frame 4 (the long record), then V shrinks in frame 6."""
    p = Packets()
    p.c(1000, 0, 64240, flags=0x02)
    p.v(5000, 1001, 65160, flags=0x12)
    p.c(1001, 5001, 502)
    p.c(1001, 5001, 502, plen=DATA, flags=0x18)  # frame 4: longer than the snap length
    p.v(5001, 2001, 3000)  # edge 5001
    p.v(5001, 2001, 1000)  # edge 3001: frame 6, the event
    return p


def as_pcap(p: Packets, snaplen: int = SNAPLEN) -> bytes:
    return pcap(p.frames, nano=True, snaplen=snaplen)


def as_pcapng(p: Packets, kind: str = "epb", snaplen: int = SNAPLEN) -> bytes:
    packet = epb if kind == "epb" else pb
    # Microsecond units (the default if_tsresol).
    blocks = [packet(0, ts // 1000, data) for ts, data in p.frames]
    return shb() + idb(snaplen=snaplen) + b"".join(blocks)


CAPTURES = {
    "pcap": lambda: as_pcap(flow()),
    "pcapng-epb": lambda: as_pcapng(flow(), "epb"),
    "pcapng-pb": lambda: as_pcapng(flow(), "pb"),
}


def run(data: bytes, engine: str) -> tuple[list[Any], dict[str, Any], Any]:
    """Events, counters (warnings too) and the error of one scan of ``data``."""
    stats, events, error = ScanStats(), [], None
    try:
        for e in scan(io.BytesIO(data), engine=engine, stats=stats):
            events.append(dataclasses.asdict(e))
    except CaptureError as exc:
        error = str(exc)
    return events, stats.to_dict(), error


def outcome(data: bytes) -> tuple[list[Any], dict[str, Any], Any]:
    """The reference engine's outcome, which the compiled one (when built) must equal."""
    ref = run(data, "reference")
    if FAST:
        assert run(data, "fast") == ref
    return ref


@pytest.mark.parametrize("name", CAPTURES)
def test_long_record_is_read_whole_and_the_scan_goes_on(name: str) -> None:
    data = CAPTURES[name]()
    events, stats, error = outcome(data)
    assert error is None
    assert [(e["frame"], e["shrink_bytes"]) for e in events] == [(6, 2000)]
    assert (stats["frames"], stats["segments"], stats["over_snaplen"]) == (6, 6, 1)
    long_len = len(flow().frames[3][1])
    assert stats["warnings"] == [
        f"<stream>: 1 record longer than the snap length ({SNAPLEN}), read whole "
        f"(the first: frame 4, {long_len} bytes)"
    ]
    frames = list(open_frames(io.BytesIO(data)))
    assert len(frames[3].data) == long_len == frames[3].orig_len


@pytest.mark.parametrize("name", CAPTURES)
def test_equal_to_tshark(tmp_path: Path, name: str) -> None:
    """tshark reads every frame, the long one whole: same count, same captured lengths."""
    require_tshark()
    path = tmp_path / f"long.{name.split('-')[0]}"
    path.write_bytes(CAPTURES[name]())
    rows = tshark_fields(path, ["frame.number", "frame.cap_len", "frame.len"])
    theirs = [(int(n), int(cap), int(wire)) for n, cap, wire in rows]
    ours = [(f.number, len(f.data), f.orig_len) for f in open_frames(path)]
    assert ours == theirs
    assert theirs[3][1] > SNAPLEN
    stats = ScanStats()
    list(scan(path, stats=stats))
    assert (stats.frames, stats.over_snaplen) == (len(theirs), 1)


def test_several_long_records_one_warning_naming_the_first() -> None:
    p = flow()
    p.c(2001, 5001, 502, plen=DATA, flags=0x18)  # frame 7: long again
    p.v(5001, 3001, 1000)
    events, stats, error = outcome(as_pcap(p, snaplen=96))
    assert error is None and [e["frame"] for e in events] == [6] and stats["frames"] == 8
    assert stats["over_snaplen"] == 2  # the two data segments; the rest fit in 96 bytes
    assert len(stats["warnings"]) == 1
    assert stats["warnings"][0].startswith("<stream>: 2 records longer than the snap length (96)")
    assert "(the first: frame 4, " in stats["warnings"][0]


def test_past_256k_is_still_damage_after_a_long_record() -> None:
    """The counted long record stays counted, and its warning stays, when damage follows."""
    data = as_pcap(flow()) + struct.pack("<IIII", 1, 0, 262145, 262145) + b"x" * 64
    events, stats, error = outcome(data)
    assert [e["frame"] for e in events] == [6]
    assert stats["over_snaplen"] == 1 and len(stats["warnings"]) == 1
    assert error == (
        "<stream>: bad record header: 262145-byte record, more than the 256 KiB limit (262144) "
        f"(at byte {len(as_pcap(flow()))})"
    )


@pytest.mark.skipif(not FAST, reason="the compiled scanner is not built (no C compiler)")
@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("chunk", [64, 333, 4096])
def test_compiled_counts_across_read_boundaries(name: str, chunk: int) -> None:
    """The long record split over reads of any size: one record, counted once."""
    stats = ScanStats()
    engine = CompiledEngine(stats, 1000, 600 * 10**9, chunk=chunk)
    with open_capture(io.BytesIO(CAPTURES[name]()), "cap") as capture:
        events = [e.frame for e in drive(engine, capture)]
    assert events == [6] and stats.over_snaplen == 1 and len(stats.warnings) == 1


def test_counts_of_several_captures_add_up() -> None:
    total = ScanStats()
    for name in CAPTURES:
        _, stats, _ = outcome(CAPTURES[name]())
        part = ScanStats(over_snaplen=stats["over_snaplen"], warnings=stats["warnings"])
        total.merge(part)
    assert total.over_snaplen == 3 and len(total.warnings) == 3
