"""Counters a reader fills while it streams, for the capture summary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReaderStats:
    """What a reader saw, updated as frames are yielded (valid even after an error).

    ``bytes`` is the offset in the (decompressed) stream just after the last good record.
    """

    format: str = ""
    compressed: bool = False
    records: int = 0
    bytes: int = 0
    sections: int = 0
    interfaces: int = 0
    skipped_blocks: int = 0
    linktypes: set[int] = field(default_factory=set)
