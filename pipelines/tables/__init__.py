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

from collections.abc import Sequence
from typing import Any

from forms.schema import FormSchema
from pipelines.analysis.tidy import TidyForm
from pipelines.tables._files import FORMAT, PART_ROWS, tables_dir
from pipelines.tables._read import read_form
from pipelines.tables._update import CatchUp, catch_up, rebuild, rebuild_all

__all__ = [
    "FORMAT", "PART_ROWS", "CatchUp", "catch_up", "load_form", "read_form", "rebuild",
    "rebuild_all", "tables_dir",
]  # fmt: skip


def load_form(settings: Any, store: Any, form_id: str, schemas: Sequence[FormSchema]) -> TidyForm:
    """Catch the tables up with the store, then read them: what ``load_inputs`` uses."""
    catch_up(settings, store, form_id, schemas)
    return read_form(settings, form_id, schemas)
