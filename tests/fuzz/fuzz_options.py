"""Fuzzing the command line: random values for every typed option of every command.

What must hold for any value whatsoever: the command ends with status 0, 1 or 2; never a
traceback; on status 2 the last line of stderr is the one error line (``treason: ...`` from the
error boundary, or argparse's ``treason CMD: error: ...`` under its usage), a single line even
for a 5,000-digit value, with no raw control character. Options are found by walking the real
parser, so an option added later is fuzzed without being listed here.

    python tests/fuzz/fuzz_options.py --minutes 10      # the long pass, by hand

The bounded pass runs with every test suite (``test_fuzz_options.py``). A failing command line
of the long pass is saved to ``regressions-options/<sha1>.json``, where the bounded pass
replays it from then on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from treason.cli import build_parser, main

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent.parent / "examples" / "shrink.pcap"
REGRESSIONS = HERE / "regressions-options"

#: The arguments each command run by the fuzzer needs besides the fuzzed options: a small real
#: capture, an interface that does not exist (live stops at once, before capturing anything).
#: Any other command (logwatch, which installs files; one added later) is fuzzed through the
#: parser only: its option types are checked, nothing runs.
NEEDS = {
    "scan": [str(EXAMPLE)],
    "plot": [str(EXAMPLE)],
    "live": ["-i", "nosuchif0"],
    "simulate": [],
    "explain": [],
    "logs": ["/dev/null"],
    "match": ["/dev/null", str(EXAMPLE)],
}
#: Options with a value that are not fuzzed: they name files the command would write.
NOT_FUZZED_OPTIONS = {"-o", "--output", "-w", "--write"}

#: Values that broke parsers before, or sit on a limit: the fuzzer mixes them with random ones.
SPECIAL = [
    "nan", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "-0", "-0.0", "0",
    "1", "-1", "0.5", "1e3", "1e20", "0x10", "1_000", "١٢", " 7 ", "", " ", "+5",
    "99999999999", "2147483647", "2147483648", "4294967295", "4294967296",
    "9223372036854775807", "9223372036854775808", "18446744073709551616", "9" * 5000,
    "1k", "64k", "100M", "1G", "1T", "2T", "1h", "0s", "366d", "367d", "0.5s",
    ":9100", "[::1]:9100", "127.0.0.1:0", "host:65536", "1:2", "1:65536", "-1:5", "5:-1",
    "\x1b]0;title\x07", "\x00", "\u202e", "é", "5\n6",
]  # fmt: skip
LIMIT_LINE = 400
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def typed_options() -> dict[str, list[argparse.Action]]:
    """Every command's actions that take a value through a ``type=`` (options and positionals)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for name, command in sub.choices.items():
        found[name] = [
            a
            for a in command._actions
            if a.type is not None
            and a.nargs != 0
            and not set(a.option_strings) & NOT_FUZZED_OPTIONS
        ]
    return found


def random_value(rnd: random.Random) -> str:
    pick = rnd.randrange(8)
    if pick == 6:  # plausible values, so that runs past parsing happen too
        return str(rnd.randrange(1, 2000))
    if pick == 7:
        return f"{rnd.uniform(0.001, 5000):.3f}"
    if pick == 0:
        return rnd.choice(SPECIAL)
    if pick == 1:
        return str(rnd.choice([-1, 1]) * rnd.randrange(1 << rnd.randrange(1, 80)))
    if pick == 2:
        return repr(rnd.uniform(-1, 1) * 10 ** rnd.randrange(-30, 30))
    if pick == 3:
        return rnd.choice(SPECIAL) + rnd.choice(["", "k", "M", "G", "s", "h", "d", ":", "e5"])
    if pick == 4:
        return f"{rnd.randrange(-5, 70000)}:{rnd.randrange(-5, 70000)}"
    return "".join(chr(rnd.randrange(0x20, 0x7F)) for _ in range(rnd.randrange(0, 12)))


def random_argv(rnd: random.Random, options: dict[str, list[argparse.Action]]) -> list[str]:
    command = rnd.choice(sorted(c for c in options if options[c]))
    argv = [command, *NEEDS.get(command, [])]
    actions = options[command]
    positional: list[str] = []
    for action in rnd.sample(actions, min(len(actions), rnd.randrange(1, 4))):
        value = random_value(rnd)
        if action.option_strings:
            argv.append(f"{rnd.choice(action.option_strings)}={value}")
        else:
            positional.append(value)
    return [*argv, "--", *positional] if positional else argv


class Hang(Exception):
    """A command line that did not finish within its time."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check(argv: list[str]) -> int:
    """The target: run ``treason ARGV`` in this process (or only parse it, for a command not in
    ``NEEDS``) and judge what the user would see."""
    out, err = io.StringIO(), io.StringIO()
    with deadline(60), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv) if argv[0] in NEEDS else _parse_only(argv)
        except SystemExit as stop:  # argparse: usage errors (2), --help (0)
            status = stop.code if isinstance(stop.code, int) else 2
    text = err.getvalue()
    assert status in (0, 1, 2), f"exit {status}: {argv!r}\n{text}"
    assert "Traceback" not in text, f"{argv!r}\n{text}"
    if status == 2:
        last = text.rstrip("\n").rsplit("\n", 1)[-1]
        assert last.startswith("treason"), f"{argv!r}: {last!r}"
        assert len(last) <= LIMIT_LINE, f"{argv!r}: a {len(last)}-character error line"
        assert not RAW_CONTROL.search(last), f"{argv!r}: {last!r}"
    return status


def _parse_only(argv: list[str]) -> int:
    build_parser().parse_args(argv)
    return 0


def regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.json")) if REGRESSIONS.is_dir() else []


def long_pass() -> int:
    parser = argparse.ArgumentParser(description="the long option fuzzing pass, by hand")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns()
    rnd = random.Random(seed)
    options = typed_options()
    end = time.monotonic() + args.minutes * 60
    runs = failures = 0
    statuses = {0: 0, 1: 0, 2: 0}
    print(f"fuzzing option values for {args.minutes} min, seed {seed}", flush=True)
    while time.monotonic() < end:
        argv = random_argv(rnd, options)
        runs += 1
        try:
            statuses[check(argv)] += 1
        except Exception:
            failures += 1
            text = json.dumps(argv)
            REGRESSIONS.mkdir(exist_ok=True)
            path = REGRESSIONS / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.json"
            path.write_text(text + "\n")
            print(f"FAILED {path.name}: {argv!r}", file=sys.__stdout__, flush=True)
            traceback.print_exc(file=sys.__stdout__)
        if runs % 5000 == 0:
            print(f"{runs} command lines, {failures} failures", flush=True)
    exits = ", ".join(f"{n} exit {status}" for status, n in statuses.items())
    print(f"done: {runs} command lines ({exits}), {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path[:0] = [str(HERE)]
    sys.exit(long_pass())
