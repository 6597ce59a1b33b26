"""Columnar copies of every form's tidy tables, kept up to date from the store as data arrives.

The report used to read and parse every stored submission's JSON on each run (tens of seconds
for a county's year). Here each form's tidy tables (:func:`pipelines.analysis.tidy.tidy`: the
form table and one per repeat, the very same columns and types) are kept as Parquet files under
``<data_dir>/tables/<form_id>/``, and only what changed is tidied again:

- ``part-NNNNN/form.parquet`` and ``part-NNNNN/<repeat>.parquet``: up to :data:`PART_ROWS`
  submissions per partition, a submission's repeat rows beside it. New and edited submissions
  go to the last partition; an edit or a deletion also rewrites the partition that held the old
  row. So an update rewrites one or two small files, never the whole form;
- ``index.parquet``: ``instance_id → part, changed_at`` (where each row lives, which version);
- ``state.json``: the store's change mark read up to, and a fingerprint of the schema and of
  this file layout. A different fingerprint (a new form version was built) rebuilds the form,
  which adds the new version's columns.

Catching up (:func:`catch_up`) asks the store for the rows whose ``changed_at`` is at or after
the last mark less :data:`MARGIN` (a writer takes its time stamp before it gets the write lock,
so a row may commit a little after a later stamp); rows the index already holds with the same
``changed_at`` are skipped, so only new, edited and deleted submissions are read and tidied.
It runs after every page a pull stores (``pipelines.sync``) and at the start of every report
(``load_inputs``), so submissions ``manyi serve`` received are caught up too.

The store stays the system of record: ``manyi tables rebuild`` (:func:`rebuild`) throws the
tables away and builds them again, with the same result as the incremental updates.

Parquet (pyarrow) files with pandas metadata: the types tidy makes (nullable Int64/Float64/
boolean, Shanghai timestamps) round-trip as they are, and a partition is rewritten whole, which
keeps the update logic plain. (A measured comparison with DuckDB is still to be made.)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forms.schema import FormSchema, load_schema
from pipelines.analysis.tidy import TidyForm, _as_text, merge_schemas, tidy
from pipelines.errors import DataError
from pipelines.records import Record

FORMAT = 1  # bump when the file layout or the stored types change: every form rebuilds
PART_ROWS = 50_000  # submissions per partition: a rewrite stays small
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


def tables_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "tables"


def catch_up(settings: Any, store: Any, form_id: str, schemas: Sequence[FormSchema]) -> CatchUp:
    """Bring ``form_id``'s tables up to date with the store; returns what changed."""
    schema = merge_schemas(list(schemas))
    folder = tables_dir(settings) / form_id
    done = CatchUp()
    with _locked(folder):
        state = _read_state(folder)
        if state.get("fingerprint") != _fingerprint(schema):
            _clear(folder)
            state = {"fingerprint": _fingerprint(schema), "mark": None, "parts": 0}
            done.rebuilt.append(form_id)
        index = _read_index(folder)
        changed, latest = _changed_ids(store, form_id, state["mark"], index)
        if changed:
            done.changed[form_id] = len(changed)
            for start in range(0, len(changed), _FETCH):
                records = _records(store, form_id, changed[start : start + _FETCH])
                index = _apply(folder, state, index, records, list(schemas))
            _write_index(folder, index)
        state["mark"] = max(state["mark"] or "", latest or "") or None
        _write_state(folder, state)
    return done


def rebuild(settings: Any, store: Any, form_id: str, schemas: Sequence[FormSchema]) -> CatchUp:
    """Throw ``form_id``'s tables away and build them again from the store."""
    folder = tables_dir(settings) / form_id
    with _locked(folder):
        _clear(folder)
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


def read_form(settings: Any, form_id: str, schemas: Sequence[FormSchema], columns: Sequence[str] | None = None) -> TidyForm:  # fmt: skip
    """The form's tidy tables as :func:`tidy` makes them from the store's live records (rows in
    the store's order, columns and types as tidy's). ``columns`` keeps only those columns of the
    form table (``instance_id`` always), read from the files and nothing else."""
    schema = merge_schemas(list(schemas))
    template = tidy([], schemas)
    folder = tables_dir(settings) / form_id
    with _locked(folder, shared=True):
        parts = sorted(p for p in folder.glob("part-*") if p.is_dir())
        keep = None if columns is None else list(dict.fromkeys(["instance_id", *columns]))
        wanted = None if keep is None else list(dict.fromkeys([*keep, "submitted_at"]))
        table = _canonical(_read_parts(parts, "form", wanted), template.table, wanted is not None)
        table = table.sort_values(["submitted_at", "instance_id"], na_position="first", kind="stable")  # fmt: skip
        table = table.reset_index(drop=True)
        if keep is not None:
            table = table[[c for c in keep if c in table.columns]]
        order = pd.Series(range(len(table)), index=table["instance_id"].to_numpy())
        repeats = {}
        for rep, empty in template.repeats.items():
            frame = _canonical(_read_parts(parts, _file(rep)), empty)
            position = order.reindex(frame["instance_id"].to_numpy()).to_numpy()
            frame = frame.iloc[pd.Series(position).argsort(kind="stable").to_numpy()]
            repeats[rep] = frame.reset_index(drop=True)
    return TidyForm(form_id, schema, table, repeats)


