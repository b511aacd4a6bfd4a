"""Capture sets: a capture cut into pieces, scanned as a set, is the capture.

The property: any capture the tests have (the repository's examples, hand-made flows with
zero windows, idle evictions and resumptions, generated conversations), cut at any packet
boundaries or by time, with the pieces named in any order, scans to exactly the events and
counters of the whole capture, on both engines; each event names its piece and its frame
within that piece. Interleaving (``--merge``) is held to ``mergecap``'s output.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import itertools
import json
import lzma
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captures import MS, T0, Packets, epb, idb, pcap, pcap_records, shb, tools_missing
from strategies import conversations, to_pcap
from treason import scan
from treason.scanner import ScanStats, fast_available
from treason.sets import plan_sets, scan_sets

ENGINES = ["reference"] + (["fast"] if fast_available() else [])
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.pcap"))


def handmade() -> dict[str, bytes]:
    """Flows whose state a cut can break: handshakes with scales, a zero window held open for
    data in flight, a flow evicted idle and resumed, and another flow moving the clock."""
    p = Packets()
    p.c(1000, 0, 64240, flags=0x02, ws=7)
    p.v(5000, 1001, 65160, flags=0x12, ws=7)
    p.c(1001, 5001, 502)
    p.c(1001, 5001, 502, plen=1000)
    p.v(5001, 1001, 300)
    p.v(5001, 2001, 0)  # zero window: held open
    p.c(2001, 5001, 502, plen=100, after=MS // 10)  # in flight: makes it kernel-visible
    p.other(900)
    p.other(400, after=150 * MS)  # moves the clock past the hold
    p.c(1000, 0, 64240, flags=0x02, ws=2, port=1001)
    p.v(9000, 1001, 65160, flags=0x12, ws=2, port=1001)
    p.c(1001, 9001, 502, port=1001)
    p.v(9001, 1001, 500, port=1001)
    p.other(300, after=3_000 * MS)  # the port-1000 flow goes idle (2 s timeout below)
    p.v(5001, 2101, 100, after=MS)  # resumes without its handshake
    p.v(5001, 2101, 50)
    p.v(9001, 1001, 10, port=1001)
    return {"handmade": p.pcap()}


def tunnelled() -> dict[str, bytes]:
    """The same inner conversation (one shrink each) in every encapsulation treason opens,
    interleaved: tenants with the same inner addresses on other tunnels are other flows."""
    import tunnels

    flows = [
        [wrap(p) for p in tunnels.conversation(v6=n % 2 == 1)]
        for n, (wrap, _) in enumerate(tunnels.ENCAPSULATIONS.values())
    ]
    frames = []
    for step in range(max(map(len, flows))):
        for flow in flows:
            if step < len(flow):
                frames.append((T0 + len(frames) * MS, flow[step]))
    return {"tunnelled": pcap(frames, nano=True)}


def corpus() -> dict[str, bytes]:
    found = {path.name: path.read_bytes() for path in EXAMPLES}
    found.update(handmade())
    found.update(tunnelled())
    return found


CORPUS = corpus()
#: Small enough that the hand-made capture evicts an idle flow.
LIMITS = {"idle_timeout": 2.0}


def records_of(blob: bytes) -> tuple[bytes, list[bytes], list[int]]:
    """A little-endian pcap's header, records and record times (ns)."""
    header, records = pcap_records(blob)
    nano = struct.unpack_from("<I", header)[0] == 0xA1B23C4D
    times = []
    for rec in records:
        sec, frac = struct.unpack_from("<II", rec)
        times.append(sec * 10**9 + frac * (1 if nano else 1000))
    return header, records, times


def outcome(sources: list[str], engine: str, **kw: Any) -> tuple[list[dict], dict]:
    stats = ScanStats()
    events = [
        e.to_dict()
        for e in scan_sets(sources, engine=engine, retractions=True, stats=stats, **LIMITS, **kw)
    ]
    return events, stats.to_dict()


def whole(blob: bytes, engine: str) -> tuple[list[dict], dict]:
    stats = ScanStats()
    events = [
        e.to_dict()
        for e in scan(io.BytesIO(blob), engine=engine, retractions=True, stats=stats, **LIMITS)
    ]
    return events, stats.to_dict()


