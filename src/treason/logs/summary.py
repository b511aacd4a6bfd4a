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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from treason.kernel import BY_KEY
from treason.logs import LogLine, LogScan, NearMiss
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
        """Reports of this stall; a logwatch ``N Time(s):`` line is N of them."""
        return sum(ln.count for ln in self.lines)

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
class ReportedConnection:
    """A connection as the log names it: (peer, peer port, local port) on one host. Not the
    model's connection: the log knows neither the local address nor the handshake."""

    host: str | None
    peer: str
    peer_port: int | None
    local_port: int | None
    episodes: dict[int, Episode] = field(default_factory=dict)

    @property
    def lines(self) -> list[LogLine]:
        return [ln for ep in self.episodes.values() for ln in ep.lines]

    @property
    def count(self) -> int:
        return sum(ep.count for ep in self.episodes.values())

    @property
    def redacted(self) -> bool:
        return self.lines[0].shrink.redacted


@dataclass
class HostSummary:
    host: str | None
    connections: dict[tuple[str, int | None, int | None], ReportedConnection] = field(
        default_factory=dict
    )
    suppressed: int = 0

    @property
    def lines(self) -> list[LogLine]:
        return [ln for c in self.connections.values() for ln in c.lines]

    @property
    def count(self) -> int:
        return sum(c.count for c in self.connections.values())

    def eras(self) -> list[str]:
        seen: list[str] = []
        for ln in self.lines:
            if ln.shrink.wording not in seen:
                seen.append(ln.shrink.wording)
        return seen


def summarise(
    lines: Iterable[LogLine], suppressed: dict[str | None, int] | None = None
) -> list[HostSummary]:
    """Group reports by host, connection and stall episode, in order of first appearance."""
    hosts: dict[str | None, HostSummary] = {}
    for ln in lines:
        h = hosts.setdefault(ln.host, HostSummary(ln.host))
        key = ln.shrink.connection
        conn = h.connections.setdefault(key, ReportedConnection(ln.host, *key))
        conn.episodes.setdefault(ln.shrink.x, Episode(ln.shrink.x)).lines.append(ln)
    for host, n in (suppressed or {}).items():
        if host in hosts:
            hosts[host].suppressed += n
    return list(hosts.values())


def _extent(h: HostSummary, episodes: int) -> str:
    """How many connections, stall episodes and peers the reports show.

    Reports whose addresses were redacted cannot be told apart by connection or peer: they are
    never counted as one, only said to come from an unknown number of them.
    """
    named = [c for c in h.connections.values() if not c.redacted]
    hidden = len(named) < len(h.connections)
    conns = f"{len(named)} connection(s)" if named or not hidden else ""
    peers = f"{len({c.peer for c in named})} peer(s)" if named or not hidden else ""
    if hidden:
        unknown = "an unknown number of connections and peers (addresses redacted)"
        conns = f"{conns} plus {unknown}" if conns else unknown
        return f"{episodes} stall episode(s), {conns}" + (f", {peers} named" if peers else "")
    return f"{conns}, {episodes} stall episode(s), {peers}"


def _when(ln: LogLine) -> str:
    if ln.time_text:
        return ln.time_text
    if ln.record.uptime is not None:
        return f"{ln.record.uptime:.6f}s after boot"
    return "time unknown"


def _port(port: int | None) -> str:
    if port is None:
        return "(redacted)"
    name = service_name(port)
    return f"{port} ({name})" if name else str(port)


def _peer(conn: ReportedConnection) -> str:
    text = safe(conn.peer)
    return f"{text} (address redacted in the log)" if conn.redacted else text


def _era(key: str) -> str:
    return f"Linux {BY_KEY[key].kernels}"


def _span(lines: list[LogLine]) -> str:
    first, last = _when(lines[0]), _when(lines[-1])
    return first if first == last else f"{first} .. {last}"


#: Entries each list shows by logwatch detail level: Low (0-4) the top 10, Med (5-9) the
#: top 50, High (10) all of them. The rest is one "... and N more" line.
def entries_shown(detail: int) -> int | None:
    if detail >= 10:
        return None
    return 10 if detail < 5 else 50


T = TypeVar("T")


