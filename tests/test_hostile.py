"""Broken and hostile input through the real command line: one test per case of the damage list.

Every case runs ``python -m treason scan`` (or ``logs``) as a user would and checks three things:
the exact one-line message on stderr, the exit status, and the events of the valid part on
stdout. Captures are built byte by byte (``captures.py``) around one small conversation whose
only event is known exactly, so "everything valid is still reported" is an equality, not a
count. Both engines run every capture case: the compiled scanner must fail the same way, at
the same byte, as the reference reader.

The reader-, decoder- and grammar-level checks of the same damage live in ``test_readers.py``,
``test_decode.py``, ``test_fastpath.py`` and ``test_logs_*.py``; this file is the user's view.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from captures import block, epb, ether, idb, ipv4, ipv6, pb, pcap, shb, tcp
from treason.kernel import kernel_lines
from treason.output.atomic import atomic_text
from treason.scanner import fast_available

ENGINES = ["reference", pytest.param("fast", marks=pytest.mark.skipif(
    not fast_available(), reason="the compiled scanner is not built (no C compiler at install)"
))]  # fmt: skip

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
A, B = "10.0.0.1", "10.0.0.2"
T0 = 1_700_000_000 * 10**9
WS2 = bytes([1, 3, 3, 2])  # NOP, window scale 2


def pkt(
    src: str,
    dst: str,
    seq: int,
    ack: int,
    flags: int,
    win: int,
    ident: int,
    options: bytes = b"",
    payload_len: int = 0,
) -> bytes:
    """An Ethernet/IPv4/TCP frame between A:40000 and B:80, payload snapped off."""
    sport, dport = (40000, 80) if src == A else (80, 40000)
    seg = tcp(sport, dport, seq, ack, flags, win, options)
    return ether(ipv4(src, dst, seg, ident=ident, total_len=20 + len(seg) + payload_len))


def conversation() -> list[bytes]:
    """Handshake with window scale 2 both ways, 100 bytes A→B, then B takes 2000 bytes back.

    Frame 6 is the only event: the right edge goes from 1101 + (1000 << 2) to 1101 + (500 << 2).
    """
    return [
        pkt(A, B, 1000, 0, SYN, 65535, 1, WS2),
        pkt(B, A, 5000, 1001, SYN | ACK, 65535, 2, WS2),
        pkt(A, B, 1001, 5001, ACK, 1000, 3),
        pkt(A, B, 1001, 5001, ACK | PSH, 1000, 4, payload_len=100),
        pkt(B, A, 5001, 1101, ACK, 1000, 5),
        pkt(B, A, 5001, 1101, ACK, 500, 6),
    ]


#: (frame, class, bytes taken back, shift) of the conversation's one event.
EVENT = (6, "shrink", 2000, 2)


def pcap_of(frames: list[bytes], **kw: object) -> bytes:
    return pcap([(T0 + i * 1000, f) for i, f in enumerate(frames)], **kw)  # type: ignore[arg-type]


def pcapng_of(frames: list[bytes], if_id: int = 0) -> bytes:
    return b"".join(epb(if_id, i, f) for i, f in enumerate(frames))


def treason(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "treason", *args], input=stdin, capture_output=True, timeout=120
    )


def scan(path: Path, engine: str, *extra: str) -> tuple[int, list[tuple], str]:
    """Exit status, events as (frame, class, bytes back, shift), and stderr of a JSON scan."""
    res = treason("scan", "--engine", engine, "--format", "json", "-q", *extra, str(path))
    assert b"Traceback" not in res.stderr, res.stderr.decode()
    rows = [json.loads(line) for line in res.stdout.decode().splitlines()]
    events = [(r["frame"], r["class"], r["shrink_bytes"], r["scale"]) for r in rows]
    return res.returncode, events, res.stderr.decode()


def summary(path: Path, engine: str) -> tuple[int, str]:
    """Exit status and the terminal report's capture summary (text format)."""
    res = treason("scan", "--engine", engine, str(path))
    assert b"Traceback" not in res.stderr, res.stderr.decode()
    return res.returncode, res.stdout.decode()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def offset_after(frames: list[bytes]) -> int:
    """Byte offset just past the last record of ``pcap_of(frames)``."""
    return 24 + sum(16 + len(f) for f in frames)


def ng_offset_after(frames: list[bytes]) -> int:
    return len(shb()) + len(idb()) + len(pcapng_of(frames))


# --------------------------------------------------------------------------------------------
# 1. Captures


