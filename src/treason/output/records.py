"""JSON Lines and CSV views of events (schema: docs/events.md)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import TextIO

from treason.events import Event

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
)


def write_jsonl(events: Iterable[Event], out: TextIO) -> int:
    n = 0
    for event in events:
        out.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
        n += 1
    return n


def write_csv(events: Iterable[Event], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    n = 0
    for event in events:
        row = event.to_dict()
        row["vlan"] = ".".join(map(str, event.vlan))
        row["kernel_line"] = row["kernel_line"] or ""
        row["tunnel"] = " ".join(event.tunnel)
        row["outer"] = " ".join(f"{src}>{dst}" for src, dst in event.outer)
        writer.writerow(row)
        n += 1
    return n
