"""The graph series ``plot`` collects in the scanning pass: both engines, point for point.

The reference collector (``treason.series``) and the compiled scanner's "plot series"
section keep the same points of the same connections, also when the flow table evicts flows
and when tiny caps force the sampling stride up many times; the rule itself (detail around
every event, bounded overview, the last point) is checked on a long transfer.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies import to_pcap
from test_fastpath import LIMITS, capture, damaged
from test_plot import KERNEL, SHRINK, bulk_transfer
from treason.engine.choose import new_engine
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.readers import open_frames
from treason.scanner import fast_available, scan
from treason.seq import MOD
from treason.series import AFTER, BEFORE, SeriesCollector

needs_fast = pytest.mark.skipif(
    not fast_available(), reason="the compiled scanner is not built (no C compiler)"
)
CAPS = st.sampled_from([1, 2, 3, 7, 4096])


def collect(data: bytes, engine: str, cap: int, **limits) -> tuple[list, list]:
    collector = SeriesCollector(cap=cap)
    events = []
    try:
        for e in scan(io.BytesIO(data), engine=engine, retractions=True, series=collector,
                      **limits):  # fmt: skip
            events.append(e.key())
    except CaptureError:
        pass
    return events, collector.result()


@needs_fast
@pytest.mark.parametrize("cap", [1, 3, 4096])
@pytest.mark.parametrize("path", [KERNEL, SHRINK], ids=["kernel", "shrink"])
def test_examples_agree(path, cap):
    data = path.read_bytes()
    ref = collect(data, "reference", cap)
    assert collect(data, "fast", cap) == ref
    assert ref[1]


@needs_fast
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=capture(), limits=LIMITS, cap=CAPS)
def test_generated_captures_agree(data, limits, cap):
    assert collect(data, "fast", cap, **limits) == collect(data, "reference", cap, **limits)


@needs_fast
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(), cap=CAPS)
def test_damaged_captures_agree(data, cap):
    assert collect(data, "fast", cap) == collect(data, "reference", cap)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_detail_around_the_event_and_a_bounded_overview(engine):
    if engine == "fast" and not fast_available():
        pytest.skip("the compiled scanner is not built")
    n, shrink_at, cap = 3_000, 2_000, 64
    segs = bulk_transfer(n, MOD - 1_000_500, shrink_at)
    events, series = collect(to_pcap(segs), engine, cap)
    (frame,) = [e[0] for e in events]
    ((_, points),) = series
    frames = [p[1] for p in points]
    assert frames == sorted(frames)
    # Frames are numbered from 1 in segment order: the event's neighbours are all there.
    assert set(range(frame - BEFORE, frame + AFTER + 1)) <= set(frames)
    # The overview: about cap points over the whole transfer (2 * cap at most before the
    # stride doubles), plus the detail, plus the last point.
    assert len(points) <= 2 * cap + BEFORE + AFTER + 2
    assert frames[0] == 1 and frames[-1] == len(segs)


def engine_series(engine: str, batches: list[list]) -> tuple[list, list]:
    """Frames fed in batches to one engine made with ``series=`` (as ``live`` feeds it), then
    the end of the stream: the events and the collected series."""
    collector = SeriesCollector(cap=3)
    runner = new_engine(engine, ScanStats(), 2, 10**9, series=collector)
    events = []
    for batch in batches:
        events += runner.feed(batch)
    events += runner.flush()
    return [e.key() for e in events], collector.result()


@needs_fast
def test_frames_fed_in_batches_collect_the_same_series():
    # Two captures one after the other, numbered on as a live capture numbers its frames.
    both = [*open_frames(KERNEL), *open_frames(SHRINK)]
    frames = [dataclasses.replace(f, number=i) for i, f in enumerate(both, 1)]
    batches = [frames[i : i + 97] for i in range(0, len(frames), 97)]
    ref = engine_series("reference", batches)
    assert engine_series("fast", batches) == ref
    assert len(ref[1]) >= 2


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_flush_ends_every_series_and_a_flow_that_goes_on_starts_anew(engine):
    if engine == "fast" and not fast_available():
        pytest.skip("the compiled scanner is not built")
    frames = list(open_frames(SHRINK))
    collector = SeriesCollector()
    runner = new_engine(engine, ScanStats(), 100, 10**12, series=collector)
    runner.feed(frames)
    runner.flush()
    first = collector.result()
    assert first and all(points for _, points in first)
    runner.flush()  # nothing new: nothing more
    assert collector.result() == first
