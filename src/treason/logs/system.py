"""Reading the local system's kernel log when no file is given.

Tried in order: the journal (``journalctl -k -o export``, exact fields), then
``/var/log/kern.log*`` (rotated set, oldest first), then ``dmesg`` (the kernel ring buffer,
which may have wrapped). The caller is told which one answered, or that none was readable.
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from treason.errors import TreasonError
from treason.logs import LogScan
from treason.logs.bulk import read_logs, scan_stream
from treason.logs.formats import rotation_order


@dataclass
class Source:
    name: str
    read: Callable[[], LogScan]


def _command(argv: list[str]) -> Callable[[], LogScan]:
    def run() -> LogScan:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TreasonError(argv[0], f"cannot run: {exc}") from None
        if done.returncode != 0 or not done.stdout.strip():
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise TreasonError(" ".join(argv), detail[-1] if detail else "no output")
        scan = LogScan(sources=[" ".join(argv)])
        return scan_stream(" ".join(argv), io.BytesIO(done.stdout), scan)

    return run


def candidates(root: str = "/") -> list[Source]:
    """The local sources in order of preference (those that exist on this machine)."""
    found: list[Source] = []
    if shutil.which("journalctl"):
        argv = ["journalctl", "-k", "-q", "--no-pager", "-o", "export"]
        found.append(Source("the journal (journalctl -k)", _command(argv)))
    kern = [p for p in glob.glob(os.path.join(root, "var/log/kern.log*")) if os.access(p, os.R_OK)]
    if kern:
        ordered = rotation_order(sorted(kern))
        found.append(
            Source(
                f"{os.path.join(root, 'var/log/kern.log')}* ({len(kern)} file(s))",
                lambda: read_logs(ordered),
            )
        )
    if shutil.which("dmesg"):
        found.append(Source("the kernel ring buffer (dmesg)", _command(["dmesg", "-x"])))
    return found


def read_system(root: str = "/") -> tuple[str, LogScan]:
    """The first readable local source and what it holds; TreasonError if none is readable."""
    reasons: list[str] = []
    for source in candidates(root):
        try:
            return source.name, source.read()
        except TreasonError as exc:
            reasons.append(f"{source.name}: {exc.message}")
    why = "; ".join(reasons) if reasons else "no journal, no kern.log, no dmesg"
    raise TreasonError("local system", f"no kernel log was readable ({why})")
