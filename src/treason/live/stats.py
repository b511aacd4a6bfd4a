"""The counters of a live capture, shared by the status line, the summary and the metrics.

One object, updated by the capture loop and read by the others (the metrics endpoint reads it
from its own thread; every field is a plain int or a dict swapped under a lock).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from treason.scanner import ScanStats

#: Peers remembered with their event counts; past this the least accused are forgotten.
MAX_PEERS = 1000


@dataclass
class PeerCounter:
    """Events per accused peer address, over a bounded set of peers.

    A peer with events is what a user wants to see; an interface facing the Internet can see
    events from unboundedly many, so only the ``limit`` most accused are kept (a new peer
    replaces the one with the fewest events).
    """

    limit: int = MAX_PEERS
    counts: dict[str, int] = field(default_factory=dict)
    forgotten: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, peer: str) -> None:
        with self._lock:
            counts = self.counts
            if peer not in counts and len(counts) >= self.limit:
                least = min(counts, key=counts.__getitem__)
                del counts[least]
                self.forgotten += 1
            counts[peer] = counts.get(peer, 0) + 1

    def top(self, n: int) -> list[tuple[str, int]]:
        with self._lock:
            items = list(self.counts.items())
        items.sort(key=lambda kv: (-kv[1], kv[0]))
        return items[:n]


@dataclass
class LiveStats:
    """Everything a live capture counted since it started."""

    interface: str
    filter: str = "tcp"
    scan: ScanStats = field(default_factory=ScanStats)
    kernel_received: int = 0  # packets the kernel's filter accepted (captured + dropped)
    kernel_drops: int = 0  # accepted packets lost because the socket buffer was full
    flows_active: int = 0  # connections in the flow table now
    started: float = 0.0  # wall clock, seconds
    peers: PeerCounter = field(default_factory=PeerCounter)
    written: int = 0  # packets saved by --write

    @property
    def events_total(self) -> int:
        return sum(self.scan.events.values())

    @property
    def reported(self) -> int:
        """Events shown (retractions are counted but shown only with --all)."""
        return self.events_total - self.scan.events.get("retraction", 0)

    def drop_percent(self) -> float:
        if not self.kernel_received:
            return 0.0
        return 100.0 * self.kernel_drops / self.kernel_received
