"""The XLSX writer every workbook of the reports goes through (xlsxwriter), read back with
openpyxl as a reader of the file would see it: texts stay texts, dates are dates, every text
is masked, the header is styled, frozen and printed on every page, long lists go on."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from pipelines.reports import spreadsheets
from pipelines.reports.spreadsheets import (
    new_workbook,
    save_workbook,
    shown_frame,
    shown_text,
    write_csv,
    write_sheet,
)
from tests.helpers import REPO
from tests.pipelines.reports._town import FORMULA, LI_PHONE, ZHANG_ID

ID_SHOWN = ZHANG_ID[:6] + "********" + ZHANG_ID[-4:]
PHONE_SHOWN = LI_PHONE[:3] + "****" + LI_PHONE[-4:]


def _book(tmp_path: Path, sheets: dict[str, tuple[pd.DataFrame, dict]]) -> Path:
    book = new_workbook()
    for title, (frame, options) in sheets.items():
        write_sheet(book, title, frame, **options)
    path = tmp_path / "book.xlsx"
    save_workbook(book, path)
    return path


def _rows(ws) -> list[tuple]:
    return list(ws.iter_rows(values_only=True))


def test_texts_stay_texts_whatever_they_look_like(tmp_path: Path) -> None:
    typed = [FORMULA, "=1+1", "+86 走访", "-5", "@所有人", "0012", "1e5", "http://example.com/a", "TRUE"]  # fmt: skip
    path = _book(tmp_path, {"记录": (pd.DataFrame({"内容": typed}), {})})
    ws = load_workbook(path)["记录"]
    cells = [c for (c,) in ws.iter_rows(min_row=2)]
    assert [c.value for c in cells] == typed  # "0012" keeps its zeros, "1e5" is no number
    assert all(c.data_type == "s" for c in cells)  # no formula, number or true/false among them
    assert all(c.hyperlink is None for c in cells)  # and the address is not made a link


def test_every_text_is_masked_and_cleaned_in_every_column_and_title(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "备注": pd.Series(
                [f"户主身份证 {ZHANG_ID}", f"电话{LI_PHONE}", "a\x00b\x07c", "坏\ud800字"],
                dtype=object,
            ),
            "名单编号": [ZHANG_ID, None, LI_PHONE, "R-1"],  # any column: not only the known ones
        }
    )
    path = _book(tmp_path, {f"联系人{LI_PHONE}": (frame, {})})
    wb = load_workbook(path)
    # the title masked too (Excel allows no * in a title: the masked digits show as _)
    assert wb.sheetnames == [f"联系人{LI_PHONE[:3]}____{LI_PHONE[-4:]}"]
    assert _rows(wb.worksheets[0])[1:] == [
        (f"户主身份证 {ID_SHOWN}", ID_SHOWN),
        (f"电话{PHONE_SHOWN}", None),
        ("abc", PHONE_SHOWN),  # control characters dropped: no XLSX can hold them
        ("坏\ufffd字", "R-1"),  # a lone surrogate shown as the replacement character
    ]


def test_each_distinct_text_is_masked_once(tmp_path: Path) -> None:
    frame = pd.DataFrame({"村": ["龙阳", "闫庄"] * 5000, "状态": ["待整改"] * 10000})
    shown_text.cache_clear()
    shown = shown_frame(frame)
    book = new_workbook()
    write_sheet(book, "清单", shown)
    write_csv(shown, tmp_path / "清单.csv")
    info = shown_text.cache_info()
    # three distinct texts and the title: the masker is asked five times at most, not 20,000
    assert info.hits + info.misses <= 5, info


def test_header_is_bold_filled_frozen_and_printed_on_every_page(tmp_path: Path) -> None:
    frame = pd.DataFrame({"村": ["龙阳"], "内容": ["垃圾堆" * 40], "村代码": ["370481115001"]})
    path = _book(tmp_path, {"清单": (frame, {"wrap": {"内容"}})})
    ws = load_workbook(path)["清单"]
    assert [c.value for c in ws[1]] == ["村", "内容", "村代码"]
    assert all(c.font.b and c.fill.fgColor.rgb.endswith("DDEBF7") for c in ws[1])
    assert not ws["A2"].font.b and ws["A2"].fill.fill_type is None
    assert ws.freeze_panes == "A2" and ws.print_title_rows == "$1:$1"
    # long text wraps, top-aligned; short columns do not wrap
    assert ws["B2"].alignment.wrap_text and ws["B2"].alignment.vertical == "top"
    assert not ws["A2"].alignment.wrap_text and not ws["B1"].alignment.wrap_text
    # widths in characters: a CJK character counts two; 6 at least, 60 at most
    width = {d.min: d.width for d in ws.column_dimensions.values()}
    assert width == {1: 6, 2: 60, 3: 14}


def test_dates_times_numbers_and_percentages_keep_their_types(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "日期": pd.to_datetime(["2023-06-20", None]),
            "时间": pd.to_datetime(["2023-06-20 10:30", "2023-06-21 08:00"])
            .tz_localize("UTC")
            .tz_convert("Asia/Shanghai"),
            "完成度": [0.456, np.nan],
            "逾期天数": pd.array([3, None], dtype="Int64"),
            "已核实": [True, False],
            "截止日期": [date(2023, 9, 30), "暂无"],
        }
    )
    formats = {"完成度": "0%", "截止日期": "yyyy-mm-dd"}
    path = _book(tmp_path, {"进度": (frame, {"formats": formats})})
    ws = load_workbook(path)["进度"]
    assert _rows(ws)[1:] == [
        (
            datetime(2023, 6, 20),
            datetime(2023, 6, 20, 18, 30),
            0.456,
            3,
            True,
            datetime(2023, 9, 30),
        ),
        (None, datetime(2023, 6, 21, 16, 0), None, None, False, "暂无"),
    ]  # times as Beijing wall-clock; missing values are empty cells
    assert ws["A2"].number_format == "yyyy-mm-dd"  # a date at midnight shows as a date
    assert ws["B2"].number_format == "yyyy-mm-dd h:mm:ss"
    assert ws["C2"].number_format == "0%" and ws["C2"].data_type == "n"
    assert ws["F2"].number_format == "yyyy-mm-dd" and ws["F3"].data_type == "s"


def test_a_column_of_mixed_values_keeps_each_value_as_it_is(tmp_path: Path) -> None:
    frame = pd.DataFrame({"内容": pd.Series([1, 1.5, True, "1", None, ""], dtype=object)})
    ws = load_workbook(_book(tmp_path, {"杂": (frame, {})}))["杂"]
    cells = [c for (c,) in ws.iter_rows(min_row=2, max_row=5)]
    assert [(c.value, c.data_type) for c in cells] == [(1, "n"), (1.5, "n"), (True, "b"), ("1", "s")]  # fmt: skip
    assert ws.max_row == 5  # the missing and the empty text are no cells


def test_an_infinite_figure_shows_as_text_never_as_a_formula(tmp_path: Path) -> None:
    frame = pd.DataFrame({"增幅": [np.inf, 0.5, -np.inf], "金额": pd.Series([Decimal("1.5"), None, 2], dtype=object)})  # fmt: skip
    ws = load_workbook(_book(tmp_path, {"指标": (frame, {})}))["指标"]
    cells = [[(c.value, c.data_type) for c in row] for row in ws.iter_rows(min_row=2)]
    assert cells == [[("inf", "s"), (1.5, "n")], [(0.5, "n"), (None, "n")], [("-inf", "s"), (2, "n")]]  # fmt: skip


def test_sheet_titles_are_ones_excel_opens(tmp_path: Path) -> None:
    titles = ["公益性岗位[回头看]: 第1/2季度?", "Abc", "abc", "'引号'", "长" * 40, "长" * 40, ""]
    book = new_workbook()
    for title in titles:
        write_sheet(book, title, pd.DataFrame({"说明": []}))
    save_workbook(book, tmp_path / "book.xlsx")
    names = load_workbook(tmp_path / "book.xlsx").sheetnames
    assert names == ["公益性岗位_回头看__ 第1_2季度_", "Abc", "abc_2", "_引号_", "长" * 31,
                     "长" * 29 + "_2", "Sheet"]  # fmt: skip
    assert len({n.lower() for n in names}) == len(names)  # unique, whatever the case


def test_a_list_longer_than_a_sheet_goes_on_to_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(spreadsheets, "XLSX_MAX_ROWS", 4)  # Excel's 1,048,576, made small
    frame = pd.DataFrame({"序号": range(1, 11), "村": ["龙阳"] * 10})
    wb = load_workbook(_book(tmp_path, {"清单": (frame, {})}))
    assert wb.sheetnames == ["清单", "清单（2）", "清单（3）"]
    for ws in wb.worksheets:  # each part has the header, frozen
        assert [c.value for c in ws[1]] == ["序号", "村"] and ws.freeze_panes == "A2"
    assert [[r[0] for r in _rows(ws)[1:]] for ws in wb.worksheets] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]  # fmt: skip


def test_an_empty_list_is_its_header(tmp_path: Path) -> None:
    ws = load_workbook(_book(tmp_path, {"跟进清单": (pd.DataFrame(columns=["村", "内容"]), {})}))["跟进清单"]  # fmt: skip
    assert _rows(ws) == [("村", "内容")]


def test_csv_shows_the_same_texts_defused(tmp_path: Path) -> None:
    frame = pd.DataFrame({"内容": [FORMULA, f"电话{LI_PHONE}", None], "条目序号": pd.array([1, 2, None], dtype="Int64")})  # fmt: skip
    path = tmp_path / "清单.csv"
    write_csv(frame, path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    back = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert back.to_dict("list") == {"内容": ["'" + FORMULA, f"电话{PHONE_SHOWN}", ""], "条目序号": ["1", "2", ""]}  # fmt: skip


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import pandas as pd
from pipelines.errors import DataError
from pipelines.reports.spreadsheets import new_workbook, save_workbook, write_sheet
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # the disk takes 4 KB more, no more
book = new_workbook()
write_sheet(book, "清单", pd.DataFrame({"编号": [f"uuid:{i:08x}" for i in range(5000)]}))
try:
    save_workbook(book, Path(sys.argv[1]))
except DataError as e:
    print(e)
"""


def test_a_disk_that_fills_up_leaves_no_half_written_workbook(tmp_path: Path) -> None:
    target = tmp_path / "跟进清单.xlsx"
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(target)], capture_output=True,
                          text=True, cwd=REPO, check=True)  # fmt: skip
    assert done.stdout.startswith(f"{target}: cannot write the report: the file is larger than")
    assert not target.exists()  # the first 4 KB of a zip are no workbook: removed
