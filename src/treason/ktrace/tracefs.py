"""tracefs: where it is, a private instance in it, and leaving nothing behind.

Every tracing setting treason changes lives in its own instance directory,
``instances/treason-<pid>-<random>``: a separate ring buffer with its own enabled events,
filters and clock, so the host's main buffer and anyone else's instances are never touched.
Removing the directory disables its events and frees its buffer. An instance whose process no
longer runs (killed with SIGKILL, or a crash) is removed by the next start.

When tracefs is not mounted, it is mounted on a private temporary directory for the run and
unmounted afterwards, so the host's mount table is as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import tempfile
from pathlib import Path

from treason.errors import TreasonError

#: Where tracefs is usually mounted: its own mount point (4.1+), then inside debugfs.
MOUNT_POINTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
PREFIX = "treason-"
MOUNT_PREFIX = "treason-tracefs-"
_NAME = re.compile(r"treason-(\d+)-[0-9a-f]+")
_MOUNT = re.compile(r"^\S+ (\S*/treason-tracefs-(\d+)-\w+) tracefs ", re.M)


def _running(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists()


def remove_stale_mounts() -> None:
    """Unmount the private tracefs mounts of treason runs that were killed outright."""
    for m in _MOUNT.finditer(Path("/proc/mounts").read_text()):
        if not _running(m.group(2)):
            target = Path(m.group(1))
            _umount(target)
            with contextlib.suppress(OSError):
                target.rmdir()


def _mount_tracefs(target: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"nodev", os.fsencode(target), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _umount(target: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.umount2(os.fsencode(target), 2)  # MNT_DETACH: gone even if a file is still open


class Tracefs:
    """A tracefs mount: the host's, or one of our own on a temporary directory."""

    def __init__(self, root: Path, mounted_here: bool) -> None:
        self.root = root
        self.mounted_here = mounted_here

    @classmethod
    def open(cls) -> Tracefs:
        remove_stale_mounts()
        for root in MOUNT_POINTS:
            try:
                if (root / "instances").is_dir():
                    return cls(root, False)
            except PermissionError:
                raise TreasonError(
                    str(root), "permission denied: needs root, or access to tracefs"
                ) from None
        if not Path("/proc/filesystems").read_text().count("tracefs"):
            raise TreasonError("tracefs", "this kernel has no tracefs (CONFIG_TRACING is off)")
        target = Path(tempfile.mkdtemp(prefix=f"{MOUNT_PREFIX}{os.getpid()}-"))
        try:
            _mount_tracefs(target)
        except OSError as exc:
            target.rmdir()
            why = "needs root (CAP_SYS_ADMIN)" if exc.errno == errno.EPERM else exc.strerror
            raise TreasonError("tracefs", f"not mounted, and mounting it failed: {why}") from None
        return cls(target, True)

    def close(self) -> None:
        if self.mounted_here:
            _umount(self.root)
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def remove_stale(self) -> list[str]:
        """Remove the instances of treason runs whose process is gone; their names."""
        removed = []
        with contextlib.suppress(OSError):
            for entry in (self.root / "instances").iterdir():
                m = _NAME.fullmatch(entry.name)
                if m is None or _running(m.group(1)):
                    continue
                with contextlib.suppress(OSError):
                    entry.rmdir()
                    removed.append(entry.name)
        return removed


class Instance:
    """A private trace instance: its own buffer, events, filters and clock."""

    def __init__(self, fs: Tracefs) -> None:
        self.fs = fs
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.path = fs.root / "instances" / self.name
        try:
            self.path.mkdir()
        except PermissionError:
            raise TreasonError(
                str(fs.root), "permission denied: needs root, or write access to tracefs"
            ) from None
        except OSError as exc:
            why = f"cannot create a trace instance: {exc.strerror}"
            raise TreasonError(str(self.path), why) from None

    def write(self, relative: str, value: str) -> None:
        path = self.path / relative
        try:
            path.write_text(value + "\n")
        except OSError as exc:
            raise TreasonError(str(path), f"cannot write {value!r}: {exc.strerror}") from None

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text()

    def has(self, relative: str) -> bool:
        return (self.path / relative).exists()

    def filter_error(self, event: str) -> str:
        """The kernel's explanation of the last rejected filter of ``event``."""
        text = self.read(f"events/{event}/filter").strip().splitlines()
        return text[-1] if text else "rejected"

    def remove(self) -> None:
        """Stop tracing and delete the instance (which disables its events and frees its buffer).

        The directory can only go once no file in it is open; retries cover a reader that is
        still closing.
        """
        with contextlib.suppress(OSError):
            (self.path / "tracing_on").write_text("0\n")
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                os.sched_yield()
        # Last resort: make sure nothing stays enabled even if the directory must stay.
        with contextlib.suppress(OSError):
            (self.path / "events" / "enable").write_text("0\n")


def tracefs_available() -> str | None:
    """Why tracing cannot run here, or None (for tests and the benchmark)."""
    if os.geteuid() != 0:
        return "needs root for tracefs"
    if not Path("/proc/filesystems").read_text().count("tracefs"):
        return "the kernel has no tracefs"
    return None
