"""``treason match LOGFILE CAPTURE``: which log lines are which capture events."""

from __future__ import annotations

import argparse
import json
import sys

from treason.errors import TreasonError
from treason.events import Event
from treason.logs import LogLine, LogScan
from treason.logs.bulk import scan_file
from treason.logs.match import MatchResult, match
from treason.output.atomic import output_text
from treason.output.present import event_flow
from treason.scanner import ScanStats
from treason.terminal import safe


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "match",
        help="pair kernel log lines with the shrink events of a capture",
        description=(
            "Pair each window-shrink line of LOGFILE with the kernel-visible event of CAPTURE "
            "that it reports (same peer, ports and X:Y), and list what has no counterpart on "
            "either side. Exit status: 0 no pair, 1 pairs found, 2 error."
        ),
    )
    p.add_argument("logfile", metavar="LOGFILE", help="kernel log ('-' = stdin)")
    p.add_argument("capture", metavar="CAPTURE", help="pcap/pcapng capture")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically)")
    p.set_defaults(func=run)


def _line(ln: LogLine) -> str:
    return f"{safe(ln.record.source)}:{ln.record.lineno}: {safe(ln.record.raw.rstrip())}"


def _event(ev: Event) -> str:
    """The event as a Linux log names it: peer, ports and X:Y (``snd_una:snd_nxt``)."""
    return f"frame {ev.frame}: {event_flow(ev)} X:Y {ev.snd_una}:{ev.snd_nxt}"


def render_text(result: MatchResult) -> str:
    out = [f"{len(result.pairs)} log line(s) matched capture events"]
    for ln, ev in result.pairs:
        out.append(f"  {_line(ln)}\n    = {_event(ev)}")
    out.append(f"{len(result.unmatched_lines)} log line(s) without a capture event")
    for ln, near in result.unmatched_lines:
        out.append(f"  {_line(ln)}")
        if near is not None:
            out.append(f"    same connection in the capture, other stall: {_event(near)}")
    out.append(f"{len(result.unmatched_events)} kernel-visible capture event(s) without a log line")
    for ev in result.unmatched_events:
        out.append(f"  {_event(ev)}")
        if ev.kernel_line:
            out.append(f"    the kernel would have logged: {ev.kernel_line}")
    return "\n".join(out) + "\n"


def render_json(result: MatchResult) -> str:
    rows: list[dict[str, object]] = []
    for ln, ev in result.pairs:
        rows.append({"status": "matched", "log": ln.to_dict(), "event": ev.to_dict()})
    for ln, near in result.unmatched_lines:
        rows.append(
            {
                "status": "log-only",
                "log": ln.to_dict(),
                "same_connection_event": near.to_dict() if near else None,
            }
        )
    for ev in result.unmatched_events:
        rows.append({"status": "capture-only", "event": ev.to_dict()})
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows)


def run(args: argparse.Namespace) -> int:
    import treason

    scan = LogScan()
    log_error: TreasonError | None = None
    try:
        scan_file(args.logfile, scan)
    except TreasonError as exc:
        log_error = exc
    events = []
    stats = ScanStats()
    cap_error: TreasonError | None = None
    try:
        for ev in treason.scan(args.capture, stats=stats):
            events.append(ev)
    except TreasonError as exc:
        cap_error = exc
    for warning in stats.warnings:  # a cut capture: its last events may be missing
        print(f"treason: warning: {safe(warning)}", file=sys.stderr)
    result = match(scan.lines, events)
    text = render_json(result) if args.format == "json" else render_text(result)
    with output_text(args.output, newline="", inputs=(args.logfile, args.capture)) as out:
        out.write(text)
    if log_error and cap_error:
        print(f"treason: {safe(str(log_error))}", file=sys.stderr)
    if cap_error or log_error:
        raise cap_error or log_error  # type: ignore[misc]
    return 1 if result.pairs else 0
