"""The comparison as a network engineer reads it: one conclusion per flow, then the evidence.

Events are grouped by the flow of the ACKs that made them (receiver to data sender, as the
near capture names it when both points saw it). Each flow gets one sentence that says who
moved the right edge and what to look at next; the same sentence is in the JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from treason.compare import Comparison
from treason.compare.attribution import PATH, RECEIVER, REORDERED, UNMATCHED, AttributedEvent
from treason.compare.fingerprint import DirKey
from treason.compare.flows import Direction, Rewrite
from treason.compare.pairing import FAR, NEAR, reverse
from treason.terminal import safe


@dataclass
class FlowReport:
    """One receiver → sender flow: its events, what the path did to it, the conclusion."""

    near: DirKey | None
    far: DirKey | None
    events: list[AttributedEvent] = field(default_factory=list)
    acks: Direction | None = None  # receiver → sender segments, paired
    rewrites: list[Rewrite] = field(default_factory=list)
    conclusion: str = ""

    @property
    def receiver(self) -> str:
        key = self.near or self.far
        assert key is not None
        return f"{key[0]}:{key[1]}"

    @property
    def sender(self) -> str:
        key = self.near or self.far
        assert key is not None
        return f"{key[2]}:{key[3]}"

    def counts(self) -> Counter[str]:
        """Shrinks by attribution, an ACK seen shrinking at both points counted once."""
        acks = {(e.attribution, _ack(e)) for e in self.events}
        return Counter(attribution for attribution, _ in acks)

    def to_dict(self) -> dict[str, object]:
        acks = self.acks
        return {
            "receiver": self.receiver,
            "sender": self.sender,
            "near": _name(self.near),
            "far": _name(self.far),
            "conclusion": self.conclusion,
            "attribution": dict(self.counts()),
            "acks_paired": acks.paired if acks else 0,
            "windows_rewritten": acks.win_changed if acks else 0,
            "rewrites": [r.to_dict() for r in self.rewrites],
        }


def _ack(ae: AttributedEvent) -> tuple[int, int]:
    """The ACK of an event, named by its frame at NEAR when NEAR saw it."""
    if ae.point == NEAR:
        return (NEAR, ae.event.frame)
    if ae.twin is not None:
        return (NEAR, ae.twin.seg.frame)
    return (FAR, ae.event.frame)


def _name(key: DirKey | None) -> str | None:
    if key is None:
        return None
    src, sport, dst, dport, vlan = key
    tag = f" vlan {'.'.join(map(str, vlan))}" if vlan else ""
    return f"{src}:{sport} > {dst}:{dport}{tag}"


def flows(cmp: Comparison) -> list[FlowReport]:
    """One report per receiver → sender flow that had events or that the path rewrote."""
    by_key: dict[tuple[int, DirKey], FlowReport] = {}

    def report_for(point: int, key: DirKey) -> FlowReport:
        near = key if point == NEAR else cmp.flow_map[FAR].get(key)
        far = key if point == FAR else cmp.flow_map[NEAR].get(key)
        ident: tuple[int, DirKey] = (NEAR, near) if near is not None else (FAR, key)
        rep = by_key.get(ident)
        if rep is None:
            rep = by_key[ident] = FlowReport(near, far)
            if near is not None:
                rep.acks = cmp.directions.get(near)
        return rep

    for ae in cmp.events:
        ev = ae.event
        report_for(ae.point, (ev.src, ev.sport, ev.dst, ev.dport, ev.vlan)).events.append(ae)
    for key, d in cmp.directions.items():
        if d.win_changed or d.seq_offset or cmp.handshakes.rewrites(key, d.far):
            # One report per connection, named by its ACK direction: the one carrying less.
            back = cmp.directions.get(reverse(key))
            acks = reverse(key) if back is not None and back.carrying < d.carrying else key
            if (NEAR, acks) not in by_key and (NEAR, reverse(acks)) not in by_key:
                report_for(NEAR, acks)
    for rep in by_key.values():
        if rep.near is not None and rep.far is not None:
            for near, far in ((rep.near, rep.far), (reverse(rep.near), reverse(rep.far))):
                way = cmp.directions.get(near)
                upstream = way.upstream if way is not None else None
                rep.rewrites += cmp.handshakes.rewrites(near, far, upstream)
                if way is not None and way.seq_offset:
                    rep.rewrites.append(
                        Rewrite("sequence", "every segment", near, 0, way.seq_offset)
                    )
        rep.conclusion = conclude(rep, cmp.files)
    return sorted(by_key.values(), key=lambda r: (r.near is None, _name(r.near or r.far) or ""))


def conclude(rep: FlowReport, files: tuple[str, str]) -> str:
    """The one sentence that says who moved the right edge of this flow and what to do."""
    between = f"between {files[0]} and {files[1]}"
    counts = rep.counts()
    r = rep.receiver
    clauses = []
    scale = [w for w in rep.rewrites if w.what == "window-scale"]
    acks = rep.acks
    path = [e for e in rep.events if e.attribution == PATH]
    # Same raw window at both points yet a path verdict: the two points scale it differently,
    # which only a window-scale option changed in the handshake does.
    by_scale = {
        _ack(e) for e in path if scale and e.twin is not None and e.twin.seg.win == e.event.win
    }
    by_order = {_ack(e) for e in path if e.reason.startswith(REORDERED)}
    by_window = {_ack(e) for e in path} - by_scale - by_order
    where = " and ".join(sorted({files[e.point] for e in path}))
    if by_scale:
        w = scale[0]
        clauses.append(
            f"the window-scale option of the {w.segment} from {w.sender[0]}:{w.sender[1]} was "
            f"{_change(w)} {between}, so the two ends scale {r}'s windows differently: the "
            f"{len(by_scale)} shrink(s) seen at {where} come from that mismatch, not from {r}; "
            f"make the device between the capture points leave TCP options alone"
        )
    if by_window:
        changed = f"{acks.win_changed} of {acks.paired}" if acks else "some"
        clauses.append(
            f"a device {between} rewrote the window of {changed} segments from {r}"
            f"{_example(acks, files)}, and made the {len(by_window)} shrink(s) seen at "
            f"{where}: {r} did not take that window back; check that device (IPS "
            f"normaliser, shaper, load balancer, NAT) and its window or TCP normalisation "
            f"settings"
        )
    if by_order:
        clauses.append(
            f"a device {between} delivered {r}'s ACKs out of order, so an ACK with a larger "
            f"window arrived after a smaller one and made the {len(by_order)} shrink(s) seen at "
            f"{where}: {r} did not take that window back (Linux senders ignore such an update; "
            f"look for multipath or per-packet load balancing between the points)"
        )
    if counts[RECEIVER]:
        clauses.append(
            f"{r} itself shrank its window {counts[RECEIVER]} time(s) (the same windows at both "
            f"points): look at {r}'s TCP stack and settings (e.g. net.ipv4.tcp_shrink_window=1), "
            f"not at the path"
        )
    if counts[UNMATCHED]:
        reasons = sorted({e.reason for e in rep.events if e.attribution == UNMATCHED})
        clauses.append(
            f"{counts[UNMATCHED]} shrink(s) could not be checked because the ACK was not seen at "
            f"the other point ({'; '.join(reasons)})"
        )
    if not rep.events and acks is not None and acks.win_changed:
        clauses.append(
            f"no shrink, but a device {between} rewrote the window of {acks.win_changed} of "
            f"{acks.paired} segments from {r}{_example(acks, files)}"
        )
    for w in rep.rewrites:
        if w.what == "sequence":
            clauses.append(
                f"a device {between} randomises the sequence numbers of {w.sender[0]}:"
                f"{w.sender[1]} (offset {w.far})"
            )
        elif w.what == "mss":
            clauses.append(
                f"the MSS of the {w.segment} from {w.sender[0]}:{w.sender[1]} was {_change(w)} "
                f"{between}"
            )
        elif not by_scale:
            clauses.append(
                f"the window-scale option of the {w.segment} from {w.sender[0]}:{w.sender[1]} "
                f"was {_change(w)} {between}"
            )
    if not clauses:
        return f"Nothing to report for {r}."
    text = "; ".join(clauses)
    return text[0].upper() + text[1:] + "."


def _change(w: Rewrite) -> str:
    before, after = w.before_after
    if after is None:
        return f"stripped (it was {before})"
    if before is None:
        return f"added ({after})"
    return f"changed from {before} to {after}"


def _example(acks: Direction | None, files: tuple[str, str]) -> str:
    if acks is None or acks.example is None:
        return ""
    nf, nw, ff, fw = acks.example
    sides = [(files[0], nf, nw), (files[1], ff, fw)]
    if acks.upstream == FAR:
        sides.reverse()
    (a, af, aw), (b, bf, bw) = sides
    return f" (e.g. window {aw} in {a} frame {af} became {bw} in {b} frame {bf})"


def render_text(cmp: Comparison) -> str:
    """The terminal report: the comparison, then per flow its conclusion and events."""
    near, far = cmp.files
    out = [f"near: {safe(near)}  ({cmp.segments[NEAR]} TCP segments)"]
    out.append(f"far:  {safe(far)}  ({cmp.segments[FAR]} TCP segments)")
    offset = "unknown" if cmp.offset_ns is None else f"{cmp.offset_ns / 1e9:+.6f} s"
    out.append(
        f"paired {cmp.paired} segments; seen only near: {cmp.lost[NEAR]}, only far: "
        f"{cmp.lost[FAR]}; far clock minus near clock: {offset}"
    )
    for rep in flows(cmp):
        out.append("")
        names = _name(rep.near) or "-"
        if rep.far is not None and rep.far != rep.near:
            names += f"  (far: {_name(rep.far)})"
        elif rep.near is None:
            names = f"- (far: {_name(rep.far)})"
        out.append(f"flow {safe(names)}")
        out.append(f"  {safe(rep.conclusion)}")
        for ae in rep.events:
            out.append("    " + safe(_event_line(ae, cmp.files)))
    for w in cmp.warnings:
        out.append(f"warning: {safe(w)}")
    return "\n".join(out) + "\n"


def _event_line(ae: AttributedEvent, files: tuple[str, str]) -> str:
    ev = ae.event
    here = f"{files[ae.point]} frame {ev.frame}: {ev.cls.label} win {ev.win}<<{ev.scale}"
    if ae.twin is None:
        return f"{here} -> {ae.attribution}: {ae.reason}"
    scale = "?" if ae.other_scale is None else str(ae.other_scale)
    there = f"{ae.other_file} frame {ae.twin.seg.frame}: win {ae.twin.seg.win}<<{scale}"
    return f"{here}; {there} -> {ae.attribution}: {ae.reason}"


def render_json(cmp: Comparison) -> str:
    """One JSON document: the comparison, the flows with their conclusions, the events."""
    doc = {
        "near": cmp.files[NEAR],
        "far": cmp.files[FAR],
        "clock_offset": None if cmp.offset_ns is None else cmp.offset_ns / 1e9,
        "segments": {"near": cmp.segments[NEAR], "far": cmp.segments[FAR]},
        "paired": cmp.paired,
        "only_near": cmp.lost[NEAR],
        "only_far": cmp.lost[FAR],
        "peak_waiting": cmp.peak_pending,
        "scan_stats": {"near": cmp.stats[NEAR].to_dict(), "far": cmp.stats[FAR].to_dict()},
        "flows": [rep.to_dict() for rep in flows(cmp)],
        "events": [ae.to_dict() for ae in cmp.events],
        "warnings": list(cmp.warnings),
    }
    return json.dumps(doc, ensure_ascii=True, indent=1) + "\n"
