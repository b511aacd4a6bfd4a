"""The classic libpcap file format: a 24-byte file header, then 16-byte record headers + data.

Four magics are accepted: microsecond ``a1b2c3d4`` and nanosecond ``a1b23c4d``, each in either
byte order (the writer's), plus the "modified" ``a1b2cd34`` format of some old Linux tcpdumps
whose record headers carry 8 more bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from treason.errors import CaptureError, TruncatedCapture
from treason.packets import Frame
from treason.readers.stream import MAX_RECORD, ChunkBuffer

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
MAGIC_MODIFIED = 0xA1B2CD34

#: (byte order, nanoseconds per fraction unit, record header length) by the magic as read
#: in little-endian order.
_MAGICS: dict[bytes, tuple[str, int, int]] = {}
for _order in ("<", ">"):
    _MAGICS[struct.pack(_order + "I", MAGIC_USEC)] = (_order, 1000, 16)
    _MAGICS[struct.pack(_order + "I", MAGIC_NSEC)] = (_order, 1, 16)
    _MAGICS[struct.pack(_order + "I", MAGIC_MODIFIED)] = (_order, 1000, 24)

FILE_HEADER_LEN = 24


def is_pcap(head: bytes) -> bool:
    return head[:4] in _MAGICS


def read_pcap(
    cb: ChunkBuffer, source: str, over_snaplen: Callable[[int, int, int], None]
) -> Iterator[Frame]:
    """Yield every record; raise ``TruncatedCapture``/``CaptureError`` after the last good one.

    A record longer than the file's snap length is yielded whole and first told to
    ``over_snaplen(frame number, captured length, snap length)`` (``docs/decoding.md``).
    """
    order, ns_per_unit, rec_len = _MAGICS[bytes(cb.buf[cb.pos : cb.pos + 4])]
    if not cb.ensure(FILE_HEADER_LEN):
        raise CaptureError(
            source, f"truncated pcap file header ({cb.available()} of {FILE_HEADER_LEN} bytes)", 0
        )
    _magic, _major, _minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(
        order + "IHHiIII", cb.buf, cb.pos
    )
    cb.pos += FILE_HEADER_LEN
    # The upper bits of the link-type field carry FCS information, not the link type.
    linktype = network & 0xFFFF
    header = struct.Struct(order + "IIII")
    unpack_header = header.unpack_from
    number = 0
    while True:
        if not cb.ensure(rec_len):
            if cb.available():
                raise TruncatedCapture(
                    source,
                    f"truncated record header ({cb.available()} of {rec_len} bytes)",
                    cb.offset,
                )
            return
        buf = cb.buf
        pos = cb.pos
        sec, frac, incl_len, orig_len = unpack_header(buf, pos)
        if incl_len > MAX_RECORD:
            raise CaptureError(
                source,
                f"bad record header: {incl_len}-byte record, more than the 256 KiB limit "
                f"({MAX_RECORD})",
                cb.offset,
            )
        if not cb.ensure(rec_len + incl_len):
            raise TruncatedCapture(
                source,
                f"truncated record ({cb.available()} of {rec_len + incl_len} bytes)",
                cb.offset,
            )
        buf = cb.buf
        pos = cb.pos
        start = pos + rec_len
        cb.pos = start + incl_len
        number += 1
        if incl_len > snaplen > 0:
            over_snaplen(number, incl_len, snaplen)
        yield Frame(
            number,
            sec * 1_000_000_000 + frac * ns_per_unit,
            linktype,
            buf[start : cb.pos],
            orig_len,
        )
