"""The report's workbooks as a manager opens them (read back with openpyxl from the files the
processing step wrote): every sheet's header styled, frozen and printed on every page, long
texts wrapped, dates and percentages formatted, and the dispatch report's native chart."""

from __future__ import annotations

from datetime import datetime

from openpyxl import load_workbook

from tests.pipelines.reports._town import AS_OF, Run

WORKBOOKS = ("followups_xlsx", "quality_xlsx", "dispatch_public_xlsx", "dispatch_internal_xlsx")


def test_every_sheet_has_its_header_styled_frozen_and_printed_on_every_page(run: Run) -> None:
    for key in WORKBOOKS:
        wb = load_workbook(run.file(key))
        for ws in wb.worksheets:
            head = ws[1]
            assert all(isinstance(c.value, str) and c.value for c in head), (key, ws.title)
            assert all(c.font.b and c.fill.fgColor.rgb.endswith("DDEBF7") for c in head), (key, ws.title)  # fmt: skip
            assert ws.freeze_panes == "A2" and ws.print_title_rows == "$1:$1", (key, ws.title)
            widths = {d.min: d.width for d in ws.column_dimensions.values() if d.width}
            assert set(widths) and all(6 <= w <= 60 for w in widths.values()), (key, ws.title)


def test_long_texts_wrap_and_the_rest_do_not(run: Run) -> None:
    ws = load_workbook(run.file("followups_xlsx"))["第1组"]
    header = [c.value for c in ws[1]]
    wrapped = {h for h in header if ws.cell(2, header.index(h) + 1).alignment.wrap_text}
    assert {"内容"} <= wrapped <= {"内容", "最近反馈情况"}  # the note wraps where there is one
    content = ws.cell(2, header.index("内容") + 1)
    assert content.alignment.vertical == "top"
    quality = load_workbook(run.file("quality_xlsx"))["家访记录"]
    header = [c.value for c in quality[1]]
    assert [h for h in header if quality.cell(2, header.index(h) + 1).alignment.wrap_text] == ["原因"]  # fmt: skip


def test_dispatch_report_has_dates_percentages_and_its_chart(run: Run) -> None:
    wb = load_workbook(run.file("dispatch_internal_xlsx"))
    overview = {r[0]: r[1] for r in wb["概况"].iter_rows(min_row=2, values_only=True)}
    assert overview["统计截止日"] == datetime(AS_OF.year, AS_OF.month, AS_OF.day)
    assert wb["概况"]["B3"].number_format == "yyyy-mm-dd"
    counts = [
        c
        for (label, c) in wb["概况"].iter_rows(min_row=2, max_col=2)
        if label.value == "有目标的指标数"
    ]
    assert counts and all(
        isinstance(c.value, int) and c.number_format == "General" for c in counts
    )  # a count, not a date
    ws = wb["指标进度"]
    header = [c.value for c in ws[1]]
    assert header[:6] == ["领域", "指标", "当前值", "目标", "时序进度要求", "完成度"]
    done = [ws.cell(r, 6) for r in range(2, ws.max_row + 1) if ws.cell(r, 6).value is not None]
    assert done and all(c.data_type == "n" and c.number_format == "0%" for c in done)
    deadlines = [ws.cell(r, 8) for r in range(2, ws.max_row + 1) if ws.cell(r, 8).value]
    assert deadlines and all(isinstance(c.value, datetime) and c.number_format == "yyyy-mm-dd" for c in deadlines)  # fmt: skip
    # a native bar chart of 完成度 against the indicators' names, beside the table
    [chart] = ws._charts
    assert (chart.tagname, chart.type) == ("barChart", "bar")
    assert (chart.anchor._from.col, chart.anchor._from.row) == (11, 1)  # L2
    [series] = chart.series
    last = ws.max_row
    assert series.val.numRef.f == f"指标进度!$F$2:$F${last}"
    assert (series.cat.strRef or series.cat.numRef).f == f"指标进度!$B$2:$B${last}"
    assert series.tx.strRef.f == "指标进度!$F$1"  # named by its column
    assert "".join(r.t for p in chart.title.tx.rich.p for r in p.r) == "各项指标完成度（占目标）"
    assert chart.y_axis.number_format == "0%" or chart.y_axis.numFmt.formatCode == "0%"
    assert chart.y_axis.scaling.min == 0 and chart.legend is None
