"""``treason plot``'s page: interactive time-sequence graphs of the directions that shrank.

One self-contained HTML file: inline SVG drawn here, a little CSS, and a small inline script
(``treason/data/plot.js``) that makes every graph zoomable (drag a box, mouse wheel), pannable
(shift-drag), resettable, and answers hover and click with the frame, time, sequence numbers
and window under the pointer. Nothing is fetched, so it opens offline and can be mailed to
whoever runs the misbehaving peer; without the script it is still the whole static picture.

Each graph is the classic tcptrace picture of one direction: time to the right, the sender's
sequence numbers up; the sender's segments as vertical bars, the receiver's ACK and the right
edge it offers (ACK + window << scale) as step lines. A shrink is the right-edge line stepping
*down*; each event is marked there in its class's colour, and events too close to label apart
share one cluster label.

Every ``<svg>`` carries its axis mapping (``data-x``: left px, right px, first and last second;
``data-y``: bottom px, top px, lowest and highest relative sequence number; ``data-t0`` and
``data-seq0``: the epoch time and absolute sequence number drawn as zero), kept up to date by
the script as the view changes, so a reader or a test can recompute where anything must sit.
The series behind each graph is embedded as JSON (``data-series`` names its element).
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TextIO

from treason.events import Event, Severity
from treason.output.present import endpoint, flow_text, peer_rows, timestamp, tunnel_text
from treason.output.svg import (
    Linear,
    Ranges,
    decimate_steps,
    esc,
    num,
    points,
    step_vertices,
    tick_label,
    ticks,
)
from treason.output.text import event_lines, peer_lines, summary_lines
from treason.scanner import ScanStats
from treason.series import Acked, DirectionSeries, Key, Marked

WIDTH = 960
HEIGHT = 420
LEFT = 96
RIGHT = 24
BOTTOM = 44
LABELS = 30  # height of the row of event labels above the plot
#: Events whose labels would start closer than this (pixels) share one cluster label.
CLUSTER_PX = 70
ZOOMS_PER_FLOW = 3
#: Vertices per line (and bars per graph) below which nothing is decimated; the script
#: redraws from the embedded series, so a zoomed view shows every collected point.
LIMIT = 3000
#: Packets before and after an event that its close-up shows.
ZOOM_BEFORE = 40
ZOOM_AFTER = 25

COLOURS = {
    Severity.RETRACTION: "#8c8c8c",
    Severity.SHRINK: "#e67e00",
    Severity.BEYOND: "#d62728",
    Severity.KERNEL: "#8e24aa",
}
DATA = "#1f4fa0"
RETRANSMIT = "#17a2b8"
ACK_LINE = "#2ca02c"
EDGE_LINE = "#b8860b"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;
max-width:1000px;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin:1.8em 0 .2em;
border-top:1px solid #ccc;padding-top:.8em}
pre,code{font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f6f6f6;padding:.5em .8em;overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:.2em .55em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f0f0f0}
.counts{color:#444;margin:.1em 0}.explain{max-width:60em}
.note{background:#fff6dd;border-left:4px solid #e6b800;padding:.4em .8em}
.warn{background:#fde8e8;border-left:4px solid #d62728;padding:.4em .8em}
p.kernel-caption{margin:.3em 0}code.kernel-line{background:#f3e5f5;padding:.1em .3em}
svg{display:block;margin:.6em 0;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#333}
svg .title{font-weight:600;font-size:12px}
.k-retraction{color:#8c8c8c}.k-shrink{color:#e67e00}.k-beyond{color:#d62728}
.k-kernel{color:#8e24aa}.sw{font-weight:700}
.graph{position:relative}.tools{font-size:12px;margin:.2em 0}
.tools button{font:12px system-ui,sans-serif;margin-right:.3em}
.tip{position:absolute;pointer-events:none;background:#fffff0;border:1px solid #999;
padding:.3em .5em;font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre;
display:none;z-index:2;max-width:46em;overflow:hidden;box-shadow:0 1px 4px rgba(0,0,0,.25)}
.picked{font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre;min-height:1em}
svg.flow-graph,svg.zoom-graph{cursor:crosshair;user-select:none}
svg .zoombox{fill:#1f4fa0;fill-opacity:.12;stroke:#1f4fa0}
"""


