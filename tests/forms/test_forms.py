"""The 13 field-check forms and the rectification form (整改反馈): they build, pass ODK
Validate, follow the conventions, and hold the fields every later stage reads."""

from __future__ import annotations

import csv
import json
import re

import pytest
from openpyxl import load_workbook

from forms.build import BuildReport, list_forms
from forms.schema import FormSchema, load_schema
from tests.helpers import REPO, VILLAGES

FORMS_DIR = REPO / "forms"
FORM_IDS = sorted(p.stem for p in FORMS_DIR.glob("*.xlsx"))
ZH, EN = "Chinese (zh)", "English (en)"
REQ, OPT = True, False

# form_id -> {field path: (XLSForm type, required)}: what tidy tables, indicators and maps read.
STRUCTURE: dict[str, dict[str, tuple[str, bool]]] = {
    "sanitation_sweep": {
        "basic/village": ("select_one", REQ), "basic/check_date": ("date", REQ),
        "basic/quarter": ("select_one", REQ), "basic/campaign": ("select_multiple", OPT),
        "findings/kind": ("select_one", REQ), "findings/location": ("geopoint", OPT),
        "findings/photo": ("image", OPT), "findings/status": ("select_one", REQ),
        "findings/rectify_by": ("date", REQ), "findings/responsible": ("text", OPT),
        "summary/score": ("integer", REQ),
    },
    "road_progress": {
        "project/segment": ("select_one", REQ), "project/report_date": ("date", REQ),
        "progress/stage": ("select_one", REQ), "progress/km_done": ("decimal", REQ),
        "progress/built_trace": ("geotrace", OPT), "progress/photo": ("image", OPT),
    },
    "street_lighting": {
        "road_info/road": ("select_one", REQ), "road_info/inspect_date": ("date", REQ),
        "lamps/lamps_installed": ("integer", REQ), "lamps/lamps_working": ("integer", REQ),
        "faults/fault_kind": ("select_one", REQ), "faults/location": ("geopoint", OPT),
        "faults/photo": ("image", OPT),
    },
    "fitness_square": {
        "square/village": ("select_one", REQ), "square/check_date": ("date", REQ),
        "square/square_present": ("select_one", REQ), "square/square_upgraded": ("select_one", OPT),
        "equipment/item_kind": ("select_one", REQ), "equipment/condition": ("select_one", REQ),
        "equipment/photo": ("image", OPT), "upkeep/repair_needed": ("select_one", OPT),
    },
    "culture_event": {
        "event/village": ("select_one", REQ), "event/event_type": ("select_one", REQ),
        "event/event_date": ("date", REQ), "event/title": ("text", REQ),
        "record/audience": ("integer", OPT), "record/photo": ("image", OPT),
        "record/location": ("geopoint", OPT),
    },
    "home_visit": {
        "subject/school": ("select_one_from_file", REQ), "subject/class_id": ("select_one_from_file", REQ),
        "subject/student": ("select_one_from_file", REQ), "subject/village": ("calculate", OPT),
        "visit/visit_date": ("date", REQ), "visit/mode": ("select_one", REQ),
        "visit/topics": ("select_multiple", OPT), "result/follow_up": ("select_one", REQ),
    },
    "health_checkup": {
        "subject/village": ("select_one", REQ), "subject/resident": ("select_one_from_file", REQ),
        "subject/checkup_date": ("date", REQ), "checkup/items": ("select_multiple", OPT),
        "checkup/referral": ("select_one", REQ), "policy/policy_explained": ("select_one", REQ),
        "policy/leaflet_given": ("select_one", REQ),
    },
    "welfare_post_review": {
        "subject/village": ("select_one", REQ), "subject/post_holder": ("select_one_from_file", REQ),
        "subject/review_date": ("date", REQ), "review/on_duty": ("select_one", REQ),
        "review/meets_rules": ("select_one", REQ), "review/conclusion": ("select_one", REQ),
    },
    "dibao_verification": {
        "subject/village": ("select_one", REQ), "subject/household": ("select_one_from_file", REQ),
        "subject/verify_date": ("date", REQ), "verify/members_verified": ("integer", REQ),
        "verify/conclusion": ("select_one", REQ), "evidence/photo": ("image", OPT),
        "evidence/location": ("geopoint", OPT),
    },
    "police_patrol": {
        "patrol/village": ("select_one", REQ), "patrol/patrol_date": ("date", REQ),
        "patrol/place_kind": ("select_one", OPT), "result/issues_found": ("select_one", REQ),
        "result/location": ("geopoint", OPT),
    },
    "police_monthly": {
        "small_cases/month": ("date", REQ), "small_cases/small_reported": ("integer", REQ),
        "small_cases/small_solved": ("integer", REQ),
        **{
            f"{group}/{kind}{ly}": ("integer", REQ)
            for group, kind in (("public_criminal", "public_order_cases"),
                                ("public_criminal", "criminal_cases"),
                                ("preventable", "preventable_cases"))
            for ly in ("", "_ly")
        },
    },
    "satisfaction_survey": {
        "where/village": ("select_one", REQ), "where/survey_date": ("date", REQ),
        **{f"scores/sat_{d}": ("select_one", REQ) for d in (
            "environment", "security", "medical", "culture", "education", "assistance")},
        "opinion/policy_aware": ("select_one", REQ), "opinion/suggestion": ("text", OPT),
        "opinion/needs_follow_up": ("select_one", OPT),
    },
    "publicity_item": {
        "item/department": ("select_one", REQ), "item/publish_date": ("date", REQ),
        "item/title": ("text", REQ), "item/channel": ("select_one", REQ), "item/link": ("text", OPT),
    },
    # the portal prefills item_id, village and finding; photo is required only when done = yes
    "rectification": {
        "rectify/item_id": ("text", REQ), "rectify/village": ("select_one", OPT),
        "rectify/finding": ("text", OPT), "rectify/action": ("text", REQ),
        "rectify/done": ("select_one", REQ), "rectify/photo": ("image", OPT),
        "rectify/fix_date": ("date", REQ),
    },
}  # fmt: skip
REPEATS = {
    "sanitation_sweep": ("findings",),
    "street_lighting": ("faults",),
    "fitness_square": ("equipment",),
}


