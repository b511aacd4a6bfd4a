"""The logwatch service, run by the real logwatch (Debian package).

logwatch reads its configuration from the fixed directory /etc/logwatch; each run here
bind-mounts a test directory there inside a private mount namespace, so the machine's own
configuration is neither used nor touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

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
        f"mount --bind '{conf}' /etc/logwatch && exec logwatch --logdir '{logdir}' --range all "
        f"--output stdout {' '.join(args)}"
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
    assert "Window-shrinking TCP peers (treason) Begin" in default
    assert "5 report(s), 1 connection(s), 5 stall episode(s), 1 peer(s)" in default
    assert "203.0.113.7:2315 -> local 80 (http)" in default and "What this means:" in default
    detailed = logwatch(
        root, logdir, "--detail", "10", "--service", "kernel", "--service", "treason"
    )
    assert "Time(s): TCP: Treason uncloaked!" not in detailed  # not listed twice
    assert "Time(s): e1000e: eth0 NIC Link is Up" in detailed  # the rest still is
    assert "Time(s): nf_ct_tcp: SEQ is over the upper bound" in detailed

    uninstall(str(root))
    assert tree(root) == before
    restored = logwatch(root, logdir, "--detail", "10", "--service", "kernel")
    assert _report(restored) == _report(stock)


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
