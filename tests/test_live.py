"""``treason live`` against a real Linux kernel shrinking its window, watched as it happens.

In two network namespaces a receiver with ``net.ipv4.tcp_shrink_window=1`` reads slowly while
a sender writes small segments. ``treason live`` (a subprocess, as a user runs it) watches the
veth while tcpdump records the same interface with the same filter; the events live prints
must arrive while the traffic still runs and be the events ``treason scan`` finds in tcpdump's
file, at the same frame numbers. The metrics endpoint, the ``--write`` capture, SIGTERM, bulk
traffic and the missing-privilege error are checked on the same real components.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

import netns
import treason
from conftest import EXAMPLE, require, require_tshark
from treason.decode import decode
from treason.live.metrics import parse_address
from treason.live.pcapout import FlowRecorder, PcapSink, Rotation, parse_rotation
from treason.live.session import LiveSession
from treason.live.stats import LiveStats
from treason.model import FlowTable
from treason.readers import open_frames
from treason.scanner import ScanStats

TREASON = [sys.executable, "-m", "treason"]
METRICS_PORT = 9464
SAME = ("src", "sport", "dst", "dport", "class", "old_edge", "new_edge", "shrink_bytes")


def same(record: dict) -> tuple:
    return tuple(record[k] for k in SAME)


class Live:
    """A running ``treason live``: stdout lines queued as they arrive, stderr collected."""

    def __init__(self, pair: netns.VethPair, side: str, *args: str) -> None:
        argv = [*TREASON, "live", "-i", pair.dev(side), *args]
        self.proc = pair.popen(
            side, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self._listening = threading.Event()
        threading.Thread(target=self._out, daemon=True).start()
        self._err_thread = threading.Thread(target=self._err, daemon=True)
        self._err_thread.start()
        if not self._listening.wait(20) or self.proc.poll() is not None:
            self.proc.kill()
            raise netns.NetnsError(f"treason live did not start: {''.join(self.stderr)}")

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "listening on" in line:
                self._listening.set()
        self._listening.set()

    def stop(self) -> tuple[int, list[str], str]:
        """SIGTERM; returns exit status, the stdout lines not yet taken, and all of stderr."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self._err_thread.join(timeout=10)
        rest = []
        while (line := self.lines.get(timeout=10)) is not None:
            rest.append(line)
        return rc, rest, "".join(self.stderr)


def scrape(pair: netns.VethPair, side: str, port: int) -> dict[tuple, float]:
    """The endpoint's samples, fetched over loopback inside the namespace, by (name, labels)."""
    code = (
        "import urllib.request,sys;"
        f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read()"
        ".decode())"
    )
    text = pair.run(side, [sys.executable, "-c", code], timeout=30).stdout
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@dataclass
class ShrinkRun:
    pair_addr_b: str
    dev: str
    early: list[dict]  # events read while the sender was still running
    late: list[dict]
    rc: int
    stderr: str
    metrics: dict
    tcpdump_file: Path
    written: Path
    others: dict[str, tuple[int, list[dict], str]]  # more live runs: exit status, events, stderr


