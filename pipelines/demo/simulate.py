"""The demo source: a deterministic, seeded plan year of submissions for every form.

:func:`simulate_year` fills every form the way the town's staff would over a year, driven by
the compiled forms' schemas: each field gets a value valid for its type and choices by default,
and :data:`RULES` (a table, one entry per form) adds what makes the year realistic:

- *who and when* (``plan``): per roster row (each student visited twice, each resident checked
  once …), per village and period (a sanitation sweep each quarter, a film each month …), per
  choice of a field (each road segment, each department), or on dated events (festivals);
- *what* (``fields``): weighted choices, ranges, answers that depend on other answers
  (``lamps_working ≤ lamps_installed``, ``rectify_by ≥ check_date``), relevance (``When``),
  subjects' state over time (a road's cumulative km, a square built mid-year) and geopoints
  inside the chosen village;
- *people's habits*: a seeded set of slow villages that fall behind, findings rectified late or
  never, a few submissions with bad GPS or sent twice, edits and reviews.

A form without an entry still simulates (monthly, per village when it has a village field), so
a new form needs no new code. The whole year is always generated, then cut at ``as_of``: a
record counts once it was submitted by the end of that day, and edits and reviews once they
happened. So the year as it stood on an earlier date is a prefix of the same year.
"""

from __future__ import annotations

import copy
import hashlib
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

import shapely

from forms.schema import Field, FormSchema
from geo.boundaries import Boundaries
from geo.roads import SEGMENTS, illustrative_roads
from geo.villages import Village
from pipelines.analysis.rosters import Rosters, id_check_digit, pick_lists
from pipelines.config import SHANGHAI
from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Record

# Central's review states; "received" is no state at all (null)
HAS_ISSUES, APPROVED, EDITED = "hasIssues", "approved", "edited"
SLOW_SHARE = 0.15  # villages that fall behind on everything
DUPLICATE_RATE = 0.002  # forms with a subject: the same subject sent twice on one day
BAD_GPS_RATE = 0.006  # submissions with a village and a geopoint: accuracy > 50 m or wrong village
EDIT_RATE = 0.004
HAS_ISSUES_RATE = 0.01


# ---- answers: what a rule can say about one field -------------------------------------------


class _Ctx:
    """One submission (or one repeat entry) being filled.

    Answers are computed on first use, so a rule may read any other answer whatever the form's
    order, as XForm binds do. A repeat entry falls back to its submission for other names.
    """

    __slots__ = ("_fields", "_form", "_items", "parent", "photos", "rng", "sim", "start", "values", "visit")  # fmt: skip

    def __init__(self, form: _Form, visit: _Visit, rng: random.Random, fields: Mapping[str, Field], parent: _Ctx | None = None) -> None:  # fmt: skip
        self._form, self.visit, self.rng, self._fields, self.parent = (
            form,
            visit,
            rng,
            fields,
            parent,
        )
        self.sim = form.sim
        self.values: dict[str, Any] = {} if parent is not None else dict(visit.values)
        self._items: dict[str, list[_Ctx]] = {}
        self.photos: list[str] = parent.photos if parent is not None else []
        self.start: datetime = parent.start if parent is not None else datetime.min

    @property
    def day(self) -> date:
        return self.visit.day

    @property
    def village(self) -> str | None:
        return self.visit.village

    @property
    def slow(self) -> bool:
        return self.visit.village in self.sim.slow

    def get(self, name: str) -> Any:
        values = self.values
        if name in values:
            return values[name]
        f = self._fields.get(name)
        if f is None:
            return self.parent.get(name) if self.parent is not None else None
        values[name] = None  # a rule reading itself gets None, not a recursion error
        value = self._form.answer(self, f)
        values[name] = value
        return value

    def items(self, repeat: str) -> list[_Ctx]:
        if repeat not in self._items:
            self._items[repeat] = self._form.repeat_items(self, repeat)
        return self._items[repeat]


class Spec:
    """How to answer one field; ``make`` returns the value (None: left blank)."""

    def make(self, ctx: _Ctx, f: Field) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class W(Spec):
    """A weighted choice; the key "" means the question is left blank."""

    weights: Mapping[str, float]

    def make(self, ctx: _Ctx, f: Field) -> Any:
        keys = list(self.weights)
        return ctx.rng.choices(keys, list(self.weights.values()))[0] or None


@dataclass(frozen=True)
class Multi(Spec):
    """``lo``–``hi`` choices of ``pool`` (default: the field's choices) plus ``always``."""

    lo: int = 1
    hi: int = 3
    pool: tuple[str, ...] = ()
    always: tuple[str, ...] = ()

    def make(self, ctx: _Ctx, f: Field) -> Any:
        names = list(f.choices or {})
        pool = [c for c in (self.pool or names) if c not in self.always]
        k = min(len(pool), ctx.rng.randint(self.lo, self.hi))
        chosen = set(self.always) | set(ctx.rng.sample(pool, k))
        return " ".join(c for c in names if c in chosen) or None  # in the form's order


@dataclass(frozen=True)
class Int(Spec):
    lo: int
    hi: int

    def make(self, ctx: _Ctx, f: Field) -> Any:
        return ctx.rng.randint(self.lo, self.hi)


@dataclass(frozen=True)
class Dec(Spec):
    lo: float
    hi: float
    digits: int = 2

    def make(self, ctx: _Ctx, f: Field) -> Any:
        return round(ctx.rng.uniform(self.lo, self.hi), self.digits)


@dataclass(frozen=True)
class Text(Spec):
    """One of ``phrases`` with probability ``p``; ``{village}``, ``{m}``, ``{d}`` are filled."""

    phrases: tuple[str, ...]
    p: float = 1.0

    def make(self, ctx: _Ctx, f: Field) -> Any:
        if self.p < 1.0 and ctx.rng.random() >= self.p:
            return None
        text = ctx.rng.choice(self.phrases)
        if "{" in text:
            village = ctx.sim.names.get(ctx.village or "", "")
            text = text.format(village=village, m=ctx.day.month, d=ctx.day.day)
        return text


@dataclass(frozen=True)
class Maybe(Spec):
    """``spec`` with probability ``p``, else blank."""

    p: float
    spec: Spec

    def make(self, ctx: _Ctx, f: Field) -> Any:
        return self.spec.make(ctx, f) if ctx.rng.random() < self.p else None


@dataclass(frozen=True)
class When(Spec):
    """Relevance: ``spec`` when any of ``fields`` has one of ``values`` (None: is not blank)."""

    fields: tuple[str, ...]
    values: tuple[str, ...] | None
    spec: Spec

    def make(self, ctx: _Ctx, f: Field) -> Any:
        answers = [ctx.get(n) for n in self.fields]
        if self.values is None:
            relevant = any(a not in (None, "") for a in answers)
        else:
            relevant = any(a in self.values for a in answers)
        return self.spec.make(ctx, f) if relevant else None


@dataclass(frozen=True)
class By(Spec):
    """The spec for the first of ``fields`` whose answer is a key of ``table``."""

    fields: tuple[str, ...]
    table: Mapping[str, Spec]
    default: Spec | None = None

    def make(self, ctx: _Ctx, f: Field) -> Any:
        for name in self.fields:
            spec = self.table.get(ctx.get(name))
            if spec is not None:
                return spec.make(ctx, f)
        return self.default.make(ctx, f) if self.default is not None else None


@dataclass(frozen=True)
class Slow(Spec):
    """``normal`` in most villages, ``slow`` in the slow ones."""

    normal: Spec
    slow: Spec

    def make(self, ctx: _Ctx, f: Field) -> Any:
        return (self.slow if ctx.slow else self.normal).make(ctx, f)


@dataclass(frozen=True)
class Calc(Spec):
    """A value computed from other answers, like an XForm calculate."""

    fn: Callable[[_Ctx], Any]

    def make(self, ctx: _Ctx, f: Field) -> Any:
        return self.fn(ctx)


@dataclass(frozen=True)
class Map(Spec):
    """A calculate that maps another answer through ``table`` (text, as Central sends it)."""

    of: str
    table: Mapping[str, Any]
    default: Any = None

    def make(self, ctx: _Ctx, f: Field) -> Any:
        value = self.table.get(ctx.get(self.of), self.default)
        return None if value is None else _num_text(value)


