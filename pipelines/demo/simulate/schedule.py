"""When: who fills a form on which days of the plan year.

A form's ``plan`` is a tuple of these: :class:`Roster` (every row of a pick list visited a
number of times: each student visited twice, each resident checked once …), :class:`Periodic`
(per village and period, per choice of a field, or for the town: a sanitation sweep each
quarter, a film each month, each road segment weekly) and :class:`Dated` (events on given days,
the lunar festivals among them). :class:`_Calendar` is the plan year they are laid on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.demo.simulate.engine import _Form, _Sim


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


class _Calendar:
    """The plan year's calendar: month-days, festivals, periods, and the days each series of
    submissions has taken."""

    def __init__(self, year: int) -> None:
        self.year = year
        self.year_start, self.year_end = date(year, 1, 1), date(year, 12, 31)
        self._taken: dict[tuple[str, str | None], set[date]] = {}

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
        taken = self._taken.setdefault((form_id, key), set())
        span = (last - first).days + 1
        for k in range(span):
            candidate = first + timedelta(days=((day - first).days + k) % span)
            if candidate not in taken:
                taken.add(candidate)
                return candidate
        return None

    def visit(self, day: date, village: str | None, values: Mapping[str, Any], rng: random.Random, filled: date | None = None) -> _Visit:  # fmt: skip
        if filled is None:
            # most forms are filled on the day; some a few days later, from notes
            filled = day if rng.random() < 0.93 else day + timedelta(days=rng.randint(1, 3))
        return _Visit(day, filled, village, dict(values))


def _md(day: date) -> str:
    return f"{day.month:02d}-{day.day:02d}"


def _md_plus(month_day: str, days: int) -> str:
    month, day = (int(x) for x in month_day.split("-"))
    shifted = date(2001, month, day) + timedelta(days=days)  # any non-leap year
    return _md(shifted) if shifted.year == 2001 else "12-31"
