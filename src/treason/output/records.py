"""JSON Lines and CSV views of events (schema: docs/events.md), streamed as events become final.

Each writer takes events one at a time (``add``) and never keeps them: a capture with millions
of events costs the memory of one. ``finish`` ends the output once the scan is over.
"""

from __future__ import annotations

import csv
import json
from typing import Protocol, TextIO

from treason.events import Event
from treason.scanner import ScanStats
from treason.terminal import safe

#: CSV columns, in order: the JSON fields minus the per-era kernel lines.
CSV_FIELDS = (
    "file",
    "frame",
    "time",
    "src",
    "sport",
    "dst",
    "dport",
    "vlan",
    "class",
    "closing",
    "certainty",
    "old_edge",
    "new_edge",
    "shrink_bytes",
    "beyond_bytes",
    "snd_una",
    "snd_nxt",
    "ack",
    "win",
    "scale",
    "scale_known",
    "kernel_line",
    "tunnel",
    "outer",
    "capture_set",
)


class JsonLines:
    """One JSON object per event, written as it arrives (control characters as ``\\u001b``)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def add(self, event: Event) -> None:
        self.out.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")

    def finish(self, stats: ScanStats) -> None:
        """Nothing to add: every event is already out."""


class Csv:
    """One CSV row per event, written as it arrives; the header with the first row.

    ``terminal``: the rows are shown on a terminal, so the one column that comes from outside
    (``file``, a path the user or a glob gave) has its control characters escaped. Into a file
    or a pipe the name is written as it is, as data.
    """

    def __init__(self, out: TextIO, *, terminal: bool = False) -> None:
        self.writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
        self.terminal = terminal
        self._header = False

    def add(self, event: Event) -> None:
        if not self._header:
            self.writer.writeheader()
            self._header = True
        row = event.to_dict()
        row["vlan"] = ".".join(map(str, event.vlan))
        row["kernel_line"] = row["kernel_line"] or ""
        row["tunnel"] = " ".join(event.tunnel)
        row["outer"] = " ".join(f"{src}>{dst}" for src, dst in event.outer)
        if self.terminal:
            row["file"] = safe(row["file"])
        self.writer.writerow(row)

    def finish(self, stats: ScanStats) -> None:
        if not self._header:
            self.writer.writeheader()
            self._header = True


class EventWriter(Protocol):
    """What ``scan`` streams events into: every output format implements it."""

    def add(self, event: Event) -> None: ...

    def finish(self, stats: ScanStats) -> None: ...
