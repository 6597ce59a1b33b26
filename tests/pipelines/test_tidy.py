"""Records + form schema -> typed tidy tables."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pandas.testing as pdt
import pytest

from forms.build import build_forms
from forms.schema import FormSchema, load_schema
from pipelines.records import Record
from pipelines.tidy import display_frame, tidy
from tests.helpers import REPO, VILLAGES

V1, V2 = "370481115200", "370481115201"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> FormSchema:
    out = tmp_path_factory.mktemp("build")
    build_forms(REPO / "forms", out, VILLAGES, only=["sanitation_sweep"], validate=False)
    return load_schema(out, "sanitation_sweep")


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
