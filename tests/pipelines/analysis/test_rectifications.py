"""Closing follow-up items with the rectification form (整改反馈): item ids, the latest
rectification deciding, the closed list, and the sanitation clearance rate counting a fix."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from geo.villages import Village, load_villages
from pipelines.analysis.followups import (
    CLOSED,
    CLOSED_COLUMNS,
    OPEN_COLUMNS,
    OVERDUE,
    follow_up_book,
    follow_ups,
)
from pipelines.analysis.indicators import DONE, LAGGING, compute_progress
from pipelines.analysis.plan import load_plan
from pipelines.analysis.tidy import TidyForm, tidy

VS: list[Village] = load_villages()[:3]
V1, V2, V3 = (v.code for v in VS)
PLAN = load_plan()
AS_OF = date(2023, 6, 30)
CLEARED = "sanitation_findings_cleared"
RECT = "rectification"


@pytest.fixture(scope="module")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


def records(form_id: str, rows: list[tuple[str, str, dict]]) -> list[dict]:
    """(instance_id, submitted at, data) -> canonical records."""
    return [
        {"form_id": form_id, "instance_id": iid, "form_version": "1", "submitted_at": at,
         "data": data} for iid, at, data in rows
    ]  # fmt: skip


def sweep(build: Path) -> TidyForm:
    """One sweep of V1 on 05-10: a garbage pile to fix by 05-20 (overdue on 06-30), and weeds
    cleared on the spot; and a sweep of V2 with a pile due 07-31 (still in time)."""

    def finding(kind: str, status: str, by: str | None = None) -> dict:
        return {"kind": kind, "status": status, "rectify_by": by, "responsible": "张三"}

    def data(village: str, findings: list[dict]) -> dict:
        return {"basic": {"village": village, "check_date": "2023-05-10", "quarter": "q2",
                          "has_findings": "yes"}, "findings": findings, "summary": {"score": 80}}  # fmt: skip

    rows = [
        (
            "uuid:s1",
            "2023-05-10T02:00:00Z",
            data(
                V1,
                [finding("garbage_pile", "to_rectify", "2023-05-20"), finding("weeds", "cleared")],
            ),
        ),
        (
            "uuid:s2",
            "2023-05-10T03:00:00Z",
            data(V2, [finding("straw_stack", "to_rectify", "2023-07-31")]),
        ),
    ]
    return tidy(records("sanitation_sweep", rows), load_schema(build, "sanitation_sweep"))


def lighting(build: Path) -> TidyForm:
    """A night inspection of 东朱路 with 2 of 10 lamps out and no fault entered: a town item."""
    data = {"road_info": {"road": "dongzhu_road", "inspect_date": "2023-06-01"},
            "lamps": {"lamps_installed": 10, "lamps_working": 8, "has_faults": "no"}}  # fmt: skip
    rows = [("uuid:l1", "2023-06-01T13:00:00Z", data)]
    return tidy(records("street_lighting", rows), load_schema(build, "street_lighting"))


def fixes(build: Path, *rows: dict) -> TidyForm:
    """Rectifications: each dict gives item_id, done, fix_date and optionally village, action,
    photo, username, at (submission time), review (review state)."""
    recs = []
    for n, r in enumerate(rows, start=1):
        data = {
            "username": r.get("username", "cadre1"),
            "rectify": {"item_id": r["item_id"], "village": r.get("village"), "finding": "垃圾堆",
                        "action": r.get("action", "已清运"), "done": r["done"],
                        "photo": r.get("photo"), "fix_date": r["fix_date"]},
        }  # fmt: skip
        recs.append({"form_id": "rectification", "instance_id": f"uuid:r{n}",
                     "form_version": "1", "submitted_at": r.get("at", f"2023-06-01T00:00:{n:02d}Z"),
                     "review_state": r.get("review"), "data": data})  # fmt: skip
    return tidy(recs, load_schema(build, "rectification"))


def book(forms: dict[str, TidyForm], as_of: date = AS_OF, **kw):
    return follow_up_book(forms, as_of=as_of, year=2023, plan=PLAN, villages=VS, **kw)


def cleared(forms: dict[str, TidyForm], as_of: date = AS_OF) -> pd.Series:
    p = compute_progress(PLAN, forms, as_of=as_of, year=2023, villages=VS, only=[CLEARED])
    return p.table.set_index(["level", "key"]).loc[("village", V1)]


def pile(b) -> pd.Series:
    """V1's garbage pile, wherever it is listed."""
    rows = pd.concat([b.open, b.closed])
    return rows[rows["instance_id"] == "uuid:s1"].iloc[0]


def letters(hex16: str) -> str:
    """The documented spelling: each hex digit as a letter of abcdefghjkmnpqrs."""
    return hex16.translate(str.maketrans("0123456789abcdef", "abcdefghjkmnpqrs"))


