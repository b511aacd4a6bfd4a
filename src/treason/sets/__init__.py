"""Capture sets: several files read as one capture (``docs/capture-sets.md``).

``plan_sets`` orders the files by their first packet's time and groups the ones that follow
each other into sets (``plan``); ``scan_set`` reads one set into one flow table (``run``), so
flows carry their state across file boundaries; ``scan_sets`` does both. Every event keeps its
file, its frame number within that file and the number of its set. ``treason.dask`` scans the
same sets on a Dask cluster with the same result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from treason.capfilter import CaptureFilter
from treason.engine.choose import new_engine, resolve
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.events import Event, Severity
from treason.scanner import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS
from treason.series import SeriesCollector
from treason.sets.plan import MODES, CaptureSet, Piece, describe, plan, span
from treason.sets.run import run_set
from treason.sets.source import StorageOptions

__all__ = [
    "MODES",
    "CaptureSet",
    "Piece",
    "describe",
    "plan_sets",
    "scan_set",
    "scan_sets",
]


def plan_sets(
    sources: Sequence[str],
    mode: str = "continue",
    storage_options: StorageOptions | None = None,
) -> list[CaptureSet]:
    """The capture sets ``sources`` form (``mode``: ``continue``, ``merge`` or ``each``)."""
    if mode == "each" or len(sources) == 1:  # one file is one set: no need to read it twice
        return plan([Piece(s, n) for n, s in enumerate(sources)], "each")
    return plan([span(s, n, storage_options) for n, s in enumerate(sources)], mode)


def scan_set(
    capture_set: CaptureSet,
    *,
    retractions: bool = False,
    engine: str = "auto",
    max_flows: int = DEFAULT_MAX_FLOWS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    stats: ScanStats | None = None,
    errors: list[CaptureError] | None = None,
    storage_options: StorageOptions | None = None,
    capture_filter: CaptureFilter | None = None,
    series: SeriesCollector | None = None,
) -> Iterator[Event]:
    """Every window-shrink event of one capture set, in capture order (as ``treason.scan``;
    ``series`` collects the plot series in the same pass, its frames as engine positions).

    Damage in a piece ends that piece; the set goes on with the next. With ``errors`` given the
    damage is appended there, otherwise the first is raised after every event was yielded.
    """
    stats = stats if stats is not None else ScanStats()
    kind = resolve(engine)
    runner = new_engine(
        kind,
        stats,
        max_flows,
        int(idle_timeout * 1e9),
        capture_filter=capture_filter,
        series=series,
    )
    found: list[CaptureError] = [] if errors is None else errors
    for event in run_set(capture_set, runner, kind, found, storage_options, capture_filter):
        if retractions or event.cls is not Severity.RETRACTION:
            yield event
    if errors is None and found:
        raise found[0]


def scan_sets(
    sources: Sequence[str],
    *,
    mode: str = "continue",
    retractions: bool = False,
    engine: str = "auto",
    max_flows: int = DEFAULT_MAX_FLOWS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    stats: ScanStats | None = None,
    errors: list[CaptureError] | None = None,
    storage_options: StorageOptions | None = None,
    capture_filter: CaptureFilter | None = None,
) -> Iterator[Event]:
    """Every event of every capture set ``sources`` form, set after set (``capture_filter``:
    analyse only the frames a tcpdump expression keeps, as ``treason.scan``)."""
    stats = stats if stats is not None else ScanStats()
    found: list[CaptureError] = [] if errors is None else errors
    for capture_set in plan_sets(sources, mode, storage_options):
        yield from scan_set(
            capture_set,
            retractions=retractions,
            engine=engine,
            max_flows=max_flows,
            idle_timeout=idle_timeout,
            stats=stats,
            errors=found,
            storage_options=storage_options,
            capture_filter=capture_filter,
        )
    if errors is None and found:
        raise found[0]
