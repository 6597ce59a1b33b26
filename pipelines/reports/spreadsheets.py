"""The writers every output file goes through: XLSX sheets and CSV files, and the guard around
every write.

Every text any output shows (each XLSX cell, CSV cell and ``{{ … }}`` of the HTML) goes once
more through the one masker on its way out (:func:`shown_text`), whichever column it is in.
XLSX cells are written as text, never as formulas, and CSV cells that a spreadsheet would run
as a formula get a leading ``'``. CSV files are UTF-8 with BOM, for Excel on Chinese Windows.
A disk that cannot take a file (full, read-only, no permission) is one :class:`DataError`
naming the path (:func:`writing`).
"""

from __future__ import annotations

import errno
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from pipelines.errors import DataError
from pipelines.privacy import scrub_text

XLSX_MAX_ROWS = 1_000_000  # Excel holds 1,048,576 rows a sheet; longer lists continue on another
_SURROGATES = re.compile("[\ud800-\udfff]")


@lru_cache(maxsize=1 << 14)  # the same village, kind or department text comes again and again
def shown_text(text: str) -> str:
    """Every text an output shows, whichever column, sheet or section it is in, goes through
    here: control characters dropped (no XLSX can hold them, and a NUL between digits would
    hide a number from the masker), lone surrogates shown as U+FFFD (no UTF-8 file can hold
    them), then every ID number and mobile masked by the one masker,
    :func:`pipelines.privacy.scrub_text`."""
    text = ILLEGAL_CHARACTERS_RE.sub("", _SURROGATES.sub("\ufffd", text))
    return scrub_text(text)


# What a failed write means, and what to do: (cause, advice).
_DISK_ERRORS = {
    errno.ENOSPC: ("no space left on the disk", "free some space and run the report again"),
    errno.EDQUOT: ("the disk quota is used up", "free some space and run the report again"),
    errno.EFBIG: ("the file is larger than this system allows (ulimit -f)", "raise the limit"),
    errno.EROFS: ("the disk is read-only", "write the report to a writable folder"),
    errno.EACCES: ("permission denied", "check the folder's permissions"),
    errno.EPERM: ("permission denied", "check the folder's permissions"),
}


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Every file the report writes is written inside this: a full disk, a read-only folder
    or a permissions problem becomes one :class:`DataError` naming the path, and a file left
    half-written is removed (an earlier run's complete file is better than a broken one)."""
    try:
        yield
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        cause, advice = _DISK_ERRORS[e.errno]
        where = Path(e.filename) if isinstance(e.filename, str) else path
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and where.is_file():
            with suppress(OSError):
                where.unlink()
        raise DataError(
            f"{where}: cannot write the report: {cause}; {advice}, or write it elsewhere "
            "with --out DIR (or MANYI_OUTPUTS_DIR)"
        ) from None


_HEAD_FONT = Font(bold=True)
_HEAD_FILL = PatternFill("solid", fgColor="DDEBF7")
_WRAP = Alignment(wrap_text=True, vertical="top")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell_value(value: object) -> object:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime().date() if value == value.normalize() else value.to_pydatetime().replace(tzinfo=None)  # fmt: skip
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return shown_text(value)
    return value


def _display_width(text: str) -> int:
    # CJK characters take two columns; UTF-8 spends 3 bytes on them, 1 on ASCII.
    return len(text) + (len(text.encode("utf-8")) - len(text)) // 2


def _widths(frame: pd.DataFrame) -> list[float]:
    sample = frame.head(2000)
    widths = []
    for col in frame.columns:
        texts = [str(col), *(str(v) for v in sample[col] if v is not None and not (isinstance(v, float) and np.isnan(v)))]  # fmt: skip
        widest = max((_display_width(t) for t in texts), default=6)
        widths.append(float(min(max(widest + 2, 6), 60)))
    return widths


def write_sheet(wb: Workbook, title: str, frame: pd.DataFrame, formats: Mapping[str, str] | None = None, wrap: Iterable[str] = ()) -> list:  # fmt: skip
    """One sheet (more if longer than :data:`XLSX_MAX_ROWS`), Chinese header frozen."""
    formats = dict(formats or {})
    wrap = set(wrap)
    sheets = []
    chunks = [
        frame.iloc[i : i + XLSX_MAX_ROWS] for i in range(0, max(len(frame), 1), XLSX_MAX_ROWS)
    ]
    widths = _widths(frame)
    for n, chunk in enumerate(chunks, start=1):
        ws = wb.create_sheet(_sheet_title(title if n == 1 else f"{title}（{n}）", wb))
        for i, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(i)].width = w
        ws.freeze_panes = "A2"
        ws.print_title_rows = "1:1"
        head = []
        for col in frame.columns:
            c = WriteOnlyCell(ws, value=str(col))
            c.font, c.fill = _HEAD_FONT, _HEAD_FILL
            head.append(c)
        ws.append(head)
        styled = {i: (formats.get(col), col in wrap) for i, col in enumerate(frame.columns)}
        special = {i for i, (f, w) in styled.items() if f or w}
        for values in chunk.itertuples(index=False, name=None):
            row = []
            for i, v in enumerate(values):
                v = _cell_value(v)
                if isinstance(v, str) and v.startswith("="):
                    c = WriteOnlyCell(ws, value=v)
                    c.data_type = "s"  # text, never a formula
                    row.append(c)
                elif i in special and v is not None:
                    c = WriteOnlyCell(ws, value=v)
                    fmt, wrapped = styled[i]
                    if fmt:
                        c.number_format = fmt
                    if wrapped:
                        c.alignment = _WRAP
                    row.append(c)
                else:
                    row.append(v)
            ws.append(row)
        sheets.append(ws)
    return sheets


def save_workbook(wb: Workbook, path: Path) -> None:
    """The workbook built in memory, then written in one go: a disk that fails the write
    leaves no half-built zip behind to fail again when Python tidies up."""
    buffer = io.BytesIO()
    wb.save(buffer)
    with writing(path):
        path.write_bytes(buffer.getbuffer())


def _sheet_title(title: str, wb: Workbook) -> str:
    text = re.sub(r"[\[\]:*?/\\]", "_", title)[:31]
    taken = {ws.title for ws in wb.worksheets}
    base, n = text, 2
    while text in taken:
        suffix = f"_{n}"
        text, n = base[: 31 - len(suffix)] + suffix, n + 1
    return text


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """UTF-8 with BOM (Excel on Chinese Windows), every text as shown (:func:`shown_text`),
    formulas defused."""
    safe = frame.copy()
    for col in safe.columns:
        if pd.api.types.is_object_dtype(safe[col]) or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(_csv_text)
    with writing(path):
        safe.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")


def _csv_text(value: object) -> object:
    if not isinstance(value, str):
        return value
    value = shown_text(value)
    return "'" + value if value.startswith(_CSV_FORMULA) else value
