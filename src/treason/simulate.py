"""Run made-up conversations through the reference model.

``explain`` uses it to compute the seed's worked example instead of typing it in, and
``treason simulate`` lets a user replay their own sequence of ACKs (e.g. numbers copied from
a capture) to see what the model says about each one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from treason import seq as sq
from treason.engine.stats import ModelStats
from treason.events import Event
from treason.model import Connection
from treason.packets import ACK, SYN, Segment

SENDER = ("192.0.2.1", 80)  # the data sender S (RFC 5737 documentation addresses)
RECEIVER = ("198.51.100.7", 40000)  # the receiver R whose window is followed


@dataclass(frozen=True)
class Step:
    """One ACK from the receiver: the window it offers and what the model made of it."""

    ack: int  # relative: bytes acknowledged so far
    win: int
    right_edge: int  # relative: ack + window
    description: str
    event: Event | None


class Conversation:
    """A connection with a captured handshake (no window scaling) between S and R.

    Numbers are relative to S's first data byte, as in the seed's example; underneath, S's
    initial sequence number is chosen so absolute numbers wrap past 2**32, as real ones do.
    """

    def __init__(self, window: int, isn: int = 0xFFFF_FF00) -> None:
        self.isn = isn
        self.stats = ModelStats()
        self._frame = 0
        self._r_seq = 1000
        self._sent = 0
        syn = self._segment(RECEIVER, SENDER, self._r_seq - 1, 0, SYN, window)
        self.conn = Connection(syn, self.stats)
        self.conn.process(syn)
        self.conn.process(self._segment(SENDER, RECEIVER, isn, self._r_seq, SYN | ACK, 65535))
        self.first_ack = self.ack(0, window)

    def _segment(
        self,
        src: tuple[str, int],
        dst: tuple[str, int],
        seq: int,
        ack: int,
        flags: int,
        win: int,
        length: int = 0,
    ) -> Segment:
        self._frame += 1
        return Segment(
            frame=self._frame,
            ts_ns=self._frame * 1_000_000,
            src=src[0],
            sport=src[1],
            dst=dst[0],
            dport=dst[1],
            seq=seq & sq.MASK,
            ack=ack & sq.MASK,
            flags=flags,
            win=win,
            payload_len=length,
            ip_id=self._frame,
        )

    def send(self, length: int) -> None:
        """S sends ``length`` new bytes."""
        seg = self._segment(
            SENDER, RECEIVER, self.isn + 1 + self._sent, self._r_seq, ACK, 65535, length
        )
        self._sent += length
        self.conn.process(seg)

    def ack(self, acked: int, win: int) -> Event | None:
        """R acknowledges ``acked`` bytes and offers ``win``; returns the model's event, if any."""
        seg = self._segment(RECEIVER, SENDER, self._r_seq, self.isn + 1 + acked, ACK, win)
        return self.conn.process(seg)

    def rel(self, absolute: int) -> int:
        return sq.diff(absolute, self.isn + 1)


def replay(window: int, acks: Iterable[tuple[int, int]]) -> list[Step]:
    """Replay ``(ack, win)`` pairs; S sends just enough to make each ACK acceptable."""
    conv = Conversation(window)
    steps = [Step(0, window, window, f"R offers {window} bytes", None)]
    for acked, win in acks:
        if acked > conv._sent:
            conv.send(acked - conv._sent)
        event = conv.ack(acked, win)
        edge = acked + win
        if event is None:
            text = f"R acknowledges {acked}, offers {win} more: right edge {edge}"
        else:
            text = (
                f"R acknowledges {acked}, offers {win} more: right edge {edge}, "
                f"{event.shrink_bytes} bytes before the previous edge {conv.rel(event.old_edge)}"
            )
        steps.append(Step(acked, win, edge, text, event))
    return steps


#: The seed's worked example (docs/model.md): the receiver offers 1024 bytes, then acknowledges
#: 500, 1024, 1824 and 1974 bytes with windows 524, 900, 300 and 100.
SEED_ACKS: Sequence[tuple[int, int]] = ((500, 524), (1024, 900), (1824, 300), (1974, 100))


def seed_example() -> list[Step]:
    """The seed's example as the reference model computes it: only the fifth ACK is flagged."""
    return replay(1024, SEED_ACKS)
