"""Writing results: files appear whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile

from treason.errors import TreasonError


def write_atomic(path: str, text: str) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".treason-", dir=directory)
    except OSError as exc:
        raise TreasonError(path, f"cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise TreasonError(path, f"cannot write: {exc.strerror}") from None
