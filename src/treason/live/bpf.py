"""Capture filters: tcpdump expressions compiled by libpcap, attached to a packet socket.

The filter runs in the kernel, so packets the user did not ask for never cost a copy or a
Python call; its return value is also the snap length, so the kernel copies only the headers
the model needs. libpcap is the one compiler every user's expressions were written for, so
treason uses it (through the ``pcapy-ng`` binding) rather than a filter language of its own.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from treason.decode import LINKTYPE_ETHERNET as LINKTYPE_ETHERNET
from treason.decode import LINKTYPE_RAW as LINKTYPE_RAW
from treason.errors import TreasonError

SO_ATTACH_FILTER = 26
#: Linux BPF extension: ``ld [SKF_AD_OFF + SKF_AD_PKTTYPE]`` loads the packet type.
SKF_AD_OFF = 0xFFFFF000
SKF_AD_PKTTYPE = 4
PACKET_OUTGOING = 4

#: libpcap's DLT for the LINKTYPE of the frames a packet socket delivers.
_DLT = {LINKTYPE_ETHERNET: 1, LINKTYPE_RAW: 12}

#: Every live capture is of TCP; the user's expression narrows it.
BASE_FILTER = "tcp"

Instruction = tuple[int, int, int, int]


def expression(user: str | None) -> str:
    """The expression actually compiled: TCP, and the user's filter when one is given."""
    if not user or not user.strip():
        return BASE_FILTER
    return f"{BASE_FILTER} and ({user})"


def compile_filter(user: str | None, linktype: int, snaplen: int) -> list[Instruction]:
    """Classic BPF for ``expression(user)`` on frames of ``linktype``, returning ``snaplen``."""
    try:
        import pcapy
    except ImportError:
        raise TreasonError(
            "--filter",
            "compiling capture filters needs the pcapy-ng package (pip install pcapy-ng)",
        ) from None
    text = expression(user)
    try:
        program = pcapy.compile(_DLT[linktype], snaplen, text, 1, 0)
    except pcapy.PcapError as exc:
        raise TreasonError("--filter", f"cannot compile {text!r}: {exc}") from None
    return [tuple(ins) for ins in program.get_bpf()]


def drop_outgoing(program: list[Instruction]) -> list[Instruction]:
    """``program`` preceded by a test that drops packets the host sends.

    On loopback the kernel delivers every packet twice, leaving and arriving; dropping the
    leaving copy in the filter keeps the kernel's counters (and the socket buffer) to one copy.
    """
    load_pkttype = (0x20, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE)  # ld [pkttype]
    is_outgoing = (0x15, 0, 1, PACKET_OUTGOING)  # jeq #outgoing, drop, program
    drop = (0x06, 0, 0, 0)  # ret #0
    return [load_pkttype, is_outgoing, drop, *program]


def attach(sock: socket.socket, program: list[Instruction]) -> None:
    """Install ``program`` on ``sock`` (``struct sock_fprog``; the kernel copies it)."""
    raw = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
