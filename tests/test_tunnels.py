"""Tunnelled traffic: every encapsulation decoded as tshark decodes it, in both engines.

Each capture holds one conversation (handshake with window scale 7, data, one shrink) inside
one encapsulation, over IPv4 and IPv6. For every frame, the innermost addresses, ports,
sequence and acknowledgement numbers, window, window scale, payload length, VLAN ids, tunnel
identifiers and enclosing addresses must equal tshark's; the scan must find the one shrink
with the scale known, and the compiled scanner must agree with the reference engine on
events and counters.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import subprocess
from pathlib import Path

import pytest

import netns
import tunnels
from captures import ether, ipv4, pcap, tcp, tools_missing
from captures import tshark_fields as run_tshark
from treason.decode import (
    MAX_TAGS,
    MAX_TUNNELS,
    NOT_IP,
    NOT_TCP,
    TOO_MANY_TAGS,
    TOO_MANY_TUNNELS,
    TUNNEL_OTHER,
    decode,
    tunnel_names,
)
from treason.engine import compiled
from treason.errors import CaptureError
from treason.events import Severity
from treason.packets import Frame, Segment
from treason.readers import open_frames
from treason.scanner import ScanStats, scan

NAMES = sorted(tunnels.ENCAPSULATIONS)


def capture(name: str) -> bytes:
    wrap, _ = tunnels.ENCAPSULATIONS[name]
    packets = tunnels.conversation(False) + tunnels.conversation(True)
    return pcap((i * 1_000_000, wrap(p)) for i, p in enumerate(packets))


def run(data: bytes, engine: str) -> tuple:
    stats = ScanStats()
    events = []
    error = None
    try:
        events = list(scan(io.BytesIO(data), engine=engine, retractions=True, stats=stats))
    except CaptureError as exc:
        error = str(exc)
    return [dataclasses.asdict(e) for e in events], stats.to_dict(), error


def both(data: bytes) -> tuple:
    """The reference engine's outcome, after checking the compiled scanner gives the same."""
    ref = run(data, "reference")
    if compiled.available():
        assert run(data, "fast") == ref
    return ref


# --------------------------------------------------------------------------------------------
# tshark, field by field

FIELDS = (
    "frame.number",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.window_size_value",
    "tcp.options.wscale.shift",
    "tcp.len",
    "vlan.id",
    "vxlan.vni",
    "geneve.vni",
    "gre.key",
    "gtp.teid",
    "mpls.label",
    "erspan.spanid",
    "pppoe.session_id",
)


def _values(f: dict[str, str], name: str) -> list[str]:
    return [v for v in f[name].split(",") if v]


def _expected(f: dict[str, str]) -> tuple:
    """What tshark's layers say: inner addresses, enclosing pairs, VLANs and tunnel names."""
    layers = f["frame.protocols"].split(":")
    ips = {"ip": list(zip(_values(f, "ip.src"), _values(f, "ip.dst")))}
    ips["ipv6"] = list(zip(_values(f, "ipv6.src"), _values(f, "ipv6.dst")))
    ids = {k: _values(f, k) for k in FIELDS[14:]}
    pairs, names = [], []
    for i, layer in enumerate(layers):
        if layer in ips:
            pairs.append(ips[layer].pop(0))
            if layers[i + 1] in ips:
                names.append("ip")
        elif layer == "vxlan":
            names.append(f"vxlan:{int(ids['vxlan.vni'].pop(0))}")
        elif layer == "geneve":
            names.append(f"geneve:{int(ids['geneve.vni'].pop(0), 16)}")
        elif layer == "gre":
            key = ids["gre.key"]
            names.append(f"gre:{int(key.pop(0), 16)}" if key else "gre")
        elif layer == "erspan" and ids["erspan.spanid"]:
            names.append(f"erspan:{int(ids['erspan.spanid'].pop(0))}")
        elif layer == "gtp":
            names.append(f"gtp:{int(ids['gtp.teid'].pop(0), 16)}")
        elif layer == "mpls":
            names += [f"mpls:{int(v)}" for v in ids["mpls.label"]]
        elif layer == "pppoes":
            names.append(f"pppoe:{int(ids['pppoe.session_id'].pop(0), 16)}")
    vlans = tuple(int(v) for v in _values(f, "vlan.id"))
    return pairs[-1], tuple(pairs[:-1]), vlans, tuple(names)


