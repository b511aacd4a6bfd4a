"""Which pieces form which capture set: ordered by time, joined when one follows another.

Nobody captures a busy link into one file: ``tcpdump -C/-G/-W``, ``dumpcap -b``, ``editcap`` and
``treason live --write --rotate`` all write consecutive pieces. A piece that starts at or after
the latest time of another (with the same link type; a few milliseconds before it, the
jitter of capture timestamps, still count) continues it: both are read into one flow
table, so flows keep their handshake, scale and last right edge across the boundary. Pieces
that overlap in time (two vantage points) are separate captures, unless the user asks to
interleave them by time as ``mergecap`` does. The order the user named the files in never
matters: a shell glob puts ``cap_10`` before ``cap_2``.

A piece's span is read with the engine's split mode without buckets (framing only, no
decoding): the time of its first frame and the latest time of any frame.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property

from treason.engine.choose import new_engine
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.sets.source import StorageOptions, is_url, opened

#: How pieces are grouped: ``continue`` (pieces that follow each other in time form one set),
#: ``merge`` (every piece in one set, interleaved by time), ``each`` (every piece on its own).
MODES = ("continue", "merge", "each")

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Piece:
    """One file of a set: its name as given, its place in the argument list and its span."""

    source: str
    argument: int
    first_ns: int | None = None  # time of its first frame; None: not readable up front
    latest_ns: int | None = None  # latest frame time
    linktype: int | None = None  # of its first frame

    @property
    def dated(self) -> bool:
        return self.first_ns is not None


@dataclass(frozen=True)
class CaptureSet:
    """Pieces read as one capture (one flow table), in the order they are read.

    ``number`` counts sets from 1 in the order they are reported. ``merged``: the pieces'
    packets are interleaved by time instead of read one piece after another.
    """

    number: int
    pieces: tuple[Piece, ...]
    merged: bool = False

    @property
    def sources(self) -> list[str]:
        return [p.source for p in self.pieces]

    @cached_property
    def by_argument(self) -> dict[int, Piece]:
        """The pieces by their place in the argument list (what events' positions hold)."""
        return {p.argument: p for p in self.pieces}


def span(source: str, argument: int, storage_options: StorageOptions | None = None) -> Piece:
    """``source`` with its span. What can be read only once (standard input, a pipe, a FIFO,
    ``<(zcat …)``) is never read ahead: it gets no span and is a capture of its own. A piece
    that cannot be opened gets no span either, and its scan reports why."""
    if source == "-" or not (is_url(source) or _rereadable(source)):
        return Piece(source, argument)
    reader = new_engine("auto", ScanStats(), 1, 0)
    try:
        with opened(source, storage_options) as capture:
            for _ in reader.split(capture, 0):
                pass
    except CaptureError:
        pass  # damage: the span of what is readable; the scan reports the damage
    got = reader.span()
    if got is None:
        return Piece(source, argument)
    first, latest, linktype, _ = got
    return Piece(source, argument, first, latest, linktype)


def _rereadable(path: str) -> bool:
    """A regular file (or one that cannot be looked at: its scan says why, without a read)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def plan(pieces: list[Piece], mode: str = "continue") -> list[CaptureSet]:
    """Group pieces into capture sets (see the module docstring); undated pieces stand alone,
    after the dated sets, in argument order."""
    if mode not in MODES:
        raise ValueError(f"unknown capture-set mode {mode!r}")
    if mode == "each":
        return [CaptureSet(n, (p,)) for n, p in enumerate(pieces, 1)]
    dated = sorted((p for p in pieces if p.dated), key=_order)
    undated = [(p,) for p in pieces if not p.dated]
    groups: list[tuple[Piece, ...]]
    if mode == "merge":
        groups = [tuple(dated)] if dated else []
    else:
        groups = [tuple(chain) for chain in _chains(dated)]
    groups.sort(key=lambda g: _order(g[0]))
    merged = mode == "merge"
    return [CaptureSet(n, g, merged and len(g) > 1) for n, g in enumerate([*groups, *undated], 1)]


def _order(p: Piece) -> tuple[int, int, list[tuple[int, str]], int]:
    """Time order; pieces that start at the same time: the shorter first (it can end before
    the other begins), then by name with numbers compared as numbers (``cap_2`` before
    ``cap_10``, as tcpdump and editcap number their pieces), then as given."""
    assert p.first_ns is not None and p.latest_ns is not None
    return p.first_ns, p.latest_ns, _natural(p.source), p.argument


def _natural(name: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in _DIGITS.split(name)]


#: How far back in time a piece may start and still continue the one before it. Capture
#: timestamps are not strictly monotonic (packets stamped on several CPUs or queues: 12 µs
#: back in a veth capture here), so a rotation boundary can fall where time steps back a
#: little; two vantage points of the same time overlap by far more.
JITTER_NS = 10_000_000


def _follows(tail: Piece, piece: Piece) -> bool:
    """Whether ``piece`` starts after ``tail`` ended, up to capture jitter: an overlap of at
    most ``JITTER_NS`` that is under half of each piece's own span."""
    assert tail.first_ns is not None and tail.latest_ns is not None
    assert piece.first_ns is not None and piece.latest_ns is not None
    overlap = tail.latest_ns - piece.first_ns
    if overlap <= 0:
        return True
    spans = (tail.latest_ns - tail.first_ns, piece.latest_ns - piece.first_ns)
    return overlap <= JITTER_NS and all(2 * overlap < span for span in spans)


def _chains(dated: list[Piece]) -> list[list[Piece]]:
    """Each piece continues the chain that ended last before its first frame (same link type,
    see ``_follows``), or starts a chain of its own."""
    chains: list[list[Piece]] = []
    for piece in dated:
        assert piece.first_ns is not None
        best: list[Piece] | None = None
        for chain in chains:
            tail = chain[-1]
            assert tail.latest_ns is not None
            if tail.linktype != piece.linktype or not _follows(tail, piece):
                continue
            if best is None or tail.latest_ns > _latest(best[-1]):
                best = chain
        if best is None:
            chains.append([piece])
        else:
            best.append(piece)
    return chains


def _latest(p: Piece) -> int:
    assert p.latest_ns is not None
    return p.latest_ns


def describe(sets: list[CaptureSet]) -> list[str]:
    """Report lines: which files formed which capture set."""
    lines = []
    for s in sets:
        how = "interleaved by time" if s.merged else "read in time order"
        names = ", ".join(s.sources)
        if len(s.pieces) == 1:
            lines.append(f"  capture set {s.number}: {names}")
        else:
            lines.append(f"  capture set {s.number} ({len(s.pieces)} files, {how}): {names}")
    return lines
