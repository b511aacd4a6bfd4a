"""Plain-words explanations of a kernel window-shrink report, field by field.

The general explanation's worked example is computed by the reference model
(``treason.simulate.seed_example``), so what it says is what the detector does.
"""

from __future__ import annotations

import ipaddress
import re
import textwrap
from dataclasses import dataclass, field

from treason.kernel import BY_KEY
from treason.logs import LogLine, LogScan, scan_records
from treason.logs.formats import LineParser, Record, text_records
from treason.logs.grammar import Shrink, parse_shrink
from treason.logs.services import service_name
from treason.terminal import safe

#: Kernel lines that look related but are not window-shrink reports, and what they are.
LOOK_ALIKES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"SEQ is over the upper bound|ACK is over the upper bound|"
            r"SEQ is under the lower bound|ACK is under the lower bound"
        ),
        "a connection-tracking (nf_conntrack) message: the firewall saw a segment outside the "
        "window it tracks and may mark it INVALID. It is not the kernel accusing a peer of "
        "shrinking its window, though a middlebox that drops such packets can cause stalls.",
    ),
    (
        re.compile(r"\bWINDOW=0\b"),
        "a firewall (iptables/nftables LOG target) line: it logged a packet whose window field "
        "was 0. A zero window is legal flow control, not a shrink.",
    ),
    (
        re.compile(r"tcp_parse_options: Illegal window scaling"),
        "the kernel rejecting a window-scale option above 14 in a SYN (it caps it at 14). It "
        "concerns the handshake, not a shrinking window.",
    ),
)


_LETTERS = {
    "peer": "A",
    "pport": "P",
    "lport": "L",
    "x": "X",
    "y": "Y",
    "wnd": "W",
    "recv_ms": "N",
    "lasting_ms": "M",
}
_LOCAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


@dataclass
class Pasted:
    """What a pasted text holds: its reports (and near-misses), look-alikes, and lines in
    which an application, not the kernel, quotes a wording."""

    scan: LogScan = field(default_factory=LogScan)
    look_alikes: list[tuple[str, str]] = field(default_factory=list)
    quoted: list[Record] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.scan.lines or self.scan.near_misses or self.look_alikes or self.quoted)


def read_pasted(text: str, source: str = "<input>") -> Pasted:
    """Every line of a pasted text (a line, a log excerpt, a whole logwatch mail), read in any
    container the log readers know."""
    records: list[Record] = []
    pasted = Pasted()
    for record in text_records(LineParser(source), text.split("\n")):
        records.append(record)
        meaning = look_alike(record.message)
        if meaning is not None:
            pasted.look_alikes.append((record.raw.strip(), meaning))
        elif not record.kernel and parse_shrink(record.message) is not None:
            pasted.quoted.append(record)
    scan_records(records, pasted.scan)
    return pasted


def look_alike(line: str) -> str | None:
    for pattern, meaning in LOOK_ALIKES:
        if pattern.search(line):
            return meaning
    return None


def _peer_words(s: Shrink) -> str:
    port = "hidden" if s.peer_port is None else s.peer_port
    if s.peer is None:
        return (
            f"{safe(s.peer_raw)}, port {port}: the address was redacted before the line was "
            "pasted, so treason cannot say who it was (nothing is guessed)"
        )
    ip = ipaddress.ip_address(s.peer)
    words = f"{s.peer}, port {port}"
    if s.peer != s.peer_raw and ip.version == 4:
        words += f" (printed as the IPv4-mapped IPv6 address {safe(s.peer_raw)}: an IPv4 client"
        words += " on a dual-stack socket)"
    if any(ip in net for net in _LOCAL_NETS if net.version == ip.version):
        words += "; a local/private address, so the culprit is on your own network"
    return words


