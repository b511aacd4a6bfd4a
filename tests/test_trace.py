"""``treason trace`` against a real kernel: its tracepoints, in network namespaces.

The command runs as a user runs it (a subprocess, stopped with SIGTERM) while real traffic
flows between two namespaces. Tracepoints see every namespace on the host and other tests may
run at the same time, so every run is filtered to this test's own random ports. Its events
must be those ``treason scan`` finds in a tcpdump capture at the sender, and a zero-window
stall's X:Y what the sender's own ``TCP_INFO`` held; afterwards nothing of the tracing may be
left: no instance, no tracefs mount of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import netns
import oracle
import treason
from conftest import require, require_tshark
from treason.events import Event, Severity
from treason.ktrace.engine import compiled_available
from treason.ktrace.tracefs import MOUNT_POINTS, tracefs_available

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _tracefs() -> None:
    require("tcpdump")
    reason = tracefs_available()
    if reason:
        pytest.skip(reason)


def random_port(span: int = 1) -> int:
    """A base port unlikely to be used by a concurrent test (they use 5001+, 5201)."""
    return random.randrange(20000, 60000 - span)


class TraceRun:
    """``treason trace`` as a subprocess; events (JSON Lines) collected with arrival times."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        argv = [sys.executable, "-m", "treason", "trace", "-f", "json", "--status-interval", "0"]
        self.proc = subprocess.Popen(
            [*argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.events: list[tuple[float, Event]] = []
        self.stderr: list[str] = []
        ready = threading.Event()

        def read_err() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)
                if "SIGINT or SIGTERM stops" in line:
                    ready.set()
            ready.set()

        def read_out() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.events.append((time.monotonic(), event_from(json.loads(line))))

        self.threads = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
        for t in self.threads:
            t.start()
        if not ready.wait(20) or self.proc.poll() is not None:
            self.proc.kill()
            raise AssertionError(f"treason trace did not start: {''.join(self.stderr)}")
        self.instance = re.search(r"in instance (\S+)", "".join(self.stderr)).group(1)  # type: ignore[union-attr]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        for t in self.threads:
            t.join(timeout=10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def event_from(d: dict) -> Event:
    return Event(
        frame=d["frame"],
        time=d["time"],
        src=d["src"],
        sport=d["sport"],
        dst=d["dst"],
        dport=d["dport"],
        vlan=tuple(d["vlan"]),
        cls=next(s for s in Severity if s.label == d["class"]),
        closing=d["closing"],
        certainty=d["certainty"],
        old_edge=d["old_edge"],
        new_edge=d["new_edge"],
        shrink_bytes=d["shrink_bytes"],
        beyond_bytes=d["beyond_bytes"],
        snd_una=d["snd_una"],
        snd_nxt=d["snd_nxt"],
        ack=d["ack"],
        win=d["win"],
        scale=d["scale"],
        scale_known=d["scale_known"],
        file=d["file"],
    )


@contextlib.contextmanager
def tracefs_view() -> Iterator[Path]:
    """tracefs as the host has it, mounted privately for the check when it is not mounted."""
    for root in MOUNT_POINTS:
        if (root / "instances").is_dir():
            yield root
            return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    target = tempfile.mkdtemp(prefix="test-tracefs-")
    assert libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) == 0
    try:
        yield Path(target)
    finally:
        libc.umount2(target.encode(), 2)
        os.rmdir(target)


def assert_nothing_left(run: TraceRun) -> None:
    """No instance of this run, and no tracefs mount of its own, survives it."""
    with tracefs_view() as root:
        assert not (root / "instances" / run.instance).exists(), run.instance
    mounts = Path("/proc/mounts").read_text()
    assert "treason-tracefs-" not in mounts


def shown(events: list[Event]) -> list[Event]:
    return [e for e in events if e.cls >= Severity.SHRINK]


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_shrinks_reported_live_match_the_capture(tmp_path: Path, engine: str) -> None:
    """Slow reader with tcp_shrink_window=1, small writes: trace sees what scan sees.

    A bulk iperf3 transfer to a receiver with the sysctl at its default runs at the same time,
    inside the trace's filter, between two other namespaces: it gives none.
    """
    require("iperf3")
    port = random_port(2)
    bulk = port + 1
    capture = tmp_path / "sender.pcap"
    with netns.veth_pair() as pair, netns.veth_pair() as other:
        pair.sysctl("b", "net.ipv4.tcp_shrink_window", 1)
        pair.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        metrics = random_port()
        if engine == "fast" and not compiled_available():
            pytest.skip("the compiled tracer is not built")
        run = TraceRun(
            *("--port", str(port), "--port", str(bulk), "--engine", engine),
            *("--metrics", f"127.0.0.1:{metrics}"),
        )
        try:
            dump = netns.Tcpdump(pair, "a", capture, snaplen=96, extra=["tcp", "port", str(port)])
            with dump:
                errors: list[BaseException] = []

                def iperf() -> None:
                    try:
                        netns.iperf3_exchange(other, streams=2, nbytes="200M", port=bulk)
                    except BaseException as exc:  # reported by the test below
                        errors.append(exc)

                iperf_thread = threading.Thread(target=iperf)
                iperf_thread.start()
                netns.slow_reader_exchange(pair, port=port)
                traffic_done = time.monotonic()
                iperf_thread.join()
                assert not errors, errors
                stats = dump.stop()
            assert stats.dropped == 0
            time.sleep(1.5)  # the trace drains every 0.1 s, counts its losses every second
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10)
            exposition = scrape.read().decode()
        finally:
            rc = run.stop() if run.proc.poll() is None else run.proc.returncode
            run.kill()
    assert rc == 0, "".join(run.stderr)
    assert_nothing_left(run)
    received = [e for _, e in run.events]
    # The bulk transfer was traced (thousands of ACKs received), and gave no event.
    records = re.search(
        r"(\d+) records: (\d+) segments received by (\d+) sockets", "".join(run.stderr)
    )
    assert records and int(records.group(2)) > 1000 and int(records.group(3)) >= 4, run.stderr
    bad = [e for e in received if bulk in (e.sport, e.dport)]
    assert not bad, "events in bulk iperf3:\n" + "\n".join(str(e.to_dict()) for e in bad[:8])
    traced = shown(received)
    assert traced, f"no events traced: {''.join(run.stderr)}"
    first = min(t for t, e in run.events if e.cls >= Severity.SHRINK)
    assert first < traffic_done, "events only arrived after the traffic ended"
    scanned = shown([e for e in treason.scan(capture) if port in (e.sport, e.dport)])
    assert scanned

    def key(e: Event) -> tuple:
        return (e.src, e.sport, e.dst, e.dport, e.new_edge)

    for e in traced:
        # The sender's view: the receiver (peer) is accused, the local writer would log.
        assert (e.src, e.sport, e.dst) == (pair.addr_b, port, pair.addr_a)
        assert e.file == "trace" and not e.scale_known
    assert sorted(map(key, traced)) == sorted(map(key, scanned))
    # --metrics is live's endpoint, counting what trace saw.
    reported = sum(
        float(m.group(2))
        for m in re.finditer(
            r'^treason_events_total\{class="(\w+)",interface="trace"\} (\S+)', exposition, re.M
        )
        if m.group(1) != "retraction"
    )
    assert reported == len(traced), exposition
    assert re.search(r'^treason_kernel_drops_total\{interface="trace"\} 0\.0$', exposition, re.M)
    by_key = {key(e): e for e in scanned}
    for e in traced:
        s = by_key[key(e)]
        assert (e.old_edge, e.shrink_bytes) == (s.old_edge, s.shrink_bytes)
        if e.cls is Severity.KERNEL or s.cls is Severity.KERNEL:
            assert (e.cls, e.snd_una, e.snd_nxt) == (s.cls, s.snd_una, s.snd_nxt)


