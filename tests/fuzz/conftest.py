"""The fuzzing pass: a ``fuzz`` marker and the size of the pass (``TREASON_FUZZ_EXAMPLES``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fuzz: fuzzing pass over the seed corpus (TREASON_FUZZ_EXAMPLES sets its size)"
    )
