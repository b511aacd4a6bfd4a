"""The terminal report: capture summary, who shrank their window, then every event.

Laid out for the person who saw the kernel line: the peer at fault first, the bytes it took
back, and for kernel-visible events the exact line their server would have logged.

The summary and the peer table come first but are only known at the end, and the event table
is aligned on its widest cell. So the report is built as events stream past: the peer table as
counts per peer (``present.PeerTable``), the event rows in an unlinked temporary file on disk
with the running column widths. Memory stays bounded however many events a capture has; every
cell is capped (``present.MAX_CELL``), so one absurd event cannot widen every row.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from typing import TextIO

from treason.events import Event, Severity
from treason.output.present import (
    PeerRow,
    PeerTable,
    class_text,
    edges_text,
    event_flow,
    file_text,
    scale_text,
    timestamp,
)
from treason.scanner import ScanStats
from treason.terminal import safe

PEER_HEAD = ("peer that shrank", "ports", "events", "kernel", "bytes back", "max beyond", "flows")
EVENT_HEAD = ("frame", "time (UTC)", "receiver -> sender", "right edge", "back", "beyond", "ws")


def summary_lines(
    stats: ScanStats, files: Sequence[str], retractions_shown: bool = False
) -> list[str]:
    what = file_text(files[0]) if len(files) == 1 else f"{len(files)} captures"
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
    if stats.over_snaplen:
        records = "record" if stats.over_snaplen == 1 else "records"
        lines.append(f"  {stats.over_snaplen} {records} longer than the snap length, read whole")
    m = stats.model
    notes = [
        (m.duplicates, "duplicate copies dropped"),
        (m.old_acks + m.stale_updates + m.paws_rejects, "old or reordered updates ignored"),
        (m.unseen_acks, "ACKs of data the capture missed"),
        (
            stats.events.get("retraction", 0),
            "sub-granularity retractions "
            + ("(shown)" if retractions_shown else "(--all shows them)"),
        ),
    ]
    noted = ", ".join(f"{n} {text}" for n, text in notes if n)
    if noted:
        lines.append(f"  {noted}")
    return lines


class TextReport:
    """The report of ``files``, fed one event at a time; ``finish`` writes it to ``out``."""

    def __init__(self, out: TextIO, files: Sequence[str], retractions_shown: bool = False) -> None:
        self.out = out
        self.files = files
        self.retractions_shown = retractions_shown
        self.with_file = len(files) > 1
        self.peers = PeerTable()
        self.events = 0
        self.kernel = 0
        head = ["file", *EVENT_HEAD, "class"] if self.with_file else [*EVENT_HEAD, "class"]
        self.head = head
        self.widths = [len(h) for h in head]
        self._rows = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed by finish

    def add(self, e: Event) -> None:
        self.events += 1
        self.kernel += e.cls is Severity.KERNEL
        self.peers.add(e)
        row = event_cells(e, self.with_file)
        self.widths = [max(w, len(cell)) for w, cell in zip(self.widths, row)]
        self._rows.write(json.dumps([row, kernel_note(e)]) + "\n")

    def finish(self, stats: ScanStats) -> None:
        w = self.out.write
        for line in summary_lines(stats, self.files, self.retractions_shown):
            w(line + "\n")
        for warning in stats.warnings:
            w(f"  warning: {safe(warning)}\n")
        w("\n")
        if not self.events:
            w("No receive-window shrinks found.\n")
            self._rows.close()
            return
        w(
            f"{self.events} window shrink event(s); {self.kernel} of them Linux on the sender "
            "would log.\n"
            "A receiver moved the right edge (ACK + window) of the window it offered to the "
            "left.\n\n"
        )
        for line in peer_lines(self.peers.rows()):
            w(line + "\n")
        w("\n")
        right = _event_right(self.with_file)
        w(_line(self.head, self.widths, right) + "\n")
        self._rows.seek(0)
        for text in self._rows:
            row, note = json.loads(text)
            w(_line(row, self.widths, right) + "\n")
            if note:
                w(note + "\n")
        self._rows.close()
        w(
            "\nback: bytes of offered window taken back; beyond: bytes already sent that now lie "
            "past the edge;\nws: window shift used (? = inferred, handshake not captured); "
            "class ? = possible under some shifts only.\n"
        )


def event_cells(e: Event, with_file: bool) -> list[str]:
    """One event's row of the event table (``present`` names every cell)."""
    row = [
        str(e.frame),
        timestamp(e.time),
        event_flow(e),
        edges_text(e),
        str(e.shrink_bytes),
        str(e.beyond_bytes),
        scale_text(e),
        class_text(e),
    ]
    if with_file:
        row.insert(0, file_text(e.file))
    return row


def kernel_note(e: Event) -> str | None:
    """The line under a kernel-visible event's row: what Linux on the sender logs."""
    return f"      kernel log on {e.dst}: {e.kernel_line}" if e.kernel_line else None


def event_lines(events: Sequence[Event], with_file: bool) -> list[str]:
    """The event table of events a view already holds (the plot page's, per graph), laid out
    as the report lays out its own: the header, then each row and its kernel note."""
    head = ["file", *EVENT_HEAD, "class"] if with_file else [*EVENT_HEAD, "class"]
    rows = [event_cells(e, with_file) for e in events]
    lines = _table(head, rows, right=_event_right(with_file))
    out = lines[:1]
    for line, e in zip(lines[1:], events):
        out.append(line)
        note = kernel_note(e)
        if note:
            out.append(note)
    return out


def peer_lines(rows: Sequence[PeerRow]) -> list[str]:
    """The peer table (``present.PeerTable``'s rows) as every text view lays it out."""
    cells = [
        (r.peer, r.ports, r.events, r.kernel, r.bytes_back, r.max_beyond, r.flows, r.worst.label)
        for r in rows
    ]
    return _table((*PEER_HEAD, "worst"), cells, right=(2, 3, 4, 5, 6))


def _event_right(with_file: bool) -> tuple[int, ...]:
    """The right-aligned columns of the event table: frame, back, beyond, ws."""
    off = 1 if with_file else 0
    return (off, off + 4, off + 5, off + 6)


def _table(
    head: Sequence[str], rows: Sequence[Sequence[object]], right: tuple[int, ...]
) -> list[str]:
    cells = [list(map(str, head))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return [_line(row, widths, right) for row in cells]


def _line(row: Sequence[str], widths: Sequence[int], right: tuple[int, ...]) -> str:
    parts = [
        cell.rjust(w) if i in right else cell.ljust(w)
        for i, (cell, w) in enumerate(zip(row, widths))
    ]
    return "  " + "  ".join(parts).rstrip()
