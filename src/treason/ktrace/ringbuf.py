"""Records out of the binary pages ``per_cpu/cpuN/trace_pipe_raw`` hands out.

A page is a header (an absolute timestamp and a commit word: bytes used, plus two flags for
events lost before it) followed by records. Each record starts with a 32-bit word: 5 bits of
type/length and 27 bits of time delta from the previous record (``events/header_event``):

- 1–28: a data record of that many 32-bit words follows;
- 0: a data record whose length (plus 4) is in the next word;
- 29: padding (a discarded record, or with delta 0 the end of the page);
- 30: a time extension: the next word holds the delta's upper bits;
- 31: an absolute time stamp (its upper bits are the page's).

Reading the binary pages costs no formatting in the kernel and no text parsing here, which is
what keeps tracing cheap on a busy host.
"""

from __future__ import annotations

import struct

from treason.ktrace.formats import PageLayout

TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TS_SHIFT = 27
#: Commit-word flags: events were lost before this page (and their count stored at its end).
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
_LENGTH = MISSED_STORED - 1
_ABS_MASK = (1 << 59) - 1
_U32 = struct.Struct("=I")


def page_records(page: bytes, layout: PageLayout) -> tuple[list[tuple[int, int]], bool]:
    """The data records of one page as ``(timestamp, payload offset)``, and whether the
    kernel lost events before it. Timestamps are in the instance's trace clock (ns)."""
    (ts,) = layout.timestamp.unpack_from(page, 0)
    (commit,) = layout.commit.unpack_from(page, layout.commit_offset)
    pos = layout.data_offset
    end = pos + min(commit & _LENGTH, layout.data_size)
    out: list[tuple[int, int]] = []
    u32 = _U32.unpack_from
    while pos + 4 <= end:
        (head,) = u32(page, pos)
        kind = head & 31
        delta = head >> 5
        if kind and kind < TYPE_PADDING:
            ts += delta
            out.append((ts, pos + 4))
            pos += 4 + (kind << 2)
        elif kind == 0:
            (length,) = u32(page, pos + 4)
            ts += delta
            out.append((ts, pos + 8))
            pos += 4 + ((length + 3) & ~3)
        elif kind == TYPE_TIME_EXTEND:
            (high,) = u32(page, pos + 4)
            ts += (high << TS_SHIFT) + delta
            pos += 8
        elif kind == TYPE_TIME_STAMP:
            (high,) = u32(page, pos + 4)
            ts = ((high << TS_SHIFT) | delta) | (ts & ~_ABS_MASK)
            pos += 8
        else:  # padding: a discarded record keeps its time delta
            if delta == 0:
                break
            (length,) = u32(page, pos + 4)
            ts += delta
            pos += 4 + length
    return out, bool(commit & MISSED_EVENTS)
