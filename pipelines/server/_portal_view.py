"""What one scope sees of one snapshot (:class:`ScopeView`): its open and closed follow-up
items, its data-quality flags and, for an own scope, what the person sent. The portal's pages,
files and routes all read a scope's data from here, so the cut to a scope is made in one place.

The cut, by the scope's kind (:mod:`.scopes`):

* town: every row, the town's own items (roads, lighting: no village) and the quarantined
  records too;
* group, village: the rows whose village code is one of the scope's, nothing else;
* own: the rows of the submissions this login sent to `manyi serve`
  (``outputs.inputs.senders``), and of nobody else.

Every text is shown through :func:`pipelines.reports.spreadsheets.shown_text`, the one masker
every output goes through (the items are masked when made; this is the second gate).
Views are built once per (snapshot, scope) and kept (:class:`Views`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property

import pandas as pd

from pipelines.analysis import followups as fu
from pipelines.analysis.checks import CHECKS, Checks
from pipelines.reports._inputs import QUARANTINE_LABEL
from pipelines.reports.process import Outputs
from pipelines.reports.spreadsheets import shown_text
from pipelines.server.scopes import OWN, TOWN, Scope

_MAX_VIEWS = 512  # (snapshot, scope) views kept; a town has ~70 scopes and a few own ones


@dataclass(frozen=True)
class Item:
    """One follow-up item as a card shows it (open or closed)."""

    item_id: str
    kind: str
    village: str
    village_code: str | None
    subject: str
    content: str
    found_on: str
    deadline: str
    overdue_days: int | None
    state: str
    attempts: int
    last_attempt_on: str
    last_attempt_note: str
    form: str
    form_id: str
    instance_id: str
    photo: str | None  # the finding's attachment name (never shown; finds the file)
    closed: bool = False
    closed_on: str = ""
    closed_by: str = ""
    fix_action: str = ""
    fix_photo: str | None = None
    fix_instance_id: str | None = None

    @property
    def overdue(self) -> bool:
        return self.state == fu.OVERDUE

    def finding(self) -> str:
        """One line for the rectification form: kind · subject · content, at most 300."""
        parts = [p for p in (self.kind, self.subject, self.content) if p]
        text = shown_text(" · ".join(" ".join(p.split()) for p in parts))
        return text if len(text) <= 300 else text[:299] + "…"


@dataclass(frozen=True)
class Flag:
    """One data-quality flag (or quarantined record) as a card shows it."""

    form: str
    village: str
    check: str
    field: str
    reason: str
    instance_id: str
    repeat_index: int | None


@dataclass(frozen=True)
class Sent:
    """What an own-scope person sent of one form."""

    form: str
    count: int
    last: str  # the latest submission's day, or ""


@dataclass(frozen=True)
class Counts:
    open: int
    overdue: int
    closed: int
    flags: int


@dataclass(frozen=True)
class ScopeView:
    scope: Scope
    as_of: date
    open_items: tuple[Item, ...]  # overdue first, the longest overdue first
    closed_items: tuple[Item, ...]  # the latest closed first
    flags: tuple[Flag, ...]
    sent: tuple[Sent, ...]
    by_village: Mapping[str, int]  # open items per village code (the narrower scopes' badges)
    open_frame: pd.DataFrame  # the open items' rows, for the downloads
    closed_frame: pd.DataFrame  # the closed items' rows, for the downloads
    checks: Checks  # the flags' rows, for the downloads
    quarantine: pd.DataFrame  # the town's quarantined records (empty for the others)
    items: Mapping[str, Item] = field(default_factory=dict)  # open and closed, by item_id

    @cached_property
    def counts(self) -> Counts:
        overdue = sum(1 for i in self.open_items if i.overdue)
        return Counts(len(self.open_items), overdue, len(self.closed_items), len(self.flags))

    @cached_property
    def listed(self) -> tuple[Item, ...]:
        """The follow-up list's order: the open items, then the closed ones."""
        return (*self.open_items, *self.closed_items)


def build_view(outputs: Outputs, scope: Scope, titles: Mapping[str, str] | None = None) -> ScopeView:  # fmt: skip
    """``outputs`` cut to ``scope`` (see the module docstring). ``titles`` names forms the
    report does not read (the rectification form, in what an own scope sent)."""
    inputs = outputs.inputs
    mine = (
        {(s.form_id, s.instance_id) for s in inputs.senders if s.login == scope.login}
        if scope.kind == OWN and inputs is not None
        else set()
    )
    items = outputs.followups
    open_rows = items[_keep(items, scope, mine)]
    closed = outputs.closed
    closed_rows = closed[_keep(closed, scope, mine)]
    table = outputs.checks.table
    flag_rows = table[_keep(table, scope, mine)]
    checks = Checks(outputs.checks.as_of, flag_rows.reset_index(drop=True),
                    outputs.checks.illustrative_boundaries)  # fmt: skip
    names = {v.code: v.name for v in inputs.villages} if inputs is not None else {}
    read = {fid: f.schema.title or fid for fid, f in inputs.forms.items()} if inputs else {}
    titles = {**(titles or {}), **read}
    quarantine = inputs.quarantine if inputs is not None and scope.kind == TOWN else None
    open_items = sorted((_item(r) for r in open_rows.to_dict("records")), key=_urgency)
    closed_items = sorted((_item(r, closed=True) for r in closed_rows.to_dict("records")),
                          key=lambda i: i.closed_on, reverse=True)  # fmt: skip
    flags = [_flag(r, names, titles) for r in flag_rows.to_dict("records")]
    if quarantine is not None and len(quarantine):
        flags = [_held(r) for r in quarantine.to_dict("records")] + flags
    by_village = (
        open_rows["village_code"].dropna().value_counts().to_dict() if len(open_rows) else {}
    )
    return ScopeView(
        scope=scope, as_of=outputs.as_of, open_items=tuple(open_items),
        closed_items=tuple(closed_items), flags=tuple(flags), sent=_sent(inputs, mine, titles),
        by_village=by_village, open_frame=open_rows.reset_index(drop=True),
        closed_frame=closed_rows.reset_index(drop=True), checks=checks,
        quarantine=quarantine if quarantine is not None else _no_quarantine(inputs),
        items={i.item_id: i for i in (*open_items, *closed_items)},
    )  # fmt: skip


