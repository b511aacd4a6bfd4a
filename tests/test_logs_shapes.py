"""Every shape a report reaches a person in: logwatch mails, pasted blocks, redacted addresses.

The seed of the project is a logwatch kernel section pasted in a blog post, addresses hidden,
its closing ruler drawn in em dashes by the blog; ``data/logs/seed-logwatch-block.txt`` is
that block, byte for byte.
"""

from __future__ import annotations

import email.message
import gzip
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require
from treason.cli import main
from treason.kernel import WORDINGS, kernel_lines
from treason.logs import LogScan, scan_records
from treason.logs.bulk import KEYS, _logscan, find_candidates_python, read_logs, scan_stream
from treason.logs.explain import read_pasted
from treason.logs.formats import read_stream
from treason.logs.grammar import near_miss, parse_shrink

DATA = Path(__file__).parent / "data" / "logs"
BLOCK = DATA / "seed-logwatch-block.txt"
SEED_XY = [
    (1898670412, 1898670413),
    (1911943385, 1911943386),
    (1922304386, 1922304387),
    (1922444120, 1922444121),
    (1949802160, 1949802161),
]
TREASON = [sys.executable, "-m", "treason"]

MAIL_HEAD = (
    "From: logwatch@www.example.org\nTo: root@www.example.org\n"
    'Subject: Logwatch for www (Linux)\nContent-Type: text/plain; charset="UTF-8"\n\n'
    " ################### Logwatch 7.7 (07/22/22) #################### \n"
    "        Processing Initiated: Fri Jul  4 06:25:01 2008\n\n"
    " --------------------- pam_unix Begin ------------------------ \n\n"
    " sshd:\n    Authentication Failures:\n       root (192.0.2.66): 3 Time(s)\n\n"
    " ---------------------- pam_unix End ------------------------- \n\n"
)
MAIL_TAIL = "\n ###################### Logwatch End ######################### \n"


def test_the_seed_block_through_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--format", "json", str(BLOCK)]) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["x"], r["y"]) for r in rows] == SEED_XY
    for r in rows:  # the redaction is kept, never replaced by an invented address
        assert (r["peer"], r["peer_raw"], r["peer_port"], r["local_port"]) == (
            None,
            "XXX.XX.XX.XXX",
            None,
            None,
        )
        assert (r["wording"], r["count"], r["outstanding"], r["format"]) == (
            "2.4.17",
            1,
            1,
            "logwatch",
        )
    assert main(["logs", str(BLOCK)]) == 1
    text = capsys.readouterr().out
    # Redacted addresses cannot tell the five reports' connections apart: never counted as one.
    assert (
        "5 report(s), 5 stall episode(s), an unknown number of connections and peers "
        "(addresses redacted)" in text
    )
    assert "1 connection(s)" not in text
    assert "XXX.XX.XX.XXX (address redacted in the log)" in text
    assert "(redacted in the log: one connection or several): 5 episode(s)" in text
    for x, y in SEED_XY:
        assert f"X={x} Y={y}: 1 byte(s) outstanding" in text
    assert "No window-shrink reports found" not in text


def test_the_seed_block_inside_a_whole_mail(tmp_path: Path) -> None:
    mail = tmp_path / "mail.txt"
    block = BLOCK.read_bytes()
    mail.write_bytes(
        MAIL_HEAD.encode() + block.replace(b"\n1 Time", b"\n   1 Time") + MAIL_TAIL.encode()
    )
    lines = read_logs([str(mail)]).lines
    assert [(ln.shrink.x, ln.shrink.y) for ln in lines] == SEED_XY
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes((MAIL_HEAD.encode() + block + MAIL_TAIL.encode()).replace(b"\n", b"\r\n"))
    assert [(ln.shrink.x, ln.shrink.y) for ln in read_logs([str(crlf)]).lines] == SEED_XY


