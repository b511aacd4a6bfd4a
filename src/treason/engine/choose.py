"""Which engine runs: ``auto`` is the compiled one when it is built, else the reference one."""

from __future__ import annotations

from treason.capfilter import CaptureFilter
from treason.engine.protocol import Engine
from treason.engine.reference import ReferenceEngine
from treason.engine.stats import ScanStats
from treason.series import SeriesCollector

ENGINES = ("auto", "fast", "reference")


def compiled_available() -> bool:
    """Whether the compiled scanner was built, imports and agrees with this side's names."""
    try:
        from treason.engine import compiled
    except ImportError:
        return False
    return compiled.available()


def resolve(kind: str) -> str:
    """``fast`` or ``reference`` for an engine name the user gave."""
    if kind == "auto":
        return "fast" if compiled_available() else "reference"
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}")
    return kind


def new_engine(
    kind: str,
    stats: ScanStats,
    max_flows: int,
    idle_timeout_ns: int,
    *,
    series: SeriesCollector | None = None,
    capture_filter: CaptureFilter | None = None,
) -> Engine:
    """A fresh engine (empty flow table) that adds its counts to ``stats``.

    ``series``: collect the plot series of the connections with events into it;
    ``capture_filter``: analyse only the frames it keeps (``treason.engine.protocol``).
    """
    if resolve(kind) == "fast":
        from treason.engine.compiled import CompiledEngine

        return CompiledEngine(
            stats, max_flows, idle_timeout_ns, series=series, capture_filter=capture_filter
        )
    return ReferenceEngine(
        stats, max_flows, idle_timeout_ns, series=series, capture_filter=capture_filter
    )
