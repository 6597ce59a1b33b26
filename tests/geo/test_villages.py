from __future__ import annotations

import csv
from pathlib import Path

import pytest

from geo.villages import load_villages
from pipelines.errors import DataError
from tests.helpers import REPO

PUBLISHED = REPO / "tests" / "data" / "register" / "longyang_villages_2023.csv"


def test_register_has_the_56_villages() -> None:
    villages = load_villages()
    assert len(villages) == 56
    assert len({v.code for v in villages}) == 56
    assert villages[0].name == "龙阳" and villages[0].name_full == "龙阳村委会"
    assert all(v.code.startswith("370481115") for v in villages)
    assert sorted({v.liaison_group for v in villages}) == list(range(1, 10))
    assert all(v.name_full == v.name + "村委会" for v in villages)


def test_register_matches_the_published_codes() -> None:
    with PUBLISHED.open(encoding="utf-8") as f:
        published = {r["code"]: r["name"] for r in csv.DictReader(f)}
    assert {v.code: v.name_full for v in load_villages()} == published


def _write(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "v.csv"
    p.write_text(
        "code,name,name_full,pinyin,liaison_group\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    return p


def test_bad_register_lists_every_problem_with_its_row(tmp_path: Path) -> None:
    p = _write(tmp_path, [
        "370481115200,龙阳,龙阳村委会,Longyang,1",
        "37048111520,短码,短码村委会,Duanma,1",
        "370481115200,重复,重复村委会,Chongfu,2",
        "370481115201,闫庄,闫庄村委会,Yanzhuang,10",
    ])  # fmt: skip
    with pytest.raises(DataError) as e:
        load_villages(p)
    msg = str(e.value)
    assert "row 3: code '37048111520' is not a 12-digit" in msg
    assert "row 4: code 370481115200 repeats row 2" in msg
    assert "row 5: liaison_group '10'" in msg


def test_missing_register_and_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_villages(tmp_path / "none.csv")
    (tmp_path / "x.csv").write_text("code,name\n1,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column"):
        load_villages(tmp_path / "x.csv")
