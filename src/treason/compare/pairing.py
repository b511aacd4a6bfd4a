"""Pair the packets two capture points both saw, streaming, in bounded memory.

Packets wait in a table by content key (``Packet.key``) until their twin arrives from the other
point. The clocks of the two capture machines may be minutes apart, so nothing is assumed about
time at first: the first pairs found give the offset (their median time difference), and from
then on a packet waits only ``window`` seconds of the other point's (offset-corrected) time
before it is declared unseen there. A hard cap on waiting packets bounds memory even before
the offset is known or when the captures do not overlap at all.

Flows are paired by the packets they share, never by addresses: the first pair between two
flows binds them (both directions), and a later content match between flows bound elsewhere is
refused, so that a chance collision of keys cannot pair packets of different connections. A
SYN binds afresh: a later connection on the same addresses and ports at one point may leave a
NAT with other ports than the last one did.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable

from treason.compare.fingerprint import DirKey, Packet
from treason.packets import SYN

NEAR, FAR = 0, 1

#: Pairs whose time differences fix the clock offset between the points.
OFFSET_SAMPLES = 16
#: Before the offset is known, every PROBE_EVERY-th packet given up keeps its key and time
#: (at most MAX_PROBES per point): when one capture starts long before the other, the other's
#: packets meet these probes and so give the offset, although their twins are gone.
PROBE_EVERY = 8
MAX_PROBES = 50_000


def reverse(key: DirKey) -> DirKey:
    src, sport, dst, dport, vlan = key
    return (dst, dport, src, sport, vlan)


class Matcher:
    """Feed packets of either point in capture order; ``on_pair``/``on_lost`` get the outcome.

    ``on_pair(near, far)`` is called once per paired packet, ``on_lost(packet)`` once for each
    packet the other point never showed within the window (or before the end).
    """

    def __init__(
        self,
        window_ns: int,
        max_pending: int,
        on_pair: Callable[[Packet, Packet], None],
        on_lost: Callable[[Packet], None],
    ) -> None:
        self.window_ns = window_ns
        self.max_pending = max_pending
        self.on_pair = on_pair
        self.on_lost = on_lost
        self.offset_ns: int | None = None  # far clock minus near clock
        self.flow_map: tuple[dict[DirKey, DirKey], dict[DirKey, DirKey]] = ({}, {})
        self.peak = 0  # most packets waiting at one point at once: the memory actually used
        self._pending: tuple[dict[tuple[object, ...], deque[Packet]], ...] = ({}, {})
        self._order: tuple[deque[Packet], deque[Packet]] = (deque(), deque())
        self._latest: list[int | None] = [None, None]
        self._samples: list[int] = []
        self._probes: tuple[dict[tuple[object, ...], int], ...] = ({}, {})
        self.blind = 0  # packets given up at the cap before the offset was known

    def near_time(self, pkt: Packet) -> int:
        """``pkt``'s capture time on the near point's clock (once the offset is known)."""
        if pkt.point == FAR and self.offset_ns is not None:
            return pkt.seg.ts_ns - self.offset_ns
        return pkt.seg.ts_ns

    def add(self, pkt: Packet) -> None:
        p, o = pkt.point, 1 - pkt.point
        latest = self._latest[p]
        if latest is None or pkt.seg.ts_ns > latest:
            self._latest[p] = pkt.seg.ts_ns
        key = pkt.key()
        waiting = self._pending[o].get(key)
        if waiting:
            for cand in waiting:
                if self._fits(pkt, cand):
                    waiting.remove(cand)
                    if not waiting:
                        del self._pending[o][key]
                    self._pair(pkt, cand)
                    break
            else:
                self._wait(pkt, key)
        else:
            if self.offset_ns is None:
                self._probe(pkt, key)
            self._wait(pkt, key)
        self._expire(o)
        self._expire(p)
        self.peak = max(self.peak, len(self._order[p]))

    def finish(self) -> None:
        """Both captures ended: whatever still waits was not seen at the other point."""
        for p in (NEAR, FAR):
            while self._order[p]:
                self._drop(self._order[p].popleft())

    def _wait(self, pkt: Packet, key: tuple[object, ...]) -> None:
        self._pending[pkt.point].setdefault(key, deque()).append(pkt)
        self._order[pkt.point].append(pkt)

    def _fits(self, pkt: Packet, cand: Packet) -> bool:
        if (
            self.offset_ns is not None
            and abs(self.near_time(pkt) - self.near_time(cand)) > self.window_ns
        ):
            return False
        if pkt.seg.flags & SYN:
            return True  # a new connection: its addresses may be reused behind another NAT port
        bound = self.flow_map[pkt.point].get(pkt.dirkey)
        if bound is not None and bound != cand.dirkey:
            return False
        bound = self.flow_map[cand.point].get(cand.dirkey)
        return bound is None or bound == pkt.dirkey

    def _pair(self, pkt: Packet, cand: Packet) -> None:
        pkt.matched = cand.matched = True
        pkt.other_frame, pkt.other_win = cand.seg.frame, cand.seg.win
        cand.other_frame, cand.other_win = pkt.seg.frame, pkt.seg.win
        # Only events need their twin later; keeping every pair linked would make each a
        # reference cycle that only the cyclic collector frees.
        if pkt.event:
            pkt.twin = cand
        if cand.event:
            cand.twin = pkt
        near, far = (pkt, cand) if pkt.point == NEAR else (cand, pkt)
        nk, fk = near.dirkey, far.dirkey
        if near.seg.flags & SYN or nk not in self.flow_map[NEAR]:
            self.flow_map[NEAR][nk], self.flow_map[NEAR][reverse(nk)] = fk, reverse(fk)
            self.flow_map[FAR][fk], self.flow_map[FAR][reverse(fk)] = nk, reverse(nk)
        if self.offset_ns is None:
            self._sample(far.seg.ts_ns - near.seg.ts_ns)
        self.on_pair(near, far)

    def _sample(self, far_minus_near: int) -> None:
        self._samples.append(far_minus_near)
        if len(self._samples) >= OFFSET_SAMPLES:
            self.offset_ns = int(statistics.median_low(self._samples))
            self._samples.clear()
            self._probes[NEAR].clear()
            self._probes[FAR].clear()

    def _probe(self, pkt: Packet, key: tuple[object, ...]) -> None:
        """A packet with no twin waiting: did its twin leave a probe?"""
        ts = self._probes[1 - pkt.point].pop(key, None)
        if ts is not None:
            self._sample(pkt.seg.ts_ns - ts if pkt.point == FAR else ts - pkt.seg.ts_ns)

    def _expire(self, p: int) -> None:
        """Give up on point ``p``'s oldest packets once the other point has moved past them."""
        order, o = self._order[p], 1 - p
        latest = self._latest[o]
        while order:
            head = order[0]
            if head.matched:
                order.popleft()
                continue
            if len(order) <= self.max_pending:
                if self.offset_ns is None or latest is None:
                    return
                other_now = latest - self.offset_ns if o == FAR else latest
                if other_now - self.near_time(head) <= self.window_ns:
                    return
            order.popleft()
            if self.offset_ns is None:
                self.blind += 1
                probes = self._probes[p]
                if self.blind % PROBE_EVERY == 0 and len(probes) < MAX_PROBES:
                    probes[head.key()] = head.seg.ts_ns
            self._drop(head)

    def _drop(self, pkt: Packet) -> None:
        if pkt.matched:
            return
        key = pkt.key()
        waiting = self._pending[pkt.point].get(key)
        if waiting is not None:
            waiting.remove(pkt)
            if not waiting:
                del self._pending[pkt.point][key]
        self.on_lost(pkt)
