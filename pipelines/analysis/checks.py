"""Data checks: a quality sheet per form, giving the reason (in Chinese) for each flagged row.

Checks, each with a stable id (:data:`CHECKS`):

- ``gps_accuracy``: a GPS point less accurate than the setting ``gps_accuracy_m``;
- ``gps_outside`` / ``gps_village``: a point in no village of the town, or in a village other
  than the one chosen in the form (:func:`geo.coverage.locate_points`; on illustrative
  boundaries the reason says so, since those cells are made up);
- ``duplicate``: probable duplicates, the same subject on the same day (:data:`DUPLICATE_KEYS`);
- ``date_outside_year`` / ``date_future``: an event date outside the plan year, or after the
  as-of date (deadline fields such as ``rectify_by`` are meant to lie ahead and are skipped);
- ``unknown_roster_id`` / ``unknown_village``: a picked roster ID that the roster does not
  hold, or a village code not in the register;
- ``overdue_finding``: a finding still to be rectified after its rectify-by date;
- ``sender_village``: a submission received by `manyi serve` whose village is not one of the
  sender's villages (``senders``: :meth:`pipelines.store.Store.senders`).

Reasons quote what was typed (a title, a place name, a roster ID that does not exist), so each
quoted value and each whole reason goes through :func:`pipelines.privacy.scrub_text` and is
cut short when built: a phone or ID number typed into a title never reaches the quality sheet.
The other text columns (the record's id, the village code as typed) are masked too.

Rows of the main table have ``repeat_index`` NA; rows of a repeat table carry the 1-based
index of the entry, so a reviewer finds it in ODK Central or Kobo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from forms.schema import Field
from geo.boundaries import Boundaries
from geo.coverage import locate_points
from geo.illustrative import illustrative_boundaries
from geo.villages import Village
from pipelines.analysis.rosters import Rosters, pick_lists
from pipelines.analysis.tidy import TidyForm
from pipelines.privacy import scrub_text

CHECKS: dict[str, str] = {
    "gps_accuracy": "GPS 精度不足",
    "gps_outside": "GPS 不在本镇",
    "gps_village": "GPS 与所选村不符",
    "duplicate": "疑似重复",
    "date_outside_year": "日期不在计划年度",
    "date_future": "日期晚于统计截止日",
    "unknown_roster_id": "名单中无此编号",
    "unknown_village": "村代码不在名录",
    "overdue_finding": "逾期未整改",
    "sender_village": "村庄不在采集人负责范围",
}
COLUMNS = ("form_id", "instance_id", "repeat_index", "village_code", "check", "field", "reason")

# What "the same subject on the same day" means for each form: (subject fields, date field).
# Forms not listed (the anonymous satisfaction survey) are not checked for duplicates.
DUPLICATE_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "sanitation_sweep": (("village",), "check_date"),
    "road_progress": (("segment", "segment_other"), "report_date"),
    "street_lighting": (("road", "road_other", "section"), "inspect_date"),
    "fitness_square": (("village",), "check_date"),
    "culture_event": (("village", "event_type", "title"), "event_date"),
    "home_visit": (("student",), "visit_date"),
    "health_checkup": (("resident",), "checkup_date"),
    "welfare_post_review": (("post_holder",), "review_date"),
    "dibao_verification": (("household",), "verify_date"),
    "police_patrol": (("village", "place_kind", "place_name"), "patrol_date"),
    "police_monthly": ((), "month"),  # one report per month
    "publicity_item": (("department", "title"), "publish_date"),
}


@dataclass(frozen=True)
class OverdueRule:
    """Rows of ``form``/``repeat`` whose ``status`` is ``open_value`` must be rectified by
    ``deadline``; ``date`` is when the finding was made, ``kind`` names it."""

    form: str
    repeat: str | None
    status: str
    open_value: str
    deadline: str
    date: str
    kind: str


OVERDUE_RULES = (
    OverdueRule("sanitation_sweep", "findings", "status", "to_rectify", "rectify_by", "check_date", "kind"),
)  # fmt: skip
_DEADLINE_FIELDS = frozenset(r.deadline for r in OVERDUE_RULES)
_MAX_QUOTE = 40  # characters of a typed value quoted in a reason
_MAX_REASON = 300


@dataclass(frozen=True)
class Checks:
    """Every flagged row of every form at one as-of date; ``table`` has :data:`COLUMNS`."""

    as_of: date
    table: pd.DataFrame
    illustrative_boundaries: bool = False

    def form(self, form_id: str) -> pd.DataFrame:
        """The quality sheet of one form."""
        return self.table[self.table["form_id"] == form_id].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Flagged rows per form and check: form_id, check, check_label, rows."""
        if self.table.empty:
            return pd.DataFrame(columns=["form_id", "check", "check_label", "rows"])
        counts = self.table.groupby(["form_id", "check"], sort=True).size().rename("rows")
        out = counts.reset_index()
        out.insert(2, "check_label", out["check"].map(CHECKS))
        return out


