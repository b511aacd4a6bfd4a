"""The layouts the kernel describes: trace event records and ring-buffer pages.

Field offsets differ between kernels (``tcp_probe`` gained ``family``, ``mark``, ``data_len``,
``srtt``, ``sock_cookie`` over the years and moved the others), so nothing here is hard-coded:
each event's ``format`` file gives every field's offset, size and signedness, and
``events/header_page`` gives the page header (timestamp, commit word, data). The values are
in the host's byte order.
"""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from treason.errors import TreasonError

_FIELD = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"(?:\s*signed:(?P<signed>\d);)?"
)
_ORDER = "<" if sys.byteorder == "little" else ">"
_INT = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    signed: bool
    array: bool


@dataclass(frozen=True)
class EventFormat:
    """One event's id and fields, as its ``format`` file states them."""

    system: str
    name: str
    id: int
    fields: dict[str, Field]

    def unpacker(self, names: tuple[str, ...]) -> struct.Struct:
        """A ``struct.Struct`` reading ``names`` (in that order) from a record's payload.

        Integer fields become ints, byte arrays ``bytes``. One call per record reads them all.
        """
        missing = [n for n in names if n not in self.fields]
        if missing:
            raise TreasonError(
                f"{self.system}/{self.name}",
                f"this kernel's tracepoint has no field {', '.join(missing)}",
            )
        chosen = sorted((self.fields[n] for n in names), key=lambda f: f.offset)
        order = [f.name for f in chosen]
        if order != list(names):
            raise ValueError(f"fields must be given in record order: {order}")
        fmt, pos = _ORDER, 0
        for f in chosen:
            fmt += f"{f.offset - pos}x" if f.offset > pos else ""
            code = None if f.array else _INT.get(f.size)
            if code is None:
                fmt += f"{f.size}s"
            else:
                fmt += code.lower() if f.signed else code
            pos = f.offset + f.size
        return struct.Struct(fmt)


def parse_format(system: str, name: str, text: str) -> EventFormat:
    """Parse an ``events/SYSTEM/NAME/format`` file."""
    m = re.search(r"^ID:\s*(\d+)", text, re.M)
    if m is None:
        raise TreasonError(f"{system}/{name}/format", "no event ID")
    fields: dict[str, Field] = {}
    for fm in _FIELD.finditer(text):
        decl = fm.group("decl").strip()
        ident = re.search(r"(\w+)\s*(\[\d*\])?\s*$", decl)
        if ident is None:
            continue
        fname = ident.group(1)
        fields[fname] = Field(
            fname,
            int(fm.group("offset")),
            int(fm.group("size")),
            fm.group("signed") == "1",
            ident.group(2) is not None,
        )
    return EventFormat(system, name, int(m.group(1)), fields)


def read_format(events_dir: Path, system: str, name: str) -> EventFormat:
    path = events_dir / system / name / "format"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TreasonError(
            f"{system}:{name}", "this kernel has no such tracepoint (needs Linux 4.16 or later)"
        ) from None
    except PermissionError:
        raise TreasonError(str(path), "permission denied: needs root or tracefs access") from None
    return parse_format(system, name, text)


@dataclass(frozen=True)
class PageLayout:
    """Where a ring-buffer page keeps its timestamp, its commit word and its records."""

    timestamp: struct.Struct
    commit_offset: int
    commit: struct.Struct
    data_offset: int
    data_size: int

    @property
    def page_size(self) -> int:
        return self.data_offset + self.data_size


def parse_header_page(text: str) -> PageLayout:
    """Parse ``events/header_page`` (``timestamp``, ``commit``, ``data`` fields)."""
    found: dict[str, tuple[int, int]] = {}
    for fm in _FIELD.finditer(text):
        ident = re.search(r"(\w+)\s*$", fm.group("decl").strip())
        if ident is not None and ident.group(1) not in found:
            found[ident.group(1)] = (int(fm.group("offset")), int(fm.group("size")))
    try:
        ts_off, ts_size = found["timestamp"]
        commit_off, commit_size = found["commit"]
        data_off, data_size = found["data"]
    except KeyError as exc:
        raise TreasonError("events/header_page", f"no field {exc.args[0]}") from None
    if ts_off != 0 or ts_size != 8 or commit_size not in (4, 8):
        raise TreasonError("events/header_page", "unexpected page header layout")
    return PageLayout(
        struct.Struct(_ORDER + "Q"),
        commit_off,
        struct.Struct(_ORDER + _INT[commit_size]),
        data_off,
        data_size,
    )
