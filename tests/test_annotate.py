"""`treason annotate`: tshark, as an independent reader, sees the comments on exactly the frames
scan reports and every other field of every packet as in the input."""

from __future__ import annotations

import gzip
import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import treason
from captures import epb, idb, option, pb, pcap, pcap_records, shb, spb, tools_missing
from treason.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHRINK = ROOT / "examples" / "shrink.pcap"
KERNEL = ROOT / "examples" / "kernel.pcap"

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(bool(tools_missing("tshark")), reason="tshark is not installed"),
]


def tshark(path: Path, *args: str) -> str:
    return subprocess.run(
        ["tshark", "-n", "-r", str(path), *args], capture_output=True, text=True, check=True
    ).stdout


def commented(path: Path) -> dict[int, str]:
    out = tshark(path, "-Y", "frame.comment", "-T", "fields", "-e", "frame.number", "-e",
                 "frame.comment")  # fmt: skip
    return {int(n): text for n, text in (line.split("\t", 1) for line in out.splitlines())}


def dissection(path: Path, from_pcap: bool) -> list[str]:
    """tshark's full dissection and hex dump of every packet, without the packet comments
    (and, for a pcap input, without the interface lines pcap cannot have)."""
    lines, skipping = [], False
    for line in tshark(path, "-V", "-x").splitlines():
        if line == "Packet comments":
            skipping = True
            continue
        if skipping and line.startswith(" "):
            continue
        skipping = False
        if from_pcap:
            if re.match(r"\s+(Section number|Interface id|Interface name):", line):
                continue
            line = re.sub(r" on interface \S+, id \d+$", "", line)
        lines.append(line)
    return lines


