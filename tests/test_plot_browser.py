"""`treason plot`'s page in a real headless Chromium, offline: zoom, hover, reset.

The page is loaded from a file by Chromium in a network namespace with no interface up. The
test zooms with real input events (a dragged box, then the mouse wheel) around an event,
checks that the graph's axis mapping (``data-x``) changed to a narrower range that still holds
the event, and that hovering the event's mark shows its frame number. Screenshots before and
after are kept under pytest's tmp directory (the path is printed) for a person to look at.
"""

from __future__ import annotations

import itertools
import json
import struct
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import treason
from chromium import Browser, missing
from treason.cli import main
from treason.events import Severity

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "examples" / "kernel.pcap"

pytestmark = pytest.mark.skipif(bool(missing()), reason=missing() or "")

MARK = """(() => {
  const svg = document.querySelectorAll('svg.flow-graph')[0];
  const m = svg.querySelector('g.event[data-frame="%d"] circle');
  const r = m.getBoundingClientRect();
  return [r.left + r.width / 2, r.top + r.height / 2];
})()"""
XMAP = "document.querySelectorAll('svg.flow-graph')[0].getAttribute('data-x')"
ZOOM_ATTR = "document.querySelector('svg.zoom-graph').getAttribute('%s')"


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def test_zoom_and_hover_in_a_real_browser_offline(tmp_path, browser):
    page = tmp_path / "kernel.html"
    assert main(["plot", str(KERNEL), "-o", str(page)]) == 1
    (event,) = [e for e in treason.scan(KERNEL) if e.cls is Severity.KERNEL]
    browser.open(page)
    assert browser.js("window.treasonGraphs.length") >= 1
    browser.js("document.querySelectorAll('svg.flow-graph')[0].scrollIntoView()")
    before = [float(v) for v in browser.js(XMAP).split()]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser.screenshot(shots / "before.png")
    t_event = event.time - float(
        browser.js("document.querySelectorAll('svg.flow-graph')[0].getAttribute('data-t0')")
    )

    # A box dragged around the event's mark.
    x, y = browser.js(MARK % event.frame)
    browser.mouse("mouseMoved", x - 30, y - 60)
    browser.mouse("mousePressed", x - 30, y - 60, button="left", buttons=1, clickCount=1)
    browser.mouse("mouseMoved", x, y, button="left", buttons=1)
    browser.mouse("mouseMoved", x + 30, y + 60, button="left", buttons=1)
    browser.mouse("mouseReleased", x + 30, y + 60, button="left", buttons=0, clickCount=1)
    boxed = [float(v) for v in browser.js(XMAP).split()]
    assert boxed[:2] == before[:2]  # the same pixels ...
    assert boxed[3] - boxed[2] < (before[3] - before[2]) / 5  # ... show a fifth of the time
    assert boxed[2] < t_event < boxed[3]

    # Then the wheel, over the mark: closer still.
    x, y = browser.js(MARK % event.frame)
    browser.mouse("mouseWheel", x, y, deltaX=0, deltaY=-120)
    browser.mouse("mouseWheel", x, y, deltaX=0, deltaY=-120)
    wheeled = [float(v) for v in browser.js(XMAP).split()]
    assert wheeled[3] - wheeled[2] < (boxed[3] - boxed[2]) * 0.7
    assert wheeled[2] < t_event < wheeled[3]

    # The mark is redrawn where the new mapping puts it, and hovering it names the frame.
    x, y = browser.js(MARK % event.frame)
    p0, p1, lo, hi = wheeled
    svg_left = browser.js(
        "document.querySelectorAll('svg.flow-graph')[0].getBoundingClientRect().left"
    )
    assert x - svg_left == pytest.approx(p0 + (t_event - lo) * (p1 - p0) / (hi - lo), abs=1.5)
    browser.mouse("mouseMoved", x, y)
    tip = browser.js("document.querySelectorAll('.graph .tip')[0].textContent")
    assert f"frame {event.frame}: kernel event" in tip
    assert f"{event.shrink_bytes} bytes taken back" in tip
    assert event.kernel_line in tip
    assert browser.js("getComputedStyle(document.querySelectorAll('.graph .tip')[0]).display") == (
        "block"
    )
    browser.screenshot(shots / "after.png")

    # A click keeps the numbers below the graph; reset restores the first view.
    browser.mouse("mousePressed", x, y, button="left", buttons=1, clickCount=1)
    browser.mouse("mouseReleased", x, y, button="left", buttons=0, clickCount=1)
    picked = browser.js("document.querySelectorAll('.graph .picked')[0].textContent")
    assert f"frame {event.frame}" in picked
    browser.js("document.querySelectorAll('.graph [data-act=reset]')[0].click()")
    assert [float(v) for v in browser.js(XMAP).split()] == pytest.approx(before)

    # In the close-up, hovering a data segment or an ACK names its frame too.
    browser.js("document.querySelector('svg.zoom-graph').scrollIntoView()")
    data = json.loads(
        browser.js(
            "document.getElementById(document.querySelector('svg.zoom-graph')"
            ".getAttribute('data-series')).textContent"
        )
    )
    p0, p1, lo, hi = (float(v) for v in browser.js(ZOOM_ATTR % "data-x").split())
    q0, q1, s_lo, s_hi = (float(v) for v in browser.js(ZOOM_ATTR % "data-y").split())
    box = browser.js(
        "(() => { const r = document.querySelector('svg.zoom-graph').getBoundingClientRect();"
        " return [r.left, r.top]; })()"
    )

    def at(t: float, s: float) -> tuple[float, float]:
        return (
            box[0] + p0 + (t - lo) * (p1 - p0) / (hi - lo),
            box[1] + q0 + (s - s_lo) * (q1 - q0) / (s_hi - s_lo),
        )

    segment = next(s for s in data["sent"] if lo < s[0] < hi and s[0] < t_event - 5e-5)
    browser.mouse("mouseMoved", *at(segment[0], (segment[2] + segment[3]) / 2))
    tip = browser.js("document.querySelector('svg.zoom-graph').closest('.graph')"
                     ".querySelector('.tip').textContent")  # fmt: skip
    assert tip.startswith(f"frame {segment[1]}: segment")
    assert f"seq {segment[2]} to {segment[3]}" in tip
    ack = next(a for a in data["acked"] if lo < a[0] < t_event - 5e-5)
    browser.mouse("mouseMoved", *at(ack[0], ack[2]))
    tip = browser.js("document.querySelector('svg.zoom-graph').closest('.graph')"
                     ".querySelector('.tip').textContent")  # fmt: skip
    assert tip.startswith(f"frame {ack[1]}: ")
    assert f"window {ack[4]} << {data['scale']}" in tip

    assert browser.requests() == [page.as_uri()]  # nothing but the file itself
    print(f"\nscreenshots: {shots}/before.png {shots}/after.png")


