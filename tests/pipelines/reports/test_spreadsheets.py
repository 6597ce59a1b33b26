"""The XLSX and CSV writers every output goes through."""

from __future__ import annotations

import pandas as pd
from openpyxl import load_workbook

from tests.pipelines.reports._town import FORMULA, Run


def test_spreadsheet_formulas_stay_text(run: Run) -> None:
    cell = next(c for c in load_workbook(run.file("followups_xlsx"))["第2组"]["K"] if c.value == FORMULA)  # fmt: skip
    assert cell.data_type == "s"  # text, so Excel never runs it
    csv = pd.read_csv(run.file("followups_csv"), encoding="utf-8-sig", dtype=str)
    assert "'" + FORMULA in csv["内容"].tolist()