@dataclass(frozen=True)
class Share(Spec):
    """A whole number not above another answer: ``of`` × ``frac`` (± ``jitter``).

    ``frac`` may be knots ``((month-day, frac), …)`` interpolated over the year.
    """

    of: str
    frac: float | tuple[tuple[str, float], ...]
    jitter: float = 0.0

    def make(self, ctx: _Ctx, f: Field) -> Any:
        base = _number(ctx.get(self.of))
        if base is None:
            return None
        frac = self.frac if isinstance(self.frac, float | int) else _interp(self.frac, ctx.day)
        frac = min(1.0, max(0.0, frac + ctx.rng.uniform(-self.jitter, self.jitter)))
        return min(int(base), round(base * frac))


@dataclass(frozen=True)
class DaysAfter(Spec):
    """A date ``lo``–``hi`` days after another date answer, kept inside the plan year."""

    of: str
    lo: int
    hi: int

    def make(self, ctx: _Ctx, f: Field) -> Any:
        first = ctx.get(self.of)
        if not first:
            return None
        start = date.fromisoformat(first)
        end = max(start, min(start + timedelta(days=ctx.rng.randint(self.lo, self.hi)), ctx.sim.year_end))  # fmt: skip
        return end.isoformat()


@dataclass(frozen=True)
class Bands(Spec):
    """The choice of the highest band reached by ``of`` / ``total`` (e.g. a road's stage)."""

    of: str
    total: str
    bands: tuple[tuple[float, str], ...]

    def make(self, ctx: _Ctx, f: Field) -> Any:
        done, total = _number(ctx.get(self.of)), _number(ctx.get(self.total))
        if done is None or not total:
            return None
        ratio = done / total
        return [name for threshold, name in self.bands if ratio >= threshold - 1e-9][-1]


@dataclass(frozen=True)
class Ramp(Spec):
    """A subject's cumulative quantity: from the first knot's value to the last's, rising
    irregularly but never falling (a road's km done, lamps installed). ``per`` names the field
    holding the subject; ``knots`` maps it to ``((month-day, value), (month-day, value))``."""

    per: str
    knots: Mapping[str, tuple[tuple[str, float], tuple[str, float]]]
    default: tuple[tuple[str, float], tuple[str, float]] = (("01-01", 0.0), ("12-31", 1.0))
    digits: int = 2

    def make(self, ctx: _Ctx, f: Field) -> Any:
        subject = ctx.get(self.per)
        curve = ctx.sim.curve(ctx._form.form_id, f.name, str(subject), self.knots.get(subject, self.default))  # fmt: skip
        value = _interp(curve, ctx.day)
        scale = 10**self.digits
        value = int(value * scale + 1e-9) / scale  # round down: never past the last knot's value
        return int(value) if self.digits == 0 else value


@dataclass(frozen=True)
class Becomes(Spec):
    """A village's state that switches once from ``before`` to ``after`` (a square is built).

    ``already`` of villages have switched before the year; the others switch on a day in
    ``window`` unless they ``never`` do (normal, slow share). With ``count``, exactly that many
    (normal) villages switch in ``window`` and no other.
    """

    before: str
    after: str
    already: float = 0.0
    window: tuple[str, str] = ("01-01", "12-31")
    never: tuple[float, float] = (0.0, 0.0)
    count: int | None = None

    def make(self, ctx: _Ctx, f: Field) -> Any:
        switch = ctx.sim.switches(ctx._form.form_id, f.name, self).get(ctx.village or "")
        return self.after if switch is not None and switch <= ctx.day else self.before


@dataclass(frozen=True)
class Likert(Spec):
    """A 1–5 score (choice names "1"…"5") around ``mean``, rising a little over the year."""

    mean: float
    slow_mean: float
    rise: float = 0.3

    def make(self, ctx: _Ctx, f: Field) -> Any:
        mean = (self.slow_mean if ctx.slow else self.mean) + self.rise * ctx.day.timetuple().tm_yday / 366  # fmt: skip
        return str(min(5, max(1, round(ctx.rng.gauss(mean, 0.8)))))


@dataclass(frozen=True)
class Point(Spec):
    """A geopoint inside the submission's village (anywhere in the town without one)."""

    p: float = 1.0

    def make(self, ctx: _Ctx, f: Field) -> Any:
        if self.p < 1.0 and ctx.rng.random() >= self.p:
            return None
        village = ctx.village or ctx.rng.choice(ctx.sim.codes)
        lat, lon = ctx.sim.point_in(village, ctx.rng)
        return ctx.sim.geopoint(lat, lon, village, ctx.rng)


@dataclass(frozen=True)
class RoadPoint(Spec):
    """A geopoint on the road named by another answer (a lamp's fault on 东朱路)."""

    road: str
    p: float = 1.0

    def make(self, ctx: _Ctx, f: Field) -> Any:
        if self.p < 1.0 and ctx.rng.random() >= self.p:
            return None
        line = ctx.sim.road_line(ctx.get(self.road))
        if line is None:
            return Point().make(ctx, f)
        pt = line.interpolate(ctx.rng.random(), normalized=True)
        lat = pt.y + ctx.rng.uniform(-5e-5, 5e-5)
        lon = pt.x + ctx.rng.uniform(-5e-5, 5e-5)
        return ctx.sim.geopoint(lat, lon, None, ctx.rng)


@dataclass(frozen=True)
class Trace(Spec):
    """A geotrace along the segment named by ``road``, as far as ``km`` of its length."""

    road: str
    km: str
    total: str
    p: float = 1.0

    def make(self, ctx: _Ctx, f: Field) -> Any:
        line = ctx.sim.road_line(ctx.get(self.road))
        done, total = _number(ctx.get(self.km)), _number(ctx.get(self.total))
        if line is None or not done or not total or ctx.rng.random() >= self.p:
            return None
        frac = min(1.0, done / total)
        n = max(2, int(done * 10) + 1)  # a vertex every ~100 m
        points = [line.interpolate(frac * i / (n - 1), normalized=True) for i in range(n)]
        return ";".join(
            f"{pt.y:.7f} {pt.x:.7f} {ctx.sim.altitude(None, ctx.rng):.1f} {ctx.rng.uniform(3, 10):.1f}"
            for pt in points
        )


@dataclass(frozen=True)
class Photo(Spec):
    """A photo file name as ODK Collect makes it (milliseconds since the epoch)."""

    p: float = 1.0

    def make(self, ctx: _Ctx, f: Field) -> Any:
        if self.p < 1.0 and ctx.rng.random() >= self.p:
            return None
        ms = int(ctx.start.timestamp() * 1000) + ctx.rng.randrange(5_000, 600_000)
        name = f"{ms}.jpg"
        ctx.photos.append(name)
        return name


class _Skip(Spec):
    def make(self, ctx: _Ctx, f: Field) -> Any:
        return None


class _Day(Spec):
    def make(self, ctx: _Ctx, f: Field) -> Any:
        return ctx.day.isoformat()


class _VillageAnswer(Spec):
    def make(self, ctx: _Ctx, f: Field) -> Any:
        return ctx.village if ctx.village in (f.choices or {}) else None


class _Pick(Spec):
    """A pick-list row, filtered by the answers already given for its columns (as the form's
    ``choice_filter`` does: village, school …)."""

    def make(self, ctx: _Ctx, f: Field) -> Any:
        file = f.from_file or ""
        rows = ctx.sim.picks.get(file, [])
        if not rows:
            return None
        answers = {c: ctx.get(c) for c in rows[0] if c not in ("name", "label")}
        cols = tuple(c for c, v in answers.items() if v not in (None, ""))
        rows = ctx.sim.pick_index(file, cols).get(tuple(answers[c] for c in cols), [])
        return ctx.rng.choice(rows)["name"] if rows else None


SKIP, DAY = _Skip(), _Day()


@dataclass(frozen=True)
class Repeat:
    """How many entries a repeat gets: a range or a function of the answers; ``when`` as in
    :class:`When` (the repeat's relevance)."""

    count: tuple[int, int] | Callable[[_Ctx], int] = (1, 3)
    when: tuple[tuple[str, ...], tuple[str, ...] | None] | None = None


# ---- who and when: the schedule of one form --------------------------------------------------


@dataclass
class _Visit:
    day: date  # the form's own date answer
    filled: date  # the day the form was filled (`today`)
    village: str | None
    values: dict[str, Any]  # answers fixed by the schedule


