"""Progress against the plan for any as-of date: value, target, expected-by-now and status,
for the town and per village, liaison group and department.

Each indicator of the plan file reduces to a numerator and a denominator per village (or for
the town only when its form names no village); groups and the town are sums of villages, so
every level is consistent. Rows dated after the as-of date are ignored, so a report for a past
date gives the figures as they stood then (as far as the data then entered allows).

Status rules (``value`` and ``target`` higher is better for every measure):

- 已完成 (done): value ≥ target;
- 逾期 (overdue): not done and the as-of date is after the deadline (the deadline day itself is
  still in time);
- 进度正常 (on track): value ≥ expected, where expected = target × the share of the time from
  ``start`` to the deadline already passed (both days counted), or the full target when the
  plan says ``pace = "none"``;
- 滞后 (lagging): otherwise.

An indicator without a target (satisfaction scores, patrols) has status NA.

Rectifications (整改反馈) count: :func:`compute_progress` first marks each sanitation finding a
rectification closed by the as-of date as cleared (the rule of
:mod:`pipelines.analysis.followups`, so the follow-up lists and the clearance rate agree).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from geo.villages import Village
from pipelines.analysis.plan import Indicator, Plan
from pipelines.analysis.rosters import Rosters
from pipelines.analysis.tidy import TidyForm

DONE, ON_TRACK, LAGGING, OVERDUE = "已完成", "进度正常", "滞后", "逾期"
STATUSES = (DONE, ON_TRACK, LAGGING, OVERDUE)
COLUMNS = (
    "indicator_id", "domain", "label", "level", "key", "key_label", "value", "target",
    "expected", "status", "numerator", "denominator", "start", "deadline", "department",
)  # fmt: skip
_SHARE_MEASURES = ("rate", "reduction", "mean", "weekly")


@dataclass(frozen=True)
class Progress:
    """All indicators at one as-of date; ``table`` has :data:`COLUMNS`."""

    as_of: date
    table: pd.DataFrame

    def level(self, level: str) -> pd.DataFrame:
        return self.table[self.table["level"] == level].reset_index(drop=True)

    def behind(self) -> pd.DataFrame:
        """Rows that are 滞后 or 逾期: what the monthly meeting must chase."""
        return self.table[self.table["status"].isin([LAGGING, OVERDUE])].reset_index(drop=True)


def _window(ind: Indicator, year: int, as_of: date) -> tuple[date, date, date | None]:
    """(first day counted, pace start, deadline) for the period holding ``as_of``."""
    if ind.period == "quarter":
        q0 = date(year, 3 * ((as_of.month - 1) // 3) + 1, 1) if as_of.year == year else None
        if q0 is None:
            q0 = date(year, 10, 1) if as_of.year > year else date(year, 1, 1)
        q_end = (pd.Timestamp(q0) + pd.offsets.QuarterEnd(0)).date()
        return q0, q0, q_end
    if ind.period == "month":
        m0 = as_of.replace(day=1)
        return m0, m0, (pd.Timestamp(m0) + pd.offsets.MonthEnd(0)).date()
    return date(year, 1, 1), ind.start_date(year), ind.deadline_date(year)


def _expected(ind: Indicator, target: float, start: date, deadline: date | None, as_of: date) -> float:  # fmt: skip
    if ind.pace == "none" or deadline is None:
        return target
    if as_of < start:
        return 0.0
    span = (deadline - start).days + 1
    done = min((as_of - start).days + 1, span)
    return target * done / span


def _status(
    value: float, target: float, expected: float, deadline: date | None, as_of: date
) -> str | None:
    if pd.isna(target):
        return None
    if pd.isna(value):  # no denominator (nobody on the roster yet): nothing to judge
        return None
    if value >= target - 1e-9:
        return DONE
    if deadline is not None and as_of > deadline:
        return OVERDUE
    return ON_TRACK if value >= expected - 1e-9 else LAGGING


def _rows_for(ind: Indicator, form: TidyForm | None) -> pd.DataFrame:
    if form is None:
        return pd.DataFrame(columns=sorted(ind.fields_used | {"village", "submitted_at"}))
    if ind.repeat:
        table = form.repeats[ind.repeat]
        wanted = [c for c in form.table.columns if c not in table.columns or c == "instance_id"]
        need = [c for c in wanted if c in ind.fields_used | {"village", "submitted_at"}]
        return form.repeat(ind.repeat, need)
    return form.table


def _as_key(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), None)


def plan_rows(frame: pd.DataFrame, date_field: str, *, year: int, as_of: date) -> pd.DataFrame:
    """Rows dated from 01-01 of the plan year to ``as_of``, both included.

    The one window for "what has been reported so far this year", shared by the indicators and
    the follow-up lists (rows dated outside the year are flagged by the data checks instead).
    """
    if date_field not in frame.columns:
        return frame.iloc[0:0]
    return frame[_in_plan(frame, date_field, year, as_of)]


def _in_plan(frame: pd.DataFrame, date_field: str, year: int, as_of: date) -> np.ndarray:
    day = pd.to_datetime(frame[date_field], errors="coerce")
    keep = (day >= pd.Timestamp(year, 1, 1)) & (day <= pd.Timestamp(as_of))
    return keep.to_numpy(dtype=bool)


def latest_rows(frame: pd.DataFrame, subject: Sequence[str], date_field: str, *, year: int, as_of: date) -> pd.DataFrame:  # fmt: skip
    """Each subject's newest row among :func:`plan_rows`: the latest ``date_field``, then the
    latest ``submitted_at`` (a correction sent later wins). ``subject`` names the fields that
    identify a subject (a village; a road, its "other" name and section), blanks included.

    Used by the plan's ``latest`` indicators and by the follow-up items they hold back, so an
    item and its indicator always read the same submission.
    """
    keys = [c for c in subject if c in frame.columns]
    if date_field not in frame.columns or not keys:
        return plan_rows(frame, date_field, year=year, as_of=as_of)
    keep = _in_plan(frame, date_field, year, as_of)
    where = np.flatnonzero(keep)
    if not len(where):
        return frame[keep]
    order = [date_field] + (["submitted_at"] if "submitted_at" in frame.columns else [])
    # Chosen on the deciding columns alone; only the chosen rows are copied whole.
    deciding = frame[list(dict.fromkeys([*order, *keys]))].take(where).reset_index(drop=True)
    chosen = deciding.sort_values(order, kind="stable").drop_duplicates(keys, keep="last")
    return frame.take(where[chosen.index.to_numpy()])


def _columns(frame: pd.DataFrame, names: set[str]) -> list[str]:
    """The columns of ``frame`` among ``names``, in the frame's order."""
    return [c for c in frame.columns if c in names]


