"""Scanning capture sets on a Dask cluster, with exactly the result of the plain scan.

A capture set is partitioned by flow, not by file: the flow table's state is per flow, so a
flow's segments must meet in one place, in capture order, while files can be read anywhere.

1. Split (one task per file; the worker opens the path or fsspec URL itself): frames are
   decoded once, in the compiled engine, into segment records (``treason.engine.segrec``) in
   N buckets by a hash of the flow key that is the same in both directions. Frames, skipped
   frames and segments are counted here, once. Each record keeps its file (the frame number's
   position: the file's place in the argument list) and frame number, its time, and the flow
   table's clock at it within its file. The split also gives the file's span (first and
   latest frame times), so no file is read twice.
2. Plan: the sets, from the spans, exactly as the plain scan plans them
   (``treason.sets.plan``).
3. Analyse (one task per bucket and set): the bucket's records of every file of the set, in set
   order, go through one engine. The flow table's clock is global, not the bucket's: each
   file's records carry the clock within the file and the task adds the clock the files before
   reached (the latest segment time, from the split), so zero-window holds close and idle flows
   are evicted at exactly the segment where the one-table scan does it. A last ``tick`` to the
   set's final clock evicts the flows that the sequential scan evicted after the bucket's last
   segment. Events are sorted back into capture order.

The one global rule a bucket cannot see is ``--max-flows``: the plain scan evicts the least
recently active flow of all. When the buckets together made no more flows than the cap, no
table ever reached it and the result is exact; otherwise the set is analysed again as one
bucket (one task), which is the plain scan itself. See ``docs/capture-sets.md``.

Interleaved sets (``--merge``) are split in parallel but analysed in one task: each file's
records back in file order, interleaved as the plain scan does (``sets.run.interleave``);
interleaving bucket by bucket would be the same order only for files in time order.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from treason.capfilter import CaptureFilter
from treason.engine.choose import new_engine, resolve
from treason.engine.segrec import EARLIEST, heads, position, unposition
from treason.engine.stats import ScanStats
from treason.errors import CaptureError, TreasonError, TruncatedCapture
from treason.events import Event, Severity
from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS
from treason.sets.plan import CaptureSet, Piece, plan
from treason.sets.run import interleave, name
from treason.sets.source import StorageOptions, is_url, opened

__all__ = ["DaskScan", "scan", "scan_on"]


@dataclass
class DaskScan:
    """What a scan on a cluster found: the sets, their events in capture order, the counters
    (as the plain scan counts them) and the damage met, one line per damaged file."""

    sets: list[CaptureSet]
    events: list[Event] = field(default_factory=list)
    stats: ScanStats = field(default_factory=ScanStats)
    errors: list[str] = field(default_factory=list)


@dataclass
class _Summary:
    """What the client needs of a file's split: its span (to plan the sets), counters,
    damage, and its latest segment time (the clock the next file of its set starts from)."""

    piece: Piece
    stats: ScanStats
    error: str | None
    clock: int | None


@dataclass
class _Split:
    """One file's split: records per bucket, and its summary."""

    buckets: list[bytes]
    summary: _Summary


def _summary(split: _Split) -> _Summary:
    return split.summary


def _split_task(
    source: str,
    argument: int,
    buckets: int,
    kind: str,
    storage_options: StorageOptions | None,
    capture_filter: CaptureFilter | None,
) -> _Split:
    """Decode one file into segment records by bucket; frames numbered from its argument's
    position, so the split need not wait for the plan (which needs every file's span)."""
    stats = ScanStats()
    splitter = new_engine(kind, stats, 1, 0, capture_filter=capture_filter)
    parts: list[list[bytes]] = [[] for _ in range(buckets)]
    error = None
    if source != "-":
        try:
            with opened(source, storage_options) as capture:
                for batch in splitter.split(capture, buckets, position(argument)):
                    for b, records in enumerate(batch):
                        if records:
                            parts[b].append(records)
        except TruncatedCapture as exc:
            stats.warnings.append(str(exc))
        except CaptureError as exc:
            error = str(exc)
    got = splitter.span()
    piece = Piece(source, argument) if got is None else Piece(source, argument, *got[:3])
    clock = None if got is None else got[3]
    return _Split([b"".join(p) for p in parts], _Summary(piece, stats, error, clock))


