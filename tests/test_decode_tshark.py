"""The readers and the decoder agree with tshark on every frame of real captures.

tcpdump records one conversation of the real kernel (IPv4 and IPv6 loopback inside a fresh
network namespace) through several link types and timestamp precisions at once; editcap,
mergecap and small header rewrites turn it into every file format and link type treason reads.
For each file, every frame's number, time, addresses, ports, absolute sequence and
acknowledgement numbers, raw window, window scale, payload length, VLAN ids, flags, IP id and
checksum must equal tshark's fields, and every frame tshark sees no TCP in must be skipped.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from captures import capture, editcap, netns, rewrite_pcap, to_big_endian, tools_missing
from captures import tshark_fields as run_tshark
from treason.decode import TRUNCATED_HEADER, decode
from treason.packets import SYN, Segment
from treason.readers import open_capture, open_frames

pytestmark = [pytest.mark.tshark, pytest.mark.netns]

FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.window_size_value",
    "tcp.options.wscale.shift",
    "tcp.len",
    "vlan.id",
    "ieee8021ad.id",
    "frame.protocols",
    "tcp.flags",
    "ip.id",
    "tcp.checksum",
)

SNAP = "80"  # cuts IPv6 timestamp options and SYN options on every link type, keeps IPv4 headers


def _ether_to_vlan(ids: tuple[int, ...], tpids: tuple[int, ...]) -> Callable[[bytes], bytes]:
    tags = b"".join(struct.pack("!HH", tp, 0x6000 | v) for tp, v in zip(tpids, ids))
    return lambda data: data[:12] + tags + data[12:]


def _bsd_loopback(order: str, af6: int) -> Callable[[bytes], bytes]:
    def add(data: bytes) -> bytes:
        af = 2 if data[0] >> 4 == 4 else af6
        return struct.pack(order + "I", af) + data

    return add


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every capture variant, made once for the module."""
    missing = tools_missing("tshark", "tcpdump", "editcap", "mergecap", "ip")
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("needs root to capture inside a network namespace")
    d = tmp_path_factory.mktemp("tshark")
    lo, nano, any2, any1 = d / "lo.pcap", d / "lo-nano.pcap", d / "any.pcap", d / "any-sll.pcap"
    with netns() as ns:
        capture(
            ns,
            [
                (lo, "lo", []),
                (nano, "lo", ["--time-stamp-precision=nano"]),
                (any2, "any", []),
                (any1, "any", ["-y", "LINUX_SLL"]),
            ],
        )
    files = {"ether": lo, "ether-nano": nano, "sll2": any2, "sll": any1}
    files["pcapng"] = editcap(lo, d / "lo.pcapng", "-F", "pcapng")
    files["pcapng-nano"] = editcap(nano, d / "lo-nano.pcapng", "-F", "pcapng")
    files["pcapng-comment"] = editcap(
        lo, d / "comment.pcapng", "-F", "pcapng", "--capture-comment", "made by the tests"
    )
    files["nsecpcap"] = editcap(lo, d / "nsec.pcap", "-F", "nsecpcap")
    files["modpcap"] = editcap(lo, d / "mod.pcap", "-F", "modpcap")
    files["snap-ether"] = editcap(lo, d / "snap.pcap", "-s", SNAP)
    files["snap-sll2"] = editcap(any2, d / "snap-sll2.pcapng", "-F", "pcapng", "-s", SNAP)
    files["rawip"] = editcap(lo, d / "raw.pcap", "-F", "pcap", "-C", "14", "-T", "rawip")
    raw = files["rawip"].read_bytes()
    ip4 = d / "v4.pcap"
    ip6 = d / "v6.pcap"
    subprocess.run(["tshark", "-r", lo, "-Y", "ip", "-F", "pcap", "-w", ip4], check=True)
    subprocess.run(["tshark", "-r", lo, "-Y", "ipv6", "-F", "pcap", "-w", ip6], check=True)
    files["rawip4"] = editcap(ip4, d / "raw4.pcap", "-F", "pcap", "-C", "14", "-T", "rawip4")
    files["rawip6"] = editcap(ip6, d / "raw6.pcap", "-F", "pcap", "-C", "14", "-T", "rawip6")
    for linktype in (12, 14):
        path = d / f"raw{linktype}.pcap"
        path.write_bytes(rewrite_pcap(raw, linktype, lambda data: data))
        files[f"raw{linktype}"] = path
    for name, linktype, order, af6 in [
        ("null-le", 0, "<", 24),
        ("null-be", 0, ">", 28),
        ("loop", 108, ">", 30),
    ]:
        path = d / f"{name}.pcap"
        path.write_bytes(rewrite_pcap(raw, linktype, _bsd_loopback(order, af6)))
        files[name] = path
    ether = lo.read_bytes()
    for name, ids, tpids in [
        ("vlan", (100,), (0x8100,)),
        ("qinq", (10, 20), (0x88A8, 0x8100)),
        ("qinq3", (7, 4094, 1), (0x9100, 0x88A8, 0x8100)),
    ]:
        path = d / f"{name}.pcap"
        path.write_bytes(rewrite_pcap(ether, 1, _ether_to_vlan(ids, tpids)))
        files[name] = path
    big = d / "big-endian.pcap"
    big.write_bytes(to_big_endian(nano.read_bytes()))
    files["big-endian"] = big
    merged = d / "merged.pcapng"
    subprocess.run(
        ["mergecap", "-F", "pcapng", "-w", merged, lo, any2, files["qinq"], files["rawip6"]],
        check=True,
    )
    files["multi-interface"] = merged
    packed = d / "merged.pcapng.gz"
    packed.write_bytes(gzip.compress(merged.read_bytes()))
    files["gzip"] = packed
    return files


