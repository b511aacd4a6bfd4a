"""Kernel logs: find every report of a peer shrinking its window, in any log container.

``scan_records`` applies the message grammar (``treason.logs.grammar``) to the kernel's own
records (read by ``treason.logs.formats``; files by ``treason.logs.bulk.read_logs``), and
attaches repeat and rate-limit markers, which say that *up to* N more reports were not
written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timezone

from treason.kernel import BY_KEY
from treason.logs.formats import Record
from treason.logs.grammar import Marker, Shrink, near_miss, parse_marker, parse_shrink
from treason.logs.services import service_name


@dataclass(slots=True)
class LogLine:
    """A kernel report found in a log: where it was read and what it says."""

    record: Record
    shrink: Shrink
    #: Up to this many more identical reports (syslog repeat markers).
    repeats: int = 0

    @property
    def host(self) -> str | None:
        return self.record.host

    @property
    def count(self) -> int:
        """Exactly this many identical reports (logwatch's ``N Time(s):``; 1 otherwise)."""
        return self.record.count

    @property
    def seconds(self) -> float | None:
        """A time usable for intervals: wall clock when known, else uptime."""
        when = self.record.time
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            try:
                return when.timestamp()
            except (OverflowError, ValueError):  # year 9999 with an offset: past Python's range
                return None
        return self.record.uptime

    @property
    def time_text(self) -> str | None:
        when = self.record.time
        if when is None:
            return None
        return when.isoformat(timespec="microseconds" if when.microsecond else "seconds")

    def to_dict(self) -> dict[str, object]:
        """The JSON Lines / CSV record of one matched line."""
        s, r = self.shrink, self.record
        return {
            "time": self.time_text,
            "uptime": r.uptime,
            "host": r.host,
            "peer": s.peer,
            "peer_raw": s.peer_raw,
            "peer_port": s.peer_port,
            "local_port": s.local_port,
            "service": service_name(s.local_port),
            "x": s.x,
            "y": s.y,
            "outstanding": s.outstanding,
            "wording": s.wording,
            "kernels": BY_KEY[s.wording].kernels,
            "repeats": self.repeats,
            "recv_ms": s.recv_ms,
            "lasting_ms": s.lasting_ms,
            "file": r.source,
            "line": r.lineno,
            "format": r.fmt,
            "raw": r.raw.rstrip("\r\n"),
            "count": r.count,
        }


@dataclass(slots=True)
class NearMiss:
    """A kernel message with a wording's words that is still not a report, and why not."""

    record: Record
    reason: str


@dataclass
class LogScan:
    """Everything ``read_logs`` found: matched lines, plus what rate limiting hid per host."""

    lines: list[LogLine] = field(default_factory=list)
    #: Kernel lines that are almost a report (shown, never counted as one).
    near_misses: list[NearMiss] = field(default_factory=list)
    #: host (None for host-less sources) -> sum of N over rate-limit markers ("up to N more").
    suppressed: dict[str | None, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def match_record(record: Record) -> Shrink | None:
    """The report in one record, if it is the kernel's and says a peer shrank."""
    if not record.kernel:
        return None
    return parse_shrink(record.message)


def scan_records(records: Iterable[Record], scan: LogScan | None = None) -> LogScan:
    """Apply the grammar to records, attaching repeat markers to the line they repeat."""
    scan = scan or LogScan()
    previous: dict[str | None, LogLine | None] = {}
    for record in records:
        if record.repeats and not record.kernel and record.program is None:
            last = previous.get(record.host)
            if last is not None:  # syslogd: "last message repeated N times"
                last.repeats += record.repeats
            continue
        shrink = match_record(record)
        if shrink is not None:
            line = LogLine(record, shrink, repeats=record.repeats)
            scan.lines.append(line)
            previous[record.host] = line
            continue
        if record.kernel:
            why = near_miss(record.message)
            if why is not None:
                scan.near_misses.append(NearMiss(record, why))
            marker: Marker | None = parse_marker(record.message)
            if marker is not None:
                if marker.kind == "repeated":
                    last = previous.get(record.host)
                    if last is not None:
                        last.repeats += marker.count
                    continue
                scan.suppressed[record.host] = scan.suppressed.get(record.host, 0) + marker.count
                continue
        previous[record.host] = None
    return scan


__all__ = [
    "LogLine",
    "LogScan",
    "NearMiss",
    "Record",
    "Shrink",
    "match_record",
    "parse_marker",
    "parse_shrink",
    "scan_records",
]
