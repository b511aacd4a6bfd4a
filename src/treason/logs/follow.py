"""``treason logs --follow``: kernel log records as they are written, for live explanation.

Two sources: the journal (``journalctl -k -f -o json``, one JSON object per line as journald
stores it) and a log file followed like ``tail -F``: from its current end, across rotation
(the name now points to a new file: the old one is read to its end first, then the new one
from its start) and truncation (read again from the start). Records come out through the same
container parsers as ``treason logs``, so a followed line means what it means in a file.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator

from treason.errors import TreasonError
from treason.logs.formats import (
    MAX_LINE,
    LineParser,
    Record,
    json_or_line,
    log_text,
    read_stream,
)

JOURNAL_ARGV = ("journalctl", "-k", "-f", "-q", "--no-pager", "-o", "json", "-n", "0")

#: Bytes remembered from the end of what was read, to notice a file truncated and rewritten.
_SEEN = 64

#: How often a followed file is checked for growth, rotation and truncation.
POLL_SECONDS = 0.25

#: Bytes read at a time; with ``LINE_LIMIT`` this bounds memory whatever is appended (a
#: device that never ends, a line of a gigabyte), and keeps signals answered between reads.
_CHUNK = 1 << 20
#: Longest line kept (its first bytes); the rest of a longer line is dropped.
LINE_LIMIT = MAX_LINE * 4


def follow_file(
    path: str, *, from_start: bool = False, stopping: Callable[[], bool] = lambda: False
) -> Iterator[Record]:
    """Records of the lines appended to ``path`` (``tail -F``).

    The file is opened (and its end taken) now, not at the first ``next()``: a line written
    after this call returns is never missed.
    """
    follower = FileFollower(path, from_start=from_start, stopping=stopping)
    return _records(follower, LineParser(path))


def _records(follower: FileFollower, parser: LineParser) -> Iterator[Record]:
    try:
        for lineno, line in follower.lines():
            record = json_or_line(parser, log_text(line), lineno)
            if record is not None:
                yield record
    finally:
        follower.close()


def follow_command(argv: tuple[str, ...] | list[str], name: str) -> Iterator[Record]:
    """Records from a command that keeps writing log lines (the journal's ``-f``)."""
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise TreasonError(argv[0], f"cannot run: {exc.strerror or exc}") from None
    assert proc.stdout is not None
    try:
        yield from read_stream(name, proc.stdout, join=False)  # type: ignore[arg-type]
        err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
        status = proc.wait()
        if status != 0:
            detail = err.splitlines()[-1] if err else f"exit status {status}"
            raise TreasonError(name, detail)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


class FileFollower:
    """``tail -F`` for one path: yields complete new lines with their line numbers in the file;
    survives rotation and truncation.

    ``from_start`` reads what the file already holds (otherwise only lines written after the
    follower opened it, numbered after the lines already there). ``stopping`` is polled
    between reads so a signal can end the wait. A FIFO or a device is read as it comes (no
    seeking, no rotation).
    """

    def __init__(
        self,
        path: str,
        *,
        from_start: bool = False,
        poll: float = POLL_SECONDS,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.path = path
        self.poll = poll
        self.stopping = stopping
        self._fh: io.BufferedReader | None = None
        self._ino: tuple[int, int] | None = None
        self._partial = b""
        self._seen = b""  # the last bytes read: a file rewritten in place no longer ends so
        self._regular = True
        #: Number of the last complete line read.
        self.lineno = 0
        self._open(at_end=not from_start)

    def _open(self, at_end: bool) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open across calls, closed on switch
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TreasonError(self.path, exc.strerror or str(exc)) from None
        st = os.fstat(fh.fileno())
        self._regular = stat.S_ISREG(st.st_mode)
        self._fh, self._ino, self._partial = fh, (st.st_dev, st.st_ino), b""
        self._seen = b""
        self.lineno = 0
        if at_end and self._regular:
            self.lineno = _count_lines(fh)
            if st.st_size:
                size = st.st_size
                self._seen = os.pread(fh.fileno(), min(_SEEN, size), max(0, size - _SEEN))
        return True

    def lines(self) -> Iterator[tuple[int, bytes]]:
        while not self.stopping():
            if self._fh is None and not self._open(at_end=False):
                # Not there (yet, or between rotation steps): a new file is read from its start.
                time.sleep(self.poll)
                continue
            assert self._fh is not None
            change = self._change()
            if change == "rotated":
                # The name points to a new file: finish the old one, then switch.
                yield from self._read_new()
                if self._partial:
                    self.lineno += 1
                    yield self.lineno, self._partial
                self.close()
                continue
            if change == "truncated":
                self._fh.seek(0)
                self._partial = self._seen = b""
                self.lineno = 0
            got = False
            for line in self._read_new():
                got = True
                yield line
            if not got:
                time.sleep(self.poll)

    def _read_new(self) -> Iterator[tuple[int, bytes]]:
        """Complete lines read since the last call, a bounded chunk at a time."""
        assert self._fh is not None
        while True:
            data = self._fh.read1(_CHUNK)
            if not data:
                return
            if self._regular:
                self._seen = (self._seen + data)[-_SEEN:]
            *complete, partial = (self._partial + data).split(b"\n")
            self._partial = partial[:LINE_LIMIT]
            for line in complete:
                self.lineno += 1
                yield self.lineno, line[:LINE_LIMIT] + b"\n"
            if len(data) < _CHUNK and self._regular:
                return

    def _change(self) -> str | None:
        """``rotated`` (the name is another file now), ``truncated`` (emptied in place and
        maybe written again: shorter than what was read, or no longer ending in the bytes that
        were read last) or None."""
        assert self._fh is not None
        if not self._regular:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "rotated"
        if (st.st_dev, st.st_ino) != self._ino:
            return "rotated"
        pos = self._fh.tell()
        if st.st_size < pos:
            return "truncated"
        seen = self._seen
        if seen and os.pread(self._fh.fileno(), len(seen), pos - len(seen)) != seen:
            return "truncated"
        return None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _count_lines(fh: io.BufferedReader) -> int:
    """Lines the file holds now (read in chunks), leaving the position at its end."""
    fh.seek(0)
    count = 0
    while chunk := fh.read(_CHUNK * 8):
        count += chunk.count(b"\n")
    return count


def default_source() -> tuple[str, Callable[[], Iterator[Record]]]:
    """The journal when it holds files, else ``/var/log/kern.log``; an error when neither."""
    import glob
    import shutil

    journal = [p for d in ("/var/log/journal", "/run/log/journal") for p in glob.glob(d + "/*")]
    if shutil.which("journalctl") and journal:
        return "the journal (journalctl -k -f)", lambda: follow_command(JOURNAL_ARGV, "journal")
    kern = "/var/log/kern.log"
    if os.path.exists(kern):
        return kern, lambda: follow_file(kern)
    raise TreasonError(
        "--follow", "no journal and no /var/log/kern.log to follow; name a FILE (or - for stdin)"
    )


def source_for(path: str, stopping: Callable[[], bool]) -> Callable[[], Iterator[Record]]:
    """The records of one named source to follow (``-`` is stdin, read as it comes)."""
    if path == "-":
        import sys

        return lambda: read_stream("<stdin>", sys.stdin.buffer, join=False)
    if not os.path.exists(path):
        raise TreasonError(path, "no such file to follow")
    return lambda: follow_file(path, stopping=stopping)
