"""``treason plot``: an HTML page of time-sequence graphs where a receiver shrank its window."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from contextlib import nullcontext

from treason.commands.common import positive_int
from treason.errors import TreasonError
from treason.events import Event, Severity
from treason.output.atomic import atomic_text
from treason.output.plot import write_page
from treason.output.trace import Key, key_of, read_traces
from treason.scanner import ScanStats, scan
from treason.terminal import safe

DEFAULT_GRAPHS = 20

DESCRIPTION = """\
Draw, for every direction of a connection whose receiver shrank its window, a time-sequence
graph (as tcptrace's): the sender's segments as bars, the receiver's ACK and the right edge
of the window it offers (ACK + window << scale) as step lines, and each event marked where
the right edge steps down. The result is one self-contained HTML file (inline SVG, no
scripts) that opens offline in any browser. See docs/plot.md for how to read it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw window shrinks as time-sequence graphs in an HTML page",
        description=DESCRIPTION,
        epilog="exit status: 0 nothing found (the page says so), 1 events plotted, 2 error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file (maybe gzipped)")
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
        "--all",
        action="store_true",
        help="also draw directions whose only events are sub-granularity retractions",
    )
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
    events: Sequence[Event],
    flows: Sequence[tuple[Endpoint, Endpoint]] | None,
    limit: int,
    retraction_only: bool,
) -> tuple[list[Key], int]:
    """The directions to draw, most severe first, and how many more the cap left out.

    A direction whose events are all rounding retractions is drawn only when asked: the
    terminal report does not count those as findings either.
    """
    by_key: dict[Key, list[Event]] = {}
    for e in events:
        by_key.setdefault(key_of(e), []).append(e)
    keys = [
        k
        for k, evs in by_key.items()
        if (flows is None or _matches(k, flows))
        and (retraction_only or any(e.cls is not Severity.RETRACTION for e in evs))
    ]
    keys.sort(
        key=lambda k: (
            -max(e.cls for e in by_key[k]),
            -sum(e.cls is not Severity.RETRACTION for e in by_key[k]),
            -sum(e.shrink_bytes for e in by_key[k]),
            by_key[k][0].frame,
        )
    )
    return keys[:limit], max(0, len(keys) - limit)


def run(args: argparse.Namespace) -> int:
    path = args.capture
    if path == "-":
        raise TreasonError("-", "plot reads the capture twice; save it to a file first")
    stats = ScanStats()
    events: list[Event] = []
    error: str | None = None
    try:
        events.extend(scan(path, retractions=True, stats=stats))
    except TreasonError as exc:
        if not stats.frames:
            raise  # not a capture at all: nothing to draw, and nothing is written
        error = str(exc)
    keys, hidden = select(events, args.flow, args.max_graphs, args.all)
    wanted = set(keys)
    traces_by_key = read_traces(path, [e for e in events if key_of(e) in wanted]) if keys else {}
    traces = [traces_by_key[k] for k in keys]
    target = atomic_text(args.output) if args.output else nullcontext(sys.stdout)
    with target as out:
        write_page(
            out,
            capture=path,
            events=events,
            traces=traces,
            stats=stats,
            hidden=hidden,
            filtered=args.flow is not None,
            error=error,
        )
    if args.output:
        drawn = sum(len(t.events) for t in traces)
        print(
            f"treason: wrote {safe(args.output)}: {len(traces)} graph(s), {drawn} event(s)"
            + (f", {hidden} more direction(s) not drawn (--max-graphs)" if hidden else ""),
            file=sys.stderr,
        )
    if error:
        print(f"treason: {safe(error)}", file=sys.stderr)
        return 2
    return 1 if traces else 0
