"""Byte sources for the capture readers: paths, stdin, open streams, gzip, bzip2 and xz,
chunked buffering.

Captures can be far larger than memory and often arrive through a pipe
(``tcpdump -w - | treason scan -``), so everything here reads forward in bounded chunks and never
seeks. Offsets count bytes of the (decompressed) capture stream, which is what a user can check
with ``dd`` or a hex dump after ``gunzip``.
"""

from __future__ import annotations

import bz2
import lzma
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


#: Longest gzip member header accepted (it may carry a file name and a comment).
MAX_GZIP_HEADER = 64 * 1024

_FHCRC, _FEXTRA, _FNAME, _FCOMMENT, _FRESERVED = 0x02, 0x04, 0x08, 0x10, 0xE0


class _Unpacking:
    """What the decompressing streams share: their compressed source, the input not yet
    used, whether it ended (``truncated``: inside a stream), and the bytes given out so far,
    at which damage is reported."""

    kind = ""

    def __init__(self, stream: Readable, source: str) -> None:
        self._stream = stream
        self._source = source
        self._pending = b""  # compressed input not yet used
        self._eof = False
        self.truncated = False
        self.produced = 0

    def _error(self, message: str) -> CaptureError:
        return CaptureError(self._source, message, self.produced)


class GzipStream(_Unpacking):
    """Streaming gunzip of concatenated gzip members with bounded output per read.

    ``zlib`` inflates each member's raw deflate data; the member header and trailer (RFC 1952)
    are read here rather than by ``zlib`` or ``gzip.GzipFile`` because a stream cut short
    must give back every byte decompressed before the cut (``truncated`` tells the caller), a
    wrong trailer (CRC-32 or length) must not swallow the data inflated just before it, and a
    decompression bomb must not be inflated in one go. Errors are at the decompressed offset
    where the damage shows: after everything inflated before it.
    """

    kind = "gzip"

    def __init__(self, stream: Readable, source: str) -> None:
        super().__init__(stream, source)
        self._z: zlib._Decompress | None = None  # the current member's inflater, after its header
        self._trailer = False  # the member's deflate data ended: its 8-byte trailer is next
        self._crc = 0  # CRC-32 and length of the current member's output so far
        self._size = 0

    def read(self, size: int = -1, /) -> bytes:
        if size <= 0:
            size = CHUNK
        while True:
            z = self._z
            if z is not None and not self._trailer:
                # Called even without new input: zlib may hold output back under max_length.
                try:
                    out = z.decompress(self._pending, size)
                except zlib.error as exc:
                    raise self._error(f"corrupt gzip data ({exc})") from None
                self._pending = z.unconsumed_tail
                if z.eof:
                    # Everything after the deflate data is in unused_data (zlib may also leave
                    # a copy of it in unconsumed_tail).
                    self._pending = z.unused_data
                    self._trailer = True
                if out:
                    self._crc = zlib.crc32(out, self._crc)
                    self._size += len(out)
                    self.produced += len(out)
                    return out
                if self._pending and not self._trailer:
                    continue
            elif self._trailer and len(self._pending) >= 8:
                self._check_trailer()
                continue
            elif z is None and self._pending:
                if not self._pending.strip(b"\0"):
                    self._pending = b""  # zero padding after the last member, as gzip(1) allows
                    continue
                if self._pending[0] != GZIP_MAGIC[0] or self._pending[1:2] not in (b"", b"\x8b"):
                    raise self._error("trailing garbage after gzip data")
                if self._start_member():
                    continue
            if self._eof:
                return b""
            more = self._stream.read(CHUNK)
            if not more:
                self._eof = True
                self.truncated = self._z is not None or bool(self._pending)
                return b""
            self._pending += more

    def _start_member(self) -> bool:
        """Read the member header from ``_pending``; False if it is not complete yet."""
        head = self._pending
        if len(head) < 10:
            return False
        method, flags = head[2], head[3]
        if method != 8:
            raise self._error(f"corrupt gzip data (unknown compression method {method})")
        if flags & _FRESERVED:
            raise self._error("corrupt gzip data (unknown header flags set)")
        pos = 10
        if flags & _FEXTRA:
            if len(head) < pos + 2:
                return self._header_incomplete()
            pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
        for flag in (_FNAME, _FCOMMENT):
            if flags & flag:
                end = head.find(b"\0", pos)
                if end < 0:
                    return self._header_incomplete()
                pos = end + 1
        if flags & _FHCRC:
            pos += 2
            if len(head) >= pos and int.from_bytes(head[pos - 2 : pos], "little") != (
                zlib.crc32(head[: pos - 2]) & 0xFFFF
            ):
                raise self._error("corrupt gzip data (header CRC does not match)")
        if len(head) < pos:
            return self._header_incomplete()
        self._pending = head[pos:]
        self._z = zlib.decompressobj(-15)
        self._crc = self._size = 0
        return True

    def _header_incomplete(self) -> bool:
        if len(self._pending) > MAX_GZIP_HEADER:
            raise self._error(f"gzip member header longer than {MAX_GZIP_HEADER} bytes")
        return False

    def _check_trailer(self) -> None:
        """The member ended: its CRC-32 and length (mod 2**32) must be those of its output."""
        crc = int.from_bytes(self._pending[:4], "little")
        size = int.from_bytes(self._pending[4:8], "little")
        if crc != self._crc:
            raise self._error(
                f"corrupt gzip data (CRC-32 {self._crc:08x} of the inflated data, "
                f"the trailer says {crc:08x})"
            )
        if size != self._size & 0xFFFFFFFF:
            raise self._error(
                f"corrupt gzip data ({self._size & 0xFFFFFFFF} bytes inflated mod 2**32, "
                f"the trailer says {size})"
            )
        self._pending = self._pending[8:]
        self._z = None
        self._trailer = False


