"""Follow-up items (整改清单/跟进清单): every open item a village or department must act on.

Items come from the submissions (none is typed twice):

========================== ============================================= ====================
kind                       open when                                     deadline
========================== ============================================= ====================
人居环境问题                a sweep's finding is 待整改                     its rectify-by date
健身器材损坏/缺失            the village's latest inspection says so          plan deadline
路灯故障                    the road's latest night inspection lists it      plan deadline
公益性岗位整改              the holder's latest review: 不符合/整改/清退      plan deadline
低保调整                    the household's latest verification: 调整/停保/新增 plan deadline
查体转诊                    the resident's latest check-up asks for referral —
家访跟进                    a home visit asks for follow-up                 —
治安隐患                    a patrol found problems                         —
群众意见建议                a survey answer needs follow-up                 —
========================== ============================================= ====================

"Plan deadline" is the deadline of the plan indicator the item holds back (from ``plan.toml``).
An item leaves the list when its submission is edited (e.g. the finding set to 已清理) or a
later submission about the same subject no longer reports it. Submissions count from 01-01 of
the plan year to the as-of date, and "latest" is chosen by
:func:`pipelines.analysis.indicators.latest_rows`, the rule the indicators use, so an item and the
indicator it holds back read the same submission.

Items of findings carry the ``photo`` taken with them (the attachment's file name, as the form
stores it) so the maps can link it; it is not shown in the lists.

Personal data is masked when the item is made, so no later step can leak it: names become the
surname plus ``*``, ID numbers 6 + ``********`` + 4, phones 3 + ``****`` + 4, and ID numbers or
phones typed into free text are masked too: :func:`pipelines.privacy.scrub_text` goes over
every text column of the items (all of :data:`COLUMNS` but the photo's file name), not a list
of the columns known to hold free text, so a column added later is masked as well.

Item ids
--------
Every item has an ``item_id``: the first 16 hex digits of the SHA-256 of
``"form_id|instance_id|repeat_index|kind"`` (a blank repeat index for an item that is a whole
submission), each digit written as a letter of :data:`ID_LETTERS` (0 → a … f → s), e.g.
``pdnmrrmbkqnsgnbc`` (legacy ``c3baeea19dbf6b12``). It is URL-safe, the same at every
refresh for as long as the finding is open, and unique among the items. The portal's "处理"
button passes it to the rectification form, which is how a fix finds its item. (Renaming a kind
in :data:`_SOURCES` renames its items' ids: rectifications sent before would no longer find
them.)

Why letters: every output goes through the masker (:func:`pipelines.privacy.scrub_text`), and
a few % of hex ids held a run of 11+ digits that reads as a phone or an ID number
(``a880243906881752``): the lists showed them masked while the portal used them raw, so the id
in a list found nothing. An id with no digit has nothing to mask, so the list's 事项编号 is the
id the portal uses.

Legacy ids: until issue 13 the id was the hex digits themselves. A rectification sent with
such an id (from a form opened before the change, or a list printed then) still finds its item:
:func:`rectifications` takes a 16-hex-digit id that is not an item's id as the item's legacy id
and writes it in letters (:func:`item_id_from_legacy`: the same digest, so nothing is hashed
again). An item's own id is tried first, so the rare string that could be read both ways (16
digits all in a–f) keeps its meaning as an id of today.

Closing items (整改反馈)
-----------------------
The rectification form (``forms/rectification.xlsx``, form id :data:`RECTIFICATION`) reports a
fix: ``item_id``, what was done (``action``), ``done`` yes/no, a ``photo`` and the ``fix_date``.
For each item, the rectifications with its ``item_id`` dated in the plan year up to the as-of
date count, and the latest (by ``fix_date``, then submission time, as :func:`latest_rows`)
decides:

- ``done = yes``: the item is closed. It leaves the open list and is listed in
  :attr:`FollowUpBook.closed` with ``closed_on``, ``closed_by`` (the form's ``username``, else
  the submitter the record or ``manyi serve`` knows), ``fix_action`` (masked like every text),
  ``fix_photo`` (the attachment's file name) and ``fix_instance_id``.
- ``done = no``: the item stays open and shows the attempt: ``attempts`` (how many
  rectifications it has had), ``last_attempt_on`` and ``last_attempt_note``.
- A later "no" after a "yes" reopens the item: the latest decides, whichever it says.

A rectification is ignored (listed nowhere, counted nowhere) when its ``item_id`` is not an item
of this run (mistyped, or the finding has since left the list: edited or reported fixed by a
later inspection), when it names a village other than its item's (a town item has none), or
when a reviewer rejected it in ODK Central (review state ``rejected``).

The sanitation indicator counts a finding closed this way as cleared
(:func:`with_rectified_findings`, which :func:`pipelines.analysis.indicators.compute_progress`
applies), from the same decision, so the list and the indicator agree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from forms.schema import FormSchema
from geo.villages import Village
from pipelines.analysis.indicators import latest_rows, plan_rows
from pipelines.analysis.plan import Plan
from pipelines.analysis.rosters import PERSONAL, Rosters
from pipelines.analysis.tidy import TidyForm
from pipelines.privacy import mask_id_number, mask_name, mask_phone, scrub_text

COLUMNS = (
    "liaison_group",
    "village",
    "village_code",
    "kind",
    "domain",
    "department",
    "subject_id",
    "subject",
    "id_number",
    "phone",
    "content",
    "found_on",
    "deadline",
    "overdue_days",
    "state",
    "form",
    "instance_id",
    "repeat_index",
    "form_id",
    "indicator_id",
    "lat",
    "lon",
    "photo",
)
# Chinese headers of the columns people see, in order (the rest are for maps and joins).
HEADERS = {
    "liaison_group": "帮包联系组",
    "village": "村",
    "village_code": "村代码",
    "kind": "事项类型",
    "domain": "领域",
    "department": "责任部门",
    "subject_id": "名单编号",
    "subject": "对象",
    "id_number": "身份证号",
    "phone": "联系电话",
    "content": "内容",
    "found_on": "发现日期",
    "deadline": "整改期限",
    "overdue_days": "逾期天数",
    "state": "状态",
    "attempts": "整改反馈次数",
    "last_attempt_on": "最近反馈日期",
    "last_attempt_note": "最近反馈情况",
    "form": "来源表单",
    "instance_id": "记录编号",
    "repeat_index": "条目序号",
    "item_id": "事项编号",
}
# The open items (:attr:`FollowUpBook.open`) and the closed ones (:attr:`FollowUpBook.closed`).
OPEN_COLUMNS = (*COLUMNS, "item_id", "attempts", "last_attempt_on", "last_attempt_note")
CLOSED_COLUMNS = (
    *COLUMNS, "item_id", "closed_on", "closed_by", "fix_action", "fix_photo", "fix_instance_id",
)  # fmt: skip
# The closed list people see (sheet 已整改): the finding, then who fixed it, when and how.
_FINDING = [k for k in HEADERS if k in COLUMNS and k not in ("overdue_days", "state")]
_SOURCE = ["form", "instance_id", "repeat_index"]
CLOSED_HEADERS = {
    **{k: HEADERS[k] for k in _FINDING if k not in _SOURCE},
    "closed_on": "整改完成日期",
    "closed_by": "整改人",
    "fix_action": "整改措施",
    **{k: HEADERS[k] for k in (*_SOURCE, "item_id")},
    "fix_instance_id": "整改反馈记录编号",
}
OPEN, OVERDUE, CLOSED = "待整改", "已逾期", "已整改"
RECTIFICATION = "rectification"  # the form that closes items (forms/rectification.xlsx)
SANITATION_KIND = "人居环境问题"
# Columns that are keys, not text: the photo's file name finds the stored attachment (it is
# never shown; the maps link a copy named by its digest).
_KEYS = frozenset({"photo"})
_DATES = ("found_on", "deadline", "last_attempt_on", "closed_on")
# Columns of the tidy table that may name who sent a record, after the form's username.
_SUBMITTER = ("submitter_name", "submitterName", "_submitted_by")
# The 16 letters an item id is written in, one per hex digit: no digit, and no i, l or o
# (read as 1 and 0 when typed from a printed list).
ID_LETTERS = "abcdefghjkmnpqrs"
_TO_LETTERS = str.maketrans("0123456789abcdef", ID_LETTERS)
_LEGACY_ID = re.compile(r"[0-9a-f]{16}")
TOWN_GROUP = "镇直"  # items with no village (roads, lighting)
_MAX_TEXT = 300


@dataclass(frozen=True)
class _Source:
    kind: str
    form: str
    indicator: str  # the plan indicator it holds back: domain, department, deadline
    build: Callable[[_Ctx, TidyForm], pd.DataFrame | None]
    own_deadline: bool = False  # the item carries its own deadline (else the plan's)
    plan_deadline: bool = True


@dataclass(frozen=True)
class _Ctx:
    as_of: date
    year: int
    people: dict[str, pd.DataFrame]  # roster kind -> masked subject, id_number, phone by ID


@dataclass(frozen=True)
class FollowUpBook:
    """The follow-up items at one as-of date, split by the rectifications received."""

    open: pd.DataFrame  # :data:`OPEN_COLUMNS`: still to act on (待整改/已逾期)
    closed: pd.DataFrame  # :data:`CLOSED_COLUMNS`: closed by a rectification (已整改)


def follow_up_book(
    forms: Mapping[str, TidyForm],
    *,
    as_of: date,
    year: int,
    plan: Plan,
    villages: Sequence[Village],
    rosters: Rosters | None = None,
    senders: Iterable[Any] = (),
) -> FollowUpBook:
    """Every follow-up item at ``as_of``, open or closed by its latest rectification.

    Only submissions dated in the plan ``year`` up to ``as_of`` count, findings and
    rectifications alike. Both frames are sorted by liaison group, village, deadline (items
    without one last) and date found. ``senders`` (:meth:`pipelines.store.Store.senders`) name
    who sent a rectification to ``manyi serve`` when the form's ``username`` is blank.
    """
    items = _items(forms, as_of=as_of, year=year, plan=plan, villages=villages, rosters=rosters)
    known = pd.Series(items["village_code"].to_numpy(dtype=object), index=items["item_id"])
    fixes = rectifications(forms, known, as_of=as_of, year=year, senders=senders)
    fix = fixes.reindex(items["item_id"])
    done = fix["done"].eq(True).to_numpy(dtype=bool)

    still = items[~done].copy()
    tried = fix[~done]
    still["attempts"] = tried["attempts"].fillna(0).astype("Int64").to_numpy()
    still["last_attempt_on"] = pd.to_datetime(tried["fix_date"]).to_numpy()
    still["last_attempt_note"] = tried["action"].to_numpy(dtype=object)

    closed = items[done].copy()
    fixed = fix[done]
    closed["state"] = CLOSED
    closed["overdue_days"] = pd.array([pd.NA] * len(closed), dtype="Int64")
    closed["closed_on"] = pd.to_datetime(fixed["fix_date"]).to_numpy()
    closed["closed_by"] = fixed["by"].to_numpy(dtype=object)
    closed["fix_action"] = fixed["action"].to_numpy(dtype=object)
    closed["fix_photo"] = fixed["photo"].to_numpy(dtype=object)
    closed["fix_instance_id"] = fixed["instance_id"].to_numpy(dtype=object)
    return FollowUpBook(
        still.reset_index(drop=True)[list(OPEN_COLUMNS)],
        closed.reset_index(drop=True)[list(CLOSED_COLUMNS)],
    )


def follow_ups(
    forms: Mapping[str, TidyForm],
    *,
    as_of: date,
    year: int,
    plan: Plan,
    villages: Sequence[Village],
    rosters: Rosters | None = None,
) -> pd.DataFrame:
    """Open follow-up items at ``as_of``, one row each, with :data:`OPEN_COLUMNS`:
    :attr:`FollowUpBook.open` of :func:`follow_up_book`."""
    return follow_up_book(
        forms, as_of=as_of, year=year, plan=plan, villages=villages, rosters=rosters
    ).open


def item_ids(form_id: object, instance_id: object, repeat_index: object, kind: object) -> pd.Series:
    """The items' ids: the first 16 hex digits of SHA-256 of
    ``"form_id|instance_id|repeat_index|kind"``, written in :data:`ID_LETTERS` (no digit, so
    the masker never takes one for a phone or an ID number). Each argument is a Series or one
    value for all; a blank repeat index (an item that is a whole submission) is written as
    nothing."""
    parts = [p for p in (form_id, instance_id, repeat_index, kind) if isinstance(p, pd.Series)]
    index = parts[0].index if parts else pd.RangeIndex(1)

    def text(v: object) -> str:
        return "" if _blank(v) else str(int(v)) if isinstance(v, float) else str(v)

    def column(p: object) -> list[str]:
        if not isinstance(p, pd.Series):
            return [text(p)] * len(index)
        return [text(v) for v in p.to_numpy(dtype=object)]  # plain objects: quicker to walk

    keys = zip(*(column(p) for p in (form_id, instance_id, repeat_index, kind)), strict=True)
    return pd.Series(
        [
            hashlib.sha256("|".join(k).encode()).hexdigest()[:16].translate(_TO_LETTERS)
            for k in keys
        ],
        index=index,
        dtype=object,
    )


def item_id_from_legacy(value: object) -> str | None:
    """The item id whose legacy id (before issue 13: the same 16 hex digits, not in letters)
    is ``value``, or None when ``value`` is not 16 hex digits."""
    if not isinstance(value, str) or not _LEGACY_ID.fullmatch(value):
        return None
    return value.translate(_TO_LETTERS)


def rectifications(
    forms: Mapping[str, TidyForm],
    known: pd.Series,
    *,
    as_of: date,
    year: int,
    senders: Iterable[Any] = (),
) -> pd.DataFrame:
    """The rectifications that decide each item, indexed by ``item_id``.

    ``known`` maps each item id to its village code (None for a town item); a rectification of
    another item id, naming another village, rejected in review or dated outside the plan year
    up to ``as_of`` is left out (see the module docstring). Columns: ``attempts`` (how many
    count), then the latest one's ``done`` (True for yes), ``fix_date``, ``action`` (masked),
    ``photo``, ``instance_id`` and ``by`` (who sent it).
    """
    columns = ["attempts", "done", "fix_date", "action", "photo", "instance_id", "by"]
    form = forms.get(RECTIFICATION)
    table = form.table if form is not None else pd.DataFrame()
    if table.empty or not {"item_id", "fix_date"} <= set(table.columns):
        return pd.DataFrame(columns=columns, index=pd.Index([], name="item_id"))
    rows = plan_rows(table, "fix_date", year=year, as_of=as_of)
    ids = _text(rows["item_id"]).map(lambda v: str(v).strip(), na_action="ignore")
    ids = _current_ids(ids, known.index)
    # the village of each rectification's item (a plain dict: Series.to_dict boxes each value)
    villages = dict(zip(known.index.to_numpy(dtype=object), known.to_numpy(dtype=object), strict=True))  # fmt: skip
    owner = ids.map(villages)
    named = _column(rows, "village")
    # a village's item only with its own village named; a town item (roads) with none
    town_item = owner.map(_blank).to_numpy(dtype=bool)
    blank = named.map(_blank).to_numpy(dtype=bool)
    same = (named.astype(object) == owner.astype(object)).to_numpy(dtype=bool)
    known_id = ids.astype(object).isin(known.index).to_numpy(dtype=bool)  # Arrow's isin: a loop
    keep = known_id & ((town_item & blank) | (~town_item & same))
    keep &= (_column(rows, "review_state") != "rejected").to_numpy(dtype=bool)
    rows = rows[keep].assign(item_id=ids[keep])
    latest = latest_rows(rows, ["item_id"], "fix_date", year=year, as_of=as_of)
    out = pd.DataFrame(
        {
            "attempts": rows.groupby("item_id").size().reindex(latest["item_id"]).to_numpy(),
            "done": (_column(latest, "done") == "yes").to_numpy(dtype=bool),
            "fix_date": latest["fix_date"].to_numpy(),
            "action": _cleaned(_column(latest, "action")).to_numpy(),
            "photo": _column(latest, "photo").to_numpy(),
            "instance_id": latest["instance_id"].to_numpy(dtype=object),
            "by": _cleaned(_senders(latest, senders)).to_numpy(),
        },
        index=pd.Index(latest["item_id"].to_numpy(dtype=object), name="item_id"),
    )
    return out[columns]


def with_rectified_findings(
    forms: Mapping[str, TidyForm], *, as_of: date, year: int
) -> Mapping[str, TidyForm]:
    """``forms`` with each sanitation finding that a rectification closed by ``as_of``
    marked ``cleared``, for the indicators (the follow-up lists keep the finding as it was
    found and list it as closed). Unchanged when there is no rectification or no finding.
    """
    sweep, fixes = forms.get("sanitation_sweep"), forms.get(RECTIFICATION)
    if sweep is None or fixes is None or fixes.table.empty or "findings" not in sweep.repeats:
        return forms
    findings = sweep.repeats["findings"]
    if findings.empty or "status" not in findings.columns:
        return forms
    waiting = (_text(findings["status"]) == "to_rectify").to_numpy(dtype=bool)
    rows = findings[waiting]
    ids = item_ids("sanitation_sweep", rows["instance_id"], rows["repeat_index"], SANITATION_KIND)
    village = sweep.table.set_index("instance_id")["village"] if "village" in sweep.table else None
    codes = rows["instance_id"].map(village) if village is not None else None
    known = pd.Series(_text(codes).to_numpy() if codes is not None else None, index=ids.to_numpy())
    decided = rectifications(forms, known, as_of=as_of, year=year)
    closed = ids.isin(decided.index[decided["done"].astype(bool)])
    if not closed.any():
        return forms
    marked = findings.copy()
    marked.loc[closed[closed].index, "status"] = "cleared"
    return {
        **forms,
        "sanitation_sweep": replace(sweep, repeats={**sweep.repeats, "findings": marked}),
    }


def display(items: pd.DataFrame, headers: Mapping[str, str] = HEADERS) -> pd.DataFrame:
    """The columns people see, with Chinese headers and dates as text (for CSV and XLSX).

    ``headers``: :data:`HEADERS` for open items, :data:`CLOSED_HEADERS` for closed ones. A
    column the frame lacks (items made before rectifications existed) is shown empty.
    """
    shown = items.reindex(columns=list(headers)).copy()
    for col in _DATES:
        if col in shown.columns:
            days = pd.to_datetime(shown[col], errors="coerce")
            shown[col] = days.dt.strftime("%Y-%m-%d").astype(object).where(days.notna(), None)
    return shown.rename(columns=dict(headers))


def _items(
    forms: Mapping[str, TidyForm],
    *,
    as_of: date,
    year: int,
    plan: Plan,
    villages: Sequence[Village],
    rosters: Rosters | None = None,
) -> pd.DataFrame:
    """Every item the submissions raise at ``as_of`` (:data:`COLUMNS` and ``item_id``),
    before any rectification, sorted as the lists show them."""
    ctx = _Ctx(as_of, year, _people(rosters))
    frames = []
    for src in _SOURCES:
        form = forms.get(src.form)
        if form is None or form.table.empty:
            continue
        items = src.build(ctx, form)
        if items is None or items.empty:
            continue
        items["kind"] = src.kind
        items["form_id"] = src.form
        items["form"] = form.schema.title or src.form
        try:
            ind = plan.indicator(src.indicator)
        except KeyError:  # another town's plan may lack the indicator: the item still counts
            ind = None
        items["indicator_id"] = src.indicator
        items["domain"] = plan.domains.get(ind.domain, ind.domain) if ind else None
        items["department"] = plan.departments.get(ind.department, ind.department) if ind else None  # fmt: skip
        plan_deadline = ind.deadline_date(year) if ind and src.plan_deadline else None
        if not src.own_deadline:
            items["deadline"] = pd.Timestamp(plan_deadline) if plan_deadline else pd.NaT
        frames.append(items)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (*COLUMNS, "item_id")})
    out = pd.concat([f.reindex(columns=COLUMNS) for f in frames], ignore_index=True)
    groups = {v.code: v.liaison_group for v in villages}
    names = {v.code: v.name for v in villages}
    code = out["village_code"].astype(object).where(out["village_code"].notna(), None)
    out["village_code"] = code
    out["village"] = code.map(lambda c: names.get(c, c) if c else TOWN_GROUP)
    out["liaison_group"] = code.map(
        lambda c: f"第{groups[c]}组" if c in groups else TOWN_GROUP
    ).astype(object)
    out["found_on"] = pd.to_datetime(out["found_on"], errors="coerce")
    out["deadline"] = pd.to_datetime(out["deadline"], errors="coerce")
    limit = pd.Timestamp(as_of)
    late = out["deadline"] < limit
    out["overdue_days"] = (limit - out["deadline"]).dt.days.where(late).astype("Int64")
    out["state"] = np.where(late, OVERDUE, OPEN)
    out["repeat_index"] = pd.to_numeric(out["repeat_index"], errors="coerce").astype("Int64")
    for col in COLUMNS:  # every text the item carries, whatever column it is in
        if col not in _KEYS and out[col].dtype == object:
            out[col] = _cleaned(out[col])
    group_order = {f"第{g}组": g for g in range(1, 10)} | {TOWN_GROUP: 99}
    out = out.assign(_g=out["liaison_group"].map(group_order).fillna(98))
    out = out.sort_values(
        ["_g", "village_code", "deadline", "found_on", "instance_id", "repeat_index"],
        na_position="last",
        kind="stable",
    )
    out["item_id"] = item_ids(out["form_id"], out["instance_id"], out["repeat_index"], out["kind"])
    return out.drop(columns="_g").reset_index(drop=True)[[*COLUMNS, "item_id"]]


# --- helpers -----------------------------------------------------------------------------------


def _clean(value: object) -> object:
    if not isinstance(value, str):
        return value
    text = " ".join(scrub_text(value).split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _cleaned(values: pd.Series) -> pd.Series:
    """``values`` with every text through :func:`_clean`, each distinct text once: the lists
    repeat the same kinds, labels and notes over thousands of rows."""
    done: dict[str, object] = {}

    def clean(value: object) -> object:
        if not isinstance(value, str):
            return value
        if value not in done:
            done[value] = _clean(value)
        return done[value]

    return values.map(clean, na_action="ignore")


def _current_ids(ids: pd.Series, known: pd.Index) -> pd.Series:
    """``ids`` with each legacy id of a ``known`` item replaced by the item's id (see "Legacy
    ids" in the module docstring); an item's own id is kept as it is."""
    mine = set(known.to_numpy(dtype=object))

    def current(value: object) -> object:
        if value in mine:
            return value
        new = item_id_from_legacy(value)
        return new if new in mine else value

    return ids.map(current, na_action="ignore")


