"""Pairing kernel log lines with the shrink events of a capture.

A log line and a capture event describe the same stall when the peer (the event's ``src``,
the receiver that shrank), its port, the local port and ``X:Y`` (``snd_una:snd_nxt``) agree.
The local address is not in the log line, so it is not compared. Lines of the same connection
whose X differs are reported as *same connection, other stall*: the capture and the log saw
the connection at different moments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from treason.events import Event, Severity
from treason.logs import LogLine
from treason.logs.grammar import normalise_peer


@dataclass
class MatchResult:
    pairs: list[tuple[LogLine, Event]] = field(default_factory=list)
    #: log lines with no kernel-visible event: (line, any event of the same connection or None)
    unmatched_lines: list[tuple[LogLine, Event | None]] = field(default_factory=list)
    unmatched_events: list[Event] = field(default_factory=list)


def event_key(ev: Event) -> tuple[str, int, int, int, int]:
    return (normalise_peer(ev.src) or ev.src, ev.sport, ev.dport, ev.snd_una, ev.snd_nxt)


def line_key(ln: LogLine) -> tuple[str, int, int, int, int]:
    s = ln.shrink
    return (s.peer, s.peer_port, s.local_port, s.x, s.y)


def match(lines: Iterable[LogLine], events: Iterable[Event]) -> MatchResult:
    """Pair every log line with the kernel-visible event it reports (one event may be
    reported by several lines: the kernel repeats it at each probe)."""
    events = list(events)
    kernel = [ev for ev in events if ev.cls is Severity.KERNEL]
    by_key: dict[tuple, Event] = {}
    by_conn: dict[tuple, Event] = {}
    for ev in kernel:
        by_key.setdefault(event_key(ev), ev)
    for ev in sorted(events, key=lambda e: -int(e.cls)):
        by_conn.setdefault(event_key(ev)[:3], ev)
    result = MatchResult()
    used: set[int] = set()
    for ln in lines:
        ev = by_key.get(line_key(ln))
        if ev is None:
            result.unmatched_lines.append((ln, by_conn.get(line_key(ln)[:3])))
            continue
        result.pairs.append((ln, ev))
        used.add(id(ev))
    result.unmatched_events = [ev for ev in kernel if id(ev) not in used]
    return result
