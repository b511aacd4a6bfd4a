"""Capture readers: formats, byte orders, timestamps, streaming, and damaged input."""

from __future__ import annotations

import gzip
import io
import os
import pty
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captures import Packets, block, epb, idb, ipv4, option, pb, pcap, shb, spb, tcp
from treason import readers
from treason.engine.choose import compiled_available
from treason.errors import CaptureError, TruncatedCapture
from treason.readers import LongRecords, open_capture, open_frames
from treason.readers.pcapng import MAX_INTERFACES
from treason.scanner import scan

PKT = [ipv4("10.0.0.1", "10.0.0.2", tcp(payload=b"x" * n)) for n in (0, 5, 17)]
TS = [1_700_000_000_123_456_789, 1_700_000_001_000_000_001, 1_700_000_002_999_999_999]


def frames(blob: bytes, **kw):
    return list(open_frames(io.BytesIO(blob), name="cap", **kw))


def read_all(source, name: str = "cap"):
    """Every frame and the error at the end (or None)."""
    got = []
    try:
        for f in open_frames(source, name=name):
            got.append(f)
    except CaptureError as exc:
        return got, exc
    return got, None


class Dribble(io.RawIOBase):
    """A stream that returns 1..7 bytes per read, as a slow pipe may."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._n = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._n += 1
        step = self._n % 7 + 1
        if size >= 0:
            step = min(step, size)
        chunk = self._data[self._pos : self._pos + step]
        self._pos += len(chunk)
        return chunk


class SplitAt(io.RawIOBase):
    """Returns the first ``k`` bytes in one read and the rest in the next."""

    def __init__(self, data: bytes, k: int) -> None:
        self._parts = [data[:k], data[k:]]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            part = self._parts[0]
            if not part:
                self._parts.pop(0)
                continue
            take = part if size < 0 else part[:size]
            self._parts[0] = part[len(take) :]
            return take
        return b""


# --- pcap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_precisions_and_byte_orders(order: str, nano: bool) -> None:
    blob = pcap(
        [(t, p, len(p) + 100) for t, p in zip(TS, PKT)], linktype=101, nano=nano, order=order
    )
    got = frames(blob)
    assert [f.number for f in got] == [1, 2, 3]
    want_ts = TS if nano else [t // 1000 * 1000 for t in TS]
    assert [f.ts_ns for f in got] == want_ts
    assert [f.data for f in got] == PKT
    assert [f.orig_len for f in got] == [len(p) + 100 for p in PKT]
    assert {f.linktype for f in got} == {101}


def test_pcap_linktype_field_upper_bits_are_fcs_info_not_link_type() -> None:
    blob = pcap([(TS[0], PKT[0])], linktype=1 | (1 << 28) | (2 << 26))
    assert frames(blob)[0].linktype == 1


def test_modified_pcap_records_have_eight_more_header_bytes() -> None:
    head = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 101)
    rec = struct.pack("<IIII", 5, 6, len(PKT[1]), len(PKT[1])) + b"\0" * 8 + PKT[1]
    (f,) = frames(head + rec + rec)[:1]
    assert (f.ts_ns, f.data) == (5_000_006_000, PKT[1])
    assert len(frames(head + rec + rec)) == 2


def test_zero_length_records_are_frames() -> None:
    got = frames(pcap([(TS[0], b""), (TS[1], PKT[0])]))
    assert [(f.number, f.data) for f in got] == [(1, b""), (2, PKT[0])]


def test_capture_format_is_recognised_by_its_first_bytes() -> None:
    blob = pcap(list(zip(TS, PKT)), linktype=101)
    with open_capture(io.BytesIO(blob)) as capture:
        assert (capture.format, capture.packed) == ("pcap", None)
    assert [f.linktype for f in frames(blob)] == [101] * 3


# --- pcapng ----------------------------------------------------------------------------------


def _two_interface_section(order: str) -> bytes:
    return (
        shb(order)
        + idb(1, tsresol=9, order=order)  # nanoseconds, Ethernet
        + block(0x00000BAD, b"custom block body", order)
        + idb(101, tsresol=0x80 | 10, tsoffset=100, order=order)  # 1/1024 s, +100 s
        + epb(0, 1_700_000_000_123_456_789, PKT[0], order=order)
        + block(5, b"\0" * 20, order)  # interface statistics: skipped
        + epb(1, 1024 * 5 + 512, PKT[1], orig_len=999, order=order)
    )


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_have_own_linktype_and_time_unit(order: str) -> None:
    got = frames(_two_interface_section(order))
    assert [(f.number, f.linktype, f.data) for f in got] == [(1, 1, PKT[0]), (2, 101, PKT[1])]
    assert got[0].ts_ns == 1_700_000_000_123_456_789
    assert got[1].ts_ns == 105_500_000_000  # 5.5 s in 1/1024 units, plus the 100 s offset
    assert got[1].orig_len == 999
    with open_capture(io.BytesIO(_two_interface_section(order))) as capture:
        assert capture.format == "pcapng"


@pytest.mark.parametrize(
    ("tsresol", "units", "ns"),
    [
        (None, 1_500_000, 1_500_000_000),  # default microseconds
        (3, 1500, 1_500_000_000),
        (6, 7, 7000),
        (9, 7, 7),
        (12, 7_000, 7),  # picoseconds
        (0x80 | 0, 3, 3_000_000_000),  # 2^0: seconds
        (0x80 | 20, 1 << 20, 1_000_000_000),
        (0x80 | 10, 1, 976_562),  # floor of 1/1024 s
    ],
)
def test_pcapng_tsresol(tsresol: int | None, units: int, ns: int) -> None:
    (f,) = frames(shb() + idb(101, tsresol=tsresol) + epb(0, units, PKT[0]))
    assert f.ts_ns == ns


def test_pcapng_sections_reset_interfaces_and_byte_order_but_not_numbering() -> None:
    blob = (
        _two_interface_section("<")
        + shb(">")
        + idb(113, order=">")
        + epb(0, 1, PKT[2], order=">")
        + spb(PKT[0], order=">")
        + pb(0, 2, PKT[1], order=">")
    )
    got = frames(blob)
    assert [f.number for f in got] == [1, 2, 3, 4, 5]
    assert [f.linktype for f in got] == [1, 101, 113, 113, 113]
    assert [f.data for f in got] == [PKT[0], PKT[1], PKT[2], PKT[0], PKT[1]]
    assert got[2].ts_ns == 1000 and got[4].ts_ns == 2000
    assert got[3].ts_ns == 0  # a simple packet block has no timestamp


def test_pcapng_simple_packet_block_is_cut_to_the_snap_length() -> None:
    (f,) = frames(shb() + idb(101, snaplen=20) + spb(PKT[2][:20], orig_len=len(PKT[2])))
    assert f.data == PKT[2][:20] and f.orig_len == len(PKT[2])


def test_pcapng_options_on_shb_and_unknown_idb_options_are_ignored() -> None:
    opts = option(2, b"some hardware") + option(0, b"")
    body = struct.pack("<HHI", 1, 0, 0) + option(2, b"eth0") + option(9, b"\x09") + option(0, b"")
    blob = shb(options=opts) + block(1, body) + epb(0, 42, PKT[0])
    (f,) = frames(blob)
    assert f.ts_ns == 42


# --- compressed, stdin, streams ---------------------------------------------------------------


def test_gzip_pcap_and_pcapng_are_detected_by_magic(tmp_path: Path) -> None:
    for i, blob in enumerate([pcap(list(zip(TS, PKT))), _two_interface_section("<")]):
        path = tmp_path / f"capture{i}.txt"  # the name must not matter
        path.write_bytes(gzip.compress(blob))
        got = list(open_frames(path))
        assert [f.data for f in got] == PKT[: len(got)] and len(got) >= 2
        with open_capture(path) as capture:
            assert capture.packed is not None and capture.format == ("pcap", "pcapng")[i]


def test_gzip_with_several_members_is_one_stream() -> None:
    blob = pcap(list(zip(TS, PKT)))
    got = frames(gzip.compress(blob[:30]) + gzip.compress(blob[30:]))
    assert [f.data for f in got] == PKT


def test_truncated_gzip_yields_what_was_decompressed_then_truncation() -> None:
    blob = pcap([(i * 1000, p) for i, p in enumerate(PKT * 50)])
    packed = gzip.compress(blob)
    got, err = read_all(io.BytesIO(packed[: len(packed) - 12]))
    assert len(got) >= 140
    assert isinstance(err, TruncatedCapture)


def test_corrupt_gzip_is_a_capture_error() -> None:
    packed = bytearray(gzip.compress(pcap([(i * 1000, p) for i, p in enumerate(PKT * 20)])))
    packed[40:60] = b"\xff" * 20
    _, err = read_all(io.BytesIO(bytes(packed)))
    assert isinstance(err, CaptureError) and "gzip" in err.message


def _packed(tool: str, blob: bytes) -> bytes:
    """``blob`` compressed by the real tool (``tcpdump -z bzip2``, ``xz`` on an archive)."""
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")
    return subprocess.run([tool, "-c"], input=blob, capture_output=True, check=True).stdout


@pytest.mark.parametrize("tool", ["bzip2", "xz"])
def test_bzip2_and_xz_are_read_like_gzip(tmp_path: Path, tool: str) -> None:
    """Detected by magic, concatenated streams read as one, both engines the same events; a
    cut stream gives what came before and a truncation, damage a one-line error."""
    blob = pcap([(i * 1000, p) for i, p in enumerate(PKT * 400)])
    packed = _packed(tool, blob[:5000]) + _packed(tool, blob[5000:])
    path = tmp_path / "ring.pcap.x"
    path.write_bytes(packed)
    with open_capture(path) as capture:
        assert capture.packed is not None and capture.packed.kind == tool
    whole = list(open_frames(path))
    assert [f.data for f in whole] == PKT * 400
    for engine in ("reference", "fast") if compiled_available() else ("reference",):
        assert list(scan(path, engine=engine)) == list(scan(io.BytesIO(blob), engine=engine))
    got, err = read_all(io.BytesIO(packed[: len(packed) - 40]))
    assert isinstance(err, TruncatedCapture)
    assert [f.data for f in got] == [f.data for f in whole[: len(got)]]
    _, err = read_all(io.BytesIO(packed + b"garbage"))
    assert isinstance(err, CaptureError) and "trailing garbage" in err.message
    broken = bytearray(packed)
    broken[len(broken) // 3 : len(broken) // 3 + 20] = b"\x55" * 20
    _, err = read_all(io.BytesIO(bytes(broken)))
    assert isinstance(err, CaptureError) and f"corrupt {tool} data" in err.message


def test_stdin_dash(tmp_path: Path) -> None:
    blob = gzip.compress(pcap(list(zip(TS, PKT))))
    script = (
        "from treason.readers import open_frames\n"
        "for f in open_frames('-'): print(f.number, f.ts_ns, len(f.data))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script], input=blob, capture_output=True, check=True
    )
    want = [f"{i + 1} {t // 1000 * 1000} {len(p)}" for i, (t, p) in enumerate(zip(TS, PKT))]
    assert res.stdout.decode().split("\n")[:3] == want


def test_path_and_pathlike_and_stream_give_the_same_frames(tmp_path: Path) -> None:
    blob = _two_interface_section(">")
    path = tmp_path / "x.pcapng"
    path.write_bytes(blob)
    a = list(open_frames(str(path)))
    b = list(open_frames(path))
    with open(path, "rb") as fh:
        c = list(open_frames(fh))
    assert a == b == c and len(a) == 2


def _sample_files() -> list[bytes]:
    return [
        pcap(list(zip(TS, PKT)), order=">", nano=True),
        _two_interface_section("<") + shb(">") + idb(1, order=">") + spb(PKT[2], order=">"),
    ]


@pytest.mark.parametrize("blob", _sample_files(), ids=["pcap", "pcapng"])
def test_split_at_every_offset_and_dribbling_streams(blob: bytes) -> None:
    want = frames(blob)
    assert len(want) >= 3
    for k in range(len(blob) + 1):
        assert list(open_frames(SplitAt(blob, k), name="cap")) == want, k
    assert list(open_frames(Dribble(blob), name="cap")) == want
    assert list(open_frames(Dribble(gzip.compress(blob)), name="cap")) == want


# --- damage ------------------------------------------------------------------------------------


def _record_starts(blob: bytes) -> list[int]:
    starts, pos = [], 24
    while pos < len(blob):
        starts.append(pos)
        pos += 16 + struct.unpack_from("<I", blob, pos + 8)[0]
    return starts


def test_pcap_cut_at_every_offset() -> None:
    blob = pcap(list(zip(TS, PKT)))
    starts = _record_starts(blob)
    for cut in range(len(blob) + 1):
        got, err = read_all(io.BytesIO(blob[:cut]))
        whole = [s for s in starts if s + 16 + len(PKT[starts.index(s)]) <= cut]
        assert [f.data for f in got] == PKT[: len(whole)], cut
        if cut == 0:
            assert str(err) == "cap: empty file, not a pcap or pcapng capture (at byte 0)"
        elif cut < 24:
            assert not isinstance(err, TruncatedCapture)
            assert err is not None
            if cut < 4:
                assert "not a pcap or pcapng file (starts with 0xd4" in err.message
            else:
                assert f"truncated pcap file header ({cut} of 24 bytes)" in err.message
        elif cut in [*starts, len(blob)]:
            assert err is None, cut
        else:
            assert isinstance(err, TruncatedCapture), cut
            assert err.message.startswith("truncated record")
            assert err.offset == max(s for s in starts if s <= cut)


def test_pcapng_cut_at_every_offset_never_loses_complete_blocks() -> None:
    blob = _two_interface_section("<")
    full = frames(blob)
    ends, pos = [], 0
    while pos < len(blob):
        pos += struct.unpack_from("<I", blob, pos + 4)[0]
        ends.append(pos)
    for cut in range(1, len(blob) + 1):
        got, err = read_all(io.BytesIO(blob[:cut]))
        assert got == full[: len(got)]
        if cut in ends:
            assert err is None
        elif cut < ends[0]:
            assert type(err) is CaptureError  # not even a section header yet
            assert "truncated pcapng section header block" in err.message or cut < 4
        else:
            assert isinstance(err, TruncatedCapture)
            assert err.offset == max(e for e in [0, *ends] if e < cut)


def test_not_a_capture_names_what_it_starts_with(tmp_path: Path) -> None:
    path = tmp_path / "page.pcap"
    path.write_bytes(b"HTTP/1.1 200 OK\r\n\r\n")
    _, err = read_all(path, name=str(path))
    assert err is not None and not isinstance(err, TruncatedCapture)
    assert str(err) == f"{path}: not a pcap or pcapng file (starts with 'HTTP/1.1') (at byte 0)"


def test_empty_file_directory_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    _, err = read_all(tmp_path / "empty", name="empty")
    assert str(err) == "empty: empty file, not a pcap or pcapng capture (at byte 0)"
    _, err = read_all(tmp_path, name="dir")
    assert str(err) == "dir: is a directory, not a capture file"
    _, err = read_all(tmp_path / "nope", name="nope")
    assert str(err) == "nope: No such file or directory"


def test_os_errors_become_one_line_capture_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    _, err = read_all(tmp_path / "file" / "x", name="x")
    assert str(err) == "x: Not a directory"

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self._first = True

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if self._first:
                self._first = False
                return pcap([(TS[0], PKT[0])]) + b"\0" * 8
            raise OSError(5, "Input/output error")

    got, err = read_all(Failing(), name="disk")
    assert len(got) == 1
    assert type(err) is CaptureError and str(err) == "disk: Input/output error (at byte 80)"


def test_binary_junk_is_shown_as_hex() -> None:
    _, err = read_all(io.BytesIO(b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"))
    assert err is not None and "(starts with 0x0001020304050607)" in err.message


def test_garbage_after_records_is_an_error_at_its_offset() -> None:
    blob = pcap(list(zip(TS, PKT)))
    got, err = read_all(io.BytesIO(blob + b"this is not a pcap record, just text"))
    assert len(got) == 3
    assert type(err) is CaptureError and err.offset == len(blob)
    assert "bad record header" in err.message


def test_record_longer_than_the_snap_length_is_read_whole_but_256k_is_damage() -> None:
    blob = pcap([(TS[0], PKT[0]), (TS[1], b"\0" * 200), (TS[2], PKT[2])], snaplen=100)
    long_records = LongRecords()
    got = list(readers.frames(open_capture(io.BytesIO(blob), "cap"), long_records))
    assert [len(f.data) for f in got] == [len(PKT[0]), 200, len(PKT[2])]
    assert (long_records.count, long_records.first) == (1, (2, 200, 100))
    assert long_records.warning("cap") == (
        "cap: 1 record longer than the snap length (100), read whole (the first: frame 2, "
        "200 bytes)"
    )
    for snaplen in (0, 100, 1 << 31):
        head = pcap([(TS[0], PKT[0])], snaplen=snaplen)
        got, err = read_all(io.BytesIO(head + struct.pack("<IIII", 0, 0, 262145, 262145)))
        assert len(got) == 1 and type(err) is CaptureError
        assert str(err) == (
            "cap: bad record header: 262145-byte record, more than the 256 KiB limit (262144) "
            f"(at byte {len(head)})"
        )


def test_pcapng_bad_block_lengths() -> None:
    good = shb() + idb(101)
    for bad, offset in [
        (good + struct.pack("<II", 6, 13) + b"\0" * 20, len(good)),  # not a multiple of 4
        (good + struct.pack("<II", 6, 8) + b"\0" * 20, len(good)),  # shorter than a header
        (good + struct.pack("<III", 6, 0x7FFFFFF0, 0), len(good)),  # absurd
        (good + epb(0, 1, PKT[0])[:-4] + b"\0\0\0\0", len(good)),  # trailer disagrees
    ]:
        got, err = read_all(io.BytesIO(bad))
        assert got == [] and type(err) is CaptureError and err.offset == offset
        assert err.message.startswith("bad pcapng block length")


def test_pcapng_epb_claiming_more_than_its_block_or_snaplen() -> None:
    body = struct.pack("<IIIII", 0, 0, 1, 500, 500) + b"\0" * 40
    _, err = read_all(io.BytesIO(shb() + idb(101) + block(6, body)))
    assert type(err) is CaptureError and "bad pcapng block length" in err.message
    long_records = LongRecords()
    blob = shb() + idb(101, snaplen=10) + epb(0, 1, PKT[0]) + pb(0, 2, PKT[1])
    got = list(readers.frames(open_capture(io.BytesIO(blob), "cap"), long_records))
    assert [f.data for f in got] == PKT[:2]  # read whole, as Wireshark does
    assert (long_records.count, long_records.first) == (2, (1, len(PKT[0]), 10))
    _, err = read_all(io.BytesIO(shb() + idb(101, snaplen=10) + epb(0, 1, b"\0" * 262145)))
    assert type(err) is CaptureError and "more than the 256 KiB limit" in err.message


def test_pcapng_missing_section_header() -> None:
    _, err = read_all(io.BytesIO(idb(101) + epb(0, 1, PKT[0])))
    assert type(err) is CaptureError
    assert str(err) == "cap: missing pcapng section header block (at byte 0)"


def test_pcapng_unknown_interface() -> None:
    blob = shb() + idb(101) + epb(0, 1, PKT[0]) + epb(3, 1, PKT[1])
    got, err = read_all(io.BytesIO(blob))
    assert len(got) == 1 and type(err) is CaptureError
    offset = len(blob) - len(epb(3, 1, PKT[1]))
    assert str(err) == (
        f"cap: packet on interface 3, but the section describes 1 interface (at byte {offset})"
    )
    _, err = read_all(io.BytesIO(shb() + spb(PKT[0])))
    assert type(err) is CaptureError and "interface 0" in err.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(_sample_files()), st.integers(0, 400))
def test_hostile_bytes_only_ever_raise_capture_errors(junk: bytes, blob: bytes, at: int) -> None:
    damaged = blob[:at] + junk + blob[at + len(junk) :]
    for data in (damaged, junk, gzip.compress(damaged)[: at + 20]):
        read_all(io.BytesIO(data))  # anything but CaptureError propagates and fails


# --- hostile captures, through both engines and the command line ------------------------------

ENGINES = ["reference"] + (["fast"] if compiled_available() else [])
ROOT = Path(__file__).resolve().parent.parent


def _three_events() -> bytes:
    """Three flows, each closing its window with data outstanding: three kernel events."""
    p = Packets()
    for port in (1000, 1001, 1002):
        p.c(1000, 0, 64240, flags=0x02, port=port, ws=7)
        p.v(5000, 1001, 65160, flags=0x12, port=port, ws=7)
        p.c(1001, 5001, 502, port=port)
        p.v(5001, 1001, 500, port=port)
        p.c(1001, 5001, 502, plen=1448, flags=0x18, port=port)
        p.v(5001, 2001, 0, port=port)
    return p.pcap()


def _scan(data: bytes, engine: str) -> tuple[list[int], str | None]:
    frames: list[int] = []
    try:
        for event in scan(io.BytesIO(data), engine=engine):
            frames.append(event.frame)
    except CaptureError as exc:
        return frames, str(exc)
    return frames, None


def _cli(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "treason", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=stdin,
    )


def _peak_rss_mb(*args: str) -> tuple[int, str, float]:
    """Run treason in a fresh process; its exit status, stderr and peak RSS in MB."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'treason', *sys.argv[1:]],"
        " capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(r.returncode, peak); print(r.stderr, end='')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env, check=True
    ).stdout
    head, _, stderr = out.partition("\n")
    code, peak = head.split()
    return int(code), stderr, float(peak)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("field", ["crc", "length"])
