"""Shared fixtures: real captures made once per test session by the Linux kernel.

The captures come from two network namespaces joined by a veth pair (``netns.py``). A test
that needs them is skipped, with the reason printed, only when this machine cannot create
namespaces or lacks a tool; any other problem making them is a test failure.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

import netns

# Generated examples are judged on what they show, never on how fast a busy CI machine makes
# them: no deadline, no "too slow" health check.
settings.register_profile(
    "treason",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("treason")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shrink.pcap"
KERNEL_EXAMPLE = ROOT / "examples" / "kernel.pcap"


def require(*tools: str) -> None:
    """Skip the calling test when the machine cannot make real-kernel traffic."""
    reason = netns.missing_capability(*tools)
    if reason:
        pytest.skip(reason)


def require_tshark() -> None:
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark as the independent decoder")


@pytest.fixture(scope="session")
def shrink_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Slow reader with ``net.ipv4.tcp_shrink_window=1``: the receiving kernel shrinks."""
    require("tcpdump")
    path = tmp_path_factory.mktemp("kernel") / "shrink1.pcap"
    netns.capture_shrink(path, shrink_window=1, connections=2)
    return path


@pytest.fixture(scope="session")
def noshrink_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same traffic with ``net.ipv4.tcp_shrink_window=0``: the edge never moves left."""
    require("tcpdump")
    path = tmp_path_factory.mktemp("kernel") / "shrink0.pcap"
    netns.capture_shrink(path, shrink_window=0, connections=2)
    return path


@pytest.fixture(scope="session")
def iperf3_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bulk iperf3 transfer with four parallel streams, wire-sized segments."""
    require("tcpdump", "iperf3")
    path = tmp_path_factory.mktemp("kernel") / "iperf3.pcap"
    netns.capture_iperf3(path, streams=4, nbytes="20M")
    return path


@pytest.fixture(scope="session")
def kernel_capture(tmp_path_factory: pytest.TempPathFactory) -> netns.KernelShrinkCapture:
    """A zero window over data in flight, recorded at the writer (see ``examples/README.md``).

    Connections repeat until tshark's fields show such a zero window (a race between two CPUs
    decides each one), at most forty: the race is lost four times in five on this kind of
    machine (twelve tries all lost it once in ten runs), and a connection that loses it
    only costs its own second.
    """
    require("tcpdump")
    require_tshark()
    reason = netns.missing_cpus()
    if reason:
        pytest.skip(reason)
    import oracle

    path = tmp_path_factory.mktemp("kernel") / "kernel.pcap"
    return netns.capture_kernel_shrink(
        path, until=lambda p: bool(oracle.kernel_visible(p)), max_connections=40
    )


@pytest.fixture(scope="session")
def kernel_noshrink_capture(tmp_path_factory: pytest.TempPathFactory) -> netns.KernelShrinkCapture:
    """The kernel-visible recipe with ``net.ipv4.tcp_shrink_window=0``, two connections."""
    require("tcpdump")
    reason = netns.missing_cpus()
    if reason:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("kernel") / "kernel0.pcap"
    return netns.capture_kernel_shrink(
        path, shrink_window=0, max_connections=2, until=lambda p: False
    )


@pytest.fixture(scope="session")
def example_capture() -> Path:
    """The bundled example capture (made by ``scripts/make-example``)."""
    return EXAMPLE
