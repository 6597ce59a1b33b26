"""Broken forms, written as markdown XLSForms, must fail with the right cell named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from forms.build import build_forms
from pipelines.cli import main
from tests.helpers import VILLAGES, village_rows_md, write_md_form

HEADER = "| | type | name | label::Chinese (zh) | label::English (en) | constraint |"
SETTINGS = """
| settings |
| | form_id | form_title | version | default_language |
| | {form_id} | 测试表 | {version} | Chinese (zh) |
"""


def form_md(body: str, form_id: str, choices: str = "", version: str = "2026112901") -> str:
    return (
        "| survey |\n" + HEADER + "\n"
        "| | select_one village | village | 村庄 | Village | |\n" + body.strip() + "\n"
        "| choices |\n| | list_name | name | label::Chinese (zh) | label::English (en) |\n"
        + choices.strip() + "\n" + village_rows_md() + "\n"
        + SETTINGS.format(form_id=form_id, version=version)
    )  # fmt: skip


GOOD = "| | integer | households | 户数 | Households | . >= 0 |"

BROKEN = {
    # name: (survey rows, extra choices, expected (sheet, row, column, words in message))
    "typo_type": (
        "| | selct_one yes_no | ok | 是否 | OK? | |",
        "| | yes_no | yes | 是 | Yes |",
        ("survey", 3, "type", "selct_one"),
    ),
    "duplicate_name": (
        GOOD + "\n| | text | households | 备注 | Note | |",
        "",
        ("survey", 4, "name", "households"),
    ),
    "missing_zh_label": (
        "| | text | remark | | Remark | |",
        "",
        ("survey", 3, "label::Chinese (zh)", "Chinese label"),
    ),
    "unknown_list": (
        "| | select_one colours | colour | 颜色 | Colour | |",
        "",
        ("survey", 3, "type", "colours"),
    ),
    "bad_xpath": (
        "| | integer | people | 人数 | People | . >> 3 and ( |",
        "",
        ("survey", 3, "constraint", "constraint"),
    ),
    "unknown_reference": (
        "| | integer | people | 人数 | People | . <= ${hoseholds} |",
        "",
        ("survey", 3, "constraint", "hoseholds"),
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_form_points_at_the_cell(case: str, forms_dir: Path, tmp_path: Path) -> None:
    body, choices, (sheet, row, column, words) = BROKEN[case]
    write_md_form(form_md(body, case, choices), forms_dir / f"{case}.xlsx")
    report = build_forms(forms_dir, tmp_path / "out", VILLAGES)
    assert not report.built
    [problem] = report.problems
    assert (problem.file, problem.sheet, problem.row, problem.column) == (
        f"{case}.xlsx", sheet, row, column,
    )  # fmt: skip
    assert words in problem.message
    assert not list((tmp_path / "out").glob(f"{case}.*")), "nothing half-built is left"


def test_all_forms_are_checked_and_good_ones_still_build(forms_dir: Path, tmp_path: Path) -> None:
    for case in ("typo_type", "missing_zh_label"):
        body, choices, _ = BROKEN[case]
        write_md_form(form_md(body, case, choices), forms_dir / f"{case}.xlsx")
    write_md_form(form_md(GOOD, "good"), forms_dir / "good.xlsx")
    out = tmp_path / "out"
    report = build_forms(forms_dir, out, VILLAGES)
    assert [b.form_id for b in report.built] == ["good"]
    assert sorted(p.file for p in report.problems) == ["missing_zh_label.xlsx", "typo_type.xlsx"]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [f["form_id"] for f in manifest["forms"]] == ["good"]
    assert sorted(p.name for p in out.iterdir()) == [
        "good.json", "good.xlsx", "good.xml", "manifest.json",
    ]  # fmt: skip


def test_a_form_that_breaks_later_loses_its_old_output(forms_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_md_form(form_md(GOOD, "f"), forms_dir / "f.xlsx")
    assert build_forms(forms_dir, out, VILLAGES).ok
    body, choices, _ = BROKEN["typo_type"]
    write_md_form(form_md(body, "f", choices, version="2026112902"), forms_dir / "f.xlsx")
    assert not build_forms(forms_dir, out, VILLAGES).ok
    assert not (out / "f.xml").exists()
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["forms"] == []


def test_changed_form_with_same_version_is_refused(forms_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_md_form(form_md(GOOD, "f"), forms_dir / "f.xlsx")
    first = build_forms(forms_dir, out, VILLAGES)
    assert first.ok
    old_xml = (out / "f.xml").read_text(encoding="utf-8")

    changed = GOOD.replace("户数", "户数（户）")
    write_md_form(form_md(changed, "f"), forms_dir / "f.xlsx")
    report = build_forms(forms_dir, out, VILLAGES)
    [problem] = report.problems
    assert (problem.sheet, problem.column, problem.cell) == ("settings", "version", "C2")
    assert "2026112901" in problem.message

    # same content, same version: fine; new content with a new version: fine
    write_md_form(form_md(changed, "f", version="2026112902"), forms_dir / "f.xlsx")
    assert build_forms(forms_dir, out, VILLAGES).ok
    assert (out / "f.xml").read_text(encoding="utf-8") != old_xml
    # going back to the old version number with other content is still refused
    write_md_form(form_md(GOOD.replace("户数", "户"), "f"), forms_dir / "f.xlsx")
    assert not build_forms(forms_dir, out, VILLAGES).ok


@pytest.mark.parametrize(
    ("settings_row", "column"),
    [
        ("| | f | 测试表 | 1.0 | Chinese (zh) |", "version"),
        ("| | f | 测试表 | 2026133101 | Chinese (zh) |", "version"),
        ("| | f | 测试表 | 2026112901 | English (en) |", "default_language"),
        ("| | other_id | 测试表 | 2026112901 | Chinese (zh) |", "form_id"),
    ],
)
def test_settings_conventions(
    settings_row: str, column: str, forms_dir: Path, tmp_path: Path
) -> None:
    md = form_md(GOOD, "f").rsplit("| | f |", 1)[0] + settings_row + "\n"
    write_md_form(md, forms_dir / "f.xlsx")
    [problem] = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert (problem.sheet, problem.row, problem.column) == ("settings", 2, column)


def test_village_list_must_equal_register(forms_dir: Path, tmp_path: Path) -> None:
    md = form_md(GOOD, "f").replace("| 370481115203 | 小寨 |", "| 370481115203 | 小寨子 |")
    md = md.replace("| | village | 370481115255 | 邱石 | Qiushi |\n", "")
    write_md_form(md, forms_dir / "f.xlsx")
    problems = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert any(
        p.row == 5 and p.column == "label::Chinese (zh)" and "小寨" in p.message for p in problems
    )
    assert any("370481115255" in p.message for p in problems)


def test_sync_villages_repairs_the_list(forms_dir: Path, tmp_path: Path) -> None:
    md = form_md(GOOD, "f").replace("| 370481115203 | 小寨 |", "| 370481115203 | 小寨子 |")
    write_md_form(md, forms_dir / "f.xlsx")
    from forms.build import sync_villages

    assert sync_villages(forms_dir, VILLAGES) == [forms_dir / "f.xlsx"]
    assert build_forms(forms_dir, tmp_path / "out", VILLAGES).ok
    assert sync_villages(forms_dir, VILLAGES) == []


def test_missing_java_skips_only_validate(forms_dir: Path, tmp_path: Path, monkeypatch) -> None:
    write_md_form(form_md(GOOD, "f"), forms_dir / "f.xlsx")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    report = build_forms(forms_dir, tmp_path / "out", VILLAGES)
    assert report.ok and not report.validated
    assert any("Java was not found" in w for w in report.warnings)
    assert (tmp_path / "out" / "f.xml").exists()


def test_cli_reports_cell_and_exits_non_zero(forms_dir: Path, tmp_path: Path, capsys) -> None:
    body, choices, _ = BROKEN["missing_zh_label"]
    write_md_form(form_md(body, "broken", choices), forms_dir / "broken.xlsx")
    env = {"MANYI_FORMS_DIR": str(forms_dir)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = main(["forms", "build", "--out", str(tmp_path / "out")])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    captured = capsys.readouterr()
    assert code != 0
    assert (
        "broken.xlsx, sheet 'survey', row 3, column 'label::Chinese (zh)' (cell C3)" in captured.err
    )
    assert "Traceback" not in captured.err + captured.out


ROSTER_FORM = "| | select_one_from_file people.csv | person | 人员 | Person | |"


def _roster_form(forms_dir: Path, choice_filter: str, csv_text: str | None) -> None:
    md = form_md(ROSTER_FORM, "r").replace(
        "| survey |\n" + HEADER, "| survey |\n" + HEADER + " choice_filter |"
    )
    md = md.replace(ROSTER_FORM, ROSTER_FORM + f" {choice_filter} |")
    md = md.replace("| Village | |", "| Village | | |")
    write_md_form(md, forms_dir / "r.xlsx")
    if csv_text is not None:
        (forms_dir / "rosters").mkdir(exist_ok=True)
        (forms_dir / "rosters" / "people.csv").write_text(csv_text, encoding="utf-8")


def test_roster_column_named_in_choice_filter_must_exist(forms_dir: Path, tmp_path: Path) -> None:
    _roster_form(forms_dir, "town=${village}", "name,label,village\np1,示例人员1,370481115200\n")
    [problem] = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "survey",
        3,
        "choice_filter",
        "F3",
    )
    assert "column 'town' is not in people.csv" in problem.message


def test_roster_attachment_must_exist(forms_dir: Path, tmp_path: Path) -> None:
    _roster_form(forms_dir, "village=${village}", None)
    [problem] = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert "attachment people.csv" in problem.message and "missing" in problem.message


def test_roster_form_builds_with_its_attachment(forms_dir: Path, tmp_path: Path) -> None:
    _roster_form(forms_dir, "village=${village}", "name,label,village\np1,示例人员1,370481115200\n")
    report = build_forms(forms_dir, tmp_path / "out", VILLAGES)
    assert report.ok, report.problems
    assert report.built[0].attachments == ("people.csv",)
    assert (tmp_path / "out" / "people.csv").exists()
