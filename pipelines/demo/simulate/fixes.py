"""Rectifications (整改反馈): the follow-up items the villages fix, simulated after the other forms.

The follow-up lists (:mod:`pipelines.analysis.followups`) raise items from the submissions; a
village fixes some of them and reports each with the rectification form, which the portal opens
from the item with its id, village and description filled in. A form's
:class:`~.rules.Fixes` says which of its items get fixed, how many and how soon: half the
sanitation findings left 待整改 (some others are closed by an edit of the sweep,
:class:`~.rules.Followup`, the rest never), fewer damaged fitness equipment, lamp faults,
patrol hazards and suggestions.

Every rectification names an item the lists really hold, whatever the as-of date it is seen at:

- its ``item_id`` is :func:`~pipelines.analysis.followups.item_ids` of the item's form,
  submission, 1-based entry (blank for a whole submission) and kind, as the lists compute it;
- it is sent after the finding's submission and dated (``fix_date``, its ``today`` or earlier)
  on a later day in the plan year, so it is never seen without its item nor dated after as-of;
- a sanitation finding it fixes is never also edited cleared (:attr:`_Draft.fixing`);
- for kinds the lists take from a subject's latest inspection (equipment, lamps) only the
  subject's last inspection of the year is fixed: an earlier one's items leave the lists at the
  next inspection, and a fix sent for them would then be ignored.

They are chosen from the whole year as filled, before the cut-off and any edit, so an earlier
as-of date sees a prefix of the same rectifications. About one first report in seven says
未完成 (``done`` = no) and most of those are followed by a 已整改完成 a few days to weeks later;
a report of a fix has a photo. Village items are sent by the village's cadre (as the sweep),
town items (lamps) by one of the staff who inspect them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.analysis.followups import RECTIFICATION, item_ids
from pipelines.demo.simulate._data import _get, _items
from pipelines.privacy import scrub_text

if TYPE_CHECKING:
    from pipelines.demo.simulate.engine import _Draft, _Form, _Sim
    from pipelines.demo.simulate.rules import Fixes

NOT_YET = 0.15  # first reports that say 未完成
THEN_DONE = 0.6  # of those, followed by a 已整改完成 (when still in the year)
_LATER = (3, 20)  # days from a 未完成 to the report of the fix


@dataclass(frozen=True)
class _Target:
    """One item to be fixed: an entry (1-based ``index``) or the whole submission (None)."""

    form: _Form
    fixes: Fixes
    draft: _Draft
    index: int | None
    found: date


def _choose(sim: _Sim, drafts: dict[str, list[_Draft]], copies: set[str]) -> list[_Target]:
    """The items fixed in the year, from every form with :attr:`~.rules.FormRule.fixes`;
    marks the entries so chosen in :attr:`_Draft.fixing` (no edit then closes them).

    ``copies``: the planted duplicates, whose findings repeat their original's (not fixed
    twice), unless a copy is the subject's last inspection.
    """
    if RECTIFICATION not in sim.forms:
        return []
    out: list[_Target] = []
    for form_id in sorted(drafts):
        form = sim.forms[form_id]
        fx = form.rule.fixes
        if fx is None or form_id == RECTIFICATION or form.date_field is None:
            continue
        rng = random.Random(f"{sim.seed}/{form_id}/fixes")  # noqa: S311 (demo data)
        if fx.latest is not None:
            chosen = _last_per_subject(form, fx.latest, drafts[form_id])
        else:
            chosen = [d for d in drafts[form_id] if d.iid not in copies]
        for d in chosen:
            found = date.fromisoformat(_top(form, d, form.date_field))
            for index in _entries(form, fx, d):
                if rng.random() >= fx.share[d.village in sim.slow]:
                    continue
                out.append(_Target(form, fx, d, index, found))
                if index is not None:
                    d.fixing = d.fixing | {index}
    return out


def _rectifications(sim: _Sim, targets: list[_Target]) -> list[_Draft]:
    """The rectification form's submissions for ``targets``: a first report a few days to a few
    weeks after the finding, and a later one when the first said 未完成."""
    form = sim.forms[RECTIFICATION]
    rng = random.Random(f"{sim.seed}/{RECTIFICATION}")  # noqa: S311 (demo data)
    ids = item_ids(
        pd.Series([t.form.form_id for t in targets], dtype=object),
        pd.Series([t.draft.iid for t in targets], dtype=object),
        pd.Series([t.index for t in targets], dtype=object),
        pd.Series([t.fixes.kind for t in targets], dtype=object),
    )
    out: list[_Draft] = []
    for t, item_id in zip(targets, ids, strict=True):
        village = t.draft.village
        pace = sim.pace.get(village or "", 1.0)
        answers = _describe(t)
        what = answers[0] if answers else ""
        values: dict[str, Any] = {
            "item_id": item_id,
            "village": village,
            "finding": scrub_text("；".join(answers)) or None,
        }
        if village is None:  # a town item: one of the staff who inspect it
            values["username"] = _pool_user(t.form, rng)
        day = t.found + timedelta(days=round(rng.randint(*t.fixes.days) / pace))
        done = rng.random() >= NOT_YET
        while True:
            # never before the finding reached the lists (the day after it was sent)
            day = max(day, t.draft.submitted.date() + timedelta(days=1))
            if day > sim.year_end:
                break
            phrase = rng.choice(t.fixes.done if done else t.fixes.not_yet)
            values |= {"done": "yes" if done else "no", "action": phrase.format(what=what)}
            d = sim._fill(form, sim.visit(day, village, values, rng), rng)
            out.append(d)
            if done or rng.random() >= THEN_DONE:
                break
            done = True
            later = day + timedelta(days=round(rng.randint(*_LATER) / pace))
            day = max(later, d.submitted.date() + timedelta(days=1))  # after the first was sent
    return out


# ---- reading the source submissions -----------------------------------------------------------


def _top(form: _Form, d: _Draft, name: str) -> Any:
    f = form.top.get(name)
    return _get(d.data, f.path) if f is not None else None


def _repeat_path(form: _Form, name: str | None) -> str | None:
    """The path of the (outer) repeat called ``name``; None if the form has none."""
    return next((r for r in form.repeats if r.rsplit("/", 1)[-1] == name), None)


def _entry(form: _Form, repeat: str, item: dict[str, Any], name: str) -> Any:
    """An answer of a repeat entry (or of its submission's top level, outside the repeat)."""
    f = form.in_repeat[repeat].get(name)
    return _get(item, f.path[len(repeat) + 1 :]) if f is not None else None


def _entries(form: _Form, fx: Fixes, d: _Draft) -> list[int | None]:
    """The items of a submission: its matching entries (1-based), or itself (``[None]``)."""
    if fx.repeat is None:
        ok = fx.when is None or _top(form, d, fx.when[0]) in fx.when[1]
        return [None] if ok else []
    repeat = _repeat_path(form, fx.repeat)
    if repeat is None:  # a version of the form without the repeat: no items
        return []
    return [
        k
        for k, item in enumerate(_items(d.data, repeat), 1)
        if fx.when is None or _entry(form, repeat, item, fx.when[0]) in fx.when[1]
    ]


def _last_per_subject(form: _Form, subject: tuple[str, ...], drafts: list[_Draft]) -> list[_Draft]:
    """Each subject's last submission of the year: the latest date, then the latest sent (as
    :func:`pipelines.analysis.indicators.latest_rows` picks them, blanks a subject too)."""
    last: dict[tuple[Any, ...], _Draft] = {}
    for d in drafts:
        key = tuple(_top(form, d, n) for n in subject)
        held = last.get(key)
        if held is None or _when(form, d) > _when(form, held):
            last[key] = d
    chosen = {d.iid for d in last.values()}
    return [d for d in drafts if d.iid in chosen]


def _when(form: _Form, d: _Draft) -> tuple[str, Any]:
    return (str(_top(form, d, form.date_field or "") or ""), d.submitted)


def _describe(t: _Target) -> list[str]:
    """The item in words: the :attr:`~.rules.Fixes.what` answers, choices as their labels."""
    form, d = t.form, t.draft
    repeat = _repeat_path(form, t.fixes.repeat)
    item = _items(d.data, repeat)[t.index - 1] if repeat is not None and t.index else None
    out = []
    for name in t.fixes.what:
        f = form.fields.get(name)
        if item is not None and repeat is not None and name in form.in_repeat[repeat]:
            value = _entry(form, repeat, item, name)
        else:
            value = _top(form, d, name)
        if f is None or value in (None, ""):
            continue
        if f.type == "select_one" and f.choices:
            label = f.choices.get(value, {})
            value = label.get("zh") or label.get("default") or value
        out.append(str(value))
    return out


def _pool_user(form: _Form, rng: random.Random) -> str:
    role, key = form.rule.who
    n = int(key[5:]) if key.startswith("pool:") else 1
    return f"{role}-{rng.randint(1, n):02d}"
