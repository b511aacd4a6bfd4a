"""Streaming outputs: events leave as they become final, memory does not grow with their number.

Memory is the peak RSS of a real ``treason scan`` process (read by a parent through
``RUSAGE_CHILDREN``), compared between a capture with 10,000 events and one with 100,000: the
limits below are generous, and far below what holding every event costs (about 60 MiB more
for 90,000 events as JSON before streaming). Parquet files are read back with pyarrow and
compared with the JSON Lines of the same scan, field by field.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from captures import ether, ipv4, pcap, tcp
from test_output import leftovers, shrinking, treason
from treason.events import Event, Severity
from treason.output import progress
from treason.output.present import MAX_CELL, MAX_VLANS, flow_text
from treason.output.text import TextReport
from treason.scanner import ScanStats, fast_available

SMALL, BIG = 10_000, 100_000
#: Peak RSS growth allowed from SMALL to BIG events (MiB): streaming keeps it near zero.
GROWTH_LIMIT = {"json": 20, "csv": 20, "text": 20, "parquet": 64}

_MEASURE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1], 'w').write(str(peak))\n"
    "sys.exit(rc)\n"
)


def peak_rss_kib(tmp_path: Path, *args: str) -> int:
    peak = tmp_path / "peak.txt"
    res = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(peak), sys.executable, "-m", "treason", *args],
        capture_output=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stderr.decode()
    return int(peak.read_text())


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("sized")
    paths = {}
    for n in (SMALL, BIG):
        paths[n] = d / f"{n}.pcap"
        paths[n].write_bytes(shrinking(n))
    return paths


def parquet_available() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


needs_pyarrow = pytest.mark.skipif(not parquet_available(), reason="pyarrow is not installed")


@pytest.mark.parametrize(
    "fmt", ["json", "csv", "text", pytest.param("parquet", marks=needs_pyarrow)]
)
def test_memory_does_not_grow_with_events(tmp_path: Path, sized: dict[int, Path], fmt: str) -> None:
    out = tmp_path / "out"
    peaks = {}
    for n, path in sized.items():
        args = ["scan", "-q", "-f", fmt, str(path)]
        if fmt == "parquet":
            args += ["-o", str(out)]
        peaks[n] = peak_rss_kib(tmp_path, *args)
    growth_mib = (peaks[BIG] - peaks[SMALL]) / 1024
    assert growth_mib < GROWTH_LIMIT[fmt], peaks
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(out).metadata
        assert (meta.num_rows, meta.num_row_groups) == (BIG, 2)  # written as events came


def test_json_events_leave_while_the_capture_is_still_coming(tmp_path: Path) -> None:
    """Half a capture on a pipe that stays open: its events are already on stdout."""
    data = shrinking(40_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "treason", "scan", "-q", "-f", "json", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin
    first_seen = threading.Event()

    def feed() -> None:
        stdin.write(data[: len(data) // 2])
        stdin.flush()
        first_seen.wait(timeout=120)
        stdin.write(data[len(data) // 2 :])
        stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # a hang guard, not a timing
        assert ready, "no event before the end of the capture"
        first = json.loads(proc.stdout.readline())  # stdin is still open: feed() waits
        assert first["frame"] == 7 and first["class"] == "shrink"
        first_seen.set()
        rest = proc.stdout.read().splitlines()
        assert proc.wait(timeout=120) == 1
        assert len(rest) + 1 == 40_000
    finally:
        first_seen.set()
        writer.join(timeout=120)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_a_streamed_output_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("previous report\n")
    data = shrinking(40_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "treason", "scan", "-f", "json", "-o", str(target), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(data[: len(data) // 2])  # the output is open and being written now
    proc.stdin.flush()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    assert target.read_text() == "previous report\n"
    assert leftovers(tmp_path) == []


def test_parallel_scans_leave_no_spool_behind(tmp_path: Path) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    files = []
    for n in (3, 5, 7):
        path = tmp_path / f"{n}.pcap"
        path.write_bytes(shrinking(n))
        files.append(str(path))
    env = {**os.environ, "TMPDIR": str(spool)}
    res = treason("scan", "-q", "-f", "json", "--jobs", "3", *files, env=env)
    assert res.returncode == 1
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["file"] for r in rows] == [f for f, n in zip(files, (3, 5, 7)) for _ in range(n)]
    assert list(spool.iterdir()) == []


def test_sigterm_during_a_parallel_scan_leaves_no_spool_behind(tmp_path: Path) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.pcap"
        path.write_bytes(shrinking(60_000))
        files.append(str(path))
    target = tmp_path / "out.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "treason",
            "scan",
            "-f",
            "json",
            "-j",
            "2",
            "-o",
            str(target),
            *files,
        ],
        env={**os.environ, "TMPDIR": str(spool)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Both workers have opened their spool files: SIGTERM now lands mid-scan.
        for _ in range(6000):  # a hang guard (60 s), not a timing
            if len(list(spool.glob("treason-scan-*/*.events"))) == 2 or proc.poll() is not None:
                break
            threading.Event().wait(0.01)
        assert proc.poll() is None, "the scan ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(spool.iterdir()) == []
    assert not target.exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- Parquet


@needs_pyarrow
def test_parquet_equals_json_lines(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    capture = Path(__file__).resolve().parent.parent / "examples" / "kernel.pcap"
    out = tmp_path / "events.parquet"
    res = treason("scan", "--all", "-q", "-f", "parquet", "-o", str(out), str(capture))
    assert res.returncode == 1 and res.stdout == b"", res.stderr
    js = treason("scan", "--all", "-q", "-f", "json", str(capture))
    expected = [json.loads(line) for line in js.stdout.splitlines()]
    rows = pq.read_table(out).to_pylist()
    for row in rows:
        row["kernel_lines"] = dict(row["kernel_lines"])
    assert rows == expected and any(r["kernel_line"] for r in rows)


@needs_pyarrow
def test_parquet_without_events_is_an_empty_table(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "none.pcap"
    path.write_bytes(pcap([]))
    out = tmp_path / "none.parquet"
    res = treason("scan", "-q", "-f", "parquet", "-o", str(out), str(path))
    assert res.returncode == 0, res.stderr
    table = pq.read_table(out)
    assert table.num_rows == 0 and "kernel_lines" in table.column_names


def test_parquet_needs_an_output_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(shrinking(1))
    res = treason("scan", "-f", "parquet", str(path))
    assert (res.returncode, res.stdout) == (2, b"")
    assert res.stderr == b"treason: --format parquet: writes a file: give -o FILE\n"


def test_parquet_without_pyarrow_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(shrinking(1))
    code = (
        "import sys\n"
        "sys.modules['pyarrow'] = None  # as on a machine without the extra\n"
        "from treason.cli import main\n"
        "sys.exit(main())\n"
    )
    out = tmp_path / "x.parquet"
    res = subprocess.run(
        [sys.executable, "-c", code, "scan", "-f", "parquet", "-o", str(out), str(path)],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr == (
        b"treason: --format parquet: needs pyarrow: pip install 'treason[parquet]'\n"
    )
    assert not out.exists()


# --------------------------------------------------------------------------- bounded text


def event(vlan: tuple[int, ...] = (), frame: int = 7, file: str = "x.pcap") -> Event:
    return Event(
        frame=frame, time=1.7e9, src="10.0.0.2", sport=80, dst="10.0.0.1", dport=40000,
        vlan=vlan, cls=Severity.SHRINK, closing=False, certainty="definite", old_edge=5101,
        new_edge=3101, shrink_bytes=2000, beyond_bytes=0, snd_una=1101, snd_nxt=1101,
        ack=1101, win=500, scale=2, scale_known=True, file=file,
    )  # fmt: skip


def test_a_deep_vlan_stack_does_not_widen_every_row() -> None:
    """65,000 VLAN ids on one event: its flow names MAX_VLANS of them, no row grows."""
    out = io.StringIO()
    report = TextReport(out, ["a.pcap", "b\x1b[2J" + "x" * 1000 + ".pcap"])
    report.add(event(file="a.pcap"))
    report.add(event(vlan=tuple(range(1, 65_001)), frame=9, file="b\x1b[2J" + "x" * 1000))
    report.finish(ScanStats())
    text = out.getvalue()
    assert max(map(len, text.splitlines())) < 2 * MAX_CELL + 200
    assert f"vlan 1.2.3.4.5.6.7.8...+{65_000 - MAX_VLANS} more" in text
    assert "\x1b" not in text and "b\\x1b[2Jxxx" in text


def test_cli_text_report_names_a_vlan_stack_within_the_cap(tmp_path: Path) -> None:
    """A real decoded stack deeper than MAX_VLANS, through the whole command (16 tags: the
    decoder's own cap, treason.decode.MAX_TAGS)."""
    vlans = list(range(100, 116))

    def frame(src: str, seq: int, ack: int, flags: int, win: int, ident: int) -> bytes:
        sport, dport = (40000, 80) if src == "10.0.0.1" else (80, 40000)
        dst = "10.0.0.2" if src == "10.0.0.1" else "10.0.0.1"
        opts = bytes([1, 3, 3, 2]) if flags & 0x02 else b""
        seg = tcp(sport, dport, seq, ack, flags, win, opts)
        extra = 100 if ident == 4 else 0
        return ether(ipv4(src, dst, seg, ident=ident, total_len=20 + len(seg) + extra), vlans=vlans)

    frames = [
        frame("10.0.0.1", 1000, 0, 0x02, 65535, 1),
        frame("10.0.0.2", 5000, 1001, 0x12, 65535, 2),
        frame("10.0.0.1", 1001, 5001, 0x10, 1000, 3),
        frame("10.0.0.1", 1001, 5001, 0x10, 1000, 4),
        frame("10.0.0.2", 5001, 1101, 0x10, 1000, 5),
        frame("10.0.0.2", 5001, 1101, 0x10, 500, 6),
    ]
    path = tmp_path / "deep.pcap"
    path.write_bytes(pcap([(10**18 + i, f) for i, f in enumerate(frames)]))
    res = treason("scan", str(path))
    assert res.returncode == 1, res.stderr
    expected = flow_text("10.0.0.2", 80, "10.0.0.1", 40000, vlans)
    assert expected.endswith(f"vlan 100.101.102.103.104.105.106.107...+{len(vlans) - 8} more")
    assert expected in res.stdout.decode()


@pytest.mark.skipif(
    not fast_available(),
    reason="the compiled scanner is not built: the reference decoder takes minutes on this",
)
def test_a_65000_deep_vlan_stack_keeps_the_report_small(tmp_path: Path) -> None:
    """The reported case: every row was padded to the deepest flow's 325 KB."""
    vlans = [v % 4094 + 1 for v in range(65_000)]

    def frame(src: str, seq: int, ack: int, flags: int, win: int, ident: int) -> bytes:
        sport, dport = (40000, 80) if src == "10.0.0.1" else (80, 40000)
        dst = "10.0.0.2" if src == "10.0.0.1" else "10.0.0.1"
        seg = tcp(sport, dport, seq, ack, flags, win, bytes([1, 3, 3, 2]) if flags & 2 else b"")
        extra = 100 if ident == 4 else 0
        return ether(ipv4(src, dst, seg, ident=ident, total_len=20 + len(seg) + extra), vlans=vlans)

    frames = [
        frame("10.0.0.1", 1000, 0, 0x02, 65535, 1),
        frame("10.0.0.2", 5000, 1001, 0x12, 65535, 2),
        frame("10.0.0.1", 1001, 5001, 0x10, 1000, 3),
        frame("10.0.0.1", 1001, 5001, 0x10, 1000, 4),
        frame("10.0.0.2", 5001, 1101, 0x10, 1000, 5),
    ]
    frames += [frame("10.0.0.2", 5001, 1101, 0x10, 500 + 500 * (i % 2), 6 + i) for i in range(20)]
    path = tmp_path / "deep.pcap.gz"
    path.write_bytes(gzip.compress(pcap([(10**18 + i, f) for i, f in enumerate(frames)])))
    res = treason("scan", str(path))
    lines = res.stdout.decode().splitlines()
    assert max(map(len, lines)) < 400 and len(res.stdout) < 10_000
    # Decoded, the stack is named within the cap; a decoder that caps VLAN depth skips the
    # frames instead (no event): the report is small either way.
    assert res.returncode in (0, 1), res.stderr
    named = sum("vlan 1.2.3.4.5.6.7.8...+64992 more" in line for line in lines)
    assert named == (10 if res.returncode == 1 else 0)


# --------------------------------------------------------------------------- terminal escapes


def test_csv_file_column_is_escaped_on_a_terminal_only(tmp_path: Path) -> None:
    name = tmp_path / "evil\x1b[31m.pcap"
    name.write_bytes(shrinking(1))
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "treason", "scan", "-q", "-f", "csv", str(name)],
            stdout=slave,
            stderr=subprocess.PIPE,
        )
        os.close(slave)
        chunks = []
        reader = threading.Thread(target=lambda: chunks.append(_drain(master)))
        reader.start()
        assert proc.wait(timeout=60) == 1
        reader.join(timeout=60)
    finally:
        os.close(master)
    shown = b"".join(chunks)
    assert b"\x1b" not in shown and b"evil\\x1b[31m.pcap" in shown
    piped = treason("scan", "-q", "-f", "csv", str(name))  # data, not a terminal: as it is
    assert b"evil\x1b[31m.pcap" in piped.stdout


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the writer closed the terminal
            return data
        if not chunk:
            return data
        data += chunk


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_escapes_the_file_name(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Terminal()
    monkeypatch.setattr(progress.time, "monotonic", iter(range(0, 10**6, 1)).__next__)
    reader = progress.ProgressReader(io.BytesIO(b"x" * 100), "a\x1b]0;owned\x07.pcap", 100, out)
    reader.read(100)
    reader.close()
    text = out.getvalue()
    assert "a\\x1b]0;owned\\x07.pcap: 100%" in text
    assert text.replace("\r\x1b[K", "").count("\x1b") == 0
