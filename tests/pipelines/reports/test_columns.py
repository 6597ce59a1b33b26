"""The report reads only the form-table columns its steps need (:mod:`pipelines.reports._columns`),
and that changes nothing it writes or computes."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook
from pandas.testing import assert_frame_equal

from forms.schema import Field, FormSchema, load_schema
from pipelines.analysis.plan import load_plan
from pipelines.reports import _inputs, refresh_outputs
from pipelines.reports._columns import needed_columns
from pipelines.reports._inputs import load_inputs
from tests.pipelines.reports._town import AS_OF, Run

_WHEN = "生成时间"  # the clock time of each run: the one cell allowed to differ


def _cells(path: Path) -> dict[str, list[tuple]]:
    wb = load_workbook(path)
    return {
        ws.title: [
            tuple(r)
            for r in ws.iter_rows(values_only=True)
            if not str(r[0] or "").startswith(_WHEN)
        ]
        for ws in wb.worksheets
    }


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def both(run: Run, tmp_path_factory: pytest.TempPathFactory):
    """The report over the same store twice: every column read, and only those needed."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(_inputs, "READ_ALL_COLUMNS", True)
        whole = refresh_outputs(run.settings, AS_OF, tmp_path_factory.mktemp("whole"))
    finally:
        mp.undo()
    pruned = refresh_outputs(run.settings, AS_OF, tmp_path_factory.mktemp("pruned"))
    return whole, pruned


def test_pruned_reading_gives_identical_outputs(both) -> None:
    whole, pruned = both
    a, b = _files(whole.report_dir), _files(pruned.report_dir)
    assert a.keys() == b.keys()
    csvs = [k for k in a if k.endswith(".csv")]
    xlsxs = [k for k in a if k.endswith(".xlsx")]
    assert csvs and xlsxs
    for k in csvs:
        assert a[k].read_bytes() == b[k].read_bytes(), k
        assert len(list(csv.reader(a[k].open(encoding="utf-8-sig")))) > 1, k  # not both empty
    for k in xlsxs:
        assert _cells(a[k]) == _cells(b[k]), k
    assert_frame_equal(whole.progress.table, pruned.progress.table)
    assert whole.previous is not None and pruned.previous is not None
    assert_frame_equal(whole.previous.table, pruned.previous.table)
    assert_frame_equal(whole.checks.table, pruned.checks.table)
    assert_frame_equal(whole.followups, pruned.followups)
    assert_frame_equal(whole.closed, pruned.closed)
    assert len(pruned.checks.table) and len(pruned.followups)  # the comparison compared something
    assert whole.warnings == pruned.warnings


def test_the_report_reads_no_column_its_steps_do_not_need(run: Run) -> None:
    data = load_inputs(run.settings)
    sweep = data.forms["sanitation_sweep"].table
    assert {"instance_id", "submitted_at", "village", "check_date"} <= set(sweep.columns)
    # device and timing metadata no step reads are left in the files
    assert not {"updated_at", "deviceid", "start", "end"} & set(sweep.columns)
    # every column the plan reads is there, so the plan check still sees a missing field
    for ind in data.plan.indicators:
        if ind.form in data.forms and not ind.repeat:
            assert ind.fields_used - {"as_of"} <= set(data.forms[ind.form].table.columns), ind.id


def _field(name: str, type_: str, **kw) -> Field:
    return Field(path=name, name=name, type=type_, required=False, **kw)


def test_columns_come_from_the_schema_and_the_plan_by_rule(run: Run) -> None:
    """A town's own form: its GPS, dates, roster and village fields are checked; its free text
    is read only when a follow-up list or the plan uses it."""
    plan = load_plan(run.settings.plan)
    own = FormSchema(
        "town_own_form", "2024010101", "自有表单",
        (
            _field("deviceid", "deviceid", meta=True),
            _field("village", "select_one", list_name="village"),
            _field("visit_day", "date"),
            _field("spot", "geopoint"),
            _field("person", "select_one_from_file", from_file="students.csv"),
            _field("remark", "text"),
            _field("rating", "integer"),
        ),
        (),
    )  # fmt: skip
    cols = needed_columns(plan, {"town_own_form": own})["town_own_form"]
    assert cols[:3] == ["instance_id", "form_version", "submitted_at"]
    assert {"village", "visit_day", "spot_lon", "spot_lat", "spot_accuracy", "person"} <= set(cols)
    assert not {"remark", "rating", "deviceid", "updated_at"} & set(cols)


def test_followup_forms_keep_their_questions_and_rectifications_are_read_whole(run: Run) -> None:
    plan = load_plan(run.settings.plan)
    build = Path(run.settings.build_dir)
    schemas = {f: [load_schema(build, f)] for f in ("police_patrol", "rectification")}
    cols = needed_columns(plan, schemas)
    assert "rectification" not in cols  # its sender may be in columns no schema names
    assert {"place_name", "issues", "issues_found"} <= set(cols["police_patrol"])
    assert "deviceid" not in cols["police_patrol"]


def test_whole_and_pruned_frames_agree_column_for_column(run: Run, monkeypatch) -> None:
    pruned = load_inputs(run.settings)
    monkeypatch.setattr(_inputs, "READ_ALL_COLUMNS", True)
    whole = load_inputs(run.settings)
    assert pruned.forms.keys() == whole.forms.keys()
    for form_id, form in pruned.forms.items():
        full = whole.forms[form_id]
        assert_frame_equal(form.table, full.table[list(form.table.columns)], obj=form_id)
        for rep, frame in form.repeats.items():
            assert_frame_equal(frame, full.repeats[rep], obj=f"{form_id}/{rep}")
    assert isinstance(pruned.quarantine, pd.DataFrame)