@pytest.fixture(scope="module")
def shrink_run(tmp_path_factory: pytest.TempPathFactory) -> ShrinkRun:
    require("tcpdump")
    tmp = tmp_path_factory.mktemp("live")
    dumpfile, written = tmp / "tcpdump.pcap", tmp / "written.pcap"
    with netns.veth_pair() as pair:
        pair.sysctl("b", "net.ipv4.tcp_shrink_window", 1)
        pair.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        with netns.Tcpdump(pair, "b", dumpfile, snaplen=256, extra=["tcp"]) as dump:
            live = Live(
                pair,
                "b",
                "--format",
                "json",
                "--status-interval",
                "0.5",
                "--metrics",
                f":{METRICS_PORT}",
                "--write",
                str(written),
                "--ring",
                "1000000",  # whole flows, so the written capture holds the handshakes too
            )
            # The same packets through the other paths: the compiled scanner fed straight from
            # the socket (no --write), and the reference engine.
            others = {
                engine: Live(pair, "b", "--format", "json", "--engine", engine)
                for engine in ("fast", "reference")
            }
            failure: list[BaseException] = []

            def traffic() -> None:
                try:
                    knobs = netns.ShrinkTraffic(duration=2.0)
                    netns.slow_reader_exchange(pair, knobs=knobs)
                except BaseException as exc:
                    failure.append(exc)

            sender = threading.Thread(target=traffic)
            sender.start()
            early = []
            first = live.lines.get(timeout=60)
            # The first event is read while the exchange is still running.
            running = sender.is_alive()
            if first is not None:
                early.append(json.loads(first))
            sender.join(timeout=120)
            if failure:
                raise failure[0]
            assert running, "the first event arrived only after the traffic ended"
            dump.stop()
            metrics = scrape(pair, "b", METRICS_PORT)
            rc, rest, stderr = live.stop()
            stopped = {engine: other.stop() for engine, other in others.items()}
    return ShrinkRun(
        netns.ADDR_B,
        pair.dev_b,
        early,
        [json.loads(line) for line in rest],
        rc,
        stderr,
        metrics,
        dumpfile,
        written,
        {e: (rc, [json.loads(ln) for ln in lines], err) for e, (rc, lines, err) in stopped.items()},
    )


@pytest.mark.netns
def test_events_arrive_while_the_traffic_runs(shrink_run: ShrinkRun) -> None:
    assert shrink_run.early, "no event before the sender finished"
    e = shrink_run.early[0]
    assert (e["src"], e["sport"]) == (shrink_run.pair_addr_b, 5001)
    assert e["file"] == f"live:{shrink_run.dev}"


@pytest.mark.netns
def test_live_events_are_the_events_scan_finds(shrink_run: ShrinkRun) -> None:
    """Same packets (same filter on the same veth), same events, at the same frame numbers."""
    live = shrink_run.early + shrink_run.late
    scanned = [e.to_dict() for e in treason.scan(shrink_run.tcpdump_file)]
    assert scanned, "the kernel did not shrink its window"
    assert [same(e) for e in live] == [same(e) for e in scanned]
    assert [e["frame"] for e in live] == [e["frame"] for e in scanned]


@pytest.mark.netns
@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_every_engine_prints_the_same_records(shrink_run: ShrinkRun, engine: str) -> None:
    """Live on the compiled scanner (fed from the socket's records, or with --write from
    frames) and on the reference engine, watching the same packets: the same JSON output."""
    rc, events, err = shrink_run.others[engine]
    assert rc == 0 and ", 0 dropped" in err, err
    assert events == shrink_run.early + shrink_run.late


@pytest.mark.netns
def test_sigterm_gives_the_summary_and_exit_0(shrink_run: ShrinkRun) -> None:
    assert shrink_run.rc == 0, shrink_run.stderr
    stats = ScanStats()
    list(treason.scan(shrink_run.tcpdump_file, stats=stats))
    err = shrink_run.stderr
    assert "Traceback" not in err
    assert f"{stats.frames} packets, {stats.segments} TCP segments" in err
    assert ", 0 dropped" in err
    shown = stats.events["shrink"] + stats.events["beyond"] + stats.events["kernel"]
    assert f"\n{shown} window shrink event(s): " in err
    assert f"  {shrink_run.pair_addr_b}  " in err  # the peer table names the receiver
    assert "0 kernel drops" in err  # at least one status line while running


@pytest.mark.netns
def test_metrics_endpoint_counts(shrink_run: ShrinkRun) -> None:
    stats = ScanStats()
    events = list(treason.scan(shrink_run.tcpdump_file, stats=stats))
    m = shrink_run.metrics
    iface = (("interface", shrink_run.dev),)
    assert m[("treason_packets_total", iface)] == stats.frames
    assert m[("treason_tcp_segments_total", iface)] == stats.segments
    assert m[("treason_kernel_drops_total", iface)] == 0
    assert m[("treason_flows_total", iface)] == stats.flows
    for cls in ("retraction", "shrink", "beyond", "kernel"):
        key = ("treason_events_total", (("class", cls), *iface))
        assert m[key] == stats.events.get(cls, 0), cls
    peer = ("treason_peer_events", (*iface, ("peer", shrink_run.pair_addr_b)))
    assert m[peer] == len(events)
    assert m[("treason_packets_written_total", iface)] > 0