def explain_shrink(s: Shrink, record: Record | None = None) -> str:
    """Every field of one report in plain words, then what it means and what to do."""
    era = BY_KEY[s.wording]
    svc = service_name(s.local_port)
    local = "port (redacted)" if s.local_port is None else f"port {s.local_port}"
    local += f" ({svc})" if svc else ""
    out = s.outstanding
    lines = [
        f"Wording: Linux {era.kernels}; printed {era.printed}.",
        "",
        f"Who is remote:  {_peer_words(s)}. This is the RECEIVER that closed its window.",
        f"Local service:  {local} on the host that printed the line, which was SENDING data.",
    ]
    if record is not None and record.host:
        lines.append(f"Host:           {safe(record.host)}")
    if record is not None and (record.time or record.uptime is not None):
        when = record.time.isoformat() if record.time else f"{record.uptime}s after boot"
        lines.append(f"When:           {when}")
    lines += [
        f"X = {s.x}:  snd_una, the first byte the peer has not acknowledged (a sequence",
        "                number in this host's send direction, NOT a window size).",
        f"Y = {s.y}:  snd_nxt, the next sequence number this host would send.",
        f"Y - X = {out}:  bytes sent and still unacknowledged (a FIN counts 1).",
    ]
    if out == 1:
        lines.append(
            "                1 usually means a lone FIN (this side half-closed after sending"
        )
        lines.append(
            "                everything) or a single byte is waiting for the peer to read."
        )
    if s.wording == "2.4.0":
        lines.append(f"wnd = {s.wnd}:  the window the peer had just advertised; the 2.4.0 kernel")
        lines.append("                complained on the ACK itself (snd_una + wnd before snd_nxt).")
    if s.wording == "6.6":
        recv = "?" if s.recv_ms is None else f"{s.recv_ms} ms"
        lasting = "?" if s.lasting_ms is None else f"{s.lasting_ms} ms"
        lines.append(f"recv {recv} ago:  time since the peer last sent anything.")
        lines.append(f"lasting {lasting}:  how long this host has been probing the zero window.")
    lines += ["", *_what_happened(s.wording), "", *era_advice(s.wording), ""]
    lines += _advice([s])
    return "\n".join(lines) + "\n"


def _what_happened(wording: str) -> list[str]:
    give_up = "240 s" if wording == "6.6" else "120 s (240 s from Linux 6.6)"
    return [
        "What happened: the peer advertised a zero receive window while data was still in",
        "flight and the retransmission timer expired. Offering window and then taking it back",
        "is 'shrinking the window' (RFC 9293 3.8.6: a receiver SHOULD NOT; the sender MUST cope).",
        "What the kernel did ('repaired'): it treats the peer as a zero-window receiver and",
        "retransmits the first unacknowledged segment as a probe, at backed-off (doubling)",
        "timeouts; each probe may print this line again (rate-limited), with the same X.",
        f"When it gives up: after {give_up} without any ACK from the peer,",
        "the connection is reset (the application sees ETIMEDOUT). Any ACK from the peer",
        "resets the clock.",
    ]


def _advice(reports: list[Shrink]) -> list[str]:
    known = [s for s in reports if s.peer is not None and s.peer_port is not None]
    target = f"host {known[0].peer} and port {known[0].peer_port}" if known else "host PEER"
    return [
        "Likely causes: a peer TCP stack that misbehaves (printers, NAS boxes, P2P clients,",
        "old Windows/Solaris); a middlebox rewriting windows or the window-scale option",
        "(traffic shapers, IPS normalisers, load balancers); a Linux >= 6.5 peer with",
        "net.ipv4.tcp_shrink_window=1; Linux <= 2.6.13 on THIS host reported falsely (fixed",
        "in 2.6.14, commit 2ad41065d9fe).",
        "Should you worry: usually not. It is not an attack by itself; the kernel handled it.",
        "Worry if one peer keeps many connections stalled like this (slow-read denial of",
        "service) or if transfers to that peer hang.",
        f"What to do: capture the peer's traffic (tcpdump -w shrink.pcap {target}),",
        "then `treason scan shrink.pcap` and `treason match LOG shrink.pcap` to see the ACKs;",
        "check middleboxes between you and the peer; update the peer's firmware or stack.",
    ]


