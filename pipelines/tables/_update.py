"""Bringing a form's tables up to date with the store (:func:`catch_up`), and rebuilding
them (:func:`rebuild`, :func:`rebuild_all`): see :mod:`pipelines.tables`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forms.schema import FormSchema, load_schema
from pipelines.analysis.tidy import TidyForm, merge_schemas, tidy
from pipelines.errors import DataError
from pipelines.records import Record
from pipelines.tables._files import (
    PART_ROWS,
    clear,
    file_stem,
    fingerprint,
    locked,
    part_name,
    read_frame,
    read_index,
    read_state,
    tables_dir,
    write,
    write_index,
    write_state,
)

MARGIN = timedelta(seconds=60)  # how far before the last mark to look again (see above)


_FETCH = 20_000  # submissions read from the store and tidied at a time


_CHUNK = 500  # ids per IN (...) query


_COLUMNS = (
    "form_id, instance_id, form_version, submitted_at, updated_at, review_state, deleted, "
    "record_json, attachments_expected, source_version"
)


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
        state = read_state(folder)
        if state.get("fingerprint") != fingerprint(schema):
            clear(folder)
            state = {"fingerprint": fingerprint(schema), "mark": None, "parts": 0}
            done.rebuilt.append(form_id)
        index = read_index(folder)
        changed, latest = _changed_ids(store, form_id, state["mark"], index)
        if changed:
            done.changed[form_id] = len(changed)
            for start in range(0, len(changed), _FETCH):
                records = _records(store, form_id, changed[start : start + _FETCH])
                index = _apply(folder, state, index, records, list(schemas))
            write_index(folder, index)
        state["mark"] = max(state["mark"] or "", latest or "") or None
        write_state(folder, state)
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
    forms = [r[0] for r in store.db.execute("SELECT DISTINCT form_id FROM submissions ORDER BY form_id")]  # fmt: skip
    for form_id in forms:
        try:
            schemas = [load_schema(Path(settings.build_dir), form_id)]
        except DataError:
            done.unbuilt.append(form_id)
            continue
        one = rebuild(settings, store, form_id, schemas)
        done.changed.update(one.changed)
        done.rebuilt += one.rebuilt
    return done


def _changed_ids(store: Any, form_id: str, mark: str | None, index: pd.DataFrame) -> tuple[list[str], str | None]:  # fmt: skip
    """Ids whose stored row changed since ``mark`` (less the margin) and that the tables do not
    hold in that version, and the latest stamp seen. Reads only ids and stamps, never JSON."""
    if mark is None:
        rows = store.db.execute(
            "SELECT instance_id, changed_at FROM submissions WHERE form_id = ?", (form_id,)
        ).fetchall()
    else:
        since = (datetime.fromisoformat(mark.replace("Z", "+00:00")) - MARGIN).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )
        rows = store.db.execute(
            "SELECT instance_id, changed_at FROM submissions WHERE form_id = ? AND changed_at >= ?",
            (form_id, since),
        ).fetchall()
    if not rows:
        return [], None
    seen = pd.DataFrame(rows, columns=["instance_id", "changed_at"], dtype=object)
    held = index.set_index("instance_id")["changed_at"].reindex(seen["instance_id"]).to_numpy()
    return seen["instance_id"][seen["changed_at"].to_numpy() != held].tolist(), seen[
        "changed_at"
    ].max()


def _records(store: Any, form_id: str, ids: list[str]) -> list[tuple[Record, str]]:
    """The stored records of ``ids`` (deleted ones too) with their ``changed_at``."""
    out = []
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(part))
        rows = store.db.execute(
            f"SELECT {_COLUMNS}, changed_at FROM submissions "  # noqa: S608 (marks are only ?s)
            f"WHERE form_id = ? AND instance_id IN ({marks})",
            (form_id, *part),
        )
        for r in rows:
            rec = Record(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[7]), bool(r[6]), r[8], (), r[9])  # fmt: skip
            out.append((rec, r[10]))
    return out


def _apply(folder: Path, state: dict[str, Any], index: pd.DataFrame, batch: list[tuple[Record, str]], schemas: list[FormSchema]) -> pd.DataFrame:  # fmt: skip
    """Remove the batch's ids wherever they are, append its live records to the last
    partition(s), and return the new index (deleted ids stay in it with part -1, so they are
    not read again)."""
    ids = {rec.instance_id for rec, _ in batch}
    held = index[index["instance_id"].isin(ids)]
    for part in sorted(set(held["part"].tolist()) - {-1}):
        _filter_part(folder, int(part), ids)
    index = index[~index["instance_id"].isin(ids)]
    live = [(rec, stamp) for rec, stamp in batch if not rec.deleted]
    gone = [(rec.instance_id, stamp) for rec, stamp in batch if rec.deleted]
    if gone:
        rows = pd.DataFrame({"instance_id": [i for i, _ in gone], "part": -1, "changed_at": [s for _, s in gone]})  # fmt: skip
        index = pd.concat([index, rows], ignore_index=True)
    while live:
        part = max(state["parts"] - 1, 0)
        room = PART_ROWS - int((index["part"] == part).sum())
        if state["parts"] == 0 or room <= 0:
            part, room = state["parts"], PART_ROWS
        state["parts"] = max(state["parts"], part + 1)
        take, live = live[:room], live[room:]
        form = tidy([rec for rec, _ in take], schemas)
        _append_part(folder, part, form, ids)
        held_ids, stamps = [r.instance_id for r, _ in take], [s for _, s in take]
        rows = pd.DataFrame({"instance_id": held_ids, "part": part, "changed_at": stamps})
        index = pd.concat([index, rows], ignore_index=True)
    return index


def _filter_part(folder: Path, part: int, ids: set[str]) -> None:
    for path in (folder / part_name(part)).glob("*.parquet"):
        table = pq.read_table(path)
        column = table["instance_id"]
        if table.num_rows == 0 or pa.types.is_null(column.type):  # an empty table: no rows
            continue
        wanted = pa.array(list(ids), type=column.type)  # the file's own text type
        keep = pa.compute.invert(pa.compute.is_in(column, value_set=wanted))
        write(path, table.filter(keep))


def _append_part(folder: Path, part: int, form: TidyForm, ids: set[str]) -> None:
    where = folder / part_name(part)
    where.mkdir(parents=True, exist_ok=True)
    for name, frame in [
        ("form", form.table),
        *((file_stem(r), t) for r, t in form.repeats.items()),
    ]:
        path = where / f"{name}.parquet"
        new = _plain(frame)
        if path.exists():  # ids a crashed run wrote here already are dropped first
            old = read_frame(path)
            old = old[~old["instance_id"].isin(ids)]
            new = pd.concat([old, new], ignore_index=True) if len(old) else new
        write(path, pa.Table.from_pandas(new, preserve_index=False))


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    # Categories differ from batch to batch: stored as text, made categorical again on reading.
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out
