"""Scanning a capture set in one process: its pieces read into one engine, in set order.

Pieces read one after another go through ``Engine.read`` with a frame-number base per piece
(``segrec.position``), so every event says which file and which frame it comes from even when
it was made final while a later piece was read. Interleaved (merged) sets are split into
segment records per piece, merged by time (a k-way merge: one batch per piece in memory) and
analysed with ``Engine.feed_segments``. Damage in a piece ends that piece only: the set goes on
with the next one, as if the capture had a gap there.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from treason.capfilter import CaptureFilter
from treason.engine.choose import new_engine
from treason.engine.protocol import Engine
from treason.engine.segrec import EARLIEST, heads, position, unposition
from treason.engine.stats import ScanStats
from treason.errors import CaptureError, TruncatedCapture
from treason.events import Event
from treason.sets.plan import CaptureSet
from treason.sets.source import StorageOptions, opened

#: Records analysed per call when interleaving.
_BATCH = 4096


def run_set(
    capture_set: CaptureSet,
    engine: Engine,
    kind: str,
    errors: list[CaptureError],
    storage_options: StorageOptions | None = None,
    capture_filter: CaptureFilter | None = None,
) -> Iterator[Event]:
    """Every event of one capture set, in capture order, named by file, frame and set.

    ``engine`` is a fresh engine of kind ``kind`` with ``capture_filter`` (interleaving splits
    with that kind and filter too).
    Damage of a piece goes to ``errors`` (a truncated piece to the warnings) and the set
    continues with the next piece.
    """
    stats = engine.stats
    if capture_set.merged:
        raw = _interleaved(capture_set, engine, kind, errors, storage_options, capture_filter)
    else:
        raw = _consecutive(capture_set, engine, stats, errors, storage_options)
    for event in raw:
        yield name(event, capture_set)
    for event in engine.flush():
        yield name(event, capture_set)


def name(event: Event, capture_set: CaptureSet) -> Event:
    """Turn an event's position (its file's place in the argument list, its frame) back into
    its file and frame, and say which set it is of."""
    argument, frame = unposition(event.frame)
    event.file = capture_set.by_argument[argument].source
    event.frame = frame
    event.capture_set = capture_set.number
    return event


def _consecutive(
    capture_set: CaptureSet,
    engine: Engine,
    stats: ScanStats,
    errors: list[CaptureError],
    storage_options: StorageOptions | None,
) -> Iterator[Event]:
    for piece in capture_set.pieces:
        try:
            with opened(piece.source, storage_options) as capture:
                yield from engine.read(capture, position(piece.argument))
        except TruncatedCapture as exc:
            stats.warnings.append(str(exc))
        except CaptureError as exc:
            errors.append(exc)


def _interleaved(
    capture_set: CaptureSet,
    engine: Engine,
    kind: str,
    errors: list[CaptureError],
    storage_options: StorageOptions | None,
    capture_filter: CaptureFilter | None,
) -> Iterator[Event]:
    """The pieces split one batch at a time, their segments interleaved (``interleave``)."""
    splitting = _Splitting(kind, engine.stats, errors, storage_options, capture_filter)
    files = [splitting.batches(piece.argument, piece.source) for piece in capture_set.pieces]
    batch: list[bytes] = []
    for record in interleave(files):
        batch.append(record)
        if len(batch) == _BATCH:
            yield from engine.feed_segments(b"".join(batch), EARLIEST)
            batch.clear()
    yield from engine.feed_segments(b"".join(batch), EARLIEST)


def interleave(files: Sequence[Iterable[bytes]]) -> Iterator[bytes]:
    """mergecap's order over each file's segment records (given in batches, in file order):
    always the file whose next segment is earliest; ties go to the earlier file of the set."""

    def keyed(index: int, batches: Iterable[bytes]) -> Iterator[tuple[int, int, int, bytes]]:
        order = 0
        for records in batches:
            for pos, size, _frame, ts in heads(records):
                yield ts, index, order, records[pos : pos + size]
                order += 1

    for *_, record in heapq.merge(*(keyed(n, b) for n, b in enumerate(files))):
        yield record


@dataclass
class _Splitting:
    """How an interleaved set's pieces are split: engine kind, counters, damage, filter."""

    kind: str
    stats: ScanStats
    errors: list[CaptureError]
    storage_options: StorageOptions | None
    capture_filter: CaptureFilter | None

    def batches(self, argument: int, source: str) -> Iterator[bytes]:
        """One piece's segment records, split one batch at a time; its damage ends it."""
        splitter = new_engine(self.kind, self.stats, 1, 0, capture_filter=self.capture_filter)
        try:
            with opened(source, self.storage_options) as capture:
                for (records,) in splitter.split(capture, 1, position(argument)):
                    yield records
        except TruncatedCapture as exc:
            self.stats.warnings.append(str(exc))
        except CaptureError as exc:
            self.errors.append(exc)
