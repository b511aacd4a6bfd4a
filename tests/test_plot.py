"""`treason plot`: the page parses, graphs sit where the numbers say, files are atomic.

Positions are checked against the axis mapping each ``<svg>`` exposes (``data-x``,
``data-y``, ``data-t0``, ``data-seq0``), recomputed here from the events' own time and edges,
so a marker drawn in the wrong place, or a right-edge line that does not step down where an
event says the edge moved back, fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import treason
import tunnels
from captures import pcap as pcap_file
from captures import pcap_records
from conftest import require
from strategies import to_pcap
from treason.cli import main
from treason.events import Severity
from treason.output.present import endpoint
from treason.output.svg import decimate_steps
from treason.packets import ACK, PSH, SYN, Segment
from treason.seq import MOD, diff

ROOT = Path(__file__).resolve().parent.parent
SHRINK = ROOT / "examples" / "shrink.pcap"
KERNEL = ROOT / "examples" / "kernel.pcap"
NS = "{http://www.w3.org/2000/svg}"


# --------------------------------------------------------------------------- helpers


@dataclass
class Graph:
    cls: str
    flow: str
    root: ET.Element
    t0: float
    seq0: int
    x: tuple[float, float, float, float]
    y: tuple[float, float, float, float]

    def px(self, t: float) -> float:
        p0, p1, lo, hi = self.x
        return p0 + (t - lo) * (p1 - p0) / (hi - lo)

    @property
    def x_tolerance(self) -> float:
        """Half a pixel, plus what a float of epoch seconds (``Event.time``, ``data-t0``)
        cannot resolve: about 0.25 µs each, which a microsecond close-up makes visible."""
        p0, p1, lo, hi = self.x
        return 0.6 + 5e-7 * (p1 - p0) / (hi - lo)

    def py(self, s: float) -> float:
        p0, p1, lo, hi = self.y
        return p0 + (s - lo) * (p1 - p0) / (hi - lo)

    def polyline(self, name: str) -> list[tuple[float, float]]:
        (line,) = [p for p in self.root.iter(f"{NS}polyline") if p.get("class") == name]
        return [tuple(map(float, pt.split(","))) for pt in line.get("points").split()]

    def markers(self) -> list[ET.Element]:
        return [g for g in self.root.iter(f"{NS}g") if "event" in g.get("class", "").split()]


class Page(HTMLParser):
    """Collects what a reader sees: kernel captions, notes, and that tags nest properly."""

    VOID = frozenset({"meta", "br", "img", "link", "hr", "input"})

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.kernel_lines: list[str] = []
        self._in_kernel = False
        self.text: list[str] = []
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "code" and ("class", "kernel-line") in attrs:
            self._in_kernel = True
            self.kernel_lines.append("")

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag == "code":
            self._in_kernel = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_kernel:
            self.kernel_lines[-1] += data


def graphs(html: str) -> list[Graph]:
    out = []
    for chunk in re.findall(r"<svg\b.*?</svg>", html, re.S):
        root = ET.fromstring(chunk)  # every SVG part is well-formed XML
        cls = root.get("class")
        if cls == "legend":
            continue
        out.append(
            Graph(
                cls=cls,
                flow=root.get("data-flow"),
                root=root,
                t0=float(root.get("data-t0")),
                seq0=int(root.get("data-seq0")),
                x=tuple(map(float, root.get("data-x").split())),
                y=tuple(map(float, root.get("data-y").split())),
            )
        )
    return out


def plot(tmp_path: Path, capture: Path | str, *args: str) -> tuple[int, str]:
    out = tmp_path / "report.html"
    status = main(["plot", str(capture), "-o", str(out), *args])
    return status, out.read_text(encoding="utf-8")


def flow_name(e) -> str:
    return f"{e.src}:{e.sport} -> {e.dst}:{e.dport}"


def events_of(path: Path, retractions: bool = False) -> list:
    """The events ``scan`` reports (and the page draws): retractions only when asked."""
    return list(treason.scan(path, retractions=retractions))


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("capture", [KERNEL, SHRINK], ids=["kernel", "shrink"])
def test_one_graph_per_direction_with_events(tmp_path, capture):
    status, html = plot(tmp_path, capture)
    assert status == 1
    Page(html)
    expected = {flow_name(e) for e in events_of(capture) if e.cls is not Severity.RETRACTION}
    drawn = [g.flow for g in graphs(html) if g.cls == "flow-graph"]
    assert sorted(drawn) == sorted(expected)
    assert len(html.encode()) < 2_000_000
    # Self-contained: no element loads anything, the script fetches nothing.
    assert not re.search(r"\b(src|href)=\"(?!#)", html)
    for call in ("fetch(", "XMLHttpRequest", "import(", "@import", "url(http"):
        assert call not in html


@pytest.mark.parametrize("capture", [KERNEL, SHRINK], ids=["kernel", "shrink"])
def test_markers_sit_at_the_event_time_and_edges(tmp_path, capture):
    _, html = plot(tmp_path, capture)
    events = {e.frame: e for e in events_of(capture)}
    seen_in_flow_graphs = set()
    for g in graphs(html):
        markers = g.markers()
        if g.cls == "flow-graph":
            seen_in_flow_graphs |= {int(m.get("data-frame")) for m in markers}
        for m in markers:
            e = events[int(m.get("data-frame"))]
            assert e.cls.label in m.get("class").split()
            assert flow_name(e) == g.flow
            x = g.px(e.time - g.t0)
            y_new = g.py(diff(e.new_edge, g.seq0))
            y_old = g.py(diff(e.old_edge, g.seq0))
            (dot,) = m.iter(f"{NS}circle")
            assert float(dot.get("cx")) == pytest.approx(x, abs=g.x_tolerance)
            assert float(dot.get("cy")) == pytest.approx(y_new, abs=0.06)
            taken = next(ln for ln in m.iter(f"{NS}line") if ln.get("class") == "taken")
            assert float(taken.get("y1")) == pytest.approx(y_old, abs=0.06)
            assert float(taken.get("y2")) == pytest.approx(y_new, abs=0.06)
            assert y_old < y_new  # taken back: the new edge is lower on the page
    # The whole-flow graphs mark every event of the directions they draw.
    drawn = {g.flow for g in graphs(html) if g.cls == "flow-graph"}
    assert seen_in_flow_graphs == {f for f, e in events.items() if flow_name(e) in drawn}


def test_a_vxlan_capture_is_drawn_with_its_tunnel(tmp_path):
    """Traffic inside VXLAN (VNI 42, an inner VLAN 7): one graph per conversation, named with
    its VLAN and tunnel as the text report names it, with the bars, ACKs and the marker of the
    shrink found inside."""
    wrap, _ = tunnels.ENCAPSULATIONS["vxlan"]
    packets = tunnels.conversation(False) + tunnels.conversation(True)
    capture = tmp_path / "vxlan.pcap"
    capture.write_bytes(pcap_file((i * 1_000_000, wrap(p)) for i, p in enumerate(packets)))
    status, html = plot(tmp_path, capture)
    assert status == 1
    Page(html)
    events = events_of(capture)
    flows = [g for g in graphs(html) if g.cls == "flow-graph"]
    assert sorted(g.flow for g in flows) == sorted(
        f"{endpoint(e.src, e.sport)} -> {endpoint(e.dst, e.dport)} vlan 7 in vxlan:42"
        for e in events
    )
    for g in flows:
        assert [int(m.get("data-frame")) for m in g.markers()] in ([7], [15])
        (bars,) = [p for p in g.root.iter(f"{NS}path") if p.get("class") == "data"]
        assert bars.get("d").count("M") >= 3  # the SYN-ACK and both data segments
        assert len(g.polyline("edge-line")) >= 4


@pytest.mark.parametrize("capture", [KERNEL, SHRINK], ids=["kernel", "shrink"])
def test_right_edge_line_steps_down_at_each_event(tmp_path, capture):
    _, html = plot(tmp_path, capture)
    events = {e.frame: e for e in events_of(capture)}
    checked = 0
    for g in graphs(html):
        edge = g.polyline("edge-line")
        for m in g.markers():
            e = events[int(m.get("data-frame"))]
            x = g.px(e.time - g.t0)
            y_old = g.py(diff(e.old_edge, g.seq0))
            y_new = g.py(diff(e.new_edge, g.seq0))
            steps = [
                (a, b)
                for a, b in pairwise(edge)
                if abs(a[0] - x) < g.x_tolerance
                and abs(b[0] - x) < g.x_tolerance
                and abs(b[1] - y_new) < 0.06
            ]
            assert steps, f"no vertex at frame {e.frame}'s new edge"
            # In these captures the ACK before each event is the previous accepted update, so
            # the line falls exactly from the old edge.
            assert any(abs(a[1] - y_old) < 0.06 for a, _ in steps), e.frame
            checked += 1
    assert checked >= len([e for e in events.values()])


def test_kernel_caption_is_the_events_kernel_line(tmp_path):
    _, html = plot(tmp_path, KERNEL)
    kernel = [e for e in events_of(KERNEL) if e.cls is Severity.KERNEL]
    assert len(kernel) == 1
    assert Page(html).kernel_lines == [kernel[0].kernel_line]
    assert kernel[0].kernel_line.startswith("Peer 10.213.0.2:5001/33644 unexpectedly shrunk")


def test_close_up_shows_the_beyond_data(tmp_path):
    """kernel.pcap's shrink is a millisecond into a 0.6 s connection: a close-up must exist,
    and in it the segments beyond the new edge are visible as separate bars."""
    _, html = plot(tmp_path, KERNEL)
    zooms = [g for g in graphs(html) if g.cls == "zoom-graph"]
    assert len(zooms) == 1
    z = zooms[0]
    assert z.x[3] - z.x[2] < 0.01
    (e,) = [e for e in events_of(KERNEL) if e.frame == 149]
    assert 0 < e.time - z.t0 - z.x[2] < z.x[3] - z.x[2]
    (data,) = [p for p in z.root.iter(f"{NS}path") if p.get("class") == "data"]
    tops = [float(v) for v in re.findall(r"V(-?[\d.]+)", data.get("d"))]
    snd_nxt = z.py(diff(e.snd_nxt, z.seq0))
    assert any(abs(top - snd_nxt) < 0.06 for top in tops)  # frame 148's segment ends at Y


def test_peer_table_and_summary(tmp_path):
    _, html = plot(tmp_path, SHRINK)
    text = "".join(Page(html).text)
    assert "peer that shrank" in text and "10.213.0.2" in text
    assert "3 TCP flows (3 with handshake seen)" in text
    assert "6 window shrink event(s)" in text


# --------------------------------------------------------------------------- options


def test_flow_picks_one_connection_in_either_order(tmp_path):
    for spec in ("10.213.0.2:5002-10.213.0.1:43982", "10.213.0.1:43982-10.213.0.2:5002"):
        status, html = plot(tmp_path, SHRINK, "--flow", spec)
        assert status == 1
        drawn = {g.flow for g in graphs(html)}
        assert drawn == {"10.213.0.2:5002 -> 10.213.0.1:43982"}


def test_flow_that_matches_nothing_writes_a_page_saying_so(tmp_path):
    status, html = plot(tmp_path, SHRINK, "--flow", "10.213.0.2:5002-10.213.0.1:1")
    assert status == 0
    assert graphs(html) == []
    assert "No receive-window shrinks found for the selected flows" in html


def test_bad_flow_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(SHRINK), "-o", str(tmp_path / "x.html"), "--flow", "nonsense"])
    assert exc.value.code == 2
    assert not (tmp_path / "x.html").exists()


def test_max_graphs_caps_the_graphs_and_says_so(tmp_path, capsys):
    status, html = plot(tmp_path, SHRINK, "--max-graphs", "2")
    assert status == 1
    assert len([g for g in graphs(html) if g.cls == "flow-graph"]) == 2
    assert "1 more direction(s) with events are not drawn" in html
    assert "1 more direction(s) not drawn" in capsys.readouterr().err


def test_no_events_page_and_exit_0(tmp_path):
    header, records = pcap_records(KERNEL.read_bytes())
    quiet = tmp_path / "quiet.pcap"
    quiet.write_bytes(header + b"".join(records[:19]))  # frame 20 is the first retraction
    status, html = plot(tmp_path, quiet)
    assert status == 0
    assert graphs(html) == []
    assert "No receive-window shrinks found in this capture" in html
    Page(html)


def test_retraction_only_directions_need_all(tmp_path):
    header, records = pcap_records(KERNEL.read_bytes())
    small = tmp_path / "retractions.pcap"
    small.write_bytes(header + b"".join(records[:30]))
    assert plot(tmp_path, small)[0] == 0
    status, html = plot(tmp_path, small, "--all")
    assert status == 1
    (g,) = [g for g in graphs(html) if g.cls == "flow-graph"]
    assert {m.get("data-frame") for m in g.markers()} == {"20", "23", "25"}


# --------------------------------------------------------------------------- files


def test_output_is_atomic_and_kept_on_error(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("previous report")
    bogus = tmp_path / "not-a-capture.pcap"
    bogus.write_bytes(b"this is not a capture at all\n" * 4)
    assert main(["plot", str(bogus), "-o", str(target)]) == 2
    assert target.read_text() == "previous report"
    assert sorted(os.listdir(tmp_path)) == ["not-a-capture.pcap", "report.html"]
    assert main(["plot", str(SHRINK), "-o", str(target)]) == 1
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert sorted(os.listdir(tmp_path)) == ["not-a-capture.pcap", "report.html"]


def test_refuses_to_overwrite_a_capture_it_reads(tmp_path, capsys):
    copy = tmp_path / "shrink.pcap"
    copy.write_bytes(SHRINK.read_bytes())
    assert main(["plot", str(KERNEL), str(copy), "-o", str(copy)]) == 2
    assert "refusing to write over it" in capsys.readouterr().err
    assert copy.read_bytes() == SHRINK.read_bytes()


def test_damaged_capture_draws_the_valid_part_and_exits_2(tmp_path, capsys):
    blob = SHRINK.read_bytes()
    header, records = pcap_records(blob)
    cut = header + b"".join(records[:300]) + b"\xff" * 16 + b"garbage"
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(cut)
    status, html = plot(tmp_path, damaged)
    assert status == 2
    assert "damaged.pcap" in capsys.readouterr().err
    frames = {m.get("data-frame") for g in graphs(html) for m in g.markers()}
    assert {"117", "259"} <= frames


def test_scan_and_plot_count_the_same_events(tmp_path, capsys):
    """The page reports what ``scan`` reports: retractions only with ``--all``."""
    for extra in ([], ["--all"]):
        assert main(["scan", str(SHRINK), *extra]) == 1
        scanned = capsys.readouterr().out
        _, html = plot(tmp_path, SHRINK, *extra)
        (count,) = re.findall(r"(\d+) window shrink event\(s\)", scanned)
        assert f"{count} window shrink event(s)" in html
        peers = scanned.split("\n\n")[2]
        assert html_unescape(re.search(r'<pre class="peers">(.*?)</pre>', html, re.S)[1]) == (
            peers.rstrip("\n")
        )
        marked = {m.get("data-frame") for g in graphs(html) for m in g.markers()}
        shown = {str(e.frame) for e in events_of(SHRINK, retractions=bool(extra))}
        assert marked == shown


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_reads_stdin_and_fifos_once(tmp_path):
    """Each capture is read once, so a pipe, a FIFO or bash's <(...) draws the same page as
    the file."""
    import subprocess
    import threading

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    by_file = subprocess.run(
        [sys.executable, "-m", "treason", "plot", str(KERNEL)], capture_output=True, env=env
    )
    piped = subprocess.run(
        [sys.executable, "-m", "treason", "plot", "-"],
        input=KERNEL.read_bytes(),
        capture_output=True,
        env=env,
    )
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(KERNEL.read_bytes()))
    writer.start()
    via_fifo = subprocess.run(
        [sys.executable, "-m", "treason", "plot", str(fifo)], capture_output=True, env=env,
        timeout=60,
    )  # fmt: skip
    writer.join()
    substituted = subprocess.run(  # bash's <(...) is a /dev/fd pipe
        ["bash", "-c", 'exec "$0" -m treason plot <(cat "$1")', sys.executable, str(KERNEL)],
        capture_output=True,
        env=env,
        timeout=60,
    )
    runs = (by_file, piped, via_fifo, substituted)
    assert [r.returncode for r in runs] == [1, 1, 1, 1]
    frames = [
        sorted(m.get("data-frame") for g in graphs(r.stdout.decode()) for m in g.markers())
        for r in runs
    ]
    assert frames[0] == frames[1] == frames[2] == frames[3] and "149" in frames[0]
    for r in runs[1:]:
        drawn = graphs(r.stdout.decode())
        assert [len(g.polyline("edge-line")) for g in drawn] == [
            len(g.polyline("edge-line")) for g in graphs(by_file.stdout.decode())
        ]


def test_several_captures_on_one_page(tmp_path):
    out = tmp_path / "both.html"
    assert main(["plot", "--each", str(KERNEL), str(SHRINK), "-o", str(out)]) == 1
    html = out.read_text(encoding="utf-8")
    assert "Receive-window shrinks in 2 captures" in html
    drawn = [g for g in graphs(html) if g.cls == "flow-graph"]
    assert len(drawn) == 4
    assert html.count('<option value="flow') == 4
    assert f"in {KERNEL}" in html and f"in {SHRINK}" in html


def test_pieces_of_a_capture_are_drawn_as_the_whole(tmp_path):
    """Rotated pieces, named in any order, are one capture for plot as for scan: the same
    graphs, events and frame numbers as the whole file."""
    require("editcap")
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    subprocess.run(["editcap", "-c", "300", str(SHRINK), str(pieces / "cut.pcap")], check=True)
    names = sorted(str(p) for p in pieces.iterdir())[::-1]
    assert len(names) > 2
    whole, cut = tmp_path / "whole.html", tmp_path / "cut.html"
    assert main(["plot", str(SHRINK), "-o", str(whole)]) == 1
    assert main(["plot", *names, "-o", str(cut)]) == 1
    drawn = [graphs(p.read_text(encoding="utf-8")) for p in (whole, cut)]
    assert [len(g) for g in drawn] == [len(drawn[0])] * 2 and len(drawn[0]) >= 3
    for a, b in zip(*drawn, strict=True):
        assert len(a.markers()) == len(b.markers())
        assert len(a.polyline("edge-line")) == len(b.polyline("edge-line"))
    # Each mark names the frame within its own piece, as scan reports the event.
    scanned = [e.frame for e in treason.scan_sets(names)]
    assert {int(m.get("data-frame")) for g in drawn[1] for m in g.markers()} == set(scanned)
    assert len(scanned) == 6


# --------------------------------------------------------------------------- big flows


def bulk_transfer(n: int, isn: int, shrink_at: int) -> list[Segment]:
    """A sender streams ``n`` 1000-byte segments; the receiver ACKs each with a 64 KiB window
    (512 << 7) except once, where it offers only 100 << 7: a shrink of 51,736 bytes."""
    a, b = ("10.0.0.1", 40000), ("10.0.0.2", 80)
    isn_b = 777
    segs = [
        Segment(0, 0, *a, *b, seq=isn, ack=0, flags=SYN, win=64240, payload_len=0, ws=7),
        Segment(0, 10_000, *b, *a, seq=isn_b, ack=(isn + 1) % MOD, flags=SYN | ACK, win=65160,
                payload_len=0, ws=7),
        Segment(0, 20_000, *a, *b, seq=(isn + 1) % MOD, ack=isn_b + 1, flags=ACK, win=502,
                payload_len=0),
    ]  # fmt: skip
    t = 30_000
    for i in range(n):
        seq = (isn + 1 + i * 1000) % MOD
        segs.append(
            Segment(0, t, *a, *b, seq=seq, ack=isn_b + 1, flags=ACK | PSH, win=502,
                    payload_len=1000, ip_id=i & 0xFFFF)
        )  # fmt: skip
        win = 100 if i == shrink_at else 512
        segs.append(
            Segment(0, t + 20_000, *b, *a, seq=isn_b + 1, ack=(seq + 1000) % MOD, flags=ACK,
                    win=win, payload_len=0, ip_id=i & 0xFFFF)
        )  # fmt: skip
        t += 100_000
    return segs


def test_big_flow_is_decimated_but_keeps_the_event(tmp_path):
    n, shrink_at = 12_000, 7_000
    isn = MOD - 3_000_500  # sequence numbers wrap after about 3,000 segments
    capture = tmp_path / "bulk.pcap"
    capture.write_bytes(to_pcap(bulk_transfer(n, isn, shrink_at)))
    status, html = plot(tmp_path, capture)
    assert status == 1
    (g,) = [g for g in graphs(html) if g.cls == "flow-graph"]
    assert g.seq0 == isn
    assert len(html.encode()) < 400_000
    width = g.x[1] - g.x[0]
    edge = g.polyline("edge-line")
    assert len(edge) < 4 * (width + 2) + 200  # 24,000 ACKs drawn with a few per column
    # Unwrapped: relative sequence numbers climb through 2**32 without falling back.
    acked_end = g.py(1 + n * 1000)
    assert min(y for _, y in g.polyline("ack-line")) == pytest.approx(acked_end, abs=0.06)
    # The shrink, computed here without serial arithmetic, is where the graph puts it.
    new_edge = 1 + (shrink_at + 1) * 1000 + (100 << 7)
    old_edge = 1 + shrink_at * 1000 + (512 << 7)
    (m,) = g.markers()
    (dot,) = m.iter(f"{NS}circle")
    assert float(dot.get("cy")) == pytest.approx(g.py(new_edge), abs=0.06)
    steps = [(a, b) for a, b in pairwise(edge) if abs(b[1] - g.py(new_edge)) < 0.06]
    assert any(abs(a[1] - g.py(old_edge)) < 0.06 and a[0] == b[0] for a, b in steps)


def alternating(n_events: int) -> list[Segment]:
    """A bulk transfer whose receiver shrinks its window on every other ACK."""
    segs = bulk_transfer(2 * n_events, 1000, -1)
    for i in range(4, len(segs), 4):  # every second receiver ACK offers 100 << 7, not 512 << 7
        segs[i] = replace(segs[i], win=100)
    return segs


def test_crowded_events_share_cluster_labels(tmp_path):
    n = 3000
    capture = tmp_path / "crowded.pcap"
    capture.write_bytes(to_pcap(alternating(n)))
    assert len(events_of(capture)) >= n - 1
    status, html = plot(tmp_path, capture)
    assert status == 1
    (g,) = [g for g in graphs(html) if g.cls == "flow-graph"]
    assert len(g.markers()) == len(events_of(capture))
    labels = [e for e in g.root.iter(f"{NS}g") if e.get("class") == "label"]
    frames = [int(f) for lab in labels for f in lab.get("data-frames").split()]
    assert sorted(frames) == sorted(e.frame for e in events_of(capture))  # each once
    xs = sorted(float(next(lab.iter(f"{NS}text")).get("x")) for lab in labels)
    assert len(labels) < 30  # 3,000 events on 840 pixels: a few dozen labels at most
    assert all(b - a >= 30 for a, b in pairwise(xs))  # never stacked on each other


@given(
    st.lists(st.tuples(st.floats(0, 500), st.floats(-1e3, 1e3)), min_size=1, max_size=400),
    st.integers(0, 50),
)
def test_decimation_keeps_each_columns_envelope_and_ends(raw, limit):
    verts = sorted(raw, key=lambda v: v[0])
    kept = decimate_steps(verts, protect=[(100.0, 110.0)], limit=limit)
    assert kept[0] == verts[0] and kept[-1] == verts[-1]
    assert all(v in verts for v in kept)
    inside = [v for v in verts if 100 <= v[0] <= 110]
    assert [v for v in kept if 100 <= v[0] <= 110] == inside or len(verts) <= limit
    columns: dict[int, list] = {}
    for v in verts:
        if not 100 <= v[0] <= 110:
            columns.setdefault(int(v[0]), []).append(v[1])
    for c, ys in columns.items():
        got = [v[1] for v in kept if int(v[0]) == c and not 100 <= v[0] <= 110]
        assert min(got) == min(ys) and max(got) == max(ys)
        assert len(got) <= max(4, len(ys) if len(verts) <= limit else 4)
