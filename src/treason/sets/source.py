"""Opening a piece of a capture set where it lies: a local path, ``-``, or an fsspec URL.

Workers of a cluster read the pieces themselves, so a piece is named by something every process
can open: a path (local or on a shared file system) or a URL that fsspec understands
(``file://…``, ``s3://…`` with s3fs installed). ``storage_options`` are fsspec's (credentials,
``client_kwargs={"endpoint_url": …}``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from treason.errors import CaptureError
from treason.readers import Capture, open_capture

#: fsspec keyword arguments (``fsspec.open(url, **storage_options)``).
StorageOptions = dict[str, Any]


def is_url(source: str) -> bool:
    """Whether ``source`` names a file through fsspec (``proto://…``) rather than a path."""
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.isidentifier()


@contextmanager
def opened(source: str, storage_options: StorageOptions | None = None) -> Iterator[Capture]:
    """``source`` opened and recognised (``treason.readers.open_capture``); errors name it."""
    if not is_url(source):
        with open_capture(source) as capture:
            yield capture
        return
    try:
        import fsspec
    except ImportError:
        raise CaptureError(source, "URLs need fsspec: pip install 'treason[dask]'") from None
    try:
        stream = cast(BinaryIO, fsspec.open(source, "rb", **(storage_options or {})).open())
    except OSError as exc:
        raise CaptureError(source, exc.strerror or str(exc) or type(exc).__name__) from None
    except (ValueError, ImportError) as exc:  # unknown protocol, its package missing
        raise CaptureError(source, str(exc) or type(exc).__name__) from None
    try:
        with open_capture(stream, source) as capture:
            yield capture
    finally:
        stream.close()
