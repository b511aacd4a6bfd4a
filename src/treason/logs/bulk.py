"""Reading big logs at grep speed: find candidate lines in large byte buffers, parse only those.

A kernel log of millions of lines holds a report every thousand lines or so; parsing every
line in Python costs a hundred times what ``grep`` does. Every line that can matter holds one
of a few byte strings (``KEYS``): the words of every wording, of the repeat and rate-limit
markers, of logwatch's rulers, and of the journal's JSON fields. ``treason._logscan`` finds
them in 8 MiB buffers in one vectorised pass (counting newlines as it goes), or, without the
compiled module, ``bytes.find`` one key at a time; only those lines (and, for a repeat
marker, the line it repeats) go through the same line parser and grammar as
``read_stream``, so the result is the same, line for line (``tests/test_logs_shapes.py``).

The journal's export format is binary-framed and goes through ``read_export`` unchanged.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any, BinaryIO

from treason.errors import TreasonError
from treason.logs import LogScan, scan_records
from treason.logs.formats import (
    EXPORT_START,
    MAX_LINE,
    LineParser,
    Record,
    as_utf8,
    entries_first,
    json_or_line,
    log_text,
    read_export,
    read_stream,
    rotation_order,
)
from treason.logs.grammar import parse_marker
from treason.logs.unwrap import MAX_WRAP, broken, unwrap

_logscan: Any
try:
    from treason import _logscan  # type: ignore[no-redef]
except ImportError:  # not built: the same search in Python, one pass per key
    _logscan = None

#: Bytes read at a time: large enough that ``find`` runs at memory speed, small enough to
#: bound memory whatever the file.
CHUNK = 8 << 20
#: The first bytes of a line that are parsed (as ``read_stream`` does); the rest is dropped.
LINE_LIMIT = MAX_LINE * 4

#: A line can matter only if it holds one of these (long keys keep the search fast: it may
#: skip as far as the shortest key is long).
KEYS = (
    # The words of every wording, one in each piece of a report broken over lines (see
    # ``grammar._PIECES``): 2.4.0 - 2.6.28, 2.6.29 - 6.5 and MPTCP, 6.6+.
    b"uncloaked",
    b"shrinks",
    b"shrunk",
    b"epaired",
    b"what else",
    b"Probing zero",
    b"zero-window",
    b", seq=",
    b"ms ago, lasting",
    b"message repeated",  # last message repeated N times, message repeated N times: [ ... ]
    b"suppressed",  # net_ratelimit / NET / printk rate-limit markers
    b'"MESSAGE"',  # journal JSON (a MESSAGE given as a byte array has no words to find)
    b" Begin -",  # logwatch's section rulers, drawn in hyphens or in other dashes (U+2010..)
    b" Begin \xe2",
    b" End -",
    b" End \xe2",
    b"<h2>",  # a service's heading in logwatch's HTML report
)


def read_logs(paths: Iterable[str]) -> LogScan:
    """Read files (rotated sets oldest first; ``-`` is stdin) and find every report."""
    scan = LogScan()
    for path in rotation_order(paths):
        scan.sources.append(path)
        scan_file(path, scan)
    return scan


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
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)  # type: ignore[type-var]
    try:
        reader: io.BufferedReader[Any] = buffered
        gz = buffered.peek(2)[:2] == b"\x1f\x8b"
        if gz:
            reader = io.BufferedReader(gzip.GzipFile(fileobj=buffered))
        reader = as_utf8(reader)
        head = reader.peek(512)
        if EXPORT_START.match(head):
            scan_records(read_export(source, reader), scan)
            return scan
        if entries_first(head):  # journal entries printed over lines: read line by line
            scan_records(read_stream(source, reader, reference), scan)
            return scan
        parser = LineParser(source, reference)
        scan_records(_candidates(parser, reader, GZIP_PIECE if gz else 0), scan)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TreasonError(source, f"cannot read: {exc}") from None
    return scan


#: Inflated bytes asked of gzip at a time: damage in the compressed data loses at most this
#: much of what came before it (a whole buffer would be lost with one large read).
GZIP_PIECE = 8192


class _Damaged(Exception):
    """A read failed after ``data`` was read: report what is there, then the error."""

    def __init__(self, data: bytes, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.data, self.cause = data, cause


def _read(reader: BinaryIO, piece: int) -> bytes:
    """Up to CHUNK bytes; for gzip (``piece`` > 0) gathered a piece at a time."""
    if not piece:
        return reader.read(CHUNK)
    pieces: list[bytes] = []
    size = 0
    while size < CHUNK:
        try:
            got = reader.read1(piece)  # type: ignore[attr-defined]
        except (OSError, EOFError, zlib.error) as exc:
            raise _Damaged(b"".join(pieces), exc) from None
        if not got:
            break
        pieces.append(got)
        size += len(got)
    return b"".join(pieces)


def _candidates(parser: LineParser, reader: BinaryIO, piece: int) -> Iterator[Record]:
    """The records of the lines that can matter, in file order, with their line numbers."""
    state = _State(parser)
    # What is read with the next buffer: the last MAX_WRAP complete lines (a report broken
    # over lines needs the lines after it) and the incomplete last line (LINE_LIMIT of it).
    held = b""
    dropping = False  # inside a line longer than LINE_LIMIT: its rest is skipped
    damage: BaseException | None = None
    while damage is None:
        try:
            data = _read(reader, piece)
        except _Damaged as exc:  # the complete lines before the damage are still read
            data, damage = exc.data, exc.cause
            data = data[: data.rfind(b"\n") + 1]
        if not data:
            break
        if dropping:
            end = data.find(b"\n")
            if end < 0:
                continue
            data, dropping = data[end:], False
        first = data.find(b"\n") + 1
        cut = data.rfind(b"\n") + 1
        back = _start_of_last_lines(data, cut, MAX_WRAP)
        if back >= first > 0:  # as usual: more lines than are kept back
            head = held + data[:first]  # read alone, not copying the buffer
            state.region(head, 0, len(head), data[first : _end_of_lines(data, first, MAX_WRAP)])
            state.region(data, first, back, data[back:cut])
        else:  # a few long lines: read with what is held
            data = held + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line ends here: the line goes on
                held, dropping = data[:LINE_LIMIT], len(data) > LINE_LIMIT
                continue
            back = _start_of_last_lines(data, cut, MAX_WRAP)
            state.region(data, 0, back, data[back:cut])
        yield from state.ready()
        rest = data[cut:]
        held, dropping = data[back:cut] + rest[:LINE_LIMIT], len(rest) > LINE_LIMIT
    if held:
        state.region(held, 0, len(held), b"")
    yield from state.ready()
    if damage is not None:
        raise damage


def _end_of_lines(data: bytes, pos: int, n: int) -> int:
    """Where the ``n`` lines of ``data`` from ``pos`` on end (its end if it has fewer)."""
    for _ in range(n):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data)
        pos = nl + 1
    return pos


def _start_of_last_lines(data: bytes, cut: int, n: int) -> int:
    """Where the last ``n`` complete lines of ``data[:cut]`` begin (0 if it has fewer)."""
    pos = cut - 1
    for _ in range(n):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return 0
    return pos + 1


class _State:
    """What reading the regions of a file carries from one region to the next: the line
    count, the text before (for look-backs), and the last line a joined report took."""

    def __init__(self, parser: LineParser) -> None:
        self.parser = parser
        self.lineno = 0  # lines before the region being read
        self.tail = b""  # the last whole lines read before, where look-backs may reach
        self.consumed = 0
        #: Recent joined reports: (first line, the line it was given out at, last line, host).
        self.spans: deque[tuple[int, int, int, str | None]] = deque(maxlen=LOOK_BACK_LINES)
        self.out: list[Record] = []

    def region(self, buf: bytes, lo: int, hi: int, follow: bytes) -> None:
        """Read the candidate lines of ``buf[lo:hi]`` (whole lines, the last one perhaps
        without its end); ``follow`` is the text after ``hi``, for reports broken over lines."""
        found, newlines = find_candidates(buf, lo, hi)
        self.out.extend(self._records_of(buf, lo, hi, found, follow))
        self.lineno += newlines
        tail = self.tail + buf[max(lo, hi - LOOK_BACK_BYTES) : hi]
        if len(tail) > LOOK_BACK_BYTES:  # whole lines only: drop the one the cut falls in
            tail = tail[tail.find(b"\n", len(tail) - LOOK_BACK_BYTES) + 1 :]
        self.tail = tail

    def ready(self) -> list[Record]:
        out, self.out = self.out, []
        return out

    def _records_of(
        self, buf: bytes, lo: int, hi: int, found: list[tuple[int, int]], follow: bytes
    ) -> Iterator[Record]:
        parser, tail = self.parser, self.tail
        extra: list[tuple[int, int]] = []
        for start, before in found:
            end = buf.find(b"\n", start, hi)
            end = hi if end < 0 else end
            if buf.find(b"message repeated", start, end) < 0:
                continue
            marker_lineno = self.lineno + before + 1
            back = _repeated_line(parser, buf, lo, start, end, tail, self._joined(marker_lineno))
            if isinstance(back, int):
                extra.append((back, before - buf.count(b"\n", back, start)))
            elif back is not None:
                yield back
        if extra:
            found = sorted(set(found) | set(extra))
        for start, before in found:
            lineno = self.lineno + before + 1
            if lineno <= self.consumed:  # a piece of a report joined already
                continue
            end = buf.find(b"\n", start, hi) + 1 or hi  # the last line may have no end
            line = buf[start : min(end, start + LINE_LIMIT)]
            record = json_or_line(parser, log_text(line), lineno)
            if record is None:
                continue
            if broken(record):
                earlier = min(MAX_WRAP, lineno - 1 - self.consumed)
                lines_back = islice(_lines_back(buf, lo, start, tail), earlier)
                behind = [log_text(text[:LINE_LIMIT]) for text, _, _ in lines_back][::-1]
                after = _lines_after(buf, end, hi, follow, MAX_WRAP)
                joined = unwrap(parser, record, behind, after)
                if joined is not None:
                    record, took = joined
                    self.consumed = lineno + took
                    self.spans.append((record.lineno, lineno, self.consumed, record.host))
            yield record

    def _joined(self, marker_lineno: int) -> Callable[[int], tuple[int, str | None] | None]:
        """For the lines before a marker: how a line ``k`` lines back was read when it is a
        piece of a report joined in a region before, as (its position, the report's host):
        0 for a piece read on its own before the report, 1 for the line the report was
        given out at, 2 for a piece after it (never given out); None when not a piece."""

        def place(k: int) -> tuple[int, str | None] | None:
            ln = marker_lineno - k
            for first, at, last, host in self.spans:
                if first <= ln <= last:
                    return (0 if ln < at else 1 if ln == at else 2), host
            return None

        return place


def _lines_after(buf: bytes, pos: int, hi: int, follow: bytes, n: int) -> list[str]:
    """The first ``n`` lines from ``buf[pos:hi]`` on, then from ``follow`` (each cut to
    LINE_LIMIT)."""
    out: list[str] = []
    for text, at, end in ((buf, pos, hi), (follow, 0, len(follow))):
        while len(out) < n and at < end:
            stop = text.find(b"\n", at, end) + 1 or end
            out.append(log_text(text[at : min(stop, at + LINE_LIMIT)]))
            at = stop
    return out


#: How far a repeat marker looks back for the line it repeats (lines, and bytes before the
#: current region). syslogd writes the marker right after that line; a central log may put
#: other hosts' lines between.
LOOK_BACK_LINES = 64
LOOK_BACK_BYTES = 256 << 10


def find_candidates(buf: bytes, lo: int, hi: int) -> tuple[list[tuple[int, int]], int]:
    """Lines of ``buf[lo:hi]`` holding a key, as (line start, newlines between ``lo`` and
    it), and the newlines of the whole range: the compiled search, or the same in Python."""
    if _logscan is not None:
        return _logscan.candidates(buf, lo, hi, KEYS)  # type: ignore[no-any-return]
    return find_candidates_python(buf, lo, hi)


def find_candidates_python(
    buf: bytes, lo: int, hi: int, keys: tuple[bytes, ...] = KEYS
) -> tuple[list[tuple[int, int]], int]:
    """``find_candidates`` with ``bytes.find``: one pass per key."""
    starts: set[int] = set()
    for key in keys:
        pos = buf.find(key, lo, hi)
        while pos >= 0:
            starts.add(buf.rfind(b"\n", lo, pos) + 1 or lo)
            end = buf.find(b"\n", pos, hi)
            pos = buf.find(key, end + 1, hi) if end >= 0 else -1
    found, counted, newlines = [], lo, 0
    for start in sorted(starts):
        newlines += buf.count(b"\n", counted, start)
        counted = start
        found.append((start, newlines))
    return found, newlines + buf.count(b"\n", counted, hi)


def _repeated_line(
    parser: LineParser,
    buf: bytes,
    lo: int,
    start: int,
    end: int,
    tail: bytes,
    joined: Callable[[int], tuple[int, str | None] | None],
) -> int | Record | None:
    """The line a repeat marker (at ``buf[start:end]``) repeats, as ``scan_records`` decides
    it: the host's last record that is not itself a marker. Its start in ``buf``, or its
    record when it lies in ``tail`` and was not read as a candidate (it only says the marker
    repeats no report), or None. ``joined`` says which lines of ``tail`` were pieces of a
    report joined over lines (``_State._joined``)."""
    scratch = LineParser(parser.source, parser.reference)
    marker = scratch.parse(log_text(buf[start:end]), 0)
    if marker is None or not _is_marker(marker):
        return None
    lines = 0
    for text, offset, in_tail in _lines_back(buf, lo, start, tail):
        lines += 1
        if lines > LOOK_BACK_LINES:
            return None
        piece = joined(lines) if in_tail else None
        if piece is not None and piece[0]:  # the joined report stands there, or nothing
            if piece[0] == 1 and piece[1] == marker.host:
                return None  # it repeats the report, which was given out already
            continue
        record = json_or_line(scratch, log_text(text[:LINE_LIMIT]), 0)
        if record is None or record.host != marker.host or _is_marker(record):
            continue
        if not in_tail:
            return offset
        return None if any(key in text for key in KEYS) else record
    return None


def _is_marker(record: Record) -> bool:
    """A repeat or rate-limit marker: ``scan_records`` keeps the host's last line across it."""
    if record.repeats and not record.kernel and record.program is None:
        return True
    return record.kernel and parse_marker(record.message) is not None


def _lines_back(buf: bytes, lo: int, start: int, tail: bytes) -> Iterator[tuple[bytes, int, bool]]:
    """Lines before ``buf[start]`` back to ``lo``, then those of ``tail``, nearest first:
    (text, start in buf or tail, from the tail)."""
    end = start
    while end > lo:
        begin = buf.rfind(b"\n", lo, end - 1) + 1 or lo
        yield buf[begin:end], begin, False
        end = begin
    end = len(tail)
    while end > 0:
        begin = tail.rfind(b"\n", 0, end - 1) + 1
        yield tail[begin:end], begin, True
        end = begin