@pytest.fixture(scope="module")
def built(built_forms: BuildReport) -> BuildReport:
    return built_forms


def schema(report: BuildReport, form_id: str) -> FormSchema:
    return load_schema(report.out_dir, form_id)


def test_all_fourteen_forms_build_and_pass_odk_validate(built: BuildReport) -> None:
    assert built.problems == []
    assert built.validated, "ODK Validate must run here (Java is installed by .ci/run)"
    assert sorted(b.form_id for b in built.built) == sorted(STRUCTURE) == FORM_IDS


def test_manifest_lists_every_form_with_hash_and_attachments(built: BuildReport) -> None:
    manifest = json.loads((built.out_dir / "manifest.json").read_text(encoding="utf-8"))
    forms = {f["form_id"]: f for f in manifest["forms"]}
    assert set(forms) == set(STRUCTURE)
    for form_id, entry in forms.items():
        xml = (built.out_dir / f"{form_id}.xml").read_bytes()
        import hashlib

        assert entry["md5"] == hashlib.md5(xml).hexdigest()  # noqa: S324
        assert re.fullmatch(r"\d{10}", entry["version"])
        assert entry["title"] and not entry["title"].isascii()
        for name in entry["attachments"]:
            assert (built.out_dir / name).read_bytes() == (
                FORMS_DIR / "rosters" / name
            ).read_bytes()
    assert forms["home_visit"]["attachments"] == ["classes.csv", "schools.csv", "students.csv"]
    assert forms["dibao_verification"]["attachments"] == ["dibao_households.csv"]
    assert forms["sanitation_sweep"]["attachments"] == []


