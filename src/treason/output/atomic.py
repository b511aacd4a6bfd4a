"""Where output goes, and the one policy every command follows when writing it.

A report half-written by a full disk, an error or a signal is worse than none: the user may
take it for the whole answer. A regular file is therefore written to a temporary file in its
directory (so the rename cannot cross file systems), flushed to disk and renamed over the
target only when complete. The same policy holds for every writer (``scan``, ``plot``,
``logs``, ``match``, ``live --write``):

- **Never over an input.** ``scan x.pcap -o x.pcap`` would replace the evidence with the
  report; the target is compared with every input by device and inode, so another path, a hard
  link or a symlink to the same file is refused too.
- **Through special files and symlinks**, as ``cp`` and shells do: ``-o /dev/null``, a FIFO or
  a terminal are opened and written, never replaced (as root, a rename would destroy
  ``/dev/null``); a symlink is followed and its target replaced, the link itself stays.
- **Modes as the user expects**: a new file gets ``0666`` minus the umask; an existing file
  keeps its mode (a private ``0600`` report stays private) and, where allowed, its owner.
- **No temporary file survives**: errors, Ctrl-C (``KeyboardInterrupt``), SIGTERM and SIGHUP
  remove it; the signals then end the process as they would have.
- **Write errors are one line**: a full disk (or quota, or I/O error) under ``-o`` or on
  standard output raises ``TreasonError`` naming the file, never a traceback. A closed pipe
  stays a ``BrokenPipeError`` so the command can end quietly.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO, TextIO

from treason.errors import TreasonError

if TYPE_CHECKING:
    from typing_extensions import Buffer

PathLike = str | os.PathLike[str]

#: Temporary files (and scratch directories) in use, removed by the signal handler below before
#: the process ends.
_PENDING: set[str] = set()
#: The signals that end a process without unwinding its stack (SIGINT raises and unwinds).
_FATAL = (signal.SIGTERM, signal.SIGHUP)


class Abandon(Exception):
    """Raised inside an output block when there is nothing worth writing after all (every
    input failed before its first packet): the block ends quietly and a previous file stays."""


class _Raw(io.FileIO):
    """A file whose write errors name the output: ``TreasonError``, or ``BrokenPipeError``."""

    def __init__(self, fd: int, name: str, closefd: bool = True) -> None:
        super().__init__(fd, "wb", closefd=closefd)
        self.label = name

    def write(self, data: Buffer) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise TreasonError(self.label, f"cannot write: {exc.strerror}") from None


class Output:
    """One output being written: a temporary file beside a regular target, or the target
    itself when it is a special file. ``commit()`` puts it in place; ``discard()`` drops it.

    Most callers want ``atomic_text``/``atomic_binary``; this class is for writers whose
    output lives across many calls (``live --write``).
    """

    def __init__(self, path: PathLike, *, inputs: Iterable[PathLike] = ()) -> None:
        self.name = os.fspath(path)
        self.target = os.path.realpath(self.name)  # a symlink's file is replaced, not the link
        self.tmp: str | None = None
        self._mode: int | None = None
        self._owner: tuple[int, int] | None = None
        try:
            st: os.stat_result | None = os.stat(self.target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise TreasonError(self.name, f"cannot write: {exc.strerror}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise TreasonError(self.name, "cannot write: is a directory")
        if st is not None and stat.S_ISREG(st.st_mode):
            _refuse_inputs(self.name, st, inputs)
            self._mode, self._owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
        try:
            if st is not None and not stat.S_ISREG(st.st_mode):
                fd = os.open(self.target, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            else:
                fd, self.tmp = tempfile.mkstemp(
                    prefix=".treason-", suffix=".tmp", dir=os.path.dirname(self.target)
                )
                _track(self.tmp)
        except OSError as exc:
            raise TreasonError(self.name, f"cannot write: {exc.strerror}") from None
        self.raw = _Raw(fd, self.name)
        self.stream: BinaryIO = io.BufferedWriter(self.raw)

    def commit(self) -> None:
        """Flush, sync and rename into place (special files: flush only)."""
        self.stream.flush()
        if self.tmp is None:
            self.stream.close()
            return
        try:
            os.fsync(self.raw.fileno())
            self.stream.close()
            mode = self._mode if self._mode is not None else 0o666 & ~_umask()
            os.chmod(self.tmp, mode)
            if self._owner is not None:
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.chown(self.tmp, *self._owner)
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.discard()
            raise TreasonError(self.name, f"cannot write: {exc.strerror}") from None
        self._forget()
        _sync_directory(os.path.dirname(self.target))

    def keep_partial(self) -> int:
        """After a write error: put what reached the disk in place anyway; its size in bytes.

        For evidence (a live capture) part of it is better than none; a report is never kept
        partial (see ``discard``).
        """
        with contextlib.suppress(OSError, TreasonError):
            self.stream.close()  # the buffered rest cannot be written; the fd is closed anyway
        if self.tmp is None:
            return 0
        try:
            size = os.stat(self.tmp).st_size
            os.chmod(self.tmp, self._mode if self._mode is not None else 0o666 & ~_umask())
            os.replace(self.tmp, self.target)
        except OSError:
            self.discard()
            return 0
        self._forget()
        return size

    def discard(self) -> None:
        """Drop the output: the temporary file goes, a previous file stays as it was."""
        with contextlib.suppress(OSError, TreasonError):
            self.stream.close()
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self._forget()

    def _forget(self) -> None:
        if self.tmp is not None:
            _PENDING.discard(self.tmp)
            self.tmp = None


@contextlib.contextmanager
def atomic_binary(path: PathLike, *, inputs: Iterable[PathLike] = ()) -> Iterator[BinaryIO]:
    """Open ``path`` for writing bytes; it appears only if the block completes.

    ``inputs`` are the files the command reads: writing over one of them is refused.
    """
    with _placed(Output(path, inputs=inputs)) as output:
        yield output.stream


@contextlib.contextmanager
def atomic_text(
    path: PathLike, newline: str | None = None, *, inputs: Iterable[PathLike] = ()
) -> Iterator[TextIO]:
    """Open ``path`` for writing UTF-8 text; it appears only if the block completes."""
    with _placed(Output(path, inputs=inputs)) as output:
        text = io.TextIOWrapper(output.stream, encoding="utf-8", newline=newline)
        yield text
        text.flush()
        text.detach()


@contextlib.contextmanager
def _placed(output: Output) -> Iterator[Output]:
    """Commit ``output`` when the block completes, discard it otherwise (quietly on Abandon)."""
    try:
        yield output
        output.commit()
    except Abandon:
        output.discard()
    except BaseException:
        output.discard()
        raise


@contextlib.contextmanager
def stdout_text(newline: str | None = None) -> Iterator[TextIO]:
    """Standard output with the same error policy: a full disk is one line, not a traceback.

    Encoding and error handling are those of ``sys.stdout``; the stream is flushed at the end
    of the block, so nothing is left for the interpreter to fail on at exit.
    """
    if sys.stdout is None:
        raise TreasonError("<stdout>", "cannot write: standard output is closed")
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # replaced by an in-memory stream (an embedding program)
        with contextlib.suppress(Abandon):
            yield sys.stdout
        return
    raw = _Raw(fd, "<stdout>", closefd=False)
    text = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=sys.stdout.encoding,
        errors=sys.stdout.errors,
        newline=newline,
        line_buffering=bool(sys.stdout.line_buffering),
    )
    try:
        yield text
        text.flush()
    except Abandon:
        pass
    finally:
        with contextlib.suppress(OSError, TreasonError, ValueError):
            text.detach()


def output_text(
    path: PathLike | None, newline: str | None = None, *, inputs: Iterable[PathLike] = ()
) -> contextlib.AbstractContextManager[TextIO]:
    """``-o FILE`` (atomically, never over an input) or standard output when ``path`` is None."""
    if path is None:
        return stdout_text(newline)
    return atomic_text(path, newline, inputs=inputs)


def _refuse_inputs(name: str, target: os.stat_result, inputs: Iterable[PathLike]) -> None:
    for path in inputs:
        if os.fspath(path) == "-":
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            raise TreasonError(
                name, f"is also an input ({os.fspath(path)}): refusing to write over it"
            )


def _track(tmp: str) -> None:
    """Remember ``tmp`` so that SIGTERM/SIGHUP remove it; install the handler when allowed.

    A command that handles these signals itself (``live`` stops cleanly on SIGTERM) keeps its
    handler: its own cleanup then runs through ``discard``/``commit``.
    """
    _PENDING.add(tmp)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _FATAL:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _remove_and_die)


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[str]:
    """A private temporary directory, removed at the end and on SIGTERM/SIGHUP too."""
    path = tempfile.mkdtemp(prefix=prefix)
    _track(path)
    try:
        yield path
    finally:
        _PENDING.discard(path)
        shutil.rmtree(path, ignore_errors=True)


def _remove_and_die(signum: int, _frame: object) -> None:
    for path in list(_PENDING):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    _PENDING.clear()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