def test_the_seed_block_quoted_in_a_reply(tmp_path: Path) -> None:
    """A logwatch mail forwarded or answered: every line behind ``> `` (or ``>> ``)."""
    for quote in ("> ", ">> ", ">"):
        mail = tmp_path / "reply.txt"
        quoted = "".join(quote + ln for ln in (MAIL_HEAD + BLOCK.read_text()).splitlines(True))
        mail.write_text("Re: what does this mean?\n\n" + quoted + "\nThanks\n")
        lines = read_logs([str(mail)]).lines
        assert [(ln.shrink.x, ln.shrink.y, ln.count) for ln in lines] == [
            (x, y, 1) for x, y in SEED_XY
        ], quote


def _read_both(path: Path) -> list[tuple[int, int, int]]:
    """(x, y, count) of every report, by the buffer search; the line reader must agree."""
    fast = read_logs([str(path)])
    with path.open("rb") as fh:
        whole = scan_records(read_stream(str(path), fh))
    _same(fast, whole)
    assert fast.near_misses == [], [n.record.raw for n in fast.near_misses]
    return [(ln.shrink.x, ln.shrink.y, ln.count) for ln in fast.lines]


SEED_REPORTS = [(x, y, 1) for x, y in SEED_XY]


@pytest.mark.parametrize("quote", ["", "> "])
@pytest.mark.parametrize("width", [40, 60, 66, 72, 76, 78, 80])
def test_the_seed_block_as_a_mail_client_wraps_it(tmp_path: Path, width: int, quote: str) -> None:
    """Mail clients break lines at a space before column 72-78 (the reply's ``> `` on every
    piece); the pieces are one report each, never a near miss, never an all-clear."""
    text = MAIL_HEAD + BLOCK.read_text() + MAIL_TAIL
    wrapped = "".join(
        "".join(quote + piece + "\n" for piece in textwrap.wrap(line, width) or [""])
        for line in text.splitlines()
    )
    assert max(map(len, wrapped.splitlines())) <= width + len(quote)
    mail = tmp_path / "mail.txt"
    mail.write_text(wrapped)
    assert _read_both(mail) == SEED_REPORTS
    pasted = read_pasted(wrapped)
    assert [(ln.shrink.x, ln.shrink.y) for ln in pasted.scan.lines] == SEED_XY
    assert [ln.record.lineno for ln in pasted.scan.lines] == [
        ln.record.lineno for ln in read_logs([str(mail)]).lines
    ]


@pytest.mark.parametrize("fold", [["-s", "-w", "72"], ["-w", "80"], ["-w", "41"]])
def test_the_seed_block_folded_by_coreutils(tmp_path: Path, fold: list[str]) -> None:
    """``fold -s`` keeps the space at the end of each piece; plain ``fold`` breaks inside a
    word, as a terminal does when a long line is copied from it."""
    mail = tmp_path / "mail.txt"
    mail.write_bytes(
        subprocess.run(
            ["fold", *fold], input=BLOCK.read_bytes(), capture_output=True, check=True
        ).stdout
    )
    assert mail.read_bytes().count(b"\n") > BLOCK.read_bytes().count(b"\n")
    assert _read_both(mail) == SEED_REPORTS
    proc = subprocess.run([*TREASON, "logs", str(mail)], capture_output=True, text=True)
    assert proc.returncode == 1 and "No window-shrink reports found" not in proc.stdout


def test_the_seed_block_in_a_quoted_printable_mail_source(tmp_path: Path) -> None:
    """The raw source of the mail (``mutt``'s "edit raw", a saved ``.eml``): Python's own
    encoder breaks long lines with soft breaks (``=`` at the end) and writes ``=`` as ``=3D``."""
    msg = email.message.EmailMessage()
    msg["Subject"] = "Logwatch for www (Linux)"
    six = kernel_lines("2001:db8::7", 443, 8443, 4294967295, 1447, recv_ms=3, lasting_ms=9)
    msg.set_content(BLOCK.read_text() + f"1 Time(s): {six['6.6']}\n", cte="quoted-printable")
    source = msg.as_string()
    assert "=\n" in source and "seq=3D" in source
    eml = tmp_path / "mail.eml"
    eml.write_text(source)
    assert _read_both(eml) == [*SEED_REPORTS, (4294967295, 1447, 1)]


