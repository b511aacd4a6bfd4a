"""A copy of a capture as pcapng with treason's findings as packet comments.

Most engineers open the capture in Wireshark anyway, where a shrinking ACK is merely a
"TCP window update". ``annotate`` puts each event on its frame as a packet comment
(``opt_comment``), which Wireshark shows in the packet list, the packet details and Expert
Info, and which ``tshark -Y frame.comment`` selects. Nothing else changes: every packet's
bytes, lengths, timestamps (at their own resolution) and interfaces are copied as they are.

- pcap input becomes one section with one interface (the file's link type, snap length and
  timestamp resolution, microseconds or nanoseconds); each record an enhanced packet block.
- pcapng input keeps its sections and blocks byte for byte; only the packet blocks of event
  frames are rewritten, with their own options and the comment added. A simple packet block
  has no options, so an event on one becomes an enhanced packet block on interface 0 (its
  timestamp stays unknown: zero).
- gzip input is written uncompressed; several inputs follow one another, one section (or
  more) each.

The capture is read once: ``Tee`` hands the scanner the bytes and keeps a copy of them in a
temporary file when the input is not a regular file (standard input, a FIFO), and the copy
is then made from the file.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, cast

from treason.errors import CaptureError, TreasonError
from treason.events import Event
from treason.output.present import endpoint
from treason.readers import display_name, open_capture
from treason.readers.pcap import MAGIC_MODIFIED, MAGIC_NSEC, MAGIC_USEC
from treason.readers.pcapng import BYTE_ORDER_MAGIC, EPB, IDB, PB, SHB, SPB
from treason.readers.stream import Readable
from treason.scanner import ScanStats, scan

OPT_COMMENT = 1
OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
#: Comments are short text; this many bytes is far more than any treason writes.
MAX_COMMENT = 4000


def comment(e: Event) -> str:
    """What the packet comment says about an event: class, bytes back and beyond, the line."""
    how = e.cls.label
    if e.closing:
        how += ", during close"
    if e.certainty != "definite":
        how += ", possible (window scale inferred)"
    text = (
        f"treason: {how}: {endpoint(e.src, e.sport)} took back {e.shrink_bytes} bytes of the "
        f"window it offered {endpoint(e.dst, e.dport)} (right edge {e.old_edge} -> "
        f"{e.new_edge}, window {e.win} << {e.scale}); {e.beyond_bytes} bytes already sent lie "
        "beyond the new edge"
    )
    if e.kernel_line:
        text += f"; Linux on {e.dst} logs: {e.kernel_line}"
    return text


def display_filters(events: Iterable[Event]) -> tuple[str, str]:
    """Wireshark display filters: the event frames (by their comment), and the event frames
    with every packet of their flows."""
    flows: dict[tuple[str, int, str, int], None] = {}
    for e in events:
        flows.setdefault((e.src, e.sport, e.dst, e.dport), None)
    marked = 'frame.comment contains "treason:"'
    parts = [marked]
    for src, sport, dst, dport in flows:
        ip = "ipv6" if ":" in src else "ip"
        parts.append(
            f"({ip}.addr == {src} && tcp.port == {sport} && {ip}.addr == {dst} && "
            f"tcp.port == {dport})"
        )
    return marked, " || ".join(parts)


class Tee:
    """A read-once stream that keeps what it hands out in ``spool`` (a binary file)."""

    def __init__(self, stream: BinaryIO, spool: BinaryIO, name: str) -> None:
        self._stream = stream
        self._spool = spool
        self.name = name

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._spool.write(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        with memoryview(buf) as view:
            n = self._stream.readinto(view) or 0  # type: ignore[attr-defined]
            self._spool.write(view[:n])
        return n


def annotate(
    sources: Sequence[str],
    out: BinaryIO,
    *,
    spool_dir: str = ".",
    stats: ScanStats | None = None,
    **scan_options: Any,
) -> list[Event]:
    """Scan each capture and copy it to ``out`` (pcapng) with a comment on every event frame.

    ``scan_options`` are ``treason.scan``'s (``retractions``, ``engine``, ``max_flows``,
    ``idle_timeout``); the events commented are those it yields, returned in order. Inputs
    that are not regular files are kept in a temporary file in ``spool_dir`` as they are
    read. Damage in a capture raises ``CaptureError`` (the copy would not be the capture).
    """
    stats = stats if stats is not None else ScanStats()
    found: list[Event] = []
    for source in sources:
        name = display_name(source)
        with contextlib.ExitStack() as stack:
            if is_regular(source):
                events = list(scan(source, stats=stats, **scan_options))
                stream: BinaryIO = stack.enter_context(open(source, "rb"))
            else:
                raw = sys.stdin.buffer if source == "-" else stack.enter_context(open(source, "rb"))
                stream = stack.enter_context(spool_file(spool_dir))
                tee = cast(BinaryIO, Tee(raw, stream, name))  # read, readinto and name suffice
                events = list(scan(tee, stats=stats, **scan_options))
                stream.seek(0)
            copy(stream, name, {e.frame: comment(e) for e in events}, out)
        found += events
    return found


def is_regular(path: str) -> bool:
    try:
        return path != "-" and os.path.isfile(path)
    except OSError:
        return False


def spool_file(directory: str) -> BinaryIO:
    """An unnamed temporary file for a copy of a non-regular input."""
    try:
        return tempfile.TemporaryFile(dir=directory)
    except OSError as exc:
        raise TreasonError(directory, f"cannot make a temporary file: {exc.strerror}") from None


def copy(stream: BinaryIO, name: str, notes: Mapping[int, str], out: BinaryIO) -> int:
    """Copy one capture (pcap or pcapng, maybe gzipped) to ``out`` as pcapng sections, with
    ``notes[frame]`` as the comment of each noted frame. Returns the frames copied.

    The scan before has validated the capture; a record cut short by the end of the file
    ends the copy (the scan warned about it). ``readers.open_capture`` gunzips and recognises
    it, as it did for the scan.
    """
    with open_capture(stream, name) as capture:
        reader = _Reader(capture.stream(), name)
        if capture.format == "pcapng":
            return _copy_pcapng(reader, notes, out)
        return _copy_pcap(reader, notes, out)


class _Reader:
    def __init__(self, stream: Readable, name: str) -> None:
        self._stream = stream
        self.name = name
        self.offset = 0

    def read(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None at the end (also inside a record: cut short)."""
        data = _exact(self._stream, n)
        self.offset += len(data)
        return data if len(data) == n else None