@pytest.mark.parametrize("engine", ENGINES)
def test_valid_conversation_has_exactly_the_known_event(tmp_path: Path, engine: str) -> None:
    """The baseline every damaged capture below is compared with."""
    rc, events, err = scan(write(tmp_path, "ok.pcap", pcap_of(conversation())), engine)
    assert (rc, events, err) == (1, [EVENT], "")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pcap_of(conversation())[:10], "truncated pcap file header (10 of 24 bytes) (at byte 0)"),
        (pcap_of([])[:23], "truncated pcap file header (23 of 24 bytes) (at byte 0)"),
        (shb()[:20], "truncated pcapng section header block (20 of 28 bytes) (at byte 0)"),
        (shb()[:11], "truncated pcapng section header block (11 bytes of a block header) "
                     "(at byte 0)"),
    ],
)  # fmt: skip
def test_truncated_global_header_is_fatal(
    tmp_path: Path, engine: str, data: bytes, message: str
) -> None:
    path = write(tmp_path, "head.cap", data)
    rc, events, err = scan(path, engine)
    assert (rc, events, err) == (2, [], f"treason: {path}: {message}\n")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cut", [1, 6, 15, 16, 17, 40])
def test_truncated_last_record_warns_and_reports_everything_before(
    tmp_path: Path, engine: str, cut: int
) -> None:
    """tcpdump killed mid-write: a warning naming the byte, exit as if the file were complete."""
    frames = conversation()
    extra = pkt(B, A, 5001, 1101, ACK, 0, 7)  # would be a second event if it were complete
    data = pcap_of([*frames, extra])
    at = offset_after(frames)
    path = write(tmp_path, "cut.pcap", data[: at + cut])
    if cut < 16:
        what = f"truncated record header ({cut} of 16 bytes)"
    else:
        what = f"truncated record ({cut} of {16 + len(extra)} bytes)"
    rc, events, err = scan(path, engine)
    assert (rc, events) == (1, [EVENT])
    assert err == f"treason: warning: {path}: {what} (at byte {at})\n"
    # The terminal report carries the same warning in its summary, and the same exit status.
    rc, report = summary(path, engine)
    assert rc == 1 and f"  warning: {path}: {what} (at byte {at})\n" in report


@pytest.mark.parametrize("engine", ENGINES)
def test_truncated_pcapng_block_warns_and_reports_everything_before(
    tmp_path: Path, engine: str
) -> None:
    frames = conversation()
    tail = epb(0, 99, pkt(B, A, 5001, 1101, ACK, 0, 7))
    at = ng_offset_after(frames)
    path = write(tmp_path, "cut.pcapng", shb() + idb() + pcapng_of(frames) + tail[:30])
    rc, events, err = scan(path, engine)
    assert (rc, events) == (1, [EVENT])
    assert err == f"treason: warning: {path}: truncated record (30 of {len(tail)} bytes) " \
                  f"(at byte {at})\n"  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_truncated_gzip_stream_warns_and_reports_everything_before(
    tmp_path: Path, engine: str
) -> None:
    frames = conversation()
    packed = gzip.compress(pcap_of(frames) + b"\0" * 4096)  # zeros: 16-byte empty records
    path = write(tmp_path, "cut.pcap.gz", packed[:-12])  # no trailer, some data lost
    rc, events, err = scan(path, engine)
    assert (rc, events) == (1, [EVENT])
    assert err.startswith(f"treason: warning: {path}: truncated ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("snaplen", "incl"),
    [
        (0, 262145),  # snap length 0: unknown, only the hard cap
        (65535, 262145),
        (1 << 31, 300_000),
        (262144, 0xFFFFFFFF),
    ],
)
def test_record_longer_than_256k(tmp_path: Path, engine: str, snaplen: int, incl: int) -> None:
    """A record header claiming a huge body is damage: no attempt to read (or allocate) it."""
    frames = conversation()
    data = pcap_of(frames, snaplen=snaplen) + struct.pack("<IIII", 1, 0, incl, incl) + b"x" * 64
    path = write(tmp_path, "big.pcap", data)
    rc, events, err = scan(path, engine)
    assert (rc, events) == (2, [EVENT])
    assert err == (
        f"treason: {path}: bad record header: {incl}-byte record, more than the 256 KiB limit "
        f"(262144) (at byte {offset_after(frames)})\n"
    )


