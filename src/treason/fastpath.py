"""The fast engine: the compiled scanner fed big chunks of the capture, events built in Python.

``treason._fastscan`` does the capture framing, decoding and endpoint model of the reference
engine (``treason.readers``, ``treason.decode``, ``treason.model``) in C, with no Python object
per packet. This module owns what is rare or per file: opening the source (path, ``"-"``,
stream, gzip), sniffing the format with the readers' own rules, reading into one reusable
buffer, turning the scanner's event tuples into ``Event`` records, raising the readers' errors
and filling ``ScanStats``. See ``docs/fastpath.md``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import TYPE_CHECKING

from treason.errors import CaptureError, TruncatedCapture
from treason.events import Event, Severity
from treason.model import ModelStats

if TYPE_CHECKING:
    from treason.capfilter import CaptureFilter
    from treason.packets import Frame
    from treason.scanner import ScanStats, Source
    from treason.series import SeriesCollector

try:
    from treason import _fastscan
except ImportError:  # not built: no compiler at install time
    _fastscan = None  # type: ignore[assignment]

#: Read size; records split across reads are carried over, so any size gives the same result.
CHUNK = 1 << 20

#: The scanner's skip-reason counters, in its order.
SKIP_ORDER = (
    "not-ip",
    "not-tcp",
    "fragment",
    "unknown-linktype",
    "malformed",
    "truncated-header",
)

#: The scanner's model counters, in its order; the names are ``ModelStats`` fields.
MODEL_ORDER = (
    "duplicates",
    "old_acks",
    "stale_updates",
    "paws_rejects",
    "unseen_acks",
    "stray_acks",
    "ignored_syns",
    "resets",
    "window_overruns",
)

_PCAP, _PCAPNG = 1, 2
#: Enough bytes to recognise every supported format (as the readers sniff).
_SNIFF = 12


def available() -> bool:
    """Whether the compiled scanner was built and imports."""
    return _fastscan is not None


def scan(
    source: Source,
    name: str,
    stats: ScanStats,
    max_flows: int,
    idle_timeout_ns: int,
    chunk: int = CHUNK,
    series: SeriesCollector | None = None,
    capture_filter: CaptureFilter | None = None,
) -> Iterator[Event]:
    """Yield the events of one capture, exactly as the reference engine does.

    ``stats`` is filled in as chunks are analysed; the flow counters are added when the
    capture ends (also when it ends in an error), as the reference engine does.
    """
    if _fastscan is None:
        raise RuntimeError("treason's compiled scanner is not built")
    if max_flows < 1:
        raise ValueError("max_flows must be at least 1")
    from treason.readers import source as rs

    stream, display, to_close = rs.open_source(source, name)
    scanner = None
    try:
        head = rs.read_some(stream, _SNIFF, display)
        gz = None
        if head.startswith(rs.GZIP_MAGIC):
            gz = rs.GzipStream(rs.Prefixed(head, stream), display)
            head = rs.read_some(gz, _SNIFF, display)
            stream = gz
            if not head and gz.truncated:
                raise CaptureError(display, "truncated gzip stream", 0)
        fmt = _sniff(head, display)
        scanner = _new_scanner(fmt, max_flows, idle_timeout_ns)
        if series is not None:
            series.attach(scanner)
        if capture_filter is not None:
            capture_filter.attach(scanner)
        try:
            yield from _run(scanner, stream, head, display, stats, chunk)
        except CaptureError:
            yield from _flush(scanner)  # damage ends the capture: every event before it first
            raise
        yield from _flush(scanner)
        if gz is not None and gz.truncated:
            raise TruncatedCapture(display, "truncated gzip stream", scanner.offset)
    finally:
        if scanner is not None:
            _flow_counters(scanner, stats)
            if series is not None:
                series.take(scanner)
            if capture_filter is not None:
                from treason.capfilter import FILTERED

                stats.skipped[FILTERED] += scanner.filtered()
        if to_close is not None:
            to_close.close()  # type: ignore[attr-defined]


def _sniff(head: bytes, source: str) -> int:
    from treason.readers import _show
    from treason.readers.pcap import is_pcap
    from treason.readers.pcapng import is_pcapng, looks_like_headless_pcapng

    if not head:
        raise CaptureError(source, "empty file, not a pcap or pcapng capture", 0)
    if is_pcap(head):
        return _PCAP
    if is_pcapng(head):
        return _PCAPNG
    if looks_like_headless_pcapng(head):
        raise CaptureError(source, "missing pcapng section header block", 0)
    raise CaptureError(source, f"not a pcap or pcapng file (starts with {_show(head)})", 0)


def _run(
    scanner: _fastscan.Scanner,
    stream: object,
    head: bytes,
    source: str,
    stats: ScanStats,
    chunk: int,
) -> Iterator[Event]:
    """Read into one buffer, feed the scanner, carry the incomplete tail to the next read."""
    buf = bytearray(max(chunk, len(head)))
    buf[: len(head)] = head
    filled = len(head)
    readinto = getattr(stream, "readinto", None)
    read = stream.read  # type: ignore[attr-defined]
    eof = False
    damage: CaptureError | None = None
    counted = _Counted()
    while True:
        if not eof and filled < len(buf):
            try:
                if readinto is not None:
                    with memoryview(buf) as view, view[filled:] as free:
                        n = readinto(free) or 0
                else:
                    data = read(len(buf) - filled)
                    n = len(data)
                    buf[filled : filled + n] = data
            except CaptureError as exc:
                # Corrupt compressed data past the buffer: the reference reader meets it only
                # when it needs those bytes, so damage inside the buffer is reported first.
                damage, n = exc, 0
            except OSError as exc:
                raise CaptureError(source, exc.strerror or str(exc), scanner.offset) from None
            eof = n == 0 and damage is None
            filled += n
        with memoryview(buf) as view, view[:filled] as data:
            used, need = scanner.feed(data, eof)
        # Stats first, then events: a consumer that stops early still sees consistent counts.
        counted.add(scanner.counters(), stats, ("frames", "segments"))
        for raw in scanner.take_events():
            yield _event(raw)
        error = scanner.error
        if error is not None:
            truncated, message, offset = error
            raise (TruncatedCapture if truncated else CaptureError)(source, message, offset)
        if damage is not None:
            raise damage
        if eof and used == filled:
            return
        if used:
            rest = filled - used
            buf[:rest] = buf[used:filled]
            filled = rest
        if need > len(buf):
            buf.extend(bytes(need - len(buf)))
        elif eof:
            return  # the scanner reported the incomplete tail as an error above


def _flush(scanner: _fastscan.Scanner) -> Iterator[Event]:
    """The capture is over: zero-window events still open are final (``FlowTable.flush``)."""
    scanner.flush()
    for raw in scanner.take_events():
        yield _event(raw)


def _new_scanner(fmt: int, max_flows: int, idle_timeout_ns: int) -> _fastscan.Scanner:
    """The scanner takes the idle timeout as a 128-bit integer in two halves."""
    idle = max(-(1 << 100), min(idle_timeout_ns, 1 << 100))
    return _fastscan.Scanner(fmt, max_flows, idle & ((1 << 64) - 1), idle >> 64)


class _Counted:
    """What of the scanner's running totals has already been added to a ``ScanStats``."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.skipped = [0] * len(SKIP_ORDER)
        self.model = [0] * len(MODEL_ORDER)

    def add(self, counters: dict, stats: ScanStats, names: tuple[str, ...]) -> None:
        """Add to ``stats`` the growth since the last call of ``names`` and every skip reason
        and model counter."""
        for name in names:
            total = counters[name]
            grown = total - self.totals.get(name, 0)
            if grown:
                setattr(stats, name, getattr(stats, name) + grown)
                self.totals[name] = total
        for i, total in enumerate(counters["skipped"]):
            if total != self.skipped[i]:
                stats.skipped[SKIP_ORDER[i]] += total - self.skipped[i]
                self.skipped[i] = total
        for i, total in enumerate(counters["model"]):
            if total != self.model[i]:
                name = MODEL_ORDER[i]
                setattr(stats.model, name, getattr(stats.model, name) + total - self.model[i])
                self.model[i] = total


