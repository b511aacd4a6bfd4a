"""Showing untrusted text (log lines, file names) on a terminal without letting it drive it."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text: str) -> str:
    """Control characters (escape sequences, NUL, C1) shown as ``\\xNN``, never emitted raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
