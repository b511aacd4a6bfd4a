"""One presentation of an event (``treason.output.present``) in every view, and ``match``'s words.

The terminal report, ``live``, ``match`` and the plot page name an event's class and flow
through the same functions; the peer table is counted once. ``match`` warns when its capture
was cut short, and never shows a log file's name raw on the terminal.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from dataclasses import replace
from html import unescape
from pathlib import Path

import treason
import tunnels
from captures import pcap
from treason.cli import main
from treason.events import Event, Severity
from treason.live.report import event_text
from treason.output.present import class_text, event_flow, peer_rows, scale_text
from treason.output.text import TextReport
from treason.scanner import ScanStats

ROOT = Path(__file__).resolve().parent.parent
KERNEL_EXAMPLE = ROOT / "examples" / "kernel.pcap"
EXAMPLE = ROOT / "examples" / "shrink.pcap"


def kernel_events() -> list[Event]:
    return [e for e in treason.scan(KERNEL_EXAMPLE) if e.cls is Severity.KERNEL]


def report_lines(events: list[Event], capture: Path) -> list[str]:
    """The text report of ``events`` from ``capture``, line by line."""
    out = io.StringIO()
    report = TextReport(out, [str(capture)])
    for e in events:
        report.add(e)
    report.finish(ScanStats())
    return out.getvalue().splitlines()


def test_class_text() -> None:
    e = kernel_events()[0]
    assert class_text(replace(e, closing=False, certainty="definite")) == "kernel"
    assert class_text(replace(e, closing=True, certainty="definite")) == "kernel (close)"
    assert class_text(replace(e, closing=True, certainty="possible")) == "kernel (close) ?"
    assert class_text(replace(e, cls=Severity.SHRINK, certainty="possible")) == "shrink ?"
    assert scale_text(replace(e, scale=7, scale_known=False)) == "7?"


def test_report_and_live_show_an_event_the_same_way() -> None:
    events = kernel_events()
    rows = report_lines(events, KERNEL_EXAMPLE)
    for e in events:
        live = event_text(e)
        assert f"{class_text(e)}: {event_flow(e)}" in live[0]
        row = next(r for r in rows if r.split()[:1] == [str(e.frame)])
        assert event_flow(e) in row and row.endswith(class_text(e))
        assert live[1].strip() in [r.strip() for r in rows]  # the kernel line, word for word


def test_the_plot_page_shows_an_event_as_the_report_does(tmp_path: Path) -> None:
    """Tunnelled events (VXLAN 42, an inner VLAN): the page's graph titles, event rows and
    peer table say what the text report says, cell for cell."""
    wrap, _ = tunnels.ENCAPSULATIONS["vxlan"]
    packets = tunnels.conversation(False) + tunnels.conversation(True)
    capture = tmp_path / "vxlan.pcap"
    capture.write_bytes(pcap((i * 1_000_000, wrap(p)) for i, p in enumerate(packets)))
    events = list(treason.scan(capture))
    assert len(events) == 2 and all(e.tunnel for e in events)
    page = tmp_path / "page.html"
    assert main(["plot", str(capture), "-o", str(page)]) == 1
    html = unescape(page.read_text(encoding="utf-8"))
    text = report_lines(events, capture)
    shown = [line.split() for block in re.findall(r'<pre class="events">(.*?)</pre>', html, re.S)
             for line in block.splitlines()[1:]]  # fmt: skip
    for e in events:
        assert f"<h2>{event_flow(e)}</h2>" in html
        row = next(r.split() for r in text if r.split()[:1] == [str(e.frame)])
        assert row in shown
    peers = re.search(r'<pre class="peers">(.*?)</pre>', html, re.S)
    assert peers is not None
    head = next(i for i, x in enumerate(text) if x.lstrip().startswith("peer that shrank"))
    assert peers[1].splitlines() == text[head : head + 1 + len(peer_rows(events))]


def test_peer_rows_count_what_the_report_shows() -> None:
    events = list(treason.scan(EXAMPLE))
    rows = peer_rows(events)
    assert sum(r.events for r in rows) == len(events)
    lines = report_lines(events, EXAMPLE)
    for r in rows:
        line = next(x for x in lines if x.split()[:1] == [r.peer])
        assert line.split()[2:5] == [str(r.events), str(r.kernel), str(r.bytes_back)]


def match(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "treason", "match", *args], capture_output=True, timeout=120
    )


def test_match_on_a_truncated_capture_warns(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(KERNEL_EXAMPLE.read_bytes()[:-10])
    event = kernel_events()[0]
    log = tmp_path / "kern.log"
    log.write_text(f"Jan  1 00:00:00 host kernel: [  1.000000] {event.kernel_line}\n")
    res = match(str(log), str(cut))
    assert res.returncode == 1, res.stderr
    err = res.stderr.decode()
    assert err.startswith(f"treason: warning: {cut}: truncated record")
    assert "(at byte " in err and err.count("\n") == 1
    assert f"= frame {event.frame}: {event_flow(event)}" in res.stdout.decode()
    whole = match(str(log), str(KERNEL_EXAMPLE))
    assert whole.returncode == 1 and whole.stderr == b""


def test_match_escapes_log_file_names(tmp_path: Path) -> None:
    event = kernel_events()[0]
    log = tmp_path / "kern\x1b[31m.log"
    log.write_text(f"Jan  1 00:00:00 host kernel: [  1.000000] {event.kernel_line}\n")
    res = match(str(log), str(KERNEL_EXAMPLE))
    assert res.returncode == 1, res.stderr
    assert b"\x1b" not in res.stdout and b"kern\\x1b[31m.log:1:" in res.stdout
