"""Bringing a form's tables up to date with the store (:func:`catch_up`), and rebuilding
them (:func:`rebuild`, :func:`rebuild_all`): see :mod:`pipelines.tables`.

A catch-up after 1,000 new submissions over a million touches a few small files, never a
whole form:

- the store's change scan (:meth:`Store.changes`): ids, ``changed_at`` and ``first_seen_at``
  of the rows changed since the mark less :data:`MARGIN`, from one covering index, no JSON;
- ``index.parquet`` holds only the rows a scan can return again: ``instance_id → part,
  changed_at`` of every row changed at or after the mark less the margin (deleted ones with
  part -1). A scanned row held there with the same ``changed_at`` is skipped;
- a changed row first seen at or after that point cannot be in the tables (the store never
  moves ``changed_at`` below ``first_seen_at``): it is new and only appended. The others
  (edits and deletions of older rows) are looked for in the ``instance_id`` column of the
  partitions' form files, then removed from the partition that holds them;
- new rows go to the last partition, appended with Arrow (no round trip through pandas).

Every file is written with the types of tidy's empty template, so a column no row answers is
typed as tidy types it, never Arrow's ``null``. ``state.json`` says ``busy`` before any other
file changes and is written last, without it: after a run killed half-way, partitions past
its count are removed and every scanned row is looked for in the files, not in the index.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forms.schema import FormSchema, load_schema
from pipelines.analysis.tidy import TidyForm, merge_schemas, tidy
from pipelines.errors import DataError
from pipelines.tables._files import (
    PART_ROWS,
    clear,
    file_stem,
    fingerprint,
    locked,
    part_name,
    read_state,
    tables_dir,
    write,
    write_state,
)

MARGIN = timedelta(seconds=60)  # how far before the last mark to look again (see above)
_FETCH = 20_000  # submissions read from the store and tidied at a time
_INDEX = "index.parquet"  # the recent rows (see above); _files.clear removes it
_INDEX_SCHEMA = pa.schema([("instance_id", pa.string()), ("part", pa.int64()), ("changed_at", pa.string())])  # fmt: skip

Held = dict[str, tuple[int, str]]  # instance_id → (partition or -1 when deleted, changed_at)


@dataclass
class CatchUp:
    """What :func:`catch_up` did: submissions read again per form, and forms rebuilt."""

    changed: dict[str, int] = field(default_factory=dict)
    rebuilt: list[str] = field(default_factory=list)
    unbuilt: list[str] = field(default_factory=list)  # forms with records but no built schema


def catch_up(settings: Any, store: Any, form_id: str, schemas: Sequence[FormSchema]) -> CatchUp:
    """Bring ``form_id``'s tables up to date with the store; returns what changed."""
    schema = merge_schemas(list(schemas))
    folder = tables_dir(settings) / form_id
    done = CatchUp()
    with locked(folder):
        written = read_state(folder)
        state = dict(written)
        if state.get("fingerprint") != fingerprint(schema):
            clear(folder)
            state = {"fingerprint": fingerprint(schema), "mark": None, "parts": 0}
            done.rebuilt.append(form_id)
        # A run killed half-way left its files as they were (see _begin): believe no
        # partition past the state's count, nor the recent index; look every row up.
        killed = bool(state.pop("busy", False))
        _drop_unfinished(folder, state["parts"])
        since = _since(state["mark"])
        recent = _read_recent(folder) if since is not None and not killed else {}
        scan = store.changes(form_id, since)
        changed, where = _changed(folder, state["parts"], scan, recent, since, killed)
        mark = max(state["mark"] or "", scan.latest or "") or None
        keep = _since(mark)  # where the next scan starts
        stale = keep is not None and any(held[1] < keep for held in recent.values())
        if not (changed or stale or killed or {**state, "mark": mark} != written):
            return done  # nothing to write: a report's catch-up of a quiet form
        _begin(folder, state)
        if changed:
            done.changed[form_id] = len(changed)
            for start in range(0, len(changed), _FETCH):
                stored = store.records_by_id(form_id, changed[start : start + _FETCH])
                for iid, held in _apply(folder, state, where, stored, schemas).items():
                    if keep is None or held[1] >= keep:
                        recent[iid] = held
                    else:  # no scan returns it again: no need to remember it (a rebuild)
                        recent.pop(iid, None)
        _write_recent(folder, recent, keep)
        state["mark"] = mark
        write_state(folder, state)  # the commit: no longer busy
    return done