def direction_text(key: Key) -> str:
    """``receiver -> sender``, VLANs and tunnels, as every view names an event's flow
    (``present.event_flow``)."""
    src, sport, dst, dport, vlan, tunnel = key
    return flow_text(src, sport, dst, dport, vlan) + tunnel_text(tunnel)


def anchor(t: DirectionSeries, index: int) -> str:
    """A unique element id for the graph of ``t``, the ``index``-th direction drawn."""
    src, sport, dst, dport = t.key[:4]
    raw = f"flow{index}-{src}-{sport}-{dst}-{dport}"
    return "".join(c if c.isalnum() or c in "-." else "_" for c in raw)


@dataclass(frozen=True, slots=True)
class Axes:
    """Where data lands on one graph: seconds since ``t0`` → x, relative sequence → y."""

    x: Linear
    y: Linear


# --------------------------------------------------------------------------- page


def write_page(
    out: TextIO,
    *,
    captures: Sequence[str],
    events: Sequence[Event],
    directions: Sequence[DirectionSeries],
    stats: ScanStats,
    hidden: int = 0,
    filtered: bool = False,
    errors: Sequence[str] = (),
) -> None:
    """The whole HTML document: summary, peer table, legend, then one section per direction.

    ``events`` are the events ``scan`` reports for the same captures and options (the peer
    table counts them as the terminal report does); ``directions`` the directions drawn;
    ``hidden`` how many more had events but were left out by the cap.
    """
    w = out.write
    what = captures[0] if len(captures) == 1 else f"{len(captures)} captures"
    w('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n')
    w(f"<title>treason: window shrinks in {esc(what)}</title>\n")
    w(f"<style>{CSS}</style>\n</head>\n<body>\n")
    w(f"<h1>Receive-window shrinks in {esc(what)}</h1>\n")
    w('<pre class="summary">')
    w(esc("\n".join(summary_lines(stats, list(captures)))))
    w("</pre>\n")
    for warning in stats.warnings:
        w(f'<p class="warn">warning: {esc(warning)}</p>\n')
    for error in errors:
        w(
            f'<p class="warn">error: {esc(error)}. Everything before the damage is shown; '
            "nothing after it was read.</p>\n"
        )
    if not directions:
        where = "for the selected flows" if filtered else "in this capture"
        w(f'<p class="none">No receive-window shrinks found {where}.</p>\n')
        w("</body>\n</html>\n")
        return
    n_kernel = sum(e.cls is Severity.KERNEL for e in events)
    w(
        f"<p>{len(events)} window shrink event(s); {n_kernel} of them Linux on the sender "
        "would log. A receiver moved the right edge (ACK + window) of the window it offered "
        "to the left.</p>\n"
    )
    w(f'<pre class="peers">{esc(chr(10).join(peer_lines(peer_rows(events))))}</pre>\n')
    _how_to_read(out)
    if hidden:
        w(
            f'<p class="note">{hidden} more direction(s) with events are not drawn '
            "(<code>--max-graphs</code> caps the number of graphs; <code>--flow</code> picks "
            "one). The table above counts them all.</p>\n"
        )
    ids = [anchor(t, i) for i, t in enumerate(directions)]
    w('<nav><label>Graph: <select id="flow-select"><option value="">all graphs</option>')
    for t, ident in zip(directions, ids):
        w(f'<option value="{ident}">{esc(_title(t, len(captures)))}</option>')
    w("</select></label><ul>\n")
    for t, ident in zip(directions, ids):
        w(f'<li><a href="#{ident}">{esc(_title(t, len(captures)))}</a></li>\n')
    w("</ul></nav>\n")
    for t, ident in zip(directions, ids):
        _section(out, t, ident, len(captures))
    w(f"<script>{_script()}</script>\n")
    w("</body>\n</html>\n")


def _title(t: DirectionSeries, n_captures: int) -> str:
    return direction_text(t.key) + (f" in {t.file}" if n_captures > 1 else "")


def _script() -> str:
    """The page's script, from the package (a file of its own, so it reads as JavaScript)."""
    return resources.files("treason").joinpath("data/plot.js").read_text(encoding="utf-8")


