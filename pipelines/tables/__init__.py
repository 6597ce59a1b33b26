"""Columnar copies of every form's tidy tables, kept up to date from the store as data arrives.

The report used to read and parse every stored submission's JSON on each run (tens of seconds
for a county's year). Here each form's tidy tables (:func:`pipelines.analysis.tidy.tidy`: the
form table and one per repeat, the very same columns and types) are kept as Parquet files under
``<data_dir>/tables/<form_id>/``, and only what changed is tidied again.

Layout (:mod:`pipelines.tables._files`):

- ``part-NNNNN/form.parquet`` and ``part-NNNNN/<repeat>.parquet``: up to :data:`PART_ROWS`
  submissions per partition, a submission's repeat rows beside it. New and edited submissions
  go to the last partition; an edit or a deletion also rewrites the partition that held the old
  row. So an update rewrites one or two small files, never the whole form, and every file is
  replaced whole (written aside, then renamed);
- ``index.parquet``: ``instance_id → part, changed_at`` of the recently changed rows, the ones
  the next change scan can return again (see :mod:`pipelines.tables._update`);
- ``state.json``: the store's change mark read up to, whether a writer is busy (a run killed
  while writing is repaired by the next), and a fingerprint of the schema and of this file
  layout (:data:`FORMAT`). A different fingerprint (a new form version was built)
  rebuilds the form, which adds the new version's columns.

Catching up (:func:`catch_up`, :mod:`pipelines.tables._update`) asks the store for the rows
changed since the last mark less a margin, skips those the index holds in that version, and
tidies only new, edited and deleted submissions. It runs after every page a pull stores
(``pipelines.sync``) and at the start of every report (``load_inputs``, which then reads
only the columns its steps need), so
submissions ``manyi serve`` received are caught up too. Writers hold the form's lock alone;
readers share it.

Reading (:func:`read_form`, :mod:`pipelines.tables._read`) gives what tidy would give from the
store's live records, rows in the store's order (``submitted_at``, ``instance_id``):

- cold: every partition read with Arrow, text as dictionaries (each distinct value becomes one
  Python string, shared by its rows), one column at a time into tidy's types, one Arrow sort;
- warm, in a process that read the form before (``manyi serve``'s refresher refreshing again
  and again): the last result is kept with the signature of each partition's files, and only
  the partitions whose files changed are read again; their rows replace the ones they held,
  the categories are worked out again and the rows sorted again, equal to a cold read. A
  new fingerprint, or half the partitions changed, reads cold. Callers get shallow copies
  (Copy-on-Write: changing them never changes what is kept); :func:`forget` drops what is
  kept.

The store stays the system of record: ``manyi tables rebuild`` (:func:`rebuild`) throws the
tables away and builds them again, with the same result as the incremental updates.

Parquet (pyarrow) files with pandas metadata: the types tidy makes (nullable Int64/Float64/
boolean, Shanghai timestamps) round-trip as they are, and a partition is rewritten whole, which
keeps the update logic plain.

Why Parquet and not DuckDB, measured on the same 1,000,000-submission store
(``benchmarks/tables.py``): building costs the same (≈ 50 s of it is reading and tidying the
store, which both do); reading every form back with tidy's types takes 0.9–1.6 s from Parquet
against 2.5–5.6 s from DuckDB (``.df()`` or Arrow), which also peaks ≈ 340 MB higher; the files
take 18.5 MB against 59 MB (growing with each update); and a writing DuckDB process locks
every other process out at once ("Could not set lock on file"), while a pull, ``manyi
serve``'s refresher and ``manyi report`` share these files under a per-form lock. DuckDB wins
only at edits and deletions of old rows (100 edited + 10 deleted: 0.9 s against 2 s, a
partition rewritten per edit); new submissions, the common case, cost the same.
"""

from __future__ import annotations

from pipelines.tables._files import FORMAT, PART_ROWS, tables_dir
from pipelines.tables._read import forget, read_form
from pipelines.tables._update import CatchUp, catch_up, rebuild, rebuild_all

__all__ = [
    "FORMAT", "PART_ROWS", "CatchUp", "catch_up", "forget", "read_form", "rebuild",
    "rebuild_all", "tables_dir",
]  # fmt: skip
