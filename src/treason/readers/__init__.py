"""Capture readers: open a pcap or pcapng file (maybe gzipped, maybe on stdin) and frame it.

``open_capture`` is the one place a capture is opened, gunzipped and recognised; both engines
start from the ``Capture`` it returns (the reference engine frames it here with ``frames``,
the compiled one in C). The format is recognised by its first bytes, never by the file name:
captures are routinely mislabelled (pcapng saved as ``.pcap``) and stdin has no name at all.
Readers stream in bounded chunks, yield every valid record first and only then raise for the
damage they met, so a user always gets the readable part of a broken capture.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from treason.errors import CaptureError, TruncatedCapture
from treason.packets import Frame
from treason.readers.pcap import is_pcap, read_pcap
from treason.readers.pcapng import is_pcapng, looks_like_headless_pcapng, read_pcapng
from treason.readers.stream import (
    BZIP2_MAGIC,
    GZIP_MAGIC,
    XZ_MAGIC,
    ChunkBuffer,
    GzipStream,
    Prefixed,
    Readable,
    UnpackedStream,
    open_stream,
    read_some,
)

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureSource",
    "LongRecords",
    "TruncatedCapture",
    "display_name",
    "frames",
    "open_capture",
    "open_frames",
]

#: What a capture can be given as: a path, ``"-"`` for standard input, or a binary stream.
CaptureSource = str | os.PathLike[str] | BinaryIO

#: Enough bytes to recognise every supported format.
SNIFF_LEN = 12


@dataclass
class Capture:
    """One opened capture: what it is called, its format, and its (gunzipped) bytes.

    ``head`` holds the first bytes, already read to recognise the format; ``rest`` continues
    right after them. Offsets in errors count bytes of this decompressed stream.
    """

    name: str
    format: str  # "pcap" or "pcapng"
    head: bytes
    rest: Readable
    packed: GzipStream | UnpackedStream | None  # the decompressor, if the file is compressed
    _to_close: BinaryIO | None

    def stream(self) -> Readable:
        """The whole capture from its first byte."""
        return Prefixed(self.head, self.rest)

    def check_end(self, offset: int) -> None:
        """The framing consumed everything up to ``offset``: raise if the compressed stream
        was cut short."""
        if self.packed is not None and self.packed.truncated:
            raise TruncatedCapture(self.name, f"truncated {self.packed.kind} stream", offset)

    def close(self) -> None:
        if self._to_close is not None:
            self._to_close.close()
            self._to_close = None

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def display_name(source: CaptureSource) -> str:
    """What messages and event records call a source: the path, ``<stdin>`` or the stream's
    ``name``."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return "<stdin>" if path == "-" else path
    return str(getattr(source, "name", "<stream>"))


def open_capture(source: CaptureSource, name: str | None = None) -> Capture:
    """Open ``source``, gunzip it if it is gzipped and recognise its format.

    ``name`` is what error messages call the source (default: ``display_name``). Raises a
    one-line ``CaptureError`` for a missing file, an empty one or one that is not a capture.
    """
    stream, display, to_close = open_stream(source, name or display_name(source))
    try:
        head = read_some(stream, SNIFF_LEN, display)
        packed: GzipStream | UnpackedStream | None = None
        if head.startswith(GZIP_MAGIC):
            packed = GzipStream(Prefixed(head, stream), display)
        elif head.startswith(BZIP2_MAGIC):
            packed = UnpackedStream(Prefixed(head, stream), display, "bzip2")
        elif head.startswith(XZ_MAGIC):
            packed = UnpackedStream(Prefixed(head, stream), display, "xz")
        if packed is not None:
            head = read_some(packed, SNIFF_LEN, display)
            stream = packed
        return Capture(display, _sniff(head, display, packed), head, stream, packed, to_close)
    except BaseException:
        if to_close is not None:
            to_close.close()
        raise


def _sniff(head: bytes, source: str, packed: GzipStream | UnpackedStream | None) -> str:
    if not head:
        if packed is not None and packed.truncated:
            raise CaptureError(source, f"truncated {packed.kind} stream", 0)
        raise CaptureError(source, "empty file, not a pcap or pcapng capture", 0)
    if is_pcap(head):
        return "pcap"
    if is_pcapng(head):
        return "pcapng"
    if looks_like_headless_pcapng(head):
        raise CaptureError(source, "missing pcapng section header block", 0)
    raise CaptureError(source, f"not a pcap or pcapng file (starts with {_show(head)})", 0)


def frames(
    capture: Capture, over_snaplen: Callable[[int, int, int], None] | None = None
) -> Iterator[Frame]:
    """Yield the frames of an opened capture, numbered from 1.

    After the last valid frame the iterator raises ``TruncatedCapture`` (the capture ends
    inside a record) or ``CaptureError`` (anything else wrong), both carrying the byte offset.
    A record longer than its snap length is not damage: it is yielded whole, and first told to
    ``over_snaplen(frame number, captured length, snap length)`` when given.
    """
    cb = ChunkBuffer(capture.stream(), capture.name)
    cb.ensure(len(capture.head))
    read = read_pcap if capture.format == "pcap" else read_pcapng
    yield from read(cb, capture.name, over_snaplen or _ignore)
    capture.check_end(cb.offset)


@dataclass
class LongRecords:
    """A capture's records longer than their snap length (``frames`` calls it on each): how
    many, and the first as (frame number, captured length, snap length)."""

    count: int = 0
    first: tuple[int, int, int] | None = None

    def __call__(self, frame: int, caplen: int, snaplen: int) -> None:
        self.count += 1
        if self.first is None:
            self.first = (frame, caplen, snaplen)

    def warning(self, source: str) -> str | None:
        """The capture's one warning about them, or ``None`` when it has none."""
        if self.first is None:
            return None
        frame, caplen, snaplen = self.first
        records = "record" if self.count == 1 else "records"
        return (
            f"{source}: {self.count} {records} longer than the snap length ({snaplen}), "
            f"read whole (the first: frame {frame}, {caplen} bytes)"
        )


def _ignore(frame: int, caplen: int, snaplen: int) -> None:
    """Records longer than the snap length, when nobody counts them."""


def open_frames(source: CaptureSource, name: str | None = None) -> Iterator[Frame]:
    """Open ``source`` and yield its frames (``open_capture``, then ``frames``)."""
    with open_capture(source, name) as capture:
        yield from frames(capture)


def _show(head: bytes) -> str:
    """The first bytes as a user recognises them: text in quotes, binary as hex."""
    text = head[:8]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return repr(text.decode("ascii"))
    return "0x" + text.hex()
