"""What a live capture prints: one line per event, a status line, and the final summary.

Events go to standard output the moment they happen (text, or the JSON Lines record ``scan``
writes); status and summary go to standard error, so the event stream stays machine-readable
and a service's journal gets both.
"""

from __future__ import annotations

import json

from treason.events import Event
from treason.live.stats import LiveStats
from treason.output.present import class_text, edges_text, event_flow, scale_text, timestamp
from treason.output.text import summary_lines


def event_text(e: Event) -> list[str]:
    """One event as it happens: when, who shrank towards whom, by how much, and the log line."""
    lines = [
        f"{timestamp(e.time)} UTC  frame {e.frame}  {class_text(e)}: {event_flow(e)}  right edge "
        f"{edges_text(e)} (back {e.shrink_bytes}, beyond {e.beyond_bytes}, ws {scale_text(e)})"
    ]
    if e.kernel_line:
        lines.append(f"    kernel log on {e.dst}: {e.kernel_line}")
    return lines


def event_json(e: Event) -> str:
    return json.dumps(e.to_dict(), separators=(",", ":"))


def status_line(s: LiveStats) -> str:
    drops = f"{s.kernel_drops} kernel drops"
    if s.kernel_drops:
        drops += f" ({s.drop_percent():.1f}%)"
    return (
        f"treason: {s.interface}: {s.scan.frames} packets, {s.flows_active} flows "
        f"({s.scan.flows} seen), {s.reported} events, {drops}"
    )


def summary(s: LiveStats, elapsed: float, top: int = 10) -> list[str]:
    """The closing summary: what was captured, what was lost, who shrank their window."""
    lines = summary_lines(s.scan, [f"{s.interface} (live, filter: {s.filter})"])
    lines.insert(1, f"  {elapsed:.1f} s")
    lost = f"  kernel: {s.kernel_received} packets passed the filter, {s.kernel_drops} dropped"
    if s.kernel_drops:
        lost += f" ({s.drop_percent():.1f}%): events may be missing or wrong for those flows"
    lines.append(lost)
    if s.written:
        lines.append(f"  {s.written} packets of flows with events written")
    lines.append("")
    return lines + outcome_lines(s, top)


def outcome_lines(s: LiveStats, top: int = 10) -> list[str]:
    """The end of a watch's summary (``live``, ``trace``): events by class, the top peers."""
    if not s.reported:
        return ["No receive-window shrinks seen."]
    by_class = ", ".join(
        f"{n} {name}" for name, n in sorted(s.scan.events.items()) if n and name != "retraction"
    )
    lines = [f"{s.reported} window shrink event(s): {by_class}."]
    peers = s.peers.top(top)
    if peers:
        lines.append("Peers that shrank their window (most events first):")
        width = max(len(p) for p, _ in peers)
        for peer, n in peers:
            lines.append(f"  {peer.ljust(width)}  {n}")
    return lines
