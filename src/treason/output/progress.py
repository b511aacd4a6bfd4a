"""A progress line on stderr for long scans, only when stderr is a terminal.

The capture is wrapped in a reader that counts bytes as the engine pulls them, so both
engines report progress without knowing about it; the line is redrawn at most five times a
second and erased when the scan ends.
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import TYPE_CHECKING, BinaryIO, TextIO

from treason.output.present import file_text

if TYPE_CHECKING:
    from typing_extensions import Buffer

MIN_SIZE = 64 << 20  # smaller captures finish before a progress line would help


def wanted(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (standard error as it is now, by default) shows a progress line."""
    stream = sys.stderr if stream is None else stream
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class ProgressReader(io.RawIOBase):
    """Counts bytes read from ``raw`` and redraws one status line on ``out``."""

    def __init__(self, raw: BinaryIO, name: str, total: int, out: TextIO = sys.stderr) -> None:
        self.raw, self.name, self.total, self.out = raw, name, total, out
        self.label = file_text(name)  # a file name may hold escape sequences: never raw
        self.done = 0
        self.start = self._last = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        n: int | None = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.done += n
            now = time.monotonic()
            if now - self._last >= 0.2:
                self._last = now
                self._draw(now)
        return n or 0

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6)
        pct = 100 * self.done / self.total if self.total else 0
        self.out.write(
            f"\r\x1b[Ktreason: {self.label}: {pct:3.0f}%  {_size(self.done)} of "
            f"{_size(self.total)}  {_size(rate)}/s"
        )
        self.out.flush()

    def close(self) -> None:
        if not self.closed:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.raw.close()
        super().close()


def open_with_progress(path: str) -> BinaryIO | None:
    """The file wrapped with progress, or None when no progress line is wanted."""
    if path == "-" or not wanted():
        return None
    try:
        size = os.stat(path).st_size
    except OSError:
        return None  # let the scan report the problem in its own words
    if size < MIN_SIZE or not os.path.isfile(path):
        return None
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the scan
    except OSError:
        return None  # unreadable: the scan says so in its own words
    reader = ProgressReader(raw, path, size)
    reader.name = path
    return reader  # type: ignore[return-value]
