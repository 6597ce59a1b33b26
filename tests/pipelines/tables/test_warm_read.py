"""Warm reads (pipelines.tables.read_form in a long-running process, as ``manyi serve``'s
refresher reads): over many rounds of new, edited and deleted submissions spread over many
small partitions, a new form version and repeated reads, each warm read equals a cold read of
the same files and tidy over the stored JSON; only the partitions that changed are read
again; a caller changing what it was given never changes the next read."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from forms.schema import Field, load_schema
from pipelines import tables
from pipelines.analysis.tidy import tidy
from pipelines.config import Settings
from pipelines.records import Record
from pipelines.store import open_store

from .test_tables import FORM, _record, _same, _tidy_from_store, settings  # noqa: F401

VILLAGES = ["v01", "v02", "v03", "v99", ""]  # v99 is in no choice list, "" is no answer
STATES = ["received", "approved", "hasIssues", "", None]


@pytest.fixture(autouse=True)
def _no_kept_reads():
    tables.forget()
    yield
    tables.forget()


def _submission(i: int, version: str, rng: random.Random, **extra: object) -> Record:
    """Submission ``i`` with random answers; several share one ``submitted_at`` (the ids
    order them), some answer a field no schema has, some are of another version's shape."""
    day = f"2023-{rng.randint(5, 6):02d}-{rng.randint(1, 3):02d}"
    data = {
        "basic": {"village": rng.choice(VILLAGES), "check_date": day,
                  "quarter": rng.choice(["q1", "q2", "q9", ""]), "campaign": "lanes",
                  "has_findings": "yes"},
        "findings": [{"kind": rng.choice(["manure_pile", "weeds", "odd_kind"]),
                      "location": f"35.{i:04d} 114.{k:04d} 60 5.0", "photo": f"f{i}_{k}.jpg",
                      "status": "to_rectify", "rectify_by": day}
                     for k in range(rng.randint(0, 3))],
        "summary": {"score": rng.choice([None, 50, 99]), "note": rng.choice([None, f"第{i}次"])},
        **extra,
    }  # fmt: skip
    if rng.random() < 0.15:
        data["stray"] = rng.choice(["多出的字段", ""])
    stamp = f"{day}T02:{rng.randint(0, 2):02d}:00.000Z"
    return Record(FORM, f"uuid:r{i:03d}", version, stamp, stamp, rng.choice(STATES), data)


def _cold(base: Settings, schemas, where: Path, columns=None):
    """A cold read of the same files: a copy of the form's folder, never read before."""
    copy = replace(base, data_dir=where)
    shutil.copytree(tables.tables_dir(base) / FORM, tables.tables_dir(copy) / FORM)
    return tables.read_form(copy, FORM, schemas, columns)


def test_warm_reads_equal_cold_reads_and_tidy_round_after_round(settings, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tables._update, "PART_ROWS", 6)  # many partitions, old ones rewritten
    rng = random.Random(13)
    v1 = load_schema(settings.build_dir, FORM)
    weather = Field("summary/weather", "weather", "text", False, {"zh": "天气"})
    v2 = replace(v1, version=str(int(v1.version) + 1), fields=(*v1.fields, weather))
    schemas, version = [v1], v1.version
    live: list[int] = []
    counts = tables._read._COUNTS
    start = dict(counts)
    with open_store(settings) as store:
        for n in range(30):
            if n == 15:  # a new form version: the tables are rebuilt, the read is cold
                schemas, version = [v1, v2], v2.version
            page, gone = [], []
            for _ in range(rng.randint(0, 9)):  # new submissions
                live.append(max(live, default=-1) + 1)
                page.append(_submission(live[-1], version, rng, summary={"weather": "晴"} if version != v1.version else {}))  # fmt: skip
            for i in rng.sample(live[:-3], min(len(live) - 3, rng.randint(0, 3))) if len(live) > 3 else []:  # fmt: skip
                page.append(_submission(i, version, rng))  # edits of older ones
            for i in rng.sample(live[:-3], 1) if len(live) > 10 and rng.random() < 0.5 else []:
                live.remove(i)
                if rng.random() < 0.5:
                    page.append(replace(_submission(i, version, rng), deleted=True))
                else:
                    gone.append(f"uuid:r{i:03d}")
            store.write_page("central", FORM, page, gone=gone)
            tables.catch_up(settings, store, FORM, schemas)
            warm = tables.read_form(settings, FORM, schemas)
            cold = _cold(settings, schemas, tmp_path / f"cold-{n}")
            _same(warm, cold)
            _same(cold, tidy(store.records(FORM), schemas))
            if rng.random() < 0.3:  # read again, nothing changed: the same tables
                _same(tables.read_form(settings, FORM, schemas), cold)
            picked = tables.read_form(settings, FORM, schemas, columns=["village", "score"])
            pd.testing.assert_frame_equal(picked.table, cold.table[["instance_id", "village", "score"]])  # fmt: skip
    done = {k: counts[k] - start.get(k, 0) for k in ("cold", "warm")}
    assert done["warm"] >= 20, done  # most rounds re-read a few partitions, not the form
    assert len(warm.table) == len(live) > 40
    assert set(warm.table["village"].cat.categories) >= {"v99"}  # unlisted values are kept
    assert warm.table["weather"].notna().any()