def _top(items: list[T], limit: int | None, weight: Callable[[T], int]) -> tuple[list[T], int]:
    """The ``limit`` heaviest items (ties in order of appearance) and how many were left out."""
    if limit is None or len(items) <= limit:
        return items, 0
    ranked = sorted(range(len(items)), key=lambda i: -weight(items[i]))[:limit]
    return [items[i] for i in sorted(ranked)], len(items) - limit


def _more(n: int, what: str) -> list[str]:
    return [f"      … and {n} more {what} (all of them: --detail 10)"] if n else []


def render_text(
    hosts: list[HostSummary],
    explain: bool = True,
    detail: int = 0,
    near_misses: Sequence[NearMiss] = (),
    unread: int = 0,
) -> str:
    """The human summary. Every string that came from the log goes through ``safe``. Long
    lists show their top entries (by reports) and how many more there are; ``detail`` 10
    shows everything. ``unread`` files failed to read (to the end): "none found" then says
    it covers only what was read, so the summary alone is never a false all-clear."""
    out: list[str] = []
    limit = entries_shown(detail)
    if not hosts:
        out.append("No window-shrink reports found.")
    if unread:
        out.append(
            f"Only what could be read was searched: {unread} file(s) could not be read "
            "(to the end); see the error."
        )
    for h in hosts:
        lines = h.lines
        n_ep = sum(len(c.episodes) for c in h.connections.values())
        name = safe(h.host) if h.host else "(this machine / no host name in the log)"
        out.append(f"Host {name}: {h.count} report(s), {_extent(h, n_ep)}")
        out.append(f"  kernel era (from the wording): {', '.join(_era(k) for k in h.eras())}")
        out.append(f"  seen {_span(sorted(lines, key=_sort_key))}")
        if h.suppressed:
            out.append(
                f"  rate limiting hid up to {h.suppressed} more kernel network message(s) "
                "(some may be more of these)"
            )
        out.append("")
        out.append("  Per peer (the remote receiver that closed its window):")
        by_peer: dict[str, list[ReportedConnection]] = {}
        for c in h.connections.values():
            by_peer.setdefault(c.peer, []).append(c)
        groups, more = _top(list(by_peer.values()), limit, lambda cs: sum(c.count for c in cs))
        for conns in groups:
            plines = sorted((ln for c in conns for ln in c.lines), key=_sort_key)
            ports = sorted({c.local_port for c in conns}, key=lambda p: -1 if p is None else p)
            how_many = "unknown" if conns[0].redacted else str(len(conns))
            out.append(
                f"    {_peer(conns[0])}: {sum(c.count for c in conns)} report(s), "
                f"{how_many} connection(s), local port(s) "
                f"{', '.join(_port(p) for p in ports)}; {_span(plines)}"
            )
        out.extend(_more(more, "peer(s)"))
        out.append("  Per local port (your service that was sending):")
        by_port: dict[int | None, list[ReportedConnection]] = {}
        for c in h.connections.values():
            by_port.setdefault(c.local_port, []).append(c)
        ordered = sorted(by_port.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
        port_groups, more = _top(ordered, limit, lambda kv: sum(c.count for c in kv[1]))
        for port, conns in port_groups:
            n = sum(c.count for c in conns)
            some_redacted = any(c.redacted for c in conns)
            npeers = "an unknown number of" if some_redacted else len({c.peer for c in conns})
            out.append(f"    {_port(port)}: {n} report(s) from {npeers} peer(s)")
        out.extend(_more(more, "local port(s)"))
        out.append("  Per connection and stall episode (X = first unacknowledged byte):")
        conns_shown, more = _top(list(h.connections.values()), limit, lambda c: c.count)
        for c in conns_shown:
            pport = "?" if c.peer_port is None else c.peer_port
            hidden = (
                " (redacted in the log: one connection or several)"
                if c.redacted or c.peer_port is None or c.local_port is None
                else ""
            )
            out.append(
                f"    {safe(c.peer)}:{pport} -> local {_port(c.local_port)}{hidden}: "
                f"{len(c.episodes)} episode(s)"
            )
            episodes, ep_more = _top(list(c.episodes.values()), limit, lambda e: e.count)
            for ep in episodes:
                out.append(_episode(ep))
            if ep_more:
                out.append(f"      … and {ep_more} more episode(s) (all of them: --detail 10)")
        out.extend(_more(more, "connection(s)"))
        out.append("")
    out.extend(_near_miss_lines(near_misses, limit))
    if explain and hosts:
        out.extend(_explanation(hosts))
    return "\n".join(out).rstrip("\n") + "\n"


def _episode(ep: Episode) -> str:
    ys = "/".join(str(y) for y in ep.ys)
    more = f", up to {ep.up_to_more} more (repeat markers)" if ep.up_to_more else ""
    rep = ""
    if ep.count > 1:
        rep = ": one stall, probed again and again"
        if ep.backed_off:
            rep += " at backed-off intervals"
    return (
        f"      X={ep.x} Y={ys}: {ep.outstanding} byte(s) outstanding, "
        f"{ep.count} report(s){rep}{more}; {_span(ep.lines)}"
    )


def _near_miss_lines(near: Sequence[NearMiss], limit: int | None) -> list[str]:
    """Kernel lines that are almost a report: said, so a cut or altered line is not lost."""
    if not near:
        return []
    out = [f"Almost a report ({len(near)} line(s) with a wording's words that are not one):"]
    shown = near if limit is None else near[:limit]
    for nm in shown:
        r = nm.record
        out.append(f"  {safe(r.source)}:{r.lineno}: {nm.reason}")
        out.append(f"    {safe(r.raw.rstrip())[:300]}")
    if len(near) > len(shown):
        out.append(f"  … and {len(near) - len(shown)} more (all of them: --detail 10)")
    out.append("")
    return out


def render_logwatch(scan: LogScan, detail: int = 0) -> str:
    """The logwatch service section. Short below Detail 5 (the counts, the top peers, the
    explanation once); from Detail 5 the full summary and, as the stock kernel service did,
    every distinct line as ``N Time(s): <line>``. Empty when there is nothing to say."""
    if not scan.lines and not scan.near_misses:
        return ""
    hosts = summarise(scan.lines, scan.suppressed)
    if detail >= 5:
        text = render_text(hosts, explain=True, detail=detail, near_misses=scan.near_misses)
        counts: dict[str, int] = {}
        for ln in scan.lines:
            message = safe(ln.record.message.strip())
            counts[message] = counts.get(message, 0) + ln.count
        raw = [f"{n} Time(s): {message}" for message, n in sorted(counts.items())]
        return text + "\nThe kernel's lines:\n" + "\n".join(raw) + "\n"
    out: list[str] = []
    for h in hosts:
        name = safe(h.host) if h.host else "this machine"
        peers: dict[str, int] = {}
        for c in h.connections.values():
            peers[_peer(c)] = peers.get(_peer(c), 0) + c.count
        n_ep = sum(len(c.episodes) for c in h.connections.values())
        out.append(
            f"{name}: {h.count} report(s), {_extent(h, n_ep)} "
            f"({', '.join(_era(k) for k in h.eras())})"
        )
        top, more = _top(list(peers.items()), 5, lambda kv: kv[1])
        out.extend(f"   {peer}: {n} report(s)" for peer, n in top)
        if more:
            out.append(f"   … and {more} more peer(s) (Detail 5 and above lists them)")
    if scan.near_misses:
        out.append(f"{len(scan.near_misses)} line(s) almost a report (Detail 5 lists them)")
    if hosts:
        out.append("")
        out.extend(_explanation(hosts))
    return "\n".join(out).rstrip("\n") + "\n"


def _sort_key(ln: LogLine) -> tuple[bool, float, str, int]:
    t = ln.seconds
    return (t is None, t or 0.0, ln.record.source, ln.record.lineno)


def _explanation(hosts: list[HostSummary]) -> list[str]:
    ones = all(ln.shrink.outstanding == 1 for h in hosts for ln in h.lines)
    hidden = any(ln.shrink.redacted for h in hosts for ln in h.lines)
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
    if hidden:
        text.append("  Addresses or ports hidden before the log reached treason are shown as")
        text.append("  redacted: X:Y, the wording and the kernel era still say what happened.")
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
    "count",
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


def render(
    scan: LogScan, fmt: str = "text", explain: bool = True, detail: int = 0, unread: int = 0
) -> str:
    if fmt == "json":
        return render_json(scan.lines)
    if fmt == "csv":
        return render_csv(scan.lines)
    hosts = summarise(scan.lines, scan.suppressed)
    return render_text(
        hosts, explain=explain, detail=detail, near_misses=scan.near_misses, unread=unread
    )
