"""Types of the compiled tracer (src/treason/_ktrace.c)."""

from collections.abc import Callable
from typing import Any

class Tracer:
    def __init__(
        self,
        page: tuple[int, int, int, int],
        probe: tuple[int, int, int, int, int, int, int, int, int, int, int],
        retransmit: tuple[int, int],
        destroy: tuple[int, int],
        loss: tuple[int, int, int],
        max_sockets: int,
        accept: Callable[[bytes, bytes], bool] | None,
    ) -> None: ...
    def add_page(self, page: bytes) -> bool: ...
    def run(self, cutoff: int, final: bool) -> list[Any]: ...
    def flush(self) -> list[Any]: ...
    def expire(self, limit: int) -> list[Any]: ...
    def counters(self) -> dict[str, int]: ...
