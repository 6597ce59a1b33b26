"""One base exception for everything manyi reports to a user.

Messages say *where* (file, sheet, row, column; village code; URL and status) and *what to
do*. The CLI prints ``str(error)`` as one line and exits non-zero; it never shows a traceback
for these.
"""

from __future__ import annotations

from dataclasses import dataclass


class ManyiError(Exception):
    """Base class: a problem the user can fix, described in one actionable message."""

    exit_code = 1


class ConfigError(ManyiError):
    """Configuration is missing or invalid (manyi.toml, environment, options)."""

    exit_code = 2


class DataError(ManyiError):
    """An input file (register, roster, boundaries, export) is unreadable or inconsistent."""


class SourceError(ManyiError):
    """A server (ODK Central, KoboToolbox) could not be reached, refused us, or misbehaved."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a form, reported like pyxform's error catalogue."""

    file: str
    message: str
    sheet: str | None = None
    row: int | None = None
    column: str | None = None  # column header, e.g. "label::Chinese (zh)"
    cell: str | None = None  # spreadsheet reference, e.g. "C7"

    def __str__(self) -> str:
        where = [self.file]
        if self.sheet:
            where.append(f"sheet '{self.sheet}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            col = f"column '{self.column}'"
            if self.cell:
                col += f" (cell {self.cell})"
            where.append(col)
        return f"{', '.join(where)}: {self.message}"


class FormError(ManyiError):
    """One or more forms failed to build; every problem is listed with its location."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        files = sorted({p.file for p in self.problems})
        self.summary = (
            f"{len(self.problems)} problem(s) in {len(files)} form(s): {', '.join(files)}"
        )
        super().__init__(self.summary + " | " + " | ".join(str(p) for p in self.problems))
