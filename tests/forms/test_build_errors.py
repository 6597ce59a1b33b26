"""Broken forms, written as markdown XLSForms, must fail with the right cell named."""

from __future__ import annotations

import json
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
    # a fresh output folder does not get around the rule: it lives beside the forms
    write_md_form(
        form_md(changed.replace("户", "家"), "f", version="2026112902"), forms_dir / "f.xlsx"
    )
    [problem] = build_forms(forms_dir, tmp_path / "fresh", VILLAGES).problems
    assert "2026112902" in problem.message
    lock = json.loads((forms_dir / "versions.lock.json").read_text(encoding="utf-8"))
    assert sorted(lock["f"]) == ["2026112901", "2026112902"]


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


def test_cli_reports_cell_and_exits_non_zero(
    forms_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    body, choices, _ = BROKEN["missing_zh_label"]
    write_md_form(form_md(body, "broken", choices), forms_dir / "broken.xlsx")
    monkeypatch.setenv("MANYI_FORMS_DIR", str(forms_dir))
    code = main(["forms", "build", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code != 0
    assert (
        "broken.xlsx, sheet 'survey', row 3, column 'label::Chinese (zh)' (cell C3)" in captured.err
    )
    assert captured.err.strip().splitlines()[-1] == "manyi: 1 problem(s) in 1 form(s): broken.xlsx"
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


def _good(forms_dir: Path, form_id: str = "good") -> None:
    write_md_form(form_md(GOOD, form_id), forms_dir / f"{form_id}.xlsx")


def test_corrupt_xlsx_does_not_stop_the_other_forms(forms_dir: Path, tmp_path: Path) -> None:
    (forms_dir / "aaa_broken.xlsx").write_bytes(b"this is not a spreadsheet")
    _good(forms_dir)
    report = build_forms(forms_dir, tmp_path / "out", VILLAGES)
    assert [b.form_id for b in report.built] == ["good"]
    [problem] = report.problems
    assert (
        problem.file == "aaa_broken.xlsx" and "save it again from Excel or WPS" in problem.message
    )


def test_numbers_typed_into_cells_are_read_as_pyxform_reads_them(
    forms_dir: Path, tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    _good(forms_dir, "f")
    wb = load_workbook(forms_dir / "f.xlsx")
    wb["settings"]["C2"] = 2026112901.0  # Excel stores a typed version as a number
    wb.save(forms_dir / "f.xlsx")
    report = build_forms(forms_dir, tmp_path / "out", VILLAGES)
    assert report.ok, report.problems
    assert report.built[0].version == "2026112901"


def test_number_in_a_header_cell_is_a_problem_not_a_traceback(
    forms_dir: Path, tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    _good(forms_dir, "f")
    wb = load_workbook(forms_dir / "f.xlsx")
    wb["survey"]["G1"] = 7
    wb["survey"]["G2"] = "x"
    wb.save(forms_dir / "f.xlsx")
    report = build_forms(forms_dir, tmp_path / "out", VILLAGES)
    assert not report.built and report.problems
    assert all(p.file == "f.xlsx" for p in report.problems)


def test_sheet_name_with_spaces_is_named(forms_dir: Path, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    _good(forms_dir, "f")
    wb = load_workbook(forms_dir / "f.xlsx")
    wb["settings"].title = "settings "
    wb.save(forms_dir / "f.xlsx")
    problems = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert any(
        "'settings '" in p.message and "rename it to 'settings'" in p.message for p in problems
    )


def test_names_differing_only_in_case_are_refused(forms_dir: Path, tmp_path: Path) -> None:
    body = GOOD + "\n| | text | Households | 备注 | Note | |"
    write_md_form(form_md(body, "f"), forms_dir / "f.xlsx")
    problems = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert any(p.row == 4 and p.column == "name" and "only in case" in p.message for p in problems)


def test_title_row_above_the_header_is_one_clear_problem(forms_dir: Path, tmp_path: Path) -> None:
    md = form_md(GOOD, "f").replace("| survey |\n", "| survey |\n| | 龙阳镇表单 | | | | |\n", 1)
    write_md_form(md, forms_dir / "f.xlsx")
    problems = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert problems[0].row == 1 and "title row" in problems[0].message
    assert len(problems) <= 2  # ours, and at most pyxform's own


def test_removed_form_leaves_the_manifest(forms_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _good(forms_dir, "a")
    _good(forms_dir, "b")
    assert build_forms(forms_dir, out, VILLAGES).ok
    (forms_dir / "b.xlsx").unlink()
    assert build_forms(forms_dir, out, VILLAGES).ok
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [f["form_id"] for f in manifest["forms"]] == ["a"]
    assert not (out / "b.xml").exists()
    # building one form by name keeps the others
    assert build_forms(forms_dir, out, VILLAGES, only=["a"]).ok


def test_empty_or_missing_forms_folder(tmp_path: Path) -> None:
    from pipelines.errors import FormError

    (tmp_path / "empty").mkdir()
    for folder, words in (
        (tmp_path / "empty", "no .xlsx forms"),
        (tmp_path / "nope", "does not exist"),
    ):
        with pytest.raises(FormError, match=words):
            build_forms(folder, tmp_path / "out", VILLAGES)


def test_out_pointing_at_a_file_is_one_line(
    forms_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    _good(forms_dir)
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    monkeypatch.setenv("MANYI_FORMS_DIR", str(forms_dir))
    assert main(["forms", "build", "--out", str(tmp_path / "afile")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "is a file, not a folder" in line


def test_gbk_roster_is_named_with_the_fix(forms_dir: Path, tmp_path: Path) -> None:
    _roster_form(forms_dir, "village=${village}", None)
    (forms_dir / "rosters").mkdir()
    (forms_dir / "rosters" / "people.csv").write_bytes(
        "name,label,village\np1,示例,370481115200\n".encode("gbk")
    )
    [problem] = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert "not UTF-8" in problem.message and "CSV UTF-8" in problem.message


def test_roster_bom_is_removed_from_the_attachment(forms_dir: Path, tmp_path: Path) -> None:
    _roster_form(
        forms_dir, "village=${village}", "\ufeffname,label,village\np1,示例人员1,370481115200\n"
    )
    assert build_forms(forms_dir, tmp_path / "out", VILLAGES).ok
    assert (tmp_path / "out" / "people.csv").read_bytes().startswith(b"name,label")


def test_instance_lookup_columns_are_checked(forms_dir: Path, tmp_path: Path) -> None:
    _roster_form(forms_dir, "village=${village}", "name,label,village\np1,示例人员1,370481115200\n")
    from openpyxl import load_workbook

    wb = load_workbook(forms_dir / "r.xlsx")
    ws = wb["survey"]
    ws.append(["calculate", "size", None, None, None, None])
    ws.cell(row=ws.max_row, column=7, value="instance('people')/root/item[name=${person}]/members")
    ws.cell(row=1, column=7, value="calculation")
    wb.save(forms_dir / "r.xlsx")
    [problem] = build_forms(forms_dir, tmp_path / "out", VILLAGES).problems
    assert (problem.column, problem.row) == ("calculation", ws.max_row)
    assert "column 'members' is not in people.csv" in problem.message


def test_validate_that_does_not_finish_is_a_problem(
    forms_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    # a real `java` on PATH that dies of a signal, as an out-of-memory JVM would
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").write_text("#!/bin/sh\nkill -9 $$\n", encoding="utf-8")
    (bin_dir / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    _good(forms_dir, "f")
    report = build_forms(forms_dir, tmp_path / "out", VILLAGES)
    assert not report.built
    [problem] = report.problems
    assert "ODK Validate did not finish" in problem.message


def test_sync_villages_through_the_cli_creates_a_missing_choices_sheet(
    forms_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    md = form_md(GOOD, "f")
    md = md[: md.index("| choices |")] + md[md.index("| settings |") :]
    write_md_form(md, forms_dir / "f.xlsx")
    assert not build_forms(forms_dir, tmp_path / "out", VILLAGES).ok
    monkeypatch.setenv("MANYI_FORMS_DIR", str(forms_dir))
    assert main(["forms", "sync-villages"]) == 0
    assert "1 form(s) updated" in capsys.readouterr().out
    assert build_forms(forms_dir, tmp_path / "out", VILLAGES).ok