def _exact(stream: Readable, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes, order: str) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * _pad(len(value))


def _block(btype: int, body: bytes, order: str) -> bytes:
    total = 12 + len(body)
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def _comment_option(text: str, order: str) -> bytes:
    raw = text.encode("utf-8")[:MAX_COMMENT]
    return _option(OPT_COMMENT, raw.decode("utf-8", "ignore").encode("utf-8"), order)


def _copy_pcap(r: _Reader, notes: Mapping[int, str], out: BinaryIO) -> int:
    header = r.read(24)
    if header is None:
        raise CaptureError(r.name, "pcap file header cut short", r.offset)
    for order in "<>":
        (magic,) = struct.unpack_from(order + "I", header)
        if magic in (MAGIC_USEC, MAGIC_NSEC, MAGIC_MODIFIED):
            break
    else:
        raise CaptureError(r.name, "not a pcap or pcapng file", 0)
    rec_len = 24 if magic == MAGIC_MODIFIED else 16
    resol = 9 if magic == MAGIC_NSEC else 6
    snaplen, network = struct.unpack_from(order + "II", header, 16)
    o = "<"
    out.write(_block(SHB, struct.pack(o + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1), o))
    idb = struct.pack(o + "HHI", network & 0xFFFF, 0, snaplen)
    idb += _option(OPT_IF_TSRESOL, bytes([resol]), o) + _option(OPT_ENDOFOPT, b"", o)
    out.write(_block(IDB, idb, o))
    unit = 10**resol
    frame = 1
    while True:
        rec = r.read(rec_len)
        if rec is None:
            return frame - 1
        sec, frac, caplen, origlen = struct.unpack_from(order + "IIII", rec)
        data = r.read(caplen)
        if data is None:
            return frame - 1
        ts = sec * unit + frac
        body = struct.pack(o + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, caplen, origlen)
        body += data + b"\0" * _pad(caplen)
        note = notes.get(frame)
        if note is not None:
            body += _comment_option(note, o) + _option(OPT_ENDOFOPT, b"", o)
        out.write(_block(EPB, body, o))
        frame += 1


def _copy_pcapng(r: _Reader, notes: Mapping[int, str], out: BinaryIO) -> int:
    order = "<"
    snaplens: list[int] = []
    frame = 1
    for btype, raw in _blocks(r):
        if btype == SHB:  # the same value in either byte order
            order = "<" if raw[8:12] == struct.pack("<I", BYTE_ORDER_MAGIC) else ">"
            snaplens = []
            out.write(raw)
            continue
        btype = struct.unpack_from(order + "I", raw)[0]
        if btype == IDB:
            snaplens.append(struct.unpack_from(order + "I", raw, 12)[0])
        if btype not in (EPB, PB, SPB):
            out.write(raw)
            continue
        note = notes.get(frame)
        out.write(raw if note is None else _annotated(btype, raw, order, note, snaplens))
        frame += 1
    return frame - 1


def _blocks(r: _Reader) -> Iterator[tuple[int, bytes]]:
    """Every whole block (type as read little-endian, raw bytes), in the section's order."""
    order = "<"
    while True:
        head = r.read(8)
        if head is None:
            return
        btype_le = struct.unpack_from("<I", head)[0]
        if btype_le == SHB:
            magic = r.read(4)
            if magic is None:
                return
            order = "<" if magic == struct.pack("<I", BYTE_ORDER_MAGIC) else ">"
            head += magic
        (length,) = struct.unpack_from(order + "I", head, 4)
        rest = r.read(length - len(head)) if length >= len(head) else None
        if rest is None:
            return
        yield btype_le, head + rest


def _annotated(btype: int, raw: bytes, order: str, note: str, snaplens: list[int]) -> bytes:
    """A packet block with ``note`` added to its options (an SPB becomes an EPB)."""
    body = raw[8:-4]
    if btype == SPB:
        (origlen,) = struct.unpack_from(order + "I", body)
        snaplen = snaplens[0] if snaplens and snaplens[0] else origlen  # 0: no limit
        caplen = min(origlen, len(body) - 4, snaplen)
        data = body[4 : 4 + caplen]
        fixed = struct.pack(order + "IIIII", 0, 0, 0, caplen, origlen)
        options = b""
    else:  # EPB, or PB (16-bit interface and drops): the captured length at the same place
        caplen = struct.unpack_from(order + "I", body, 12)[0]
        fixed = body[:20]
        data = body[20 : 20 + caplen]
        options = _without_end(body[20 + caplen + _pad(caplen) :], order)
    new = fixed + data + b"\0" * _pad(len(data)) + options
    new += _comment_option(note, order) + _option(OPT_ENDOFOPT, b"", order)
    return _block(EPB if btype == SPB else btype, new, order)


def _without_end(options: bytes, order: str) -> bytes:
    """The options before ``opt_endofopt`` (or all of them when it is missing)."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, pos)
        if code == OPT_ENDOFOPT:
            break
        pos += 4 + length + _pad(length)
    return options[: min(pos, len(options))]
