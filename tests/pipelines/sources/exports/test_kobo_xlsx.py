"""Pulling a KoboToolbox XLSX export, by XML names or by labels, and the same records as the
Central export gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from pipelines.config import load_settings
from pipelines.errors import DataError
from pipelines.store import open_store
from pipelines.sync import pull
from tests.pipelines.sources.exports.test_central_csv import DATA, A, D, settings

KOBO_XLSX = DATA / "kobo_sanitation_sweep.xlsx"


def _comparable(data: dict) -> dict:
    meta = {k: v for k, v in data["meta"].items() if k == "instanceID"}
    return dict(data, meta=meta)


def test_kobo_xlsx_export_gives_the_same_records_as_the_central_export(tmp_path: Path) -> None:
    s = settings(tmp_path)
    report = pull(s, "files", None, KOBO_XLSX)  # the form is found by the sheet's title
    assert [f.form_id for f in report.forms] == ["sanitation_sweep"]
    assert (report.new, report.quarantined) == (6, 0)
    central = settings(tmp_path / "central")
    pull(central, "files", None, DATA / "sanitation_sweep.csv.zip")
    with open_store(s) as store, open_store(central) as other:
        kobo = {r.instance_id: r for r in store.records("sanitation_sweep")}
        expected = {r.instance_id: r for r in other.records("sanitation_sweep")}
    assert set(kobo) == set(expected)
    for iid, rec in kobo.items():
        assert _comparable(rec.data) == _comparable(expected[iid].data), iid
        assert rec.review_state == expected[iid].review_state
    assert kobo[A].data["piles"] == [
        {"pile_type": "firewood", "photo": "1764374400001.jpg"},
        {"pile_type": "manure", "photo": None},
    ]
    assert kobo[A].submitted_at == "2026-11-29T00:19:28.000Z"
    again = pull(s, "files", None, KOBO_XLSX)
    assert (again.new, again.updated) == (0, 0)


def test_kobo_xlsx_with_label_headers_reads_the_same(tmp_path: Path) -> None:
    by_name = settings(tmp_path / "names")
    by_label = settings(tmp_path / "labels")
    pull(by_name, "files", None, KOBO_XLSX)
    report = pull(
        by_label, "files", ["sanitation_sweep"], DATA / "kobo_sanitation_sweep_labels.xlsx"
    )
    assert report.new == 6
    with open_store(by_name) as a, open_store(by_label) as b:
        assert [r.data for r in a.records()] == [r.data for r in b.records()]
        (rec,) = [r for r in b.records() if r.instance_id == D]
    assert rec.data["village"] == "370481115200" and rec.data["piles"][0]["pile_type"] == "manure"


def test_kobo_xlsx_without_the_built_form(tmp_path: Path) -> None:
    s = load_settings({"data_dir": tmp_path / "data", "build_dir": tmp_path / "none"}, env={})
    with pytest.raises(DataError, match="--form <form_id>"):
        pull(s, "files", None, KOBO_XLSX)
    report = pull(s, "files", ["sanitation_sweep"], KOBO_XLSX)
    assert report.new == 6
    with open_store(s) as store:
        rec = next(r for r in store.records() if r.instance_id == A)
    # XML headers carry the structure on their own
    assert rec.data["piles"][0] == {"pile_type": "firewood", "photo": "1764374400001.jpg"}


def test_kobo_xlsx_bad_rows_are_quarantined_with_their_place(tmp_path: Path) -> None:
    book = load_workbook(KOBO_XLSX)
    root, piles = book.worksheets
    header = [c.value for c in root[1]]
    root.cell(row=3, column=header.index("_uuid") + 1).value = None  # B lost its _uuid
    pile_header = [c.value for c in piles[1]]
    piles.cell(row=2, column=pile_header.index("_parent_index") + 1).value = 99
    path = tmp_path / "edited.xlsx"
    book.save(path)
    s = settings(tmp_path)
    report = pull(s, "files", None, path)
    # B, A's pile row pointing nowhere, and B's own pile row (kept, not dropped with B)
    assert (report.new, report.quarantined) == (5, 3)
    with open_store(s) as store:
        reasons = sorted(q.reason for q in store.quarantined())
        a = next(r for r in store.records() if r.instance_id == A)
    assert "sheet 'piles' row 2: parent row 99 of sheet" in reasons[0]
    assert "sheet 'piles' row 4: parent row 2 of sheet" in reasons[1]
    assert "sheet '环境卫生巡查 (Sanitation sweep)' row 3: no _uuid" in reasons[2]
    assert a.data["piles"] == [{"pile_type": "manure", "photo": None}]  # the other row kept


def test_a_workbook_that_is_not_a_kobo_export(tmp_path: Path) -> None:
    path = tmp_path / "plain.xlsx"
    book = Workbook()
    book.active.title = "sanitation_sweep"
    book.active.append(["village", "note"])
    book.active.append(["370481115200", "x"])
    book.save(path)
    with pytest.raises(DataError, match="not a KoboToolbox XLS export"):
        pull(settings(tmp_path), "files", None, path)
