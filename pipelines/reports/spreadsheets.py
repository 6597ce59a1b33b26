"""The writers every output file goes through: XLSX sheets and CSV files, and the guard around
every write.

Every text any output shows (each XLSX cell, CSV cell and ``{{ … }}`` of the HTML) goes once
more through the one masker on its way out (:func:`shown_text`), whichever column it is in.
XLSX cells are written as text, never as formulas, and CSV cells that a spreadsheet would run
as a formula get a leading ``'``. CSV files are UTF-8 with BOM, for Excel on Chinese Windows.
A disk that cannot take a file (full, read-only, no permission) is one :class:`DataError`
naming the path (:func:`writing`).

Workbooks are written with xlsxwriter (:func:`new_workbook`, :func:`write_sheet`,
:func:`save_workbook`), with its string conversions off: a text is always written as a text
(``write_string``), so ``=HYPERLINK(…)`` typed into a form stays text in Excel. A sheet is
written column by column: each column's distinct values are converted once (the masker runs
once per distinct text, not per cell), then its cells are laid down with the one xlsxwriter
call their type needs. Every sheet has the Chinese header row bold on a light blue fill, frozen
and repeated on every printed page, sized columns, wrapped long-text columns and date and
percentage formats; a list longer than :data:`XLSX_MAX_ROWS` continues on another sheet.
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import gc
import io
import math
import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import pandas as pd
import xlsxwriter
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from pipelines.errors import DataError
from pipelines.privacy import scrub_text

XLSX_MAX_ROWS = 1_000_000  # Excel holds 1,048,576 rows a sheet; longer lists continue on another
_SURROGATES = re.compile("[\ud800-\udfff]")
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")  # control characters no XLSX holds
_P = ParamSpec("_P")
_R = TypeVar("_R")
_UNSHOWABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")  # either of the two


@lru_cache(maxsize=1 << 14)  # the same village, kind or department text comes again and again
def shown_text(text: str) -> str:
    """Every text an output shows, whichever column, sheet or section it is in, goes through
    here: control characters dropped (no XLSX can hold them, and a NUL between digits would
    hide a number from the masker), lone surrogates shown as U+FFFD (no UTF-8 file can hold
    them), then every ID number and mobile masked by the one masker,
    :func:`pipelines.privacy.scrub_text`."""
    if _UNSHOWABLE.search(text):  # rare: most texts are shown as typed
        text = _ILLEGAL.sub("", _SURROGATES.sub("\ufffd", text))
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


# --- what is shown ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A frame as the outputs show it: every text in it went through :func:`shown_text`, once
    per distinct value of its column (made by :func:`shown_frame` only), beside the frame as
    given (``raw``: columns are sized on it, as they always were). Pass it to
    :func:`write_sheet` and :func:`write_csv` to write the same rows to both without masking
    them twice; a plain DataFrame is masked on its way in."""

    frame: pd.DataFrame
    raw: pd.DataFrame

    def rows(self, which: np.ndarray | slice) -> Shown:
        """Some of the rows (a boolean mask or a slice), still shown."""
        return Shown(self.frame.iloc[which], self.raw.iloc[which])

    def above(self, other: Shown) -> Shown:
        """These rows, then ``other``'s, as one frame (columns as this one's)."""
        columns = self.frame.columns
        return Shown(
            pd.concat([self.frame, other.frame.reindex(columns=columns)], ignore_index=True),
            pd.concat([self.raw, other.raw.reindex(columns=columns)], ignore_index=True),
        )


def shown_frame(frame: pd.DataFrame | Shown) -> Shown:
    """``frame`` with every text as shown: each text column's distinct values go through
    :func:`shown_text` once and are laid back into its rows; a missing text is None."""
    if isinstance(frame, Shown):
        return frame
    out = frame.copy()
    for i in range(out.shape[1]):
        series = out.iloc[:, i]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            out.isetitem(i, _each_distinct(series, shown_text))
    return Shown(out, frame)


