"""`--filter` on capture files: libpcap's programs, run by both engines, agree with tcpdump.

tcpdump itself is the oracle: scanning ``tcpdump -r IN -w OUT EXPR``'s output must give the
events that ``scan IN --filter EXPR`` gives (frame numbers aside: the filtered file renumbers).
The two interpreters (reference in Python, compiled in C) agree frame for frame with libpcap's
own (``pcapy``'s ``BPFProgram.filter``).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tunnels
from captures import pcap, tools_missing
from test_fastpath import capture
from treason.capfilter import FILTERED, CaptureFilter, run
from treason.cli import main
from treason.engine.choose import new_engine
from treason.errors import CaptureError
from treason.readers import open_frames
from treason.scanner import ScanStats, fast_available, scan

ROOT = Path(__file__).resolve().parent.parent
SHRINK = ROOT / "examples" / "shrink.pcap"
KERNEL = ROOT / "examples" / "kernel.pcap"
EXPRESSIONS = [
    "tcp port 5002",
    "host 10.213.0.2 and (port 5001 or port 5003)",
    "not port 5002",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0 or port 5003",
    "len > 200",
    "ip6 or src host 10.213.0.1",
    "tcp[13] & 16 != 0 and ip[2:2] < 100",
]
ENGINES = ["reference", "fast"] if fast_available() else ["reference"]


def events(source, engine: str, expression: str | None, **kw) -> tuple[list, ScanStats]:
    stats = ScanStats()
    f = CaptureFilter(expression) if expression else None
    found = []
    try:
        for e in scan(source, engine=engine, retractions=True, stats=stats, capture_filter=f,
                      **kw):  # fmt: skip
            found.append(e)
    except CaptureError:
        pass
    return found, stats


def without_frame(e) -> tuple:
    return (e.time, *e.key()[1:])


@pytest.mark.skipif(bool(tools_missing("tcpdump")), reason="tcpdump is not installed")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_same_events_as_scanning_tcpdumps_filtered_copy(tmp_path, engine, expression):
    for capture_path in (SHRINK, KERNEL):
        same_as_tcpdumps_copy(tmp_path, capture_path, engine, expression)


def same_as_tcpdumps_copy(
    tmp_path: Path, original: Path, engine: str, expression: str
) -> tuple[list, ScanStats]:
    """Scanning ``original`` with the filter finds the events of tcpdump's filtered copy,
    counting the copy's frames as kept: those events and the copy's counters."""
    copy = tmp_path / "filtered.pcap"
    subprocess.run(
        ["tcpdump", "-r", str(original), "-w", str(copy), expression],
        check=True,
        capture_output=True,
    )
    expected, plain = events(copy, engine, None)
    got, stats = events(original, engine, expression)
    assert [without_frame(e) for e in got] == [without_frame(e) for e in expected]
    assert stats.frames - stats.skipped[FILTERED] == plain.frames
    assert stats.segments == plain.segments
    return got, plain


@pytest.mark.skipif(bool(tools_missing("tcpdump")), reason="tcpdump is not installed")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "expression",
    ["udp port 4789", "host 10.0.0.1", "ip6", "ip and udp[8:4] = 0x08000000 and len < 130"],
)
def test_tunnels_are_filtered_on_the_outer_frame_as_tcpdump_does(tmp_path, engine, expression):
    """The program runs before any tunnel is opened: on a VXLAN capture ``host 10.0.0.1`` (an
    inner address) keeps nothing, ``udp port 4789`` keeps the whole overlay."""
    wrap, _ = tunnels.ENCAPSULATIONS["vxlan"]
    packets = tunnels.conversation(False) + tunnels.conversation(True)
    original = tmp_path / "vxlan.pcap"
    original.write_bytes(pcap((i * 1_000_000, wrap(p)) for i, p in enumerate(packets)))
    got, plain = same_as_tcpdumps_copy(tmp_path, original, engine, expression)
    kept = {"udp port 4789": 16, "host 10.0.0.1": 0, "ip6": 0}
    if expression in kept:
        assert plain.frames == kept[expression]
    else:  # the VXLAN header's flags, and the short frames only: handshakes and ACKs
        assert 0 < plain.frames < 16
    assert all(e.tunnel == ("vxlan:42",) for e in got)


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_interpreter_agrees_with_libpcaps(expression):
    import pcapy

    f = CaptureFilter(expression)
    oracle = pcapy.compile(1, 262144, expression, 1, 0)  # the examples are Ethernet
    checked = 0
    for capture_path in (SHRINK, KERNEL):
        for frame in open_frames(capture_path):
            if frame.orig_len != len(frame.data) and "len" in expression:
                continue  # pcapy passes the captured length as the wire length
            assert (run(f.programs[frame.linktype], frame.data, frame.orig_len) != 0) == (
                oracle.filter(frame.data) != 0
            ), (expression, frame.number)
            checked += 1
    assert checked > 300


@pytest.mark.skipif(not fast_available(), reason="the compiled scanner is not built")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=capture(),
    expression=st.sampled_from(
        ["tcp", "ip6", "vlan", "port 80 or port 443", "tcp[13] & 2 != 0", "len < 100", "ip"]
    ),
)
def test_engines_agree_on_generated_captures(data, expression):
    ref, ref_stats = events(io.BytesIO(data), "reference", expression)
    fast, fast_stats = events(io.BytesIO(data), "fast", expression)
    assert [e.key() for e in fast] == [e.key() for e in ref]
    assert fast_stats.skipped[FILTERED] == ref_stats.skipped[FILTERED]
    assert fast_stats.frames == ref_stats.frames


def test_scan_and_plot_take_filter(tmp_path, capsys):
    assert main(["scan", str(SHRINK), "--filter", "port 5002", "-f", "json"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all('"sport":5002' in line for line in lines)
    out = tmp_path / "page.html"
    assert main(["plot", str(SHRINK), "--filter", "port 5003", "-o", str(out)]) == 1
    html = out.read_text()
    assert html.count('class="flow-graph"') == 1 and "10.213.0.2:5003 -&gt;" in html
    assert main(["plot", str(SHRINK), "--filter", "port 9", "-o", str(out)]) == 0
    assert "No receive-window shrinks found for the selected flows" in out.read_text()


def test_bad_expression_is_one_line_and_exit_2(capsys):
    assert main(["scan", str(SHRINK), "--filter", "port nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--filter" in err and "nonsense" in err


@pytest.mark.skipif(not fast_available(), reason="the compiled scanner is not built")
def test_filtered_frames_have_no_flow_mark_on_either_engine():
    """An engine option, as live --write sees it: a frame the filter drops marks no flow."""

    def marks(engine: str) -> tuple[list, ScanStats]:
        stats = ScanStats()
        runner = new_engine(engine, stats, 100, 10**12, capture_filter=CaptureFilter("port 5002"))
        runner.mark_flows()
        runner.feed(list(open_frames(SHRINK)))
        return [None if m is None else m[1] for m in runner.take_marks()], stats

    ref, ref_stats = marks("reference")
    fast, fast_stats = marks("fast")
    assert fast == ref and len(ref) == ref_stats.frames
    assert ref.count(None) == sum(ref_stats.skipped.values())
    assert fast_stats.to_dict() == ref_stats.to_dict()
    assert ref_stats.skipped[FILTERED] > 0 and any(ref)