@pytest.mark.netns
def test_written_capture_holds_the_event_flows(shrink_run: ShrinkRun) -> None:
    """``--write`` saved a pcap that scan and tshark read, with every event of the flow."""
    require_tshark()
    path = shrink_run.written
    written = [same(e.to_dict()) for e in treason.scan(path)]
    assert written == [same(e) for e in shrink_run.early + shrink_run.late]
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "tcp.srcport"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    events = shrink_run.early + shrink_run.late
    # Only the packets of the flow with events, both directions.
    assert set(out) == {str(e["sport"]) for e in events} | {str(e["dport"]) for e in events}


@pytest.mark.netns
def test_bulk_traffic_gives_no_events() -> None:
    require("iperf3")
    with netns.veth_pair() as pair:
        live = Live(pair, "b", "--format", "json", "--status-interval", "0")
        netns.iperf3_exchange(pair, streams=2, nbytes="20M")
        rc, rest, err = live.stop()
    assert rc == 0, err
    assert rest == []
    assert "No receive-window shrinks seen." in err
    packets = int(err.split(" packets, ")[0].rsplit("\n", 1)[-1].strip())
    assert packets > 100, err


def _run_live(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_without_cap_net_raw_one_clear_line() -> None:
    argv = [*TREASON, "live", "-i", "lo"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to drop CAP_NET_RAW as root")
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-net_raw", *argv]
    done = _run_live(argv)
    assert done.returncode == 2
    assert done.stderr == (
        "treason: live capture on lo: needs CAP_NET_RAW (run as root or grant the capability)\n"
    )


def test_as_nobody_one_clear_line() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to become nobody")
    src = Path(treason.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(src), "HOME": "/"}
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    done = subprocess.run(
        [*argv, *TREASON, "live", "-i", "lo"], capture_output=True, text=True, env=env, cwd="/"
    )
    if "Permission denied" in done.stderr and "live capture" not in done.stderr:
        pytest.skip(f"nobody cannot read the source tree: {done.stderr.strip()}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "treason: live capture on lo: needs CAP_NET_RAW (run as root or grant the capability)"
    ]


def test_unknown_interface_one_clear_line() -> None:
    done = _run_live([*TREASON, "live", "-i", "nosuchif0"])
    assert done.returncode == 2
    assert done.stderr == "treason: nosuchif0: no such network interface (see `ip link`)\n"


def test_bad_filter_one_clear_line() -> None:
    done = _run_live([*TREASON, "live", "-i", "lo", "--filter", "port banana split"])
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("treason: --filter: cannot compile"), lines


# --- the pieces, on the bundled example capture ----------------------------------------------


def replay(path: Path, recorder: FlowRecorder | None, **kw) -> tuple[list, LiveStats]:
    stats = LiveStats(interface="example")
    events: list = []
    session = LiveSession(stats, events.append, recorder=recorder, **kw)
    frames = list(open_frames(path))
    for i in range(0, len(frames), 7):  # arbitrary batches, as the socket delivers them
        session.feed(frames[i : i + 7])
    return events, stats


def test_session_matches_scan_on_the_example() -> None:
    events, stats = replay(EXAMPLE, None)
    scanned = list(treason.scan(EXAMPLE, engine="reference"))
    assert [e.key() for e in events] == [e.key() for e in scanned]
    assert stats.peers.top(10) and sum(n for _, n in stats.peers.top(10)) == len(events)


def test_write_with_a_whole_flow_ring_gives_the_same_events(tmp_path: Path) -> None:
    out = tmp_path / "events.pcap"
    sink = PcapSink(str(out), 1, 65535)
    events, _ = replay(EXAMPLE, FlowRecorder(sink, ring=1_000_000))
    sink.close()
    assert sink.finished == [str(out)]
    rewritten = list(treason.scan(out))
    assert [same(e.to_dict()) for e in rewritten] == [same(e.to_dict()) for e in events]


def test_write_keeps_a_bounded_ring_before_each_flows_first_event(tmp_path: Path) -> None:
    """Before its first event a flow contributes its last ``ring`` packets, then everything."""
    ring = 4
    out = tmp_path / "events.pcap"
    sink = PcapSink(str(out), 1, 65535)
    events, _ = replay(EXAMPLE, FlowRecorder(sink, ring=ring))
    sink.close()
    segments = [s for s in map(decode, open_frames(EXAMPLE)) if not isinstance(s, str)]
    first: dict[tuple, int] = {}
    by_frame = {s.frame: s for s in segments}
    for e in events:
        first.setdefault(FlowTable.key(by_frame[e.frame]), e.frame)
    expected = []
    for s in segments:
        key = FlowTable.key(s)
        if key not in first:
            continue
        before = [t.frame for t in segments if FlowTable.key(t) == key and t.frame < first[key]]
        if s.frame >= first[key] or s.frame in before[-(ring - 1) :]:
            expected.append(s.frame)
    written = list(open_frames(out))
    originals = {f.number: f for f in open_frames(EXAMPLE)}
    assert [f.data for f in written] == [originals[n].data for n in expected]
    assert len(first) > 1 and len(written) < len(originals)


def test_rotation_by_size_gives_complete_files(tmp_path: Path) -> None:
    out = tmp_path / "events.pcap"
    sink = PcapSink(str(out), 1, 65535, Rotation(size=2000))
    replay(EXAMPLE, FlowRecorder(sink, ring=64))
    sink.close()
    assert len(sink.finished) > 1
    assert not list(tmp_path.glob(".treason-*"))  # no temporary file left behind
    total = 0
    for path in sink.finished:
        stats = ScanStats()
        list(treason.scan(path, stats=stats))
        assert not stats.warnings, path
        total += stats.frames
    assert total == sink.packets


def test_unrotated_write_without_events_is_an_empty_capture(tmp_path: Path) -> None:
    out = tmp_path / "none.pcap"
    sink = PcapSink(str(out), 1, 256)
    sink.close()
    stats = ScanStats()
    assert list(treason.scan(out, stats=stats)) == [] and stats.frames == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100M", Rotation(size=100 << 20)),
        ("2g", Rotation(size=2 << 30)),
        ("512KiB", Rotation(size=512 << 10)),
        ("3600", Rotation(seconds=3600)),
        ("90s", Rotation(seconds=90)),
        ("30min", Rotation(seconds=1800)),
        ("1h", Rotation(seconds=3600)),
    ],
)
def test_parse_rotation(text: str, expected: Rotation) -> None:
    assert parse_rotation(text) == expected


