"""Real Linux traffic for tests and the benchmark: two network namespaces joined by a veth pair.

Everything here drives the real kernel: ``ip netns`` for the namespaces, per-namespace sysctls
(``net.ipv4.tcp_shrink_window``), tcpdump on the veth for the capture, the programs in
``traffic.py`` for a slow reader, a small-segment writer and a bulk writer that reports its own
TCB, route metrics and RPS to shape when segments are acknowledged and processed, and iperf3
for bulk transfers.
Names are unique per pair so runs can overlap or repeat, and a pair is always torn down, even
when the code using it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TRAFFIC = Path(__file__).with_name("traffic.py")

ADDR_A = "10.213.0.1"
ADDR_B = "10.213.0.2"


class NetnsError(RuntimeError):
    """Setting up or driving the namespaces failed (a real failure, not a missing capability)."""


def missing_capability(*tools: str) -> str | None:
    """Why real-kernel traffic cannot run here, or None when it can.

    Tests skip with this reason; anything else that goes wrong later is a failure.
    """
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"needs {tool!r} on PATH"
    name = f"trprobe-{secrets.token_hex(3)}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _run(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class VethPair:
    """Namespace ``a`` (the sender side) and ``b`` (the receiver side) joined by one veth."""

    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    addr_a: str = ADDR_A
    addr_b: str = ADDR_B
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def ns(self, side: str) -> str:
        return {"a": self.ns_a, "b": self.ns_b}[side]

    def dev(self, side: str) -> str:
        return {"a": self.dev_a, "b": self.dev_b}[side]

    def cmd(self, side: str, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespace of ``side``."""
        return ["ip", "netns", "exec", self.ns(side), *argv]

    def run(self, side: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return _run(self.cmd(side, argv), **kwargs)

    def popen(self, side: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a process inside a namespace; it is killed when the pair is torn down."""
        proc = subprocess.Popen(self.cmd(side, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def sysctl(self, side: str, key: str, value: str | int) -> None:
        """Set a per-namespace sysctl (``net.ipv4.tcp_*`` are per network namespace)."""
        self.run(side, ["sysctl", "-q", "-w", f"{key}={value}"])

    def read_sysctl(self, side: str, key: str) -> str:
        return self.run(side, ["sysctl", "-n", key]).stdout.strip()

    def single_segments(self) -> None:
        """Make both ends send wire-sized packets instead of 64 KB GSO super-packets.

        A capture on a veth otherwise records what the stack hands over before segmentation;
        with at most one segment per GSO packet it looks like traffic on a real NIC.
        """
        for side in "ab":
            _run(["ip", "-n", self.ns(side), "link", "set", self.dev(side), "gso_max_segs", "1"])

    def quickack(self, side: str) -> None:
        """Make ``side`` acknowledge every segment at once (the route's ``quickack`` metric).

        Without it Linux delays the ACK that shrinks a window, and sends it only once every
        segment in flight has arrived, so that ACK acknowledges them all.
        """
        peer = self.addr_a if side == "b" else self.addr_b
        net = ".".join(peer.split(".")[:3]) + ".0/24"
        dev = self.dev(side)
        _run(["ip", "-n", self.ns(side), "route", "replace", net, "dev", dev, "quickack", "1"])

    def steer_rx(self, side: str, cpu: int) -> None:
        """Process what ``side`` receives on ``cpu`` (RPS), away from the sending CPU.

        A veth otherwise hands each segment to the receiving stack on the sender's CPU before
        the sender's next segment: nothing is ever in flight. On another CPU the receiver
        works through a queue while the sender keeps sending.
        """
        path = f"/sys/class/net/{self.dev(side)}/queues/rx-0/rps_cpus"
        self.run(side, ["sh", "-c", f"echo {1 << cpu:x} > {path}"])

    def kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self._procs.clear()


@contextlib.contextmanager
def veth_pair(prefix: str = "tr") -> Iterator[VethPair]:
    """Two fresh namespaces with a veth between them, addresses up, always removed afterwards."""
    tag = secrets.token_hex(3)
    pair = VethPair(
        ns_a=f"{prefix}-{tag}-a",
        ns_b=f"{prefix}-{tag}-b",
        dev_a=f"{prefix}{tag}a"[:15],
        dev_b=f"{prefix}{tag}b"[:15],
    )
    created: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            _run(["ip", "netns", "add", ns])
            created.append(ns)
        peer = ["peer", "name", pair.dev_b, "netns", pair.ns_b]
        _run(["ip", "link", "add", pair.dev_a, "netns", pair.ns_a, "type", "veth", *peer])
        for side, addr in (("a", pair.addr_a), ("b", pair.addr_b)):
            ns, dev = pair.ns(side), pair.dev(side)
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        yield pair
    finally:
        pair.kill_all()
        for ns in created:
            # Deleting a namespace also deletes the veth end inside it (and so its peer).
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@dataclass
class CaptureStats:
    captured: int
    received: int
    dropped: int


class Tcpdump:
    """tcpdump recording one interface of a namespace into a file.

    ``start`` returns only once tcpdump reports that it is listening, so no packet of the
    traffic that follows is missed; ``stop`` interrupts it like Ctrl-C, which makes it flush
    and close the file, and returns its packet counts.
    """

    def __init__(
        self,
        pair: VethPair,
        side: str,
        path: str | os.PathLike,
        *,
        snaplen: int = 128,
        linktype: str | None = None,
        interface: str | None = None,
        immediate: bool = True,
        buffer_kib: int | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.pair, self.side, self.path = pair, side, Path(path)
        argv = ["tcpdump", "-Z", "root", "-n", "-i", interface or pair.dev(side)]
        argv += ["-s", str(snaplen), "-w", str(self.path), "-U"]
        if linktype:
            argv += ["-y", linktype]
        if immediate:
            argv.append("--immediate-mode")
        if buffer_kib:
            argv += ["-B", str(buffer_kib)]
        self.argv = [*argv, *extra]
        self.proc: subprocess.Popen | None = None
        self._stderr: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)
            if "listening on" in line:
                self._listening.set()
        self._listening.set()

    def start(self, timeout: float = 10.0) -> Tcpdump:
        self.proc = self.pair.popen(
            self.side, self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout) or self.proc.poll() is not None:
            self.proc.kill()
            raise NetnsError(f"tcpdump did not start: {''.join(self._stderr).strip()}")
        return self

    def stop(self, settle: float = 0.3) -> CaptureStats:
        """Wait ``settle`` s for the last packets to reach tcpdump, then stop it cleanly."""
        assert self.proc is not None and self._reader is not None
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise NetnsError("tcpdump did not stop on SIGINT") from None
        self._reader.join(timeout=5)
        text = "".join(self._stderr)

        def count(what: str) -> int:
            m = re.search(rf"(\d+) packets? {what}", text)
            return int(m.group(1)) if m else 0

        if self.proc.returncode not in (0, -signal.SIGINT):
            raise NetnsError(f"tcpdump exited {self.proc.returncode}: {text.strip()}")
        return CaptureStats(count("captured"), count("received by filter"), count("dropped"))

    def __enter__(self) -> Tcpdump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        # Reached without stop() only when the traffic failed: keep that error, not ours.
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(NetnsError):
                self.stop(settle=0)


def _wait_line(proc: subprocess.Popen, expect: str, timeout: float, what: str) -> None:
    """Block until ``proc`` prints a line containing ``expect`` on stdout."""
    assert proc.stdout is not None
    done = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if expect in line:
                done.set()
                return
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    if not done.wait(timeout) or not any(expect in line for line in seen):
        raise NetnsError(f"{what} did not get ready: {''.join(seen).strip()}")


@dataclass
class ShrinkTraffic:
    """Knobs of the slow-reader / small-writer exchange (see ``traffic.py``)."""

    pause: float = 0.5
    read_size: int = 1000
    read_interval: float = 0.01
    slow_for: float = 1.0
    write_size: int = 100
    duration: float = 1.0
    pace: float = 0.0002


def slow_reader_exchange(
    pair: VethPair, port: int = 5001, knobs: ShrinkTraffic | None = None
) -> None:
    """One connection from a small-segment writer in ``a`` to a slow reader in ``b``."""
    k = knobs or ShrinkTraffic()
    py = [sys.executable, str(TRAFFIC)]
    reading = ["--read-size", str(k.read_size), "--read-interval", str(k.read_interval)]
    reading += ["--pause", str(k.pause), "--slow-for", str(k.slow_for)]
    reading += ["--family", "6" if ":" in pair.addr_b else "4"]
    receiver = pair.popen(
        "b",
        [*py, "receiver", "--port", str(port), *reading],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_line(receiver, "listening", 10, "receiver")
    writing = ["--size", str(k.write_size), "--duration", str(k.duration), "--pace", str(k.pace)]
    pair.run(
        "a",
        [*py, "sender", "--host", pair.addr_b, "--port", str(port), *writing],
        timeout=120,
    )
    try:
        _, err = receiver.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        receiver.kill()
        raise NetnsError("receiver did not finish") from None
    if receiver.returncode != 0:
        raise NetnsError(f"receiver failed: {err.strip()}")


def capture_shrink(
    path: str | os.PathLike,
    *,
    shrink_window: int = 1,
    connections: int = 1,
    snaplen: int = 96,
    linktype: str | None = None,
    knobs: ShrinkTraffic | None = None,
    side: str = "b",
) -> CaptureStats:
    """Record slow-reader traffic with the receiver's ``net.ipv4.tcp_shrink_window`` set.

    With 1 the receiving kernel shrinks its window (a few times per connection); with 0 the
    same traffic never moves the right edge left. Window scaling stays on and buffers at their
    defaults: shrinking is only allowed when the receiver scales its window. ``side`` picks
    where tcpdump listens: ``"b"`` at the receiver, ``"a"`` at the sender.
    """
    with veth_pair() as pair:
        pair.sysctl("b", "net.ipv4.tcp_shrink_window", shrink_window)
        pair.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        with Tcpdump(pair, side, path, snaplen=snaplen, linktype=linktype) as dump:
            for i in range(connections):
                slow_reader_exchange(pair, port=5001 + i, knobs=knobs)
            stats = dump.stop()
    if stats.dropped:
        raise NetnsError(f"tcpdump dropped {stats.dropped} packets")
    return stats


@dataclass
class KernelShrinkTraffic:
    """Knobs of the bulk-writer / paused-reader exchange that shrinks a window to zero."""

    size: int = 160_000  # bytes the writer sends: more than the receive buffer holds
    pause: float = 0.5  # seconds the reader waits before reading everything
    sender_cpu: int = 0
    receiver_cpu: int = 1


def bulk_exchange(
    pair: VethPair, port: int = 5001, knobs: KernelShrinkTraffic | None = None
) -> list[tuple[int, int]]:
    """One connection from a bulk writer in ``a`` to a paused reader in ``b``.

    Returns what the writer's own kernel held while its send window was zero: each distinct
    ``(snd_una, snd_nxt)``, relative to its ISN, as read with ``TCP_INFO``.
    """
    k = knobs or KernelShrinkTraffic()
    py = [sys.executable, str(TRAFFIC)]
    reading = ["--pause", str(k.pause), "--slow-for", str(k.pause)]
    receiver = pair.popen(
        "b",
        [*py, "receiver", "--port", str(port), *reading],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_line(receiver, "listening", 10, "receiver")
    writing = ["--size", str(k.size), "--cpu", str(k.sender_cpu)]
    out = pair.run(
        "a", [*py, "bulk", "--host", pair.addr_b, "--port", str(port), *writing], timeout=120
    ).stdout
    try:
        _, err = receiver.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        receiver.kill()
        raise NetnsError("receiver did not finish") from None
    if receiver.returncode != 0:
        raise NetnsError(f"receiver failed: {err.strip()}")
    return [
        (int(una), int(nxt))
        for tag, una, nxt in (line.split() for line in out.splitlines())
        if tag == "zero-window"
    ]


@dataclass
class KernelShrinkCapture:
    path: Path
    stats: CaptureStats
    #: Per connection (ports 5001, 5002, ...), the writer's zero-window (snd_una, snd_nxt).
    stalls: list[list[tuple[int, int]]]


def missing_cpus(knobs: KernelShrinkTraffic | None = None) -> str | None:
    """Why the kernel-visible recipe cannot run here (it needs two CPUs), or None."""
    k = knobs or KernelShrinkTraffic()
    have = os.sched_getaffinity(0)
    if not {k.sender_cpu, k.receiver_cpu} <= have:
        return f"needs CPUs {k.sender_cpu} and {k.receiver_cpu} (have {sorted(have)})"
    return None


def capture_kernel_shrink(
    path: str | os.PathLike,
    *,
    until: Callable[[Path], bool] | None = None,
    max_connections: int = 5,
    shrink_window: int = 1,
    snaplen: int = 96,
    knobs: KernelShrinkTraffic | None = None,
    side: str = "a",
) -> KernelShrinkCapture:
    """Record a receiver shrinking its window to zero over data already sent.

    The receiver runs with ``net.ipv4.tcp_shrink_window=1``, acknowledges every segment at
    once, and processes its packets on another CPU than the writer's; the writer sends more
    than the receive buffer holds while the reader pauses. The window then closes with
    segments still queued towards the receiver: a zero window with data outstanding, which
    Linux on the writer logs when its retransmission timer fires. tcpdump listens at the
    writer (``side="a"``), which sees each segment when it is sent.

    Whether a segment is in flight at that instant is a race between the two CPUs, so
    connections are made one after another (ports 5001, 5002, ...) until ``until(path)``
    holds for the capture so far (by default: until the writer's own kernel reports a zero
    window with data outstanding), at most ``max_connections``. With ``shrink_window=0`` the
    same traffic closes the window only at the edge already offered.
    """
    k = knobs or KernelShrinkTraffic()
    stalls: list[list[tuple[int, int]]] = []
    path = Path(path)
    with veth_pair() as pair:
        pair.single_segments()
        pair.sysctl("b", "net.ipv4.tcp_shrink_window", shrink_window)
        pair.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        pair.quickack("b")
        pair.steer_rx("b", k.receiver_cpu)
        # The writer's ACKs on its own CPU: each is acted on right after tcpdump sees it.
        pair.steer_rx("a", k.sender_cpu)
        with Tcpdump(pair, side, path, snaplen=snaplen) as dump:
            for i in range(max_connections):
                stalls.append(bulk_exchange(pair, port=5001 + i, knobs=k))
                if until is None:
                    if any(una != nxt for una, nxt in stalls[-1]):
                        break
                elif until(path):
                    break
            stats = dump.stop()
    if stats.dropped:
        raise NetnsError(f"tcpdump dropped {stats.dropped} packets")
    return KernelShrinkCapture(path, stats, stalls)


def iperf3_exchange(
    pair: VethPair,
    *,
    streams: int = 4,
    nbytes: str | None = "20M",
    seconds: float | None = None,
    port: int = 5201,
    until_file: tuple[Path, int] | None = None,
) -> None:
    """A bulk iperf3 transfer, ``a`` → ``b``, with ``streams`` parallel connections.

    ``until_file=(path, size)`` ends the transfer early once ``path`` has grown to ``size``
    bytes (used to make a capture of a given size).
    """
    server = pair.popen(
        "b",
        ["iperf3", "-s", "-1", "-p", str(port), "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_line(server, "listening", 10, "iperf3 server")
    argv = ["iperf3", "-c", pair.addr_b, "-p", str(port), "-P", str(streams)]
    if nbytes is not None:
        argv += ["-n", nbytes]
    else:
        argv += ["-t", str(seconds if seconds is not None else 10)]
    client = pair.popen("a", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if until_file is not None:
        target, size = until_file
        while client.poll() is None:
            if target.exists() and target.stat().st_size >= size:
                # SIGINT ends the test in order: the streams close with FINs.
                client.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
    try:
        out, _ = client.communicate(timeout=3600)
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise NetnsError("iperf3 did not finish") from None
    if client.returncode not in (0, 1, -signal.SIGINT) or "error" in out.lower():
        raise NetnsError(f"iperf3 client failed: {out.strip()[-500:]}")


def capture_iperf3(
    path: str | os.PathLike,
    *,
    streams: int = 4,
    nbytes: str | None = "20M",
    size: int | None = None,
    snaplen: int = 96,
    buffer_kib: int = 65536,
) -> CaptureStats:
    """Record a bulk iperf3 transfer between two namespaces with wire-sized segments.

    ``size`` (bytes) runs the transfer until the capture file reaches that size instead of
    sending ``nbytes``.
    """
    path = Path(path)
    with veth_pair() as pair:
        pair.single_segments()
        dump = Tcpdump(
            pair, "b", path, snaplen=snaplen, immediate=size is None, buffer_kib=buffer_kib
        )
        with dump:
            if size is None:
                iperf3_exchange(pair, streams=streams, nbytes=nbytes)
            else:
                iperf3_exchange(
                    pair, streams=streams, nbytes=None, seconds=3600, until_file=(path, size)
                )
            stats = dump.stop(settle=1.0 if size else 0.3)
    return stats
