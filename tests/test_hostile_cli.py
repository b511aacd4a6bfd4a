"""The command's own edges: its error boundary, its options, its metrics server, its interface.

Whatever happens around treason (a full disk or a dead terminal on stdout, a closed standard
stream, SIGINT during its imports, an absurd option value, thousands of idle connections to
``--metrics``, the interface vanishing under ``live``), the user gets one line and an exit
status, never a traceback. docs/robustness.md, "Errors, options and the environment", lists
each limit tested here.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import netns
from conftest import EXAMPLE, require
from treason.cli import build_parser, main
from treason.live.metrics import MAX_CONNECTIONS

SRC = Path(__file__).resolve().parent.parent / "src"


def treason(
    *args: str,
    stdin: int | None = None,
    stdout: int | None = subprocess.PIPE,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treason", *args],
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
        text=True,
        timeout=120,
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
    # "<stdout>: cannot write: " when the failing write is the output policy's or main's last
    # flush; a write error from inside a command carries no file name
    assert one_line(res.stderr) in (
        "treason: No space left on device",
        "treason: <stdout>: cannot write: No space left on device",
    )


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
    assert one_line(stderr) in (
        "treason: Input/output error",
        "treason: <stdout>: cannot write: Input/output error",
    )


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
        (MemoryError(), "treason: out of memory", 2),
        (ValueError("\x1b]0;pwned\x07"), "treason: value out of range: \\x1b]0;pwned\\x07", 2),
        (ValueError("two\nlines"), "treason: value out of range: two\\nlines", 2),
        (
            UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"),
            "treason: text encoding: 'utf-8' codec can't encode character '\\udcff' in "
            "position 0: surrogates not allowed",
            2,
        ),
    ],
    ids=[
        "EIO",
        "ENXIO-with-file",
        "overflow",
        "value",
        "interrupt",
        "memory",
        "escape-in-message",
        "newline-in-message",
        "encoding",
    ],
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
from treason.cli import build_parser, main
from treason.live.metrics import MAX_CONNECTIONS
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
    for n in sorted({1, 2, *range(4, total + 1, max(1, total // 6)), total}):
        res = interrupted_at_import(n, *argv)
        assert "Traceback" not in res.stderr, f"import {n} of {total}: {res.stderr}"
        assert res.returncode in (130, -signal.SIGINT), f"import {n}: {res.stderr}"
        assert "treason: interrupted" in res.stderr.splitlines()


# --------------------------------------------------------------------------------------------
# 2. Option values, checked when they are parsed


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_no_command_takes_an_unchecked_number() -> None:
    """A bare ``type=int``/``type=float`` lets ``nan``, ``inf`` and 10^11 through to the model."""
    for name, parser in subcommands().items():
        for action in parser._actions:
            assert action.type not in (int, float), f"treason {name} {action.option_strings}"


OUT_OF_RANGE = [
    ("scan", "--idle-timeout", "nan", "is not a number of seconds above 0 and at most 1000000000"),
    ("scan", "--idle-timeout", "inf", "above 0 and at most 1000000000"),
    ("scan", "--idle-timeout", "-1", "above 0 and at most 1000000000"),
    ("scan", "--idle-timeout", "0", "above 0 and at most 1000000000"),
    ("scan", "--idle-timeout", "1e400", "above 0 and at most 1000000000"),
    ("scan", "--max-flows", "99999999999", "from 1 to 50000000 (the flow table limit)"),
    ("scan", "--max-flows", "0", "from 1 to 50000000 (the flow table limit)"),
    ("scan", "--max-flows", "1e3", "from 1 to 50000000"),
    ("scan", "--jobs", "0", "from 1 to 2147483647"),
    ("scan", "--jobs", "9" * 5000, "from 1 to 2147483647"),
    ("plot", "--max-graphs", "99999999999", "from 1 to 2147483647"),
    ("live", "--snaplen", "99999999999", "from 1 to 262144 (as tcpdump)"),
    ("live", "--snaplen", "0", "from 1 to 262144"),
    ("live", "--ring", "1e20", "from 1 to 1000000 (packets kept per flow)"),
    ("live", "--ring", "1000001", "from 1 to 1000000"),
    ("live", "--status-interval", "nan", "from 0 to 86400"),
    ("live", "--status-interval", "-inf", "from 0 to 86400"),
    ("live", "--idle-timeout", "inf", "above 0 and at most 1000000000"),
    ("live", "--max-flows", "99999999999", "from 1 to 50000000"),
    ("live", "--rotate", "1k", "is out of range (sizes from 64k to 1T, times from 1s to 366d)"),
    ("live", "--rotate", "99999999999999999999T", "is out of range (sizes from 64k to 1T"),
    ("live", "--rotate", "0.5", "is out of range (sizes from 64k to 1T, times from 1s to 366d)"),
    ("live", "--rotate", "400d", "is out of range"),
    ("live", "--rotate", "9" * 400, "is out of range"),
    ("live", "--rotate", "9" * 5000 + "x", "is not a size such as 100M or a time such as 3600"),
    ("live", "--metrics", "x" * 5000, "expected HOST:PORT, :PORT or PORT"),
    ("live", "--metrics", "99999", "port out of range: 99999"),
    ("live", "--metrics", "[::1]:x", "expected HOST:PORT"),
    ("simulate", "--window", "99999999999", "from 0 to 65535 (an unscaled TCP window)"),
    ("simulate", "--window", "-5", "from 0 to 65535"),
]

NEEDED = {
    "scan": [str(EXAMPLE)],
    "plot": [str(EXAMPLE)],
    "live": ["-i", "lo"],
    "simulate": [],
}


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    OUT_OF_RANGE,
    ids=[f"{c} {o}={v[:20]}" for c, o, v, _ in OUT_OF_RANGE],
)
def test_an_out_of_range_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str, option: str, value: str, message: str
) -> None:
    """argparse's usage line and one line naming the option and its range; exit 2."""
    with pytest.raises(SystemExit) as stop:
        main([command, *NEEDED[command], f"{option}={value}"])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    usage, error = err.rstrip("\n").rsplit("\n", 1)
    assert usage.startswith(f"usage: treason {command}")
    assert error.startswith(f"treason {command}: error: argument ")
    assert option in error.split(":")[2]
    assert message in error and len(error) < 300


