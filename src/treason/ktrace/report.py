"""What ``treason trace`` prints besides the events: its status line and closing summary.

Events themselves use ``live``'s lines (``treason.live.report``); these lines count tracepoint
records instead of packets, and the records the kernel's trace buffer lost.
"""

from __future__ import annotations

from treason.ktrace.session import TraceCounters
from treason.live.report import outcome_lines
from treason.live.stats import LiveStats


def sync_stats(stats: LiveStats, counters: TraceCounters) -> None:
    """Mirror the trace counters into the ``LiveStats`` the metrics endpoint reads.

    ``treason_packets`` then counts tracepoint records, ``treason_tcp_segments`` the
    ``tcp_probe`` ones (one per received segment), ``treason_kernel_drops`` the records the
    trace buffer lost, and the flow counters the sockets.
    """
    stats.scan.frames = counters.records
    stats.scan.segments = counters.probes
    stats.scan.flows = counters.seen
    stats.flows_active = counters.sockets
    stats.kernel_drops = counters.lost
    stats.kernel_received = counters.records + counters.lost


def lost_text(counters: TraceCounters) -> str:
    text = f"{counters.lost} lost by the trace buffer"
    if counters.lost or counters.lost_pages:
        text += " (events may be missing or late for the sockets concerned)"
    return text


def status_line(stats: LiveStats, counters: TraceCounters) -> str:
    return (
        f"treason: trace: {counters.records} records ({counters.probes} segments received, "
        f"{counters.retransmits} retransmissions), {stats.flows_active} sockets "
        f"({stats.scan.flows} seen), {stats.reported} events, {lost_text(counters)}"
    )


def summary(
    stats: LiveStats,
    counters: TraceCounters,
    elapsed: float,
    top: int = 10,
    retractions_shown: bool = False,
) -> list[str]:
    """The closing summary; ``retractions_shown`` when ``--all`` printed the retractions."""
    lines = [
        f"Trace: tcp:tcp_probe, tcp:tcp_retransmit_skb (filter: {stats.filter}), {elapsed:.1f} s",
        f"  {counters.records} records: {counters.probes} segments received by "
        f"{stats.scan.flows} sockets, {counters.retransmits} retransmissions",
        f"  {lost_text(counters)}",
    ]
    retractions = stats.scan.events.get("retraction", 0)
    if retractions:
        where = "shown above" if retractions_shown else "--all shows them"
        lines.append(f"  {retractions} sub-granularity retractions ({where})")
    lines.append("")
    return lines + outcome_lines(stats, top)
