"""A tracing run: the private instance set up, its per-CPU buffers read, events out.

The instance uses the ``mono`` trace clock (CLOCK_MONOTONIC, one offset from Unix time) and
wakes the reader when a CPU's buffer is ``WAKE_PERCENT`` full; ``drain`` is also called on a
short timer, so a quiet host still reports within that period. Records of different CPUs are
merged in time order before they reach the socket table; those younger than
``ORDER_SLACK_NS`` wait for the next drain, so a record still being written on another CPU is
not overtaken.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from treason.errors import TreasonError
from treason.events import Event
from treason.ktrace.engine import (
    CA_LOSS,
    CompiledEngine,
    Engine,
    EngineCounters,
    Layouts,
    ReferenceEngine,
    compiled_available,
)
from treason.ktrace.formats import parse_header_page, read_format
from treason.ktrace.sockets import SocketTable
from treason.ktrace.tracefs import Instance, Tracefs

PROBE = ("tcp", "tcp_probe")
RETRANSMIT = ("tcp", "tcp_retransmit_skb")
DESTROY = ("tcp", "tcp_destroy_sock")
LOSS = ("tcp", "tcp_cong_state_set")
WAKE_PERCENT = 5
ORDER_SLACK_NS = 2_000_000
DEFAULT_BUFFER_KB = 4096
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
class TraceCounters(EngineCounters):
    """What the reader has seen so far (read by the status line and the metrics)."""

    lost: int = 0  # records the kernel could not keep: buffer overrun or dropped


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
        engine: str = "auto",
    ) -> None:
        if engine not in ("auto", "fast", "reference"):
            raise ValueError(f"unknown engine {engine!r}")
        if engine == "auto":
            engine = "fast" if compiled_available() else "reference"
        self.engine_name = engine
        self.emit = emit
        self.accept = accept
        self.max_sockets = max_sockets
        self.idle_ns = int(idle_timeout * 1e9)
        self.counters = TraceCounters()
        self.filter = (ports or PortFilter()).expression()
        self.buffer_kb = buffer_kb
        self.clock_offset_ns = 0
        self.fs: Tracefs | None = None
        self.instance: Instance | None = None
        self.engine: Engine | None = None
        self.stale: list[str] = []
        self.fds: list[int] = []
        self.cpus: list[int] = []
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
        optional = {e: read_format(events, *e) for e in (DESTROY, LOSS) if self._has(events, e)}
        layout = parse_header_page((fs.root / "events" / "header_page").read_text())
        clocks = inst.read("trace_clock")
        if re.search(r"\bmono\b", clocks):
            inst.write("trace_clock", "mono")
        inst.write("buffer_size_kb", str(self.buffer_kb))
        if inst.has("buffer_percent"):
            inst.write("buffer_percent", str(WAKE_PERCENT))
        chosen = [PROBE, RETRANSMIT, *optional]
        for system, name in chosen:
            terms = [self.filter] if self.filter is not None else []
            if (system, name) == LOSS:
                terms.append(f"cong_state == {CA_LOSS}")  # only the timer's entries into Loss
            if terms:
                self._filter(inst, f"{system}/{name}", " && ".join(terms))
        layouts = Layouts(layout, probe, retransmit, optional.get(DESTROY), optional.get(LOSS))
        self.engine = self._engine(layouts)
        self.cpus = sorted(
            int(p.name[3:]) for p in (inst.path / "per_cpu").iterdir() if p.name[3:].isdigit()
        )
        page = layout.page_size
        if inst.has("buffer_subbuf_size_kb"):
            page = int(inst.read("buffer_subbuf_size_kb")) * 1024
        self._read_size = page
        for cpu in self.cpus:
            path = inst.path / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw"
            self.fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        for system, name in chosen:
            inst.write(f"events/{system}/{name}/enable", "1")
        inst.write("tracing_on", "1")
        self.clock_offset_ns = self._clock_offset(clocks)
        if isinstance(self.engine, ReferenceEngine):
            self.engine.table.clock_offset_ns = self.clock_offset_ns

    def _engine(self, layouts: Layouts) -> Engine:
        if self.engine_name == "fast":
            return CompiledEngine(
                layouts,
                self.emit,
                lambda: self.clock_offset_ns,
                accept=self.accept,
                max_sockets=self.max_sockets,
            )
        table = SocketTable(self.emit, accept=self.accept, max_sockets=self.max_sockets)
        return ReferenceEngine(layouts, table)

    @staticmethod
    def _has(events: Path, event: tuple[str, str]) -> bool:
        return (events / event[0] / event[1]).is_dir()

    @staticmethod
    def _filter(inst: Instance, event: str, expression: str) -> None:
        try:
            inst.write(f"events/{event}/filter", expression)
        except TreasonError:
            why = inst.filter_error(event)
            raise TreasonError(
                f"{event.replace('/', ':')} filter {expression!r}", f"rejected by the kernel: {why}"
            ) from None

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
        """Read what every CPU buffer holds and feed it, in time order, to the engine."""
        engine = self.engine
        assert engine is not None
        cutoff = time.monotonic_ns() - ORDER_SLACK_NS
        size, add_page = self._read_size, engine.add_page
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
                add_page(page)
        engine.run(cutoff, final)
        self._sync()

    def _sync(self) -> None:
        assert self.engine is not None
        c, e = self.counters, self.engine.counters
        c.records, c.probes, c.retransmits = e.records, e.probes, e.retransmits
        c.sockets, c.seen, c.evicted = e.sockets, e.seen, e.evicted
        c.lost_pages, c.last_ts = e.lost_pages, e.last_ts

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
        assert self.engine is not None
        self.engine.expire(self.counters.last_ts - self.idle_ns)
        self._sync()

    def finish(self) -> None:
        """Tracing over: read what is left, and every held event is final."""
        self.drain(final=True)
        self.update_lost()
        assert self.engine is not None
        self.engine.flush()
