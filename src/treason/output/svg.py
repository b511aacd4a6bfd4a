"""Small pieces for hand-written SVG: escaping, compact numbers, axis ticks and decimation.

The plots must open offline in any browser, so they are plain SVG text with no library
behind them. Big captures have millions of packets but a graph only a thousand pixel columns:
``decimate_steps`` keeps, per column, what the eye can see (first, lowest, highest and last
vertex), and every vertex in the columns the caller protects (those around an event), so a
window shrink is never smoothed away.
"""

from __future__ import annotations

import bisect
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Point = tuple[float, float]


def esc(text: str) -> str:
    """Text safe inside an element or a double-quoted attribute of HTML and XML alike."""
    return html.escape(text, quote=True)


def num(v: float) -> str:
    """A pixel coordinate to 0.1 px, without a trailing ``.0``: files stay small."""
    r = round(v, 1)
    if r == int(r):
        return str(int(r))
    return f"{r:.1f}"


def points(pts: Iterable[Point]) -> str:
    """The ``points`` attribute of a ``<polyline>``."""
    return " ".join(f"{num(x)},{num(y)}" for x, y in pts)


@dataclass(frozen=True, slots=True)
class Linear:
    """A linear map from data values ``lo..hi`` to pixels ``p0..p1`` (``p1 < p0`` for y)."""

    lo: float
    hi: float
    p0: float
    p1: float

    def __call__(self, v: float) -> float:
        span = self.hi - self.lo
        if span == 0:
            return (self.p0 + self.p1) / 2
        return self.p0 + (v - self.lo) * (self.p1 - self.p0) / span

    def attr(self) -> str:
        """``"p0 p1 lo hi"``: the mapping written into the SVG so readers can recompute it."""
        return f"{self.p0!r} {self.p1!r} {self.lo!r} {self.hi!r}"


def ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round values between ``lo`` and ``hi`` (1, 2 or 5 times a power of ten apart)."""
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return [lo]
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        v = first + len(out) * step
    return out


def tick_label(v: float, step: float) -> str:
    """A tick value with just the decimals its spacing needs."""
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{v:,.{decimals}f}"


def step_vertices(steps: Iterable[Point], start: float | None = None) -> list[Point]:
    """Vertices of a step line through ``(x, y)`` changes: horizontal, then vertical."""
    out: list[Point] = []
    prev = start
    for x, y in steps:
        if prev is not None:
            out.append((x, prev))
        out.append((x, y))
        prev = y
    return out


class Ranges:
    """Closed x ranges, merged and sorted: membership in O(log n), whatever their number (a
    flow can have tens of thousands of events, each protecting its pixel columns)."""

    def __init__(self, ranges: Iterable[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for a, b in sorted(ranges):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self._starts = [r[0] for r in merged]
        self._ends = [r[1] for r in merged]

    def __contains__(self, x: float) -> bool:
        i = bisect.bisect_right(self._starts, x) - 1
        return i >= 0 and x <= self._ends[i]


def decimate_steps(
    vertices: Sequence[Point], protect: Sequence[tuple[float, float]] = (), limit: int = 4000
) -> list[Point]:
    """At most about four vertices per pixel column, except inside ``protect`` x ranges.

    Below ``limit`` vertices nothing is dropped. The first and last vertex of each column
    keep the line connected; the lowest and highest keep its envelope (M4 decimation).
    """
    if len(vertices) <= limit:
        return list(vertices)
    out: list[Point] = []
    column: list[Point] = []
    col_id: int | None = None
    protected = Ranges(protect)

    def flush() -> None:
        if not column:
            return
        if len(column) <= 4:
            out.extend(column)
            return
        lo = min(range(len(column)), key=lambda i: column[i][1])
        hi = max(range(len(column)), key=lambda i: column[i][1])
        keep = sorted({0, lo, hi, len(column) - 1})
        out.extend(column[i] for i in keep)

    for v in vertices:
        x = v[0]
        if x in protected:
            flush()
            column = []
            col_id = None
            out.append(v)
            continue
        c = math.floor(x)
        if c != col_id:
            flush()
            column = []
            col_id = c
        column.append(v)
    flush()
    return out
