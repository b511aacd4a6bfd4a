"""The output policy every command follows (``treason.output.atomic``), through the command line.

Outputs appear whole or not at all, never over an input (by device and inode, so another path,
a hard link or a symlink is caught), through special files and symlinks without replacing them,
with the umask or the existing file's mode, and without a temporary file left by an error, a
full disk or a signal. Full disks are real: a small tmpfs mounted by the test, and /dev/full.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from captures import ether, ipv4, pcap, tcp
from treason.errors import TreasonError
from treason.live.pcapout import FlowRecorder, PcapSink
from treason.output.atomic import atomic_binary, atomic_text
from treason.packets import Frame

SYN, ACK = 0x02, 0x10
A, B = "10.0.0.1", "10.0.0.2"
T0 = 1_700_000_000 * 10**9
WS2 = bytes([1, 3, 3, 2])


def pkt(src: str, seq: int, ack: int, flags: int, win: int, ident: int, length: int = 0) -> bytes:
    sport, dport = (40000, 80) if src == A else (80, 40000)
    dst = B if src == A else A
    seg = tcp(sport, dport, seq, ack, flags, win, WS2 if flags & SYN else b"")
    return ether(ipv4(src, dst, seg, ident=ident, total_len=20 + len(seg) + length))


def shrinking(n: int) -> bytes:
    """A handshake with window scale 2, 100 bytes sent, then ``n`` shrinks (and regrowths)."""
    frames = [
        pkt(A, 1000, 0, SYN, 65535, 1),
        pkt(B, 5000, 1001, SYN | ACK, 65535, 2),
        pkt(A, 1001, 5001, ACK, 1000, 3),
        pkt(A, 1001, 5001, ACK, 1000, 4, length=100),
        pkt(B, 5001, 1101, ACK, 1000, 5),
    ]
    frames += [
        pkt(B, 5001, 1101, ACK, 500 if i % 2 else 1000, (10 + i) & 0xFFFF) for i in range(2 * n)
    ]
    return pcap([(T0 + i * 1000, f) for i, f in enumerate(frames)])


def treason(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "treason", *args], capture_output=True, timeout=120, **kw
    )  # type: ignore[call-overload, no-any-return]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".treason-"))


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "x.pcap"
    path.write_bytes(shrinking(3))
    return path


def one_line(res: subprocess.CompletedProcess[bytes]) -> str:
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- never over an input


@pytest.mark.parametrize("command", ["scan", "plot", "annotate"])
@pytest.mark.parametrize("how", ["same", "other-path", "hardlink", "symlink"])
def test_output_onto_an_input_is_refused(
    tmp_path: Path, capture: Path, how: str, command: str
) -> None:
    before = capture.read_bytes()
    target = {
        "same": capture,
        "other-path": tmp_path / "sub" / ".." / capture.name,
        "hardlink": tmp_path / "hard.pcap",
        "symlink": tmp_path / "link.pcap",
    }[how]
    (tmp_path / "sub").mkdir()
    if how == "hardlink":
        os.link(capture, target)
    elif how == "symlink":
        target.symlink_to(capture)
    err = one_line(treason(command, str(capture), "-o", str(target)))
    assert err == f"treason: {target}: is also an input ({capture}): refusing to write over it\n"
    assert capture.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_match_output_onto_its_log_is_refused(tmp_path: Path, capture: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("nothing here\n")
    one_line(treason("match", str(log), str(capture), "-o", str(log)))
    assert log.read_text() == "nothing here\n"


def test_library_refuses_an_input(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("input\n")
    with (
        pytest.raises(TreasonError, match="refusing to write over it"),
        atomic_text(path, inputs=[str(tmp_path / "." / "in.txt")]),
    ):
        pass
    assert path.read_text() == "input\n"


# --------------------------------------------------------------------------- special files


def test_output_through_a_device_node_keeps_the_node(tmp_path: Path, capture: Path) -> None:
    """A private null device (never the host's /dev/null): written through, not replaced."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    res = treason("scan", str(capture), "-o", str(node))
    assert res.returncode == 1, res.stderr
    st = os.stat(node)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert leftovers(tmp_path) == []


def test_output_through_a_fifo(tmp_path: Path, capture: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    res = treason("scan", "-f", "json", "-q", str(capture), "-o", str(fifo))
    reader.join(timeout=60)
    assert res.returncode == 1, res.stderr
    assert len(got[0].splitlines()) == 3
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_output_through_a_symlink_replaces_its_file_not_the_link(
    tmp_path: Path, capture: Path
) -> None:
    (tmp_path / "reports").mkdir()
    real = tmp_path / "reports" / "r.json"
    real.write_text("old\n")
    real.chmod(0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    res = treason("scan", "-f", "json", "-q", str(capture), "-o", str(link))
    assert res.returncode == 1, res.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(real.read_text().splitlines()) == 3
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "reports") == []


def test_output_onto_a_directory_is_one_line(tmp_path: Path, capture: Path) -> None:
    err = one_line(treason("scan", str(capture), "-o", str(tmp_path)))
    assert err == f"treason: {tmp_path}: cannot write: is a directory\n"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("command", ["scan", "match"])
def test_modes_follow_the_umask_and_an_existing_file(
    tmp_path: Path, capture: Path, command: str
) -> None:
    log = tmp_path / "kern.log"
    log.write_text("nothing\n")
    args = [str(capture)] if command == "scan" else [str(log), str(capture)]
    private = tmp_path / "private.txt"
    private.write_text("old\n")
    private.chmod(0o600)
    treason(command, *args, "-o", str(private))
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() != "old\n"
    for umask, mode in ((0o077, 0o600), (0o022, 0o644), (0o002, 0o664)):
        fresh = tmp_path / f"new-{umask:o}.txt"
        treason(command, *args, "-o", str(fresh), preexec_fn=lambda m=umask: os.umask(m))
        assert stat.S_IMODE(fresh.stat().st_mode) == mode


# --------------------------------------------------------------------------- full disks


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted for this test only (needs CAP_SYS_ADMIN; skipped without)."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_under_output_is_one_line_and_keeps_the_old_file(tmp_path: Path) -> None:
    big = tmp_path / "big.pcap"
    big.write_bytes(shrinking(3000))
    with small_disk(tmp_path, "64k") as disk:
        target = disk / "report.json"
        target.write_text("previous report\n")
        for fmt in ("json", "csv", "text"):
            res = treason("scan", "-f", fmt, "-q", str(big), "-o", str(target))
            err = one_line(res)
            assert err == f"treason: {target}: cannot write: No space left on device\n"
            assert target.read_text() == "previous report\n"
            assert leftovers(disk) == []


@pytest.mark.parametrize("fmt", ["json", "csv", "text"])
def test_full_disk_on_stdout_is_one_line(tmp_path: Path, capture: Path, fmt: str) -> None:
    full_device = tmp_path / "full"  # a private /dev/full: writes fail with ENOSPC
    try:
        os.mknod(full_device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    with open(full_device, "wb") as full:
        res = subprocess.run(
            [sys.executable, "-m", "treason", "scan", "-f", fmt, "-q", str(capture)],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert res.returncode == 2
    assert res.stderr == b"treason: <stdout>: cannot write: No space left on device\n"


def test_live_write_on_a_full_disk_keeps_the_partial_capture(tmp_path: Path) -> None:
    """The packets that reached the disk stay, as a capture scan can read, and the error says so."""
    import treason as lib

    with small_disk(tmp_path, "32k") as disk:
        target = disk / "evidence.pcap"
        sink = PcapSink(str(target), 1, 65535)
        recorder = FlowRecorder(sink, ring=4)
        data = pkt(B, 5001, 1101, ACK, 500, 9)
        frame = Frame(number=1, ts_ns=T0, linktype=1, data=data, orig_len=len(data))
        with pytest.raises(TreasonError) as err:
            for i in range(100_000):
                recorder.packet("flow", frame, event=i == 0)
            sink.close()
        message = str(err.value)
        assert message.startswith(f"{target}: cannot write: No space left on device; the first ")
        assert message.endswith(" bytes are kept (the last packet may be cut)")
        assert target.exists() and leftovers(disk) == []
        assert sink.finished == [str(target)]
        stats = lib.ScanStats()
        list(lib.scan(target, stats=stats))
        assert stats.frames > 100
        sink.close()  # the failed sink is finished: closing again writes nothing


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_fatal_signal_while_writing_leaves_no_temporary_file(tmp_path: Path, signum: int) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous\n")
    code = (
        "import os, signal, sys, time\n"
        "from treason.output.atomic import atomic_binary\n"
        f"with atomic_binary({str(target)!r}) as out:\n"
        "    out.write(b'half' * 100000)\n"
        f"    print(sorted(os.listdir({str(tmp_path)!r})), flush=True)\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    time.sleep(30)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert res.returncode == -signum, res.stderr
    assert b".treason-" in res.stdout  # the temporary file existed when the signal came
    assert target.read_bytes() == b"previous\n"
    assert leftovers(tmp_path) == []


def test_binary_output_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_binary(target) as out:
        out.write(b"\x00\xff" * 10)
        assert not target.exists()
    assert target.read_bytes() == b"\x00\xff" * 10


def test_sigterm_before_live_takes_over_its_signals_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    """``live --write`` opens its pcap before it installs its own SIGTERM handling."""
    code = (
        "import os, signal, time\n"
        "from treason.live.pcapout import PcapSink\n"
        f"sink = PcapSink({str(tmp_path / 'live.pcap')!r}, 1, 65535)\n"
        f"print(sorted(os.listdir({str(tmp_path)!r})), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert res.returncode == -signal.SIGTERM, res.stderr
    assert b".treason-" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The target became a directory while the report was written: one error, nothing left."""
    target = tmp_path / "report.txt"
    with (
        pytest.raises(TreasonError, match="cannot write: Is a directory"),
        atomic_text(target) as out,
    ):
        out.write("report\n")
        target.mkdir()
        (target / "keep").write_text("x")
    assert leftovers(tmp_path) == [] and (target / "keep").exists()
