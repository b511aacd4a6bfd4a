"""Making captures for tests: hand-built packets and files, and real ones from tcpdump.

Hand-built frames pin down exact header layouts (every link type, VLAN stacks, options,
extension headers, both byte orders). Real captures come from the Linux kernel talking to
itself inside a network namespace, recorded by tcpdump and converted by editcap, so the readers
and the decoder meet what those tools really write. Nothing here uses treason's own code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Packets


def tcp(
    sport: int = 40000,
    dport: int = 80,
    seq: int = 1000,
    ack: int = 0,
    flags: int = 0x10,
    win: int = 1024,
    options: bytes = b"",
    payload: bytes = b"",
    doff: int | None = None,
    checksum: int = 0xBEEF,
) -> bytes:
    """A TCP header (options padded to 32 bits) followed by ``payload``."""
    options += b"\0" * (-len(options) % 4)
    if doff is None:
        doff = (20 + len(options)) // 4
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, checksum, 0)
    return head + options + payload


def ws_option(shift: int) -> bytes:
    """The window-scale option (RFC 7323)."""
    return b"\x01\x03\x03" + bytes([shift])


def ts_option(tsval: int, tsecr: int = 0) -> bytes:
    """The timestamps option (RFC 7323), NOP-padded to 12 bytes."""
    return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, tsecr)


def ip(src: str, dst: str, payload: bytes, ident: int = 0x1234) -> bytes:
    """IPv4 or IPv6 carrying TCP ``payload``, by the family of the addresses."""
    if ":" in src:
        return ipv6(src, dst, payload)
    return ipv4(src, dst, payload, ident=ident)


def ipv4(
    src: str,
    dst: str,
    payload: bytes,
    proto: int = 6,
    options: bytes = b"",
    ident: int = 0x1234,
    frag: int = 0x4000,
    total_len: int | None = None,
    ihl: int | None = None,
) -> bytes:
    options += b"\0" * (-len(options) % 4)
    hlen = 20 + len(options)
    if ihl is None:
        ihl = hlen // 4
    if total_len is None:
        total_len = hlen + len(payload)
    head = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        total_len,
        ident,
        frag,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return head + options + payload


def ipv6(
    src: str,
    dst: str,
    payload: bytes,
    nh: int = 6,
    ext: Sequence[tuple[int, bytes]] = (),
    plen: int | None = None,
) -> bytes:
    """IPv6 with extension headers ``ext`` as (header type, header bytes incl. its first two).

    The next-header byte of each extension is filled in here, so callers give only the layout.
    """
    chain = b""
    types = [t for t, _ in ext] + [nh]
    for i, (_t, body) in enumerate(ext):
        chain += bytes([types[i + 1]]) + body[1:]
    first = types[0]
    rest = chain + payload
    if plen is None:
        plen = len(rest)
    head = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        plen,
        first,
        64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return head + rest


def ext_header(length_units: int = 0) -> bytes:
    """A hop-by-hop/routing/destination options header of (length_units + 1) * 8 bytes."""
    size = (length_units + 1) * 8
    return bytes([0, length_units]) + b"\x01" + bytes([size - 4]) + b"\0" * (size - 4)


def fragment_header(offset: int, more: bool, ident: int = 7) -> bytes:
    return struct.pack("!BBHI", 0, 0, (offset << 3) | int(more), ident)


def ether(
    payload: bytes,
    etype: int = 0x0800,
    vlans: Sequence[int] = (),
    tpids: Sequence[int] | None = None,
) -> bytes:
    """Ethernet II with ``vlans`` tags outermost first (802.1ad outer, 802.1Q inner by default)."""
    if tpids is None:
        tpids = [0x88A8] * (len(vlans) - 1) + [0x8100] if vlans else []
    tags = b"".join(struct.pack("!HH", tp, 0x2000 | v) for tp, v in zip(tpids, vlans))
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02" + tags + struct.pack("!H", etype) + payload


def link(linktype: int, packet: bytes, vlans: Sequence[int] = ()) -> bytes:
    """An IP ``packet`` framed for ``linktype`` (VLAN tags only on Ethernet)."""
    v6 = bool(packet) and packet[0] >> 4 == 6
    if linktype == 1:
        return ether(packet, 0x86DD if v6 else 0x0800, vlans, [0x8100] * len(vlans))
    if linktype == 113:
        return sll(packet, 0x86DD if v6 else 0x0800)
    if linktype == 276:
        return sll2(packet, 0x86DD if v6 else 0x0800)
    if linktype in (101, 12, 14, 228, 229):
        return packet
    if linktype == 0:
        return null(packet, 30 if v6 else 2)
    if linktype == 108:
        return null(packet, 24 if v6 else 2, ">")
    if linktype == 239:
        return nflog(packet, 10 if v6 else 2)
    raise ValueError(f"no framing for link type {linktype}")


def nflog(packet: bytes, family: int = 2, order: str = "<") -> bytes:
    """An NFLOG record as the kernel writes one (``tcpdump -i nflog:5``): header, a packet
    header attribute, a prefix, the payload (``packet``) and a uid after it, each attribute
    padded to 4 bytes, lengths and types in ``order`` (the capturing host's)."""

    def attribute(kind: int, value: bytes) -> bytes:
        head = struct.pack(order + "HH", 4 + len(value), kind)
        return head + value + b"\0" * (-len(value) % 4)

    hwproto = 0x0800 if family == 2 else 0x86DD
    return (
        struct.pack("!BBH", family, 0, 5)
        + attribute(1, struct.pack("!HBB", hwproto, 3, 0))  # NFULA_PACKET_HDR
        + attribute(10, b"ssh-in\0")  # NFULA_PREFIX
        + attribute(9, packet)  # NFULA_PAYLOAD
        + attribute(11, struct.pack("!I", 0))  # NFULA_UID
    )


def sll(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, proto) + payload


def sll2(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 1, 772, 0, 6, b"\0" * 8) + payload


def null(payload: bytes, af: int = 2, order: str = "<") -> bytes:
    return struct.pack(order + "I", af) + payload


# --------------------------------------------------------------------------------------------
# Files


def pcap(
    records: Iterable[tuple[int, bytes] | tuple[int, bytes, int]],
    linktype: int = 1,
    nano: bool = False,
    order: str = "<",
    snaplen: int = 262144,
    modified: bool = False,
) -> bytes:
    """A pcap file; records are (ts_ns, data) or (ts_ns, data, orig_len).

    ``modified`` writes the old Linux tcpdump variant (magic a1b2cd34, 8 more header bytes).
    """
    magic = 0xA1B23C4D if nano else (0xA1B2CD34 if modified else 0xA1B2C3D4)
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        ts_ns, data = rec[0], rec[1]
        orig = rec[2] if len(rec) > 2 else len(data)  # type: ignore[misc]
        sec, frac = divmod(ts_ns, 1_000_000_000)
        if not nano:
            frac //= 1000
        extra = bytes(8) if modified else b""
        out.append(struct.pack(order + "IIII", sec, frac, len(data), orig) + extra + data)
    return b"".join(out)


def block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(order: str = "<", options: bytes = b"") -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options
    return block(0x0A0D0D0A, body, order)


def idb(
    linktype: int = 1,
    snaplen: int = 262144,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    order: str = "<",
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(9, bytes([tsresol]), order)
    if tsoffset is not None:
        opts += option(14, struct.pack(order + "q", tsoffset), order)
    if opts:
        opts += option(0, b"", order)
    return block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts, order)


def epb(if_id: int, ts: int, data: bytes, orig_len: int | None = None, order: str = "<") -> bytes:
    """An enhanced packet block; ``ts`` in the interface's units."""
    orig = len(data) if orig_len is None else orig_len
    body = struct.pack(order + "IIIII", if_id, ts >> 32, ts & 0xFFFFFFFF, len(data), orig) + data
    return block(6, body, order)


def spb(data: bytes, orig_len: int | None = None, order: str = "<") -> bytes:
    orig = len(data) if orig_len is None else orig_len
    return block(3, struct.pack(order + "I", orig) + data, order)


def pb(if_id: int, ts: int, data: bytes, order: str = "<") -> bytes:
    """The obsolete packet block (type 2)."""
    body = struct.pack(order + "HHIIII", if_id, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(2, body + data, order)


def pcap_records(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split a little-endian microsecond/nanosecond pcap into its header and raw records."""
    header = blob[:24]
    records = []
    pos = 24
    while pos < len(blob):
        incl = struct.unpack_from("<I", blob, pos + 8)[0]
        records.append(blob[pos : pos + 16 + incl])
        pos += 16 + incl
    return header, records


def rewrite_pcap(blob: bytes, linktype: int, rewrite) -> bytes:  # type: ignore[no-untyped-def]
    """Change the link type of a little-endian pcap and each record's data with ``rewrite``."""
    header, records = pcap_records(blob)
    out = [header[:20] + struct.pack("<I", linktype)]
    for rec in records:
        sec, frac, _incl, orig = struct.unpack_from("<IIII", rec)
        data = rewrite(rec[16:])
        orig += len(data) - (len(rec) - 16)
        out.append(struct.pack("<IIII", sec, frac, len(data), orig) + data)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Conversations

T0 = 1_700_000_000 * 10**9
MS = 10**6
C, V, W = "10.0.0.1", "10.0.0.2", "10.0.0.3"


class Packets:
    """Hand-made segments with their capture times; every one a distinct copy (no duplicates)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.now = T0

    def add(
        self,
        src: str,
        dst: str,
        sp: int,
        dp: int,
        seq: int,
        ack: int,
        flags: int,
        win: int,
        plen: int = 0,
        after: int = MS,
        tsval: int | None = None,
        ws: int | None = None,
    ) -> None:
        self.now += after
        ident = (len(self.frames) + 1) % 65536
        opts = b"" if tsval is None else ts_option(tsval)
        opts += b"" if ws is None else ws_option(ws)
        segment = tcp(sp, dp, seq, ack, flags, win, opts, bytes(plen), checksum=ident)
        self.frames.append((self.now, link(1, ip(src, dst, segment, ident))))

    def c(
        self,
        seq: int,
        ack: int,
        win: int,
        plen: int = 0,
        flags: int = 0x10,
        after: int = MS,
        port: int = 1000,
        tsval: int | None = None,
        ws: int | None = None,
    ) -> None:
        """A segment from the client C (port ``port``) to the server V (port 80)."""
        self.add(C, V, port, 80, seq, ack, flags, win, plen, after, tsval, ws)

    def v(
        self,
        seq: int,
        ack: int,
        win: int,
        flags: int = 0x10,
        after: int = MS,
        port: int = 1000,
        tsval: int | None = None,
        ws: int | None = None,
    ) -> None:
        """A segment from the server V to the client C."""
        self.add(V, C, 80, port, seq, ack, flags, win, 0, after, tsval, ws)

    def other(self, win: int, after: int = MS) -> None:
        """Another flow's ACK: moves the capture clock; a smaller window than before shrinks."""
        self.add(W, V, 2000, 80, 1, 1, 0x10, win, 0, after)

    def pcap(self, cut: int = 0) -> bytes:
        data = pcap(self.frames, nano=True)
        return data[: len(data) - cut]


# --------------------------------------------------------------------------------------------
# Real captures


def tools_missing(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """A fresh network namespace with loopback up, deleted afterwards."""
    name = f"trdec-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


#: Runs inside the namespace: TCP over IPv4 and IPv6 loopback in both directions with several
#: segments and window updates, plus a UDP datagram that the decoder must skip.
TRAFFIC = r"""
import socket, sys, threading
def serve(srv):
    conn, _ = srv.accept()
    total = 0
    while True:
        chunk = conn.recv(3000)
        if not chunk:
            break
        total += len(chunk)
        conn.sendall(chunk[:700])
    conn.close()
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen()
    t = threading.Thread(target=serve, args=(srv,))
    t.start()
    cli = socket.socket(family)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cli.connect(srv.getsockname()[:2])
    for i in range(6):
        cli.sendall(bytes([65 + i]) * (200 + 900 * i))
        cli.recv(10000)
    cli.shutdown(socket.SHUT_WR)
    while cli.recv(10000):
        pass
    cli.close()
    t.join()
    srv.close()
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.sendto(b"not tcp", (host, 9))
    udp.close()
"""


def capture(ns: str, specs: Sequence[tuple[Path, str, Sequence[str]]]) -> None:
    """Record one run of ``TRAFFIC`` inside namespace ``ns`` with one tcpdump per spec.

    Each spec is (output file, interface, extra tcpdump options); all run at once so every
    file holds the same conversation as seen through a different link type or precision.
    """
    procs = []
    try:
        for out, iface, extra in specs:
            cmd = ["ip", "netns", "exec", ns, "tcpdump", "-i", iface, "-U", "--immediate-mode"]
            cmd += [*extra, "-w", str(out)]
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            _wait_listening(proc)
        subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", TRAFFIC], check=True, timeout=60
        )
        for out, _, _ in specs:
            _wait_quiet(out)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait(timeout=30)


def _wait_listening(proc: subprocess.Popen[str]) -> None:
    """Block until tcpdump says "listening on ...": from then on the capture is armed."""
    assert proc.stderr is not None
    seen = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"tcpdump did not start: {''.join(seen)}")
        if "listening on" in line:
            return
        seen.append(line)


def _wait_quiet(path: Path, settle: float = 0.3, limit: float = 10.0) -> None:
    """Wait until tcpdump has stopped appending (the last packets are in the file)."""
    deadline = time.monotonic() + limit
    last = -1
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else -1
        if size == last:
            return
        last = size
        time.sleep(settle)


def to_big_endian(blob: bytes) -> bytes:
    """The same little-endian pcap as a big-endian writer would have stored it."""
    header, records = pcap_records(blob)
    out = [struct.pack(">IHHiIII", *struct.unpack("<IHHiIII", header))]
    for rec in records:
        out.append(struct.pack(">IIII", *struct.unpack_from("<IIII", rec)) + rec[16:])
    return b"".join(out)


def editcap(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["editcap", *args, str(src), str(dst)], check=True, capture_output=True)
    return dst


def tshark_fields(path: Path, fields: Sequence[str], *options: str) -> list[list[str]]:
    """One row per frame with the given fields (empty string when absent)."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t"]
    cmd += ["-o", "tcp.relative_sequence_numbers:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE"]
    cmd += list(options)
    for f in fields:
        cmd += ["-e", f]
    env = dict(os.environ, HOME=os.environ.get("HOME", "/root"))
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return [line.split("\t") for line in res.stdout.splitlines()]
