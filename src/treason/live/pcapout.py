"""``--write``: keep the packets of flows with events, as pcap files that appear whole.

A shrink is understood from the packets *before* it (what was sent, what was offered), so every
flow keeps a bounded ring of its most recent packets, and beside it the packets that set the
state its events are judged against, whatever the ring's size: its handshake (the window
scales), FIN and RST, and in each direction the latest packet that carried data (SND.NXT) and
the latest ACK (the last window update, the baseline). When the flow has an event these are
written out in capture order and from then on the flow's packets go straight to the file, so
scanning the written files (one capture set, ``docs/capture-sets.md``) rebuilds the flow and
finds the events live reported. Rings exist for a bounded number of flows (least recently active
dropped first), so memory stays bounded on a busy interface.

Files are written under a temporary name beside the target and renamed into place only when
complete (``treason.output.atomic``), so a reader never opens half a file. ``--rotate`` closes
the current file after a size or an age and starts the next one: on a long run each finished
piece is there to read. A piece starts only with a packet no older than every packet written
before it (a flow's saved packets are older than the packets written just before them), so the
pieces follow each other in time and read back as one capture set.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import struct
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import NoReturn

from treason.decode import decode
from treason.errors import TreasonError
from treason.output.atomic import Output
from treason.packets import ACK, FIN, RST, SYN, Frame

PCAP_MAGIC_NSEC = 0xA1B23C4D
_HEADER = struct.Struct("=IHHiIII")
_RECORD = struct.Struct("=IIII")

DEFAULT_RING = 64
DEFAULT_RING_FLOWS = 4096

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TIMES = {"": 1, "s": 1, "sec": 1, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rotation:
    """Start a new file once the current one holds ``size`` bytes or is ``seconds`` old."""

    size: int | None = None
    seconds: float | None = None


def parse_rotation(text: str) -> Rotation:
    """A size (``100M``, ``2G``, ``512k``: binary units) or an age (``3600``, ``90s``, ``1h``)."""
    t = text.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(k|m|g|t)(?:i?b)?", t)
    if m:
        size = int(float(m[1]) * _UNITS[m[2]])
        if size < 1:
            raise ValueError(f"rotation size must be positive: {text!r}")
        return Rotation(size=size)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|h|d)?", t)
    if m:
        seconds = float(m[1]) * _TIMES[m[2] or ""]
        if seconds <= 0:
            raise ValueError(f"rotation time must be positive: {text!r}")
        return Rotation(seconds=seconds)
    raise ValueError(
        f"expected a size such as 100M or a time such as 3600, 90s, 30min, 1h: {text!r}"
    )


class PcapSink:
    """One pcap file at a time, each renamed into place only when complete.

    Without rotation the file is ``path`` (written even when no flow had an event, so the user
    finds a valid, empty capture). With rotation each piece is named after the UTC time it was
    started, ``<stem>-YYYYmmddTHHMMSSZ<ext>``, and pieces without packets are not kept.

    A write error (a full disk) keeps what already reached the disk in place, since part of
    the evidence is better than none, and says so in the one-line error.
    """

    def __init__(
        self, path: str, linktype: int, snaplen: int, rotation: Rotation | None = None
    ) -> None:
        self.path = os.path.abspath(path)
        self.linktype = linktype
        self.snaplen = snaplen
        self.rotation = rotation
        self.finished: list[str] = []
        self.packets = 0
        self._output: Output | None = None
        self._started = 0.0
        self._size = 0
        self._count = 0
        self._latest_ns: int | None = None  # latest packet time written, in any piece
        self._due = False  # the age is up: rotate at the next packet that may start a piece
        self._open(dt.datetime.now(dt.timezone.utc).timestamp())

    def _open(self, now: float) -> None:
        self._started = now
        self._output = Output(self._target())
        self._size = 0
        self._count = 0
        self._put(_HEADER.pack(PCAP_MAGIC_NSEC, 2, 4, 0, 0, self.snaplen, self.linktype))

    def _put(self, data: bytes) -> None:
        assert self._output is not None
        try:
            self._output.stream.write(data)
        except TreasonError as exc:
            self._fail(exc)
        self._size += len(data)

    def _fail(self, exc: TreasonError) -> NoReturn:
        """Keep the partial file and name it in the error, then stop."""
        output, self._output = self._output, None
        assert output is not None
        kept = output.keep_partial()
        if kept:
            self.finished.append(output.target)
            raise TreasonError(
                output.name,
                f"{exc.message}; the first {kept} bytes are kept (the last packet may be cut)",
            ) from None
        raise exc

    def write(self, frame: Frame) -> None:
        rot = self.rotation
        full = rot is not None and rot.size is not None and self._size >= rot.size
        if (self._due or full) and self._count and self._may_start(frame.ts_ns):
            self.rotate(frame.ts_ns / 1e9)
        if self._latest_ns is None or frame.ts_ns > self._latest_ns:
            self._latest_ns = frame.ts_ns
        sec, nsec = divmod(frame.ts_ns, 1_000_000_000)
        data = frame.data
        self._put(_RECORD.pack(sec, nsec, len(data), frame.orig_len) + data)
        self._count += 1
        self.packets += 1

    def tick(self, now: float) -> None:
        """Rotate by age, called periodically: an empty piece starts afresh now, a piece with
        packets is closed at the next packet that may start the next one."""
        rot = self.rotation
        if rot is not None and rot.seconds is not None and now - self._started >= rot.seconds:
            if self._count:
                self._due = True
            else:
                self.rotate(now)

    def rotate(self, now: float) -> None:
        self._finish()
        self._open(now)
        self._due = False

    def _may_start(self, ts_ns: int) -> bool:
        """Whether a packet of this time may be the first of a piece: no older than any
        packet written, so the pieces follow each other in time."""
        return self._latest_ns is None or ts_ns >= self._latest_ns

    def close(self) -> None:
        if self._output is not None:
            self._finish()

    def _target(self) -> str:
        if self.rotation is None:
            return self.path
        stem, ext = os.path.splitext(self.path)
        when = dt.datetime.fromtimestamp(self._started, dt.timezone.utc)
        base = f"{stem}-{when:%Y%m%dT%H%M%S}Z"
        name, n = base + ext, 1
        while os.path.exists(name):
            n += 1
            name = f"{base}-{n}{ext}"
        return name

    def _finish(self) -> None:
        output = self._output
        assert output is not None
        if self.rotation is not None and not self._count:
            self._output = None
            output.discard()
            return
        try:
            output.commit()
        except TreasonError as exc:
            self._fail(exc)
        self._output = None
        self.finished.append(output.target)

    def discard(self) -> None:
        """Drop the unfinished piece (used when the capture could not start)."""
        if self._output is not None:
            self._output.discard()
            self._output = None


class FlowRecorder:
    """Decides which packets reach the pcap: rings and state packets per flow, then whole flows
    after an event."""

    def __init__(
        self, sink: PcapSink, ring: int = DEFAULT_RING, max_flows: int = DEFAULT_RING_FLOWS
    ) -> None:
        self.sink = sink
        self.ring = ring
        self.max_flows = max_flows
        self._rings: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._recording: OrderedDict[Hashable, None] = OrderedDict()
        self.flows_written = 0

    def packet(self, key: Hashable, frame: Frame, event: bool) -> None:
        """``frame`` belongs to flow ``key``; ``event`` when the model just reported one on it."""
        if key in self._recording:
            self._recording.move_to_end(key)
            self.sink.write(frame)
            return
        kept = self._rings.pop(key, None)
        if kept is None:
            kept = _Kept(deque(maxlen=self.ring), {})
            if len(self._rings) >= self.max_flows:
                self._rings.popitem(last=False)
        if not event:
            kept.state.update(_roles(frame))
            kept.ring.append(frame)
            self._rings[key] = kept
            return
        # The event is judged against the state before this packet: written with it, in order.
        kept.ring.append(frame)
        saved = {f.number: f for f in (*kept.state.values(), *kept.ring)}
        for number in sorted(saved):
            self.sink.write(saved[number])
        self.flows_written += 1
        self._recording[key] = None
        if len(self._recording) > self.max_flows:
            self._recording.popitem(last=False)


@dataclass
class _Kept:
    """A flow before its first event: its latest packets and its state packets by role."""

    ring: deque[Frame]
    state: dict[str, Frame]


def _roles(frame: Frame) -> dict[str, Frame]:
    """The state a packet sets, by role (a later packet in the same role replaces it): the
    handshake, FIN, RST, and per direction the latest data and the latest ACK."""
    seg = decode(frame)
    if isinstance(seg, str):
        return {}
    way = f"{seg.src}:{seg.sport}"
    roles: dict[str, Frame] = {}
    if seg.flags & SYN:
        roles["synack" if seg.flags & ACK else "syn"] = frame
    if seg.flags & RST:
        roles["rst"] = frame
    if seg.flags & FIN:
        roles["fin " + way] = frame
    if seg.payload_len:
        roles["data " + way] = frame
    if seg.flags & ACK and not seg.flags & (SYN | RST):
        roles["ack " + way] = frame
    return roles


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
