"""``treason compare NEAR FAR``: did the receiver or the path take the window back?"""

from __future__ import annotations

import argparse
import math
import os
import sys

from treason.errors import TreasonError


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
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long a packet waits for its twin at the other point (default 2)",
    )
    p.add_argument("--all", action="store_true", help="also attribute retractions")
    p.set_defaults(func=run)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def run(args: argparse.Namespace) -> int:
    from treason.compare import compare
    from treason.compare.report import render_json, render_text
    from treason.output.atomic import atomic_text

    if args.near == "-" and args.far == "-":
        raise TreasonError("-", "only one of NEAR and FAR can be standard input")
    if not (args.window > 0 and math.isfinite(args.window)):
        raise TreasonError("--window", f"must be a positive number of seconds, not {args.window}")
    if args.output:
        for given in (args.near, args.far):
            if given != "-" and _same_file(args.output, given):
                raise TreasonError(args.output, "is an input capture; refusing to overwrite it")
    result = compare(args.near, args.far, window=args.window, retractions=args.all)
    text = render_json(result) if args.format == "json" else render_text(result)
    if args.output:
        with atomic_text(args.output) as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    if result.errors:
        for extra in result.errors[1:]:
            print(f"treason: {extra}", file=sys.stderr)
        raise result.errors[0]
    return 1 if result.events else 0
