"""Packets from a Linux interface: an AF_PACKET socket with the filter applied in the kernel.

One plain packet socket, read with ``recvmsg``: the kernel stamps each packet
(``SO_TIMESTAMPNS``), tells its length on the wire and any VLAN tag the NIC stripped
(``PACKET_AUXDATA``), and counts what it had to drop because treason fell behind
(``PACKET_STATISTICS``). Frames come out as the same ``Frame`` records the file readers make,
numbered from 1 in capture order, so everything after this module is the ``scan`` pipeline;
or, for the compiled scanner, as pcap records received straight into one reusable buffer,
without a Python object per packet.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from treason.errors import TreasonError
from treason.live import bpf
from treason.packets import Frame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100

#: ARPHRD_* values whose frames carry an Ethernet header (loopback does too).
_ETHERNET_HATYPES = frozenset((1, 772))

_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_TS = struct.Struct("qq")  # struct timespec
_STATS = struct.Struct("II")  # struct tpacket_stats
_ANC_SIZE = socket.CMSG_SPACE(_AUX.size) + socket.CMSG_SPACE(_TS.size)

DEFAULT_SNAPLEN = 256
#: Socket receive buffer asked for: bursts wait here while Python catches up.
DEFAULT_BUFFER = 32 << 20


@dataclass
class KernelCounters:
    """What the kernel reports for the socket since it was opened (never reset)."""

    received: int = 0  # packets that passed the filter (captured plus dropped)
    drops: int = 0  # packets that passed the filter but found the socket buffer full


def interface_index(name: str) -> int:
    """The interface's index; a one-line error when there is no such interface."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise TreasonError(name, "no such network interface (see `ip link`)") from None


def interface_linktype(name: str) -> int:
    """LINKTYPE of the frames this interface delivers: Ethernet, else raw IP (tun, wg, ppp)."""
    try:
        with open(f"/sys/class/net/{name}/type", encoding="ascii") as fh:
            hatype = int(fh.read().strip())
    except (OSError, ValueError):
        hatype = 1
    return bpf.LINKTYPE_ETHERNET if hatype in _ETHERNET_HATYPES else bpf.LINKTYPE_RAW


class PacketSocket:
    """A packet socket bound to one interface with the compiled filter attached.

    The socket is opened with protocol 0 (it receives nothing), the filter attached, and only
    then bound to the interface for every protocol: no unfiltered packet is ever queued.
    On loopback every packet is delivered twice (leaving and arriving); the filter drops the
    leaving copy, as libpcap does, so each segment is seen once.
    """

    def __init__(
        self,
        interface: str,
        user_filter: str | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        buffer_bytes: int = DEFAULT_BUFFER,
    ) -> None:
        self.interface = interface
        self.ifindex = interface_index(interface)
        self.linktype = interface_linktype(interface)
        self.snaplen = snaplen
        self.filter = bpf.expression(user_filter)
        kind = socket.SOCK_RAW if self.linktype == bpf.LINKTYPE_ETHERNET else socket.SOCK_DGRAM
        try:
            sock = socket.socket(socket.AF_PACKET, kind, 0)
        except PermissionError:
            raise TreasonError(
                f"live capture on {interface}",
                "needs CAP_NET_RAW (run as root or grant the capability)",
            ) from None
        self.sock = sock
        try:
            program = bpf.compile_filter(user_filter, self.linktype, snaplen)
        except BaseException:
            sock.close()
            raise
        if _is_loopback(interface):
            program = bpf.drop_outgoing(program)
        self.frames = 0
        self.counters = KernelCounters()
        self._records = bytearray()
        self._slot = 16 + snaplen + 4  # record header, packet, room to put back a VLAN tag
        try:
            bpf.attach(sock, program)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            _grow_buffer(sock, buffer_bytes)
            sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ENODEV:
                raise TreasonError(interface, "no such network interface") from None
            raise TreasonError(f"live capture on {interface}", exc.strerror or str(exc)) from None
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 512) -> list[Frame]:
        """The packets waiting in the socket, up to ``limit``, without blocking."""
        out: list[Frame] = []
        recvmsg = self.sock.recvmsg
        bufsize = self.snaplen
        while len(out) < limit:
            try:
                data, anc, _flags, _addr = recvmsg(bufsize, _ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            ts_ns = 0
            orig_len = len(data)
            for level, kind, payload in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(payload) >= _AUX.size:
                    status, wire_len, _snap, _mac, _net, tci, tpid = _AUX.unpack_from(payload)
                    orig_len = wire_len
                    if status & TP_STATUS_VLAN_VALID and self.linktype == bpf.LINKTYPE_ETHERNET:
                        data = _insert_tag(data, tci, tpid, status)
                        orig_len += 4
                elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TS.unpack_from(payload)
                    ts_ns = sec * 1_000_000_000 + nsec
            self.frames += 1
            out.append(Frame(self.frames, ts_ns, self.linktype, data, orig_len))
        return out

    def read_records(self, limit: int = 512) -> tuple[memoryview, int]:
        """The packets waiting, up to ``limit``, as pcap records (nanoseconds) back to back.

        For the compiled scanner: the same packets, numbers, times, lengths and VLAN tags as
        ``read``, received by the scanner's module straight into one reusable buffer, with no
        Python object or call per packet. The view is valid until the next call.
        """
        from treason import _fastscan

        if len(self._records) < limit * self._slot:
            self._records = bytearray(limit * self._slot)
        used, count = _fastscan.recv_records(
            self.sock.fileno(),
            self._records,
            limit,
            self.snaplen,
            self.linktype == bpf.LINKTYPE_ETHERNET,
        )
        self.frames += count
        return memoryview(self._records)[:used], count

    def kernel_counters(self) -> KernelCounters:
        """Cumulative kernel counters (``PACKET_STATISTICS`` resets on every read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        packets, drops = _STATS.unpack(raw)
        self.counters.received += packets
        self.counters.drops += drops
        return self.counters

    def close(self) -> None:
        self.sock.close()


def _insert_tag(data: bytes, tci: int, tpid: int, status: int) -> bytes:
    """Put back the 802.1Q tag the NIC removed, as libpcap does: it is part of the flow key."""
    if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
        tpid = ETH_P_8021Q
    return data[:12] + struct.pack("!HH", tpid, tci) + data[12:]


def _grow_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a big receive buffer; root may exceed ``net.core.rmem_max`` (SO_RCVBUFFORCE)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _is_loopback(interface: str) -> bool:
    try:
        with open(f"/sys/class/net/{interface}/type", encoding="ascii") as fh:
            return fh.read().strip() == "772"
    except OSError:
        return interface == "lo"
