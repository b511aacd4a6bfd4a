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
from collections.abc import Iterator

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
) -> Iterator[Event]:
    """Every event of one capture set, in capture order, named by file, frame and set.

    ``engine`` is a fresh engine of kind ``kind`` (interleaving splits with that kind too).
    Damage of a piece goes to ``errors`` (a truncated piece to the warnings) and the set
    continues with the next piece.
    """
    stats = engine.stats
    if capture_set.merged:
        raw = _interleaved(capture_set, engine, kind, errors, storage_options)
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
) -> Iterator[Event]:
    """mergecap's order: always the piece whose next packet is earliest (ties: the earlier
    piece of the set)."""
    streams = [
        _records(index, piece.argument, piece.source, kind, engine.stats, errors, storage_options)
        for index, piece in enumerate(capture_set.pieces)
    ]
    batch: list[bytes] = []
    for *_, record in heapq.merge(*streams):
        batch.append(record)
        if len(batch) == _BATCH:
            yield from engine.feed_segments(b"".join(batch), EARLIEST)
            batch.clear()
    yield from engine.feed_segments(b"".join(batch), EARLIEST)


def _records(
    index: int,
    argument: int,
    source: str,
    kind: str,
    stats: ScanStats,
    errors: list[CaptureError],
    storage_options: StorageOptions | None,
) -> Iterator[tuple[int, int, int, bytes]]:
    """(time, piece index, order in the piece, record) of each segment of one piece, split one
    batch at a time."""
    splitter = new_engine(kind, stats, 1, 0)
    order = 0
    try:
        with opened(source, storage_options) as capture:
            for (records,) in splitter.split(capture, 1, position(argument)):
                for pos, size, _frame, ts in heads(records):
                    yield ts, index, order, records[pos : pos + size]
                    order += 1
    except TruncatedCapture as exc:
        stats.warnings.append(str(exc))
    except CaptureError as exc:
        errors.append(exc)