def test_gzip_trailer_damage_keeps_every_inflated_byte(engine: str, field: str) -> None:
    """A wrong CRC-32 or length in the member trailer: every event inflated is reported, then
    one error at the end of the inflated data, where the damage shows (both engines)."""
    data = _three_events()
    packed = bytearray(gzip.compress(data))
    packed[-8 if field == "crc" else -4] ^= 1
    frames, error = _scan(bytes(packed), engine)
    assert frames == [6, 12, 18]
    assert error is not None and error.startswith("<stream>: corrupt gzip data (")
    assert ("CRC-32" in error) == (field == "crc")
    assert error.endswith(f"(at byte {len(data)})")
    # A later member is not read past the damage; the whole stream gives the same.
    frames2, error2 = _scan(bytes(packed) + gzip.compress(b"\0" * 100), engine)
    assert (frames2, error2) == (frames, error)


@pytest.mark.parametrize("engine", ENGINES)
def test_gzip_header_with_name_comment_extra_and_crc(engine: str) -> None:
    """Every optional header field of RFC 1952, as gzip(1) and other writers set them."""
    data = _three_events()
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    head = b"\x1f\x8b\x08\x1e" + bytes(6)  # FHCRC | FEXTRA | FNAME | FCOMMENT
    head += struct.pack("<H", 4) + b"ab\0\0" + b"name.pcap\0" + b"a comment\0"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    trailer = struct.pack("<II", zlib.crc32(data), len(data))
    assert gzip.decompress(head + body + trailer) == data  # what gunzip reads
    assert _scan(head + body + trailer, engine) == ([6, 12, 18], None)
    bad = bytearray(head + body + trailer)
    bad[len(head) - 1] ^= 1
    assert _scan(bytes(bad), engine) == (
        [],
        "<stream>: corrupt gzip data (header CRC does not match) (at byte 0)",
    )


