"""``treason explain [LINE ...]``: what window-shrink log lines mean, in plain words."""

from __future__ import annotations

import argparse
import io
import sys

from treason.errors import TreasonError
from treason.logs.explain import Pasted, explain_general, explain_pasted, read_pasted
from treason.logs.formats import as_utf8
from treason.terminal import safe

#: Largest pasted text read from stdin; whole logs are what `treason logs` is for.
MAX_STDIN = 64 << 20


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "explain",
        help="explain kernel window-shrink lines (or the phenomenon in general)",
        description=(
            "Explain pasted kernel lines ('Treason uncloaked', 'unexpectedly shrunk window', "
            "'Probing zero-window', in any log format, a logwatch report or a whole mail) "
            "field by field. Each LINE argument is one line (or several, if it holds line "
            "ends); without LINE, stdin is read when it is not a terminal. With neither: the "
            "general explanation with a worked example computed by the reference model."
        ),
    )
    p.add_argument("line", nargs="*", metavar="LINE", help="a log line (quoted or not)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = b""
    if not args.line and sys.stdin is not None and not sys.stdin.isatty():
        data = sys.stdin.buffer.read(MAX_STDIN + 1)
        if len(data) > MAX_STDIN:
            raise TreasonError(
                "<stdin>", f"more than {MAX_STDIN >> 20} MiB: for whole logs use `treason logs`"
            )
    if args.line:
        pasted = _from_arguments(args.line)
        source = "line"
    elif data.strip():
        text = as_utf8(io.BufferedReader(io.BytesIO(data))).read()  # UTF-16 from Windows
        pasted = read_pasted(text.decode("utf-8", "backslashreplace"), "<stdin>")
        source = "<stdin>"
    else:
        sys.stdout.write(explain_general())
        return 0
    if pasted.scan.lines or pasted.look_alikes:
        sys.stdout.write(explain_pasted(pasted))
        return 0
    if pasted.quoted:
        rec = pasted.quoted[0]
        raise TreasonError(
            source,
            f"written by {safe(rec.program or '?')}, not the kernel: "
            "an application quoting the kernel's wording",
        )
    if pasted.scan.near_misses:
        near = pasted.scan.near_misses[0]
        raise TreasonError(source, f"almost a window-shrink report: {near.reason}")
    raise TreasonError(source, "no kernel window-shrink report in it (see `treason explain`)")


def _from_arguments(lines: list[str]) -> Pasted:
    """Each argument is a line; a line pasted without quotes arrives as several words, so
    when no argument says anything alone, all of them joined are read as one line."""
    pasted = read_pasted("\n".join(lines))
    if len(lines) > 1 and pasted.empty:
        return read_pasted(" ".join(lines))
    return pasted
