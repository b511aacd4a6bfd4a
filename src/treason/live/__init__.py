"""Live capture: the ``scan`` pipeline fed from a Linux interface as packets arrive.

``capture.PacketSocket`` reads an interface with an AF_PACKET socket and a kernel filter;
``session.LiveSession`` runs the reference model over its frames; ``report`` prints events,
status and summary; ``pcapout`` saves the packets of flows with events; ``metrics`` serves the
counters to Prometheus. See ``docs/live.md``.
"""

from __future__ import annotations

from treason.live.session import LiveSession, capture_loop
from treason.live.stats import LiveStats

__all__ = ["LiveSession", "LiveStats", "capture_loop"]
