"""The plan as data: read and validate a town's ``plan.toml`` (the ``plan`` setting).

Every target number and deadline lives in the TOML file, and so do the plan's named road
segments (``[[segment]]``, the one place they are declared: the roads layer, the simulator and
the forms' choice lists follow them). This module only checks that each indicator and segment
is complete and consistent, and turns month-days into dates of the plan year (a setting).
Errors name the file, the indicator or segment, and the key.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from forms.segments import OTHER, SEGMENT_FIELDS
from pipelines.config import BUNDLED_PLAN
from pipelines.errors import ConfigError

PLAN_FILE = BUNDLED_PLAN  # the default town's (龙阳镇); a town's own is settings.plan
MEASURES = ("count", "coverage", "sum", "rate", "reduction", "mean", "weekly")
LEVELS = ("town", "village", "liaison_group", "department")
PERIODS = ("year", "quarter", "month")
ROSTERS = ("villages", "students", "residents", "welfare_posts", "dibao_households")
SEGMENT_KINDS = ("construction", "lighting")  # 修路, 亮化

_KEYS = {
    "id", "domain", "label", "form", "repeat", "date_field", "measure", "where", "field",
    "denominator", "baseline", "latest", "roster", "id_field", "roster_value", "min_count",
    "unit", "target", "village_target", "start", "deadline", "pace", "period", "levels",
    "department", "per", "per_values", "plan_ref", "denominator_where",
}  # fmt: skip
_SEGMENT_KEYS = {"id", "name", "kind", "planned_km", "deadline", "from", "to", "heading_deg"}
_SEGMENT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a choice name in the forms, too
# keys each measure needs besides the common ones
_NEEDS = {
    "count": (),
    "coverage": ("roster", "id_field", "unit"),
    "sum": ("field",),
    "rate": (),
    "reduction": ("field", "baseline"),
    "mean": ("field",),
    "weekly": ("per", "per_values"),
}


@dataclass(frozen=True)
class Indicator:
    """One measurable target of the plan. Dates are month-days ``MM-DD`` of the plan year."""

    id: str
    domain: str
    label: str  # Chinese
    form: str
    measure: str
    date_field: str
    department: str
    levels: tuple[str, ...]
    target: float | None = None
    start: str = "01-01"
    deadline: str | None = "12-31"
    pace: str = "linear"  # or "none": the target holds at any time (a quality rate)
    period: str = "year"  # "quarter": the target applies afresh to each quarter
    repeat: str | None = None
    where: str | None = None
    denominator_where: str | None = None
    field: str | None = None
    denominator: str | None = None
    baseline: str | None = None
    latest: tuple[str, ...] = ()  # the fields naming a subject: keep its newest row
    roster: str | None = None
    id_field: str | None = None
    roster_value: str | None = None
    min_count: int = 1
    unit: str | None = None  # coverage: "rate" (share of the roster) or "count"
    village_target: float | None = None
    per: str | None = None
    per_values: tuple[str, ...] = ()
    plan_ref: int | None = None

    def start_date(self, year: int) -> date:
        return _day(year, self.start)

    def deadline_date(self, year: int) -> date | None:
        return _day(year, self.deadline) if self.deadline else None

    @property
    def fields_used(self) -> set[str]:
        """Tidy-table columns this indicator reads (checked against the form)."""
        names = {self.date_field}
        names |= {n for n in (self.field, self.denominator, self.baseline) if n}
        names |= set(self.latest)
        names |= {n for n in (self.id_field, self.per) if n}
        for expr in (self.where, self.denominator_where):
            if expr:
                names |= _query_names(expr)
        return names


@dataclass(frozen=True)
class RoadSegment:
    """One named road segment of the plan (``[[segment]]``)."""

    segment_id: str
    name: str  # as in the plan
    kind: str  # "construction" (修路) or "lighting" (亮化)
    planned_km: float | None  # None: the plan gives no length (lit roads)
    deadline: str  # MM-DD in the plan year
    start: str  # village name the illustrative line starts at
    end: str  # village name it heads for ("" with heading_deg)
    heading_deg: float | None = None  # used instead of `end` when the far end is no village


@dataclass(frozen=True)
class Plan:
    name: str
    indicators: tuple[Indicator, ...]
    departments: dict[str, str]  # id -> Chinese name
    domains: dict[str, str]  # id -> Chinese name
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    segments: tuple[RoadSegment, ...] = ()

    def indicator(self, indicator_id: str) -> Indicator:
        for ind in self.indicators:
            if ind.id == indicator_id:
                return ind
        raise KeyError(f"the plan has no indicator {indicator_id!r}")

    def segments_of(self, kind: str) -> tuple[RoadSegment, ...]:
        return tuple(s for s in self.segments if s.kind == kind)

    @property
    def planned_km(self) -> dict[str, float]:
        """segment_id -> planned length, for the segments the plan gives one."""
        return {s.segment_id: s.planned_km for s in self.segments if s.planned_km}

    def forms(self) -> set[str]:
        return {i.form for i in self.indicators}


def _day(year: int, month_day: str) -> date:
    month, day = (int(x) for x in month_day.split("-"))
    return date(year, month, day)


def _query_names(expr: str) -> set[str]:
    # pandas query syntax: "@as_of" names a variable the indicator code provides
    tree = ast.parse(expr.replace("@", "_at_"), mode="eval")
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return {n for n in names if not n.startswith("_at_")} - {"True", "False", "None"}


def _check_month_day(where: str, key: str, value: Any) -> str:
    text = str(value)
    try:
        month, day = (int(x) for x in text.split("-"))
        date(2024, month, day)  # a leap year, so 02-29 passes here
        if len(text) != 5:
            raise ValueError
    except ValueError:
        raise ConfigError(f'{where}: {key} = {value!r} is not a month-day like "06-30"') from None
    return text


def _indicator(raw: dict[str, Any], where: str, departments: dict[str, str], domains: dict[str, str]) -> Indicator:  # fmt: skip
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}"
        )
    for key in ("id", "domain", "label", "form", "measure", "date_field", "department", "levels"):
        if raw.get(key) in (None, "", []):
            raise ConfigError(f"{where}: missing '{key}'")
    measure = raw["measure"]
    if measure not in MEASURES:
        raise ConfigError(
            f"{where}: measure {measure!r} is unknown; use one of {', '.join(MEASURES)}"
        )
    for key in _NEEDS[measure]:
        if raw.get(key) in (None, "", []):
            raise ConfigError(f"{where}: measure '{measure}' needs '{key}'")
    if raw["domain"] not in domains:
        raise ConfigError(f"{where}: domain {raw['domain']!r} is not listed under [domains]")
    if raw["department"] not in departments:
        raise ConfigError(
            f"{where}: department {raw['department']!r} is not listed under [departments]"
        )
    levels = raw["levels"]
    if not isinstance(levels, list) or any(lv not in LEVELS for lv in levels):
        raise ConfigError(f"{where}: levels {levels!r} must be a list of {', '.join(LEVELS)}")
    for key in ("target", "village_target"):
        value = raw.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise ConfigError(f"{where}: {key} = {value!r} must be a number ≥ 0")
    target = raw.get("target")
    if measure == "rate" and raw.get("field") and not raw.get("denominator"):
        raise ConfigError(f"{where}: measure 'rate' with 'field' needs 'denominator'")
    shares = measure in ("rate", "reduction", "weekly") or raw.get("unit") == "rate"
    if target is not None and shares and target > 1:
        raise ConfigError(
            f"{where}: target = {target} is a share and must be between 0 and 1 (98% → 0.98)"
        )
    if raw.get("unit") not in (None, "rate", "count"):
        raise ConfigError(f'{where}: unit {raw["unit"]!r} must be "rate" or "count"')
    if raw.get("roster") is not None and raw["roster"] not in ROSTERS:
        raise ConfigError(
            f"{where}: roster {raw['roster']!r} is unknown; use one of {', '.join(ROSTERS)}"
        )
    if raw.get("pace", "linear") not in ("linear", "none"):
        raise ConfigError(f'{where}: pace {raw["pace"]!r} must be "linear" or "none"')
    period = raw.get("period", "year")
    if period not in PERIODS:
        raise ConfigError(f"{where}: period {period!r} must be one of {', '.join(PERIODS)}")
    start = _check_month_day(where, "start", raw.get("start", "01-01"))
    deadline = raw.get("deadline", "12-31")
    deadline = _check_month_day(where, "deadline", deadline) if deadline else None
    if deadline and deadline < start:
        raise ConfigError(f"{where}: deadline {deadline} is before start {start}")
    min_count = raw.get("min_count", 1)
    if not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"{where}: min_count = {min_count!r} must be a whole number ≥ 1")
    for key in ("where", "denominator_where"):
        if raw.get(key):
            try:
                _query_names(raw[key])
            except SyntaxError as e:
                raise ConfigError(
                    f"{where}: {key} = {raw[key]!r} is not a valid expression ({e.msg})"
                ) from None
    latest = raw.get("latest") or []
    latest = [latest] if isinstance(latest, str) else latest
    if not isinstance(latest, list) or not all(isinstance(x, str) and x for x in latest):
        raise ConfigError(
            f"{where}: latest = {raw['latest']!r} must be a field or a list of fields"
        )
    values = {k: v for k, v in raw.items() if k in _KEYS}
    values.update(
        levels=tuple(levels), start=start, deadline=deadline, latest=tuple(latest),
        per_values=tuple(raw.get("per_values", ())),
        target=float(target) if target is not None else None,
        village_target=float(raw["village_target"]) if raw.get("village_target") is not None else None,
    )  # fmt: skip
    return Indicator(**values)


def _segment(raw: Any, where: str) -> RoadSegment:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table of {', '.join(sorted(_SEGMENT_KEYS))}")
    unknown = set(raw) - _SEGMENT_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_SEGMENT_KEYS))}"
        )
    for key in ("id", "name", "kind", "deadline", "from"):
        if raw.get(key) in (None, ""):
            raise ConfigError(f"{where}: missing '{key}'")
    if not isinstance(raw["id"], str) or not _SEGMENT_ID.match(raw["id"]) or raw["id"] == OTHER:
        raise ConfigError(
            f"{where}: id {raw['id']!r} must be ASCII letters, digits and _, starting with a "
            f"letter, and not '{OTHER}' (the forms' choice for a road the plan does not name)"
        )
    if raw["kind"] not in SEGMENT_KINDS:
        raise ConfigError(
            f"{where}: kind {raw['kind']!r} must be one of {', '.join(SEGMENT_KINDS)}"
        )
    km = raw.get("planned_km")
    if km is not None and (isinstance(km, bool) or not isinstance(km, int | float) or km <= 0):
        raise ConfigError(f"{where}: planned_km = {km!r} must be a number of kilometres > 0")
    if raw["kind"] == "construction" and km is None:
        raise ConfigError(f"{where}: a construction segment needs 'planned_km'")
    heading = raw.get("heading_deg")
    if (heading is None) == (raw.get("to") in (None, "")):
        raise ConfigError(
            f"{where}: give either 'to' (the village the line heads for) or 'heading_deg', not both"
        )
    if heading is not None and (isinstance(heading, bool) or not isinstance(heading, int | float)):
        raise ConfigError(f"{where}: heading_deg = {heading!r} must be a number of degrees")
    return RoadSegment(
        segment_id=raw["id"], name=str(raw["name"]), kind=raw["kind"],
        planned_km=float(km) if km is not None else None,
        deadline=_check_month_day(where, "deadline", raw["deadline"]),
        start=str(raw["from"]), end=str(raw.get("to") or ""),
        heading_deg=float(heading) if heading is not None else None,
    )  # fmt: skip


def _segments(raws: Any, name: str) -> tuple[RoadSegment, ...]:
    if raws is None:
        return ()
    if not isinstance(raws, list):
        raise ConfigError(f"{name}: 'segment' must be a list of [[segment]] tables")
    seen: dict[str, int] = {}
    out = []
    for n, raw in enumerate(raws, start=1):
        where = f"{name}, segment #{n}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            where += f" '{raw['id']}'"
        seg = _segment(raw, where)
        if seg.segment_id in seen:
            raise ConfigError(f"{where}: id '{seg.segment_id}' repeats segment #{seen[seg.segment_id]}")  # fmt: skip
        seen[seg.segment_id] = n
        out.append(seg)
    return tuple(out)


def _named_segments(expr: str, field_name: str) -> set[str]:
    """The text literals ``expr`` compares ``field_name`` with (``==``, ``!=``, ``in`` a list)."""
    tree = ast.parse(expr.replace("@", "_at_"), mode="eval")
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        if not any(isinstance(x, ast.Name) and x.id == field_name for x in sides):
            continue
        for side in sides:
            items = side.elts if isinstance(side, ast.List | ast.Tuple | ast.Set) else [side]
            names |= {x.value for x in items if isinstance(x, ast.Constant) and isinstance(x.value, str)}  # fmt: skip
    return names


def _check_segment_names(indicators: list[Indicator], segments: tuple[RoadSegment, ...], name: str) -> None:  # fmt: skip
    """Every segment id an indicator's ``where`` names is declared under ``[[segment]]``."""
    for kind, (form, field_name) in SEGMENT_FIELDS.items():
        known = {s.segment_id for s in segments if s.kind == kind}
        for ind in indicators:
            if ind.form != form:
                continue
            for key in ("where", "denominator_where"):
                expr = getattr(ind, key)
                unknown = (
                    sorted(_named_segments(expr, field_name) - known - {OTHER}) if expr else []
                )
                if unknown:
                    raise ConfigError(
                        f"{name}, indicator '{ind.id}': {key} names {field_name} "
                        f"{', '.join(map(repr, unknown))}, which is no {kind} [[segment]] of the "
                        f"plan (declared: {', '.join(sorted(known)) or 'none'}); fix the id or declare the segment"
                    )