def _each_distinct(series: pd.Series, func) -> pd.Series:
    """``func`` on every text of ``series``: once per distinct text when the column holds only
    texts, else on each text as it comes (other values are left as they are)."""
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        done = np.array(
            [*map(func, np.asarray(uniques, dtype=object).tolist()), None], dtype=object
        )
        return pd.Series(done[codes], index=series.index, dtype=object)  # code -1: None
    return series.map(lambda v: func(v) if isinstance(v, str) else v).astype(object)


@contextmanager
def _no_gc() -> Iterator[None]:
    # Hundreds of thousands of cells, texts and small lists, none in a cycle: the cyclic
    # collector would only walk them again and again (a tenth of the writing time).
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def gc_paused(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """``func`` (a writer of big files) run with Python's cyclic garbage collector paused:
    what it makes holds no cycles, and what it leaves is collected after, as usual."""

    @functools.wraps(func)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _no_gc():
            return func(*args, **kwargs)

    return run


# --- XLSX ---------------------------------------------------------------------------------------

_HEAD = {"bold": True, "pattern": 1, "bg_color": "#DDEBF7"}  # solid light blue behind bold
_WRAP = {"text_wrap": True, "valign": "top"}
# The formats a date or time gets when its column names none (as Excel shows them by default).
_TIME_FORMATS = {
    dt.datetime: "yyyy-mm-dd h:mm:ss", dt.date: "yyyy-mm-dd", dt.time: "h:mm:ss",
    dt.timedelta: "[hh]:mm:ss",
}  # fmt: skip
_WRITERS = {"s": "string", "n": "number", "b": "boolean", "d": "datetime", "": "blank"}
_PIXELS_PER_CHAR = 7  # xlsxwriter's width of a digit of the default font (Calibri 11)
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Book:
    """A workbook being built in memory (:func:`new_workbook`), written out in one go by
    :func:`save_workbook`; ``formats`` keeps one xlsxwriter format per cell style."""

    workbook: xlsxwriter.Workbook
    buffer: io.BytesIO
    head: Format
    formats: dict[tuple[str | None, bool], Format | None] = field(default_factory=dict)

    def style(self, number_format: str | None, wrap: bool) -> Format | None:
        """The one format of a number format and wrapping (None: a plain cell)."""
        key = (number_format, wrap)
        if key not in self.formats:
            props = {**(_WRAP if wrap else {}), **({"num_format": number_format} if number_format else {})}  # fmt: skip
            self.formats[key] = self.workbook.add_format(props) if props else None
        return self.formats[key]


def new_workbook() -> Book:
    """An empty workbook: texts stay texts (no formula, number or link is read into them)."""
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(
        buffer,
        {
            "in_memory": True,  # no temporary files: nothing to leave behind on a full disk
            "strings_to_formulas": False,
            "strings_to_numbers": False,
            "strings_to_urls": False,
            "remove_timezone": True,  # times are already Beijing wall-clock times
        },
    )
    return Book(workbook, buffer, workbook.add_format(_HEAD))


def save_workbook(book: Book, path: Path) -> None:
    """The workbook built in memory, then written in one go: a disk that fails the write
    leaves no half-built zip behind."""
    with _no_gc():
        book.workbook.close()
    with writing(path):
        path.write_bytes(book.buffer.getbuffer())


def write_sheet(book: Book, title: str, frame: pd.DataFrame | Shown, formats: Mapping[str, str] | None = None, wrap: Iterable[str] = ()) -> list[Worksheet]:  # fmt: skip
    """One sheet (more if longer than :data:`XLSX_MAX_ROWS`) of ``frame`` as shown, Chinese
    header frozen; returns the sheets. ``formats``: column -> Excel number format (dates and
    times without one show as ``yyyy-mm-dd`` and ``yyyy-mm-dd h:mm:ss``); ``wrap``: columns
    whose text wraps."""
    shown = shown_frame(frame)
    frame = shown.frame
    formats = dict(formats or {})
    wrap = set(wrap)
    widths = _widths(shown.raw)
    columns = [_cells(frame.iloc[:, i]) for i in range(frame.shape[1])]
    styles = [_styles(book, formats.get(col), col in wrap, cells) for col, cells in zip(frame.columns, columns, strict=True)]  # fmt: skip
    sheets = []
    for n, start in enumerate(range(0, max(len(frame), 1), XLSX_MAX_ROWS), start=1):
        ws = book.workbook.add_worksheet(_sheet_title(title if n == 1 else f"{title}（{n}）", book))
        for i, w in enumerate(widths):
            ws.set_column_pixels(i, i, w * _PIXELS_PER_CHAR)  # exactly ``w`` characters wide
        ws.freeze_panes(1, 0)
        ws.repeat_rows(0)
        for i, col in enumerate(frame.columns):
            ws.write_string(0, i, str(col), book.head)
        stop = min(start + XLSX_MAX_ROWS, len(frame))
        with _no_gc():
            for i, (cells, style) in enumerate(zip(columns, styles, strict=True)):
                _write_column(ws, i, cells, style, start, stop)
        sheets.append(ws)
    return sheets


@dataclass(frozen=True)
class _Cells:
    """One column as its cells: for each row an index into ``values`` (-1: no cell), and each
    distinct value converted once, with how it is written (``kinds``)."""

    index: list[int]
    values: list[object]
    kinds: list[str]  # "s" text, "n" number, "b" true/false, "d" date or time, "" empty
    # (one kind for the whole column when it has a single entry)


def _cells(series: pd.Series) -> _Cells:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        kind = "b" if pd.api.types.is_bool_dtype(dtype) else "n"
        missing = series.isna().to_numpy()
        if kind == "b" or not np.isinf(series.to_numpy(dtype=float, na_value=np.nan)).any():
            index = np.where(missing, -1, np.arange(len(series))).tolist()
            return _Cells(index, series.tolist(), [kind])  # NaN and NA are no cells
        series = series.astype(object)  # an infinity among the numbers: each value on its own
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    texts = inferred in ("string", "empty")  # shown already: nothing to convert
    if texts or inferred in ("datetime64", "datetime", "date"):
        # one type throughout: equal values are the same value, converted once
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        values = np.asarray(uniques, dtype=object).tolist()
        return _Cells(
            codes.tolist(), *_typed(values if texts else [_cell_value(v) for v in values])
        )
    # mixed types (1, 1.0 and True are equal keys): each value as it is, memoized by type
    memo: dict[tuple[type, object], int] = {}
    index, raw = [], []
    for v in series:
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v):
            index.append(-1)
            continue
        try:
            key = (v.__class__, v)
            k = memo.get(key)
        except TypeError:  # unhashable: its own entry
            key, k = None, None
        if k is None:
            k = len(raw)
            raw.append(v)
            if key is not None:
                memo[key] = k
        index.append(k)
    return _Cells(index, *_typed([_cell_value(v) for v in raw]))


