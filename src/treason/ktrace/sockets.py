"""Per-socket right edges and zero-window stalls, from the kernel's own TCP state.

``tcp:tcp_probe`` fires when a segment reaches an established socket, *before* the kernel
processes it: each record shows the socket as the previous segment left it. Comparing a
socket's consecutive records therefore shows every accepted window update — the kernel's own
acceptance, not a reconstruction — one segment late: the accepted right edge
``snd_una + snd_wnd`` (``snd_wnd`` is already scaled) moving left is a shrink by the peer.

Classes are those of ``scan`` (``treason.events.Severity``). The peer's window shift is not
in the tracepoint; every scaled window is a multiple of ``2**shift``, so the largest shift
that divides every window seen so far bounds it (and equals it as soon as one odd raw window
was seen, i.e. almost at once). A retreat smaller than that bound may be RFC 7323 rounding and
is a ``retraction``; the event says ``scale_known: false``.

A zero window with data outstanding (``snd_wnd == 0``, ``snd_una < snd_nxt``) is the
condition of the kernel's own message, which its retransmission timer prints when it sends the
zero-window probe (``tcp_retransmit_timer``: the message, ``tcp_enter_loss``, then the head
segment retransmitted). The timer's firing is the ``tcp:tcp_cong_state_set`` record to the Loss
state; a retransmission alone is not enough, as a tail loss probe also retransmits, earlier and
without the message. The stall's event is reported then, with that time — or, when the window
reopens before the timer fires (the kernel then printed nothing), at the reopening, as ``scan``
reports it.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from treason import seq as sq
from treason.events import Certainty, Event, Severity

MAX_SHIFT = 14
AF_INET = 2
AF_INET6 = 10
SOURCE = "trace"


def sockaddr_text(raw: bytes) -> str:
    """The address in a ``struct sockaddr_in``/``sockaddr_in6`` as the tracepoint stores it."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[4:8]))
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw[8:24]))
    return "?"


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1


@dataclass(slots=True)
class Socket:
    cookie: int
    local: bytes
    peer: bytes
    lport: int
    pport: int
    snd_una: int
    snd_nxt: int
    snd_wnd: int
    last: int  # trace clock, ns
    followed: bool = True  # False: outside the address filter, only kept to be recognised
    shift: int = MAX_SHIFT  # bound on the peer's window shift (see module docstring)
    stalled: bool = False  # in a zero-window stall with data outstanding
    held: Event | None = None  # the stall's event, until the retransmission timer fires
    timer_fired: int | None = None  # trace clock of a timeout since the last record