def with_long_ack(size: int) -> list[bytes]:
    """The conversation with frame 5 (B's ACK before the shrink) padded to ``size`` bytes."""
    frames = conversation()
    frames[4] += b"\0" * (size - len(frames[4]))
    return frames


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("snaplen", "size"), [(96, 97), (65535, 65536), (65535, 262144)])
def test_record_longer_than_the_snap_length_is_read_whole(
    tmp_path: Path, engine: str, snaplen: int, size: int
) -> None:
    """Writers in the wild exceed their own snap length; Wireshark reads such records whole.

    Not damage: everything after it is scanned (the event is frame 6), one warning names it
    and the summary counts it.
    """
    path = write(tmp_path, "long.pcap", pcap_of(with_long_ack(size), snaplen=snaplen))
    rc, events, err = scan(path, engine)
    assert (rc, events) == (1, [EVENT])
    assert err == (
        f"treason: warning: {path}: 1 record longer than the snap length ({snaplen}), read "
        f"whole (the first: frame 5, {size} bytes)\n"
    )
    rc, report = summary(path, engine)
    assert rc == 1 and "6 packets, 6 TCP segments" in report
    assert "  1 record longer than the snap length, read whole\n" in report


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["epb", "pb"])
def test_pcapng_packet_longer_than_the_interface_snap_length(
    tmp_path: Path, engine: str, kind: str
) -> None:
    frames = with_long_ack(228)
    packet = epb if kind == "epb" else pb
    data = shb() + idb(snaplen=128) + b"".join(packet(0, i, f) for i, f in enumerate(frames))
    path = write(tmp_path, "snap.pcapng", data)
    rc, events, err = scan(path, engine)
    assert (rc, events) == (1, [EVENT])
    assert err == (
        f"treason: warning: {path}: 1 record longer than the snap length (128), read whole "
        "(the first: frame 5, 228 bytes)\n"
    )
    rc, report = summary(path, engine)
    assert "6 packets, 6 TCP segments" in report
    assert "  1 record longer than the snap length, read whole\n" in report


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_length_records_are_counted_and_skipped(tmp_path: Path, engine: str) -> None:
    frames = conversation()
    path = write(tmp_path, "zero.pcap", pcap_of([b"", *frames[:3], b"", *frames[3:], b""]))
    rc, events, err = scan(path, engine)
    assert (rc, events, err) == (1, [(8, "shrink", 2000, 2)], "")  # frame numbers count them
    rc, report = summary(path, engine)
    assert "9 packets, 6 TCP segments" in report and "skipped: 3 truncated-header" in report


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        (b"GARBAGE AFTER THE LAST RECORD\n",
         "bad record header: 1163150913-byte record, more than the 256 KiB limit (262144)"),
        (b"\xff" * 16, "bad record header: 4294967295-byte record, more than the 256 KiB limit "
                       "(262144)"),
    ],
)  # fmt: skip
def test_garbage_after_valid_records(
    tmp_path: Path, engine: str, garbage: bytes, message: str
) -> None:
    """Garbage is not a truncation: exit 2, but every event before it is still on stdout."""
    frames = conversation()
    path = write(tmp_path, "junk.pcap", pcap_of(frames) + garbage)
    rc, events, err = scan(path, engine)
    assert (rc, events) == (2, [EVENT])
    assert err == f"treason: {path}: {message} (at byte {offset_after(frames)})\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_garbage_after_a_gzip_stream(tmp_path: Path, engine: str) -> None:
    data = pcap_of(conversation())
    path = write(tmp_path, "junk.pcap.gz", gzip.compress(data) + b"not gzip at all")
    rc, events, err = scan(path, engine)
    assert (rc, events) == (2, [EVENT])
    assert err == f"treason: {path}: trailing garbage after gzip data (at byte {len(data)})\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_unknown_link_type_is_skipped_with_a_count(tmp_path: Path, engine: str) -> None:
    path = write(tmp_path, "user0.pcap", pcap_of(conversation(), linktype=147))
    rc, events, err = scan(path, engine)
    assert (rc, events, err) == (0, [], "")
    rc, report = summary(path, engine)
    assert rc == 0 and "skipped: 6 unknown-linktype" in report


