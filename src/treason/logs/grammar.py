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
from functools import lru_cache

#: What people put in place of an address or port they hide before pasting a report:
#: ``XXX.XX.XX.XXX``, ``x.x.x.x``, ``203.0.113.xxx``, ``<ip>``, ``[redacted]``.
_HIDDEN = r"<[A-Za-z][\w -]{0,19}>|\[[A-Za-z][\w -]{0,19}\]|(?i:redacted|hidden)"
#: An address as the kernel prints it: dotted IPv4, or IPv6 (uncompressed from %pI6; other
#: spellings accepted too), or one of the redactions above. Bounded so hostile input cannot
#: make the regex backtrack for long.
_ADDR = r"(?P<addr>[0-9A-Fa-fXx*#:.]{2,45}|" + _HIDDEN + ")"
_PORT = r"\d{1,5}|[Xx*#]{1,5}|" + _HIDDEN
_ENDPOINT = _ADDR + r":(?P<pport>" + _PORT + r")/(?P<lport>" + _PORT + ")"
_SEQ = r"(?P<x>\d{1,10}):(?P<y>\d{1,10})"

#: Optional dynamic-debug decoration (``+ptmfl``): thread id, then module/function/line
#: names; only names from the TCP code, so an application tag is never taken for it.
_DYNDBG = r"(?:\[\d{1,10}\] )?(?:(?:[\w.]*(?:tcp|ipv4|ipv6)[\w.]*|\d{1,6}):)*\s?"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "2.4.0",
        re.compile(
            r"TCP: ?peer " + _ENDPOINT + r" shrinks window "
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
    ``peer`` is normalised (v4-mapped IPv6 shown as IPv4); ``peer_raw`` is as printed. A
    report whose address the person who pasted it hid (``XXX.XX.XX.XXX``, ``<ip>``) has
    ``peer`` None and ``peer_raw`` the redaction; a hidden port is None. Nothing is guessed.
    """

    wording: str
    peer: str | None
    peer_raw: str
    peer_port: int | None
    local_port: int | None
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
    def redacted(self) -> bool:
        """True when the address was hidden before the line reached us."""
        return self.peer is None

    @property
    def peer_text(self) -> str:
        """The peer for people: the address, or the redaction as it was pasted."""
        return self.peer if self.peer is not None else f"{self.peer_raw} (redacted)"

    @property
    def connection(self) -> tuple[str, int | None, int | None]:
        """(peer, peer port, local port); a redacted peer is keyed by its redaction."""
        return (self.peer or self.peer_raw, self.peer_port, self.local_port)


@dataclass(frozen=True, slots=True)
class Marker:
    """A rate-limit or repeat marker: up to ``count`` more messages were not printed."""

    kind: str
    count: int


@lru_cache(maxsize=4096)
def normalise_peer(addr: str) -> str | None:
    """The peer as users know it: v4-mapped IPv6 as IPv4; ``None`` if not an address.
    Cached: a big log names the same few peers thousands of times."""
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


def _port(text: str) -> int | None:
    """A printed port; None when hidden; -1 when no port (beyond 16 bits)."""
    if not text.isdigit():
        return None
    port = int(text)
    return port if port <= 0xFFFF else -1


def _build(key: str, m: re.Match[str]) -> Shrink | None:
    raw = m["addr"]
    peer = normalise_peer(raw)
    if peer is None and not _redacted(raw):
        return None  # neither an address nor a redaction: not what a kernel printed
    pport, lport, x, y = _port(m["pport"]), _port(m["lport"]), int(m["x"]), int(m["y"])
    if pport == -1 or lport == -1 or x > U32 or y > U32:
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
        peer_raw=raw,
        peer_port=pport,
        local_port=lport,
        x=x,
        y=y,
        wnd=wnd,
        recv_ms=_int(groups.get("recv")),
        lasting_ms=_int(groups.get("lasting")),
    )


#: A redacted address: hex digits, separators and at least one placeholder, or a word.
_REDACTED_RE = re.compile(r"(?=.*[Xx*#])[0-9A-Fa-fXx*#:.]{2,45}|" + _HIDDEN)


def _redacted(addr: str) -> bool:
    return _REDACTED_RE.fullmatch(addr) is not None


#: The words every wording is built around; a kernel line holding one of them and no report
#: is "almost a report" and is shown as such rather than passed over in silence.
_KEYWORDS = re.compile(
    r"uncloaked|shrinks window|unexpectedly shrunk|shrunk window|Probing zero-window"
)
#: Words of the wordings, never more than 60 characters apart: however a mail client (at
#: spaces or hyphens) or a terminal (inside words, 60 columns or more) broke a report, one
#: of its pieces holds one of them (``treason.logs.unwrap``). Specific enough that lines of
#: other programs seldom hold one (each such line costs a parse).
_PIECES = re.compile(
    r"uncloaked|shrinks|shrunk|epaired|what else|Probing zero|zero-window|, seq=|ms ago, lasting"
)


def has_piece_words(text: str) -> bool:
    """True when ``text`` holds a word of a wording: a piece of a report broken over lines
    holds one."""
    return _PIECES.search(text) is not None


_LOOSE_NUMBERS = re.compile(r"(?:Peer|peer|on) (\S+?):(\S+?)/(\S+?)[ ,].*?(\d+):(\d+)")


def near_miss(message: str) -> str | None:
    """Why a kernel message that carries a wording's key words is still not a report, or None
    when it is not close to one (or is a report)."""
    text = message.strip()
    if len(text) > 400 or not _KEYWORDS.search(text) or parse_shrink(text) is not None:
        return None
    loose = _LOOSE_NUMBERS.search(text)
    if loose is not None:
        addr, pport, lport, x, y = loose.groups()
        if normalise_peer(addr) is None and not _redacted(addr):
            return f"{addr[:48]!r} is not an address"
        for name, value, bits in (("port", pport, 16), ("port", lport, 16)):
            if value.isdigit() and int(value) >> bits:
                return f"{name} {value} does not fit {bits} bits"
        for value in (x, y):
            if int(value) > U32:
                return f"sequence number {value} does not fit 32 bits"
    return "the words of a kernel wording, but cut short or altered (no kernel printed it so)"


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
