"""``treason plot``: an HTML page of time-sequence graphs where a receiver shrank its window."""

from __future__ import annotations

import argparse
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
from treason.errors import TreasonError
from treason.events import Event, Severity
from treason.output.atomic import output_text
from treason.output.plot import write_page
from treason.readers import display_name
from treason.scanner import ScanStats, scan
from treason.series import DirectionSeries, Key, SeriesCollector, directions, key_of
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
) -> tuple[list[tuple[str, Key]], int]:
    """The (capture, direction) pairs to draw, most severe first, and how many the cap left out.

    ``events`` are those the page reports, as ``scan`` reports them: retractions only with
    ``--all``.
    """
    by_key: dict[tuple[str, Key], list[Event]] = {}
    for e in events:
        by_key.setdefault((e.file, key_of(e)), []).append(e)
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


def _scan_one(
    path: str, args: argparse.Namespace, stats: ScanStats, capture_filter: CaptureFilter | None
) -> tuple[list[Event], SeriesCollector, str | None]:
    """One capture, read once: its events and the series of its connections with events."""
    collector = SeriesCollector()
    events: list[Event] = []
    try:
        events.extend(
            scan(
                path,
                retractions=args.all,
                engine=args.engine,
                max_flows=args.max_flows,
                idle_timeout=args.idle_timeout,
                stats=stats,
                series=collector,
                capture_filter=capture_filter,
            )
        )
    except TreasonError as exc:
        if not stats.frames:
            raise  # not a capture at all: nothing to draw, and nothing is written
        return events, collector, str(exc)
    return events, collector, None


def run(args: argparse.Namespace) -> int:
    if args.captures.count("-") > 1:
        raise TreasonError("-", "standard input can be read only once")
    capture_filter = CaptureFilter(args.filter) if args.filter else None
    total = ScanStats()
    events: list[Event] = []
    errors: list[str] = []
    collected: dict[str, SeriesCollector] = {}
    for path in args.captures:
        stats = ScanStats()
        file_events, collector, error = _scan_one(path, args, stats, capture_filter)
        events.extend(file_events)
        total.merge(stats)
        collected[display_name(path)] = collector
        if error:
            errors.append(error)
    keys, hidden = select(events, args.flow, args.max_graphs)
    drawn: list[DirectionSeries] = []
    for name, collector in collected.items():
        wanted = {k for f, k in keys if f == name}
        mine = [e for e in events if e.file == name and key_of(e) in wanted]
        found = directions(collector.result(), mine, name)
        drawn += [found[k] for f, k in keys if f == name]
    order = {k: i for i, k in enumerate(keys)}
    drawn.sort(key=lambda t: order[(t.file, t.key)])
    with output_text(args.output, inputs=args.captures) as out:
        write_page(
            out,
            captures=list(collected),
            events=events,
            directions=drawn,
            stats=total,
            hidden=hidden,
            filtered=args.flow is not None or capture_filter is not None,
            errors=errors,
        )
    if args.output:
        n = sum(len(t.events) for t in drawn)
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
