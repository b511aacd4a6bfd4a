"""Byte sources for the capture readers: paths, stdin, open streams, gzip, chunked buffering.

Captures can be far larger than memory and often arrive through a pipe
(``tcpdump -w - | treason scan -``), so everything here reads forward in bounded chunks and never
seeks. Offsets count bytes of the (decompressed) capture stream, which is what a user can check
with ``dd`` or a hex dump after ``gunzip``.
"""

from __future__ import annotations

import os
import sys
import zlib
from typing import BinaryIO, Protocol

from treason.errors import CaptureError

#: How much to read from the underlying file at a time.
CHUNK = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"

#: Largest record accepted (as Wireshark and libpcap): anything bigger is damage, not a packet.
MAX_RECORD = 256 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Prefixed:
    """A stream with some already-read bytes put back in front (format sniffing on pipes)."""

    def __init__(self, prefix: bytes, stream: Readable) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, size: int = -1, /) -> bytes:
        if self._prefix:
            head = self._prefix if size < 0 else self._prefix[:size]
            self._prefix = self._prefix[len(head) :]
            return head
        return self._stream.read(size)


class GzipStream:
    """Streaming gunzip of concatenated gzip members with bounded output per read.

    ``zlib`` directly rather than ``gzip.GzipFile`` because a stream cut short must give back
    every byte that was decompressed before the cut (``truncated`` tells the caller), and a
    decompression bomb must not be inflated in one go.
    """

    def __init__(self, stream: Readable, source: str) -> None:
        self._stream = stream
        self._source = source
        self._z = zlib.decompressobj(31)
        self._in_member = False  # the current decompressor has been fed bytes
        self._pending = b""  # compressed input not yet fed
        self._eof = False
        self.truncated = False
        self.produced = 0

    def read(self, size: int = -1, /) -> bytes:
        if size <= 0:
            size = CHUNK
        while True:
            if self._in_member:
                # Called even without new input: zlib may hold output back under max_length.
                try:
                    out = self._z.decompress(self._pending, size)
                except zlib.error as exc:
                    raise CaptureError(
                        self._source, f"corrupt gzip data ({exc})", self.produced
                    ) from None
                self._pending = self._z.unconsumed_tail
                if self._z.eof:
                    # Everything after the member end is in unused_data (zlib may also leave
                    # a copy of it in unconsumed_tail).
                    self._pending = self._z.unused_data
                    self._z = zlib.decompressobj(31)
                    self._in_member = False
                if out:
                    self.produced += len(out)
                    return out
                if self._pending:
                    continue
            if not self._pending:
                if self._eof:
                    return b""
                self._pending = self._stream.read(CHUNK)
                if not self._pending:
                    self._eof = True
                    self.truncated = self._in_member
                    return b""
            if not self._in_member:
                if not self._pending.strip(b"\0"):
                    self._pending = b""  # zero padding after the last member, as gzip(1) allows
                    continue
                if self._pending[0] != GZIP_MAGIC[0] or self._pending[1:2] not in (b"", b"\x8b"):
                    raise CaptureError(
                        self._source, "trailing garbage after gzip data", self.produced
                    )
                self._in_member = True


class ChunkBuffer:
    """Forward-only buffer over a stream: ``ensure(n)`` makes ``n`` bytes available at ``pos``.

    Parsers index ``buf`` directly from ``pos`` to keep the per-record cost to a few slices.
    ``offset`` is the absolute stream offset of ``pos``.
    """

    __slots__ = ("_base", "_source", "_stream", "buf", "eof", "pos")

    def __init__(self, stream: Readable, source: str) -> None:
        self._stream = stream
        self._source = source
        self.buf = b""
        self.pos = 0
        self._base = 0  # absolute offset of buf[0]
        self.eof = False

    @property
    def offset(self) -> int:
        return self._base + self.pos

    def available(self) -> int:
        return len(self.buf) - self.pos

    def ensure(self, n: int) -> bool:
        """Make ``n`` bytes available from ``pos``; False if the stream ends first."""
        if len(self.buf) - self.pos >= n:
            return True
        parts = [self.buf[self.pos :]]
        have = len(parts[0])
        self._base += self.pos
        self.pos = 0
        while have < n and not self.eof:
            try:
                chunk = self._stream.read(max(CHUNK, n - have))
            except OSError as exc:
                raise CaptureError(self._source, exc.strerror or str(exc), self.offset) from None
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)
        return have >= n


def open_stream(
    source: str | os.PathLike[str] | BinaryIO, display: str
) -> tuple[Readable, str, BinaryIO | None]:
    """Open ``source`` for reading; returns the stream, its display name and what to close.

    OS errors become one-line ``CaptureError`` messages (``No such file or directory``, ``is a
    directory``) instead of tracebacks.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path == "-":
            if sys.stdin is None:
                raise CaptureError(display, "standard input is closed")
            return sys.stdin.buffer, display, None
        if os.path.isdir(path):
            raise CaptureError(display, "is a directory, not a capture file")
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the Capture when done
        except OSError as exc:
            raise CaptureError(display, exc.strerror or str(exc)) from None
        return fh, display, fh
    return source, display, None


def read_some(stream: Readable, n: int, source: str) -> bytes:
    """Read up to ``n`` bytes, looping over short reads (pipes), converting OS errors."""
    parts: list[bytes] = []
    have = 0
    while have < n:
        try:
            chunk = stream.read(n - have)
        except OSError as exc:
            raise CaptureError(source, exc.strerror or str(exc)) from None
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)