@pytest.mark.parametrize("text", ["", "0", "fast", "10 parsecs", "-5"])
def test_parse_rotation_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rotation(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_parse_metrics_address(text: str, expected: tuple) -> None:
    assert parse_address(text) == expected


# --- the systemd unit ------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    from importlib.resources import files

    text = (files("treason") / "data" / "treason-live.service").read_text(encoding="utf-8")
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        if raw and not raw.startswith(("#", "[")) and "=" in raw:
            key, _, value = raw.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_grants_only_cap_net_raw() -> None:
    s = unit_settings()
    assert s["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    for key in ("DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert "User" not in s


def test_unit_command_line_is_a_valid_live_invocation() -> None:
    from treason.cli import build_parser

    argv = unit_settings()["ExecStart"][0].split()
    assert argv[:2] == ["/usr/bin/env", "treason"]
    args = build_parser().parse_args([a.replace("${TREASON_INTERFACE}", "eth0") for a in argv[2:]])
    assert args.command == "live" and args.interface == "eth0"
    assert args.metrics[0] == "127.0.0.1"
    assert args.write.startswith("/var/lib/treason-live/") and args.rotate is not None


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze to check the unit")
    from importlib.resources import files

    unit = tmp_path / "treason-live.service"
    unit.write_text((files("treason") / "data" / "treason-live.service").read_text())
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [ln for ln in done.stderr.splitlines() if "treason-live.service" in ln]
    assert problems == [], done.stderr


# --- both engines behind the session, on recorded traffic ------------------------------------


def session_outcome(path: Path, engine: str, tmp: Path, *, write: bool, retractions: bool):
    """Replay a capture through a live session as the capture loop drives it: batches of
    frames, the wall clock ticking in between (around the 200 ms hold), then the end.
    Returns the JSON lines, the counters after every step and the written capture."""
    from treason.live import report

    stats = LiveStats(interface="replay")
    lines: list[str] = []
    out = tmp / f"{engine}.pcap"
    sink = PcapSink(str(out), 1, 65535) if write else None
    session = LiveSession(
        stats,
        lambda e: lines.append(report.event_json(e)),
        retractions=retractions,
        recorder=FlowRecorder(sink, ring=5) if sink is not None else None,
        engine=engine,
        linktype=1,
    )
    frames = list(open_frames(path))
    steps = []
    for n, i in enumerate(range(0, len(frames), 7)):
        batch = frames[i : i + 7]
        session.feed(batch)
        steps.append((len(lines), stats.scan.to_dict(), stats.flows_active, stats.written))
        session.tick(batch[-1].ts_ns + (50, 150, 200, 250)[n % 4] * 1_000_000)
        steps.append((len(lines), stats.scan.to_dict(), stats.flows_active))
    session.finish()
    steps.append((stats.scan.to_dict(), stats.flows_active, stats.peers.top(20)))
    written = b""
    if sink is not None:
        sink.close()
        written = out.read_bytes()
    return lines, steps, written


@pytest.mark.parametrize("name", ["kernel.pcap", "shrink.pcap"])
@pytest.mark.parametrize(("write", "retractions"), [(False, False), (True, False), (True, True)])
def test_fast_session_prints_what_the_reference_prints(
    name: str, write: bool, retractions: bool, tmp_path: Path
) -> None:
    """The same output line for line, the same counters after every batch and tick, and with
    --write the same saved packets, whichever engine the session runs."""
    from treason.engine import compiled

    if not compiled.available():
        pytest.skip("the compiled scanner is not built (no C compiler)")
    path = EXAMPLE.parent / name
    kw = {"write": write, "retractions": retractions}
    ref = session_outcome(path, "reference", tmp_path, **kw)
    fast = session_outcome(path, "fast", tmp_path, **kw)
    assert ref[0], "the capture has events"
    assert fast == ref
    if write:
        assert len(ref[2]) > 24


class RecordedSource:
    """Frames of a capture handed out as the packet socket hands them out, both ways."""

    def __init__(self, path: Path) -> None:
        self.frames = list(open_frames(path))
        self.pos = 0
        self.record_reads = 0

    def fileno(self) -> int:
        return 0

    def read(self, limit: int = 512) -> list:
        batch = self.frames[self.pos : self.pos + limit]
        self.pos += len(batch)
        return batch

    def read_records(self, limit: int = 512) -> tuple[bytes, int]:
        from treason.engine.compiled import RECORD

        self.record_reads += 1
        batch = self.read(limit)
        records = b"".join(
            RECORD.pack(f.ts_ns // 10**9, f.ts_ns % 10**9, len(f.data), f.orig_len) + f.data
            for f in batch
        )
        return records, len(batch)


def test_capture_loop_feeds_records_to_the_fast_engine() -> None:
    """Without --write the loop hands the socket's pcap records to the compiled scanner; the
    events and counters are those of the reference engine on frames."""
    from treason.engine import compiled
    from treason.live.session import capture_loop

    if not compiled.available():
        pytest.skip("the compiled scanner is not built (no C compiler)")
    results = []
    for engine in ("fast", "reference"):
        source, stats, events = RecordedSource(EXAMPLE), LiveStats(interface="x"), []
        session = LiveSession(stats, events.append, engine=engine)
        capture_loop(
            source,
            session,
            wakeup_fd=-1,
            stopping=lambda: True,
            every=None,
            periodic=lambda: None,
            batch=16,
        )
        session.finish()
        results.append(([e.to_dict() for e in events], stats.scan.to_dict()))
        assert source.pos == len(source.frames)
        assert (source.record_reads > 0) == (engine == "fast")
    assert results[0] == results[1] and results[0][0]


_BOTH_READS = """
import json, sys
from treason.live.capture import PacketSocket
frames_sock, records_sock = PacketSocket(sys.argv[1]), PacketSocket(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
frames = [(f.number, f.ts_ns, f.data.hex(), f.orig_len) for f in frames_sock.read(10_000)]
view, count = records_sock.read_records(10_000)
data, records, pos = bytes(view), [], 0
while pos < len(data):
    sec, nsec, caplen, orig = (int.from_bytes(data[pos + 4 * i : pos + 4 * i + 4], sys.byteorder)
                               for i in range(4))
    records.append((len(records) + 1, sec * 10**9 + nsec, data[pos + 16 : pos + 16 + caplen].hex(),
                    orig))
    pos += 16 + caplen
print(json.dumps({"frames": frames, "records": records, "count": count}), flush=True)
"""


@pytest.mark.netns
@pytest.mark.parametrize("vlan", [False, True], ids=["untagged", "vlan"])
def test_socket_records_are_the_socket_frames(vlan: bool) -> None:
    """The compiled receive loop and the Python one give the same packets, times, lengths and
    802.1Q tags (the kernel hands the tag over separately; both put it back in the frame)."""
    from treason.engine import compiled

    if not compiled.available():
        pytest.skip("the compiled scanner is not built (no C compiler)")
    require()
    target = netns.ADDR_B
    with netns.veth_pair() as pair:
        for side, addr in (("a", "10.214.0.1"), ("b", "10.214.0.2")) if vlan else ():
            ns, dev = pair.ns(side), pair.dev(side)
            link = ["ip", "-n", ns, "link"]
            made = subprocess.run(
                [*link, "add", "link", dev, "name", "v42", "type", "vlan", "id", "42"],
                capture_output=True,
                text=True,
            )
            if "Unknown device type" in made.stderr:
                pytest.skip("this kernel has no 802.1Q VLAN devices (module 8021q)")
            assert made.returncode == 0, made.stderr
            netns._run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "v42"])
            netns._run([*link, "set", "v42", "up"])
            target = addr
        reader = pair.popen(
            "b",
            [sys.executable, "-c", _BOTH_READS, pair.dev_b],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "ready"
        knock = (
            "import socket\nfor p in range(7000, 7005):\n    s = socket.socket()\n"
            f"    s.settimeout(2)\n    try: s.connect(('{target}', p))\n"
            "    except OSError: pass\n    s.close()\n"
        )
        pair.run("a", [sys.executable, "-c", knock], timeout=30)  # SYN, RST from a closed port
        reader.stdin.write("go\n")
        reader.stdin.flush()
        got = json.loads(reader.stdout.readline())
        reader.wait(timeout=30)
    assert got["count"] == len(got["records"]) >= 10
    # Each socket gets its own receive time stamp, microseconds apart: the rest is identical.
    records, frames = got["records"], got["frames"]
    assert [(n, d, o) for n, _, d, o in records] == [(n, d, o) for n, _, d, o in frames]
    assert all(abs(r[1] - f[1]) < 10**7 for r, f in zip(records, frames, strict=True))
    ethertypes = {bytes.fromhex(d)[12:16] for _, _, d, _ in got["frames"]}
    if vlan:
        assert ethertypes == {bytes.fromhex("8100002a")}, "VLAN 42 put back"
    else:
        assert {t[:2] for t in ethertypes} == {b"\x08\x00"}