def write_pieces(folder: Path, header: bytes, groups: list[list[bytes]]) -> list[Path]:
    paths = []
    for n, group in enumerate(groups):
        path = folder / f"piece_{n}.pcap"
        path.write_bytes(header + b"".join(group))
        paths.append(path)
    return paths


def as_whole(events: list[dict], paths: list[Path], groups: list[list[bytes]]) -> list[dict]:
    """Events of the pieces with (file, frame) turned back into the whole capture's frame."""
    offset, first = 0, {}
    for path, group in zip(paths, groups, strict=True):
        first[str(path)] = offset
        offset += len(group)
    out = []
    for e in events:
        assert e["capture_set"] == 1
        out.append({**e, "file": "<whole>", "frame": first[e["file"]] + e["frame"]})
    return out


def check_pieces(blob: bytes, groups: list[list[bytes]], order: list[int], header: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pieces(Path(tmp), header, groups)
        named = [str(paths[i]) for i in order]
        for engine in ENGINES:
            expected_events, expected_stats = whole(blob, engine)
            events, stats = outcome(named, engine)
            assert stats == expected_stats
            got = as_whole(events, paths, groups)
            want = [{**e, "file": "<whole>"} for e in expected_events]
            assert got == want


def cuts(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, max(1, n - 1)), max_size=12, unique=True).map(sorted)


