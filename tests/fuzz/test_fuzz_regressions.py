"""Every input a fuzzing pass ever failed on, kept and replayed through its target.

Files in ``regressions/`` are named ``<target>-<what>``: ``capture-``, ``packet-``, ``logs-``
or ``grammar-`` (see ``fuzz_targets.TARGETS``). ``run.py`` saves new ones there; a fix is done
when its file passes here.
"""

from __future__ import annotations

from pathlib import Path

import fuzz_targets as targets
import pytest

REGRESSIONS = sorted(p for p in (Path(__file__).parent / "regressions").iterdir()
                     if not p.name.startswith("."))  # fmt: skip


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_regression(path: Path) -> None:
    target = path.name.split("-", 1)[0]
    assert target in targets.TARGETS, f"{path.name}: name must start with a target"
    targets.TARGETS[target](path.read_bytes())
