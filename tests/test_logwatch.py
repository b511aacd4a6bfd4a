"""The logwatch service, and logwatch's reports read back, with the real logwatch (Debian).

logwatch reads its configuration from the fixed directory /etc/logwatch and, whatever
``--logdir`` says, also the machine's /var/log. Each run here happens in a private mount
namespace where a test directory is bind-mounted over /etc/logwatch and the test's own log
directory over /var/log, so neither the machine's configuration nor its logs are used or
touched: a host whose kern.log holds window-shrink reports gives the same results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from treason.kernel import kernel_lines
from treason.logs.bulk import read_logs
from treason.logs.explain import read_pasted
from treason.logwatch import MARK_BEGIN, install, uninstall

SEED = Path(__file__).parent / "data" / "logs" / "seed-logwatch.log"
OTHER = [
    "Jul  4 03:20:00 www kernel: [    5.000000] e1000e: eth0 NIC Link is Up",
    "Jul  4 03:21:00 www kernel: nf_ct_tcp: SEQ is over the upper bound (over the window of the "
    "receiver) IN= OUT= SRC=192.0.2.9",
]


def _can_run_logwatch() -> str | None:
    if shutil.which("logwatch") is None:
        return "needs logwatch (Debian package logwatch)"
    if shutil.which("unshare") is None or os.geteuid() != 0 or not os.path.isdir("/etc/logwatch"):
        return "needs root, unshare and /etc/logwatch to run logwatch on a test configuration"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "cannot create a mount namespace here"
    return None


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    d = tmp_path / "log"
    d.mkdir()
    text = SEED.read_text() + "\n".join(OTHER) + "\n"
    for name in ("kern.log", "messages"):  # Debian's kernel group reads kern.log, upstream messages
        (d / name).write_text(text)
    return d


def logwatch(root: Path, logdir: Path, *args: str) -> str:
    reason = _can_run_logwatch()
    if reason:
        pytest.skip(reason)
    conf = root / "etc" / "logwatch"
    conf.mkdir(parents=True, exist_ok=True)
    cmd = (
        f"mount --bind '{conf}' /etc/logwatch && mount --bind '{logdir}' /var/log && "
        f"exec logwatch --logdir /var/log --range all --output stdout {' '.join(args)}"
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_real_logwatch_shows_the_section_and_stock_kernel_stops_listing(
    tmp_path: Path, logdir: Path
) -> None:
    root = tmp_path / "root"
    (root / "etc" / "logwatch" / "conf").mkdir(parents=True)
    before = tree(root)
    stock = logwatch(root, logdir, "--detail", "10", "--service", "kernel")
    assert stock.count("Time(s): TCP: Treason uncloaked!") == 5  # the seed's catch-all listing

    install(str(root))
    script = root / "etc/logwatch/scripts/services/treason"
    assert os.access(script, os.X_OK)
    default = logwatch(root, logdir, "--service", "kernel", "--service", "treason")
    ours = section(default, "Window-shrinking TCP peers (treason)")
    assert "5 report(s), 1 connection(s), 5 stall episode(s), 1 peer(s)" in ours
    assert "203.0.113.7: 5 report(s)" in ours and ours.count("What this means:") == 1
    assert "Time(s)" not in ours and "X=1898670412" not in ours  # short below Detail 5
    detailed = logwatch(
        root, logdir, "--detail", "10", "--service", "kernel", "--service", "treason"
    )
    kernel = section(detailed, "Kernel")
    assert "Treason uncloaked!" not in kernel  # not listed twice
    assert "Time(s): e1000e: eth0 NIC Link is Up" in kernel  # the rest still is
    assert "Time(s): nf_ct_tcp: SEQ is over the upper bound" in kernel
    ours = section(detailed, "Window-shrinking TCP peers (treason)")
    assert "203.0.113.7:2315 -> local 80 (http)" in ours and ours.count("What this means:") == 1
    for x in (1898670412, 1911943385, 1922304386, 1922444120, 1949802160):  # the raw lines
        assert (
            f"1 Time(s): TCP: Treason uncloaked! Peer 203.0.113.7:2315/80 shrinks window {x}:"
            in ours
        )

    uninstall(str(root))
    assert tree(root) == before
    restored = logwatch(root, logdir, "--detail", "10", "--service", "kernel")
    assert _report(restored) == _report(stock)


def section(report: str, title: str) -> str:
    """The body of one service's section of a logwatch report."""
    begin = report.index(f" {title} Begin ")
    end = report.index(f" {title} End ", begin)
    return report[report.index("\n", begin) : end]


def _report(text: str) -> list[str]:
    """The report without the line that says when it ran."""
    return [line for line in text.splitlines() if "Processing Initiated" not in line]