@pytest.mark.tshark
@pytest.mark.parametrize("name", NAMES)
def test_every_frame_agrees_with_tshark(tmp_path: Path, name: str) -> None:
    missing = tools_missing("tshark")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(capture(name))
    rows = run_tshark(path, FIELDS, *tunnels.ENCAPSULATIONS[name][1])
    frames = list(open_frames(path))
    assert len(rows) == len(frames) == 16
    for frame, row in zip(frames, rows):
        f = dict(zip(FIELDS, row))
        seg = decode(frame)
        assert isinstance(seg, Segment), (frame.number, seg, f["frame.protocols"])
        inner, outer, vlans, names = _expected(f)
        want = (
            inner,
            outer,
            vlans,
            names,
            int(f["tcp.srcport"]),
            int(f["tcp.dstport"]),
            int(f["tcp.seq_raw"]),
            int(f["tcp.ack_raw"]) if f["tcp.ack_raw"] else seg.ack,
            int(f["tcp.window_size_value"]),
            int(f["tcp.options.wscale.shift"]) if f["tcp.options.wscale.shift"] else None,
            int(f["tcp.len"]),
        )
        got = (
            (seg.src, seg.dst),
            seg.outer,
            seg.vlan,
            tunnel_names(seg.path),
            seg.sport,
            seg.dport,
            seg.seq,
            seg.ack,
            seg.win,
            seg.ws,
            seg.payload_len,
        )
        assert got == want, (frame.number, f["frame.protocols"])


# --------------------------------------------------------------------------------------------
# Events, both engines


@pytest.mark.parametrize("name", NAMES)
def test_the_shrink_inside_every_tunnel_is_found_by_both_engines(name: str) -> None:
    events, stats, error = both(capture(name))
    assert error is None
    assert stats["handshakes"] == 2 and stats["flows"] == 2
    assert [(e["src"], e["cls"], e["scale"], e["scale_known"]) for e in events] == [
        ("10.0.0.1", Severity.SHRINK, 7, True),
        ("2001:db8::c", Severity.SHRINK, 7, True),
    ]
    for e in events:
        assert e["old_edge"] == 6001 + (500 << 7) and e["new_edge"] == 7001 + (100 << 7)
        assert e["tunnel"], "the tunnel layers are in the event record"
    # The event is made by the client's segment: the enclosing addresses are those it came in.
    seg = decode(Frame(1, 0, 1, tunnels.ENCAPSULATIONS[name][0](tunnels.conversation(False)[6]), 0))
    assert isinstance(seg, Segment)
    assert events[0]["outer"] == seg.outer
    assert events[0]["tunnel"] == tunnel_names(seg.path)


def test_tenants_with_the_same_inner_addresses_never_merge() -> None:
    """Two VXLAN tenants (VNI 1 and 2) run the same 4-tuple at the same time; only tenant 1's
    client shrinks. Merged into one flow, tenant 2's handshake would be an ignored SYN and
    its ACKs would be judged against tenant 1's window."""
    one = tunnels.conversation(False)
    two = tunnels.conversation(False)
    # tenant 2 never shrinks: its last ACKs offer more, not less
    two[6] = ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 80, 1001, 7001, 0x10, 600))
    two[7] = ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 80, 1001, 7001, 0x11, 600))

    def vx(vni: int, p: bytes) -> bytes:
        return ether(
            tunnels.outer_ip(tunnels.udp(4789, tunnels.vxlan(vni, tunnels.ether_ip(p))), 17)
        )

    frames = [f for a, b in zip(one, two) for f in (vx(1, a), vx(2, b))]
    events, stats, _ = both(pcap((i, f) for i, f in enumerate(frames)))
    assert stats["flows"] == 2 and stats["handshakes"] == 2
    assert [(e["tunnel"], e["cls"]) for e in events] == [(("vxlan:1",), Severity.SHRINK)]


# --------------------------------------------------------------------------------------------
# What cannot be opened, by reason


def _gre_v1() -> bytes:
    return ether(tunnels.outer_ip(struct.pack("!HH", 0x2001, 0x880B) + b"\0" * 8, 47))


def _gtp_echo() -> bytes:
    echo = struct.pack("!BBHI", 0x32, 1, 4, 0) + b"\0\0\0\0"
    return ether(tunnels.outer_ip(tunnels.udp(2152, echo), 17))


SEG = ipv4("10.0.0.1", "10.0.0.2", tcp())

