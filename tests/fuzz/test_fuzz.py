"""The bounded fuzzing pass run with every test suite: mutated seeds through every target.

``TREASON_FUZZ_EXAMPLES`` (default 60 per target) sets the number of inputs; the default keeps
the pass to seconds. A longer pass: ``TREASON_FUZZ_EXAMPLES=20000 pytest tests/fuzz`` (hypothesis
shrinks any failure to its fewest mutations) or ``python tests/fuzz/run.py --minutes 30``
(plain random mutation, faster, saves what it finds under ``regressions/``). See
docs/robustness.md.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import fuzz_targets as targets
import pytest
from fuzz_mutate import N_OPS, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import tunnels

CORPUS = Path(__file__).parent / "corpus"
CAPTURES = sorted((CORPUS / "captures").iterdir())
LOGS = sorted((CORPUS / "logs").iterdir())
EXAMPLES = int(os.environ.get("TREASON_FUZZ_EXAMPLES", "60"))

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OPS = st.lists(
    st.tuples(st.integers(0, N_OPS - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    max_size=8,
)


def mutated(seeds: list[Path]) -> st.SearchStrategy[bytes]:
    """A seed file, changed by up to eight operations, sometimes spliced with another seed."""
    return st.builds(
        lambda seed, other, ops: mutate(seed.read_bytes(), ops, other.read_bytes()),
        st.sampled_from(seeds),
        st.sampled_from(seeds),
        OPS,
    )


def test_corpus_is_there() -> None:
    """A missing corpus would make every pass below vacuous."""
    assert len(CAPTURES) >= 20 and len(LOGS) >= 8


@pytest.mark.parametrize("seed", CAPTURES, ids=lambda p: p.name)
def test_every_capture_seed(seed: Path) -> None:
    targets.capture(seed.read_bytes())


@pytest.mark.parametrize("seed", LOGS, ids=lambda p: p.name)
def test_every_log_seed(seed: Path) -> None:
    data = seed.read_bytes()
    targets.logs(data)
    for line in data.decode("utf-8", "backslashreplace").splitlines():
        targets.grammar(line)


@pytest.mark.fuzz
@SETTINGS
@given(data=mutated(CAPTURES))
def test_fuzz_captures(data: bytes) -> None:
    targets.capture(data)


@pytest.mark.fuzz
@SETTINGS
@given(linktype=st.sampled_from(targets.LINK_CHOICES), data=mutated(CAPTURES))
def test_fuzz_packets(linktype: int, data: bytes) -> None:
    """A frame cut out of a mutated seed (past the pcap headers) under any link type."""
    targets.packet(linktype, data[40:200])


@pytest.mark.fuzz
@SETTINGS
@given(data=mutated(LOGS))
def test_fuzz_logs(data: bytes) -> None:
    targets.logs(data)


@pytest.mark.fuzz
@SETTINGS
@given(
    line=st.sampled_from(
        [ln for p in LOGS for ln in p.read_bytes().decode("utf-8", "replace").splitlines()]
    ),
    ops=OPS,
)
def test_fuzz_grammar(line: str, ops: list) -> None:
    targets.grammar(mutate(line.encode(), ops).decode("utf-8", "backslashreplace"))


@pytest.mark.fuzz
@SETTINGS
@given(data=st.binary(max_size=64))
def test_fuzz_log_date_and_number_fields(data: bytes) -> None:
    targets.log_fields(data)


def test_log_fields_at_every_edge() -> None:
    """Each value in every field once, whatever the random pass draws."""
    for i in range(len(targets.FIELD_VALUES)):
        targets.log_fields(bytes([i]) * 40)


TUNNEL_FRAMES = [
    wrap(packet)
    for wrap, _ in tunnels.ENCAPSULATIONS.values()
    for packet in tunnels.conversation(False)[:2] + tunnels.conversation(True)[:2]
]


@pytest.mark.fuzz
@SETTINGS
@given(
    frame=st.sampled_from(TUNNEL_FRAMES),
    edits=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 2**16),
)
def test_fuzz_tunnel_headers(frame: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    """Bytes of the tunnel headers (everything before the innermost TCP header) set to any
    value, the frame sometimes cut: the decoder never raises and both engines agree."""
    header = bytearray(frame)
    end = len(frame) - 20
    for pos, value in edits:
        header[pos % end] = value
    data = bytes(header)[: cut % (len(frame) + 1)] if cut & 1 else bytes(header)
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    targets.capture(head + struct.pack("<IIII", 0, 0, len(data), len(frame)) + data)
