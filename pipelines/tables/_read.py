"""Reading a form's tables back as :func:`pipelines.analysis.tidy.tidy` makes them
(:func:`read_form`), cold or warm: see :mod:`pipelines.tables`.

Cold: each partition's files are read with Arrow, text columns as dictionaries (a column of
56 village codes converts 56 strings, not 360,000, and every row shares them), converted a
column at a time to tidy's types, and put in the store's order (``submitted_at``,
``instance_id``) by one Arrow sort; each column is taken into that order once.

Warm (a long-running process reading again, e.g. ``manyi serve``'s refresher): the last
result of each form folder and ``columns`` selection is kept, with the signature of every
partition's files (``st_mtime_ns``, ``st_size``, ``st_ino``; the writer only ever replaces a
file whole, so a rewrite shows) and the ``origin`` of every row (its partition and its place
in the file). The next read re-reads only the partitions whose files changed (or are new or
gone), keeps the other rows of the last result, works the categories out again from the rows
kept and read (tidy's rule) and sorts again: the result equals a cold read. A new schema,
FORMAT or state fingerprint, or half the partitions changed: a cold read.

What is kept: the frames returned (callers get shallow copies, and Copy-on-Write keeps their
changes off the kept ones), 8 bytes of origin a row and the table's ids as Arrow text (for the
next sort). :func:`forget` drops it all.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forms.schema import FormSchema
from pipelines.analysis.tidy import TidyForm, merge_schemas, tidy
from pipelines.tables import _files
from pipelines.tables._files import (
    file_stem,
    fingerprint,
    locked,
    read_arrow,
    read_state,
    tables_dir,
)

_SHIFT = 32  # a row's origin: its partition's number << _SHIFT | its row in that file
_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' ``str``: tidy's form_version
_MASKED = {pd.Int64Dtype(): pa.int64(), pd.Float64Dtype(): pa.float64(), pd.BooleanDtype(): pa.bool_()}  # fmt: skip
_TABLE = ""  # the form table's key among a result's frames (repeats by their path)

Segment = tuple[int, Any]  # (rows, Arrow column | a cached result's column | None: all empty)


@dataclass(frozen=True)
class _Info:
    """What a partition's file holds, for the columns of a result: the columns read, and
    those with at least one value."""

    rows: int
    names: frozenset[str]
    answered: frozenset[str]


@dataclass
class _Cached:
    """A read's result and what it was read from (see the module docstring)."""

    key: tuple[str, str | None, int]  # schema fingerprint, state fingerprint, FORMAT
    marks: dict[int, tuple[Any, ...]]  # partition number → its files' signature
    infos: dict[str, dict[int, _Info]]  # frame (_TABLE or a repeat) → partition → _Info
    frames: dict[str, pd.DataFrame]  # as returned (the table with ``submitted_at``)
    origins: dict[str, np.ndarray]  # frame → each row's origin, in the frame's order
    ids: pa.ChunkedArray | None  # the table's instance_id as Arrow text, for the next sort


@dataclass
class _Old:
    """One frame of the last result, for a warm read: its rows from unchanged partitions."""

    frame: pd.DataFrame
    origin: np.ndarray
    rows: np.ndarray  # positions of the rows kept
    infos: dict[int, _Info]  # the unchanged partitions'
    ids: pa.ChunkedArray | None


_CACHE: dict[tuple[str, tuple[str, ...] | None], _Cached] = {}
_COUNTS: Counter[str] = Counter()  # reads by kind (cold, warm, unchanged): tests, benchmarks
_TEMPLATES: dict[str, TidyForm] = {}
_LOCK = threading.Lock()


def forget() -> None:
    """Drop every kept result (and template): the next reads are cold."""
    with _LOCK:
        _CACHE.clear()
        _TEMPLATES.clear()


