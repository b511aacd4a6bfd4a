"""Output files that appear whole or not at all.

A report half-written by a full disk, an error or Ctrl-C is worse than none: the user may
take it for the whole answer. Everything is written to a temporary file in the target's
directory and renamed over the target only when complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import TextIO

from treason.errors import TreasonError


@contextlib.contextmanager
def atomic_text(path: str, newline: str | None = None) -> Iterator[TextIO]:
    """Open ``path`` for writing text; it is replaced only if the block completes."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".treason-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise TreasonError(path, f"cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
