"""``treason compare`` on real two-point captures: sender — router — receiver namespaces.

The router (nftables in its forward chain) rewrites windows, strips the window-scale option,
masquerades, or does nothing while the receiver really shrinks; tcpdump records the sender's
and the receiver's links. The verdicts must name the receiver or the path as the rules made
them, and tshark reads the windows of the paired frames independently.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import captures
from conftest import require, require_tshark
from netns_router import (
    ADDR6_B,
    ADDR_A,
    ADDR_B,
    ROUTER_B,
    capture_two_points,
    missing_nftables,
)
from treason.compare import AttributedEvent, Comparison, compare
from treason.compare.attribution import REORDERED
from treason.compare.fingerprint import Packet, fingerprint
from treason.compare.pairing import FAR, NEAR
from treason.compare.report import flows
from treason.decode import decode
from treason.engine.stats import ScanStats
from treason.packets import Frame
from treason.readers import open_frames
from treason.scanner import fast_available, scan

#: Every seventh pure ACK of the receiver leaves the router with window 1.
REWRITE_WINDOWS = f"""table inet t {{
 chain f {{
  type filter hook forward priority 0;
  ip saddr {ADDR_B} tcp sport 5001 tcp flags & (syn|ack) == ack numgen inc mod 7 == 0 \\
   tcp window set 1
 }}
}}
"""

#: The same over IPv6: every seventh pure ACK of the receiver leaves the router with window 1.
REWRITE_WINDOWS_V6 = REWRITE_WINDOWS.replace(f"ip saddr {ADDR_B}", f"ip6 saddr {ADDR6_B}")

#: Every seventh pure ACK of the receiver leaves the router with the largest window.
INFLATE_WINDOWS = REWRITE_WINDOWS.replace("tcp window set 1", "tcp window set 65535")

#: The data sender's SYN-ACK reaches the receiver without its window-scale option, and the
#: receiver's SYN has its MSS clamped.
STRIP_WSCALE = f"""table inet t {{
 chain f {{
  type filter hook forward priority 0;
  ip saddr {ADDR_A} tcp flags & (syn|ack) == syn|ack reset tcp option window
  ip saddr {ADDR_B} tcp flags & (syn|ack) == syn tcp option maxseg size set 1200
 }}
}}
"""

#: Source NAT with random ports towards the receiver.
MASQUERADE = f"""table ip t {{
 chain post {{
  type nat hook postrouting priority 100;
  ip daddr {ADDR_B} masquerade random
 }}
}}
"""


def _captures(tmp: Path, ruleset: str | None = None, **traffic: int) -> tuple[Path, Path]:
    require("tcpdump")
    if ruleset is not None and (reason := missing_nftables()):
        pytest.skip(reason)
    near, far = tmp / "near.pcap", tmp / "far.pcap"
    capture_two_points(near, far, ruleset=ruleset, **traffic)
    return near, far


@pytest.fixture(scope="module")
def path_rewrite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _captures(tmp_path_factory.mktemp("rewrite"), ruleset=REWRITE_WINDOWS, connections=2)


@pytest.fixture(scope="module")
def receiver_shrinks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # Whether a slow reader's kernel shrinks is a race: three connections make one sure.
    return _captures(tmp_path_factory.mktemp("receiver"), shrink_window=1, connections=3)


def _tshark_window(path: Path, frame: int) -> int:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            f"frame.number == {frame}",
            "-T",
            "fields",
            "-e",
            "tcp.window_size_value",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0])


def _reordered(ae: AttributedEvent) -> bool:
    """A path verdict for ACKs the router forwarded out of order (veth queues per CPU)."""
    return ae.attribution == "path" and ae.reason.startswith(REORDERED)


def _by_point(cmp: Comparison, point: int) -> list:
    return [e for e in cmp.events if e.point == point]


def test_window_rewritten_by_router_is_blamed_on_the_path(path_rewrite: tuple[Path, Path]) -> None:
    near, far = path_rewrite
    cmp = compare(near, far)
    assert cmp.lost == [0, 0] and cmp.paired == cmp.segments[NEAR] == cmp.segments[FAR]
    seen = _by_point(cmp, NEAR)
    assert seen, "the rewritten windows made no shrink at the sender"
    assert _by_point(cmp, FAR) == [], "the receiver never shrinks (tcp_shrink_window=0)"
    rewritten = [ae for ae in seen if not _reordered(ae)]
    assert rewritten
    for ae in seen:
        # A forwarding router may also reorder ACKs of either connection now and then.
        assert ae.attribution == "path", ae.reason
    for ae in rewritten:
        assert ae.event.win == 1 and ae.twin is not None and ae.twin.seg.win > 1
    rep, *reordered = flows(cmp)  # the connection to port 5002 passed unchanged
    assert all(not r.events or "out of order" in r.conclusion for r in reordered)
    assert rep.acks is not None and rep.acks.win_changed >= len(rewritten)
    assert rep.acks.upstream == FAR  # the receiver's ACKs pass the far point first
    untouched = [d for key, d in cmp.directions.items() if key[1] == 5002]
    assert len(untouched) == 1 and untouched[0].paired > 100 and untouched[0].win_changed == 0
    assert "rewrote the window" in rep.conclusion and f"{ADDR_B}:5001" in rep.conclusion
    require_tshark()
    first = rewritten[0]
    assert first.twin is not None
    assert _tshark_window(near, first.event.frame) == 1
    assert _tshark_window(far, first.twin.seg.frame) == first.twin.seg.win


def test_ipv6_window_rewritten_by_router_is_blamed_on_the_path(tmp_path: Path) -> None:
    """Over IPv6 there is no IP ID: the packets pair by their TCP timestamps, and the hop
    limit the router lowers says which point the receiver's ACKs pass first."""
    near, far = _captures(tmp_path, ruleset=REWRITE_WINDOWS_V6, ipv6=True)
    cmp = compare(near, far)
    assert cmp.lost == [0, 0] and cmp.paired == cmp.segments[NEAR] == cmp.segments[FAR] > 100
    seen = _by_point(cmp, NEAR)
    assert seen and _by_point(cmp, FAR) == []
    rewritten = [ae for ae in seen if not _reordered(ae)]
    assert rewritten and all(ae.attribution == "path" for ae in seen)
    for ae in rewritten:
        assert ae.event.win == 1 and ae.event.src == ADDR6_B
        assert ae.twin is not None and ae.twin.seg.win > 1
    (rep,) = [r for r in flows(cmp) if r.events]
    assert rep.acks is not None and rep.acks.upstream == FAR
    assert "rewrote the window" in rep.conclusion and f"{ADDR6_B}:5001" in rep.conclusion
    require_tshark()
    first = rewritten[0]
    assert first.twin is not None
    assert _tshark_window(near, first.event.frame) == 1
    assert _tshark_window(far, first.twin.seg.frame) == first.twin.seg.win


