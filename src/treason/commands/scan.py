"""``treason scan``: every receive-window shrink in one or more captures.

Several files are capture sets (``treason.sets``): files that follow each other in time are
read as one capture; ``--each`` reads every file on its own, ``--merge`` interleaves them by
time, ``--scheduler`` scans the sets on a Dask cluster (``treason.dask``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

from treason.commands.common import add_model_options, positive_int
from treason.errors import CaptureError, TreasonError
from treason.events import Event
from treason.output import progress
from treason.output.atomic import atomic_text
from treason.output.progress import open_with_progress
from treason.output.records import write_csv, write_jsonl
from treason.output.text import summary_lines, write_report
from treason.scanner import ScanStats, fast_available, scan
from treason.sets import CaptureSet, describe, plan_sets, scan_set
from treason.sets.source import is_url
from treason.terminal import safe

DESCRIPTION = """\
Find every place in a capture where a TCP receiver moved the right edge of its advertised
window (ACK + window << scale) to the left, classify it and show what Linux on the sender
would have logged. FILE may be pcap or pcapng, gzip-compressed or not, - for stdin
(tcpdump -w - | treason scan -), or an fsspec URL (file://..., s3://...).

Several files form capture sets: ordered by their first packet's time (never by name),
files that follow each other in time (rotated files, ring buffers, editcap pieces) are read
as one capture, so connections keep their handshake and state across the boundaries; files
that overlap in time (two vantage points) are separate captures unless --merge interleaves
them by time as mergecap would. --each scans every file on its own.

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
        help="scan up to N capture sets at once (default: all cores); results are the same",
    )
    sets = p.add_mutually_exclusive_group()
    sets.add_argument(
        "--each", action="store_true", help="scan every file on its own, never as one capture"
    )
    sets.add_argument(
        "--merge",
        action="store_true",
        help="interleave all files by packet time into one capture (as mergecap)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="scan on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' "
        "(one worker per core); needs treason[dask]. The result is that of the plain scan",
    )
    p.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for URLs (VALUE as JSON when it parses, else a string); repeatable",
    )
    add_model_options(p)
    p.set_defaults(func=run)


Result = tuple[list[Event], ScanStats, list[str]]


def _scan_one(capture_set: CaptureSet, options: dict, progress_bar: bool = False) -> Result:
    """One capture set in this process: its events, counters and error lines."""
    stats = ScanStats()
    events: list[Event] = []
    errors: list[CaptureError] = []
    storage = options.pop("storage_options", None)
    piece = capture_set.pieces[0].source
    if len(capture_set.pieces) == 1 and not is_url(piece):
        # one file: the plain scan, with a progress line on big files
        source = open_with_progress(piece) if progress_bar else None
        try:
            events.extend(scan(source or piece, stats=stats, **options))
        except TreasonError as exc:
            return events, stats, [str(exc)]
        finally:
            if source is not None:
                source.close()
        for event in events:
            event.capture_set = capture_set.number
        return events, stats, []
    events.extend(
        scan_set(capture_set, stats=stats, errors=errors, storage_options=storage, **options)
    )
    return events, stats, [str(e) for e in errors]


def _results(sets: list[CaptureSet], args: argparse.Namespace, options: dict) -> Iterator[Result]:
    if args.jobs > 1 and len(sets) > 1 and "-" not in args.files:
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(sets))) as pool:
            done = pool.map(_scan_one, sets, [options] * len(sets))
            for n, result in enumerate(done, 1):
                if progress.wanted():
                    sys.stderr.write(f"\r\x1b[Ktreason: {n} of {len(sets)} capture sets scanned")
                    sys.stderr.flush()
                yield result
            if progress.wanted():
                sys.stderr.write("\r\x1b[K")
    else:
        for capture_set in sets:
            yield _scan_one(capture_set, dict(options), progress_bar=True)


def _storage_options(pairs: Sequence[str]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise TreasonError("--storage-option", f"{pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def run(args: argparse.Namespace) -> int:
    options = {
        "retractions": args.all,
        "engine": args.engine,
        "max_flows": args.max_flows,
        "idle_timeout": args.idle_timeout,
    }
    if args.files.count("-") > 1:
        raise TreasonError("-", "standard input can be read only once")
    if args.engine == "auto" and not fast_available():
        print(
            "treason: note: the compiled scanner is not built (no C compiler at install time); "
            "using the reference engine, which is about 100 times slower",
            file=sys.stderr,
        )
    storage = _storage_options(args.storage_option)
    mode = "each" if args.each else "merge" if args.merge else "continue"
    total = ScanStats()
    events: list[Event] = []
    errors: list[str] = []
    if args.scheduler:
        from treason.dask import scan_on

        sets, events, total, errors = scan_on(
            args.scheduler, args.files, mode=mode, storage_options=storage, **options
        )
    else:
        sets = plan_sets(args.files, mode, storage)
        options["storage_options"] = storage
        for set_events, stats, set_errors in _results(sets, args, options):
            events.extend(set_events)
            total.merge(stats)
            errors.extend(set_errors)
    if total.frames or not errors:  # a file that is not a capture at all gets its one line only
        target = atomic_text(args.output, newline="") if args.output else nullcontext(sys.stdout)
        with target as out:
            _write(args, events, total, sets, out)
    for message in errors:
        print(f"treason: {safe(message)}", file=sys.stderr)
    if errors:
        return 2
    return 1 if events else 0


def _write(
    args: argparse.Namespace, events: Sequence[Event], stats: ScanStats, sets: list, out
) -> None:
    lines = [safe(line) for line in describe(sets)] if len(args.files) > 1 else []
    if args.format == "text":
        write_report(events, stats, [_name(f) for f in args.files], out)
        if lines:
            out.write("\nCapture sets (files read as one capture, in time order):\n")
            out.write("".join(line + "\n" for line in lines))
        return
    if args.format == "json":
        write_jsonl(events, out)
    else:
        write_csv(events, out)
    if not args.quiet:
        for line in summary_lines(stats, [_name(f) for f in args.files]) + lines:
            print(line, file=sys.stderr)
    for warning in stats.warnings:
        print(f"treason: warning: {safe(warning)}", file=sys.stderr)


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path