LABELS = """(() => {
  const svg = document.querySelectorAll('svg.flow-graph')[0];
  return Array.from(svg.querySelectorAll('g.label')).map(g => {
    const r = g.querySelector('text').getBoundingClientRect();
    return [r.left + r.width / 2, r.top + r.height / 2, g.getAttribute('data-frames')];
  });
})()"""


def test_crowded_events_are_clustered_and_a_cluster_zooms_in(tmp_path, browser):
    from strategies import to_pcap
    from test_plot import alternating

    capture = tmp_path / "crowded.pcap"
    capture.write_bytes(to_pcap(alternating(400)))
    page = tmp_path / "crowded.html"
    assert main(["plot", str(capture), "-o", str(page)]) == 1
    browser.open(page)
    browser.js("document.querySelectorAll('svg.flow-graph')[0].scrollIntoView()")
    before = [float(v) for v in browser.js(XMAP).split()]
    x0 = before[0] + (before[1] - before[0]) / 2
    left = browser.js("document.querySelectorAll('svg.flow-graph')[0].getBoundingClientRect().left")
    top = browser.js("document.querySelectorAll('svg.flow-graph')[0].getBoundingClientRect().top")
    for _ in range(6):  # zoom around the middle: the script clusters the labels again
        browser.mouse("mouseWheel", left + x0, top + 250, deltaX=0, deltaY=-120)
    labels = browser.js(LABELS)
    xs = sorted(x for x, _, _ in labels)
    assert all(b - a >= 30 for a, b in itertools.pairwise(xs))
    crowded = [lab for lab in labels if len(lab[2].split()) > 1]
    assert crowded, "some labels gather several events"
    zoomed = [float(v) for v in browser.js(XMAP).split()]
    x, y, frames = crowded[len(crowded) // 2]
    browser.mouse("mousePressed", x, y, button="left", buttons=1, clickCount=1)
    browser.mouse("mouseReleased", x, y, button="left", buttons=0, clickCount=1)
    into = [float(v) for v in browser.js(XMAP).split()]
    assert into[3] - into[2] < (zoomed[3] - zoomed[2]) / 2  # the cluster's span, padded
    browser.screenshot(tmp_path / "crowded.png")
    print(f"\nscreenshot: {tmp_path / 'crowded.png'} ({len(frames.split())} events in the cluster)")


def test_downloads_and_the_graph_selector(tmp_path, browser):
    page = tmp_path / "two.html"
    shrink = ROOT / "examples" / "shrink.pcap"
    assert main(["plot", str(KERNEL), str(shrink), "-o", str(page)]) == 1
    browser.open(page)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    browser.js("document.querySelectorAll('.graph [data-act=svg]')[0].click()")
    browser.js("document.querySelectorAll('.graph [data-act=png]')[0].click()")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = sorted(p.name for p in downloads.iterdir())
        if len(names) == 2 and not any(n.endswith(".crdownload") for n in names):
            break
        time.sleep(0.1)
    svg_file, png_file = sorted(downloads.glob("*.svg")), sorted(downloads.glob("*.png"))
    assert len(svg_file) == 1 and len(png_file) == 1, names
    root = ET.fromstring(svg_file[0].read_text())  # well-formed, standalone SVG
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find(".//{http://www.w3.org/2000/svg}g[@class='marks']") is not None
    png = png_file[0].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (2 * int(root.get("width")), 2 * int(root.get("height")))

    # The selector shows one graph's section and hides the others.
    options = browser.js(
        "Array.from(document.querySelectorAll('#flow-select option')).map(o => o.value)"
    )
    assert len(options) == 1 + 4  # all, then kernel's direction and shrink's three
    browser.js(
        f"const s = document.getElementById('flow-select'); s.value = {options[2]!r};"
        "s.dispatchEvent(new Event('change'))"
    )
    shown = browser.js(
        "Array.from(document.querySelectorAll('section.flow'))"
        ".filter(s => getComputedStyle(s).display !== 'none').map(s => s.id)"
    )
    assert shown == [options[2]]
