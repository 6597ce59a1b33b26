"""Regression: a partition whose repeat had no rows when it was written (every column all
null, which Arrow would type ``null``) is rewritten when one of its submissions is edited or
deleted, and the edit shows up: the files keep text columns typed as text."""

from __future__ import annotations

import pyarrow.parquet as pq

from forms.schema import load_schema
from pipelines import tables
from pipelines.store import open_store

from .test_tables import FORM, _record, _same, _tidy_from_store, settings  # noqa: F401


def test_an_edit_to_a_partition_whose_repeat_was_empty_is_applied(settings: object) -> None:  # noqa: F811
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    with open_store(settings) as store:
        # no submission has a finding: the partition's repeat file has no rows at all
        store.write_page("central", FORM, [_record(i, v1.version, findings=0) for i in range(4)])
        tables.catch_up(settings, store, FORM, [v1])
        repeat = folder / "part-00000" / "repeat-findings.parquet"
        assert pq.read_table(repeat).num_rows == 0
        # then one is edited (now with two findings) and another deleted
        page = [_record(1, v1.version, findings=2, village="v02"), _record(2, v1.version, deleted=True)]  # fmt: skip
        store.write_page("central", FORM, page)
        done = tables.catch_up(settings, store, FORM, [v1])
    assert done.changed == {FORM: 2}
    form = tables.read_form(settings, FORM, [v1])
    _same(form, _tidy_from_store(settings, [v1]))
    t = form.table.set_index("instance_id")
    assert "uuid:s2" not in t.index and t.loc["uuid:s1", "village"] == "v02"
    assert (form.repeats["findings"]["instance_id"] == "uuid:s1").sum() == 2
