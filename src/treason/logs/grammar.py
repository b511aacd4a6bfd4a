"""The message grammar: which kernel messages report a peer shrinking its window.

Every wording Linux ever printed (``treason.kernel.WORDINGS``) is recognised in full, anchored
at both ends of the message, so that look-alikes (conntrack's ``SEQ is over the upper bound``,
iptables ``WINDOW=0``, ``tcp_parse_options: Illegal window scaling``, or an application quoting
the joke in its own log) never match. Numbers the kernel prints with ``%u`` must fit their
field (ports 16 bits, sequence numbers 32 bits); a line that breaks that was not written by a
kernel and is not matched.

Rate-limit and repeat markers are parsed separately: they say that *up to* N more messages
were dropped, never exactly which.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

#: An address as the kernel prints it: dotted IPv4, or IPv6 (uncompressed from %pI6; other
#: spellings accepted too). Bounded so hostile input cannot make the regex backtrack for long.
_ADDR = r"(?P<addr>[0-9A-Fa-f:.]{2,45})"
_ENDPOINT = _ADDR + r":(?P<pport>\d{1,5})/(?P<lport>\d{1,5})"
_SEQ = r"(?P<x>\d{1,10}):(?P<y>\d{1,10})"

#: Optional dynamic-debug decoration (``+ptmfl``): thread id, then module/function/line
#: names; only names from the TCP code, so an application tag is never taken for it.
_DYNDBG = r"(?:\[\d{1,10}\] )?(?:(?:[\w.]*(?:tcp|ipv4|ipv6)[\w.]*|\d{1,6}):)*\s?"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "2.4.0",
        re.compile(
            r"TCP: ?peer " + _ADDR + r":(?P<pport>\d{1,5})/(?P<lport>\d{1,5}) shrinks window "
            r"(?P<x>\d{1,10}):(?P<wnd>\d{1,10}):(?P<y>\d{1,10})\. Bad, what else can I say\?"
        ),
    ),
    (
        "2.4.17",
        re.compile(
            r"(?:TCP: ?)?Treason uncloaked! Peer "
            + _ENDPOINT
            + r" shrinks window "
            + _SEQ
            + r"\. Repaired\."
        ),
    ),
    (
        "shrunk",
        re.compile(
            r"(?P<prefix>(?:MP)?TCP: ?)?Peer "
            + _ENDPOINT
            + r" unexpectedly shrunk window "
            + _SEQ
            + r" \(repaired\)"
        ),
    ),
    (
        "6.6",
        re.compile(
            r"(?:TCP: ?)?Probing zero-window on "
            + _ENDPOINT
            + r", seq="
            + _SEQ
            + r", recv (?P<recv>\d{1,12}|\?)ms ago, lasting (?P<lasting>\d{1,12}|\?)ms"
        ),
    ),
)
_DYNDBG_RE = re.compile(_DYNDBG)

_MARKERS = (
    ("net_ratelimit", re.compile(r"net_ratelimit: (?P<n>\d{1,12}) callbacks suppressed")),
    ("NET", re.compile(r"NET: (?P<n>\d{1,12}) messages? suppressed\.?")),
    ("repeated", re.compile(r"last message repeated (?P<n>\d{1,12}) times?")),
    # The generic printk rate limiter (pr_*_ratelimited / net_dbg_ratelimited on newer kernels).
    ("ratelimit", re.compile(r"[\w.]{1,64}: (?P<n>\d{1,12}) callbacks suppressed")),
)

U32 = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class Shrink:
    """One kernel report of a stalled connection: peer ``A:P`` shrank, local port ``L``.

    ``x`` is the local ``snd_una`` and ``y`` ``snd_nxt``: sequence numbers, not window sizes.
    ``peer`` is normalised (v4-mapped IPv6 shown as IPv4); ``peer_raw`` is as printed.
    """

    wording: str
    peer: str
    peer_raw: str
    peer_port: int
    local_port: int
    x: int
    y: int
    wnd: int | None = None
    recv_ms: int | None = None
    lasting_ms: int | None = None

    @property
    def outstanding(self) -> int:
        """Bytes sent but not acknowledged (``Y - X`` modulo 2**32; a FIN counts 1)."""
        return (self.y - self.x) & U32

    @property
    def connection(self) -> tuple[str, int, int]:
        return (self.peer, self.peer_port, self.local_port)


@dataclass(frozen=True, slots=True)
class Marker:
    """A rate-limit or repeat marker: up to ``count`` more messages were not printed."""

    kind: str
    count: int


def normalise_peer(addr: str) -> str | None:
    """The peer as users know it: v4-mapped IPv6 as IPv4; ``None`` if not an address."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _int(value: str | None) -> int | None:
    return None if value is None or value == "?" else int(value)


def parse_shrink(message: str) -> Shrink | None:
    """The report in a kernel message (container and timestamps already removed), or None."""
    text = message.strip()
    if len(text) > 400 or ("Peer" not in text and "peer" not in text and "Probing" not in text):
        return None
    start = _DYNDBG_RE.match(text)
    candidates = [text]
    if start and start.end():
        candidates.append(text[start.end() :])
    for candidate in candidates:
        for key, pattern in _PATTERNS:
            m = pattern.fullmatch(candidate)
            if m is None:
                continue
            found = _build(key, m)
            if found is not None:
                return found
    return None


def _build(key: str, m: re.Match[str]) -> Shrink | None:
    peer = normalise_peer(m["addr"])
    if peer is None:
        return None
    pport, lport, x, y = int(m["pport"]), int(m["lport"]), int(m["x"]), int(m["y"])
    if pport > 0xFFFF or lport > 0xFFFF or x > U32 or y > U32:
        return None
    groups = m.groupdict()
    wnd = _int(groups.get("wnd"))
    if wnd is not None and wnd > U32:
        return None
    if key == "shrunk":
        prefix = (groups.get("prefix") or "").replace(" ", "")
        key = {"MPTCP:": "mptcp", "TCP:": "2.6.29"}.get(prefix, "3.13")
    return Shrink(
        wording=key,
        peer=peer,
        peer_raw=m["addr"],
        peer_port=pport,
        local_port=lport,
        x=x,
        y=y,
        wnd=wnd,
        recv_ms=_int(groups.get("recv")),
        lasting_ms=_int(groups.get("lasting")),
    )


def parse_marker(message: str) -> Marker | None:
    """A rate-limit or repeat marker in a message, or None."""
    text = message.strip()
    if len(text) > 200:
        return None
    for kind, pattern in _MARKERS:
        m = pattern.fullmatch(text)
        if m:
            return Marker(kind, int(m["n"]))
    return None
