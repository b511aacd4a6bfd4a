"""Container formats: turn whatever a log file is into (time, host, program, message) records.

Kernel messages reach users wrapped in many containers: syslog (RFC 3164, with or without the
kernel's ``[uptime]`` and ``[T123]`` caller id; rsyslog's RFC 3339 timestamps; RFC 5424),
``journalctl`` (``-o short*``, ``-o json``, ``-o export``), ``dmesg`` (plain, ``-r``, ``-x``,
``-T``, ``--time-format=iso``) and ``/dev/kmsg`` records, rotated and gzip-compressed. The
format is recognised per line (per file for the journal's JSON and export forms), so a
concatenation of sources still reads. Only the kernel's own messages are marked ``kernel``:
an application quoting a kernel wording in its own log is not the kernel.
"""

from __future__ import annotations

import codecs
import gzip
import html
import io
import json
import re
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any, BinaryIO

from treason.errors import TreasonError
from treason.logs.grammar import parse_shrink
from treason.logs.unwrap import MAX_WRAP, broken, unwrap

#: Longest line parsed; the rest of a longer line is kept out of the grammar (no kernel line
#: is anywhere near this long) so hostile input cannot cost more than linear time.
MAX_LINE = 8192


@dataclass(slots=True)
class Record:
    """One log message, container removed. ``time`` is None when the container has none;
    ``uptime`` is the kernel's seconds-since-boot stamp when one was printed."""

    source: str
    #: The line number in the file (the first line of a journal export entry).
    lineno: int
    raw: str
    message: str
    kernel: bool
    fmt: str
    host: str | None = None
    program: str | None = None
    time: datetime | None = None
    uptime: float | None = None
    caller: str | None = None
    repeats: int = 0
    #: Exactly this many identical messages (logwatch's ``N Time(s):``), unlike ``repeats``.
    count: int = 1


def log_text(data: bytes) -> str:
    """Log bytes as text; invalid UTF-8 is kept visible as ``\\xNN`` rather than lost."""
    return data.decode("utf-8", "backslashreplace")


# --- timestamps ------------------------------------------------------------------------------

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_RFC3339 = re.compile(
    r"(?P<d>\d{4})-(?P<mo>\d\d)-(?P<dd>\d\d)[T ](?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
    r"(?:[.,](?P<f>\d{1,9}))?(?P<tz>Z|[+-]\d\d:?\d\d)?"
)


def _fraction(f: str | None) -> int:
    return int((f or "0")[:6].ljust(6, "0"))


def parse_rfc3339(text: str) -> datetime | None:
    m = _RFC3339.fullmatch(text)
    if not m:
        return None
    tz = None
    try:
        if m["tz"]:
            if m["tz"] == "Z":
                tz = timezone.utc
            else:
                # An offset of 24 hours or more is no time zone: ValueError, like a 13th month.
                sign = -1 if m["tz"][0] == "-" else 1
                digits = m["tz"][1:].replace(":", "")
                tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        return datetime(
            int(m["d"]),
            int(m["mo"]),
            int(m["dd"]),
            int(m["h"]),
            int(m["mi"]),
            int(m["s"]),
            _fraction(m["f"]),
            tzinfo=tz,
        )
    except ValueError:
        return None


