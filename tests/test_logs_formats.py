"""Container formats: every wording in every container parses to the right fields."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from treason.kernel import WORDINGS, kernel_lines
from treason.logs import scan_records
from treason.logs.bulk import read_logs
from treason.logs.explain import read_pasted
from treason.logs.formats import read_stream, rotation_order

PEER, PPORT, LPORT, X, Y = "2001:db8::7", 51234, 443, 4000000000, 4000001448
STAMP = datetime(2024, 3, 5, 6, 7, 8, 123456, tzinfo=timezone.utc)
EPOCH = STAMP.timestamp()

#: container name -> (wrap(message) -> line, expected host, expected time text, uptime)
CONTAINERS = {
    "rfc3164": (lambda m: f"Mar  5 06:07:08 web1 kernel: {m}", "web1", "2024-03-05T06:07:08", None),
    "rfc3164-uptime": (lambda m: f"Mar  5 06:07:08 web1 kernel: [ 8123.456789] {m}", "web1",
                       "2024-03-05T06:07:08", 8123.456789),
    "rfc3164-caller": (lambda m: f"Mar  5 06:07:08 web1 kernel: [ 8123.456789][ T1234] {m}",
                       "web1", "2024-03-05T06:07:08", 8123.456789),
    "rfc3164-pri": (lambda m: f"<7>Mar  5 06:07:08 web1 kernel: {m}", "web1",
                    "2024-03-05T06:07:08", None),
    "rsyslog-rfc3339": (lambda m: f"2024-03-05T06:07:08.123456+00:00 web1 kernel: {m}", "web1",
                        "2024-03-05T06:07:08.123456+00:00", None),
    "rfc5424": (lambda m: f"<7>1 2024-03-05T06:07:08.123456Z web1 kernel - - - \ufeff{m}", "web1",
                "2024-03-05T06:07:08.123456+00:00", None),
    "rfc5424-sd": (lambda m: f'<7>1 2024-03-05T06:07:08.123456Z web1 kernel - - [x@1 a="\\]"] {m}',
                   "web1", "2024-03-05T06:07:08.123456+00:00", None),
    "journal-short": (lambda m: f"Mar 05 06:07:08 web1 kernel: {m}", "web1",
                      "2024-03-05T06:07:08", None),
    "journal-short-precise": (lambda m: f"Mar 05 06:07:08.123456 web1 kernel: {m}", "web1",
                              "2024-03-05T06:07:08.123456", None),
    "journal-short-iso": (lambda m: f"2024-03-05T06:07:08+0000 web1 kernel: {m}", "web1",
                          "2024-03-05T06:07:08+00:00", None),
    "journal-short-full": (lambda m: f"Tue 2024-03-05 06:07:08 UTC web1 kernel: {m}", "web1",
                           "2024-03-05T06:07:08", None),
    "journal-short-unix": (lambda m: f"{EPOCH:.6f} web1 kernel: {m}", "web1",
                           "2024-03-05T06:07:08.123456+00:00", None),
    "journal-short-monotonic": (lambda m: f"[ 8123.456789] web1 kernel: {m}", "web1", None,
                                8123.456789),
    "dmesg": (lambda m: f"[ 8123.456789] {m}", None, None, 8123.456789),
    "dmesg-caller": (lambda m: f"[ 8123.456789][   T42] {m}", None, None, 8123.456789),
    "dmesg-r": (lambda m: f"<7>[ 8123.456789] {m}", None, None, 8123.456789),
    "dmesg-x": (lambda m: f"kern  :debug : [ 8123.456789] {m}", None, None, 8123.456789),
    "dmesg-T": (lambda m: f"[Tue Mar  5 06:07:08 2024] {m}", None, "2024-03-05T06:07:08", None),
    "dmesg-iso": (lambda m: f"2024-03-05T06:07:08,123456+00:00 {m}", None,
                  "2024-03-05T06:07:08.123456+00:00", None),
    "kmsg": (lambda m: f"7,1234,8123456789,-;{m}", None, None, 8123.456789),
    "kmsg-caller": (lambda m: f"7,1234,8123456789,-,caller=T42;{m}", None, None, 8123.456789),
    "bare": (lambda m: m, None, None, None),
}  # fmt: skip

REFERENCE = datetime(2024, 6, 1)


def read_text(text: str):
    stream = io.BufferedReader(io.BytesIO(text.encode()))  # type: ignore[arg-type]
    return scan_records(read_stream("t", stream, REFERENCE)).lines


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("wording", [w.key for w in WORDINGS])
def test_every_wording_in_every_container(container: str, wording: str) -> None:
    wrap, host, when, uptime = CONTAINERS[container]
    message = kernel_lines(PEER, PPORT, LPORT, X, Y, recv_ms=5, lasting_ms=900)[wording]
    found = read_text(wrap(message) + "\n")
    assert len(found) == 1, wrap(message)
    ln = found[0]
    s = ln.shrink
    assert (s.peer, s.peer_port, s.local_port, s.x, s.y) == (PEER, PPORT, LPORT, X, Y)
    assert s.wording == wording
    assert ln.host == host
    assert ln.time_text == when
    assert ln.record.uptime == pytest.approx(uptime) if uptime else ln.record.uptime is None


def test_an_application_quoting_the_wording_is_not_the_kernel() -> None:
    line = kernel_lines(PEER, PPORT, LPORT, X, Y)["2.4.17"]
    text = "\n".join(
        [
            f"Mar  5 06:07:08 web1 funnybot[99]: {line}",
            f"2024-03-05T06:07:08.1+00:00 web1 funnybot: {line}",
            f"<7>1 2024-03-05T06:07:08Z web1 funnybot - - - {line}",
            f"[ 8123.456789] web1 funnybot[1]: {line}",
            "kern  :debug : [ 1.0] myapp: " + line,
            "user  :debug : [ 1.0] " + line,
            json.dumps({"MESSAGE": line, "SYSLOG_IDENTIFIER": "funnybot", "_TRANSPORT": "journal"}),
        ]
    )
    assert read_text(text + "\n") == []


def test_journal_json_and_export_including_binary_messages() -> None:
    line = kernel_lines("198.51.100.7", 80, 8080, 10, 11)["3.13"]
    stamp = str(int(EPOCH * 1e6))
    as_bytes = list(line.encode())
    js = [
        json.dumps({"MESSAGE": line, "_TRANSPORT": "kernel", "_HOSTNAME": "h1",
                    "__REALTIME_TIMESTAMP": stamp}),
        json.dumps({"MESSAGE": as_bytes, "SYSLOG_IDENTIFIER": "kernel", "_HOSTNAME": "h2"}),
        json.dumps({"MESSAGE": None, "_TRANSPORT": "kernel"}),
    ]  # fmt: skip
    found = read_text("\n".join(js) + "\n")
    assert [(ln.host, ln.shrink.peer) for ln in found] == [("h1", "198.51.100.7")] * 1 + [
        ("h2", "198.51.100.7")
    ]
    assert found[0].time_text == "2024-03-05T06:07:08.123456+00:00"
    data = line.encode() + b"\n"
    export = (
        b"__CURSOR=s=1\n__REALTIME_TIMESTAMP=" + stamp.encode() + b"\n_TRANSPORT=kernel\n"
        b"_HOSTNAME=h3\nMESSAGE\n" + len(data).to_bytes(8, "little") + data + b"\n\n"
        b"__CURSOR=s=2\n_TRANSPORT=kernel\n_HOSTNAME=h3\nMESSAGE=" + line.encode() + b"\n\n"
    )
    recs = list(read_stream("e", io.BufferedReader(io.BytesIO(export))))  # type: ignore[arg-type]
    assert [r.host for r in recs] == ["h3", "h3"]
    lines = scan_records(recs).lines
    assert len(lines) == 2  # a trailing newline inside a binary MESSAGE is not part of it
    assert lines[0].time_text == "2024-03-05T06:07:08.123456+00:00"


def test_gzip_and_rotated_sets_read_oldest_first(tmp_path: Path) -> None:
    def line(x: int) -> str:
        return f"Mar  5 06:07:0{x} web1 kernel: " + kernel_lines(PEER, 1, 2, x, x + 1)["3.13"]

    (tmp_path / "kern.log").write_text(line(3) + "\n")
    (tmp_path / "kern.log.1").write_text(line(2) + "\n")
    with gzip.open(tmp_path / "kern.log.2.gz", "wt") as fh:
        fh.write(line(1) + "\n")
    paths = [str(tmp_path / n) for n in ("kern.log", "kern.log.1", "kern.log.2.gz")]
    assert rotation_order(paths) == list(reversed(paths))
    assert [ln.shrink.x for ln in read_logs(paths).lines] == [1, 2, 3]


def test_repeat_markers_count_as_up_to_n_more() -> None:
    msg = kernel_lines("192.0.2.1", 1, 2, 5, 6)["3.13"]
    text = (
        f"Mar  5 06:07:08 h kernel: {msg}\n"
        "Mar  5 06:07:08 h last message repeated 3 times\n"
        f"Mar  5 06:08:08 h kernel: message repeated 2 times: [ {msg}]\n"
        "Mar  5 06:09:08 h kernel: net_ratelimit: 7 callbacks suppressed\n"
    )
    stream = io.BufferedReader(io.BytesIO(text.encode()))  # type: ignore[arg-type]
    scan = scan_records(read_stream("t", stream, REFERENCE))
    assert [ln.repeats for ln in scan.lines] == [3, 2]
    assert scan.suppressed == {"h": 7}


def test_hostile_input_never_crashes() -> None:
    good = "Mar  5 06:07:08 h kernel: " + kernel_lines("192.0.2.1", 1, 2, 5, 6)["3.13"]
    junk = (
        b"\xff\xfe\x00\x00garbage\x00\n"
        + b"A" * 200_000 + b"\n"
        + b"Mar  5 06:07:08 h kernel: Peer " + b"1:" * 5000 + b"1:1/2 unexpectedly shrunk\n"
        + b"Mar  5 06:07:08 h kernel: \x1b]0;pwned\x07\x1b[2J\n"
        + b"{\"MESSAGE\": [1, 2, 999999999999], \"_TRANSPORT\": \"kernel\"}\n"
        + b"{" * 10000 + b"\n"
        + b"Mar  5 06:07:08 h kernel: Peer 192.0.2.1:1/2 unexpectedly shrunk window "
        + b"99999999999999999999:1 (repaired)\n"
        + b"<999999999>1 x\n99,99,99999999999999999999,-;x\n"
        + good.encode() + b"\n"
    )  # fmt: skip
    stream = io.BufferedReader(io.BytesIO(junk))  # type: ignore[arg-type]
    found = scan_records(read_stream("t", stream, REFERENCE)).lines
    assert [ln.shrink.x for ln in found] == [5]


def _journal_remote() -> str | None:
    for path in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"):
        if os.access(path, os.X_OK):
            return path
    return None


def test_real_journalctl_output(tmp_path: Path) -> None:
    remote, journalctl = _journal_remote(), shutil.which("journalctl")
    if remote is None or journalctl is None:
        pytest.skip("needs journalctl and systemd-journal-remote (package systemd-journal-remote)")
    msg = kernel_lines(PEER, PPORT, LPORT, X, Y)["3.13"]
    export = tmp_path / "in.export"
    export.write_bytes(
        f"__REALTIME_TIMESTAMP={int(EPOCH * 1e6)}\n__MONOTONIC_TIMESTAMP=8123456789\n"
        "_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=web1\n_TRANSPORT=kernel\n"
        f"SYSLOG_IDENTIFIER=kernel\nPRIORITY=7\nMESSAGE={msg}\n\n"
        "__REALTIME_TIMESTAMP=1709618829000000\n__MONOTONIC_TIMESTAMP=8123456790\n"
        "_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=web1\n_TRANSPORT=journal\n"
        f"SYSLOG_IDENTIFIER=joker\nPRIORITY=6\nMESSAGE={msg}\n\n".encode()
    )
    journal = tmp_path / "test.journal"
    subprocess.run([remote, "-o", str(journal), str(export)], check=True, capture_output=True)
    env = {**os.environ, "TZ": "UTC"}
    for output in ("short", "short-precise", "short-iso", "short-iso-precise", "short-full",
                   "short-unix", "short-monotonic", "short-delta", "json", "json-seq",
                   "json-sse", "json-pretty", "verbose", "export"):  # fmt: skip
        out = subprocess.run(
            [journalctl, "--file", str(journal), "--no-pager", "-o", output],
            check=True, capture_output=True, env=env,
        ).stdout  # fmt: skip
        stream = io.BufferedReader(io.BytesIO(out))  # type: ignore[arg-type]
        found = scan_records(read_stream(output, stream, REFERENCE)).lines
        assert len(found) == 1, (output, out)  # the application's copy is not the kernel
        saved = tmp_path / f"{output}.txt"
        saved.write_bytes(out)
        bulk = read_logs([str(saved)]).lines
        # As a file, and pasted into explain (the export form is binary: never pasted).
        pasted = bulk if output == "export" else read_pasted(out.decode()).scan.lines
        assert len(bulk) == len(pasted) == 1, output
        for ln in (found[0], bulk[0], pasted[0]):
            assert (ln.host, ln.shrink.peer, ln.shrink.x, ln.shrink.y) == ("web1", PEER, X, Y)
        ln = found[0]  # dated as the reference says when the form has no year
        if output not in ("short-monotonic", "short-delta"):
            assert ln.time_text.startswith("2024-03-05T06:07:08"), (output, ln.time_text)


def test_entries_over_lines_that_do_not_parse_are_read_line_by_line() -> None:
    """A ``{`` that opens no JSON object, one never closed, and a verbose entry followed by
    a syslog line: every report around them is still found, nothing waits unbounded."""
    report = "Mar  5 06:07:08 h kernel: " + kernel_lines("192.0.2.1", 1, 2, 5, 6)["3.13"]
    verbose = (
        "Tue 2024-03-05 06:07:08.000000 UTC [s=1a;i=1;b=01;m=1e;t=612e3a6f1bb00;x=c5]\n"
        "    _TRANSPORT=kernel\n    _HOSTNAME=web1\n"
        f"    MESSAGE={kernel_lines('192.0.2.7', 1, 2, 7, 8)['3.13']}\n"
    )
    text = (
        f"{{\n{report}\n}}\n"  # not JSON: three lines
        f"{verbose}{report}\n"
        + "{\n"
        + '\t"A" : 1,\n' * 600
        + f"{report}\n"  # never closed: read by lines
    )
    stream = io.BufferedReader(io.BytesIO(text.encode()))  # type: ignore[arg-type]
    found = scan_records(read_stream("t", stream, REFERENCE)).lines
    assert [(ln.shrink.x, ln.record.fmt) for ln in found] == [
        (5, "rfc3164"),
        (7, "journal-verbose"),
        (5, "rfc3164"),
        (5, "rfc3164"),
    ]
    assert [ln.record.lineno for ln in found] == [2, 4, 8, 610]


@pytest.mark.parametrize("flags", [[], ["-T"], ["-x"], ["--time-format=iso"]])
def test_real_dmesg_in_colour(tmp_path: Path, flags: list[str]) -> None:
    """``dmesg --color=always`` (saved with ``tee``, or from ``script``) puts colour escapes
    around the stamp, the subsystem and the message: the report is read through them."""
    dmesg = shutil.which("dmesg")
    if dmesg is None:
        pytest.skip("needs dmesg (util-linux)")
    msg = kernel_lines(PEER, PPORT, LPORT, X, Y)["3.13"]
    kmsg = tmp_path / "ring.txt"  # what dmesg -F reads: the raw ring with priorities
    kmsg.write_text(f"<4>[ 8123.456789] {msg}\n<6>[ 8124.000000] e1000e: eth0 NIC Link is Up\n")
    out = subprocess.run(
        [dmesg, "-F", str(kmsg), "--color=always", *flags], check=True, capture_output=True
    ).stdout
    assert b"\x1b[" in out
    saved = tmp_path / "dmesg.txt"
    saved.write_bytes(out)
    (found,) = read_logs([str(saved)]).lines
    assert (found.shrink.peer, found.shrink.x, found.shrink.y) == (PEER, X, Y)
    assert b"\x1b" not in found.record.message.encode()