def read_form(settings: Any, form_id: str, schemas: Sequence[FormSchema], columns: Sequence[str] | None = None) -> TidyForm:  # fmt: skip
    """The form's tidy tables as :func:`tidy` makes them from the store's live records (rows in
    the store's order, columns and types as tidy's). ``columns`` keeps only those columns of the
    form table (``instance_id`` always), read from the files and nothing else."""
    schema = merge_schemas(list(schemas))
    printed = fingerprint(schema)
    template = _template(schema, printed)
    folder = tables_dir(settings) / form_id
    keep = None if columns is None else list(dict.fromkeys(["instance_id", *columns]))
    wanted = None if keep is None else list(dict.fromkeys([*keep, "submitted_at"]))
    where = (str(folder.resolve()), None if wanted is None else tuple(wanted))
    with locked(folder, shared=True):
        marks = _marks(folder)
        key = (printed, read_state(folder).get("fingerprint"), _files.FORMAT)
        with _LOCK:
            last = _CACHE.get(where)
        changed = None if last is None else _changed(last, key, marks)
        if changed == []:
            result, kind = last, "unchanged"
        elif changed is None:
            result, kind = _read(folder, template, sorted(marks), {}, wanted, key, marks), "cold"
        else:
            result = _read(folder, template, changed, _kept(last, changed), wanted, key, marks)
            kind = "warm"
    with _LOCK:
        _CACHE[where] = result
        _COUNTS[kind] += 1
    table = result.frames[_TABLE]
    if keep is not None:
        table = table[[c for c in keep if c in table.columns]]
    repeats = {rep: frame.copy(deep=False) for rep, frame in result.frames.items() if rep != _TABLE}  # fmt: skip
    return TidyForm(form_id, schema, table.copy(deep=False), repeats)


def _template(schema: FormSchema, printed: str) -> TidyForm:
    """Tidy's empty tables for ``schema`` (whose fingerprint is ``printed``): the columns and
    types every read gives. Kept: tidy takes ~25 ms even for no records."""
    with _LOCK:
        known = _TEMPLATES.get(printed)
    if known is None:
        known = tidy([], schema)
        with _LOCK:
            _TEMPLATES[printed] = known
    return known


def _marks(folder: Path) -> dict[int, tuple[Any, ...]]:
    """Each partition's number and the signature of its files (folders the writer did not
    name ``part-NNNNN`` are no partitions)."""
    marks: dict[int, tuple[Any, ...]] = {}
    if not folder.is_dir():
        return marks
    for entry in os.scandir(folder):
        if not entry.name.startswith("part-") or not entry.is_dir():
            continue
        number = entry.name.removeprefix("part-")
        if not number.isdigit() or _files.part_name(int(number)) != entry.name:
            continue  # not the writer's: never read
        files = []
        for f in os.scandir(entry.path):
            if f.name.endswith(".parquet"):
                st = f.stat()
                files.append((f.name, st.st_mtime_ns, st.st_size, st.st_ino))
        marks[int(number)] = tuple(sorted(files))
    return marks


def _changed(last: _Cached, key: tuple[Any, ...], marks: dict[int, tuple[Any, ...]]) -> list[int] | None:  # fmt: skip
    """The partitions to read again (changed, new or gone), or None: read cold."""
    if last.key != key or not len(last.frames[_TABLE]):
        return None
    changed = sorted(p for p in {*marks, *last.marks} if marks.get(p) != last.marks.get(p))
    if 2 * len(changed) >= max(len(marks), len(last.marks)):
        return None  # most of it is new: reading everything costs no more
    return changed


def _kept(last: _Cached, changed: list[int]) -> dict[str, _Old]:
    """Each frame of the last result, with the rows of the partitions not ``changed``."""
    gone = np.array(changed, dtype=np.int64)
    out = {}
    for name, frame in last.frames.items():
        origin = last.origins[name]
        rows = np.flatnonzero(~np.isin(origin >> _SHIFT, gone))
        infos = {p: i for p, i in last.infos[name].items() if p not in changed}
        out[name] = _Old(frame, origin, rows, infos, last.ids if name == _TABLE else None)
    return out


