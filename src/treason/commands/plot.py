"""``treason plot``: an HTML page of time-sequence graphs where a receiver shrank its window."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
from collections.abc import Sequence

from treason.capfilter import CaptureFilter
from treason.commands.common import (
    add_engine_option,
    add_filter_option,
    add_model_options,
    positive_int,
)
from treason.engine.segrec import position, unposition
from treason.errors import CaptureError, TreasonError
from treason.events import Event, Severity
from treason.output.atomic import output_text
from treason.output.plot import write_page
from treason.readers import display_name
from treason.scanner import ScanStats
from treason.series import DirectionSeries, Key, SeriesCollector, directions, key_of
from treason.sets import CaptureSet, plan_sets, scan_set
from treason.terminal import safe

DEFAULT_GRAPHS = 20

DESCRIPTION = """\
Draw, for every direction of a connection whose receiver shrank its window, a time-sequence
graph (as tcptrace's): the sender's segments as bars, the receiver's ACK and the right edge
of the window it offers (ACK + window << scale) as step lines, and each event marked where
the right edge steps down. The events are those `treason scan` reports (retractions only with
--all). The result is one self-contained HTML file (inline SVG and a small inline script,
nothing fetched) that opens offline in any browser: zoom, pan, hover for frame numbers,
download each graph as SVG or PNG. Each capture is read once, so - (stdin) and pipes work.
See docs/plot.md for how to read it.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plot",
        help="draw window shrinks as interactive time-sequence graphs in an HTML page",
        description=DESCRIPTION,
        epilog="exit status: 0 nothing found (the page says so), 1 events plotted, 2 error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "captures",
        nargs="+",
        metavar="CAPTURE",
        help="pcap or pcapng file (maybe gzipped), or - for stdin; each is read once",
    )
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write the page to FILE (atomically); default stdout"
    )
    p.add_argument(
        "--flow",
        action="append",
        metavar="SRC:PORT-DST:PORT",
        type=parse_flow,
        help="only this connection (either order; [addr]:port for IPv6); may be repeated",
    )
    p.add_argument(
        "--max-graphs",
        type=positive_int,
        default=DEFAULT_GRAPHS,
        metavar="N",
        help=f"draw at most N directions, the most severe first (default {DEFAULT_GRAPHS})",
    )
    p.add_argument(
        "--each",
        action="store_true",
        help="draw every file on its own; by default files that follow each other in time "
        "(rotated pieces) are one capture, as scan reads them",
    )
    add_engine_option(p)
    add_model_options(p)
    add_filter_option(p)
    p.set_defaults(func=run)


Endpoint = tuple[str, int]


def parse_flow(text: str) -> tuple[Endpoint, Endpoint]:
    """``10.0.0.1:80-10.0.0.2:5555`` or ``[2001:db8::1]:80-[2001:db8::2]:5555``."""
    left, sep, right = text.partition("-")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SRC:PORT-DST:PORT")
    return _endpoint(left), _endpoint(right)


def _endpoint(text: str) -> Endpoint:
    addr, _, port = text.strip().rpartition(":")
    addr = addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr
    try:
        return ipaddress.ip_address(addr).compressed, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADDRESS:PORT") from None


def _matches(key: Key, flows: Sequence[tuple[Endpoint, Endpoint]]) -> bool:
    a = (ipaddress.ip_address(key[0]).compressed, key[1])
    b = (ipaddress.ip_address(key[2]).compressed, key[3])
    return any((a, b) in ((x, y), (y, x)) for x, y in flows)


def select(
    events: Sequence[Event], flows: Sequence[tuple[Endpoint, Endpoint]] | None, limit: int
) -> tuple[list[tuple[int, Key]], int]:
    """The (capture set, direction) pairs to draw, most severe first, and how many the cap left out.

    ``events`` are those the page reports, as ``scan`` reports them: retractions only with
    ``--all``.
    """
    by_key: dict[tuple[int, Key], list[Event]] = {}
    for e in events:
        by_key.setdefault((e.capture_set, key_of(e)), []).append(e)
    keys = [k for k in by_key if flows is None or _matches(k[1], flows)]
    keys.sort(
        key=lambda k: (
            -max(e.cls for e in by_key[k]),
            -sum(e.cls is not Severity.RETRACTION for e in by_key[k]),
            -sum(e.shrink_bytes for e in by_key[k]),
            by_key[k][0].frame,
        )
    )
    return keys[:limit], max(0, len(keys) - limit)