def _bucket_task(
    kind: str,
    max_flows: int,
    idle_timeout_ns: int,
    pieces: Sequence[tuple[bytes, int]],
    final_clock: int | None,
) -> tuple[list[Event], ScanStats, int]:
    """Analyse one bucket: each file's records with the clock the files before reached."""
    stats = ScanStats()
    engine = new_engine(kind, stats, max_flows, idle_timeout_ns)
    events: list[Event] = []
    for records, base_clock in pieces:
        events += engine.feed_segments(records, base_clock)
    if final_clock is not None:
        events += engine.tick(final_clock)
    events += engine.flush()
    return events, stats, stats.flows


def scan(
    client: Any,
    sources: Sequence[str],
    *,
    mode: str = "continue",
    retractions: bool = False,
    engine: str = "auto",
    max_flows: int = DEFAULT_MAX_FLOWS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    storage_options: StorageOptions | None = None,
    buckets: int | None = None,
    capture_filter: CaptureFilter | None = None,
) -> DaskScan:
    """Scan ``sources`` as capture sets on the cluster of ``client`` (a
    ``distributed.Client``): the plain scan's events (``treason.sets.scan_sets``), counters
    and damage, computed by the workers. ``buckets`` defaults to the cluster's threads;
    ``capture_filter`` is applied where the files are split."""
    _check(sources)
    kind = resolve(engine)
    if buckets is None:
        buckets = max(1, sum(client.nthreads().values()))
    # Workers open what they are given: local paths absolute (their working directory is
    # not ours), reported as the user named them.
    where = [s if is_url(s) else os.path.abspath(s) for s in sources]
    splits = [
        client.submit(
            _split_task, path, n, buckets, kind, storage_options, capture_filter, pure=False
        )
        for n, path in enumerate(where)
    ]
    # Only spans, counters, damage and clocks come here; the records stay on the workers.
    summaries: list[_Summary] = client.gather([client.submit(_summary, f) for f in splits])
    pieces = [replace(x.piece, source=s) for x, s in zip(summaries, sources, strict=True)]
    if mode == "each":
        pieces = [Piece(p.source, p.argument) for p in pieces]
    sets = plan(pieces, mode)
    result = DaskScan(sets)
    idle_ns = int(idle_timeout * 1e9)
    plans = []
    for capture_set in sets:
        done = [summaries[p.argument] for p in capture_set.pieces]
        for summary in done:
            result.stats.merge(summary.stats)
            if summary.error is not None:
                result.errors.append(summary.error)
        futures = [splits[p.argument] for p in capture_set.pieces]
        plans.append(_Analysis(futures, *_clocks(done)))
    # Every set's buckets are submitted before any is waited for: sets run side by side.
    for capture_set, analysis in zip(sets, plans, strict=True):
        if capture_set.merged:
            # Interleaved: one table over every file's records in mergecap's order.
            analysis.tasks.append(
                client.submit(_merged_in, kind, max_flows, idle_ns, analysis.splits, pure=False)
            )
            continue
        for b in range(buckets):
            part = [client.submit(_records, f, b) for f in analysis.splits]
            analysis.tasks.append(
                client.submit(
                    _bucket_in,
                    kind,
                    max_flows,
                    idle_ns,
                    part,
                    analysis.bases,
                    analysis.final,
                    pure=False,
                )
            )
    for capture_set, analysis in zip(sets, plans, strict=True):
        results = client.gather(analysis.tasks)
        if len(results) > 1 and sum(flows for _, _, flows in results) > max_flows:
            # A table may have reached the cap, which is global: analyse as one table.
            whole = [client.submit(_all_records, f) for f in analysis.splits]
            results = [
                client.gather(
                    client.submit(
                        _bucket_in, kind, max_flows, idle_ns, whole, analysis.bases, analysis.final
                    )
                )
            ]
        events: list[Event] = []
        for bucket_events, bucket_stats, _ in results:
            events += bucket_events
            result.stats.merge(bucket_stats)
        # An interleaved set's one table already hands them out in the order it read them.
        ordered = events if capture_set.merged else _in_capture_order(events, capture_set)
        for event in ordered:
            if retractions or event.cls is not Severity.RETRACTION:
                result.events.append(name(event, capture_set))
    return result


