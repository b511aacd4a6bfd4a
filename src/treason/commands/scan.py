"""``treason scan``: every receive-window shrink in one or more captures.

Several files are capture sets (``treason.sets``): files that follow each other in time are
read as one capture; ``--each`` reads every file on its own, ``--merge`` interleaves them by
time, ``--scheduler`` scans the sets on a Dask cluster (``treason.dask``).
"""

from __future__ import annotations

import argparse
import json
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
from treason.errors import CaptureError, TreasonError
from treason.events import Event
from treason.output import progress
from treason.output.atomic import Abandon, atomic_binary, output_text, scratch_directory
from treason.output.parquet import Parquet, require_pyarrow
from treason.output.progress import open_with_progress
from treason.output.records import Csv, EventWriter, JsonLines
from treason.output.text import TextReport, summary_lines
from treason.scanner import ScanStats, fast_available, scan
from treason.sets import CaptureSet, describe, plan_sets, scan_set
from treason.sets.source import is_url
from treason.terminal import safe

DESCRIPTION = """\
Find every place in a capture where a TCP receiver moved the right edge of its advertised
window (ACK + window << scale) to the left, classify it and show what Linux on the sender
would have logged. FILE may be pcap or pcapng, plain or gzip-, bzip2- or xz-compressed,
- for stdin (tcpdump -w - | treason scan -), or an fsspec URL (file://..., s3://...).

Several files form capture sets: ordered by their first packet's time (never by name),
files that follow each other in time (rotated files, ring buffers, editcap pieces) are read
as one capture, so connections keep their handshake and state across the boundaries; files
that overlap in time (two vantage points) are separate captures unless --merge interleaves
them by time as mergecap would. --each scans every file on its own. Standard input, pipes
and FIFOs (<(zcat x.pcap.gz)) can be read only once: each is a capture of its own.

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
    add_engine_option(p)
    add_model_options(p)
    add_filter_option(p)
    p.set_defaults(func=run)


#: Events per pickled batch in a worker's spool file.
SPOOL_BATCH = 4096


@dataclass
class SetScan:
    """One capture set's scan as the output sees it: its events (iterate once, in order), then
    the set's counters and its errors, final once the events are exhausted."""

    stats: ScanStats
    events: Iterator[Event] = field(default_factory=lambda: iter(()))
    errors: list[str] = field(default_factory=list)


def _events(
    capture_set: CaptureSet, options: dict[str, Any], stats: ScanStats, errors: list[str]
) -> Iterator[Event]:
    """The set's events; a set of one local file is the plain scan (with progress when
    ``options["progress"]``)."""
    options = dict(options)
    storage = options.pop("storage_options", None)
    show_progress = options.pop("progress", False)
    piece = capture_set.pieces[0].source
    if len(capture_set.pieces) == 1 and not is_url(piece):
        source = open_with_progress(piece) if show_progress else None
        try:
            for event in scan(source or piece, stats=stats, **options):
                event.capture_set = capture_set.number
                yield event
        except TreasonError as exc:
            errors.append(str(exc))
        finally:
            if source is not None:
                source.close()
        return
    damage: list[CaptureError] = []
    yield from scan_set(capture_set, stats=stats, errors=damage, storage_options=storage, **options)
    errors.extend(str(e) for e in damage)


def _scan_one(capture_set: CaptureSet, options: dict[str, Any], show_progress: bool) -> SetScan:
    """A lazy scan in this process: events reach the output as the engine makes them final."""
    result = SetScan(ScanStats())
    result.events = _events(
        capture_set, {**options, "progress": show_progress}, result.stats, result.errors
    )
    return result


def _scan_to_spool(
    capture_set: CaptureSet, options: dict[str, Any], spool: str
) -> tuple[ScanStats, list[str]]:
    """A worker's scan: events go to ``spool`` on disk in batches, never all into memory."""
    stats = ScanStats()
    errors: list[str] = []
    try:
        with open(spool, "wb") as out:
            batch: list[Event] = []
            for event in _events(capture_set, options, stats, errors):
                batch.append(event)
                if len(batch) >= SPOOL_BATCH:
                    pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
                    batch.clear()
            pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
    except OSError as exc:
        errors.append(f"{os.path.dirname(spool)}: cannot write: {exc.strerror}")
    return stats, errors


def _unspool(spool: str) -> Iterator[Event]:
    with open(spool, "rb") as f:
        while True:
            try:
                batch = pickle.load(f)
            except EOFError:
                break
            yield from batch
    os.unlink(spool)


def _results(
    args: argparse.Namespace, sets: list[CaptureSet], options: dict[str, Any]
) -> Iterator[SetScan]:
    """Every capture set's scan, in set order; sets in parallel with ``--jobs``."""
    if not (args.jobs > 1 and len(sets) > 1 and "-" not in args.files):
        for capture_set in sets:
            yield _scan_one(capture_set, options, show_progress=True)
        return
    with (
        scratch_directory("treason-scan-") as spool_dir,
        ProcessPoolExecutor(max_workers=min(args.jobs, len(sets))) as pool,
    ):
        spools = [os.path.join(spool_dir, f"{n}.events") for n in range(len(sets))]
        done = pool.map(_scan_to_spool, sets, [options] * len(sets), spools)
        for n, ((stats, errors), spool) in enumerate(zip(done, spools), 1):
            if progress.wanted():
                sys.stderr.write(f"\r\x1b[Ktreason: {n} of {len(sets)} capture sets scanned")
                sys.stderr.flush()
            yield SetScan(stats, _unspool(spool) if os.path.exists(spool) else iter(()), errors)
        if progress.wanted():
            sys.stderr.write("\r\x1b[K")


def _on_cluster(
    args: argparse.Namespace, options: dict[str, Any], mode: str
) -> tuple[list[CaptureSet], Iterator[SetScan]]:
    """``--scheduler``: the sets and one result holding every event, in capture order."""
    from treason.dask import scan_on

    sets, events, stats, errors = scan_on(args.scheduler, args.files, mode=mode, **options)
    return sets, iter([SetScan(stats, iter(events), errors)])


def _storage_options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
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
    mode = "each" if args.each else "merge" if args.merge else "continue"
    options["storage_options"] = _storage_options(args.storage_option)
    if args.scheduler:
        sets, results = _on_cluster(args, options, mode)
    else:
        sets = plan_sets(args.files, mode, options["storage_options"])
        results = _results(args, sets, options)
    described = [safe(line) for line in describe(sets)] if len(args.files) > 1 else []
    total = ScanStats()
    found = 0
    errors: list[str] = []
    with _open_output(args) as out:
        writer = _writer(args.format, out, names, args.all)
        for result in results:
            for event in result.events:
                writer.add(event)
                found += 1
            total.merge(result.stats)
            errors.extend(result.errors)
        if errors and not total.frames:
            raise Abandon  # a file that is not a capture at all gets its one line only
        writer.finish(total)
        if args.format == "text" and described:
            out.write("\nCapture sets (files read as one capture, in time order):\n")
            out.write("".join(line + "\n" for line in described))
        if args.format != "text":
            if not args.quiet:
                for line in summary_lines(total, names, args.all) + described:
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