def _how_to_read(out: TextIO) -> None:
    out.write(
        '<h2>How to read the graphs</h2>\n<p class="explain">Each graph is one direction of '
        "a connection, seen from the data sender: time runs to the right, the sender's "
        "sequence numbers (bytes, counted from its first one in the capture) go up. Every "
        "segment the sender sent is a vertical bar covering the bytes it carried. Below the "
        "bars, the green line is what the receiver has acknowledged; above them, the gold "
        "line is the <b>right edge</b> of the window the receiver offers "
        "(ACK + window &lt;&lt; scale): the sender may send up to it and no further. A "
        "healthy receiver only ever moves that edge up. Where it <b>steps down</b>, the "
        "receiver took back window it had already offered: that is the shrink, marked by a "
        "coloured stroke from the old edge to the new one and labelled with its frame number "
        "and the bytes taken back. Bars above the lowered edge are data already sent that no "
        "longer fits (class <i>beyond</i>); a drop to a zero window with data outstanding is "
        "what Linux on the sender logs (<i>kernel</i>). A close-up follows each graph "
        "whose events are too close together to tell apart.</p>\n"
    )
    out.write(_legend())


def _legend() -> str:
    items: list[tuple[str, str]] = [
        (f'<path d="M9 3V17M6 3h6M6 17h6" stroke="{DATA}" stroke-width="1.5"/>', "data segment"),
        (
            f'<path d="M9 3V17M6 3h6M6 17h6" stroke="{RETRANSMIT}" stroke-width="1.5"/>',
            "retransmission",
        ),
        (f'<path d="M0 14H9V8H18" stroke="{ACK_LINE}" fill="none" stroke-width="1.5"/>', "ACK"),
        (
            f'<path d="M0 6H9V13H18" stroke="{EDGE_LINE}" fill="none" stroke-width="1.5"/>',
            "right edge (ACK + window)",
        ),
    ]
    for sev in Severity:
        c = COLOURS[sev]
        items.append(
            (
                f'<line x1="9" y1="3" x2="9" y2="14" stroke="{c}" stroke-width="5" '
                f'stroke-opacity=".45"/><circle cx="9" cy="14" r="3.5" fill="{c}"/>',
                sev.label,
            )
        )
    parts = []
    x = 4
    for icon, label in items:
        parts.append(
            f'<g transform="translate({x},4)">{icon}<text x="24" y="14">{esc(label)}</text></g>'
        )
        x += 30 + int(len(label) * 6.4)
    return (
        f'<svg class="legend" xmlns="http://www.w3.org/2000/svg" width="{x}" height="26" '
        f'viewBox="0 0 {x} 26">{"".join(parts)}</svg>\n'
    )


def _section(out: TextIO, t: DirectionSeries, ident: str, n_captures: int) -> None:
    w = out.write
    evs = t.events
    counts: dict[Severity, int] = defaultdict(int)
    for e in evs:
        counts[e.cls] += 1
    by_class = ", ".join(
        f'<span class="k-{s.label}">{counts[s]} {s.label}</span>'
        for s in sorted(counts, reverse=True)
    )
    src, sport, dst, dport = t.key[:4]
    known = all(e.scale_known for e in evs)
    scale = f"{t.scale}" + ("" if known else " (inferred: the handshake was not captured)")
    w(f'<section class="flow" id="{ident}">\n')
    w(f"<h2>{esc(_title(t, n_captures))}</h2>\n")
    w(
        f'<p class="counts">{len(evs)} event(s): {by_class}; window scale {esc(scale)}; '
        f"{len(t.sent)} segments sent ({t.retransmits} retransmitted), {len(t.acked)} ACKs.</p>\n"
    )
    w(
        f'<p class="explain">Data from {esc(endpoint(dst, dport))} to '
        f"{esc(endpoint(src, sport))}; sequence numbers relative to {t.seq0}, the sender's "
        "first in the capture; time from the first packet of this direction "
        f"({timestamp(t.t0)} UTC). {_story(t)}</p>\n"
    )
    w(f'<script type="application/json" id="{ident}-data">{_series_json(t)}</script>\n')
    span = _time_span(t)
    w(_graph(t, span, ident, "flow-graph"))
    for lo, hi, frames in _zooms(t, span):
        label = ", ".join(f"#{f}" for f in frames)
        w(_graph(t, (lo, hi), ident, "zoom-graph", f"close-up around {label}"))
    for m in t.marks:
        e = m.event
        if e.kernel_line:
            w(
                f'<p class="kernel-caption">Frame {e.frame}: Linux on {esc(e.dst)} logs '
                f'<code class="kernel-line">{esc(e.kernel_line)}</code></p>\n'
            )
    w(f'<pre class="events">{esc(chr(10).join(event_lines(evs, with_file=False)))}</pre>\n')
    w("</section>\n")