def _select(ind: Indicator, form: TidyForm | None, frame: pd.DataFrame, first: date, year: int, as_of: date) -> pd.DataFrame:  # fmt: skip
    # Only the columns the indicator reads are copied: a county's forms have 1M rows.
    wanted = ind.fields_used | {"village"}
    if ind.latest:  # the newest row of each subject: by submission time, or submission
        wanted |= {"submitted_at", "instance_id"}
    dates = pd.to_datetime(frame[ind.date_field])
    keep = ((dates >= pd.Timestamp(first)) & (dates <= pd.Timestamp(as_of))).to_numpy(dtype=bool)
    frame = frame.loc[keep, _columns(frame, wanted)]
    if ind.latest and len(frame):
        if ind.repeat and form is not None:
            # every entry of each subject's newest submission, chosen among all submissions
            # (a newest one with no entries still replaces an older one)
            table = form.table[_columns(form.table, wanted)]
            newest = latest_rows(table, ind.latest, ind.date_field, year=year, as_of=as_of)
            frame = frame[frame["instance_id"].isin(newest["instance_id"])]
        else:
            frame = latest_rows(frame, ind.latest, ind.date_field, year=year, as_of=as_of)
    return frame


def _query(frame: pd.DataFrame, expr: str | None, as_of: date) -> pd.Series:
    if not expr or frame.empty:
        return pd.Series(True, index=frame.index)
    env = {"as_of": pd.Timestamp(as_of)}
    data = frame.copy()
    for col in data.columns:  # compare categories as plain text in queries
        # (only columns the expression can name: converting the others is wasted time)
        if col in expr and isinstance(data[col].dtype, pd.CategoricalDtype):
            data[col] = data[col].astype(object)
    mask = data.eval(expr, local_dict=env, engine="python")
    return pd.Series(mask, index=frame.index).fillna(False).astype(bool)


