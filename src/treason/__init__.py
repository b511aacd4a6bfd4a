"""treason: find, explain and show TCP peers that shrink their receive window.

Library API (the CLI is a thin layer over it)::

    import treason
    for event in treason.scan("capture.pcap"):
        print(event.frame, event.src, event.cls.label, event.shrink_bytes)
"""

from __future__ import annotations

from treason.errors import CaptureError, TreasonError, TruncatedCapture
from treason.events import Event, Severity
from treason.scanner import ScanStats, scan

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "Event",
    "ScanStats",
    "Severity",
    "TreasonError",
    "TruncatedCapture",
    "__version__",
    "scan",
]