def parse_bsd(text: str, reference: datetime) -> datetime | None:
    """An RFC 3164 ``Mmm dd hh:mm:ss[.ffffff]`` stamp. It has no year: take the reference's,
    or the year before when that would put the line in the future (a log read in January)."""
    m = re.fullmatch(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?", text)
    if not m or m[1] not in _MONTHS:
        return None
    try:
        when = datetime(
            reference.year,
            _MONTHS[m[1]],
            int(m[2]),
            int(m[3]),
            int(m[4]),
            int(m[5]),
            _fraction(m[6]),
        )
    except ValueError:
        return None
    if reference.year < 9999 and when > reference + timedelta(days=1):
        try:
            when = when.replace(year=when.year - 1)
        except ValueError:
            return None
    return when


# --- line forms ------------------------------------------------------------------------------

_KMSG = re.compile(
    r"(?P<pri>\d{1,4}),(?P<seq>\d{1,20}),(?P<usec>\d{1,20}),[^;,]{0,8}"
    r"(?:,caller=(?P<caller>[TC]\d{1,10}))?[^;]{0,64};(?P<msg>.*)"
)
_PRI = r"(?:<(?P<pri>\d{1,4})>)?"
_DMESG_X = re.compile(
    r"(?P<fac>kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|res[0-3]|"
    r"local[0-7]) *:(?P<lvl>emerg|alert|crit|err|warn|notice|info|debug) *: (?P<rest>.*)"
)
_RFC5424 = re.compile(
    r"<\d{1,3}>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) \S+ \S+ "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?"
)
_ISO_START = re.compile(
    _PRI + r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?) "
    r"(?P<rest>.*)"
)
_BSD_START = re.compile(
    _PRI + r"(?P<ts>[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d(?:\.\d{1,9})?) (?P<rest>.*)"
)
_FULL_START = re.compile(
    r"[A-Z][a-z]{2} (?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})?) \S+ (?P<rest>.*)"
)
_UNIX_START = re.compile(r"(?P<ts>\d{9,11}\.\d{1,9}) (?P<rest>.*)")
#: ``journalctl -o short-monotonic`` and ``-o short-delta`` (``<delta>``, or blank padding on
#: the first entry, which has no delta).
_MONO_START = re.compile(
    r"\[ *(?P<up>\d{1,10}\.\d{1,9})(?: <[ \d.]{1,20}>| {1,32})?\] (?P<rest>.*)"
)
_CTIME = re.compile(
    r"\[(?P<ts>[A-Z][a-z]{2} (?P<mo>[A-Z][a-z]{2}) +(?P<d>\d{1,2}) (?P<t>\d\d:\d\d:\d\d) "
    r"(?P<y>\d{4}))\] ?(?P<msg>.*)"
)
#: ``host prog[pid]: message`` after a syslog or journal timestamp.
_TAGGED = re.compile(r"(?P<host>\S+) (?P<prog>[^\s:\[\]]{1,64})(?:\[\d{0,10}\])?: ?(?P<msg>.*)")
_REPEATED = re.compile(r"(?P<host>\S+ )?last message repeated (?P<n>\d{1,12}) times?")
_RSYSLOG_REPEAT = re.compile(r"message repeated (?P<n>\d{1,12}) times?: \[ ?(?P<msg>.*)\]")
#: What the kernel itself puts before the text: ``[uptime]`` and/or the caller id ``[T123]``.
_KPREFIX = re.compile(
    r"(?:\[ *(?P<up>\d{1,10}\.\d{1,9})\])? ?(?:\[ *(?P<caller>[TC]\d{1,10})\])? ?"
)


def strip_kernel_prefix(message: str) -> tuple[float | None, str | None, str]:
    """Split the kernel's own ``[uptime][T123]`` decoration off a message."""
    m = _KPREFIX.match(message)
    if not m or not m.end():
        return None, None, message
    up = float(m["up"]) if m["up"] else None
    return up, m["caller"], message[m.end() :]


#: Every dash a ruler may be drawn with once a mail client or a blog has "improved" it.
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
#: logwatch's section rulers, ``------ Kernel Begin ------`` ... ``------ Kernel End ------``.
_RULER = re.compile(
    rf"\s*[{_DASHES}]{{3,}}\s*(?P<name>\S.{{0,80}}?)\s+(?P<edge>Begin|End)\s*[{_DASHES}]{{3,}}\s*"
)
#: A logwatch listing line: exactly N identical messages (the stock kernel service's catch-all).
_TIMES = re.compile(r"\s{0,16}(?P<n>\d{1,12}) Time\(s\): (?P<msg>.*)")
#: The quote marks a mail client puts before each line of a quoted mail (``> ``, ``>> ``).
_QUOTE = re.compile(r"(?:> ?)+")
#: Spaces a web page or a word processor puts in copied text: no-break spaces become spaces,
#: zero-width ones go.
_WEB_SPACES = str.maketrans(
    {"\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u200b": None, "\u2060": None}
)
#: Colour and style escapes (ANSI SGR) that ``dmesg --color=always`` and coloured journal
#: output put around the stamp, the subsystem and the message.
_SGR = re.compile(r"\x1b\[[0-9;]{0,32}m")
#: The markup of logwatch's HTML report, never a log line's own text: ``<7>``, a redacted
#: ``<ip>`` or ``<redacted>`` are no HTML tags.
_HTML_TAG = re.compile(
    r"</?(?:a|b|br|body|code|div|font|h[1-6]|head|hr|html|i|li|p|pre|span|table|tbody|td|th"
    r"|tr|tt|ul)(?:\s[^<>]{0,200})?/?>",
    re.IGNORECASE,
)
#: A service's section heading in logwatch's HTML report: ``<h2><a name="2">Kernel</a></h2>``.
_HTML_SECTION = re.compile(
    r"<h2>\s*(?:<a\s[^<>]{0,80}>)?(?P<name>[^<>]{1,80}?)(?:</a>)?\s*</h2>", re.IGNORECASE
)
#: The syslog tag alone, as in ``kernel: message`` pasted without stamp or host.
_KERNEL_TAG = re.compile(r"kernel(?:\[\d{0,10}\])?: ?(?P<msg>.*)")
#: ``prog[pid]: message`` right after a stamp: a classic sysklogd line without a host name
#: (host names never end in a colon, so this cannot be ``host prog: ...``).
_HOSTLESS = re.compile(r"(?P<prog>[^\s:\[\]]{1,64})(?:\[\d{0,10}\])?: ?(?P<msg>.*)")


