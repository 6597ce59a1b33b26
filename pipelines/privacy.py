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
ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
PHONE_RE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


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
    """``13812345678`` -> ``138****5678``; a ``+86``/``86`` prefix is dropped first."""
    if _blank(value):
        return value
    text = re.sub(r"[\s-]", "", str(value))
    if not text:
        return text
    text = re.sub(r"^(\+?86)(?=1\d{10}$)", "", text)
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
    note), so a number typed into a comment does not slip into a list."""
    text = ID_RE.sub(lambda m: m.group(1) + "********" + m.group(2), text)
    return PHONE_RE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


def find_unmasked(text: str) -> list[str]:
    """ID numbers and mobile numbers left in ``text`` (for scanning output files)."""
    return [m.group(0) for m in ID_RE.finditer(text)] + [
        m.group(0) for m in PHONE_RE.finditer(text)
    ]
