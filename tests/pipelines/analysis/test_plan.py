"""The plan file: every target as data, validated with messages naming indicator and key."""

from __future__ import annotations

import tomllib
from datetime import date

import pytest

from pipelines.analysis.plan import PLAN_FILE, load_plan, parse_plan
from pipelines.errors import ConfigError


def _table() -> dict:
    return tomllib.loads(PLAN_FILE.read_text(encoding="utf-8"))


def test_plan_holds_every_number_of_the_seed() -> None:
    plan = load_plan()
    t = {i.id: i for i in plan.indicators}
    assert t["home_visit_once"].deadline_date(2023) == date(2023, 7, 31)
    assert t["home_visit_twice"].min_count == 2
    assert t["health_checkup_rate"].target == 0.98
    # 一村一年一场戏: 56 villages, each reached by a show (coverage of the villages)
    shows = t["opera_shows"]
    assert (shows.measure, shows.roster, shows.id_field, shows.unit, shows.target) == (
        "coverage", "villages", "village", "count", 56,
    )  # fmt: skip
    assert shows.where == "event_type == 'show'"
    # policy explained to every patient: everyone on the check-up roster is the denominator
    policy = t["insurance_policy_awareness"]
    assert (policy.measure, policy.roster, policy.target) == ("coverage", "residents", 1.0)
    assert t["street_lighting_working"].latest == ("road", "road_other", "section")
    assert t["road_km_phase1"].latest == ("segment",)
    assert t["film_screenings"].target == 400
    assert (t["welfare_post_reviews"].target, t["welfare_post_reviews"].deadline) == (640, "09-30")
    assert t["dibao_households_verified"].target == 858
    assert (t["dibao_people_verified"].target, t["dibao_people_verified"].deadline) == (
        1518,
        "10-31",
    )
    assert (t["road_km_phase1"].target, t["road_km_phase1"].deadline) == (2.2, "06-30")
    assert (t["road_km_total"].target, t["road_km_total"].deadline) == (8, "11-30")
    assert t["small_case_clearance"].target == 0.9
    assert t["criminal_cases_down"].target == 0.3
    assert t["squares_upgraded"].target == 3
    assert t["sanitation_sweep_coverage"].period == "quarter"
    # the year is a setting: the same plan gives next year's dates
    assert t["road_km_phase1"].deadline_date(2024) == date(2024, 6, 30)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("measure", "median", "'road_km_phase1': measure 'median' is unknown"),
        ("deadline", "06-31", "'road_km_phase1': deadline = '06-31' is not a month-day"),
        ("target", -1, "'road_km_phase1': target = -1 must be a number"),
        ("department", "nobody", "'road_km_phase1': department 'nobody' is not listed"),
        ("levels", ["town", "county"], "'road_km_phase1': levels"),
        ("colour", "red", "'road_km_phase1': unknown key(s) colour"),
        ("where", "segment ==", "'road_km_phase1': where = 'segment ==' is not a valid"),
        ("latest", ["segment", 3], "'road_km_phase1': latest = \\['segment', 3\\] must be a field"),
    ],
)
def test_bad_plan_names_indicator_and_key(key: str, value: object, message: str) -> None:
    table = _table()
    ind = next(i for i in table["indicator"] if i["id"] == "road_km_phase1")
    ind[key] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_plan(table)


def test_share_target_above_one_and_duplicate_ids_are_refused() -> None:
    table = _table()
    table["indicator"][0]["target"] = 98
    with pytest.raises(ConfigError, match="between 0 and 1"):
        parse_plan(table)
    table = _table()
    table["indicator"].append(dict(table["indicator"][0]))
    with pytest.raises(ConfigError, match="id 'sanitation_sweep_coverage' repeats indicator #1"):
        parse_plan(table)


def test_missing_measure_key_is_named() -> None:
    table = _table()
    ind = next(i for i in table["indicator"] if i["id"] == "home_visit_once")
    del ind["roster"]
    with pytest.raises(ConfigError, match="'home_visit_once': measure 'coverage' needs 'roster'"):
        parse_plan(table)


# ---- the plan's road segments: declared once, here -------------------------------------------


def test_the_road_segments_are_declared_in_the_plan() -> None:
    plan = load_plan()
    by_id = {s.segment_id: s for s in plan.segments}
    assert list(by_id) == [
        "longling_dongshatu", "longyang_yanzhuang", "fuqian_east", "wolong_scenic",
        "dongzhu_road", "tourism_road",
    ]  # fmt: skip
    assert plan.planned_km == {
        "longling_dongshatu": 0.9, "longyang_yanzhuang": 0.8, "fuqian_east": 0.5,
        "wolong_scenic": 5.8,
    }  # fmt: skip
    # the km targets are the segments' lengths: 2.2 km by 06-30, 8 km in all
    assert sum(plan.planned_km.values()) == pytest.approx(plan.indicator("road_km_total").target)
    phase1 = [s for s in plan.segments if s.deadline == "06-30"]
    assert sum(s.planned_km for s in phase1) == pytest.approx(2.2)
    assert (by_id["fuqian_east"].start, by_id["fuqian_east"].heading_deg) == ("龙阳", 0.0)
    assert [s.name for s in plan.segments_of("lighting")] == ["东朱路", "旅游路"]
    assert "segment" not in plan.extra


def test_a_where_naming_an_undeclared_segment_is_refused() -> None:
    table = _table()
    table["segment"] = [s for s in table["segment"] if s["id"] != "fuqian_east"]
    with pytest.raises(
        ConfigError,
        match="indicator 'road_km_phase1': where names segment 'fuqian_east', which is no "
        "construction \\[\\[segment\\]\\] of the plan",
    ):
        parse_plan(table)
    table = _table()
    ind = next(i for i in table["indicator"] if i["id"] == "road_km_total")
    ind["where"] = "segment != 'other' and segment != 'ring_road'"
    with pytest.raises(ConfigError, match="'road_km_total': where names segment 'ring_road'"):
        parse_plan(table)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("kind", "paving", "segment #3 'fuqian_east': kind 'paving' must be one of"),
        ("planned_km", 0, "segment #3 'fuqian_east': planned_km = 0 must be a number"),
        ("planned_km", None, "segment #3 'fuqian_east': a construction segment needs 'planned_km'"),
        ("deadline", "6/30", "segment #3 'fuqian_east': deadline = '6/30' is not a month-day"),
        (
            "to",
            "董沙土",
            "segment #3 'fuqian_east': give either 'to' .* or 'heading_deg', not both",
        ),
        ("from", None, "segment #3 'fuqian_east': missing 'from'"),
        ("id", "other", "segment #3 'other': id 'other' must be ASCII letters"),
        ("id", "府前路", "segment #3 '府前路': id '府前路' must be ASCII letters"),
        (
            "id",
            "longling_dongshatu",
            "'longling_dongshatu': id 'longling_dongshatu' repeats segment #1",
        ),
        ("lanes", 2, "segment #3 'fuqian_east': unknown key\\(s\\) lanes"),
    ],
)
def test_bad_segment_names_segment_and_key(key: str, value: object, message: str) -> None:
    table = _table()
    seg = table["segment"][2]
    if value is None:
        del seg[key]
    else:
        seg[key] = value
    with pytest.raises(ConfigError, match=message):
        parse_plan(table)
