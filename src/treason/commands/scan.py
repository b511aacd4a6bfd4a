"""``treason scan``: every receive-window shrink in one or more captures."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

from treason.capfilter import CaptureFilter
from treason.commands.common import add_filter_option, add_model_options, positive_int
from treason.errors import TreasonError
from treason.events import Event
from treason.output import progress
from treason.output.atomic import atomic_text
from treason.output.progress import open_with_progress
from treason.output.records import write_csv, write_jsonl
from treason.output.text import summary_lines, write_report
from treason.scanner import ScanStats, fast_available, scan
from treason.terminal import safe

DESCRIPTION = """\
Find every place in a capture where a TCP receiver moved the right edge of its advertised
window (ACK + window << scale) to the left, classify it and show what Linux on the sender
would have logged. FILE may be pcap or pcapng, gzip-compressed or not, or - for stdin
(tcpdump -w - | treason scan -).

classes, least to most severe:
  retraction  edge moved back by less than the window-scale granularity (RFC 7323
              rounding); counted, shown only with --all
  shrink      edge moved back by at least one granule: RFC 9293 says a receiver SHOULD NOT
  beyond      the new edge lies before data the sender already sent
  kernel      window set to 0 with data outstanding: Linux on the sender logs
              "Treason uncloaked" / "unexpectedly shrunk window" for this
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan",
        help="find window shrinks in packet captures",
        description=DESCRIPTION,
        epilog="exit status: 0 nothing found, 1 events found, 2 error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="capture file, or - for stdin")
    p.add_argument(
        "-f", "--format", choices=("text", "json", "csv"), default="text", help="output format"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically)")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no capture summary with json/csv output"
    )
    p.add_argument(
        "--engine",
        choices=("auto", "fast", "reference"),
        default="auto",
        help="compiled scanner or the readable reference model (default: fast when built)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="scan up to N files at once (default: all cores); results are the same",
    )
    add_model_options(p)
    add_filter_option(p)
    p.set_defaults(func=run)


def _scan_one(path: str, options: dict) -> tuple[list[Event], ScanStats, str | None]:
    stats = ScanStats()
    events: list[Event] = []
    source = open_with_progress(path) if options.pop("progress", False) else None
    try:
        events.extend(scan(source or path, stats=stats, **options))
    except TreasonError as exc:
        return events, stats, str(exc)
    finally:
        if source is not None:
            source.close()
    return events, stats, None


def _results(args: argparse.Namespace, options: dict) -> Iterator[tuple[list, ScanStats, str]]:
    files = args.files
    if args.jobs > 1 and len(files) > 1 and "-" not in files:
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(files))) as pool:
            done = pool.map(_scan_one, files, [options] * len(files))
            for n, result in enumerate(done, 1):
                if progress.wanted():
                    sys.stderr.write(f"\r\x1b[Ktreason: {n} of {len(files)} files scanned")
                    sys.stderr.flush()
                yield result
            if progress.wanted():
                sys.stderr.write("\r\x1b[K")
    else:
        for path in files:
            yield _scan_one(path, {**options, "progress": True})


def run(args: argparse.Namespace) -> int:
    options = {
        "retractions": args.all,
        "engine": args.engine,
        "max_flows": args.max_flows,
        "idle_timeout": args.idle_timeout,
        "capture_filter": CaptureFilter(args.filter) if args.filter else None,
    }
    if args.files.count("-") > 1:
        raise TreasonError("-", "standard input can be read only once")
    if args.engine == "auto" and not fast_available():
        print(
            "treason: note: the compiled scanner is not built (no C compiler at install time); "
            "using the reference engine, which is about 100 times slower",
            file=sys.stderr,
        )
    total = ScanStats()
    events: list[Event] = []
    errors: list[str] = []
    for file_events, stats, error in _results(args, options):
        events.extend(file_events)
        total.merge(stats)
        if error:
            errors.append(error)
    if total.frames or not errors:  # a file that is not a capture at all gets its one line only
        target = atomic_text(args.output, newline="") if args.output else nullcontext(sys.stdout)
        with target as out:
            _write(args, events, total, out)
    for message in errors:
        print(f"treason: {safe(message)}", file=sys.stderr)
    if errors:
        return 2
    return 1 if events else 0


def _write(args: argparse.Namespace, events: Sequence[Event], stats: ScanStats, out) -> None:
    if args.format == "text":
        write_report(events, stats, [_name(f) for f in args.files], out)
        return
    if args.format == "json":
        write_jsonl(events, out)
    else:
        write_csv(events, out)
    if not args.quiet:
        for line in summary_lines(stats, [_name(f) for f in args.files]):
            print(line, file=sys.stderr)
    for warning in stats.warnings:
        print(f"treason: warning: {safe(warning)}", file=sys.stderr)


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path