@dataclass(frozen=True)
class Roster:
    """Every row of a pick list visited ``len(rounds)`` times, round k on a day in
    ``rounds[k]`` (month-days) stretched by the village's pace; ``miss`` is the share of rows
    never reached (normal, slow village). The row fills the fields named like its columns
    (``columns`` maps form field -> column where the names differ) and ``subject`` its ID."""

    file: str
    subject: str
    rounds: tuple[tuple[str, str], ...]
    miss: tuple[float, float] = (0.0, 0.0)
    columns: Mapping[str, str] = field(default_factory=dict)
    gap: int = 21  # days at least between two rounds
    again: float = 0.0  # share visited once more (a re-check)

    def visits(self, sim: _Sim, form: _Form, rng: random.Random) -> Iterator[_Visit]:
        rows = sim.picks.get(self.file, [])
        mapping = [(n, self.columns.get(n, n)) for n in form.top if n != self.subject]
        mapping = [(n, c) for n, c in mapping if rows and c in rows[0]]
        windows = [(sim.day(a), sim.day(b)) for a, b in self.rounds]
        for row in rows:
            village = row.get("village")
            slow = village in sim.slow
            pace = sim.pace.get(village or "", 1.0)
            values = {n: row[c] for n, c in mapping}
            values[self.subject] = row["name"]
            prev: date | None = None
            for a, b in windows:
                if rng.random() < self.miss[slow]:
                    break
                day = a + timedelta(days=int(rng.random() * (b - a).days / pace))
                if prev is not None:
                    day = max(day, prev + timedelta(days=self.gap))
                if day > sim.year_end:
                    break
                yield sim.visit(day, village, values, rng)
                prev = day
            if prev is not None and self.again and rng.random() < self.again:
                day = prev + timedelta(days=rng.randint(20, 60))
                if day <= sim.year_end:
                    yield sim.visit(day, village, values, rng)


_PERIODS = ("year", "quarter", "month", "week")


@dataclass(frozen=True)
class Periodic:
    """``count`` submissions per period (year, quarter, month, week) for each village
    (``per="village"``), each choice of a field (``per`` = its name; ``values`` to restrict),
    or the town (``per=None``), while the period lies in ``start``–``end`` (or ``windows`` per
    value). A period happens with ``prob`` (per value if a dict); slow villages skip a
    submission with ``slow_skip``. The day falls at ``within`` (fractions) of the period,
    later in slow villages. ``previous``: the form reports on the period just ended, its date
    is the period's first day and it is filled early in the next period. ``closing``: every
    series reports in the last period of its window (a road's completion report)."""

    period: str = "month"
    per: str | None = "village"
    values: tuple[str, ...] = ()
    count: tuple[int, int] = (1, 1)
    prob: float | Mapping[str, float] = 1.0
    slow_skip: float = 0.0
    start: str = "01-01"
    end: str = "12-31"
    windows: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    within: tuple[float, float] = (0.0, 1.0)
    presets: Mapping[str, Any] = field(default_factory=dict)
    previous: bool = False
    closing: bool = False  # each series reports in its last period (a final report)

    def visits(self, sim: _Sim, form: _Form, rng: random.Random) -> Iterator[_Visit]:
        per = self.per
        if per == "village":
            per = form.village_field  # None: the form has no village, so the town
        if per is None:
            series: list[str | None] = [None]
        elif per == form.village_field:
            series = list(sim.codes)
        else:
            choices = list(form.fields[per].choices or {}) if per in form.fields else []
            series = [v for v in (self.values or choices) if v in choices or not choices]
        for key in series:
            village = key if per == form.village_field and per is not None else None
            slow = village in sim.slow
            pace = sim.pace.get(village or "", 1.0)
            a, b = self.windows.get(key or "", (self.start, self.end))
            prob = self.prob.get(key or "", 0.0) if isinstance(self.prob, Mapping) else self.prob
            values = dict(self.presets)
            if per is not None and key is not None:
                values[per] = key
            periods = sim.periods(self.period, sim.day(a), sim.day(b))
            for i, (p0, p1) in enumerate(periods):
                closing = self.closing and i == len(periods) - 1
                if rng.random() >= prob and not closing:
                    continue
                for k in range(rng.randint(*self.count)):
                    if slow and rng.random() < self.slow_skip and not (closing and k == 0):
                        continue
                    u = rng.uniform(*self.within) / pace
                    if closing:
                        u = min(u, 1.0)
                    if self.previous:
                        day, filled = p0, p1 + timedelta(days=1 + int(u * 28))
                    elif u > 1.0:
                        continue  # ran out of period
                    else:
                        day, filled = min(p1, p0 + timedelta(days=int(u * ((p1 - p0).days + 1)))), None  # fmt: skip
                    # one a day per series: two on one day is what the duplicate check is for
                    day = sim.free_day(form.form_id, key, day, p0, p1)
                    if day is not None:
                        yield sim.visit(day, village, values, rng, filled=filled)


@dataclass(frozen=True)
class Dated:
    """Events on given days: ``(month-day or festival, number of villages, answers)``.

    Lunar festivals (``eryueer`` 二月二, ``chongyang`` 重阳) take their day from
    :data:`LUNAR_DAYS` for the plan year.
    """

    events: tuple[tuple[str, int, Mapping[str, Any]], ...]

    def visits(self, sim: _Sim, form: _Form, rng: random.Random) -> Iterator[_Visit]:
        for when, n, presets in self.events:
            day = sim.festival(when)
            chosen = rng.sample(sim.codes, min(n, len(sim.codes)))
            for village in sorted(chosen):
                values = dict(presets)
                if form.village_field:
                    values[form.village_field] = village
                yield sim.visit(day, village, values, rng)


# 二月二 and 重阳 move with the lunar calendar; other years fall back to a typical day.
LUNAR_DAYS: dict[str, dict[int, str]] = {
    "eryueer": {2020: "02-24", 2021: "03-14", 2022: "03-04", 2023: "02-21", 2024: "03-11",
                2025: "03-01", 2026: "03-20"},
    "chongyang": {2020: "10-25", 2021: "10-14", 2022: "10-04", 2023: "10-23", 2024: "10-11",
                  2025: "10-29", 2026: "10-18"},
}  # fmt: skip
_LUNAR_FALLBACK = {"eryueer": "03-05", "chongyang": "10-15"}


@dataclass(frozen=True)
class Followup:
    """Repeat entries left open (``field`` = ``value``) and closed later by an edit of the
    submission, on a day up to their due date: (normal, slow) share closed; the edit sets
    ``becomes`` and blanks the fields that are then no longer relevant."""

    repeat: str
    field: str
    value: str
    becomes: str
    due: str
    share: tuple[float, float]
    clear: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormRule:
    """The realism of one form. ``who``: (role, field naming the person's post, or
    ``pool:N`` for N interchangeable staff); ``subject``: what a duplicate repeats."""

    plan: tuple[Roster | Periodic | Dated, ...]
    fields: Mapping[str, Spec] = field(default_factory=dict)
    repeats: Mapping[str, Repeat] = field(default_factory=dict)
    who: tuple[str, str] = ("staff", "pool:6")
    hours: tuple[int, int] = (8, 18)
    minutes: tuple[int, int] = (3, 15)
    subject: str | None = None
    approve: float = 0.05
    followup: Followup | None = None


# ---- the realism table -----------------------------------------------------------------------


def _md(day: date) -> str:
    return f"{day.month:02d}-{day.day:02d}"


def _md_plus(month_day: str, days: int) -> str:
    month, day = (int(x) for x in month_day.split("-"))
    shifted = date(2001, month, day) + timedelta(days=days)  # any non-leap year
    return _md(shifted) if shifted.year == 2001 else "12-31"


_YES = ("yes",)
_PLANNED_KM = {s.segment_id: s.planned_km for s in SEGMENTS if s.planned_km}
_OTHER_KM = 10  # the form's planned_km for a segment it does not list
# Road works (month-days): phase 1 must end by 06-30, 府前路东延 runs late; 卧龙村至景区 too.
_ROAD_WORK = {"longling_dongshatu": ("03-01", "06-18"), "longyang_yanzhuang": ("03-10", "06-26"),
              "fuqian_east": ("04-10", "07-22"), "wolong_scenic": ("05-01", "12-18"),
              "other": ("05-10", "09-30")}  # fmt: skip
_ROAD_KNOTS = {s: ((a, 0.0), (b, _PLANNED_KM.get(s, 1.2))) for s, (a, b) in _ROAD_WORK.items()}
_STAGES = ((0.0, "not_started"), (0.001, "subgrade"), (0.4, "base"), (0.75, "surface"), (1.0, "completed"))  # fmt: skip
_LAMPS = {"dongzhu_road": (("01-01", 90.0), ("09-30", 140.0)),
          "tourism_road": (("03-01", 16.0), ("11-20", 210.0))}  # fmt: skip
