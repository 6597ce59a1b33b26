"""Regression: a partition whose repeat had no rows when it was written is rewritten when one
of its submissions is edited or deleted, and the edit shows up. Every file types its columns as
tidy's empty template does, a column no row answers too (Arrow alone would type it ``null``),
and a file written before that is typed when it is rewritten."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from forms.schema import load_schema
from pipelines import tables
from pipelines.analysis.tidy import tidy
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


def _template_types(schemas) -> dict[str, dict[str, pa.DataType]]:
    """What each file's columns must be: tidy's empty template's types, text and choices as
    text (Arrow would call text that no row answers ``null``, and choices dictionaries)."""
    template = tidy([], schemas)
    frames = {"form": template.table, **{f"repeat-{r}": t for r, t in template.repeats.items()}}
    out = {}
    for name, frame in frames.items():
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        out[name] = {f.name: pa.string() if pa.types.is_null(f.type) or pa.types.is_dictionary(f.type) else f.type for f in schema}  # fmt: skip
    return out


def _file_types(folder) -> dict[str, dict[str, pa.DataType]]:
    return {f"{p.parent.name}/{p.stem}": {f.name: f.type for f in pq.read_schema(p)}
            for p in sorted(folder.glob("part-*/*.parquet"))}  # fmt: skip


def test_a_column_no_row_answers_has_the_template_type_never_null(settings: object) -> None:  # noqa: F811
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    want = _template_types([v1])
    with open_store(settings) as store:
        # no finding (a repeat without rows) and no note (text without answers)
        page = [_record(i, v1.version, findings=0, summary={"score": 70}) for i in range(3)]
        store.write_page("central", FORM, page)
        tables.catch_up(settings, store, FORM, [v1])
        written = _file_types(folder)
        assert written == {f"part-00000/{name}": types for name, types in want.items()}
        assert written["part-00000/form"]["note"] == pa.string()
        assert written["part-00000/repeat-findings"]["kind"] == pa.string()
        # a later batch that answers them appends to the same files, with the same types
        store.write_page("central", FORM, [_record(7, v1.version, findings=2)])
        tables.catch_up(settings, store, FORM, [v1])
        assert _file_types(folder) == written
        form = tables.read_form(settings, FORM, [v1])
        _same(form, _tidy_from_store(settings, [v1]))
    index = pq.read_schema(folder / "index.parquet")
    assert [f.type for f in index] == [pa.string(), pa.int64(), pa.string()]


def test_a_file_written_before_types_is_typed_when_rewritten(settings: object) -> None:  # noqa: F811
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version, findings=0) for i in range(3)])
        tables.catch_up(settings, store, FORM, [v1])
        # the repeat file as Arrow typed it before: every column of no rows ``null``
        repeat = folder / "part-00000" / "repeat-findings.parquet"
        empty = tidy([], [v1]).repeats["findings"]
        plain = empty.astype({c: object for c, t in empty.dtypes.items() if t == "category"})
        pq.write_table(pa.Table.from_pandas(plain, preserve_index=False), repeat)
        assert pa.types.is_null(pq.read_schema(repeat).field("kind").type)
        store.write_page("central", FORM, [_record(1, v1.version, findings=2, village="v02")])
        tables.catch_up(settings, store, FORM, [v1])
        assert _file_types(folder) == {f"part-00000/{k}": v for k, v in _template_types([v1]).items()}  # fmt: skip
        _same(tables.read_form(settings, FORM, [v1]), _tidy_from_store(settings, [v1]))
