"""Capture filters on capture files: ``--filter`` for ``scan`` and ``plot``.

A user narrows a capture to one host or port with the tcpdump expression they already know,
as ``live --filter`` narrows an interface. libpcap (the copy ``pcapy-ng`` bundles), the one
compiler every such expression was written for, compiles it into classic BPF for each link
type the decoder reads; the program then runs on every frame before it is decoded. Both engines run
the same programs: the reference engine with ``run`` below, a plain reading of libpcap's
``bpf_filter``, the compiled scanner with its copy in ``_fastscan.c`` ("capture filter"). A
frame the program rejects is counted as skipped (``FILTERED``) and not analysed; frame
numbers stay the file's, so they still match Wireshark's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from typing import Any

from treason.decode import LINKTYPE_NFLOG, LINKTYPES, nflog_payload
from treason.errors import TreasonError
from treason.packets import Frame

#: The skip reason of frames the filter rejects, in ``ScanStats.skipped``.
FILTERED = "filtered out"
SNAPLEN = 262144
#: PCAP_NETMASK_UNKNOWN: files have no interface netmask (only "ip broadcast" needs one).
_NETMASK = 0xFFFFFFFF

Instruction = tuple[int, int, int, int]

#: libpcap's DLT value for each link type the decoder reads (LINKTYPE_RAW and the BSD raw-IP
#: values are DLT_RAW; the others are the same number). NFLOG records are filtered as their
#: logged packet (libpcap cannot find it among the record's attributes): raw IP's program.
_DLT = {lt: 12 if lt in (12, 14, 101, LINKTYPE_NFLOG) else lt for lt in LINKTYPES}


class CaptureFilter:
    """One tcpdump expression, compiled for every link type the decoder reads."""

    def __init__(self, expression: str) -> None:
        pcap = _libpcap()
        self.expression = expression
        self.programs: dict[int, list[Instruction]] = {}
        errors = []
        for lt, dlt in _DLT.items():
            try:
                self.programs[lt] = _compile(pcap, dlt, expression)
            except ValueError as exc:  # e.g. "ether host" on raw IP: no frame of it matches
                errors.append(str(exc))
        if not self.programs:
            raise TreasonError("--filter", f"cannot compile {expression!r}: {errors[0]}")

    def keeps(self, frame: Frame) -> bool:
        """The reference engine's test: whether the program of the frame's link type keeps it
        (no program for that link type: it does not)."""
        program = self.programs.get(frame.linktype)
        if program is None:
            return False
        if frame.linktype == LINKTYPE_NFLOG:
            off = nflog_payload(frame.data)
            if isinstance(off, str):
                return False
            return run(program, frame.data[off:], max(0, frame.orig_len - off)) != 0
        return run(program, frame.data, frame.orig_len) != 0

    def attach(self, scanner: Any) -> None:
        """Give the compiled scanner the same programs."""
        scanner.filter(self.programs)


class _Insn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _Program(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn)))


@functools.cache
def _libpcap() -> ctypes.CDLL:
    """libpcap itself: the copy pcapy-ng's wheel bundles (installed with treason), else the
    system's. Called directly rather than through ``pcapy.compile``, which reads the error
    text of a failed compilation after freeing it."""
    candidates: list[str] = []
    try:
        import pcapy  # type: ignore[import-not-found,unused-ignore]

        site = os.path.dirname(pcapy.__file__)
        candidates += sorted(glob.glob(os.path.join(site, "pcapy_ng.libs", "libpcap*.so*")))
    except ImportError:
        pass
    system = ctypes.util.find_library("pcap")
    if system:
        candidates.append(system)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = (
            ctypes.c_void_p,
            ctypes.POINTER(_Program),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint32,
        )
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
        lib.pcap_freecode.argtypes = (ctypes.POINTER(_Program),)
        lib.pcap_close.argtypes = (ctypes.c_void_p,)
        return lib
    raise TreasonError(
        "--filter", "capture filters need libpcap (pip install pcapy-ng, or the libpcap package)"
    )


def _compile(pcap: ctypes.CDLL, dlt: int, expression: str) -> list[Instruction]:
    """libpcap's optimised program for ``expression`` on frames of ``dlt``."""
    handle = pcap.pcap_open_dead(dlt, SNAPLEN)
    if not handle:
        raise ValueError(f"libpcap has no link type {dlt}")
    program = _Program()
    try:
        if pcap.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, _NETMASK):
            raise ValueError((pcap.pcap_geterr(handle) or b"").decode(errors="replace"))
        insns = [(i.code, i.jt, i.jf, i.k) for i in program.bf_insns[: program.bf_len]]
        pcap.pcap_freecode(ctypes.byref(program))
        return insns
    finally:
        pcap.pcap_close(handle)


def _load(packet: bytes, offset: int, size: int) -> int | None:
    if offset + size > len(packet):
        return None
    return int.from_bytes(packet[offset : offset + size], "big")


def run(program: list[Instruction], packet: bytes, wirelen: int) -> int:
    """Classic BPF as libpcap's ``bpf_filter`` runs it: the program's return value (0 rejects).

    Loads outside the packet and division by zero reject; ``len`` is the length on the wire.
    """
    a = x = 0
    mem = [0] * 16
    pc = 0
    while pc < len(program):
        code, jt, jf, k = program[pc]
        cls = code & 0x07
        if cls in (0x00, 0x01):  # LD, LDX
            size = {0x10: 1, 0x08: 2}.get(code & 0x18, 4)
            mode = code & 0xE0
            v: int | None
            if mode == 0x00:
                v = k
            elif mode == 0x20:
                v = _load(packet, k, size)
            elif mode == 0x40:
                v = _load(packet, x + k, size)
            elif mode == 0x60:
                v = mem[k & 15]
            elif mode == 0x80:
                v = wirelen
            elif mode == 0xA0:  # 4 * (P[k] & 0xf)
                b = _load(packet, k, 1)
                v = None if b is None else (b & 0xF) << 2
            else:
                return 0
            if v is None:
                return 0
            if cls == 0x00:
                a = v
            else:
                x = v
        elif cls == 0x02:
            mem[k & 15] = a
        elif cls == 0x03:
            mem[k & 15] = x
        elif cls == 0x04:  # ALU
            s = x if code & 0x08 else k
            op = code & 0xF0
            if op in (0x30, 0x90) and s == 0:
                return 0
            if op == 0x00:
                a = a + s
            elif op == 0x10:
                a = a - s
            elif op == 0x20:
                a = a * s
            elif op == 0x30:
                a = a // s
            elif op == 0x40:
                a = a | s
            elif op == 0x50:
                a = a & s
            elif op == 0x60:
                a = a << s if s < 32 else 0
            elif op == 0x70:
                a = a >> s if s < 32 else 0
            elif op == 0x80:
                a = -a
            elif op == 0x90:
                a = a % s
            elif op == 0xA0:
                a = a ^ s
            else:
                return 0
            a &= 0xFFFFFFFF
        elif cls == 0x05:  # JMP
            s = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                pc += 1 + k
                continue
            if op == 0x10:
                taken = a == s
            elif op == 0x20:
                taken = a > s
            elif op == 0x30:
                taken = a >= s
            elif op == 0x40:
                taken = a & s != 0
            else:
                return 0
            pc += 1 + (jt if taken else jf)
            continue
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        else:  # MISC: TAX, TXA
            if code & 0x80:
                a = x
            else:
                x = a
        pc += 1
    return 0