#: The first bytes of a bzip2 stream ("BZh" and a block size digit) and of an xz stream.
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


class UnpackedStream(_Unpacking):
    """Streaming bunzip2 or unxz (``tcpdump -z bzip2``, archived rings): concatenated
    streams, bounded output per read, and the promises of ``GzipStream``: a stream cut short
    gives back every byte decompressed before the cut (``truncated`` tells the caller), and
    damage is reported at the decompressed offset where it shows."""

    def __init__(self, stream: Readable, source: str, kind: str) -> None:
        super().__init__(stream, source)
        self.kind = kind  # "bzip2" or "xz"
        self._magic = BZIP2_MAGIC if kind == "bzip2" else XZ_MAGIC
        self._d: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = None

    def read(self, size: int = -1, /) -> bytes:
        if size <= 0:
            size = CHUNK
        while True:
            d = self._d
            if d is not None and (self._pending or not d.needs_input):
                try:
                    out = d.decompress(self._pending, size)
                except (OSError, EOFError, lzma.LZMAError) as exc:
                    raise self._error(f"corrupt {self.kind} data ({exc})") from None
                self._pending = b""
                if d.eof:  # this stream ended: another may follow it
                    self._pending, self._d = d.unused_data, None
                if out:
                    self.produced += len(out)
                    return out
                continue
            if d is None and self._pending:
                if self.kind == "xz" and not self._pending.strip(b"\0"):
                    self._pending = b""  # stream padding, as xz(1) allows
                    continue
                if len(self._pending) >= len(self._magic) or self._eof:
                    if not self._pending.startswith(self._magic):
                        raise self._error(f"trailing garbage after {self.kind} data")
                    self._d = (
                        bz2.BZ2Decompressor() if self.kind == "bzip2" else lzma.LZMADecompressor()
                    )
                    continue
            if self._eof:
                return b""
            more = self._stream.read(CHUNK)
            if not more:
                self._eof = True
                self.truncated = self._d is not None
                if self.truncated or not self._pending:
                    return b""
                continue  # a few bytes left: a stream's start, or garbage
            self._pending += more


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
