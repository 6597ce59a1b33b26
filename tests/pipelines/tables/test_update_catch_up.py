"""Catching up (pipelines.tables._update) the way it runs on a store of long standing: edits and
deletions of submissions stored long before the tables' mark are found in their partitions
(the index keeps only the recent rows), a same-content resend with a new ``updated_at`` shows,
and a run killed before it wrote its state is caught up again without losing or doubling a
row. Each time the tables equal tidy over the stored JSON and a rebuild."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from forms.schema import load_schema
from pipelines import tables
from pipelines.records import Record
from pipelines.store import open_store
from pipelines.tables._files import read_state, write_state

from .test_tables import FORM, _record, _same, _tidy_from_store, settings  # noqa: F401


def _hours_ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _stored_long_ago(store, hours: float) -> None:
    """The form's rows as a pull ``hours`` ago left them (set-up: their stamps moved back)."""
    stamp = _hours_ago(hours)
    store.db.execute(
        "UPDATE submissions SET first_seen_at = ?, changed_at = ? WHERE form_id = ?",
        (stamp, stamp, FORM),
    )


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("part-*/*.parquet"))}  # fmt: skip


def _indexed(folder: Path) -> set[str]:
    return set(pq.read_table(folder / "index.parquet")["instance_id"].to_pylist())


def test_old_rows_edited_or_deleted_are_found_in_their_partitions(settings, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tables._update, "PART_ROWS", 10)
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    with open_store(settings) as store:
        # a pull two hours ago, caught up then; a pull now of new rows only
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(35)])
        _stored_long_ago(store, 2)
        tables.catch_up(settings, store, FORM, [v1])
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(35, 38)])
        assert tables.catch_up(settings, store, FORM, [v1]).changed == {FORM: 3}
        # the index holds what a scan can return again, not the two-hour-old rows
        assert _indexed(folder) == {f"uuid:s{i}" for i in range(35, 38)}
        before = _digests(folder)
        # now an edit of an old row (partition 1), a deletion (partition 2), one flagged gone
        # by the server (partition 0), a repeat grown on an old row (partition 2) and a new row
        page = [_record(12, v1.version, village="v09"), _record(25, v1.version, deleted=True),
                _record(26, v1.version, findings=3), _record(38, v1.version)]  # fmt: skip
        store.write_page("central", FORM, page, gone=["uuid:s3"])
        done = tables.catch_up(settings, store, FORM, [v1])
        assert done.changed == {FORM: 5}
        assert not tables.catch_up(settings, store, FORM, [v1]).changed  # nothing read twice
        incremental = tables.read_form(settings, FORM, [v1])
        after = _digests(folder)
        _same(incremental, _tidy_from_store(settings, [v1]))
        tables.rebuild(settings, store, FORM, [v1])
    _same(incremental, tables.read_form(settings, FORM, [v1]))
    # the three partitions that held the old rows, the last one (8 of 10: two rows fit) and
    # a new one for the third
    changed = sorted({k.split("/")[0] for k in before if before[k] != after.get(k)})
    assert changed == ["part-00000", "part-00001", "part-00002", "part-00003"]
    assert {k.split("/")[0] for k in after} - {k.split("/")[0] for k in before} == {"part-00004"}
    t = incremental.table.set_index("instance_id")
    assert t.loc["uuid:s12", "village"] == "v09"
    assert {"uuid:s3", "uuid:s25"}.isdisjoint(t.index) and len(t) == 39 - 2
    findings = incremental.repeats["findings"]
    assert (findings["instance_id"] == "uuid:s26").sum() == 3


def test_a_new_updated_at_with_the_same_content_shows_in_the_tables(settings):  # noqa: F811
    v1 = load_schema(settings.build_dir, FORM)
    first = _record(1, v1.version)
    with open_store(settings) as store:
        store.write_page("central", FORM, [first, _record(2, v1.version)])
        _stored_long_ago(store, 2)
        tables.catch_up(settings, store, FORM, [v1])
        # the server's marker moved (a comment, a re-sent attachment): same content, and the
        # store counts it unchanged, but updated_at is a column of the tables
        resent = Record(first.form_id, first.instance_id, first.form_version, first.submitted_at,
                        "2023-07-01T08:00:00.000Z", first.review_state, first.data,
                        source_version="marker-2")  # fmt: skip
        assert store.write_page("central", FORM, [resent]).unchanged == 1
        assert tables.catch_up(settings, store, FORM, [v1]).changed == {FORM: 1}
        form = tables.read_form(settings, FORM, [v1])
        _same(form, _tidy_from_store(settings, [v1]))
    shown = form.table.set_index("instance_id").loc["uuid:s1", "updated_at"]
    assert shown.isoformat() == "2023-07-01T16:00:00+08:00"  # Shanghai time


def test_a_run_killed_before_its_state_was_written_is_caught_up_again(settings, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tables._update, "PART_ROWS", 10)
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(15)])
        tables.catch_up(settings, store, FORM, [v1])
        committed = read_state(folder)
        # the next run appends (partition 1 fills, partition 2 is started), edits and deletes,
        # writes its index... and is killed before its state: state.json still says busy
        page = [*(_record(i, v1.version) for i in range(15, 27)),
                _record(4, v1.version, village="v07"), _record(5, v1.version, deleted=True)]  # fmt: skip
        store.write_page("central", FORM, page)
        tables.catch_up(settings, store, FORM, [v1])
        assert (folder / "part-00002").is_dir()
        write_state(folder, {**committed, "busy": True})
        # caught up again: the unfinished partition goes, and every row the scan returns (all
        # 27: they are recent) is read again and found where it is, the index not believed
        done = tables.catch_up(settings, store, FORM, [v1])
        assert done.changed == {FORM: 27}
        assert "busy" not in read_state(folder)
        form = tables.read_form(settings, FORM, [v1])
        _same(form, _tidy_from_store(settings, [v1]))
        assert form.table["instance_id"].is_unique and len(form.table) == 26
        assert form.table.set_index("instance_id").loc["uuid:s4", "village"] == "v07"
        tables.rebuild(settings, store, FORM, [v1])
    _same(form, tables.read_form(settings, FORM, [v1]))


def test_a_quiet_form_is_not_written_again(settings):  # noqa: F811
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(3)])
        tables.catch_up(settings, store, FORM, [v1])
        files = {p: p.stat().st_mtime_ns for p in folder.rglob("*.*") if p.name != ".lock"}
        assert not tables.catch_up(settings, store, FORM, [v1]).changed
    assert {p: p.stat().st_mtime_ns for p in files} == files  # a report's catch-up: no writes
