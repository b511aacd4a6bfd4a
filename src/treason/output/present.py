"""What every view shows of an event: its class, its flow, its time, and the peer table.

The terminal report (``output/text.py``), ``live`` (``live/report.py``), ``match`` and the plot
page all name an event the same way, so a user can carry a line from one to another. Views
decide *which* events they show (``scan`` hides retractions unless ``--all``); this module
decides *how* each is written, and counts the peer table the same way for every view.

Text built from the input is bounded: a flow names at most ``MAX_VLANS`` VLAN ids and a table
cell holds at most ``MAX_CELL`` characters, so a capture with a 65,000-deep VLAN stack cannot
make every row of a report hundreds of kilobytes wide.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from treason.events import Event, Severity
from treason.terminal import safe

#: VLAN ids named in a flow; deeper stacks are counted (``vlan 1.2.3...+64997 more``).
MAX_VLANS = 8
#: Characters in one table cell (file names, flows); longer text ends in ``...``.
MAX_CELL = 200
#: Ports listed in a peer row; more are shown as ``,...``.
MAX_PORTS = 4


def timestamp(t: float) -> str:
    """UTC, microseconds: the precision of most captures."""
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def endpoint(addr: str, port: int) -> str:
    """``addr:port``, with IPv6 addresses in brackets so the port is unambiguous."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def vlan_text(vlan: Sequence[int]) -> str:
    """`` vlan 100.20`` (outermost first), empty without tags; at most ``MAX_VLANS`` ids."""
    if not vlan:
        return ""
    shown = ".".join(map(str, vlan[:MAX_VLANS]))
    if len(vlan) > MAX_VLANS:
        shown += f"...+{len(vlan) - MAX_VLANS} more"
    return f" vlan {shown}"


def flow_text(src: str, sport: int, dst: str, dport: int, vlan: Sequence[int] = ()) -> str:
    """``receiver -> sender``: the direction whose receiver took window back."""
    return f"{endpoint(src, sport)} -> {endpoint(dst, dport)}{vlan_text(vlan)}"


def tunnel_text(tunnel: Sequence[str]) -> str:
    """`` in vxlan:42 mpls:16``: the tunnel layers, outermost first; empty without any."""
    return f" in {' '.join(tunnel)}" if tunnel else ""


def event_flow(e: Event) -> str:
    """The flow, and the tunnel layers it was found in (``in vxlan:42``), outermost first."""
    return flow_text(e.src, e.sport, e.dst, e.dport, e.vlan) + tunnel_text(e.tunnel)


def class_text(e: Event) -> str:
    """``shrink``, ``kernel (close)``, ``beyond ?``: class, during close, only possible."""
    text = e.cls.label + (" (close)" if e.closing else "")
    return text if e.certainty == "definite" else text + " ?"


def scale_text(e: Event) -> str:
    """The window shift used, ``?`` when inferred (handshake not captured)."""
    return str(e.scale) if e.scale_known else f"{e.scale}?"


def edges_text(e: Event) -> str:
    return f"{e.old_edge} -> {e.new_edge}"


def file_text(name: str) -> str:
    """A file name as a cell: control characters (tabs and newlines too) escaped, length capped."""
    return cut(safe(name).replace("\t", "\\t").replace("\n", "\\n"))


def cut(text: str, limit: int = MAX_CELL) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and ``...``."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class PeerRow:
    """One receiving host that shrank: who is at fault, how often, how badly."""

    peer: str
    ports: str
    events: int
    kernel: int
    bytes_back: int
    max_beyond: int
    flows: int
    worst: Severity


@dataclass(slots=True)
class _Peer:
    ports: set[int] = field(default_factory=set)
    events: int = 0
    kernel: int = 0
    bytes_back: int = 0
    max_beyond: int = 0
    # A 64-bit hash per flow (file, sport, dst, dport, vlan), not the key itself: a key with a
    # deep VLAN stack is large, and collisions among a few million flows are negligible.
    flows: set[int] = field(default_factory=set)
    worst: Severity = Severity.RETRACTION


class PeerTable:
    """The peer table, counted as events stream past: memory per peer and flow, not per event."""

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}

    def add(self, e: Event) -> None:
        p = self._peers.get(e.src)
        if p is None:
            p = self._peers[e.src] = _Peer()
        p.ports.add(e.sport)
        p.events += 1
        p.kernel += e.cls is Severity.KERNEL
        p.bytes_back += e.shrink_bytes
        p.max_beyond = max(p.max_beyond, e.beyond_bytes)
        p.flows.add(hash((e.file, e.sport, e.dst, e.dport, e.vlan)))
        p.worst = max(p.worst, e.cls)

    def rows(self) -> list[PeerRow]:
        """Most events first, then by address."""
        rows = []
        for addr, p in self._peers.items():
            ports = sorted(p.ports)
            shown = ",".join(map(str, ports[:MAX_PORTS])) + (
                ",..." if len(ports) > MAX_PORTS else ""
            )
            rows.append(
                PeerRow(
                    addr,
                    shown,
                    p.events,
                    p.kernel,
                    p.bytes_back,
                    p.max_beyond,
                    len(p.flows),
                    p.worst,
                )
            )
        rows.sort(key=lambda r: (-r.events, r.peer))
        return rows


def peer_rows(events: Iterable[Event]) -> list[PeerRow]:
    """The peer table of ``events`` (the events the view shows: pass what it counts)."""
    table = PeerTable()
    for e in events:
        table.add(e)
    return table.rows()
