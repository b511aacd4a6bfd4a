"""The ``treason`` command: a thin layer of argument parsing over the library.

Each subcommand lives in its own module under ``treason.commands`` exposing
``register(subparsers)``; ``main`` turns ``TreasonError`` into one line on stderr and exit 2,
and a closed stdout (``treason scan big.pcap | head``) into a quiet exit.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from treason import __version__
from treason.errors import TreasonError
from treason.terminal import safe

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "scan",
    "plot",
    "annotate",
    "logs",
    "explain",
    "match",
    "logwatch",
    "simulate",
    "live",
    "trace",
    "compare",
)

EXIT_STATUS = """exit status:
  0  nothing found
  1  events found (scan, logs, match)
  2  error: bad input, missing privilege, bad usage
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="treason",
        description="Find, explain and show TCP peers that shrink their receive window.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"treason {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"treason.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"treason.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TreasonError as exc:
        print(f"treason: {safe(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("treason: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
