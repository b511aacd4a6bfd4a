"""The compiled engine: the C scanner fed big chunks of the capture, events built in Python.

``treason._fastscan`` does the framing, decoding and endpoint model of the reference engine
(``treason.readers``, ``treason.decode``, ``treason.model``) in C, with no Python object per
packet. This module owns what is rare: reading the opened capture into one reusable buffer,
turning the scanner's event tuples into ``Event`` records, raising the readers' errors and
adding the scanner's running totals to ``ScanStats``, handing its plot series to a
``SeriesCollector`` and its capture filter's programs to the scanner. The scanner exports the
names of its event fields and counters, the skip reason of filtered frames and the layout of its
series points; they are checked here at import, in order, so the two sides cannot drift apart.
See ``docs/fastpath.md``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from treason.capfilter import FILTERED, CaptureFilter
from treason.decode import SKIP_REASONS, tunnel_names
from treason.engine.protocol import (
    MARK_EVENT,
    MARK_SHOWN,
    MARK_ZERO,
    FlowMark,
    Records,
    count_events,
)
from treason.engine.segrec import FORMAT as SEGREC_FORMAT
from treason.engine.segrec import halves
from treason.engine.stats import MODEL_COUNTERS, PLAIN_COUNTERS, ScanStats, Tally
from treason.errors import CaptureError, TruncatedCapture
from treason.events import Certainty, Event, Severity
from treason.packets import Frame
from treason.readers import Capture, LongRecords
from treason.series import AFTER, BEFORE, POINT, ConnKey, Point, SeriesCollector

try:
    from treason import _fastscan
except ImportError:  # not built: no compiler at install time
    _fastscan = None  # type: ignore[assignment]

#: Read size; records split across reads are carried over, so any size gives the same result.
CHUNK = 1 << 20

#: The scanner's event tuple, field by field (``_fastscan.EVENT_FIELDS`` must say the same).
EVENT_FIELDS = (
    "frame",
    "ts_ns",
    "v6",
    "src",
    "sport",
    "dst",
    "dport",
    "path",
    "cls",
    "closing",
    "definite",
    "old_edge",
    "new_edge",
    "shrink_bytes",
    "beyond_bytes",
    "snd_una",
    "snd_nxt",
    "ack",
    "win",
    "shift",
    "scale_known",
    "outer",
)

_FORMATS = {"pcap": 1, "pcapng": 2}

_T = TypeVar("_T")

#: pcap header of the stream ``feed`` and ``feed_records`` make: nanosecond records, native
#: byte order, snap length 0 (records up to the scanner's 256 KiB limit).
_STREAM_HEADER = struct.Struct("=IHHiIII")
#: One record header: seconds, nanoseconds, captured length, length on the wire.
RECORD = struct.Struct("=IIII")
_NS = 1_000_000_000
#: The first word of a tunnel entry in the scanner's key path (``PATH_TUNNEL`` in C).
_PATH_TUNNEL = 0x8000
MAX_RECORD = _fastscan.MAX_RECORD if _fastscan is not None else 256 * 1024


def available() -> bool:
    """Whether the compiled scanner was built and imports."""
    return _fastscan is not None


class CompiledEngine:
    """``Engine`` over the C scanner.

    A capture is fed to the scanner as it is in the file; frames that arrive one batch at a
    time (``feed``, ``feed_records``) are fed as a pcap stream made on the fly: its header
    (nanosecond records, the link type) once, then one record per frame, numbered by the
    scanner from 1 in the order fed.

    Options (``treason.engine.protocol``): ``series`` has the scanner collect plot series by
    the reference rule (``treason.series``), handed to the collector at ``flush``;
    ``capture_filter`` has it run the same BPF programs on every frame before decoding it.
    """

    prefers_records = True

    def __init__(
        self,
        stats: ScanStats,
        max_flows: int,
        idle_timeout_ns: int,
        *,
        series: SeriesCollector | None = None,
        capture_filter: CaptureFilter | None = None,
        chunk: int = CHUNK,
    ) -> None:
        if _fastscan is None:
            raise RuntimeError("treason's compiled scanner is not built")
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.stats = stats
        # The scanner takes the idle timeout as a 128-bit integer in two halves.
        idle = max(-(1 << 100), min(idle_timeout_ns, 1 << 100))
        self._scanner = _fastscan.Scanner(max_flows, idle & ((1 << 64) - 1), idle >> 64)
        self._series = series
        if series is not None:
            self._scanner.series(series.cap, BEFORE, AFTER)
        if capture_filter is not None:
            self._scanner.filter(capture_filter.programs)
        self._tally = Tally(stats, (*SKIP_REASONS, FILTERED))
        self._linktype: int | None = None  # of the stream feed() makes, once begun
        self._active = 0
        self._chunk = chunk
        self._buckets: int | None = None  # split mode, once split() was called

    def read(self, capture: Capture, base: int = 0) -> Iterator[Event]:
        scanner = self._scanner
        scanner.begin(_FORMATS[capture.format], base)
        self._linktype = None
        before = _int(scanner.counters()["over_snaplen"])
        try:
            yield from self._frames(capture, self._chunk, self._collect)
            capture.check_end(scanner.offset)
        finally:
            self._update()
            self._long_records(capture, before)

    def _long_records(self, capture: Capture, before: int) -> None:
        """The warning about records longer than the snap length in the capture just read."""
        counters = self._scanner.counters()
        first = _ints(counters["over_snaplen_first"])  # of this capture; frame 0: none
        count = _int(counters["over_snaplen"]) - before
        long_records = LongRecords(count, (first[0], first[1], first[2]) if first[0] else None)
        warning = long_records.warning(capture.name)
        if warning:
            self.stats.warnings.append(warning)

    def split(self, capture: Capture, buckets: int, base: int = 0) -> Iterator[list[bytes]]:
        scanner = self._scanner
        if self._buckets is None:
            scanner.split(buckets)
            self._buckets = buckets
        elif buckets != self._buckets:
            raise ValueError(f"this engine splits into {self._buckets} buckets, not {buckets}")
        scanner.begin(_FORMATS[capture.format], base)
        before = _int(scanner.counters()["over_snaplen"])
        try:
            yield from self._frames(capture, self._chunk, self._take_buckets)
            capture.check_end(scanner.offset)
        finally:
            self._update()
            self._long_records(capture, before)

    def span(self) -> tuple[int, int, int, int | None] | None:
        return self._scanner.span()

    def feed_segments(self, records: Records, base_clock: int) -> list[Event]:
        self._scanner.feed_segments(records, *halves(base_clock))
        return list(self._collect())

    def tick(self, clock: int) -> list[Event]:
        self._scanner.tick(*halves(clock))
        return list(self._collect())

    def _take_buckets(self) -> list[list[bytes]]:
        self._update()
        return [self._scanner.take_buckets()]

    def _frames(
        self, capture: Capture, chunk: int, collect: Callable[[], Iterable[_T]]
    ) -> Iterator[_T]:
        """Read into one buffer, feed the scanner, carry the incomplete tail to the next read;
        after each feed, yield what ``collect`` takes (events, or split mode's buckets)."""
        scanner, source, head = self._scanner, capture.name, capture.head
        buf = bytearray(max(chunk, len(head)))
        buf[: len(head)] = head
        filled = len(head)
        stream = capture.rest
        readinto = getattr(stream, "readinto", None)
        eof = False
        damage: CaptureError | None = None
        while True:
            if not eof and filled < len(buf):
                try:
                    if readinto is not None:
                        with memoryview(buf) as view, view[filled:] as free:
                            n = readinto(free) or 0
                    else:
                        got = stream.read(len(buf) - filled)
                        n = len(got)
                        buf[filled : filled + n] = got
                except CaptureError as exc:
                    # Corrupt compressed data past the buffer: the reference reader meets it
                    # only when it needs those bytes, so damage inside the buffer comes first.
                    damage, n = exc, 0
                except OSError as exc:
                    raise CaptureError(source, exc.strerror or str(exc), scanner.offset) from None
                eof = n == 0 and damage is None
                filled += n
            with memoryview(buf) as view, view[:filled] as data:
                used, need = scanner.feed(data, eof)
            # Stats first, then events: a consumer that stops early still sees consistent counts.
            yield from collect()
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

    def feed(self, frames: Sequence[Frame]) -> list[Event]:
        if not frames:
            return []
        lt = self._linktype if self._linktype is not None else frames[0].linktype
        pack, limit = RECORD.pack, MAX_RECORD
        parts: list[bytes] = []
        append = parts.append
        for frame in frames:
            if frame.linktype != lt:
                raise ValueError(f"frame {frame.number}: link type {frame.linktype}, not {lt}")
            sec, nsec = divmod(frame.ts_ns, _NS)
            data = frame.data[:limit]  # only a payload lies past 256 KiB
            append(pack(sec, nsec, len(data), frame.orig_len))
            append(data)
        return self.feed_records(b"".join(parts), lt)

    def feed_records(self, records: Records, linktype: int) -> list[Event]:
        scanner = self._scanner
        if self._linktype is None:
            scanner.begin(_FORMATS["pcap"])
            header = _STREAM_HEADER.pack(0xA1B23C4D, 2, 4, 0, 0, 0, linktype & 0xFFFF)
            self._check(scanner.feed(header, False), len(header))
            self._linktype = linktype
        elif linktype != self._linktype:
            raise ValueError(f"records of link type {linktype}, not {self._linktype}")
        self._check(scanner.feed(records, False), len(records))
        return list(self._collect())

    def advance(self, now_ns: int) -> list[Event]:
        self._scanner.advance(now_ns)
        return list(self._collect())

    def flush(self) -> list[Event]:
        self._scanner.flush()
        final = list(self._collect())
        if self._series is not None:
            for raw_key, raw_points in self._scanner.take_series():
                self._series.add(*_series(raw_key, raw_points))
        return final

    def mark_flows(self) -> None:
        self._scanner.mark_flows(True)

    def take_marks(self) -> list[FlowMark | None]:
        return list(self._scanner.take_marks())

    @property
    def active_flows(self) -> int:
        return self._active

    def _check(self, result: tuple[int, int], size: int) -> None:
        used, _need = result
        error = self._scanner.error
        if error is not None:
            raise ValueError(f"bad record at byte {error[2]}: {error[1]}")
        if used != size:
            raise ValueError(f"incomplete record: {size - used} bytes left over")

    def _collect(self) -> Sequence[Event]:
        """Counters first, then the events the scanner made final."""
        self._update()
        return count_events(self.stats, [_event(raw) for raw in self._scanner.take_events()])

    def _update(self) -> None:
        counters = self._scanner.counters()
        plain = {name: _int(counters[name]) for name in PLAIN_COUNTERS}
        skipped = [*_ints(counters["skipped"]), _int(counters["filtered"])]
        self._tally.update(plain, skipped, _ints(counters["model"]))
        self._active = _int(counters["live"])


def _int(value: int | list[int]) -> int:
    assert isinstance(value, int)
    return value


def _ints(value: int | list[int]) -> list[int]:
    assert isinstance(value, list)
    return value


def _addr(v6: int, raw: bytes) -> str:
    if v6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return ".".join(map(str, raw))


def _series(raw_key: bytes, raw_points: bytes) -> tuple[ConnKey, list[Point]]:
    """The scanner's (key bytes, packed points) as ``FlowTable.key`` and ``series.Point``s.

    The scanner orders a key's endpoints by address bytes, ``FlowTable.key`` by their text:
    where the two differ, ``from_first`` of every point flips.
    """
    v6 = raw_key[0]
    size = 16 if v6 else 4
    lo = (_addr(v6, raw_key[1 : 1 + size]), int.from_bytes(raw_key[17:19], "big"))
    hi = (_addr(v6, raw_key[19 : 19 + size]), int.from_bytes(raw_key[35:37], "big"))
    path = _path(raw_key[37:])
    points: list[Point] = list(POINT.iter_unpack(raw_points))
    if hi < lo:
        return (path, hi, lo), [(*p[:7], 1 - p[7]) for p in points]
    return (path, lo, hi), points


def _path(raw: bytes) -> tuple[int, ...]:
    """A key's tag path from the scanner's big-endian 16-bit words: a VLAN id is one word, a
    tunnel entry (``kind << 32 | id``) the word ``0x8000 | kind`` and the id's two halves."""
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    path = []
    i = 0
    while i < len(words):
        if words[i] & _PATH_TUNNEL:
            path.append((words[i] & ~_PATH_TUNNEL) << 32 | words[i + 1] << 16 | words[i + 2])
            i += 3
        else:
            path.append(words[i])
            i += 1
    return tuple(path)


def _event(raw: tuple[Any, ...]) -> Event:
    """An ``Event`` from the scanner's tuple (its fields are ``EVENT_FIELDS``, checked)."""
    (
        frame,
        ts_ns,
        v6,
        src_raw,
        sport,
        dst_raw,
        dport,
        path,
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
        outer_raw,
    ) = raw
    return Event(
        frame=frame,
        time=ts_ns / 1e9,
        src=_addr(v6, src_raw),
        sport=sport,
        dst=_addr(v6, dst_raw),
        dport=dport,
        vlan=tuple(tag for tag in path if tag < 1 << 32),
        cls=Severity(cls_value),
        closing=bool(closing),
        certainty=Certainty.DEFINITE if definite else Certainty.POSSIBLE,
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
        tunnel=tunnel_names(path),
        outer=_outer(outer_raw) if outer_raw else (),
    )


def _outer(raw: bytes) -> tuple[tuple[str, str], ...]:
    """The scanner's enclosing addresses: per IP header, a v6 flag, source, destination."""
    pairs = []
    i = 0
    while i < len(raw):
        v6, size = raw[i], 16 if raw[i] else 4
        src, dst = raw[i + 1 : i + 1 + size], raw[i + 1 + size : i + 1 + 2 * size]
        pairs.append((_addr(v6, src), _addr(v6, dst)))
        i += 1 + 2 * size
    return tuple(pairs)


def check_contract(module: Any) -> None:
    """The scanner must name its event fields, skip reasons (and that of filtered frames), model
    counters, flow-mark bits and series point layout exactly as this side reads them, in the
    same order; otherwise it is not used."""
    expected: dict[str, object] = {
        "EVENT_FIELDS": EVENT_FIELDS,
        "SKIP_REASONS": SKIP_REASONS,
        "MODEL_COUNTERS": MODEL_COUNTERS,
        "MARK_EVENT": MARK_EVENT,
        "MARK_SHOWN": MARK_SHOWN,
        "MARK_ZERO": MARK_ZERO,
        "SEGREC_FORMAT": SEGREC_FORMAT,
        "FILTERED": FILTERED,
        "SERIES_POINT": POINT.format,
    }
    for name, want in expected.items():
        got = getattr(module, name, None)
        if got != want:
            raise ImportError(f"treason._fastscan.{name} is {got!r}, expected {want!r}")


if _fastscan is not None:
    check_contract(_fastscan)
