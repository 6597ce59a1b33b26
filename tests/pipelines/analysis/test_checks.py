"""Data checks: each flagged row with its reason, against hand-made submissions."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from geo.illustrative import illustrative_boundaries
from geo.villages import load_villages
from pipelines.analysis.checks import CHECKS, check_forms
from pipelines.analysis.rosters import Rosters, validate_roster
from pipelines.analysis.tidy import TidyForm, tidy
from pipelines.privacy import find_unmasked
from pipelines.records import Record

FORMS = ["sanitation_sweep", "home_visit", "culture_event", "police_monthly"]
VS = load_villages()
V1, V2 = VS[0].code, VS[1].code
AS_OF = date(2023, 6, 30)
BOUNDS = illustrative_boundaries(VS)


@pytest.fixture(scope="module")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


def inside(code: str) -> tuple[float, float]:
    """(lat, lon) of a point surely inside the village's illustrative polygon."""
    poly = BOUNDS.villages.set_index("code").geometry[code]
    p = poly.representative_point()
    return p.y, p.x


def gps(code: str, accuracy: float = 5.0) -> str:
    lat, lon = inside(code)
    return f"{lat} {lon} 60 {accuracy}"


def form(build: Path, form_id: str, rows: list[tuple[str, dict]]) -> TidyForm:
    recs = [
        Record(form_id, iid, "1", f"2023-01-01T00:00:{n:02d}.000Z", None, None, data)
        for n, (iid, data) in enumerate(rows)
    ]
    return tidy(recs, load_schema(build, form_id))


def rosters() -> Rosters:
    codes = [v.code for v in VS]
    st = pd.DataFrame(
        [("stu1", "示例学生1", "s01", "示例小学", V1, "c1", "一班", V1)],
        columns=["name", "label", "school", "school_label", "school_village", "class",
                 "class_label", "village"],
    )  # fmt: skip
    empty = {k: pd.DataFrame(columns=c) for k, c in {
        "residents": ["name", "label", "village", "age", "over65", "hypertension", "diabetes"],
        "welfare_posts": ["name", "label", "village", "post_type"],
        "dibao_households": ["name", "label", "village", "members"],
        "dibao_members": ["name", "household", "village", "relation"]}.items()}  # fmt: skip
    return Rosters(
        **{k: validate_roster(v, k, codes) for k, v in {"students": st, **empty}.items()}
    )


def sweep(village: str, day: str, findings: list[dict] | None = None, location: str | None = None) -> dict:  # fmt: skip
    return {
        "basic": {"village": village, "check_date": day, "quarter": "q2", "has_findings": "yes" if findings else "no"},
        "findings": findings or [],
        "summary": {"score": 80},
    }  # fmt: skip


def finding(status: str, rectify_by: str, location: str | None = None) -> dict:
    return {
        "kind": "garbage_pile",
        "status": status,
        "rectify_by": rectify_by,
        "location": location,
    }


def visit(student: str, day: str) -> dict:
    return {
        "subject": {"school": "s01", "class_id": "c1", "student": student, "village": V1},
        "visit": {"visit_date": day, "mode": "home"},
        "result": {"follow_up": "no"},
    }


def run(build: Path, **forms: list[tuple[str, dict]]) -> pd.DataFrame:
    tidy_forms = {fid: form(build, fid, rows) for fid, rows in forms.items()}
    found = check_forms(
        tidy_forms, as_of=AS_OF, year=2023, villages=VS, boundaries=BOUNDS, rosters=rosters(),
        gps_accuracy_m=50,
    )  # fmt: skip
    return found.table


def flagged(table: pd.DataFrame, check: str) -> list[tuple]:
    rows = table[table["check"] == check]
    return [
        (r.instance_id, None if pd.isna(r.repeat_index) else int(r.repeat_index))
        for r in rows.itertuples()
    ]