VARIANTS = [
    "ether",
    "ether-nano",
    "sll2",
    "sll",
    "pcapng",
    "pcapng-nano",
    "pcapng-comment",
    "nsecpcap",
    "modpcap",
    "snap-ether",
    "snap-sll2",
    "rawip",
    "rawip4",
    "rawip6",
    "raw12",
    "raw14",
    "null-le",
    "null-be",
    "loop",
    "vlan",
    "qinq",
    "qinq3",
    "big-endian",
    "multi-interface",
    "gzip",
]


def _epoch(ts_ns: int) -> str:
    return f"{ts_ns // 1_000_000_000}.{ts_ns % 1_000_000_000:09d}"


def _vlan_ids(f: dict[str, str]) -> tuple[int, ...]:
    """Tag ids outermost first: tshark lists 802.1Q and 802.1ad ids in separate fields, and
    the protocol stack says how they interleave."""
    ids = {
        "vlan": [int(v) for v in f["vlan.id"].split(",") if v],
        "ieee8021ad": [int(v) for v in f["ieee8021ad.id"].split(",") if v],
    }
    layers = f["frame.protocols"].split(":")
    return tuple(ids[layer].pop(0) for layer in layers if layer in ids)


def _check(path: Path, rows: list[list[str]]) -> tuple[int, int]:
    """Compare every frame; returns (segments compared, SYNs skipped for cut options)."""
    frames = list(open_frames(path))
    assert [f.number for f in frames] == [int(r[0]) for r in rows]
    compared = cut_syns = 0
    for frame, row in zip(frames, rows):
        f = dict(zip(FIELDS, row))
        assert _epoch(frame.ts_ns) == f["frame.time_epoch"], frame.number
        result = decode(frame)
        if not f["tcp.srcport"]:
            assert isinstance(result, str), (frame.number, result)
            continue
        if isinstance(result, str):
            # The one deliberate difference: a SYN whose options the snap length cut.
            assert result == TRUNCATED_HEADER, (frame.number, result)
            assert int(f["tcp.flags"], 16) & SYN and len(frame.data) < frame.orig_len
            cut_syns += 1
            continue
        assert isinstance(result, Segment)
        src, dst = (f["ip.src"], f["ip.dst"]) if f["ip.src"] else (f["ipv6.src"], f["ipv6.dst"])
        want = (
            src,
            dst,
            int(f["tcp.srcport"]),
            int(f["tcp.dstport"]),
            int(f["tcp.seq_raw"]),
            int(f["tcp.ack_raw"]) if f["tcp.ack_raw"] else result.ack,
            int(f["tcp.window_size_value"]),
            int(f["tcp.options.wscale.shift"]) if f["tcp.options.wscale.shift"] else None,
            int(f["tcp.len"]),
            _vlan_ids(f),
            int(f["tcp.flags"], 16) & 0xFF,
            int(f["ip.id"], 16) if f["ip.id"] else 0,
            int(f["tcp.checksum"], 16),
        )
        got = (
            result.src,
            result.dst,
            result.sport,
            result.dport,
            result.seq,
            result.ack,
            result.win,
            result.ws,
            result.payload_len,
            result.vlan,
            result.flags,
            result.ip_id,
            result.checksum,
        )
        assert got == want, frame.number
        assert (result.frame, result.ts_ns) == (frame.number, frame.ts_ns)
        compared += 1
    return compared, cut_syns


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_frame_agrees_with_tshark(corpus: dict[str, Path], variant: str) -> None:
    path = corpus[variant]
    rows = run_tshark(path, FIELDS)
    compared, cut_syns = _check(path, rows)
    # Each connection has about twenty segments: an empty or nearly
    # empty comparison would prove nothing.
    assert compared >= 15
    if variant.startswith("snap"):
        assert cut_syns >= 2  # the IPv6 handshake's SYNs are cut on every link type
    else:
        assert cut_syns == 0


