"""Hypothesis strategies: TCP conversations with a receiver whose behaviour we control.

A data sender S streams to a receiver R that acknowledges and advertises windows. A
*well-behaved* R never moves its right edge left: like Linux's ``tcp_select_window`` it rounds
scaled windows up. The capture then suffers what real ones do: reordering within a direction
(never across directions, which a single capture point cannot see), exact duplicate copies,
retransmissions and sequence numbers wrapping past 2**32. Knobs inject one real shrink, or let
R round down (sub-granularity retractions, RFC 7323 §2.4).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import strategies as st

from treason import seq as sq
from treason.packets import ACK, FIN, SYN, Segment

S_ADDR, R_ADDR = "10.1.0.1", "10.2.0.2"


@dataclass
class Conversation:
    segments: list[Segment]
    shift: int  # R's true window shift
    handshake: bool
    injected_frame: int | None = None  # frame of the injected shrink (after reordering)
    injected_bytes: int = 0


def _isn(draw) -> int:
    return draw(
        st.one_of(
            st.integers(0, sq.MASK),
            st.integers(sq.MOD - 100_000, sq.MASK),  # wraps during the conversation
        )
    )


@st.composite
def conversations(
    draw,
    *,
    inject: bool = False,
    round_down: bool = False,
    handshake: bool | None = None,
    min_shift: int = 0,
) -> Conversation:
    isn_s, isn_r = _isn(draw), _isn(draw)
    hs = draw(st.booleans()) if handshake is None else handshake
    shifts = st.integers(min_shift, 14)
    ws_r = draw(shifts | st.integers(15, 40) if min_shift == 0 else shifts)
    ws_s = draw(st.integers(0, 14))
    shift = min(ws_r, 14)
    timestamps = draw(st.booleans())
    sport, rport = draw(st.integers(1024, 65535)), draw(st.integers(1, 65535))
    gran = 1 << shift
    max_win = 65535 << shift

    out: list[tuple[str, Segment]] = []  # (direction, segment)

    def window(target: int, ack: int) -> int:
        # Linux rounds up so the edge never moves back; RFC 7323 allows rounding down.
        if round_down:
            return (target - ack) >> shift
        return min(-(-(target - ack) // gran), 65535)

    clock = [0, 1000, 50_000]  # ip id, tsval, ts_ns

    def emit(direction: str, seq: int, ack: int, flags: int, win: int, length: int = 0, ws=None):
        clock[0] += 1
        clock[1] += draw(st.integers(0, 3)) if not timestamps else 1
        clock[2] += 1000
        src, dst = (S_ADDR, R_ADDR) if direction == "S" else (R_ADDR, S_ADDR)
        sp, dp = (sport, rport) if direction == "S" else (rport, sport)
        seg = Segment(
            frame=0,
            ts_ns=clock[2],
            src=src,
            sport=sp,
            dst=dst,
            dport=dp,
            seq=seq & sq.MASK,
            ack=ack & sq.MASK,
            flags=flags,
            win=win,
            payload_len=length,
            ws=ws,
            ip_id=clock[0] & 0xFFFF,
            checksum=(seq * 31 + ack * 7 + win + length) & 0xFFFF,
            tsval=clock[1] if timestamps else None,
        )
        out.append((direction, seg))
        return seg

    s_nxt = isn_s + 1
    r_seq = isn_r + 1
    s_win = 4000 >> min(ws_s, 14) or 1
    first_win = draw(st.integers(1, 65535))
    if hs:
        emit("S", isn_s, 0, SYN, 65535, ws=ws_s)
        emit("R", isn_r, s_nxt, SYN | ACK, 65535, ws=ws_r)
        emit("S", s_nxt, r_seq, ACK, s_win)
    r_ack = s_nxt
    edge = r_ack + (first_win << shift)  # R's last advertised right edge
    target = edge  # the edge R means to offer: never decreases unless a shrink is injected
    emit("R", r_seq, r_ack, ACK, first_win)
    injected = None
    inject_at = draw(st.integers(1, 30)) if inject else -1
    acks = 0
    sent: list[tuple[int, int]] = []  # (seq, length) of S data, for retransmissions

    for _ in range(draw(st.integers(5, 60))):
        action = draw(st.sampled_from(["send", "send", "ack", "ack", "rdata", "retx", "dup"]))
        if action == "send":
            room = edge - s_nxt
            if room <= 0:
                emit("S", r_ack - 1, r_seq, ACK, s_win, draw(st.integers(0, 1)))  # probe
                continue
            n = draw(st.integers(1, min(room, 1460 * 4)))
            emit("S", s_nxt, r_seq, ACK, s_win, n)
            sent.append((s_nxt, n))
            s_nxt += n
        elif action == "ack":
            new_ack = draw(st.integers(r_ack, s_nxt))
            acks += 1
            if acks == inject_at and injected is None:
                win_now = (edge - new_ack) >> shift
                if new_ack == r_ack and win_now >= 1:
                    cut = draw(st.integers(1, win_now))
                    win = win_now - cut
                    new_edge = new_ack + (win << shift)
                    seg = emit("R", r_seq, new_ack, ACK, win)
                    injected = (seg, edge - new_edge)
                    edge = target = new_edge
                    continue
            grown = max(target, new_ack) + draw(st.integers(0, 3 * gran + 3000))
            target = max(target, min(grown, new_ack + max_win))
            win = window(target, new_ack)
            if round_down and win == 0 and new_ack != s_nxt:
                win = 1
            emit("R", r_seq, new_ack, ACK, win)
            r_ack, edge = new_ack, new_ack + (win << shift)
            target = max(target, edge)
        elif action == "rdata":
            n = draw(st.integers(1, 200))
            win = window(target, r_ack)
            emit("R", r_seq, r_ack, ACK, win, n)
            edge = r_ack + (win << shift)
            target = max(target, edge)
            r_seq += n
            emit("S", s_nxt, r_seq, ACK, s_win)
        elif action == "retx" and sent:
            seq0, n = draw(st.sampled_from(sent))
            emit("S", seq0, r_seq, ACK, s_win, n)
        elif action == "dup" and out:
            out.append(out[-1])
    if draw(st.booleans()):
        emit("S", s_nxt, r_seq, FIN | ACK, s_win)

    # Reorder: swap neighbours travelling the same way. Pure window updates with equal SEQ
    # and ACK are only distinguishable by their timestamps, so without them they stay put.
    segs = out[:]
    swaps = draw(st.lists(st.integers(0, max(0, len(segs) - 2)), max_size=8))
    for i in swaps:
        (d1, a), (d2, b) = segs[i], segs[i + 1]
        if d1 != d2 or a is b or a.flags & SYN or b.flags & SYN:
            continue
        if d1 == "R" and not timestamps and (a.seq, a.ack) == (b.seq, b.ack):
            continue
        if injected is not None and injected[0] in (a, b):
            continue
        segs[i], segs[i + 1] = segs[i + 1], segs[i]
    result = []
    frame_of_injected = None
    for n, (_, seg) in enumerate(segs, 1):
        if injected is not None and seg is injected[0] and frame_of_injected is None:
            frame_of_injected = n
        result.append(replace(seg, frame=n, ts_ns=50_000 + n * 1000))
    return Conversation(
        result,
        shift,
        hs,
        frame_of_injected,
        injected[1] if injected is not None else 0,
    )


def to_pcap(segments: list[Segment], linktype: int = 1) -> bytes:
    """Write segments as a pcap file (Ethernet, IPv4 or IPv6) with their TCP options."""
    import ipaddress
    import struct

    from captures import ether, ipv4, ipv6, pcap, tcp

    records = []
    for seg in segments:
        opts = b""
        if seg.ws is not None:
            opts += bytes([1, 3, 3, seg.ws])
        if seg.tsval is not None:
            opts += bytes([1, 1, 8, 10]) + struct.pack("!II", seg.tsval, 0)
        payload = b"\0" * min(seg.payload_len, 16)  # snapped: the IP length carries the size
        tcp_bytes = tcp(seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.win, opts)
        tcp_bytes += payload
        full = len(tcp_bytes) - len(payload) + seg.payload_len
        if ipaddress.ip_address(seg.src).version == 4:
            ip = ipv4(seg.src, seg.dst, tcp_bytes, ident=seg.ip_id, total_len=20 + full)
            frame = ether(ip, 0x0800, vlans=seg.vlan)
        else:
            ip = ipv6(seg.src, seg.dst, tcp_bytes, plen=full)
            frame = ether(ip, 0x86DD, vlans=seg.vlan)
        records.append((seg.ts_ns, frame, len(frame) - len(payload) + seg.payload_len))
    return pcap(records, linktype=linktype)