def _read(folder: Path, template: TidyForm, parts: list[int], kept: dict[str, _Old], wanted: list[str] | None, key: tuple[Any, ...], marks: dict[int, Any]) -> _Cached:  # fmt: skip
    """Read ``parts`` (those that exist) and combine them with the ``kept`` rows of the last
    result: the frames in tidy's columns, types and order."""
    frames: dict[str, pd.DataFrame] = {}
    origins: dict[str, np.ndarray] = {}
    infos: dict[str, dict[int, _Info]] = {}
    names = [(_TABLE, "form", template.table, wanted)]
    names += [(rep, file_stem(rep), empty, None) for rep, empty in template.repeats.items()]
    ids: pa.ChunkedArray | None = None
    for name, stem, empty, columns in names:
        old = kept.get(name)
        pieces = _pieces(folder, parts, stem, columns)
        info = {**(old.infos if old else {}), **{p: i for p, i, _ in pieces}}
        layout = _layout(empty, info.values(), columns is not None)
        segments = _segments(layout, old, pieces)
        before = len(old.origin) if old else 0  # the run: the last result's rows, then the pieces'
        origin = np.concatenate([old.origin if old else np.empty(0, np.int64), *(_origin(p, i.rows) for p, i, _ in pieces)])  # fmt: skip
        rows = np.concatenate([old.rows if old else np.empty(0, np.int64), np.arange(before, len(origin))])  # fmt: skip
        if not len(rows):
            frame, order = _empty(empty), rows
        elif name == _TABLE:
            frame, order, ids = _table(layout, segments, origin, rows, old.ids if old else None)
        else:
            frame, order = _repeat(layout, segments, origin, rows, ids)
        frames[name], origins[name], infos[name] = frame, origin[order], info
    return _Cached(key, marks, infos, frames, origins, ids)


def _origin(part: int, rows: int) -> np.ndarray:
    return (np.int64(part) << _SHIFT) | np.arange(rows, dtype=np.int64)


def _pieces(folder: Path, parts: list[int], stem: str, columns: list[str] | None) -> list[tuple[int, _Info, pa.Table]]:  # fmt: skip
    """The files ``stem`` of ``parts`` that exist and hold rows, in partition order."""
    pieces = []
    for part in parts:
        path = folder / _files.part_name(part) / f"{stem}.parquet"
        if not path.exists():
            continue
        table = read_arrow(path, columns)
        if table.num_rows:
            answered = frozenset(c for c, col in zip(table.column_names, table.columns, strict=True) if col.null_count < len(col))  # fmt: skip
            pieces.append((part, _Info(table.num_rows, frozenset(table.column_names), answered), table))  # fmt: skip
    return pieces


def _layout(empty: pd.DataFrame, infos: Any, columns_only: bool) -> list[tuple[str, Any]]:
    """The result's columns and their types: the schema's columns as the empty tidy has them
    (only those read, when columns were chosen), then columns of fields no schema describes
    (text) that any row still answers, by name."""
    infos = list(infos)
    names = set().union(*(i.names for i in infos))
    answered = set().union(*(i.answered for i in infos))
    layout = [(c, empty[c].dtype) for c in empty.columns if c in names or not columns_only]
    layout += [(c, None) for c in sorted(names - set(empty.columns)) if c in answered]
    return layout


def _segments(layout: list[tuple[str, Any]], old: _Old | None, pieces: list[Any]) -> dict[str, list[Segment]]:  # fmt: skip
    """Each column's values, in a run of segments: the last result's column (all its rows),
    then each piece's."""
    out: dict[str, list[Segment]] = {}
    for name, _ in layout:
        segs: list[Segment] = []
        if old is not None:
            frame = old.frame
            segs.append((len(frame), frame[name].array if name in frame.columns else None))
        for _, info, table in pieces:
            segs.append((info.rows, table.column(name) if name in info.names else None))
        out[name] = segs
    return out


def _table(layout: list[tuple[str, Any]], segments: dict[str, list[Segment]], origin: np.ndarray, rows: np.ndarray, cached: pa.ChunkedArray | None) -> tuple[pd.DataFrame, np.ndarray, pa.ChunkedArray]:  # fmt: skip
    """The form table of ``rows`` (positions in the segments' run) in the store's order
    (``submitted_at``, ``instance_id``; the origin only parts duplicates), and its ids.
    ``cached``: the last result's ids, for its segment."""
    stamps = _typed(segments["submitted_at"], dict(layout)["submitted_at"]).take(rows)
    ids = _ids(segments["instance_id"], rows, cached)
    keys = pa.table({"t": pa.array(np.asarray(stamps.asi8)), "i": ids, "o": origin[rows]})
    sort = pc.sort_indices(keys, sort_keys=[("t", "ascending", "at_start"), ("i", "ascending", "at_start"), ("o", "ascending", "at_start")])  # fmt: skip
    order = sort.to_numpy()
    run = rows[order]
    columns = {}
    for name, dtype in layout:
        if name == "submitted_at":
            columns[name] = stamps.take(order)
        else:
            columns[name] = _build(segments[name], dtype, run, name)
    return _frame(columns, layout), run, ids.take(sort)


