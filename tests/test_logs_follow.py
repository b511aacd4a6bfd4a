"""``treason logs --follow``: reports explained as they are written, across rotation.

The command runs as a user runs it (a subprocess) on a log file that another writer appends
to, renames away and truncates, as syslog daemons and logrotate do; each report must come out
while the command is still running, exactly once, and look-alikes never.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TREASON = [sys.executable, "-m", "treason"]


def line(peer: str, port: int, x: int, host: str = "web1") -> str:
    return (
        f"Jan  5 10:00:00 {host} kernel: [12345.678901] Peer {peer}:{port}/443 "
        f"unexpectedly shrunk window {x}:{x + 100} (repaired)\n"
    )


LOOK_ALIKE = (
    "Jan  5 10:00:01 web1 kernel: nf_ct_tcp: SEQ is over the upper bound (over the window of "
    "the receiver) IN= OUT= SRC=198.51.100.9\n"
)
APP_QUOTE = "Jan  5 10:00:02 web1 myapp[42]: Peer 198.51.100.7:1/2 unexpectedly shrunk window 1:2\n"


class Follow:
    def __init__(self, *args: str, stdin: int | None = None, option: str = "--follow") -> None:
        self.proc = subprocess.Popen(
            [*TREASON, "logs", option, *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        assert self._ready.wait(20), "".join(self.err)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.out.put(text)
        self.out.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for text in self.proc.stderr:
            self.err.append(text)
            if "following" in text:
                self._ready.set()
        self._ready.set()

    def next_record(self) -> dict:
        text = self.out.get(timeout=20)
        assert text is not None, "".join(self.err)
        assert self.proc.poll() is None  # still following when the report came out
        return json.loads(text)

    def stop(self) -> tuple[int, list[str]]:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        rest = []
        while (text := self.out.get(timeout=10)) is not None:
            rest.append(text)
        return rc, rest


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


@pytest.fixture
def follower(tmp_path: Path):
    log = tmp_path / "kern.log"
    log.write_text(line("198.51.100.1", 1000, 1))  # already there: not reported
    f = Follow(str(log), "--format", "json")
    yield log, f
    if f.proc.poll() is None:
        f.proc.kill()


def test_reports_appear_as_they_are_written(follower) -> None:
    log, f = follower
    append(log, LOOK_ALIKE + APP_QUOTE + line("198.51.100.7", 51234, 5000))
    rec = f.next_record()
    assert (rec["peer"], rec["peer_port"], rec["local_port"]) == ("198.51.100.7", 51234, 443)
    assert (rec["x"], rec["y"], rec["host"]) == (5000, 5100, "web1")
    assert rec["line"] == 4  # the line number in the file, not among the lines followed
    append(log, line("198.51.100.8", 40000, 7000))
    assert f.next_record()["peer"] == "198.51.100.8"
    # A logwatch line stands for N reports, in the count at the end as in `logs`.
    append(log, "   3 Time(s): " + line("198.51.100.9", 40001, 9000).split("] ", 1)[1])
    assert f.next_record()["count"] == 3
    rc, rest = f.stop()
    assert rc == 0 and rest == []
    assert "5 report(s) seen" in "".join(f.err)


def test_rotation_and_truncation(follower) -> None:
    log, f = follower
    append(log, line("198.51.100.2", 2000, 1))
    assert f.next_record()["peer"] == "198.51.100.2"
    # logrotate's create mode: a last line, rename away, a new file under the name. The last
    # line is read once whether the follower saw it before the rename or finishes the old file.
    append(log, line("198.51.100.3", 3000, 1))
    os.rename(log, log.with_name("kern.log.1"))
    log.write_text(line("198.51.100.4", 4000, 1))
    assert [f.next_record()["peer"] for _ in range(2)] == ["198.51.100.3", "198.51.100.4"]
    # copytruncate mode: the same file emptied in place, then written again.
    with open(log, "r+", encoding="utf-8") as fh:
        fh.truncate(0)
    append(log, line("198.51.100.5", 5000, 1))
    assert f.next_record()["peer"] == "198.51.100.5"
    rc, rest = f.stop()
    assert rc == 0 and rest == []


def test_journal_json_on_stdin_is_explained_as_it_arrives() -> None:
    """``journalctl -k -f -o json | treason logs --follow -``: each record as it comes."""
    f = Follow("-", stdin=subprocess.PIPE)
    assert f.proc.stdin is not None
    record = {
        "_TRANSPORT": "kernel",
        "SYSLOG_IDENTIFIER": "kernel",
        "_HOSTNAME": "db1",
        "__REALTIME_TIMESTAMP": "1700000000000000",
        "MESSAGE": "Peer 203.0.113.9:5432/60000 unexpectedly shrunk window 10:11 (repaired)",
    }
    f.proc.stdin.write(json.dumps(record) + "\n")
    f.proc.stdin.flush()
    first = f.out.get(timeout=20)
    assert first is not None and first.startswith("== {")
    assert f.proc.poll() is None  # stdin still open: the explanation came as the line did
    text = first
    while "What to do" not in text:
        more = f.out.get(timeout=20)
        assert more is not None
        text += more
    assert "203.0.113.9, port 5432" in text and "Y - X = 1" in text
    f.proc.stdin.close()
    assert f.proc.wait(timeout=20) == 0


def test_stdin_followed_never_waits_for_lines_to_join() -> None:
    """A line with a wording's words that is no report (an application's, a piece) does not
    make the report after it wait for more lines: a live stream is never read ahead."""
    f = Follow("-", "--format", "json", stdin=subprocess.PIPE)
    assert f.proc.stdin is not None
    f.proc.stdin.write("Jan  5 10:00:01 web1 kernel: TCP: Treason uncloaked! Peer\n")
    f.proc.stdin.write(line("198.51.100.4", 4000, 4))
    f.proc.stdin.flush()
    record = f.next_record()  # stdin stays open: no more lines come
    assert (record["peer"], record["peer_port"], record["x"]) == ("198.51.100.4", 4000, 4)
    f.proc.stdin.close()
    assert f.proc.wait(timeout=20) == 0


def test_journal_json_appended_to_a_followed_file(follower) -> None:
    """``journalctl -k -f -o json >> k.json`` (or ``-o json-seq``) then ``--follow k.json``:
    the file is read as ``logs k.json`` reads it, record by record."""
    log, f = follower
    record = {
        "_TRANSPORT": "kernel",
        "_HOSTNAME": "db1",
        "MESSAGE": "Peer 203.0.113.9:5432/60000 unexpectedly shrunk window 10:11 (repaired)",
    }
    append(log, json.dumps(record) + "\n" + "\x1e" + json.dumps({**record, "_HOSTNAME": "db2"}))
    append(log, "\n")
    got = [f.next_record(), f.next_record()]
    assert [(r["host"], r["peer"], r["x"], r["format"]) for r in got] == [
        ("db1", "203.0.113.9", 10, "journal-json"),
        ("db2", "203.0.113.9", 10, "journal-json"),
    ]
    assert f.stop()[0] == 0


def test_missing_file_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*TREASON, "logs", "--follow", str(tmp_path / "nope.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == f"treason: {tmp_path / 'nope.log'}: no such file to follow\n"


def test_short_option_and_no_explain(tmp_path: Path) -> None:
    """``-F`` as in ``tail -F`` (``-f`` is --format in every command); --no-explain prints
    each report line alone."""
    log = tmp_path / "kern.log"
    log.write_text("")
    f = Follow(str(log), "--no-explain", option="-F")
    append(log, line("198.51.100.7", 51234, 5000))
    text = f.out.get(timeout=20)
    assert text is not None and "unexpectedly shrunk window 5000:5100" in text
    rc, rest = f.stop()
    assert rc == 0 and rest == []  # one line per report, no explanation after it
    assert "What happened" not in text


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for row in fh:
            if row.startswith("VmHWM:"):
                return int(row.split()[1])
    return 0


def test_follow_dev_zero_stays_bounded_and_sigint_stops_it() -> None:
    """An endless source without line ends: memory stays bounded (limit: 200 MiB, generous
    against the 3 GB in 3 s it once took) and SIGINT is answered."""
    f = Follow("/dev/zero")
    time.sleep(3)
    assert f.proc.poll() is None
    peak = _peak_rss_kib(f.proc.pid)
    f.proc.send_signal(signal.SIGINT)
    assert f.proc.wait(timeout=20) == 0
    assert peak < 200 * 1024, f"peak RSS {peak} KiB"


def test_a_huge_line_appended_to_a_followed_file(tmp_path: Path) -> None:
    """256 MiB without a line end, then a report: read in bounded memory (limit 200 MiB),
    the report after it still found."""
    log = tmp_path / "kern.log"
    log.write_text("")
    f = Follow(str(log), "--format", "json")
    with open(log, "ab") as fh:
        block = b"A" * (1 << 20)
        for _ in range(256):
            fh.write(block)
        fh.write(b"\n" + line("198.51.100.7", 51234, 5000).encode())
    assert f.next_record()["x"] == 5000
    assert _peak_rss_kib(f.proc.pid) < 200 * 1024
    f.proc.send_signal(signal.SIGINT)
    assert f.proc.wait(timeout=20) == 0


def test_follow_a_fifo(tmp_path: Path) -> None:
    """A named pipe is read as it comes (no seeking, no traceback); SIGINT also ends the wait
    for a writer."""
    fifo = tmp_path / "kmsg.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([*TREASON, "logs", "-F", "-f", "json", str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    with open(fifo, "w") as writer:
        writer.write(line("198.51.100.7", 51234, 5000))
        writer.flush()
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["x"] == 5000
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    waiting = subprocess.Popen([*TREASON, "logs", "-F", str(fifo)], stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    time.sleep(1)  # blocked opening the FIFO: no writer yet
    waiting.send_signal(signal.SIGINT)
    assert waiting.wait(timeout=20) == 0
    assert waiting.stderr is not None and "Traceback" not in waiting.stderr.read()


def test_each_short_option_means_one_thing_in_every_command() -> None:
    """``-F`` follows (as ``tail -F``); ``-f`` is ``--format`` wherever it exists."""
    import argparse

    from treason.cli import build_parser

    parser = build_parser()
    meanings: dict[str, set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for opt in sub._actions:
                    shorts = [s for s in opt.option_strings if len(s) == 2 and s != "-h"]
                    for short in shorts:
                        meanings.setdefault(short, set()).add(opt.dest)
    assert all(len(dests) == 1 for dests in meanings.values()), meanings
    assert meanings["-F"] == {"follow"} and meanings["-f"] == {"format"}
    compare = next(
        a.choices["compare"] for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    assert compare.parse_args(["-f", "json", "near.pcap", "far.pcap"]).format == "json"