def _graph(
    t: DirectionSeries, span: tuple[float, float], ident: str, cls: str, title: str = ""
) -> str:
    """One graph with its tool bar (the script wires the buttons), hover tip and pick line."""
    return (
        '<div class="graph"><div class="tools">'
        '<button type="button" data-act="reset">reset</button>'
        '<button type="button" data-act="svg">SVG</button>'
        '<button type="button" data-act="png">PNG</button>'
        "<span>drag a box or use the wheel to zoom, shift-drag to pan, "
        "click a mark for its numbers</span></div>"
        + render_graph(t, span, cls=cls, title=title, series=f"{ident}-data")
        + '<div class="tip"></div><p class="picked"></p></div>\n'
    )


def _series_json(t: DirectionSeries) -> str:
    """What the script needs to redraw and describe: every point and event of the graph."""
    rows = {e.frame: line.strip() for e, line in _event_rows(t.events)}
    data: dict[str, Any] = {
        "t0": t.t0,
        "seq0": t.seq0,
        "scale": t.scale,
        "sent": [[s.t, s.frame, s.start, s.end, int(s.retransmit)] for s in t.sent],
        "acked": [[a.t, a.frame, a.ack, a.edge, a.win] for a in t.acked],
        "events": [
            {
                "frame": m.event.frame,
                "t": m.t,
                "old": m.old_edge,
                "new": m.new_edge,
                "nxt": m.snd_nxt,
                "cls": m.event.cls.label,
                "back": m.event.shrink_bytes,
                "beyond": m.event.beyond_bytes,
                "row": rows.get(m.event.frame, ""),
                "kernel": m.event.kernel_line or "",
            }
            for m in t.marks
        ],
    }
    # "</" cannot end the script element early: JSON allows "<\/" for "</".
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def _event_rows(events: Sequence[Event]) -> list[tuple[Event, str]]:
    """Each event with its row of the terminal report (the header and kernel lines dropped)."""
    lines = event_lines(events, with_file=False)[1:]
    rows = [line for line in lines if not line.lstrip().startswith("kernel log on ")]
    return list(zip(events, rows))


def _story(t: DirectionSeries) -> str:
    worst = max(t.marks, key=lambda m: (m.event.cls, m.event.shrink_bytes), default=None)
    if worst is None:
        return ""
    e = worst.event
    text = (
        f"The largest step down is at frame {e.frame}: the edge falls from {worst.old_edge} "
        f"to {worst.new_edge}, {e.shrink_bytes} bytes taken back"
    )
    if e.beyond_bytes:
        text += f", {e.beyond_bytes} of them already sent (above the new edge)"
    if e.cls is Severity.KERNEL:
        text += "; the window is now zero with data outstanding, which the sender's kernel logs"
    return esc(text) + "."


# --------------------------------------------------------------------------- ranges


def _time_span(t: DirectionSeries) -> tuple[float, float]:
    times = [s.t for s in t.sent] + [a.t for a in t.acked] + [m.t for m in t.marks]
    lo, hi = min(times, default=0.0), max(times, default=0.0)
    if hi - lo <= 0:
        hi = lo + 1e-3
    pad = (hi - lo) * 0.02
    return lo - pad, hi + pad