def test_window_enlarged_by_router_is_blamed_for_the_next_acks_shrink(tmp_path: Path) -> None:
    """The ACK after an enlarged one passes unchanged yet shrinks at the sender: the path's."""
    near, far = _captures(tmp_path, ruleset=INFLATE_WINDOWS)
    cmp = compare(near, far)
    seen = _by_point(cmp, NEAR)
    assert seen and _by_point(cmp, FAR) == []
    for ae in seen:
        assert ae.attribution == "path", ae.reason
        assert ae.twin is not None and ae.twin.seg.win == ae.event.win != 65535
        if not _reordered(ae):
            assert "the path changed the window of the ACK it shrinks from" in ae.reason
            assert "65535 here" in ae.reason
    (rep,) = flows(cmp)
    assert "rewrote the window" in rep.conclusion


def test_command_json_and_refuses_to_overwrite_an_input(
    path_rewrite: tuple[Path, Path], tmp_path: Path
) -> None:
    near, far = path_rewrite
    out = tmp_path / "cmp.json"
    cli = [sys.executable, "-m", "treason", "compare", str(near), str(far), "--format", "json"]
    proc = subprocess.run([*cli, "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["events"] and {e["attribution"] for e in doc["events"]} == {"path"}
    assert list(doc["events"][0])[-9:] == [
        "point",
        "attribution",
        "attribution_reason",
        "other_file",
        "other_frame",
        "other_time",
        "other_ack",
        "other_win",
        "other_scale",
    ]
    rewritten = [e for e in doc["events"] if not e["attribution_reason"].startswith(REORDERED)]
    assert doc["flows"][0]["windows_rewritten"] >= len(rewritten)
    # The capture summaries count each event once, as scan's do.
    for point, path in (("near", near), ("far", far)):
        alone = ScanStats()
        list(scan(path, stats=alone, retractions=True))
        assert doc["scan_stats"][point]["events"] == dict(alone.events), point
    before = near.read_bytes()
    proc = subprocess.run([*cli, "-o", str(near)], capture_output=True, text=True)
    assert proc.returncode == 2 and "refusing to write over it" in proc.stderr
    assert "Traceback" not in proc.stderr and near.read_bytes() == before


def test_receiver_that_shrinks_is_blamed_at_both_points(
    receiver_shrinks: tuple[Path, Path],
) -> None:
    near, far = receiver_shrinks
    cmp = compare(near, far)
    assert _by_point(cmp, NEAR) and _by_point(cmp, FAR)
    for point, path in ((NEAR, near), (FAR, far)):  # the events scan reports, no other
        assert [e.event.key() for e in _by_point(cmp, point)] == [e.key() for e in scan(path)]
    for ae in cmp.events:
        assert ae.attribution == "receiver" or _reordered(ae), ae.reason
        assert ae.twin is not None and ae.twin.seg.win == ae.event.win
    reports = flows(cmp)
    assert reports and all(r.acks is not None and r.acks.win_changed == 0 for r in reports)
    assert all(
        "itself shrank its window" in r.conclusion for r in reports if r.counts()["receiver"]
    )
    assert any(r.counts()["receiver"] for r in reports)


def test_stripped_window_scale_is_named_as_the_cause(tmp_path: Path) -> None:
    near, far = _captures(tmp_path, ruleset=STRIP_WSCALE, reader_is_client=1)
    cmp = compare(near, far)
    seen = _by_point(cmp, NEAR)
    assert seen, "the sender, scaling unscaled windows, saw no shrink"
    assert _by_point(cmp, FAR) == []
    for ae in seen:
        assert ae.attribution == "path" and "scaled by" in ae.reason
        assert ae.other_scale == 0 and ae.event.scale > 0
    (rep,) = flows(cmp)
    (w,) = [w for w in rep.rewrites if w.what == "window-scale"]
    assert (w.segment, w.sender[0], w.far, w.upstream) == ("SYN-ACK", ADDR_A, None, NEAR)
    assert w.near is not None and w.near == seen[0].event.scale
    assert f"window-scale option of the SYN-ACK from {ADDR_A}:5001 was stripped" in rep.conclusion
    (m,) = [w for w in rep.rewrites if w.what == "mss"]
    assert (m.segment, m.sender[0], m.before_after, m.upstream) == (
        "SYN",
        ADDR_B,
        (1460, 1200),
        FAR,
    )
    assert "MSS of the SYN from" in rep.conclusion and "changed from 1460 to 1200" in rep.conclusion


def test_paired_across_clock_offset_capture_loss_and_nat(tmp_path: Path) -> None:
    require("editcap")
    near, far = _captures(tmp_path, ruleset=MASQUERADE, shrink_window=1, connections=3)
    whole = compare(near, far)
    assert whole.lost == [0, 0] and whole.events
    first = next(e for e in whole.events if e.point == NEAR)
    assert first.twin is not None
    tcp = [f.number for f in open_frames(far) if not isinstance(decode(f), str)]
    gone = sorted({first.twin.seg.frame, *tcp[60:400:9]})
    shifted = tmp_path / "far-shifted.pcap"
    subprocess.run(
        ["editcap", "-t", "-300", str(far), str(shifted), *map(str, gone)],
        check=True,
        capture_output=True,
    )
    cmp = compare(near, shifted)
    assert cmp.offset_ns is not None and abs(cmp.offset_ns / 1e9 + 300) < 0.5
    assert cmp.segments[FAR] == whole.segments[FAR] - len(gone)
    assert cmp.lost == [len(gone), 0] and cmp.paired == cmp.segments[FAR]
    for rep in flows(cmp):
        assert rep.near is not None and rep.far is not None
        assert rep.near[0] == ADDR_B and rep.near[2] == ADDR_A and rep.far[2] == ROUTER_B
    assert len(cmp.directions) == 6  # three connections, both directions, all paired
    lost = next(e for e in cmp.events if e.point == NEAR and e.event.frame == first.event.frame)
    assert lost.attribution == "unmatched" and "not captured" in lost.reason
    assert "receiver" in {e.attribution for e in cmp.events}
    assert all(e.attribution in ("receiver", "unmatched") or _reordered(e) for e in cmp.events)


def _randomise_sequence(src: Path, dst: Path, sender: str, offset: int) -> None:
    """What a sequence-randomising firewall does: ``sender``'s seq and its peer's ack + offset.

    Classic pcap with Ethernet frames (as tcpdump writes them); IPv4 without options.
    """
    data = bytearray(src.read_bytes())
    assert int.from_bytes(data[20:24], "little") == 1  # LINKTYPE_ETHERNET
    pos = 24
    mine = bytes(map(int, sender.split(".")))
    while pos < len(data):
        caplen = int.from_bytes(data[pos + 8 : pos + 12], "little")
        frame = pos + 16
        ip = frame + 14
        if data[frame + 12 : frame + 14] == b"\x08\x00" and data[ip + 9] == 6:
            tcp = ip + (data[ip] & 0x0F) * 4
            field = tcp + 4 if data[ip + 12 : ip + 16] == mine else tcp + 8
            if field == tcp + 4 or data[tcp + 13] & 0x10:
                value = int.from_bytes(data[field : field + 4], "big")
                data[field : field + 4] = ((value + offset) & 0xFFFFFFFF).to_bytes(4, "big")
        pos = frame + caplen
    dst.write_bytes(bytes(data))


def test_sequence_randomisation_is_reported_and_changes_no_verdict(
    path_rewrite: tuple[Path, Path], tmp_path: Path
) -> None:
    near, far = path_rewrite
    offset = 0x2A5F00D1
    moved = tmp_path / "far-randomised.pcap"
    _randomise_sequence(far, moved, ADDR_A, offset)
    before, after = compare(near, far), compare(near, moved)
    assert after.paired == before.paired and after.lost == [0, 0]
    verdicts = [(e.point, e.event.frame, e.attribution) for e in before.events]
    assert [(e.point, e.event.frame, e.attribution) for e in after.events] == verdicts
    reports = flows(after)
    assert sorted(r.receiver for r in reports) == [f"{ADDR_B}:5001", f"{ADDR_B}:5002"]
    for rep in reports:
        seq = [w for w in rep.rewrites if w.what == "sequence"]
        assert [(w.sender[0], w.far) for w in seq] == [(ADDR_A, offset)]
        assert f"randomises the sequence numbers of {ADDR_A}" in rep.conclusion
    assert not [w for rep in flows(before) for w in rep.rewrites if w.what == "sequence"]


def test_damaged_capture_is_compared_up_to_the_damage(
    path_rewrite: tuple[Path, Path], tmp_path: Path
) -> None:
    near, far = path_rewrite
    broken = tmp_path / "near-broken.pcap"
    broken.write_bytes(near.read_bytes() + b"\xff" * 16)  # a record header with a huge length
    cmd = [sys.executable, "-m", "treason", "compare", str(broken), str(far)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert str(broken) in proc.stderr and "byte" in proc.stderr
    whole = compare(near, far)
    assert f"paired {whole.paired} segments" in proc.stdout
    assert proc.stdout.count("-> path") == len(whole.events)


def test_captures_of_different_traffic_pair_nothing_in_bounded_memory(
    path_rewrite: tuple[Path, Path], receiver_shrinks: tuple[Path, Path]
) -> None:
    near, far = path_rewrite[0], receiver_shrinks[1]
    cmp = compare(near, far, max_pending=50)
    assert cmp.paired == 0 and cmp.offset_ns is None
    assert cmp.segments[NEAR] > 500 and cmp.peak_pending <= 50
    assert cmp.lost == cmp.segments
    assert cmp.events and {e.attribution for e in cmp.events} == {"unmatched"}
    assert all("no packet of the connection was recognised" in e.reason for e in cmp.events)
    assert cmp.warnings == [
        "no packet was seen at both points: are these captures of the same traffic, "
        "taken at the same time?"
    ]


def test_captures_that_start_far_apart_still_find_the_offset(
    path_rewrite: tuple[Path, Path], tmp_path: Path
) -> None:
    """The near capture starts later by more packets than may wait: probes find the offset."""
    require("editcap")
    near, far = path_rewrite
    late = tmp_path / "near-late.pcap"
    subprocess.run(["editcap", "-r", str(near), str(late), "401-1000000"], check=True)
    whole = compare(late, far)
    assert whole.warnings == [] and whole.lost[NEAR] == 0
    squeezed = compare(late, far, max_pending=300)
    assert squeezed.offset_ns is not None and whole.offset_ns is not None
    assert abs(squeezed.offset_ns - whole.offset_ns) < 1_000_000
    assert squeezed.paired > squeezed.segments[NEAR] // 2
    verdicts = {e.attribution for e in squeezed.events}
    assert "path" in verdicts and verdicts <= {"path", "unmatched"}
    (warning,) = squeezed.warnings
    assert "captures start far apart" in warning and "editcap -A" in warning


#: One connection as (sender, seq, ack, flags, win, payload length, IP ID): A sends data to
#: B, which never takes a window back except in the last ACK (a 10-byte shrink).
_A, _B = ("10.0.0.1", 40000), ("10.0.0.2", 80)
_SEGMENTS = {
    "syn": (_A, 100, 0, 0x02, 64240, 0, 1),
    "syn-ack": (_B, 500, 101, 0x12, 20000, 0, 1001),
    "ack": (_A, 101, 501, 0x10, 64240, 0, 2),
    "data1": (_A, 101, 501, 0x10, 64240, 1000, 3),
    "data2": (_A, 1101, 501, 0x10, 64240, 1000, 4),
    "ack1": (_B, 501, 1101, 0x10, 20000, 0, 1002),
    "ack2": (_B, 501, 2101, 0x10, 20000, 0, 1003),  # right edge 22101
    "update2": (_B, 501, 2101, 0x10, 20010, 0, 1004),  # 22111
    "data3": (_A, 2101, 501, 0x10, 64240, 1000, 5),
    "ack3": (_B, 501, 3101, 0x10, 20000, 0, 1005),  # 23101
    "update3": (_B, 501, 3101, 0x10, 20050, 0, 1006),  # 23151
    "shrink3": (_B, 501, 3101, 0x10, 20040, 0, 1007),  # 23141: B takes 10 bytes back
}


def _point_capture(path: Path, names: list[str], near: bool) -> Path:
    """The segments in this order as one point saw them: A is beside NEAR, B beside FAR.

    A segment that crossed the router has one hop less of TTL, and arrives 1 ms later.
    """
    records = []
    for i, name in enumerate(names):
        (src, sport), seq, ack, flags, win, plen, ident = _SEGMENTS[name]
        (dst, dport) = _B if (src, sport) == _A else _A
        segment = captures.tcp(sport, dport, seq, ack, flags, win, payload=bytes(plen))
        packet = bytearray(captures.ipv4(src, dst, segment, ident=ident))
        crossed = (src == _A[0]) != near
        packet[8] -= crossed  # TTL
        records.append((1_000_000_000 + i * 10_000_000 + crossed * 1_000_000, bytes(packet)))
    path.write_bytes(captures.pcap([(t, captures.ether(p)) for t, p in records], nano=True))
    return path


def test_shrink_seen_at_one_point_only_names_the_reordering_or_the_lost_ack(
    tmp_path: Path,
) -> None:
    """Which ACK a shrink retracts, and how it crossed the path, decides the verdict.

    The router delivers ``update2`` before ``ack2``: the sender sees a shrink the receiver
    never made. Later the far capture misses ``update3``: the receiver's real shrink shows
    only at the near point, and is still the receiver's.
    """
    order = list(_SEGMENTS)
    near_order = order.copy()
    i = near_order.index("ack2")
    near_order[i : i + 2] = ["update2", "ack2"]
    far_order = [name for name in order if name != "update3"]
    near = _point_capture(tmp_path / "near.pcap", near_order, near=True)
    far = _point_capture(tmp_path / "far.pcap", far_order, near=False)
    cmp = compare(near, far)
    assert cmp.lost == [1, 0] and _by_point(cmp, FAR) == []
    reordered, lost = _by_point(cmp, NEAR)
    assert (reordered.attribution, lost.attribution) == ("path", "receiver")
    assert reordered.reason.startswith(REORDERED)
    assert f"frame {near_order.index('update2') + 1}, which came before it here" in reordered.reason
    assert f"(frame {far_order.index('update2') + 1})" in reordered.reason
    assert lost.event.shrink_bytes == 10
    assert f"(frame {near_order.index('update3') + 1}) was not captured" in lost.reason
    (rep,) = flows(cmp)
    assert "delivered 10.0.0.2:80's ACKs out of order" in rep.conclusion
    assert "10.0.0.2:80 itself shrank its window 1 time(s)" in rep.conclusion


def _fp(ip: bytes, point: int, vlans: tuple[int, ...] = ()) -> Packet:
    data = captures.ether(ip, 0x86DD if ip[0] >> 4 == 6 else 0x0800, vlans)
    frame = Frame(1, 1_000_000_000, 1, data, len(data))
    seg = decode(frame)
    assert not isinstance(seg, str), seg
    return fingerprint(frame, seg, point)


MSS_WS_TS = (
    bytes([2, 4, 0x05, 0xB4, 1, 3, 3, 7, 8, 10]) + (11).to_bytes(4, "big") + (22).to_bytes(4, "big")
)


def test_fingerprint_ignores_what_the_path_changes() -> None:
    """NAT (addresses, ports), TTL, window and sequence numbers differ; the key does not."""
    syn = captures.tcp(40000, 80, seq=1000, flags=0x02, win=64240, options=MSS_WS_TS)
    moved = captures.tcp(61000, 80, seq=777, flags=0x02, win=1, options=MSS_WS_TS)
    a = _fp(captures.ipv4("10.0.0.1", "10.0.0.2", syn, ident=99), NEAR)
    b = _fp(captures.ipv4("192.0.2.7", "10.0.0.2", moved, ident=99), FAR)
    assert a.key() == b.key()
    assert (a.mss, a.tsecr, a.seg.tsval, a.seg.ws, a.ttl) == (1460, 22, 11, 7, 64)
    other = _fp(captures.ipv4("10.0.0.1", "10.0.0.2", syn, ident=100), FAR)
    assert other.key() != a.key()


def test_fingerprint_reads_ttl_behind_ip_options_and_in_tagged_ipv6() -> None:
    seg = captures.tcp(40000, 80, payload=b"hello")
    with_options = _fp(captures.ipv4("10.0.0.1", "10.0.0.2", seg, options=b"\x01" * 8), NEAR)
    assert with_options.ttl == 64
    v6 = _fp(captures.ipv6("2001:db8::1", "2001:db8::2", seg), NEAR, vlans=(10, 20))
    assert v6.ttl == 64 and v6.seg.ip_id == 0 and v6.dirkey[4] == (10, 20)
    # No IP ID and no timestamps: sequence numbers and the first payload bytes identify it.
    assert v6.key() == (0x10, 5, 1000, 0, b"hello")


def test_both_engines_give_the_same_comparison(
    path_rewrite: tuple[Path, Path], receiver_shrinks: tuple[Path, Path], tmp_path: Path
) -> None:
    def outcome(cmp: Comparison) -> tuple[object, ...]:
        events = [(e.point, e.event.key(), e.attribution, e.reason) for e in cmp.events]
        return events, cmp.paired, cmp.lost, [r.conclusion for r in flows(cmp)]

    if not fast_available():
        pytest.skip("the compiled scanner is not built")
    for near, far in (path_rewrite, receiver_shrinks):
        fast = compare(near, far, engine="fast")
        assert outcome(fast) == outcome(compare(near, far, engine="reference"))
        assert fast.events
    # pcapng may mix link types: "auto" runs the reference model on it, to the same result.
    require("editcap")
    near, far = path_rewrite
    ng = tmp_path / "near.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(near), str(ng)], check=True)
    assert outcome(compare(ng, far))[:3] == outcome(compare(near, far))[:3]


def test_flow_history_follows_the_active_flows() -> None:
    """Memory for the segments events look back at follows the flows active within the
    pairing window, not every flow the captures ever held."""
    from types import SimpleNamespace

    from treason.compare.fingerprint import BEFORE, HISTORY_FLOWS, FlowHistory

    def pkt(flow: int, ts_ns: int) -> Any:
        key = ("10.0.0.1", flow, "10.0.0.2", 80, ())
        return SimpleNamespace(point=NEAR, dirkey=key, seg=SimpleNamespace(ts_ns=ts_ns))

    history = FlowHistory(idle_ns=2_000_000_000)
    first = [pkt(1, i) for i in range(BEFORE + 2)]
    assert [history.add(p) for p in first][-1] == tuple(first[-1 - BEFORE : -1])
    for flow in range(2, HISTORY_FLOWS + 1):  # quiet since t = 0
        history.add(pkt(flow, 0))
    late = pkt(HISTORY_FLOWS + 1, 10_000_000_000)
    assert history.add(late) == ()
    assert history.add(pkt(1, 10_000_000_001)) == ()  # flow 1 was let go with the quiet ones
    assert history.add(pkt(HISTORY_FLOWS + 1, 10_000_000_002)) == (late,)