def test_gps_accuracy_and_village(build: Path) -> None:
    t = run(build, sanitation_sweep=[
        ("uuid:ok", sweep(V1, "2023-06-01", [finding("cleared", "2023-06-01", gps(V1, 50))])),
        ("uuid:vague", sweep(V1, "2023-06-02", [finding("cleared", "2023-06-02", gps(V1, 120))])),
        ("uuid:wrong", sweep(V1, "2023-06-03", [finding("cleared", "2023-06-03", gps(V2)),
                                                 finding("cleared", "2023-06-03", gps(V1))])),
        ("uuid:away", sweep(V1, "2023-06-04", [finding("cleared", "2023-06-04", "0.5 0.5 0 5")])),
    ])  # fmt: skip
    # exactly 50 m is still accurate enough: only worse than the setting is flagged
    assert flagged(t, "gps_accuracy") == [("uuid:vague", 1)]
    reason = t.loc[t["check"] == "gps_accuracy", "reason"].item()
    assert "GPS 精度 120 米" in reason and "50 米" in reason
    assert flagged(t, "gps_village") == [("uuid:wrong", 1)]
    mismatch = t.loc[t["check"] == "gps_village"].iloc[0]
    assert f"GPS 位置在{VS[1].name}" in mismatch["reason"]
    assert f"所选村（{VS[0].name}）" in mismatch["reason"]
    assert "示意边界" in mismatch["reason"]  # judged on made-up cells: the reason says so
    assert mismatch["village_code"] == V1 and mismatch["field"] == "findings/location"
    assert flagged(t, "gps_outside") == [("uuid:away", 1)]


def test_probable_duplicates_name_the_other_submission(build: Path) -> None:
    t = run(build, home_visit=[
        ("uuid:a", visit("stu1", "2023-05-01")),
        ("uuid:b", visit("stu1", "2023-05-01")),  # same student, same day
        ("uuid:c", visit("stu1", "2023-05-02")),  # next day: a second visit, fine
    ])  # fmt: skip
    assert flagged(t, "duplicate") == [("uuid:a", None), ("uuid:b", None)]
    reasons = t.loc[t["check"] == "duplicate"].set_index("instance_id")["reason"]
    assert "另见 uuid:b" in reasons["uuid:a"] and "另见 uuid:a" in reasons["uuid:b"]
    assert "stu1" in reasons["uuid:a"] and "2023-05-01 共有 2 条记录" in reasons["uuid:a"]


def test_one_police_report_per_month(build: Path) -> None:
    def month(day: str) -> dict:
        return {"small_cases": {"month": day, "small_reported": 3, "small_solved": 3}}

    t = run(build, police_monthly=[("uuid:m1", month("2023-05-01")), ("uuid:m2", month("2023-05-01")),
                                   ("uuid:m3", month("2023-06-01"))])  # fmt: skip
    assert flagged(t, "duplicate") == [("uuid:m1", None), ("uuid:m2", None)]


def test_dates_outside_the_year_or_after_as_of(build: Path) -> None:
    t = run(build, home_visit=[
        ("uuid:last-year", visit("stu1", "2022-12-31")),
        ("uuid:on-as-of", visit("stu1", "2023-06-30")),
        ("uuid:future", visit("stu1", "2023-07-01")),
        ("uuid:next-year", visit("stu1", "2024-01-02")),
    ], sanitation_sweep=[
        # a rectify-by date is meant to lie ahead: never flagged as a future date
        ("uuid:deadline-ahead", sweep(V1, "2023-06-20", [finding("to_rectify", "2023-08-01")])),
    ])  # fmt: skip
    assert flagged(t, "date_outside_year") == [("uuid:last-year", None)]
    assert flagged(t, "date_future") == [("uuid:future", None), ("uuid:next-year", None)]
    reason = t.loc[t["instance_id"] == "uuid:future", "reason"].item()
    assert reason.startswith("家访日期 2023-07-01 晚于统计截止日 2023-06-30")
    assert "不在计划年度 2023 年内" in t.loc[t["instance_id"] == "uuid:last-year", "reason"].item()


def test_roster_ids_and_village_codes_that_do_not_exist(build: Path) -> None:
    t = run(build, home_visit=[("uuid:known", visit("stu1", "2023-05-01")),
                               ("uuid:ghost", visit("stu404", "2023-05-02"))],
            culture_event=[("uuid:v", {"event": {"village": "370481115999", "event_type": "film",
                                                  "event_date": "2023-05-03", "title": "x"}})])  # fmt: skip
    assert flagged(t, "unknown_roster_id") == [("uuid:ghost", None)]
    assert (
        "students.csv 中没有编号 stu404"
        in t.loc[t["check"] == "unknown_roster_id", "reason"].item()
    )
    assert flagged(t, "unknown_village") == [("uuid:v", None)]
    # without rosters the roster check is skipped, the others still run
    tidy_forms = {"home_visit": form(build, "home_visit", [("uuid:ghost", visit("stu404", "2023-05-02"))])}  # fmt: skip
    found = check_forms(tidy_forms, as_of=AS_OF, year=2023, villages=VS, boundaries=BOUNDS)
    assert found.table.empty


