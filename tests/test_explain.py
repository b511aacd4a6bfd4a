"""``treason explain``: pasted lines in plain words; the worked example from the model."""

from __future__ import annotations

import pytest

from treason.cli import main
from treason.kernel import WORDINGS, kernel_lines


def test_general_explanation_is_computed_by_the_reference_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    simulate = pytest.importorskip("treason.simulate")
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    steps = simulate.seed_example()
    for st in steps:  # every row the model computed is shown, with its numbers
        assert f"{st.ack:>6} {st.win:>6} {st.right_edge:>10}" in out
    flagged = [st for st in steps if st.event is not None]
    assert [(st.ack, st.win, st.right_edge) for st in flagged] == [(1974, 100, 2074)]
    assert f"edge moved back {flagged[0].event.shrink_bytes} bytes" in out
    for w in WORDINGS:
        assert w.kernels in out


@pytest.mark.parametrize("wording", [w.key for w in WORDINGS])
def test_each_field_in_plain_words(wording: str, capsys: pytest.CaptureFixture[str]) -> None:
    msg = kernel_lines("::ffff:198.51.100.7", 51234, 22, 1898670412, 1898670413)[wording]
    assert main(["explain", f"Jul  4 03:12:09 www kernel: {msg}"]) == 0
    out = capsys.readouterr().out
    assert "198.51.100.7, port 51234" in out and "IPv4-mapped" in out
    assert "port 22 (ssh)" in out
    assert "X = 1898670412" in out and "snd_una" in out and "Y - X = 1" in out
    assert "repaired" in out and ("120 s" in out or "240 s" in out)
    assert "Likely causes" in out and "Should you worry" in out and "What to do" in out
    assert "Host:           www" in out


def test_look_alikes_and_applications_are_told_apart(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["explain", "kernel: nf_ct_tcp: SEQ is over the upper bound (over the window)"]) == 0
    )
    assert "Not a window-shrink report" in capsys.readouterr().out
    msg = kernel_lines("192.0.2.1", 1, 2, 3, 4)["2.4.17"]
    assert main(["explain", f"Jul  4 03:12:09 www joker[1]: {msg}"]) == 2
    assert "not the kernel" in capsys.readouterr().err
    assert main(["explain", "hello"]) == 2
