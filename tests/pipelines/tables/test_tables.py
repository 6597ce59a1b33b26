"""The columnar tables (pipelines.tables) against a real SQLite store: after pulls of new,
edited and deleted submissions and a new form version, the incrementally kept tables equal a
rebuild from the store and what tidy makes from the stored JSON; an update rewrites only the
partitions it touches; a caught-up form reads no JSON again."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from forms.build import BuildReport
from forms.schema import Field, load_schema
from pipelines import tables
from pipelines.analysis.tidy import tidy
from pipelines.config import Settings
from pipelines.records import Record
from pipelines.store import open_store

FORM = "sanitation_sweep"


@pytest.fixture
def settings(tmp_path: Path, built_forms: BuildReport) -> Settings:
    return Settings(data_dir=tmp_path / "data", outputs_dir=tmp_path / "out",
                    build_dir=built_forms.out_dir, plan_year=2023, source="files")  # fmt: skip


def _record(i: int, version: str, *, findings: int = 1, village: str = "v01", deleted: bool = False, **extra: object) -> Record:  # fmt: skip
    day = f"2023-06-{i % 28 + 1:02d}"
    data = {
        "basic": {"village": village, "check_date": day, "quarter": "q2",
                  "campaign": "piles_stacks lanes", "has_findings": "yes" if findings else "no"},
        "findings": [{"kind": "manure_pile", "location": f"35.{i:04d} 114.{k:04d} 60 5.0",
                      "photo": f"f{i}_{k}.jpg", "status": "to_rectify", "rectify_by": day}
                     for k in range(findings)],
        "summary": {"score": 60 + i % 40, "note": f"第{i}次"},
        **extra,
    }  # fmt: skip
    stamp = f"{day}T02:{i % 60:02d}:00.000Z"
    return Record(FORM, f"uuid:s{i}", version, stamp, stamp, "received", data, deleted)


def _tidy_from_store(settings: Settings, schemas) -> object:
    with open_store(settings) as store:
        return tidy(store.records(FORM), schemas)


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.repeats.keys() == b.repeats.keys()
    for rep in a.repeats:
        pd.testing.assert_frame_equal(a.repeats[rep], b.repeats[rep])


def test_incremental_tables_equal_a_rebuild_and_tidy(settings, monkeypatch):
    monkeypatch.setattr(tables._update, "PART_ROWS", 8)  # several partitions, old ones rewritten
    v1 = load_schema(settings.build_dir, FORM)
    weather = Field("summary/weather", "weather", "text", False, {"zh": "天气"})
    v2 = replace(v1, version=str(int(v1.version) + 1), fields=(*v1.fields, weather))
    with open_store(settings) as store:
        # pull 1: thirty new submissions
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(30)])
        tables.catch_up(settings, store, FORM, [v1])
        # pull 2: edits (a village, a repeat shrinking to nothing), deletions, new rows, and a
        # field no built schema describes (kept as text)
        page = [_record(2, v1.version, village="v02"), _record(3, v1.version, findings=0),
                _record(4, v1.version, findings=3), _record(5, v1.version, deleted=True),
                *(_record(i, v1.version) for i in range(30, 40)),
                _record(40, v1.version, stray="多出的字段")]  # fmt: skip
        store.write_page("central", FORM, page, gone=["uuid:s6"])
        done = tables.catch_up(settings, store, FORM, [v1])
        assert done.changed == {FORM: 16}
        mid = tables.read_form(settings, FORM, [v1])
        _same(mid, _tidy_from_store(settings, [v1]))
        assert "stray" in mid.table.columns
        # pull 3: the stray row deleted (its column goes), and a new form version
        store.write_page("central", FORM, [_record(40, v1.version, deleted=True)])
        store.write_page("central", FORM, [_record(i, v2.version, summary={"score": 70, "weather": "晴"}) for i in range(41, 45)])  # fmt: skip
        tables.catch_up(settings, store, FORM, [v1, v2])
        incremental = tables.read_form(settings, FORM, [v1, v2])
        assert not tables.catch_up(settings, store, FORM, [v1, v2]).changed  # nothing re-read
        tables.rebuild(settings, store, FORM, [v1, v2])
    rebuilt = tables.read_form(settings, FORM, [v1, v2])
    _same(incremental, rebuilt)
    _same(incremental, _tidy_from_store(settings, [v1, v2]))
    t = incremental.table.set_index("instance_id")
    assert len(t) == 45 - 3  # s5, s6 and s40 deleted
    assert {"uuid:s5", "uuid:s6", "uuid:s40"}.isdisjoint(t.index)
    assert t.loc["uuid:s2", "village"] == "v02"
    assert "stray" not in t.columns
    assert t.loc["uuid:s41", "weather"] == "晴" and pd.isna(t.loc["uuid:s1", "weather"])
    findings = incremental.repeats["findings"]
    assert (findings["instance_id"] == "uuid:s3").sum() == 0
    assert (findings["instance_id"] == "uuid:s4").sum() == 3


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("part-*/*.parquet"))}  # fmt: skip


def test_an_update_rewrites_only_the_partitions_it_touches(settings, monkeypatch):
    monkeypatch.setattr(tables._update, "PART_ROWS", 10)  # the partition size, small
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(35)])
        tables.catch_up(settings, store, FORM, [v1])
        before = _digests(folder)
        assert sorted({k.split("/")[0] for k in before}) == [f"part-0000{i}" for i in range(4)]
        store.write_page("central", FORM, [_record(0, v1.version, village="v03"), _record(35, v1.version)])  # fmt: skip
        tables.catch_up(settings, store, FORM, [v1])
    after = _digests(folder)
    changed = sorted({k.split("/")[0] for k in before if before[k] != after.get(k)})
    assert changed == ["part-00000", "part-00003"]  # the edited row's partition and the last
    assert tables.read_form(settings, FORM, [v1]).table.set_index("instance_id").loc["uuid:s0", "village"] == "v03"  # fmt: skip


def test_reading_chosen_columns_reads_only_those(settings):
    v1 = load_schema(settings.build_dir, FORM)
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(5)])
        tables.catch_up(settings, store, FORM, [v1])
    form = tables.read_form(settings, FORM, [v1], columns=["village", "score"])
    assert list(form.table.columns) == ["instance_id", "village", "score"]
    assert str(form.table["score"].dtype) == "Int64"
    assert list(form.table["village"].cat.categories[:1]) == list(v1.field("basic/village").choices)[:1] if hasattr(v1, "field") else True  # fmt: skip


def test_manyi_tables_rebuild_builds_every_form_again_from_the_store(settings, tmp_path, capsys):
    from pipelines.cli import main

    v1 = load_schema(settings.build_dir, FORM)
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(6)])
        store.write_page("central", "not_built_here", [Record("not_built_here", "uuid:x", "1", None, None, None, {})])  # fmt: skip
    folder = tables.tables_dir(settings) / FORM
    config = tmp_path / "manyi.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\nbuild_dir = "{settings.build_dir}"\n', encoding="utf-8")  # fmt: skip
    assert main(["--config", str(config), "tables", "rebuild"]) == 0
    captured = capsys.readouterr()
    assert f"{FORM}: 6 条提交已重建" in captured.out
    assert "not_built_here: 未构建该表单" in captured.err
    assert (folder / "part-00000" / "form.parquet").exists()
    _same(tables.read_form(settings, FORM, [v1]), _tidy_from_store(settings, [v1]))