UNOPENED = {
    "gre-version-1": (_gre_v1(), TUNNEL_OTHER),
    "gre-routing": (
        ether(tunnels.outer_ip(struct.pack("!HH", 0x4000, 0x0800) + SEG, 47)),
        TUNNEL_OTHER,
    ),
    "gre-unknown-protocol": (ether(tunnels.outer_ip(tunnels.gre(0x1234, SEG), 47)), TUNNEL_OTHER),
    "gtp-echo": (_gtp_echo(), TUNNEL_OTHER),
    "mpls-pseudowire": (ether(tunnels.mpls((5,), b"\0\0\0\0" + SEG), 0x8847), TUNNEL_OTHER),
    "geneve-version-1": (
        ether(
            tunnels.outer_ip(tunnels.udp(6081, b"\x40" + tunnels.geneve(1, 0x0800, SEG)[1:]), 17)
        ),
        TUNNEL_OTHER,
    ),
    "erspan-3-ip-frame": (
        ether(
            tunnels.outer_ip(
                tunnels.gre(0x22EB, struct.pack("!HHIHH", 2 << 12, 1, 0, 0, 2 << 10) + SEG, seq=1),
                47,
            )
        ),
        TUNNEL_OTHER,
    ),
    "erspan-2-wrong-version": (
        ether(tunnels.outer_ip(tunnels.gre(0x88BE, b"\x20" + b"\0" * 7 + SEG, seq=1), 47)),
        TUNNEL_OTHER,
    ),
    "udp-dns": (ether(tunnels.outer_ip(tunnels.udp(53, b"\0" * 12), 17)), NOT_TCP),
    "pppoe-lcp": (ether(struct.pack("!BBHHH", 0x11, 0, 1, 6, 0xC021) + b"\0" * 4, 0x8864), NOT_IP),
    "vlans-over-cap": (
        ether(SEG, vlans=list(range(1, MAX_TAGS + 2)), tpids=[0x8100] * (MAX_TAGS + 1)),
        TOO_MANY_TAGS,
    ),
    "labels-over-cap": (
        ether(tunnels.mpls(range(16, 16 + MAX_TAGS + 1), SEG), 0x8847),
        TOO_MANY_TAGS,
    ),
}


def _ip_in_ip(depth: int) -> bytes:
    packet = SEG
    for _ in range(depth):
        packet = ipv4("192.0.2.1", "192.0.2.2", packet, proto=4)
    return ether(packet)


UNOPENED["tunnels-over-cap"] = (_ip_in_ip(MAX_TUNNELS + 1), TOO_MANY_TUNNELS)


@pytest.mark.parametrize("case", sorted(UNOPENED))
def test_what_cannot_be_opened_is_counted_by_reason(case: str) -> None:
    data, reason = UNOPENED[case]
    assert decode(Frame(1, 0, 1, data, len(data))) == reason
    _, stats, _ = both(pcap([(0, data)]))
    assert stats["skipped"] == {reason: 1}


def test_the_deepest_nesting_under_the_caps_is_opened() -> None:
    at_cap = _ip_in_ip(MAX_TUNNELS)
    seg = decode(Frame(1, 0, 1, at_cap, len(at_cap)))
    assert isinstance(seg, Segment) and len(seg.outer) == MAX_TUNNELS
    tags = ether(tunnels.mpls(range(16, 16 + MAX_TAGS - 1), SEG), 0x8847, vlans=[9])
    seg = decode(Frame(1, 0, 1, tags, len(tags)))
    assert isinstance(seg, Segment) and len(seg.path) == MAX_TAGS


def test_a_deep_vlan_stack_costs_one_pass() -> None:
    """A 256 KiB frame of VLAN tags (issue: quadratic tuple growth) stops at the cap."""
    data = b"\0" * 12 + struct.pack("!HH", 0x8100, 5) * (65_000) + b"\x08\x00" + SEG
    assert decode(Frame(1, 0, 1, data, len(data))) == TOO_MANY_TAGS
    _, stats, _ = both(pcap([(0, data)] * 3))
    assert stats["skipped"] == {TOO_MANY_TAGS: 3}


@pytest.mark.parametrize("name", NAMES)
def test_a_tunnelled_frame_cut_anywhere_gives_the_same_skip_in_both_engines(name: str) -> None:
    """Every prefix of the nested SYN-ACK: the same reason (or segment) in both engines."""
    frame = tunnels.ENCAPSULATIONS[name][0](tunnels.conversation(True)[1])
    records = [(i, frame[:i], len(frame)) for i in range(len(frame) + 1)]
    _, stats, error = both(pcap(records))
    assert error is None
    assert sum(stats["skipped"].values()) + stats["segments"] == len(frame) + 1