# What people write in free-text fields: short, plausible, never a person's name.
_SAY: dict[str, tuple[str, ...]] = {
    "feedback": ("家长配合，学生在家表现良好", "已与家长沟通学习习惯培养", "提醒家长注意假期安全",
                 "家长反映孩子作业时间偏长", "学生近期进步明显", "已讲解防溺水安全知识",
                 "家长希望加强课后服务"),
    "follow_up_note": ("下周电话回访", "联系学区心理老师跟进", "与班主任共同再次入户"),
    "referral_note": ("血压偏高，转诊龙阳卫生院复查", "血糖控制不佳，建议上级医院就诊",
                      "心电图异常，转诊复查"),
    "welfare_note": ("在岗履职正常", "本人外出务工，长期不在岗", "已超龄，建议调整岗位"),
    "dibao_note": ("家庭收入无明显变化", "子女外出务工，收入增加", "户主患病，支出增加"),
    "responsible": ("村两委", "村保洁员", "网格员", "包片干部"),
    "sweep_note": ("主街整洁，背街小巷仍有零星垃圾", "坑塘周边需清理", "已督促农户清理柴草堆"),
    "segment_other": ("村内道路硬化", "生产路修缮"),
    "road_note": ("路基压实完成", "雨天停工两日", "水稳层施工中", "沥青面层摊铺"),
    "road_other": ("村内主街", "龙山路"),
    "section": ("K0+000—K1+500", "K1+500—K3+000", "镇驻地段", "景区段"),
    "lighting_note": ("部分路段灯杆倾斜", "线路老化，已报修", "亮灯正常"),
    "square_note": ("器材螺丝松动，已通知维修", "广场地面有破损", "器材完好"),
    "issues": ("消防通道堵塞，已责令整改", "电动车违规充电，已劝导", "夜间照明不足，已报告村委",
               "发现可疑人员，已核查身份"),
    "police_note": ("本月开展电诈专项打击", "辖区治安总体平稳"),
    "suggestion": ("希望增加路灯", "建议加快道路硬化", "希望村里多放电影", "建议卫生室延长服务时间",
                   "希望加强夜间巡逻", "垃圾清运不够及时", "希望增加健身器材", "低保政策宣传不够"),
    "publicity_note": ("已在“山水龙阳”公众号发布",),
    "show": ("送戏下乡进{village}：柳琴戏《喝面叶》", "送戏下乡进{village}：柳琴戏《小姑贤》",
             "送戏下乡进{village}：吕剧《李二嫂改嫁》", "送戏下乡进{village}：山东梆子《穆桂英挂帅》",
             "送戏下乡进{village}：豫剧《朝阳沟》"),
    "film": ("公益电影：《我和我的祖国》", "公益电影：《长津湖》", "公益电影：《流浪地球》",
             "公益电影：《你好，李焕英》", "公益电影：《我和我的家乡》", "公益电影：《中国医生》",
             "公益电影：《万里归途》", "科教片：《农村安全用电》", "科教片：《小麦病虫害防治》"),
}  # fmt: skip
_FESTIVALS = {"eryueer": "{village}二月二龙抬头民俗活动", "womens_day": "三八妇女节健步走",
              "youth_day": "五四青年志愿服务活动", "chongyang": "重阳节敬老登山活动",
              "climbing": "全民健身登山比赛", "picking": "龙阳采摘节",
              "square_dance": "{village}广场舞展演", "other": "{village}村民文艺汇演"}  # fmt: skip
_PUBLICITY = {
    "police": ("满意龙阳｜派出所反电诈宣传进村入户", "满意龙阳｜平安龙阳 夜巡守护"),
    "health_center": ("满意龙阳｜老年人免费查体持续进行", "满意龙阳｜医保政策进万家"),
    "school_district": ("满意龙阳｜教师家访暖人心", "满意龙阳｜龙阳学区家长接待日"),
    "civil_affairs": ("满意龙阳｜低保核查入户走访", "满意龙阳｜困难群众临时救助及时到位"),
    "sanitation": ("满意龙阳｜“三堆两垛”集中清理", "满意龙阳｜村庄清洁行动见成效"),
    "culture_sports": ("满意龙阳｜送戏下乡走进村庄", "满意龙阳｜一村一月一场电影"),
    "social_affairs": ("满意龙阳｜群众满意度提升工程月调度", "满意龙阳｜倾听民声解民忧"),
    "social_security": ("满意龙阳｜公益性岗位“回头看”", "满意龙阳｜就业帮扶政策解读"),
}
# weekly chance that a department sends at least one item (police and sanitation never miss)
_PUBLICITY_WEEKS = {"police": 1.0, "health_center": 0.96, "school_district": 0.9,
                    "civil_affairs": 0.93, "sanitation": 1.0, "culture_sports": 0.97,
                    "social_affairs": 0.95, "social_security": 0.82}  # fmt: skip
_PLACES = {"school": ("村小学门口", "学区中心校周边"), "market": ("集贸市场", "农贸大集"),
           "hotel": ("镇区宾馆",), "internet_cafe": ("镇区网吧",),
           "scenic": ("龙山景区入口", "景区停车场"), "factory": ("村办企业", "加工厂"),
           "other": ("村委会周边", "主要路口")}  # fmt: skip
# 三夏 harvest waste in Q2, 三秋 harvest waste and weeds in Q3, the winter clean-up in Q4
_SEASONAL = {"q1": ("winter_cleanup",), "q2": ("summer_harvest_waste",),
             "q3": ("autumn_harvest_waste", "weeds"), "q4": ("winter_cleanup",)}  # fmt: skip
_BASE_CAMPAIGN = ("piles_stacks", "ponds_ditches", "lanes", "entry_roads")


def _link(host: str, n: int) -> Calc:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return Calc(lambda c: host + "".join(c.rng.choice(alphabet) for _ in range(n)))


def _broken(c: _Ctx) -> int:
    return max(0, (c.get("lamps_installed") or 0) - (c.get("lamps_working") or 0))


def _post_conclusion(c: _Ctx) -> str:
    # the form refuses "compliant" unless the holder is on duty and meets the rules
    if c.get("meets_rules") == "yes" and c.get("on_duty") == "yes":
        return "compliant"
    return c.rng.choice(("rectify", "dismiss"))


def _members_verified(c: _Ctx) -> int:
    on_file = int(c.get("members_on_file") or 0)
    return max(0, on_file - (c.rng.random() < 0.03))  # now and then one member is away


def _repair_needed(c: _Ctx) -> str:
    return "yes" if any(i.get("condition") != "good" for i in c.items("equipment")) else "no"


def _festival(kind: str, villages: int, when: str | None = None) -> tuple[str, int, dict[str, str]]:
    return (when or kind, villages, {"event_type": "festival", "festival_kind": kind})


