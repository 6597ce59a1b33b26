"""People's habits over the plan year, seeded: the villages that fall behind on everything,
the same subject sent twice, bad GPS, personal numbers typed into notes (for the masker to
catch), and what happens after a submission (edits, reviews, findings rectified late or never).
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from forms.schema import Field
from pipelines.analysis.rosters import id_check_digit
from pipelines.config import SHANGHAI
from pipelines.demo.simulate._data import _get, _items, _local, _put

if TYPE_CHECKING:
    from pipelines.demo.simulate.engine import _Draft, _Form, _Sim

# Central's review states; "received" is no state at all (null)
HAS_ISSUES, APPROVED, EDITED = "hasIssues", "approved", "edited"
SLOW_SHARE = 0.15  # villages that fall behind on everything
DUPLICATE_RATE = 0.002  # forms with a subject: the same subject sent twice on one day
BAD_GPS_RATE = 0.006  # submissions with a village and a geopoint: accuracy > 50 m or wrong village
EDIT_RATE = 0.004
HAS_ISSUES_RATE = 0.01


def _slow_villages(
    codes: Sequence[str], rng: random.Random
) -> tuple[frozenset[str], dict[str, float]]:
    """The villages that fall behind, and each village's pace (slow ones 0.6–0.78, others ~1)."""
    slow = frozenset(rng.sample(list(codes), round(SLOW_SHARE * len(codes))))
    pace = {c: rng.uniform(0.6, 0.78) if c in slow else rng.uniform(0.93, 1.12) for c in codes}
    return slow, pace


def _duplicate(sim: _Sim, drafts: dict[str, list[_Draft]], rng: random.Random) -> dict[str, str]:
    """The same subject sent twice on one day (two staff, or a resend as a new form)."""
    out: dict[str, str] = {}
    for form_id, items in drafts.items():
        form = sim.forms[form_id]
        if not form.subject or not items:
            continue
        n = max(1, round(DUPLICATE_RATE * len(items)))
        for original in rng.sample(items, n):
            iid = "uuid:" + str(uuid.UUID(int=rng.getrandbits(128), version=4))
            shift = timedelta(minutes=rng.uniform(5, 90))
            copy_ = replace(
                original, iid=iid, data=copy.deepcopy(original.data), photos=list(original.photos),
                start=original.start + shift, end=original.end + shift,
                submitted=original.submitted + shift,
            )  # fmt: skip
            _set_meta(copy_.data, "instanceID", copy_.iid)
            _set_meta(copy_.data, "start", _local(copy_.start))
            _set_meta(copy_.data, "end", _local(copy_.end))
            items.append(copy_)
            out[copy_.iid] = original.iid
    return out


def _spoil_gps(sim: _Sim, drafts: dict[str, list[_Draft]], rng: random.Random) -> dict[str, str]:
    """A few points too coarse (> 50 m: an old app or a web form) or in another village."""
    eligible = [
        (d, f) for form_id in sorted(drafts) if sim.forms[form_id].village_field
        for d in drafts[form_id] for f in sim.forms[form_id].geopoints if _geo_slots(d.data, f)
    ]  # fmt: skip
    one_each: dict[str, tuple[_Draft, Field]] = {}
    for d, f in eligible:
        one_each.setdefault(d.iid, (d, f))
    eligible = list(one_each.values())
    out: dict[str, str] = {}
    if not eligible:
        return out
    n = max(6, round(BAD_GPS_RATE * len(eligible)))
    for k, (d, f) in enumerate(rng.sample(eligible, min(n, len(eligible)))):
        holder, key = rng.choice(_geo_slots(d.data, f))
        if k % 2 == 0:
            lat, lon, *_ = (float(x) for x in holder[key].split())
            holder[key] = sim.geopoint(lat, lon, d.village, rng, accuracy=rng.uniform(55, 250))
            out[d.iid] = "accuracy"
        else:
            other = rng.choice([c for c in sim.codes if c != d.village])
            lat, lon = sim.point_in(other, rng)
            holder[key] = sim.geopoint(lat, lon, other, rng)
            out[d.iid] = "wrong_village"
    return out


def _plant_numbers(sim: _Sim, drafts: dict[str, list[_Draft]]) -> dict[str, str]:
    """A few notes that reach the follow-up lists get an invented ID number or mobile,
    typed each in another way (:data:`_TYPED`): the demo's outputs then exercise the
    masker. Chosen among the first half year's, whatever the as-of date, so an earlier
    as-of date sees the same ones and any report from July on shows them all."""
    half = datetime.combine(date(sim.year, 7, 1), time(0), SHANGHAI)
    rng = random.Random(f"{sim.seed}/numbers")  # noqa: S311 (invented numbers)
    eligible: list[tuple[_Draft, str]] = []
    for form_id, name, when in _NOTE_FIELDS:
        form = sim.forms.get(form_id)
        if form is None or name not in form.top:
            continue
        paths = {k: form.top[k].path for k in (name, *(k for k, _ in when)) if k in form.top}
        for d in sorted(drafts[form_id], key=lambda d: d.iid):
            if d.submitted < half and _get(d.data, paths[name]) and all(_get(d.data, paths.get(k, k)) == v for k, v in when):  # fmt: skip
                eligible.append((d, paths[name]))
    out: dict[str, str] = {}
    for (label, typed), (d, path) in zip(_TYPED, rng.sample(eligible, min(len(_TYPED), len(eligible))), strict=False):  # fmt: skip
        number = typed(rng)
        _put(d.data, path.split("/"), f"{_get(d.data, path)}{label}{number}")
        out[d.iid] = number
    return out


