"""Scan captures for window shrinks: the public entry point, which picks and drives an engine.

Two engines produce the same events and the same counters (``treason.engine``): ``reference``
runs the readable model one Python object at a time; ``fast`` (the compiled scanner) does the
same work in C over whole chunks. ``auto`` picks the fast one when it is built.
"""

from __future__ import annotations

from collections.abc import Iterator

from treason.capfilter import CaptureFilter
from treason.engine.choose import compiled_available, new_engine
from treason.engine.protocol import Engine
from treason.engine.stats import ScanStats
from treason.errors import CaptureError, TruncatedCapture
from treason.events import Event, Severity
from treason.readers import Capture, CaptureSource, display_name, open_capture
from treason.series import SeriesCollector

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_FLOWS",
    "ScanStats",
    "fast_available",
    "scan",
]

DEFAULT_MAX_FLOWS = 500_000
DEFAULT_IDLE_TIMEOUT = 600.0  # seconds; longer than Linux's 240 s zero-window give-up


def fast_available() -> bool:
    """Whether ``engine="fast"`` can run (the compiled scanner was built)."""
    return compiled_available()


def scan(
    source: CaptureSource,
    *,
    retractions: bool = False,
    engine: str = "auto",
    max_flows: int = DEFAULT_MAX_FLOWS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    stats: ScanStats | None = None,
    series: SeriesCollector | None = None,
    capture_filter: CaptureFilter | None = None,
) -> Iterator[Event]:
    """Yield every window-shrink event of one capture, in frame order.

    ``source`` is a path, ``"-"`` for standard input, or a binary stream. Retractions (edge
    moved back by less than the scale granularity) are counted in ``stats`` and yielded only
    with ``retractions=True``. A capture that ends inside a record is reported up to that
    point with a warning in ``stats.warnings``; other damage raises ``CaptureError`` after
    every event before it has been yielded. ``series`` and ``capture_filter`` are engine options
    (``treason.engine.choose.new_engine``): collect the plot series of the connections with
    events in the same pass (``treason.series``); analyse only the frames a tcpdump expression
    keeps (``treason.capfilter``).
    """
    stats = stats if stats is not None else ScanStats()
    runner = new_engine(
        engine,
        stats,
        max_flows,
        int(idle_timeout * 1e9),
        series=series,
        capture_filter=capture_filter,
    )
    name = display_name(source)
    try:
        with open_capture(source, name) as capture:
            for event in drive(runner, capture):
                event.file = name
                if retractions or event.cls is not Severity.RETRACTION:
                    yield event
    except TruncatedCapture as exc:
        stats.warnings.append(str(exc))


def drive(engine: Engine, capture: Capture) -> Iterator[Event]:
    """Every event of one capture, the open ones made final at its end.

    Damage ends the capture: every event before it is yielded first (including the ones it
    left open), then the damage is raised.
    """
    damage: CaptureError | None = None
    try:
        yield from engine.read(capture)
    except CaptureError as exc:
        damage = exc
    yield from engine.flush()
    if damage is not None:
        raise damage
