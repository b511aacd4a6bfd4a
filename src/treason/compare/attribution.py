"""Who moved the right edge: the receiver, or a device between the two capture points.

An event is one ACK whose right edge lies before the previous one, as one point saw it. Its
twin at the other point settles the question:

- ``receiver``: the event was seen at the point the ACK passes first, or the twin carries the
  same window under the same scale and was a shrink there too, or shrank only here because
  the other capture missed the ACK it shrinks from (or the path rewrites no window of this
  flow). The receiver sent the smaller edge (or something beyond both points did); the
  path only carried it.
- ``path``: the ACK passed the other point first, and there it carried another window, or the
  two points scale it differently because the handshake's window-scale option was changed
  between them, or it moved no edge back there while the path rewrites this flow's windows
  (an earlier window was enlarged on the way), or it delivered the ACK this one shrinks from
  after this one (reordering): the device between the points made this shrink.
- ``unmatched``: the ACK was not seen at the other point, so nothing can be said; ``reason``
  says why when the captures tell.
"""

from __future__ import annotations

from dataclasses import dataclass

from treason.compare.fingerprint import Packet
from treason.compare.flows import Direction
from treason.events import Event

RECEIVER = "receiver"
PATH = "path"
UNMATCHED = "unmatched"

#: How a reason begins when the path delivered the receiver's ACKs out of order.
REORDERED = "the same window at both points, but the path reordered the ACKs"

POINT_NAMES = ("near", "far")


@dataclass
class AttributedEvent:
    """An engine event at one point, with its twin at the other point and the verdict."""

    event: Event
    point: int
    attribution: str
    reason: str
    twin: Packet | None
    other_file: str
    other_scale: int | None

    def to_dict(self) -> dict[str, object]:
        """The event record (docs/events.md) with the comparison's fields at its end."""
        d = self.event.to_dict()
        twin = self.twin
        d.update(
            point=POINT_NAMES[self.point],
            attribution=self.attribution,
            attribution_reason=self.reason,
            other_file=self.other_file,
            other_frame=twin.seg.frame if twin else None,
            other_time=twin.seg.ts_ns / 1e9 if twin else None,
            other_ack=twin.seg.ack if twin else None,
            other_win=twin.seg.win if twin else None,
            other_scale=self.other_scale,
        )
        return d


def attribute(
    event: Event,
    point: int,
    packet: Packet | None,
    direction: Direction | None,
    other_scale: int | None,
    other_file: str,
    unmatched_reason: str,
) -> AttributedEvent:
    """Judge one event; ``packet`` is its ACK at ``point``, ``direction`` that ACK's flow."""
    twin = packet.twin if packet is not None else None
    if twin is None:
        return AttributedEvent(
            event, point, UNMATCHED, unmatched_reason, None, other_file, other_scale
        )
    own_scale = event.scale if event.scale_known else None
    scaled_apart = own_scale is not None and other_scale is not None and own_scale != other_scale
    same = twin.seg.win == event.win and not scaled_apart
    rewriting = direction is not None and direction.win_changed > 0
    verdict, reason = RECEIVER, "the same window at both points"
    if direction is not None and direction.upstream == point:
        reason = "seen where the ACK enters the path" + ("" if same else "; the path changed it")
    elif same and not twin.event:
        verdict, reason = _shrink_here_only(event, packet, rewriting)
    elif not same and twin.seg.win != event.win:
        verdict, reason = PATH, f"window {twin.seg.win} at the other point, {event.win} here"
    elif not same:
        verdict = PATH
        reason = f"window scaled by 2^{own_scale} here but 2^{other_scale} at the other point"
    return AttributedEvent(event, point, verdict, reason, twin, other_file, other_scale)


def _shrink_here_only(event: Event, packet: Packet | None, rewriting: bool) -> tuple[str, str]:
    """The ACK passed unchanged but shrank only here: what happened to the ACK before it?

    A run of right edges that never moves back stays so whatever is dropped from it, so a
    shrink at one point only means the two points saw different runs: the path delivered the
    earlier ACK after this one (reordering) or changed its window, or the other capture missed
    the earlier ACK (then the receiver did shrink, the other point just could not tell).
    """
    earlier = packet.before if packet is not None else ()
    before = next((b for b in reversed(earlier) if _edge(b, event.scale) == event.old_edge), None)
    if before is not None:
        b = before.seg
        if before.other_frame is None:
            return RECEIVER, (
                f"the same window at both points; the ACK it shrinks from (frame {b.frame}) "
                f"was not captured at the other point, so no shrink could show there"
            )
        assert packet is not None and packet.twin is not None
        if before.other_frame > packet.twin.seg.frame:
            return PATH, (
                f"{REORDERED}: frame {b.frame}, which came before it here, came after it at "
                f"the other point (frame {before.other_frame})"
            )
        if before.other_win != b.win:
            return PATH, (
                f"the same window at both points, but the path changed the window of the ACK "
                f"it shrinks from (frame {b.frame}: {before.other_win} at the other point, "
                f"{b.win} here)"
            )
    if rewriting:
        return PATH, (
            "the same window at both points, but no shrink there: the path changed an earlier "
            "window of this flow"
        )
    return RECEIVER, "the same window at both points"


def _edge(pkt: Packet, scale: int) -> int:
    """The right edge a segment advertises: SEG.ACK + (SEG.WND << scale), in 32 bits."""
    return (pkt.seg.ack + (pkt.seg.win << scale)) & 0xFFFFFFFF
