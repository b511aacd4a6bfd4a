"""Three network namespaces in a line, sender — router — receiver, for two-point captures.

The router forwards between two veth links and can run an nftables ruleset in its forward
chain (window rewriting, option stripping, NAT, drops). Captures are taken on the two outer
links, at the sender and at the receiver. The object is a ``VethPair`` whose sides ``a``
(sender) and ``b`` (receiver) are two links apart, with side ``r`` the router, so the traffic
helpers and ``Tcpdump`` of ``tests/netns.py`` drive it unchanged. Names are unique per call
and everything is removed afterwards.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from netns import NetnsError, Tcpdump, VethPair, _run, _wait_line, slow_reader_exchange

ADDR_A = "10.214.1.1"  # sender
ROUTER_A = "10.214.1.254"
ADDR_B = "10.214.2.1"  # receiver
ROUTER_B = "10.214.2.254"
# The same hosts over IPv6 (documentation prefix), on the same links.
ADDR6_A = "2001:db8:214:1::1"
ROUTER6_A = "2001:db8:214:1::fe"
ADDR6_B = "2001:db8:214:2::1"
ROUTER6_B = "2001:db8:214:2::fe"


@dataclass
class Router(VethPair):
    """Sender ``a`` and receiver ``b``, each joined to router ``r`` by its own veth."""

    ns_r: str = ""
    dev_ra: str = ""
    dev_rb: str = ""

    def ns(self, side: str) -> str:
        return self.ns_r if side == "r" else super().ns(side)

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset into the router."""
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(ruleset)
            f.flush()
            self.run("r", ["nft", "-f", f.name])


def _link(
    ns1: str, dev1: str, addr1: str, ns2: str, dev2: str, addr2: str, v6: tuple[str, str]
) -> None:
    _run(["ip", "link", "add", dev1, "netns", ns1, "type", "veth", "peer", "name", dev2,
          "netns", ns2])  # fmt: skip
    for ns, dev, addr, addr6 in ((ns1, dev1, addr1, v6[0]), (ns2, dev2, addr2, v6[1])):
        _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
        # No duplicate address detection: the address works as soon as the link is up.
        _run(["ip", "-n", ns, "addr", "add", f"{addr6}/64", "dev", dev, "nodad"])
        _run(["ip", "-n", ns, "link", "set", dev, "up"])
        # Wire-sized segments, not 64 KB GSO packets: the captures look like a real link.
        _run(["ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1"])


@contextlib.contextmanager
def router(prefix: str = "trc") -> Iterator[Router]:
    """Three fresh namespaces, forwarding on, routes set; always removed afterwards."""
    tag = secrets.token_hex(3)
    r = Router(
        ns_a=f"{prefix}-{tag}-a",
        ns_b=f"{prefix}-{tag}-b",
        dev_a=f"{prefix}{tag}a"[:15],
        dev_b=f"{prefix}{tag}b"[:15],
        addr_a=ADDR_A,
        addr_b=ADDR_B,
        ns_r=f"{prefix}-{tag}-r",
        dev_ra=f"{prefix}{tag}ra"[:15],
        dev_rb=f"{prefix}{tag}rb"[:15],
    )
    created: list[str] = []
    try:
        for ns in (r.ns_a, r.ns_r, r.ns_b):
            _run(["ip", "netns", "add", ns])
            created.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _link(r.ns_a, r.dev_a, ADDR_A, r.ns_r, r.dev_ra, ROUTER_A, (ADDR6_A, ROUTER6_A))
        _link(r.ns_r, r.dev_rb, ROUTER_B, r.ns_b, r.dev_b, ADDR_B, (ROUTER6_B, ADDR6_B))
        _run(["ip", "-n", r.ns_a, "route", "add", "default", "via", ROUTER_A])
        _run(["ip", "-n", r.ns_b, "route", "add", "default", "via", ROUTER_B])
        _run(["ip", "-n", r.ns_a, "-6", "route", "add", "default", "via", ROUTER6_A])
        _run(["ip", "-n", r.ns_b, "-6", "route", "add", "default", "via", ROUTER6_B])
        r.sysctl("r", "net.ipv4.ip_forward", 1)
        r.sysctl("r", "net.ipv6.conf.all.forwarding", 1)
        yield r
    finally:
        r.kill_all()
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


