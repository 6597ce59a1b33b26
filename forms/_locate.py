"""pyxform's and ODK Validate's error messages, pointed at the form's cell: the sheet, row and
column a message names, or else the cell holding a value it quotes."""

from __future__ import annotations

import re
from typing import Any

from forms._sheets import Workbook
from pipelines.errors import Problem

_ROW = re.compile(r"\[row\s*:\s*(\d+)\]|\brow (\d+)\b")
_SHEET = re.compile(r"[Oo]n the '(\w+)' sheet")
_COLUMN = re.compile(r"the '([\w:() ]+)' value|'([\w:() ]+)' column")
_QUOTED = re.compile(r"'([^']{1,200})'")
_KEYWORDS = {  # words in pyxform messages -> the column to point at
    "question type": "type",
    "ist name": "type",
    "calculation": "calculation",
    "choice_filter": "choice_filter",
    "constraint": "constraint",
    "relevant": "relevant",
}
_VALIDATE_BIND = (
    re.compile(r"\$\{(\w+)\}[^\n]*?invalid (\w+) expression"),
    re.compile(r"Invalid (\w+) for the bind attached to \"\$\{(\w+)\}\""),
)
_JAVA_OBJECT = re.compile(r"\s*\S*@[0-9a-f]{6,}\b")


def locate_pyxform(wb: Workbook, msg: str, ctx: dict[str, Any]) -> Problem:
    text = " ".join(msg.split())
    row = ctx.get("row")
    if row is None and (m := _ROW.search(text)):
        row = int(m.group(1) or m.group(2))
    sheet_name = ctx.get("sheet") or ((m := _SHEET.search(text)) and m.group(1)) or None
    column = ctx.get("column") or ((m := _COLUMN.search(text)) and (m.group(1) or m.group(2)))
    column = column or next((c for k, c in _KEYWORDS.items() if k in text), None)
    sheet = wb.get((sheet_name or "").lower())
    if row is None:  # find the cell holding a value the message quotes
        for value in _QUOTED.findall(text):
            for s in [sheet] if sheet else list(wb.sheets.values()):
                hit = next(((r, h) for r, v in s.rows for h, x in v.items() if x == value), None)
                if hit:
                    sheet, (row, found) = s, hit
                    column = column or found
                    break
            if row is not None:
                break
    sheet = sheet or (wb.get("survey") if row is not None else None)
    text = re.sub(r"^\[row\s*:\s*\d+\]\s*", "", text)
    if sheet is None:
        return Problem(wb.path.name, text)
    return sheet.problem(row, column, text)


def locate_validate(wb: Workbook, msg: str) -> Problem:
    lines = [line.strip().removeprefix(">> ").strip() for line in msg.splitlines()]
    text = "ODK Validate: " + " ".join(
        _JAVA_OBJECT.sub("", line) for line in lines
        if line and line != "ODK Validate Errors:" and "failed validation" not in line
        and not line.startswith(("${", "Result:"))
    )  # fmt: skip
    survey, settings = wb.get("survey"), wb.get("settings")
    for pattern in _VALIDATE_BIND:
        if m := pattern.search(msg):
            name, kind = m.groups() if pattern is _VALIDATE_BIND[0] else m.groups()[::-1]
            column = {"calculate": "calculation"}.get(kind, kind)
            if survey and (row := survey.find("name", name)):
                return survey.problem(row, column, text + " — fix the expression")
    if "instanceName" in msg and settings and settings.rows:
        return settings.problem(settings.rows[0][0], "instance_name", text + " — fix instance_name")
    return Problem(wb.path.name, text)
