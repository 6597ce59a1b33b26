"""The follow-up lists and the data-quality sheets, read back from the files the processing step
wrote."""

from __future__ import annotations

import pandas as pd
from openpyxl import load_workbook

from tests.pipelines.reports._town import (
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
    assert wb.sheetnames == ["第1组", "第2组"]
    ws = wb["第1组"]
    assert ws.freeze_panes == "A2"
    header = [c.value for c in ws[1]]
    assert header == ["帮包联系组", "村", "村代码", "事项类型", "领域", "责任部门", "名单编号", "对象",
                      "身份证号", "联系电话", "内容", "发现日期", "整改期限", "逾期天数", "状态",
                      "来源表单", "记录编号", "条目序号"]  # fmt: skip
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
