"""The logwatch service: kernel window-shrink reports as an explained logwatch section.

``install`` writes, under ``ROOT/etc/logwatch``:

- ``conf/services/treason.conf`` — the service: the same ``messages`` log group as the stock
  kernel service, no header stripping (host and time matter to the summary);
- ``scripts/services/treason`` — a small Perl script (logwatch runs service scripts with
  Perl) that hands its input to ``python -m treason logs --logwatch-section``;
- a marked block in ``conf/services/kernel.conf`` that sets the stock kernel service's
  ``$kernel_ignore_messages`` to skip exactly these wordings, so they are not listed twice
  (an ignore pattern the administrator already had is kept, combined with ours);
- ``conf/treason.manifest`` — what was created, so ``uninstall`` removes exactly that.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from treason.errors import TreasonError
from treason.output.atomic import atomic_text

MARK_BEGIN = "# BEGIN treason"
MARK_END = "# END treason"
MARKER = "Installed by `treason logwatch install`; `treason logwatch uninstall` removes it."

#: What the stock kernel service must skip: each wording, as logwatch's Perl sees it (matched
#: case-insensitively, after the ``[uptime]`` stamp is removed). No ``#``: logwatch's config
#: reader would take it for a comment.
IGNORE_REGEX = (
    r"(TCP: ?)?Treason uncloaked! Peer [0-9a-f:.]+:[0-9]+/[0-9]+ shrinks window [0-9]+:[0-9]+"
    r"|TCP: ?peer [0-9a-f:.]+:[0-9]+/[0-9]+ shrinks window [0-9]+:[0-9]+:[0-9]+"
    r"|Peer [0-9a-f:.]+:[0-9]+/[0-9]+ unexpectedly shrunk window [0-9]+:[0-9]+"
    r"|Probing zero-window on [0-9a-f:.]+:[0-9]+/[0-9]+, seq=[0-9]+:[0-9]+"
)

SERVICE_CONF = """\
# {marker}
# Kernel reports of TCP peers shrinking their receive window, explained by treason.
# Reads the same log group(s) as the stock kernel service.
Title = "Window-shrinking TCP peers (treason)"
{logfiles}
"""

#: Where the logwatch package keeps its stock configuration.
STOCK_DIR = "/usr/share/logwatch"


def stock_kernel_logfiles(stock_dir: str = STOCK_DIR) -> list[str]:
    """The log groups the stock kernel service reads: ``messages`` upstream, ``kernel``
    (kern.log) on Debian, whose dist.conf replaces it. An empty ``LogFile =`` resets the list,
    as in logwatch's own reader."""
    groups: list[str] = []
    for sub in ("default.conf", "dist.conf"):
        try:
            with open(
                os.path.join(stock_dir, sub, "services", "kernel.conf"), encoding="utf-8"
            ) as fh:
                text = fh.read()
        except OSError:
            continue
        for line in text.splitlines():
            m = re.match(r"\s*logfile\s*=\s*([^#\s]*)", line, re.I)
            if m is None:
                continue
            if not m.group(1):
                groups = []
            elif m.group(1) not in groups:
                groups.append(m.group(1))
    return groups or ["messages"]


SCRIPT = """\
#!/usr/bin/perl
# {marker}
# Turns the kernel's window-shrink reports ("Treason uncloaked", "unexpectedly shrunk
# window", "Probing zero-window") into an explained section; see `treason logs --help`.
use strict;
my $python = {python};
exec {{ $python }} $python, '-m', 'treason', 'logs', '--logwatch-section', '-'
    or print "treason: cannot run $python: $!\\n";
exit 0;
"""


def _paths(root: str) -> dict[str, str]:
    base = os.path.join(root, "etc", "logwatch")
    return {
        "base": base,
        "conf": os.path.join(base, "conf", "services", "treason.conf"),
        "script": os.path.join(base, "scripts", "services", "treason"),
        "kernel": os.path.join(base, "conf", "services", "kernel.conf"),
        "manifest": os.path.join(base, "conf", "treason.manifest"),
    }


def _perl_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write(path: str, text: str, executable: bool = False) -> None:
    """Replace ``path`` atomically (the one writer of the package); scripts get exec bits."""
    with atomic_text(path) as fh:
        fh.write(text)
    if executable:
        os.chmod(path, os.stat(path).st_mode | 0o111)


