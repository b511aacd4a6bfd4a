"""The model's behaviour through the engine protocol, on the reference engine always.

Each scenario pins what the reference model does (``docs/model.md``: zero-window events held
open for data in flight, the 200 ms hold on the capture clock, flows ended by idle, cap or
reuse, ``advance`` on the wall clock, an unknown scale); when the compiled engine is built the
same scenario must give the same events, counters and release points on it too.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import types
from typing import Any

import pytest

from captures import MS, T0, Packets, pcap
from treason.engine.choose import compiled_available, new_engine
from treason.engine.stats import ScanStats
from treason.errors import CaptureError
from treason.packets import Frame
from treason.readers import open_capture, open_frames
from treason.scanner import drive, scan

FAST = compiled_available()
IDLE_NS = 600 * 10**9


def run(data: bytes, engine: str, **kw: Any) -> tuple[list[Any], dict[str, Any], Any]:
    """Events (as fields and as records), counters and the error of one scan of ``data``."""
    stats, events, error = ScanStats(), [], None
    try:
        for e in scan(io.BytesIO(data), engine=engine, retractions=True, stats=stats, **kw):
            events.append((dataclasses.asdict(e), e.to_dict()))
    except CaptureError as exc:
        error = (type(exc).__name__, str(exc), exc.offset)
    return events, stats.to_dict(), error


def outcome(data: bytes, **kw: Any) -> tuple[list[Any], dict[str, Any], Any]:
    """The reference engine's outcome, which the compiled one (when built) must equal."""
    ref = run(data, "reference", **kw)
    if FAST:
        assert run(data, "fast", **kw) == ref
    return ref


def _on_each(fn: Any, *args: Any) -> Any:
    ref = fn("reference", *args)
    if FAST:
        assert fn("fast", *args) == ref
    return ref


def _released(engine: str, data: bytes, max_flows: int, idle_ns: int) -> tuple[list, list]:
    runner = new_engine(engine, ScanStats(), max_flows, idle_ns)
    per_frame = [[e.frame for e in runner.feed([f])] for f in open_frames(io.BytesIO(data))]
    return per_frame, [e.frame for e in runner.flush()]


def released(data: bytes, max_flows: int = 500_000, idle_ns: int = IDLE_NS) -> tuple[list, list]:
    """Frames of the events each frame makes final, and of those final at the end."""
    return _on_each(_released, data, max_flows, idle_ns)


def _advanced(engine: str, data: bytes, clocks: list[int | None]) -> list[list[dict]]:
    runner = new_engine(engine, ScanStats(), 500_000, IDLE_NS)
    steps = []
    for frame, clock in zip(open_frames(io.BytesIO(data)), clocks, strict=True):
        steps.append([dataclasses.asdict(e) for e in runner.feed([frame])])
        if clock is not None:
            steps.append([dataclasses.asdict(e) for e in runner.advance(clock)])
    steps.append([dataclasses.asdict(e) for e in runner.flush()])
    return steps


def advanced(data: bytes, clocks: list[int | None]) -> list[list[dict]]:
    """Per step, the events made final: after each frame, then after ``advance(clock)``."""
    return _on_each(_advanced, data, clocks)


def zero_window_flow(port: int = 1000) -> Packets:
    """Handshake without window scaling, 1000 bytes acknowledged, then the window closes.

    Frame 6 is the event: the edge goes back from 4001 to 2001 with nothing outstanding, a
    plain shrink for now, held open because the window is zero.
    """
    p = Packets()
    p.c(1000, 0, 64240, flags=0x02, port=port)
    p.v(5000, 1001, 65160, flags=0x12, port=port)
    p.c(1001, 5001, 502, port=port)
    p.c(1001, 5001, 502, plen=1000, port=port)
    p.v(5001, 1001, 3000, port=port)  # edge 4001
    p.v(5001, 2001, 0, port=port)  # edge 2001: frame 6
    return p


# --------------------------------------------------------------------------------------------
# Classes, duplicates, PAWS, an unknown scale