#: Whether each era's wording is still printed, by which kernels, and how.
_ERA_NOW = {
    "2.4.0": "Only Linux 2.4.0 printed this (on the ACK path, in debug builds); no kernel "
    "since has, and the rule it used is not the one later kernels report.",
    "2.4.17": "Kernels 2.4.17 to 2.6.28 printed this by default (KERN_DEBUG, rate limited). "
    "No kernel prints this wording today.",
    "2.6.29": "Kernels 2.6.29 to 3.12 printed this by default (rate limited). No kernel "
    "prints this wording today.",
    "3.13": "Kernels 3.13 to 3.18 printed this by default; from 3.19 it became a debug "
    "message (net_dbg_ratelimited), compiled out unless the kernel has dynamic debug and "
    "silent until it is turned on. Kernels 6.6 and later print 'Probing zero-window on ...' "
    "instead.",
    "6.6": "Today's kernels (6.6 and later) still have this message, but only as a debug "
    "message (net_dbg_ratelimited): compiled out unless the kernel has dynamic debug, and "
    "silent until it is turned on.",
    "mptcp": "Only out-of-tree MPTCP kernels printed this; mainline MPTCP does not.",
}


def era_advice(wording: str) -> list[str]:
    """For a report's kernel era: do today's kernels still print it, and how to get it back."""
    return [
        *textwrap.wrap(f"Kernel era ({BY_KEY[wording].kernels}): {_ERA_NOW[wording]}", 88),
        "To see these reports on a kernel of today, where it has dynamic debug",
        "(CONFIG_DYNAMIC_DEBUG, as most distribution kernels), as root:",
        "  echo 'file net/ipv4/tcp_timer.c +p' > /proc/dynamic_debug/control",
        '(or /sys/kernel/debug/dynamic_debug/control; at boot: dyndbg="file tcp_timer.c +p").',
        "They come at debug level, rate limited: dmesg shows them, syslog only if it keeps",
        "kern.debug. Without dynamic debug the message is compiled out: `treason trace`",
        "shows the kernel's own view of zero-window stalls (its TCP tracepoints) instead.",
    ]


def explain_pasted(pasted: Pasted) -> str:
    """Everything in a pasted text: one report explained field by field; several reports
    as one explanation of the model, then each distinct connection and stall in order."""
    out: list[str] = []
    lines = pasted.scan.lines
    stalls: dict[tuple[object, ...], list[LogLine]] = {}
    for ln in lines:
        stalls.setdefault((ln.host, *ln.shrink.connection, ln.shrink.x), []).append(ln)
    if len(stalls) == 1:
        first = lines[0]
        count = sum(ln.count for ln in lines)
        if count > 1:
            out.append(f"{count} reports of one stall (the kernel repeats it at each probe).\n")
        out.append(explain_shrink(first.shrink, first.record))
    elif stalls:
        out.append(explain_general().rstrip("\n"))
        out.append("")
        out.extend(_what_happened(lines[0].shrink.wording))
        out.append("")
        out.append(_stall_list(stalls))
        for key in dict.fromkeys(ln.shrink.wording for ln in lines):
            out.extend(era_advice(key))
            out.append("")
        out.extend(_advice([ln.shrink for ln in lines]))
        out.append("")
    out.extend(_others(pasted))
    return "\n".join(out).rstrip("\n") + "\n"