def _roster(ind: Indicator, rosters: Rosters | None, villages: Sequence[Village]) -> pd.DataFrame:
    if ind.roster == "villages":
        codes = [v.code for v in villages]
        return pd.DataFrame({"name": codes, "village": codes})
    if rosters is None:
        raise ValueError(f"indicator '{ind.id}' needs the rosters (roster '{ind.roster}')")
    return rosters.get(ind.roster)


def _per_village(ind: Indicator, frame: pd.DataFrame, rosters: Rosters | None, villages: Sequence[Village], as_of: date) -> tuple[pd.DataFrame, bool]:  # fmt: skip
    """num/den/vtarget per village code (index), and whether the indicator has villages."""
    codes = [v.code for v in villages]
    index = pd.Index(codes, name="village")
    out = pd.DataFrame({"num": 0.0, "den": np.nan, "vtarget": np.nan}, index=index)
    by_village = "village" in frame.columns or ind.roster is not None
    m = ind.measure
    if m in ("coverage",) or (m == "sum" and ind.roster):
        roster = _roster(ind, rosters, villages)
        ids = _as_key(frame[ind.id_field])
        hit = _query(frame, ind.where, as_of)
        if ind.min_count > 1:  # one count per subject and day: a resend is not a second visit
            day = pd.to_datetime(frame[ind.date_field], errors="coerce").dt.normalize()
            counts = _days_per_subject(ids[hit], day[hit])
        else:
            counts = ids[hit].value_counts()
        if m == "coverage":
            reached = roster["name"].map(counts).fillna(0) >= ind.min_count
            out["num"] = reached.groupby(roster["village"]).sum().reindex(index, fill_value=0)
            out["den"] = roster.groupby("village").size().reindex(index, fill_value=0)
            if ind.unit == "count":
                out["vtarget"] = out["den"]
        else:
            value = pd.to_numeric(frame.loc[hit, ind.field], errors="coerce")
            village_of = ids[hit].map(roster.set_index("name")["village"])
            out["num"] = value.groupby(village_of).sum().reindex(index, fill_value=0)
            if ind.roster_value:
                rv = pd.to_numeric(roster[ind.roster_value], errors="coerce")
                out["vtarget"] = rv.groupby(roster["village"]).sum().reindex(index, fill_value=0)
        return out, True
    village = _positions(frame["village"], index) if "village" in frame.columns else None
    hit = _query(frame, ind.where, as_of)
    if m == "count":
        num = hit.astype(float)
        den = None
        if ind.village_target is not None:
            out["vtarget"] = ind.village_target
    elif m == "sum":
        num, den = pd.to_numeric(frame[ind.field], errors="coerce").where(hit, 0), None
    elif m == "rate" and ind.field:
        num = pd.to_numeric(frame[ind.field], errors="coerce").where(hit, 0)
        den = pd.to_numeric(frame[ind.denominator], errors="coerce").where(hit, 0)
    elif m == "rate":
        base = _query(frame, ind.denominator_where, as_of)
        num, den = (hit & base).astype(float), base.astype(float)
    elif m == "reduction":
        num = pd.to_numeric(frame[ind.field], errors="coerce").where(hit, 0)
        den = pd.to_numeric(frame[ind.baseline], errors="coerce").where(hit, 0)
    elif m == "mean":
        score = _numbers(frame[ind.field]).where(hit)
        num, den = score.fillna(0), score.notna().astype(float)
    else:
        raise ValueError(f"measure {m!r} is not per village")
    if village is None:
        town = pd.DataFrame(
            {"num": [float(num.sum())], "den": [float(den.sum()) if den is not None else np.nan]},
            index=pd.Index([None], name="village"),
        )
        town["vtarget"] = np.nan
        return town, False
    out["num"] = _sum_by(num, village, index)
    if den is not None:
        out["den"] = _sum_by(den, village, index)
    return out, by_village


