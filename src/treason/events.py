"""The event record: one accepted window update that moved a receiver's right edge left.

Scan, live, simulate and the log matcher all speak this record; every output (terminal,
JSON Lines, CSV) is a view of it. The schema is documented in ``docs/events.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from treason.kernel import DEFAULT_WORDING, kernel_lines


class Severity(IntEnum):
    """Event classes, least to most severe; an event carries the most severe that applies."""

    RETRACTION = 1  # edge moved left by less than the scale granularity 2**shift (RFC 7323)
    SHRINK = 2  # edge moved left by at least 2**shift: the RFC 9293 SHLD-14 violation
    BEYOND = 3  # new edge lies before the sender's snd_nxt: sent data is now out of window
    KERNEL = 4  # window set to 0 with data outstanding: what Linux on the sender logs

    @property
    def label(self) -> str:
        return CLASS_NAMES[self]


CLASS_NAMES = {
    Severity.RETRACTION: "retraction",
    Severity.SHRINK: "shrink",
    Severity.BEYOND: "beyond",
    Severity.KERNEL: "kernel",
}


class Certainty(str, Enum):
    """Whether every plausible window scale makes the update an event, or only some do.

    A ``str`` so that records and comparisons with the JSON text (``"definite"``) keep working.
    """

    DEFINITE = "definite"  # the scale was seen, or every plausible shift agrees
    POSSIBLE = "possible"  # some plausible shifts make it an event, others do not

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class Event:
    """A receiver (``src``) moved the right edge of the window it offers ``dst`` to the left.

    Sequence fields are absolute numbers in the data sender's (``dst``'s) sequence space.
    ``shrink_bytes`` is how far the edge moved back; ``beyond_bytes`` how much already-sent
    data now lies past the new edge. ``scale`` is the shift the edges were computed with;
    when the handshake was not seen it is the smallest plausible shift that makes this an event,
    and ``certainty`` says whether every plausible shift agrees (``definite``) or only some do
    (``possible``).

    ``tunnel`` names the tunnel layers the connection was found in, outermost first
    (``vxlan:42``, ``mpls:16``; docs/decoding.md), and ``outer`` the (source, destination)
    addresses of the enclosing IP headers of the segment that made the event; both are empty
    for traffic that was not tunnelled. ``src``/``dst`` are always the innermost addresses.
    """

    frame: int
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    vlan: tuple[int, ...]
    cls: Severity
    closing: bool
    certainty: Certainty
    old_edge: int
    new_edge: int
    shrink_bytes: int
    beyond_bytes: int
    snd_una: int
    snd_nxt: int
    ack: int
    win: int
    scale: int
    scale_known: bool
    file: str = ""
    tunnel: tuple[str, ...] = ()
    outer: tuple[tuple[str, str], ...] = ()
    capture_set: int = 1  # which capture set of a scan the file belongs to (docs/capture-sets.md)

    @property
    def kernel_lines(self) -> dict[str, str]:
        """What Linux on the sender (``dst``) prints about this, in each era's wording.

        Every era for ``kernel`` events; for ``beyond`` only 2.4.0's, whose rule was "edge
        before snd_nxt"; nothing for the others, which no kernel logs.
        """
        if self.cls < Severity.BEYOND:
            return {}
        every = kernel_lines(
            self.src, self.sport, self.dport, self.snd_una, self.snd_nxt, self.win << self.scale
        )
        return every if self.cls is Severity.KERNEL else {"2.4.0": every["2.4.0"]}

    @property
    def kernel_line(self) -> str | None:
        """The ``kernel.DEFAULT_WORDING`` era's line, for kernel-visible events only."""
        if self.cls is not Severity.KERNEL:
            return None
        return self.kernel_lines[DEFAULT_WORDING]

    def key(self) -> tuple[object, ...]:
        """Identity used to compare event lists from different engines."""
        return (
            self.frame,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.vlan,
            int(self.cls),
            self.closing,
            self.certainty,
            self.old_edge,
            self.new_edge,
            self.shrink_bytes,
            self.beyond_bytes,
            self.snd_una,
            self.snd_nxt,
            self.scale,
            self.scale_known,
            self.tunnel,
            self.outer,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines record (schema: docs/events.md)."""
        return {
            "file": self.file,
            "frame": self.frame,
            "time": self.time,
            "src": self.src,
            "sport": self.sport,
            "dst": self.dst,
            "dport": self.dport,
            "vlan": list(self.vlan),
            "class": self.cls.label,
            "closing": self.closing,
            "certainty": self.certainty.value,
            "old_edge": self.old_edge,
            "new_edge": self.new_edge,
            "shrink_bytes": self.shrink_bytes,
            "beyond_bytes": self.beyond_bytes,
            "snd_una": self.snd_una,
            "snd_nxt": self.snd_nxt,
            "ack": self.ack,
            "win": self.win,
            "scale": self.scale,
            "scale_known": self.scale_known,
            "kernel_line": self.kernel_line,
            "kernel_lines": self.kernel_lines,
            "tunnel": list(self.tunnel),
            "outer": [list(pair) for pair in self.outer],
            "capture_set": self.capture_set,
        }
