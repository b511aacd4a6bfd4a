"""The bounded option-value fuzzing pass run with every test suite (see ``fuzz_options.py``).

``TREASON_FUZZ_EXAMPLES`` (default 60) sets the number of command lines, as for the input
targets; ``python tests/fuzz/fuzz_options.py --minutes 10`` is the long pass.
"""

from __future__ import annotations

import json
import os
import random

import fuzz_options as fo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("TREASON_FUZZ_EXAMPLES", "60"))
OPTIONS = fo.typed_options()


def test_the_commands_run_by_the_fuzzer_exist() -> None:
    """A renamed command would silently drop from the runs to parsing only."""
    assert set(fo.NEEDS) <= set(OPTIONS)


def test_the_numeric_options_are_found() -> None:
    """The walk over the parser finds the options the issue named; an empty walk fuzzes nothing."""
    found = {(c, s) for c, actions in OPTIONS.items() for a in actions for s in a.option_strings}
    for option in [
        ("scan", "--idle-timeout"),
        ("scan", "--max-flows"),
        ("scan", "--jobs"),
        ("plot", "--max-graphs"),
        ("live", "--snaplen"),
        ("live", "--ring"),
        ("live", "--status-interval"),
        ("live", "--rotate"),
        ("live", "--metrics"),
        ("simulate", "--window"),
    ]:
        assert option in found


@pytest.mark.parametrize("value", fo.SPECIAL, ids=repr)
def test_every_special_value_in_every_option(value: str) -> None:
    """Each value that broke a parser before, in each typed option of each command, alone."""
    for command, actions in OPTIONS.items():
        needs = fo.NEEDS.get(command, [])
        for action in actions:
            if action.option_strings:
                fo.check([command, *needs, f"{action.option_strings[-1]}={value}"])
            else:
                fo.check([command, *needs, "--", value])


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.integers(0, 2**64 - 1))
def test_random_command_lines(seed: int) -> None:
    fo.check(fo.random_argv(random.Random(seed), OPTIONS))


def test_regressions() -> None:
    """Every command line a long pass failed on (none once all are fixed)."""
    for path in fo.regressions():
        fo.check(json.loads(path.read_text()))