@pytest.mark.parametrize("engine", ENGINES)
def test_pcapng_interfaces_of_unknown_link_type_do_not_hide_the_others(
    tmp_path: Path, engine: str
) -> None:
    frames = conversation()
    strange = [b"\x01\x02\x03", b"", b"\xff" * 70]
    data = shb() + idb(linktype=147) + idb(linktype=1)
    data += pcapng_of(strange[:2], if_id=0) + pcapng_of(frames, if_id=1)
    data += pcapng_of(strange[2:], if_id=0)
    path = write(tmp_path, "mixed.pcapng", data)
    rc, events, err = scan(path, engine)
    assert (rc, events, err) == (1, [(8, "shrink", 2000, 2)], "")
    rc, report = summary(path, engine)
    assert "skipped: 3 unknown-linktype" in report


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (struct.pack("<II", 6, 13) + b"\0" * 8, "bad pcapng block length 13"),
        (struct.pack("<II", 6, 8) + b"\0" * 8, "bad pcapng block length 8"),
        (struct.pack("<II", 6, 24) + b"\0" * 16, "bad pcapng block length 24"),  # < EPB minimum
        (struct.pack("<II", 0x0BAD, 64 << 20) + b"\0" * 8, "bad pcapng block length 67108864"),
        (block(6, b"\0" * 24)[:-4] + struct.pack("<I", 1),
         "bad pcapng block length 36 (trailer says 1)"),
        (block(6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + b"\0" * 8),
         "bad pcapng block length 40 for a 500-byte packet"),
    ],
)  # fmt: skip
def test_pcapng_bad_block_lengths(tmp_path: Path, engine: str, tail: bytes, message: str) -> None:
    frames = conversation()
    path = write(tmp_path, "bad.pcapng", shb() + idb() + pcapng_of(frames) + tail)
    rc, events, err = scan(path, engine)
    assert (rc, events) == (2, [EVENT])
    assert err == f"treason: {path}: {message} (at byte {ng_offset_after(frames)})\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_pcapng_missing_section_header(tmp_path: Path, engine: str) -> None:
    path = write(tmp_path, "headless.pcapng", idb() + pcapng_of(conversation()))
    rc, events, err = scan(path, engine)
    assert (rc, events) == (2, [])
    assert err == f"treason: {path}: missing pcapng section header block (at byte 0)\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_pcapng_interface_id_that_does_not_exist(tmp_path: Path, engine: str) -> None:
    frames = conversation()
    data = shb() + idb() + pcapng_of(frames) + epb(3, 99, frames[0])
    path = write(tmp_path, "ifid.pcapng", data)
    rc, events, err = scan(path, engine)
    assert (rc, events) == (2, [EVENT])
    assert err == (
        f"treason: {path}: packet on interface 3, but the section describes 1 interface "
        f"(at byte {ng_offset_after(frames)})\n"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_pcapng_new_section_forgets_the_old_interfaces(tmp_path: Path, engine: str) -> None:
    frames = conversation()
    data = shb() + idb() + pcapng_of(frames) + shb() + epb(0, 99, frames[0])
    path = write(tmp_path, "sections.pcapng", data)
    rc, events, err = scan(path, engine)
    assert (rc, events) == (2, [EVENT])
    at = ng_offset_after(frames) + len(shb())
    assert err == (
        f"treason: {path}: packet on interface 0, but the section describes 0 interfaces "
        f"(at byte {at})\n"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_pcapng_unknown_block_types_are_skipped(tmp_path: Path, engine: str) -> None:
    frames = conversation()
    unknown = [block(0x0BAD, b"x" * 37), block(0x80000001, b""), block(5, b"\0" * 12)]
    data = shb() + unknown[0] + idb() + pcapng_of(frames[:3]) + unknown[1]
    data += pcapng_of(frames[3:]) + unknown[2]
    path = write(tmp_path, "unknown.pcapng", data)
    rc, events, err = scan(path, engine)
    assert (rc, events, err) == (1, [EVENT], "")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file, not a pcap or pcapng capture (at byte 0)"),
        (b"hello, world\n", "not a pcap or pcapng file (starts with 'hello, w') (at byte 0)"),
        (b"\x7fELF\x02\x01\x01\x00" + b"\0" * 40,
         "not a pcap or pcapng file (starts with 0x7f454c4602010100) (at byte 0)"),
        (b"\x1b[2J\x1b]0;pwned\x07", "not a pcap or pcapng file (starts with "
                                    "0x1b5b324a1b5d303b) (at byte 0)"),
        (gzip.compress(b"just text, compressed\n"),
         "not a pcap or pcapng file (starts with 'just tex') (at byte 0)"),
        (b"\x1f\x8b\x08\x00\0\0\0\0\0\xff\xff\xff\xff",
         "corrupt gzip data (Error -3 while decompressing data: invalid block type) (at byte 0)"),
        (gzip.compress(b"\xd4\xc3\xb2\xa1" * 100)[:10], "truncated gzip stream (at byte 0)"),
    ],
)  # fmt: skip
def test_not_a_capture_at_all_is_one_line(
    tmp_path: Path, engine: str, content: bytes, message: str
) -> None:
    path = write(tmp_path, "notes.pcap", content)
    for args in (["--format", "json", "-q"], []):  # text report too: nothing on stdout
        res = treason("scan", "--engine", engine, *args, str(path))
        assert res.returncode == 2
        assert res.stdout == b""
        assert res.stderr.decode() == f"treason: {path}: {message}\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_directory_missing_file_and_unreadable_stdin(tmp_path: Path, engine: str) -> None:
    res = treason("scan", "--engine", engine, str(tmp_path))
    assert (res.returncode, res.stdout) == (2, b"")
    assert res.stderr.decode() == f"treason: {tmp_path}: is a directory, not a capture file\n"
    res = treason("scan", "--engine", engine, str(tmp_path / "nope.pcap"))
    assert (res.returncode, res.stdout) == (2, b"")
    assert res.stderr.decode() == f"treason: {tmp_path / 'nope.pcap'}: No such file or directory\n"
    res = treason("scan", "--engine", engine, "-", stdin=b"")
    assert (res.returncode, res.stdout) == (2, b"")
    assert res.stderr.decode() == (
        "treason: <stdin>: empty file, not a pcap or pcapng capture (at byte 0)\n"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bad_file_among_good_ones_costs_only_itself(tmp_path: Path, engine: str) -> None:
    good = write(tmp_path, "good.pcap", pcap_of(conversation()))
    bad = write(tmp_path, "bad.pcap", b"not a capture\n")
    res = treason("scan", "--engine", engine, "-j", "1", "-f", "json", "-q", str(bad), str(good))
    rows = [json.loads(line) for line in res.stdout.decode().splitlines()]
    assert res.returncode == 2
    assert [(r["file"], r["frame"]) for r in rows] == [(str(good), 6)]
    assert res.stderr.decode() == (
        f"treason: {bad}: not a pcap or pcapng file (starts with 'not a ca') (at byte 0)\n"
    )


# --------------------------------------------------------------------------------------------
# 2. Packets: counted as malformed, never fatal, never a false event


#: Frames B sends A after the handshake that would each be a kernel-visible shrink (window 0
#: with data outstanding) if their headers were believed.
MALFORMED_FRAMES = {
    "ip header length below 20": ether(ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0), ihl=4)),
    "ip total length below its header": ether(
        ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0), total_len=19)
    ),
    "ip header longer than the packet": ether(
        ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0), ihl=15, total_len=40)
    ),
    "no room for a tcp header": ether(ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0), total_len=30)),
    "tcp data offset below 5": ether(ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0, doff=4))),
    "tcp data offset beyond the packet": ether(
        ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0, doff=15))
    ),
    "option running past the header": ether(
        ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0, options=b"\x01\x08\x0a\x00"))
    ),
    "option length below 2": ether(
        ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0, options=b"\x02\x01\x00\x00"))
    ),
    "option kind without its length": ether(
        ipv4(B, A, tcp(80, 40000, 5001, 1101, ACK, 0, options=b"\x01\x01\x01\x05"))
    ),
    "ipv6 payload shorter than tcp": ether(
        ipv6("2001:db8::2", "2001:db8::1", tcp(80, 40000, 5001, 1101, ACK, 0), plen=10), 0x86DD
    ),
    "syn with rst": ether(ipv4(B, A, tcp(80, 40000, 5001, 1101, SYN | RST | ACK, 0))),
    "syn with fin": ether(ipv4(B, A, tcp(80, 40000, 5001, 1101, SYN | FIN | ACK, 0))),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(MALFORMED_FRAMES))