@pytest.mark.parametrize("encoding", ["UTF-16", "UTF-16LE-BOM", "UTF-16BE-BOM", "UTF-8-BOM"])
def test_the_seed_block_saved_on_windows(tmp_path: Path, encoding: str) -> None:
    """Windows PowerShell's ``>`` writes UTF-16 with a byte-order mark, editors write UTF-8
    with one: the block is read as itself, as a file (also gzipped) and on explain's stdin."""
    # The five reports alone, a report first: a mark before it must not hide it.
    reports = [ln for ln in BLOCK.read_text().splitlines() if "Time(s)" in ln]
    text = "\r\n".join(reports) + "\r\n"
    if encoding == "UTF-16":  # glibc's iconv, as a converting tool writes it
        require("iconv")
        data = subprocess.run(
            ["iconv", "-f", "UTF-8", "-t", "UTF-16"],
            input=text.encode(),
            capture_output=True,
            check=True,
        ).stdout
    else:
        codec = {"UTF-16LE-BOM": "utf-16-le", "UTF-16BE-BOM": "utf-16-be", "UTF-8-BOM": "utf-8"}
        data = ("\ufeff" + text).encode(codec[encoding])
    assert data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:3] == b"\xef\xbb\xbf"
    saved = tmp_path / "report.txt"
    saved.write_bytes(data)
    assert _read_both(saved) == SEED_REPORTS
    packed = tmp_path / "report.txt.gz"
    packed.write_bytes(gzip.compress(data))
    assert [(ln.shrink.x, ln.shrink.y) for ln in read_logs([str(packed)]).lines] == SEED_XY
    proc = subprocess.run([*TREASON, "explain"], input=data, capture_output=True, check=False)
    assert proc.returncode == 0 and b"5 distinct stall(s)" in proc.stdout, proc.stderr


@pytest.mark.parametrize("space", ["\u00a0", "\u202f", "\u200b ", "&nbsp;"])
def test_the_seed_block_copied_from_a_web_page(tmp_path: Path, space: str) -> None:
    """A page shows spaces as no-break spaces (or zero-width ones beside them); in its HTML
    source they are ``&nbsp;``. Every space of the reports so replaced, they still read."""
    lines = [ln for ln in BLOCK.read_text().splitlines() if "Time(s)" in ln]
    if space == "&nbsp;":
        text = "".join(f"<td>{ln.replace(' ', space)}</td>\n" for ln in lines)
    else:
        text = "".join(ln.replace(" ", space) + "\n" for ln in lines)
    page = tmp_path / "page.txt"
    page.write_text(text)
    assert _read_both(page) == SEED_REPORTS
    assert [(ln.shrink.x, ln.shrink.y) for ln in read_pasted(text).scan.lines] == SEED_XY


def test_a_file_that_only_starts_like_utf16_is_read_as_bytes() -> None:
    """Two bytes FF FE before binary junk are no text: the lines after them are still read."""
    line = "Jul  4 03:12:09 www kernel: " + kernel_lines("192.0.2.9", 80, 443, 5, 6)["3.13"]
    data = b"\xff\xfe\x00\x00junk\x00\n" + line.encode() + b"\n"
    found = scan_stream("t", io.BytesIO(data), LogScan()).lines  # type: ignore[arg-type]
    assert [ln.shrink.x for ln in found] == [5]