# --------------------------------------------------------------------------------------------
# A real VXLAN overlay between two network namespaces

VNI = 4242
OVERLAY_A, OVERLAY_B = "10.244.7.1", "10.244.7.2"


def _vxlan_overlay(pair: netns.VethPair) -> netns.VethPair:
    """A vxlan device on each side over the veth, addresses on the overlay; the same pair with
    the overlay addresses, so the traffic helpers talk through the tunnel."""
    local = {"a": pair.addr_a, "b": pair.addr_b}
    for side, addr in (("a", OVERLAY_A), ("b", OVERLAY_B)):
        ns, peer = pair.ns(side), local["b" if side == "a" else "a"]
        add = ["ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", str(VNI)]
        add += ["local", local[side], "remote", peer, "dstport", "4789", "dev", pair.dev(side)]
        proc = subprocess.run(add, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"the kernel cannot make a vxlan device: {proc.stderr.strip()}")
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "vx0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "vx0", "up"], check=True)
    return dataclasses.replace(pair, addr_a=OVERLAY_A, addr_b=OVERLAY_B)


def _comparable(events: list[dict]) -> list[tuple]:
    """Events without what differs between the two capture points (frame numbers, times,
    the tunnel itself)."""
    drop = {"frame", "time", "file", "tunnel", "outer"}
    return [tuple(v for k, v in e.items() if k not in drop) for e in events]


@pytest.mark.netns
def test_the_underlay_of_a_real_vxlan_overlay_gives_the_overlays_events(tmp_path: Path) -> None:
    """The receiver (tcp_shrink_window=1) shrinks its window through a VXLAN tunnel: tcpdump
    on the veth (underlay, VXLAN in UDP) and on the vxlan device (overlay, plain Ethernet) at
    the same time must give the same events, the underlay's with the VNI and the veth
    addresses."""
    reason = netns.missing_capability("tcpdump")
    if reason:
        pytest.skip(reason)
    under, over = tmp_path / "underlay.pcap", tmp_path / "overlay.pcap"
    with netns.veth_pair("trvx") as pair:
        overlay = _vxlan_overlay(pair)
        pair.sysctl("b", "net.ipv4.tcp_shrink_window", 1)
        pair.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        with (
            netns.Tcpdump(pair, "b", under, snaplen=256) as dump_under,
            netns.Tcpdump(pair, "b", over, snaplen=256, interface="vx0") as dump_over,
        ):
            netns.slow_reader_exchange(overlay, port=5001)
            stats = [dump_under.stop(), dump_over.stop()]
    assert not any(s.dropped for s in stats)
    results = {path: both(path.read_bytes()) for path in (under, over)}
    (ev_under, st_under, err_under), (ev_over, st_over, err_over) = results.values()
    assert err_under is None and err_over is None
    assert ev_over, "the receiver shrank its window: the overlay capture must show it"
    assert _comparable(ev_under) == _comparable(ev_over)
    assert st_under["handshakes"] == st_over["handshakes"] == 1
    for e in ev_under:
        assert e["tunnel"] == (f"vxlan:{VNI}",)
        assert e["outer"] == ((pair.addr_b, pair.addr_a),)  # the receiver's ACKs, b to a
        assert (e["src"], e["dst"]) == (OVERLAY_B, OVERLAY_A)
    assert all(e["tunnel"] == () and e["outer"] == () for e in ev_over)


def test_gtp_directions_with_their_own_teids_are_one_connection() -> None:
    """GTP-U gives each direction its own TEID (uplink and downlink): the handshake pairs
    them, so the shrink is found with the scale known."""
    packets = tunnels.conversation(False)
    frames = []
    for p in packets:
        teid = 0x100 if p[12:16] == bytes([10, 0, 0, 1]) else 0x200  # from the client: uplink
        frames.append(ether(tunnels.outer_ip(tunnels.udp(2152, tunnels.gtpu(teid, p)), 17)))
    events, stats, _ = both(pcap((i, f) for i, f in enumerate(frames)))
    assert stats["flows"] == 1 and stats["handshakes"] == 1
    assert [(e["cls"], e["scale_known"], e["tunnel"]) for e in events] == [
        (Severity.SHRINK, True, ("gtp:256",))
    ]
