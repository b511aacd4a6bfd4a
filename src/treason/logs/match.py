"""Pairing kernel log lines with the shrink events of a capture.

A log line and a capture event describe the same stall when the peer (the event's ``src``,
the receiver that shrank), its port, the local port and ``X:Y`` (``snd_una:snd_nxt``) agree.
The local address is not in the log line, so it is not compared. Lines of the same connection
whose X differs are reported as *same connection, other stall*: the capture and the log saw
the connection at different moments.

A line whose address or ports were redacted before it reached treason is compared on what it
still shows: X:Y and whichever of the peer and ports are there.
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


def line_key(ln: LogLine) -> tuple[str | None, int | None, int | None, int, int]:
    """The line's (peer, peer port, local port, X, Y); None where it was redacted."""
    s = ln.shrink
    return (s.peer, s.peer_port, s.local_port, s.x, s.y)


def _agrees(known: tuple[object, ...], full: tuple[object, ...]) -> bool:
    """The fields the line shows agree with the event's (redacted ones match anything)."""
    return all(a is None or a == b for a, b in zip(known, full, strict=True))


def match(lines: Iterable[LogLine], events: Iterable[Event]) -> MatchResult:
    """Pair every log line with the kernel-visible event it reports (one event may be
    reported by several lines: the kernel repeats it at each probe)."""
    events = list(events)
    kernel = [ev for ev in events if ev.cls is Severity.KERNEL]
    by_key: dict[tuple[object, ...], Event] = {}
    by_xy: dict[tuple[int, int], list[Event]] = {}
    by_conn: dict[tuple[object, ...], Event] = {}
    for ev in kernel:
        by_key.setdefault(event_key(ev), ev)
        by_xy.setdefault((ev.snd_una, ev.snd_nxt), []).append(ev)
    ranked = sorted(events, key=lambda e: -int(e.cls))
    for ev in ranked:
        by_conn.setdefault(event_key(ev)[:3], ev)
    result = MatchResult()
    used: set[int] = set()
    for ln in lines:
        key = line_key(ln)
        near: Event | None
        found: Event | None
        if None in key[:3]:
            found = next((e for e in by_xy.get(key[3:], []) if _agrees(key, event_key(e))), None)
            near = None
            if any(k is not None for k in key[:3]):  # "same connection" needs one to compare
                near = next((e for e in ranked if _agrees(key[:3], event_key(e)[:3])), None)
        else:
            found, near = by_key.get(key), by_conn.get(key[:3])
        if found is None:
            result.unmatched_lines.append((ln, near))
            continue
        result.pairs.append((ln, found))
        used.add(id(found))
    result.unmatched_events = [ev for ev in kernel if id(ev) not in used]
    return result