def test_the_corpus_covers_what_it_claims(corpus: dict[str, Path]) -> None:
    """Each variant really has the format, link types and tags its name says."""
    expect = {
        "ether": ("pcap", {1}),
        "ether-nano": ("pcap", {1}),
        "sll2": ("pcap", {276}),
        "sll": ("pcap", {113}),
        "pcapng-nano": ("pcapng", {1}),
        "modpcap": ("pcap", {1}),
        "rawip": ("pcap", {101}),
        "rawip4": ("pcap", {228}),
        "rawip6": ("pcap", {229}),
        "raw12": ("pcap", {12}),
        "raw14": ("pcap", {14}),
        "null-le": ("pcap", {0}),
        "loop": ("pcap", {108}),
        "big-endian": ("pcap", {1}),
        "multi-interface": ("pcapng", {1, 276, 229}),
        "gzip": ("pcapng", {1, 276, 229}),
    }
    for variant, (fmt, linktypes) in expect.items():
        frames = list(open_frames(corpus[variant]))
        with open_capture(corpus[variant]) as capture:
            assert (capture.format, capture.packed is not None) == (fmt, variant == "gzip"), variant
        assert {f.linktype for f in frames} == linktypes, variant
        if variant.endswith("nano") or variant == "big-endian":
            assert any(f.ts_ns % 1000 for f in frames), variant
    assert corpus["big-endian"].read_bytes()[:4] == b"\xa1\xb2\x3c\x4d"
    segments = [decode(f) for f in open_frames(corpus["qinq3"])]
    assert {s.vlan for s in segments if isinstance(s, Segment)} == {(7, 4094, 1)}
    wscales = {
        s.ws for s in (decode(f) for f in open_frames(corpus["ether"])) if not isinstance(s, str)
    }
    assert len(wscales - {None}) >= 1  # both handshakes carried window scale


def test_stdin_pipe_agrees_with_the_file(corpus: dict[str, Path]) -> None:
    script = (
        "from treason.readers import open_frames\n"
        "from treason.decode import decode\n"
        "for f in open_frames('-'): print(f.number, f.ts_ns, decode(f))\n"
    )
    data = corpus["gzip"].read_bytes()
    res = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, check=True
    )
    want = [f"{f.number} {f.ts_ns} {decode(f)}" for f in open_frames(corpus["multi-interface"])]
    assert res.stdout.decode().splitlines() == want