def test_item_ids_are_short_stable_unique_and_documented(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build), "street_lighting": lighting(build)}
    now, later = book(forms).open, book(forms, date(2023, 9, 30)).open
    assert len(now) == 3 and now["item_id"].is_unique
    assert all(re.fullmatch(r"[abcdefghjkmnpqrs]{16}", i) for i in now["item_id"])  # no digit
    assert dict(zip(now["instance_id"], now["item_id"], strict=True)) == dict(
        zip(later["instance_id"], later["item_id"], strict=True)
    )
    first = now[now["instance_id"] == "uuid:s1"].iloc[0]
    key = "sanitation_sweep|uuid:s1|1|人居环境问题"  # form_id|instance_id|repeat_index|kind
    assert first["item_id"] == letters(hashlib.sha256(key.encode()).hexdigest()[:16])
    lamp = now[now["form_id"] == "street_lighting"].iloc[0]  # a whole submission: no index
    assert lamp["item_id"] == letters(hashlib.sha256(b"street_lighting|uuid:l1||\xe8\xb7\xaf\xe7\x81\xaf\xe6\x95\x85\xe9\x9a\x9c").hexdigest()[:16])  # fmt: skip
    # follow_ups, as before, is the open list
    pd.testing.assert_frame_equal(follow_ups(forms, as_of=AS_OF, year=2023, plan=PLAN, villages=VS), now)  # fmt: skip
    assert list(now.columns) == list(OPEN_COLUMNS)
    assert now["attempts"].tolist() == [0, 0, 0] and now["last_attempt_on"].isna().all()