def _zooms(t: DirectionSeries, span: tuple[float, float]) -> list[tuple[float, float, list[int]]]:
    """Close-up windows around the most severe events whose surroundings the full graph
    squeezes into a few pixels: a fixed number of packets either side, merged when they
    overlap."""
    times = sorted([s.t for s in t.sent] + [a.t for a in t.acked])
    if not times:
        return []
    full = span[1] - span[0]
    picks = sorted(
        (m for m in t.marks if m.event.cls is not Severity.RETRACTION),
        key=lambda m: (-m.event.cls, -m.event.shrink_bytes, m.event.frame),
    )[:ZOOMS_PER_FLOW]
    windows: list[tuple[float, float, list[int]]] = []
    for m in sorted(picks, key=lambda m: m.t):
        i = bisect.bisect_left(times, m.t)
        # A fixed number of packets either side, unless one side reaches across a long pause
        # (the connection stalls at a zero window): then the denser side sets the scale.
        sides = [
            m.t - times[max(0, i - ZOOM_BEFORE)],
            times[min(len(times) - 1, i + ZOOM_AFTER)] - m.t,
        ]
        found = [d for d in sides if d > 0] or [1e-4]
        h = max(found) if max(found) <= 10 * min(found) else min(found)
        lo, hi = m.t - h, m.t + h * 0.7
        if windows and lo <= windows[-1][1]:
            first, last, frames = windows[-1]
            windows[-1] = (first, max(last, hi), [*frames, m.event.frame])
        else:
            windows.append((lo, hi, [m.event.frame]))
    return [(lo, hi, f) for lo, hi, f in windows if (hi - lo) < full * 0.4]


def _seq_span(t: DirectionSeries, lo: float, hi: float) -> tuple[float, float]:
    vals: list[int] = []
    for s in t.sent:
        if lo <= s.t <= hi:
            vals += (s.start, s.end)
    for a in _around(t.acked, lo, hi):
        vals += (a.ack, a.edge)
    for m in t.marks:
        if lo <= m.t <= hi:
            vals += (m.old_edge, m.new_edge, m.snd_nxt)
    if not vals:
        return 0.0, 1.0
    s_lo, s_hi = min(vals), max(vals)
    if s_hi == s_lo:
        s_hi = s_lo + 1
    pad = (s_hi - s_lo) * 0.04
    return s_lo - pad, s_hi + pad


def _around(acked: Sequence[Acked], lo: float, hi: float) -> list[Acked]:
    """The ACKs inside ``lo..hi`` plus the one before and after, so step lines reach the
    graph's borders."""
    inside = [i for i, a in enumerate(acked) if lo <= a.t <= hi]
    if not inside:
        before = [i for i, a in enumerate(acked) if a.t < lo]
        return [acked[before[-1]]] if before else []
    first, last = inside[0], inside[-1]
    return list(acked[max(0, first - 1) : last + 2])


# --------------------------------------------------------------------------- one graph