class Views:
    """Views by (snapshot id, scope key, login), built once and kept for the newest
    snapshots. Thread-safe: the maps and files are made in worker threads."""

    def __init__(self, titles: Callable[[], Mapping[str, str]] = dict, limit: int = _MAX_VIEWS) -> None:  # fmt: skip
        self._views: OrderedDict[tuple, ScopeView] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit
        self._titles = titles  # the built forms' titles

    def get(self, snapshot_id: str, outputs: Outputs, scope: Scope) -> ScopeView:
        key = (snapshot_id, scope.key, scope.login)
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                return view
        view = build_view(outputs, scope, self._titles())
        with self._lock:
            self._views[key] = view
            while len(self._views) > self._limit:
                self._views.popitem(last=False)
        return view


# --- helpers ---------------------------------------------------------------------------


def _keep(frame: pd.DataFrame, scope: Scope, mine: set[tuple[str, str]]) -> pd.Series:
    """The rows of ``frame`` (with village_code, form_id, instance_id) ``scope`` may see."""
    if scope.kind == TOWN:
        return pd.Series(True, index=frame.index)
    if scope.kind == OWN:
        pairs = zip(frame["form_id"], frame["instance_id"], strict=True)
        return pd.Series([p in mine for p in pairs], index=frame.index, dtype=bool)
    return frame["village_code"].isin(scope.villages).fillna(False).astype(bool)


def _text(value: object) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float) and value != value:
        return ""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    return shown_text(str(value))


def _int(value: object) -> int | None:
    try:
        return None if pd.isna(value) else int(value)
    except (TypeError, ValueError):
        return None


def _key(value: object) -> str | None:
    """A key column (a file name, an instance id): as it is, never masked or shown."""
    return value if isinstance(value, str) and value else None


def _item(row: dict, closed: bool = False) -> Item:
    return Item(
        item_id=str(row["item_id"]), kind=_text(row.get("kind")), village=_text(row.get("village")),
        village_code=_key(row.get("village_code")), subject=_text(row.get("subject")),
        content=_text(row.get("content")), found_on=_text(row.get("found_on")),
        deadline=_text(row.get("deadline")), overdue_days=_int(row.get("overdue_days")),
        state=_text(row.get("state")) if not closed else "已整改",
        attempts=_int(row.get("attempts")) or 0, last_attempt_on=_text(row.get("last_attempt_on")),
        last_attempt_note=_text(row.get("last_attempt_note")), form=_text(row.get("form")),
        form_id=str(row.get("form_id") or ""), instance_id=str(row.get("instance_id") or ""),
        photo=_key(row.get("photo")), closed=closed, closed_on=_text(row.get("closed_on")),
        closed_by=_text(row.get("closed_by")), fix_action=_text(row.get("fix_action")),
        fix_photo=_key(row.get("fix_photo")), fix_instance_id=_key(row.get("fix_instance_id")),
    )  # fmt: skip


def _urgency(item: Item) -> tuple:
    """Overdue first (the longest overdue first), then by deadline (none last), then found."""
    return (
        not item.overdue,
        -(item.overdue_days or 0),
        item.deadline or "9999",
        item.found_on or "9999",
        item.item_id,
    )


def _flag(row: dict, names: Mapping[str, str], titles: Mapping[str, str]) -> Flag:
    code = row.get("village_code")
    village = names.get(code, code) if isinstance(code, str) else ""
    return Flag(
        form=_text(titles.get(row["form_id"], row["form_id"])), village=_text(village),
        check=CHECKS.get(row["check"], _text(row["check"])), field=_text(row.get("field")),
        reason=_text(row.get("reason")), instance_id=_text(row.get("instance_id")),
        repeat_index=_int(row.get("repeat_index")),
    )  # fmt: skip


def _held(row: dict) -> Flag:
    source = f"[{row['source']}] " if row.get("source") else ""
    return Flag(
        form=_text(row.get("form")), village="", check=QUARANTINE_LABEL, field="",
        reason=_text(source + str(row.get("reason") or "")), instance_id=_text(row.get("key")),
        repeat_index=None,
    )  # fmt: skip


def _no_quarantine(inputs) -> pd.DataFrame:
    return inputs.quarantine.iloc[0:0] if inputs is not None else pd.DataFrame()


def _sent(inputs, mine: set[tuple[str, str]], titles: Mapping[str, str]) -> tuple[Sent, ...]:
    """Per form: how many this person sent, and the day of the latest (from the tidy table,
    for the forms the report reads)."""
    if not mine or inputs is None:
        return ()
    by_form: dict[str, list[str]] = {}
    for form_id, iid in mine:
        by_form.setdefault(form_id, []).append(iid)
    out = []
    for form_id, ids in sorted(by_form.items()):
        last = ""
        tidy = inputs.forms.get(form_id)
        if tidy is not None and "submitted_at" in tidy.table.columns:
            times = tidy.table.loc[tidy.table["instance_id"].isin(ids), "submitted_at"].dropna()
            if len(times):
                last = times.max().strftime("%Y-%m-%d")
        out.append(Sent(_text(titles.get(form_id, form_id)), len(ids), last))
    return tuple(out)