def parse_plan(table: dict[str, Any], path: Path | None = None) -> Plan:
    """Validate an already-parsed plan table (what ``tomllib`` gives)."""
    name = str(path or "plan")
    departments = table.get("departments") or {}
    domains = table.get("domains") or {}
    if not departments or not domains:
        raise ConfigError(f"{name}: needs [departments] and [domains] tables")
    raws = table.get("indicator")
    if not isinstance(raws, list) or not raws:
        raise ConfigError(f"{name}: lists no [[indicator]]")
    seen: dict[str, int] = {}
    indicators: list[Indicator] = []
    for n, raw in enumerate(raws, start=1):
        where = f"{name}, indicator #{n}" + (f" '{raw['id']}'" if raw.get("id") else "")
        ind = _indicator(raw, where, departments, domains)
        if ind.id in seen:
            raise ConfigError(f"{where}: id '{ind.id}' repeats indicator #{seen[ind.id]}")
        seen[ind.id] = n
        indicators.append(ind)
    segments = _segments(table.get("segment"), name)
    _check_segment_names(indicators, segments, name)
    tables = ("departments", "domains", "indicator", "segment")
    extra = {k: v for k, v in table.items() if k not in tables}
    return Plan(
        name=str(table.get("plan_name", "")), indicators=tuple(indicators),
        departments=dict(departments), domains=dict(domains), path=path, extra=extra,
        segments=segments,
    )  # fmt: skip


def load_plan(path: Path | str | None = None) -> Plan:
    """Read and validate the plan file (default: the bundled 龙阳镇 plan,
    ``pipelines/analysis/plan.toml``). A town's own plan is the ``plan`` setting:
    ``load_plan(settings.plan)``."""
    path = Path(path) if path is not None else PLAN_FILE
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"plan file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); fix the file") from None
    return parse_plan(table, path)


def check_against_forms(plan: Plan, columns: dict[str, Iterable[str]]) -> None:
    """Check each indicator reads columns its form's tidy table has.

    ``columns`` maps form_id (and ``form_id/repeat``) to the tidy table's columns. Forms not in
    ``columns`` are skipped.
    """
    for ind in plan.indicators:
        key = f"{ind.form}/{ind.repeat}" if ind.repeat else ind.form
        if ind.form not in columns:
            continue
        have = set(columns[ind.form]) | set(columns.get(key, ()))
        missing = sorted(ind.fields_used - have - {"as_of"})
        if missing:
            raise ConfigError(
                f"{plan.path or 'plan'}, indicator '{ind.id}': form '{ind.form}' has no field(s) "
                f"{', '.join(missing)}; fix the plan or the form"
            )
