"""Issue 13: follow-up item ids (事项编号) are 16 letters, never a digit, so the masker has
nothing to take for a phone or an ID number: the lists show the id the portal uses. A
rectification sent with an item's legacy id (the same digest in hex, before the change) still
finds its item."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from forms.build import BuildReport
from pipelines.analysis.followups import CLOSED, OVERDUE, item_id_from_legacy, item_ids
from pipelines.privacy import scrub_text
from pipelines.server._portal_view import build_view
from pipelines.server.scopes import town_scope
from tests.pipelines.analysis.test_rectifications import (
    RECT,
    V1,
    V2,
    book,
    cleared,
    fixes,
    pile,
    sweep,
)
from tests.pipelines.reports._demo_scope import VS, demo_outputs

NEW_ID = re.compile(r"[abcdefghjkmnpqrs]{16}")
PILE_KEY = "sanitation_sweep|uuid:s1|1|人居环境问题"  # V1's garbage pile (see ``sweep``)


@pytest.fixture(scope="module")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


def legacy(key: str) -> str:
    """The id as it was before issue 13: the first 16 hex digits of the SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def test_the_id_is_the_old_digest_in_letters_and_only_a_legacy_id_converts() -> None:
    old = legacy(PILE_KEY)
    new = item_ids("sanitation_sweep", "uuid:s1", 1, "人居环境问题").iloc[0]
    assert NEW_ID.fullmatch(new) and item_id_from_legacy(old) == new
    for not_legacy in (new, None, 3, "", old.upper(), old[:15], old + "0", f" {old}"):
        assert item_id_from_legacy(not_legacy) is None, not_legacy
    # the id once masked in the lists, e.g. a phone-like run: nothing left to mask
    assert scrub_text("a880243906881752") != "a880243906881752"
    assert scrub_text(item_id_from_legacy("a880243906881752")) == "mjjacedkagjjbhfc"


def test_a_rectification_sent_with_the_legacy_id_closes_its_item(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    item = pile(book(forms))
    assert item["item_id"] != legacy(PILE_KEY)
    forms[RECT] = fixes(build, {"item_id": legacy(PILE_KEY), "village": V1, "done": "yes",
                                "fix_date": "2023-06-10", "action": "旧编号反馈"})  # fmt: skip
    after = book(forms)
    closed = pile(after)
    assert (closed["state"], closed["item_id"], closed["fix_action"]) == (
        CLOSED, item["item_id"], "旧编号反馈",
    )  # fmt: skip
    assert closed["closed_on"] == pd.Timestamp("2023-06-10")
    assert item["item_id"] not in set(after.open["item_id"])
    assert cleared(forms)["value"] == 1.0  # the indicator counts the fix too


def test_attempts_under_the_legacy_and_the_new_id_are_one_items(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    iid = pile(book(forms))["item_id"]
    forms[RECT] = fixes(
        build,
        {"item_id": legacy(PILE_KEY), "village": V1, "done": "no", "fix_date": "2023-06-10"},
        {"item_id": iid, "village": V1, "done": "no", "fix_date": "2023-06-12", "action": "再清"},
    )
    item = pile(book(forms))
    assert (item["state"], item["attempts"], item["last_attempt_note"]) == (OVERDUE, 2, "再清")
    # a legacy id still has to name the item's village
    forms[RECT] = fixes(build, {"item_id": legacy(PILE_KEY), "village": V2,
                                "done": "yes", "fix_date": "2023-06-10"})  # fmt: skip
    assert pile(book(forms))["state"] == OVERDUE


@pytest.fixture(scope="module")
def demo(build: Path, tmp_path_factory: pytest.TempPathFactory):
    return demo_outputs(build, tmp_path_factory.getbasetemp())


def test_no_item_id_of_the_demo_year_has_a_digit_and_the_lists_show_the_portals_ids(demo) -> None:  # fmt: skip
    _, out = demo
    ids = pd.concat([out.followups["item_id"], out.closed["item_id"]]).tolist()
    assert len(ids) > 1000 and len(set(ids)) == len(ids) and len(out.closed) > 0
    assert all(NEW_ID.fullmatch(i) for i in ids), [i for i in ids if not NEW_ID.fullmatch(i)][:5]
    # the hex ids of the same items: some were masked in the lists (the bug this test guards)
    olds = [i.translate(str.maketrans("abcdefghjkmnpqrs", "0123456789abcdef")) for i in ids]
    assert any(scrub_text(o) != o for o in olds)

    wb = load_workbook(out.files["followups_xlsx"], read_only=True)
    listed: dict[str, list[str]] = {}
    for ws in wb.worksheets:
        rows = ws.iter_rows(values_only=True)
        column = next(rows).index("事项编号")
        listed[ws.title] = [r[column] for r in rows]
    wb.close()
    closed_list = listed.pop("已整改")
    open_list = [i for sheet_ids in listed.values() for i in sheet_ids]
    csv = pd.read_csv(out.files["followups_csv"], encoding="utf-8-sig", dtype=str)

    view = build_view(out, town_scope(VS))  # what the portal's cards, links and form use
    assert sorted(open_list) == sorted(i.item_id for i in view.open_items)
    assert sorted(closed_list) == sorted(i.item_id for i in view.closed_items)
    assert sorted(csv["事项编号"]) == sorted(open_list)
    assert set(view.items) == set(ids)


def test_ids_are_stable_from_run_to_run() -> None:
    """The same inputs give the same id (the hex digest in letters), a float index as an int."""
    ids = item_ids(pd.Series(["home_visit", "fitness_square"]), pd.Series(["uuid:a", "uuid:b"]),
                   pd.Series([None, 2.0]), pd.Series(["家访跟进", "健身器材损坏/缺失"]))  # fmt: skip
    letters = str.maketrans("0123456789abcdef", "abcdefghjkmnpqrs")
    assert ids.tolist() == [
        legacy("home_visit|uuid:a||家访跟进").translate(letters),
        legacy("fitness_square|uuid:b|2|健身器材损坏/缺失").translate(letters),
    ]
