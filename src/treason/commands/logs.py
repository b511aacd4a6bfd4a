"""``treason logs``: find window-shrink reports in kernel logs and explain them."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Iterator

from treason.errors import TreasonError
from treason.logs import LogLine, LogScan, match_record
from treason.logs.bulk import scan_file
from treason.logs.explain import explain_shrink
from treason.logs.formats import Record, rotation_order
from treason.logs.grammar import Shrink, parse_marker
from treason.logs.summary import render, render_logwatch
from treason.output.atomic import output_text
from treason.terminal import safe


def detail_level(text: str) -> int:
    """logwatch's detail levels: a number 0-10 or Low (0), Med (5), High (10)."""
    named = {"low": 0, "med": 5, "medium": 5, "high": 10}
    if text.lower() in named:
        return named[text.lower()]
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number 0-10, or Low, Med, High") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError("a number 0-10, or Low, Med, High")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "logs",
        help="find and explain window-shrink reports in kernel logs",
        description=(
            "Read kernel logs (syslog, journalctl, dmesg, /dev/kmsg, logwatch reports in text "
            "or HTML, pasted lines, also as a mail client wrapped them; rotated and .gz; '-' "
            "for stdin) and summarise every 'Treason uncloaked' / "
            "'unexpectedly shrunk window' / 'Probing zero-window' report. Without FILE, reads "
            "the local journal, else /var/log/kern.log*, else dmesg. Exit status: 0 none "
            "found, 1 found, 2 error."
        ),
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="log files ('-' = stdin)")
    p.add_argument(
        "-f",
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="text summary (default), JSON Lines or CSV (one record per report)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically)")
    p.add_argument("--no-explain", action="store_true", help="summary without the explanation")
    p.add_argument(
        "--detail",
        type=detail_level,
        default=None,
        metavar="LEVEL",
        help="how much of long lists to show, as logwatch's Detail: 0-4 the top 10 entries "
        "(default), 5-9 the top 50, 10 all of them; the logwatch section is short below 5 "
        "and lists the kernel's lines from 5 (default there: $LOGWATCH_DETAIL_LEVEL)",
    )
    p.add_argument(
        "--logwatch-section",
        action="store_true",
        help="read stdin and print a logwatch service section (used by the "
        "installed logwatch service)",
    )
    p.add_argument(
        "-F",
        "--follow",
        action="store_true",
        help="follow the journal, kern.log or FILE (like tail -F: across rotation) and "
        "explain each report as it arrives, until SIGINT/SIGTERM",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.follow:
        return run_follow(list(args.files), args.format, explain=not args.no_explain)
    scan = LogScan()
    errors: list[TreasonError] = []
    files = list(args.files)
    source_note = None
    if args.logwatch_section and not files:
        files = ["-"]
    if files:
        for path in rotation_order(files):
            scan.sources.append(path)
            try:
                scan_file(path, scan)
            except TreasonError as exc:
                errors.append(exc)
    else:
        from treason.logs.system import read_system

        source_note, scan = read_system()
        print(f"treason: read {safe(source_note)}", file=sys.stderr)

    if args.logwatch_section:
        detail = args.detail if args.detail is not None else _logwatch_detail()
        text = render_logwatch(scan, detail)
    else:
        detail = args.detail or 0
        text = render(
            scan, args.format, explain=not args.no_explain, detail=detail, unread=len(errors)
        )
        if args.format == "text" and source_note:
            text = f"Source: {source_note}\n\n{text}"
    with output_text(args.output, inputs=files) as out:
        out.write(text)
    for error in errors[:-1]:
        print(f"treason: {safe(str(error))}", file=sys.stderr)
    if errors:
        raise errors[-1]
    return 1 if scan.lines else 0


def _logwatch_detail() -> int:
    """The detail level logwatch runs its service scripts with (``LOGWATCH_DETAIL_LEVEL``)."""
    import os

    try:
        return detail_level(os.environ.get("LOGWATCH_DETAIL_LEVEL", "0") or "0")
    except argparse.ArgumentTypeError:
        return 0


class _Stop(Exception):
    """Raised from the SIGINT/SIGTERM handler to end a blocking read."""


def run_follow(files: list[str], fmt: str, explain: bool = True) -> int:
    """Explain each window-shrink report as it is written; SIGINT/SIGTERM end with exit 0."""
    from treason.logs.follow import default_source, source_for

    if fmt not in ("text", "json"):
        raise TreasonError("--follow", "prints text or json, one report at a time")
    if len(files) > 1:
        raise TreasonError("--follow", "follows one source at a time")
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)
        raise _Stop

    # Handlers first: opening a FIFO waits for its writer, and SIGINT must end that wait too.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    found = 0
    name = files[0] if files else "the system log"
    try:
        records: Callable[[], Iterator[Record]]
        if files:
            records = source_for(files[0], lambda: bool(stop))
        else:
            name, records = default_source()
        stream = records()
        print(f"treason: following {safe(name)} (SIGINT or SIGTERM stops)", file=sys.stderr)
        sys.stderr.flush()
        for record in stream:
            shrink = match_record(record)
            if shrink is not None:  # counted before it is shown: a signal may follow
                found += record.count  # logwatch's "N Time(s):" is N reports
            _show(record, shrink, fmt, explain)
    except _Stop:
        pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"treason: {found} report(s) seen while following {safe(name)}", file=sys.stderr)
    return 0


def _show(record: Record, shrink: Shrink | None, fmt: str, explain: bool) -> None:
    """Write one followed record if it is a report (or, in text, a rate-limit marker)."""
    out = sys.stdout
    if shrink is None:
        marker = parse_marker(record.message) if record.kernel else None
        if marker is not None and marker.kind != "repeated" and fmt == "text":
            out.write(f"(up to {marker.count} more reports suppressed by rate limiting)\n")
            out.flush()
        return
    if fmt == "json":
        line = LogLine(record, shrink, repeats=record.repeats).to_dict()
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
    elif explain:
        out.write(f"== {safe(record.raw.rstrip())}\n{explain_shrink(shrink, record)}\n")
    else:
        out.write(f"{safe(record.raw.rstrip())}\n")
    out.flush()