def writer_isns(path: Path) -> dict[int, int]:
    return {
        int(r["tcp.srcport"]): int(r["tcp.seq_raw"])
        for r in oracle.tshark_rows(path)
        if r["tcp.flags.syn"] in ("1", "True") and r["tcp.flags.ack"] in ("0", "False")
    }


def data_segments(path: Path, src: str) -> list[tuple[float, int, int]]:
    """tshark's (time, source port, raw sequence number) of every data segment from ``src``."""
    argv = ["tshark", "-n", "-r", str(path), "-Y", f"ip.src == {src} && tcp.len > 0"]
    argv += ["-T", "fields", "-e", "frame.time_epoch", "-e", "tcp.srcport", "-e", "tcp.seq_raw"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rows = (line.split("\t") for line in out.splitlines())
    return [(float(t), int(p), int(q)) for t, p, q in rows]


def test_zero_window_stall_with_data_outstanding(tmp_path: Path) -> None:
    """The kernel example's recipe: the kernel class, with the X:Y of the writer's TCP_INFO.

    Linux fires tcp_probe only for established sockets. The example's writer fits all its
    data in the send buffer and shuts down at once (FIN_WAIT1), before the stall; here it
    writes more than the buffer holds, so it is still established, writing, while the
    window is shut — a server streaming a response, as a user would have it.
    """
    require_tshark()
    reason = netns.missing_cpus()
    if reason:
        pytest.skip(reason)
    knobs = netns.KernelShrinkTraffic(size=3_000_000)
    writing = knobs.size - 2 * (1 << 20)  # bytes acknowledged before the writer shuts down
    tries = 16  # the CPU race is lost about four times in five: a lost one costs a second
    base = random_port(tries)
    capture = tmp_path / "writer.pcap"
    stalls: dict[int, list[tuple[int, int]]] = {}
    with netns.veth_pair() as pair:
        pair.single_segments()
        pair.sysctl("b", "net.ipv4.tcp_shrink_window", 1)
        pair.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        pair.quickack("b")
        pair.steer_rx("b", knobs.receiver_cpu)
        pair.steer_rx("a", knobs.sender_cpu)
        run = TraceRun(*[f"--peer-port={base + i}" for i in range(tries)])
        try:
            portrange = ["tcp", "portrange", f"{base}-{base + tries - 1}"]
            with netns.Tcpdump(pair, "a", capture, snaplen=96, extra=portrange) as dump:
                for i in range(tries):
                    stalls[base + i] = netns.bulk_exchange(pair, port=base + i, knobs=knobs)
                    if any(una != nxt and una < writing for una, nxt in stalls[base + i]):
                        break
                dump.stop()
            time.sleep(0.5)
        finally:
            rc = run.stop() if run.proc.poll() is None else run.proc.returncode
            run.kill()
    assert rc == 0, "".join(run.stderr)
    assert_nothing_left(run)
    # Once the writer has handed its last bytes to its send buffer (2 MiB, SO_SNDBUF doubled)
    # it shuts down, and tcp_probe no longer fires for it: stalls before that must be seen.
    outstanding = {p for p, held in stalls.items() if any(u != n and u < writing for u, n in held)}
    if not outstanding:
        pytest.skip(f"the race between the CPUs never left data in flight in {tries} connections")
    kernel = [e for _, e in run.events if e.cls is Severity.KERNEL]
    assert {e.sport for e in kernel} >= outstanding, (kernel, stalls, run.stderr)
    isn = writer_isns(capture)
    scanned = [e for e in treason.scan(capture) if e.cls is Severity.KERNEL]
    sent = data_segments(capture, pair.addr_a)
    for e in kernel:
        assert (e.src, e.dst, e.win) == (pair.addr_b, pair.addr_a, 0)
        assert e.kernel_line == (
            f"Peer {e.src}:{e.sport}/{e.dport} unexpectedly shrunk window "
            f"{e.snd_una}:{e.snd_nxt} (repaired)"
        )
        assert e.kernel_lines["6.6"].startswith(
            f"Probing zero-window on {e.src}:{e.sport}/{e.dport}, seq={e.snd_una}:{e.snd_nxt}"
        )
        # The capture shows the same stall: same peer, ports and X.
        same = [
            s for s in scanned if (s.sport, s.dport, s.snd_una) == (e.sport, e.dport, e.snd_una)
        ]
        assert same, (e, scanned)
        # Reported at the moment the kernel logs: when its retransmission timer sends the
        # head segment (seq X) again as the zero-window probe — one of the capture's
        # retransmissions of X (a tail loss probe may come first, without the message) — or,
        # if the window reopened first, after the zero-window ACK.
        copies = sorted(t for t, port, seq in sent if port == e.dport and seq == e.snd_una)
        retransmissions = copies[1:]
        if retransmissions:
            near = min(abs(e.time - t) for t in retransmissions)
            assert near < 0.05, (e.time, retransmissions, same[0].time)
        else:
            assert e.time >= same[0].time - 0.01
    # The writer's TCP_INFO, sampled every millisecond while its send window is zero, held
    # exactly these X:Y: where it saw a stall at the same X, it saw this Y (it can miss the
    # shortest stalls, and it confirms at least one).
    confirmed = 0
    for e in kernel:
        x = (e.snd_una - isn[e.dport]) % oracle.MOD
        y = (e.snd_nxt - isn[e.dport]) % oracle.MOD
        seen = [tcb for tcb in stalls[e.sport] if tcb[0] == x]
        assert not seen or (x, y) in seen, f"X:Y {x}:{y}, the writer's TCP_INFO had {seen}"
        confirmed += bool(seen)
    assert confirmed, (kernel, stalls)


def test_teardown_on_sigint_and_stale_instances_removed() -> None:
    """A run killed outright leaves its instance; the next run removes it, and SIGINT ends
    that run with nothing left. The kernel holds the port filter the user asked for."""
    port = random_port()
    killed = TraceRun("--port", str(port))
    killed.proc.kill()
    killed.proc.wait()
    with tracefs_view() as root:
        assert (root / "instances" / killed.instance).is_dir()
    run = TraceRun("--local-port", str(port), "--peer-port", str(port + 1))
    try:
        assert f"removed the stale trace instance {killed.instance}" in "".join(run.stderr)
        with tracefs_view() as root:
            assert not (root / "instances" / killed.instance).exists()
            events = root / "instances" / run.instance / "events" / "tcp"
            expected = f"(sport == {port}) && (dport == {port + 1})"
            for name in ("tcp_probe", "tcp_retransmit_skb"):
                assert (events / name / "filter").read_text().strip() == expected
                assert (events / name / "enable").read_text().strip() == "1"
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(timeout=30) == 0
    finally:
        run.kill()
    assert_nothing_left(run)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def unprivileged_python() -> str | None:
    """An interpreter the ``nobody`` user can run, or None."""
    for python in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "env",
                python,
                "-c",
                "",
            ],
            capture_output=True,
        )
        if probe.returncode == 0:
            return python
    return None


def test_without_privilege_one_line_and_exit_2(tmp_path: Path) -> None:
    """Run as ``nobody``: one line naming tracefs and what is missing, exit 2, no traceback."""
    python = unprivileged_python()
    if python is None:
        pytest.skip("no Python interpreter the nobody user may run")
    src = Path(tempfile.mkdtemp(prefix="treason-src-"))
    try:
        shutil.copytree(ROOT / "src" / "treason", src / "treason")
        for path in [src, *src.rglob("*")]:
            path.chmod(0o755)
        proc = subprocess.run(
            [*NOBODY, "env", f"PYTHONPATH={src}", python, "-m", "treason", "trace"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
    finally:
        shutil.rmtree(src)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "tracefs" in lines[0] and ("needs root" in lines[0] or "permission" in lines[0])