def test_kernel_visible_shrink_duplicate_and_reset() -> None:
    p = Packets()
    p.c(100, 0, 64240, flags=0x02, ws=7)
    p.v(500, 101, 65160, flags=0x12, ws=7)
    p.c(101, 501, 502)
    p.v(501, 101, 500)
    p.c(101, 501, 502, plen=1448, flags=0x18)
    p.v(501, 1101, 0)
    p.frames.append(p.frames[-1])  # a span-port copy
    p.v(501, 1101, 0, flags=0x14)
    events, stats, error = outcome(p.pcap())
    assert error is None
    assert [e["cls"] for e, _ in events] == [4]
    assert stats["model"]["duplicates"] == 1 and stats["model"]["resets"] == 1
    assert stats["handshakes"] == 1


def test_beyond_event_under_an_unknown_scale() -> None:
    """Mid-connection capture (scale unknown): a shrink past data already sent."""
    p = Packets()
    p.c(5000, 9000, 500, plen=1000)
    p.v(9000, 5000, 4000)
    p.c(5000, 9000, 500, plen=3000)
    p.v(9000, 5500, 10)
    p.v(9000, 6000, 5)
    events, _stats, error = outcome(p.pcap())
    assert error is None
    assert [(e["cls"], e["scale_known"], e["frame"]) for e, _ in events] == [(3, False, 4)]


def test_reordered_update_rejected_by_timestamps() -> None:
    """PAWS: the same ACK with an older TSval arrives after a newer one and is not an update."""
    p = Packets()
    p.c(5000, 9000, 500, plen=100, tsval=10)
    p.v(9000, 5100, 4000, tsval=100)
    p.v(9000, 5100, 4100, tsval=102)
    p.v(9000, 5100, 1000, tsval=101)
    events, stats, _ = outcome(p.pcap())
    assert stats["model"]["paws_rejects"] == 1 and events == []


# --------------------------------------------------------------------------------------------
# Zero-window events held open (model.FlowTable: in-flight data, frame order, 200 ms hold)


def test_in_flight_data_after_a_zero_window_is_kernel_visible() -> None:
    """Data the capture shows after the zero-window ACK was in flight: it counts toward Y."""
    p = zero_window_flow()
    p.c(2001, 5001, 502, plen=1000)  # in flight
    p.c(3001, 5001, 502, plen=500)  # in flight
    p.c(2000, 5001, 502, plen=1)  # a zero-window probe: SND.NXT stays
    p.c(3501, 5001, 502)  # pure ACK: no new data
    events, _stats, error = outcome(p.pcap())
    assert error is None
    ((event, record),) = events
    assert (event["frame"], event["cls"], event["certainty"]) == (6, 4, "definite")
    assert (event["snd_una"], event["snd_nxt"], event["beyond_bytes"]) == (2001, 3501, 1500)
    assert record["kernel_line"].endswith("shrunk window 2001:3501 (repaired)")
    assert released(p.pcap()) == ([[]] * 10, [6])


def test_reopened_window_releases_the_event_in_frame_order() -> None:
    """A window update above zero makes the event final; later data no longer counts, and
    another flow's event made while it was open waits behind it."""
    p = zero_window_flow()
    p.other(100)
    p.other(50)  # frame 8: another flow's shrink, made while frame 6 is open
    p.v(5001, 2001, 4000)  # frame 9: the window reopens
    p.c(2001, 5001, 502, plen=1000)  # sent into the open window: not in flight
    events, _stats, _ = outcome(p.pcap())
    assert [(e["frame"], e["cls"], e["snd_nxt"]) for e, _ in events] == [(6, 2, 2001), (8, 2, 1)]
    per_frame, at_end = released(p.pcap())
    assert per_frame == [[]] * 8 + [[6, 8], []] and at_end == []


def test_each_zero_window_event_takes_only_its_own_in_flight_data() -> None:
    """A side holds one event open; once the window reopens, data counts toward the next."""
    p = zero_window_flow()
    p.v(5001, 2001, 0)  # same update again (a copy with another IP ID): no event
    p.c(2001, 5001, 502, plen=1000)  # in flight: frame 6 becomes kernel-visible
    p.v(5001, 3001, 10)  # frame 9, edge 3011: the window reopens, frame 6 is final
    p.v(5001, 3001, 0)  # frame 10: a second zero window
    p.c(3001, 5001, 502, plen=100)  # in flight for frame 10 only
    events, _stats, _ = outcome(p.pcap())
    got = [(e["frame"], e["cls"], e["snd_nxt"]) for e, _ in events]
    assert got == [(6, 4, 3001), (10, 4, 3101)]
    assert released(p.pcap()) == ([[]] * 8 + [[6], [], []], [10])