def _flow_counters(scanner: _fastscan.Scanner, stats: ScanStats) -> None:
    counters = scanner.counters()
    stats.flows += counters["flows"]
    stats.handshakes += counters["handshakes"]
    stats.evicted_idle += counters["evicted_idle"]
    stats.evicted_cap += counters["evicted_cap"]


def _addr(v6: int, raw: bytes) -> str:
    if v6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return ".".join(map(str, raw))


def _event(raw: tuple) -> Event:
    """An ``Event`` from the scanner's tuple."""
    (
        frame,
        ts_ns,
        v6,
        src_raw,
        sport,
        dst_raw,
        dport,
        vlan,
        cls_value,
        closing,
        definite,
        old_edge,
        new_edge,
        shrink_bytes,
        beyond_bytes,
        snd_una,
        snd_nxt,
        ack,
        win,
        shift,
        scale_known,
    ) = raw
    return Event(
        frame=frame,
        time=ts_ns / 1e9,
        src=_addr(v6, src_raw),
        sport=sport,
        dst=_addr(v6, dst_raw),
        dport=dport,
        vlan=vlan,
        cls=Severity(cls_value),
        closing=bool(closing),
        certainty="definite" if definite else "possible",
        old_edge=old_edge,
        new_edge=new_edge,
        shrink_bytes=shrink_bytes,
        beyond_bytes=beyond_bytes,
        snd_una=snd_una,
        snd_nxt=snd_nxt,
        ack=ack,
        win=win,
        scale=shift,
        scale_known=bool(scale_known),
    )


