"""``treason explain``: pasted lines in plain words; the worked example from the model."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from treason.cli import main
from treason.kernel import WORDINGS, kernel_lines


@pytest.fixture
def no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty, non-terminal stdin, as under cron or a pipe from nothing."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))


def test_general_explanation_is_computed_by_the_reference_model(
    capsys: pytest.CaptureFixture[str], no_stdin: None
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


def test_without_a_line_users_of_modern_kernels_are_sent_to_trace(
    capsys: pytest.CaptureFixture[str], no_stdin: None
) -> None:
    """On a kernel of today the line is debug-only, so its user often has none to paste:
    the explanation without a line must say so and name `treason trace`."""
    assert main(["explain"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3.19" in out and "debug" in out
    assert "treason trace" in out


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


TREASON = [sys.executable, "-m", "treason"]
MSG = kernel_lines("192.0.2.7", 51234, 22, 1000, 1448)["3.13"]


@pytest.mark.parametrize(
    "line",
    [
        f"Jun  2 21:38:52 kernel: {MSG}",  # sysklogd without a host name, double space
        f"kernel: {MSG}",
        f"Jun  2 21:38:52 www kernel: [ 8123.456789]  {MSG}",
        json.dumps({"MESSAGE": MSG, "_TRANSPORT": "kernel", "_HOSTNAME": "www"}),
        "  " + json.dumps({"MESSAGE": list(MSG.encode()), "SYSLOG_IDENTIFIER": "kernel"}),
        f"   4 Time(s): {MSG}",
        f"[ 8123.456789] [1234] tcp_timer:tcp_retransmit_timer:500: {MSG}",
    ],
)
def test_every_shape_of_a_pasted_line(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", line]) == 0
    out = capsys.readouterr().out
    assert "X = 1000" in out and "Y - X = 448" in out and "192.0.2.7, port 51234" in out


def test_several_lines_are_several_reports(capsys: pytest.CaptureFixture[str]) -> None:
    other = kernel_lines("198.51.100.9", 443, 8443, 7, 8)["6.6"]
    assert main(["explain", MSG, other]) == 0
    out = capsys.readouterr().out
    assert "2 distinct stall(s)" in out
    assert out.index("X=1000 (snd_una)") < out.index("X=7 (snd_una)")
    assert "Kernel era (3.13" in out and "Kernel era (6.6" in out
    # a line pasted without quotes arrives word by word: still one line
    assert main(["explain", *f"Jun  2 21:38:52 www kernel: {MSG}".split()]) == 0
    assert "X = 1000" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wording", "today"),
    [("2.4.0", "no kernel since"), ("2.4.17", "No kernel prints this wording today"),
     ("2.6.29", "No kernel prints this wording today"), ("3.13", "from 3.19 it became a debug"),
     ("6.6", "still have this message"), ("mptcp", "out-of-tree")],
)  # fmt: skip
def test_each_era_says_whether_todays_kernels_print_it(
    wording: str, today: str, capsys: pytest.CaptureFixture[str]
) -> None:
    msg = kernel_lines("192.0.2.7", 1, 2, 3, 4, recv_ms=1, lasting_ms=2)[wording]
    assert main(["explain", msg]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert today in out
    assert "echo 'file net/ipv4/tcp_timer.c +p' > /proc/dynamic_debug/control" in out
    assert "treason trace" in out


def test_stdin_is_read_when_it_is_not_a_terminal() -> None:
    text = f"Jul  4 03:12:09 www kernel: {MSG}\nJul  4 03:12:11 www kernel: {MSG}\n"
    done = subprocess.run([*TREASON, "explain"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 reports of one stall" in done.stdout and "X = 1000" in done.stdout
    nothing = subprocess.run([*TREASON, "explain"], input="hello\n", capture_output=True, text=True)
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1
