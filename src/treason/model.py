"""The reference model: how one TCP connection's senders see their peers' receive windows.

This is the readable definition of every rule in ``docs/model.md``. It is what ``explain`` and
``simulate`` run, what the tests check properties against, and the oracle the fast scanner
must agree with event for event. It favours clarity over speed.

Vocabulary (RFC 9293 / Linux): a segment travels from R (it *advertises* a window) to S (the
data sender whose TCB holds ``SND.UNA``, ``SND.NXT``, ``SND.WL1``, ``SND.WL2``, ``SND.WND``).
The **right edge** R offers is ``SEG.ACK + (SEG.WND << shift)``; S accepts a window update only
when ``SND.UNA <= SEG.ACK <= SND.NXT`` and ``SND.WL1 < SEG.SEQ`` or (``SND.WL1 == SEG.SEQ`` and
``SND.WL2 <= SEG.ACK``). An accepted update whose right edge lies before the previous accepted
one is an event. The model keeps each side's TCB as S would, inferred from what the capture
shows of both directions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from treason import seq as sq
from treason.decode import tunnel_names
from treason.engine.stats import ModelStats, ScanStats
from treason.events import Certainty, Event, Severity
from treason.packets import ACK, FIN, RST, SYN, Segment

#: RFC 7323 §2.3: shift counts above 14 are treated as 14.
MAX_SHIFT = 14
#: The largest window TCP can offer (RFC 7323): 65535 << 14.
MAX_WINDOW = 65535 << MAX_SHIFT
#: Bit s set: a window shift of s is still consistent with what the capture showed.
ALL_SHIFTS = (1 << (MAX_SHIFT + 1)) - 1
#: How long (capture time) a zero-window event stays open for data the sender had in flight:
#: Linux's minimum retransmission timeout, the earliest its sender can log the stall.
HOLD_NS = 200_000_000


class Side:
    """One endpoint: the data it sends (its TCB's send variables) and the window its peer offers.

    ``snd_wscale`` is the shift S applies to windows received from its peer, i.e. the peer's
    own window-scale option; ``None`` while it is unknown (handshake not seen).
    """

    __slots__ = (
        "addr",
        "feasible",
        "fin",
        "furthest",
        "held",
        "isn",
        "last_copy",
        "max_edge",
        "port",
        "shrink_counts",
        "snd_nxt",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "ts_recent",
        "ws_option",
    )

    def __init__(self, addr: str, port: int) -> None:
        self.addr = addr
        self.port = port
        self.isn: int | None = None
        self.ws_option: int | None = None  # WS option in this side's own SYN, capped
        self.fin = False
        self.snd_una: int | None = None
        self.snd_nxt: int | None = None
        self.snd_wl1: int | None = None
        self.snd_wl2: int | None = None
        self.snd_wnd: int | None = None  # raw (unscaled) SEG.WND of the last accepted update
        self.snd_wscale: int | None = None
        self.feasible = ALL_SHIFTS
        self.max_edge: list[int] | None = None  # per shift, furthest edge offered (scale unknown)
        self.shrink_counts: list[int] | None = None  # per shift, shrinks it would imply
        self.ts_recent: int | None = None  # TSval of the last accepted update from the peer
        self.held: Event | None = None  # open zero-window event (see FlowTable)
        # furthest right edge ever offered to this side (under shift 14 while the scale is
        # unknown): no real ACK can acknowledge data past it
        self.furthest: int | None = None
        self.last_copy: tuple[object, ...] | None = None

    def edge(self, shift: int) -> int:
        """The right edge of the last accepted update, under ``shift``."""
        assert self.snd_wl2 is not None and self.snd_wnd is not None
        return sq.add(self.snd_wl2, self.snd_wnd << shift)


class Connection:
    """Both directions of one TCP connection, fed its segments in capture order."""

    def __init__(self, first: Segment, stats: ModelStats) -> None:
        self.a = Side(first.src, first.sport)
        self.b = Side(first.dst, first.dport)
        self.stats = stats
        self.syn_frame = 0  # frame of the SYN that put the client in SYN-SENT
        self.client: Side | None = None  # sender of the SYN, when seen
        self.syn_seen = False
        self.synack_seen = False
        self.established = False  # handshake completed, or capture began mid-connection
        self.reset = False
        self.last_active = 0  # the flow table's clock when this connection last saw a segment

    @property
    def handshake_seen(self) -> bool:
        return self.syn_seen and self.synack_seen

    def answers_syn(self, seg: Segment) -> bool:
        """Whether ``seg`` is the SYN-ACK to this connection's SYN, the client still in SYN-SENT."""
        client = self.client
        return (
            self.syn_seen
            and not self.synack_seen
            and not self.established
            and client is not None
            and client.isn is not None
            and (seg.dst, seg.dport) == (client.addr, client.port)
            and seg.ack == sq.add(client.isn, 1)
        )

    def sides(self, seg: Segment) -> tuple[Side, Side]:
        """(sender of ``seg``, its peer)."""
        if seg.src == self.a.addr and seg.sport == self.a.port:
            return self.a, self.b
        return self.b, self.a

    def reusable_by(self, seg: Segment) -> bool:
        """Whether a bare SYN starts a new connection on this 4-tuple (port reuse).

        Only after the old one ended (RST, or FIN both ways), or before it ever completed a
        handshake with another ISN; a SYN in a live connection never resets its scales.
        """
        if self.reset or (self.a.fin and self.b.fin):
            return True
        if not self.established and self.client is not None:
            return seg.seq != self.client.isn
        return False

    # -- per segment -------------------------------------------------------------------------

    def process(self, seg: Segment) -> Event | None:
        sender, peer = self.sides(seg)
        copy = (seg.ip_id, seg.checksum, seg.seq, seg.ack, seg.win, seg.flags, seg.payload_len)
        if copy == sender.last_copy:
            self.stats.duplicates += 1
            return None
        sender.last_copy = copy
        flags = seg.flags
        if flags & RST:
            self.reset = True
            self.stats.resets += 1
            return None
        if flags & SYN:
            self._syn(seg, sender, peer)
            return None
        if not self.established and self.client is not None and sender is not self.client:
            # The client is in SYN-SENT, where anything but a SYN-ACK (or RST) is dropped
            # (RFC 9293 §3.10.7.3): a stray FIN/ACK must not stand in for the SYN-ACK.
            self.stats.stray_acks += 1
            return None
        self._sent(seg, sender, peer)
        if flags & ACK:
            return self._window_update(seg, sender, peer)
        return None

    def _syn(self, seg: Segment, sender: Side, peer: Side) -> None:
        ws = None if seg.ws is None else min(seg.ws, MAX_SHIFT)
        end = sq.add(seg.seq, 1 + seg.payload_len)
        if not seg.flags & ACK:
            if self.syn_seen or self.established:
                self.stats.ignored_syns += 1
                return
            self.syn_seen = True
            self.syn_frame = seg.frame
            self.client = sender
            sender.isn, sender.ws_option = seg.seq, ws
            sender.snd_una, sender.snd_nxt = seg.seq, end
            return
        # SYN-ACK
        if self.synack_seen or self.established or sender is self.client:
            self.stats.ignored_syns += 1
            return
        client = self.client
        if client is not None and client.isn is not None and seg.ack != sq.add(client.isn, 1):
            self.stats.ignored_syns += 1  # answers some other SYN
            return
        self.synack_seen = True
        self.established = True
        self.client = peer
        sender.isn, sender.ws_option = seg.seq, ws
        sender.snd_una, sender.snd_nxt = seg.seq, end
        # The client takes SND.UNA, SND.WL1, SND.WL2 from the SYN-ACK (RFC 9293 §3.10.7.3) but
        # a SYN's window is never scaled and never a baseline.
        peer.snd_una = seg.ack
        if peer.snd_nxt is None or sq.before(peer.snd_nxt, seg.ack):
            peer.snd_nxt = seg.ack
        peer.snd_wl1, peer.snd_wl2 = seg.seq, seg.ack
        if client is None:
            # SYN not captured. A SYN-ACK carries WS only if the SYN did (RFC 7323 §1.3), so
            # the server's shift is known; the client's stays unknown unless scaling is off.
            peer.snd_wscale = ws
            sender.snd_wscale = 0 if ws is None else None
        elif ws is not None and client.ws_option is not None:
            peer.snd_wscale = ws
            sender.snd_wscale = client.ws_option
        else:
            peer.snd_wscale = sender.snd_wscale = 0

    def _sent(self, seg: Segment, sender: Side, peer: Side) -> None:
        """Track the sender's SND.NXT; zero-window probes and keep-alives never advance it."""
        if seg.flags & FIN:
            sender.fin = True
        end = sq.add(seg.seq, seg.payload_len + (1 if seg.flags & FIN else 0))
        if sender.snd_nxt is None:
            sender.snd_nxt = end
            return
        if not sq.after(end, sender.snd_nxt):
            return
        una = sender.snd_una
        if una is not None and seg.seq == sq.add(una, -1) and seg.payload_len <= 1:
            return  # probe or keep-alive: seq = SND.UNA - 1
        if sender.snd_wscale is None and sender.max_edge is not None:
            self._rule_out_shifts(sender, sq.add(seg.seq, seg.payload_len))
        sender.snd_nxt = end
        if sender.held is not None:
            self._in_flight(sender.held, end)

    @staticmethod
    def _in_flight(event: Event, snd_nxt: int) -> None:
        """New data after a zero window was in flight before the sender saw that window.

        A sender never puts new data into a zero window, so whatever the capture shows it
        sending while the window is still closed left before the zero-window ACK reached it
        (the capture point saw the ACK first). It counts toward Y, the sender's SND.NXT, and
        makes the stall one Linux logs.
        """
        event.snd_nxt = snd_nxt
        event.beyond_bytes = max(0, sq.diff(snd_nxt, event.new_edge))
        if sq.before(event.snd_una, snd_nxt):
            event.cls = Severity.KERNEL
            event.certainty = Certainty.DEFINITE

    def _rule_out_shifts(self, sender: Side, data_end: int) -> None:
        """New data past the furthest edge offered under shift s proves s is not the scale.

        Senders never send new data beyond the window; this narrows "possible" events when
        the handshake was not captured. If every shift would be ruled out the sender overran
        the window outright, which says nothing about the scale.
        """
        assert sender.max_edge is not None
        feasible = sender.feasible
        for s in range(MAX_SHIFT + 1):
            if feasible >> s & 1 and sq.after(data_end, sender.max_edge[s]):
                feasible &= ~(1 << s)
        if feasible:
            sender.feasible = feasible
        else:
            self.stats.window_overruns += 1

    def _window_update(self, seg: Segment, r: Side, s: Side) -> Event | None:
        """``r`` advertises a window to ``s``: apply S's acceptance test, then compare edges."""
        if not self.established:
            # The capture began mid-connection, or the client acknowledges (process() lets
            # only the client through here): it left SYN-SENT, the SYN-ACK was not captured.
            self.established = True
            if self.client is not None:
                r.snd_wscale = s.snd_wscale = 0 if self.client.ws_option is None else None
        ack = seg.ack
        if s.snd_una is not None and sq.before(ack, s.snd_una):
            self.stats.old_acks += 1
            return None
        if (
            s.furthest is not None
            and sq.after(ack, s.furthest)
            and (s.snd_nxt is None or sq.after(ack, s.snd_nxt))
        ):
            # Data past every edge ever offered was never sent: the ACK is corrupt, not a
            # sign of data the capture missed, and must not move SND.UNA.
            self.stats.impossible_acks += 1
            return None
        if s.snd_una is None or sq.after(ack, s.snd_una):
            s.snd_una = ack
        if s.snd_nxt is None or sq.before(s.snd_nxt, ack):
            if s.snd_nxt is not None:
                self.stats.unseen_acks += 1
            s.snd_nxt = ack
        wl1, wl2 = s.snd_wl1, s.snd_wl2  # set together
        if (
            wl1 is not None
            and wl2 is not None
            and not (sq.before(wl1, seg.seq) or (wl1 == seg.seq and not sq.before(ack, wl2)))
        ):
            self.stats.stale_updates += 1
            return None
        if seg.tsval is not None:
            # PAWS (RFC 7323 §5): an update stamped before the last accepted one was overtaken
            # on the way; without timestamps a reordered pure window update is undetectable.
            if s.ts_recent is not None and sq.before(seg.tsval, s.ts_recent):
                self.stats.paws_rejects += 1
                return None
            s.ts_recent = seg.tsval
        event = self._compare(seg, r, s) if s.snd_wnd is not None else None
        if seg.win:
            s.held = None  # the window reopened: a held zero-window event is final
        elif event is not None:
            s.held = event
        s.snd_wl1, s.snd_wl2, s.snd_wnd = seg.seq, ack, seg.win
        edge = s.edge(MAX_SHIFT if s.snd_wscale is None else s.snd_wscale)
        # An ACK of seen data can pass the furthest edge (a sender overrunning the window):
        # the edge is then measured from there on, so serial comparisons stay within range.
        if s.furthest is None or sq.after(edge, s.furthest) or sq.before(s.furthest, ack):
            s.furthest = edge
        if s.snd_wscale is None:
            if s.max_edge is None:
                s.max_edge = [s.edge(k) for k in range(MAX_SHIFT + 1)]
                s.shrink_counts = [0] * (MAX_SHIFT + 1)
            else:
                for k in range(MAX_SHIFT + 1):
                    e = s.edge(k)
                    if sq.after(e, s.max_edge[k]):
                        s.max_edge[k] = e
        return event

    # -- classification ----------------------------------------------------------------------

    def _classify(self, seg: Segment, s: Side, shift: int) -> tuple[Severity | None, bool]:
        """The class of this update under ``shift``, and whether it is a full shrink there.

        A zero window with data outstanding is ``KERNEL`` even when the edge moved back by less
        than the granularity: Linux on the sender logs it all the same.
        """
        new_edge = sq.add(seg.ack, seg.win << shift)
        retreat = sq.diff(s.edge(shift), new_edge)
        if retreat <= 0:
            return None, False
        assert s.snd_una is not None and s.snd_nxt is not None
        full = retreat >= 1 << shift
        if seg.win == 0 and sq.before(s.snd_una, s.snd_nxt):
            return Severity.KERNEL, full
        if not full:
            return Severity.RETRACTION, False
        if sq.before(new_edge, s.snd_nxt):
            return Severity.BEYOND, True
        return Severity.SHRINK, True

    def _compare(self, seg: Segment, r: Side, s: Side) -> Event | None:
        if s.snd_wscale is not None:
            shift = s.snd_wscale
            cls, _ = self._classify(seg, s, shift)
            if cls is None:
                return None
            certainty = Certainty.DEFINITE
        else:
            found = self._infer(seg, s)
            if found is None:
                return None
            cls, shift, certainty = found
        return self._event(seg, r, s, shift, cls, certainty)

    def _infer(self, seg: Segment, s: Side) -> tuple[Severity, int, Certainty] | None:
        """Judge an update when the handshake (and so the scale) was not captured.

        Every shift not ruled out by the sender's data (``feasible``) is a hypothesis. A
        well-behaved receiver never shrinks under its true shift, so each full shrink a shift
        would imply counts against it, and only the shifts with the fewest (the *plausible*
        ones) are judged, this update included. Without that, every ordinary ACK of an unscaled
        connection would look like a shrink under larger shifts. The event is reported under
        the smallest plausible shift that makes it one: ``definite`` when all plausible shifts
        agree, ``possible`` when only some do. A zero window with data outstanding is judged
        without the scale (see below).
        """
        counts = s.shrink_counts
        assert counts is not None
        classes: dict[int, Severity | None] = {}
        for k in range(MAX_SHIFT + 1):
            if s.feasible >> k & 1:
                cls, full = self._classify(seg, s, k)
                classes[k] = cls
                if full:
                    counts[k] += 1
        assert s.snd_una is not None and s.snd_nxt is not None
        if seg.win == 0 and sq.before(s.snd_una, s.snd_nxt):
            # A zero window is scale independent: Linux on the sender logs it whatever the
            # shift, so it is definite as soon as any shift sees the edge move back.
            moved = [k for k, c in classes.items() if c is not None]
            return (Severity.KERNEL, moved[0], Certainty.DEFINITE) if moved else None
        fewest = min(counts[k] for k in classes)
        plausible = [k for k in classes if counts[k] == fewest]
        hits = [k for k in plausible if (classes[k] or 0) >= Severity.SHRINK]
        if not hits:
            hits = [k for k in plausible if classes[k] is not None]
        if not hits:
            return None
        cls = classes[hits[0]]
        assert cls is not None
        certainty = Certainty.DEFINITE if len(hits) == len(plausible) else Certainty.POSSIBLE
        return cls, hits[0], certainty

    def _event(
        self, seg: Segment, r: Side, s: Side, shift: int, cls: Severity, certainty: Certainty
    ) -> Event:
        assert s.snd_una is not None and s.snd_nxt is not None
        old_edge = s.edge(shift)
        new_edge = sq.add(seg.ack, seg.win << shift)
        beyond = max(0, sq.diff(s.snd_nxt, new_edge))
        path = seg.key_path
        # No event takes back more than the receiver could ever have offered.
        assert 0 < sq.diff(old_edge, new_edge) <= MAX_WINDOW, (seg.frame, old_edge, new_edge)
        assert s.furthest is not None and not sq.after(old_edge, s.furthest), seg.frame
        return Event(
            frame=seg.frame,
            time=seg.ts_ns / 1e9,
            src=r.addr,
            sport=r.port,
            dst=s.addr,
            dport=s.port,
            vlan=tuple(tag for tag in path if tag < 1 << 32),
            cls=cls,
            closing=self.a.fin or self.b.fin,
            certainty=certainty,
            old_edge=old_edge,
            new_edge=new_edge,
            shrink_bytes=sq.diff(old_edge, new_edge),
            beyond_bytes=beyond,
            snd_una=s.snd_una,
            snd_nxt=s.snd_nxt,
            ack=seg.ack,
            win=seg.win,
            scale=shift,
            scale_known=s.snd_wscale is not None,
            tunnel=tunnel_names(path) if seg.path else (),
            outer=seg.outer,
        )


#: A flow key: the tag path, then both endpoints (address, port), lower first.
FlowKey = tuple[tuple[int, ...], tuple[str, int], tuple[str, int]]
Endpoints = tuple[tuple[str, int], tuple[str, int]]


@dataclass
class FlowTable:
    """Connections by flow key, with the idle timeout and cap the scanners share.

    Eviction is deterministic so every engine evicts the same flows at the same packet: the
    clock is the latest timestamp seen; before each segment, flows idle longer than
    ``idle_timeout`` are evicted oldest first, and a new flow that would exceed ``max_flows``
    evicts the least recently active one. An evicted flow that resumes starts afresh, as if
    the capture had begun mid-connection.

    The key holds the tag path (VLAN ids, tunnel identifiers): the same packets on two VLANs
    are two copies, never one connection. A SYN-ACK that matches no key is tried against the
    connections of the same 4-tuple on other paths whose client is still in SYN-SENT and whose
    SYN it acknowledges (the latest such SYN): the two directions of one connection can carry
    different tags (a router on a stick, client on VLAN 81, server on VLAN 80; GTP-U's two
    TEIDs; MPLS labels per direction), and the handshake pairing up proves they are one
    connection. The SYN-ACK's path then leads to that connection too (``_alias``). Copies on
    several VLANs never pair this way, because each copy's SYN-ACK matches its own key first.

    Events leave in frame order once final. An event that closes the window to zero stays
    open while the window stays closed, for at most ``HOLD_NS`` of capture time, because data
    the sender had in flight can be captured just after the zero-window ACK
    (``Connection._in_flight``); events after it wait behind it.
    """

    max_flows: int = 500_000
    idle_timeout_ns: int = 600 * 10**9
    stats: ScanStats = field(default_factory=ScanStats)

    def __post_init__(self) -> None:
        self._conns: dict[FlowKey, Connection] = {}
        self._now = 0
        self._queue: deque[Event] = deque()  # events not yet released, in frame order
        self._due: deque[tuple[int, Event]] = deque()  # (deadline, event), in deadline order
        self._holder: dict[int, Side] = {}  # id(event) -> the side holding it open
        self._alias: dict[FlowKey, Connection] = {}  # a second direction's key -> connection
        self._pending: dict[Endpoints, list[Connection]] = {}  # 4-tuple -> SYN-SENT clients
        self._keys: dict[int, tuple[FlowKey, FlowKey | None]] = {}  # id(conn) -> (key, alias)

    def __len__(self) -> int:
        return len(self._conns)

    @staticmethod
    def key(seg: Segment) -> FlowKey:
        a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
        path = seg.key_path
        return (path, a, b) if a <= b else (path, b, a)

    def flow_key(self, seg: Segment) -> FlowKey:
        """The key of the connection ``seg`` belongs to: a paired connection has one for both
        directions (its first path's), as the compiled scanner's flow marks have."""
        key = self.key(seg)
        conn = self._alias.get(key)
        return key if conn is None else self._keys[id(conn)][0]

    def process(self, seg: Segment, clock: int | None = None) -> tuple[Event | None, list[Event]]:
        """Feed one segment: the event it makes (maybe still open) and the events now final.

        ``clock`` is the table's clock at this segment when the segment was split out of a
        capture analysed elsewhere (``treason.engine.segrec``); by default its own time.
        """
        now = seg.ts_ns if clock is None else clock
        if now > self._now:
            self._now = now
        self._close_due(self._now)
        self._expire()
        key = self.key(seg)
        conns = self._conns
        conn = conns.pop(key, None)  # re-inserted below: dict order is recency order
        if conn is None:
            conn = self._alias.get(key)
            if conn is None and seg.flags & (SYN | ACK) == SYN | ACK:
                conn = self._pair(key, seg)
            if conn is not None:
                key = self._keys[id(conn)][0]
                del conns[key]
        if conn is None:
            if len(conns) >= self.max_flows:
                oldest = conns.pop(next(iter(conns)))
                self._forget(oldest)
                self._drop(oldest)
                self.stats.evicted_cap += 1
            conn = Connection(seg, self.stats.model)
            self._keys[id(conn)] = (key, None)
            self.stats.flows += 1
        elif seg.flags & (SYN | ACK) == SYN and conn.reusable_by(seg):
            conn = self._reuse(conn, seg)
        was_seen = conn.handshake_seen
        event = conn.process(seg)
        conn.last_active = self._now
        if conn.handshake_seen and not was_seen:
            self.stats.handshakes += 1
        if conn.syn_frame == seg.frame and conn.syn_seen and not conn.handshake_seen:
            self._pend(key, conn)
        conns[key] = conn
        if event is not None:
            self._queue.append(event)
            holder = conn.b if event.dport == conn.b.port and event.dst == conn.b.addr else conn.a
            if holder.held is event:
                self._holder[id(event)] = holder
                self._due.append((self._now + HOLD_NS, event))
        return event, self._release()

    def _pair(self, key: FlowKey, seg: Segment) -> Connection | None:
        """The connection on another path whose SYN this SYN-ACK answers (latest SYN first)."""
        found = None
        for conn in self._pending.get(key[1:], ()):
            unpaired = self._keys[id(conn)][1] is None
            if (
                unpaired
                and conn.answers_syn(seg)
                and (found is None or conn.syn_frame > found.syn_frame)
            ):
                found = conn
        if found is not None:
            self._alias[key] = found
            self._keys[id(found)] = (self._keys[id(found)][0], key)
        return found

    def _pend(self, key: FlowKey, conn: Connection) -> None:
        """A client just entered SYN-SENT: its SYN-ACK may come on another path."""
        pending = self._pending.setdefault(key[1:], [])
        if conn not in pending:
            pending.append(conn)

    def _reuse(self, old: Connection, seg: Segment) -> Connection:
        """A new connection on a finished one's 4-tuple: it takes over the old one's keys."""
        self._drop(old)
        conn = Connection(seg, self.stats.model)
        self.stats.flows += 1
        self._keys[id(conn)] = self._keys.pop(id(old))
        alias = self._keys[id(conn)][1]
        if alias is not None:
            self._alias[alias] = conn
        pending = self._pending.get(self._keys[id(conn)][0][1:], [])
        if old in pending:
            pending[pending.index(old)] = conn
        return conn

    def _forget(self, conn: Connection) -> None:
        """A connection leaves the table: its alias and SYN-SENT entries go with it."""
        key, alias = self._keys.pop(id(conn))
        if alias is not None:
            del self._alias[alias]
        pending = self._pending.get(key[1:])
        if pending is not None and conn in pending:
            pending.remove(conn)
            if not pending:
                del self._pending[key[1:]]

    def advance(self, now_ns: int) -> list[Event]:
        """Let the clock reach ``now_ns`` without a packet (live capture on a quiet link)."""
        self._close_due(now_ns)
        return self._release()

    def tick(self, clock: int) -> list[Event]:
        """The table's clock reaches ``clock`` through a segment analysed elsewhere (another
        bucket of a split capture): open events due are final and idle flows are evicted, as
        that segment would have done here."""
        if clock > self._now:
            self._now = clock
        self._close_due(self._now)
        self._expire()
        return self._release()

    def flush(self) -> list[Event]:
        """End of the capture: every open event is final."""
        for holder in self._holder.values():
            holder.held = None
        self._due.clear()
        return self._release()

    def _close_due(self, now: int) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, event = due.popleft()
            holder = self._holder.get(id(event))
            if holder is not None and holder.held is event:
                holder.held = None

    def _release(self) -> list[Event]:
        queue, holders, out = self._queue, self._holder, []
        while queue:
            event = queue[0]
            holder = holders.get(id(event))
            if holder is not None:
                if holder.held is event:
                    break  # still open: later events wait behind it
                del holders[id(event)]
            out.append(queue.popleft())
        return out

    @staticmethod
    def _drop(conn: Connection) -> None:
        conn.a.held = conn.b.held = None  # a flow that ends has nothing more in flight

    def _expire(self) -> None:
        limit = self._now - self.idle_timeout_ns
        conns = self._conns
        while conns:
            key = next(iter(conns))
            if conns[key].last_active >= limit:
                break
            self._forget(conns[key])
            self._drop(conns.pop(key))
            self.stats.evicted_idle += 1