def _kernel_section(name: str) -> bool:
    """Sections of a logwatch report that list the kernel's messages."""
    lowered = name.lower()
    return "kernel" in lowered or "treason" in lowered


class LineParser:
    """Parses single lines; ``reference`` dates yearless syslog stamps (file mtime or now).

    It follows a logwatch report's sections: ``N Time(s): message`` inside the kernel
    section (or outside any) is N times the kernel's message; bare text inside another
    service's section is that service's, not the kernel's.
    """

    def __init__(self, source: str, reference: datetime | None = None) -> None:
        self.source = source
        self.reference = reference or datetime.now()
        #: The logwatch section being read (None outside any).
        self.section: str | None = None

    def parse(self, raw: str, lineno: int) -> Record | None:
        if raw.startswith(">"):  # a mail quoted in a reply; no log line starts so
            record = self.parse(_QUOTE.sub("", raw, count=1), lineno)
            if record is not None:
                record.raw = raw
            return record
        cut = raw[:MAX_LINE]
        text = self._unmarked(cut)
        if text is None:
            return None  # a section heading of an HTML report
        if text == cut:
            return self._parse_text(raw, lineno)
        record = self._parse_text(text, lineno)
        if record is not None:
            record.raw = raw
        return record

    def _unmarked(self, raw: str) -> str | None:
        """The text as a person read it: without a byte-order mark, colour escapes (``dmesg
        --color=always``, coloured journal output), the markup of logwatch's HTML report
        (``Format = html``: each message in a table cell; entities decoded, so a redacted
        ``&lt;ip&gt;`` is read) and the no-break or zero-width spaces of a web page. None
        for an HTML section heading, which starts that service's section. One pass each:
        decoded text is never unmarked again."""
        text = raw[1:] if raw.startswith("\ufeff") else raw  # a byte-order mark (Windows)
        text = _SGR.sub("", text) if "\x1b[" in text else text
        if "<" in text and _HTML_TAG.search(text) is not None:
            heading = _HTML_SECTION.search(text)
            if heading is not None:
                self.section = html.unescape(heading["name"]).strip()
                return None
            text = html.unescape(_HTML_TAG.sub("", text))
        if not text.isascii():
            text = text.translate(_WEB_SPACES)
        return text

    def _parse_text(self, raw: str, lineno: int) -> Record | None:
        line = raw[:MAX_LINE].rstrip("\r\n")
        if "Begin" in line or "End" in line:
            ruler = _RULER.fullmatch(line)
            if ruler is not None:
                self.section = ruler["name"] if ruler["edge"] == "Begin" else None
                return None
        in_kernel = self.section is None or _kernel_section(self.section)
        times = _TIMES.fullmatch(line) if "Time(s): " in line[:32] else None
        if times is not None:
            inner = self._parse_line(times["msg"], lineno)
            if inner is None:
                return None
            inner.raw, inner.count = raw, int(times["n"])
            if inner.fmt == "bare":
                inner.fmt = "logwatch"
            inner.kernel = inner.kernel and in_kernel
            return inner
        record = self._parse_line(raw, lineno)
        if record is not None and record.fmt == "bare" and not in_kernel:
            record.kernel = False
        return record

    def _parse_line(self, raw: str, lineno: int) -> Record | None:
        line = raw[:MAX_LINE].rstrip("\r\n")
        if not line.strip() or (line.startswith("-- ") and line.endswith(" --")):
            return None
        if line[0].isdigit():
            m = _KMSG.fullmatch(line)
            if m:
                up = int(m["usec"]) / 1e6
                return self._kernel(raw, lineno, "kmsg", m["msg"], uptime=up, caller=m["caller"])
        if line[0] == "<":
            m = _RFC5424.fullmatch(line)
            if m:
                msg = (m["msg"] or "").lstrip("\ufeff")
                return self._tagged(
                    raw, lineno, "rfc5424", parse_rfc3339(m["ts"]), m["host"], m["app"], msg
                )
            m = re.fullmatch(r"<\d{1,4}>(\[.*)", line)
            if m:  # dmesg -r
                return self._bracketed(raw, lineno, "dmesg-raw", m[1])
        m = _DMESG_X.fullmatch(line)
        if m:
            if m["fac"] != "kern":
                return Record(self.source, lineno, raw, m["rest"], False, "dmesg-x")
            return self._dmesg_body(raw, lineno, "dmesg-x", m["rest"])
        m = _ISO_START.fullmatch(line)
        if m:
            return self._after_stamp(raw, lineno, "rfc3339", parse_rfc3339(m["ts"]), m["rest"])
        m = _BSD_START.fullmatch(line)
        if m:
            when = parse_bsd(" ".join(m["ts"].split()), self.reference)
            return self._after_stamp(raw, lineno, "rfc3164", when, m["rest"], bare=False)
        m = _FULL_START.fullmatch(line)
        if m:
            when = parse_rfc3339(m["ts"].replace(" ", "T"))
            return self._after_stamp(raw, lineno, "journal-full", when, m["rest"], bare=False)
        m = _UNIX_START.fullmatch(line)
        if m:
            when = datetime.fromtimestamp(float(m["ts"]), timezone.utc)
            return self._after_stamp(raw, lineno, "journal-unix", when, m["rest"], bare=False)
        if line[0] == "[":
            m = _CTIME.fullmatch(line)
            if m:
                return self._kernel(raw, lineno, "dmesg-ctime", m["msg"], when=self._ctime(m))
            m = _MONO_START.fullmatch(line)
            if m:
                tagged = _TAGGED.fullmatch(m["rest"])
                if tagged and not _looks_kernel(m["rest"]):
                    return self._tagged(
                        raw,
                        lineno,
                        "journal-monotonic",
                        None,
                        tagged["host"],
                        tagged["prog"],
                        tagged["msg"],
                        uptime=float(m["up"]),
                    )
            return self._bracketed(raw, lineno, "dmesg", line)
        m = _KERNEL_TAG.fullmatch(line)
        if m:
            return self._kernel(raw, lineno, "kernel-tag", m["msg"])
        return self._kernel(raw, lineno, "bare", line.strip())

    # helpers

    def _dmesg_body(self, raw: str, lineno: int, fmt: str, rest: str) -> Record:
        """What follows dmesg's own decoration: every line is the kernel's, never ``tag:``."""
        m = _CTIME.fullmatch(rest)
        if m:
            return self._kernel(raw, lineno, fmt, m["msg"], when=self._ctime(m))
        m = _ISO_START.fullmatch(rest)
        if m and not m["pri"]:
            return self._kernel(raw, lineno, fmt, m["rest"], when=parse_rfc3339(m["ts"]))
        return self._bracketed(raw, lineno, fmt, rest)

    @staticmethod
    def _ctime(m: re.Match[str]) -> datetime | None:
        year = int(m["y"])
        if not 1 <= year <= 9999:  # dmesg -T of a clock set to year 0: no date Python has
            return None
        when = parse_bsd(f"{m['mo']} {m['d']} {m['t']}", datetime(year, 12, 31))
        return None if when is None else when.replace(year=year)

    def _after_stamp(
        self, raw: str, lineno: int, fmt: str, when: datetime | None, rest: str, bare: bool = True
    ) -> Record:
        rep = _REPEATED.fullmatch(rest)
        if rep:
            host = rep["host"].strip() if rep["host"] else None
            return Record(
                self.source,
                lineno,
                raw,
                rest,
                False,
                fmt,
                host=host,
                time=when,
                repeats=int(rep["n"]),
            )
        hostless = _HOSTLESS.fullmatch(rest) if not bare else None
        if hostless and rest.split(" ", 1)[0].endswith(":"):
            return self._tagged(raw, lineno, fmt, when, None, hostless["prog"], hostless["msg"])
        tagged = _TAGGED.fullmatch(rest)
        if tagged and not (bare and _looks_kernel(rest)):
            return self._tagged(
                raw, lineno, fmt, when, tagged["host"], tagged["prog"], tagged["msg"]
            )
        if bare:  # dmesg --time-format=iso: no host, no tag, every line is the kernel's
            return self._kernel(raw, lineno, "dmesg-iso", rest, when=when)
        return Record(self.source, lineno, raw, rest, False, fmt, time=when)

    def _bracketed(self, raw: str, lineno: int, fmt: str, text: str) -> Record:
        up, caller, msg = strip_kernel_prefix(text)
        return self._kernel(raw, lineno, fmt, msg, uptime=up, caller=caller)

    def _kernel(
        self,
        raw: str,
        lineno: int,
        fmt: str,
        message: str,
        when: datetime | None = None,
        uptime: float | None = None,
        caller: str | None = None,
    ) -> Record:
        up, call, msg = strip_kernel_prefix(message)
        return Record(
            self.source,
            lineno,
            raw,
            msg,
            True,
            fmt,
            time=when,
            uptime=uptime if uptime is not None else up,
            caller=caller or call,
        )

    def _tagged(
        self,
        raw: str,
        lineno: int,
        fmt: str,
        when: datetime | None,
        host: str | None,
        prog: str,
        message: str,
        uptime: float | None = None,
    ) -> Record:
        kernel = prog == "kernel"
        up, caller, msg = strip_kernel_prefix(message) if kernel else (None, None, message)
        repeats = 0
        rep = _RSYSLOG_REPEAT.fullmatch(msg)
        if rep:
            repeats = int(rep["n"])
            msg = rep["msg"]
            if kernel:
                up, caller, msg = strip_kernel_prefix(msg)
        return Record(
            self.source,
            lineno,
            raw,
            msg,
            kernel,
            fmt,
            host=host,
            program=prog,
            time=when,
            uptime=uptime if uptime is not None else up,
            caller=caller,
            repeats=repeats,
        )