RULES: dict[str, FormRule] = {
    "home_visit": FormRule(
        plan=(Roster("students.csv", "student", rounds=(("01-04", "07-12"), ("02-20", "12-15")),
                     miss=(0.002, 0.03), columns={"class_id": "class"}, gap=30),),
        fields={
            "mode": W({"home": 45, "phone": 30, "parent_meeting": 15, "reception_day": 10}),
            "topics": Multi(1, 3),
            "feedback": Text(_SAY["feedback"], p=0.6),
            "follow_up": W({"yes": 8, "no": 92}),
            "follow_up_note": When(("follow_up",), _YES, Text(_SAY["follow_up_note"])),
        },
        who=("teacher", "class_id"), hours=(8, 20), subject="student",
    ),
    "health_checkup": FormRule(
        plan=(Roster("residents.csv", "resident", rounds=(("03-01", "11-25"),),
                     miss=(0.004, 0.06), again=0.02),),
        fields={
            "items": Multi(2, 6, always=("vitals", "blood_sugar")),
            "referral": W({"yes": 5, "no": 95}),
            "referral_note": When(("referral",), _YES, Text(_SAY["referral_note"])),
            "policy_explained": Slow(W({"yes": 997, "no": 3}), W({"yes": 96, "no": 4})),
            "leaflet_given": W({"yes": 97, "no": 3}),
        },
        who=("doctor", "village"), hours=(7, 17), subject="resident",
    ),
    "welfare_post_review": FormRule(
        plan=(Roster("welfare_posts.csv", "post_holder", rounds=(("01-10", "09-05"),),
                     miss=(0.0, 0.03)),),
        fields={
            "on_duty": W({"yes": 97, "no": 3}),
            "meets_rules": W({"yes": 96, "no": 4}),
            "problems": When(("meets_rules", "on_duty"), ("no",), Multi(1, 2)),
            "conclusion": Calc(_post_conclusion),
            "note": Text(_SAY["welfare_note"], p=0.2),
        },
        who=("shebao", "pool:4"), subject="post_holder", approve=0.5,
    ),
    "dibao_verification": FormRule(
        plan=(Roster("dibao_households.csv", "household", rounds=(("02-01", "10-05"),),
                     miss=(0.0, 0.05), columns={"members_on_file": "members"}),),
        fields={
            "members_verified": Calc(_members_verified),
            "income_change": W({"none": 80, "up": 12, "down": 8}),
            "assets_change": W({"none": 92, "up": 6, "down": 2}),
            "conclusion": W({"maintain": 86, "adjust": 8, "stop": 3, "new": 3}),
            "photo": Photo(0.9),
            "location": Point(0.95),
            "note": Text(_SAY["dibao_note"], p=0.3),
        },
        who=("minzheng", "pool:6"), subject="household", approve=0.6,
    ),
    "sanitation_sweep": FormRule(
        plan=(Periodic("quarter", within=(0.0, 0.85), slow_skip=0.15),
              Periodic("quarter", prob=0.1, within=(0.4, 1.0))),  # a second sweep now and then
        fields={
            "quarter": Calc(lambda c: f"q{(c.visit.filled.month - 1) // 3 + 1}"),  # of today()
            "campaign": By(("quarter",), {q: Multi(1, 3, pool=_BASE_CAMPAIGN, always=s)
                                          for q, s in _SEASONAL.items()}),
            "has_findings": Slow(W({"yes": 55, "no": 45}), W({"yes": 75, "no": 25})),
            "kind": W({"manure_pile": 12, "firewood_pile": 18, "garbage_pile": 20,
                       "straw_stack": 14, "hay_stack": 6, "pond_ditch": 10, "lane_garbage": 12,
                       "weeds": 6, "other": 2}),
            "location": Point(0.9),
            "photo": Photo(0.8),
            "status": W({"cleared": 65, "to_rectify": 35}),
            "rectify_by": When(("status",), ("to_rectify",), DaysAfter("check_date", 5, 30)),
            "responsible": When(("status",), ("to_rectify",), Text(_SAY["responsible"], p=0.8)),
            "score": Slow(Int(75, 98), Int(60, 88)),
            "note": Text(_SAY["sweep_note"], p=0.3),
        },
        repeats={"findings": Repeat((1, 4), when=(("has_findings",), _YES))},
        who=("cadre", "village"), subject="village",
        followup=Followup("findings", "status", "to_rectify", "cleared", "rectify_by",
                          share=(0.9, 0.45), clear=("rectify_by", "responsible")),
    ),
    "road_progress": FormRule(
        plan=(Periodic("week", per="segment", closing=True,
                       prob={**dict.fromkeys(_PLANNED_KM, 0.55), "other": 0.08},
                       windows={s: (a, _md_plus(b, 7)) for s, (a, b) in _ROAD_WORK.items()}),),
        fields={
            "segment_other": When(("segment",), ("other",), Text(_SAY["segment_other"])),
            "planned_km": Map("segment", _PLANNED_KM, _OTHER_KM),
            "km_done": Ramp("segment", _ROAD_KNOTS),
            "stage": Bands("km_done", "planned_km", _STAGES),
            "built_trace": Trace("segment", "km_done", "planned_km", p=0.4),
            "photo": Photo(0.7),
            "note": Text(_SAY["road_note"], p=0.3),
        },
        who=("jianshe", "pool:2"), approve=0.3,
    ),
    "street_lighting": FormRule(
        plan=(Periodic("month", per="road", within=(0.1, 0.9),
                       prob={"dongzhu_road": 1.0, "tourism_road": 1.0, "other": 0.15},
                       windows={"tourism_road": ("03-01", "12-31")}),),
        fields={
            "road_other": When(("road",), ("other",), Text(_SAY["road_other"])),
            "section": Text(_SAY["section"], p=0.5),
            "lamps_installed": Ramp("road", _LAMPS, default=(("01-01", 20.0), ("12-31", 40.0)),
                                    digits=0),
            "lamps_working": Share("lamps_installed", (("01-01", 0.86), ("11-20", 1.0)),
                                   jitter=0.03),
            "has_faults": Calc(lambda c: "yes" if _broken(c) else "no"),
            "fault_kind": W({"lamp_out": 70, "damaged_pole": 10, "cable": 15, "other": 5}),
            "location": RoadPoint("road", p=0.8),
            "photo": Photo(0.5),
            "note": Text(_SAY["lighting_note"], p=0.3),
        },
        repeats={"faults": Repeat(lambda c: min(_broken(c), c.rng.randint(1, 4)),
                                  when=(("has_faults",), _YES))},
        who=("cadre", "pool:4"), hours=(19, 22),
    ),
    "fitness_square": FormRule(
        plan=(Periodic("quarter", prob=0.6, within=(0.05, 0.95), slow_skip=0.2),),
        fields={
            "square_present": Becomes("no", "yes", already=0.8, window=("03-01", "11-30"),
                                      never=(0.05, 0.5)),
            "square_upgraded": When(("square_present",), _YES,
                                    Becomes("no", "yes", window=("04-01", "08-31"), count=5)),
            "location": When(("square_present",), _YES, Point(0.9)),
            "equipment_present": Becomes("no", "yes", already=0.85, window=("03-01", "11-30"),
                                         never=(0.05, 0.4)),
            "item_kind": W({"walker": 3, "space_walker": 3, "waist_twister": 3, "bars": 2,
                            "rider": 2, "table_tennis": 2, "basketball": 1, "other": 1}),
            "condition": Slow(W({"good": 90, "damaged": 8, "missing": 2}),
                              W({"good": 76, "damaged": 18, "missing": 6})),
            "photo": Photo(0.3),
            "repair_needed": Calc(_repair_needed),
            "note": Text(_SAY["square_note"], p=0.2),
        },
        repeats={"equipment": Repeat((3, 8), when=(("equipment_present",), _YES))},
        who=("wenti", "pool:3"), subject="village",
    ),
    "culture_event": FormRule(
        plan=(
            Periodic("year", presets={"event_type": "show"}, start="04-01", end="11-30",
                     slow_skip=0.3),
            Periodic("month", presets={"event_type": "film"}, start="04-01", prob=0.93,
                     slow_skip=0.35, within=(0.05, 0.95)),
            Dated((_festival("eryueer", 6), _festival("womens_day", 8, "03-08"),
                   _festival("youth_day", 4, "05-04"), _festival("picking", 5, "06-10"),
                   _festival("square_dance", 6, "07-22"), _festival("climbing", 4, "10-02"),
                   _festival("chongyang", 8))),
        ),
        fields={
            "festival_kind": When(("event_type",), ("festival",), W(dict.fromkeys(_FESTIVALS, 1))),
            "title": By(("festival_kind", "event_type"),
                        {**{k: Text((v,)) for k, v in _FESTIVALS.items()},
                         "show": Text(_SAY["show"]), "film": Text(_SAY["film"])}),
            "audience": Maybe(0.9, By(("event_type",), {"show": Int(150, 600), "film": Int(30, 180)},
                                      default=Int(50, 400))),
            "photo": Photo(0.8),
            "location": Point(0.7),
        },
        who=("wenti", "pool:3"), hours=(14, 20), approve=0.2,
    ),
    "police_patrol": FormRule(
        plan=(Periodic("month", count=(1, 3)),),
        fields={
            "place_kind": Maybe(0.6, W({"school": 3, "market": 3, "hotel": 1, "internet_cafe": 1,
                                        "scenic": 1, "factory": 2, "other": 1})),
            "place_name": By(("place_kind",), {k: Text(v) for k, v in _PLACES.items()}),
            "issues_found": W({"yes": 8, "no": 92}),
            "issues": When(("issues_found",), _YES, Text(_SAY["issues"])),
            "location": Point(0.9),
            "photo": Photo(0.3),
        },
        who=("police", "pool:12"), hours=(9, 23),
    ),
    "police_monthly": FormRule(
        plan=(Periodic("month", per=None, previous=True, within=(0.0, 0.15)),),
        fields={
            "small_reported": Int(9, 20),
            "small_solved": Share("small_reported", 0.93, jitter=0.06),
            "public_order_cases_ly": Int(10, 18),
            "public_order_cases": Share("public_order_cases_ly", 0.64, jitter=0.15),
            "criminal_cases_ly": Int(6, 12),
            "criminal_cases": Share("criminal_cases_ly", 0.78, jitter=0.15),  # short of −30%
            "preventable_cases_ly": Int(14, 24),
            "preventable_cases": Share("preventable_cases_ly", 0.62, jitter=0.12),
            "note": Text(_SAY["police_note"], p=0.3),
        },
        who=("police", "pool:1"), approve=0.5,
    ),
    "satisfaction_survey": FormRule(
        plan=(Periodic("month", count=(4, 6), within=(0.3, 0.85)),),
        fields={
            "sat_environment": Likert(3.9, 3.3), "sat_security": Likert(4.3, 3.9),
            "sat_medical": Likert(4.1, 3.7), "sat_culture": Likert(4.0, 3.4),
            "sat_education": Likert(4.2, 3.9), "sat_assistance": Likert(3.8, 3.3),
            "policy_aware": Slow(W({"yes": 93, "no": 7}), W({"yes": 84, "no": 16})),
            "suggestion": Text(_SAY["suggestion"], p=0.3),
            "needs_follow_up": When(("suggestion",), None, W({"yes": 6, "no": 4})),
        },
        who=("cadre", "village"), hours=(9, 19),
    ),
    "publicity_item": FormRule(
        plan=(Periodic("week", per="department", count=(1, 2), prob=_PUBLICITY_WEEKS),),
        fields={
            "title": By(("department",), {k: Text(v) for k, v in _PUBLICITY.items()}),
            "channel": W({"wechat_account": 6, "wechat_group": 3, "short_video": 1}),
            "link": By(("channel",), {"wechat_account": _link("https://mp.weixin.qq.com/s/", 22),
                                      "short_video": _link("https://v.douyin.com/", 8)}),
            "note": Text(_SAY["publicity_note"], p=0.2),
        },
        who=("xuanchuan", "department"), hours=(9, 18),
    ),
}  # fmt: skip