def render_graph(
    t: DirectionSeries,
    span: tuple[float, float],
    *,
    cls: str = "flow-graph",
    title: str = "",
    series: str = "",
) -> str:
    """One time-sequence graph of ``t`` between ``span`` seconds, as an ``<svg>`` element.

    ``series`` is the id of the JSON element the script redraws it from.
    """
    lo, hi = span
    marks = [m for m in t.marks if lo <= m.t <= hi]
    s_lo, s_hi = _seq_span(t, lo, hi)
    x0, x1 = float(LEFT), float(WIDTH - RIGHT)
    xmap = Linear(lo, hi, x0, x1)
    top = 26 + LABELS
    y0, y1 = float(top + HEIGHT - BOTTOM), float(top)
    ymap = Linear(s_lo, s_hi, y0, y1)
    axes = Axes(xmap, ymap)
    total_h = top + HEIGHT
    clip = f"clip-{series}-{cls}-{round(lo * 1e6)}"
    protect = [(xmap(m.t) - 3, xmap(m.t) + 3) for m in marks]
    flow = esc(direction_text(t.key))

    parts: list[str] = [
        f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{total_h}" viewBox="0 0 {WIDTH} {total_h}" data-flow="{flow}" '
        f'data-t0="{t.t0!r}" data-seq0="{t.seq0}" data-scale="{t.scale}" '
        f'data-x="{xmap.attr()}" data-y="{ymap.attr()}" data-series="{esc(series)}">',
        f'<defs><clipPath id="{clip}"><rect x="{num(x0)}" y="{num(y1)}" '
        f'width="{num(x1 - x0)}" height="{num(y0 - y1)}"/></clipPath></defs>',
        f'<rect class="frame" x="{num(x0)}" y="{num(y1)}" width="{num(x1 - x0)}" '
        f'height="{num(y0 - y1)}" fill="#fcfcfc" stroke="#999"/>',
        f'<text class="title" x="{LEFT}" y="16">{flow}{" — " + esc(title) if title else ""}</text>',
        '<g class="axes">',
        *_axes(axes, lo, hi, s_lo, s_hi),
        "</g>",
        f'<g clip-path="url(#{clip})"><g class="data">',
    ]
    acks = _around(t.acked, lo, hi)
    for name, colour, attr in (("ack-line", ACK_LINE, "ack"), ("edge-line", EDGE_LINE, "edge")):
        verts = step_vertices((xmap(a.t), ymap(getattr(a, attr))) for a in acks)
        if verts:
            verts.append((max(x1, verts[-1][0]), verts[-1][1]))
        verts = decimate_steps(verts, protect, LIMIT)
        parts.append(
            f'<polyline class="{name}" fill="none" stroke="{colour}" stroke-width="1.3" '
            f'points="{points(verts)}"/>'
        )
    parts += _bars(t, axes, lo, hi, protect)
    parts.append('</g><g class="marks">')
    parts += [_marker(m, axes) for m in marks]
    parts.append('</g></g><g class="labels">')
    parts += _labels(_clusters(marks, xmap), axes)
    parts.append("</g></svg>\n")
    return "".join(parts)


def _axes(axes: Axes, lo: float, hi: float, s_lo: float, s_hi: float) -> list[str]:
    xmap, ymap = axes.x, axes.y
    out = []
    unit, factor = _time_unit(hi - lo)
    xt = ticks(lo * factor, hi * factor, 8)
    step = xt[1] - xt[0] if len(xt) > 1 else 1.0
    for v in xt:
        x = num(xmap(v / factor))
        out.append(
            f'<line x1="{x}" y1="{num(ymap.p1)}" x2="{x}" y2="{num(ymap.p0 + 4)}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{x}" y="{num(ymap.p0 + 16)}" text-anchor="middle">'
            f"{tick_label(v, step)}</text>"
        )
    yt = ticks(s_lo, s_hi, 7)
    step = yt[1] - yt[0] if len(yt) > 1 else 1.0
    for v in yt:
        y = num(ymap(v))
        out.append(
            f'<line x1="{num(xmap.p0 - 4)}" y1="{y}" x2="{num(xmap.p1)}" y2="{y}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{num(xmap.p0 - 7)}" y="{y}" dy="4" text-anchor="end">'
            f"{tick_label(v, max(step, 1))}</text>"
        )
    mid = num((xmap.p0 + xmap.p1) / 2)
    out.append(
        f'<text x="{mid}" y="{num(ymap.p0 + 34)}" text-anchor="middle">'
        f"{unit} since the first packet</text>"
        f'<text transform="translate(14 {num((ymap.p0 + ymap.p1) / 2)}) rotate(-90)" '
        'text-anchor="middle">relative sequence number (bytes)</text>'
    )
    return out


def _time_unit(span: float) -> tuple[str, float]:
    if span >= 2:
        return "seconds", 1.0
    if span >= 2e-3:
        return "milliseconds", 1e3
    return "microseconds", 1e6


def _bars(
    t: DirectionSeries, axes: Axes, lo: float, hi: float, protect: list[tuple[float, float]]
) -> list[str]:
    xmap, ymap = axes.x, axes.y
    sent = [s for s in t.sent if lo <= s.t <= hi]
    out = []
    for retransmit, colour, name in ((False, DATA, "data"), (True, RETRANSMIT, "retransmit")):
        segs = [(xmap(s.t), ymap(s.start), ymap(s.end)) for s in sent if s.retransmit == retransmit]
        if not segs:
            continue
        if len(segs) > LIMIT:
            segs = _merge_columns(segs, protect)
        serifs = len(segs) <= 400
        d = []
        for x, ya, yb in segs:
            d.append(f"M{num(x)} {num(ya)}V{num(yb)}")
            if serifs:
                d.append(f"M{num(x - 2)} {num(ya)}h4M{num(x - 2)} {num(yb)}h4")
        out.append(
            f'<path class="{name}" stroke="{colour}" stroke-width="1.2" fill="none" '
            f'd="{"".join(d)}"/>'
        )
    return out


