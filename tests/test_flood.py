"""Resource attacks: a SYN flood must not grow memory past the flow cap, one pathological flow
must not make the scan quadratic.

Memory is the peak resident set of the ``treason scan`` process itself (``wait4`` gives it for
exactly that child), compared with the same scan under a cap large enough to hold every flow:
the second run shows what growth per flow looks like, so the first one's bound is one a leak
would break. Work is counted, not timed, for the reference engine (function calls under
``cProfile``, deterministic); the compiled engine, invisible to Python's profiler and never
timed in tests, must agree with it on the same flow (its per-packet cost is measured by
``bench/``).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from treason import scan
from treason.scanner import ScanStats, fast_available

needs_fast = pytest.mark.skipif(
    not fast_available(), reason="the compiled scanner is not built (no C compiler at install)"
)

SYN, ACK, PSH = 0x02, 0x10, 0x08
T0 = 1_700_000_000 * 10**9

# Ethernet + IPv4 + TCP (20 bytes, no options), fields patched per packet.
_ETH = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00"
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_REC = struct.Struct("<IIII")


def frame(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, win: int,
    ident: int, payload_len: int = 0, options: bytes = b"",
) -> bytes:  # fmt: skip
    """One Ethernet/IPv4/TCP frame, payload snapped off (the IP length keeps its size)."""
    tcp = _TCP.pack(sport, dport, seq, ack, (5 + len(options) // 4) << 4, flags, win, 0, 0)
    tcp += options
    ip = _IP.pack(0x45, 0, 20 + len(tcp) + payload_len, ident & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    return _ETH + ip + tcp


def pcap(frames: list[bytes], step_ns: int = 1000) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for i, f in enumerate(frames):
        sec, ns = divmod(T0 + i * step_ns, 10**9)
        out.append(_REC.pack(sec, ns // 1000, len(f), len(f)) + f)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# SYN flood


def syn_flood(n: int, seed: int = 5) -> bytes:
    """``n`` SYNs from distinct random addresses and ports to one server, 1 µs apart."""
    rnd = random.Random(seed)
    server = bytes([192, 0, 2, 1])
    keys = rnd.sample(range(1 << 24), n)  # distinct (address, port) pairs
    frames = []
    for i, k in enumerate(keys):
        src = bytes([10, k >> 16 & 0xFF, k >> 8 & 0xFF, rnd.randrange(1, 255)])
        sport = 1024 + (k & 0x3FFF) + rnd.randrange(2) * 0x4000
        frames.append(
            frame(src, server, sport, 80, rnd.getrandbits(32), 0, SYN, 64240, i,
                  options=b"\x01\x03\x03\x07")
        )  # fmt: skip
    return pcap(frames)


#: Runs a command and writes its peak RSS (KiB) to the file named first. The measured process
#: must be forked from this small one: a child inherits its parent's peak RSS at fork (the test
#: process, holding generated captures, would set the floor for every measurement).
_MEASURE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1], 'w').write(str(peak))\n"
    "sys.exit(rc)\n"
)


def run_measured(args: list[str], tmp_path: Path) -> tuple[int, str, str, int]:
    """Exit status, stdout, stderr and peak RSS (KiB) of one ``treason`` process."""
    peak = tmp_path / "peak.txt"
    res = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(peak), sys.executable, "-m", "treason", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return res.returncode, res.stdout, res.stderr, int(peak.read_text())


FLOOD = {"reference": 60_000, "fast": 200_000}
ENGINES = ["reference", pytest.param("fast", marks=needs_fast)]


@pytest.mark.parametrize("engine", ENGINES)
def test_syn_flood_stays_within_the_flow_cap(tmp_path: Path, engine: str) -> None:
    n, cap = FLOOD[engine], 1000
    path = tmp_path / "flood.pcap"
    path.write_bytes(syn_flood(n))

    rc, out, err, capped = run_measured(["scan", "--engine", engine, "--max-flows", str(cap),
                                         str(path)], tmp_path)  # fmt: skip
    assert (rc, err) == (0, ""), err
    assert f"{n} packets, {n} TCP segments, {n} TCP flows (0 with handshake seen)" in out
    # Every SYN past the cap pushed out the least recently active flow, and the summary says so.
    assert f"flows evicted: 0 idle, {n - cap} over --max-flows" in out
    assert "No receive-window shrinks found." in out

    rc, out, _, uncapped = run_measured(["scan", "--engine", engine, "--max-flows",
                                         str(10 * n), str(path)], tmp_path)  # fmt: skip
    assert rc == 0 and "flows evicted" not in out
    rc, _, _, baseline = run_measured(["scan", "--engine", engine, str(_tiny(tmp_path))], tmp_path)
    assert rc == 0
    # Holding every flow costs memory the capped run must not spend: the capped run stays
    # within a small fraction of that growth (reader buffers and the 1000-flow table).
    growth_all = uncapped - baseline
    growth_capped = capped - baseline
    assert growth_all > 20_000, f"{n} flows cost only {growth_all} KiB: the test shows nothing"
    assert growth_capped < growth_all / 4, (baseline, capped, uncapped)


def test_syn_flood_through_stdin_with_the_table_size_one(tmp_path: Path) -> None:
    """The smallest table on a pipe: each SYN evicts the previous flow, nothing else changes."""
    data = syn_flood(5000)
    res = subprocess.run(
        [sys.executable, "-m", "treason", "scan", "--max-flows", "1", "-"],
        input=data, capture_output=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr == b""
    assert "flows evicted: 0 idle, 4999 over --max-flows" in res.stdout.decode()


def _tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pcap"
    path.write_bytes(syn_flood(1))
    return path


# --------------------------------------------------------------------------------------------
# One pathological flow


A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
MSS = 1000


def normal_flow(n: int) -> bytes:
    """A well-behaved bulk transfer: A sends, B acknowledges every segment, window steady."""
    frames = _handshake()
    seq, ack = 1001, 5001
    for i in range(n // 2):
        frames.append(frame(A, B, 40000, 80, seq, ack, ACK | PSH, 1000, 2 * i, MSS))
        seq += MSS
        frames.append(frame(B, A, 80, 40000, ack, seq, ACK, 2000, 2 * i + 1))
    return pcap(frames)


def pathological_flow(n: int, seed: int = 7) -> bytes:
    """The same size of transfer, but B shrinks and regrows its window on every other ACK,
    A's segments arrive out of order and twice, ACKs are duplicated and reordered, and a
    SYN|RST|FIN storm runs through the middle."""
    rnd = random.Random(seed)
    frames = _handshake()
    seq, ack = 1001, 5001
    pending: list[bytes] = []
    i = 0
    while len(frames) < n:
        i += 1
        data = frame(A, B, 40000, 80, seq, ack, ACK | PSH, 1000, i, MSS)
        seq += MSS
        win = 500 if i % 2 else 2000  # shrink, regrow, shrink, ...
        update = frame(B, A, 80, 40000, ack, seq, ACK, win, i + 70000)
        pending += [data, update]
        if rnd.random() < 0.2:
            pending.append(data)  # exact duplicate (span port)
        if rnd.random() < 0.1:
            pending.append(frame(B, A, 80, 40000, ack, seq - 3 * MSS, ACK, 0, i + 1))  # old ACK
        if rnd.random() < 0.05:
            pending.append(frame(B, A, 80, 40000, ack, seq, SYN | 0x04 | 0x01, 0, i + 2))
        if len(pending) > 12:
            rnd.shuffle(pending)  # reordering within a window of a dozen segments
            frames += pending
            pending = []
    frames += pending
    return pcap(frames[:n])


def _handshake() -> list[bytes]:
    return [
        frame(A, B, 40000, 80, 1000, 0, SYN, 65535, 1, options=b"\x01\x03\x03\x02"),
        frame(B, A, 80, 40000, 5000, 1001, SYN | ACK, 65535, 2, options=b"\x01\x03\x03\x02"),
    ]


def calls(data: bytes) -> tuple[int, int]:
    """Python function calls of a reference-engine scan, and the number of events it found."""
    profiler = cProfile.Profile()
    stats = ScanStats()
    profiler.enable()
    found = sum(1 for _ in scan(io.BytesIO(data), engine="reference", stats=stats))
    profiler.disable()
    assert stats.warnings == []
    return pstats.Stats(profiler).total_calls, found  # type: ignore[attr-defined]


def test_pathological_flow_costs_the_reference_engine_linear_work() -> None:
    n = 20_000
    normal, _ = calls(normal_flow(n))
    patho, found = calls(pathological_flow(n))
    patho2, found2 = calls(pathological_flow(2 * n))
    assert found > 500 and found2 > 2 * found * 0.9  # it really is pathological
    # Per segment the pathological flow costs a few times a normal one (it makes events) ...
    assert patho < 6 * normal, (normal, patho)
    # ... and twice the segments cost twice the work, not four times.
    assert patho2 < 2.2 * patho, (patho, patho2)


def test_pathological_flow_events_agree_between_engines() -> None:
    """The stress flow is also a correctness case: both engines, same events."""
    data = pathological_flow(20_000)
    ref = [e.key() for e in scan(io.BytesIO(data), engine="reference", retractions=True)]
    assert ref and len(ref) > 1000
    if fast_available():
        fast = [e.key() for e in scan(io.BytesIO(data), engine="fast", retractions=True)]
        assert fast == ref


# --------------------------------------------------------------------------------------------
# Logs without line ends


def test_log_without_newlines_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """64 MB of binary junk with no line end, then a real report: the report is found and the
    junk never sits in memory whole (lines are read in pieces, the rest of a long one dropped)."""
    from treason.kernel import kernel_lines

    line = f"Mar  5 06:07:08 web1 kernel: {kernel_lines('192.0.2.1', 1, 2, 3, 4)['3.13']}\n"
    junk = tmp_path / "junk.log"
    with junk.open("wb") as out:
        for _ in range(64):
            out.write(b"\x00\xffjunk" * (1 << 17))  # 1 MiB, no newline
        out.write(b"\n" + line.encode())
    small = tmp_path / "small.log"
    small.write_text(line)
    rc, out, err, peak = run_measured(["logs", "--format", "json", str(junk)], tmp_path)
    assert (rc, err) == (1, "") and '"x": 3' in out and out.count("\n") == 1
    rc, _, _, baseline = run_measured(["logs", "--format", "json", str(small)], tmp_path)
    assert rc == 1
    assert peak - baseline < 16 * 1024, (baseline, peak)  # KiB; the junk alone is 64 MiB
