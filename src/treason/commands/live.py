"""``treason live``: watch an interface and report window shrinks as they happen."""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import socket
import sys
import time

from treason.commands.common import (
    IntRange,
    add_engine_option,
    add_model_options,
    add_watch_options,
    shown,
)
from treason.commands.stopping import StopSignals
from treason.errors import TreasonError
from treason.events import Event
from treason.live import capture as cap
from treason.live import report
from treason.live.pcapout import DEFAULT_RING, FlowRecorder, PcapSink, Rotation, parse_rotation
from treason.live.session import LiveSession, capture_loop
from treason.live.stats import LiveStats
from treason.scanner import fast_available

DESCRIPTION = """\
Capture TCP on a Linux interface and run the same analysis as `treason scan` on every packet
as it arrives: each window shrink is printed the moment the receiver's ACK is captured.
Since Linux 3.19 the sender's kernel no longer logs "unexpectedly shrunk window" unless
dynamic debug is on, so watching the traffic is the way to see it on a modern server.

Events go to stdout (text, or the JSON Lines record of `scan --format json`, with "file" set to
"live:IFACE" and "frame" counting captured packets from 1). A status line goes to stderr every
--status-interval seconds, and a summary when SIGINT or SIGTERM stops the capture (exit 0).
Packets the kernel had to drop because treason fell behind are counted in both.

Needs CAP_NET_RAW (root, or the capability granted to the process; see docs/live.md).
"""

#: ``--snaplen`` at most this, as tcpdump: no link carries a larger packet.
MAX_SNAPLEN = 262_144
#: ``--ring`` at most a million packets per flow (a whole flow, handshake included, as the
#: live tests keep); beyond, the number is a typo, not a plan.
MAX_RING = 1_000_000
#: ``--status-interval`` at most a day.
#: ``--rotate`` sizes and ages: a piece is fsynced and renamed, so not for every packet.
MIN_ROTATE_SIZE = 64 << 10
MAX_ROTATE_SIZE = 1 << 40
MAX_ROTATE_SECONDS = 366 * 86_400


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "live",
        help="watch an interface and report window shrinks as they happen",
        description=DESCRIPTION,
        epilog="exit status: 0 stopped by SIGINT/SIGTERM, 2 error (no privilege, no interface; "
        "the interface going down or away ends the capture with its summary, then exit 2)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--interface", required=True, metavar="IFACE", help="interface")
    p.add_argument(
        "--filter",
        metavar="BPF",
        help="tcpdump filter expression, applied in the kernel as 'tcp and (BPF)'",
    )
    add_watch_options(p)
    p.add_argument(
        "-w", "--write", metavar="FILE", help="save the packets of flows with events (pcap)"
    )
    p.add_argument(
        "--rotate",
        type=_rotation,
        metavar="SIZE|SECONDS",
        help="with --write: start a new file after SIZE (100M, 1G) or SECONDS (3600, 1h); "
        "from 64k to 1T or from 1s to 366d",
    )
    p.add_argument(
        "--ring",
        type=IntRange(1, MAX_RING, "packets kept per flow"),
        default=DEFAULT_RING,
        metavar="N",
        help="with --write: packets kept per flow before its first event "
        f"(default {DEFAULT_RING}, at most {MAX_RING})",
    )
    p.add_argument(
        "--snaplen",
        type=IntRange(1, MAX_SNAPLEN, "as tcpdump"),
        default=cap.DEFAULT_SNAPLEN,
        metavar="BYTES",
        help=f"bytes kept of each packet (default {cap.DEFAULT_SNAPLEN}: all headers; "
        f"at most {MAX_SNAPLEN})",
    )
    add_engine_option(p)
    add_model_options(p)
    p.set_defaults(func=run)


def _rotation(text: str) -> Rotation:
    limits = "sizes from 64k to 1T, times from 1s to 366d"
    try:
        rotation = parse_rotation(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{shown(text)} is not a size such as 100M or a time such as 3600, 90s, 1h ({limits})"
        ) from None
    size, seconds = rotation.size, rotation.seconds
    if (size is not None and not MIN_ROTATE_SIZE <= size <= MAX_ROTATE_SIZE) or (
        seconds is not None and not 1 <= seconds <= MAX_ROTATE_SECONDS
    ):
        raise argparse.ArgumentTypeError(f"{shown(text)} is out of range ({limits})")
    return rotation