def _positions(village: pd.Series, index: pd.Index) -> pd.Categorical:
    """Each row's village as a position in ``index`` (blank or unknown: NaN), for grouping.

    A categorical column is looked up once per category, not once per row."""
    if isinstance(village.dtype, pd.CategoricalDtype):
        found = index.get_indexer(village.cat.categories.astype(object))
        codes = village.cat.codes.to_numpy()
        where = np.where(codes >= 0, found[codes], -1)
    else:
        where = index.get_indexer(_as_key(village))
    return pd.Categorical.from_codes(where, categories=range(len(index)))


def _sum_by(values: pd.Series, village: pd.Categorical, index: pd.Index) -> pd.Series:
    """Sums of ``values`` per village of ``index`` (0 where none), rows in their order."""
    sums = values.groupby(village, observed=False).sum()  # every village, in index order
    return pd.Series(sums.astype(float).to_numpy(), index=index)


def _numbers(values: pd.Series) -> pd.Series:
    """A column read as numbers (NaN where it is not one); a categorical one, each category
    once."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return pd.to_numeric(values.astype(object), errors="coerce")
    cats = pd.to_numeric(pd.Series([*values.cat.categories.astype(object), np.nan], dtype=object), errors="coerce")  # fmt: skip
    codes = values.cat.codes.to_numpy()
    return pd.Series(cats.to_numpy()[codes], index=values.index)


def _days_per_subject(ids: pd.Series, day: pd.Series) -> pd.Series:
    """Distinct days per subject id (blank ids left out), as ``value_counts`` would count the
    distinct (id, day) pairs."""
    codes, uniques = pd.factorize(ids)
    days, _ = pd.factorize(day)
    pairs = pd.unique(codes.astype(np.int64) * (len(day) + 1) + (days + 1))  # hashed: fast
    subject = pairs // (len(day) + 1)
    counts = np.bincount(subject[subject >= 0], minlength=len(uniques))
    return pd.Series(counts, index=uniques)


def _f(x: object) -> float:
    return np.nan if x is None or pd.isna(x) else float(x)  # type: ignore[arg-type]


def _value(ind: Indicator, num: float, den: float) -> float:
    m = ind.measure
    if m in ("count", "sum") or (m == "coverage" and ind.unit == "count"):
        return float(num)
    if pd.isna(den) or den == 0:
        return np.nan
    if m == "reduction":
        return 1.0 - num / den
    return num / den


def _weekly(ind: Indicator, frame: pd.DataFrame, first: date, start: date, as_of: date) -> pd.DataFrame:  # fmt: skip
    """Per ``per`` value: weeks (Monday–Sunday, wholly between start and as_of) with enough rows."""
    monday = start + timedelta(days=(7 - start.weekday()) % 7)
    n_weeks = max(0, ((as_of - monday).days + 1) // 7)
    last = monday + timedelta(days=7 * n_weeks)  # first day not in a counted week
    dates = pd.to_datetime(frame[ind.date_field])
    hit = _query(frame, ind.where, as_of)
    inside = hit & (dates >= pd.Timestamp(monday)) & (dates < pd.Timestamp(last))
    week = (dates[inside] - pd.Timestamp(monday)).dt.days // 7
    per = _as_key(frame.loc[inside, ind.per])
    counts = pd.DataFrame({"per": per, "week": week}).groupby(["per", "week"]).size()
    good = (counts >= ind.min_count).groupby(level="per").sum()
    index = pd.Index(list(ind.per_values), name="key")
    return pd.DataFrame(
        {"num": good.reindex(index, fill_value=0).astype(float), "den": float(n_weeks)}
    )


def indicator_progress(
    ind: Indicator,
    form: TidyForm | None,
    *,
    as_of: date,
    year: int,
    villages: Sequence[Village],
    rosters: Rosters | None = None,
    departments: Mapping[str, str] | None = None,
    town: str = "龙阳镇",
) -> pd.DataFrame:
    """Rows of one indicator at ``as_of``: one per level and key the plan asks for.

    ``form`` is the tidy tables of the indicator's form (None: no submissions yet).
    """
    first, start, deadline = _window(ind, year, as_of)
    frame = _select(ind, form, _rows_for(ind, form), first, year, as_of)
    departments = departments or {}
    rows: list[dict[str, object]] = []

    def add(level: str, key: object, label: str, num: float, den: float, target: float) -> None:
        num, den, target = _f(num), _f(den), _f(target)
        value = _value(ind, num, den)
        expected = np.nan if pd.isna(target) else _expected(ind, target, start, deadline, as_of)
        rows.append({
            "indicator_id": ind.id, "domain": ind.domain, "label": ind.label, "level": level,
            "key": key, "key_label": label, "value": value, "target": target,
            "expected": expected,
            "status": _status(value, target, expected, deadline, as_of),
            "numerator": float(num), "denominator": den, "start": start, "deadline": deadline,
            "department": ind.department,
        })  # fmt: skip

    plan_target = np.nan if ind.target is None else ind.target
    if ind.measure == "weekly":
        per = _weekly(ind, frame, first, start, as_of)
        if "town" in ind.levels:
            add("town", town, town, per["num"].sum(), per["den"].sum(), plan_target)
        if "department" in ind.levels:
            for key, r in per.iterrows():
                add(
                    "department",
                    key,
                    departments.get(str(key), str(key)),
                    r["num"],
                    r["den"],
                    plan_target,
                )
        return pd.DataFrame(rows, columns=list(COLUMNS))

    parts, has_villages = _per_village(ind, frame, rosters, villages, as_of)
    total_num, total_den = parts["num"].sum(), parts["den"].sum(min_count=1)
    shares = ind.measure in _SHARE_MEASURES or ind.unit == "rate"
    if "town" in ind.levels:
        add("town", town, town, total_num, total_den, plan_target)
    if "department" in ind.levels:
        label = departments.get(ind.department, ind.department)
        add("department", ind.department, label, total_num, total_den, plan_target)
    if not has_villages:
        return pd.DataFrame(rows, columns=list(COLUMNS))
    vtarget = parts["vtarget"]
    if shares:
        vtarget = pd.Series(plan_target, index=parts.index)
    if "village" in ind.levels:
        # plain lookups: a row Series per village costs more than the indicator's sums
        nums, dens = parts["num"].to_dict(), parts["den"].to_dict()
        targets = vtarget.to_dict()
        for v in villages:
            add("village", v.code, v.name, nums[v.code], dens[v.code], targets[v.code])
    if "liaison_group" in ind.levels:
        at = {code: i for i, code in enumerate(parts.index)}
        num, den, vt = (parts["num"].to_numpy(), parts["den"].to_numpy(), vtarget.to_numpy())
        for g in sorted({v.liaison_group for v in villages}):
            rows_of = [at[v.code] for v in villages if v.liaison_group == g]
            targets = pd.Series(vt[rows_of])
            t = plan_target if shares else targets.sum(min_count=1)
            if not shares and targets.isna().any():
                t = np.nan
            sub_num, sub_den = pd.Series(num[rows_of]), pd.Series(den[rows_of])
            add("liaison_group", g, f"第{g}帮包联系组", sub_num.sum(), sub_den.sum(min_count=1), t)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def compute_progress(
    plan: Plan,
    forms: Mapping[str, TidyForm],
    *,
    as_of: date,
    year: int,
    villages: Sequence[Village],
    rosters: Rosters | None = None,
    town: str = "龙阳镇",
    only: Sequence[str] | None = None,
) -> Progress:
    """Every indicator of ``plan`` (or those in ``only``) at ``as_of``, as one tidy table.

    ``forms`` maps form_id to its tidy tables (:func:`pipelines.analysis.tidy.tidy`); a form missing
    there simply has no data yet. A sanitation finding closed by a rectification (form
    ``rectification``, fix date by ``as_of``) counts as cleared.
    """
    # The closing rule lives with the follow-up items, which import this module: import late.
    from pipelines.analysis.followups import with_rectified_findings

    forms = with_rectified_findings(forms, as_of=as_of, year=year)
    frames = [
        indicator_progress(
            ind, forms.get(ind.form), as_of=as_of, year=year, villages=villages,
            rosters=rosters, departments=plan.departments, town=town,
        )
        for ind in plan.indicators
        if only is None or ind.id in only
    ]  # fmt: skip
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    for col in ("value", "target", "expected", "numerator", "denominator"):
        table[col] = table[col].astype(float)
    return Progress(as_of, table)
