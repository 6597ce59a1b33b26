"""The village register: the single source of truth for every village list and map."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines._text import read_text
from pipelines.errors import DataError

REGISTER = Path(__file__).with_name("villages.csv")
COLUMNS = ("code", "name", "name_full", "pinyin", "liaison_group")
_CODE = re.compile(r"^\d{12}$")


@dataclass(frozen=True)
class Village:
    code: str  # 12-digit statistical division code (统计用区划代码)
    name: str  # short Chinese name, without 村委会
    name_full: str
    pinyin: str
    liaison_group: int  # 1–9, the plan's 帮包联系组


def load_villages(path: Path | str = REGISTER) -> list[Village]:
    """Read and validate the register; every problem is listed with its CSV row."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: village register not found; set `villages` in manyi.toml")
    text = read_text(path, "village register")  # UTF-8, or GBK as Excel saves it
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
        )
    problems: list[str] = []
    seen: dict[str, int] = {}
    villages: list[Village] = []
    for row_no, row in enumerate(reader, start=2):
        code = (row["code"] or "").strip()
        name = (row["name"] or "").strip()
        if not _CODE.match(code):
            problems.append(f"row {row_no}: code {code!r} is not a 12-digit division code")
            continue
        if code in seen:
            problems.append(f"row {row_no}: code {code} repeats row {seen[code]}")
            continue
        seen[code] = row_no
        if not name:
            problems.append(f"row {row_no}: village {code} has no name")
        if not (row["pinyin"] or "").strip():
            problems.append(
                f"row {row_no}: village {code} has no pinyin (the forms' English label)"
            )
        try:
            group = int(row["liaison_group"])
            if not 1 <= group <= 9:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(
                f"row {row_no}: liaison_group {row['liaison_group']!r} of village {code} "
                "must be a whole number 1–9"
            )
            continue
        villages.append(
            Village(
                code, name, (row["name_full"] or "").strip(), (row["pinyin"] or "").strip(), group
            )
        )
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    if not villages:
        raise DataError(f"{path}: the register lists no villages")
    return villages