def _afterwards(sim: _Sim, form: _Form, d: _Draft, rng: random.Random, cutoff: datetime, bad_gps: bool) -> None:  # fmt: skip
    """Edits and reviews that happened by the cut-off (Central: updatedAt, reviewState)."""
    rule = form.rule
    fu = rule.followup
    if fu is not None:
        slow = d.village in sim.slow
        closed: list[tuple[dict[str, Any], datetime]] = []
        for k, item in enumerate(_items(d.data, fu.repeat), 1):
            if item.get(fu.field) != fu.value or not item.get(fu.due) or k in d.fixing:
                continue  # (a rectification reports the fix of an entry in d.fixing)
            if rng.random() >= fu.share[slow]:
                continue  # never rectified: overdue once its day passes
            due = date.fromisoformat(item[fu.due])
            day = max(d.submitted.date() + timedelta(days=1), due - timedelta(days=rng.randint(0, 6)))  # fmt: skip
            closed.append((item, datetime.combine(day, time(0), SHANGHAI) + timedelta(hours=rng.uniform(8, 18))))  # fmt: skip
        if closed:  # this submission's story is its follow-up, whatever the cut-off
            for item, when in closed:
                if when <= cutoff:
                    item[fu.field] = fu.becomes
                    for name in fu.clear:
                        item[name] = None
                    d.updated, d.review = max(d.updated or when, when), EDITED
            return
    roll = rng.random()
    later = d.submitted + timedelta(days=rng.uniform(0.5, 12))
    if roll < EDIT_RATE:
        # a second look corrects a free-text answer (one given, so it is relevant)
        texts = [f for f in form.top.values() if f.type == "text" and not f.required and f.name not in rule.readonly]  # fmt: skip
        answered = [f for f in texts if _get(d.data, f.path)]
        if answered and later <= cutoff:
            _put(d.data, answered[0].path.split("/"), _get(d.data, answered[0].path) + "（已更正）")  # fmt: skip
            d.updated, d.review = later, EDITED
        return
    if (bad_gps and rng.random() < 0.5) or roll < EDIT_RATE + HAS_ISSUES_RATE:
        state = HAS_ISSUES
    elif roll < EDIT_RATE + HAS_ISSUES_RATE + rule.approve:
        state = APPROVED
    else:
        return
    if later <= cutoff:
        d.updated, d.review = later, state


# ---- personal numbers typed into notes (invented; see _plant_numbers) ---------------------

# Notes that always reach the follow-up lists: (form, field, answers that make it an item).
_NOTE_FIELDS = (
    ("police_patrol", "issues", ()),
    ("home_visit", "follow_up_note", ()),
    ("health_checkup", "referral_note", ()),
    ("satisfaction_survey", "suggestion", (("needs_follow_up", "yes"),)),
)
_WIDE = str.maketrans("0123456789X+", "０１２３４５６７８９Ｘ＋")


def _invented_id(rng: random.Random, old: bool = False) -> str:
    """An ID number of 滕州市 (370481) with a valid GB 11643 check digit; ``old``: 15 digits."""
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(25_000))
    if old:
        return f"370481{born:%y%m%d}{rng.randrange(1000):03d}"
    first17 = f"370481{born:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + id_check_digit(first17)


def _invented_phone(rng: random.Random) -> str:
    return f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"


def _groups(text: str, sizes: Sequence[int], sep: str) -> str:
    out, at = [], 0
    for n in sizes:
        out.append(text[at : at + n])
        at += n
    return sep.join(out)


# (label, how it is typed): the ways the town's staff type a number, none of them a bare run
# of digits after a space (the rosters' own numbers never leave the rosters).
_TYPED: tuple[tuple[str, Callable[[random.Random], str]], ...] = (
    ("，身份证号 ", lambda r: _groups(_invented_id(r), (6, 8, 4), " ")),
    ("，身份证号 ", lambda r: _groups(_invented_id(r), (6, 4, 4, 4), "-")),
    ("，联系电话 ", lambda r: _groups(_invented_phone(r), (3, 4, 4), ".")),
    ("，电话", lambda r: _invented_phone(r).translate(_WIDE)),
    ("，联系 ", lambda r: "+86 " + _groups(_invented_phone(r), (3, 4, 4), "-")),
    ("，身份证", lambda r: _groups(_invented_id(r), (6, 8, 4), "\u3000").translate(_WIDE)),
    ("，老身份证 ", lambda r: _groups(_invented_id(r, old=True), (6, 6, 3), " ")),
    ("，家属电话 ", lambda r: "0086 " + _groups(_invented_phone(r), (3, 4, 4), "/")),
    (
        "，手机",
        lambda r: "＋８６－" + _groups(_invented_phone(r), (3, 4, 4), "－").translate(_WIDE),
    ),
    ("，身份证号码", lambda r: _invented_id(r).replace("X", "x")),
)


def _geo_slots(data: dict[str, Any], f: Field) -> list[tuple[dict[str, Any], str]]:
    """(container, key) of each answered value of geopoint field ``f`` in a submission."""
    if f.repeat is None:
        containers = [data]
        rel = f.path.split("/")
    else:
        containers = _items(data, f.repeat)
        rel = f.path[len(f.repeat) + 1 :].split("/")
    slots = []
    for node in containers:
        for part in rel[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(rel[-1]):
            slots.append((node, rel[-1]))
    return slots


def _set_meta(data: dict[str, Any], name: str, value: Any) -> None:
    if name in data:
        data[name] = value
    elif isinstance(data.get("meta"), dict) and name in data["meta"]:
        data["meta"][name] = value