@pytest.mark.parametrize(
    ("gap", "cls"), [(200 * MS - 1, 4), (200 * MS, 2), (200 * MS + 1, 2), (10 * MS, 4)]
)
def test_open_event_is_final_after_the_minimum_rto(gap: int, cls: int) -> None:
    """200 ms of capture time after the zero window, data is no longer in flight."""
    p = zero_window_flow()
    p.c(2001, 5001, 502, plen=1000, after=gap)
    events, _stats, _ = outcome(p.pcap())
    assert [e["cls"] for e, _ in events] == [cls]
    assert released(p.pcap())[0][6] == ([6] if cls == 2 else [])


def test_the_hold_runs_on_the_capture_clock_of_every_flow() -> None:
    """Another flow's packet 300 ms later ends the hold; a frame stamped earlier after it
    (clocks going backwards) does not reopen it."""
    p = zero_window_flow()
    p.other(100, after=300 * MS)
    p.c(2001, 5001, 502, plen=1000, after=-290 * MS)
    events, _stats, _ = outcome(p.pcap())
    assert [(e["frame"], e["cls"]) for e, _ in events] == [(6, 2)]
    assert released(p.pcap())[0][6] == [6]


@pytest.mark.parametrize("how", ["idle", "cap", "reuse"])
def test_dropped_flow_makes_its_open_event_final(how: str) -> None:
    """Idle eviction, cap eviction and a reused 4-tuple end the flow and its in-flight data."""
    p = zero_window_flow()
    limits: dict[str, Any] = {"max_flows": 500_000, "idle_timeout": 600.0}
    if how == "idle":
        limits["idle_timeout"] = 0.05
        p.other(100, after=60 * MS)  # the zero-window flow has been idle too long
    elif how == "cap":
        limits["max_flows"] = 1
        p.other(100)  # a second flow evicts it
    else:
        p.c(2001, 5001, 502, flags=0x14)  # RST: the 4-tuple may be reused
        p.c(77000, 0, 64240, flags=0x02)  # new SYN on the same 4-tuple
    p.c(2001, 5001, 502, plen=1000)  # too late: a different (resumed or new) flow
    p.other(50)
    events, stats, _ = outcome(p.pcap(), **limits)
    first = events[0][0]
    assert (first["frame"], first["cls"], first["snd_nxt"]) == (6, 2, 2001)
    expected = {"idle": ("evicted_idle", 1), "cap": ("evicted_cap", 1), "reuse": ("flows", 3)}
    counter, at_least = expected[how]
    assert stats[counter] >= at_least
    idle_ns = int(limits["idle_timeout"] * 10**9)
    per_frame, _ = released(p.pcap(), limits["max_flows"], idle_ns)
    dropped_at = 8 if how == "reuse" else 7  # the frame that ends the flow
    assert per_frame[dropped_at - 1] == [6] and not any(per_frame[: dropped_at - 1])


@pytest.mark.parametrize("damage", ["cut", "bad-record"])
def test_damage_while_an_event_is_open_reports_every_event_before_it(damage: str) -> None:
    """The capture ends (or breaks) with a zero-window event open and another flow's event
    behind it: both are reported, in frame order, with data in flight counted."""
    p = zero_window_flow()
    p.other(100)
    p.other(50)  # frame 8, waits behind frame 6
    p.c(2001, 5001, 502, plen=1000)  # in flight
    p.c(3001, 5001, 502, plen=1000)  # the damaged last record
    data = p.pcap()
    if damage == "cut":
        data = data[:-10]
    else:
        last = len(data) - (16 + len(p.frames[-1][1]))
        data = data[: last + 8] + struct.pack("<I", 300_000) + data[last + 12 :]
    events, stats, error = outcome(data)
    assert [(e["frame"], e["cls"], e["snd_nxt"]) for e, _ in events] == [(6, 4, 3001), (8, 2, 1)]
    if damage == "cut":
        assert error is None and stats["warnings"]
    else:
        assert error is not None and error[0] == "CaptureError"


