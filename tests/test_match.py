"""``treason match``: log lines paired with capture events by peer, ports and X:Y."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import treason
from treason.cli import main
from treason.events import Event, Severity
from treason.kernel import kernel_lines
from treason.logs import scan_records
from treason.logs.formats import read_stream
from treason.logs.match import match

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shrink.pcap"


def event(peer: str, pport: int, lport: int, x: int, y: int, cls=Severity.KERNEL) -> Event:
    return Event(
        frame=7, time=1.0, src=peer, sport=pport, dst="192.0.2.1", dport=lport, vlan=(),
        cls=cls, closing=False, certainty="definite", old_edge=y + 100, new_edge=x,
        shrink_bytes=100, beyond_bytes=y - x, snd_una=x, snd_nxt=y, ack=x, win=0, scale=0,
        scale_known=True,
    )  # fmt: skip


def lines(text: str):
    return scan_records(read_stream("t", io.BufferedReader(io.BytesIO(text.encode())))).lines


def test_pairs_by_peer_ports_and_x_y() -> None:
    ev1 = event("2001:db8::5", 443, 51000, 10, 20)
    ev2 = event("198.51.100.7", 80, 51001, 5, 6)
    orphan = event("198.51.100.8", 80, 51002, 5, 6)
    log = "".join(
        f"[  {i}.0] {line}\n"
        for i, line in enumerate([
            ev1.kernel_lines["2.4.17"],  # any era's wording pairs
            ev1.kernel_lines["6.6"],
            kernel_lines("::ffff:198.51.100.7", 80, 51001, 5, 6)["3.13"],  # v4-mapped
            kernel_lines("198.51.100.7", 80, 51001, 99, 100)["3.13"],  # same conn, other stall
            kernel_lines("203.0.113.1", 80, 51001, 5, 6)["3.13"],  # nobody
        ])
    )  # fmt: skip
    result = match(lines(log), [ev1, ev2, orphan, replace(ev2, cls=Severity.SHRINK, frame=9)])
    assert [(ln.record.lineno, ev.frame, ev.src) for ln, ev in result.pairs] == [
        (1, 7, "2001:db8::5"), (2, 7, "2001:db8::5"), (3, 7, "198.51.100.7")
    ]  # fmt: skip
    assert [(ln.record.lineno, near is not None) for ln, near in result.unmatched_lines] == [
        (4, True), (5, False)
    ]  # fmt: skip
    assert result.unmatched_events == [orphan]


def test_match_on_a_real_kernel_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not EXAMPLE.exists():
        pytest.skip("examples/shrink.pcap is not in this checkout")
    events = list(treason.scan(str(EXAMPLE)))
    assert events, "the example capture records real shrinks"
    visible = [ev for ev in events if ev.cls is Severity.KERNEL]
    # Every line the sender's kernel would print for a kernel-visible event pairs with it;
    # lines rendered for the capture's other shrinks (zero windows that acknowledged all
    # data, which Linux never logs) pair with nothing but name their connection.
    log = tmp_path / "kern.log"
    rendered = [ev.kernel_line for ev in visible] + [
        kernel_lines(ev.src, ev.sport, ev.dport, ev.snd_una, ev.snd_nxt + 1)["3.13"]
        for ev in events if ev.cls is not Severity.KERNEL
    ]  # fmt: skip
    log.write_text("".join(f"Mar  5 06:07:08 sender kernel: {line}\n" for line in rendered))
    status = main(["match", "--format", "json", str(log), str(EXAMPLE)])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    matched = [r for r in rows if r["status"] == "matched"]
    assert len(matched) == len(visible) and status == (1 if visible else 0)
    for r in matched:
        assert (r["log"]["x"], r["log"]["y"]) == (r["event"]["snd_una"], r["event"]["snd_nxt"])
    log_only = [r for r in rows if r["status"] == "log-only"]
    assert len(log_only) == len(events) - len(visible)
    assert all(r["same_connection_event"]["src"] == r["log"]["peer"] for r in log_only)


KERNEL_EXAMPLE = EXAMPLE.with_name("kernel.pcap")


def treason_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treason", *args], capture_output=True, text=True, timeout=120
    )


def test_match_cli_pairs_syslog_with_a_kernel_visible_capture(tmp_path: Path) -> None:
    """Syslog lines the writer's kernel would print pair with the real capture's kernel events.

    ``examples/kernel.pcap`` records a real receiver closing its window over data in flight;
    the log holds, for each such event, the line in two eras' wordings as syslog writes them,
    plus a shrink line about a connection the capture never saw.
    """
    if not KERNEL_EXAMPLE.exists():
        pytest.skip("examples/kernel.pcap is not in this checkout")
    visible = [ev for ev in treason.scan(str(KERNEL_EXAMPLE)) if ev.cls is Severity.KERNEL]
    assert visible, "the example records a zero window over outstanding data"
    stamp = "Nov 25 09:00:01 web kernel: [12345.678901] "
    wanted = [ev.kernel_lines[era] for ev in visible for era in ("2.4.17", "2.6.29")]
    stranger = kernel_lines("203.0.113.9", 443, 40000, 1000, 2000)["2.4.17"]
    log = tmp_path / "syslog"
    log.write_text("".join(f"{stamp}{line}\n" for line in [*wanted, stranger]))
    proc = treason_cli("match", "--format", "json", str(log), str(KERNEL_EXAMPLE))
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    matched = [(r["log"]["line"], r["event"]["frame"]) for r in rows if r["status"] == "matched"]
    assert matched == [(i + 1, ev.frame) for i, ev in enumerate(v for v in visible for _ in "ab")]
    for r in rows:
        if r["status"] == "matched":
            ev = r["event"]
            assert (r["log"]["peer"], r["log"]["peer_port"], r["log"]["local_port"]) == (
                ev["src"], ev["sport"], ev["dport"]
            )  # fmt: skip
            assert (r["log"]["x"], r["log"]["y"]) == (ev["snd_una"], ev["snd_nxt"])
    unmatched = [r for r in rows if r["status"] == "log-only"]
    assert [(r["log"]["line"], r["log"]["peer"]) for r in unmatched] == [
        (len(wanted) + 1, "203.0.113.9")
    ]
    assert unmatched[0]["same_connection_event"] is None
    assert not [r for r in rows if r["status"] == "capture-only"]
    text = treason_cli("match", str(log), str(KERNEL_EXAMPLE)).stdout
    assert f"{len(wanted)} log line(s) matched capture events" in text
    assert "1 log line(s) without a capture event" in text
    assert "0 kernel-visible capture event(s) without a log line" in text
