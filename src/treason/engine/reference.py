"""The reference engine: the readers, the decoder and the readable model, one frame at a time.

It is the definition the compiled engine is held to (``docs/model.md``); ``explain`` and the
tests read the same model. It favours clarity over speed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import replace

from treason.capfilter import FILTERED, CaptureFilter
from treason.decode import decode
from treason.engine import segrec
from treason.engine.protocol import (
    MARK_EVENT,
    MARK_SHOWN,
    MARK_ZERO,
    FlowMark,
    Records,
    count_events,
)
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.events import Event, Severity
from treason.model import FlowTable
from treason.packets import Frame
from treason.readers import Capture, LongRecords, frames
from treason.series import SeriesCollector, SeriesSampler

#: A pcap record header as ``feed_records`` takes it: seconds, nanoseconds, captured length,
#: length on the wire (native byte order).
_RECORD = struct.Struct("=IIII")
#: Frames split between two batches of segment records.
_SPLIT_BATCH = 4096


class ReferenceEngine:
    """``Engine`` over ``treason.decode`` and ``treason.model.FlowTable``.

    Options (``treason.engine.protocol``): ``series`` collects the plot series of the
    connections with events (``SeriesSampler`` per segment judged); ``capture_filter`` drops
    the frames its program rejects before they are decoded (``CaptureFilter.keeps``).
    """

    prefers_records = False  # it makes a Frame per record anyway

    def __init__(
        self,
        stats: ScanStats,
        max_flows: int,
        idle_timeout_ns: int,
        *,
        series: SeriesCollector | None = None,
        capture_filter: CaptureFilter | None = None,
    ) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.stats = stats
        self.table = FlowTable(max_flows=max_flows, idle_timeout_ns=idle_timeout_ns, stats=stats)
        self._marks: list[FlowMark | None] | None = None
        self._records = 0  # frames fed as records so far (they are numbered from 1)
        self._first: tuple[int, int] | None = None  # time and link type of the first split
        self._latest: int | None = None  # latest frame time split
        self._split_latest: int | None = None  # latest segment time split
        self._sampler = SeriesSampler(series, stats) if series is not None else None
        self._filter = capture_filter

    def read(self, capture: Capture, base: int = 0) -> Iterator[Event]:
        long_records = LongRecords()

        def over_snaplen(frame: int, caplen: int, snaplen: int) -> None:
            self.stats.over_snaplen += 1
            long_records(frame, caplen, snaplen)

        try:
            for frame in frames(capture, over_snaplen):
                if base:
                    frame = replace(frame, number=base + frame.number)
                final = self._frame(frame)
                if final:
                    yield from count_events(self.stats, final)
        finally:
            warning = long_records.warning(capture.name)
            if warning:
                self.stats.warnings.append(warning)

    def split(self, capture: Capture, buckets: int, base: int = 0) -> Iterator[list[bytes]]:
        out = [bytearray() for _ in range(buckets)]
        long_records = LongRecords()

        def over_snaplen(frame: int, caplen: int, snaplen: int) -> None:
            self.stats.over_snaplen += 1
            long_records(frame, caplen, snaplen)

        try:
            for n, frame in enumerate(frames(capture, over_snaplen), 1):
                self._split_frame(frame, out, base)
                if n % _SPLIT_BATCH == 0:
                    yield [bytes(b) for b in out]
                    out = [bytearray() for _ in range(buckets)]
        except CaptureError:
            yield [bytes(b) for b in out]  # every record before the damage, then the damage
            raise
        finally:
            warning = long_records.warning(capture.name)
            if warning:
                self.stats.warnings.append(warning)
        yield [bytes(b) for b in out]

    def _split_frame(self, frame: Frame, out: list[bytearray], base: int) -> None:
        """Count one frame, add it to the span and its segment's record to its bucket."""
        stats = self.stats
        stats.frames += 1
        if self._first is None:
            self._first = (frame.ts_ns, frame.linktype)
        self._latest = frame.ts_ns if self._latest is None else max(self._latest, frame.ts_ns)
        if not out:
            return
        if self._filter is not None and not self._filter.keeps(frame):
            stats.skipped[FILTERED] += 1
            return
        seg = decode(replace(frame, number=base + frame.number))
        if isinstance(seg, str):
            stats.skipped[seg] += 1
            return
        stats.segments += 1
        latest = self._split_latest
        clock = seg.ts_ns if latest is None else max(latest, seg.ts_ns)
        self._split_latest = clock
        out[segrec.bucket(seg, len(out))] += segrec.pack(seg, clock)

    def span(self) -> tuple[int, int, int, int | None] | None:
        if self._first is None or self._latest is None:
            return None
        return self._first[0], self._latest, self._first[1], self._split_latest

    def feed_segments(self, records: Records, base_clock: int) -> list[Event]:
        out: list[Event] = []
        for seg, clock in segrec.unpack(records):
            out += self.table.process(seg, clock=max(clock, base_clock))[1]
        return list(count_events(self.stats, out))

    def tick(self, clock: int) -> list[Event]:
        return list(count_events(self.stats, self.table.tick(clock)))

    def feed(self, frames: Sequence[Frame]) -> list[Event]:
        out: list[Event] = []
        for frame in frames:
            out += self._frame(frame)
        count_events(self.stats, out)
        return out

    def feed_records(self, records: Records, linktype: int) -> list[Event]:
        data = bytes(records)
        batch: list[Frame] = []
        pos = 0
        while pos < len(data):
            sec, nsec, caplen, orig_len = _RECORD.unpack_from(data, pos)
            pos += _RECORD.size
            self._records += 1
            ts_ns = sec * 1_000_000_000 + nsec
            batch.append(Frame(self._records, ts_ns, linktype, data[pos : pos + caplen], orig_len))
            pos += caplen
        return self.feed(batch)

    def advance(self, now_ns: int) -> list[Event]:
        return list(count_events(self.stats, self.table.advance(now_ns)))

    def flush(self) -> list[Event]:
        final = list(count_events(self.stats, self.table.flush()))
        if self._sampler is not None:
            self._sampler.finish()
        return final

    def mark_flows(self) -> None:
        if self._marks is None:
            self._marks = []

    def take_marks(self) -> list[FlowMark | None]:
        marks = self._marks or []
        if self._marks is not None:
            self._marks = []
        return marks

    @property
    def active_flows(self) -> int:
        return len(self.table)

    def _frame(self, frame: Frame) -> list[Event]:
        """Decode and judge one frame; the events that became final, in frame order."""
        stats = self.stats
        stats.frames += 1
        seg = decode(frame) if self._filter is None or self._filter.keeps(frame) else FILTERED
        if isinstance(seg, str):
            stats.skipped[seg] += 1
            if self._marks is not None:
                self._marks.append(None)
            return []
        stats.segments += 1
        event, final = self.table.process(seg)
        if self._sampler is None and self._marks is None:
            return final
        key = self.table.flow_key(seg)  # a paired connection's one key, for both directions
        if self._sampler is not None:
            self._sampler.segment(seg, key, event is not None)
        if self._marks is not None:
            bits = 0
            if event is not None:
                bits = MARK_EVENT
                bits |= MARK_SHOWN if event.cls is not Severity.RETRACTION else 0
                bits |= MARK_ZERO if event.win == 0 else 0
            self._marks.append((key, bits))
        return final