def test_findings_past_their_rectify_by_date(build: Path) -> None:
    t = run(build, sanitation_sweep=[
        ("uuid:s1", sweep(V1, "2023-06-01", [
            finding("to_rectify", "2023-06-29"),  # the day before as-of: overdue by 1 day
            finding("to_rectify", "2023-06-30"),  # due on the as-of date: still in time
            finding("cleared", "2023-06-01"),
        ])),
        ("uuid:later", sweep(V2, "2023-07-02", [finding("to_rectify", "2023-06-01")])),  # not known yet
    ])  # fmt: skip
    assert flagged(t, "overdue_finding") == [("uuid:s1", 1)]
    row = t[t["check"] == "overdue_finding"].iloc[0]
    assert row["reason"].startswith("垃圾堆：整改期限 2023-06-29 已过 1 天")
    assert row["village_code"] == V1


def test_clean_data_gives_an_empty_sheet_and_the_summary_counts(build: Path) -> None:
    clean = run(build, home_visit=[("uuid:a", visit("stu1", "2023-05-01"))])
    assert clean.empty and list(clean.columns) == [
        "form_id", "instance_id", "repeat_index", "village_code", "check", "field", "reason",
    ]  # fmt: skip
    tidy_forms = {"home_visit": form(build, "home_visit", [("uuid:a", visit("stu1", "2022-05-01")),
                                                           ("uuid:b", visit("stu404", "2023-05-01"))])}  # fmt: skip
    found = check_forms(tidy_forms, as_of=AS_OF, year=2023, villages=VS, boundaries=BOUNDS, rosters=rosters())  # fmt: skip
    summary = found.summary().set_index("check")
    assert summary.loc["date_outside_year", "rows"] == 1
    assert summary.loc["unknown_roster_id", "check_label"] == CHECKS["unknown_roster_id"]
    assert len(found.form("home_visit")) == 2 and found.form("sanitation_sweep").empty


def test_reasons_quote_typed_text_masked_and_short(build: Path) -> None:
    def show(title: str) -> dict:
        return {"event": {"village": V1, "event_type": "show", "event_date": "2023-05-03", "title": title}}  # fmt: skip

    phone, old_id = "138 1234 5678", "370481900101123"
    title = f"柳琴戏专场，联系人电话{phone}，身份证{old_id}" + "，" + "很长的说明" * 40
    t = run(build, culture_event=[("uuid:e1", show(title)), ("uuid:e2", show(title))],
            home_visit=[("uuid:h1", visit("+8613912345678", "2023-05-01"))])  # fmt: skip
    dup = t.loc[t["check"] == "duplicate", "reason"].tolist()
    ghost = t.loc[t["check"] == "unknown_roster_id", "reason"].item()
    assert len(dup) == 2 and "柳琴戏专场" in dup[0] and "另见 uuid:e2" in dup[0]
    assert "139****5678" in ghost  # the raw value typed where a roster ID belongs
    for reason in [*dup, ghost]:
        assert phone not in reason and "13812345678" not in reason and old_id not in reason
        assert find_unmasked(reason) == [], reason
        assert len(reason) <= 300
    assert "…" in dup[0] and len(dup[0]) < 150  # the long title is cut short, not the reason


def test_every_text_column_is_masked_not_only_the_reasons(build: Path) -> None:
    # a number typed where a village code belongs, and where the record's id would be: both
    # are shown in the quality sheet, so both are masked like the reasons
    typed = "１３８．１２３４．５６７８"
    t = run(build, sanitation_sweep=[(f"uuid:{typed}", sweep(typed, "2023-05-01")),
                                     ("uuid:s2", sweep("370481 19900101 1234", "2023-05-02"))])  # fmt: skip
    wrong = t[t["check"] == "unknown_village"]
    assert len(wrong) == 2
    assert set(wrong["village_code"]) == {"138****5678", "370481********1234"}
    assert "uuid:138****5678" in set(wrong["instance_id"])
    for value in t.to_numpy().ravel():
        assert find_unmasked(str(value)) == [], value
