"""TCP sequence-number arithmetic (RFC 1982 serial numbers, as the Linux kernel does it).

Sequence and acknowledgement numbers wrap at 2**32, so "is a before b" can only be answered
within half the space: ``before(a, b)`` is true when ``(int32)(a - b) < 0``, exactly the
kernel's ``before()`` macro. Every comparison of sequence numbers in treason goes through here.
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def add(a: int, n: int) -> int:
    """``a + n`` in sequence space."""
    return (a + n) & MASK


def diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in sequence space, in ``[-2**31, 2**31)``."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def before(a: int, b: int) -> bool:
    """True when ``a`` comes strictly before ``b``."""
    return diff(a, b) < 0


def after(a: int, b: int) -> bool:
    """True when ``a`` comes strictly after ``b``."""
    return diff(a, b) > 0
