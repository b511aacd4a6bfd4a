"""The command's own edges: its error boundary, its options, its metrics server, its interface.

Whatever happens around treason (a full disk or a dead terminal on stdout, a closed standard
stream, SIGINT during its imports, an absurd option value, thousands of idle connections to
``--metrics``, the interface vanishing under ``live``), the user gets one line and an exit
status, never a traceback. docs/robustness.md, "Errors, options and the environment", lists
each limit tested here.
"""

from __future__ import annotations

import errno
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLE
from treason.cli import main

SRC = Path(__file__).resolve().parent.parent / "src"


def treason(
    *args: str, stdin: int | None = None, stdout: int | None = subprocess.PIPE, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treason", *args],
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        **kw,  # type: ignore[arg-type]
    )


def one_line(stderr: str) -> str:
    """The last line of stderr, after checking that nothing looks like a traceback."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    return stderr.splitlines()[-1]


# --------------------------------------------------------------------------------------------
# 1. The error boundary

COMMANDS_THAT_PRINT = [
    ("scan", str(EXAMPLE)),
    ("scan", "--format", "json", str(EXAMPLE)),
    ("simulate",),
    ("explain",),
    ("plot", str(EXAMPLE)),
]


@pytest.mark.parametrize("argv", COMMANDS_THAT_PRINT, ids=" ".join)
def test_a_full_disk_on_stdout_is_one_line(argv: tuple[str, ...]) -> None:
    """/dev/full answers every write with ENOSPC, as a full disk under `> out` does."""
    with open("/dev/full", "w") as full:
        res = treason(*argv, stdout=full.fileno())
    assert res.returncode == 2
    assert one_line(res.stderr) == "treason: standard output: No space left on device"


def test_a_dead_terminal_on_stdout_is_one_line() -> None:
    """EIO: the terminal treason writes to was closed (its ssh session dropped)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "treason", "scan", str(EXAMPLE)],
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    os.close(master)  # before treason has written anything: its writes get EIO
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert one_line(stderr) == "treason: standard output: Input/output error"


def test_a_closed_stdout_is_one_line() -> None:
    """`treason scan x.pcap >&-`: Python sees no stdout at all."""
    res = treason("scan", str(EXAMPLE), stdout=None, preexec_fn=lambda: os.close(1))
    assert res.returncode == 2
    assert one_line(res.stderr) == "treason: standard output is closed"


def test_a_closed_stdin_is_one_line() -> None:
    """`treason scan - <&-`."""
    res = treason("scan", "-", preexec_fn=lambda: os.close(0))
    assert res.returncode == 2
    assert one_line(res.stderr).endswith("standard input is closed")


def test_a_closed_pipe_stays_quiet() -> None:
    """`treason scan x.pcap | head -1`: the reader leaving is not an error worth a line."""
    read, write = os.pipe()
    os.close(read)
    res = treason("scan", "--format", "json", "-q", str(EXAMPLE), stdout=write)
    os.close(write)
    assert res.returncode == 0
    assert res.stderr == ""


@pytest.mark.parametrize(
    ("raised", "line", "status"),
    [
        (OSError(errno.EIO, "Input/output error"), "treason: Input/output error", 2),
        (
            OSError(errno.ENXIO, "No such device or address", "/run/fifo"),
            "treason: /run/fifo: No such device or address",
            2,
        ),
        (
            OverflowError("timestamp out of range for platform time_t"),
            "treason: value out of range: timestamp out of range for platform time_t",
            2,
        ),
        (
            ValueError("year 0 is out of range"),
            "treason: value out of range: year 0 is out of range",
            2,
        ),
        (KeyboardInterrupt(), "treason: interrupted", 130),
        (ValueError("\x1b]0;pwned\x07"), "treason: value out of range: \\x1b]0;pwned\\x07", 2),
    ],
    ids=["EIO", "ENXIO-with-file", "overflow", "value", "interrupt", "escape-in-message"],
)
def test_every_error_class_becomes_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: BaseException,
    line: str,
    status: int,
) -> None:
    """What any command raises from deep inside: the boundary alone decides what the user sees."""
    import treason.commands.explain as explain

    def run(_args: object) -> int:
        print("valid output before the failure")
        raise raised

    monkeypatch.setattr(explain, "run", run)
    assert main(["explain"]) == status
    out, err = capsys.readouterr()
    assert out == "valid output before the failure\n"
    assert err == line + "\n"


def test_nothing_heavy_is_imported_before_the_boundary() -> None:
    """The console script and `python -m treason` import treason.cli before `main` can catch
    anything: a SIGINT there is outside the boundary, so that window holds only tiny modules."""
    code = (
        "import sys; before = set(sys.modules); from treason.cli import main; "
        "print(sorted(m for m in set(sys.modules) - before))"
    )
    res = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    # __future__: a few lines of stdlib, loaded by every `from __future__ import annotations`
    assert eval(res.stdout) == ["__future__", "treason", "treason.cli", "treason.errors"]


#: Interrupts a run at its Nth import once `main` is running: a SIGINT during the imports of the
#: first tens of milliseconds, made exact instead of timed.
INTERRUPT_AT_IMPORT = """
import os, signal, sys
from treason.cli import main
n, imports = int(sys.argv[1]), 0
def hook(event, _args):
    global imports
    if event == "import":
        imports += 1
        if imports == n:
            os.kill(os.getpid(), signal.SIGINT)
sys.addaudithook(hook)
status = main(sys.argv[2:])
print(imports, file=sys.stderr)
sys.exit(status)
"""


def default_sigint() -> None:
    """A child of a process that ignores SIGINT (a background job) would ignore it too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_at_import(n: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-S", "-c", INTERRUPT_AT_IMPORT, str(n), *argv],
        stdin=subprocess.DEVNULL,
        preexec_fn=default_sigint,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )


@pytest.mark.parametrize(
    "argv", [("scan", str(EXAMPLE)), ("plot", str(EXAMPLE)), ("logs", "-")], ids=lambda a: a[0]
)
def test_sigint_during_any_import_is_one_line(argv: tuple[str, ...]) -> None:
    """A SIGINT delivered at the 1st, 2nd, ... import of a run (spread over all of them)."""
    total = int(interrupted_at_import(0, *argv).stderr.splitlines()[-1])
    assert total > 20  # argparse, the commands, the engine...: the window is real
    for n in sorted({1, 2, 3, *range(5, total + 1, max(1, total // 12)), total}):
        res = interrupted_at_import(n, *argv)
        assert "Traceback" not in res.stderr, f"import {n} of {total}: {res.stderr}"
        assert res.returncode in (130, -signal.SIGINT), f"import {n}: {res.stderr}"
        assert "treason: interrupted" in res.stderr.splitlines()
