"""Reading big logs at grep speed: find candidate lines in large byte buffers, parse only those.

A kernel log of millions of lines holds a report every thousand lines or so; parsing every
line in Python costs a hundred times what ``grep`` does. Every line that can matter holds one
of a few byte strings (``KEYS``): the words of every wording, of the repeat and rate-limit
markers, of logwatch's listing and rulers, and of the journal's JSON fields. ``bytes.find``
locates them in megabyte buffers at memory speed; only those lines (and the line before a
repeat marker, which says whether the marker repeats a report) go through the same line
parser and grammar as ``read_stream``, so the result is the same, line for line.

The journal's export format is binary-framed and goes through ``read_export`` unchanged.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from treason.errors import TreasonError
from treason.logs import LogScan, scan_records
from treason.logs.formats import (
    EXPORT_START,
    MAX_LINE,
    LineParser,
    Record,
    json_or_line,
    log_text,
    read_export,
)

#: Bytes read at a time: large enough that ``find`` runs at memory speed, small enough to
#: bound memory whatever the file.
CHUNK = 8 << 20
#: The first bytes of a line that are parsed (as ``read_stream`` does); the rest is dropped.
LINE_LIMIT = MAX_LINE * 4

#: A line can matter only if it holds one of these (see the module docstring).
KEYS = (
    b"window",  # every wording: shrinks window, shrunk window, zero-window
    b"Treason",  # a wording cut before its window: almost a report
    b"repeated",  # last message repeated N times, message repeated N times: [ ... ]
    b"suppressed",  # net_ratelimit / NET / printk rate-limit markers
    b"Time(s)",  # logwatch's N Time(s): listing
    b"Begin",  # logwatch section rulers
    b"End",
    b"MESSAGE",  # journal JSON (a MESSAGE given as a byte array has no words to find)
)


def scan_file(path: str, scan: LogScan | None = None) -> LogScan:
    """Find every report in one file (``-`` is stdin); what was read before an error stays in
    ``scan`` and the error is raised as a one-line ``TreasonError``."""
    scan = scan if scan is not None else LogScan()
    if path == "-":
        return scan_stream("<stdin>", sys.stdin.buffer, scan)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise TreasonError(path, exc.strerror or str(exc)) from None
    with fh:
        try:
            reference = datetime.fromtimestamp(os.fstat(fh.fileno()).st_mtime)
        except (OSError, ValueError, OverflowError):  # an mtime beyond the year 9999
            reference = None
        return scan_stream(path, fh, scan, reference)


def scan_stream(
    source: str, stream: BinaryIO, scan: LogScan, reference: datetime | None = None
) -> LogScan:
    """``scan_file`` on an open byte stream (gzip undone first)."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)  # type: ignore[arg-type]
    try:
        reader: BinaryIO = buffered
        if buffered.peek(2)[:2] == b"\x1f\x8b":
            reader = gzip.GzipFile(fileobj=buffered)  # type: ignore[assignment]
            head = reader.peek(64)  # type: ignore[attr-defined]
        else:
            head = buffered.peek(64)
        if EXPORT_START.match(head):
            scan_records(read_export(source, reader), scan)
            return scan
        parser = LineParser(source, reference)
        scan_records(_candidates(parser, reader), scan)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TreasonError(source, f"cannot read: {exc}") from None
    return scan


def _candidates(parser: LineParser, reader: BinaryIO) -> Iterator[Record]:
    """The records of the lines that can matter, in file order, with their line numbers."""
    lineno = 0  # lines before the current buffer
    carry = b""  # an incomplete last line, at most LINE_LIMIT bytes of it
    dropping = False  # inside a line longer than LINE_LIMIT: its rest is skipped
    while True:
        data = reader.read(CHUNK)
        if not data:
            break
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # no line ends here: the line goes on
            if not dropping:
                carry = (carry + data)[:LINE_LIMIT]
                dropping = len(carry) == LINE_LIMIT
            continue
        buf = data[:cut] if not carry else carry + data[:cut]
        yield from _records_of(parser, buf, lineno)
        lineno += buf.count(b"\n")
        rest = data[cut:]
        carry, dropping = rest[:LINE_LIMIT], len(rest) > LINE_LIMIT
    if carry:
        yield from _records_of(parser, carry + b"\n", lineno)


def _records_of(parser: LineParser, buf: bytes, base: int) -> Iterator[Record]:
    """Records of the candidate lines of ``buf`` (whole lines; line ``base + 1`` first)."""
    starts: set[int] = set()
    for key in KEYS:
        pos = buf.find(key)
        while pos >= 0:
            start = buf.rfind(b"\n", 0, pos) + 1
            starts.add(start)
            if key == b"repeated" and start:  # the line a marker repeats decides what it adds
                starts.add(buf.rfind(b"\n", 0, start - 1) + 1)
            end = buf.find(b"\n", pos)
            pos = buf.find(key, end + 1) if end >= 0 else -1
    counted, lineno = 0, base
    for start in sorted(starts):
        lineno += buf.count(b"\n", counted, start)
        counted = start
        end = buf.find(b"\n", start) + 1
        line = buf[start : min(end, start + LINE_LIMIT)]
        record = json_or_line(parser, log_text(line), lineno + 1)
        if record is not None:
            yield record