def _blank(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip())  # fmt: skip


def _column(rows: pd.DataFrame, name: str) -> pd.Series:
    """A text column of ``rows`` (all None when the form version lacked it)."""
    if name in rows.columns:
        return _text(rows[name])
    return pd.Series(None, index=rows.index, dtype=object)


def _senders(rows: pd.DataFrame, senders: Iterable[Any]) -> pd.Series:
    """Who sent each rectification: the person ``manyi serve`` took it from (their name,
    else login: the server checked who they are, a typed ``username`` it did not), else the
    form's ``username``, else a submitter the record carries (Central, Kobo)."""
    who = _column(rows, "username")
    for name in _SUBMITTER:
        who = who.where(who.map(lambda v: not _blank(v)), _column(rows, name))
    served = {s.instance_id: s.name or s.login for s in senders if s.form_id == RECTIFICATION}
    if served:
        by_server = rows["instance_id"].map(served)
        who = by_server.where(by_server.map(lambda v: not _blank(v)), who)
    return who.where(who.map(lambda v: not _blank(v)), None)


def _people(rosters: Rosters | None) -> dict[str, pd.DataFrame]:
    """Masked subject, ID number and phone per roster ID, for each roster kind.

    The subject is the roster's ``person_name``, else its ``label`` (what the phone's picker
    shows, often a name): either way reduced to the surname plus ``*``. A 低保 household is
    shown by its head (户主) from ``dibao_members``.
    """
    if rosters is None:
        return {}
    out: dict[str, pd.DataFrame] = {}
    for kind in ("students", "residents", "welfare_posts", "dibao_households"):
        frame = rosters.get(kind)
        ids = frame["name"].astype(str)
        cols = {c: frame[c] for c in PERSONAL if c in frame.columns}
        if kind == "dibao_households":
            members = rosters.dibao_members
            heads = members.sort_values("relation", key=lambda s: s != "户主", kind="stable")
            heads = heads.drop_duplicates("household").set_index("household")
            for c in PERSONAL:
                if c in heads.columns and c not in cols:
                    cols[c] = ids.map(heads[c])
        names = cols.get("person_name", frame["label"])
        out[kind] = pd.DataFrame(
            {
                "subject": _masked(names, mask_name),
                "id_number": _masked(cols.get("id_number"), mask_id_number),
                "phone": _masked(cols.get("phone"), mask_phone),
            },
            index=ids.to_numpy(),
        )
    return out