def load_form(settings: Any, store: Any, form_id: str, schemas: Sequence[FormSchema]) -> TidyForm:
    """Catch the tables up with the store, then read them: what ``load_inputs`` uses."""
    catch_up(settings, store, form_id, schemas)
    return read_form(settings, form_id, schemas)


# ---- reading the store ---------------------------------------------------------------------


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


# ---- updating the files --------------------------------------------------------------------


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
    for path in (folder / _part(part)).glob("*.parquet"):
        table = pq.read_table(path)
        column = table["instance_id"]
        if table.num_rows == 0 or pa.types.is_null(column.type):  # an empty table: no rows
            continue
        wanted = pa.array(list(ids), type=column.type)  # the file's own text type
        keep = pa.compute.invert(pa.compute.is_in(column, value_set=wanted))
        _write(path, table.filter(keep))


def _append_part(folder: Path, part: int, form: TidyForm, ids: set[str]) -> None:
    where = folder / _part(part)
    where.mkdir(parents=True, exist_ok=True)
    for name, frame in [("form", form.table), *((_file(r), t) for r, t in form.repeats.items())]:
        path = where / f"{name}.parquet"
        new = _plain(frame)
        if path.exists():  # ids a crashed run wrote here already are dropped first
            old = _read_frame(path)
            old = old[~old["instance_id"].isin(ids)]
            new = pd.concat([old, new], ignore_index=True) if len(old) else new
        _write(path, pa.Table.from_pandas(new, preserve_index=False))


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    # Categories differ from batch to batch: stored as text, made categorical again on reading.
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _write(path: Path, table: pa.Table) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


# ---- reading the files ---------------------------------------------------------------------


def _read_frame(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    if columns is not None:
        have = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in have]
    frame = pq.read_table(path, columns=columns).to_pandas()
    for col in frame.columns:  # pandas reads text back as its str dtype: tidy's is object
        if isinstance(frame[col].dtype, pd.StringDtype):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def _read_parts(parts: list[Path], name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    frames = [_read_frame(p / f"{name}.parquet", columns) for p in parts if (p / f"{name}.parquet").exists()]  # fmt: skip
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _canonical(
    frame: pd.DataFrame, template: pd.DataFrame, columns_only: bool = False
) -> pd.DataFrame:
    """The stored rows with tidy's columns, in tidy's order and types: the schema's columns as
    the empty tidy has them, then columns of fields no schema describes (text) that any row
    still answers, by name."""
    out: dict[str, Any] = {}
    n = len(frame)
    for col in template.columns:
        dtype = template[col].dtype
        if col not in frame.columns:  # no rows, or only the columns asked for were read
            if columns_only and n:
                continue
            out[col] = pd.Series([None] * n, dtype=object).astype(dtype)
            continue
        values = frame[col]
        if isinstance(dtype, pd.CategoricalDtype):
            out[col] = _categorical(values, list(dtype.categories), col == "review_state")
        elif values.dtype != dtype:
            text = values.astype(object).where(values.notna(), None)
            out[col] = text if dtype == object else values.astype(dtype)  # noqa: E721
        else:
            out[col] = values
    for col in sorted(set(frame.columns) - set(template.columns)):
        if frame[col].notna().any():
            out[col] = frame[col].astype(object).where(frame[col].notna(), None)
    result = pd.DataFrame(out, index=range(n))
    if "form_version" in result.columns and n:  # tidy inserts it as an array: the same dtype
        result["form_version"] = _as_text(result["form_version"].tolist()).array
    return result


def _categorical(values: pd.Series, listed: list[str], sorted_only: bool) -> pd.Series:
    """As tidy: the schema's choices first, values it does not list after, sorted."""
    text = values.astype(object)
    seen = {str(v) for v in pd.unique(text[text.notna()])}
    if sorted_only:
        return text.astype(pd.CategoricalDtype(sorted(seen)))
    known = set(listed)
    cats = listed + sorted(t for t in seen if t and t not in known)
    return pd.Series(pd.Categorical(text.where(text != "", None), categories=cats), index=values.index)  # fmt: skip


# ---- state, index, locking -----------------------------------------------------------------


def _fingerprint(schema: FormSchema) -> str:
    return hashlib.sha256(f"{FORMAT}\x1f{schema!r}".encode()).hexdigest()


def _part(n: int) -> str:
    return f"part-{n:05d}"


def _file(repeat: str) -> str:
    return "repeat-" + repeat.replace("/", "~")


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / "state.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(folder / "state.json")


def _read_index(folder: Path) -> pd.DataFrame:
    path = folder / "index.parquet"
    if not path.exists():
        return pd.DataFrame({"instance_id": pd.Series([], dtype=object), "part": pd.Series([], dtype="int64"), "changed_at": pd.Series([], dtype=object)})  # fmt: skip
    return _read_frame(path)


def _write_index(folder: Path, index: pd.DataFrame) -> None:
    _write(folder / "index.parquet", pa.Table.from_pandas(index, preserve_index=False))


def _clear(folder: Path) -> None:
    for p in folder.glob("part-*"):
        shutil.rmtree(p, ignore_errors=True)
    for name in ("index.parquet", "state.json"):
        (folder / name).unlink(missing_ok=True)


@contextmanager
def _locked(folder: Path, shared: bool = False) -> Iterator[None]:
    """One writer per form at a time (a pull, a report, the server's refresher), readers
    beside each other."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a+b") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