def test_impossible_headers_are_counted_as_malformed(
    tmp_path: Path, engine: str, case: str
) -> None:
    frames = conversation()
    frames.insert(5, MALFORMED_FRAMES[case])
    path = write(tmp_path, "odd.pcap", pcap_of(frames))
    rc, events, err = scan(path, engine)
    assert (rc, events, err) == (1, [(7, "shrink", 2000, 2)], "")
    rc, report = summary(path, engine)
    assert "7 packets, 6 TCP segments" in report and "skipped: 1 malformed" in report


@pytest.mark.parametrize("engine", ENGINES)
def test_syn_with_rst_and_fin_mid_connection_keeps_the_scale(tmp_path: Path, engine: str) -> None:
    """A mid-connection SYN|RST|FIN announcing window scale 0 changes nothing: the next shrink
    is still measured with shift 2 (a reset scale would call 40 bytes back 10)."""
    frames = conversation()
    frames += [
        pkt(B, A, 5001, 1101, SYN | RST | FIN, 0, 7, bytes([1, 3, 3, 0])),
        pkt(B, A, 5001, 1101, SYN, 65535, 8, bytes([1, 3, 3, 0])),  # a bare SYN: ignored
        pkt(B, A, 5001, 1101, SYN | ACK, 65535, 9, bytes([1, 3, 3, 0])),
        pkt(B, A, 5001, 1101, ACK, 490, 10),
    ]
    path = write(tmp_path, "synrstfin.pcap", pcap_of(frames))
    rc, events, err = scan(path, engine)
    assert (rc, events, err) == (1, [EVENT, (10, "shrink", 40, 2)], "")
    rc, report = summary(path, engine)
    assert "skipped: 1 malformed" in report


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ws", [15, 16, 200, 255])
def test_window_scale_above_14_counts_as_14(tmp_path: Path, engine: str, ws: int) -> None:
    """RFC 7323 §2.3: a shift above 14 is used as 14 (Linux logs "Illegal window scaling")."""
    big = bytes([1, 3, 3, ws])
    frames = [
        pkt(A, B, 1000, 0, SYN, 65535, 1, WS2),
        pkt(B, A, 5000, 1001, SYN | ACK, 65535, 2, big),
        pkt(A, B, 1001, 5001, ACK, 1000, 3),
        pkt(B, A, 5001, 1001, ACK, 3, 4),
        pkt(B, A, 5001, 1001, ACK, 2, 5),
    ]
    rc, events, err = scan(write(tmp_path, "ws.pcap", pcap_of(frames)), engine)
    assert (rc, events, err) == (1, [(5, "shrink", 1 << 14, 14)], "")


