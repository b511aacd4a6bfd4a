"""What must hold for any input whatsoever: the fuzzing targets.

Each target takes bytes and fails (raises ``AssertionError`` or lets an unexpected exception
escape) only on a real bug: a crash, an error that is not the documented one-line kind, two
engines that disagree, output that would drive a terminal, or fields outside their ranges.
The bounded pass (``test_fuzz.py``), the long pass (``run.py``) and the regression files all
go through these same functions.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import struct

from treason import scan
from treason.decode import (
    LINKTYPES,
    MAX_TAGS,
    MAX_TUNNELS,
    SKIP_REASONS,
    TUNNEL_NAMES,
    decode,
)
from treason.errors import CaptureError, TreasonError
from treason.kernel import kernel_lines
from treason.logs import scan_records
from treason.logs.formats import read_stream
from treason.logs.grammar import parse_marker, parse_shrink
from treason.logs.summary import render
from treason.packets import Frame, Segment
from treason.readers import open_frames
from treason.readers.stream import MAX_RECORD
from treason.scanner import ScanStats, fast_available

ENGINES = ("reference", "fast") if fast_available() else ("reference",)
U32 = (1 << 32) - 1
#: What a terminal would obey: C0 controls except tab and newline, DEL, C1 controls.
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _one_line(exc: Exception) -> None:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)


# --------------------------------------------------------------------------------------------
# Captures: readers, decoder and model, through both engines


def _outcome(data: bytes, engine: str) -> tuple:
    stats = ScanStats()
    events = []
    error = None
    try:
        for e in scan(io.BytesIO(data), engine=engine, retractions=True, stats=stats):
            events.append(dataclasses.asdict(e))
    except CaptureError as exc:
        _one_line(exc)
        error = (type(exc).__name__, str(exc), exc.offset)
    for warning in stats.warnings:
        assert "\n" not in warning
    return events, stats.to_dict(), error


def capture(data: bytes) -> None:
    """Readers yield sane frames then at most a ``CaptureError``; engines agree exactly."""
    frames = 0
    try:
        for frame in open_frames(io.BytesIO(data), name="fuzz"):
            frames += 1
            assert frame.number == frames
            assert len(frame.data) <= MAX_RECORD
            _check_decoded(frame)
    except CaptureError as exc:
        _one_line(exc)
        if exc.offset is not None and not data.startswith(b"\x1f\x8b"):  # gzip: inflated bytes
            assert 0 <= exc.offset <= len(data), exc.offset
    results = {engine: _outcome(data, engine) for engine in ENGINES}
    reference = results["reference"]
    assert reference[1]["frames"] == frames
    for engine, result in results.items():
        assert result == reference, f"{engine} differs from the reference engine"


def _check_decoded(frame: Frame) -> None:
    result = decode(frame)
    if isinstance(result, str):
        assert result in SKIP_REASONS, result
        return
    assert isinstance(result, Segment)
    assert 0 <= result.sport <= 0xFFFF and 0 <= result.dport <= 0xFFFF
    assert 0 <= result.seq <= U32 and 0 <= result.ack <= U32 and 0 <= result.win <= 0xFFFF
    assert result.payload_len >= 0
    assert result.ws is None or 0 <= result.ws <= 0xFF
    assert all(0 <= v <= 0xFFF for v in result.vlan)
    assert len(result.path) <= MAX_TAGS + MAX_TUNNELS and len(result.outer) <= MAX_TUNNELS
    assert not result.path or len(result.path) > len(result.vlan)
    assert all(entry >> 32 in TUNNEL_NAMES or entry <= 0xFFF for entry in result.path)


def packet(linktype: int, data: bytes) -> None:
    """One frame of any link type: the decoder never raises, never invents fields, and both
    engines count it the same way (a one-record capture)."""
    _check_decoded(Frame(1, 0, linktype, data, len(data)))
    _check_decoded(Frame(1, 0, linktype, data, len(data) + 1500))  # snapped
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
    capture(head + struct.pack("<IIII", 0, 0, len(data), len(data)) + data)


# --------------------------------------------------------------------------------------------
# Logs: containers, grammar, summary and every output format


def logs(data: bytes) -> None:
    """Any bytes as a log: one-line errors only, fields in range, outputs safe to print."""
    try:
        records = list(read_stream("fuzz", io.BufferedReader(io.BytesIO(data))))  # type: ignore[arg-type]
    except TreasonError as exc:
        _one_line(exc)
        return
    found = scan_records(records)
    for line in found.lines:
        s = line.shrink
        assert 0 <= s.peer_port <= 0xFFFF and 0 <= s.local_port <= 0xFFFF
        assert 0 <= s.x <= U32 and 0 <= s.y <= U32 and line.repeats >= 0
    for fmt in ("text", "csv"):
        out = render(found, fmt)
        assert not RAW_CONTROL.search(out), (fmt, RAW_CONTROL.search(out))
    for row in render(found, "json").splitlines():
        assert isinstance(json.loads(row), dict)
        assert not RAW_CONTROL.search(row)


def grammar(text: str) -> None:
    """A matched message reads back the same from the kernel's own rendering of its fields."""
    marker = parse_marker(text)
    assert marker is None or marker.count >= 0
    found = parse_shrink(text)
    if found is None:
        return
    assert 0 <= found.peer_port <= 0xFFFF and 0 <= found.local_port <= 0xFFFF
    assert 0 <= found.x <= U32 and 0 <= found.y <= U32
    again = parse_shrink(
        kernel_lines(
            found.peer, found.peer_port, found.local_port, found.x, found.y,
            found.wnd or 0, found.recv_ms, found.lasting_ms,
        )[found.wording]
    )  # fmt: skip
    assert again is not None
    assert (again.wording, again.peer, again.peer_port, again.local_port, again.x, again.y) == (
        found.wording, found.peer, found.peer_port, found.local_port, found.x, found.y,
    )  # fmt: skip


#: Link types a ``packet`` input's first byte picks from: every decoded one and one unknown.
LINK_CHOICES = (*sorted(LINKTYPES), 147)


def _packet_bytes(data: bytes) -> None:
    """A ``packet`` input as one byte choosing the link type, then the frame."""
    packet(LINK_CHOICES[data[0] % len(LINK_CHOICES)] if data else 1, data[1:])


#: Target name → function of bytes; regression files are named ``<target>-<anything>``.
TARGETS = {
    "capture": capture,
    "packet": lambda data: packet(
        LINK_CHOICES[data[0] % len(LINK_CHOICES)] if data else 1, data[1:]
    ),
    "logs": logs,
    "grammar": lambda data: grammar(data.decode("utf-8", "backslashreplace")),
}
