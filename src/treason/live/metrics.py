"""``--metrics HOST:PORT``: the live counters as a Prometheus scrape endpoint.

Metrics are computed from ``LiveStats`` at scrape time by one collector, so the endpoint can
never disagree with the status line. Peer labels are limited to the ``TOP_PEERS`` most accused
addresses: a label per peer on an Internet-facing interface would otherwise grow without bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from treason.errors import TreasonError
from treason.events import CLASS_NAMES
from treason.live.stats import LiveStats

TOP_PEERS = 20
DEFAULT_HOST = "127.0.0.1"


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[V6]:PORT``; the host defaults to loopback."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or re.search(r"[\s\[\]/]", host):
        shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
        raise ValueError(f"expected HOST:PORT, :PORT or PORT, got {shown}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    host = host or DEFAULT_HOST
    return host, port


class LiveCollector:
    """Prometheus collector over one live capture's counters."""

    def __init__(self, stats: LiveStats, top_peers: int = TOP_PEERS) -> None:
        self.stats = stats
        self.top_peers = top_peers

    def describe(self) -> list:
        return []  # metrics are dynamic (peer labels); no eager registration check

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        iface = s.interface

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["interface"])
            c.add_metric([iface], value)
            return c

        yield counter(
            "treason_packets", "Packets captured and analysed (after the filter).", s.scan.frames
        )
        yield counter("treason_tcp_segments", "Captured packets decoded as TCP.", s.scan.segments)
        yield counter(
            "treason_kernel_drops",
            "Packets the kernel dropped because the capture fell behind (PACKET_STATISTICS).",
            s.kernel_drops,
        )
        yield counter("treason_flows", "TCP connections seen.", s.scan.flows)
        active = GaugeMetricFamily(
            "treason_flows_active", "TCP connections in the flow table now.", labels=["interface"]
        )
        active.add_metric([iface], s.flows_active)
        yield active
        events = CounterMetricFamily(
            "treason_events",
            "Window-shrink events by class (retractions included).",
            labels=["interface", "class"],
        )
        counts = dict(s.scan.events)
        for name in CLASS_NAMES.values():
            events.add_metric([iface, name], counts.get(name, 0))
        yield events
        yield counter("treason_packets_written", "Packets saved by --write.", s.written)
        peers = GaugeMetricFamily(
            "treason_peer_events",
            f"Events per accused peer address, for the {self.top_peers} peers with the most.",
            labels=["interface", "peer"],
        )
        for peer, n in s.peers.top(self.top_peers):
            peers.add_metric([iface, peer], n)
        yield peers


def serve(stats: LiveStats, address: tuple[str, int]) -> object:
    """Start the endpoint in a background thread; returns the server (``shutdown()`` stops it).

    ``address`` is what ``parse_address`` made of ``--metrics`` when the options were parsed."""
    host, port = address
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise TreasonError(
            "--metrics", "needs the prometheus_client package (pip install prometheus_client)"
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(stats))  # type: ignore[arg-type]
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise TreasonError(f"--metrics {host}:{port}", exc.strerror or str(exc)) from None
    return server
