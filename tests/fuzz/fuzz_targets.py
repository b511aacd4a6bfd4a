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
import itertools
import json
import re
import struct
from datetime import datetime

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
from treason.logs import LogScan, scan_records
from treason.logs.bulk import scan_stream
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
        for port in (s.peer_port, s.local_port):  # None: redacted in the log, never invented
            assert port is None or 0 <= port <= 0xFFFF
        assert 0 <= s.x <= U32 and 0 <= s.y <= U32 and line.repeats >= 0 and line.count >= 0
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
    assert 0 <= found.x <= U32 and 0 <= found.y <= U32
    if found.peer is None or found.peer_port is None or found.local_port is None:
        assert found.peer is not None or found.peer_raw  # a redaction is kept as printed
        return
    assert 0 <= found.peer_port <= 0xFFFF and 0 <= found.local_port <= 0xFFFF
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


#: Values a log's date and number fields take in ``log_fields``: the edges of every range a
#: reader checks (months, days, hours, offsets, years 0 and 9999, 32 and 64 bits) and numbers
#: JSON allows that Python's dates and ints do not.
FIELD_VALUES = (
    "0", "00", "000", "0000", "1", "01", "9", "12", "13", "23", "24", "29", "31", "32", "59",
    "60", "61", "99", "999", "9999", "10000", "65535", "65536", "4294967295", "4294967296",
    "99999999999", "253402300799", "253402300800", "18446744073709551615",
    "99999999999999999999", "1e400", "-1e400", "Infinity", "-Infinity", "NaN", "-1", "1.5",
    "",
)  # fmt: skip


def log_fields(data: bytes) -> None:
    """Every dated container with its date and number fields taken from ``FIELD_VALUES``:
    no traceback, fields in range, and the big-log reader finds what line-by-line reading
    finds; yearless stamps dated at both ends of the calendar."""
    picks = [FIELD_VALUES[b % len(FIELD_VALUES)] for b in data] or ["0"]
    values = itertools.cycle(picks)

    def v() -> str:
        return next(values)

    msg = "Peer 192.0.2.1:1/2 unexpectedly shrunk window 3:4 (repaired)"
    lines = [
        f"{v()}-{v()}-{v()}T{v()}:{v()}:{v()}.{v()}+{v()}:{v()} www kernel: {msg}",
        f"<7>1 {v()}-{v()}-{v()}T{v()}:{v()}:{v()}Z www kernel - - - {msg}",
        f"[Mon Jan {v()} {v()}:{v()}:{v()} {v()}] {msg}",
        f"Jan {v()} {v()}:{v()}:{v()} www kernel: [{v()}.{v()}] {msg}",
        f"Dec {v()} {v()}:{v()}:{v()}.{v()} kernel: {msg}",
        f"{v()},{v()},{v()},-;{msg}",
        f"{v()}.{v()} www kernel: {msg}",
        f"[{v()}.{v()}] {msg}",
        f"Tue {v()}-{v()}-{v()} {v()}:{v()}:{v()} UTC www kernel: {msg}",
        f'{{"MESSAGE":[{v()},{v()}],"_TRANSPORT":"kernel","__REALTIME_TIMESTAMP":"{v()}",'
        f'"_SOURCE_MONOTONIC_TIMESTAMP":"{v()}"}}',
        f'{{"MESSAGE":"{msg}","_TRANSPORT":"kernel","__REALTIME_TIMESTAMP":{v()}}}',
        f"{v()} Time(s): {msg}",
        f"Jan  1 00:00:00 www last message repeated {v()} times",
        f"Jan  1 00:00:00 www kernel: net_ratelimit: {v()} callbacks suppressed",
        f"Peer 192.0.2.1:{v()}/{v()} unexpectedly shrunk window {v()}:{v()} (repaired)",
        f"Probing zero-window on 192.0.2.1:1/2, seq={v()}:{v()}, recv {v()}ms ago, lasting {v()}ms",
    ]
    text = ("\n".join(lines) + "\n").encode()
    logs(text)
    for reference in (datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), None):
        stream = io.BufferedReader(io.BytesIO(text))  # type: ignore[arg-type]
        whole = scan_records(read_stream("fuzz", stream, reference))
        fast = scan_stream("fuzz", io.BytesIO(text), LogScan(), reference)  # type: ignore[arg-type]
        assert [(ln.record.lineno, ln.shrink, ln.count, ln.repeats) for ln in fast.lines] == [
            (ln.record.lineno, ln.shrink, ln.count, ln.repeats) for ln in whole.lines
        ]
        for line in whole.lines:
            line.to_dict()
            assert line.seconds is None or line.seconds == line.seconds  # never NaN
        render(whole, "text", detail=10)


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
    "logfields": log_fields,
}
