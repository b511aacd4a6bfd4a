"""treason: find, explain and show TCP peers that shrink their receive window.

Library API (the CLI is a thin layer over it)::

    import treason
    for event in treason.scan("capture.pcap"):
        print(event.frame, event.src, event.cls.label, event.shrink_bytes)

    # rotated pieces read as one capture (docs/capture-sets.md)
    for event in treason.scan_sets(["cap_2.pcap", "cap_10.pcap"]):
        print(event.file, event.frame, event.capture_set)
"""

from __future__ import annotations

from treason.errors import CaptureError, TreasonError, TruncatedCapture
from treason.events import Event, Severity
from treason.scanner import ScanStats, scan
from treason.sets import plan_sets, scan_set, scan_sets

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "Event",
    "ScanStats",
    "Severity",
    "TreasonError",
    "TruncatedCapture",
    "__version__",
    "plan_sets",
    "scan",
    "scan_set",
    "scan_sets",
]