def _looks_kernel(text: str) -> bool:
    """True when text is itself a window-shrink wording (so not ``host prog: message``)."""
    return parse_shrink(strip_kernel_prefix(text)[2]) is not None


# --- journal JSON and export -----------------------------------------------------------------


def _journal_record(
    source: str, lineno: int, fields: dict[str, object], raw: str, fmt: str
) -> Record | None:
    msg = fields.get("MESSAGE")
    if isinstance(msg, list):
        try:
            msg = log_text(bytes(int(b) & 0xFF for b in msg))
        except (TypeError, ValueError, OverflowError):  # [1e400], [Infinity], ["a"]
            return None
    if isinstance(msg, bytes):
        msg = log_text(msg)
    if not isinstance(msg, str):
        return None
    text = {k: (log_text(v) if isinstance(v, bytes) else v) for k, v in fields.items()}
    kernel = text.get("_TRANSPORT") == "kernel" or text.get("SYSLOG_IDENTIFIER") == "kernel"
    when = None
    stamp = text.get("__REALTIME_TIMESTAMP")
    if isinstance(stamp, str) and stamp.isdigit() and len(stamp) < 20:
        try:
            when = datetime.fromtimestamp(int(stamp) / 1e6, timezone.utc)
        except (ValueError, OverflowError, OSError):
            when = None  # beyond the year 9999: not a time a journal wrote
    uptime = None
    mono = text.get("_SOURCE_MONOTONIC_TIMESTAMP")
    if isinstance(mono, str) and mono.isdigit() and len(mono) < 20:
        uptime = int(mono) / 1e6
    host = text.get("_HOSTNAME")
    prog = text.get("SYSLOG_IDENTIFIER")
    return Record(
        source,
        lineno,
        raw,
        msg[:MAX_LINE].rstrip("\n"),
        kernel,
        fmt,
        host=host if isinstance(host, str) else None,
        program=prog if isinstance(prog, str) else None,
        time=when,
        uptime=uptime,
    )