@pytest.mark.parametrize("ack", ["99999999999:5", "-1:5", "2147483648:5", "5:65536", "5:-1"])
def test_simulate_acks_out_of_range(capsys: pytest.CaptureFixture[str], ack: str) -> None:
    """An ACK beyond 2^31 - 1 would wrap sequence space: the replay would invent a shrink."""
    with pytest.raises(SystemExit) as stop:
        main(["simulate", "--", "1:5", ack])
    assert stop.value.code == 2
    assert "ACK must be from 0 to 2147483647 and WIN from 0 to 65535" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--idle-timeout", "0.5"], 0.5),
        (["--idle-timeout", "1e9"], 1e9),
        (["--max-flows", "50000000"], 50_000_000),
        (["--max-flows", " 7 "], 7),
    ],
)
def test_values_at_the_limits_are_accepted(argv: list[str], expected: float) -> None:
    args = subcommands()["scan"].parse_args([str(EXAMPLE), *argv])
    assert expected in (args.idle_timeout, args.max_flows)


# --------------------------------------------------------------------------------------------
# 3. The --metrics server under a flood of idle connections

METRICS_SERVER = """
import sys
from prometheus_client import CollectorRegistry
from treason.live.metrics import LiveCollector, MetricsServer, serve
from treason.live.stats import LiveStats

stats = LiveStats(interface="flood0")
stats.scan.frames = 1234
timeout = float(sys.argv[1])
if timeout:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(stats))
    server = MetricsServer(("127.0.0.1", 0), registry, request_timeout=timeout)
    import threading
    threading.Thread(target=server.serve_forever, daemon=True).start()
else:
    server = serve(stats, ("127.0.0.1", 0))
print(server.server_address[1], flush=True)
sys.stdin.read()
server.stop()
"""


