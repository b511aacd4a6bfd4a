"""``treason scan``: every receive-window shrink in one or more captures."""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from treason.capfilter import CaptureFilter
from treason.commands.common import (
    add_engine_option,
    add_filter_option,
    add_model_options,
    positive_int,
)
from treason.errors import TreasonError
from treason.events import Event
from treason.output import progress
from treason.output.atomic import Abandon, atomic_binary, output_text, scratch_directory
from treason.output.parquet import Parquet, require_pyarrow
from treason.output.progress import open_with_progress
from treason.output.records import Csv, EventWriter, JsonLines
from treason.output.text import TextReport, summary_lines
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scan",
        help="find window shrinks in packet captures",
        description=DESCRIPTION,
        epilog="exit status: 0 nothing found, 1 events found, 2 error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="capture file, or - for stdin")
    p.add_argument(
        "-f",
        "--format",
        choices=("text", "json", "csv", "parquet"),
        default="text",
        help="output format (parquet needs -o FILE and pyarrow: pip install 'treason[parquet]')",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically)")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no capture summary with json/csv/parquet"
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="scan up to N files at once (default: all cores); results are the same",
    )
    add_engine_option(p)
    add_model_options(p)
    add_filter_option(p)
    p.set_defaults(func=run)


#: Events per pickled batch in a worker's spool file.
SPOOL_BATCH = 4096


@dataclass
class FileScan:
    """One file's scan as the output sees it: its events (iterate once, in order), then the
    file's counters and its error, final once the events are exhausted."""

    stats: ScanStats
    events: Iterator[Event] = field(default_factory=lambda: iter(()))
    error: str | None = None


def _scan_one(path: str, options: dict[str, Any], show_progress: bool) -> FileScan:
    """A lazy scan in this process: events reach the output as the engine makes them final."""
    result = FileScan(ScanStats())

    def events() -> Iterator[Event]:
        source = open_with_progress(path) if show_progress else None
        try:
            yield from scan(source or path, stats=result.stats, **options)
        except TreasonError as exc:
            result.error = str(exc)
        finally:
            if source is not None:
                source.close()

    result.events = events()
    return result


def _scan_to_spool(path: str, options: dict[str, Any], spool: str) -> tuple[ScanStats, str | None]:
    """A worker's scan: events go to ``spool`` on disk in batches, never all into memory."""
    stats = ScanStats()
    error = None
    try:
        with open(spool, "wb") as out:
            batch: list[Event] = []
            try:
                for event in scan(path, stats=stats, **options):
                    batch.append(event)
                    if len(batch) >= SPOOL_BATCH:
                        pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
                        batch.clear()
            except TreasonError as exc:
                error = str(exc)
            pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
    except OSError as exc:
        error = f"{os.path.dirname(spool)}: cannot write: {exc.strerror}"
    return stats, error


def _unspool(spool: str) -> Iterator[Event]:
    with open(spool, "rb") as f:
        while True:
            try:
                batch = pickle.load(f)
            except EOFError:
                break
            yield from batch
    os.unlink(spool)


def _results(args: argparse.Namespace, options: dict[str, Any]) -> Iterator[FileScan]:
    """Every file's scan, in the order given; files in parallel with ``--jobs``."""
    files = args.files
    if not (args.jobs > 1 and len(files) > 1 and "-" not in files):
        for path in files:
            yield _scan_one(path, options, show_progress=True)
        return
    with (
        scratch_directory("treason-scan-") as spool_dir,
        ProcessPoolExecutor(max_workers=min(args.jobs, len(files))) as pool,
    ):
        spools = [os.path.join(spool_dir, f"{n}.events") for n in range(len(files))]
        done = pool.map(_scan_to_spool, files, [options] * len(files), spools)
        for n, ((stats, error), spool) in enumerate(zip(done, spools), 1):
            if progress.wanted():
                sys.stderr.write(f"\r\x1b[Ktreason: {n} of {len(files)} files scanned")
                sys.stderr.flush()
            yield FileScan(stats, _unspool(spool) if os.path.exists(spool) else iter(()), error)
        if progress.wanted():
            sys.stderr.write("\r\x1b[K")


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
    if args.format == "parquet":
        require_pyarrow()
        if not args.output:
            raise TreasonError("--format parquet", "writes a file: give -o FILE")
    if args.engine == "auto" and not fast_available():
        print(
            "treason: note: the compiled scanner is not built (no C compiler at install time); "
            "using the reference engine, which is about 100 times slower",
            file=sys.stderr,
        )
    names = [_name(f) for f in args.files]
    total = ScanStats()
    found = 0
    errors: list[str] = []
    with _open_output(args) as out:
        writer = _writer(args.format, out, names, args.all)
        for result in _results(args, options):
            for event in result.events:
                writer.add(event)
                found += 1
            total.merge(result.stats)
            if result.error:
                errors.append(result.error)
        if errors and not total.frames:
            raise Abandon  # a file that is not a capture at all gets its one line only
        writer.finish(total)
        if args.format != "text":
            if not args.quiet:
                for line in summary_lines(total, names, args.all):
                    print(line, file=sys.stderr)
            for warning in total.warnings:
                print(f"treason: warning: {safe(warning)}", file=sys.stderr)
    for message in errors:
        print(f"treason: {safe(message)}", file=sys.stderr)
    if errors:
        return 2
    return 1 if found else 0


def _open_output(args: argparse.Namespace) -> AbstractContextManager[Any]:
    """``-o FILE`` atomically (never over an input) or standard output; binary for Parquet."""
    if args.format == "parquet":
        return atomic_binary(args.output, inputs=args.files)
    return output_text(args.output, newline="", inputs=args.files)


def _writer(fmt: str, out: Any, names: list[str], retractions_shown: bool) -> EventWriter:
    if fmt == "text":
        return TextReport(out, names, retractions_shown)
    if fmt == "json":
        return JsonLines(out)
    if fmt == "csv":
        return Csv(out, terminal=out.isatty())
    return Parquet(out)


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path
