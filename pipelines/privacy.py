"""Masking of personal data for every output (section 6 of issue 5).

- ID numbers: first 6 + ``********`` + last 4 (``370481********123X``);
- phones: first 3 + ``****`` + last 4 (``138****5678``);
- names: the surname plus ``*`` (``张*``; two-character compound surnames such as 欧阳 kept).

The ``mask_*`` functions take one value; :func:`mask_series` works on a whole column, and
:func:`scrub_text` masks any ID number or mobile number found inside free text.
"""

from __future__ import annotations

import re
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
# Separators people type inside a number: spaces, hyphens and dashes (ASCII and full-width).
_SEP = "[ \\t\\u3000\\-\\u2010-\\u2015\\uff0d]"
# Not a number of anyone: the digits after "digit." (the fraction of a decimal such as a
# coordinate, 35.16394660492) never start one.
_NOT_FRACTION = r"(?<!\d)(?<!\d\.)"
# The masker (scrub_text). ID numbers: 18 digits (the last may be X) or the old 15 digits, never
# part of a longer number. Mobiles: an optional +86 / 0086 / 86, then 3-4-4 digits, with or
# without separators between the groups.
ID_RE = re.compile(
    rf"{_NOT_FRACTION}(\d{{6}})(?:\d{{8}}(\d{{3}}[\dXx])|\d{{5}}(\d{{4}}))(?![\dXx])"
)
PHONE_RE = re.compile(
    rf"{_NOT_FRACTION}((?:\+|00)?86{_SEP}?)?(1[3-9]\d){_SEP}?\d{{4}}{_SEP}?(\d{{4}})(?!\d)"
)
# The output scanner (find_unmasked) is deliberately wider than the masker, so a scan of the
# outputs catches what the masker missed: a separator between any two digits, and any run of
# 15 to 18 digits (the last may be X) counts as an ID number.
_SCAN_PHONE = re.compile(
    rf"{_NOT_FRACTION}(?:(?:\+|00)?86{_SEP}?)?"  # the prefix, then 11 digits
    rf"1{_SEP}?[3-9](?:{_SEP}?\d){{9}}(?!\d)"
)
_SCAN_ID = re.compile(rf"{_NOT_FRACTION}\d(?:{_SEP}?\d){{13,16}}{_SEP}?[\dXx](?![\dXx])")
# Tokens whose digits are no one's number: uuids (submission ids) and hex digests (photo file
# names); neither the masker nor the scanner looks inside them. The scanner also skips ISO
# dates, so two dates side by side ("2023-05-01 2023-05-31") are not one long number.
_OPAQUE = (
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{32,}"
)
_MASK_SKIP = re.compile(rf"(?<![0-9A-Za-z])(?:{_OPAQUE})(?![0-9A-Za-z])")
_SCAN_SKIP = re.compile(
    rf"(?<![0-9A-Za-z])(?:{_OPAQUE})(?![0-9A-Za-z])"
    r"|(?<![\d.-])(?:19|20)\d\d-[01]\d-[0-3]\d(?![\d-])"
)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def mask_id_number(value: Any) -> Any:
    """``370481199001011234`` -> ``370481********1234``. Blank stays blank.

    Anything that is not 15 or 18 characters is masked entirely: a malformed number is still
    personal data.
    """
    if _blank(value):
        return value
    text = str(value).strip()
    if not text:
        return text
    if len(text) in (15, 18):
        return text[:6] + "********" + text[-4:]
    return "*" * len(text)


def mask_phone(value: Any) -> Any:
    """``13812345678`` -> ``138****5678``; separators and a ``+86``/``0086``/``86`` prefix are
    dropped first."""
    if _blank(value):
        return value
    text = re.sub(rf"\s|{_SEP}", "", str(value))
    if not text:
        return text
    text = re.sub(r"^((?:\+|00)?86)(?=1\d{10}$)", "", text)
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


def scrub_text(text: str) -> str:
    """Mask ID numbers and mobile numbers wherever they appear in free text (a suggestion, a
    note), so a number typed into a comment does not slip into a list.

    ``电话+86 138-1234-5678`` -> ``电话+86 138****5678``; an old 15-digit ID number keeps its
    first 6 and last 4 like an 18-digit one.
    """
    out, last = [], 0
    for m in _MASK_SKIP.finditer(text):  # a uuid or digest is copied as it is
        out += [_scrub(text[last : m.start()]), m.group(0)]
        last = m.end()
    return "".join([*out, _scrub(text[last:])])


def _scrub(text: str) -> str:
    text = ID_RE.sub(lambda m: m.group(1) + "********" + (m.group(2) or m.group(3)), text)
    return PHONE_RE.sub(lambda m: (m.group(1) or "") + m.group(2) + "****" + m.group(3), text)


def find_unmasked(text: str) -> list[str]:
    """ID numbers and mobile numbers left in ``text``, for scanning output files.

    Wider than :func:`scrub_text` on purpose (see ``_SCAN_PHONE``): a number the masker
    missed is still found here. Decimal fractions (coordinates), uuids and hex digests are not
    numbers of anyone and are skipped, as are ISO dates.
    """
    text = _SCAN_SKIP.sub("#", text)
    ids = list(_SCAN_ID.finditer(text))
    phones = [  # a mobile-like run inside an ID number is that ID number
        m for m in _SCAN_PHONE.finditer(text)
        if not any(i.start() <= m.start() < i.end() for i in ids)
    ]  # fmt: skip
    return list(dict.fromkeys(m.group(0) for m in [*ids, *phones]))