class SocketTable:
    """Turns tracepoint records into events; ``emit`` receives each event once it is final.

    Times are the trace clock's nanoseconds; ``clock_offset_ns`` turns them into the Unix time
    events carry. ``emit`` gets every class, retractions included. ``accept(local, peer)``,
    when given, picks the sockets to follow by address (asked once per socket);
    ``addresses(where)`` gives a new socket's raw local and peer ``sockaddr`` (by default
    ``where`` is that pair). Sockets are forgotten when the kernel destroys them, when
    ``expire`` says they are idle, or — least recently seen first — beyond ``max_sockets``.
    """

    def __init__(
        self,
        emit: Callable[[Event], None],
        *,
        clock_offset_ns: int = 0,
        accept: Callable[[str, str], bool] | None = None,
        addresses: Callable[[Any], tuple[bytes, bytes]] = tuple,
        max_sockets: int = 1_000_000,
    ) -> None:
        self.emit = emit
        self.clock_offset_ns = clock_offset_ns
        self.accept = accept
        self.addresses = addresses
        self.max_sockets = max_sockets
        self.sockets: dict[int, Socket] = {}
        self.seen = 0  # sockets seen since the start
        self.evicted = 0

    def probe(
        self,
        ts: int,
        number: int,
        sock: int,
        cookie: int,
        lport: int,
        pport: int,
        snd_una: int,
        snd_nxt: int,
        snd_wnd: int,
        where: Any,
    ) -> None:
        """One ``tcp_probe`` record: socket ``sock`` as its previous segment left it.

        ``number`` counts records from 1 (the event's ``frame``). The raw ``sockaddr`` bytes
        of both ends are fetched with ``addresses(where)`` only for a socket not seen before:
        most records need none of them.
        """
        s = self.sockets.get(sock)
        if s is None or s.cookie != cookie or s.lport != lport or s.pport != pport:
            local, peer = self.addresses(where)
            self._add(ts, sock, cookie, local, peer, lport, pport, snd_una, snd_nxt, snd_wnd)
            return
        if not s.followed:
            s.last = ts
            return
        old_edge = (s.snd_una + s.snd_wnd) & sq.MASK
        new_edge = (snd_una + snd_wnd) & sq.MASK
        s.snd_una, s.snd_nxt, s.snd_wnd, s.last = snd_una, snd_nxt, snd_wnd, ts
        fired, s.timer_fired = s.timer_fired, None
        if snd_wnd:
            if snd_wnd & ((1 << s.shift) - 1):
                s.shift = _trailing_zeros(snd_wnd)
        elif sq.before(snd_una, snd_nxt):
            if not s.stalled:
                self._stall(ts, number, s, old_edge, new_edge, fired)
            return
        if s.stalled:
            self._reopened(s)
        if old_edge == new_edge:
            return
        retreat = sq.diff(old_edge, new_edge)
        if retreat <= 0:
            return
        if retreat < 1 << s.shift:
            cls = Severity.RETRACTION
        elif sq.before(new_edge, snd_nxt):
            cls = Severity.BEYOND
        else:
            cls = Severity.SHRINK
        self.emit(self._event(ts, number, s, cls, old_edge, new_edge, retreat))

    def _stall(
        self,
        ts: int,
        number: int,
        s: Socket,
        old_edge: int,
        new_edge: int,
        fired: int | None,
    ) -> None:
        """A zero window with data outstanding begins: the kernel's message condition."""
        s.stalled = True
        retreat = max(0, sq.diff(old_edge, new_edge))
        event = self._event(ts, number, s, Severity.KERNEL, old_edge, new_edge, retreat)
        if fired is None:
            s.held = event  # the kernel prints when its retransmission timer fires
        else:
            event.time = self._wall(fired)
            self.emit(event)

    def _reopened(self, s: Socket) -> None:
        """The stall is over; its event, if still held, is final (the kernel printed nothing)."""
        s.stalled = False
        if s.held is not None:
            self.emit(s.held)  # reopened before the timer fired
            s.held = None

    def timer(self, ts: int, sock: int) -> None:
        """The retransmission timer fired: in a stall, the zero-window probe, where the kernel
        logs its message (``tcp_cong_state_set`` to Loss, or ``tcp_retransmit_skb`` where the
        kernel lacks that tracepoint)."""
        s = self.sockets.get(sock)
        if s is None:
            return
        if s.held is not None:
            s.held.time = self._wall(ts)
            self.emit(s.held)
            s.held = None
        elif s.timer_fired is None:
            s.timer_fired = ts

    def destroy(self, sock: int) -> None:
        """``tcp_destroy_sock``: the socket is gone; a held stall event is final."""
        s = self.sockets.pop(sock, None)
        if s is not None and s.held is not None:
            self.emit(s.held)

    def expire(self, limit: int) -> None:
        """Forget the sockets last seen before trace clock ``limit`` (held events are final)."""
        for sock in [k for k, s in self.sockets.items() if s.last < limit]:
            self.destroy(sock)
            self.evicted += 1

    def flush(self) -> None:
        """Tracing stops: every held event is final."""
        for s in self.sockets.values():
            if s.held is not None:
                self.emit(s.held)
                s.held = None

    def _add(
        self,
        ts: int,
        sock: int,
        cookie: int,
        local: bytes,
        peer: bytes,
        lport: int,
        pport: int,
        snd_una: int,
        snd_nxt: int,
        snd_wnd: int,
    ) -> None:
        old = self.sockets.pop(sock, None)
        if old is not None and old.held is not None:
            self.emit(old.held)
        if len(self.sockets) >= self.max_sockets:
            # Rare (a cap far above the usual socket count): the least recently seen goes.
            self.destroy(min(self.sockets, key=lambda k: self.sockets[k].last))
            self.evicted += 1
        s = Socket(cookie, local, peer, lport, pport, snd_una, snd_nxt, snd_wnd, ts)
        if self.accept is not None:
            s.followed = self.accept(sockaddr_text(local), sockaddr_text(peer))
        # This first window may still be the handshake's, which is never scaled: it says
        # nothing about the shift.
        s.stalled = snd_wnd == 0 and sq.before(snd_una, snd_nxt)
        self.sockets[sock] = s
        self.seen += 1

    def _wall(self, ts: int) -> float:
        return (ts + self.clock_offset_ns) / 1e9

    def _event(
        self,
        ts: int,
        number: int,
        s: Socket,
        cls: Severity,
        old_edge: int,
        new_edge: int,
        retreat: int,
    ) -> Event:
        """The event for socket ``s`` (already updated to the new state)."""
        fields: EventFields = (
            int(cls),
            number,
            ts,
            s.local,
            s.peer,
            s.lport,
            s.pport,
            old_edge,
            new_edge,
            retreat,
            s.snd_una,
            s.snd_nxt,
            s.snd_wnd,
            s.shift,
        )
        return make_event(fields, self.clock_offset_ns)


#: What the compiled tracer (``treason._ktrace``) hands over for an event: class, record
#: number, trace clock, raw local and peer ``sockaddr``, local and peer port, old and new
#: right edge, bytes taken back, snd_una, snd_nxt, snd_wnd, window shift bound.
EventFields = tuple[int, int, int, bytes, bytes, int, int, int, int, int, int, int, int, int]


def make_event(f: EventFields, clock_offset_ns: int) -> Event:
    """The event record, from either implementation's fields."""
    (
        cls,
        number,
        ts,
        local,
        peer,
        lport,
        pport,
        old_edge,
        new_edge,
        retreat,
        una,
        nxt,
        wnd,
        shift,
    ) = f
    return Event(
        frame=number,
        time=(ts + clock_offset_ns) / 1e9,
        src=sockaddr_text(peer),
        sport=pport,
        dst=sockaddr_text(local),
        dport=lport,
        vlan=(),
        cls=Severity(cls),
        closing=False,
        certainty=Certainty.DEFINITE,
        old_edge=old_edge,
        new_edge=new_edge,
        shrink_bytes=retreat,
        beyond_bytes=max(0, sq.diff(nxt, new_edge)),
        snd_una=una,
        snd_nxt=nxt,
        ack=una,
        win=wnd >> shift,
        scale=shift,
        scale_known=False,
        file=SOURCE,
    )