# --------------------------------------------------------------------------------------------
# 4. Logs


def kernel_line(peer: str = "192.0.2.1", x: int = 3, y: int = 4) -> bytes:
    return f"Mar  5 06:07:08 web1 kernel: {kernel_lines(peer, 5001, 443, x, y)['3.13']}\n".encode()


def logs(path: Path, fmt: str = "json") -> tuple[int, list[dict], str]:
    res = treason("logs", "--format", fmt, str(path))
    assert b"Traceback" not in res.stderr, res.stderr.decode()
    rows = [json.loads(line) for line in res.stdout.decode().splitlines()] if fmt == "json" else []
    return res.returncode, rows, res.stderr.decode()


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(b"Mar  5 06:07:08 web1 kernel: \xff\xfe\xc3\x28 invalid utf-8\n", id="utf8"),
        pytest.param(b"Mar  5 06:07:08 web1 kernel: NUL\x00 in the \x00 middle\n", id="nul"),
        pytest.param(b"\x00" * 4096 + b"\n", id="nul-line"),
        pytest.param(b"Mar  5 06:07:08 web1 kernel: " + b"A" * 10_000_000 + b"\n", id="10MB"),
        pytest.param(b"B" * 10_000_000, id="10MB-no-newline-last"),
    ],
)
def test_log_junk_is_skipped_and_the_reports_around_it_are_found(
    tmp_path: Path, junk: bytes
) -> None:
    if junk.endswith(b"\n"):
        data = kernel_line(x=1) + junk + kernel_line(x=2)
        expected = [1, 2]
    else:
        data = kernel_line(x=1) + junk
        expected = [1]
    rc, rows, err = logs(write(tmp_path, "kern.log", data))
    assert (rc, [r["x"] for r in rows], err) == (1, expected, "")


def test_log_report_with_invalid_utf8_in_the_host_is_found_and_shown_escaped(
    tmp_path: Path,
) -> None:
    data = kernel_line().replace(b"web1", b"we\xffb1")
    rc, rows, _ = logs(write(tmp_path, "kern.log", data))
    assert rc == 1 and [r["host"] for r in rows] == ["we\\xffb1"]


ESCAPES = b"\x1b]0;pwned\x07\x1b[2J\x9b31m\x00"


@pytest.mark.parametrize("fmt", ["text", "csv", "json"])
def test_terminal_escape_sequences_are_never_written_raw(tmp_path: Path, fmt: str) -> None:
    """Escape sequences in a log (here in the host name of a real report) reach the user shown
    as ``\\x1b...``, in every output format, never as bytes a terminal would obey."""
    data = kernel_line().replace(b"web1", b"web1" + ESCAPES) + b"x" + ESCAPES + b"\n"
    res = treason("logs", "--format", fmt, str(write(tmp_path, "kern.log", data)))
    assert res.returncode == 1
    out = res.stdout.decode()
    assert "192.0.2.1" in out
    for raw in ("\x1b", "\x07", "\x9b", "\x00"):
        assert raw not in out and raw not in res.stderr.decode()
    if fmt != "json":  # JSON escapes them its own way (\u001b), as its readers expect
        assert "web1\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x00" in out