def _masked(values: pd.Series | None, mask: Callable[[object], object]) -> np.ndarray | None:
    if values is None:
        return None
    values = values.astype(object).where(values.notna() & (values != ""), None)
    return values.map(mask, na_action="ignore").to_numpy(dtype=object)


def _text(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), None)


def _label(schema: FormSchema, field: str, values: pd.Series) -> pd.Series:
    """Chinese labels of a select_one column (codes the schema does not know stay as they are)."""
    try:
        choices = schema.field(field).choices or {}
    except KeyError:
        choices = {}
    labels = {k: v.get("zh") or v.get("default") or k for k, v in choices.items()}
    return _text(values).map(lambda v: labels.get(v, v), na_action="ignore")


def _multi_label(schema: FormSchema, field: str, values: pd.Series) -> pd.Series:
    try:
        choices = schema.field(field).choices or {}
    except KeyError:
        choices = {}
    labels = {k: v.get("zh") or k for k, v in choices.items()}
    return _text(values).map(
        lambda v: "、".join(labels.get(x, x) for x in v.split()), na_action="ignore"
    )


def _flagged(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    """Rows whose ``field`` says yes. Taken before the date window: a county's forms have
    hundreds of thousands of rows and few ask for a follow-up."""
    return frame[(_text(frame[field]) == "yes").to_numpy(dtype=bool)]


def _until(ctx: _Ctx, frame: pd.DataFrame, date_col: str) -> pd.DataFrame:
    return plan_rows(frame, date_col, year=ctx.year, as_of=ctx.as_of)


def _latest(ctx: _Ctx, frame: pd.DataFrame, keys: list[str], date_col: str) -> pd.DataFrame:
    return latest_rows(frame, keys, date_col, year=ctx.year, as_of=ctx.as_of)


def _photo(rows: pd.DataFrame) -> pd.Series | None:
    return _text(rows["photo"]) if "photo" in rows.columns else None


def _join(index: pd.Index, *parts: pd.Series | str | None) -> pd.Series:
    """Join text columns (or fixed texts) with ；, skipping blanks."""
    cols = [
        p if isinstance(p, pd.Series) else pd.Series(p, index=index, dtype=object) for p in parts
    ]
    return pd.Series(
        [
            "；".join(str(x) for x in row if isinstance(x, str) and x.strip())
            for row in zip(*cols, strict=True)
        ],
        index=index,
        dtype=object,
    )


def _prefixed(prefix: str, values: pd.Series) -> pd.Series:
    return _text(values).map(
        lambda v: f"{prefix}{v}" if str(v).strip() else None, na_action="ignore"
    )


def _point(frame: pd.DataFrame, name: str) -> tuple[pd.Series, pd.Series]:
    lon, lat = f"{name}_lon", f"{name}_lat"
    if lon in frame.columns and lat in frame.columns:
        return frame[lat].astype(float), frame[lon].astype(float)
    nan = pd.Series(np.nan, index=frame.index)
    return nan, nan


def _subjects(ctx: _Ctx, kind: str, ids: pd.Series) -> pd.DataFrame:
    ids = _text(ids)
    people = ctx.people.get(kind)
    if people is None:
        blank = pd.Series(None, index=ids.index, dtype=object)
        return pd.DataFrame(
            {"subject_id": ids, "subject": blank, "id_number": blank, "phone": blank}
        )
    found = people.reindex(ids.astype(str).to_numpy())
    return pd.DataFrame(
        {
            "subject_id": ids,
            "subject": found["subject"].to_numpy(dtype=object),
            "id_number": found["id_number"].to_numpy(dtype=object),
            "phone": found["phone"].to_numpy(dtype=object),
        },
        index=ids.index,
    )


def _base(rows: pd.DataFrame, village: str | None = "village") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "village_code": _text(rows[village]) if village and village in rows else None,
            "instance_id": rows["instance_id"].to_numpy(dtype=object),
            "repeat_index": rows.get("repeat_index", pd.NA),
        },
        index=rows.index,
    )


