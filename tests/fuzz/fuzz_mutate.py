"""Byte-level mutations of seed files, shared by the bounded pass (driven by hypothesis, which
shrinks a failure to its fewest operations) and the long pass by hand (driven by ``random``).

A mutation is a list of operations ``(op, a, b)`` of plain integers, so either driver can
produce it and a failing input is reproducible from the seed name and the list alone.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Values that sit on the boundaries readers and decoders check: lengths, magics, caps.
INTERESTING_32 = (
    0, 1, 12, 13, 16, 20, 28, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 262144, 262145,
    16 * 1024 * 1024, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x0A0D0D0A, 0x1A2B3C4D, 0xA1B2C3D4,
    0xA1B23C4D,
)  # fmt: skip
INTERESTING_8 = (0, 1, 2, 3, 4, 5, 6, 14, 15, 0x1F, 0x20, 0x3F, 0x40, 0x7F, 0x80, 0xFF)

N_OPS = 10
Op = tuple[int, int, int]


def mutate(data: bytes, ops: Sequence[Op], other: bytes = b"") -> bytes:
    """Apply ``ops`` in order; positions wrap around the current length, so any op is valid."""
    buf = bytearray(data)
    for op, a, b in ops:
        n = len(buf)
        pos = a % (n + 1)
        kind = op % N_OPS
        if kind == 0 and n:
            buf[a % n] ^= 1 << (b % 8)
        elif kind == 1 and n:
            buf[a % n] = INTERESTING_8[b % len(INTERESTING_8)]
        elif kind in (2, 3):
            width = 2 if kind == 2 else 4
            value = INTERESTING_32[b % len(INTERESTING_32)] & ((1 << (8 * width)) - 1)
            order = "little" if b & 0x100 else "big"
            buf[pos : pos + width] = value.to_bytes(width, order)
        elif kind == 4:
            buf[pos:pos] = bytes((b >> (i % 4 * 8)) & 0xFF for i in range(1 + b % 16))
        elif kind == 5:
            del buf[pos : pos + 1 + b % 64]
        elif kind == 6:
            del buf[pos:]
        elif kind == 7 and n:
            start = b % n
            chunk = buf[start : start + 1 + (a >> 8) % 96]
            buf[pos:pos] = chunk
        elif kind == 8 and other:
            buf[pos:] = other[b % len(other) :]
        elif kind == 9:
            buf += bytes((b >> (i % 4 * 8)) & 0xFF for i in range(1 + a % 32))
    return bytes(buf)
