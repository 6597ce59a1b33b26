"""Running the simulation: a deterministic, seeded plan year of submissions for every form.

:func:`simulate_year` fills every form the way the town's staff would over a year, driven by
the compiled forms' schemas: each field gets a value valid for its type and choices by default,
and :data:`~.rules.RULES` (a table, one entry per form) adds what makes the year realistic:

- *who and when* (``plan``, :mod:`.schedule`): per roster row (each student visited twice,
  each resident checked once …), per village and period (a sanitation sweep each quarter, a
  film each month …), per choice of a field (each road segment, each department), or on dated
  events (festivals);
- *what* (``fields``, :mod:`.spec`): weighted choices, ranges, answers that depend on other
  answers (``lamps_working ≤ lamps_installed``, ``rectify_by ≥ check_date``), relevance
  (``When``), subjects' state over time (a road's cumulative km, a square built mid-year) and
  geopoints inside the chosen village;
- *people's habits* (:mod:`.habits`): a seeded set of slow villages that fall behind, findings
  rectified late or never, a few submissions with bad GPS or sent twice, edits and reviews;
- *rectifications* (:mod:`.fixes`): once the other forms are filled, the follow-up items the
  villages fix, each reported with the rectification form under the id the lists give it.

A form without an entry still simulates (monthly, per village when it has a village field), so
a new form needs no new code. The whole year is always generated, then cut at ``as_of``: a
record counts once it was submitted by the end of that day, and edits and reviews once they
happened. So the year as it stood on an earlier date is a prefix of the same year.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import shapely

from forms.schema import Field, FormSchema
from geo.boundaries import Boundaries
from geo.roads import illustrative_roads
from geo.villages import Village
from pipelines.analysis.followups import RECTIFICATION
from pipelines.analysis.plan import Plan, load_plan
from pipelines.analysis.rosters import Rosters, pick_lists
from pipelines.config import SHANGHAI
from pipelines.demo.simulate._data import _local, _put, _utc
from pipelines.demo.simulate.fixes import _choose, _rectifications
from pipelines.demo.simulate.habits import (
    EDITED,
    _afterwards,
    _duplicate,
    _plant_numbers,
    _slow_villages,
    _spoil_gps,
)
from pipelines.demo.simulate.rules import FormRule, rules_for
from pipelines.demo.simulate.schedule import Periodic, _Calendar, _md, _Visit
from pipelines.demo.simulate.spec import (
    DAY,
    SKIP,
    Becomes,
    Dec,
    Int,
    Maybe,
    Multi,
    Photo,
    Point,
    Repeat,
    Spec,
    Text,
    W,
    _Ctx,
    _Pick,
    _relevant,
    _VillageAnswer,
)
from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Record


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
    fixing: frozenset[int] = frozenset()  # entries reported fixed by a rectification: no edit


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
        if how.when is not None and not _relevant(ctx, *how.when):
            return []
        n = how.count(ctx) if callable(how.count) else ctx.rng.randint(*how.count)
        return [
            _Ctx(self, ctx.visit, ctx.rng, self.in_repeat[repeat], parent=ctx) for _ in range(n)
        ]


class _Sim(_Calendar):
    """One simulated year: the villages, their places and pace, the forms with their rules."""

    def __init__(self, schemas: Mapping[str, FormSchema], villages: Sequence[Village], rosters: Rosters, boundaries: Boundaries, year: int, as_of: date, seed: int, plan: Plan) -> None:  # fmt: skip
        super().__init__(year)
        self.as_of, self.seed = as_of, seed
        self.codes = [v.code for v in villages]
        self.names = {v.code: v.name for v in villages}
        self.pinyin = {v.code: v.pinyin.lower().replace(" ", "") for v in villages}
        rng = random.Random(f"{seed}/villages")  # noqa: S311 (demo data, not secrets)
        self.slow, self.pace = _slow_villages(self.codes, rng)
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
        self._segments = plan.segments
        self._roads: dict[str, Any] | None = None
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._devices: dict[str, str] = {}
        rules = rules_for(plan)
        self.forms = {fid: _Form(self, s, rules.get(fid) or self._default_rule()) for fid, s in sorted(schemas.items())}  # fmt: skip

    @staticmethod
    def _default_rule() -> FormRule:
        return FormRule(plan=(Periodic("month", count=(1, 2)),))

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
            roads = illustrative_roads(self._boundaries, self._segments)
            self._roads = dict(zip(roads["segment_id"], roads.geometry, strict=True))
        return self._roads.get(road)

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
        duplicates = _duplicate(self, drafts, rng)
        bad_gps = _spoil_gps(self, drafts, rng)
        numbers = _plant_numbers(self, drafts)
        # from the whole year as filled, before any edit: the same rectifications at any as-of
        targets = _choose(self, drafts, set(duplicates))
        if targets:
            drafts[RECTIFICATION] = _rectifications(self, targets)
        edited: list[str] = []
        records: dict[str, list[Record]] = {}
        for form_id, items in drafts.items():
            form = self.forms[form_id]
            items.sort(key=lambda d: (d.submitted, d.iid))
            # Decided for the whole year, applied up to the cut-off: an earlier as-of date sees
            # a prefix of the same year.
            frng = random.Random(f"{self.seed}/{form_id}/after")  # noqa: S311
            for d in items:
                _afterwards(self, form, d, frng, cutoff, d.iid in bad_gps)
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
        if ctx.values.get("username"):  # given by the schedule (a town item's rectification)
            return ctx.values["username"]
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


def simulate_year(
    schemas: Mapping[str, FormSchema],
    villages: Sequence[Village],
    rosters: Rosters,
    boundaries: Boundaries,
    *,
    year: int,
    as_of: date,
    seed: int = 0,
    plan: Plan | None = None,
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
    has no polygon in ``boundaries``. ``plan`` (default: the bundled one) declares the road
    segments the road forms report on.
    """
    return _Sim(
        schemas, villages, rosters, boundaries, year, as_of, seed, plan or load_plan()
    ).run()


# ---- small helpers -------------------------------------------------------------------------

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _item_data(form: _Form, repeat: str, item: _Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, parts in form.item_steps[repeat]:
        _put(out, parts, item.get(name))
    return out


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