# --- one builder per kind of item ---------------------------------------------------------------


def _sanitation(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    if "findings" not in form.repeats:
        return None
    parent = [c for c in ("village", "check_date", "note") if c in form.table.columns]
    rows = form.repeat("findings", parent)
    rows = _until(ctx, rows, "check_date")
    rows = rows[(_text(rows["status"]) == "to_rectify").to_numpy(dtype=bool)]
    out = _base(rows)
    kind = _label(form.schema, "kind", rows["kind"])
    # 整改责任人 is typed free: keep only the surname
    who = _text(rows["responsible"]).map(mask_name, na_action="ignore") if "responsible" in rows else None  # fmt: skip
    out["content"] = _join(
        rows.index,
        kind,
        _prefixed("整改责任人：", who) if who is not None else None,
        _prefixed("巡查备注：", rows["note"]) if "note" in rows else None,
    )
    out["found_on"] = rows["check_date"]
    out["deadline"] = rows["rectify_by"]
    out["lat"], out["lon"] = _point(rows, "location")
    out["photo"] = _photo(rows)
    return out


def _equipment(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    if "equipment" not in form.repeats:
        return None
    inspections = _latest(ctx, form.table, ["village"], "check_date")
    rows = form.repeats["equipment"]
    rows = rows[rows["instance_id"].isin(inspections["instance_id"])]
    rows = rows[_text(rows["condition"]).isin(["damaged", "missing"])]
    parent = inspections.set_index("instance_id")
    rows = rows.join(
        parent[
            [
                c
                for c in ("village", "check_date", "location_lat", "location_lon", "note")
                if c in parent
            ]
        ],
        on="instance_id",
    )
    out = _base(rows)
    what = _label(form.schema, "item_kind", rows["item_kind"])
    state = _label(form.schema, "condition", rows["condition"])
    note = _prefixed("备注：", rows["note"]) if "note" in rows else None
    out["content"] = _join(rows.index, what + "：" + state.fillna(""), note)
    out["found_on"] = rows["check_date"]
    out["lat"], out["lon"] = _point(rows, "location")
    out["photo"] = _photo(rows)
    return out


def _lighting(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    # each inspected stretch: the road, its name if "other", and the section (as the indicator)
    latest = _latest(ctx, form.table, ["road", "road_other", "section"], "inspect_date")
    if latest.empty:
        return None
    latest = latest.set_index("instance_id")
    road = _label(form.schema, "road", latest["road"])
    other = _text(latest["road_other"]) if "road_other" in latest else None
    if other is not None:
        road = road.where(_text(latest["road"]) != "other", other)
    section = _text(latest["section"]) if "section" in latest else None
    where = road.fillna("") + (
        section.map(lambda s: f"（{s}）", na_action="ignore").fillna("")
        if section is not None
        else ""
    )
    frames = []
    faults = form.repeats.get("faults")
    if faults is not None:
        rows = faults[faults["instance_id"].isin(latest.index)]
        out = _base(rows, village=None)
        kind = _label(form.schema, "fault_kind", rows["fault_kind"])
        out["content"] = where.reindex(rows["instance_id"]).to_numpy() + "：" + kind.fillna("故障")
        out["found_on"] = latest["inspect_date"].reindex(rows["instance_id"]).to_numpy()
        out["lat"], out["lon"] = _point(rows, "location")
        out["photo"] = _photo(rows)
        frames.append(out)
    # A shortfall of working lamps with no fault entered is still an open item.
    short = latest["lamps_installed"].astype("Float64") - latest["lamps_working"].astype("Float64")
    listed = set(faults["instance_id"]) if faults is not None else set()
    gap = latest[(short > 0).fillna(False).to_numpy(dtype=bool) & ~latest.index.isin(listed)]
    if len(gap):
        out = pd.DataFrame(
            {
                "village_code": None,
                "instance_id": gap.index.to_numpy(dtype=object),
                "repeat_index": pd.NA,
                "content": (
                    where.reindex(gap.index)
                    + "："
                    + short.reindex(gap.index).astype(int).astype(str)
                    + " 盏路灯不亮"
                ).to_numpy(),
                "found_on": gap["inspect_date"].to_numpy(),
            }
        )
        frames.append(out)
    return pd.concat(frames, ignore_index=True) if frames else None


def _welfare(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    rows = _latest(ctx, form.table, ["post_holder"], "review_date")
    bad = (_text(rows["meets_rules"]) == "no") | _text(rows["conclusion"]).isin(
        ["rectify", "dismiss"]
    )
    rows = rows[bad.to_numpy(dtype=bool)]
    out = _base(rows).join(_subjects(ctx, "welfare_posts", rows["post_holder"]))
    out["content"] = _join(
        rows.index,
        _prefixed("核查结论：", _label(form.schema, "conclusion", rows["conclusion"])),
        _prefixed("存在问题：", _multi_label(form.schema, "problems", rows["problems"])),
        _prefixed("备注：", rows["note"]) if "note" in rows else None,
    )
    out["found_on"] = rows["review_date"]
    return out


def _dibao(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    rows = _latest(ctx, form.table, ["household"], "verify_date")
    rows = rows[_text(rows["conclusion"]).isin(["adjust", "stop", "new"]).to_numpy(dtype=bool)]
    out = _base(rows).join(_subjects(ctx, "dibao_households", rows["household"]))
    out["content"] = _join(
        rows.index,
        _prefixed("核查结论：", _label(form.schema, "conclusion", rows["conclusion"])),
        _prefixed("备注：", rows["note"]) if "note" in rows else None,
    )
    out["found_on"] = rows["verify_date"]
    out["lat"], out["lon"] = _point(rows, "location")
    return out


def _referral(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    rows = _latest(ctx, form.table, ["resident"], "checkup_date")
    rows = rows[(_text(rows["referral"]) == "yes").to_numpy(dtype=bool)]
    out = _base(rows).join(_subjects(ctx, "residents", rows["resident"]))
    note = _text(rows["referral_note"]) if "referral_note" in rows else None
    out["content"] = _join(
        rows.index, "需转诊", _prefixed("说明：", note) if note is not None else None
    )
    out["found_on"] = rows["checkup_date"]
    return out


def _home_visit(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    rows = _flagged(form.table, "follow_up")
    rows = _until(ctx, rows, "visit_date")
    out = _base(rows).join(_subjects(ctx, "students", rows["student"]))
    out["content"] = _join(
        rows.index,
        _prefixed("跟进事项：", rows["follow_up_note"]) if "follow_up_note" in rows else None,
        _prefixed("家长意见：", rows["feedback"]) if "feedback" in rows else None,
    )
    out["found_on"] = rows["visit_date"]
    return out


def _patrol(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    rows = _flagged(form.table, "issues_found")
    rows = _until(ctx, rows, "patrol_date")
    out = _base(rows)
    place = _label(form.schema, "place_kind", rows["place_kind"]) if "place_kind" in rows else None
    out["content"] = _join(
        rows.index,
        place,
        _text(rows["place_name"]) if "place_name" in rows else None,
        _text(rows["issues"]),
    )
    out["found_on"] = rows["patrol_date"]
    out["lat"], out["lon"] = _point(rows, "location")
    return out


def _suggestion(ctx: _Ctx, form: TidyForm) -> pd.DataFrame | None:
    if "needs_follow_up" in form.table:  # a form version without the question asks nothing
        rows = _until(ctx, _flagged(form.table, "needs_follow_up"), "survey_date")
    else:
        rows = form.table.iloc[0:0]
    out = _base(rows)
    out["content"] = _join(rows.index, _text(rows["suggestion"]) if "suggestion" in rows else None)
    out["found_on"] = rows["survey_date"]
    return out


_SOURCES = (
    _Source(
        SANITATION_KIND,
        "sanitation_sweep",
        "sanitation_findings_cleared",
        _sanitation,
        own_deadline=True,
    ),
    _Source("健身器材损坏/缺失", "fitness_square", "fitness_equipment_good", _equipment),
    _Source("路灯故障", "street_lighting", "street_lighting_working", _lighting),
    _Source("公益性岗位整改", "welfare_post_review", "welfare_post_compliant", _welfare),
    _Source("低保调整", "dibao_verification", "dibao_households_verified", _dibao),
    _Source("查体转诊", "health_checkup", "health_checkup_rate", _referral, plan_deadline=False),
    _Source("家访跟进", "home_visit", "home_visit_once", _home_visit, plan_deadline=False),
    _Source("治安隐患", "police_patrol", "police_patrols", _patrol, plan_deadline=False),
    _Source(
        "群众意见建议",
        "satisfaction_survey",
        "suggestions_follow_up",
        _suggestion,
        plan_deadline=False,
    ),
)
SOURCE_FORMS = frozenset(s.form for s in _SOURCES)  # the forms items are built from
