"""How the Linux kernel words its window-shrink messages, in every era.

One table, shared by the capture side (which renders the line Linux on the sender would have
printed for an event, so users can grep their logs for it) and the log side (whose grammar
recognises the same wordings). Each era names the kernels that printed it;
see ``docs/logs.md``.

In every wording ``A:P`` is the remote receiver that shrank its window, ``L`` the local port
of the data sender that printed the line, ``X`` its ``snd_una`` and ``Y`` its ``snd_nxt``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Wording:
    key: str
    kernels: str
    template: str
    printed: str

    def render(self, **fields: object) -> str:
        return self.template.format(**fields)


#: The eras, oldest first. Templates use ``{peer}`` (kernel-formatted address), ``{pport}``,
#: ``{lport}``, ``{x}`` (snd_una), ``{y}`` (snd_nxt), and era-specific extras.
WORDINGS: tuple[Wording, ...] = (
    Wording(
        "2.4.0",
        "2.4.0 (ACK path, different rule)",
        "TCP: peer {peer}:{pport}/{lport} shrinks window {x}:{wnd}:{y}. Bad, what else can I say?",
        "on the ACK that left snd_una + snd_wnd before snd_nxt (debug builds)",
    ),
    Wording(
        "2.4.17",
        "2.4.17 – 2.6.28",
        "TCP: Treason uncloaked! Peer {peer}:{pport}/{lport} shrinks window {x}:{y}. Repaired.",
        "when the retransmission timer fires with a zero send window",
    ),
    Wording(
        "2.6.29",
        "2.6.29 – 3.12",
        "TCP: Peer {peer}:{pport}/{lport} unexpectedly shrunk window {x}:{y} (repaired)",
        "when the retransmission timer fires with a zero send window",
    ),
    Wording(
        "3.13",
        "3.13 – 6.5",
        "Peer {peer}:{pport}/{lport} unexpectedly shrunk window {x}:{y} (repaired)",
        "when the retransmission timer fires with a zero send window (debug-only from 3.19)",
    ),
    Wording(
        "6.6",
        "6.6 and later",
        "Probing zero-window on {peer}:{pport}/{lport}, seq={x}:{y}, "
        "recv {recv_ms}ms ago, lasting {lasting_ms}ms",
        "at each zero-window probe from the retransmission timer (debug-only)",
    ),
    Wording(
        "mptcp",
        "out-of-tree MPTCP kernels",
        "MPTCP: Peer {peer}:{pport}/{lport} unexpectedly shrunk window {x}:{y} (repaired)",
        "as 2.6.29 – 6.5, from the MPTCP subflow code",
    ),
)

BY_KEY: dict[str, Wording] = {w.key: w for w in WORDINGS}

#: The wording an event's ``kernel_line`` field carries: the last one Linux printed by default.
DEFAULT_WORDING = "3.13"


def kernel_addr(addr: str) -> str:
    """Format an address as the kernel's ``%pI4``/``%pI6`` do: IPv6 fully uncompressed."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return str(ip)
    return ip.exploded


def kernel_lines(
    peer: str,
    pport: int,
    lport: int,
    snd_una: int,
    snd_nxt: int,
    snd_wnd: int = 0,
    recv_ms: int | None = None,
    lasting_ms: int | None = None,
) -> dict[str, str]:
    """The line each kernel era would print for this stalled connection, keyed by era.

    The 6.6+ wording reports timer ages that only the sending host knows; where they are not
    given they are shown as ``?`` rather than invented.
    """
    fields = {
        "peer": kernel_addr(peer),
        "pport": pport,
        "lport": lport,
        "x": snd_una,
        "y": snd_nxt,
        "wnd": snd_wnd,
        "recv_ms": "?" if recv_ms is None else recv_ms,
        "lasting_ms": "?" if lasting_ms is None else lasting_ms,
    }
    return {w.key: w.render(**fields) for w in WORDINGS}