def _ids(segments: list[Segment], rows: np.ndarray, cached: pa.ChunkedArray | None = None) -> pa.ChunkedArray:  # fmt: skip
    """The ``instance_id`` of ``rows`` as Arrow text (``cached``: the first segment's)."""
    chunks = []
    for i, (n, values) in enumerate(segments):
        if i == 0 and cached is not None:
            chunks += cached.chunks
        elif values is None:
            chunks.append(pa.nulls(n, pa.string()))
        elif isinstance(values, pa.ChunkedArray):
            chunks += [c.cast(pa.string()) for c in values.chunks]
        else:
            chunks.append(pa.array(np.asarray(values, dtype=object), pa.string()))
    ids = pa.chunked_array(chunks, pa.string())
    return ids if len(rows) == len(ids) else ids.take(rows)  # rows only ever rise


def _repeat(layout: list[tuple[str, Any]], segments: dict[str, list[Segment]], origin: np.ndarray, rows: np.ndarray, ids: pa.ChunkedArray | None) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """A repeat's table of ``rows``, in its submissions' order in the form table (rows of one
    submission as they are in its file); rows of no submission last."""
    mine = _ids(segments["instance_id"], rows)
    found = pc.index_in(mine, value_set=ids if ids is not None else pa.array([], pa.string()))
    position = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    position[position < 0] = len(ids) if ids is not None else 0
    order = rows[np.lexsort((origin[rows], position))]
    columns = {name: _build(segments[name], dtype, order, name, table=False) for name, dtype in layout}  # fmt: skip
    return _frame(columns, layout), order


def _frame(columns: dict[str, Any], layout: list[tuple[str, Any]]) -> pd.DataFrame:
    index = pd.RangeIndex(len(next(iter(columns.values()))))
    series = {}
    for name, _ in layout:
        values = columns[name]
        text = isinstance(values, np.ndarray) and values.dtype == object  # else pandas infers str
        series[name] = pd.Series(values, index=index, dtype=object if text else None, copy=False)
    # copy=False: a block per column, as built (consolidating would copy every column again)
    return pd.DataFrame(series, index=index, copy=False)


def _empty(template: pd.DataFrame) -> pd.DataFrame:
    """No rows: the template's columns and types."""
    out = {col: pd.Series([], dtype=object).astype(template[col].dtype) for col in template.columns}
    return pd.DataFrame(out, index=range(0))


# --- one column, from its segments ---------------------------------------------------------------


def _build(segments: list[Segment], dtype: Any, order: np.ndarray, name: str, table: bool = True) -> Any:  # fmt: skip
    """Column ``name`` of the rows ``order`` (positions in the segments' run), typed as
    ``dtype`` (None: text no schema describes)."""
    if table and name == "form_version":
        return _version(segments, order)
    if isinstance(dtype, pd.CategoricalDtype):
        return _category(segments, order, list(dtype.categories), name == "review_state")
    if dtype is None or dtype == np.dtype(object):
        return _text(segments).take(order)
    return _typed(segments, dtype).take(order)


def _text(segments: list[Segment]) -> np.ndarray:
    arrays = []
    for rows, values in segments:
        if values is None:
            arrays.append(np.full(rows, None, dtype=object))
        elif isinstance(values, pa.ChunkedArray):
            arrays += [_chunk_text(chunk) for chunk in values.chunks]
        else:
            arrays.append(np.asarray(values, dtype=object))
    return np.concatenate(arrays) if len(arrays) != 1 else arrays[0]


