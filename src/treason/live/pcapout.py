"""``--write``: keep the packets of flows with events, as pcap files that appear whole.

A shrink is understood from the packets *before* it (what was sent, what was offered), so every
flow keeps a bounded ring of its most recent packets; when the flow has an event the ring is
written out and from then on the flow's packets go straight to the file. Rings exist for a
bounded number of flows (least recently active dropped first), so memory stays bounded on a
busy interface.

Files are written under a temporary name beside the target and renamed into place only when
complete (``treason.output.atomic``), so a reader never opens half a file. ``--rotate`` closes
the current file after a size or an age and starts the next one: on a long run each finished
piece is there to read.
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

from treason.errors import TreasonError
from treason.output.atomic import Output
from treason.packets import Frame

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
        if rot is not None and rot.size is not None and self._count and self._size >= rot.size:
            self.rotate(frame.ts_ns / 1e9)
        sec, nsec = divmod(frame.ts_ns, 1_000_000_000)
        data = frame.data
        self._put(_RECORD.pack(sec, nsec, len(data), frame.orig_len) + data)
        self._count += 1
        self.packets += 1

    def tick(self, now: float) -> None:
        """Rotate by age; called periodically, so an idle interface still closes its piece."""
        rot = self.rotation
        if rot is not None and rot.seconds is not None and now - self._started >= rot.seconds:
            self.rotate(now)

    def rotate(self, now: float) -> None:
        self._finish()
        self._open(now)

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
    """Decides which packets reach the pcap: rings per flow, then whole flows after an event."""

    def __init__(
        self, sink: PcapSink, ring: int = DEFAULT_RING, max_flows: int = DEFAULT_RING_FLOWS
    ) -> None:
        self.sink = sink
        self.ring = ring
        self.max_flows = max_flows
        self._rings: OrderedDict[Hashable, deque[Frame]] = OrderedDict()
        self._recording: OrderedDict[Hashable, None] = OrderedDict()
        self.flows_written = 0

    def packet(self, key: Hashable, frame: Frame, event: bool) -> None:
        """``frame`` belongs to flow ``key``; ``event`` when the model just reported one on it."""
        if key in self._recording:
            self._recording.move_to_end(key)
            self.sink.write(frame)
            return
        ring = self._rings.pop(key, None)
        if ring is None:
            ring = deque(maxlen=self.ring)
            if len(self._rings) >= self.max_flows:
                self._rings.popitem(last=False)
        ring.append(frame)
        if not event:
            self._rings[key] = ring
            return
        for old in ring:
            self.sink.write(old)
        self.flows_written += 1
        self._recording[key] = None
        if len(self._recording) > self.max_flows:
            self._recording.popitem(last=False)
