"""``treason explain [LINE]``: what a window-shrink log line means, in plain words."""

from __future__ import annotations

import argparse
import sys

from treason.errors import TreasonError
from treason.logs.explain import explain_general, explain_shrink, look_alike, parse_any
from treason.terminal import safe


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a kernel window-shrink line (or the phenomenon in general)",
        description=(
            "Explain a pasted kernel line ('Treason uncloaked', 'unexpectedly shrunk window', "
            "'Probing zero-window', in any log format) field by field. Without LINE: the "
            "general explanation with a worked example computed by the reference model."
        ),
    )
    p.add_argument("line", nargs="*", metavar="LINE", help="the log line (quoted or not)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.line:
        sys.stdout.write(explain_general())
        return 0
    line = " ".join(args.line)
    record, shrink = parse_any(line)
    if shrink is not None:
        sys.stdout.write(explain_shrink(shrink, record))
        return 0
    meaning = look_alike(line)
    if meaning is not None:
        sys.stdout.write(f"Not a window-shrink report. This is {meaning}\n")
        return 0
    if record is not None and not record.kernel and "Peer" in line:
        raise TreasonError(
            "line",
            f"written by {safe(record.program or '?')}, not the kernel: "
            "an application quoting the kernel's wording",
        )
    raise TreasonError("line", "not a kernel window-shrink report (see `treason explain`)")