def _typed(converted: list[object]) -> tuple[list[object], list[str]]:
    values, kinds = [], []
    for v in converted:
        if isinstance(v, str):
            kind = "s" if v else ""
        elif v is None:
            kind = ""
        elif isinstance(v, bool):
            kind = "b"
        elif isinstance(v, numbers.Real | Decimal):
            # an infinity is no number Excel holds: shown as its text, as in the CSV
            v, kind = (v if isinstance(v, int) else float(v)), "n"
            if not math.isfinite(v):
                v, kind = str(v), "s"
        elif isinstance(v, dt.date | dt.time | dt.timedelta):
            kind = "d"
        else:  # anything else is shown as its text
            v, kind = shown_text(str(v)), "s"
        values.append(v)
        kinds.append(kind)
    if len(set(kinds)) == 1 and kinds[0] != "d":
        kinds = kinds[:1]
    return values, kinds


def _cell_value(value: object) -> object:
    """A value as Excel takes it (texts arrive already shown)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime().date() if value == value.normalize() else value.to_pydatetime().replace(tzinfo=None)  # fmt: skip
    if isinstance(value, pd.Timedelta):
        return value.to_pytimedelta()
    if isinstance(value, np.generic):
        return _cell_value(value.item())
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return value


def _styles(book: Book, number_format: str | None, wrap: bool, cells: _Cells) -> list[Format | None]:  # fmt: skip
    """The format of each kind of cell of a column (one entry: the whole column's): its
    number format (else a date's or time's own) and wrapping."""
    if "d" not in cells.kinds or number_format:
        return [book.style(number_format, wrap)]
    return [
        book.style(next(f for t, f in _TIME_FORMATS.items() if isinstance(v, t)) if k == "d" else None, wrap)
        for k, v in zip(cells.kinds, cells.values, strict=True)
    ]  # fmt: skip


def _write_column(ws: Worksheet, col: int, cells: _Cells, styles: list[Format | None], start: int, stop: int) -> None:  # fmt: skip
    """Rows ``start:stop`` of one column, below the header."""
    index, values = cells.index[start:stop], cells.values
    # xlsxwriter's own undecorated writers: the public ones first check for "A1" notation,
    # per cell, and the column numbers here are already numbers
    writers = {k: getattr(ws, f"_write_{name}", getattr(ws, f"write_{name}")) for k, name in _WRITERS.items()}  # fmt: skip
    if len(cells.kinds) == 1 or (len(styles) == 1 and len(set(cells.kinds)) == 1):
        write, style = writers[cells.kinds[0]], styles[0]
        if cells.kinds[0] == "" and style is None:
            return  # empty cells without a style are no cells
        for row, k in enumerate(index, start=1):
            if k >= 0:
                write(row, col, values[k], style)
        return
    calls = [writers[k] for k in cells.kinds]
    styles = styles * len(calls) if len(styles) == 1 else styles
    for row, k in enumerate(index, start=1):
        if k >= 0:
            calls[k](row, col, values[k], styles[k])


def _display_width(text: str) -> int:
    # CJK characters take two columns; UTF-8 spends 3 bytes on them, 1 on ASCII (and 3 on a
    # lone surrogate, shown as the wide U+FFFD)
    return len(text) + (len(text.encode("utf-8", "surrogatepass")) - len(text)) // 2


def _widths(frame: pd.DataFrame) -> list[int]:
    """Each column as wide as its header and the widest of its first 2,000 values (as given),
    in characters, between 6 and 60."""
    sample = frame.head(2000)
    widths = []
    for i, col in enumerate(frame.columns):
        values = sample.iloc[:, i]
        if pd.api.types.is_object_dtype(values) and pd.api.types.infer_dtype(values, skipna=True) != "string":  # fmt: skip
            # mixed types: 1 and 1.0 are one key but not one text
            texts = {str(v) for v in values.tolist() if v is not None and not (isinstance(v, float) and np.isnan(v))}  # fmt: skip
        else:  # one type: each distinct value's text once (missing values are narrower than 6)
            texts = {str(v) for v in pd.unique(values.dropna())}
        widest = max((_display_width(t) for t in texts), default=0)
        widths.append(min(max(widest + 2, _display_width(str(col)) + 2, 6), 60))
    return widths


def _sheet_title(title: str, book: Book) -> str:
    """A title Excel takes: shown, no ``[]:*?/\\`` and no ``'`` at either end, at most 31
    characters, and unique in the workbook whatever the case."""
    text = shown_text(str(title)) or "Sheet"
    text = re.sub(r"[\[\]:*?/\\]", "_", text)
    text = re.sub(r"^'|'$", "_", _cut(text, 31))
    taken = {ws.name.lower() for ws in book.workbook.worksheets()}
    base, n = text, 2
    while text.lower() in taken:
        suffix = f"_{n}"
        text, n = _cut(base, 31 - len(suffix)) + suffix, n + 1
    return text


def _cut(text: str, units: int) -> str:
    # Excel counts a title's length in UTF-16 units: a character beyond U+FFFF takes two.
    text = text[:units]
    while len(text.encode("utf-16-le")) // 2 > units:
        text = text[:-1]
    return text


# --- CSV ----------------------------------------------------------------------------------------


def write_csv(frame: pd.DataFrame | Shown, path: Path) -> None:
    """UTF-8 with BOM (Excel on Chinese Windows), every text as shown (:func:`shown_text`),
    formulas defused."""
    safe = shown_frame(frame).frame.copy()
    for i in range(safe.shape[1]):
        if pd.api.types.is_object_dtype(safe.iloc[:, i]):
            safe.isetitem(i, _each_distinct(safe.iloc[:, i], _defused))
    with writing(path):
        safe.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")


def _defused(text: str) -> str:
    return "'" + text if text.startswith(_CSV_FORMULA) else text
