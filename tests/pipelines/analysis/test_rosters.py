"""Rosters: loading, validation errors listing rows, demo rosters, pick lists."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

from geo.villages import load_villages
from pipelines.analysis.rosters import (
    demo_rosters,
    id_check_digit,
    load_roster,
    load_rosters,
    pick_lists,
    valid_id_number,
    write_rosters,
)  # fmt: skip
from pipelines.errors import DataError
from tests.helpers import REPO

CODES = [v.code for v in load_villages()]


def test_gb11643_check_digit() -> None:
    # the standard's worked example
    assert id_check_digit("11010519491231002") == "X"
    assert valid_id_number("11010519491231002X")
    assert valid_id_number("11010519491231002x")
    assert not valid_id_number("110105194912310021")
    assert not valid_id_number("1101051949123100")


def test_errors_list_every_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "welfare_posts.csv"
    path.write_text(
        "name,label,village,post_type,id_number\n"
        "wp1,示例1,370481115200,cleaning,11010519491231002X\n"
        "wp2,示例2,999999999999,cleaning,\n"
        "wp1,示例3,370481115200,patrol,110105194912310021\n",
        encoding="utf-8-sig",
    )
    with pytest.raises(DataError) as e:
        load_roster(path, "welfare_posts", CODES)
    msg = str(e.value)
    assert str(path) in msg
    assert "rows 2, 4: duplicate ID(s) wp1" in msg
    assert "rows 3: unknown village code(s) 999999999999 in column 'village'" in msg
    assert "rows 4: column 'id_number' is not a valid 18-digit ID number" in msg


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "dibao_households.csv"
    path.write_text("name,label,village\ndb1,x,370481115200\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column\\(s\\) members"):
        load_roster(path, "dibao_households", CODES)


def test_demo_rosters_are_deterministic_fake_and_match_the_plan(tmp_path: Path) -> None:
    a, b = demo_rosters(CODES, seed=1), demo_rosters(CODES, seed=1)
    pdt.assert_frame_equal(a.dibao_members, b.dibao_members)
    assert len(a.welfare_posts) == 640
    assert len(a.dibao_households) == 858 and a.dibao_households["members"].sum() == 1518
    assert a.students["label"].str.startswith("示例学生").all()
    assert a.welfare_posts["id_number"].map(valid_id_number).all()
    # written and read back, the loader accepts them (members checked against households)
    write_rosters(a, tmp_path)
    back = load_rosters(tmp_path, CODES)
    pdt.assert_frame_equal(back.residents, a.residents)


def test_member_count_mismatch_is_reported(tmp_path: Path) -> None:
    r = demo_rosters(CODES[:3], sizes={"students_per_village": 1, "residents_per_village": 1,
                                       "welfare_posts": 3, "dibao_households": 3, "dibao_people": 4})  # fmt: skip
    write_rosters(r, tmp_path)
    members = pd.read_csv(tmp_path / "dibao_members.csv", dtype=str, encoding="utf-8-sig")
    members.iloc[1:].to_csv(tmp_path / "dibao_members.csv", index=False, encoding="utf-8-sig")
    with pytest.raises(DataError, match="dibao_households rows 2: 'members' differs"):
        load_rosters(tmp_path, CODES)


def test_pick_lists_have_the_forms_columns_and_no_personal_data() -> None:
    lists = pick_lists(demo_rosters(CODES))
    for name, frame in lists.items():
        shipped = pd.read_csv(REPO / "forms" / "rosters" / name, dtype=str, nrows=1)
        assert list(frame.columns) == list(shipped.columns), name
        assert not {"person_name", "id_number", "phone"} & set(frame.columns)
    assert lists["classes.csv"]["school"].isin(lists["schools.csv"]["name"]).all()


def test_rosters_saved_in_gbk_read_the_same(tmp_path: Path) -> None:
    """Excel and WPS on Chinese Windows save CSV in GBK: read it, not refuse it."""
    rosters = demo_rosters(CODES, seed=2)
    for path in write_rosters(rosters, tmp_path):
        path.write_bytes(path.read_text(encoding="utf-8-sig").encode("gbk"))
    back = load_rosters(tmp_path, CODES)
    pdt.assert_frame_equal(back.students, rosters.students)


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        ("students.xlsx", b"PK\x03\x04 not a workbook", "not a readable Excel workbook"),
        ("students.xlsx", b"name,label\n", "not a readable Excel workbook"),
        ("students.csv", "name,label\n".encode("utf-16"), "UTF-16"),
        ("students.csv", b"name,label\n\x80\xff\xfe\x81", "neither UTF-8 nor GBK"),
        ("students.csv", None, "is a folder"),
    ],
)
def test_a_roster_that_cannot_be_read_is_one_line_naming_it(
    tmp_path: Path, name: str, body: bytes | None, says: str
) -> None:
    path = tmp_path / name
    if body is None:
        path.mkdir()
    else:
        path.write_bytes(body)
    with pytest.raises(DataError) as e:
        load_roster(path, "students", CODES)
    assert str(e.value).startswith(f"{path}: ") and says in str(e.value)
    assert "\n" not in str(e.value)