def _chunk_text(chunk: pa.Array) -> np.ndarray:
    """Text as tidy has it: str objects, None where empty."""
    if pa.types.is_dictionary(chunk.type):
        values = np.append(_chunk_text(chunk.dictionary), None)  # index -1: None
        return values[chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)]
    if pa.types.is_null(chunk.type):
        return np.full(len(chunk), None, dtype=object)
    if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
        return chunk.to_numpy(zero_copy_only=False)
    values = chunk.to_pandas()  # anything else, as reading it in pandas gives it
    return values.astype(object).where(values.notna(), None).to_numpy()


def _category(segments: list[Segment], order: np.ndarray, listed: list[str], sorted_only: bool) -> pd.Categorical:  # fmt: skip
    """As tidy: the schema's choices first, values it does not list after, sorted, blanks
    empty (``sorted_only``, review_state: the values seen, sorted). The segments' codes are
    put into one list of the values they use, then into the categories of the rows taken."""
    union: dict[str, int] = {}
    codes = []
    for rows, values in segments:
        if values is None:
            codes.append(np.full(rows, -1, dtype=np.int32))
        elif isinstance(values, pd.Categorical):
            codes.append(_recode(list(values.categories), values.codes, union))
        else:
            for chunk in values.chunks:
                if pa.types.is_null(chunk.type):
                    codes.append(np.full(len(chunk), -1, dtype=np.int32))
                    continue
                if not pa.types.is_dictionary(chunk.type):
                    chunk = pc.dictionary_encode(chunk.cast(pa.string()))
                local = chunk.dictionary.cast(pa.string()).to_pylist()
                codes.append(_recode(local, chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False), union))  # fmt: skip
    taken = (np.concatenate(codes) if len(codes) != 1 else codes[0]).take(order)
    values = list(union)
    used = np.bincount(taken + 1, minlength=len(values) + 1)[1:] > 0  # code -1: empty
    seen = {values[i] for i in np.flatnonzero(used)}
    if sorted_only:
        categories = sorted(seen)
    else:
        known = set(listed)
        categories = listed + sorted(t for t in seen if t and t not in known)
    position = {c: i for i, c in enumerate(categories)}
    lookup = [position.get(v, -1) for v in values]
    if lookup != list(range(len(values))):  # the usual case (the choices, in order) needs none
        taken = np.array([*lookup, -1], dtype=np.int32)[taken]
    dtype = pd.CategoricalDtype(categories)
    return pd.Categorical.from_codes(taken, dtype=dtype, validate=False)


def _recode(local: list[str], codes: np.ndarray, union: dict[str, int]) -> np.ndarray:
    """``codes`` into ``local`` as codes into ``union`` (extended), -1 kept."""
    lookup = [union.setdefault(v, len(union)) for v in local]
    if lookup == list(range(len(local))):
        return codes.astype(np.int32, copy=False)
    return np.array([*lookup, -1], dtype=np.int32)[codes]


def _typed(segments: list[Segment], dtype: Any) -> Any:
    arrays = []
    for rows, values in segments:
        if values is None or (isinstance(values, pa.ChunkedArray) and pa.types.is_null(values.type)):  # fmt: skip
            arrays.append(pd.Series(np.full(rows, None, dtype=object)).astype(dtype).array)
        elif not isinstance(values, pa.ChunkedArray):
            arrays.append(values)
        elif _MASKED.get(dtype) == values.type:
            arrays.append(dtype.__from_arrow__(values))
        else:
            series = values.to_pandas()
            arrays.append((series if series.dtype == dtype else series.astype(dtype)).array)
    if len(arrays) == 1:
        return arrays[0]
    return pd.concat([pd.Series(a, copy=False) for a in arrays], ignore_index=True).array


def _version(segments: list[Segment], order: np.ndarray) -> Any:
    """form_version as tidy inserts it: pandas' ``str`` when any row has one, else None."""
    chunks = []
    for rows, values in segments:
        if values is None:
            chunks.append(pa.nulls(rows, pa.string()))
        elif isinstance(values, pa.ChunkedArray):
            chunks += [c.cast(pa.string()) for c in values.chunks]
        elif isinstance(values, pd.arrays.ArrowStringArray):
            chunks.append(pa.array(values).cast(pa.string()))
        else:
            chunks.append(pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True))
    column = pa.chunked_array(chunks, pa.string()).take(order)
    if column.null_count == len(column):
        return np.full(len(column), None, dtype=object)
    return _STR.__from_arrow__(column)