def check_forms(
    forms: Mapping[str, TidyForm],
    *,
    as_of: date,
    year: int,
    villages: Sequence[Village],
    boundaries: Boundaries | None = None,
    rosters: Rosters | None = None,
    gps_accuracy_m: float = 50.0,
    senders: Sequence[Any] = (),
) -> Checks:
    """Run every check on the tidy tables of every form.

    ``boundaries`` are the village polygons for the GPS checks (default: the illustrative
    ones, and the reasons then say 示意边界). Without ``rosters`` the roster-ID check is
    skipped. ``senders`` (:class:`pipelines.store.Sender`: form_id, instance_id, login, name,
    villages) are who sent the submissions `manyi serve` received.
    """
    covered = {(x.form_id, x.instance_id): x for x in senders if x.villages}
    if boundaries is None:
        boundaries = illustrative_boundaries(list(villages))
    ctx = _Context(
        as_of=as_of,
        year=year,
        codes={v.code for v in villages},
        names={v.code: v.name for v in villages},
        boundaries=boundaries,
        roster_ids=_roster_ids(rosters),
        accuracy_m=gps_accuracy_m,
    )
    frames: list[pd.DataFrame] = []
    for form_id, form in forms.items():
        for repeat, table, fields in _tables(form):
            found = [
                *_gps(ctx, table, fields),
                *_dates(ctx, table, fields),
                *_rosters(ctx, table, fields),
            ]
            if repeat is None:
                found += _duplicates(ctx, form_id, table, fields)
                found += _sender_village(form_id, table, covered)
            found += _overdue(ctx, form_id, repeat, table, fields)
            for f in found:
                f.insert(0, "form_id", form_id)
                if repeat is None:
                    f["repeat_index"] = pd.NA
                frames.append(f)
    if frames:
        table = pd.concat(frames, ignore_index=True)
    else:
        table = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    table["repeat_index"] = table["repeat_index"].astype("Int64")
    for col in (
        "instance_id",
        "village_code",
        "field",
    ):  # typed too: a village code may be anything
        table[col] = _masked(table[col])
    order = {c: i for i, c in enumerate(CHECKS)}
    table = (
        table.assign(_o=table["check"].map(order))
        .sort_values(["form_id", "_o", "instance_id", "repeat_index"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )
    return Checks(as_of, table[list(COLUMNS)], boundaries.illustrative)


# --- helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    as_of: date
    year: int
    codes: set[str]
    names: dict[str, str]
    boundaries: Boundaries
    roster_ids: dict[str, set[str]]
    accuracy_m: float
    # pd.factorize of a table's column, kept for the run: the roster check and the duplicate
    # check both read the subject column (360k student IDs in a county). The table is kept
    # too, so its id is not reused while the run lasts.
    factors: dict[tuple[int, str], tuple[pd.DataFrame, np.ndarray, Any]] = field(
        default_factory=dict
    )

    def factorize(self, table: pd.DataFrame, col: str) -> tuple[np.ndarray, Any]:
        """``pd.factorize(table[col])``, computed once per table and column in a run."""
        key = (id(table), col)
        if key not in self.factors:
            self.factors[key] = (table, *pd.factorize(table[col]))
        return self.factors[key][1:]

    @property
    def suffix(self) -> str:
        return "（按示意边界判断，仅供参考）" if self.boundaries.illustrative else ""


def _sender_village(form_id: str, table: pd.DataFrame, covered: Mapping[tuple[str, str], Any]) -> list[pd.DataFrame]:  # fmt: skip
    if not covered or "village" not in table.columns:
        return []
    village = _text(table["village"])
    senders = [covered.get((form_id, iid)) for iid in table["instance_id"]]
    bad = np.array(
        [bool(s and v and v not in s.villages) for s, v in zip(senders, village, strict=True)]
    )
    if not bad.any():
        return []
    reasons = [
        f"村代码 {_quote(v)} 不在采集人 {s.login} 负责的村"
        f"（{'、'.join(s.villages)}）；请核实是否选错村"
        for s, v, b in zip(senders, village, bad, strict=True)
        if b
    ]
    return [_flag(table, bad, "sender_village", "village", reasons)]


def _roster_ids(rosters: Rosters | None) -> dict[str, set[str]]:
    if rosters is None:
        return {}
    lists = pick_lists(rosters).items()
    return {name: set(frame["name"].astype(str).to_numpy(dtype=object)) for name, frame in lists}


def _tables(form: TidyForm) -> Iterator[tuple[str | None, pd.DataFrame, list[Field]]]:
    fields = form.schema.fields
    yield None, form.table, [f for f in fields if f.repeat is None]
    for rep in form.repeats:
        own = form.repeats[rep].columns
        # The parent's village and dates, so repeat rows can be placed and dated.
        wanted = ["village", *(r.date for r in OVERDUE_RULES if r.repeat == rep)]
        parent = [c for c in dict.fromkeys(wanted) if c in form.table.columns and c not in own]
        yield rep, form.repeat(rep, parent), [f for f in fields if f.repeat == rep]


def _col(table: pd.DataFrame, f: Field, suffix: str = "") -> str | None:
    for name in (f.name + suffix, f.path + suffix):
        if name in table.columns:
            return name
    return None


def _label(f: Field) -> str:
    return f.label.get("zh") or f.label.get("default") or f.name


def _day_text(days: pd.Series) -> list[str]:
    """YYYY-MM-DD of each date, formatted once per distinct day."""
    codes, uniques = pd.factorize(days)
    texts = [*pd.DatetimeIndex(uniques).strftime("%Y-%m-%d"), ""]
    return [texts[c] for c in codes]


def _text(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), None)


def _quote(value: object) -> str:
    """A typed value as quoted in a reason: masked, on one line, at most :data:`_MAX_QUOTE`."""
    text = " ".join(scrub_text(str(value)).split())
    return text if len(text) <= _MAX_QUOTE else text[: _MAX_QUOTE - 1] + "…"


def _masked(values: pd.Series) -> pd.Series:
    """A column of typed values masked, each distinct value once."""
    codes, uniques = pd.factorize(values)
    masked = np.array([scrub_text(u) if isinstance(u, str) else u for u in uniques] + [None], dtype=object)  # fmt: skip
    return pd.Series(masked[codes], index=values.index, dtype=object)


def _clean(reasons: Sequence[str]) -> list[str]:
    # Every reason masked and cut short, once per distinct text (reasons repeat a lot).
    done: dict[str, str] = {}
    out = []
    for r in reasons:
        if r not in done:
            text = scrub_text(r)
            done[r] = text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
        out.append(done[r])
    return out


def _flag(table: pd.DataFrame, mask: np.ndarray | pd.Series, check: str, field: str, reasons: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    shown = [c for c in ("instance_id", "repeat_index", "village") if c in table.columns]
    rows = table.loc[np.asarray(mask, dtype=bool), shown]  # not the whole row: 1M rows a year
    village = _text(rows["village"]) if "village" in rows.columns else None
    return pd.DataFrame(
        {
            "instance_id": rows["instance_id"].to_numpy(dtype=object),
            "repeat_index": rows["repeat_index"].to_numpy() if "repeat_index" in rows else pd.NA,
            "village_code": village.to_numpy(dtype=object) if village is not None else None,
            "check": check,
            "field": field,
            "reason": _clean(reasons),
        }
    )


def _gps(ctx: _Context, table: pd.DataFrame, fields: list[Field]) -> list[pd.DataFrame]:
    out: list[pd.DataFrame] = []
    for f in fields:
        if f.type != "geopoint":
            continue
        lon, lat, acc = (_col(table, f, s) for s in ("_lon", "_lat", "_accuracy"))
        if lon is None or lat is None:
            continue
        has = (table[lon].notna() & table[lat].notna()).to_numpy(dtype=bool)
        if not has.any():
            continue
        # the point, and what a flag shows: not the whole row of every point
        shown = [lon, lat, acc, "instance_id", "repeat_index", "village"]
        rows = table.loc[has, [c for c in dict.fromkeys(shown) if c and c in table.columns]]
        points = pd.DataFrame(
            {
                "lon": rows[lon].astype(float).to_numpy(),
                "lat": rows[lat].astype(float).to_numpy(),
                "accuracy": rows[acc].astype(float).to_numpy() if acc else np.nan,
                "village_code": _text(rows["village"]).to_numpy(dtype=object)
                if "village" in rows.columns
                else None,
            }
        )
        where = locate_points(points, ctx.boundaries.villages, accuracy_m=ctx.accuracy_m)
        label = _label(f)
        bad = where["inaccurate"].to_numpy(dtype=bool)
        if bad.any():
            reasons = [
                f"{label}：GPS 精度 {a:.0f} 米，超过要求的 {ctx.accuracy_m:g} 米；请到开阔处重新定位"
                for a in where.loc[bad, "accuracy"]
            ]
            out.append(_flag(rows, bad, "gps_accuracy", f.path, reasons))
        bad = where["outside"].to_numpy(dtype=bool)
        if bad.any():
            reasons = [f"{label}：GPS 位置不在本镇任何村范围内{ctx.suffix}"] * int(bad.sum())
            out.append(_flag(rows, bad, "gps_outside", f.path, reasons))
        bad = where["mismatch"].to_numpy(dtype=bool)
        if bad.any():
            found = where.loc[bad, ["gps_village_code", "village_code"]]
            reasons = [
                f"{label}：GPS 位置在{ctx.names.get(g, g)}，与所选村（{ctx.names.get(c, c)}）不符"
                f"{ctx.suffix}"
                for g, c in found.itertuples(index=False)
            ]
            out.append(_flag(rows, bad, "gps_village", f.path, reasons))
    return out


def _dates(ctx: _Context, table: pd.DataFrame, fields: list[Field]) -> list[pd.DataFrame]:
    out: list[pd.DataFrame] = []
    limit = pd.Timestamp(ctx.as_of)
    for f in fields:
        col = _col(table, f)
        if f.type != "date" or f.meta or f.name in _DEADLINE_FIELDS or col is None:
            continue
        day = pd.to_datetime(table[col], errors="coerce")
        future = (day > limit).to_numpy(dtype=bool)
        first, after = pd.Timestamp(ctx.year, 1, 1), pd.Timestamp(ctx.year + 1, 1, 1)
        outside = ((day < first) | (day >= after)).to_numpy(dtype=bool) & ~future  # NaT: neither
        label = _label(f)
        if future.any():
            reasons = [
                f"{label} {d} 晚于统计截止日 {ctx.as_of:%Y-%m-%d}；请核对日期"
                for d in _day_text(day[future])
            ]
            out.append(_flag(table, future, "date_future", f.path, reasons))
        if outside.any():
            reasons = [
                f"{label} {d} 不在计划年度 {ctx.year} 年内；请核对日期"
                for d in _day_text(day[outside])
            ]
            out.append(_flag(table, outside, "date_outside_year", f.path, reasons))
    return out


def _rosters(ctx: _Context, table: pd.DataFrame, fields: list[Field]) -> list[pd.DataFrame]:
    out: list[pd.DataFrame] = []
    for f in fields:
        col = _col(table, f)
        if col is None:
            continue
        if f.from_file and f.from_file in ctx.roster_ids:
            check, valid = "unknown_roster_id", ctx.roster_ids[f.from_file]
        elif f.name == "village" or f.list_name == "village":
            check, valid = "unknown_village", ctx.codes
        else:
            continue
        # Judge each distinct value once: a roster ID or village code repeats over many rows.
        codes, uniques = ctx.factorize(table, col)
        texts = [str(u).strip() for u in uniques]
        typed = pd.Series(texts, dtype=object)
        wrong = np.append(((typed != "") & ~typed.isin(valid)).to_numpy(dtype=bool), False)
        bad = wrong[codes]
        if not bad.any():
            continue
        quoted = [_quote(t) if w else "" for t, w in zip(texts, wrong, strict=False)]
        if check == "unknown_roster_id":
            label = _label(f)
            reasons = [
                f"{label}：名单 {f.from_file} 中没有编号 {quoted[c]}；请核对名单或重新选择"
                for c in codes[bad]
            ]
        else:
            reasons = [
                f"村代码 {quoted[c]} 不在村庄名录（geo/villages.csv）中；请更新表单的村列表后重新选择"
                for c in codes[bad]
            ]
        out.append(_flag(table, bad, check, f.path, reasons))
    return out


def _subject(ctx: _Context, table: pd.DataFrame, cols: list[str], labels: list[str]) -> list[str]:
    parts = []
    for col, label in zip(cols, labels, strict=True):
        values = _text(table[col])
        if col == "village":
            values = values.map(lambda v: ctx.names.get(v, v), na_action="ignore")
        # titles, place names and "other" texts are typed freely: quoted masked and short
        codes, uniques = pd.factorize(values)
        shown = np.array([f"{label} {_quote(u)}" for u in uniques] + [None], dtype=object)
        parts.append(shown[codes])
    if not parts:
        return [""] * len(table)
    return ["、".join(p for p in row if isinstance(p, str)) for row in zip(*parts, strict=True)]


def _group_keys(factors: list[tuple[np.ndarray, Any]]) -> np.ndarray:
    """One int64 key per row, equal where all columns are equal (NA equal to NA), from each
    column's ``pd.factorize``."""
    key = np.zeros(len(factors[0][0]), dtype=np.int64)
    for codes, uniques in factors:
        key, _ = pd.factorize(key * (len(uniques) + 1) + (codes + 1))  # stays below n²
    return key


def _duplicates(ctx: _Context, form_id: str, table: pd.DataFrame, fields: list[Field]) -> list[pd.DataFrame]:  # fmt: skip
    if form_id not in DUPLICATE_KEYS or table.empty:
        return []
    subject, date_field = DUPLICATE_KEYS[form_id]
    by_name = {f.name: f for f in fields}
    if date_field not in table.columns or any(c not in table.columns for c in subject):
        return []
    day = pd.to_datetime(table[date_field], errors="coerce")
    usable = day.notna().to_numpy(dtype=bool)
    factors = [*(ctx.factorize(table, c) for c in subject), pd.factorize(day)]
    if subject:  # a blank subject (code -1) is nobody's duplicate
        usable = usable & (factors[0][0] >= 0)
    key = _group_keys(factors)
    size = np.bincount(key[usable], minlength=len(key))[key]  # usable rows of each key
    dup = usable & (size > 1)
    if not dup.any():
        return []
    rows = table.loc[dup, ["instance_id", *subject]]
    frame = pd.DataFrame({"g": key[dup], "id": rows["instance_id"].astype(str).to_numpy()})
    grouped = frame.groupby("g")["id"]
    ids = frame["id"].to_numpy()
    first, last = grouped.transform("first").to_numpy(), grouped.transform("last").to_numpy()
    other = np.where(ids == first, last, first)
    labels = [_label(by_name[c]) if c in by_name else c for c in subject]
    who = _subject(ctx, rows, list(subject), labels)
    reasons = [
        f"疑似重复：{w + '，' if w else ''}{d} 共有 {n} 条记录（另见 {o}{' 等' if n > 2 else ''}）；"
        "请核对后删除多余记录"
        for w, d, n, o in zip(who, _day_text(day[dup]), size[dup].astype(int), other, strict=True)
    ]
    return [_flag(table, dup, "duplicate", date_field, reasons)]


def _overdue(ctx: _Context, form_id: str, repeat: str | None, table: pd.DataFrame, fields: list[Field]) -> list[pd.DataFrame]:  # fmt: skip
    out: list[pd.DataFrame] = []
    by_name = {f.name: f for f in fields}
    for rule in OVERDUE_RULES:
        if rule.form != form_id or rule.repeat != repeat:
            continue
        if rule.status not in table.columns or rule.deadline not in table.columns:
            continue
        limit = pd.Timestamp(ctx.as_of)
        deadline = pd.to_datetime(table[rule.deadline], errors="coerce")
        is_open = _text(table[rule.status]) == rule.open_value
        made = (
            pd.to_datetime(table[rule.date], errors="coerce")
            if rule.date in table.columns
            else pd.Series(pd.NaT, index=table.index)
        )
        known = made.isna() | (made <= limit)  # a finding made after the as-of date is not known
        late = (is_open & (deadline < limit) & known).to_numpy(dtype=bool)
        if not late.any():
            continue
        kind = by_name.get(rule.kind)
        choices = (kind.choices or {}) if kind else {}
        kinds = _text(table.loc[late, rule.kind]) if rule.kind in table else None
        names = [
            (choices.get(k, {}).get("zh") or k) if isinstance(k, str) else "问题"
            for k in (kinds if kinds is not None else [None] * int(late.sum()))
        ]
        days = (limit - deadline[late]).dt.days
        reasons = [
            f"{k}：整改期限 {d} 已过 {n} 天，仍为“待整改”；请督促整改并更新记录"
            for k, d, n in zip(names, _day_text(deadline[late]), days, strict=True)
        ]
        out.append(_flag(table, late, "overdue_finding", rule.deadline, reasons))
    return out
