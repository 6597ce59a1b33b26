"""Canonical records + form schema -> typed, tidy pandas tables.

One table per form (one row per submission) and one per repeat (one row per repeat entry,
keyed to its submission by ``instance_id`` and its 1-based ``repeat_index``, as in XForm's
``position()``). Columns are the XForm field *names* (``village``, not ``basic/village``); when
two fields of one table share a name, both use their slash path instead.

Types, decided by the schema and converted column by column (never cell by cell):

- ``select_one``: categorical whose categories are the form's choice names (values seen that the
  schema does not list are kept as extra categories, never dropped); :func:`display_frame`
  swaps in the Chinese labels;
- ``select_multiple``: the raw space-separated text, plus one nullable boolean column
  ``<name>/<choice>`` per choice (NA where the question was not answered);
- ``geopoint``: ``<name>_lon``, ``<name>_lat``, ``<name>_altitude``, ``<name>_accuracy``;
- ``integer`` -> ``Int64``, ``decimal`` -> ``Float64``;
- ``date`` -> ``datetime64`` calendar dates (local dates, no zone); ``dateTime`` (``start``,
  ``end``) and the record's ``submitted_at``/``updated_at`` -> Asia/Shanghai aware timestamps;
  ``time`` -> ``HH:MM:SS`` text in Asia/Shanghai. A form's dateTime or time without a zone is
  the phone's local time, so it is read as Asia/Shanghai (never as UTC); one with a zone (``Z``,
  ``+08:00``) is converted. The record's own times are UTC by definition (records.utc_text);
- everything else (text, calculate, image, geotrace …) stays text.

Records of several form versions combine into one table: pass every version's schema and the
columns are the union, with NA where a version lacked the field. Fields found in the data that
no schema describes are kept as text columns, so nothing is lost. The XForm's own
``meta/instanceID`` is not repeated as a column: ``instance_id`` holds it.

Speed (a million submissions is the benchmark, ``benchmarks/report.py``): values are gathered a
column at a time (one list per group, one comprehension per field), choices, dates and
select_multiple answers are converted once per distinct value, and the cyclic garbage collector
is paused while the records' dicts are read.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from forms.schema import Field, FormSchema
from pipelines.config import TIMEZONE
from pipelines.records import Record

TZ = TIMEZONE
RECORD_COLUMNS = ("instance_id", "form_version", "submitted_at", "updated_at", "review_state")
_SKIP = {"instanceID"}  # the record's instance_id already holds it
_GEO_PARTS = ("lat", "lon", "altitude", "accuracy")  # XForm order of a geopoint's text


@dataclass(frozen=True)
class TidyForm:
    """The tidy tables of one form."""

    form_id: str
    schema: FormSchema  # the merged schema of every version given
    table: pd.DataFrame  # one row per submission
    repeats: dict[str, pd.DataFrame] = field(default_factory=dict)  # repeat path -> table

    def repeat(self, path: str, parent_columns: Sequence[str] = ()) -> pd.DataFrame:
        """A repeat's table with ``parent_columns`` of its submission joined on (e.g. village)."""
        table = self.repeats[path]
        if not parent_columns:
            return table
        parent = self.table[["instance_id", *parent_columns]]
        return table.merge(parent, on="instance_id", how="left", validate="many_to_one")


def merge_schemas(schemas: Sequence[FormSchema]) -> FormSchema:
    """One schema holding the union of the fields of several versions of a form.

    The newest version (highest ``yyyymmddrr``) wins for types and labels; choice lists are
    merged so a choice dropped in a later version still has its label.
    """
    if not schemas:
        raise ValueError("merge_schemas needs at least one schema")
    ordered = sorted(schemas, key=lambda s: s.version)
    newest = ordered[-1]
    merged: dict[str, Field] = {}
    for schema in ordered:
        for f in schema.fields:
            old = merged.get(f.path)
            if old is not None and old.choices and f.choices is not None:
                f = replace(f, choices={**old.choices, **f.choices})
            merged[f.path] = f
    repeats = tuple(dict.fromkeys(r for s in ordered for r in s.repeats))
    return FormSchema(newest.form_id, newest.version, newest.title, tuple(merged.values()), repeats)