def _merge_columns(
    segs: list[tuple[float, float, float]], protect: list[tuple[float, float]]
) -> list[tuple[float, float, float]]:
    """One bar per pixel column (its lowest to highest byte), except near events."""
    cols: dict[int, list[float]] = {}
    kept = []
    protected = Ranges(protect)
    for x, ya, yb in segs:
        if x in protected:
            kept.append((x, ya, yb))
            continue
        c = int(x)
        span = cols.get(c)
        if span is None:
            cols[c] = [x, max(ya, yb), min(ya, yb)]
        else:
            span[1] = max(span[1], ya, yb)
            span[2] = min(span[2], ya, yb)
    kept += [(v[0], v[1], v[2]) for v in cols.values()]
    kept.sort()
    return kept


def _marker(m: Marked, axes: Axes) -> str:
    e = m.event
    c = COLOURS[e.cls]
    x = num(axes.x(m.t))
    y_old, y_new = num(axes.y(m.old_edge)), num(axes.y(m.new_edge))
    tip = (
        f"frame {e.frame} ({e.cls.label}): right edge {m.old_edge} -> {m.new_edge}, "
        f"{e.shrink_bytes} bytes back, {e.beyond_bytes} beyond snd_nxt"
    )
    inner = [
        f"<title>{esc(tip)}</title>",
        f'<line class="taken" x1="{x}" y1="{y_old}" x2="{x}" y2="{y_new}" stroke="{c}" '
        'stroke-width="6" stroke-opacity=".45"/>',
    ]
    if e.beyond_bytes:
        y_nxt = num(axes.y(m.snd_nxt))
        inner.append(
            f'<line class="beyond" x1="{x}" y1="{y_nxt}" x2="{x}" y2="{y_new}" stroke="{c}" '
            'stroke-width="2"/>'
        )
    inner.append(f'<circle cx="{x}" cy="{y_new}" r="4" fill="{c}" stroke="#fff" stroke-width="1"/>')
    return (
        f'<g class="event {e.cls.label}" data-frame="{e.frame}" data-old="{m.old_edge}" '
        f'data-new="{m.new_edge}">{"".join(inner)}</g>'
    )


def _label_text(e: Event) -> str:
    return f"#{e.frame} \u2212{e.shrink_bytes} B"


def _clusters(marks: Sequence[Marked], xmap: Linear) -> list[list[Marked]]:
    """Events in time order, grouped while each is less than ``CLUSTER_PX`` right of its
    group's first: one label per group, so crowded events never stack unreadably (the
    script groups them again for every view)."""
    groups: list[list[Marked]] = []
    start = 0.0
    for m in sorted(marks, key=lambda m: (m.t, m.event.frame)):
        x = xmap(m.t)
        if groups and x - start < CLUSTER_PX:
            groups[-1].append(m)
        else:
            groups.append([m])
            start = x
    return groups


def _labels(groups: list[list[Marked]], axes: Axes) -> list[str]:
    out = []
    y = 26 + LABELS - 12
    for group in groups:
        worst = max(group, key=lambda m: (m.event.cls, m.event.shrink_bytes))
        c = COLOURS[worst.event.cls]
        x = num(sum(axes.x(m.t) for m in group) / len(group))
        text = _label_text(worst.event) if len(group) == 1 else f"{len(group)} events"
        frames = " ".join(str(m.event.frame) for m in group)
        out.append(
            f'<g class="label" data-frames="{frames}">'
            f'<line x1="{x}" y1="{y + 3}" x2="{x}" y2="{num(axes.y.p1)}" '
            f'stroke="{c}" stroke-width=".8" stroke-dasharray="2 2"/>'
            f'<text x="{x}" y="{y}" text-anchor="middle" fill="{c}" style="fill:{c}">'
            f"{esc(text)}</text></g>"
        )
    return out