@pytest.mark.parametrize("form_id", sorted(STRUCTURE))
def test_structure(built: BuildReport, form_id: str) -> None:
    s = schema(built, form_id)
    got = {f.path: (f.type, f.required) for f in s.questions}
    for path, expected in STRUCTURE[form_id].items():
        assert got.get(path) == expected, f"{form_id}: {path}"
    assert s.repeats == REPEATS.get(form_id, ())
    assert {f.name for f in s.fields if f.meta} >= {"start", "end", "today", "deviceid", "username"}
    for f in s.questions:
        if f.name == "village" and f.type == "select_one":
            assert f.list_name == "village"


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_every_text_in_chinese_and_english(form_id: str) -> None:
    wb = load_workbook(FORMS_DIR / f"{form_id}.xlsx", read_only=True)
    for sheet in ("survey", "choices"):
        if sheet not in wb.sheetnames:
            continue
        rows = list(wb[sheet].iter_rows(values_only=True))
        header = [str(h or "") for h in rows[0]]
        assert "label" not in header
        for row in rows[1:]:
            v = dict(zip(header, row, strict=False))
            kind = str(v.get("type") or "")
            if sheet == "survey" and (
                not kind
                or kind
                in (
                    "calculate",
                    "start",
                    "end",
                    "today",
                    "deviceid",
                    "username",
                    "end_group",
                    "end_repeat",
                )
            ):
                continue  # fmt: skip
            if sheet == "choices" and not v.get("list_name"):
                continue
            assert v.get(f"label::{ZH}") and v.get(f"label::{EN}"), (
                f"{form_id}/{sheet}: {v.get('name')}"
            )
            for base in ("hint", "required_message", "constraint_message"):
                assert bool(v.get(f"{base}::{ZH}")) == bool(v.get(f"{base}::{EN}")), (
                    f"{form_id}/{sheet}: {v.get('name')} {base}"
                )


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_village_list_equals_register(built: BuildReport, form_id: str) -> None:
    with VILLAGES.open(encoding="utf-8") as f:
        register = {r["code"]: {"zh": r["name"], "en": r["pinyin"]} for r in csv.DictReader(f)}
    s = schema(built, form_id)
    villages = [f for f in s.questions if f.list_name == "village"]
    for f in villages:
        assert f.choices == register
    uses_village = form_id not in ("road_progress", "street_lighting", "police_monthly",
                                   "publicity_item", "home_visit")  # fmt: skip
    assert bool(villages) == uses_village


@pytest.mark.parametrize("form_id", FORM_IDS)
def test_mobile_conventions(form_id: str) -> None:
    wb = load_workbook(FORMS_DIR / f"{form_id}.xlsx", read_only=True)
    rows = list(wb["survey"].iter_rows(values_only=True))
    header = [str(h or "") for h in rows[0]]
    survey = [dict(zip(header, r, strict=False)) for r in rows[1:] if any(r)]
    for q in survey:
        if q.get("type") == "image":
            assert "max-pixels=1024" in str(q.get("parameters") or ""), q["name"]
        if q.get("type") == "geopoint":
            assert "selected-at(., 3)" in str(q.get("constraint") or ""), q["name"]
            assert q.get(f"constraint_message::{ZH}"), q["name"]
        if q.get("required") in ("yes", "true", True):
            assert q.get(f"required_message::{ZH}"), (
                f"{form_id}: {q['name']} needs a Chinese message"
            )
        if q.get("constraint"):
            assert q.get(f"constraint_message::{ZH}"), (
                f"{form_id}: {q['name']} needs a Chinese message"
            )
    groups = [q for q in survey if q.get("type") == "begin_group"]
    assert groups and all(q.get("appearance") == "field-list" for q in groups)
    settings = dict(zip(*list(wb["settings"].iter_rows(values_only=True))[:2], strict=False))
    assert settings["instance_name"], "instance_name makes the list of drafts readable"
    assert settings["default_language"] == ZH


def test_rosters_hold_no_id_numbers_or_phones() -> None:
    for path in (FORMS_DIR / "rosters").glob("*.csv"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\d{17}[\dXx]", text), path.name
        assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", text), path.name
        header = text.splitlines()[0].split(",")
        assert header[:2] == ["name", "label"], path.name


def test_list_forms_reports_id_version_title_and_questions(built: BuildReport) -> None:
    infos = {f.form_id: f for f in list_forms(FORMS_DIR)}
    assert set(infos) == set(STRUCTURE)
    assert infos["sanitation_sweep"].title == "人居环境整治巡查"
    for b in built.built:
        assert infos[b.form_id].questions == b.questions > 0
        assert infos[b.form_id].version == b.version
