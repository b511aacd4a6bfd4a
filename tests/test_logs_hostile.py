"""Hostile and extreme logs: no traceback, bounded memory, caps named, nothing left half done.

Each case runs the command as a user does (a subprocess) on a small generated input; memory is
the child's peak RSS read from ``wait4``, against generous limits stated in each test (the
measured figures are in docs/robustness.md).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

from treason.kernel import kernel_lines
from treason.logs.formats import parse_bsd

TREASON = [sys.executable, "-m", "treason"]
MSG = kernel_lines("192.0.2.1", 1, 2, 3, 4)["3.13"]


def run(*args: str) -> tuple[int, str, str, int]:
    """Exit status, stdout, stderr and peak RSS (KiB) of one treason command. The RSS that
    wait4 gives a parent includes the parent's memory copied at fork; GNU time, a tiny
    parent, gives the command's own (used when installed)."""
    gnu_time = shutil.which("time")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as peak:  # fmt: skip
        wrap = [gnu_time, "-f", "%M", "-o", peak.name] if gnu_time else []
        proc = subprocess.Popen([*wrap, *TREASON, *args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        rss = usage.ru_maxrss
        if gnu_time:
            last = peak.read().split()[-1:]
            rss = int(last[0]) if last and last[0].isdigit() else rss
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if gnu_time:  # GNU time notes a non-zero exit on stderr
        text = (
            text[0],
            "".join(
                line for line in text[1].splitlines(True) if not line.startswith("Command exited")
            ),
        )
    return os.waitstatus_to_exitcode(status), text[0], text[1], rss


@pytest.mark.parametrize(
    "text",
    [
        f"[Mon Jan  1 00:00:00 0000] {MSG}\n",
        f"9999-12-31T23:59:59-01:00 www kernel: {MSG}\n",
        f"9999-12-31T23:59:59.999999-23:59 www kernel: {MSG}\n",
        '{"MESSAGE":[1e400],"_TRANSPORT":"kernel"}\n'
        '{"MESSAGE":[Infinity],"_TRANSPORT":"kernel"}\n'
        '{"MESSAGE":[-Infinity, NaN],"_TRANSPORT":"kernel"}\n'
        + json.dumps({"MESSAGE": MSG, "_TRANSPORT": "kernel"})
        + "\n",
        json.dumps({"MESSAGE": MSG, "_TRANSPORT": "kernel", "__REALTIME_TIMESTAMP": "9" * 19})
        + "\n",
    ],
)
def test_dates_and_numbers_outside_pythons_range(text: str, tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(text)
    for fmt in ("text", "json", "csv"):
        status, out, err, _ = run("logs", "-f", fmt, str(log))
        assert status == 1 and err == "" and "Traceback" not in out, err
    status, out, err, _ = run("explain", text.splitlines()[-1])
    assert status == 0 and "X = 3" in out, err


def test_a_syslog_file_whose_mtime_is_the_year_9999() -> None:
    """Yearless stamps take the file's year; at the end of the calendar there is no next."""
    assert parse_bsd("Dec 31 23:59:59", datetime(9999, 12, 31, 23)) == datetime(
        9999, 12, 31, 23, 59, 59
    )
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as d:
        log = Path(d) / "kern.log"
        log.write_text(f"Dec 31 23:59:59 www kernel: {MSG}\nJan  1 00:00:01 www kernel: {MSG}\n")
        when = datetime(9999, 12, 31, 23).timestamp()
        os.utime(log, (when, when))
        if datetime.fromtimestamp(log.stat().st_mtime).year != 9999:
            pytest.skip("no file system here keeps a year-9999 modification time")
        status, out, err, _ = run("logs", "-f", "json", str(log))
        assert status == 1 and err == "", err
        assert [json.loads(r)["x"] for r in out.splitlines()] == [3, 3]


def test_a_journal_export_entry_of_twenty_million_fields(tmp_path: Path) -> None:
    """1.5 GB of fields in one entry once: now the field cap, named, in bounded memory
    (limit: 150 MiB)."""
    export = tmp_path / "bomb.export.gz"
    head = f"__CURSOR=s=1\n_TRANSPORT=kernel\nMESSAGE={MSG}\n\n__CURSOR=s=2\n".encode()
    with gzip.open(export, "wb", compresslevel=1) as fh:
        fh.write(head)
        for _ in range(20):
            fh.write(b"A=1\n" * 1_000_000)
    status, out, err, rss = run("logs", "-f", "json", str(export))
    assert status == 2 and err.count("\n") == 1
    assert "more than 4096 fields (the cap" in err and str(export) in err
    assert [json.loads(r)["x"] for r in out.splitlines()] == [3]  # what came before
    assert rss < 150 * 1024, f"peak RSS {rss} KiB"


def test_a_journal_export_bomb(tmp_path: Path) -> None:
    """3 MB of gzip holding entries of 16 MiB binary fields (gigabytes inflated): the
    entry-size cap stops it early, in bounded memory (limit: 150 MiB)."""
    field = b"DATA\n" + (1 << 24).to_bytes(8, "little") + bytes(1 << 24) + b"\n"
    entry = b"__CURSOR=s=1\n_TRANSPORT=kernel\n" + field * 8
    one = gzip.compress(entry, compresslevel=9)
    export = tmp_path / "bomb.export.gz"
    with open(export, "wb") as fh:
        for _ in range(25):  # 25 gzip members, 3 MB: 3.4 GB inflated
            fh.write(one)
    assert export.stat().st_size < 4 << 20
    status, _, err, rss = run("logs", str(export))
    assert status == 2 and "larger than 64 MiB (the cap" in err and err.count("\n") == 1
    assert rss < 150 * 1024, f"peak RSS {rss} KiB"


def test_error_lines_of_every_file_are_escaped(tmp_path: Path) -> None:
    bad = [tmp_path / f"\x1b[2Jmissing{i}\x07.log" for i in range(3)]
    good = tmp_path / "kern.log"
    good.write_text(f"Jul  4 03:12:09 www kernel: {MSG}\n")
    status, out, err, _ = run("logs", str(bad[0]), str(good), str(bad[1]), str(bad[2]))
    assert status == 2 and "X=3" in out
    assert err.count("\n") == 3 and "\x1b" not in err and "\x07" not in err
    assert err.count("\\x1b[2Jmissing") == 3


def test_a_log_that_cannot_be_read_is_no_all_clear(tmp_path: Path) -> None:
    """stdout alone (mailed by cron, say) must not read as "nothing found" when a log was
    not read: the summary says what could not be read."""
    missing = tmp_path / "kern.log.1"
    status, out, err, _ = run("logs", str(missing))
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "No window-shrink reports found" in out and "1 file(s) could not be read" in out
    clean = tmp_path / "kern.log"
    clean.write_text("Jul  4 03:12:09 www kernel: e1000e: eth0 NIC Link is Up\n")
    status, out, _, _ = run("logs", str(clean))
    assert status == 0 and "could not be read" not in out


def test_a_latin1_kernel_conf_is_refused_before_anything_changes(tmp_path: Path) -> None:
    services = tmp_path / "etc/logwatch/conf/services"
    services.mkdir(parents=True)
    conf = services / "kernel.conf"
    conf.write_bytes(b'# r\xe9glage du site\n$kernel_ignore_messages = "NIC"\n')
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    for action in ("install", "uninstall"):
        status, _, err, _ = run("logwatch", action, "--root", str(tmp_path))
        assert status == 2 and err.count("\n") == 1, err
        assert "not UTF-8 text (byte 3)" in err and "nothing was changed" in err
        after = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
        assert after == before  # no service half installed, no temporary file


def test_logs_refuses_to_write_over_its_own_input(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    line = kernel_lines("203.0.113.7", 2315, 80, 1, 2)["3.13"]
    log.write_text(f"Jun  2 21:38:52 kernel: {line}\n")
    before = log.read_bytes()
    for target in (log, tmp_path / "link"):
        if target != log:
            target.symlink_to(log)
        code, _, err, _ = run("logs", str(log), "-o", str(target))
        assert code == 2 and "refusing to write over it" in err
        assert log.read_bytes() == before


@pytest.mark.parametrize(
    "body",
    [
        "{\n" * 20_000,  # braces that open no entry
        ("{\n" + '\t"A" : 1,\n' * 40) * 500,  # entries never closed
        "Tue 2024-03-05 06:07:08.000000 UTC [s=1a;i=1;b=01;m=1e;t=61;x=c5]\n" * 20_000,
    ],
)
def test_entries_over_lines_are_looked_at_once_per_line(body: str) -> None:
    """A line is looked at a bounded number of times however the entries around it fail,
    so a hostile file of them reads in linear time (the report after them is still read)."""
    from treason.logs import scan_records
    from treason.logs.formats import LineParser, text_records

    looks = 0

    class Line(str):
        """A line that counts how often it is looked at (every look strips its end)."""

        def rstrip(self, chars: str | None = None) -> str:
            nonlocal looks
            looks += 1
            return str.rstrip(self, chars)

    report = "Mar  5 06:07:08 h kernel: " + kernel_lines("192.0.2.1", 1, 2, 5, 6)["3.13"]
    lines = [Line(text) for text in (body + report + "\n").splitlines(keepends=True)]
    found = scan_records(text_records(LineParser("t"), lines)).lines
    assert [ln.shrink.x for ln in found] == [5]
    assert looks <= 3 * len(lines)
