"""``treason logs``: find window-shrink reports in kernel logs and explain them."""

from __future__ import annotations

import argparse
import sys

from treason.errors import TreasonError
from treason.logs import LogScan, scan_records
from treason.logs.formats import read_file, rotation_order
from treason.logs.output import write_atomic
from treason.logs.summary import render


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "logs",
        help="find and explain window-shrink reports in kernel logs",
        description=(
            "Read kernel logs (syslog, journalctl, dmesg, /dev/kmsg; rotated and .gz; '-' for "
            "stdin) and summarise every 'Treason uncloaked' / 'unexpectedly shrunk window' / "
            "'Probing zero-window' report. Without FILE, reads the local journal, else "
            "/var/log/kern.log*, else dmesg. Exit status: 0 none found, 1 found, 2 error."
        ),
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="log files ('-' = stdin)")
    p.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="text summary (default), JSON Lines or CSV (one record per report)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically)")
    p.add_argument("--no-explain", action="store_true", help="summary without the explanation")
    p.add_argument(
        "--logwatch-section",
        action="store_true",
        help="read stdin and print a logwatch service section (used by the "
        "installed logwatch service)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="follow the journal, kern.log or FILE (tail -F) and explain each report as it "
        "arrives, until SIGINT/SIGTERM",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "follow", False):
        from treason.logs.follow import run_follow

        return run_follow(list(args.files), args.format)
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
                scan_records(read_file(path), scan)
            except TreasonError as exc:
                errors.append(exc)
    else:
        from treason.logs.system import read_system

        source_note, scan = read_system()
        print(f"treason: read {source_note}", file=sys.stderr)

    if args.logwatch_section:
        text = render(scan, "text") if scan.lines else ""
    else:
        text = render(scan, args.format, explain=not args.no_explain)
        if args.format == "text" and source_note:
            text = f"Source: {source_note}\n\n{text}"
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    for exc in errors[:-1]:
        print(f"treason: {exc}", file=sys.stderr)
    if errors:
        raise errors[-1]
    return 1 if scan.lines else 0
