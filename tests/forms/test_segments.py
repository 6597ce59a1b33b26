"""The road forms' segment lists follow the plan's [[segment]] tables: a form that differs
from the town's plan does not build, and the problem names the sheet, row and ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forms._lint import check_segments
from forms._sheets import read_workbook
from forms.build import build_forms
from pipelines.analysis.plan import PLAN_FILE, load_plan
from tests.helpers import REPO, VILLAGES

ROAD_FORMS = ("road_progress", "street_lighting")
WOLONG = """
[[segment]]
id = "wolong_scenic"
name = "卧龙村至景区"
kind = "construction"
planned_km = 5.8
deadline = "11-30"
from = "卧龙庄"
to = "龙山"
"""


@pytest.fixture
def road_forms(tmp_path: Path) -> Path:
    d = tmp_path / "forms"
    d.mkdir()
    for form_id in ROAD_FORMS:
        shutil.copy2(REPO / "forms" / f"{form_id}.xlsx", d / f"{form_id}.xlsx")
    return d


def _plan(tmp_path: Path, old: str, new: str) -> Path:
    text = PLAN_FILE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "plan.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _problems(road_forms: Path, tmp_path: Path, plan: Path) -> list[str]:
    report = build_forms(
        road_forms, tmp_path / "out", VILLAGES, plan=load_plan(plan), validate=False
    )
    return [str(p).replace(str(plan), "PLAN") for p in report.problems]


def test_the_bundled_forms_agree_with_the_bundled_plan() -> None:
    plan = load_plan()
    for form_id in ROAD_FORMS:
        assert check_segments(read_workbook(REPO / "forms" / f"{form_id}.xlsx"), plan) == []


def test_a_segment_the_form_lacks_is_named(road_forms: Path, tmp_path: Path) -> None:
    extra = WOLONG.replace("wolong_scenic", "xinhe_bridge").replace("卧龙村至景区", "新河桥")
    plan = _plan(tmp_path, "\n[[segment]]\nid = \"dongzhu_road\"", extra + "\n[[segment]]\nid = \"dongzhu_road\"")  # fmt: skip
    assert _problems(road_forms, tmp_path, plan) == [
        "road_progress.xlsx, sheet 'choices': list 'segment' lacks the plan's construction "
        "segment(s) xinhe_bridge; make the list and the plan's [[segment]] tables (PLAN) agree",
        "road_progress.xlsx, sheet 'survey', row 12, column 'calculation' (cell P12): planned_km "
        "differs from the plan's lengths: xinhe_bridge missing (plan: 5.8); make the list and the "
        "plan's [[segment]] tables (PLAN) agree",
    ]


def test_a_segment_the_plan_lacks_is_named_at_its_row(road_forms: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, WOLONG, "")
    assert _problems(road_forms, tmp_path, plan) == [
        "road_progress.xlsx, sheet 'choices', row 4, column 'name' (cell B4): list 'segment' has "
        "segment 'wolong_scenic', which is no construction segment of the plan; make the list and "
        "the plan's [[segment]] tables (PLAN) agree",
        "road_progress.xlsx, sheet 'survey', row 12, column 'calculation' (cell P12): planned_km "
        "differs from the plan's lengths: wolong_scenic (not a segment of the plan); make the "
        "list and the plan's [[segment]] tables (PLAN) agree",
    ]


def test_another_name_or_length_is_named(road_forms: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, 'name = "旅游路"', 'name = "景区旅游路"')
    [problem] = _problems(road_forms, tmp_path, plan)
    assert problem.startswith("street_lighting.xlsx, sheet 'choices', row 3, column 'label::Chinese (zh)'")  # fmt: skip
    assert "segment 'tourism_road' is labelled '旅游路', the plan says '景区旅游路'" in problem
    plan = _plan(tmp_path, "planned_km = 5.8", "planned_km = 6.2")
    [problem] = _problems(road_forms, tmp_path, plan)
    assert "row 12, column 'calculation'" in problem and "wolong_scenic 5.8 (plan: 6.2)" in problem


def test_the_form_builds_when_list_and_plan_agree(road_forms: Path, tmp_path: Path) -> None:
    report = build_forms(road_forms, tmp_path / "out", VILLAGES, plan=load_plan(PLAN_FILE), validate=False)  # fmt: skip
    assert report.ok and sorted(b.form_id for b in report.built) == list(ROAD_FORMS)
