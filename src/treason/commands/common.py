"""Options shared by the commands, and the argparse types that check every number at parse time.

A number a user types is checked where it is parsed, against a range the message names
(``argument --max-flows: '99999999999' is not a whole number from 1 to 50000000 (the flow table
limit)``): deep inside, ``nan`` seconds or 10^11 flows would be a traceback from ``int()`` or from
the compiled scanner, or a silent nonsense answer. docs/robustness.md lists every range.
"""

from __future__ import annotations

import argparse
import math

from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS

#: ``--max-flows`` above this is refused: 100 times the default, far beyond what fits in memory
#: on a large machine (a flow costs hundreds of bytes), and below the compiled scanner's 2^31.
MAX_FLOWS_LIMIT = 50_000_000

#: ``--idle-timeout`` in seconds: more than 0, at most about 31 years (longer than any capture);
#: in nanoseconds it still fits in 64 bits.
MAX_IDLE_TIMEOUT = 1e9

#: Any other count (``--jobs``, ``--max-graphs``...): at most what a C ``int`` holds.
MAX_COUNT = 2**31 - 1


class IntRange:
    """argparse ``type=``: a whole number from ``low`` to ``high``; the message says which and
    ``why`` that limit."""

    def __init__(self, low: int, high: int, why: str = "") -> None:
        self.low, self.high, self.why = low, high, why

    def __call__(self, text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            value = None
        if value is None or not self.low <= value <= self.high:
            span = f"from {self.low} to {self.high}{_why(self.why)}"
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number {span}")
        return value


class SecondsRange:
    """argparse ``type=``: a finite number of seconds in ``[low, high]`` (``(low, high]`` with
    ``above_low``); ``nan``, ``inf`` and ``1e400`` are refused by name, never passed on."""

    def __init__(self, low: float, high: float, why: str = "", *, above_low: bool = False) -> None:
        self.low, self.high, self.why, self.above_low = low, high, why, above_low

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        in_range = (
            value > self.low if self.above_low else value >= self.low
        ) and value <= self.high
        if not (math.isfinite(value) and in_range):
            span = (
                f"above {_num(self.low)} and at most {_num(self.high)}"
                if self.above_low
                else f"from {_num(self.low)} to {_num(self.high)}"
            )
            raise argparse.ArgumentTypeError(
                f"{shown(text)} is not a number of seconds {span}{_why(self.why)}"
            )
        return value


def shown(text: str, limit: int = 40) -> str:
    """A value quoted for a message: escaped by ``repr``, and cut (5,000 digits stay one line)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"


def _why(why: str) -> str:
    return f" ({why})" if why else ""


positive_int = IntRange(1, MAX_COUNT)


MAX_STATUS_INTERVAL = 86_400.0


def metrics_address(text: str) -> tuple[str, int]:
    """``--metrics HOST:PORT`` checked with the other options (``live.metrics.parse_address``)."""
    from treason.live.metrics import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_watch_options(p: argparse.ArgumentParser) -> None:
    """``-f``, ``--status-interval`` and ``--metrics`` of the commands that watch a running
    system (``live``, ``trace``), with the same meaning in both."""
    p.add_argument(
        "-f", "--format", choices=("text", "json"), default="text", help="event output format"
    )
    p.add_argument(
        "--status-interval",
        type=SecondsRange(0, MAX_STATUS_INTERVAL),
        default=10.0,
        metavar="SEC",
        help="status line on stderr every SEC seconds (0: none; default 10)",
    )
    p.add_argument(
        "--metrics",
        type=metrics_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics (HOST defaults to 127.0.0.1)",
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--all``, ``--max-flows`` and ``--idle-timeout``, with the same meaning everywhere."""
    p.add_argument("--all", action="store_true", help="also report sub-granularity retractions")
    p.add_argument(
        "--max-flows",
        type=IntRange(1, MAX_FLOWS_LIMIT, "the flow table limit"),
        default=DEFAULT_MAX_FLOWS,
        metavar="N",
        help="flow table cap; the least recently active flows are evicted "
        f"(default {DEFAULT_MAX_FLOWS}, at most {MAX_FLOWS_LIMIT})",
    )
    p.add_argument(
        "--idle-timeout",
        type=SecondsRange(0, MAX_IDLE_TIMEOUT, above_low=True),
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


def add_engine_option(p: argparse.ArgumentParser, compiled: str = "compiled scanner") -> None:
    """``--engine auto|fast|reference``, the same choice in every command that has one."""
    p.add_argument(
        "--engine",
        choices=("auto", "fast", "reference"),
        default="auto",
        help=f"{compiled} or the readable reference model (default: fast when built)",
    )