@pytest.mark.parametrize(
    "line",
    [
        b"Mar  5 06:07:08 web1 kernel: Peer " + b"2001:" * 2000 + b"1:5001/443 unexpectedly "
        b"shrunk window 3:4 (repaired)\n",
        b"Mar  5 06:07:08 web1 kernel: Peer " + b":" * 45 + b":5001/443 unexpectedly "
        b"shrunk window 3:4 (repaired)\n",
        b"Mar  5 06:07:08 web1 kernel: Peer 2001:0db8:0000:0000:0000:0000:0000:0000:0001:5001/443"
        b" unexpectedly shrunk window 3:4 (repaired)\n",
        b"Mar  5 06:07:08 web1 kernel: Peer 192.0.2.1:5001/443 unexpectedly shrunk window "
        b"4294967296:4 (repaired)\n",
        b"Mar  5 06:07:08 web1 kernel: Peer 192.0.2.1:5001/443 unexpectedly shrunk window "
        b"3:99999999999999999999999999999 (repaired)\n",
        b"Mar  5 06:07:08 web1 kernel: Peer 192.0.2.1:65536/443 unexpectedly shrunk window "
        b"3:4 (repaired)\n",
        b"Mar  5 06:07:08 web1 kernel: Probing zero-window on 192.0.2.1:5001/443, seq=3:4, "
        b"recv 99999999999999999999ms ago, lasting 1ms\n",
        b"Mar  5 06:07:08 web1 kernel: net_ratelimit: 99999999999999999999999 callbacks "
        b"suppressed\n",
    ],
    ids=["ipv6-10k", "colons", "ipv6-9-groups", "x-2**32", "y-huge", "port-65536", "recv-huge",
         "ratelimit-huge"],
)  # fmt: skip
def test_absurd_addresses_and_numbers_are_not_reports(tmp_path: Path, line: bytes) -> None:
    """Not something a kernel prints (fields beyond their printf widths): not matched, no
    crash, and the real reports around it still are."""
    data = kernel_line(x=1) + line + kernel_line(x=2)
    rc, rows, err = logs(write(tmp_path, "kern.log", data))
    assert (rc, [r["x"] for r in rows], err) == (1, [1, 2], "")


def test_largest_numbers_a_kernel_prints_are_reports(tmp_path: Path) -> None:
    data = kernel_line("0000:0000:0000:0000:0000:ffff:c633:6407", 2**32 - 1, 0)
    rc, rows, _ = logs(write(tmp_path, "kern.log", data))
    assert rc == 1
    assert [(r["peer"], r["x"], r["y"], r["outstanding"]) for r in rows] == [
        ("198.51.100.7", 2**32 - 1, 0, 1)
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"2024-03-05T06:07:08+99:00 web1 kernel: ",  # time zone offset of 99 hours
        b'{"__REALTIME_TIMESTAMP": "9999999999999999999", "_TRANSPORT": "kernel", "MESSAGE": "',
    ],
    ids=["rfc3339-offset-99h", "journal-year-beyond-9999"],
)
def test_impossible_timestamps_leave_the_report_undated(tmp_path: Path, line: bytes) -> None:
    """Found by fuzzing: both used to end in a traceback. The report is still found."""
    message = kernel_lines("192.0.2.1", 5001, 443, 3, 4)["3.13"].encode()
    data = line + message + (b'"}' if line.startswith(b"{") else b"") + b"\n"
    rc, rows, err = logs(write(tmp_path, "kern.log", data))
    assert (rc, err) == (1, "")
    assert [(r["time"], r["peer"], r["x"]) for r in rows] == [(None, "192.0.2.1", 3)]


def test_corrupt_gzip_log_reports_what_came_before(tmp_path: Path) -> None:
    """A rotated log whose compressed data is damaged: the reports inflated before the damage
    are found, then one line names the file, exit 2."""
    first = b"".join(kernel_line(x=i) for i in range(1, 4)).ljust(70_000, b"\n")
    packed = bytearray(gzip.compress(first + kernel_line(x=9) * 100, compresslevel=0, mtime=0))
    # Stored blocks: a header byte, LEN, NLEN (its complement), LEN bytes. Break the block
    # that holds the first byte past 70 000.
    pos, inflated = 10, 0
    while inflated + struct.unpack_from("<H", packed, pos + 1)[0] <= 70_000:
        length = struct.unpack_from("<H", packed, pos + 1)[0]
        pos, inflated = pos + 5 + length, inflated + length
    packed[pos + 3] ^= 0xFF  # NLEN no longer the complement of LEN
    rc, rows, err = logs(write(tmp_path, "kern.log.2.gz", bytes(packed)))
    assert (rc, [r["x"] for r in rows]) == (2, [1, 2, 3])
    assert err == (
        f"treason: {tmp_path / 'kern.log.2.gz'}: cannot read: Error -3 while decompressing "
        "data: invalid stored block lengths\n"
    )


# --------------------------------------------------------------------------------------------
# 5. Output: whole or not at all; quiet on a closed pipe


def many_events(n: int) -> bytes:
    """A capture whose receiver shrinks and regrows its window ``n`` times."""
    frames = conversation()[:5]
    frames += [
        pkt(B, A, 5001, 1101, ACK, 500 if i % 2 else 1000, (10 + i) & 0xFFFF) for i in range(2 * n)
    ]
    return pcap_of(frames)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fmt", ["json", "csv", "text"])
