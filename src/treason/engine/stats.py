"""What an engine counts while it scans: ``ScanStats`` for the capture summary, with the
model's own anomaly counters (``ModelStats``) inside it.

Every engine adds its counts to the ``ScanStats`` it was given, and nothing else writes them:
the reference engine as each frame passes, the compiled engine from the running totals its
scanner keeps (``Tally``). The field names are part of the compiled scanner's contract: it
exports them and ``treason.engine.compiled`` checks them, in order, at import.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ModelStats:
    """Anomalies the model met; none of them is fatal and none makes an event."""

    duplicates: int = 0  # exact copies (span ports) dropped
    old_acks: int = 0  # ACK before SND.UNA: reordered or retransmitted, never a shrink
    stale_updates: int = 0  # failed the SND.WL1/SND.WL2 test: older than the last update
    paws_rejects: int = 0  # TSval older than the last accepted update's: a reordered segment
    unseen_acks: int = 0  # ACK beyond SND.NXT: the capture missed the data it acknowledges
    stray_acks: int = 0  # peer's segments while the client is in SYN-SENT (RFC 9293: dropped)
    ignored_syns: int = 0  # SYNs inside a live connection (scales untouched)
    resets: int = 0  # RST segments (their windows are ignored)
    window_overruns: int = 0  # new data beyond the edge under every plausible shift
    impossible_acks: int = 0  # ACK past every edge ever offered and all data seen: corrupt


#: ``ModelStats`` field names in declaration order (the compiled scanner's counter order).
MODEL_COUNTERS = tuple(f.name for f in fields(ModelStats))

#: The flow table's counters, in ``ScanStats``.
FLOW_COUNTERS = ("flows", "handshakes", "evicted_idle", "evicted_cap")

#: ``ScanStats``' plain integer counters, as the compiled scanner's ``counters()`` names them.
PLAIN_COUNTERS = ("frames", "segments", "over_snaplen", *FLOW_COUNTERS)


@dataclass
class ScanStats:
    """What a scan saw, for the capture summary; kept current as events are handed out."""

    frames: int = 0
    segments: int = 0  # decoded TCP segments
    over_snaplen: int = 0  # records longer than their snap length, read whole (not damage)
    skipped: Counter[str] = field(default_factory=Counter)  # frames not analysed, by reason
    flows: int = 0
    handshakes: int = 0  # flows whose SYN and SYN-ACK were both captured
    evicted_idle: int = 0
    evicted_cap: int = 0
    events: Counter[str] = field(default_factory=Counter)  # by class label, retractions too
    model: ModelStats = field(default_factory=ModelStats)
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: ScanStats) -> None:
        for name in PLAIN_COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped.update(other.skipped)
        self.events.update(other.events)
        for name, value in asdict(other.model).items():
            setattr(self.model, name, getattr(self.model, name) + value)
        self.warnings.extend(other.warnings)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped"] = dict(self.skipped)
        d["events"] = dict(self.events)
        return d


class Tally:
    """Adds an engine's running totals to a ``ScanStats``: only what grew since the last call.

    The compiled scanner keeps totals since it started; the ``ScanStats`` it reports into may
    already hold counts (several captures summed), so only the growth is added.
    """

    def __init__(self, stats: ScanStats, skip_reasons: Sequence[str]) -> None:
        self.stats = stats
        self._skip_reasons = tuple(skip_reasons)
        self._plain: dict[str, int] = {}
        self._skipped = [0] * len(self._skip_reasons)
        self._model = [0] * len(MODEL_COUNTERS)

    def update(self, plain: dict[str, int], skipped: Sequence[int], model: Sequence[int]) -> None:
        """``plain``: totals of ``ScanStats`` integer fields by name; ``skipped`` and ``model``
        totals in the order of the skip reasons and ``MODEL_COUNTERS``."""
        stats = self.stats
        for name, total in plain.items():
            grown = total - self._plain.get(name, 0)
            if grown:
                setattr(stats, name, getattr(stats, name) + grown)
                self._plain[name] = total
        for i, total in enumerate(skipped):
            if total != self._skipped[i]:
                stats.skipped[self._skip_reasons[i]] += total - self._skipped[i]
                self._skipped[i] = total
        for i, total in enumerate(model):
            if total != self._model[i]:
                name = MODEL_COUNTERS[i]
                setattr(stats.model, name, getattr(stats.model, name) + total - self._model[i])
                self._model[i] = total
