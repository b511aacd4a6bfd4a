"""Stop signals for the commands that watch a running system (``live``, ``trace``).

Their loops wait in ``select()`` on a socket or the trace buffers; a Python signal handler
alone would run only when that wait ends. ``signal.set_wakeup_fd`` makes the kernel write a
byte to a pipe on every signal, so the loop, watching the pipe too, wakes at once, stops, and
still reports what it saw.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from types import FrameType, TracebackType


class StopSignals:
    """While active: ``signals`` are recorded in ``received`` instead of killing the process,
    and each wakes a reader of ``read_fd``. Everything is restored on exit."""

    def __init__(self, signals: Sequence[signal.Signals]) -> None:
        self.signals = tuple(signals)
        self.received: list[int] = []
        self.read_fd = -1
        self._write_fd = -1
        self._previous: dict[signal.Signals, object] = {}
        self._old_wakeup = -1

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)

    def __bool__(self) -> bool:
        """Whether a stop was asked for."""
        return bool(self.received)

    def __enter__(self) -> StopSignals:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous = {s: signal.signal(s, self._on_signal) for s in self.signals}
        self._old_wakeup = signal.set_wakeup_fd(self._write_fd)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        os.close(self.read_fd)
        os.close(self._write_fd)
