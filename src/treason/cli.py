"""The ``treason`` command: a thin layer of argument parsing over the library.

Each subcommand lives in its own module under ``treason.commands`` exposing
``register(subparsers)``. ``main`` is the one error boundary of the command: whatever a user's
input, environment or keyboard does, the result is one line on stderr and a status, never a
traceback (see docs/robustness.md, "Errors, options and the environment"):

- ``TreasonError``, any ``OSError`` (EIO, ENOSPC, ENXIO... also on stdout),
  ``OverflowError``/``ValueError`` from values out of range, and ``MemoryError``:
  ``treason: ...``, exit 2;
- SIGINT at any moment, the imports included: ``treason: interrupted``, exit 130;
- a closed pipe on stdout (``treason scan big.pcap | head``): a quiet exit 0.

Nothing but ``sys`` and the exception classes is imported at module level: the console script
and ``python -m treason`` import this module before ``main`` runs, and a SIGINT during a heavy
import there would escape the boundary. Everything else is imported inside it.
"""

from __future__ import annotations

import sys

from treason.errors import TreasonError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing itself is an import worth avoiding here
    import argparse
    from typing import NoReturn


#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "scan",
    "plot",
    "annotate",
    "logs",
    "explain",
    "match",
    "logwatch",
    "simulate",
    "live",
    "trace",
    "compare",
)

EXIT_STATUS = """exit status:
  0  nothing found
  1  events found (scan, logs, match)
  2  error: bad input, missing privilege, bad usage
  130 interrupted (SIGINT)
"""

#: Exit status of an interrupted run, as a shell reports a command killed by SIGINT.
EXIT_INTERRUPTED = 130


#: An argparse error line longer than this keeps its start and end (which name the option and
#: its range) and drops the middle: a 5,000-digit value stays one readable line.
MAX_USAGE_ERROR = 300


def build_parser() -> argparse.ArgumentParser:
    import argparse
    import importlib

    from treason import __version__
    from treason.terminal import safe

    class Parser(argparse.ArgumentParser):
        """argparse, with its error line escaped and cut to ``MAX_USAGE_ERROR`` characters
        whatever value a type function quoted (subcommands inherit the class)."""

        def error(self, message: str) -> NoReturn:
            message = safe(message).replace("\n", "\\n")
            if len(message) > MAX_USAGE_ERROR:
                cut = len(message) - MAX_USAGE_ERROR
                message = f"{message[:180]}...({cut} more)...{message[-100:]}"
            super().error(message)

    parser = Parser(
        prog="treason",
        description="Find, explain and show TCP peers that shrink their receive window.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"treason {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"treason.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"treason.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            _guard_closed_streams()
            args = build_parser().parse_args(argv)
            status = int(args.func(args) or 0)
            # Python would flush stdout only at exit, outside this boundary: a full disk or a
            # vanished terminal there would be a traceback-like "Exception ignored" and exit 120.
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:  # worded as the output policy words it (output.atomic)
                reason = exc.strerror or type(exc).__name__
                raise TreasonError("<stdout>", f"cannot write: {reason}") from None
            return status
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly.
            _drop_stdout()
            return 0
        except OSError as exc:
            _settle_stdout()
            return _fail(_os_message(exc))
        except UnicodeError as exc:
            _settle_stdout()
            return _fail(f"text encoding: {exc}")
        except (OverflowError, ValueError) as exc:
            _settle_stdout()
            return _fail(f"value out of range: {exc}")
        except TreasonError as exc:
            _settle_stdout()
            return _fail(str(exc))
        except MemoryError:
            _settle_stdout()
            return _fail("out of memory")
    except KeyboardInterrupt:
        import signal

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C must wait
        _settle_stdout()
        _fail("interrupted")
        signal.signal(signal.SIGINT, previous)
        return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    """The one line on stderr; a stderr that cannot take it leaves only the status."""
    import contextlib

    from treason.terminal import safe

    line = safe(message).replace("\n", "\\n")
    with contextlib.suppress(OSError, ValueError):
        print(f"treason: {line}", file=sys.stderr, flush=True)
    return 2


def _os_message(exc: OSError) -> str:
    """``FILE: reason`` as the C library says it (``No space left on device``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return ": ".join([*names, reason])


def _settle_stdout() -> None:
    """Write out what is buffered (valid output comes before the error line); if stdout
    cannot take it, drop it so Python's own flush at exit stays quiet."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _drop_stdout()


def _drop_stdout() -> None:
    """Point stdout at /dev/null: whatever is still buffered goes nowhere, without an error."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit, as stdout does
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _guard_closed_streams() -> None:
    """A standard stream closed by the caller (``<&-``, ``>&-``) is an error when used, not an
    ``AttributeError`` on ``None``; its descriptor is held on /dev/null so that no file treason
    opens (an output's temporary file) lands on descriptor 1 by accident."""
    import os

    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is not None:
            continue
        devnull = os.open(os.devnull, os.O_RDWR)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        setattr(sys, name, _closed_stream(name))


def _closed_stream(name: str) -> object:
    import errno
    import io

    label = {"stdin": "input", "stdout": "output", "stderr": "error"}[name]

    class Closed(io.RawIOBase):
        """Fails the first read or write with EBADF; later writes (Python's flush at exit,
        after the error was reported) are dropped."""

        failed = False

        def readable(self) -> bool:
            return True

        def writable(self) -> bool:
            return True

        def _fail(self) -> None:
            Closed.failed = True
            raise OSError(errno.EBADF, f"standard {label} is closed")

        def readinto(self, _buffer: object) -> int:
            self._fail()
            return 0

        def write(self, data: object) -> int:
            if not Closed.failed:
                self._fail()
            return len(data)  # type: ignore[arg-type]

    raw = Closed()
    if name == "stdin":
        return io.TextIOWrapper(io.BufferedReader(raw))
    return io.TextIOWrapper(io.BufferedWriter(raw), line_buffering=True)