def rebuild(settings: Any, store: Any, form_id: str, schemas: Sequence[FormSchema]) -> CatchUp:
    """Throw ``form_id``'s tables away and build them again from the store."""
    folder = tables_dir(settings) / form_id
    with locked(folder):
        clear(folder)
    done = catch_up(settings, store, form_id, schemas)
    done.rebuilt = [form_id]
    return done


def rebuild_all(settings: Any, store: Any) -> CatchUp:
    """``manyi tables rebuild``: every form the store has records of, built again from the
    store with the schema of the current build (forms not built are listed, not built)."""
    done = CatchUp()
    for form_id in store.form_ids():
        try:
            schemas = [load_schema(Path(settings.build_dir), form_id)]
        except DataError:
            done.unbuilt.append(form_id)
            continue
        one = rebuild(settings, store, form_id, schemas)
        done.changed.update(one.changed)
        done.rebuilt += one.rebuilt
    return done


def _since(mark: str | None) -> str | None:
    """Where a scan starts: the mark less the margin (None: from the beginning)."""
    if mark is None:
        return None
    start = datetime.fromisoformat(mark.replace("Z", "+00:00")) - MARGIN
    return start.strftime("%Y-%m-%dT%H:%M:%S")


def _begin(folder: Path, state: dict[str, Any]) -> None:
    """Say the form is being written before any file changes: state.json keeps the last
    committed mark and count, and ``busy`` until the final write_state clears it."""
    write_state(folder, {**state, "busy": True})


def _changed(folder: Path, parts: int, scan: Any, recent: Held, since: str | None, killed: bool) -> tuple[list[str], dict[str, int]]:  # fmt: skip
    """The scanned ids the tables do not hold in that version, and the partition holding the
    older version of each one that has one (the rest are new or deleted). ``killed``: the
    files may hold any of them, so every one is looked for."""
    changed: list[str] = []
    where: dict[str, int] = {}
    unknown: list[str] = []  # first seen before ``since`` and not recent: may be anywhere
    for iid, stamp, first in zip(scan.instance_ids, scan.changed_at, scan.first_seen_at, strict=True):  # fmt: skip
        held = recent.get(iid)
        if held is not None:
            if held[1] == stamp:
                continue
            where[iid] = held[0]
        elif since is not None and (killed or first < since):
            unknown.append(iid)
        changed.append(iid)
    if unknown:
        where.update(_locate(folder, parts, unknown))
    return changed, where


def _locate(folder: Path, parts: int, ids: list[str]) -> dict[str, int]:
    """The partition holding each of ``ids`` that one holds, from the form files' ids."""
    found: dict[str, int] = {}
    wanted = pa.array(ids, pa.string())
    for part in range(parts):
        path = folder / part_name(part) / "form.parquet"
        if not path.exists():
            continue
        column = _read(path, ["instance_id"])["instance_id"]
        if pa.types.is_null(column.type):  # a file without rows (written before types)
            continue
        for iid in column.filter(pc.is_in(column, value_set=wanted.cast(column.type))).to_pylist():  # fmt: skip
            found[iid] = part
        if len(found) == len(ids):
            break
    return found


def _apply(folder: Path, state: dict[str, Any], where: dict[str, int], stored: Any, schemas: Sequence[FormSchema]) -> Held:  # fmt: skip
    """Remove the batch's ids from the partitions that hold them, append its live records to
    the last partition(s), and return where each id is now (-1: deleted, in no partition)."""
    ids = {rec.instance_id for rec in stored.records}
    for part in sorted({where[i] for i in ids if where.get(i, -1) >= 0}):
        _filter_part(folder, part, ids)
    placed: Held = {}
    live = []
    for rec, stamp in zip(stored.records, stored.changed_at, strict=True):
        if rec.deleted:
            placed[rec.instance_id] = (-1, stamp)
        else:
            live.append((rec, stamp))
    while live:
        part = max(state["parts"] - 1, 0)
        room = PART_ROWS - _rows(folder, part)
        if state["parts"] == 0 or room <= 0:
            part, room = state["parts"], PART_ROWS
        state["parts"] = max(state["parts"], part + 1)
        take, live = live[:room], live[room:]
        _append_part(folder, part, tidy([rec for rec, _ in take], schemas), ids)
        placed.update((rec.instance_id, (part, stamp)) for rec, stamp in take)
    return placed


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    # ParquetFile, not pq.read_table: one file needs no dataset machinery (whose first use
    # costs a fresh process ~0.2 s)
    with pq.ParquetFile(path) as f:
        return f.read(columns=columns)


def _rows(folder: Path, part: int) -> int:
    """Submissions in a partition (its form file's row count, from the footer alone)."""
    path = folder / part_name(part) / "form.parquet"
    return pq.read_metadata(path).num_rows if path.exists() else 0