#: The fields of a journal entry that treason reads; the others are counted, never kept.
JOURNAL_FIELDS = frozenset(
    (
        "MESSAGE",
        "_TRANSPORT",
        "SYSLOG_IDENTIFIER",
        "__REALTIME_TIMESTAMP",
        "_SOURCE_MONOTONIC_TIMESTAMP",
        "_HOSTNAME",
    )
)
#: Most fields one export entry may have (journald writes a few dozen): the cap that keeps an
#: entry of millions of fields from being read as one.
MAX_FIELDS = 4096
#: Largest export entry, all fields together: a kernel message is a few hundred bytes, and
#: a decompression bomb of huge fields stops here instead of being inflated to the end.
MAX_ENTRY = 64 << 20


def read_export(source: str, stream: BinaryIO) -> Iterator[Record]:
    """``journalctl -o export``: ``KEY=value`` lines, binary fields as ``KEY\\n<le64><data>``,
    entries separated by an empty line. Only ``JOURNAL_FIELDS`` are kept, each cut to
    MAX_LINE * 4 bytes, so memory stays bounded whatever an entry holds."""
    fields: dict[str, bytes] = {}
    count = lineno = start = size = 0
    keep = MAX_LINE * 4
    while True:
        line = stream.readline(MAX_LINE * 8)
        lineno += 1
        if not line or line == b"\n":
            if fields:
                raw = "\n".join(f"{k}={log_text(v)}" for k, v in fields.items())
                rec = _journal_record(source, start, dict(fields), raw, "journal-export")
                if rec is not None:
                    yield rec
            fields, count, size = {}, 0, 0
            if not line:
                return
            continue
        if count == 0:
            start = lineno
        count += 1
        size += len(line)
        if size > MAX_ENTRY:
            raise TreasonError(source, _too_large(start))
        if count > MAX_FIELDS:
            raise TreasonError(
                source,
                f"journal export entry at line {start} has more than {MAX_FIELDS} fields "
                "(the cap; journald writes a few dozen)",
            )
        body = line.rstrip(b"\n")
        if b"=" in body:
            key, _, value = body.partition(b"=")
            if log_text(key) in JOURNAL_FIELDS:
                fields[log_text(key)] = value[:keep]
            continue
        length = stream.read(8)
        if len(length) < 8:
            raise TreasonError(source, f"journal export cut inside a field at line {lineno}")
        n = int.from_bytes(length, "little")
        size += n
        if size > MAX_ENTRY:
            raise TreasonError(source, _too_large(start))
        value = stream.read(min(n, keep))
        _skip(source, stream, n - len(value) + 1, lineno)  # the rest and the newline after it
        if log_text(body) in JOURNAL_FIELDS:
            fields[log_text(body)] = value


