"""Pages in, events out: the readable implementation and the compiled one.

``ReferenceEngine`` is plain Python (``ringbuf.page_records`` + ``sockets.SocketTable``): what
the docs describe and the tests read. ``CompiledEngine`` is ``treason._ktrace``, the same rules
in C, so that a busy host costs no Python work per received segment; the tests hold the two to
the same events on the same pages. Both take whole pages with ``add_page`` and, on ``run``,
feed the records up to a time in time order (records of different CPUs interleave).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

from treason.errors import TreasonError
from treason.events import Event
from treason.ktrace.formats import EventFormat, PageLayout
from treason.ktrace.ringbuf import page_records
from treason.ktrace.sockets import SocketTable, make_event, sockaddr_text

#: tcp_probe fields read from every record (``sock_cookie`` too where the kernel has it).
PROBE_FIELDS = ("common_type", "sport", "dport", "snd_nxt", "snd_una", "snd_wnd", "skaddr")
_TYPE = struct.Struct("=H")
#: ``tcp_cong_state_set``'s ``cong_state`` when the retransmission timer fires (TCP_CA_Loss).
CA_LOSS = 4
#: A decoded record waiting to be fed: trace clock ns, the fields unpacked from its payload
#: (the event type first), and for tcp_probe the page and offset its addresses are in.
Record = tuple[int, tuple[Any, ...], bytes | None, int]


@dataclass
class Layouts:
    """What the kernel says about its pages and the three events."""

    page: PageLayout
    probe: EventFormat
    retransmit: EventFormat
    destroy: EventFormat | None
    loss: EventFormat | None = None  # tcp_cong_state_set: the timer's entry into Loss


@dataclass
class EngineCounters:
    records: int = 0
    probes: int = 0
    retransmits: int = 0
    sockets: int = 0  # in the table now
    seen: int = 0  # since the start
    evicted: int = 0
    lost_pages: int = 0  # pages flagged "events missed before this one"
    last_ts: int = 0  # trace clock of the newest record fed


class Engine(Protocol):
    counters: EngineCounters

    def add_page(self, page: bytes) -> None: ...

    def run(self, cutoff: int, final: bool) -> None: ...

    def expire(self, limit: int) -> None: ...

    def flush(self) -> None: ...


def compiled_available() -> bool:
    try:
        from treason import _ktrace  # noqa: F401
    except ImportError:
        return False
    return True


def _addresses(probe: EventFormat) -> tuple[int, int, int]:
    saddr, daddr = probe.fields.get("saddr"), probe.fields.get("daddr")
    if saddr is None or daddr is None or not saddr.array or saddr.size != daddr.size:
        raise TreasonError("tcp/tcp_probe", "no saddr/daddr sockaddr fields in its format")
    return saddr.offset, daddr.offset, saddr.size


class ReferenceEngine:
    """Python: each page parsed, each record unpacked, the socket table fed record by record."""

    def __init__(self, layouts: Layouts, table: SocketTable) -> None:
        self.counters = EngineCounters()
        self.layout = layouts.page
        self.table = table
        self._pending: list[Record] = []
        probe = layouts.probe
        names = [n for n in PROBE_FIELDS if n in probe.fields]
        if "sock_cookie" in probe.fields:
            names.append("sock_cookie")
        names.sort(key=lambda n: probe.fields[n].offset)
        self._probe = probe.unpacker(tuple(names)).unpack_from
        wanted = [names.index(n) for n in ("skaddr", "sport", "dport", "snd_una", "snd_nxt")]
        wanted.append(names.index("snd_wnd"))
        if "sock_cookie" in names:
            self._args: Callable[[tuple[Any, ...]], tuple[Any, ...]] = itemgetter(
                *wanted, names.index("sock_cookie")
            )
        else:
            get = itemgetter(*wanted)
            self._args = lambda v: (*get(v), 0)
        so, do, size = _addresses(probe)

        def addresses(where: tuple[bytes, int]) -> tuple[bytes, bytes]:
            page, off = where
            return page[off + so : off + so + size], page[off + do : off + do + size]

        table.addresses = addresses
        self._probe_id = probe.id
        self._rt_id = layouts.retransmit.id
        self._rt = layouts.retransmit.unpacker(("common_type", "skaddr")).unpack_from
        destroy = layouts.destroy
        self._destroy_id = destroy.id if destroy is not None else -1
        self._destroy = (
            destroy.unpacker(("common_type", "skaddr")).unpack_from if destroy is not None else None
        )
        loss = layouts.loss
        self._loss_id = loss.id if loss is not None else -1
        self._loss = (
            loss.unpacker(("common_type", "skaddr", "cong_state")).unpack_from
            if loss is not None
            else None
        )
        # Without tcp_cong_state_set, each retransmission stands for the timer firing.
        self._rt_is_timer = loss is None

    def add_page(self, page: bytes) -> None:
        records, missed = page_records(page, self.layout)
        self.counters.lost_pages += missed
        append = self._pending.append
        unpack_probe, probe_id, type_of = self._probe, self._probe_id, _TYPE.unpack_from
        for ts, off in records:
            # Nearly every record is a tcp_probe: read it as one first.
            try:
                values = unpack_probe(page, off)
            except struct.error:  # a shorter record at the end of the page
                values = (-1,)
            if values[0] == probe_id:
                append((ts, values, page, off))
                continue
            (kind,) = type_of(page, off)
            if kind == self._rt_id:
                append((ts, self._rt(page, off), None, 0))
            elif kind == self._destroy_id and self._destroy is not None:
                append((ts, self._destroy(page, off), None, 0))
            elif kind == self._loss_id and self._loss is not None:
                values = self._loss(page, off)
                if values[2] == CA_LOSS:
                    append((ts, values, None, 0))

    def run(self, cutoff: int, final: bool) -> None:
        batch = self._pending
        if not batch:
            return
        batch.sort(key=itemgetter(0))
        if final or batch[-1][0] <= cutoff:
            ready, self._pending = batch, []
        else:
            n = bisect.bisect_right(batch, cutoff, key=itemgetter(0))
            ready, self._pending = batch[:n], batch[n:]
        table, c = self.table, self.counters
        probe, timer, destroy = table.probe, table.timer, table.destroy
        args, probe_id, rt_id, loss_id = self._args, self._probe_id, self._rt_id, self._loss_id
        rt_is_timer = self._rt_is_timer
        number = c.records
        for ts, values, page, off in ready:
            number += 1
            kind = values[0]
            if kind == probe_id:
                c.probes += 1
                sock, lport, pport, una, nxt, wnd, cookie = args(values)
                probe(ts, number, sock, cookie, lport, pport, una, nxt, wnd, (page, off))
            elif kind == rt_id:
                c.retransmits += 1
                if rt_is_timer:
                    timer(ts, values[1])
            elif kind == loss_id:
                timer(ts, values[1])
            else:
                destroy(values[1])
        c.records = number
        if ready:
            c.last_ts = ready[-1][0]
        self._sync()

    def expire(self, limit: int) -> None:
        self.table.expire(limit)
        self._sync()

    def flush(self) -> None:
        self.table.flush()

    def _sync(self) -> None:
        c, t = self.counters, self.table
        c.sockets, c.seen, c.evicted = len(t.sockets), t.seen, t.evicted


class CompiledEngine:
    """``treason._ktrace.Tracer``: the same records and rules, no Python per record."""

    def __init__(
        self,
        layouts: Layouts,
        emit: Callable[[Event], None],
        clock_offset: Callable[[], int],
        *,
        accept: Callable[[str, str], bool] | None,
        max_sockets: int,
    ) -> None:
        from treason import _ktrace

        self.counters = EngineCounters()
        self.emit = emit
        self.clock_offset = clock_offset
        page, probe = layouts.page, layouts.probe
        f = probe.fields
        for name in ("sport", "dport", "snd_nxt", "snd_una", "snd_wnd", "skaddr"):
            if name not in f:
                raise TreasonError("tcp/tcp_probe", f"this kernel's tracepoint has no field {name}")
        so, do, size = _addresses(probe)
        cookie = f["sock_cookie"].offset if "sock_cookie" in f else -1
        probe_layout = (
            probe.id,
            f["sport"].offset,
            f["dport"].offset,
            f["snd_nxt"].offset,
            f["snd_una"].offset,
            f["snd_wnd"].offset,
            cookie,
            f["skaddr"].offset,
            so,
            do,
            size,
        )
        rt = layouts.retransmit
        destroy = layouts.destroy
        loss = layouts.loss
        loss_layout = (-1, 0, 0)
        if loss is not None:
            loss_layout = (loss.id, loss.fields["skaddr"].offset, loss.fields["cong_state"].offset)
        by_raw = None
        if accept is not None:
            check = accept

            def by_raw(local: bytes, peer: bytes) -> bool:
                return check(sockaddr_text(local), sockaddr_text(peer))

        self.tracer = _ktrace.Tracer(
            (page.data_offset, page.data_size, page.commit_offset, page.commit.size),
            probe_layout,
            (rt.id, rt.fields["skaddr"].offset),
            (destroy.id, destroy.fields["skaddr"].offset) if destroy is not None else (-1, 0),
            loss_layout,
            max_sockets,
            by_raw,
        )

    def add_page(self, page: bytes) -> None:
        self.tracer.add_page(page)

    def run(self, cutoff: int, final: bool) -> None:
        self._out(self.tracer.run(cutoff, final))

    def expire(self, limit: int) -> None:
        self._out(self.tracer.expire(limit))

    def flush(self) -> None:
        self._out(self.tracer.flush())

    def _out(self, events: list[Any]) -> None:
        offset = self.clock_offset()
        for fields in events:
            self.emit(make_event(fields, offset))
        c = self.counters
        for name, value in self.tracer.counters().items():
            setattr(c, name, value)