def split_at(records: list[bytes], at: list[int]) -> list[list[bytes]]:
    bounds = [0, *[a for a in at if 0 < a < len(records)], len(records)]
    return [records[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def intervals(times: list[int]) -> st.SearchStrategy[int]:
    span = max(times) - times[0] + 1
    return st.integers(max(1, span // 40), span)


def by_time(records: list[bytes], times: list[int], interval: int) -> list[list[bytes]]:
    """Records cut every ``interval`` ns of capture time (as ``editcap -i``)."""
    groups: list[list[bytes]] = []
    last = None
    for rec, ts in zip(records, times, strict=True):
        slot = (ts - times[0]) // interval
        if slot != last:
            groups.append([])
            last = slot
        groups[-1].append(rec)
    return groups


SLOW = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@SLOW
@given(name=st.sampled_from(sorted(CORPUS)), data=st.data())
def test_cut_at_packet_boundaries_is_the_whole(name: str, data: st.DataObject) -> None:
    blob = CORPUS[name]
    header, records, _ = records_of(blob)
    groups = split_at(records, data.draw(cuts(len(records))))
    order = data.draw(st.permutations(range(len(groups))))
    check_pieces(blob, groups, list(order), header)


@SLOW
@given(name=st.sampled_from(sorted(CORPUS)), data=st.data())
def test_cut_by_time_is_the_whole(name: str, data: st.DataObject) -> None:
    blob = CORPUS[name]
    header, records, times = records_of(blob)
    groups = by_time(records, times, data.draw(intervals(times)))
    order = data.draw(st.permutations(range(len(groups))))
    check_pieces(blob, groups, list(order), header)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(conv=conversations(inject=True), data=st.data())
def test_generated_conversations_cut_anywhere(conv: Any, data: st.DataObject) -> None:
    segments = sorted(conv.segments, key=lambda s: s.ts_ns)
    segments = [dataclasses.replace(s, frame=n) for n, s in enumerate(segments, 1)]
    blob = to_pcap(segments)
    header, records, _ = records_of(blob)
    groups = split_at(records, data.draw(cuts(len(records))))
    order = data.draw(st.permutations(range(len(groups))))
    check_pieces(blob, groups, list(order), header)


def test_a_cut_where_time_steps_back_a_little_continues_the_set(tmp_path: Path) -> None:
    """Packets stamped on several CPUs step back in time by microseconds (a real veth capture
    here: up to 12 µs); a rotation boundary that falls there still continues the set."""
    header, records, times = records_of(CORPUS["handmade"])
    unit = 1 if struct.unpack_from("<I", header)[0] == 0xA1B23C4D else 1000
    back = times[3] - 5_000  # the first packet of the second piece: 5 µs before the last
    stepped = list(records)
    rec = bytearray(stepped[4])
    struct.pack_into("<II", rec, 0, back // 10**9, back % 10**9 // unit)
    stepped[4] = bytes(rec)
    groups = split_at(stepped, [4])
    paths = write_pieces(tmp_path, header, groups)
    assert [len(s.pieces) for s in plan_sets([str(p) for p in paths])] == [2]
    check_pieces(header + b"".join(stepped), groups, [1, 0], header)


def test_overlapping_files_are_separate_sets_and_each_scans_alone(tmp_path: Path) -> None:
    """Two vantage points of the same time are two captures; --each keeps files apart."""
    header, records, _ = records_of(CORPUS["handmade"])
    a = tmp_path / "a.pcap"
    b = tmp_path / "b.pcap"
    a.write_bytes(header + b"".join(records))
    b.write_bytes(header + b"".join(records[1:]))
    sets = plan_sets([str(b), str(a)])
    assert [s.sources for s in sets] == [[str(a)], [str(b)]]
    one = len(whole(CORPUS["handmade"], "reference")[0])
    events, _ = outcome([str(b), str(a)], "reference")
    assert {e["capture_set"] for e in events} == {1, 2}
    assert len([e for e in events if e["file"] == str(a)]) == one
    cut = write_pieces(tmp_path, header, split_at(records, [5]))
    assert [s.sources for s in plan_sets([str(p) for p in cut], "each")] == [
        [str(cut[0])],
        [str(cut[1])],
    ]


@pytest.mark.skipif(bool(tools_missing("mergecap")), reason="mergecap (wireshark) not installed")
@pytest.mark.parametrize("engine", ENGINES)
def test_merge_interleaves_as_mergecap(tmp_path: Path, engine: str) -> None:
    """Flows split between two files that overlap in time: --merge reads them as mergecap's
    merged file, event for event and counter for counter."""
    header, records, _ = records_of(CORPUS["handmade"])
    left = [r for i, r in enumerate(records) if i % 3 != 1]
    right = [r for i, r in enumerate(records) if i % 3 == 1]
    a, b, merged = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "m.pcap"
    a.write_bytes(header + b"".join(left))
    b.write_bytes(header + b"".join(right))
    subprocess.run(["mergecap", "-F", "nsecpcap", "-w", str(merged), str(a), str(b)], check=True)
    want_events, want_stats = whole(merged.read_bytes(), engine)
    events, stats = outcome([str(b), str(a)], engine, mode="merge")
    assert stats == want_stats
    _, merged_records, _ = records_of(merged.read_bytes())
    where = {r: n for n, r in enumerate(merged_records, 1)}
    by_file = {str(a): left, str(b): right}
    got = [{**e, "file": "", "frame": where[by_file[e["file"]][e["frame"] - 1]]} for e in events]
    assert got == [{**e, "file": ""} for e in want_events]
    assert want_events, "the merged capture should have events"


def treason_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treason", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_reports_the_sets(tmp_path: Path) -> None:
    header, records, _ = records_of(CORPUS["handmade"])
    paths = write_pieces(tmp_path, header, split_at(records, [4, 9, 12]))
    names = [str(p) for p in reversed(paths)]
    text = treason_cli("scan", *names)
    assert "capture set 1 (4 files, read in time order): " + ", ".join(map(str, paths)) in (
        text.stdout
    )
    js = treason_cli("scan", "-f", "json", "-q", *names)
    rows = [json.loads(line) for line in js.stdout.splitlines()]
    assert rows and all(r["capture_set"] == 1 for r in rows)
    each = treason_cli("scan", "-f", "json", "-q", "--each", *names)
    assert {json.loads(line)["capture_set"] for line in each.stdout.splitlines()} != {1}
    assert treason_cli("scan", "--each", "--merge", *names).returncode == 2


# --------------------------------------------------------------------------------------------
# The same property on a Dask cluster (a LocalCluster of two worker processes)


@pytest.fixture(scope="module")
def dask_client() -> Any:
    distributed = pytest.importorskip("distributed", reason="treason[dask] not installed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def on_dask(client: Any, sources: list[str], engine: str, **kw: Any) -> tuple[list[dict], dict]:
    from treason import dask as tdask

    done = tdask.scan(client, sources, engine=engine, retractions=True, **LIMITS, **kw)
    assert not done.errors
    return [e.to_dict() for e in done.events], done.stats.to_dict()


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sorted(CORPUS)), data=st.data())
def test_dask_scan_of_pieces_is_the_whole(dask_client: Any, name: str, data: st.DataObject) -> None:
    """Cut anywhere or by time, any order, both engines, 1 to 5 buckets: the plain scan's
    result."""
    blob = CORPUS[name]
    header, records, times = records_of(blob)
    if data.draw(st.booleans()):
        groups = by_time(records, times, data.draw(intervals(times)))
    else:
        groups = split_at(records, data.draw(cuts(len(records))))
    order = list(data.draw(st.permutations(range(len(groups)))))
    buckets = data.draw(st.integers(1, 5))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pieces(Path(tmp), header, groups)
        named = [str(paths[i]) for i in order]
        for engine in ENGINES:
            want_events, want_stats = whole(blob, engine)
            events, stats = on_dask(dask_client, named, engine, buckets=buckets)
            assert stats == want_stats
            assert as_whole(events, paths, groups) == [
                {**e, "file": "<whole>"} for e in want_events
            ]


def test_dask_flow_cap_is_global(dask_client: Any, tmp_path: Path) -> None:
    """--max-flows is one LRU over all flows: with more flows than the cap the buckets cannot
    see it, and the set is analysed as one table, giving the plain scan's evictions."""
    header, records, _ = records_of(CORPUS["handmade"])
    paths = write_pieces(tmp_path, header, split_at(records, [3, 8]))
    named = [str(p) for p in paths]
    for engine in ENGINES:
        want = outcome(named, engine, max_flows=1)
        assert want[1]["evicted_cap"] > 0
        assert on_dask(dask_client, named, engine, max_flows=1, buckets=3) == want


def test_cli_scheduler_local_equals_plain_scan(tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="treason[dask] not installed")
    header, records, _ = records_of(CORPUS["shrink.pcap"])
    paths = write_pieces(tmp_path, header, split_at(records, [10, 50, 51, 200]))
    names = [str(p) for p in reversed(paths)]
    plain = treason_cli("scan", "-f", "json", *names)
    dask = treason_cli("scan", "-f", "json", "--scheduler", "local", *names)
    assert plain.returncode == 1 and dask.returncode == 1, dask.stderr
    assert dask.stdout == plain.stdout
    assert plain.stderr in dask.stderr  # the summary; a busy machine may add a Dask warning


def test_damaged_piece_ends_that_piece_only(dask_client: Any, tmp_path: Path) -> None:
    """A piece cut inside a record and a piece with a broken record header: each piece is read
    up to its damage and the set goes on with the next; the plain scan, the set scan and the
    cluster agree on events, counters, the warning and the error, and the CLI exits 2."""
    blob = CORPUS["shrink.pcap"]
    header, records, _ = records_of(blob)
    groups = split_at(records, [40, 80, 120, 160])
    paths = write_pieces(tmp_path, header, groups)
    paths[1].write_bytes(paths[1].read_bytes()[:-7])  # cut inside its last record
    broken = bytearray(paths[3].read_bytes())
    at = 24 + sum(len(r) for r in groups[3][:5])  # the sixth record's header
    broken[at + 8 : at + 12] = (10**7).to_bytes(4, "little")  # caplen beyond any limit
    paths[3].write_bytes(bytes(broken))
    named = [str(p) for p in paths[::-1]]
    for engine in ENGINES:
        stats = ScanStats()
        errors: list[Any] = []
        events = [e.to_dict() for e in scan_sets(named, engine=engine, stats=stats, errors=errors)]
        assert len(stats.warnings) == 1 and str(paths[1]) in stats.warnings[0]
        assert [e.source for e in errors] == [str(paths[3])]
        assert stats.frames == sum(map(len, groups)) - 1 - (len(groups[3]) - 5)
        from treason import dask as tdask

        done = tdask.scan(dask_client, named, engine=engine)
        assert [e.to_dict() for e in done.events] == events
        assert done.stats.to_dict() == stats.to_dict()
        assert done.errors == [str(e) for e in errors]
    res = treason_cli("scan", "-f", "json", "-q", *named)
    assert res.returncode == 2
    assert f"treason: {errors[0]}" in res.stderr and "warning" in res.stderr
    assert len(res.stdout.splitlines()) == len(events) > 0


@pytest.mark.parametrize("engine", ENGINES)
def test_pcapng_and_gzip_pieces(tmp_path: Path, engine: str) -> None:
    """Pieces in pcapng (each with its own section and interface, nanosecond times) and
    gzip-, bzip2- and xz-compressed pcap, mixed in one set: the whole capture's events and
    counters."""
    blob = CORPUS["handmade"]
    _, records, times = records_of(blob)
    groups = split_at(records, [3, 6, 10, 13])
    paths = []
    for n, group in enumerate(groups):
        if n % 2:
            data = (
                shb()
                + idb(1, tsresol=9)
                + b"".join(epb(0, times[records.index(r)], r[16:]) for r in group)
            )
            path = tmp_path / f"piece_{n}.pcapng"
            path.write_bytes(data)
        else:  # compressed as tcpdump -z gzip (or bzip2, or xz) leaves rotated files
            compress, suffix = (
                (gzip.compress, "gz"),
                (bz2.compress, "bz2"),
                (lzma.compress, "xz"),
            )[n // 2 % 3]
            path = tmp_path / f"piece_{n}.pcap.{suffix}"
            path.write_bytes(compress(records_of(blob)[0] + b"".join(group)))
        paths.append(path)
    events, stats = outcome([str(p) for p in paths[::-1]], engine)
    want_events, want_stats = whole(blob, engine)
    assert stats == want_stats
    assert as_whole(events, paths, groups) == [{**e, "file": "<whole>"} for e in want_events]


@pytest.mark.netns
@pytest.mark.parametrize("fixture", ["shrink_capture", "noshrink_capture", "iperf3_capture"])
def test_kernel_captures_cut_anywhere(fixture: str, request: pytest.FixtureRequest) -> None:
    """The real kernel captures of the test session, cut at random packet boundaries (seeded)
    and named in random order: the whole capture's events and counters, on both engines."""
    blob = request.getfixturevalue(fixture).read_bytes()
    header, records, _ = records_of(blob)
    rnd = random.Random(fixture)
    for _ in range(3):
        at = sorted(rnd.sample(range(1, len(records)), min(len(records) - 1, rnd.randint(1, 12))))
        groups = split_at(records, at)
        order = list(range(len(groups)))
        rnd.shuffle(order)
        check_pieces(blob, groups, order, header)


@pytest.mark.skipif(not fast_available(), reason="the compiled scanner is not built")
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_both_engines_split_into_the_same_records(name: str) -> None:
    """Segment records are one format: the compiled and the reference split write the same
    bytes, the same counters and the same span, and reading them back gives the segments the
    decoder makes."""
    from treason.decode import decode
    from treason.engine.choose import new_engine
    from treason.engine.segrec import position, unpack
    from treason.readers import frames, open_capture

    out = {}
    for engine in ("fast", "reference"):
        stats = ScanStats()
        splitter = new_engine(engine, stats, 1, 0)
        with open_capture(io.BytesIO(CORPUS[name]), name) as capture:
            parts = [b[0] for b in splitter.split(capture, 1, position(3))]
        out[engine] = (b"".join(parts), stats.to_dict(), splitter.span())
    assert out["fast"] == out["reference"]
    with open_capture(io.BytesIO(CORPUS[name]), name) as capture:
        segments = [s for s in map(decode, frames(capture)) if not isinstance(s, str)]
    back = [seg for seg, _ in unpack(out["fast"][0])]
    assert back == [dataclasses.replace(s, frame=position(3, s.frame)) for s in segments]


def test_cluster_refuses_stdin_before_starting() -> None:
    """Standard input on a cluster: one line, exit 2, no cluster started."""
    pytest.importorskip("distributed", reason="treason[dask] not installed")
    stdin = treason_cli("scan", "--scheduler", "local", "-")
    assert stdin.returncode == 2 and stdin.stderr.count("\n") == 1
    assert "standard input cannot be read by a cluster's workers" in stdin.stderr


@pytest.mark.skipif(bool(tools_missing("mergecap")), reason="mergecap (wireshark) not installed")
def test_dask_merge_is_the_plain_merge(dask_client: Any, tmp_path: Path) -> None:
    """--merge on the cluster: the plain interleaved scan's events (in its order), counters."""
    header, records, _ = records_of(CORPUS["handmade"])
    left = [r for i, r in enumerate(records) if i % 3 != 1]
    right = [r for i, r in enumerate(records) if i % 3 == 1]
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    a.write_bytes(header + b"".join(left))
    b.write_bytes(header + b"".join(right))
    named = [str(b), str(a), *(str(p) for p in EXAMPLES)]
    for engine in ENGINES:
        want = outcome(named, engine, mode="merge")
        assert want[0], "the interleaved set should have events"
        assert on_dask(dask_client, named, engine, mode="merge", buckets=3) == want


def test_urls_that_cannot_be_opened_are_one_line(tmp_path: Path) -> None:
    pytest.importorskip("fsspec", reason="treason[dask] not installed")
    missing = treason_cli("scan", (tmp_path / "none.pcap").as_uri())
    assert missing.returncode == 2
    assert missing.stderr == f"treason: {(tmp_path / 'none.pcap').as_uri()}: " + (
        "No such file or directory\n"
    )
    unknown = treason_cli("scan", "nosuch://x/y.pcap")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert unknown.stderr.startswith("treason: nosuch://x/y.pcap: ")


def test_capture_filter_on_sets_and_cluster(dask_client: Any, tmp_path: Path) -> None:
    """--filter on pieces: the frames it drops are counted where the pieces are read or split,
    the rest is the filtered whole capture's scan, on one process and on the cluster."""
    from treason.capfilter import CaptureFilter

    blob = CORPUS["handmade"]
    header, records, _ = records_of(blob)
    groups = split_at(records, [4, 9, 13])
    paths = write_pieces(tmp_path, header, groups)
    named = [str(p) for p in paths[::-1]]
    keep = CaptureFilter("tcp port 1000 or tcp port 2000")
    for engine in ENGINES:
        stats = ScanStats()
        want = [
            e.to_dict()
            for e in scan(io.BytesIO(blob), engine=engine, retractions=True, stats=stats,
                          capture_filter=keep, **LIMITS)
        ]  # fmt: skip
        assert stats.skipped["filtered out"] > 0 and want
        got, got_stats = outcome(named, engine, capture_filter=keep)
        assert got_stats == stats.to_dict()
        assert as_whole(got, paths, groups) == [{**e, "file": "<whole>"} for e in want]
        assert on_dask(dask_client, named, engine, capture_filter=keep) == (got, got_stats)


def test_pipes_are_read_once_each_a_capture_of_its_own() -> None:
    """``treason scan <(zcat a.gz) <(zcat b.gz)``: a pipe can be read only once, so it is never
    read ahead for its time span; each is a set of its own, and each is scanned whole."""
    alone = [
        subprocess.run(
            [sys.executable, "-m", "treason", "scan", "-f", "json", str(p)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for p in EXAMPLES
    ]
    pipes = " ".join(f"<(cat {p})" for p in EXAMPLES)
    res = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m treason scan -f json {pipes}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 1, res.stderr
    got = [json.loads(line) for line in res.stdout.splitlines()]
    want = [json.loads(line) for text in alone for line in text.splitlines()]
    assert [(e["frame"], e["new_edge"], e["class"]) for e in got] == [
        (e["frame"], e["new_edge"], e["class"]) for e in want
    ]
    assert len({e["capture_set"] for e in got}) == len(EXAMPLES)
