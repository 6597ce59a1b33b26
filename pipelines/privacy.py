"""Masking of personal data for every output (section 6 of issue 5, issue 9).

- ID numbers: first 6 + ``********`` + last 4 (``370481********123X``);
- phones: first 3 + ``****`` + last 4 (``138****5678``);
- names: the surname plus ``*`` (``张*``; two-character compound surnames such as 欧阳 kept).

The ``mask_*`` functions take one value; :func:`mask_series` works on a whole column.
:func:`scrub_text` is *the* masker of free text: every ID number or mobile number found
inside a note, a title or a reason is masked, however it was typed. :func:`find_unmasked` is
the scanner the tests run over every output file; it is deliberately wider than the masker.

How a number is read, by both: the text is first *folded* character by character (full-width
and other Unicode digits to ``0-9``, ``Ｘ`` to ``X``, ``＋`` to ``+``, every space, dash, dot
and slash to one of `` -./``, and every invisible or line-breaking character, i.e. format
characters such as zero-width spaces, U+2060, the BOM and the soft hyphen, control characters
such as NUL, tab, CR and LF, and U+2028/U+2029, to a space), so positions in the folded text
are positions in the typed text and everything but the masked digits comes out as it was
typed. Then a *run* is digits
joined by short clusters of separators (``370481 1990-0101 1234``); its *groups* are the
digit strings between separators. A number is some consecutive whole groups of a run (a
group is never cut: ``138123456789`` is no phone), tried from the left:

- a mobile: ``1[3-9]`` + 9 digits, after an optional ``86`` / ``0086`` prefix (a ``+`` is
  kept as typed, the prefix's digits too);
- an ID number: 18 digits (the last may be ``X``/``x``) or the old 15, not starting with 0.

Where both fit, the mobile wins (``13812345678 2023`` is a phone and a year). What is not a
number of anyone: a *date* (``2023-05-01``: never cut, and held whole only as an ID number's
birth date or a mobile's last 8 digits), a uuid or a hex digest (left alone), and the
*fraction of a coordinate*. How decimals are read:

- a *decimal point* is a lone bare ASCII ``.`` between digits (the only dot, of any kind,
  between the digits around it up to the next other separator). No number crosses it
  (``13812345678.0`` is a phone stored as a float). A full stop ``。``/``．``/``｡`` or
  another dot such as ``·`` is never a decimal point: it ends a sentence or joins the groups
  of a number (``电话13812345678。13912345678`` is two phones);
- the digits right after a decimal point are its fraction, where no number starts, unless
  what precedes or their count says otherwise. After a number, or a whole part of four or
  more digits (``13812345678.13912345678``, a sentence typed with a dot), anything may
  start. After a whole part of 0 (``0.13812345678``) nothing does. After a whole part that
  can be a coordinate's degrees (10 to 180), a fraction of up to 15 digits is one
  (``35.16394660492``, ``117.138123456789012``; an 18-digit ID number is masked). After any
  other whole part of up to three digits (a list number ``1.``, a float's ``1.607142857``),
  a fraction is one unless it is by itself a whole phone (11 digits) or ID number (18), or
  it is short (up to 8 digits) and the first group of a spaced or dashed number:
  ``1.13812345678`` and ``1.138 1234 5678`` are masked. The scanner is wider: after degrees, an 11-digit fraction is
  a phone too unless the decimal is one of a pair of coordinates joined by a comma or spaces
  (``35.16394660492,117.13812345678``, an ODK geopoint). Left unread by both, and so
  documented: a list number then a number whose first group has 9 to 17 digits but 11, as
  a float's fraction may have (``1.8613812345678``, ``1.370481900101 123``);
- one or two digits followed by a dot of any kind never start a number (a list number
  ``1．``, a decimal's whole part), and a number that is whole before a dot ends there
  (``370481900101123。138 1234 5678`` is an ID number and a phone).
Each run is read in time linear in its length, so a hostile 1 MB note costs about a second.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any

import pandas as pd

COMPOUND_SURNAMES = frozenset(
    [
        "欧阳",
        "司马",
        "上官",
        "诸葛",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "长孙",
        "宇文",
        "司徒",
        "夏侯",
        "轩辕",
        "令狐",
        "端木",
        "独孤",
        "南宫",
        "西门",
        "钟离",
    ]
)

# --- folding: one character for one, so a position in the folded text is one in the typed --
_SPACES = " \t\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"  # fmt: skip
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_DOTS = ".\u00b7\u2024\u2027\u30fb\u3002\uff0e\uff61"  # incl. full-width ． and 。
_SLASHES = "/\u2044\u2215\uff0f"
# Invisible or line-breaking characters: every format character (Cf: zero-width spaces and
# joiners, U+2060, the BOM, the soft hyphen, bidi marks …), every control character (Cc: NUL,
# tab, CR, LF …) and the line and paragraph separators. Typed between digits they hide nothing:
# each is read as a space.
_INVISIBLE = "".join(
    chr(c)
    for c in chain(range(0x20000), range(0xE0000, 0xE1000))  # Cf and Cc live in these planes
    if unicodedata.category(chr(c)) in ("Cf", "Cc", "Zl", "Zp")
)
_FOLD = str.maketrans(
    {
        **dict.fromkeys(_SPACES, " "),
        **dict.fromkeys(_INVISIBLE, " "),
        **dict.fromkeys(_DASHES, "-"),
        **dict.fromkeys(_DOTS, "."),
        **dict.fromkeys(_SLASHES, "/"),
        "\uff38": "X",
        "\uff58": "x",
        "\uff0b": "+",
        "\ufe62": "+",
        "\uff3f": "_",
        "\uff08": "(",
        "\uff09": ")",
        "\uff5e": "~",
        "\u301c": "~",
    }
)
_WIDE_DIGIT = re.compile(r"(?![0-9])\d")  # full-width ０-９ and every other script's digits


def _fold(text: str) -> str:
    text = text.translate(_FOLD)
    if text.isascii():
        return text
    return _WIDE_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group(0), 0)), text)


# Tokens whose digits are no one's number: uuids (submission ids) and hex digests (photo file
# names). Neither the masker nor the scanner looks inside them.
_OPAQUE = re.compile(
    r"(?<![0-9A-Za-z])(?:"
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{32,})(?![0-9A-Za-z])"
)
# The masked forms themselves (138****5678, 370481********1234): no digits of theirs are read, so
# a masked tail next to the next number (130****1300。0086130****0000) is no new number.
_MASKED = re.compile(r"[0-9]{3}\*{4}[0-9]{4}|[0-9]{6}\*{8}[0-9]{3}[0-9Xx]")
_GROUP = re.compile(r"[0-9]+[Xx]?")
_PHONE = re.compile(r"(0086|86)?1[3-9][0-9]{9}")


@dataclass(frozen=True)
class _Number:
    """A personal number found in a text: ``text[start:end]`` as typed."""

    start: int
    end: int
    digits: str  # folded: ASCII digits, the last maybe X/x
    kind: str  # "id" or "phone"
    prefix: int = 0  # digits of a 86 / 0086 prefix (phones)
    own: int = 0  # where the phone's own 11 digits start in the text


@dataclass(frozen=True)
class _Run:
    """One run of digit groups (folded text from ``offset``), read as :class:`_Number`\\ s."""

    text: str
    offset: int
    groups: list[tuple[int, int]]
    typed: str  # the same run as typed (one character for one)
    paired: set[int]  # where the fractions of coordinate pairs start (see _paired_fractions)

    def seps(self) -> list[str]:
        return [self.text[a[1] : b[0]] for a, b in pairwise(self.groups)]

    def typed_seps(self) -> list[str]:
        return [self.typed[a[1] : b[0]] for a, b in pairwise(self.groups)]


class _Reader:
    """Finds ID numbers and mobiles: ``seps`` may join digits, in clusters of up to
    ``longest``; ``id_number`` is what an ID number's digits must match, ``start`` what any
    number's first digits must. With ``paired_phones``, an 11-digit fraction after a whole
    part that can be degrees is read as a phone unless the decimal is one of a pair of
    coordinates (``35.16394660492,117.13812345678``)."""

    def __init__(self, seps: str, longest: int, id_number: str, start: str, paired_phones: bool) -> None:  # fmt: skip
        sep = f"[{re.escape(seps)}]{{1,{longest}}}"
        self._start = re.compile(start)  # how any number begins: a quick no for most digits
        self._run = re.compile(rf"[0-9](?:[0-9]|{sep}(?=[0-9]))*(?:[Xx](?![A-Za-z0-9]))?")
        self._id = re.compile(id_number)
        self._lengths = (11, 13, 14, 15, 16, 17, 18)
        self._paired_phones = paired_phones

    def numbers(self, text: str) -> list[_Number]:
        folded = _OPAQUE.sub(lambda m: "#" * len(m.group(0)), _fold(text))
        if "*" in folded:
            folded = _MASKED.sub(lambda m: "#" * len(m.group(0)), folded)
        paired = _paired_fractions(folded, text) if self._paired_phones else set()
        found: list[_Number] = []
        for m in self._run.finditer(folded):
            if m.end() - m.start() >= 11:  # shorter runs hold no number of anyone
                groups = [(g.start(), g.end()) for g in _GROUP.finditer(m.group(0))]
                typed = text[m.start() : m.end()]
                found += self._read(_Run(m.group(0), m.start(), groups, typed, paired))
        return found

    def _is_fraction(self, run: _Run, digits: list[str], seps: list[str], i: int, ended: int) -> bool:  # fmt: skip
        """Whether group ``i``, right after a decimal point, is a decimal's fraction (no
        number starts there) rather than a number after a list number or a sentence (or after
        a number that ends at group ``ended``, the point being its full stop)."""
        whole, fraction = digits[i - 1], digits[i]
        if ended == i - 1 or len(whole) > 3 or not fraction.isdigit():
            return False  # after a number, a year or a count: a sentence's full stop
        if whole[0] == "0":
            return True  # 0.13812345678 is no list number
        if not _degrees(whole):  # a list number 1. or a float's whole part
            if len(fraction) in (11, 18):
                return False  # a whole phone or ID number
            # a short first group of a spaced or dashed number (1.138 1234 5678) is no fraction
            return not (len(fraction) <= 8 and i < len(seps) and "." not in seps[i])
        if len(fraction) == 11 and self._paired_phones:  # the scanner: a phone, unless the
            return run.offset + run.groups[i][0] in run.paired  # decimal is a coordinate's
        return len(fraction) <= 15  # a coordinate's (or a float's) fraction

    def _read(self, run: _Run) -> list[_Number]:
        seps = run.seps()
        digits = [run.text[a:b] for a, b in run.groups]
        points = _decimal_points(seps, run.typed_seps())
        dates = _dates(digits, seps)
        cum = [0]
        for d in digits:
            cum.append(cum[-1] + len(d))
        at = {c: k for k, c in enumerate(cum)}  # digits so far -> index of the next group
        out: list[_Number] = []
        i, n, ended = 0, len(digits), -1
        while i < n:
            k = bisect_left(points, i)  # the first decimal point at or after group i
            if k < len(points) and points[k] == i:  # group i is the digits after a point
                if self._is_fraction(run, digits, seps, i, ended):
                    i += 1
                    continue
                k += 1
            stop = points[k] if k < len(points) else n  # a number never crosses a point
            best = self._at(i, digits, cum, at, stop, dates, seps)
            if best is None:
                i += 1
                continue
            j, kind, number = best
            prefix = len(number) - 11 if kind == "phone" else 0
            out.append(
                _Number(
                    run.offset + run.groups[i][0],
                    run.offset + run.groups[j][1],
                    number,
                    kind,
                    prefix,
                    run.offset + _position(run, digits, i, prefix),
                )
            )
            i, ended = j + 1, j
        return out

    def _at(self, i: int, digits: list[str], cum: list[int], at: dict[int, int], stop: int, dates: list[int], seps: list[str]) -> tuple[int, str, str] | None:  # fmt: skip
        """The number starting at group ``i`` and ending before group ``stop``: a phone if
        one fits, else the longest ID number, but one that ends at a dot, which may be a full
        stop (``370481900101123。138 1234 5678``), is taken before a longer one."""
        best = None
        if len(digits[i]) <= 2 and i < len(seps) and "." in seps[i]:
            return None  # a list number (1. 1．) or a decimal's whole part: no number's start
        ahead = "".join(digits[i : i + 18])  # the digits any number starting here can have
        if not self._start.match(ahead):
            return None
        for length in self._lengths:
            end = at.get(cum[i] + length)
            if end is None or end > stop:
                continue
            j = end - 1
            number = ahead[:length]
            if _PHONE.fullmatch(number):
                if _spares_dates(i, j, cum, dates, len(number) - 8):
                    return j, "phone", number
            elif self._id.fullmatch(number) and _spares_dates(i, j, cum, dates, 6 if len(number) == 18 else None):  # fmt: skip
                best = (j, "id", number)
                if len(number) in (15, 18) and j < len(seps) and "." in seps[j]:
                    return best
        return best


def _decimal_points(seps: list[str], typed: list[str]) -> list[int]:
    """Groups that follow a decimal point, in order. A bare ASCII "." is one (35.1639,
    13812345678.0) unless the digits it joins, up to the next other separator, hold several
    dots of any kind (138.1234.5678, 2023.05.01, 35.1。138): "35.163946 117.138123" is two
    decimals, "+86 138.1234.5678" one phone. A full stop (。．｡) or another dot (·・) is
    never a decimal point: it ends a sentence or joins the groups of a number."""
    points: list[int] = []
    word: list[int | None] = []  # the bare dots of the current dotted word (None: not ASCII)
    for k, (s, t) in enumerate(zip([*seps, " "], [*typed, " "], strict=True)):
        if s == ".":
            word.append(k + 1 if t == "." else None)
            continue
        if len(word) == 1 and word[0] is not None:
            points.append(word[0])
        word = []
    return points


def _degrees(whole: str) -> bool:
    """Whether the whole part of a decimal can be a coordinate's degrees: 10 to 180, as the
    latitudes and longitudes of China are (a one-digit whole part is a list number: 1.)."""
    return whole.isdigit() and len(whole) in (2, 3) and whole[0] != "0" and int(whole) <= 180


# A decimal whose whole part can be degrees (see _degrees), with an ASCII dot (checked in the
# typed text); two of them joined by a comma or spaces are a pair of coordinates.
_COORDINATE = re.compile(
    r"(?<![0-9.])(?:1[0-7][0-9]|180|[1-9][0-9])\.([0-9]{1,15})(?![0-9]|\.[0-9])"
)
_BETWEEN = re.compile(r",? *-?")


def _paired_fractions(folded: str, text: str) -> set[int]:
    """Where the fractions of coordinates typed in pairs start (``35.16394660492,117.1381``,
    an ODK geopoint ``35.16394660492 117.13812345678 60.0 5.0``)."""
    found = [m for m in _COORDINATE.finditer(folded) if text[m.start(1) - 1] == "."]
    paired: set[int] = set()
    for a, b in pairwise(found):
        gap = folded[a.end() : b.start()]
        if gap and _BETWEEN.fullmatch(gap):
            paired.update((a.start(1), b.start(1)))
    return paired


def _dates(digits: list[str], seps: list[str]) -> list[int]:
    """Index of the first group of each date (YYYY-MM-DD, / or . alike) in a run."""
    found = []
    for k in range(len(digits) - 2):
        y, m, d = digits[k : k + 3]
        if (
            len(y) == 4
            and 1 <= len(m) <= 2
            and 1 <= len(d) <= 2
            and seps[k] == seps[k + 1]
            and seps[k] in ("-", "/", ".")
            and y[:2] in ("19", "20")
            and 1 <= int(m) <= 12
            and 1 <= int(d) <= 31
        ):
            found.append(k)
    return found


def _spares_dates(i: int, j: int, cum: list[int], dates: list[int], at: int | None) -> bool:
    """A number never cuts a date, and holds at most one whole, ``at`` digits in: an ID
    number's birth date (6), or a mobile's last 8 digits typed like one (138.2023.05.01)."""
    touched = dates[bisect_left(dates, i - 2) : bisect_right(dates, j)]  # dates are sorted
    if not touched:
        return True
    k = touched[0]
    return len(touched) == 1 and at is not None and i < k and k + 2 <= j and cum[k] - cum[i] == at


def _position(run: _Run, digits: list[str], i: int, skip: int) -> int:
    """Index in ``run.text`` of the digit ``skip`` digits into the number starting at ``i``."""
    for k in range(i, len(digits)):
        if skip < len(digits[k]):
            return run.groups[k][0] + skip
        skip -= len(digits[k])
    return run.groups[-1][1]


# The masker: spaces, dashes, dots, slashes, up to 3 in a row (" - "). ID numbers: 18 or 15
# digits, not starting with 0. The scanner adds _()~, runs of up to 6, and any 15 to 18 digits.
_MASKER = _Reader(" -./", 3, r"[1-9][0-9]{16}[0-9Xx]|[1-9][0-9]{14}", r"[1-9]|0086", False)
_SCANNER = _Reader(" -./_()~", 6, r"[0-9]{14,17}[0-9Xx]", r"[0-9]", True)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


_SEPARATORS = re.compile(r"[\s\-./_()~]")


def mask_id_number(value: Any) -> Any:
    """``370481199001011234`` -> ``370481********1234``. Blank stays blank.

    Separators and full-width digits are read through (``370481 19900101 1234`` is masked
    alike). Anything that is not 15 or 18 characters then is masked entirely: a malformed
    number is still personal data.
    """
    if _blank(value):
        return value
    text = str(value).strip()
    if not text:
        return text
    compact = _SEPARATORS.sub("", _fold(text))
    if len(compact) in (15, 18):
        return compact[:6] + "********" + compact[-4:]
    return "*" * len(text)


def mask_phone(value: Any) -> Any:
    """``13812345678`` -> ``138****5678``; separators, full-width digits and a
    ``+86``/``0086``/``86`` prefix are dropped first."""
    if _blank(value):
        return value
    text = _SEPARATORS.sub("", _fold(str(value)))
    if not text:
        return text
    text = re.sub(r"^(?:\+?86|0086)(?=1[0-9]{10}$)", "", text)
    if len(text) >= 7:
        return text[:3] + "****" + text[-4:]
    return "*" * len(text)


def mask_name(value: Any) -> Any:
    """``张三`` -> ``张*``; ``欧阳娜娜`` -> ``欧阳*``; a Latin name keeps its first letter."""
    if _blank(value):
        return value
    text = str(value).strip()
    if not text:
        return text
    keep = 2 if text[:2] in COMPOUND_SURNAMES and len(text) > 2 else 1
    return text[:keep] + "*"


def mask_series(series: pd.Series, kind: str) -> pd.Series:
    """Mask a whole column; ``kind`` is ``id_number``, ``phone`` or ``name``."""
    funcs = {"id_number": mask_id_number, "phone": mask_phone, "name": mask_name}
    if kind not in funcs:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(funcs)}")
    return series.map(funcs[kind], na_action="ignore")


# Every number the masker reads has 11 digits or more (a mobile; an ID number 15 or 18), all
# in one run: digits joined by up to 3 of its separators. Folding turns into a digit exactly the
# characters ``\d`` matches, and into such a separator exactly the characters of _JOINS, so a
# text without 11 digits joined that way holds no number and is returned as it is, unread: most
# texts (a reason, a note, a record's id). Every character beyond U+FFFF counts as a separator
# here: listing the few that are would have each one checked in turn, five times slower.
_JOINS = "".join(
    re.escape(chr(c)) for c, to in _FOLD.items() if to in (" ", "-", ".", "/") and c < 0x10000
)
_ELEVEN_DIGITS = re.compile(rf"\d(?:[{_JOINS}\U00010000-\U0010ffff]{{0,3}}\d){{10}}")


def scrub_text(text: str) -> str:
    """Mask ID numbers and mobile numbers wherever they appear in free text (a suggestion, a
    note, a title), however typed: ``电话+86 138.1234.5678`` -> ``电话+86 138****5678``,
    ``３７０４８１－１９９０－０１０１－１２３４`` -> ``370481********1234``.

    Everything else is left exactly as typed: the prefix of a phone, the text around, uuids,
    coordinates and dates. See the module docstring for how a number is read.
    """
    if not _ELEVEN_DIGITS.search(text):  # no run of digits long enough for a number
        return text
    found = _MASKER.numbers(text)
    if not found:
        return text
    out, last = [], 0
    for n in found:
        if n.kind == "id":
            masked = n.digits[:6] + "********" + n.digits[-4:]
        else:
            own = n.digits[n.prefix :]
            masked = text[n.start : n.own] + own[:3] + "****" + own[-4:]
        out += [text[last : n.start], masked]
        last = n.end
    return "".join([*out, text[last:]])


def find_unmasked(text: str) -> list[str]:
    """ID numbers and mobile numbers left in ``text`` as typed, ID numbers first, for
    scanning output files.

    Wider than :func:`scrub_text` on purpose, so a number the masker missed is still found:
    ``_()~`` separate digits too, separators may come six in a row, any 15 to 18 digits
    count as an ID number, and an 11-digit fraction after degrees (``12.13812345678``) is a
    phone unless the decimal is one of a pair of coordinates. Coordinates, dates, uuids and hex digests
    are not numbers of anyone, and neither are the masked forms.
    """
    found = _SCANNER.numbers(text)
    ordered = [n for n in found if n.kind == "id"] + [n for n in found if n.kind == "phone"]
    return list(dict.fromkeys(text[n.start : n.end] for n in ordered))