def run(args: argparse.Namespace) -> int:
    if args.rotate is not None and not args.write:
        print("treason: --rotate needs --write FILE", file=sys.stderr)
        return 2
    if args.engine == "fast" and not fast_available():
        print("treason: --engine fast: the compiled scanner is not built", file=sys.stderr)
        return 2
    source = cap.PacketSocket(args.interface, args.filter, args.snaplen)
    stats = LiveStats(interface=args.interface, filter=source.filter)
    sink = recorder = server = None
    try:
        if args.write:
            sink = PcapSink(args.write, source.linktype, args.snaplen, args.rotate)
            recorder = FlowRecorder(sink, ring=args.ring)
        if args.metrics:
            from treason.live.metrics import serve

            server = serve(stats, args.metrics)
        return _capture(args, source, stats, sink, recorder)
    except BaseException:
        if sink is not None:
            # Packets captured before the failure are kept; a run that never started leaves none.
            if stats.started:
                sink.close()
            else:
                sink.discard()
        raise
    finally:
        source.close()
        if server is not None:
            server.stop()


def _capture(
    args: argparse.Namespace,
    source: cap.PacketSocket,
    stats: LiveStats,
    sink: PcapSink | None,
    recorder: FlowRecorder | None,
) -> int:
    out = sys.stdout
    if args.format == "json":

        def emit(event: Event) -> None:
            out.write(report.event_json(event) + "\n")
            out.flush()

    else:

        def emit(event: Event) -> None:
            out.write("\n".join(report.event_text(event)) + "\n")
            out.flush()

    session = LiveSession(
        stats,
        emit,
        retractions=args.all,
        max_flows=args.max_flows,
        idle_timeout=args.idle_timeout,
        recorder=recorder,
        engine=args.engine,
        linktype=source.linktype,
    )
    if args.engine == "auto" and session.kind == "reference":
        print(
            "treason: note: the compiled scanner is not built (no C compiler at install time); "
            "using the reference engine, which keeps up with far fewer packets per second",
            file=sys.stderr,
        )
    with StopSignals((signal.SIGINT, signal.SIGTERM)) as stop:
        interval = args.status_interval if args.status_interval > 0 else None
        ticks = [0.1]  # open zero-window events become final on time even on a quiet link
        if interval:
            ticks.append(interval)
        if sink is not None and sink.rotation is not None and sink.rotation.seconds:
            ticks.append(min(1.0, sink.rotation.seconds))
        every = min(ticks)
        last_status = time.monotonic()

        def periodic() -> None:
            nonlocal last_status
            session.tick(time.time_ns())
            counters = source.kernel_counters()
            stats.kernel_received, stats.kernel_drops = counters.received, counters.drops
            if sink is not None:
                sink.tick(time.time())
            if interval and time.monotonic() - last_status >= interval - 0.01:
                last_status = time.monotonic()
                print(report.status_line(stats), file=sys.stderr, flush=True)

        start = time.monotonic()
        stats.started = time.time()
        kind = "Ethernet" if source.linktype == 1 else "raw IP"
        print(
            f"treason: listening on {args.interface} ({kind}), filter '{source.filter}', "
            f"snaplen {args.snaplen}; SIGINT or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )
        lost: TreasonError | None = None
        try:
            capture_loop(
                source,
                session,
                wakeup_fd=stop.read_fd,
                stopping=lambda: bool(stop),
                every=every,
                periodic=periodic,
            )
        except OSError as exc:
            if exc.errno not in INTERFACE_LOST:
                raise
            # As tcpdump: the capture ends, but what it saw is still reported (pending events,
            # the summary, the --write file) before the one line that says why it ended.
            lost = _interface_lost(source, exc)
    session.finish()
    counters = source.kernel_counters()
    stats.kernel_received, stats.kernel_drops = counters.received, counters.drops
    if sink is not None:
        sink.close()
        stats.written = sink.packets
    lines = report.summary(stats, time.monotonic() - start)
    if sink is not None:
        for path in sink.finished:
            lines.append(f"Wrote {path}")
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    print("\n".join(lines), file=sys.stderr, flush=True)
    if lost is not None:
        raise lost
    return 0


#: What the packet socket answers once its interface is down or deleted.
INTERFACE_LOST = (errno.ENETDOWN, errno.ENODEV, errno.ENXIO)


def _interface_lost(source: cap.PacketSocket, exc: OSError) -> TreasonError:
    try:
        still_there = socket.if_nametoindex(source.interface) == source.ifindex
    except OSError:
        still_there = False
    what = "went down" if still_there else "disappeared"
    return TreasonError(
        f"live capture on {source.interface}",
        f"the interface {what} ({exc.strerror or exc}); capture stopped",
    )
