"""Records + form schema -> typed tidy tables."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pandas.testing as pdt
import pytest

from forms.build import BuildReport
from forms.schema import Field, FormSchema, load_schema
from pipelines.analysis.tidy import display_frame, tidy
from pipelines.records import Record

V1, V2 = "370481115200", "370481115201"


@pytest.fixture(scope="module")
def sweep(built_forms: BuildReport) -> FormSchema:
    return load_schema(built_forms.out_dir, "sanitation_sweep")


def rec(iid: str, data: dict, version: str = "2026112901", deleted: bool = False) -> Record:
    return Record("sanitation_sweep", iid, version, "2023-05-01T02:00:00.000Z", None, None,
                  data, deleted)  # fmt: skip


def records() -> list[Record]:
    return [
        rec("uuid:a", {
            "start": "2023-05-01T09:00:00.000+08:00",
            "basic": {"village": V1, "check_date": "2023-05-01", "quarter": "q2",
                      "campaign": "lanes weeds", "has_findings": "yes"},
            "findings": [
                {"kind": "weeds", "location": "34.9 117.1 50 4.5", "status": "cleared",
                 "rectify_by": "2023-05-01"},
                {"kind": "garbage_pile", "status": "to_rectify", "rectify_by": "2023-05-10"},
            ],
            "summary": {"score": "88"},
        }),
        rec("uuid:b", {"basic": {"village": V2, "check_date": "2023-05-02", "campaign": "",
                                 "has_findings": "no"}, "summary": {"score": 70}}),
        rec("uuid:gone", {"basic": {"village": V2}}, deleted=True),
    ]  # fmt: skip


def test_main_table_types_and_values(sweep: FormSchema) -> None:
    t = tidy(records(), sweep).table
    assert list(t["instance_id"]) == ["uuid:a", "uuid:b"]  # deleted left out
    assert t["village"].tolist() == [V1, V2]
    assert isinstance(t["village"].dtype, pd.CategoricalDtype)
    pdt.assert_series_equal(t["score"], pd.Series([88, 70], dtype="Int64", name="score"))
    pdt.assert_series_equal(
        t["check_date"],
        pd.Series(pd.to_datetime(["2023-05-01", "2023-05-02"]), name="check_date").astype(
            "datetime64[ns]"
        ),
    )
    # times are Asia/Shanghai: 02:00 UTC is 10:00 in Tengzhou
    assert str(t["submitted_at"].dt.tz) == "Asia/Shanghai"
    assert t["submitted_at"][0] == pd.Timestamp("2023-05-01 10:00", tz="Asia/Shanghai")
    assert t["start"][0] == pd.Timestamp("2023-05-01 09:00", tz="Asia/Shanghai")
    # select_multiple: one boolean per choice; an empty answer is all False, no answer is NA
    pdt.assert_series_equal(
        t["campaign/lanes"], pd.Series([True, False], dtype="boolean", name="campaign/lanes")
    )
    assert t["campaign/piles_stacks"].tolist() == [False, False]


def test_repeat_table_keyed_to_parent_with_split_geopoint(sweep: FormSchema) -> None:
    f = tidy(records(), sweep)
    r = f.repeats["findings"]
    assert r[["instance_id", "repeat_index"]].values.tolist() == [["uuid:a", 1], ["uuid:a", 2]]
    expected = pd.DataFrame(
        {"location_lon": [117.1, None], "location_lat": [34.9, None],
         "location_altitude": [50.0, None], "location_accuracy": [4.5, None]}, dtype="Float64",
    )  # fmt: skip
    pdt.assert_frame_equal(r[list(expected.columns)], expected)
    joined = f.repeat("findings", ["village"])
    assert joined["village"].tolist() == [V1, V1]


def test_versions_union_with_na_and_unknown_fields_kept(sweep: FormSchema) -> None:
    old = replace(sweep, version="2026010101",
                  fields=tuple(fd for fd in sweep.fields if fd.name != "score"))  # fmt: skip
    recs = [
        *records()[:2],
        rec("uuid:old", {"basic": {"village": V1, "old_field": "x"}}, "2026010101"),
    ]
    t = tidy(recs, [old, sweep]).table
    assert t["score"].isna().tolist() == [False, False, True]
    assert t["old_field"].tolist() == [None, None, "x"]  # not in any schema: kept as text


def test_display_frame_shows_chinese_labels(sweep: FormSchema) -> None:
    shown = display_frame(tidy(records(), sweep).table, sweep)
    assert shown["村"].tolist() == ["龙阳", "闫庄"]
    assert shown["季度"].tolist()[0] == "第二季度（4–6月）"
    assert shown["本次整治内容"].tolist()[0] == "街巷、杂草"


def test_times_without_a_zone_are_shanghai_time(sweep: FormSchema) -> None:
    # A phone's dateTime or time without a zone is its local (Beijing) time, never UTC.
    extra = (
        Field("basic/seen_at", "seen_at", "dateTime", False),
        Field("basic/seen_time", "seen_time", "time", False),
    )
    schema = replace(sweep, fields=(*sweep.fields, *extra))

    def r(iid: str, seen_at: str | None, seen_time: str | None, start: str) -> Record:
        data = {"start": start, "basic": {"village": V1, "seen_at": seen_at, "seen_time": seen_time}}  # fmt: skip
        return rec(iid, data)

    t = tidy([
        r("uuid:1", "2023-05-01T10:15:00", "10:15:00", "2023-05-01T09:00:00"),
        r("uuid:2", "2023-05-01T02:15:00.000Z", "02:15:00Z", "2023-05-01T01:00:00.000Z"),
        r("uuid:3", "2023-05-01T10:15:00.000+08:00", "10:15:00.000+08:00", "2023-05-01T09:00:00"),
        r("uuid:4", None, None, "not a time"),
    ], schema).table  # fmt: skip
    at = pd.Timestamp("2023-05-01 10:15", tz="Asia/Shanghai")
    assert t["seen_at"].tolist()[:3] == [at, at, at]  # zoned and unzoned mixed in one column
    assert pd.isna(t["seen_at"][3])
    assert t["seen_time"].tolist() == ["10:15:00", "10:15:00", "10:15:00", None]
    nine = pd.Timestamp("2023-05-01 09:00", tz="Asia/Shanghai")
    assert t["start"].tolist()[:3] == [nine, nine, nine] and pd.isna(t["start"][3])
    assert str(t["seen_at"].dt.tz) == "Asia/Shanghai"


def test_a_column_all_without_zone_and_record_times_in_utc(sweep: FormSchema) -> None:
    data = {"start": "2023-05-01T10:15:00", "basic": {"village": V1}}
    record = Record("sanitation_sweep", "uuid:x", "1", "2023-05-01T02:00:00", None, None, data)
    t = tidy([record], sweep).table
    assert t["start"][0] == pd.Timestamp("2023-05-01 10:15", tz="Asia/Shanghai")
    # the record's own times are UTC by definition (records.utc_text), zone or not
    assert t["submitted_at"][0] == pd.Timestamp("2023-05-01 10:00", tz="Asia/Shanghai")