def _get(rec: Any, key: str) -> Any:
    return rec.get(key) if isinstance(rec, Mapping) else getattr(rec, key, None)


def _column_names(fields: Sequence[Field]) -> dict[str, str]:
    counts: dict[str, int] = {}
    for f in fields:
        counts[f.name] = counts.get(f.name, 0) + 1
    return {f.path: f.name if counts[f.name] == 1 else f.path for f in fields}


def _relative(path: str, base: str | None) -> list[str]:
    rel = path[len(base) + 1 :] if base else path
    return rel.split("/")


def _repeat_items(data: Mapping[str, Any], parts: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """Entries of a (possibly nested) repeat, each with its key, e.g. ``outer[1]/inner[2]``."""
    found: list[tuple[str, Mapping[str, Any]]] = [("", data)]
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        nxt: list[tuple[str, Mapping[str, Any]]] = []
        for key, node in found:
            value = node.get(part) if isinstance(node, dict) else None
            if value is None:
                continue
            if isinstance(value, list):
                for i, item in enumerate(value, start=1):
                    if isinstance(item, dict):
                        nxt.append(
                            (f"{key}{part}[{i}]/" if not last else f"{key}{part}[{i}]", item)
                        )
            elif isinstance(value, dict) and not last:
                nxt.append((key, value))
            elif isinstance(value, dict):  # a repeat with a single entry, sent as an object
                nxt.append((f"{key}{part}[1]", value))
        found = nxt
    return found


_EMPTY: dict[str, Any] = {}  # stands in for a missing group; never written to


def _tree(paths: Iterable[str]) -> dict[str, Any]:
    """Nested {name: subtree} of slash paths; a leaf is None."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        *groups, leaf = path.split("/")
        for part in groups:
            if node.get(part) is None:  # new, or a field also used as a group: a group wins
                node[part] = {}
            node = node[part]
        node.setdefault(leaf, None)
    return root


def _columns(rows: list[Mapping[str, Any]], known: list[str], repeats: frozenset[str], skip: Sequence[str] = ()) -> tuple[dict[str, list[Any]], list[str]]:  # fmt: skip
    """Column lists for the ``known`` relative paths, plus the paths in the data that no
    schema describes (a field of another version, say), and their columns.

    Works a column at a time, not a row at a time: each group of the schema becomes one list of
    the group's dicts, each field one list comprehension over it, and the keys nobody expects
    are found with one C-level set union per group. That keeps a million submissions within a
    few seconds; repeats (lists) and ``skip`` paths are left out.
    """
    cols: dict[str, list[Any]] = {}
    extra: list[str] = []
    nodes = [r if isinstance(r, dict) else _EMPTY for r in rows]
    _gather(nodes, "", _tree([*known, *repeats, *skip]), set(known), cols, extra)
    return cols, extra


def _gather(nodes: list[dict[str, Any]], prefix: str, tree: dict[str, Any], known: set[str], cols: dict[str, list[Any]], extra: list[str]) -> None:  # fmt: skip
    present = set().union(*nodes) if nodes else set()
    for name, sub in tree.items():
        path = prefix + name
        if sub is None:
            if path in known:
                cols[path] = [n.get(name) for n in nodes] if name in present else [None] * len(nodes)  # fmt: skip
            continue  # a repeat (its own table) or a skipped field
        if name in present:
            child = [c if isinstance(c := n.get(name), dict) else _EMPTY for n in nodes]
        else:
            child = [_EMPTY] * len(nodes)
        _gather(child, path + "/", sub, known, cols, extra)
    for name in sorted(present - tree.keys()):
        path = prefix + name
        values = [n.get(name) for n in nodes]
        groups = [v if isinstance(v, dict) else _EMPTY for v in values]
        if any(g is not _EMPTY for g in groups):  # an unknown group: all its fields are extra
            _gather(groups, path + "/", {}, known, cols, extra)
        scalars = [None if isinstance(v, dict | list) else v for v in values]
        if any(v is not None for v in scalars):  # lists are repeats nobody asked for: skipped
            cols[path] = scalars
            extra.append(path)


def _as_text(values: list[Any]) -> pd.Series:
    s = pd.Series(values, dtype=object)
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return s  # already text (the usual case): skip a copy of every value
    return s.where(s.isna(), s.astype(str))


def _typed(name: str, f: Field | None, values: list[Any], out: dict[str, pd.Series]) -> None:
    kind = f.type if f is not None else "text"
    raw = pd.Series(values, dtype=object)
    if kind == "select_one":
        out[name] = _choice(raw, list((f.choices or {}).keys()))
    elif kind == "select_multiple":
        text = raw.where(raw.isna(), raw.astype(str))
        out[name] = text
        # A handful of distinct answers repeat over all rows: test each choice once per answer.
        codes, uniques = pd.factorize(text)
        tokens = [set(str(u).split(" ")) for u in uniques]
        for choice in f.choices or {}:  # type: ignore[union-attr]
            has = pd.array([choice in t for t in tokens], dtype="boolean")
            out[f"{name}/{choice}"] = pd.Series(has.take(codes, allow_fill=True), index=raw.index)
    elif kind == "geopoint":
        text = raw.where(raw.isna(), raw.astype(str)).replace("", None)
        parts = text.str.split(" ", n=3, expand=True) if text.notna().any() else None
        for i, part in enumerate(_GEO_PARTS):
            if parts is not None and i in parts.columns:
                col = pd.to_numeric(parts[i], errors="coerce").astype("Float64")
            else:
                col = pd.Series(pd.NA, index=raw.index, dtype="Float64")
            out[f"{name}_{part}"] = col
        # lon first, like GeoJSON and geopandas
        for part in ("lon", "lat", "altitude", "accuracy"):
            out[f"{name}_{part}"] = out.pop(f"{name}_{part}")
    elif kind == "integer":
        out[name] = pd.to_numeric(raw, errors="coerce").round().astype("Int64")
    elif kind == "decimal":
        out[name] = pd.to_numeric(raw, errors="coerce").astype("Float64")
    elif kind in ("date", "today"):
        out[name] = _per_unique(raw, _dates)
    elif kind in ("dateTime", "start", "end"):
        out[name] = _local_time(raw, naive=TZ)
    elif kind == "time":
        # a day of the year 2000 carries the time through the parser (Shanghai was +08:00)
        clock = _per_unique(raw, _clock_time).astype(object)
        out[name] = clock.where(clock.notna(), None)
    else:
        out[name] = _as_text(values)


def _per_unique(raw: pd.Series, convert: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``convert`` applied once per distinct value (a year has 365 dates, not 300,000)."""
    codes, uniques = pd.factorize(raw)
    done = convert(pd.Series(uniques.to_numpy(dtype=object), dtype=object))
    return pd.Series(done.array.take(codes, allow_fill=True), index=raw.index)


def _dates(text: pd.Series) -> pd.Series:
    day = text.astype(str).str.slice(0, 10)
    return pd.to_datetime(day, format="%Y-%m-%d", errors="coerce").astype("datetime64[ns]")


def _choice(raw: pd.Series, listed: list[str]) -> pd.Series:
    """Categorical of the choice names: the schema's choices first, unknown values after
    (sorted), blanks as NA. Built from the distinct values, then their codes."""
    codes, uniques = pd.factorize(raw)
    texts = [str(u) for u in uniques]
    known = set(listed)
    categories = listed + sorted({t for t in texts if t and t not in known})
    position = {c: i for i, c in enumerate(categories)}
    lookup = np.array([position.get(t, -1) for t in texts] + [-1], dtype=np.int64)
    cat = pd.Categorical.from_codes(lookup[codes], categories=categories)
    return pd.Series(cat, index=raw.index)


# A zone designator at the end of an ISO-8601 time: Z, +08:00, +0800 or +08 (after hh:mm).
_ZONED = r":\d\d(?:[.,]\d+)?\s*(?:[Zz]|[+-]\d\d(?::?\d\d)?)$"


def _local_time(raw: pd.Series, naive: str = "UTC") -> pd.Series:
    """ISO-8601 text -> Asia/Shanghai aware timestamps. A value with a zone (``Z``, any
    offset) is converted; one without is read as local time in ``naive``.

    A column is nearly always all zoned or all unzoned: one vectorised parse does it. Only a
    mixed column (the parser refuses to mix) is split by a regex and parsed in two parts.
    """
    text = raw.where(raw.isna(), raw.astype(str))
    try:
        stamp = pd.to_datetime(text, errors="coerce", format="ISO8601")
    except ValueError:  # zoned and unzoned values, or several offsets, in one column
        zoned = text.str.contains(_ZONED, regex=True, na=False).to_numpy(dtype=bool)
        aware = pd.to_datetime(text.where(zoned), errors="coerce", utc=True, format="ISO8601")
        local = _localize(pd.to_datetime(text.where(~zoned), errors="coerce", format="ISO8601"), naive)  # fmt: skip
        stamp = aware.dt.tz_convert(TZ).where(zoned, local.dt.tz_convert(TZ))
    else:
        if stamp.dt.tz is None:
            stamp = _localize(stamp, naive)
    return stamp.dt.tz_convert(TZ).astype(f"datetime64[ns, {TZ}]")


def _localize(stamp: pd.Series, zone: str) -> pd.Series:
    # a wall-clock time that does not exist or repeats (Shanghai's summer time of 1986–91) is NaT
    return stamp.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")


def _clock_time(text: pd.Series) -> pd.Series:
    """``HH:MM[:SS][zone]`` -> ``HH:MM:SS`` in Asia/Shanghai; unzoned times are local already."""
    day = text.where(text.isna(), "2000-01-01T" + text.astype(str).str.strip())
    return _local_time(day, naive=TZ).dt.strftime("%H:%M:%S").astype(object)


def _frame(
    rows: list[Mapping[str, Any]],
    fields: list[Field],
    prefix: str | None,
    repeats: set[str],
    index: dict[str, list[Any]],
    skip: Sequence[Field] = (),
) -> pd.DataFrame:
    rel = {f.path: "/".join(_relative(f.path, prefix)) for f in fields}
    nested = frozenset(
        "/".join(_relative(r, prefix)) for r in repeats if not prefix or r.startswith(prefix + "/")
    )
    skipped = ["/".join(_relative(f.path, prefix)) for f in skip]
    cols, extra = _columns(rows, list(rel.values()), nested, skipped)
    names = _column_names(fields)
    out: dict[str, pd.Series] = {k: pd.Series(v, dtype=object) for k, v in index.items()}
    for f in fields:
        _typed(names[f.path], f, cols.pop(rel[f.path]), out)
    for p in extra:  # answers the schema does not declare: never in a declared column's place
        name = p.rsplit("/", 1)[-1]
        key = name if name not in out else p if p not in out else f"undeclared:{p}"
        _typed(key, None, cols.pop(p), out)
    n = len(rows)
    frame = pd.DataFrame({k: v.reset_index(drop=True) for k, v in out.items()}, index=range(n))
    return frame


def tidy(
    records: Iterable[Any],
    schemas: FormSchema | Sequence[FormSchema],
    *,
    include_deleted: bool = False,
) -> TidyForm:
    """Turn canonical records of one form into typed tables.

    ``records`` are :class:`pipelines.records.Record` objects or plain dicts with the same keys;
    records of other forms are ignored. ``schemas`` is the form's schema, or the schemas of
    every version the records were made with (their fields are unioned). Deleted records are
    left out unless ``include_deleted``.
    """
    schema = merge_schemas([schemas] if isinstance(schemas, FormSchema) else list(schemas))
    with _no_cyclic_gc():
        return _tidy(records, schema, include_deleted)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    # A form's records are hundreds of thousands of small acyclic dicts: the cyclic collector
    # would walk them again and again and find nothing (about 40% of the time). Reference
    # counting still frees everything as usual.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _tidy(records: Iterable[Any], schema: FormSchema, include_deleted: bool) -> TidyForm:
    # One tuple per kept record: (form_id, deleted, data, *RECORD_COLUMNS), read once.
    kept: list[tuple[Any, ...]] = []
    for r in records:
        if isinstance(r, Record):
            row = (r.form_id, r.deleted, r.data, r.instance_id, r.form_version,
                   r.submitted_at, r.updated_at, r.review_state)  # fmt: skip
        else:
            row = (_get(r, "form_id"), _get(r, "deleted"), _get(r, "data"),
                   *(_get(r, c) for c in RECORD_COLUMNS))  # fmt: skip
        if row[0] in (None, schema.form_id) and (include_deleted or not row[1]):
            kept.append(row)
    columns = list(zip(*kept, strict=True)) if kept else [()] * (3 + len(RECORD_COLUMNS))
    deleted = columns[1]
    datas = [d or {} for d in columns[2]]
    index: dict[str, list[Any]] = {
        c: list(values) for c, values in zip(RECORD_COLUMNS, columns[3:], strict=True)
    }
    del kept, columns
    repeats = set(schema.repeats)
    fields = [f for f in schema.fields if f.repeat is None and f.name not in _SKIP]

    skip = [f for f in schema.fields if f.repeat is None and f.name in _SKIP]
    table = _frame(datas, fields, None, repeats, {"instance_id": index["instance_id"]}, skip)
    table.insert(1, "form_version", _as_text(index["form_version"]).array)
    for i, c in enumerate(("submitted_at", "updated_at"), start=2):
        table.insert(i, c, _local_time(pd.Series(index[c], dtype=object)).array)
    table.insert(4, "review_state", _as_text(index["review_state"]).array)
    if include_deleted:
        table.insert(5, "deleted", pd.array([bool(d) for d in deleted], "boolean"))
    for c in ("review_state",):
        table[c] = table[c].astype("category")

    tables: dict[str, pd.DataFrame] = {}
    for rep in schema.repeats:
        rows: list[Mapping[str, Any]] = []
        ids: list[Any] = []
        keys: list[str] = []
        positions: list[int] = []
        parts = rep.split("/")
        for iid, data in zip(index["instance_id"], datas, strict=True):
            for key, item in _repeat_items(data, parts):
                rows.append(item)
                ids.append(iid)
                keys.append(key)
                positions.append(int(key.rsplit("[", 1)[1].rstrip("]")))
        rep_fields = [f for f in schema.fields if f.repeat == rep]
        index_cols: dict[str, list[Any]] = {"instance_id": ids, "repeat_index": positions}
        if any(r != rep and rep.startswith(r + "/") for r in schema.repeats):
            index_cols["repeat_key"] = keys  # nested repeat: which outer entry it sits in
        frame = _frame(rows, rep_fields, rep, repeats, index_cols)
        frame["repeat_index"] = frame["repeat_index"].astype("int64")
        tables[rep] = frame
    return TidyForm(schema.form_id, schema, table, tables)


def display_frame(frame: pd.DataFrame, schema: FormSchema, lang: str = "zh") -> pd.DataFrame:
    """A copy for people: choice codes shown as labels and headers as field labels.

    Categorical columns are relabelled through their categories, so this stays fast on
    millions of rows. Columns the schema does not label keep their names.
    """
    out = frame.copy()
    by_name: dict[str, Field] = {}
    for f in schema.fields:
        by_name.setdefault(f.name, f)
        by_name[f.path] = f
    headers: dict[str, str] = {}
    for col in out.columns:
        base, _, choice = col.partition("/")
        f = by_name.get(col) or by_name.get(base)
        if f is None:
            continue
        label = f.label.get(lang) or f.label.get("default") or f.name
        if choice and f.type == "select_multiple" and f.choices and choice in f.choices:
            clabel = f.choices[choice].get(lang) or choice
            headers[col] = f"{label}/{clabel}"
            continue
        headers[col] = label
        if f.type == "select_one" and isinstance(out[col].dtype, pd.CategoricalDtype):
            cats = out[col].cat.categories
            labels = [(f.choices or {}).get(c, {}).get(lang) or c for c in cats]
            if len(set(labels)) == len(labels):
                out[col] = out[col].cat.rename_categories(labels)
        elif f.type == "select_multiple" and f.choices:
            mapping = {c: v.get(lang) or c for c, v in f.choices.items()}
            out[col] = out[col].map(
                lambda v, m=mapping: (
                    v if not isinstance(v, str) else "、".join(m.get(x, x) for x in v.split())
                )
            )
    # A duplicated header (two fields with one label) keeps the name for the second.
    final: dict[str, str] = {}
    used: set[str] = set()
    for col in out.columns:
        h = headers.get(col, col)
        final[col] = h if h not in used else col
        used.add(final[col])
    return out.rename(columns=final)
