"""The indicators' figures on the paths a county's volume takes (issue 13): village sums from a
categorical or a text village column alike, scores read per category, distinct visit days per
student, and each subject's newest row chosen on a few columns. Figures only, never timings."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from geo.villages import Village, load_villages
from pipelines.analysis.indicators import compute_progress, latest_rows
from pipelines.analysis.plan import load_plan
from pipelines.analysis.rosters import COLUMNS, Rosters, validate_roster
from pipelines.analysis.tidy import TidyForm, tidy

VS: list[Village] = load_villages()[:3]  # V1 and V2 in one liaison group
V1, V2, V3 = (v.code for v in VS)
PLAN = load_plan()
TOWN = "龙阳镇"


@pytest.fixture(scope="module")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


def form(build: Path, form_id: str, rows: list[dict]) -> TidyForm:
    recs = [
        {"form_id": form_id, "instance_id": f"uuid:{n}", "form_version": "1",
         "submitted_at": f"2023-01-01T00:00:{n:02d}Z", "data": d}
        for n, d in enumerate(rows)
    ]  # fmt: skip
    return tidy(recs, load_schema(build, form_id))


def students() -> Rosters:
    """stu1, stu2 in V1; stu3, stu4 in V2."""
    codes = [v.code for v in load_villages()]
    st = pd.DataFrame(
        [(f"stu{i}", f"示例学生{i}", "s01", "示例小学", V1, "c1", "一班", v)
         for i, v in enumerate([V1, V1, V2, V2], start=1)],
        columns=["name", "label", "school", "school_label", "school_village", "class",
                 "class_label", "village"],
    )  # fmt: skip
    frames = {"students": st, **{k: pd.DataFrame(columns=c) for k, (c, _) in COLUMNS.items() if k != "students"}}  # fmt: skip
    return Rosters(**{k: validate_roster(v, k, codes) for k, v in frames.items()})


def progress(forms: dict[str, TidyForm], ids: list[str], as_of: date = date(2023, 8, 1)) -> pd.DataFrame:  # fmt: skip
    p = compute_progress(
        PLAN, forms, as_of=as_of, year=2023, villages=VS, rosters=students(), only=ids
    )
    return p.table.set_index(["indicator_id", "level", "key"])


def survey(village: str | None, score: str | None, day: str = "2023-05-01") -> dict:
    where = {"survey_date": day} | ({"village": village} if village else {})
    scores = {"sat_environment": score} if score else {}
    return {"where": where, "scores": scores, "opinion": {"needs_follow_up": "no"}}


def test_satisfaction_means_per_village_count_only_scored_answers_of_register_villages(build: Path) -> None:  # fmt: skip
    rows = [
        survey(V1, "5"), survey(V1, "4"), survey(V2, "3"),
        survey(V2, None),  # no score given: not an answer
        survey(None, "1"),  # no village: in no village, so in no total either
        survey("370481999999", "1"),  # a code the register lacks
        survey(V1, "1", day="2023-09-01"),  # after the as-of date
    ]  # fmt: skip
    t = progress({"satisfaction_survey": form(build, "satisfaction_survey", rows)}, ["satisfaction_environment"])  # fmt: skip
    ind = "satisfaction_environment"
    assert t.loc[(ind, "village", V1), ["value", "numerator", "denominator"]].tolist() == [4.5, 9, 2]  # fmt: skip
    assert t.loc[(ind, "village", V2), ["value", "numerator", "denominator"]].tolist() == [3, 3, 1]  # fmt: skip
    assert np.isnan(t.loc[(ind, "village", V3), "value"])  # nobody asked there yet
    assert t.loc[(ind, "liaison_group", VS[0].liaison_group), "value"] == 4.0
    assert t.loc[(ind, "town", TOWN), ["value", "denominator"]].tolist() == [4.0, 3]


def test_a_text_village_column_gives_the_figures_a_choice_column_gives(build: Path) -> None:
    """A village picked from a list is a categorical column; one the form computes (home
    visits) is text. The sums per village must not depend on which."""
    rows = [survey(V1, "5"), survey(V1, "2"), survey(V2, "4"), survey(None, "3"), survey("x", "1")]
    chosen = form(build, "satisfaction_survey", rows)
    assert isinstance(chosen.table["village"].dtype, pd.CategoricalDtype)
    typed = TidyForm(chosen.form_id, chosen.schema, chosen.table.assign(village=chosen.table["village"].astype(object)), chosen.repeats)  # fmt: skip
    ids = ["satisfaction_environment", "suggestions_follow_up"]
    a = progress({"satisfaction_survey": chosen}, ids)
    b = progress({"satisfaction_survey": typed}, ids)
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[("satisfaction_environment", "village", V1), "value"] == 3.5
    assert a.loc[("suggestions_follow_up", "village", V2), "numerator"] == 0


def test_second_visits_count_distinct_days_per_student(build: Path) -> None:
    def v(student: str | None, day: str) -> dict:
        subject = {"student": student, "village": V1 if student in ("stu1", "stu2") else V2}
        return {"subject": subject if student else {}, "visit": {"visit_date": day, "mode": "home"}}  # fmt: skip

    rows = [
        v("stu1", "2023-03-01"), v("stu1", "2023-03-01"), v("stu1", "2023-06-01"),  # 2 days
        v("stu2", "2023-03-01"), v("stu2", "2023-03-01"),  # one visit sent twice: 1 day
        v("stu3", "2023-04-01"), v("stu3", "2023-05-01"),  # 2 days
        v("stu4", "2023-04-01"), v("stu4", "2023-09-01"),  # the second after the as-of date
        v(None, "2023-04-01"), v(None, "2023-05-01"),  # no student: nobody's visit
    ]  # fmt: skip
    t = progress({"home_visit": form(build, "home_visit", rows)}, ["home_visit_once", "home_visit_twice"])  # fmt: skip
    assert t.loc[("home_visit_twice", "village", V1), ["numerator", "denominator"]].tolist() == [1, 2]  # fmt: skip
    assert t.loc[("home_visit_twice", "village", V2), ["numerator", "denominator"]].tolist() == [1, 2]  # fmt: skip
    assert t.loc[("home_visit_once", "town", TOWN), "numerator"] == 4
    assert t.loc[("home_visit_twice", "town", TOWN), "value"] == 0.5


def _days(month_days: str, *more: str) -> pd.DatetimeIndex:
    return pd.to_datetime([f"2023-{d}" for d in month_days.split()] + list(more))


def test_latest_rows_picks_each_subjects_newest_row_whole_and_keeps_its_labels() -> None:
    frame = pd.DataFrame(
        {
            "segment": ["a", "a", "b", "a", None, None, "b"],
            "report_date": _days("03-01 05-01 04-01 05-01 02-01 06-01", "2024-01-02"),
            "submitted_at": _days("03-02 05-03 04-02 05-02 02-02 06-02", "2024-01-03"),
            "km_done": [1.0, 2.0, 3.0, 9.0, 4.0, 5.0, 6.0],
            "note": ["一", "二", "三", "四", "五", "六", "七"],
        },
        index=[70, 10, 60, 20, 50, 40, 30],  # labels in no order: they are kept as they are
    )
    got = latest_rows(frame, ["segment"], "report_date", year=2023, as_of=date(2023, 12, 31))
    # a: two reports on 05-01, the one sent later (label 10) wins; b: the 2024 row is outside
    # the plan year; the blank segment is a subject of its own, its newest row kept
    assert got.index.tolist() == [60, 10, 40]
    assert got["note"].tolist() == ["三", "二", "六"]
    assert list(got.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(got, frame.loc[[60, 10, 40]])
    before = latest_rows(frame, ["segment"], "report_date", year=2023, as_of=date(2023, 1, 31))
    assert before.empty and list(before.columns) == list(frame.columns)
