"""The simulated rectifications (整改反馈): each names an item the follow-up lists really hold,
closes it or records an attempt, is dated by the as-of date and is sent by the item's village."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date

import pandas as pd
import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from geo.illustrative import illustrative_boundaries
from pipelines.analysis.followups import (
    RECTIFICATION,
    SANITATION_KIND,
    FollowUpBook,
    follow_up_book,
    rectifications,
)
from pipelines.analysis.indicators import compute_progress
from pipelines.analysis.plan import load_plan
from pipelines.analysis.rosters import demo_rosters
from pipelines.analysis.tidy import TidyForm, tidy
from pipelines.demo.simulate import SimulatedYear
from tests.pipelines.demo.test_simulate import AS_OF, CODES, VILLAGE_LIST, YEAR, World, simulate

PINYIN = {v.code: v.pinyin.lower().replace(" ", "") for v in VILLAGE_LIST}


@dataclass(frozen=True)
class Seen:
    """A simulated year as the lists see it at its as-of date."""

    year: SimulatedYear
    forms: dict[str, TidyForm]
    book: FollowUpBook
    items: pd.DataFrame  # open and closed, as found
    fixes: pd.DataFrame  # the rectification form's table


def seen(world: World, year: SimulatedYear) -> Seen:
    forms = {f: tidy(recs, world.schemas[f]) for f, recs in year.records.items()}
    book = follow_up_book(
        forms, as_of=year.as_of, year=YEAR, plan=load_plan(), villages=VILLAGE_LIST,
        rosters=world.rosters,
    )  # fmt: skip
    items = pd.concat([book.open, book.closed], ignore_index=True)
    return Seen(year, forms, book, items, forms[RECTIFICATION].table)


@pytest.fixture(scope="module")
def world(built_forms: BuildReport) -> World:
    out = built_forms.out_dir
    ids = sorted(b.form_id for b in built_forms.built)
    raw = {i: json.loads((out / f"{i}.json").read_text(encoding="utf-8")) for i in ids}
    return World(
        out, {i: load_schema(out, i) for i in ids}, raw,
        illustrative_boundaries(VILLAGE_LIST), demo_rosters(CODES, seed=0),
    )  # fmt: skip


@pytest.fixture(scope="module")
def now(world: World) -> Seen:
    return seen(world, simulate(world))


@pytest.fixture(scope="module")
def june(world: World) -> Seen:
    return seen(world, simulate(world, as_of=date(YEAR, 6, 30)))


@pytest.mark.parametrize("which", ["now", "june"])
def test_every_rectification_names_an_item_of_the_lists_and_none_is_ignored(which: str, request: pytest.FixtureRequest) -> None:  # fmt: skip
    s: Seen = request.getfixturevalue(which)
    fixes, items = s.fixes, s.items.set_index("item_id")
    assert len(fixes) > 20
    assert fixes["item_id"].map(lambda v: bool(re.fullmatch(r"[abcdefghjkmnpqrs]{16}", v))).all()
    missing = fixes[~fixes["item_id"].isin(items.index)]
    assert missing.empty, missing[["item_id", "finding", "fix_date"]].to_string()
    # the item's village (blank for a town item such as a lamp)
    theirs = items.loc[fixes["item_id"], "village_code"].to_numpy(dtype=object)
    for mine, item in zip(fixes["village"], theirs, strict=True):
        assert (mine if isinstance(mine, str) else None) == (
            item if isinstance(item, str) else None
        )
    # the analysis counts every one of them as an attempt of its item: none ignored
    known = pd.Series(items["village_code"].to_numpy(dtype=object), index=items.index)
    decided = rectifications(s.forms, known, as_of=s.year.as_of, year=YEAR)
    assert decided["attempts"].sum() == len(fixes)
    # sanitation findings mostly, some patrol hazards and suggestions, a few lamps or equipment
    kinds = Counter(items.loc[fixes["item_id"], "kind"])
    assert kinds.most_common(1)[0][0] == SANITATION_KIND, kinds
    assert {"治安隐患", "群众意见建议"} <= set(kinds), kinds
    assert kinds["路灯故障"] + kinds["健身器材损坏/缺失"] > 0, kinds


def test_rectifications_close_items_keep_some_open_and_raise_the_cleared_rate(world: World, now: Seen) -> None:  # fmt: skip
    closed, still = now.book.closed, now.book.open
    assert SANITATION_KIND in set(closed["kind"]) and len(closed) > 30
    tried = still[still["attempts"].fillna(0) >= 1]
    assert len(tried) >= 1 and tried["last_attempt_note"].notna().all()
    assert (closed["fix_photo"].notna()).all()
    # a 未完成 first, then the fix: two attempts, the latest decides
    attempts = now.fixes.groupby("item_id").size()
    assert set(closed["item_id"]) & set(attempts[attempts >= 2].index)
    # about half the sanitation findings still 待整改 in the data get a rectification (those found
    # six weeks before as-of have had the time)
    found = now.items[
        (now.items["kind"] == SANITATION_KIND) & (now.items["found_on"] <= "2023-08-31")
    ]
    share = found["item_id"].isin(now.fixes["item_id"]).mean()
    assert 0.4 <= share <= 0.75, share

    plan = load_plan()

    def cleared(forms: dict[str, TidyForm]) -> float:
        table = compute_progress(
            plan, forms, as_of=AS_OF, year=YEAR, villages=VILLAGE_LIST, rosters=world.rosters,
            only=["sanitation_findings_cleared"],
        ).table  # fmt: skip
        return float(table[table["level"] == "town"]["value"].iloc[0])

    without = {k: v for k, v in now.forms.items() if k != RECTIFICATION}
    assert cleared(now.forms) > cleared(without) + 0.05


def test_fixes_are_dated_after_the_finding_up_to_as_of_and_sent_by_the_village(now: Seen) -> None:
    fixes = now.fixes
    items = now.items.set_index("item_id")
    days = pd.to_datetime(fixes["fix_date"])
    assert (days <= pd.Timestamp(AS_OF)).all() and (days >= pd.Timestamp(YEAR, 1, 1)).all()
    assert (days >= items.loc[fixes["item_id"], "found_on"].to_numpy()).all()
    # sent after the finding reached the server, on the form's day or later (fix_date <= today)
    sent = {r.instance_id: r.submitted_at for r in now.year.all_records()}
    for row in fixes.itertuples():
        assert sent[items.loc[row.item_id, "instance_id"]] < sent[row.instance_id]
        assert row.fix_date <= row.today
    # mostly fixed; a fix has a photo; what was done is a sentence, not a placeholder
    done = fixes["done"].value_counts(normalize=True)
    assert 0.75 <= done["yes"] <= 0.97 and done["no"] > 0
    assert fixes.loc[fixes["done"] == "yes", "photo"].notna().all()
    assert fixes["action"].map(lambda a: len(a) >= 8 and a != "已完成").all()
    assert fixes["finding"].notna().all()
    for row in fixes.itertuples():
        if isinstance(row.village, str):  # the village's cadre, as the sweep
            assert row.username == f"cadre-{PINYIN[row.village]}"
        else:  # a town item: one of the staff who inspect the lamps
            assert re.fullmatch(r"cadre-0[1-4]", row.username), row.username
    assert now.year.records[RECTIFICATION] and not any(
        r.review_state == "rejected" for r in now.year.records[RECTIFICATION]
    )