def _too_large(start: int) -> str:
    return (
        f"journal export entry at line {start} is larger than {MAX_ENTRY >> 20} MiB "
        "(the cap; a kernel message is a few hundred bytes)"
    )


def _skip(source: str, stream: BinaryIO, n: int, lineno: int) -> None:
    """Read past ``n`` bytes a megabyte at a time (never all of them at once)."""
    while n > 0:
        got = len(stream.read(min(n, 1 << 20)))
        if got == 0:
            if n > 1:  # only the newline after the last field may be missing
                raise TreasonError(source, f"journal export cut inside a field at line {lineno}")
            return
        n -= got


def json_or_line(parser: LineParser, text: str, lineno: int) -> Record | None:
    """One line of any form: a journal JSON record (even indented, as pasted; ``-o json-seq``
    puts an RS character before it, ``-o json-sse`` ``data: ``), or text."""
    body = text.strip().removeprefix("\ufeff")  # strip() also takes json-seq's RS away
    if body.startswith("data: {"):
        body = body[len("data: ") :]
    if body.startswith("{"):
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            return _journal_record(parser.source, lineno, obj, text.rstrip("\n"), "journal-json")
    return parser.parse(text, lineno)


# --- files -----------------------------------------------------------------------------------

EXPORT_START = re.compile(rb"(__CURSOR|__REALTIME_TIMESTAMP|_[A-Z_]+|MESSAGE|PRIORITY)=")


