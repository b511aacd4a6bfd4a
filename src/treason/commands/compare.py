"""``treason compare NEAR FAR``: did the receiver or the path take the window back?"""

from __future__ import annotations

import argparse
import sys

from treason.commands.common import SecondsRange
from treason.errors import TreasonError

#: Longer waits only hold more packets: the pairing offset is found in the first seconds.
MAX_WINDOW = 3600.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "compare",
        help="pair two captures of the same traffic and say who shrank each window",
        description=(
            "Pair the packets that NEAR and FAR (two captures of the same traffic at two "
            "points of its path) both saw, across clock offsets, capture loss and NAT, and say "
            "for every window-shrink event whether the receiver or the path between the two "
            "points moved the right edge. Also reports MSS, window-scale and sequence-number "
            "rewrites. Exit status: 0 no event, 1 events found, 2 error."
        ),
    )
    p.add_argument("near", metavar="NEAR", help="capture at one point (e.g. at the data sender)")
    p.add_argument("far", metavar="FAR", help="capture at another point (e.g. at the receiver)")
    p.add_argument("-f", "--format", choices=("text", "json"), default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically)")
    p.add_argument(
        "--window",
        type=SecondsRange(0, MAX_WINDOW, above_low=True),
        default=2.0,
        metavar="SECONDS",
        help="how long a packet waits for its twin at the other point "
        f"(default 2, at most {MAX_WINDOW:.0f})",
    )
    p.add_argument("--all", action="store_true", help="also attribute retractions")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from treason.compare import compare
    from treason.compare.report import render_json, render_text
    from treason.output.atomic import output_text

    if args.near == "-" and args.far == "-":
        raise TreasonError("-", "only one of NEAR and FAR can be standard input")
    result = compare(args.near, args.far, window=args.window, retractions=args.all)
    text = render_json(result) if args.format == "json" else render_text(result)
    with output_text(args.output, inputs=(args.near, args.far)) as out:
        out.write(text)
    if result.errors:
        for extra in result.errors[1:]:
            print(f"treason: {extra}", file=sys.stderr)
        raise result.errors[0]
    return 1 if result.events else 0