def test_broken_pipe_ends_quietly(tmp_path: Path, engine: str, fmt: str) -> None:
    """``treason scan big.pcap | head -1``: no traceback, no "Exception ignored" noise."""
    path = write(tmp_path, "big.pcap", many_events(5000))
    cmd = f"{sys.executable} -m treason scan --engine {engine} --format {fmt} {path} | head -1"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=120)
    assert res.stdout.count(b"\n") == 1
    assert res.stderr == b"", res.stderr
    assert b"Traceback" not in res.stderr and b"Exception ignored" not in res.stderr
    assert b"Broken pipe" not in res.stderr and b"BrokenPipe" not in res.stderr
    assert res.returncode == 0


def test_broken_pipe_in_logs_ends_quietly(tmp_path: Path) -> None:
    path = write(tmp_path, "kern.log", b"".join(kernel_line(x=i) for i in range(20_000)))
    cmd = f"{sys.executable} -m treason logs --format json {path} | head -1"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=120)
    assert res.stdout.count(b"\n") == 1
    # The report goes out in one write: when the reader leaves mid-write the kernel reports a
    # short write rather than an error, so the status is that of the scan (1) or 0.
    assert res.stderr == b"" and res.returncode in (0, 1)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".treason-"))


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_while_reading_a_slow_pipe_leaves_the_target_untouched(
    tmp_path: Path, engine: str
) -> None:
    """SIGINT mid-scan: exit 130 with one line, no temporary file, the old report intact."""
    target = tmp_path / "report.json"
    target.write_text("previous report\n")
    data = many_events(40_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "treason", "scan", "--engine", engine, "-f", "json", "-o",
         str(target), "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    # A pipe holds 64 KiB: once this write returns, the scanner has read most of it, so the
    # interrupt lands mid-capture, with the rest still to come.
    half = len(data) // 2
    proc.stdin.write(data[:half])
    proc.stdin.flush()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    assert proc.returncode == 130
    assert (out, err) == (b"", b"treason: interrupted\n")
    assert target.read_text() == "previous report\n"
    assert leftovers(tmp_path) == []


def test_ctrl_c_while_writing_leaves_the_target_untouched(tmp_path: Path) -> None:
    """The interrupt can also land while the report is being written: same guarantee."""
    target = tmp_path / "report.csv"
    target.write_text("previous report\n")
    with pytest.raises(KeyboardInterrupt), atomic_text(str(target)) as out:
        out.write("half a report\n" * 1000)
        raise KeyboardInterrupt
    assert target.read_text() == "previous report\n"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_output_file_on_errors(tmp_path: Path, engine: str) -> None:
    """Not a capture: no report, the old file stays. Damaged capture: the report of the valid
    part, whole. Unwritable target: one line, nothing left behind."""
    target = tmp_path / "out.json"
    target.write_text("previous report\n")
    bad = write(tmp_path, "bad.pcap", b"hello, world\n")
    res = treason("scan", "--engine", engine, "-f", "json", "-o", str(target), str(bad))
    assert res.returncode == 2 and target.read_text() == "previous report\n"
    damaged = write(tmp_path, "junk.pcap", pcap_of(conversation()) + b"\xff" * 16)
    res = treason("scan", "--engine", engine, "-f", "json", "-q", "-o", str(target), str(damaged))
    assert res.returncode == 2 and res.stdout == b""
    assert [json.loads(line)["frame"] for line in target.read_text().splitlines()] == [6]
    res = treason("scan", "--engine", engine, "-o", str(tmp_path / "no" / "dir.txt"), str(damaged))
    assert res.returncode == 2 and res.stdout == b""
    assert res.stderr.decode().startswith(f"treason: {tmp_path / 'no' / 'dir.txt'}: cannot write")
    assert res.stderr.count(b"\n") == 1
    assert leftovers(tmp_path) == []


def test_slow_pipe_scan_finishes_when_the_writer_closes(tmp_path: Path) -> None:
    """A capture trickling in from a pipe is read to its end (no busy loop, no early stop)."""
    data = pcap_of(conversation())
    proc = subprocess.Popen(
        [sys.executable, "-m", "treason", "scan", "-f", "json", "-q", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None

    def feed() -> None:
        assert proc.stdin is not None
        for i in range(0, len(data), 7):
            proc.stdin.write(data[i : i + 7])
            proc.stdin.flush()
        proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    writer.join()
    assert proc.wait(timeout=60) == 1 and err == b""
    assert [json.loads(line)["frame"] for line in out.decode().splitlines()] == [6]
