"""NFLOG captures (``tcpdump -i nflog:N``): the packets a firewall rule logged.

On a firewall the usual capture is of what a rule logs (``nft ... log group 5``). Such a file
has link type NFLOG: each record is a small header and attributes, one of which is the IP
packet. A real one is made here by the kernel in a network namespace, read against tshark;
hand-made records in both byte orders, with other attributes around the packet, must give
the events of the same packets in a plain capture.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

import captures
from conftest import require, require_tshark
from netns_router import missing_nftables
from treason.capfilter import CaptureFilter
from treason.decode import LINKTYPE_NFLOG, decode
from treason.engine.choose import compiled_available
from treason.engine.stats import ScanStats
from treason.readers import open_frames
from treason.scanner import scan

ENGINES = ["reference"] + (["fast"] if compiled_available() else [])
EXAMPLE = Path(__file__).parent.parent / "examples" / "shrink.pcap"

#: A client and a server in one namespace exchanging a little data over loopback.
EXCHANGE = """
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 5001)); srv.listen()
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(100) * 50); c.close()
threading.Thread(target=serve).start()
c = socket.create_connection(("127.0.0.1", 5001)); c.sendall(b"hello")
while c.recv(4096): pass
c.close()
"""


@pytest.fixture(scope="module")
def nflog_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("tcpdump")
    reason = missing_nftables()
    if reason:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("nflog") / "nflog.pcap"
    ns = f"trnflog-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = ["ip", "netns", "exec", ns]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        rules = (
            "table inet t {\n chain out {\n  type filter hook output priority 0;\n"
            "  tcp dport 5001 log group 5\n  tcp sport 5001 log group 5\n }\n}\n"
        )
        subprocess.run([*run, "nft", "-f", "-"], input=rules, text=True, check=True)
        dump = subprocess.Popen(
            [*run, "tcpdump", "-i", "nflog:5", "-U", "-w", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert dump.stderr is not None
        dump.stderr.readline()  # "listening on nflog:5 ...", printed before it is bound
        for _ in range(20):  # until the exchange reached the file (-U: written per packet)
            subprocess.run([*run, sys.executable, "-c", EXCHANGE], check=True, timeout=30)
            time.sleep(0.25)
            if path.stat().st_size > 24:  # more than the file header
                break
        time.sleep(0.25)
        dump.terminate()
        dump.wait(timeout=10)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return path


def _tshark_tcp_frames(path: Path, *display_filter: str) -> list[int]:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", " and ".join(["tcp", *display_filter]), "-T",
         "fields", "-e", "frame.number"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [int(n) for n in out.split()]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_real_nflog_capture_is_read_as_tshark_reads_it(nflog_capture: Path, engine: str) -> None:
    require_tshark()
    frames = list(open_frames(nflog_capture))
    assert frames and {f.linktype for f in frames} == {LINKTYPE_NFLOG}
    ours = [f.number for f in frames if not isinstance(decode(f), str)]
    assert ours == _tshark_tcp_frames(nflog_capture) and len(ours) >= 6
    counted = ScanStats()
    assert list(scan(nflog_capture, engine=engine, stats=counted)) == []
    assert counted.segments == len(ours) and not counted.skipped
    # --filter applies to the logged packet (libpcap cannot find it in the record).
    kept = ScanStats()
    only = CaptureFilter("dst port 5001")
    list(scan(nflog_capture, engine=engine, stats=kept, capture_filter=only))
    assert kept.segments == len(_tshark_tcp_frames(nflog_capture, "tcp.dstport == 5001")) > 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("order", ["<", ">"])
def test_nflog_records_give_the_events_of_their_packets(
    tmp_path: Path, engine: str, order: str
) -> None:
    """The bundled example's packets, logged one by one: the same events, frame for frame."""
    plain = list(open_frames(EXAMPLE))
    records = []
    for f in plain:
        packet = f.data[14:]  # Ethernet in the example
        family = 2 if packet[:1] and packet[0] >> 4 == 4 else 10
        records.append((f.ts_ns, captures.nflog(packet, family, order)))
    path = tmp_path / "logged.pcap"
    path.write_bytes(captures.pcap(records, linktype=LINKTYPE_NFLOG, nano=True))

    def key(events: list) -> list:
        return [{**e.to_dict(), "file": ""} for e in events]

    want = key(list(scan(EXAMPLE, engine=engine, retractions=True)))
    assert want and key(list(scan(path, engine=engine, retractions=True))) == want