def test_a_done_rectification_closes_the_finding_and_counts_it_cleared(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    before = book(forms)
    item = pile(before)
    assert item["state"] == OVERDUE
    # past its rectify-by date: not done (1 of 2 findings of V1)
    assert (cleared(forms)["value"], cleared(forms)["status"]) == (0.5, LAGGING)

    forms[RECT] = fixes(build, {"item_id": item["item_id"], "village": V1, "done": "yes",
                                "fix_date": "2023-06-10", "photo": "1686362400000.jpg",
                                "action": "已清运，联系 13812345678 =HYPERLINK(\"x\")"})  # fmt: skip
    after = book(forms)
    assert item["item_id"] not in set(after.open["item_id"])
    assert list(after.closed.columns) == list(CLOSED_COLUMNS)
    [closed] = after.closed.to_dict("records")
    assert (closed["item_id"], closed["instance_id"], closed["content"], closed["state"]) == (
        item["item_id"], "uuid:s1", item["content"], CLOSED,
    )  # fmt: skip
    assert (closed["closed_on"], closed["closed_by"]) == (pd.Timestamp("2023-06-10"), "cadre1")
    assert closed["fix_action"] == '已清运，联系 138****5678 =HYPERLINK("x")'  # masked, one line
    assert (closed["fix_photo"], closed["fix_instance_id"]) == ("1686362400000.jpg", "uuid:r1")
    assert (cleared(forms)["value"], cleared(forms)["status"]) == (1.0, DONE)
    # the other village's pile is untouched
    assert after.open["village_code"].tolist() == [V2]


def test_a_not_done_rectification_keeps_it_open_with_the_attempt(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    item = pile(book(forms))
    forms[RECT] = fixes(build, {"item_id": item["item_id"], "village": V1, "done": "no",
                                "fix_date": "2023-06-12", "action": "已联系户主，\n待清运"})  # fmt: skip
    after = book(forms)
    assert after.closed.empty
    still = pile(after)
    assert (still["state"], still["attempts"], still["last_attempt_on"]) == (
        OVERDUE, 1, pd.Timestamp("2023-06-12"),
    )  # fmt: skip
    assert still["last_attempt_note"] == "已联系户主， 待清运"
    assert cleared(forms)["value"] == 0.5


def test_the_latest_rectification_decides_and_a_later_no_reopens(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    iid = pile(book(forms))["item_id"]
    yes = {"item_id": iid, "village": V1, "done": "yes", "fix_date": "2023-06-10"}
    no = {"item_id": iid, "village": V1, "done": "no", "fix_date": "2023-06-20", "action": "又堆上了"}  # fmt: skip
    forms[RECT] = fixes(build, yes, no)
    reopened = pile(book(forms))
    assert (reopened["state"], reopened["attempts"], reopened["last_attempt_note"]) == (OVERDUE, 2, "又堆上了")  # fmt: skip
    assert cleared(forms)["value"] == 0.5
    # as of 06-15 the "no" was not yet sent: closed then, and counted cleared then
    assert pile(book(forms, date(2023, 6, 15)))["state"] == CLOSED
    assert cleared(forms, date(2023, 6, 15))["value"] == 1.0
    # on one fix date, the one sent later wins
    forms[RECT] = fixes(build, {**no, "fix_date": "2023-06-10", "at": "2023-06-10T01:00:00Z"},
                        {**yes, "at": "2023-06-10T05:00:00Z"})  # fmt: skip
    assert pile(book(forms))["state"] == CLOSED


def test_only_fixes_dated_in_the_plan_year_up_to_the_as_of_date_count(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    iid = pile(book(forms))["item_id"]
    forms[RECT] = fixes(build, {"item_id": iid, "village": V1, "done": "yes", "fix_date": "2023-07-05"})  # fmt: skip
    assert pile(book(forms))["state"] == OVERDUE  # dated after 06-30
    assert pile(book(forms, date(2023, 7, 5)))["state"] == CLOSED
    forms[RECT] = fixes(build, {"item_id": iid, "village": V1, "done": "yes", "fix_date": "2022-12-31"})  # fmt: skip
    assert pile(book(forms))["attempts"] == 0


def test_unknown_ids_other_villages_and_rejected_fixes_are_ignored(build: Path) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    iid = pile(book(forms))["item_id"]
    forms[RECT] = fixes(
        build,
        {"item_id": "0123456789abcdef", "village": V1, "done": "yes", "fix_date": "2023-06-10"},
        {"item_id": iid, "village": V2, "done": "yes", "fix_date": "2023-06-10"},  # not its village
        {
            "item_id": iid,
            "village": V1,
            "done": "yes",
            "fix_date": "2023-06-11",
            "review": "rejected",
        },
    )
    after = book(forms)
    assert after.closed.empty and len(after.open) == 2
    assert pile(after)["attempts"] == 0
    assert "0123456789abcdef" not in set(after.open["item_id"])
    assert cleared(forms)["value"] == 0.5


def test_a_town_item_closes_without_a_village_and_names_who_sent_it(build: Path) -> None:
    forms = {"street_lighting": lighting(build)}
    [lamp] = book(forms).open.to_dict("records")
    assert lamp["village_code"] is None
    forms[RECT] = fixes(build, {"item_id": lamp["item_id"], "done": "yes", "fix_date": "2023-06-20", "username": ""})  # fmt: skip
    # the form's username was blank: the person manyi serve took it from
    sender = SimpleNamespace(
        form_id="rectification", instance_id="uuid:r1", login="li", name="李四"
    )
    after = book(forms, senders=[sender])
    assert after.open.empty
    assert after.closed[["liaison_group", "closed_by"]].to_dict("records") == [
        {"liaison_group": "镇直", "closed_by": "李四"}
    ]
    # a town item's fix naming a village is not its own
    forms[RECT] = fixes(build, {"item_id": lamp["item_id"], "village": V1, "done": "yes", "fix_date": "2023-06-20"})  # fmt: skip
    assert book(forms).closed.empty


def test_a_village_items_fix_must_name_its_village_and_the_server_names_who_sent_it(
    build: Path,
) -> None:
    forms = {"sanitation_sweep": sweep(build)}
    iid = pile(book(forms))["item_id"]
    # a blank village: not this village's fix (it could come from anyone with the form)
    forms[RECT] = fixes(build, {"item_id": iid, "done": "yes", "fix_date": "2023-06-10"})
    assert book(forms).closed.empty
    forms[RECT] = fixes(
        build,
        {"item_id": iid, "village": V1, "done": "yes", "fix_date": "2023-06-10",
         "username": "typed.by.anyone"},
    )  # fmt: skip
    sender = SimpleNamespace(form_id=RECT, instance_id="uuid:r1", login="yan", name="闫干部")
    # the person the server took it from, not the username typed into the form
    assert book(forms, senders=[sender]).closed["closed_by"].tolist() == ["闫干部"]
    assert book(forms).closed["closed_by"].tolist() == ["typed.by.anyone"]


def test_an_undeclared_answer_never_takes_a_declared_fields_column(build: Path) -> None:
    """A sender adding <item_id> or <village> outside the form's own group must not change
    which item or village the declared answers name."""
    forms = {"sanitation_sweep": sweep(build)}
    items = book(forms).open
    mine = items[items["village_code"] == V1]["item_id"].iloc[0]
    theirs = items[items["village_code"] == V2]["item_id"].iloc[0]
    data = {
        "item_id": theirs, "village": V2,  # undeclared, at the top
        "extra": {"item_id": theirs, "village": V2},  # undeclared, in a made-up group
        "rectify": {"item_id": mine, "village": V1, "finding": "垃圾堆", "action": "已清运",
                    "done": "yes", "photo": None, "fix_date": "2023-06-10"},
    }  # fmt: skip
    rec = {"form_id": RECT, "instance_id": "uuid:r9", "form_version": "1",
           "submitted_at": "2023-06-10T00:00:00Z", "data": data}  # fmt: skip
    forms[RECT] = tidy([rec], load_schema(build, RECT))
    table = forms[RECT].table
    assert table["item_id"].tolist() == [mine] and table["village"].tolist() == [V1]
    after = book(forms)
    assert after.closed["item_id"].tolist() == [mine]
    assert theirs in set(after.open["item_id"])
