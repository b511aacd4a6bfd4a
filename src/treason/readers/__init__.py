"""Capture readers: turn a pcap or pcapng file (maybe gzipped, maybe on stdin) into frames.

The format is recognised by its first bytes, never by the file name: captures are routinely
mislabelled (pcapng saved as ``.pcap``) and stdin has no name at all. Readers stream in bounded
chunks, yield every valid record first and only then raise for the damage they met, so a user
always gets the readable part of a broken capture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from treason.errors import CaptureError, TruncatedCapture
from treason.packets import Frame
from treason.readers.pcap import is_pcap, read_pcap
from treason.readers.pcapng import is_pcapng, looks_like_headless_pcapng, read_pcapng
from treason.readers.source import (
    GZIP_MAGIC,
    ChunkBuffer,
    GzipStream,
    Prefixed,
    open_source,
    read_some,
)
from treason.readers.stats import ReaderStats

__all__ = ["CaptureError", "ReaderStats", "TruncatedCapture", "open_frames"]

#: Enough bytes to recognise every supported format.
_SNIFF = 12


def open_frames(
    source: str | os.PathLike[str] | BinaryIO,
    name: str | None = None,
    stats: ReaderStats | None = None,
) -> Iterator[Frame]:
    """Yield the frames of a capture: a path, ``"-"`` for stdin, or an open binary stream.

    ``name`` is what error messages call the source (default: the path, ``<stdin>`` or the
    stream's ``name``). ``stats``, when given, is updated as the capture is read. After the
    last valid frame the iterator raises ``TruncatedCapture`` (file ends inside a record) or
    ``CaptureError`` (anything else wrong), both carrying the byte offset.
    """
    if stats is None:
        stats = ReaderStats()
    stream, display, to_close = open_source(source, name)
    try:
        yield from _read(stream, display, stats)
    finally:
        if to_close is not None:
            to_close.close()  # type: ignore[attr-defined]


def _read(stream: BinaryIO, source: str, stats: ReaderStats) -> Iterator[Frame]:
    head = read_some(stream, _SNIFF, source)
    gz: GzipStream | None = None
    if head.startswith(GZIP_MAGIC):
        gz = GzipStream(Prefixed(head, stream), source)
        stats.compressed = True
        head = read_some(gz, _SNIFF, source)
        data_stream = Prefixed(head, gz)
    else:
        data_stream = Prefixed(head, stream)
    if not head:
        if gz is not None and gz.truncated:
            raise CaptureError(source, "truncated gzip stream", 0)
        raise CaptureError(source, "empty file, not a pcap or pcapng capture", 0)
    cb = ChunkBuffer(data_stream, source)
    cb.ensure(len(head))
    if is_pcap(head):
        reader = read_pcap(cb, source, stats)
    elif is_pcapng(head):
        reader = read_pcapng(cb, source, stats)
    elif looks_like_headless_pcapng(head):
        raise CaptureError(source, "missing pcapng section header block", 0)
    else:
        raise CaptureError(source, f"not a pcap or pcapng file (starts with {_show(head)})", 0)
    yield from reader
    if gz is not None and gz.truncated:
        raise TruncatedCapture(source, "truncated gzip stream", cb.offset)


def _show(head: bytes) -> str:
    """The first bytes as a user recognises them: text in quotes, binary as hex."""
    text = head[:8]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return repr(text.decode("ascii"))
    return "0x" + text.hex()