#: pcap header of the synthetic stream ``Incremental`` feeds: nanosecond records, native byte
#: order, snap length 0 (records up to the scanner's 256 KiB limit).
_STREAM_HEADER = struct.Struct("=IHHiIII")
#: One record header: seconds, nanoseconds, captured length, length on the wire.
RECORD = struct.Struct("=IIII")
_NS = 1_000_000_000


class Incremental:
    """The compiled scanner over frames that arrive one batch at a time (``treason live``).

    The scanner reads captures, so it is fed one: a pcap stream made on the fly, its header
    (nanosecond records, the interface's link type) once, then one record per frame. Frames
    are numbered by the scanner from 1 in the order fed, as the live capture numbers them.
    ``stats`` is kept as ``treason.scanner.Analyzer`` keeps it (frames, segments, skip
    reasons, model counters) plus the flow counters, after every call, so a status line or a
    metrics scrape between batches sees the same numbers the reference engine would give.

    With ``trace=True`` the scanner also says, per frame, which flow it belongs to and whether
    it made an event (``take_trace``): what ``--write`` needs to keep whole flows.
    """

    def __init__(
        self,
        linktype: int,
        stats: ScanStats,
        max_flows: int,
        idle_timeout_ns: int,
        *,
        trace: bool = False,
    ) -> None:
        if _fastscan is None:
            raise RuntimeError("treason's compiled scanner is not built")
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.linktype = linktype
        self.stats = stats
        self._scanner = _new_scanner(_PCAP, max_flows, idle_timeout_ns)
        header = _STREAM_HEADER.pack(0xA1B23C4D, 2, 4, 0, 0, 0, linktype & 0xFFFF)
        self._check(self._scanner.feed(header, False), len(header))
        if trace:
            self._scanner.trace(True)
        self._counted = _Counted()
        self.active = 0

    def feed(self, frames: Iterable[Frame]) -> list[Event]:
        """Analyse ``frames`` (in capture order); the events that became final, in frame order."""
        pack, lt, limit = RECORD.pack, self.linktype, MAX_RECORD
        parts: list[bytes] = []
        append = parts.append
        for frame in frames:
            if frame.linktype != lt:
                raise ValueError(f"frame {frame.number}: link type {frame.linktype}, not {lt}")
            sec, nsec = divmod(frame.ts_ns, _NS)
            data = frame.data[:limit]  # only a payload lies past 256 KiB
            append(pack(sec, nsec, len(data), frame.orig_len))
            append(data)
        return self.feed_records(b"".join(parts))

    def feed_records(self, records: bytes | bytearray | memoryview) -> list[Event]:
        """Analyse whole pcap records (``RECORD`` header, then the captured bytes) back to back.

        The live capture builds these straight from the socket, without a ``Frame`` per packet.
        """
        self._check(self._scanner.feed(records, False), len(records))
        return self._collect()

    def advance(self, now_ns: int) -> list[Event]:
        """The clock reaches ``now_ns`` without a packet (``FlowTable.advance``)."""
        self._scanner.advance(now_ns)
        return self._collect()

    def flush(self) -> list[Event]:
        """The capture is over: open zero-window events are final (``FlowTable.flush``)."""
        self._scanner.flush()
        return self._collect()

    def take_trace(self) -> list[tuple[bytes, int] | None]:
        """Per frame fed since the last call: None (not a TCP segment) or (flow key, bits).

        The key is one value per ``FlowTable.key`` (family, both endpoints, VLAN stack), so the
        same flow after an eviction or a reused 4-tuple has the same key, as in the model. The
        bits say the segment made an event (``TRACE_EVENT``), one that is not a retraction
        (``TRACE_SHOWN``), of a zero window (``TRACE_ZERO``): the ``event`` that
        ``FlowTable.process`` returns for it, as it is when made.
        """
        return self._scanner.take_trace()

    def _check(self, result: tuple[int, int], size: int) -> None:
        used, _need = result
        error = self._scanner.error
        if error is not None:
            raise ValueError(f"bad record at byte {error[2]}: {error[1]}")
        if used != size:
            raise ValueError(f"incomplete record: {size - used} bytes left over")

    def _collect(self) -> list[Event]:
        scanner = self._scanner
        counters = scanner.counters()
        self._counted.add(counters, self.stats, ("frames", "segments", *_FLOW_COUNTERS))
        self.active = counters["live"]
        return [_event(raw) for raw in scanner.take_events()]


TRACE_EVENT, TRACE_SHOWN, TRACE_ZERO = 1, 2, 4
_FLOW_COUNTERS = ("flows", "handshakes", "evicted_idle", "evicted_cap")
MAX_RECORD = _fastscan.MAX_RECORD if _fastscan is not None else 256 * 1024


def _check_model_order() -> None:
    """The scanner's counters must name every ``ModelStats`` field, or stats would drift."""
    names = {f.name for f in fields(ModelStats)}
    if names != set(MODEL_ORDER):
        raise ImportError(f"fast scanner counters {MODEL_ORDER} do not match ModelStats {names}")


_check_model_order()
