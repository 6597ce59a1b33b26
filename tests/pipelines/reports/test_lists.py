"""The follow-up lists and the data-quality sheets, read back from the files the processing step
wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from openpyxl import load_workbook

from forms.build import BuildReport
from forms.schema import load_schema
from geo.villages import load_villages
from pipelines.analysis.followups import follow_up_book
from pipelines.analysis.plan import load_plan
from pipelines.analysis.tidy import tidy
from pipelines.reports.lists import write_followup_lists
from tests.pipelines.reports._town import (
    AS_OF,
    FORMULA,
    LI_PHONE,
    V1,
    WANG_ID,
    XSS,
    ZHANG_ID,
    Run,
    sheet,
    texts,
    unmasked,
)


def test_follow_up_lists_open_items_by_group_sorted_by_deadline(run: Run) -> None:
    wb = load_workbook(run.file("followups_xlsx"))
    assert wb.sheetnames == ["第1组", "第2组", "已整改"]  # nothing closed yet: headers only
    assert wb["已整改"].max_row == 1
    ws = wb["第1组"]
    assert ws.freeze_panes == "A2"
    header = [c.value for c in ws[1]]
    assert header == ["帮包联系组", "村", "村代码", "事项类型", "领域", "责任部门", "名单编号", "对象",
                      "身份证号", "联系电话", "内容", "发现日期", "整改期限", "逾期天数", "状态",
                      "整改反馈次数", "最近反馈日期", "最近反馈情况", "来源表单", "记录编号",
                      "条目序号", "事项编号"]  # fmt: skip
    assert all(c.font.b for c in ws[1])
    rows = [dict(zip(header, (c.value for c in r), strict=True)) for r in ws.iter_rows(min_row=2)]
    # 龙阳: the finding (due 06-20, 10 days late), then the plan deadlines 09-30 and 10-31,
    # then the items without a deadline by the date found
    assert [(r["事项类型"], r["整改期限"], r["逾期天数"], r["状态"]) for r in rows] == [
        ("人居环境问题", "2023-06-20", 10, "已逾期"),
        ("公益性岗位整改", "2023-09-30", None, "待整改"),
        ("低保调整", "2023-10-31", None, "待整改"),
        ("查体转诊", None, None, "待整改"),
        ("家访跟进", None, None, "待整改"),
    ]  # fmt: skip
    first = rows[0]
    assert (first["村"], first["村代码"], first["记录编号"], first["条目序号"]) == (
        "龙阳",
        V1,
        "uuid:s1",
        1,
    )
    assert first["内容"] == f"垃圾堆；整改责任人：张*；巡查备注：{XSS} 已通知 138****5678"
    # no rectification yet; the item's id is the one the portal's 处理 button passes on
    assert [r["整改反馈次数"] for r in rows] == [0] * 5 and first["最近反馈日期"] is None
    assert [r["事项编号"] for r in rows] == run.result.followups["item_id"].tolist()[:5]
    welfare = rows[1]
    assert (welfare["对象"], welfare["身份证号"], welfare["联系电话"]) == (
        "张*", ZHANG_ID[:6] + "********" + ZHANG_ID[-4:], "138****5678",
    )  # fmt: skip
    assert (rows[2]["对象"], rows[2]["身份证号"]) == ("王*", WANG_ID[:6] + "********" + WANG_ID[-4:])  # household head  # fmt: skip
    assert rows[4]["内容"] == f"跟进事项：家长身份证号 {WANG_ID[:6]}********{WANG_ID[-4:]} 待核"
    # sensible widths: the content column is wider than the village-code column
    assert ws.column_dimensions["K"].width > ws.column_dimensions["C"].width >= 12
    group2 = [c.value for c in wb["第2组"]["K"]][1:]
    assert group2 == ["路灯不亮，联系 159****5670", FORMULA]

    raw = run.file("followups_csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel on Chinese Windows
    csv = pd.read_csv(run.file("followups_csv"), encoding="utf-8-sig", dtype=str)
    assert list(csv.columns) == header and len(csv) == 7
    assert csv["整改期限"].iloc[0] == "2023-06-20"


def test_closed_items_get_their_own_sheet_and_attempts_show_on_open_ones(
    built_forms: BuildReport, tmp_path: Path
) -> None:
    build, villages = built_forms.out_dir, load_villages()
    v1, v2 = villages[0].code, villages[1].code

    def record(form_id: str, iid: str, data: dict) -> dict:
        return {"form_id": form_id, "instance_id": iid, "form_version": "1",
                "submitted_at": "2023-06-01T02:00:00Z", "data": data}  # fmt: skip

    def sweep(iid: str, village: str) -> dict:
        return record("sanitation_sweep", iid, {
            "basic": {"village": village, "check_date": "2023-05-10", "has_findings": "yes"},
            "findings": [{"kind": "garbage_pile", "status": "to_rectify", "rectify_by": "2023-05-20"}],
        })  # fmt: skip

    forms = {"sanitation_sweep": tidy([sweep("uuid:a", v1), sweep("uuid:b", v2)],
                                      load_schema(build, "sanitation_sweep"))}  # fmt: skip
    plan = load_plan()
    ids = follow_up_book(forms, as_of=AS_OF, year=2023, plan=plan, villages=villages).open
    ids = dict(zip(ids["instance_id"], ids["item_id"], strict=True))

    def fix(iid: str, item: str, village: str, done: str, day: str, action: str) -> dict:
        return record("rectification", iid, {"username": "cadre1", "rectify": {
            "item_id": item, "village": village, "action": action, "done": done,
            "photo": "1.jpg", "fix_date": day}})  # fmt: skip

    forms["rectification"] = tidy(
        [fix("uuid:r1", ids["uuid:a"], v1, "yes", "2023-06-10", FORMULA),
         fix("uuid:r2", ids["uuid:b"], v2, "no", "2023-06-12", f"户主不在，电话 {LI_PHONE}")],
        load_schema(build, "rectification"),
    )  # fmt: skip
    book = follow_up_book(forms, as_of=AS_OF, year=2023, plan=plan, villages=villages)
    xlsx, csv = write_followup_lists(book.open, tmp_path, AS_OF, closed=book.closed)

    wb = load_workbook(xlsx)
    assert wb.sheetnames == ["第1组", "已整改"]
    [still] = sheet(xlsx, "第1组")
    assert (still["村"], still["整改反馈次数"], still["最近反馈日期"], still["最近反馈情况"]) == (
        villages[1].name, 1, "2023-06-12", "户主不在，电话 137****5670",
    )  # fmt: skip
    [done] = sheet(xlsx, "已整改")
    assert (done["村"], done["内容"], done["发现日期"], done["整改期限"]) == (
        villages[0].name, "垃圾堆", "2023-05-10", "2023-05-20",
    )  # fmt: skip
    assert (done["整改完成日期"], done["整改人"], done["事项编号"], done["整改反馈记录编号"]) == (
        "2023-06-10", "cadre1", ids["uuid:a"], "uuid:r1",
    )  # fmt: skip
    # what was done is shown as typed, as text: never a formula that runs
    cell = next(c for c in wb["已整改"][2] if c.value == FORMULA)
    assert cell.data_type == "s" and wb["已整改"].cell(1, cell.column).value == "整改措施"
    shown = pd.read_csv(csv, encoding="utf-8-sig", dtype=str)  # the CSV: open items only
    assert shown["记录编号"].tolist() == ["uuid:b"] and shown["整改反馈次数"].tolist() == ["1"]


def test_quality_sheet_per_form(run: Run) -> None:
    wb = load_workbook(run.file("quality_xlsx"))
    assert wb.sheetnames[0] == "汇总"
    # the home visit of 07-05 is after the as-of date
    rows = sheet(run.file("quality_xlsx"), "家访记录")
    assert [(r["记录编号"], r["检查项"]) for r in rows] == [("uuid:h4", "日期晚于统计截止日")]
    assert wb["家访记录"].freeze_panes == "A2"
    # the finding past its rectify-by date
    sweep = sheet(run.file("quality_xlsx"), "人居环境整治巡查")
    assert [(r["记录编号"], r["条目序号"], r["检查项"]) for r in sweep] == [
        ("uuid:s1", 1, "逾期未整改")
    ]
    assert run.file("quality_csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_quality_reasons_never_quote_a_typed_phone(run: Run) -> None:
    # the resent show's title holds a phone typed with a +86 prefix and hyphens
    rows = sheet(run.file("quality_xlsx"), "文化下乡活动登记")
    dup = [r for r in rows if r["检查项"] == "疑似重复"]
    assert [r["记录编号"] for r in dup] == ["uuid:c1", "uuid:c4"]
    assert "柳琴戏专场（联系人 +86 137****5670）" in dup[0]["原因"]
    for path in (run.file("quality_xlsx"), run.file("quality_csv")):
        text = texts(path)
        assert "137-1234-5670" not in text and LI_PHONE not in text
        assert unmasked(text) == [], path
