"""``--metrics HOST:PORT``: the live counters as a Prometheus scrape endpoint.

Metrics are computed from ``LiveStats`` at scrape time by one collector, so the endpoint can
never disagree with the status line. Peer labels are limited to the ``TOP_PEERS`` most accused
addresses: a label per peer on an Internet-facing interface would otherwise grow without bound.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from treason.errors import TreasonError
from treason.events import CLASS_NAMES
from treason.live.stats import LiveStats

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

TOP_PEERS = 20
DEFAULT_HOST = "127.0.0.1"
#: Scrape connections served at once; one more closes the oldest (a scraper needs one or two).
MAX_CONNECTIONS = 8
#: Seconds a connection gets in all to send its request and read the answer.
REQUEST_TIMEOUT = 5.0


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

    def describe(self) -> list[Metric]:
        return []  # metrics are dynamic (peer labels); no eager registration check

    def collect(self) -> Iterator[Metric]:
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


class MetricsServer(ThreadingHTTPServer):
    """An HTTP server for scrapes that a flood of connections cannot exhaust.

    prometheus_client's own server starts a thread per connection and waits for its request
    forever: 2,000 idle connections hold 2,000 threads. Here at most ``MAX_CONNECTIONS`` are
    served at once, each gets ``REQUEST_TIMEOUT`` seconds in all (reading the request, writing
    the answer) however slowly it sends, and a connection beyond the cap closes the oldest open
    one: a scraper, which sends its request at once, gets its answer even while idle
    connections keep arriving.
    """

    daemon_threads = True
    block_on_close = False  # stopping never waits for a client
    request_queue_size = 128  # connections waiting to be accepted

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.registry = registry
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._open: dict[socket.socket, None] = {}  # oldest first
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, _ScrapeHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._open) >= self.max_connections:
                oldest = next(iter(self._open))
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and ends
        if not self._slots.acquire(timeout=self.request_timeout):
            self.shutdown_request(request)
            return
        with self._lock:
            self._open[request] = None
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._lock:
            self._open.pop(request, None)
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanishes or stalls is its own problem, not a traceback on stderr."""

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _DeadlineReader(io.RawIOBase):
    """Reads from a socket until one deadline: a request sent a byte every few seconds still
    ends at ``REQUEST_TIMEOUT``, where a per-read timeout would wait forever."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request timeout")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _ScrapeHandler(BaseHTTPRequestHandler):
    """``GET /metrics`` (or ``/``): the exposition text; one request per connection."""

    server: MetricsServer
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)
        deadline = time.monotonic() + self.server.request_timeout
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def do_GET(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self.path.partition("?")[0] not in ("/", "/metrics"):
            self.send_error(404)
            return
        body = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No line on stderr per scrape: stderr carries the capture's status."""


def serve(stats: LiveStats, address: tuple[str, int]) -> MetricsServer:
    """Start the endpoint in a background thread; ``stop()`` on the result ends it.

    ``address`` is what ``parse_address`` made of ``--metrics`` when the options were parsed."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise TreasonError(
            "--metrics", "needs the prometheus_client package (pip install prometheus_client)"
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(stats))
    host, port = address
    try:
        server = MetricsServer((host, port), registry)
    except OSError as exc:
        raise TreasonError(f"--metrics {host}:{port}", exc.strerror or str(exc)) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
