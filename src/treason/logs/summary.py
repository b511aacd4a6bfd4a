"""The summary of kernel reports, like logwatch's but explained.

Grouping follows what the numbers mean: a *connection* is (peer, peer port, local port); within
it a *stall episode* is one value of X (``snd_una``): the kernel prints again at every
retransmission timeout while the same data waits, at backed-off (doubling) intervals, so many
lines with one X are one stalled connection, not many attacks. A new X on the same connection
means it moved on and stalled again.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from treason.kernel import BY_KEY
from treason.logs import LogLine, LogScan
from treason.logs.services import service_name
from treason.terminal import safe


@dataclass
class Episode:
    """All reports of one connection with one X: one stall being probed."""

    x: int
    lines: list[LogLine] = field(default_factory=list)

    @property
    def ys(self) -> list[int]:
        return sorted({ln.shrink.y for ln in self.lines})

    @property
    def outstanding(self) -> int:
        return max(ln.shrink.outstanding for ln in self.lines)

    @property
    def count(self) -> int:
        return len(self.lines)

    @property
    def up_to_more(self) -> int:
        return sum(ln.repeats for ln in self.lines)

    def intervals(self) -> list[float]:
        times = [t for t in (ln.seconds for ln in self.lines) if t is not None]
        return [b - a for a, b in itertools.pairwise(times)]

    @property
    def backed_off(self) -> bool:
        """Repeats whose spacing never shrinks (within 10%): the RTO doubling of one stall."""
        gaps = self.intervals()
        if len(gaps) < 2 or any(g <= 0 for g in gaps):
            return False
        return all(b >= 0.9 * a for a, b in itertools.pairwise(gaps))


@dataclass
class Connection:
    host: str | None
    peer: str
    peer_port: int
    local_port: int
    episodes: dict[int, Episode] = field(default_factory=dict)

    @property
    def lines(self) -> list[LogLine]:
        return [ln for ep in self.episodes.values() for ln in ep.lines]


@dataclass
class HostSummary:
    host: str | None
    connections: dict[tuple[str, int, int], Connection] = field(default_factory=dict)
    suppressed: int = 0

    @property
    def lines(self) -> list[LogLine]:
        return [ln for c in self.connections.values() for ln in c.lines]

    def eras(self) -> list[str]:
        seen: list[str] = []
        for ln in self.lines:
            if ln.shrink.wording not in seen:
                seen.append(ln.shrink.wording)
        return seen


def summarise(lines: Iterable[LogLine], suppressed: dict | None = None) -> list[HostSummary]:
    """Group reports by host, connection and stall episode, in order of first appearance."""
    hosts: dict[str | None, HostSummary] = {}
    for ln in lines:
        h = hosts.setdefault(ln.host, HostSummary(ln.host))
        key = ln.shrink.connection
        conn = h.connections.setdefault(key, Connection(ln.host, *key))
        conn.episodes.setdefault(ln.shrink.x, Episode(ln.shrink.x)).lines.append(ln)
    for host, n in (suppressed or {}).items():
        if host in hosts:
            hosts[host].suppressed += n
    return list(hosts.values())


def _when(ln: LogLine) -> str:
    if ln.time_text:
        return ln.time_text
    if ln.record.uptime is not None:
        return f"{ln.record.uptime:.6f}s after boot"
    return "time unknown"


def _port(port: int) -> str:
    name = service_name(port)
    return f"{port} ({name})" if name else str(port)


def _era(key: str) -> str:
    return f"Linux {BY_KEY[key].kernels}"


def _span(lines: list[LogLine]) -> str:
    first, last = _when(lines[0]), _when(lines[-1])
    return first if first == last else f"{first} .. {last}"


def render_text(hosts: list[HostSummary], explain: bool = True) -> str:
    """The human summary. Every string that came from the log goes through ``safe``."""
    out: list[str] = []
    if not hosts:
        return "No window-shrink reports found.\n"
    for h in hosts:
        lines = h.lines
        peers = {c.peer for c in h.connections.values()}
        n_ep = sum(len(c.episodes) for c in h.connections.values())
        name = safe(h.host) if h.host else "(this machine / no host name in the log)"
        out.append(
            f"Host {name}: {len(lines)} report(s), {len(h.connections)} connection(s), "
            f"{n_ep} stall episode(s), {len(peers)} peer(s)"
        )
        out.append(f"  kernel era (from the wording): {', '.join(_era(k) for k in h.eras())}")
        out.append(f"  seen {_span(sorted(lines, key=_sort_key))}")
        if h.suppressed:
            out.append(
                f"  rate limiting hid up to {h.suppressed} more kernel network message(s) "
                "(some may be more of these)"
            )
        out.append("")
        out.append("  Per peer (the remote receiver that closed its window):")
        by_peer: dict[str, list[Connection]] = {}
        for c in h.connections.values():
            by_peer.setdefault(c.peer, []).append(c)
        for peer, conns in by_peer.items():
            plines = sorted((ln for c in conns for ln in c.lines), key=_sort_key)
            ports = sorted({c.local_port for c in conns})
            out.append(
                f"    {safe(peer)}: {len(plines)} report(s), {len(conns)} connection(s), "
                f"local port(s) {', '.join(_port(p) for p in ports)}; {_span(plines)}"
            )
        out.append("  Per local port (your service that was sending):")
        by_port: dict[int, list[Connection]] = {}
        for c in h.connections.values():
            by_port.setdefault(c.local_port, []).append(c)
        for port, conns in sorted(by_port.items()):
            n = sum(len(c.lines) for c in conns)
            npeers = len({c.peer for c in conns})
            out.append(f"    {_port(port)}: {n} report(s) from {npeers} peer(s)")
        out.append("  Per connection and stall episode (X = first unacknowledged byte):")
        for c in h.connections.values():
            out.append(
                f"    {safe(c.peer)}:{c.peer_port} -> local {_port(c.local_port)}: "
                f"{len(c.episodes)} episode(s)"
            )
            for ep in c.episodes.values():
                ys = "/".join(str(y) for y in ep.ys)
                more = f", up to {ep.up_to_more} more (repeat markers)" if ep.up_to_more else ""
                rep = ""
                if ep.count > 1:
                    rep = ": one stall, probed again and again"
                    if ep.backed_off:
                        rep += " at backed-off intervals"
                out.append(
                    f"      X={ep.x} Y={ys}: {ep.outstanding} byte(s) outstanding, "
                    f"{ep.count} report(s){rep}{more}; {_span(ep.lines)}"
                )
        out.append("")
    if explain:
        out.extend(_explanation(hosts))
    return "\n".join(out).rstrip("\n") + "\n"


def _sort_key(ln: LogLine) -> tuple:
    t = ln.seconds
    return (t is None, t or 0.0, ln.record.source, ln.record.lineno)


def _explanation(hosts: list[HostSummary]) -> list[str]:
    ones = all(ln.shrink.outstanding == 1 for h in hosts for ln in h.lines)
    text = [
        "What this means:",
        "  Each line was printed by the kernel of the host above while it was SENDING data",
        "  to the peer. The peer had advertised a zero receive window while data was still",
        "  unacknowledged and the retransmission timer expired: the peer took back window it",
        "  had offered (RFC 9293 says a receiver SHOULD NOT; a sender must cope). The kernel",
        "  copes ('repaired'): it keeps probing the peer and gives up after about 120 s",
        "  (240 s from Linux 6.6) without any answer.",
        "  X:Y are sequence numbers (snd_una:snd_nxt), not window sizes; Y-X is the number of",
        "  bytes (a FIN counts 1) that were sent but not yet acknowledged.",
    ]
    if ones:
        text.append("  Here Y-X is 1 everywhere: a single byte or a FIN (half-closed connection)")
        text.append("  was waiting, typical of a peer that stopped reading near the end.")
    text += [
        "  Usual causes: a peer stack that misbehaves (printers, NAS boxes, P2P clients, old",
        "  Windows/Solaris), a middlebox rewriting windows or window scaling (shapers, IPS,",
        "  load balancers), Linux <= 2.6.13 on this host (false reports, fixed in 2.6.14), or",
        "  a Linux >= 6.5 peer with net.ipv4.tcp_shrink_window=1. Not an attack by itself;",
        "  worry only if one peer holds many connections stalled (slow-read denial of service).",
        "  Details: `treason explain '<line>'`; compare with a capture: `treason match`.",
    ]
    return text


JSON_FIELDS = (
    "time",
    "uptime",
    "host",
    "peer",
    "peer_raw",
    "peer_port",
    "local_port",
    "service",
    "x",
    "y",
    "outstanding",
    "wording",
    "kernels",
    "repeats",
    "recv_ms",
    "lasting_ms",
    "file",
    "line",
    "format",
    "raw",
)


def render_json(lines: Iterable[LogLine]) -> str:
    """JSON Lines: one object per matched line."""
    return "".join(json.dumps(ln.to_dict(), ensure_ascii=True) + "\n" for ln in lines)


def render_csv(lines: Iterable[LogLine]) -> str:
    """CSV, often read on a terminal: text from the log goes through ``safe`` as in the summary."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=JSON_FIELDS, lineterminator="\n")
    writer.writeheader()
    for ln in lines:
        writer.writerow(
            {
                k: "" if v is None else safe(v) if isinstance(v, str) else v
                for k, v in ln.to_dict().items()
            }
        )
    return buf.getvalue()


def render(scan: LogScan, fmt: str = "text", explain: bool = True) -> str:
    if fmt == "json":
        return render_json(scan.lines)
    if fmt == "csv":
        return render_csv(scan.lines)
    return render_text(summarise(scan.lines, scan.suppressed), explain=explain)
