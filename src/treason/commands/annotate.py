"""``treason annotate``: the capture as pcapng, every event frame carrying a packet comment."""

from __future__ import annotations

import argparse
import os
import sys

from treason.annotate import annotate, display_filters
from treason.capfilter import CaptureFilter
from treason.commands.common import (
    add_engine_option,
    add_filter_option,
    add_model_options,
)
from treason.errors import TreasonError
from treason.output.atomic import atomic_binary
from treason.scanner import ScanStats
from treason.terminal import safe

DESCRIPTION = """\
Copy the captures to one pcapng file in which every frame treason reports (as `treason scan`
does: retractions only with --all) carries a packet comment: the class, the bytes of window
taken back, the bytes already sent beyond the new edge, and the line Linux logs. Wireshark
shows the comments in the packet list and in Expert Info; `tshark -r OUT -Y frame.comment`
lists the frames. Every packet's bytes, timestamps and interfaces are kept. Two display
filters are printed for copy and paste: the event frames, and the event frames with their
flows. Each capture is read once (- for stdin). With --filter only the frames the expression
keeps are analysed (and can be commented); every frame is copied.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "annotate",
        help="copy captures to pcapng with a comment on every event frame (for Wireshark)",
        description=DESCRIPTION,
        epilog="exit status: 0 nothing found, 1 events annotated, 2 error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng, or - for stdin")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pcapng", help="the copy")
    add_engine_option(p)
    add_model_options(p)
    add_filter_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.captures.count("-") > 1:
        raise TreasonError("-", "standard input can be read only once")
    stats = ScanStats()
    with atomic_binary(args.output, inputs=args.captures) as out:
        events = annotate(
            args.captures,
            out,
            spool_dir=os.path.dirname(os.path.abspath(args.output)),
            stats=stats,
            retractions=args.all,
            engine=args.engine,
            max_flows=args.max_flows,
            idle_timeout=args.idle_timeout,
            capture_filter=CaptureFilter(args.filter) if args.filter else None,
        )
    for warning in stats.warnings:
        print(f"treason: warning: {safe(warning)}", file=sys.stderr)
    print(
        f"treason: wrote {safe(args.output)}: {stats.frames} frames, "
        f"{len(events)} with a treason comment",
        file=sys.stderr,
    )
    if not events:
        return 0
    marked, with_flows = display_filters(events)
    print(f"event frames:           {marked}")
    print(f"events and their flows: {with_flows}")
    return 1
