"""Kernel reports broken over several lines on their way to a person, joined again.

A logwatch report reaches its reader as mail, and mail clients break lines longer than 72-78
characters: ``1 Time(s): TCP: Treason uncloaked! Peer 203.0.113.45:51234/443 shrinks`` on
one line, ``window 1898670412:1898670413. Repaired.`` on the next. Pasted from a terminal,
a line is cut at the terminal's width, inside a word; in a mail's raw quoted-printable source
it ends in ``=`` (a soft break). Read line by line, each piece is almost a report and none
is one, and a log of such pieces would read as all clear.

So a kernel line that holds a report's words but is none (``grammar.has_piece_words``) is
joined with up to ``MAX_WRAP`` lines before and after it, fewest lines first, at a space
(mail), at nothing (terminal), or at a soft break; the first join that the grammar reads as
a whole report stands for those lines. Nothing else is ever joined, and the grammar anchors
every wording at both ends, so unrelated neighbours cannot make a report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from treason.logs.grammar import has_piece_words, parse_shrink

if TYPE_CHECKING:
    from treason.logs.formats import LineParser, Record

#: Lines a report may have been broken into on either side of the line being read (a long
#: IPv6 address and a decorated prefix at 40 columns make six pieces).
MAX_WRAP = 5
#: Longest text tried as a joined report: the longest wording in the longest container is
#: far shorter, and pieces of a hostile log cannot make the grammar read megabytes.
MAX_JOINED = 2048

_QUOTE = re.compile(r"(?:> ?)+")
_HYPHENATED = re.compile(r"\w-\Z")

#: What every join that is a report holds once its white space is taken out.
_SKELETON = ("shrinkswindow", "shrunkwindow", "zero-windowon")

#: Formats whose message is a field of a record, not a line of text: never broken.
_RECORDS = ("journal-json", "journal-json-pretty", "journal-verbose", "journal-export")


def broken(record: Record) -> bool:
    """A line that holds a report's words but is none: perhaps a piece of one. Whose line
    it is cannot be told from a piece (``[ 8123.4] Peer 192.0.2.1:80/443 unexpectedly`` reads
    as a journal line of host ``Peer``): the joined line says."""
    if record.fmt in _RECORDS or not has_piece_words(record.raw):
        return False
    return parse_shrink(record.message) is None


def unwrap(
    parser: LineParser, record: Record, before: Sequence[str], after: Sequence[str]
) -> tuple[Record, int] | None:
    """The report ``record``'s line makes with the lines ``before`` it (oldest first) and
    ``after`` it, and how many of ``after`` it took; None when no join is a report.

    The fewest lines that make a report are taken, then earlier lines as long as the join
    stays a report (the piece with the time stamp, say). The joined record has the first
    piece's line number and the joined text as ``raw``.
    """
    squeezed = _squeezed([*before, record.raw, *after])
    if not any(words in squeezed for words in _SKELETON):
        return None  # no join of these lines holds a wording's words in order
    combos = sorted(
        ((b, a) for b in range(len(before) + 1) for a in range(len(after) + 1) if a or b),
        key=lambda ba: (ba[0] + ba[1], ba[0]),
    )
    for b, a in combos:
        joined = _report(parser, record, before, b, after[:a])
        if joined is None:
            continue
        while b < len(before):
            longer = _report(parser, record, before, b + 1, after[:a])
            if longer is None:
                break
            joined, b = longer, b + 1
        return joined, a
    return None


def _report(
    parser: LineParser, record: Record, before: Sequence[str], b: int, after: Sequence[str]
) -> Record | None:
    """The report the last ``b`` lines of ``before``, ``record``'s line and ``after`` make."""
    pieces = [*before[len(before) - b :], record.raw, *after]
    if sum(map(len, pieces)) > MAX_JOINED:
        return None
    for text in _joins(pieces):
        scratch = type(parser)(parser.source, parser.reference)
        scratch.section = parser.section
        joined = scratch.parse(text, record.lineno - b)
        if joined is not None and joined.kernel and parse_shrink(joined.message) is not None:
            joined.raw = text
            return joined
    return None


def _squeezed(pieces: Sequence[str]) -> str:
    """The pieces with quote marks, soft breaks and all white space taken out: a cheap test
    that rules out almost every line holding a wording's word (``heartbeat 5ms ago``)
    before any join is parsed."""
    out = []
    for piece in pieces:
        piece = piece.strip()
        if piece.startswith(">"):
            piece = _QUOTE.sub("", piece, count=1)
        out.append(piece.removesuffix("="))
    return "".join("".join(out).split())


def _joins(pieces: Sequence[str]) -> list[str]:
    """The pieces joined as a mail client broke them (at a space, after a hyphen, or at a
    soft break ``=``) and as a terminal did (inside a word)."""
    first, *rest = (p.rstrip("\r\n") for p in pieces)
    spaced = tight = first
    soft = False
    for piece in rest:
        piece = _QUOTE.sub("", piece.lstrip(), count=1) if piece.lstrip().startswith(">") else piece
        if spaced.endswith("="):  # quoted-printable soft break: the line goes on, no space
            spaced, soft = spaced[:-1] + piece.lstrip(), True
        elif _HYPHENATED.search(spaced):  # broken after a word's hyphen: zero-|window
            spaced += piece.lstrip()
        else:
            spaced = spaced.rstrip() + " " + piece.lstrip()
        tight += piece
    if soft:
        spaced = spaced.replace("=3D", "=").replace("=20", " ")
    return [spaced] if tight == spaced else [spaced, tight]