def _filter_part(folder: Path, part: int, ids: set[str]) -> None:
    for path in (folder / part_name(part)).glob("*.parquet"):
        table = _read(path)
        column = table["instance_id"]
        if table.num_rows == 0 or pa.types.is_null(column.type):  # an empty table: no rows
            continue
        wanted = pa.array(list(ids), type=column.type)  # the file's own text type
        keep = pc.invert(pc.is_in(column, value_set=wanted))
        write(path, _text_nulls(table.filter(keep)))


def _append_part(folder: Path, part: int, form: TidyForm, ids: set[str]) -> None:
    where = folder / part_name(part)
    where.mkdir(parents=True, exist_ok=True)
    frames = [("form", form.table), *((file_stem(r), t) for r, t in form.repeats.items())]
    for name, frame in frames:
        path = where / f"{name}.parquet"
        new = _to_arrow(frame)
        if path.exists():
            old = _read(path)
            if old.num_rows and not pa.types.is_null(old["instance_id"].type):
                # ids a killed run wrote here already are dropped first
                wanted = pa.array(list(ids), type=old["instance_id"].type)
                old = old.filter(pc.invert(pc.is_in(old["instance_id"], value_set=wanted)))
                # the old file's columns first; a column only one side has is null in the other
                new = pa.concat_tables([_text_nulls(old), new], promote_options="permissive")
        write(path, new)


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A tidy frame as Arrow, every column typed as in tidy's empty template.

    tidy types a column by its field, never by its values, so Arrow can type every column as
    the template has it but three: categories, whose lists differ from batch to batch (stored
    as text, made categorical again on reading), text with no values at all (no rows, or no
    answers), which Arrow would type ``null``, and text pandas inferred as its own ``str``
    (``large_string``). All become ``string``, as the template's text is, with pandas metadata
    saying text."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    text = set()
    for i, f in enumerate(table.schema):
        dictionary = pa.types.is_dictionary(f.type)
        if pa.types.is_null(f.type) or (dictionary and pa.types.is_null(f.type.value_type)):
            column = pa.nulls(table.num_rows, pa.string())
        elif dictionary or pa.types.is_large_string(f.type):
            column = table.column(i).cast(pa.string())
        else:
            continue
        table = table.set_column(i, pa.field(f.name, pa.string()), column)
        text.add(f.name)
    return _say_text(table, text) if text else table


def _text_nulls(table: pa.Table) -> pa.Table:
    """A file's ``null`` columns (written before they were typed) as text: only text can
    have been ``null`` (see :func:`_to_arrow`)."""
    text = set()
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):
            table = table.set_column(i, pa.field(f.name, pa.string()), pa.nulls(table.num_rows, pa.string()))  # fmt: skip
            text.add(f.name)
    return _say_text(table, text) if text else table


def _say_text(table: pa.Table, names: set[str]) -> pa.Table:
    """Columns ``names`` described as text in the pandas metadata, as their type now is."""
    metadata = dict(table.schema.metadata or {})
    if b"pandas" not in metadata:
        return table
    pandas = json.loads(metadata[b"pandas"])
    for column in pandas.get("columns", []):
        if column.get("field_name") in names:
            column.update(pandas_type="unicode", numpy_type="object", metadata=None)
    metadata[b"pandas"] = json.dumps(pandas).encode()
    return table.replace_schema_metadata(metadata)


def _read_recent(folder: Path) -> Held:
    path = folder / _INDEX
    if not path.exists():
        return {}
    table = _read(path)
    ids, parts, stamps = (table[c].to_pylist() for c in ("instance_id", "part", "changed_at"))
    return dict(zip(ids, zip(parts, stamps, strict=True), strict=True))


def _write_recent(folder: Path, held: Held, since: str | None) -> None:
    """Keep the rows a scan from ``since`` can return again: changed at or after it."""
    rows = [(i, p, s) for i, (p, s) in held.items() if since is None or s >= since]
    columns = list(zip(*rows, strict=True)) if rows else [(), (), ()]
    arrays = [pa.array(c, f.type) for c, f in zip(columns, _INDEX_SCHEMA, strict=True)]
    write(folder / _INDEX, pa.Table.from_arrays(arrays, schema=_INDEX_SCHEMA))


def _drop_unfinished(folder: Path, parts: int) -> None:
    """Partitions a killed run started after the last state it wrote: nothing refers to
    them, and the rows in them are caught up again."""
    for path in folder.glob("part-*"):
        number = path.name.removeprefix("part-")
        if number.isdigit() and int(number) >= parts:
            shutil.rmtree(path, ignore_errors=True)