# ---- personal numbers typed into notes (invented; see _Sim._plant_numbers) -------------------

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


# ---- the simulation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedYear:
    """A plan year of submissions as it stood at the end of ``as_of``.

    ``records`` per form in submission order; the planted problems, by instance ID, so tests
    and demos can tell the data checks found them: ``bad_gps`` (-> "accuracy" or
    "wrong_village"), ``duplicates`` (copy -> original), ``planted_numbers`` (personal numbers
    typed into notes that reach the follow-up lists: every output must show them masked).
    """

    year: int
    as_of: date
    seed: int
    records: dict[str, list[Record]]
    slow_villages: tuple[str, ...]
    bad_gps: dict[str, str]
    duplicates: dict[str, str]
    edited: tuple[str, ...]
    # instance ID -> the invented ID number or mobile typed into a note, in one of the ways
    # people type them (spaced, dotted, full-width, +86 …), for the masker to catch
    planted_numbers: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {form_id: len(recs) for form_id, recs in self.records.items()}

    def all_records(self) -> Iterator[Record]:
        for recs in self.records.values():
            yield from recs

    def review_states(self) -> dict[str, int]:
        states = Counter(r.review_state or "received" for r in self.all_records())
        return dict(sorted(states.items()))

    def overdue_findings(self) -> int:
        """Sanitation findings still to rectify whose rectify-by day has passed."""
        n = 0
        for rec in self.records.get("sanitation_sweep", []):
            for item in rec.data.get("findings") or []:
                due = item.get("rectify_by")
                n += item.get("status") == "to_rectify" and bool(due) and due < self.as_of.isoformat()  # fmt: skip
        return n

    def summary(self) -> dict[str, Any]:
        """Counts for a progress line or a test: records per form and the planted problems."""
        return {
            "records": sum(self.counts.values()),
            "forms": self.counts,
            "slow_villages": len(self.slow_villages),
            "bad_gps": len(self.bad_gps),
            "duplicates": len(self.duplicates),
            "edited": len(self.edited),
            "review_states": self.review_states(),
            "overdue_findings": self.overdue_findings(),
        }


@dataclass
class _Draft:
    form: _Form
    iid: str
    data: dict[str, Any]
    start: datetime
    end: datetime
    submitted: datetime
    village: str | None
    photos: list[str]
    updated: datetime | None = None
    review: str | None = None


class _Form:
    """A schema compiled with its rule: fields by name, the spec of each, the village field."""

    def __init__(self, sim: _Sim, schema: FormSchema, rule: FormRule) -> None:
        self.sim, self.schema, self.rule, self.form_id = sim, schema, rule, schema.form_id
        self.fields = {f.name: f for f in schema.fields}
        outer = [r for r in schema.repeats if not any(r.startswith(o + "/") for o in schema.repeats)]  # fmt: skip
        self.repeats = outer  # nested repeats stay empty
        self.top = {f.name: f for f in schema.fields if f.repeat is None and not f.meta}
        self.in_repeat = {r: {f.name: f for f in schema.fields if f.repeat == r} for r in outer}
        self.village_field = next(
            (f.name for f in self.top.values() if f.type == "select_one" and f.list_name == "village"), None,
        )  # fmt: skip
        dates = [f for f in self.top.values() if f.type == "date"]
        self.date_field = next((f.name for f in dates if f.required), dates[0].name if dates else None)  # fmt: skip
        self.specs = {f.name: rule.fields.get(f.name) or self._default(f) for f in schema.fields}
        self.geopoints = [f for f in schema.fields if f.type == "geopoint" and (f.repeat is None or f.repeat in outer)]  # fmt: skip
        self.subject = rule.subject if rule.subject in self.fields else None
        # How to lay the answers out, in the form's order: groups nest, repeats are lists.
        self.steps: list[tuple[str, str, list[str]]] = []
        for f in schema.fields:
            if f.repeat is None:
                self.steps.append(("meta" if f.meta else "value", f.name, f.path.split("/")))
            elif f.repeat in self.in_repeat and not any(s[1] == f.repeat for s in self.steps):
                self.steps.append(("repeat", f.repeat, f.repeat.split("/")))
        self.steps += [("repeat", r, r.split("/")) for r in outer if not self.in_repeat[r]]
        self.item_steps = {
            r: [(f.name, f.path[len(r) + 1 :].split("/")) for f in fields.values()]
            for r, fields in self.in_repeat.items()
        }

    def _default(self, f: Field) -> Spec:
        # Type-driven answers for whatever the rule does not mention.
        blank_ok = not f.required
        if f.meta:
            return SKIP
        if f.name == self.date_field or f.type == "date":
            return DAY
        kinds: dict[str, Spec] = {
            "select_one": W(dict.fromkeys(f.choices or {}, 1)),
            "select_multiple": Multi(1, 3),
            "select_one_from_file": _Pick(),
            "select_multiple_from_file": _Pick(),
            "integer": Int(0, 20),
            "decimal": Dec(0, 10),
            "geopoint": Point(),
            "image": Photo(0.5 if blank_ok else 1.0),
            "text": Text(("已完成",)),
        }
        spec = kinds.get(f.type, SKIP)
        if f.type == "select_one" and f.list_name == "village":
            spec = _VillageAnswer()
        elif f.type == "select_one" and not f.choices:
            spec = SKIP
        if blank_ok and f.type in ("select_one", "select_multiple", "integer", "decimal", "text"):
            spec = Maybe(0.7 if f.type != "text" else 0.3, spec)
        return spec

    def answer(self, ctx: _Ctx, f: Field) -> Any:
        return self.specs[f.name].make(ctx, f)

    def repeat_items(self, ctx: _Ctx, repeat: str) -> list[_Ctx]:
        name = repeat.rsplit("/", 1)[-1]
        how = self.rule.repeats.get(name) or self.rule.repeats.get(repeat) or Repeat()
        if how.when is not None:
            fields, values = how.when
            answers = [ctx.get(n) for n in fields]
            relevant = (
                any(a not in (None, "") for a in answers) if values is None else any(a in values for a in answers)
            )  # fmt: skip
            if not relevant:
                return []
        n = how.count(ctx) if callable(how.count) else ctx.rng.randint(*how.count)
        return [
            _Ctx(self, ctx.visit, ctx.rng, self.in_repeat[repeat], parent=ctx) for _ in range(n)
        ]


