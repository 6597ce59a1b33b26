"""What is simulated: how each field of a form gets its answer.

A :class:`Spec` answers one field from the submission being filled (:class:`_Ctx`): weighted
choices, ranges, answers that depend on other answers (``lamps_working ≤ lamps_installed``,
``rectify_by ≥ check_date``), relevance (:class:`When`), subjects' state over time (a road's
cumulative km, a square built mid-year), geopoints inside the chosen village and photos.
:data:`~pipelines.demo.simulate.rules.RULES` names the spec of a field; any other field gets a
type-driven default (``_Form._default`` in :mod:`~pipelines.demo.simulate.engine`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from forms.schema import Field

if TYPE_CHECKING:
    from pipelines.demo.simulate.engine import _Form
    from pipelines.demo.simulate.schedule import _Visit


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


class _Sometimes(Spec):
    """Answered with probability ``p`` (a field of the subclass), else blank; ``answer`` gives
    the value. With ``p`` = 1 no random number is drawn."""

    p: float

    def make(self, ctx: _Ctx, f: Field) -> Any:
        if self.p < 1.0 and ctx.rng.random() >= self.p:
            return None
        return self.answer(ctx, f)

    def answer(self, ctx: _Ctx, f: Field) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


def _relevant(ctx: _Ctx, fields: tuple[str, ...], values: tuple[str, ...] | None) -> bool:
    """XForm relevance: any of ``fields`` has one of ``values`` (None: is not blank). Every
    answer is read first, whatever the outcome, so the random draws stay the same."""
    answers = [ctx.get(n) for n in fields]
    if values is None:
        return any(a not in (None, "") for a in answers)
    return any(a in values for a in answers)


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
class Text(_Sometimes):
    """One of ``phrases`` with probability ``p``; ``{village}``, ``{m}``, ``{d}`` are filled."""

    phrases: tuple[str, ...]
    p: float = 1.0

    def answer(self, ctx: _Ctx, f: Field) -> Any:
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
        return self.spec.make(ctx, f) if _relevant(ctx, self.fields, self.values) else None


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
class Point(_Sometimes):
    """A geopoint inside the submission's village (anywhere in the town without one)."""

    p: float = 1.0

    def answer(self, ctx: _Ctx, f: Field) -> Any:
        village = ctx.village or ctx.rng.choice(ctx.sim.codes)
        lat, lon = ctx.sim.point_in(village, ctx.rng)
        return ctx.sim.geopoint(lat, lon, village, ctx.rng)


@dataclass(frozen=True)
class RoadPoint(_Sometimes):
    """A geopoint on the road named by another answer (a lamp's fault on 东朱路)."""

    road: str
    p: float = 1.0

    def answer(self, ctx: _Ctx, f: Field) -> Any:
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
class Photo(_Sometimes):
    """A photo file name as ODK Collect makes it (milliseconds since the epoch)."""

    p: float = 1.0

    def answer(self, ctx: _Ctx, f: Field) -> Any:
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