def test_a_warm_read_reads_only_the_partitions_that_changed(settings, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tables._update, "PART_ROWS", 5)
    v1 = load_schema(settings.build_dir, FORM)
    folder = tables.tables_dir(settings) / FORM
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(28)])
        tables.catch_up(settings, store, FORM, [v1])
        tables.read_form(settings, FORM, [v1])
        # part-00001 becomes unreadable, its size, inode and times as they were: a read that
        # opened it would fail
        path = folder / "part-00001" / "form.parquet"
        st = path.stat()
        with path.open("r+b") as f:
            f.write(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        store.write_page("central", FORM, [_record(28, v1.version), _record(29, v1.version, village="v03")])  # fmt: skip
        tables.catch_up(settings, store, FORM, [v1])
        warm = tables.read_form(settings, FORM, [v1])
        expected = _tidy_from_store(settings, [v1])
    _same(warm, expected)
    assert warm.table.set_index("instance_id").loc["uuid:s29", "village"] == "v03"
    tables.forget()
    with pytest.raises(pa.ArrowInvalid):  # a cold read opens every partition
        tables.read_form(settings, FORM, [v1])


def test_changing_what_a_read_gave_never_changes_the_next_read(settings, tmp_path):  # noqa: F811
    v1 = load_schema(settings.build_dir, FORM)
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version, findings=2) for i in range(12)])  # fmt: skip
        tables.catch_up(settings, store, FORM, [v1])
        first = tables.read_form(settings, FORM, [v1])
        expected = _cold(settings, [v1], tmp_path / "cold-1")
        table, findings = first.table, first.repeats["findings"]
        # what a caller might do to the frames it was given, in place
        table.loc[0, "note"] = "改过"
        table.iloc[1, 0] = "uuid:changed"
        table["score"] += 100
        scores = table["score"]
        scores.iloc[2] = -1
        table["village"] = table["village"].cat.rename_categories(lambda c: f"村{c}")
        del table["quarter"]
        table.insert(0, "added", 1)
        table.update(pd.DataFrame({"note": ["换掉"] * len(table)}))
        findings.loc[:, "photo"] = "x.jpg"
        findings.iloc[0, 0] = "uuid:moved"
        first.repeats.clear()
        assert not table["instance_id"].to_numpy().flags.writeable  # no writing under it
        again = tables.read_form(settings, FORM, [v1])  # nothing changed: what it kept
        _same(again, expected)
        # and a warm read after a change starts from what was kept, unchanged
        store.write_page("central", FORM, [_record(3, v1.version, village="v02"), _record(12, v1.version)])  # fmt: skip
        tables.catch_up(settings, store, FORM, [v1])
        warm = tables.read_form(settings, FORM, [v1])
    _same(warm, _cold(settings, [v1], tmp_path / "cold-2"))
    _same(warm, _tidy_from_store(settings, [v1]))


def test_reading_again_unchanged_shares_the_kept_tables_and_forget_drops_them(settings):  # noqa: F811
    v1 = load_schema(settings.build_dir, FORM)
    with open_store(settings) as store:
        store.write_page("central", FORM, [_record(i, v1.version) for i in range(6)])
        tables.catch_up(settings, store, FORM, [v1])
    a = tables.read_form(settings, FORM, [v1])
    b = tables.read_form(settings, FORM, [v1])
    assert a.table is not b.table
    # one copy of the data in memory, not one per read
    assert np.shares_memory(a.table["instance_id"].to_numpy(), b.table["instance_id"].to_numpy())
    tables.forget()
    c = tables.read_form(settings, FORM, [v1])
    assert not np.shares_memory(a.table["instance_id"].to_numpy(), c.table["instance_id"].to_numpy())  # fmt: skip
    _same(a, c)
