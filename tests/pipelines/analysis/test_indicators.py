"""Indicator values, pace and status against hand-computed fixtures."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from geo.villages import Village, load_villages
from pipelines.analysis.followups import follow_ups
from pipelines.analysis.indicators import DONE, LAGGING, ON_TRACK, OVERDUE, compute_progress
from pipelines.analysis.plan import load_plan
from pipelines.analysis.rosters import Rosters, validate_roster
from pipelines.analysis.tidy import TidyForm, tidy

FORMS = [
    "home_visit", "road_progress", "culture_event", "police_monthly", "publicity_item",
    "health_checkup", "welfare_post_review", "fitness_square", "street_lighting",
]  # fmt: skip
VS: list[Village] = load_villages()[:3]  # two villages in group 1, ...
V1, V2, V3 = (v.code for v in VS)
PLAN = load_plan()


@pytest.fixture(scope="module")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


def rosters() -> Rosters:
    """4 students (2 in V1, 2 in V2), 4 check-up residents (V1, V1, V2, V2), 2 welfare posts."""
    codes = [v.code for v in load_villages()]
    st = pd.DataFrame(
        [(f"stu{i}", f"示例学生{i}", "s01", "示例小学", V1, "c1", "一班", v)
         for i, v in enumerate([V1, V1, V2, V2], start=1)],
        columns=["name", "label", "school", "school_label", "school_village", "class",
                 "class_label", "village"],
    )  # fmt: skip
    res = pd.DataFrame(
        [(f"res{i}", f"示例居民{i}", v, "70", "1", "0", "0")
         for i, v in enumerate([V1, V1, V2, V2], start=1)],
        columns=["name", "label", "village", "age", "over65", "hypertension", "diabetes"],
    )  # fmt: skip
    posts = pd.DataFrame(
        [("wp1", "公益岗1", V1, "cleaning"), ("wp2", "公益岗2", V2, "patrol")],
        columns=["name", "label", "village", "post_type"],
    )
    empty = {k: pd.DataFrame(columns=c) for k, c in {
        "dibao_households": ["name", "label", "village", "members"],
        "dibao_members": ["name", "household", "village", "relation"]}.items()}  # fmt: skip
    frames = {"students": st, "residents": res, "welfare_posts": posts, **empty}
    return Rosters(**{k: validate_roster(v, k, codes) for k, v in frames.items()})


def form(build: Path, form_id: str, rows: list[dict]) -> TidyForm:
    recs = [
        {"form_id": form_id, "instance_id": f"uuid:{n}", "form_version": "1",
         "submitted_at": f"2023-01-01T00:00:{n:02d}Z", "data": d}
        for n, d in enumerate(rows)
    ]  # fmt: skip
    return tidy(recs, load_schema(build, form_id))


def progress(forms: dict[str, TidyForm], as_of: date, ids: list[str]) -> pd.DataFrame:
    p = compute_progress(
        PLAN, forms, as_of=as_of, year=2023, villages=VS, rosters=rosters(), only=ids
    )
    return p.table.set_index(["indicator_id", "level", "key"])


def visits(build: Path) -> TidyForm:
    def v(student: str, day: str) -> dict:
        return {"subject": {"student": student}, "visit": {"visit_date": day, "mode": "home"}}

    # stu1 twice, stu2 once; stu3, stu4 (village 2) never; one visit dated after the as-of dates
    return form(build, "home_visit", [v("stu1", "2023-03-01"), v("stu1", "2023-06-01"),
                                      v("stu2", "2023-07-31"), v("stu3", "2023-12-01")])  # fmt: skip


@pytest.mark.parametrize(
    ("as_of", "value", "expected", "status"),
    [
        (date(2023, 7, 30), 0.25, 211 / 212, LAGGING),  # stu2's visit of 07-31 is not yet in
        (date(2023, 7, 31), 0.50, 1.0, LAGGING),  # on the deadline: still in time
        (date(2023, 8, 1), 0.50, 1.0, OVERDUE),  # the day after
    ],
)
def test_home_visit_deadline_edges(build: Path, as_of: date, value: float, expected: float, status: str) -> None:  # fmt: skip
    t = progress({"home_visit": visits(build)}, as_of, ["home_visit_once"])
    town = t.loc[("home_visit_once", "town", "龙阳镇")]
    assert (town["value"], town["target"], town["status"]) == (pytest.approx(value), 1.0, status)
    assert town["expected"] == pytest.approx(expected)
    assert (town["numerator"], town["denominator"]) == (value * 4, 4)


def test_per_village_group_and_a_village_with_no_data(build: Path) -> None:
    t = progress(
        {"home_visit": visits(build)}, date(2023, 8, 1), ["home_visit_once", "home_visit_twice"]
    )
    assert t.loc[("home_visit_once", "village", V1), "value"] == 1.0
    assert t.loc[("home_visit_once", "village", V1), "status"] == DONE
    assert t.loc[("home_visit_once", "village", V2), "value"] == 0.0
    assert t.loc[("home_visit_once", "village", V2), "status"] == OVERDUE
    # village 3 has no students: no rate, and nothing to chase
    assert pd.isna(t.loc[("home_visit_once", "village", V3), "value"])
    # ≥ 2 visits: only stu1; deadline 12-31 so on 08-01 expected = 213/365
    twice = t.loc[("home_visit_twice", "town", "龙阳镇")]
    assert (twice["value"], twice["expected"]) == (0.25, pytest.approx(213 / 365))
    assert twice["status"] == LAGGING
    group1 = t.loc[("home_visit_once", "liaison_group", 1)]
    assert (group1["numerator"], group1["denominator"]) == (2, 4)


def test_road_km_latest_report_per_segment_and_pace(build: Path) -> None:
    def r(seg: str, day: str, km: float) -> dict:
        return {"project": {"segment": seg, "report_date": day}, "progress": {"km_done": km}}

    roads = form(build, "road_progress", [
        r("longling_dongshatu", "2023-03-10", 0.4), r("longling_dongshatu", "2023-04-20", 0.9),
        r("longyang_yanzhuang", "2023-04-01", 0.8), r("wolong_scenic", "2023-04-02", 1.0),
        r("fuqian_east", "2023-06-30", 0.5),
    ])  # fmt: skip
    t = progress({"road_progress": roads}, date(2023, 3, 31), ["road_km_phase1"])
    first = t.loc[("road_km_phase1", "town", "龙阳镇")]
    assert first["value"] == pytest.approx(0.4)
    assert first["expected"] == pytest.approx(2.2 * 90 / 181)
    t = progress({"road_progress": roads}, date(2023, 6, 30), ["road_km_phase1", "road_km_total"])
    assert t.loc[("road_km_phase1", "town", "龙阳镇"), "value"] == pytest.approx(2.2)
    assert t.loc[("road_km_phase1", "town", "龙阳镇"), "status"] == DONE
    assert t.loc[("road_km_total", "town", "龙阳镇"), "value"] == pytest.approx(3.2)
    assert t.loc[("road_km_total", "department", "construction"), "key_label"] == "镇建设办"


def test_empty_month_and_no_form_at_all(build: Path) -> None:
    # nothing submitted yet: counts are 0, before the start date nobody is behind
    t = progress({}, date(2023, 3, 15), ["opera_shows", "road_km_phase1"])
    shows = t.loc[("opera_shows", "town", "龙阳镇")]
    assert (shows["value"], shows["target"], shows["expected"], shows["status"]) == (
        0,
        56,
        0,
        ON_TRACK,
    )
    assert t.loc[("opera_shows", "village", V3), "target"] == 1
    assert t.loc[("road_km_phase1", "town", "龙阳镇"), "status"] == LAGGING


def _event(village: str, kind: str, day: str) -> dict:
    return {"event": {"village": village, "event_type": kind, "event_date": day, "title": "x"}}


def test_shows_cover_villages_one_show_each(build: Path) -> None:
    # "一村一年一场戏": the value is the villages that had a show, not the number of shows
    events = form(build, "culture_event", [
        _event(V1, "show", "2023-05-01"), _event(V1, "show", "2023-05-20"),
        _event(V1, "film", "2023-05-02"), _event(V2, "show", "2023-05-03"),
    ])  # fmt: skip
    t = progress({"culture_event": events}, date(2023, 5, 31), ["opera_shows", "film_screenings"])
    town = t.loc[("opera_shows", "town", "龙阳镇")]
    assert (town["value"], town["target"]) == (2, 56)  # V1's second show adds nothing
    assert t.loc[("opera_shows", "village", V1), ["value", "target", "status"]].tolist() == [1, 1, DONE]  # fmt: skip
    assert t.loc[("opera_shows", "village", V3), "value"] == 0
    assert t.loc[("opera_shows", "liaison_group", 1), ["value", "target"]].tolist() == [2, 3]
    assert t.loc[("film_screenings", "village", V1), "value"] == 1
    assert pd.isna(t.loc[("film_screenings", "village", V1), "status"])  # no per-village target


def test_56_shows_in_one_village_are_one_village_of_56(build: Path) -> None:
    everyone = load_villages()
    events = form(build, "culture_event", [_event(V1, "show", "2023-05-01")] * 56)
    p = compute_progress(
        PLAN, {"culture_event": events}, as_of=date(2023, 5, 31), year=2023, villages=everyone,
        rosters=rosters(), only=["opera_shows"],
    ).table  # fmt: skip
    town = p[p["level"] == "town"].iloc[0]
    assert (town["value"], town["target"]) == (1, 56)
    assert town["status"] == LAGGING  # 56 × 61/275 = 12.4 villages expected by 05-31
    assert int((p.loc[p["level"] == "village", "value"] >= 1).sum()) == 1


def test_a_resent_visit_on_the_same_day_is_one_visit(build: Path) -> None:
    def v(student: str, day: str) -> dict:
        return {"subject": {"student": student}, "visit": {"visit_date": day, "mode": "home"}}

    # stu1: the same visit sent twice on 03-01; stu2: two real visits
    rows = [v("stu1", "2023-03-01"), v("stu1", "2023-03-01"), v("stu2", "2023-03-01"), v("stu2", "2023-04-01")]  # fmt: skip
    t = progress({"home_visit": form(build, "home_visit", rows)}, date(2023, 8, 1), ["home_visit_once", "home_visit_twice"])  # fmt: skip
    assert t.loc[("home_visit_once", "town", "龙阳镇"), "numerator"] == 2
    assert t.loc[("home_visit_twice", "town", "龙阳镇"), "numerator"] == 1  # stu2 only
    assert t.loc[("home_visit_twice", "village", V1), "value"] == 0.5  # both are in V1


def test_insurance_policy_awareness_counts_the_whole_check_up_roster(build: Path) -> None:
    def c(resident: str, village: str, day: str, explained: str) -> dict:
        return {"subject": {"village": village, "resident": resident, "checkup_date": day},
                "checkup": {"referral": "no"},
                "policy": {"policy_explained": explained, "leaflet_given": "yes"}}  # fmt: skip

    # 4 residents on the roster: res1 told, res2 checked but not told, res3 and res4 not seen yet
    checks = form(build, "health_checkup", [c("res1", V1, "2023-04-01", "yes"), c("res2", V1, "2023-04-02", "no")])  # fmt: skip
    t = progress({"health_checkup": checks}, date(2023, 12, 31), ["insurance_policy_awareness"])
    town = t.loc[("insurance_policy_awareness", "town", "龙阳镇")]
    assert (town["numerator"], town["denominator"], town["value"]) == (1, 4, 0.25)
    assert town["status"] == LAGGING  # on the deadline, 25% of everyone against 100%
    assert t.loc[("insurance_policy_awareness", "village", V1), "value"] == 0.5
    assert t.loc[("insurance_policy_awareness", "village", V2), "value"] == 0.0


def test_lighting_counts_every_inspected_section(build: Path) -> None:
    def lamps(section: str, day: str, installed: int, working: int) -> dict:
        return {"road_info": {"road": "dongzhu_road", "section": section, "inspect_date": day},
                "lamps": {"lamps_installed": installed, "lamps_working": working, "has_faults": "no"}}  # fmt: skip

    rows = [lamps("东段", "2023-05-01", 10, 6), lamps("东段", "2023-06-01", 10, 10),
            lamps("西段", "2023-05-15", 10, 5)]  # fmt: skip
    t = progress({"street_lighting": form(build, "street_lighting", rows)}, date(2023, 6, 30), ["street_lighting_working"])  # fmt: skip
    town = t.loc[("street_lighting_working", "town", "龙阳镇")]
    # each section's latest night: 东段 10 of 10 (06-01), 西段 5 of 10
    assert (town["numerator"], town["denominator"]) == (15, 20)


def test_a_follow_up_item_and_its_indicator_read_the_same_submissions(build: Path) -> None:
    def review(holder: str, village: str, day: str, ok: str) -> dict:
        return {"subject": {"village": village, "post_holder": holder, "review_date": day},
                "review": {"on_duty": "yes", "meets_rules": ok,
                           "conclusion": "compliant" if ok == "yes" else "rectify"}}  # fmt: skip

    # wp1's only review is dated last year (a typo the checks flag); wp2 failed, then was
    # reviewed again on the same day and passed (the later submission wins in both)
    reviews = form(build, "welfare_post_review", [
        review("wp1", V1, "2022-12-30", "no"), review("wp2", V2, "2023-05-01", "no"),
        review("wp2", V2, "2023-05-01", "yes"), review("wp1", V1, "2023-07-01", "no"),
    ])  # fmt: skip
    as_of = date(2023, 6, 30)
    t = progress({"welfare_post_review": reviews}, as_of, ["welfare_post_compliant"])
    town = t.loc[("welfare_post_compliant", "town", "龙阳镇")]
    assert (town["numerator"], town["denominator"]) == (1, 1)  # wp2 only, compliant
    items = follow_ups({"welfare_post_review": reviews}, as_of=as_of, year=2023, plan=PLAN,
                       villages=VS, rosters=rosters())  # fmt: skip
    assert items.empty  # nothing open: neither last year's review nor wp2's first one

    def square(village: str, day: str, equipment: list[dict]) -> dict:
        return {"square": {"village": village, "check_date": day, "square_present": "yes",
                           "equipment_present": "yes" if equipment else "no"},
                "equipment": equipment}  # fmt: skip

    # V1's latest inspection found no equipment left: the damaged item of May is not current
    squares = form(build, "fitness_square", [
        square(V1, "2023-05-01", [{"item_kind": "walker", "condition": "damaged"}]),
        square(V1, "2023-06-01", []),
        square(V2, "2023-06-02", [{"item_kind": "bars", "condition": "good"},
                                  {"item_kind": "rider", "condition": "missing"}]),
    ])  # fmt: skip
    t = progress({"fitness_square": squares}, as_of, ["fitness_equipment_good"])
    assert pd.isna(t.loc[("fitness_equipment_good", "village", V1), "value"])
    assert t.loc[("fitness_equipment_good", "village", V2), "value"] == 0.5
    items = follow_ups({"fitness_square": squares}, as_of=as_of, year=2023, plan=PLAN,
                       villages=VS, rosters=rosters())  # fmt: skip
    assert items["village_code"].tolist() == [V2]


def test_police_rates_use_the_latest_figures_of_each_month(build: Path) -> None:
    def m(month: str, reported: int, solved: int, po: int, po_ly: int) -> dict:
        return {"small_cases": {"month": month, "small_reported": reported, "small_solved": solved},
                "public_criminal": {"public_order_cases": po, "public_order_cases_ly": po_ly,
                                    "criminal_cases": 1, "criminal_cases_ly": 1},
                "preventable": {"preventable_cases": 0, "preventable_cases_ly": 0}}  # fmt: skip

    police = form(build, "police_monthly", [m("2023-01-01", 10, 5, 7, 10), m("2023-02-01", 10, 9, 6, 10),
                                            m("2023-01-01", 10, 9, 7, 10)])  # January corrected  # fmt: skip
    t = progress(
        {"police_monthly": police},
        date(2023, 3, 1),
        ["small_case_clearance", "public_order_cases_down", "criminal_cases_down"],
    )
    assert t.loc[("small_case_clearance", "town", "龙阳镇"), "value"] == pytest.approx(18 / 20)
    assert t.loc[("small_case_clearance", "town", "龙阳镇"), "status"] == DONE
    assert t.loc[("public_order_cases_down", "town", "龙阳镇"), "value"] == pytest.approx(
        1 - 13 / 20
    )
    assert t.loc[("criminal_cases_down", "town", "龙阳镇"), "status"] == LAGGING


def test_publicity_counts_whole_weeks_per_department(build: Path) -> None:
    def p(dept: str, day: str) -> dict:
        return {
            "item": {
                "department": dept,
                "publish_date": day,
                "title": "x",
                "channel": "wechat_account",
            }
        }

    # 2023-01-02 is a Monday; as of Sunday 01-15 two whole weeks have passed
    items = form(build, "publicity_item", [p("police", "2023-01-03"), p("police", "2023-01-09"),
                                           p("health_center", "2023-01-04"), p("police", "2023-01-16")])  # fmt: skip
    t = progress({"publicity_item": items}, date(2023, 1, 15), ["publicity_weekly"])
    assert t.loc[("publicity_weekly", "department", "police"), "value"] == 1.0
    assert t.loc[("publicity_weekly", "department", "health_center"), "value"] == 0.5
    assert t.loc[("publicity_weekly", "town", "龙阳镇"), "value"] == pytest.approx(3 / 16)