def test_pieces_are_joined_only_into_a_whole_report(tmp_path: Path) -> None:
    """A report cut short stays almost a report, a piece is used once, and lines around a
    broken report are read as themselves."""
    msg = kernel_lines("192.0.2.9", 80, 443, 5, 6)
    cut = msg["3.13"].index(" shrunk")
    first, second = msg["3.13"][:cut], msg["3.13"][cut + 1 :]
    log = tmp_path / "kern.log"
    log.write_text(
        "kernel: TCP: Treason uncloaked! Peer 192.0.2.9:80/443 shrinks\n"  # no rest
        "kernel: e1000e: eth0 NIC Link is Up\n"
        f"{first}\n{second}\n"  # broken before "shrunk": only the second piece has the words
        f"{second}\n"  # the same second piece again: alone, almost a report
        f"kernel: {msg['2.6.29']}\n"
    )
    scan = read_logs([str(log)])
    assert [(ln.record.lineno, ln.shrink.wording) for ln in scan.lines] == [
        (3, "3.13"),
        (6, "2.6.29"),
    ]
    assert [n.record.lineno for n in scan.near_misses] == [1, 5]
    with log.open("rb") as fh:
        _same(scan, scan_records(read_stream(str(log), fh)))


def test_lines_that_only_share_a_word_are_never_tried_as_joins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Programs write "5ms ago, lasting 2s" or "shrinks" often: such lines are ruled out
    before any join of them is parsed, so a big log of them reads in linear time."""
    import treason.logs.unwrap as unwrap

    tried: list[int] = []
    real = unwrap._report
    monkeypatch.setattr(unwrap, "_report", lambda *a: tried.append(1) or real(*a))
    log = tmp_path / "syslog"
    log.write_text(
        "".join(
            f"Jul  4 03:12:09 www app[7]: node{i} seen 5ms ago, lasting 2s; cache shrinks\n"
            for i in range(500)
        )
    )
    scan = read_logs([str(log)])
    assert scan.lines == [] and scan.near_misses == [] and tried == []


def test_the_seed_block_through_explain_as_argument_and_on_stdin() -> None:
    first = BLOCK.read_text().splitlines()[2]
    assert first.startswith("1 Time(s): TCP: Treason uncloaked!")
    one = subprocess.run([*TREASON, "explain", first], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    assert "X = 1898670412" in one.stdout and "Y - X = 1" in one.stdout
    assert "XXX.XX.XX.XXX" in one.stdout and "redacted" in one.stdout
    assert "No kernel prints this wording today" in one.stdout
    assert "dynamic_debug/control" in one.stdout and "treason trace" in one.stdout
    whole = subprocess.run(
        [*TREASON, "explain"], input=BLOCK.read_bytes(), capture_output=True, check=False
    )
    assert whole.returncode == 0, whole.stderr
    out = whole.stdout.decode()
    assert out.count("Worked example") == 1  # the model once, then each stall
    assert "5 distinct stall(s)" in out
    positions = [out.index(f"X={x} (snd_una), Y={y}") for x, y in SEED_XY]
    assert positions == sorted(positions)  # in the order of the input
    assert out.count("Kernel era (2.4.17") == 1
    # Hidden addresses cannot say whether the five stalls were one connection's or five.
    assert "Connection: peer XXX.XX.XX.XXX" not in out
    assert out.count("one connection or several") == 1


#: Containers a report line reaches a person in: wrap(message) -> line.
CONTAINERS = {
    "syslog": lambda m: f"Jul  4 03:12:09 www kernel: {m}",
    "syslog-no-host": lambda m: f"Jun  2 21:38:52 kernel: {m}",
    "syslog-uptime": lambda m: f"Jul  4 03:12:09 www kernel: [ 8123.456789] {m}",
    "rsyslog": lambda m: f"2024-03-05T06:07:08.123456+01:00 www kernel: {m}",
    "rfc5424": lambda m: f"<7>1 2024-03-05T06:07:08Z www kernel - - - {m}",
    "logwatch": lambda m: f"1 Time(s): {m}",
    "logwatch-indented": lambda m: f"   12 Time(s): {m}",
    "kernel-tag": lambda m: f"kernel: {m}",
    "bare": lambda m: m,
    "dmesg": lambda m: f"[ 8123.456789] {m}",
    "dmesg-T": lambda m: f"[Tue Mar  5 06:07:08 2024] {m}",
    "dmesg-x": lambda m: f"kern  :debug : [ 8123.456789] {m}",
    "dyndbg": lambda m: f"[ 8123.456789] [1234] tcp_timer:tcp_retransmit_timer:500: {m}",
    "kmsg": lambda m: f"7,1234,8123456789,-;{m}",
    "journal-json": lambda m: json.dumps({"MESSAGE": m, "_TRANSPORT": "kernel"}),
    "journal-json-bytes": lambda m: json.dumps(
        {"MESSAGE": list(m.encode()), "SYSLOG_IDENTIFIER": "kernel"}
    ),
}
LOOK_ALIKES = [
    "nf_ct_tcp: SEQ is over the upper bound (over the window of the receiver) IN= OUT= "
    "SRC=192.0.2.1 DST=192.0.2.2",
    "IN=eth0 OUT= SRC=192.0.2.1 DST=192.0.2.2 LEN=40 PROTO=TCP SPT=80 DPT=22 WINDOW=0 RES=0x00",
    "TCP: tcp_parse_options: Illegal window scaling value 15 > 14 received",
]


def read_text(text: str) -> LogScan:
    return scan_records(read_stream("t", io.BufferedReader(io.BytesIO(text.encode()))))  # type: ignore[arg-type]


def fields(s: object) -> tuple[object, ...]:
    names = ("wording", "peer", "peer_raw", "peer_port", "local_port", "x", "y", "wnd")
    return tuple(getattr(s, n) for n in names)


@settings(max_examples=300, deadline=None)
@given(
    wording=st.sampled_from([w.key for w in WORDINGS]),
    peer=st.one_of(st.ip_addresses().map(str), st.sampled_from(["203.0.113.7", "2001:db8::9"])),
    pport=st.integers(0, 0xFFFF),
    lport=st.integers(0, 0xFFFF),
    x=st.integers(0, 2**32 - 1),
    y=st.integers(0, 2**32 - 1),
    container=st.sampled_from(sorted(CONTAINERS)),
)
def test_any_report_in_any_container_parses_to_the_same_fields(
    wording: str, peer: str, pport: int, lport: int, x: int, y: int, container: str
) -> None:
    message = kernel_lines(peer, pport, lport, x, y, snd_wnd=7, recv_ms=1, lasting_ms=2)[wording]
    bare = parse_shrink(message)
    assert bare is not None
    found = read_text(CONTAINERS[container](message) + "\n").lines
    assert [fields(ln.shrink) for ln in found] == [fields(bare)]
    expected = 12 if container == "logwatch-indented" else 1
    assert found[0].count == expected


def _broken(line: str, width: int, style: str) -> list[str]:
    """``line`` as a mail client (at spaces, perhaps at hyphens), ``fold -s`` (the space kept
    at the end of a piece) or a terminal (inside words) breaks it at ``width``."""
    if style == "terminal":
        return [line[i : i + width] for i in range(0, len(line), width)]
    return textwrap.wrap(
        line,
        width,
        break_long_words=False,
        break_on_hyphens=style == "mail-hyphens",
        drop_whitespace=style != "fold",
    )


@settings(max_examples=400, deadline=None)
@given(
    wording=st.sampled_from([w.key for w in WORDINGS]),
    peer=st.ip_addresses().map(str),
    pport=st.integers(0, 0xFFFF),
    x=st.integers(0, 2**32 - 1),
    container=st.sampled_from(sorted(c for c in CONTAINERS if not c.startswith("journal"))),
    style=st.sampled_from(["mail", "mail-hyphens", "fold", "terminal"]),
    width=st.integers(40, 100),
    quote=st.sampled_from(["", "> "]),
)
def test_a_report_broken_over_lines_is_one_report(
    wording: str,
    peer: str,
    pport: int,
    x: int,
    container: str,
    style: str,
    width: int,
    quote: str,
) -> None:
    """However a mail client (at spaces, at 40 columns or more) or a terminal (inside words,
    at 60 or more) broke it, between other lines, it is one report with the fields of the
    unbroken line, and both readers agree."""
    y = (x + 1) & 0xFFFFFFFF
    message = kernel_lines(peer, pport, 443, x, y, snd_wnd=7, recv_ms=1, lasting_ms=2)[wording]
    bare = parse_shrink(message)
    assert bare is not None
    if style == "terminal":
        width += 20  # terminals are 80 columns or more; a report is read when broken at 60
    pieces = _broken(CONTAINERS[container](message), width, style)
    noise = "Jul  4 03:12:09 www kernel: e1000e: eth0 NIC Link is Up"
    text = "".join(f"{quote}{ln}\n" for ln in [noise, *pieces, noise])
    whole = read_text(text)
    assert [fields(ln.shrink) for ln in whole.lines] == [fields(bare)], pieces
    assert whole.lines[0].record.lineno == 2 and whole.near_misses == []
    _same(scan_stream("t", io.BytesIO(text.encode()), LogScan()), whole)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(text=st.sampled_from(LOOK_ALIKES), container=st.sampled_from(sorted(CONTAINERS)))
def test_look_alikes_never_parse_in_any_container(text: str, container: str) -> None:
    scan = read_text(CONTAINERS[container](text) + "\n")
    assert scan.lines == [] and scan.near_misses == []


@pytest.mark.parametrize(
    ("redacted", "port"),
    [("XXX.XX.XX.XXX", "XXXX"), ("x.x.x.x", "443"), ("<ip>", "443"), ("203.0.113.xxx", "443"),
     ("[redacted]", "<port>"), ("xxxx:xxxx::xxxx", "443")],
)  # fmt: skip
def test_redacted_addresses_are_read_and_never_invented(redacted: str, port: str) -> None:
    line = f"kernel: Peer {redacted}:{port}/22 unexpectedly shrunk window 100:1548 (repaired)"
    (found,) = read_text(line + "\n").lines
    s = found.shrink
    assert (s.peer, s.peer_raw, s.x, s.y, s.outstanding, s.wording) == (
        None,
        redacted,
        100,
        1548,
        1448,
        "3.13",
    )
    assert s.peer_port == (int(port) if port.isdigit() else None) and s.local_port == 22


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("Peer 192.0.2.1:70000/22 unexpectedly shrunk window 1:2 (repaired)", "16 bits"),
        ("Peer 192.0.2.1:443/22 unexpectedly shrunk window 1:99999999999 (repaired)", "32 bits"),
        ("Peer 192.0.2.1:443/22 unexpectedly shrunk window 1:2", "cut short"),
        ("TCP: Treason uncloaked! Peer 192.0.2.1:443/22 shrinks wind", "cut short"),
        ("Peer host.example:443/22 unexpectedly shrunk window 1:2 (repaired)", "not an address"),
    ],
)
def test_almost_a_report_is_said_not_silenced(
    line: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_shrink(line) is None
    reason = near_miss(line)
    assert reason is not None and why in reason
    log = tmp_path / "kern.log"
    log.write_text(f"Jul  4 03:12:09 www kernel: {line}\n")
    assert main(["logs", str(log)]) == 0
    out = capsys.readouterr().out
    assert "Almost a report (1 line(s)" in out and why in out and f"{log}:1:" in out
    assert main(["explain", line]) == 2
    assert f"almost a window-shrink report: {reason}" in capsys.readouterr().err


def _same(scan_a: LogScan, scan_b: LogScan) -> None:
    def key(scan: LogScan) -> list[tuple[object, ...]]:
        return [
            (ln.record.lineno, ln.record.raw, ln.repeats, ln.count, fields(ln.shrink))
            for ln in scan.lines
        ]

    assert key(scan_a) == key(scan_b)
    assert [(n.record.lineno, n.reason) for n in scan_a.near_misses] == [
        (n.record.lineno, n.reason) for n in scan_b.near_misses
    ]
    assert scan_a.suppressed == scan_b.suppressed


LINE_KINDS = [
    "Jul  4 03:12:09 www kernel: e1000e: eth0 NIC Link is Up",
    "Jul  4 03:12:09 www last message repeated 3 times",
    "Jul  4 03:12:09 www kernel: net_ratelimit: 4 callbacks suppressed",
    "Jul  4 03:12:09 www sshd[1]: Accepted publickey for root",
    "--------------------- Kernel Begin ------------------------",
    "---------------------- Kernel End -------------------------",
    "Jul  4 03:12:09 www kernel: Peer 192.0.2.1:70000/22 unexpectedly shrunk window 1:2 (repaired)",
    "",
    '<h2><a name="3">sshd</a></h2>',  # logwatch's HTML report: a service, then the kernel
    "<h2>Kernel</h2>",
    "    <th align=left>1 Time(s): Peer 192.0.2.1:443/22 unexpectedly shrunk window 1:2 (repaired)",
    "\x1b[32m[ 8123.456789] \x1b[0m\x1b[33mTCP: \x1b[0mPeer 192.0.2.1:443/22 unexpectedly "
    "shrunk window 1:2 (repaired)\x1b[0m",  # dmesg --color=always
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(LINE_KINDS),
            st.builds(
                lambda c, w, x: CONTAINERS[c](kernel_lines("192.0.2.9", 80, 443, x, x + 1)[w]),
                st.sampled_from(sorted(CONTAINERS)),
                st.sampled_from([w.key for w in WORDINGS]),
                st.integers(0, 2**32 - 2),
            ),
            st.builds(  # the pieces of a report broken over lines
                lambda c, w, width, style: "\n".join(
                    _broken(
                        CONTAINERS[c](kernel_lines("192.0.2.9", 80, 443, 7, 8)[w]), width, style
                    )
                ),
                st.sampled_from(sorted(c for c in CONTAINERS if not c.startswith("journal"))),
                st.sampled_from([w.key for w in WORDINGS]),
                st.integers(20, 90),
                st.sampled_from(["mail", "fold", "terminal"]),
            ),
            st.text(max_size=40),
        ),
        max_size=40,
    )
)
def test_candidate_search_finds_what_reading_every_line_finds(lines: list[str]) -> None:
    """Whatever the lines, and wherever the buffers end (a report broken over lines may
    straddle one), the buffer search gives what reading every line gives."""
    import treason.logs.bulk as bulk

    data = "\n".join(lines).encode()
    whole = scan_records(read_stream("t", io.BufferedReader(io.BytesIO(data))))  # type: ignore[arg-type]
    chunk = bulk.CHUNK
    try:
        for bulk.CHUNK in (16, 257, chunk):
            fast = scan_stream("t", io.BytesIO(data), LogScan())  # type: ignore[arg-type]
            _same(fast, whole)
    finally:
        bulk.CHUNK = chunk


def test_candidate_search_across_buffer_boundaries_and_long_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import treason.logs.bulk as bulk

    msg = kernel_lines("192.0.2.9", 80, 443, 5, 6)["3.13"]
    lines = []
    for i in range(300):
        lines.append(f"Jul  4 03:12:09 www kernel: noise {i}")
        if i % 7 == 0:
            lines.append(f"Jul  4 03:12:09 www kernel: {msg}")
        if i % 11 == 0:  # broken over lines, some pieces across a buffer's end
            lines += _broken(f"Jul  4 03:12:09 www kernel: {msg}", 30 + i % 13, "mail")
        if i % 50 == 0:
            lines.append("x" * 70_000 + " shrunk window")  # longer than a line is kept
    data = "\n".join(lines).encode()
    whole = scan_records(read_stream("t", io.BufferedReader(io.BytesIO(data))))  # type: ignore[arg-type]
    monkeypatch.setattr(bulk, "CHUNK", 4096)
    fast = scan_stream("t", io.BytesIO(data), LogScan())  # type: ignore[arg-type]
    assert len(fast.lines) == 43 + 28
    _same(fast, whole)
    monkeypatch.setattr(bulk, "_logscan", None)  # the search in Python, as without a compiler
    _same(scan_stream("t", io.BytesIO(data), LogScan()), whole)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([k.decode("latin-1") for k in KEYS]),
            st.sampled_from(["\n", " ", "x", "\xe2\x80\x94", "End", "Begin"]),
            st.text(max_size=30),
        ),
        max_size=60,
    ),
    st.integers(0, 40),
    st.integers(0, 40),
)
def test_the_compiled_search_finds_what_the_python_search_finds(
    parts: list[str], cut_lo: int, cut_hi: int
) -> None:
    """Every key at every offset (the vector search works 16 bytes at a time), any range."""
    if _logscan is None:
        pytest.skip("the compiled search (treason._logscan) is not built")
    data = "".join(parts).encode("utf-8", "surrogateescape")
    lo, hi = min(cut_lo, len(data)), max(min(len(data) - cut_hi, len(data)), 0)
    lo = min(lo, hi)
    # Two banks of pair buckets (KEYS), one bank, and more leading pairs than buckets.
    many = (*KEYS, *(bytes([0x61 + i, 0x7A - i]) + b"key" for i in range(12)))
    for keys in (KEYS, KEYS[-7:], many):
        for vector in (True, False):  # the 16-byte pair filter, and the scalar skip search
            want = find_candidates_python(data, lo, hi, keys)
            assert _logscan.candidates(data, lo, hi, keys, vector) == want
            for shift in range(17):  # each alignment against the 16-byte blocks
                padded = b"y" * shift + data
                assert _logscan.candidates(
                    padded, 0, len(padded), keys, vector
                ) == find_candidates_python(padded, 0, len(padded), keys)


def test_match_pairs_redacted_lines_on_what_they_still_show() -> None:
    from test_match import event
    from treason.logs.match import match

    ev = event("198.51.100.7", 80, 51001, 1898670412, 1898670413)
    other = event("198.51.100.8", 443, 51002, 1898670412, 1898670413)  # same X:Y elsewhere
    text = (
        "1 Time(s): TCP: Treason uncloaked! Peer XXX.XX.XX.XXX:XXXX/XX shrinks window "
        "1898670412:1898670413. Repaired.\n"
        "Peer x.x.x.x:443/51002 unexpectedly shrunk window 1898670412:1898670413 (repaired)\n"
        "Peer <ip>:80/51001 unexpectedly shrunk window 5:6 (repaired)\n"
    )
    result = match(read_text(text).lines, [ev, other])
    assert [(ln.record.lineno, e.src) for ln, e in result.pairs] == [
        (1, "198.51.100.7"),
        (2, "198.51.100.8"),
    ]
    ((ln, near),) = result.unmatched_lines  # other stall of a connection the ports name
    assert ln.record.lineno == 3 and near is ev


def test_match_escapes_log_file_names(tmp_path: Path) -> None:
    log = tmp_path / "\x1b]0;owned\x07kern.log"
    log.write_text(f"Jul  4 03:12:09 www kernel: {kernel_lines('192.0.2.1', 1, 2, 3, 4)['3.13']}\n")
    capture = Path(__file__).resolve().parent.parent / "examples" / "shrink.pcap"
    done = subprocess.run([*TREASON, "match", str(log), str(capture)], capture_output=True)
    assert done.returncode in (0, 1), done.stderr
    assert b"\x1b" not in done.stdout and b"\\x1b]0;owned\\x07kern.log:1:" in done.stdout
    missing = tmp_path / "\x1b[2Jgone.log"
    broken = tmp_path / "\x1b[2Jbroken.pcap"
    broken.write_bytes(b"not a capture")
    done = subprocess.run([*TREASON, "match", str(missing), str(broken)], capture_output=True)
    assert done.returncode == 2 and b"\x1b" not in done.stderr
    assert done.stderr.count(b"\n") == 2  # the log's error, then the capture's