def _ts_capture(tsresol: int | None, tsoffset: int | None, ts: int) -> bytes:
    """Three events with sane times, then one frame whose time the interface makes absurd."""
    good = pcapng_of(_three_events())
    bad = idb(1, tsresol=tsresol, tsoffset=tsoffset) + epb(1, ts, PKT[0])
    return good + bad


def pcapng_of(pcap_blob: bytes) -> bytes:
    """The records of a little-endian nanosecond pcap, as one pcapng section."""
    out, pos = [shb(), idb(1, tsresol=9)], 24
    while pos < len(pcap_blob):
        sec, nsec, incl, orig = struct.unpack_from("<IIII", pcap_blob, pos)
        out.append(epb(0, sec * 10**9 + nsec, pcap_blob[pos + 16 : pos + 16 + incl], orig))
        pos += 16 + incl
    return b"".join(out)


ABSURD_TIMES = {
    "2^64 us": (None, None, 2**64 - 1),
    "offset +2^62 s": (None, 2**62, 1),
    "offset -2^62 s": (None, -(2**62), 1),
    "10^0 with 2^63": (0, None, 2**63),
}


@pytest.mark.parametrize("case", sorted(ABSURD_TIMES))
def test_absurd_pcapng_times_are_one_error_after_the_events(case: str, tmp_path: Path) -> None:
    """Times no calendar shows (outside years 1-9999) are damage: the events before them are
    reported, then one line with the block's offset, in every output, on both engines."""
    data = _ts_capture(*ABSURD_TIMES[case])
    tsresol, tsoffset, _ = ABSURD_TIMES[case]
    at = len(pcapng_of(_three_events())) + len(idb(1, tsresol=tsresol, tsoffset=tsoffset))
    want = f"timestamp out of range (outside years 1-9999) (at byte {at})"
    for engine in ENGINES:
        assert _scan(data, engine) == ([6, 12, 18], f"<stream>: {want}")
    path = tmp_path / "times.pcapng"
    path.write_bytes(data)
    for args in ([], ["-f", "json"], ["-f", "csv"]):
        r = _cli("scan", str(path), *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.endswith(f"\ntreason: {path}: {want}\n") or r.stderr == (
            f"treason: {path}: {want}\n"
        )
        assert r.stdout.count("kernel") >= 3, args
    r = _cli("plot", str(path), "-o", str(tmp_path / "plot.html"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.endswith(f"{path}: {want}\n")


def test_pcapng_interfaces_are_capped_per_section(tmp_path: Path) -> None:
    """Millions of interface blocks (a few hundred KB gzipped) stop at the cap with one line,
    in bounded memory; a new section starts a new count."""
    many = idb(1) * MAX_INTERFACES
    ok = shb() + many + shb() + many + epb(MAX_INTERFACES - 1, 5, PKT[0])
    for engine in ENGINES:
        assert _scan(ok, engine) == ([], None)
    over = shb() + many + idb(1)
    want = (
        f"<stream>: more than {MAX_INTERFACES} interfaces in one pcapng section "
        f"(at byte {len(shb()) + len(many)})"
    )
    for engine in ENGINES:
        assert _scan(over, engine) == ([], want)
    # 3 M interface blocks: 60 MB of pcapng in a small gzip file.
    path = tmp_path / "idbs.pcapng.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(shb())
        chunk = idb(1) * 100_000
        for _ in range(30):
            fh.write(chunk)
    assert path.stat().st_size < 2_000_000
    for engine in ENGINES:
        code, stderr, peak = _peak_rss_mb("scan", "--engine", engine, str(path))
        assert code == 2 and stderr.endswith(
            f"interfaces in one pcapng section (at byte {len(shb()) + len(many)})\n"
        )
        assert peak < 150, f"{engine}: {peak:.0f} MB peak RSS (generous limit 150 MB)"


def test_closed_stdin_is_one_line() -> None:
    """``treason scan - <&-``: no standard input at all."""
    r = subprocess.run(
        [sys.executable, "-m", "treason", "scan", "-"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        preexec_fn=lambda: os.close(0),
    )
    assert (r.returncode, r.stdout, r.stderr) == (
        2,
        "",
        "treason: <stdin>: standard input is closed\n",
    )


def test_unreadable_large_capture_with_a_progress_line(request: pytest.FixtureRequest) -> None:
    """A capture big enough for the progress line that the user may not read: one line, exit 2
    (run as an unprivileged user, with stderr on a terminal so the progress line is wanted)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the command as another user")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TERM": "xterm"}
    probe = [*nobody, sys.executable, "-c", "import treason.cli"]
    if subprocess.run(probe, env=env, cwd="/", capture_output=True).returncode:
        pytest.skip("the interpreter or the source tree is not readable by an unprivileged user")
    # pytest's own temporary directories are root's alone: this one "nobody" may enter.
    public = Path(tempfile.mkdtemp(prefix="treason-unreadable-", dir="/tmp"))
    os.chmod(public, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(public, ignore_errors=True))
    path = public / "big.pcap"
    with open(path, "wb") as fh:
        fh.write(pcap([(TS[0], PKT[0])]))
        fh.truncate(80 << 20)
    os.chmod(path, 0o600)  # root's: unreadable for "nobody"
    main, other = pty.openpty()
    try:
        r = subprocess.run(
            [*nobody, sys.executable, "-m", "treason", "scan", str(path)],
            stdout=subprocess.PIPE,
            stderr=other,
            env=env,
            cwd="/",
        )
        os.close(other)
        other = -1
        err = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(main)
        if other >= 0:
            os.close(other)
    text = err.decode().replace("\r\x1b[K", "").replace("\r\n", "\n")
    assert r.returncode == 2, text
    assert text == f"treason: {path}: Permission denied\n"
