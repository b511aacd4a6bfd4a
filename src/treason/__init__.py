"""treason: find, explain and show TCP peers that shrink their receive window.

Library API (the CLI is a thin layer over it)::

    import treason
    for event in treason.scan("capture.pcap"):
        print(event.frame, event.src, event.cls.label, event.shrink_bytes)

The names below are imported on first use, not with the package: ``treason`` the command
imports this package before its error boundary is in place, so a SIGINT in its first
milliseconds must find nothing here to interrupt but a few assignments.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from treason.errors import CaptureError, TreasonError, TruncatedCapture
    from treason.events import Event, Severity
    from treason.scanner import ScanStats, scan

__version__ = "0.1.0"

_HOME = {
    "CaptureError": "treason.errors",
    "TreasonError": "treason.errors",
    "TruncatedCapture": "treason.errors",
    "Event": "treason.events",
    "Severity": "treason.events",
    "ScanStats": "treason.scanner",
    "scan": "treason.scanner",
}

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


def __getattr__(name: str) -> Any:
    """The public names, from their modules (PEP 562); submodules resolve as usual."""
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'treason' has no attribute {name!r}")
