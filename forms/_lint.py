"""manyi's own XLSForm conventions, checked before pyxform so each problem names its cell:
the sheets' columns and names, the village list against the register, and the road lists
against the town's plan."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from forms._sheets import Sheet, Workbook
from forms.segments import OTHER, SEGMENT_FIELDS
from geo.villages import Village
from pipelines.errors import Problem

if TYPE_CHECKING:  # forms are built before any analysis: the plan comes in as data
    from pipelines.analysis.plan import Plan

ZH = "Chinese (zh)"
EN = "English (en)"
VILLAGE_LIST = "village"
SYNC_HINT = "run `manyi forms sync-villages` to rewrite it from the register"
# Translatable columns: if one language is filled, both must be.
TRANSLATED = ("label", "hint", "guidance_hint", "required_message", "constraint_message")
# Survey types that carry no label of their own.
UNLABELLED = {
    "calculate", "start", "end", "today", "deviceid", "username", "phonenumber", "simserial",
    "subscriberid", "audit", "end_group", "end group", "end_repeat", "end repeat", "hidden",
    "start-geopoint", "background-geopoint", "xml-external", "csv-external",
}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHOICE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_VERSION = re.compile(r"^\d{10}$")
_PLANNED_KM = "planned_km"  # the calculate that gives each segment's length in the form


def uses_village(wb: Workbook) -> bool:
    survey = wb.get("survey")
    return bool(survey) and any(
        v.get("type", "").split()[:2]
        in (["select_one", VILLAGE_LIST], ["select_multiple", VILLAGE_LIST])
        for _, v in survey.rows
    )


def lint(wb: Workbook, villages: list[Village], plan: Plan | None = None) -> list[Problem]:
    f = wb.path.name
    out: list[Problem] = list(wb.problems)
    survey, choices, settings = wb.get("survey"), wb.get("choices"), wb.get("settings")
    if survey is None:
        return [*out, Problem(f, "no 'survey' sheet; every XLSForm needs one")]
    if "type" not in survey.header or "name" not in survey.header:
        return [
            *out,
            survey.problem(1, None, "row 1 must hold the column names (type, name, label::…); "
                           "remove any title row above them"),
        ]  # fmt: skip
    out += _lint_settings(wb, settings)
    for sheet in (survey, choices):
        if sheet is not None:
            out += _lint_sheet(sheet, is_survey=sheet is survey)
    if uses_village(wb):
        out += check_villages(f, choices, villages)
    if plan is not None:
        out += check_segments(wb, plan)
    return out


def _lint_settings(wb: Workbook, settings: Sheet | None) -> list[Problem]:
    if settings is None or not settings.rows:
        return [Problem(wb.path.name, "no 'settings' sheet (or it is empty); add form_id, form_title, version, "
                        f"default_language '{ZH}'")]  # fmt: skip
    row, sv = settings.rows[0]
    out = []
    form_id = sv.get("form_id", "")
    if not _NAME.match(form_id):
        out.append(
            settings.problem(
                row,
                "form_id",
                f"form_id {form_id!r} must be ASCII letters, digits and _, starting with a letter",
            )
        )
    elif form_id != wb.path.stem:
        out.append(
            settings.problem(
                row,
                "form_id",
                f"form_id '{form_id}' differs from the file name; name the file {form_id}.xlsx",
            )
        )
    if not sv.get("form_title"):
        out.append(
            settings.problem(row, "form_title", "form_title is empty; give the Chinese title")
        )
    version = sv.get("version", "")
    if not _VERSION.match(version) or not _valid_date(version[:8]):
        out.append(
            settings.problem(
                row,
                "version",
                f"version {version!r} must be yyyymmddrr, e.g. 2026112901 (store it as text or a whole number)",
            )
        )
    if sv.get("default_language") != ZH:
        out.append(settings.problem(row, "default_language", f"default_language must be '{ZH}'"))
    return out


def _lint_sheet(sheet: Sheet, *, is_survey: bool) -> list[Problem]:
    out = []
    if "label" in sheet.header:
        out.append(
            sheet.problem(1, "label", f"bare 'label' column: use 'label::{ZH}' and 'label::{EN}'")
        )
    for base in TRANSLATED:
        for have, need in ((ZH, EN), (EN, ZH)):
            if f"{base}::{have}" in sheet.header and f"{base}::{need}" not in sheet.header:
                out.append(
                    sheet.problem(
                        1,
                        f"{base}::{have}",
                        f"column '{base}::{need}' is missing; add it beside '{base}::{have}'",
                    )
                )
    seen: dict[str, int] = {}
    for row, v in sheet.rows:
        name = v.get("name", "")
        if is_survey:
            typ = v.get("type", "")
            if not typ:
                out.append(
                    sheet.problem(
                        row, "type", "type is empty; give a question type or delete the row"
                    )
                )
                continue
            first = typ.split()[0]
            if first in ("end_group", "end_repeat", "end"):
                continue
            if not _NAME.match(name):
                out.append(
                    sheet.problem(
                        row,
                        "name",
                        f"name {name!r} must be ASCII letters, digits and _, starting with a letter",
                    )
                )
            elif name.lower() in seen and name not in seen:
                out.append(sheet.problem(row, "name", f"name '{name}' differs from row {seen[name.lower()]} only in case; "
                                         "tables and databases would mix them up, so rename one"))  # fmt: skip
            seen.setdefault(name.lower(), row)
            seen.setdefault(name, row)
            needs_label = first not in UNLABELLED
        else:
            if not v.get("list_name"):
                continue
            if not _CHOICE.match(name):
                out.append(
                    sheet.problem(
                        row,
                        "name",
                        f"choice name {name!r} must be ASCII letters, digits, _, . or -",
                    )
                )
            needs_label = True
        for base in TRANSLATED:
            zh, en = v.get(f"{base}::{ZH}"), v.get(f"{base}::{EN}")
            if base == "label" and needs_label:
                if not zh:
                    out.append(
                        sheet.problem(
                            row, f"label::{ZH}", f"'{name}' has no Chinese label; fill label::{ZH}"
                        )
                    )
                if not en:
                    out.append(
                        sheet.problem(
                            row, f"label::{EN}", f"'{name}' has no English label; fill label::{EN}"
                        )
                    )
            elif zh and not en:
                out.append(
                    sheet.problem(
                        row,
                        f"{base}::{EN}",
                        f"'{name}' has {base} in Chinese but not in English; fill {base}::{EN}",
                    )
                )
            elif en and not zh:
                out.append(
                    sheet.problem(
                        row,
                        f"{base}::{ZH}",
                        f"'{name}' has {base} in English but not in Chinese; fill {base}::{ZH}",
                    )
                )
    return out


def _valid_date(yyyymmdd: str) -> bool:
    try:
        datetime.strptime(yyyymmdd, "%Y%m%d")
    except ValueError:
        return False
    return True


def check_villages(f: str, choices: Sheet | None, villages: list[Village]) -> list[Problem]:
    """The form's ``village`` list must equal the register, in codes and in both labels."""
    if choices is None:
        return [Problem(f, f"no 'choices' sheet for list '{VILLAGE_LIST}'; {SYNC_HINT}")]
    want = {v.code: v for v in villages}
    got: dict[str, int] = {}
    out = []
    for r, v in choices.rows:
        if v.get("list_name") != VILLAGE_LIST:
            continue
        code = v.get("name", "")
        if code not in want:
            out.append(
                choices.problem(
                    r, "name", f"village code {code!r} is not in the register; {SYNC_HINT}"
                )
            )
            continue
        if code in got:
            out.append(
                choices.problem(
                    r,
                    "name",
                    f"village {code} is listed twice (rows {got[code]} and {r}); {SYNC_HINT}",
                )
            )
            continue
        got[code] = r
        reg = want[code]
        for lang, expected in ((ZH, reg.name), (EN, reg.pinyin)):
            column = f"label::{lang}"
            if v.get(column) != expected:
                out.append(
                    choices.problem(
                        r,
                        column,
                        f"village {code} is labelled {v.get(column)!r}, the register says {expected!r}; {SYNC_HINT}",
                    )
                )
    missing = [c for c in want if c not in got]
    if missing:
        shown = ", ".join(missing[:5]) + ("…" if len(missing) > 5 else "")
        out.append(
            Problem(
                f,
                f"list '{VILLAGE_LIST}' lacks {len(missing)} register village(s) ({shown}); {SYNC_HINT}",
                choices.name,
            )
        )
    return out