def annotate(tmp_path: Path, *inputs: str, extra: tuple[str, ...] = ()) -> tuple[int, Path, str]:
    out = tmp_path / "annotated.pcapng"
    proc = subprocess.run(
        [sys.executable, "-m", "treason", "annotate", *inputs, "-o", str(out), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return proc.returncode, out, proc.stdout


@pytest.mark.parametrize("capture", [KERNEL, SHRINK], ids=["kernel", "shrink"])
def test_comments_on_exactly_scans_frames_and_nothing_else_changes(tmp_path, capture):
    status, out, printed = annotate(tmp_path, str(capture))
    assert status == 1
    events = list(treason.scan(capture))
    notes = commented(out)
    assert sorted(notes) == [e.frame for e in events]
    for e in events:
        note = notes[e.frame]
        assert note.startswith(f"treason: {e.cls.label}")
        assert f"took back {e.shrink_bytes} bytes" in note
        assert f"{e.beyond_bytes} bytes already sent" in note
        if e.kernel_line:
            assert e.kernel_line in note
    assert dissection(out, from_pcap=True) == dissection(capture, from_pcap=True)
    # Expert Info lists them as comments, as Wireshark's Expert Information dialog does.
    expert = tshark(out, "-q", "-z", "expert")
    assert f"Comments ({len(events)})" in expert
    assert expert.count("Comment              Frame  treason: ") == len(events)
    # The printed filters select, in tshark, the event frames and the frames of their flows.
    marked = printed.splitlines()[0].split(":", 1)[1].strip()
    flows = printed.splitlines()[1].split(":", 1)[1].strip()
    numbers = tshark(out, "-Y", marked, "-T", "fields", "-e", "frame.number").split()
    assert [int(n) for n in numbers] == [e.frame for e in events]
    in_flows = tshark(out, "-Y", flows, "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport")
    ports = {p for e in events for p in ((e.sport, e.dport), (e.dport, e.sport))}
    seen = {tuple(map(int, line.split())) for line in in_flows.splitlines()}
    assert seen == ports


def test_with_all_retractions_are_commented_too(tmp_path):
    _, out, _ = annotate(tmp_path, str(KERNEL), extra=("--all",))
    assert sorted(commented(out)) == [e.frame for e in treason.scan(KERNEL, retractions=True)]


def test_filter_selects_what_is_commented_and_everything_is_copied(tmp_path):
    _, out, _ = annotate(tmp_path, str(SHRINK), extra=("--filter", "port 5002"))
    expected = [e.frame for e in treason.scan(SHRINK) if 5002 in (e.sport, e.dport)]
    assert sorted(commented(out)) == expected and len(expected) == 2
    assert dissection(out, from_pcap=True) == dissection(SHRINK, from_pcap=True)


def pcapng_of(capture: Path) -> bytes:
    """The capture's packets as pcapng: a big-endian section with two interfaces (nanosecond
    and microsecond timestamps), EPBs with a flags option and obsolete PBs, then a
    little-endian section with the rest."""
    _, records = pcap_records(capture.read_bytes())
    half = len(records) // 2
    parts = [shb(">"), idb(1, 65535, tsresol=9, order=">"), idb(1, 65535, order=">")]
    for i, rec in enumerate(records):
        if i == half:
            parts += [shb("<"), idb(1, 262144, tsresol=9, order="<")]
        order = ">" if i < half else "<"
        sec, usec, incl, orig = struct.unpack_from("<IIII", rec)
        data = rec[16 : 16 + incl]
        ts_ns = (sec * 1_000_000 + usec) * 1000
        if_id = i % 2 if i < half else 0
        ts = ts_ns if if_id == 0 else ts_ns // 1000
        if i % 7 == 3 and i < half:
            parts.append(pb(if_id, ts, data, order=order))
            continue
        block = epb(if_id, ts, data, orig, order=order)
        if i % 3 == 0:  # inbound, with an epb_flags option already there
            body = (
                block[8:-4] + option(2, struct.pack(order + "I", 1), order) + option(0, b"", order)
            )
            length = 12 + len(body)
            block = struct.pack(order + "II", 6, length) + body + struct.pack(order + "I", length)
        parts.append(block)
    return b"".join(parts)


def test_pcapng_sections_interfaces_and_options_are_kept(tmp_path):
    source = tmp_path / "two-sections.pcapng"
    source.write_bytes(pcapng_of(SHRINK))
    status, out, _ = annotate(tmp_path, str(source))
    assert status == 1
    events = list(treason.scan(source))
    assert [e.frame for e in events] == [e.frame for e in treason.scan(SHRINK)]
    assert sorted(commented(out)) == [e.frame for e in events]
    assert dissection(out, from_pcap=False) == dissection(source, from_pcap=False)
    flags = tshark(out, "-T", "fields", "-e", "frame.number", "-e", "frame.packet_flags")
    assert flags == tshark(source, "-T", "fields", "-e", "frame.number", "-e",
                           "frame.packet_flags")  # fmt: skip


def test_gzip_stdin_and_fifo_inputs_are_read_once(tmp_path):
    packed = tmp_path / "kernel.pcap.gz"
    packed.write_bytes(gzip.compress(KERNEL.read_bytes()))
    status, out, _ = annotate(tmp_path, str(packed))
    assert status == 1
    expected = dissection(out, from_pcap=True)
    assert expected == dissection(KERNEL, from_pcap=True)
    piped = subprocess.run(
        [sys.executable, "-m", "treason", "annotate", "-", "-o", str(tmp_path / "piped.pcapng")],
        input=packed.read_bytes(),
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert piped.returncode == 1
    assert dissection(tmp_path / "piped.pcapng", from_pcap=True) == expected
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(KERNEL.read_bytes()))
    writer.start()
    assert annotate(tmp_path, str(fifo))[0] == 1
    writer.join()
    assert dissection(out, from_pcap=True) == expected
    assert sorted(os.listdir(tmp_path)) == [
        "annotated.pcapng",
        "capture.fifo",
        "kernel.pcap.gz",
        "piped.pcapng",
    ]  # no temporary file left behind


def test_several_captures_one_after_the_other(tmp_path):
    status, out, _ = annotate(tmp_path, str(KERNEL), str(SHRINK))
    assert status == 1
    n_kernel = len(tshark(KERNEL, "-T", "fields", "-e", "frame.number").split())
    expected = [e.frame for e in treason.scan(KERNEL)]
    expected += [n_kernel + e.frame for e in treason.scan(SHRINK)]
    assert sorted(commented(out)) == expected


def test_refuses_to_overwrite_an_input(tmp_path, capsys):
    copy = tmp_path / "kernel.pcap"
    copy.write_bytes(KERNEL.read_bytes())
    link = tmp_path / "same.pcapng"
    link.symlink_to(copy)
    for target in (copy, link):
        assert main(["annotate", str(copy), "-o", str(target)]) == 2
        assert "refusing to write over it" in capsys.readouterr().err
    assert copy.read_bytes() == KERNEL.read_bytes()


def test_damaged_capture_writes_nothing(tmp_path, capsys):
    header, records = pcap_records(SHRINK.read_bytes())
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(header + b"".join(records[:300]) + b"\xff" * 16 + b"garbage")
    out = tmp_path / "out.pcapng"
    assert main(["annotate", str(damaged), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "damaged.pcap" in err and err.count("\n") == 1
    assert not out.exists()


def test_nanosecond_timestamps_keep_their_nanoseconds(tmp_path):
    _, records = pcap_records(KERNEL.read_bytes())
    rebuilt = []
    for i, rec in enumerate(records):
        sec, usec, incl, orig = struct.unpack_from("<IIII", rec)
        ts_ns = (sec * 1_000_000 + usec) * 1000 + (i * 37) % 1000  # below the microsecond
        rebuilt.append((ts_ns, rec[16 : 16 + incl], orig))
    source = tmp_path / "nano.pcap"
    source.write_bytes(pcap(rebuilt, nano=True))
    status, out, _ = annotate(tmp_path, str(source))
    assert status == 1
    times = tshark(out, "-T", "fields", "-e", "frame.time_epoch").split()
    assert times == tshark(source, "-T", "fields", "-e", "frame.time_epoch").split()
    assert any(not t.endswith("000") for t in times)
    assert dissection(out, from_pcap=True) == dissection(source, from_pcap=True)


def test_event_on_a_simple_packet_block_becomes_an_enhanced_one(tmp_path):
    """A simple packet block has no options: the event frame becomes an EPB on interface 0
    with timestamp 0 (the SPB had none); every other frame and field is unchanged."""
    blob = KERNEL.read_bytes()
    (snaplen,) = struct.unpack_from("<I", blob, 16)
    _, records = pcap_records(blob)
    parts = [shb(), idb(1, snaplen)]
    for rec in records:
        _sec, _usec, incl, orig = struct.unpack_from("<IIII", rec)
        parts.append(spb(rec[16 : 16 + incl], orig))
    source = tmp_path / "simple.pcapng"
    source.write_bytes(b"".join(parts))
    status, out, _ = annotate(tmp_path, str(source))
    assert status == 1
    (event,) = list(treason.scan(source))
    assert sorted(commented(out)) == [event.frame]
    time_lines = re.compile(r"    (Arrival Time|Epoch Time|\[Time (shift|delta|since))")
    got = [line for line in dissection(out, from_pcap=False) if not time_lines.match(line)]
    assert got == dissection(source, from_pcap=False)
