"""Reading a form's tables back as :func:`pipelines.analysis.tidy.tidy` makes them
(:func:`read_form`): see :mod:`pipelines.tables`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from forms.schema import FormSchema
from pipelines.analysis.tidy import TidyForm, _as_text, merge_schemas, tidy
from pipelines.tables._files import file_stem, locked, read_frame, tables_dir


def read_form(settings: Any, form_id: str, schemas: Sequence[FormSchema], columns: Sequence[str] | None = None) -> TidyForm:  # fmt: skip
    """The form's tidy tables as :func:`tidy` makes them from the store's live records (rows in
    the store's order, columns and types as tidy's). ``columns`` keeps only those columns of the
    form table (``instance_id`` always), read from the files and nothing else."""
    schema = merge_schemas(list(schemas))
    template = tidy([], schemas)
    folder = tables_dir(settings) / form_id
    with locked(folder, shared=True):
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
            frame = _canonical(_read_parts(parts, file_stem(rep)), empty)
            position = order.reindex(frame["instance_id"].to_numpy()).to_numpy()
            frame = frame.iloc[pd.Series(position).argsort(kind="stable").to_numpy()]
            repeats[rep] = frame.reset_index(drop=True)
    return TidyForm(form_id, schema, table, repeats)


def _read_parts(parts: list[Path], name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    frames = [read_frame(p / f"{name}.parquet", columns) for p in parts if (p / f"{name}.parquet").exists()]  # fmt: skip
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