def _scan_set(
    capture_set: CaptureSet,
    args: argparse.Namespace,
    stats: ScanStats,
    capture_filter: CaptureFilter | None,
) -> tuple[list[Event], SeriesCollector, list[str]]:
    """One capture set (scan's rules: rotated pieces are one capture), read once: its events
    and the series of its connections with events."""
    collector = SeriesCollector()
    damage: list[CaptureError] = []
    events = list(
        scan_set(
            capture_set,
            retractions=args.all,
            engine=args.engine,
            max_flows=args.max_flows,
            idle_timeout=args.idle_timeout,
            stats=stats,
            errors=damage,
            capture_filter=capture_filter,
            series=collector,
        )
    )
    if damage and not stats.frames:
        raise damage[0]  # not a capture at all: nothing to draw, and nothing is written
    return events, collector, [str(exc) for exc in damage]


def _set_name(capture_set: CaptureSet) -> str:
    return ", ".join(display_name(s) for s in capture_set.sources)


def _drawn(
    capture_set: CaptureSet, collector: SeriesCollector, events: list[Event], wanted: set[Key]
) -> dict[Key, DirectionSeries]:
    """The graphs of ``wanted`` directions of one set. The engine numbers a set's frames by
    position (which file, which frame): events are matched to their connections' points by
    position, then every frame shown is the frame within its file again."""
    mine = [e for e in events if e.capture_set == capture_set.number and key_of(e) in wanted]
    argument = {p.source: p.argument for p in capture_set.pieces}
    named: dict[int, Event] = {}
    positioned = []
    for e in mine:
        placed = dataclasses.replace(e, frame=position(argument[e.file], e.frame))
        named[id(placed)] = e
        positioned.append(placed)
    found = directions(collector.result(), positioned, _set_name(capture_set))
    for t in found.values():
        t.events = [named[id(e)] for e in t.events]
        for m in t.marks:
            m.event = named[id(m.event)]
        for s in t.sent:
            s.frame = unposition(s.frame)[1]
        for a in t.acked:
            a.frame = unposition(a.frame)[1]
    return found


def run(args: argparse.Namespace) -> int:
    if args.captures.count("-") > 1:
        raise TreasonError("-", "standard input can be read only once")
    capture_filter = CaptureFilter(args.filter) if args.filter else None
    total = ScanStats()
    events: list[Event] = []
    errors: list[str] = []
    collected: list[tuple[CaptureSet, SeriesCollector]] = []
    for capture_set in plan_sets(args.captures, "each" if args.each else "continue"):
        stats = ScanStats()
        set_events, collector, set_errors = _scan_set(capture_set, args, stats, capture_filter)
        events.extend(set_events)
        total.merge(stats)
        collected.append((capture_set, collector))
        errors += set_errors
    keys, hidden = select(events, args.flow, args.max_graphs)
    drawn: list[tuple[int, DirectionSeries]] = []
    for capture_set, collector in collected:
        wanted = {k for n, k in keys if n == capture_set.number}
        found = _drawn(capture_set, collector, events, wanted)
        drawn += [(keys.index((capture_set.number, k)), found[k]) for k in wanted]
    drawn.sort(key=lambda pair: pair[0])
    with output_text(args.output, inputs=args.captures) as out:
        write_page(
            out,
            captures=[_set_name(cs) for cs, _ in collected],
            events=events,
            directions=[t for _, t in drawn],
            stats=total,
            hidden=hidden,
            filtered=args.flow is not None or capture_filter is not None,
            errors=errors,
        )
    if args.output:
        n = sum(len(t.events) for _, t in drawn)
        print(
            f"treason: wrote {safe(args.output)}: {len(drawn)} graph(s), {n} event(s)"
            + (f", {hidden} more direction(s) not drawn (--max-graphs)" if hidden else ""),
            file=sys.stderr,
        )
    for message in errors:
        print(f"treason: {safe(message)}", file=sys.stderr)
    if errors:
        return 2
    return 1 if drawn else 0
