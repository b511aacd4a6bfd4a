"""Errors a user can cause with their input; the CLI prints them as one line and exits 2."""

from __future__ import annotations


class TreasonError(Exception):
    """Bad input or environment, described in one line for the user (no traceback)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class CaptureError(TreasonError):
    """A capture file is damaged or not a capture; ``offset`` is the byte where it went wrong.

    Readers raise it only after yielding every valid frame before the damage, so callers still
    report everything that was readable.
    """

    def __init__(self, source: str, message: str, offset: int | None = None) -> None:
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(source, message + where)
        self.offset = offset


class TruncatedCapture(CaptureError):
    """The capture ends inside a record: the common result of a killed tcpdump.

    Not fatal: the scan reports everything before it, warns with the offset and exits as if
    the file were complete.
    """
