"""An XLSForm workbook read with cell coordinates, so every problem can name its cell."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from pipelines.errors import FormError, Problem

KNOWN_SHEETS = ("survey", "choices", "settings", "entities", "external_choices")


def normalise(value: Any) -> str:
    """A cell as the text pyxform sees: numbers typed in Excel lose their ``.0``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


@dataclass
class Sheet:
    file: str
    name: str  # as written in the workbook
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (spreadsheet row number, {header: text}), non-empty

    def letter(self, column: str | None) -> str | None:
        if column and column in self.header:
            return get_column_letter(self.header.index(column) + 1)
        return None

    def problem(self, row: int | None, column: str | None, message: str) -> Problem:
        letter = self.letter(column)
        cell = f"{letter}{row}" if letter and row is not None else None
        return Problem(self.file, message, self.name, row, column, cell)

    def find(self, column: str, value: str) -> int | None:
        """Row number of the first row whose ``column`` holds ``value``."""
        return next((r for r, v in self.rows if v.get(column) == value), None)


@dataclass
class Workbook:
    path: Path
    sheets: dict[str, Sheet]  # keyed by lower-case name, as pyxform matches them
    problems: list[Problem]  # sheet-name problems found while reading

    def get(self, name: str) -> Sheet | None:
        return self.sheets.get(name)

    @property
    def settings(self) -> dict[str, str]:
        s = self.sheets.get("settings")
        return dict(s.rows[0][1]) if s and s.rows else {}

    def content_hash(self) -> str:
        """Hash of the cell values only, stable across Excel/WPS re-saves and pyxform upgrades."""
        body = {
            name: [s.header, [v for _, v in s.rows]]
            for name, s in sorted(self.sheets.items())
            if name in KNOWN_SHEETS
        }
        text = json.dumps(body, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_workbook(path: Path) -> Workbook:
    """Read every sheet; raise :class:`FormError` if the file is not a readable .xlsx."""
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a corrupt or foreign file
        kind = type(e).__name__
        raise FormError(
            [
                Problem(
                    path.name,
                    f"cannot open as .xlsx ({kind}: {e}); save it again from Excel or WPS as .xlsx",
                )
            ]
        ) from None
    sheets: dict[str, Sheet] = {}
    problems: list[Problem] = []
    try:
        for ws in wb.worksheets:
            title = ws.title
            if title.strip().lower() in KNOWN_SHEETS and title != title.strip():
                problems.append(
                    Problem(
                        path.name,
                        f"sheet name {title!r} has spaces around it, so pyxform ignores the sheet; "
                        f"rename it to '{title.strip()}'",
                        title,
                    )
                )
            rows = list(ws.iter_rows(values_only=True))
            header = [normalise(h) for h in rows[0]] if rows else []
            body = []
            for i, r in enumerate(rows[1:], start=2):
                values = {h: normalise(v) for h, v in zip(header, r, strict=False) if h}
                values = {h: v for h, v in values.items() if v != ""}
                if values:
                    body.append((i, values))
            sheets[title.lower()] = Sheet(path.name, title, header, body)
    finally:
        wb.close()
    return Workbook(path, sheets, problems)
