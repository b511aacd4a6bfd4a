"""`treason scan` end to end: formats, exit status, files, stdin, jobs, and the library API."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings

import treason
from strategies import conversations, to_pcap
from treason.model import FlowTable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shrink.pcap"
SCHEMA = {
    "file", "frame", "time", "src", "sport", "dst", "dport", "vlan", "class", "closing",
    "certainty", "old_edge", "new_edge", "shrink_bytes", "beyond_bytes", "snd_una", "snd_nxt",
    "ack", "win", "scale", "scale_known", "kernel_line", "kernel_lines", "tunnel", "outer",
    "capture_set",
}  # fmt: skip


def treason_cli(*args: str, stdin: bytes | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "treason", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=120,
    )


@given(conversations(inject=True))
@settings(max_examples=60, deadline=None)
def test_pipeline_equals_model_on_generated_captures(conv):
    """Bytes → reader → decoder → flow table gives what the model gives the segments directly."""
    blob = to_pcap(conv.segments)
    scanned = treason.scan(io.BytesIO(blob), engine="reference", retractions=True)
    table = FlowTable()
    direct = [e for seg in conv.segments for e in table.process(seg)[1]] + table.flush()
    assert [e.key() for e in scanned] == [e.key() for e in direct]


def test_example_text_report():
    res = treason_cli("scan", str(EXAMPLE))
    assert res.returncode == 1, res.stderr
    out = res.stdout.decode()
    assert "3 TCP flows (3 with handshake seen)" in out
    assert "peer that shrank" in out and "10.213.0.2:5001" in out
    assert res.stderr == b""


def test_example_json_lines_follow_the_schema():
    res = treason_cli("scan", "--format", "json", "-q", str(EXAMPLE))
    assert res.returncode == 1
    rows = [json.loads(line) for line in res.stdout.decode().splitlines()]
    assert rows and all(set(r) == SCHEMA for r in rows)
    for r in rows:
        assert r["class"] in {"shrink", "beyond", "kernel"}
        assert (r["old_edge"] - r["new_edge"]) % 2**32 == r["shrink_bytes"] > 0
        assert r["certainty"] == "definite" and r["scale_known"]
        assert r["src"] == "10.213.0.2"  # the receiver is the one that shrank
    assert res.stderr == b""


def test_csv_and_atomic_output_file(tmp_path):
    out = tmp_path / "events.csv"
    res = treason_cli("scan", "--format", "csv", "-o", str(out), str(EXAMPLE))
    assert res.returncode == 1
    rows = list(csv.DictReader(out.open()))
    assert rows and rows[0]["class"] in {"shrink", "beyond", "kernel"}
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]  # no temporary left behind
    assert b"packets" in res.stderr  # the capture summary goes to stderr with csv/json


def test_output_into_missing_directory_is_one_line_error(tmp_path):
    res = treason_cli("scan", "-o", str(tmp_path / "no" / "x.txt"), str(EXAMPLE))
    assert res.returncode == 2
    assert res.stderr.decode().count("\n") == 1 and "Traceback" not in res.stderr.decode()


def test_stdin_and_gzip_give_the_same_events(tmp_path):
    plain = treason_cli("scan", "-f", "json", "-q", str(EXAMPLE)).stdout
    gz = tmp_path / "shrink.pcap.gz"
    gz.write_bytes(gzip.compress(EXAMPLE.read_bytes()))
    via_gz = treason_cli("scan", "-f", "json", "-q", str(gz)).stdout
    via_stdin = treason_cli("scan", "-f", "json", "-q", "-", stdin=EXAMPLE.read_bytes()).stdout

    def strip(blob):
        return [{**json.loads(x), "file": None} for x in blob.decode().splitlines()]

    assert strip(plain) == strip(via_gz) == strip(via_stdin) != []


def test_jobs_one_and_two_give_identical_output(tmp_path):
    files = []
    for i in range(3):
        f = tmp_path / f"c{i}.pcap"
        f.write_bytes(EXAMPLE.read_bytes())
        files.append(str(f))
    one = treason_cli("scan", "--jobs", "1", "-f", "json", *files)
    two = treason_cli("scan", "--jobs", "2", "-f", "json", *files)
    assert one.returncode == two.returncode == 1
    assert one.stdout == two.stdout and one.stderr == two.stderr
    assert len(one.stdout.splitlines()) == 3 * len(list(treason.scan(EXAMPLE)))


def test_nothing_found_exits_zero(tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(EXAMPLE.read_bytes()[:24])  # global header only
    res = treason_cli("scan", str(empty))
    assert res.returncode == 0
    assert "No receive-window shrinks found." in res.stdout.decode()


def test_not_a_capture_is_one_line_exit_2(tmp_path):
    text = tmp_path / "notes.pcap"
    text.write_text("HTTP/1.1 200 OK\r\n\r\nhello\n")
    res = treason_cli("scan", str(text))
    assert res.returncode == 2
    err = res.stderr.decode()
    assert err.startswith(f"treason: {text}: ") and err.count("\n") == 1
    assert res.stdout == b""


def test_all_includes_retractions_counted_otherwise():
    stats = treason.ScanStats()
    default = list(treason.scan(EXAMPLE, stats=stats))
    everything = list(treason.scan(EXAMPLE, retractions=True))
    retractions = [e for e in everything if e.cls is treason.Severity.RETRACTION]
    assert len(everything) == len(default) + len(retractions)
    assert stats.events.get("retraction", 0) == len(retractions)


def test_python_module_and_console_script_agree():
    script = Path(sys.executable).parent / "treason"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    a = subprocess.run([script, "scan", "-f", "json", str(EXAMPLE)], capture_output=True)
    b = treason_cli("scan", "-f", "json", str(EXAMPLE))
    assert a.stdout == b.stdout and a.returncode == b.returncode == 1


def test_simulate_replays_the_seed_example():
    res = treason_cli("simulate")
    assert res.returncode == 1
    lines = res.stdout.decode().splitlines()
    flagged = [line for line in lines if "<-- shrink" in line]
    assert len(flagged) == 1 and flagged[0].startswith("ACK 5:") and "50 bytes" in flagged[0]


def test_help_documents_exit_status():
    res = treason_cli("scan", "--help")
    assert b"exit status: 0 nothing found, 1 events found, 2 error" in res.stdout
    assert os.linesep.encode() in res.stdout


def test_the_summary_says_whether_retractions_are_shown() -> None:
    hidden = treason_cli("scan", str(EXAMPLE)).stdout.decode()
    shown = treason_cli("scan", "--all", str(EXAMPLE)).stdout.decode()
    assert "sub-granularity retractions (--all shows them)" in hidden
    assert "sub-granularity retractions (shown)" in shown and "--all shows them" not in shown