#: A data sender that accepts the connection (the reader connects to it): used when the
#: receiver must be the client, whose SYN-ACK from the sender a router can rewrite.
SERVER_WRITER = """
import socket, sys, time
port, size = int(sys.argv[1]), int(sys.argv[2])
duration, pace = float(sys.argv[3]), float(sys.argv[4])
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("0.0.0.0", port)); lst.listen(1); print("listening", flush=True)
conn, _ = lst.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
conn.settimeout(30); end = time.monotonic() + duration
while time.monotonic() < end:
    conn.sendall(b"y" * size); time.sleep(pace)
conn.shutdown(socket.SHUT_WR); conn.recv(1); conn.close()
"""

#: The reader side of SERVER_WRITER: connects, waits, reads slowly, then drains.
CLIENT_READER = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
pause, slow_for = float(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=30); start = time.monotonic()
time.sleep(pause)
while time.monotonic() - start < slow_for:
    if not s.recv(1000): break
    time.sleep(0.01)
while s.recv(1 << 16): pass
s.close()
"""


def reader_connects(
    r: Router,
    port: int = 5001,
    *,
    size: int = 100,
    duration: float = 1.0,
    pace: float = 0.0002,
    pause: float = 0.5,
    slow_for: float = 1.0,
) -> None:
    """One connection from a slow reader in ``b`` to a small-segment writer in ``a``."""
    server = r.popen(
        "a",
        [sys.executable, "-c", SERVER_WRITER, str(port), str(size), str(duration), str(pace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_line(server, "listening", 10, "writer")
    argv = [sys.executable, "-c", CLIENT_READER, r.addr_a, str(port), str(pause), str(slow_for)]
    r.run("b", argv, timeout=120)
    try:
        _, err = server.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        raise NetnsError("writer did not finish") from None
    if server.returncode != 0:
        raise NetnsError(f"writer failed: {err.strip()}")


def capture_two_points(
    near: Path,
    far: Path,
    *,
    ruleset: str | None = None,
    shrink_window: int = 0,
    reader_is_client: bool = False,
    connections: int = 1,
    ipv6: bool = False,
) -> None:
    """Slow-reader traffic through the router, recorded at the sender and at the receiver.

    ``near`` is tcpdump on the sender's link, ``far`` on the receiver's. ``ruleset`` is loaded
    into the router first; ``shrink_window`` is the receiver's ``net.ipv4.tcp_shrink_window``.
    With ``reader_is_client`` the receiver opens the connection (``reader_connects``).
    ``connections`` are made one after another, to ports 5001, 5002, ...; over IPv6 with
    ``ipv6`` (the sender's and receiver's IPv6 addresses).
    """
    with router() as r:
        if ipv6:
            r.addr_a, r.addr_b = ADDR6_A, ADDR6_B
        r.sysctl("b", "net.ipv4.tcp_shrink_window", shrink_window)
        r.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        if ruleset is not None:
            r.nft(ruleset)
        with Tcpdump(r, "a", near, snaplen=96) as dn, Tcpdump(r, "b", far, snaplen=96) as df:
            for port in range(5001, 5001 + connections):
                if reader_is_client:
                    reader_connects(r, port)
                else:
                    slow_reader_exchange(r, port)
            stats = dn.stop(), df.stop()
    if any(s.dropped for s in stats):
        raise NetnsError(f"tcpdump dropped packets: {stats}")


def missing_nftables() -> str | None:
    """Why the router cannot run nftables rules here (no nft, no nf_tables), or None."""
    name = f"trnft-{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", name])
    except NetnsError as exc:
        return str(exc)
    try:
        probe = subprocess.run(
            ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "probe"],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            return f"nftables does not work here: {probe.stderr.strip()}"
        return None
    except FileNotFoundError:
        return "needs 'nft' on PATH"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
