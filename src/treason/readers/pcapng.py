"""The pcapng format: a sequence of blocks, grouped in sections that each start with an SHB.

Each section has its own byte order and its own list of interfaces (IDB), and every interface
its own link type, snap length and timestamp unit (``if_tsresol``, a power of 10 or of 2) and
offset (``if_tsoffset``). Packets come in enhanced (EPB), simple (SPB) or the obsolete packet
blocks (PB). Every other block type is skipped by its length, as the format intends.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

from treason.errors import CaptureError, TruncatedCapture
from treason.packets import Frame
from treason.readers.stream import MAX_RECORD, ChunkBuffer

SHB = 0x0A0D0D0A
IDB = 0x00000001
PB = 0x00000002
SPB = 0x00000003
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

#: Blocks (other than packets) can be big (name resolution, decryption secrets), but not this big.
MAX_BLOCK = 16 * 1024 * 1024

#: Interfaces one section may describe (the obsolete packet block's 16-bit interface id); more
#: is damage or an attack (each one is kept until the section ends).
MAX_INTERFACES = 65536

#: Frame times a calendar can show, years 1-9999 UTC (as Python's ``datetime``): ``if_tsresol``
#: and ``if_tsoffset`` can make any value, and one outside is damage, not a capture time.
MIN_TS_NS = -62_135_596_800 * 10**9
MAX_TS_NS = 253_402_300_799 * 10**9

OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

#: The smallest total length of each block type we interpret (header, fixed fields, trailer).
_MIN_LEN = {SHB: 28, IDB: 20, PB: 32, SPB: 16, EPB: 32}


def is_pcapng(head: bytes) -> bool:
    return head[:4] == b"\x0a\x0d\x0d\x0a"


def looks_like_headless_pcapng(head: bytes) -> bool:
    """A pcapng block other than an SHB at the start: a section header is missing."""
    if len(head) < 8:
        return False
    for order in "<>":
        btype, blen = struct.unpack_from(order + "II", head)
        if btype in (IDB, PB, SPB, EPB) and blen % 4 == 0 and 12 <= blen <= MAX_BLOCK:
            return True
    return False


@dataclass(slots=True)
class Interface:
    linktype: int
    snaplen: int
    #: Timestamp unit as a fraction of a second: ``num / den`` seconds per tick.
    ns_mul: int
    ns_div: int
    offset_ns: int


def _interface(body: bytes, order: str) -> Interface:
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body, 0)
    ns_mul, ns_div, offset_ns = 1000, 1, 0  # default resolution: microseconds
    for code, value in _options(body, 8, order):
        if code == OPT_IF_TSRESOL and len(value) >= 1:
            exp = value[0] & 0x7F
            if value[0] & 0x80:
                ns_mul, ns_div = 1_000_000_000, 1 << exp
            elif exp <= 9:
                ns_mul, ns_div = 10 ** (9 - exp), 1
            else:
                ns_mul, ns_div = 1, 10 ** (exp - 9)
        elif code == OPT_IF_TSOFFSET and len(value) >= 8:
            offset_ns = struct.unpack_from(order + "q", value)[0] * 1_000_000_000
    return Interface(linktype, snaplen, ns_mul, ns_div, offset_ns)


def _options(body: bytes, start: int, order: str) -> Iterator[tuple[int, bytes]]:
    """Options as (code, value); a damaged option list just ends (options are advisory)."""
    pos = start
    end = len(body)
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", body, pos)
        if code == OPT_ENDOFOPT:
            return
        pos += 4
        if pos + length > end:
            return
        yield code, body[pos : pos + length]
        pos += (length + 3) & ~3


def read_pcapng(
    cb: ChunkBuffer, source: str, over_snaplen: Callable[[int, int, int], None]
) -> Iterator[Frame]:
    """Yield every packet block; raise ``TruncatedCapture``/``CaptureError`` after the last one.

    A packet longer than its interface's snap length is yielded whole and first told to
    ``over_snaplen(frame number, captured length, snap length)`` (``docs/decoding.md``).
    """
    order = "<"
    sections = 0
    interfaces: list[Interface] = []
    number = 0
    while True:
        start = cb.offset
        if not cb.ensure(12):
            if cb.available():
                _truncated(source, f"{cb.available()} bytes of a block header", start, sections)
            return
        buf = cb.buf
        pos = cb.pos
        raw_type = buf[pos : pos + 4]
        if raw_type == b"\x0a\x0d\x0d\x0a":
            # A new section: its byte-order magic decides how to read everything in it,
            # including this block's own length.
            bom = buf[pos + 8 : pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise CaptureError(source, "bad pcapng byte-order magic", start + 8)
        btype, blen = struct.unpack_from(order + "II", buf, pos)
        minimum = _MIN_LEN.get(btype, 12)
        if blen < minimum or blen % 4 or blen > MAX_BLOCK:
            raise CaptureError(source, f"bad pcapng block length {blen}", start)
        if not cb.ensure(blen):
            _truncated(source, f"{cb.available()} of {blen} bytes", start, sections)
        buf = cb.buf
        pos = cb.pos
        (trailer,) = struct.unpack_from(order + "I", buf, pos + blen - 4)
        if trailer != blen:
            raise CaptureError(
                source, f"bad pcapng block length {blen} (trailer says {trailer})", start
            )
        cb.pos = pos + blen
        body_start = pos + 8
        body_end = pos + blen - 4

        if btype in (EPB, PB):
            if btype == EPB:
                if_id, ts_high, ts_low, caplen, orig_len = struct.unpack_from(
                    order + "IIIII", buf, body_start
                )
            else:
                if_id, _drops, ts_high, ts_low, caplen, orig_len = struct.unpack_from(
                    order + "HHIIII", buf, body_start
                )
            data_start = body_start + 20
            if data_start + caplen > body_end:
                raise CaptureError(
                    source,
                    f"bad pcapng block length {blen} for a {caplen}-byte packet",
                    start,
                )
            iface = _lookup(interfaces, if_id, source, start)
            _check_caplen(caplen, source, start)
            ts = (ts_high << 32) | ts_low
            ts_ns = ts * iface.ns_mul // iface.ns_div + iface.offset_ns
            if not MIN_TS_NS <= ts_ns <= MAX_TS_NS:
                raise CaptureError(source, "timestamp out of range (outside years 1-9999)", start)
            number += 1
            if caplen > iface.snaplen > 0:
                over_snaplen(number, caplen, iface.snaplen)
            yield Frame(
                number, ts_ns, iface.linktype, buf[data_start : data_start + caplen], orig_len
            )
        elif btype == SPB:
            iface = _lookup(interfaces, 0, source, start)
            (orig_len,) = struct.unpack_from(order + "I", buf, body_start)
            room = body_end - body_start - 4
            caplen = min(orig_len, room)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            _check_caplen(caplen, source, start)
            data_start = body_start + 4
            number += 1
            # A simple packet block carries no timestamp; Wireshark shows it as time 0.
            yield Frame(number, 0, iface.linktype, buf[data_start : data_start + caplen], orig_len)
        elif btype == SHB:
            major, _minor = struct.unpack_from(order + "HH", buf, body_start + 4)
            if major != 1:
                raise CaptureError(source, f"unsupported pcapng version {major}", start)
            interfaces = []
            sections += 1
        elif btype == IDB:
            if sections == 0:
                raise CaptureError(source, "missing pcapng section header block", start)
            if len(interfaces) == MAX_INTERFACES:
                raise CaptureError(
                    source, f"more than {MAX_INTERFACES} interfaces in one pcapng section", start
                )
            iface = _interface(buf[body_start:body_end], order)
            interfaces.append(iface)


def _truncated(source: str, what: str, offset: int, sections: int) -> NoReturn:
    if sections == 0:
        # Not a capture cut short but a file that never became one: fatal, like a short pcap
        # file header.
        raise CaptureError(source, f"truncated pcapng section header block ({what})", offset)
    raise TruncatedCapture(source, f"truncated record ({what})", offset)


def _lookup(interfaces: list[Interface], if_id: int, source: str, offset: int) -> Interface:
    if if_id < len(interfaces):
        return interfaces[if_id]
    have = len(interfaces)
    raise CaptureError(
        source,
        f"packet on interface {if_id}, but the section describes "
        f"{have} interface{'' if have == 1 else 's'}",
        offset,
    )


def _check_caplen(caplen: int, source: str, offset: int) -> None:
    if caplen > MAX_RECORD:
        raise CaptureError(
            source, f"bad record: {caplen}-byte packet, more than the 256 KiB limit", offset
        )