class _Sim:
    def __init__(self, schemas: Mapping[str, FormSchema], villages: Sequence[Village], rosters: Rosters, boundaries: Boundaries, year: int, as_of: date, seed: int) -> None:  # fmt: skip
        self.year, self.as_of, self.seed = year, as_of, seed
        self.year_start, self.year_end = date(year, 1, 1), date(year, 12, 31)
        self.codes = [v.code for v in villages]
        self.names = {v.code: v.name for v in villages}
        self.pinyin = {v.code: v.pinyin.lower().replace(" ", "") for v in villages}
        rng = random.Random(f"{seed}/villages")  # noqa: S311 (demo data, not secrets)
        self.slow = frozenset(rng.sample(self.codes, round(SLOW_SHARE * len(self.codes))))
        self.pace = {c: rng.uniform(0.6, 0.78) if c in self.slow else rng.uniform(0.93, 1.12) for c in self.codes}  # fmt: skip
        self.alt = {c: rng.uniform(55, 150) for c in self.codes}
        self.picks = {
            name: frame.astype(str).to_dict("records")
            for name, frame in pick_lists(rosters).items()
        }
        frame = boundaries.villages
        self.polygons: dict[str, Any] = {}
        for code, geom in zip(frame["code"], frame.geometry, strict=True):
            shapely.prepare(geom)
            self.polygons[str(code)] = (geom, geom.bounds)
        missing = [c for c in self.codes if c not in self.polygons]
        if missing:
            raise DataError(
                f"boundaries ({boundaries.source}) have no polygon for village(s) "
                f"{', '.join(missing[:10])}; pass boundaries covering every village "
                "(illustrative_boundaries(villages) draws them)"
            )
        self._boundaries = boundaries
        self._roads: dict[str, Any] | None = None
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._devices: dict[str, str] = {}
        self.forms = {fid: _Form(self, s, RULES.get(fid) or self._default_rule()) for fid, s in sorted(schemas.items())}  # fmt: skip

    @staticmethod
    def _default_rule() -> FormRule:
        return FormRule(plan=(Periodic("month", count=(1, 2)),))

    # -- calendar --
    def day(self, month_day: str) -> date:
        month, day = (int(x) for x in month_day.split("-"))
        return date(self.year, month, day)

    def festival(self, when: str) -> date:
        if when in LUNAR_DAYS:
            when = LUNAR_DAYS[when].get(self.year, _LUNAR_FALLBACK[when])
        return self.day(when)

    def periods(self, kind: str, first: date, last: date) -> list[tuple[date, date]]:
        """Calendar periods of the year overlapping first–last, clipped to it."""
        if kind not in _PERIODS:
            raise ValueError(f"unknown period {kind!r}; use one of {', '.join(_PERIODS)}")
        out: list[tuple[date, date]] = []
        if kind == "year":
            starts = [self.year_start]
        elif kind == "quarter":
            starts = [date(self.year, m, 1) for m in (1, 4, 7, 10)]
        elif kind == "month":
            starts = [date(self.year, m, 1) for m in range(1, 13)]
        else:
            monday = self.year_start - timedelta(days=self.year_start.weekday())
            starts = [monday + timedelta(weeks=k) for k in range(54)]
        for i, p0 in enumerate(starts):
            p1 = starts[i + 1] - timedelta(days=1) if i + 1 < len(starts) else self.year_end
            if kind == "week":
                p1 = p0 + timedelta(days=6)
            a, b = max(p0, first, self.year_start), min(p1, last, self.year_end)
            if a <= b:
                out.append((a, b))
        return out

    def free_day(self, form_id: str, key: str | None, day: date, first: date, last: date) -> date | None:  # fmt: skip
        """``day``, or the next day of first–last not yet taken by the series ``key``."""
        taken = self._memo.setdefault(("days", form_id, key), set())
        span = (last - first).days + 1
        for k in range(span):
            candidate = first + timedelta(days=((day - first).days + k) % span)
            if candidate not in taken:
                taken.add(candidate)
                return candidate
        return None

    def pick_index(self, file: str, cols: tuple[str, ...]) -> dict[tuple[str, ...], list[dict[str, str]]]:  # fmt: skip
        """A pick list's rows by their values in ``cols`` (built once per file and columns)."""
        key = ("pick", file, cols)
        if key not in self._memo:
            index: dict[tuple[str, ...], list[dict[str, str]]] = defaultdict(list)
            for row in self.picks.get(file, []):
                index[tuple(row[c] for c in cols)].append(row)
            self._memo[key] = dict(index)
        return self._memo[key]

    # -- state of subjects over the year --
    def curve(self, form_id: str, name: str, subject: str, knots: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:  # fmt: skip
        key = ("curve", form_id, name, subject)
        if key not in self._memo:
            (a, v0), (b, v1) = knots[0], knots[-1]
            rng = random.Random(f"{self.seed}/{form_id}/{name}/{subject}")  # noqa: S311
            t0, t1 = self.day(a).toordinal(), self.day(b).toordinal()
            ts = sorted(rng.uniform(0.15, 0.85) for _ in range(2))
            vs = sorted(min(0.95, max(0.05, t + rng.uniform(-0.15, 0.15))) for t in ts)
            mid = tuple((_md(date.fromordinal(round(t0 + t * (t1 - t0)))), v0 + v * (v1 - v0)) for t, v in zip(ts, vs, strict=True))  # fmt: skip
            self._memo[key] = ((a, v0), *mid, (b, v1))
        return self._memo[key]

    def switches(self, form_id: str, name: str, how: Becomes) -> dict[str, date | None]:
        key = ("switch", form_id, name)
        if key not in self._memo:
            rng = random.Random(f"{self.seed}/{form_id}/{name}/switch")  # noqa: S311
            a, b = self.day(how.window[0]), self.day(how.window[1])
            out: dict[str, date | None] = {}
            if how.count is not None:
                normal = [c for c in self.codes if c not in self.slow]
                chosen = set(rng.sample(normal, min(how.count, len(normal))))
                for c in self.codes:
                    out[c] = (
                        a + timedelta(days=rng.randint(0, (b - a).days)) if c in chosen else None
                    )
            else:
                for c in self.codes:
                    if rng.random() < how.already:
                        out[c] = self.year_start - timedelta(days=1)
                    elif rng.random() < how.never[c in self.slow]:
                        out[c] = None
                    else:
                        span = (b - a).days / self.pace[c]
                        out[c] = a + timedelta(days=int(rng.random() * span))
            self._memo[key] = out
        return self._memo[key]

    # -- places --
    def point_in(self, village: str, rng: random.Random) -> tuple[float, float]:
        geom, (x0, y0, x1, y1) = self.polygons[village]
        while True:
            x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            if shapely.contains_xy(geom, x, y):
                return y, x

    def altitude(self, village: str | None, rng: random.Random) -> float:
        return self.alt.get(village or "", 90.0) + rng.uniform(-6, 6)

    def geopoint(self, lat: float, lon: float, village: str | None, rng: random.Random, accuracy: float | None = None) -> str:  # fmt: skip
        # Phones report 3–30 m outdoors; the form refuses worse than 50 m.
        acc = accuracy if accuracy is not None else min(30.0, 3.0 + rng.expovariate(1 / 5))
        return f"{lat:.7f} {lon:.7f} {self.altitude(village, rng):.1f} {acc:.1f}"

    def road_line(self, road: Any) -> Any:
        if self._roads is None:
            roads = illustrative_roads(self._boundaries)
            self._roads = dict(zip(roads["segment_id"], roads.geometry, strict=True))
        return self._roads.get(road)

    # -- the schedule --
    def visit(self, day: date, village: str | None, values: Mapping[str, Any], rng: random.Random, filled: date | None = None) -> _Visit:  # fmt: skip
        if filled is None:
            # most forms are filled on the day; some a few days later, from notes
            filled = day if rng.random() < 0.93 else day + timedelta(days=rng.randint(1, 3))
        return _Visit(day, filled, village, dict(values))

    # -- running --
    def run(self) -> SimulatedYear:
        cutoff = datetime.combine(self.as_of, time(23, 59, 59, 999000), SHANGHAI)
        drafts: dict[str, list[_Draft]] = {}
        for form_id, form in self.forms.items():
            rng = random.Random(f"{self.seed}/{form_id}")  # noqa: S311
            drafts[form_id] = [
                self._fill(form, v, rng) for plan in form.rule.plan for v in plan.visits(self, form, rng)
            ]  # fmt: skip
        rng = random.Random(f"{self.seed}/planted")  # noqa: S311
        duplicates = self._duplicate(drafts, rng)
        bad_gps = self._spoil_gps(drafts, rng)
        numbers = self._plant_numbers(drafts)
        edited: list[str] = []
        records: dict[str, list[Record]] = {}
        for form_id, items in drafts.items():
            form = self.forms[form_id]
            items.sort(key=lambda d: (d.submitted, d.iid))
            # Decided for the whole year, applied up to the cut-off: an earlier as-of date sees
            # a prefix of the same year.
            frng = random.Random(f"{self.seed}/{form_id}/after")  # noqa: S311
            for d in items:
                self._afterwards(form, d, frng, cutoff, d.iid in bad_gps)
            kept = [d for d in items if d.submitted <= cutoff]
            edited.extend(d.iid for d in kept if d.review == EDITED)
            records[form_id] = [_record(d) for d in kept]
        kept_ids = {r.instance_id for recs in records.values() for r in recs}
        return SimulatedYear(
            year=self.year, as_of=self.as_of, seed=self.seed, records=records,
            slow_villages=tuple(c for c in self.codes if c in self.slow),
            bad_gps={k: v for k, v in bad_gps.items() if k in kept_ids},
            duplicates={k: v for k, v in duplicates.items() if k in kept_ids},
            edited=tuple(edited),
            planted_numbers={k: v for k, v in numbers.items() if k in kept_ids},
        )  # fmt: skip

    def _fill(self, form: _Form, visit: _Visit, rng: random.Random) -> _Draft:
        rule = form.rule
        hour = rng.uniform(*rule.hours)
        start = datetime.combine(visit.filled, time(0), SHANGHAI) + timedelta(hours=hour)
        start = start.replace(microsecond=rng.randrange(1000) * 1000)
        end = start + timedelta(minutes=rng.uniform(*rule.minutes))
        if rng.random() < 0.85:
            submitted = end + timedelta(minutes=rng.uniform(0.1, 90))
        else:  # offline: sent at the next sync, a day or three later
            submitted = end + timedelta(days=rng.randint(1, 3), hours=rng.uniform(-2, 2))
        if form.date_field:
            visit.values.setdefault(form.date_field, visit.day.isoformat())
        ctx = _Ctx(form, visit, rng, form.top)
        ctx.start = start
        iid = "uuid:" + str(uuid.UUID(int=rng.getrandbits(128), version=4))
        username = self._username(form, ctx, rng)
        meta = {
            "start": _local(start), "end": _local(end), "today": visit.filled.isoformat(),
            "deviceid": self._device(username), "username": username, "instanceID": iid,
        }  # fmt: skip
        data: dict[str, Any] = {}
        for kind, name, parts in form.steps:
            if kind == "value":
                value = ctx.get(name)
            elif kind == "repeat":
                value = [_item_data(form, name, item) for item in ctx.items(name)]
            elif name == "instanceName":
                value = self._instance_name(form, ctx)
            else:
                value = meta.get(name)
            _put(data, parts, value)
        village = ctx.get(form.village_field) if form.village_field else ctx.get("village")
        return _Draft(form, iid, data, start, end, submitted, village, list(ctx.photos))

    def _username(self, form: _Form, ctx: _Ctx, rng: random.Random) -> str:
        role, key = form.rule.who
        if key.startswith("pool:"):
            return f"{role}-{rng.randint(1, int(key[5:])):02d}"
        value = ctx.get(key)
        if key == form.village_field or key == "village":
            value = self.pinyin.get(value or "", value)
        return f"{role}-{value}" if value else f"{role}-01"

    def _device(self, username: str) -> str:
        # one phone per user, the same all year: Collect's "collect:" + 16 characters
        if username not in self._devices:
            digest = hashlib.sha256(f"{self.seed}/{username}".encode()).digest()
            self._devices[username] = "collect:" + "".join(_B62[b % 62] for b in digest[:16])
        return self._devices[username]

    def _instance_name(self, form: _Form, ctx: _Ctx) -> str:
        village = ctx.get(form.village_field) if form.village_field else ctx.get("village")
        subject = ctx.get(form.subject) if form.subject and form.subject != form.village_field else None  # fmt: skip
        parts = [self.names.get(village or "", ""), subject, form.schema.title, ctx.day.isoformat()]
        return " · ".join(str(p) for p in parts if p)

    def _duplicate(self, drafts: dict[str, list[_Draft]], rng: random.Random) -> dict[str, str]:
        """The same subject sent twice on one day (two staff, or a resend as a new form)."""
        out: dict[str, str] = {}
        for form_id, items in drafts.items():
            form = self.forms[form_id]
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

    def _spoil_gps(self, drafts: dict[str, list[_Draft]], rng: random.Random) -> dict[str, str]:
        """A few points too coarse (> 50 m: an old app or a web form) or in another village."""
        eligible = [
            (d, f) for form_id in sorted(drafts) if self.forms[form_id].village_field
            for d in drafts[form_id] for f in self.forms[form_id].geopoints if _geo_slots(d.data, f)
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
                holder[key] = self.geopoint(lat, lon, d.village, rng, accuracy=rng.uniform(55, 250))
                out[d.iid] = "accuracy"
            else:
                other = rng.choice([c for c in self.codes if c != d.village])
                lat, lon = self.point_in(other, rng)
                holder[key] = self.geopoint(lat, lon, other, rng)
                out[d.iid] = "wrong_village"
        return out

    def _plant_numbers(self, drafts: dict[str, list[_Draft]]) -> dict[str, str]:
        """A few notes that reach the follow-up lists get an invented ID number or mobile,
        typed each in another way (:data:`_TYPED`): the demo's outputs then exercise the
        masker. Chosen among the first half year's, whatever the as-of date, so an earlier
        as-of date sees the same ones and any report from July on shows them all."""
        half = datetime.combine(date(self.year, 7, 1), time(0), SHANGHAI)
        rng = random.Random(f"{self.seed}/numbers")  # noqa: S311 (invented numbers)
        eligible: list[tuple[_Draft, str]] = []
        for form_id, name, when in _NOTE_FIELDS:
            form = self.forms.get(form_id)
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

    def _afterwards(self, form: _Form, d: _Draft, rng: random.Random, cutoff: datetime, bad_gps: bool) -> None:  # fmt: skip
        """Edits and reviews that happened by the cut-off (Central: updatedAt, reviewState)."""
        rule = form.rule
        fu = rule.followup
        if fu is not None:
            slow = d.village in self.slow
            closed: list[tuple[dict[str, Any], datetime]] = []
            for item in _items(d.data, fu.repeat):
                if item.get(fu.field) != fu.value or not item.get(fu.due):
                    continue
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
            texts = [f for f in form.top.values() if f.type == "text" and not f.required]
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


def simulate_year(
    schemas: Mapping[str, FormSchema],
    villages: Sequence[Village],
    rosters: Rosters,
    boundaries: Boundaries,
    *,
    year: int,
    as_of: date,
    seed: int = 0,
) -> SimulatedYear:
    """A realistic plan year of submissions for every form in ``schemas``, up to ``as_of``.

    The same arguments give the same records, byte for byte. ``rosters`` give the subjects
    (students, residents, post holders, households) and the forms' pick lists;
    ``boundaries`` the village polygons every geopoint falls in (the illustrative ones will
    do). Forms not in :data:`RULES` get monthly submissions per village and type-driven
    answers.

    Records are canonical (:class:`~pipelines.records.Record`) as the Central source yields
    them: answers nested by group, repeats as lists, unanswered questions as None, geopoints
    as ``lat lon alt acc``, calculates as text, ``review_state`` None for "received";
    photos are named in ``attachments`` (no bytes). Raises :class:`DataError` when a village
    has no polygon in ``boundaries``.
    """
    return _Sim(schemas, villages, rosters, boundaries, year, as_of, seed).run()


# ---- small helpers -------------------------------------------------------------------------

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _interp(knots: Sequence[tuple[str, float]], day: date) -> float:
    points = [(date(day.year, *(int(x) for x in md.split("-"))).toordinal(), v) for md, v in knots]
    t = day.toordinal()
    if t <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in pairwise(points):
        if t <= t1:
            return v0 + (v1 - v0) * (t - t0) / max(1, t1 - t0)
    return points[-1][1]


def _number(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _num_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _local(moment: datetime) -> str:
    """ODK's dateTime text: local time with milliseconds and offset."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+08:00"


def _utc(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _put(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _item_data(form: _Form, repeat: str, item: _Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, parts in form.item_steps[repeat]:
        _put(out, parts, item.get(name))
    return out


def _items(data: dict[str, Any], repeat: str) -> list[dict[str, Any]]:
    node = _get(data, repeat)
    return node if isinstance(node, list) else []


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


def _record(d: _Draft) -> Record:
    submitted = _utc(d.submitted)
    updated = _utc(d.updated) if d.updated is not None else None
    return Record(
        form_id=d.form.form_id, instance_id=d.iid, form_version=d.form.schema.version,
        submitted_at=submitted, updated_at=updated, review_state=d.review, data=d.data,
        attachments_expected=len(d.photos),
        attachments=tuple(AttachmentRef(name) for name in d.photos),
        source_version=updated or submitted,
    )  # fmt: skip