def check_segments(wb: Workbook, plan: Plan) -> list[Problem]:
    """A road form's segment list must name exactly the plan's segments of its kind (plus
    ``other``), with the plan's Chinese names, and its ``planned_km`` the plan's lengths."""
    form_id = wb.settings.get("form_id") or wb.path.stem
    survey, choices = wb.get("survey"), wb.get("choices")
    out: list[Problem] = []
    for kind, (form, field_name) in SEGMENT_FIELDS.items():
        if form != form_id or survey is None:
            continue
        fix = f"make the list and the plan's [[segment]] tables ({_name(plan)}) agree"
        row = survey.find("name", field_name)
        typ = dict(survey.rows)[row].get("type", "").split() if row else []
        if len(typ) != 2 or typ[0] != "select_one":
            message = f"no select_one question '{field_name}' to choose the plan's {kind} segments in; {fix}"  # fmt: skip
            out.append(survey.problem(row, "type", message))
            continue
        out += _check_segment_list(wb, choices, typ[1], plan, kind, fix)
        if kind == "construction":
            out += _check_planned_km(survey, field_name, plan, fix)
    return out


def _name(plan: Plan) -> str:
    return str(plan.path) if plan.path else "the plan"


def _check_segment_list(wb: Workbook, choices: Sheet | None, list_name: str, plan: Plan, kind: str, fix: str) -> list[Problem]:  # fmt: skip
    wanted = {s.segment_id: s for s in plan.segments_of(kind)}
    seen: set[str] = set()
    out = []
    for r, v in choices.rows if choices else []:
        name = v.get("name", "")
        if v.get("list_name") != list_name or name == OTHER:
            continue
        seen.add(name)
        label = v.get(f"label::{ZH}")
        if name not in wanted:
            message = f"list '{list_name}' has segment '{name}', which is no {kind} segment of the plan; {fix}"  # fmt: skip
            out.append(choices.problem(r, "name", message))
        elif label != wanted[name].name:
            message = f"segment '{name}' is labelled {label!r}, the plan says {wanted[name].name!r}; {fix}"  # fmt: skip
            out.append(choices.problem(r, f"label::{ZH}", message))
    missing = [i for i in wanted if i not in seen]
    if missing:
        message = f"list '{list_name}' lacks the plan's {kind} segment(s) {', '.join(missing)}; {fix}"  # fmt: skip
        out.append(Problem(wb.path.name, message, choices.name if choices else "choices"))
    return out


def _check_planned_km(survey: Sheet, field_name: str, plan: Plan, fix: str) -> list[Problem]:
    row = survey.find("name", _PLANNED_KM)
    if row is None:
        return []
    calculation = dict(survey.rows)[row].get("calculation", "")
    pattern = r"\$\{" + re.escape(field_name) + r"\}\s*=\s*'([^']+)'\s*,\s*([0-9.]+)"
    said = {i: float(km) for i, km in re.findall(pattern, calculation)}
    planned = plan.planned_km
    wrong = [f"{i} {said.get(i, 'missing')} (plan: {km})" for i, km in planned.items() if said.get(i) != km]  # fmt: skip
    wrong += [f"{i} (not a segment of the plan)" for i in said if i not in planned]
    if not wrong:
        return []
    message = f"{_PLANNED_KM} differs from the plan's lengths: {', '.join(wrong)}; {fix}"
    return [survey.problem(row, "calculation", message)]