def _read_kernel_conf(path: str) -> str | None:
    """The administrator's ``kernel.conf`` (None if absent). It must be UTF-8: its bytes are
    written back around our block, so a file in another encoding is refused before anything
    is changed rather than re-encoded."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TreasonError(
            path,
            f"not UTF-8 text (byte {exc.start}); nothing was changed: convert it "
            "(iconv -t UTF-8) and run this again",
        ) from None


def _makedirs(path: str, created: list[str]) -> None:
    missing = []
    d = path
    while not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        os.mkdir(d, 0o755)
        created.append(d)


_EXISTING = re.compile(r"^\s*\$kernel_ignore_messages\s*=\s*(.*?)\s*$", re.I | re.M)


def _kernel_block(existing: str | None) -> str:
    pattern = IGNORE_REGEX
    if existing:
        user = [m.group(1) for m in _EXISTING.finditer(_strip_block(existing))]
        if user and user[-1]:
            value = user[-1]
            if value.startswith('"') and value.endswith('"'):
                value = value[1:-1]
            pattern = f"(?:{value})|{IGNORE_REGEX}"
    return (
        f"{MARK_BEGIN}: the window-shrink reports are listed by the treason service.\n"
        f"# {MARKER}\n"
        f'$kernel_ignore_messages = "{pattern}"\n'
        f"{MARK_END}\n"
    )


def _strip_block(text: str) -> str:
    return re.sub(
        rf"\n?{re.escape(MARK_BEGIN)}.*?{re.escape(MARK_END)}\n?", "\n", text, flags=re.S
    ).strip("\n") + ("\n" if text.strip() else "")


def install(root: str = "/", python: str | None = None) -> list[str]:
    """Install the service under ``root``; returns the files written or changed."""
    p = _paths(root)
    python = python or sys.executable
    created_dirs: list[str] = []
    created_files: list[str] = []
    try:
        existing = _read_kernel_conf(p["kernel"])
        for key in ("conf", "script", "manifest"):
            _makedirs(os.path.dirname(p[key]), created_dirs)
        for key in ("conf", "script"):
            if not os.path.exists(p[key]):
                created_files.append(p[key])
        logfiles = "\n".join(f"LogFile = {g}" for g in stock_kernel_logfiles())
        _write(p["conf"], SERVICE_CONF.format(marker=MARKER, logfiles=logfiles))
        script = SCRIPT.format(marker=MARKER, python=_perl_string(python))
        _write(p["script"], script, executable=True)
        if existing is None:
            created_files.append(p["kernel"])
        kept = _strip_block(existing) if existing else ""
        sep = "\n" if kept and not kept.endswith("\n") else ""
        _write(p["kernel"], kept + sep + _kernel_block(existing))
        previous = _read_manifest(p["manifest"])
        manifest = {
            "dirs": previous.get("dirs", []) + created_dirs,
            "files": sorted(set(previous.get("files", [])) | set(created_files)),
        }
        _write(p["manifest"], json.dumps(manifest, indent=1) + "\n")
    except OSError as exc:
        raise TreasonError(exc.filename or p["base"], f"cannot install: {exc.strerror}") from None
    return [p["conf"], p["script"], p["kernel"], p["manifest"]]


def _read_manifest(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return MARKER in fh.read(4096)
    except OSError:
        return False


def uninstall(root: str = "/") -> list[str]:
    """Remove what ``install`` added under ``root``; returns what was removed or restored."""
    p = _paths(root)
    manifest = _read_manifest(p["manifest"])
    created = set(manifest.get("files", []))
    done: list[str] = []
    try:
        text = _read_kernel_conf(p["kernel"])
        for key in ("conf", "script"):
            if os.path.exists(p[key]) and _ours(p[key]):
                os.unlink(p[key])
                done.append(p[key])
        if text is not None and MARK_BEGIN in text:
            rest = _strip_block(text)
            if p["kernel"] in created and not rest.strip():
                os.unlink(p["kernel"])
            else:
                _write(p["kernel"], rest)
            done.append(p["kernel"])
        if os.path.exists(p["manifest"]):
            os.unlink(p["manifest"])
            done.append(p["manifest"])
        for d in reversed(manifest.get("dirs", [])):
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
                done.append(d)
    except OSError as exc:
        raise TreasonError(exc.filename or p["base"], f"cannot uninstall: {exc.strerror}") from None
    return done
