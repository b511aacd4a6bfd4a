"""A tracing run: the private instance set up, its per-CPU buffers read, events out.

The instance uses the ``mono`` trace clock (CLOCK_MONOTONIC, one offset from Unix time) and
wakes the reader when a CPU's buffer is ``WAKE_PERCENT`` full; ``drain`` is also called on a
short timer, so a quiet host still reports within that period. Records of different CPUs are
merged in time order before they reach the socket table; those younger than
``ORDER_SLACK_NS`` wait for the next drain, so a record still being written on another CPU is
not overtaken.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import re
import select
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from treason.errors import TreasonError
from treason.events import Event
from treason.ktrace.formats import EventFormat, PageLayout, parse_header_page, read_format
from treason.ktrace.ringbuf import page_records
from treason.ktrace.sockets import SocketTable
from treason.ktrace.tracefs import Instance, Tracefs

PROBE = ("tcp", "tcp_probe")
RETRANSMIT = ("tcp", "tcp_retransmit_skb")
DESTROY = ("tcp", "tcp_destroy_sock")
#: tcp_probe fields read from every record (``sock_cookie`` too where the kernel has it).
PROBE_FIELDS = ("common_type", "sport", "dport", "snd_nxt", "snd_una", "snd_wnd", "skaddr")
WAKE_PERCENT = 5
ORDER_SLACK_NS = 2_000_000
DEFAULT_BUFFER_KB = 4096
_TYPE = struct.Struct("=H")
#: A decoded record waiting to be fed: trace clock ns, the fields unpacked from its payload
#: (the event type first), and for tcp_probe the page and offset its addresses are in.
Record = tuple[int, tuple[Any, ...], bytes | None, int]
_COUNTER = re.compile(r"^(overrun|dropped events):\s*(\d+)", re.M)


@dataclass
class PortFilter:
    """Ports the kernel filters on: ``sport`` is the local socket's port, ``dport`` the peer's.

    Each list is alternatives; the lists that are given must all match.
    """

    either: Sequence[int] = ()
    local: Sequence[int] = ()
    peer: Sequence[int] = ()

    def expression(self) -> str | None:
        """The tracefs filter expression (``events/tcp/*/filter``), or None for everything."""
        terms = []
        if self.either:
            terms.append(" || ".join(f"sport == {p} || dport == {p}" for p in self.either))
        if self.local:
            terms.append(" || ".join(f"sport == {p}" for p in self.local))
        if self.peer:
            terms.append(" || ".join(f"dport == {p}" for p in self.peer))
        if not terms:
            return None
        return " && ".join(f"({t})" for t in terms)


@dataclass
class TraceCounters:
    """What the reader has seen so far (read by the status line and the metrics)."""

    records: int = 0
    probes: int = 0
    retransmits: int = 0
    lost: int = 0  # records the kernel could not keep: buffer overrun or dropped
    lost_pages: int = 0  # pages that arrived flagged "events missed before this one"
    last_ts: int = 0  # trace clock of the newest record fed


class TraceSession:
    """Owns the instance from ``open`` to ``close``; ``drain`` feeds the socket table."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        *,
        ports: PortFilter | None = None,
        accept: Callable[[str, str], bool] | None = None,
        max_sockets: int = 1_000_000,
        idle_timeout: float = 300.0,
        buffer_kb: int = DEFAULT_BUFFER_KB,
    ) -> None:
        self.counters = TraceCounters()
        self.table = SocketTable(
            emit, accept=accept, max_sockets=max_sockets, idle_timeout=idle_timeout
        )
        self.filter = (ports or PortFilter()).expression()
        self.buffer_kb = buffer_kb
        self.fs: Tracefs | None = None
        self.instance: Instance | None = None
        self.stale: list[str] = []
        self.fds: list[int] = []
        self.cpus: list[int] = []
        self._pending: list[Record] = []
        self._layout: PageLayout | None = None
        self._read_size = 0

    # -- set-up and teardown -------------------------------------------------------------

    def open(self) -> None:
        """Create and start the instance. On any failure, what was made is removed again."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self.fs = fs = Tracefs.open()
        self.stale = fs.remove_stale()
        self.instance = inst = Instance(fs)
        events = inst.path / "events"
        probe = read_format(events, *PROBE)
        retransmit = read_format(events, *RETRANSMIT)
        destroy = (events / "/".join(DESTROY)).is_dir()
        self._layout = parse_header_page((fs.root / "events" / "header_page").read_text())
        clocks = inst.read("trace_clock")
        if re.search(r"\bmono\b", clocks):
            inst.write("trace_clock", "mono")
        inst.write("buffer_size_kb", str(self.buffer_kb))
        if inst.has("buffer_percent"):
            inst.write("buffer_percent", str(WAKE_PERCENT))
        chosen = [PROBE, RETRANSMIT] + ([DESTROY] if destroy else [])
        for system, name in chosen:
            if self.filter is not None:
                try:
                    inst.write(f"events/{system}/{name}/filter", self.filter)
                except TreasonError:
                    why = inst.filter_error(f"{system}/{name}")
                    raise TreasonError(
                        f"{system}:{name} filter {self.filter!r}", f"rejected by the kernel: {why}"
                    ) from None
        self._decoders(probe, retransmit, read_format(events, *DESTROY) if destroy else None)
        self.cpus = sorted(
            int(p.name[3:]) for p in (inst.path / "per_cpu").iterdir() if p.name[3:].isdigit()
        )
        page = self._layout.page_size
        if inst.has("buffer_subbuf_size_kb"):
            page = int(inst.read("buffer_subbuf_size_kb")) * 1024
        self._read_size = page
        for cpu in self.cpus:
            path = inst.path / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw"
            self.fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        for system, name in chosen:
            inst.write(f"events/{system}/{name}/enable", "1")
        inst.write("tracing_on", "1")
        self.table.clock_offset_ns = self._clock_offset(clocks)

    def _clock_offset(self, clocks: str) -> int:
        """Unix time minus trace clock, in ns."""
        if re.search(r"\bmono\b", clocks):
            return time.time_ns() - time.monotonic_ns()
        assert self.instance is not None
        stats = self.instance.read(f"per_cpu/cpu{self.cpus[0]}/stats")
        m = re.search(r"now ts:\s*(\d+)\.(\d+)", stats)
        if m is None:
            return 0
        return time.time_ns() - (int(m.group(1)) * 10**9 + int(m.group(2).ljust(9, "0")))

    def _decoders(
        self, probe: EventFormat, retransmit: EventFormat, destroy: EventFormat | None
    ) -> None:
        """Structs reading each record's type and the numbers the socket table needs.

        The tcp_probe struct skips the two 28-byte addresses: they are sliced out of the page
        only for a socket seen for the first time.
        """
        names = [n for n in PROBE_FIELDS if n in probe.fields]
        if "sock_cookie" in probe.fields:
            names.append("sock_cookie")
        names.sort(key=lambda n: probe.fields[n].offset)
        self._probe_struct = probe.unpacker(tuple(names))
        wanted = ["skaddr", "sport", "dport", "snd_una", "snd_nxt", "snd_wnd"]
        get = itemgetter(*[names.index(n) for n in wanted])
        if "sock_cookie" in names:
            at = names.index("sock_cookie")
            self._probe_args: Callable[[tuple[Any, ...]], tuple[Any, ...]] = itemgetter(
                *[names.index(n) for n in wanted], at
            )
        else:
            self._probe_args = lambda v: (*get(v), 0)
        saddr, daddr = probe.fields["saddr"], probe.fields["daddr"]
        missing = [f.name for f in (saddr, daddr) if not f.array]
        if missing:
            raise TreasonError("tcp/tcp_probe", f"unexpected address fields {missing}")

        def addresses(where: tuple[bytes, int]) -> tuple[bytes, bytes]:
            page, off = where
            local = page[off + saddr.offset : off + saddr.offset + saddr.size]
            return local, page[off + daddr.offset : off + daddr.offset + daddr.size]

        self.table.addresses = addresses
        self._probe_id = probe.id
        self._retransmit_id = retransmit.id
        self._retransmit_struct = retransmit.unpacker(("common_type", "skaddr"))
        self._destroy_id = destroy.id if destroy is not None else -1
        self._destroy_struct = (
            destroy.unpacker(("common_type", "skaddr")) if destroy is not None else None
        )

    def close(self) -> None:
        """Stop tracing and remove every trace of it (idempotent)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []
        if self.instance is not None:
            self.instance.remove()
            self.instance = None
        if self.fs is not None:
            self.fs.close()
            self.fs = None

    def __enter__(self) -> TraceSession:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    def drain(self, final: bool = False) -> None:
        """Read what every CPU buffer holds and feed it, in time order, to the socket table."""
        layout = self._layout
        assert layout is not None
        cutoff = time.monotonic_ns() - ORDER_SLACK_NS
        batch = self._pending
        size = self._read_size
        probe_id, rt_id, destroy_id = self._probe_id, self._retransmit_id, self._destroy_id
        unpack_probe = self._probe_struct.unpack_from
        unpack_rt = self._retransmit_struct.unpack_from
        unpack_destroy = self._destroy_struct.unpack_from if self._destroy_struct else None
        type_of = _TYPE.unpack_from
        counters = self.counters
        append = batch.append
        for fd in self.fds:
            while True:
                try:
                    page = os.read(fd, size)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if not page:
                    break
                records, missed = page_records(page, layout)
                counters.lost_pages += missed
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
                    if kind == rt_id:
                        append((ts, unpack_rt(page, off), None, 0))
                    elif kind == destroy_id and unpack_destroy is not None:
                        append((ts, unpack_destroy(page, off), None, 0))
        if not batch:
            return
        batch.sort(key=itemgetter(0))
        if final or batch[-1][0] <= cutoff:
            ready, self._pending = batch, []
        else:
            n = bisect.bisect_right(batch, cutoff, key=itemgetter(0))
            ready, self._pending = batch[:n], batch[n:]
        self._feed(ready)

    def _feed(self, ready: list[Record]) -> None:
        table, counters = self.table, self.counters
        probe, retransmit, destroy = table.probe, table.retransmit, table.destroy
        args = self._probe_args
        probe_id, rt_id = self._probe_id, self._retransmit_id
        number = counters.records
        probes = retransmits = 0
        for ts, values, page, off in ready:
            number += 1
            kind = values[0]
            if kind == probe_id:
                probes += 1
                sock, lport, pport, una, nxt, wnd, cookie = args(values)
                probe(ts, number, sock, cookie, lport, pport, una, nxt, wnd, (page, off))
            elif kind == rt_id:
                retransmits += 1
                retransmit(ts, values[1])
            else:
                destroy(values[1])
        counters.records = number
        counters.probes += probes
        counters.retransmits += retransmits
        if ready:
            counters.last_ts = ready[-1][0]

    def poll(self, wakeup_fd: int, timeout: float) -> None:
        """Wait until a CPU buffer passes its watermark, ``wakeup_fd`` is readable, or timeout."""
        poller = select.poll()
        for fd in (*self.fds, wakeup_fd):
            poller.register(fd, select.POLLIN)
        with contextlib.suppress(InterruptedError):
            poller.poll(timeout * 1000)
        with contextlib.suppress(OSError):
            os.read(wakeup_fd, 4096)

    def update_lost(self) -> None:
        """Records the kernel lost (``overrun`` + ``dropped events`` of every CPU)."""
        if self.instance is None:
            return
        lost = 0
        for cpu in self.cpus:
            with contextlib.suppress(OSError):
                text = self.instance.read(f"per_cpu/cpu{cpu}/stats")
                lost += sum(int(m.group(2)) for m in _COUNTER.finditer(text))
        self.counters.lost = lost

    def expire(self) -> None:
        """Forget sockets idle past the timeout, by the newest record's time."""
        self.table.expire(self.counters.last_ts)

    def finish(self) -> None:
        """Tracing over: read what is left, and every held event is final."""
        self.drain(final=True)
        self.update_lost()
        self.table.flush()
