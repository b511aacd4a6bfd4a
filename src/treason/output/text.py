"""The terminal report: capture summary, who shrank their window, then every event.

Laid out for the person who saw the kernel line: the peer at fault first, the bytes it took
back, and for kernel-visible events the exact line their server would have logged.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import TextIO

from treason.events import Event, Severity
from treason.scanner import ScanStats
from treason.terminal import safe


def timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def flow(e: Event) -> str:
    tag = f" vlan {'.'.join(map(str, e.vlan))}" if e.vlan else ""
    if e.tunnel:
        tag += f" in {' '.join(e.tunnel)}"
    return f"{endpoint(e.src, e.sport)} -> {endpoint(e.dst, e.dport)}{tag}"


def summary_lines(stats: ScanStats, files: Sequence[str]) -> list[str]:
    what = safe(files[0]) if len(files) == 1 else f"{len(files)} captures"
    lines = [
        f"Capture: {what}",
        f"  {stats.frames} packets, {stats.segments} TCP segments, {stats.flows} TCP flows "
        f"({stats.handshakes} with handshake seen)",
    ]
    if stats.skipped:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.skipped.items()))
        lines.append(f"  skipped: {parts}")
    if stats.evicted_idle or stats.evicted_cap:
        lines.append(
            f"  flows evicted: {stats.evicted_idle} idle, {stats.evicted_cap} over --max-flows "
            "(a resumed flow starts without its handshake)"
        )
    m = stats.model
    notes = [
        (m.duplicates, "duplicate copies dropped"),
        (m.old_acks + m.stale_updates + m.paws_rejects, "old or reordered updates ignored"),
        (m.unseen_acks, "ACKs of data the capture missed"),
        (stats.events.get("retraction", 0), "sub-granularity retractions (--all shows them)"),
    ]
    noted = ", ".join(f"{n} {text}" for n, text in notes if n)
    if noted:
        lines.append(f"  {noted}")
    return lines


def peer_table(events: Sequence[Event]) -> list[str]:
    """One row per receiving host that shrank: who is at fault, how often, how badly."""
    by_peer: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_peer[e.src].append(e)
    rows = []
    for addr, evs in by_peer.items():
        flows = {(e.file, e.sport, e.dst, e.dport, e.vlan) for e in evs}
        ports = sorted({e.sport for e in evs})
        shown = ",".join(map(str, ports[:4])) + (",..." if len(ports) > 4 else "")
        rows.append(
            (
                addr,
                shown,
                len(evs),
                sum(e.cls is Severity.KERNEL for e in evs),
                sum(e.shrink_bytes for e in evs),
                max(e.beyond_bytes for e in evs),
                len(flows),
                max(e.cls for e in evs).label,
            )
        )
    rows.sort(key=lambda r: (-r[2], r[0]))
    head = ("peer that shrank", "ports", "events", "kernel", "bytes back", "max beyond", "flows")
    return _table((*head, "worst"), rows, right=(2, 3, 4, 5, 6))


def event_table(events: Sequence[Event], with_file: bool) -> list[str]:
    rows = []
    for e in events:
        cls = e.cls.label + (" (close)" if e.closing else "")
        if e.certainty != "definite":
            cls += " ?"
        scale = str(e.scale) if e.scale_known else f"{e.scale}?"
        row = [
            str(e.frame),
            timestamp(e.time),
            flow(e),
            f"{e.old_edge} -> {e.new_edge}",
            str(e.shrink_bytes),
            str(e.beyond_bytes),
            scale,
            cls,
        ]
        if with_file:
            row.insert(0, safe(e.file))
        rows.append(row)
    head = [
        "frame",
        "time (UTC)",
        "receiver -> sender",
        "right edge",
        "back",
        "beyond",
        "ws",
        "class",
    ]
    if with_file:
        head.insert(0, "file")
    off = 1 if with_file else 0
    lines = _table(head, rows, right=(off, off + 4, off + 5, off + 6))
    out = lines[:1]
    for line, e in zip(lines[1:], events):
        out.append(line)
        if e.kernel_line:
            out.append(f"      kernel log on {e.dst}: {e.kernel_line}")
    return out


def write_report(
    events: Sequence[Event], stats: ScanStats, files: Sequence[str], out: TextIO
) -> None:
    for line in summary_lines(stats, files):
        out.write(line + "\n")
    for warning in stats.warnings:
        out.write(f"  warning: {safe(warning)}\n")
    out.write("\n")
    if not events:
        out.write("No receive-window shrinks found.\n")
        return
    n_kernel = sum(e.cls is Severity.KERNEL for e in events)
    out.write(
        f"{len(events)} window shrink event(s); {n_kernel} of them Linux on the sender would log.\n"
        "A receiver moved the right edge (ACK + window) of the window it offered to the left.\n\n"
    )
    for line in peer_table(events):
        out.write(line + "\n")
    out.write("\n")
    for line in event_table(events, with_file=len(files) > 1):
        out.write(line + "\n")
    out.write(
        "\nback: bytes of offered window taken back; beyond: bytes already sent that now lie "
        "past the edge;\nws: window shift used (? = inferred, handshake not captured); "
        "class ? = possible under some shifts only.\n"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence], right: tuple[int, ...]) -> list[str]:
    cells = [list(map(str, head))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  " + "  ".join(parts).rstrip())
    return lines