@contextlib.contextmanager
def metrics_server(request_timeout: float = 0) -> Iterator[tuple[int, int]]:
    """A real server in its own process (its threads countable in /proc): (pid, port)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", METRICS_SERVER, str(request_timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert proc.stdout is not None
        yield proc.pid, int(proc.stdout.readline())
    finally:
        _, stderr = proc.communicate("", timeout=60)
        assert proc.returncode == 0 and stderr == "", stderr


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        assert answer.status == 200
        return str(answer.read().decode())


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


#: The main and the accepting thread, plus two whose slot was just freed and that are returning.
THREADS_BEYOND_THE_CAP = 4


def test_idle_connections_hold_a_bounded_number_of_threads_and_a_scrape_still_works() -> None:
    """Connections that send half a request and wait: prometheus_client's own server held a
    thread for each, forever (2,000 of them, 2,000 threads). 600, 75 times the cap, show the
    bound without spending half a minute of a CI run on connects."""
    with metrics_server() as (pid, port):
        idle = []
        for n in range(600):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
            idle.append(s)
            if n % 50 == 0:
                assert threads(pid) <= MAX_CONNECTIONS + THREADS_BEYOND_THE_CAP
        assert len(os.listdir(f"/proc/{pid}/fd")) < MAX_CONNECTIONS + 20
        text = scrape_text(port)
        assert 'treason_packets_total{interface="flood0"} 1234.0' in text
        assert threads(pid) <= MAX_CONNECTIONS + THREADS_BEYOND_THE_CAP
        for s in idle:
            s.close()


def test_a_request_dribbled_byte_by_byte_is_cut_off() -> None:
    """A per-read timeout never fires on a client sending a byte every little while; the
    deadline covers the whole request."""
    with metrics_server(request_timeout=1.0) as (_pid, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        request = b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 10_000
        closed = False
        for byte in request:
            try:
                s.send(bytes([byte]))
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([s], [], [], 0.05)
            if readable:
                assert s.recv(100) == b""  # closed without an answer
                closed = True
                break
        assert closed, "the server still waited after 10,000 bytes over 500 s"
        s.close()
        assert "treason_packets_total" in scrape_text(port)


def test_other_paths_are_not_found() -> None:
    with metrics_server() as (_pid, port), pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=30)
    assert err.value.code == 404


# --------------------------------------------------------------------------------------------
# 4. live: the interface going down or away under the capture


LIVE = [sys.executable, "-m", "treason", "live"]


@pytest.mark.parametrize(("how", "what"), [("down", "went down"), ("del", "disappeared")])
def test_live_reports_what_it_saw_when_the_interface_goes(
    tmp_path: Path, how: str, what: str
) -> None:
    """A real kernel shrinking a window on a veth, then `ip link set down` / `ip link del` on
    that veth while treason watches: the events, the summary, the written capture, then one
    line and exit 2 (tcpdump too ends there), never a traceback."""
    require()
    written = tmp_path / "flows.pcap"
    with netns.veth_pair("hl") as pair:
        pair.sysctl("b", "net.ipv4.tcp_shrink_window", 1)
        pair.sysctl("b", "net.ipv4.tcp_window_scaling", 1)
        dev = pair.dev("b")
        # --ring: whole flows in the --write file (handshakes too), so it holds live's events
        live = pair.popen(
            "b",
            [*LIVE, "-i", dev, "-f", "json", "-w", str(written), "--ring", "1000000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert live.stderr is not None
        first = live.stderr.readline()
        assert "listening on" in first, first + live.stderr.read()
        netns.slow_reader_exchange(pair, knobs=netns.ShrinkTraffic(duration=1.0))
        pair.run(
            "b", ["ip", "link", "set", dev, "down"] if how == "down" else ["ip", "link", "del", dev]
        )
        out, err = live.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert live.returncode == 2, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events, "the exchange shrank no window: nothing to report before the loss"
    lines = err.splitlines()
    assert lines[-1] == (
        f"treason: live capture on {dev}: the interface {what} (Network is down); capture stopped"
    )
    assert f"Capture: {dev} (live" in err and f"Wrote {written}" in err
    rescan = treason("scan", "-f", "json", "-q", str(written))
    assert rescan.returncode == 1, rescan.stderr
    assert len(rescan.stdout.splitlines()) == len(events)
