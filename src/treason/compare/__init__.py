"""Compare two captures of the same traffic taken at two points of its path.

``compare(near, far)`` reads both captures once, side by side, runs the engine on each (the
same window-shrink events ``scan`` reports), pairs the packets both points saw (see
``pairing``) and says for every event whether the receiver or the path between the points
moved the right edge (see ``attribution``), with what else the path rewrote (``flows``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from treason.compare.attribution import AttributedEvent, attribute
from treason.compare.engines import engine_for
from treason.compare.fingerprint import DirKey, FlowHistory, Packet, fingerprint
from treason.compare.flows import Direction, Handshakes
from treason.compare.pairing import FAR, NEAR, Matcher, reverse
from treason.engine.stats import ScanStats
from treason.errors import CaptureError, TruncatedCapture
from treason.events import Event, Severity
from treason.packets import Frame
from treason.readers import CaptureSource, display_name, frames, open_capture

__all__ = ["AttributedEvent", "Comparison", "compare"]

#: Seconds a packet waits (on the other point's corrected clock) for its twin.
DEFAULT_WINDOW = 2.0
#: Packets waiting for a twin at one point, at most: the memory bound.
DEFAULT_MAX_PENDING = 200_000
#: Frames one capture is read ahead of the other in one go (the engines work in batches).
BATCH = 256


@dataclass
class Comparison:
    """Everything ``compare`` found; ``report`` turns it into text or JSON."""

    files: tuple[str, str]
    events: list[AttributedEvent] = field(default_factory=list)
    directions: dict[DirKey, Direction] = field(default_factory=dict)
    handshakes: Handshakes = field(default_factory=Handshakes)
    stats: tuple[ScanStats, ScanStats] = field(default_factory=lambda: (ScanStats(), ScanStats()))
    segments: list[int] = field(default_factory=lambda: [0, 0])
    lost: list[int] = field(default_factory=lambda: [0, 0])
    paired: int = 0
    peak_pending: int = 0  # most packets waiting for a twin at one point at once
    offset_ns: int | None = None
    flow_map: tuple[dict[DirKey, DirKey], dict[DirKey, DirKey]] = field(
        default_factory=lambda: ({}, {})
    )
    warnings: list[str] = field(default_factory=list)
    errors: list[CaptureError] = field(default_factory=list)


class _Side:
    """One capture being read: its frames, the engine over them, the frame read next."""

    def __init__(
        self, point: int, source: CaptureSource, cmp: Comparison, name: str, engine: str
    ) -> None:
        self.point = point
        self.name = name
        self.cmp = cmp
        self.capture = open_capture(source, name)
        self.frames = frames(self.capture)
        self.head: Frame | None = None
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.advance()
        self.engine = engine_for(self.capture.format, cmp.stats[point], engine)

    def advance(self) -> None:
        """Read the next frame; damage ends this capture (raised at once if it has none)."""
        started = self.head is not None
        try:
            self.head = next(self.frames)
        except StopIteration:
            self.head = None
        except TruncatedCapture as exc:
            self.head = None
            self.cmp.warnings.append(str(exc))
        except CaptureError as exc:
            if not started:
                raise  # not a capture at all: nothing to compare
            self.head = None
            self.cmp.errors.append(exc)

        if self.head is None:
            self.capture.close()

    def take(self, most: int) -> list[Frame]:
        """The next ``most`` frames at most."""
        batch: list[Frame] = []
        while self.head is not None and len(batch) < most:
            batch.append(self.head)
            self.advance()
        return batch


def compare(
    near: CaptureSource,
    far: CaptureSource,
    *,
    window: float = DEFAULT_WINDOW,
    max_pending: int = DEFAULT_MAX_PENDING,
    retractions: bool = False,
    engine: str = "auto",
) -> Comparison:
    """Pair the packets of two captures and attribute every window-shrink event in them.

    Each capture is read once, in step with the other by (clock-corrected) time, so memory
    stays bounded by ``window`` seconds of traffic (and ``max_pending`` packets) however long
    the captures are. Damaged captures are compared up to the damage; the errors are in
    ``errors`` for the caller to raise after reporting. ``engine`` is as for ``scan``
    (``auto``, ``fast``, ``reference``; see ``engines``).
    """
    names = (display_name(near), display_name(far))
    cmp = Comparison(files=names)
    flagged: dict[tuple[int, int], Packet] = {}
    history = FlowHistory(int(window * 1e9))
    found: list[tuple[int, Event]] = []

    def on_pair(a: Packet, b: Packet) -> None:
        cmp.paired += 1
        d = cmp.directions.get(a.dirkey)
        if d is None:
            d = cmp.directions[a.dirkey] = Direction(a.dirkey, b.dirkey)
        d.add(a, b)

    def on_lost(pkt: Packet) -> None:
        cmp.lost[pkt.point] += 1

    matcher = Matcher(int(window * 1e9), max_pending, on_pair, on_lost)

    def keep(events: list[Event], side: _Side) -> None:
        for ev in events:  # the engine counted them in its stats already
            ev.file = side.name
            if retractions or ev.cls is not Severity.RETRACTION:
                found.append((side.point, ev))

    sides = (
        _Side(NEAR, near, cmp, names[0], engine),
        _Side(FAR, far, cmp, names[1], engine),
    )
    first, second = sides
    batch = max(1, min(BATCH, max_pending // 4))  # a batch must not overflow the waiting room
    turn = 0
    while True:
        # The capture whose next frame is earlier (on the near clock) goes first; until the
        # clock offset is known, the two take turns.
        a, b = first.head, second.head
        if b is None:
            if a is None:
                break
            side = first
        elif a is None:
            side = second
        elif matcher.offset_ns is None:
            side = sides[turn]
            turn ^= 1
        else:
            side = first if a.ts_ns <= b.ts_ns - matcher.offset_ns else second
        judged, final = side.engine.feed(side.take(batch))
        keep(final, side)
        for frame, seg, made in judged:
            pkt = fingerprint(frame, seg, side.point)
            cmp.segments[side.point] += 1
            if side.first_ns is None:
                side.first_ns = seg.ts_ns
            side.last_ns = seg.ts_ns
            cmp.handshakes.add(pkt)
            before = history.add(pkt)
            if made:
                pkt.event = True
                pkt.before = before
                flagged[(side.point, seg.frame)] = pkt
            matcher.add(pkt)
    for side in sides:
        keep(side.engine.flush(), side)
    matcher.finish()
    _warn_overlap(cmp, matcher, sides, max_pending)
    for key, way in cmp.directions.items():
        way.settle(cmp.directions.get(reverse(key)))
    cmp.offset_ns = matcher.offset_ns
    cmp.peak_pending = matcher.peak
    cmp.flow_map = matcher.flow_map
    found.sort(key=lambda pe: (pe[0], pe[1].frame))
    for point, ev in found:
        ack = flagged.get((point, ev.frame))
        cmp.events.append(_judge(cmp, matcher, sides, point, ev, ack, window))
    return cmp


def _judge(
    cmp: Comparison,
    matcher: Matcher,
    sides: tuple[_Side, _Side],
    point: int,
    ev: Event,
    pkt: Packet | None,
    window: float,
) -> AttributedEvent:
    other = 1 - point
    ack_key = (ev.src, ev.sport, ev.dst, ev.dport, ev.vlan)
    mapped = cmp.flow_map[point].get(ack_key)
    near_key = ack_key if point == NEAR else mapped
    direction = cmp.directions.get(near_key) if near_key is not None else None
    other_scale = cmp.handshakes.shift(other, mapped) if mapped is not None else None
    o = sides[other]
    name = o.name
    if o.first_ns is None or o.last_ns is None:
        reason = f"{name} has no TCP segments"
    elif (
        pkt is not None
        and cmp.offset_ns is not None
        and _outside(matcher.near_time(pkt), o, cmp.offset_ns, int(window * 1e9))
    ):
        reason = f"{name} was not capturing at that time"
    elif mapped is None:
        reason = (
            f"no packet of the connection was recognised at {name} (not captured there, or "
            f"changed beyond recognition: TCP timestamps stripped, IP ID rewritten)"
        )
    else:
        reason = f"not captured at {name} (lost by that capture, or dropped by the path)"
    return attribute(ev, point, pkt, direction, other_scale, name, reason)


def _outside(t: int, side: _Side, offset: int, window: int) -> bool:
    assert side.first_ns is not None and side.last_ns is not None
    shift = offset if side.point == FAR else 0
    return t < side.first_ns - shift - window or t > side.last_ns - shift + window


def _warn_overlap(
    cmp: Comparison, matcher: Matcher, sides: tuple[_Side, _Side], max_pending: int
) -> None:
    """Say when the captures hardly overlap, and how to compare their common period."""
    near, far = sides
    if near.first_ns is None or far.first_ns is None:
        return
    offset = matcher.offset_ns
    if offset is None:
        cmp.warnings.append(
            "no packet was seen at both points: are these captures of the same traffic, "
            "taken at the same time?"
        )
    elif matcher.blind:
        start = max(near.first_ns, far.first_ns - offset)  # on the near clock
        cmp.warnings.append(
            f"the captures start far apart: {matcher.blind} packets were given up before the "
            f"clock offset was known (more than {max_pending} waiting), and some may have "
            f"been seen at both points; compare the common period: "
            f"editcap -A {start / 1e9:.6f} {near.name} and "
            f"editcap -A {(start + offset) / 1e9:.6f} {far.name}"
        )
