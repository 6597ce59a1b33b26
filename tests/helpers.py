"""Helpers shared by tests (plain functions, not fixtures)."""

from __future__ import annotations

import csv
from pathlib import Path

from pyxform.xls2json_backends import md_table_to_workbook

REPO = Path(__file__).resolve().parent.parent
VILLAGES = REPO / "geo" / "villages.csv"
DATA = REPO / "tests" / "data"
CENTRAL_FIXTURES = DATA / "central"  # recorded ODK Central exchanges (see its README)
KOBO_FIXTURES = DATA / "kobo"  # kpi API v2 reference exchanges (see its README)


def village_rows_md() -> str:
    """The register's `village` choice rows, as markdown XLSForm rows."""
    with VILLAGES.open(encoding="utf-8") as f:
        return "\n".join(
            f"| | village | {r['code']} | {r['name']} | {r['pinyin']} |" for r in csv.DictReader(f)
        )


def write_md_form(md: str, path: Path) -> Path:
    """Save a markdown XLSForm (pyxform's test format) as a real .xlsx."""
    path.parent.mkdir(parents=True, exist_ok=True)
    md_table_to_workbook(md).save(path)
    return path
