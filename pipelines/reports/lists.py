"""The follow-up lists (跟进清单: open items, one sheet per liaison group, and the items closed
by a rectification) and the data-quality sheets (数据质量: flagged rows, one sheet per form, and
the store's quarantined records), each as XLSX and CSV.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from pipelines.analysis import followups as fu
from pipelines.analysis.checks import CHECKS, Checks
from pipelines.reports._inputs import QUARANTINE, QUARANTINE_LABEL, Inputs
from pipelines.reports.spreadsheets import (
    gc_paused,
    new_workbook,
    save_workbook,
    shown_frame,
    write_csv,
    write_sheet,
)

__all__ = ["CLOSED_SHEET", "QUARANTINE", "write_followup_lists", "write_quality_sheets"]
CLOSED_SHEET = "已整改"  # the follow-up workbook's sheet of items closed by a rectification


@gc_paused
def write_followup_lists(
    items: pd.DataFrame, report_dir: Path, as_of: date, *, closed: pd.DataFrame | None = None
) -> tuple[Path, Path]:
    """Write 跟进清单_<as_of>.xlsx and .csv; return their paths.

    The XLSX has one sheet per liaison group of the open ``items`` (each with how many
    rectifications it has had and the latest one's date and note), and, when ``closed`` is
    given, a sheet 已整改 of the items a rectification closed: who, when and what was done,
    beside the original finding. The CSV holds the open items only.
    """
    shown = fu.display(items)
    masked = shown_frame(shown)  # each text masked once, for the workbook and the CSV
    xlsx = report_dir / f"跟进清单_{as_of.isoformat()}.xlsx"
    wb = new_workbook()
    wrap = {fu.HEADERS["content"], fu.HEADERS["last_attempt_note"]}
    if shown.empty:
        write_sheet(wb, "跟进清单", masked)  # headers only: nothing open
    group = shown[fu.HEADERS["liaison_group"]]
    for g in list(dict.fromkeys(group)) if len(shown) else []:
        write_sheet(wb, str(g), masked.rows((group == g).to_numpy(dtype=bool)), wrap=wrap)
    if closed is not None:
        done = fu.display(closed, fu.CLOSED_HEADERS)
        write_sheet(wb, CLOSED_SHEET, done, wrap={fu.CLOSED_HEADERS[c] for c in ("content", "fix_action")})  # fmt: skip
    save_workbook(wb, xlsx)
    csv = report_dir / f"跟进清单_{as_of.isoformat()}.csv"
    write_csv(masked, csv)
    return xlsx, csv


_QUALITY_HEADERS = {
    "form": "表单", "instance_id": "记录编号", "repeat_index": "条目序号", "village": "村",
    "village_code": "村代码", "check_label": "检查项", "field": "字段", "reason": "原因",
}  # fmt: skip


@gc_paused
def write_quality_sheets(
    checks: Checks, data: Inputs, report_dir: Path, as_of: date
) -> tuple[Path, Path]:
    titles = {fid: f.schema.title or fid for fid, f in data.forms.items()}
    names = {v.code: v.name for v in data.villages}
    table = checks.table.copy()
    table["form"] = table["form_id"].map(lambda f: titles.get(f, f))
    table["village"] = table["village_code"].map(lambda c: names.get(c, c), na_action="ignore")
    table["check_label"] = table["check"].map(CHECKS)
    shown = table[list(_QUALITY_HEADERS)].rename(columns=_QUALITY_HEADERS)
    held = data.quarantine
    xlsx = report_dir / f"数据质量_{as_of.isoformat()}.xlsx"
    wb = new_workbook()
    summary = checks.summary()
    summary = pd.DataFrame(
        {
            "表单": summary["form_id"].map(lambda f: titles.get(f, f)),
            "检查项": summary["check_label"],
            "问题条数": summary["rows"].astype(int),
        }
    )
    if len(held):  # records that could not be read count first: they are not in any figure
        counts = held.groupby("form", sort=True).size()
        summary = pd.concat([pd.DataFrame({"表单": counts.index, "检查项": QUARANTINE_LABEL,
                                           "问题条数": counts.to_numpy(dtype=int)}), summary],
                            ignore_index=True)  # fmt: skip
    if summary.empty:
        summary = pd.DataFrame({"表单": ["全部表单"], "检查项": ["—"], "问题条数": [0]})
    write_sheet(wb, "汇总", summary)
    if len(held):
        write_sheet(wb, QUARANTINE, _quarantine_sheet(held), wrap={"原因"})
    masked = shown_frame(shown)  # each text masked once, for the workbook and the CSV
    forms = table["form_id"].to_numpy()
    for form_id in sorted(table["form_id"].unique()):
        write_sheet(wb, titles.get(form_id, form_id), masked.rows(forms == form_id), wrap={"原因"})
    if len(held):  # the CSV is one table: the quarantined records as rows of their own check
        rows = pd.DataFrame({"表单": held["form"], "记录编号": held["key"], "检查项": QUARANTINE_LABEL,
                             "原因": held["source"].map(lambda s: f"[{s}] " if s else "") + held["reason"]})  # fmt: skip
        masked = shown_frame(rows.reindex(columns=shown.columns)).above(masked)
    save_workbook(wb, xlsx)
    csv = report_dir / f"数据质量_{as_of.isoformat()}.csv"
    write_csv(masked, csv)
    return xlsx, csv


def _quarantine_sheet(held: pd.DataFrame) -> pd.DataFrame:
    sheet = pd.DataFrame({"表单": held["form"], "来源": held["source"], "记录编号": held["key"],
                          "原因": held["reason"]})  # fmt: skip
    if held["tries"].notna().any():
        sheet["尝试次数"] = held["tries"]
    if held["last_seen"].notna().any():
        sheet["最后一次读取（北京时间）"] = held["last_seen"]
    return sheet
