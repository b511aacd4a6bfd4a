"""Options shared by the commands that run the model over packets (scan, live)."""

from __future__ import annotations

import argparse
import contextlib
import os

from treason.errors import TreasonError
from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--all``, ``--max-flows`` and ``--idle-timeout``, with the same meaning everywhere."""
    p.add_argument("--all", action="store_true", help="also report sub-granularity retractions")
    p.add_argument(
        "--max-flows",
        type=positive_int,
        default=DEFAULT_MAX_FLOWS,
        metavar="N",
        help="flow table cap; the least recently active flows are evicted "
        f"(default {DEFAULT_MAX_FLOWS})",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SEC",
        help=f"forget flows idle this long (default {DEFAULT_IDLE_TIMEOUT:.0f})",
    )


def add_filter_option(p: argparse.ArgumentParser) -> None:
    """``--filter EXPR``: only the frames a tcpdump expression keeps (``treason.capfilter``)."""
    p.add_argument(
        "--filter",
        metavar="EXPR",
        help="analyse only frames this tcpdump filter expression keeps, e.g. 'host 192.0.2.7 "
        "and port 443' (as live --filter; frame numbers stay the file's)",
    )


def add_engine_option(p: argparse.ArgumentParser) -> None:
    """``--engine auto|fast|reference``, as ``scan`` has it."""
    p.add_argument(
        "--engine",
        choices=("auto", "fast", "reference"),
        default="auto",
        help="compiled scanner or the readable reference model (default: fast when built)",
    )


def refuse_inputs(output: str, inputs: list[str]) -> None:
    """``-o`` naming one of the inputs (also through a link) would destroy what is read."""
    for path in inputs:
        if path == "-":
            continue
        with contextlib.suppress(OSError):
            if os.path.samefile(path, output):
                raise TreasonError(output, f"is the input {path}; refusing to overwrite it")
