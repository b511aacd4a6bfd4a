"""``treason trace``: the kernel's own view of every local socket, from its tracepoints."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import sys
import time
from collections.abc import Callable, Sequence

from treason.commands.common import (
    add_engine_option,
    add_model_options,
    add_watch_options,
    positive_int,
)
from treason.commands.stopping import StopSignals
from treason.events import Event, Severity
from treason.ktrace import report as trace_report
from treason.ktrace.engine import compiled_available
from treason.ktrace.session import DEFAULT_BUFFER_KB, PortFilter, TraceSession
from treason.live import report
from treason.live.stats import LiveStats

DESCRIPTION = """\
Read the kernel's TCP state for every local socket from the tracepoints tcp:tcp_probe and
tcp:tcp_retransmit_skb, in a private tracefs instance, and report as they happen:

- every time a peer's accepted right edge (snd_una + snd_wnd) moves left, with the classes of
  `treason scan` (shrink, beyond, kernel; retraction with --all);
- every zero-window stall with data outstanding (snd_wnd 0, snd_una < snd_nxt), the condition
  of Linux's own "unexpectedly shrunk window" / "Probing zero-window" message, with X:Y and the
  line each kernel era prints, when the kernel sends its zero-window probe.

This is what a modern kernel no longer logs (debug-only since 3.19), at a fraction of a packet
capture's cost. Tracepoints see every network namespace on the host: use the port and address
filters to watch only what you mean. Events go to stdout (text, or the JSON Lines record of
`scan --format json`, with "file" "trace" and "frame" counting tracepoint records); a status
line goes to stderr every --status-interval seconds, and a summary when SIGINT or SIGTERM stops
the run. Tracing is torn down on exit. Needs root (or write access to tracefs).
"""


def port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address or ADDR/PREFIX: {text!r}") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "trace",
        help="report window shrinks from the kernel's TCP tracepoints, for every local socket",
        description=DESCRIPTION,
        epilog="exit status: 0 stopped by SIGINT/SIGTERM, 2 error (no tracefs, no privilege)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, which in (
        ("--port", "sockets with N at either end"),
        ("--local-port", "local sockets on port N"),
        ("--peer-port", "connections to peer port N"),
    ):
        p.add_argument(
            flag,
            type=port,
            action="append",
            default=[],
            metavar="N",
            help=f"only {which} (repeatable; filtered in the kernel)",
        )
    p.add_argument(
        "--host",
        type=network,
        action="append",
        default=[],
        metavar="ADDR[/PREFIX]",
        help="only sockets with an end in this network (repeatable; checked once per socket)",
    )
    add_watch_options(p)
    p.add_argument(
        "--buffer-kb",
        type=positive_int,
        default=DEFAULT_BUFFER_KB,
        metavar="KB",
        help=f"trace buffer per CPU (default {DEFAULT_BUFFER_KB})",
    )
    add_engine_option(p, "compiled tracer")
    add_model_options(p)
    p.set_defaults(func=run)


def address_filter(
    networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> Callable[[str, str], bool] | None:
    if not networks:
        return None

    def accept(local: str, peer: str) -> bool:
        addrs = [ipaddress.ip_address(a) for a in (local, peer) if a != "?"]
        return any(a in n for a in addrs for n in networks if a.version == n.version)

    return accept


def run(args: argparse.Namespace) -> int:
    if args.engine == "fast" and not compiled_available():
        print("treason: --engine fast: the compiled tracer is not built", file=sys.stderr)
        return 2
    out = sys.stdout
    stats = LiveStats(interface="trace")

    def emit(event: Event) -> None:
        stats.scan.events[event.cls.label] += 1
        if event.cls is Severity.RETRACTION:
            if not args.all:
                return
        else:
            stats.peers.add(event.src)
        if args.format == "json":
            out.write(report.event_json(event) + "\n")
        else:
            out.write("\n".join(report.event_text(event)) + "\n")
        out.flush()

    ports = PortFilter(args.port, args.local_port, args.peer_port)
    session = TraceSession(
        emit,
        ports=ports,
        accept=address_filter(args.host),
        max_sockets=args.max_flows,
        idle_timeout=args.idle_timeout,
        buffer_kb=args.buffer_kb,
        engine=args.engine,
    )
    where = [session.filter or "all ports"]
    where += [f"host {n}" for n in args.host]
    stats.filter = ", ".join(where)
    server = None
    with StopSignals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) as stop:
        try:
            session.open()
            if args.metrics:
                from treason.live.metrics import serve

                server = serve(stats, args.metrics)
            return _trace(args, session, stats, stop.read_fd, stop)
        finally:
            session.close()
            if server is not None:
                server.stop()


def _trace(
    args: argparse.Namespace,
    session: TraceSession,
    stats: LiveStats,
    wakeup_fd: int,
    stop: StopSignals,
) -> int:
    assert session.instance is not None
    for name in session.stale:
        print(f"treason: removed the stale trace instance {name}", file=sys.stderr)
    print(
        f"treason: tracing tcp:tcp_probe and tcp:tcp_retransmit_skb in instance "
        f"{session.instance.name} ({stats.filter}, {session.engine_name} engine); "
        "SIGINT or SIGTERM stops",
        file=sys.stderr,
        flush=True,
    )
    interval = args.status_interval or None
    start = last_status = last_second = time.monotonic()
    stats.started = time.time()
    c = session.counters
    seconds = 0
    while not stop:
        session.poll(wakeup_fd, 0.1)
        session.drain()
        now = time.monotonic()
        if now - last_second >= 1:
            last_second, seconds = now, seconds + 1
            session.update_lost()
            if seconds % 10 == 0:
                session.expire()
        trace_report.sync_stats(stats, c)
        if interval and now - last_status >= interval - 0.01:
            last_status = now
            print(trace_report.status_line(stats, session.counters), file=sys.stderr, flush=True)
    session.finish()
    trace_report.sync_stats(stats, c)
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    elapsed = time.monotonic() - start
    lines = trace_report.summary(stats, session.counters, elapsed, retractions_shown=args.all)
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 0
