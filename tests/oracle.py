"""Right edges computed from tshark's fields: the independent oracle for window shrinks.

tshark decodes the capture; this module applies only the textbook rules to its absolute
numbers: ``RE = SEG.ACK + (SEG.WND << shift)`` modulo 2**32, the shift taken from the
receiver's own SYN when both SYNs carried window scale, and the RFC 9293 §3.10.7.4 test for
which segments update the window. It shares no code with treason.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, replace

MOD = 1 << 32
#: How long data the sender is seen sending into a zero window still counts as having been in
#: flight when the window closed: Linux's minimum RTO, the earliest it can log the stall.
IN_FLIGHT = 0.2

FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.window_size_value",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "tcp.flags.fin",
    "tcp.flags.reset",
    "tcp.options.wscale.shift",
    "tcp.len",
)


def before(a: int, b: int) -> bool:
    """Serial-number order (RFC 1982 style): ``a`` precedes ``b`` modulo 2**32."""
    return (a - b) % MOD >= 1 << 31


@dataclass(frozen=True)
class EdgeUpdate:
    """One accepted window update of receiver ``src`` towards data sender ``dst``."""

    frame: int
    src: str
    sport: int
    dst: str
    dport: int
    ack: int
    win: int
    scale: int
    edge: int
    prev_edge: int | None  # the right edge of the previous accepted update, if any
    #: Highest sequence number the data sender had sent, plus one, when this update was seen.
    sender_nxt: int | None = None

    @property
    def retreat(self) -> int:
        """How far the right edge moved left (0 when it did not)."""
        if self.prev_edge is None or not before(self.edge, self.prev_edge):
            return 0
        return (self.prev_edge - self.edge) % MOD

    @property
    def is_shrink(self) -> bool:
        """A retreat of at least the scale granularity: more than RFC 7323 rounding."""
        return self.retreat >= 1 << self.scale


def _flag(value: str) -> bool:
    return value in ("1", "True", "true")


def tshark_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """tshark's TCP fields for every TCP frame of ``path`` (absolute sequence numbers)."""
    argv = ["tshark", "-n", "-r", os.fspath(path), "-Y", "tcp", "-T", "fields"]
    for f in FIELDS:
        argv += ["-e", f]
    argv += ["-o", "tcp.relative_sequence_numbers:FALSE"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]


@dataclass
class _Side:
    syn_scale: int | None = None  # WS in this endpoint's SYN; None when absent
    syn_seen: bool = False
    snd_nxt: int | None = None  # highest sequence number this endpoint has sent, plus one
    wl1: int | None = None  # SND.WL1 / SND.WL2 of the peer that reads our windows
    wl2: int | None = None
    edge: int | None = None


def right_edges(path: str | os.PathLike) -> list[EdgeUpdate]:
    """Every accepted window update in ``path`` with the right edge it advertises.

    Only flows whose handshake is in the capture are followed (the oracle does not guess
    scales). RST segments and segments before the handshake completes carry no window.

    A zero window stays open until the receiver's next accepted update, a FIN or RST, or
    ``IN_FLIGHT`` seconds: new data the sender is seen sending meanwhile was sent before it
    saw the zero window (a tap near the sender records the ACK first), so ``sender_nxt``
    covers it (docs/model.md, "Data in flight at a zero window").
    """
    sides: dict[tuple[str, int, str, int], _Side] = {}
    updates: list[EdgeUpdate] = []
    # Open zero windows by the data sender's flow: (index in updates, time of the ACK).
    open_zero: dict[tuple[str, int, str, int], tuple[int, float]] = {}
    for row in tshark_rows(path):
        src = row["ip.src"] or row["ipv6.src"]
        dst = row["ip.dst"] or row["ipv6.dst"]
        if not src or not row["tcp.seq_raw"]:
            continue
        sport, dport = int(row["tcp.srcport"]), int(row["tcp.dstport"])
        me = sides.setdefault((src, sport, dst, dport), _Side())
        peer = sides.setdefault((dst, dport, src, sport), _Side())
        seq = int(row["tcp.seq_raw"])
        length = int(row["tcp.len"] or 0)
        syn, fin = _flag(row["tcp.flags.syn"]), _flag(row["tcp.flags.fin"])
        end = (seq + length + syn + fin) % MOD
        if me.snd_nxt is None or before(me.snd_nxt, end):
            me.snd_nxt = end
        now = float(row["frame.time_epoch"])
        key, back = (src, sport, dst, dport), (dst, dport, src, sport)
        if _flag(row["tcp.flags.reset"]) or fin:
            open_zero.pop(key, None)
            open_zero.pop(back, None)
        held = open_zero.get(key)
        if held is not None:
            index, since = held
            if now - since > IN_FLIGHT:
                del open_zero[key]
            else:
                updates[index] = replace(updates[index], sender_nxt=me.snd_nxt)
        if syn:
            me.syn_seen = True
            shift = row["tcp.options.wscale.shift"]
            me.syn_scale = min(int(shift), 14) if shift else None
            continue  # SYN windows are never scaled and never a baseline
        if _flag(row["tcp.flags.reset"]) or not _flag(row["tcp.flags.ack"]):
            continue
        if not (me.syn_seen and peer.syn_seen):
            continue
        ack, win = int(row["tcp.ack_raw"]), int(row["tcp.window_size_value"])
        # SND.UNA <= SEG.ACK <= SND.NXT, where SND.UNA is the last accepted ACK.
        if peer.snd_nxt is not None and before(peer.snd_nxt, ack):
            continue
        if me.wl2 is not None and before(ack, me.wl2):
            continue
        if me.wl1 is not None and not (
            before(me.wl1, seq) or (me.wl1 == seq and not before(ack, me.wl2))
        ):
            continue
        both_scale = me.syn_scale is not None and peer.syn_scale is not None
        scale = me.syn_scale if both_scale else 0
        edge = (ack + (win << scale)) % MOD
        updates.append(
            EdgeUpdate(
                int(row["frame.number"]),
                src,
                sport,
                dst,
                dport,
                ack,
                win,
                scale,
                edge,
                me.edge,
                peer.snd_nxt,
            )
        )
        me.wl1, me.wl2, me.edge = seq, ack, edge
        open_zero.pop(back, None)  # the receiver's next update ends an open zero window
        if win == 0:
            open_zero[back] = (len(updates) - 1, now)
    return updates


def shrinks(path: str | os.PathLike) -> list[EdgeUpdate]:
    """The accepted updates that moved the right edge left by at least ``2**scale``."""
    return [u for u in right_edges(path) if u.is_shrink]


def kernel_visible(path: str | os.PathLike) -> list[EdgeUpdate]:
    """Zero windows that left data outstanding and moved the right edge left.

    Linux's condition for its "unexpectedly shrunk window X:Y" line: the sender's window is
    zero while ``snd_una`` (this ACK, X) is before ``snd_nxt`` (the highest sequence number
    sent so far plus one, Y).
    """
    return [
        u
        for u in right_edges(path)
        if u.win == 0 and u.sender_nxt is not None and before(u.ack, u.sender_nxt) and u.retreat
    ]