def test_existing_kernel_configuration_is_kept_and_restored(tmp_path: Path, logdir: Path) -> None:
    root = tmp_path / "root"
    services = root / "etc/logwatch/conf/services"
    services.mkdir(parents=True)
    mine = '# site setting\n$kernel_ignore_messages = "NIC Link is Up"\n'
    (services / "kernel.conf").write_text(mine)
    install(str(root))
    install(str(root))  # a second install replaces its block, never stacks them
    text = (services / "kernel.conf").read_text()
    assert text.count(MARK_BEGIN) == 1 and text.startswith(mine)
    detailed = logwatch(root, logdir, "--detail", "10", "--service", "kernel")
    assert "NIC Link is Up" not in detailed and "Treason uncloaked" not in detailed
    assert "SEQ is over the upper bound" in detailed
    uninstall(str(root))
    assert (services / "kernel.conf").read_text() == mine
    assert sorted(p.name for p in services.iterdir()) == ["kernel.conf"]


def test_kernel_sections_logwatch_wrote_are_read_with_their_exact_counts(tmp_path: Path) -> None:
    """The stock kernel service at Detail 10 lists each distinct message once as
    ``N Time(s): message``; reading that report must give every report with N as its count,
    and the same fields as the kernel lines it was made from."""
    logdir = tmp_path / "log"
    logdir.mkdir()
    messages = [
        kernel_lines("192.0.2.7", 51234, 80, 1000, 1001)["2.4.17"],
        kernel_lines("2001:db8::7", 443, 8443, 4294967295, 1447)["3.13"],
        kernel_lines("::ffff:198.51.100.7", 22, 2222, 5, 9, recv_ms=3, lasting_ms=900)["6.6"],
        kernel_lines("203.0.113.9", 1, 65535, 0, 1)["2.6.29"],
    ]
    times = [3, 1, 7, 2]
    lines = [
        f"Jul  4 03:{i:02d}:{n:02d} www kernel: [ {100 + n}.000000] {m}"
        for i, (m, k) in enumerate(zip(messages, times, strict=True))
        for n in range(k)
    ]
    lines.append("Jul  4 04:00:00 www kernel: nf_ct_tcp: SEQ is over the upper bound (over)")
    for name in ("kern.log", "messages"):
        (logdir / name).write_text("\n".join(lines) + "\n")
    report = logwatch(tmp_path / "root", logdir, "--detail", "10", "--service", "kernel")
    listing = [ln for ln in section(report, "Kernel").splitlines() if "Time(s):" in ln]
    assert len(listing) == len(messages) + 1  # the look-alike is listed too, never read
    (tmp_path / "report.txt").write_text(report)
    from_report = read_logs([str(tmp_path / "report.txt")]).lines
    from_log = read_logs([str(logdir / "kern.log")]).lines
    assert sorted(ln.count for ln in from_report) == sorted(times)
    fields = ("wording", "peer", "peer_raw", "peer_port", "local_port", "x", "y", "recv_ms",
              "lasting_ms")  # fmt: skip
    for ln in from_report:
        raw = [r for r in from_log if r.record.message == ln.record.message]
        assert len(raw) == ln.count  # N is exact: that many lines, not "up to"
        for r in raw:
            assert [getattr(r.shrink, f) for f in fields] == [getattr(ln.shrink, f) for f in fields]
    assert sum(ln.count for ln in from_report) == len(from_log) == sum(times)


def test_html_reports_logwatch_wrote_are_read(tmp_path: Path, logdir: Path) -> None:
    """``Format = html``, a common choice for mailed reports: each message in a table cell,
    each service under an <h2>. Read from the file logwatch wrote, from the mail a client
    passed on (quoted-printable: ``align=3Dleft``, long lines soft-broken), and pasted into
    explain; never "no reports"."""
    report = logwatch(
        tmp_path / "root", logdir, "--format", "html", "--detail", "10", "--service", "kernel"
    )
    assert "<th align=left>1 Time(s): TCP: Treason uncloaked! Peer 203.0.113.7" in report
    xs = [1898670412, 1911943385, 1922304386, 1922444120, 1949802160]
    saved = tmp_path / "report.html"
    saved.write_text(report)
    found = read_logs([str(saved)]).lines
    assert [(ln.shrink.x, ln.count, ln.shrink.peer) for ln in found] == [
        (x, 1, "203.0.113.7") for x in xs
    ]
    msg = EmailMessage()
    msg["Subject"] = "Logwatch for www (Linux)"
    msg.set_content(report, subtype="html", cte="quoted-printable")
    mail = tmp_path / "report.eml"
    mail.write_text(msg.as_string())
    assert "align=3Dleft" in mail.read_text()
    assert [ln.shrink.x for ln in read_logs([str(mail)]).lines] == xs
    assert [ln.shrink.x for ln in read_pasted(report).scan.lines] == xs
    # Under another service's heading, a line is that service's, not the kernel's.
    other = report.replace('name="2">Kernel<', 'name="2">sshd<')
    assert other != report and read_pasted(other).scan.lines == []
    saved.write_text(other)
    assert read_logs([str(saved)]).lines == []
