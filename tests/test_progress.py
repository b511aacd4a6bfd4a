"""The progress line: drawn only for terminals, never changes what a scan finds."""

from __future__ import annotations

import io
from pathlib import Path

import treason
from treason.output import progress

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shrink.pcap"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_reader_counts_bytes_and_leaves_events_alone(monkeypatch):
    out = Terminal()
    monkeypatch.setattr(progress.time, "monotonic", iter(range(0, 10**6, 1)).__next__)
    size = EXAMPLE.stat().st_size
    reader = progress.ProgressReader(EXAMPLE.open("rb"), "shrink.pcap", size, out)
    events = list(treason.scan(reader, engine="reference"))
    reader.close()
    assert reader.done == size
    assert [e.key() for e in events] == [e.key() for e in treason.scan(EXAMPLE)]
    text = out.getvalue()
    assert "shrink.pcap: 100%" in text and text.endswith("\r\x1b[K")


def test_no_progress_when_not_a_terminal(tmp_path):
    assert not progress.wanted(io.StringIO())
    assert progress.open_with_progress(str(EXAMPLE)) is None  # stderr is not a tty under pytest