def test_many_open_events_stay_in_frame_order() -> None:
    """Thousands of flows each closing the window, none reopened within 200 ms of each other:
    the queue behind the oldest open event grows and drains without losing order."""
    p = Packets()
    for i in range(1500):
        port = 1024 + i
        p.c(1000, 0, 64240, flags=0x02, after=0, port=port)
        p.v(5000, 1001, 65160, flags=0x12, after=0, port=port)
        p.v(5001, 1001, 3000, after=0, port=port)
        p.v(5001, 1001, 0, after=MS // 10, port=port)
        p.c(1001, 5001, 502, plen=100, after=0, port=port)
    events, _stats, _ = outcome(p.pcap(), max_flows=1000)
    assert [e["frame"] for e, _ in events] == [5 * i + 4 for i in range(1500)]
    assert {e["cls"] for e, _ in events} == {4}


# --------------------------------------------------------------------------------------------
# The clock moving without packets (``treason live``)


@pytest.mark.parametrize(
    ("clock", "out"), [(200 * MS - 1, []), (200 * MS, [6]), (-(1 << 130), []), (1 << 90, [6])]
)
def test_advance_makes_an_open_event_final_on_the_wall_clock(clock: int, out: list) -> None:
    """No packet after the zero window: ``advance`` alone ends the hold, at exactly 200 ms."""
    p = zero_window_flow()
    zero_at = p.frames[-1][0]
    clocks: list[int | None] = [None] * 5 + [clock if abs(clock) >= 1 << 64 else zero_at + clock]
    steps = advanced(p.pcap(), clocks)
    assert [e["frame"] for e in steps[-2]] == out
    assert [e["frame"] for e in steps[-1]] == ([] if out else [6])


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_advance_does_not_move_the_idle_clock(engine: str) -> None:
    """A wall clock far ahead ends holds but evicts nothing: eviction runs on capture time."""
    if engine == "fast" and not FAST:
        pytest.skip("the compiled scanner is not built (no C compiler)")
    p = zero_window_flow()
    p.c(2001, 5001, 502, plen=1000)
    stats = ScanStats()
    runner = new_engine(engine, stats, 500_000, 10**9)
    frames = list(open_frames(io.BytesIO(p.pcap())))
    runner.feed(frames[:6])
    assert [e.frame for e in runner.advance(frames[5].ts_ns + 10**15)] == [6]
    runner.feed(frames[6:])
    assert stats.evicted_idle == 0 and stats.flows == 1 and runner.active_flows == 1


# --------------------------------------------------------------------------------------------
# The protocol itself


def _fed_in_pieces(engine: str, data: bytes, sizes: list[int]) -> tuple[list, list, dict]:
    """Frames fed as frames and as records in batches, the clock advanced between batches:
    per call, the frames of the events made final; every event; the counters at the end."""
    stats = ScanStats()
    runner = new_engine(engine, stats, 2, 10**8)
    frames = list(open_frames(io.BytesIO(data)))
    steps: list[Any] = []
    events: list[dict] = []
    pos = i = 0
    while pos < len(frames):
        batch = frames[pos : pos + sizes[i % len(sizes)]]
        if i % 2:
            records = b"".join(
                struct.pack("=IIII", f.ts_ns // 10**9, f.ts_ns % 10**9, len(f.data), f.orig_len)
                + f.data
                for f in batch
            )
            got = runner.feed_records(records, 1)
        else:
            got = runner.feed(batch)
        later = runner.advance(batch[-1].ts_ns + 150 * MS)
        steps.append(([e.frame for e in got], [e.frame for e in later], runner.active_flows))
        events += [dataclasses.asdict(e) for e in [*got, *later]]
        pos += len(batch)
        i += 1
    final = runner.flush()
    steps.append(([e.frame for e in final], [], runner.active_flows))
    events += [dataclasses.asdict(e) for e in final]
    return steps, events, stats.to_dict()


def test_frames_and_records_fed_in_batches_give_the_scan_events() -> None:
    """``feed`` and ``feed_records`` mixed, with ``advance`` between: the events and counters of
    a scan of the same frames (``advance`` may only make events final earlier)."""
    p = zero_window_flow()
    p.other(100)
    p.other(50)
    p.c(2001, 5001, 502, plen=1000)
    p.v(5001, 3001, 0)
    _steps, fed, fed_stats = _on_each(_fed_in_pieces, p.pcap(), [1, 3, 2])
    events, stats, _ = outcome(p.pcap(), max_flows=2, idle_timeout=0.1)
    assert [(e["frame"], e["cls"]) for e in fed] == [(6, 4), (8, 2)]
    assert [(e["frame"], e["cls"]) for e, _ in events] == [(6, 4), (8, 2)]
    assert fed_stats == stats


def _in_sequence(engine: str, parts: list[bytes]) -> tuple[list, dict[str, Any]]:
    stats = ScanStats()
    runner = new_engine(engine, stats, 500_000, IDLE_NS)
    got = []
    for i, part in enumerate(parts):
        with open_capture(io.BytesIO(part), f"part{i}") as capture:
            got += [(i, e.frame, e.cls, e.snd_nxt) for e in runner.read(capture)]
    got += [(None, e.frame, e.cls, e.snd_nxt) for e in runner.flush()]
    return got, stats.to_dict()


def test_captures_read_in_sequence_continue_their_flows() -> None:
    """Framing (format, frame numbers, offsets) is per capture; the flow table carries on, so
    the in-flight data of the second file completes the first file's open event."""
    p = zero_window_flow()
    first = pcap(p.frames)
    p.frames = []
    p.c(2001, 5001, 502, plen=1000)
    p.v(5001, 3001, 100)
    second = pcap(p.frames, nano=True, order=">")
    got, stats = _on_each(_in_sequence, [first, second])
    assert got == [(1, 6, 4, 3001)]  # made final by frame 2 of the second file
    assert stats["frames"] == 8 and stats["flows"] == 1


def test_scan_drives_the_engine_to_the_end_of_a_damaged_capture() -> None:
    """``drive`` yields what the engine made final, then the open events, then the damage."""
    p = zero_window_flow()
    data = p.pcap() + b"garbage!" * 3
    runner = new_engine("reference", ScanStats(), 500_000, IDLE_NS)
    got = []
    with pytest.raises(CaptureError, match="at byte"), open_capture(io.BytesIO(data)) as cap:
        for event in drive(runner, cap):
            got.append(event.frame)
    assert got == [6]


def test_a_scanner_that_names_its_fields_differently_is_refused() -> None:
    """The compiled side's event fields, skip reasons, counters and series points are checked
    in order."""
    from treason.engine import compiled

    good = {
        "EVENT_FIELDS": compiled.EVENT_FIELDS,
        "SKIP_REASONS": compiled.SKIP_REASONS,
        "MODEL_COUNTERS": compiled.MODEL_COUNTERS,
        "MARK_EVENT": 1,
        "MARK_SHOWN": 2,
        "MARK_ZERO": 4,
        "SEGREC_FORMAT": compiled.SEGREC_FORMAT,
        "FILTERED": "filtered out",
        "SERIES_POINT": "=qQIIIHBB",
    }
    compiled.check_contract(types.SimpleNamespace(**good))
    swapped = list(compiled.EVENT_FIELDS)
    swapped[11], swapped[12] = swapped[12], swapped[11]
    for name, bad in [
        ("EVENT_FIELDS", tuple(swapped)),
        ("EVENT_FIELDS", compiled.EVENT_FIELDS[:-1]),
        ("MODEL_COUNTERS", compiled.MODEL_COUNTERS[::-1]),
        ("SKIP_REASONS", (*compiled.SKIP_REASONS, "new-reason")),
        ("FILTERED", "filtered"),
        ("SERIES_POINT", "=qQIIIHB"),
    ]:
        with pytest.raises(ImportError, match=name):
            compiled.check_contract(types.SimpleNamespace(**{**good, name: bad}))
    if FAST:
        from treason import _fastscan

        compiled.check_contract(_fastscan)


def test_a_frame_of_another_link_type_is_refused_by_the_compiled_engine() -> None:
    if not FAST:
        pytest.skip("the compiled scanner is not built (no C compiler)")
    runner = new_engine("fast", ScanStats(), 10, 10**9)
    runner.feed([Frame(1, T0, 1, b"\0" * 14, 14)])
    with pytest.raises(ValueError, match="link type 101"):
        runner.feed([Frame(2, T0, 101, b"\x45" + bytes(39), 40)])