def _in_capture_order(events: list[Event], capture_set: CaptureSet) -> list[Event]:
    """The buckets' events in the order the set is read: file by file, frame by frame."""
    rank = {p.argument: n for n, p in enumerate(capture_set.pieces)}

    def order(event: Event) -> tuple[int, int]:
        argument, frame = unposition(event.frame)
        return rank[argument], frame

    return sorted(events, key=order)


@dataclass
class _Analysis:
    """One set's analysis: its files' split futures, the clock each file starts from, the
    set's final clock, and the bucket tasks once submitted."""

    splits: list[Any]
    bases: list[int]
    final: int | None
    tasks: list[Any] = field(default_factory=list)


def _clocks(done: list[_Summary]) -> tuple[list[int], int | None]:
    """The clock each file of a set starts from (the latest segment time of the files before
    it) and the set's final clock (None: no segment at all)."""
    bases, clock = [], EARLIEST
    for split in done:
        bases.append(clock)
        if split.clock is not None:
            clock = max(clock, split.clock)
    return bases, None if clock == EARLIEST else clock


def _records(split: _Split, bucket: int) -> bytes:
    return split.buckets[bucket]


def _all_records(split: _Split) -> bytes:
    """A file's records of every bucket, in capture order (records are ordered by frame)."""
    return _merge_by_frame(split.buckets)


def _merge_by_frame(parts: list[bytes]) -> bytes:
    runs = [
        [(frame, data[pos : pos + size]) for pos, size, frame, _ in heads(data)] for data in parts
    ]
    return b"".join(record for _, record in heapq.merge(*runs))


def _merged_in(
    kind: str, max_flows: int, idle_ns: int, splits: list[_Split]
) -> tuple[list[Event], ScanStats, int]:
    """An interleaved set in one table: each file's records back in file order, then every
    file's interleaved by time as the plain scan interleaves them (``sets.run.interleave``)."""
    records = b"".join(interleave([[_merge_by_frame(s.buckets)] for s in splits]))
    return _bucket_task(kind, max_flows, idle_ns, [(records, EARLIEST)], None)


def _bucket_in(
    kind: str,
    max_flows: int,
    idle_ns: int,
    part: list[bytes],
    bases: list[int],
    final: int | None,
) -> tuple[list[Event], ScanStats, int]:
    return _bucket_task(kind, max_flows, idle_ns, list(zip(part, bases, strict=True)), final)


def _check(sources: Sequence[str]) -> None:
    """What a cluster cannot do, said before any work starts."""
    if "-" in sources:
        raise TreasonError("-", "standard input cannot be read by a cluster's workers")


def scan_on(
    address: str, sources: Sequence[str], **options: Any
) -> tuple[list[CaptureSet], list[Event], ScanStats, list[str]]:
    """``scan`` on the scheduler at ``address`` (``tcp://host:8786``), or on a LocalCluster of
    one worker per core for ``local``: what ``treason scan --scheduler`` runs."""
    try:
        import distributed
    except ImportError:
        raise TreasonError(
            "--scheduler", "Dask is not installed: pip install 'treason[dask]'"
        ) from None
    _check(sources)
    dist: Any = distributed  # untyped
    Client, LocalCluster = dist.Client, dist.LocalCluster
    if address == "local":
        cores = os.cpu_count() or 1
        with (
            LocalCluster(
                n_workers=cores,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            done = scan(client, sources, **options)
    else:
        try:
            client = Client(address, timeout=10)
        except (OSError, ValueError) as exc:
            raise TreasonError("--scheduler", f"cannot reach {address}: {exc}") from None
        with client:
            done = scan(client, sources, **options)
    return done.sets, done.events, done.stats, done.errors