#: Byte-order marks of UTF-16 text: Windows PowerShell's ``>`` writes UTF-16LE with one.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class _Utf16AsUtf8(io.RawIOBase):
    """UTF-16 text (byte-order mark first) read as UTF-8, 64 KiB at a time."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.decoder = codecs.getincrementaldecoder("utf-16")("replace")
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            raw = self.inner.read(1 << 16)
            self.pending = self.decoder.decode(raw, final=not raw).encode("utf-8", "replace")
            if not raw:
                break
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def as_utf8(stream: io.BufferedReader[Any]) -> io.BufferedReader[Any]:
    """``stream``; or, when it is UTF-16 text (a byte-order mark, then text: no NULs, nearly
    all printable), that text as UTF-8, so the readers and the candidate search see the
    words they look for."""
    head = stream.peek(512)[:512]
    if head[:2] not in _UTF16_BOMS:
        return stream
    body = head[2 : 2 + (len(head) - 2) // 2 * 2]
    text = body.decode("utf-16-le" if head[:2] == b"\xff\xfe" else "utf-16-be", "replace")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if not text or "\x00" in text or printable < 0.9 * len(text):
        return stream
    return io.BufferedReader(_Utf16AsUtf8(stream))


def read_stream(
    source: str, stream: BinaryIO, reference: datetime | None = None, *, join: bool = True
) -> Iterator[Record]:
    """Records of one byte stream, of any supported format (gzip undone first).

    ``join=False`` never reads ahead to join a report broken over lines (``unwrap``): a
    stream followed live gives each line's record as soon as the line is there.
    """
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)  # type: ignore[type-var]
    head = buffered.peek(2)[:2]
    if head == b"\x1f\x8b":
        buffered = io.BufferedReader(gzip.GzipFile(fileobj=buffered))
    try:
        buffered = as_utf8(buffered)
        first = buffered.peek(64)
        if EXPORT_START.match(first):
            yield from read_export(source, buffered)
            return
        lines = (log_text(b) for b in _bounded_lines(buffered, MAX_LINE * 4))
        parser = LineParser(source, reference)
        if join:
            yield from text_records(parser, lines)
            return
        for lineno, text in enumerate(lines, 1):
            rec = json_or_line(parser, text, lineno)
            if rec is not None:
                yield rec
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TreasonError(source, f"cannot read: {exc}") from None


def text_records(parser: LineParser, text_lines: Iterable[str]) -> Iterator[Record]:
    """The record of every line (the first is line 1), with a report broken over lines
    joined again (``unwrap``) and a journal entry printed over lines (``-o json-pretty``,
    ``-o verbose``) read as one record."""
    lines = enumerate(text_lines, 1)
    ahead: deque[tuple[int, str]] = deque()  # lines read to join, not yet parsed
    behind: deque[str] = deque(maxlen=MAX_WRAP + 1)  # with the line being read
    consumed = 0  # the last line a joined report or an entry took
    while True:
        if ahead:
            lineno, text = ahead.popleft()
        else:
            got = next(lines, None)
            if got is None:
                return
            lineno, text = got
        if lineno <= consumed:
            continue
        entry = _entry(parser.source, lineno, text, ahead, lines)
        if entry is not None:
            rec, consumed = entry
            behind.clear()
            if rec is not None:
                yield rec
            continue
        rec = json_or_line(parser, text, lineno)
        behind.append(text)
        if rec is not None and broken(rec):
            ahead.extend(islice(lines, max(0, MAX_WRAP - len(ahead))))
            earlier = tuple(behind)[:-1]
            joined = unwrap(parser, rec, earlier, [t for _, t in islice(ahead, MAX_WRAP)])
            if joined is not None:
                rec, took = joined
                consumed = lineno + took
                behind.clear()  # a line is part of one report at most
        if rec is not None:
            yield rec


#: ``journalctl -o verbose``: each entry starts with its time and cursor (``t=`` is the
#: realtime stamp in hexadecimal microseconds), its fields follow indented, ``KEY=value``.
_VERBOSE_HEAD = re.compile(
    r"\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})? \S{1,64} "
    r"\[s=[0-9a-f]+;i=[0-9a-f]+;b=[0-9a-f]+;m=[0-9a-f]+;t=(?P<t>[0-9a-f]{1,16});x=[0-9a-f]+\]"
)
_VERBOSE_FIELD = re.compile(r"\s+(?P<key>[A-Z0-9_]{1,64})=(?P<value>.*)")
#: ``journalctl -o json-pretty``: one field a line, indented, between ``{`` and ``}``.
_PRETTY_FIELD = re.compile(r'\s+"[A-Za-z0-9_]{1,64}"\s*:\s*\S.*')
#: Most lines one entry printed over lines may take (journald writes a few dozen fields).
MAX_ENTRY_LINES = 512


def entries_first(head: bytes) -> bool:
    """True when a text starts with a journal entry printed over lines (``-o json-pretty``,
    ``-o verbose``): such a file is read line by line, not by the candidate search."""
    first = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    return first == "{" or _VERBOSE_HEAD.fullmatch(first) is not None


def _entry(
    source: str,
    lineno: int,
    text: str,
    ahead: deque[tuple[int, str]],
    lines: Iterator[tuple[int, str]],
) -> tuple[Record | None, int] | None:
    """A journal entry printed over lines starting at ``text`` (``-o json-pretty``: ``{`` to
    ``}``; ``-o verbose``: the time and cursor, then indented fields), as (its record, its
    last line); None when ``text`` starts none. Lines read to find its end wait in
    ``ahead``; an object that does not parse is left to be read line by line."""
    head = text.rstrip("\r\n")
    pretty = head == "{"
    verbose = None if pretty else _VERBOSE_HEAD.fullmatch(head)
    if not pretty and verbose is None:
        return None
    body: list[str] = []
    i = 0
    while len(body) < MAX_ENTRY_LINES:
        if i == len(ahead):
            got = next(lines, None)
            if got is None:
                break
            ahead.append(got)
        line = ahead[i][1].rstrip("\r\n")
        if pretty and line == "}":
            body.append(line)
            break
        # Every line of an entry is a field: anything else ends a verbose entry (the next
        # one, say) and shows a brace that opens no pretty entry, after one look at each line.
        if not (_VERBOSE_FIELD if verbose is not None else _PRETTY_FIELD).fullmatch(line):
            break
        body.append(line)
        i += 1
    if verbose is not None:
        fields: dict[str, object] = {"__REALTIME_TIMESTAMP": str(int(verbose["t"], 16))}
        for line in body:
            m = _VERBOSE_FIELD.fullmatch(line)
            assert m is not None
            fields.setdefault(m["key"], m["value"])
        message = str(fields.get("MESSAGE", ""))
        rec = _journal_record(source, lineno, fields, f"{head} {message}", "journal-verbose")
        return rec, lineno + len(body)
    if not body or body[-1] != "}":
        return None
    try:
        obj = json.loads("{" + "\n".join(body))
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    raw = json.dumps(obj, ensure_ascii=False)
    return _journal_record(source, lineno, obj, raw, "journal-json-pretty"), lineno + len(body)


def _bounded_lines(stream: io.BufferedReader[Any], limit: int) -> Iterator[bytes]:
    """Lines cut to ``limit`` bytes; the rest of a longer line is read and dropped, so a file
    without newlines (a binary dump, a hostile log) never has to fit in memory whole."""
    while True:
        line = stream.readline(limit)
        if not line:
            return
        if len(line) == limit and not line.endswith(b"\n"):
            rest = line
            while len(rest) == limit and not rest.endswith(b"\n"):
                rest = stream.readline(limit)
        yield line


_ROTATION = re.compile(r"^(?P<base>.*?)(?:[.-](?P<n>\d{1,8}))?(?P<gz>\.gz)?$")


def rotation_order(paths: Iterable[str]) -> list[str]:
    """Order files of a rotated set oldest first (``kern.log.2.gz``, ``kern.log.1``,
    ``kern.log``) so repeats read in time order; unrelated files keep their given order."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for path in paths:
        m = _ROTATION.match(path)
        base = m["base"] if m else path
        n = m["n"] if m and m["n"] else None
        # numbered suffixes (.1 newest) count backwards; date suffixes (-20240101) forwards
        rank = 0 if n is None else (-int(n) if len(n) < 8 else int(n) - 10**9)
        groups.setdefault(base, []).append((rank, path))
    ordered: list[str] = []
    for members in groups.values():
        ordered.extend(p for _, p in sorted(members, key=lambda t: (t[0], t[1])))
    return ordered