def _stall_list(stalls: dict[tuple[object, ...], list[LogLine]]) -> str:
    out = [f"Your input: {len(stalls)} distinct stall(s), in order:"]
    previous: tuple[object, ...] | None = None
    for key, group in stalls.items():
        s, rec = group[0].shrink, group[0].record
        if key[:4] != previous:
            previous = key[:4]
            host = f" on {safe(rec.host)}" if rec.host else ""
            svc = service_name(s.local_port)
            local = "(redacted)" if s.local_port is None else str(s.local_port)
            local += f" ({svc})" if svc else ""
            pport = "(redacted)" if s.peer_port is None else s.peer_port
            hidden = s.redacted or s.peer_port is None or s.local_port is None
            out.append(
                f"  {'Redacted reports' if hidden else 'Connection'}{host}: peer "
                f"{safe(s.peer_text)} port {pport}, local port {local}"
                f" (Linux {BY_KEY[s.wording].kernels})"
            )
            if hidden:
                out.append(
                    "    (one connection or several: the hidden addresses cannot tell them apart)"
                )
        count = sum(ln.count for ln in group)
        where = ", ".join(f"line {ln.record.lineno}" for ln in group[:5])
        where += ", ..." if len(group) > 5 else ""
        out.append(
            f"    stall at X={s.x} (snd_una), Y={s.y} (snd_nxt): {s.outstanding} byte(s) "
            f"sent and unacknowledged; {count} report(s) ({where})"
        )
    out.append("  A new X on one connection means it moved on and stalled again; one X reported")
    out.append("  many times is one stall probed again and again.")
    return "\n".join(out) + "\n"


def _others(pasted: Pasted) -> list[str]:
    """Look-alikes, application quotes and near-misses: said, never counted as reports."""
    out: list[str] = []
    for line, meaning in pasted.look_alikes:
        out.append(f"Not a window-shrink report: {safe(line)[:200]}")
        out.append(f"  This is {meaning}")
    for rec in pasted.quoted:
        out.append(
            f"Not the kernel: line {rec.lineno} was written by {safe(rec.program or '?')}, "
            "an application quoting the kernel's wording."
        )
    for nm in pasted.scan.near_misses:
        out.append(f"Almost a report (line {nm.record.lineno}): {nm.reason}")
        out.append(f"  {safe(nm.record.raw.strip())[:200]}")
    return out


def explain_general() -> str:
    """What the reports mean, with the seed's example as the reference model computes it."""
    lines = [
        "A TCP receiver advertises in every ACK how much more it will accept; the right edge",
        "of its window is ACK + window. A well-behaved receiver never moves that edge left.",
        "When it does, it 'shrinks the window': it takes back space it had offered.",
        "",
        "Worked example (window 1024), computed by treason's reference model:",
    ]
    try:
        from treason.simulate import seed_example
    except ImportError:  # the model is optional for this text
        steps = None
    else:
        steps = seed_example()
    if steps:
        lines.append(f"  {'ACK':>6} {'window':>6} {'right edge':>10}  verdict")
        previous = None
        for st in steps:
            if st.event is not None:
                ev = st.event
                verdict = f"{ev.cls.label}: edge moved back {ev.shrink_bytes} bytes"
            elif previous is None:
                verdict = "initial offer"
            else:
                verdict = "legal"
            lines.append(f"  {st.ack:>6} {st.win:>6} {st.right_edge:>10}  {verdict}")
            previous = st
        last = steps[-1]
        if last.event is not None:
            lines.append(f"  -> {last.description}")
    else:
        lines.append("  (the reference model is not available in this installation)")
    lines += [
        "",
        "Linux, on the SENDING side, notices when the retransmission timer fires while the",
        "peer's window is zero and data is outstanding, and logs (wording by kernel era):",
    ]
    for w in BY_KEY.values():
        lines.append(f"  {w.kernels}:")
        lines.append("    " + w.render(**_LETTERS))
    lines += [
        "A:P is the remote receiver, L your local port, X = snd_una and Y = snd_nxt",
        "(sequence numbers, not sizes; Y - X bytes were outstanding).",
        "",
        "From Linux 3.19 the message is debug-only (compiled out on most distribution",
        "kernels): a modern server logs nothing while a peer stalls its connections. There,",
        "`treason trace` (as root) reports each stall from the kernel's own TCP tracepoints,",
        "with the line your kernel would have printed.",
        "",
        "Paste one of your lines for a field-by-field explanation: treason explain '<line>'",
        "Summarise a whole log: treason logs /var/log/kern.log",
    ]
    return "\n".join(lines) + "\n"
