"""``manyi report --as-of DATE [--out DIR]``: follow-up lists, data checks, the monthly
dispatch report (月调度通报) in two editions, and the maps, from the store.

Layout under the outputs folder (``--out``, default ``settings.outputs_dir``)::

    index.html                     links everything below (rewritten on every run)
    maps/                          overview and one map per domain, as of the last report run
    2023-06-30/                    one folder per as-of date; a re-run replaces its files
        月调度通报_2023-06_公开版.html / .xlsx   aggregates only: for WeChat 山水龙阳
        月调度通报_2023-06_内部版.html / .xlsx   adds groups, masked follow-ups, data checks
        跟进清单_2023-06-30.xlsx / .csv          open items, one sheet per liaison group
        数据质量_2023-06-30.xlsx / .csv          flagged rows, one sheet per form
        photos/                                  the photos of the findings on the maps

Steps: store → :func:`pipelines.analysis.tidy.tidy` (form by form, so only one form's records are
in memory at a time) → :func:`pipelines.analysis.indicators.compute_progress` (at the as-of date and
at the end of the previous month, for "completed this month") → :func:`pipelines.analysis.checks.check_forms`
→ :func:`pipelines.analysis.followups.follow_ups` → files → :func:`geo.maps.draw_maps` → index.

Maps link each open finding (a pile, a lamp, a piece of equipment) to its photo: the stored
attachment (``<data_dir>/attachments``, by content) is copied into ``<as_of>/photos/`` under
its sha256, so the outputs folder opens offline and can be handed on as it is. Photos of the
roster forms (people's homes, 低保) are never linked on a map.

Privacy: the public edition is built from aggregates only (no follow-up item, no free text,
no roster field reaches it). Internal outputs carry the follow-up items, already masked when
they were made, and every text any output shows (each XLSX cell, CSV cell and ``{{ … }}`` of
the HTML) goes once more through the one masker on its way out (:func:`_shown`), whichever
column it is in. HTML is rendered by Jinja2 with autoescape on; XLSX cells are written as
text, never as formulas, and CSV cells that a spreadsheet would run as a formula get a
leading ``'``. Before any data exists the report still renders, saying 暂无数据.

The data-quality sheets list the store's quarantined records (隔离记录: form, source, id,
reason; never the raw text). An as-of date outside the plan year is noted in the report and
the warnings; a configured ``rosters_dir`` that does not exist, or a disk that cannot take
the files (full, read-only, no permission), is one :class:`DataError` naming the path.
"""

from __future__ import annotations

import errno
import io
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from forms.schema import FormSchema, load_schema
from geo.boundaries import Boundaries, load_boundaries
from geo.illustrative import NOTICE, illustrative_boundaries
from geo.maps import DOMAINS, MapsResult, draw_maps, write_index
from geo.roads import SEGMENTS
from geo.villages import Village, load_villages
from pipelines.analysis import followups as fu
from pipelines.analysis.checks import CHECKS, Checks, check_forms
from pipelines.analysis.indicators import (
    DONE,
    LAGGING,
    ON_TRACK,
    OVERDUE,
    Progress,
    compute_progress,
    latest_rows,
)
from pipelines.analysis.plan import Indicator, Plan, check_against_forms, load_plan
from pipelines.analysis.privacy import scrub_text
from pipelines.analysis.rosters import COLUMNS as ROSTER_COLUMNS
from pipelines.analysis.rosters import Rosters, demo_rosters, load_rosters, validate_roster
from pipelines.analysis.tidy import TidyForm, tidy
from pipelines.config import SHANGHAI
from pipelines.errors import DataError
from pipelines.store import open_store

NO_DATA = "暂无数据"
EDITIONS = {"public": "公开版", "internal": "内部版"}
BEHIND = (LAGGING, OVERDUE)
STATUS_COLOURS = {DONE: "#1a9850", ON_TRACK: "#66bd63", LAGGING: "#f46d43", OVERDUE: "#d73027"}
XLSX_MAX_ROWS = 1_000_000  # Excel holds 1,048,576 rows a sheet; longer lists continue on another
_TEMPLATES = Path(__file__).with_name("templates")
_SURROGATES = re.compile("[\ud800-\udfff]")


@lru_cache(maxsize=1 << 14)  # the same village, kind or department text comes again and again
def _shown(text: str) -> str:
    """Every text an output shows, whichever column, sheet or section it is in, goes through
    here: control characters dropped (no XLSX can hold them, and a NUL between digits would
    hide a number from the masker), lone surrogates shown as U+FFFD (no UTF-8 file can hold
    them), then every ID number and mobile masked by the one masker,
    :func:`pipelines.analysis.privacy.scrub_text`."""
    text = ILLEGAL_CHARACTERS_RE.sub("", _SURROGATES.sub("\ufffd", text))
    return scrub_text(text)


def _finalize(value: object) -> object:
    # Jinja calls this on every {{ … }} before escaping; our own SVG (Markup) is left as built.
    if isinstance(value, str) and not isinstance(value, Markup):
        return _shown(value)
    return value


_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=True,  # every user text is escaped; only our own SVG is marked safe
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_finalize,
)
_CN_NUM = "一二三四五六七八九十"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote and computed."""

    as_of: date
    out_dir: Path  # outputs root: index.html and maps/
    report_dir: Path  # out_dir / as_of
    files: dict[str, Path]  # key -> file; keys in :data:`FILE_KEYS`
    index: Path
    maps: MapsResult
    submissions: int  # live submissions read from the store
    progress: Progress
    checks: Checks
    followups: pd.DataFrame  # :data:`pipelines.analysis.followups.COLUMNS`, masked
    warnings: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    quarantined: int = 0  # records in the store's quarantine (listed in the data-quality sheets)

    @property
    def empty(self) -> bool:
        return self.submissions == 0


FILE_KEYS = (
    "dispatch_public_html", "dispatch_public_xlsx", "dispatch_internal_html",
    "dispatch_internal_xlsx", "followups_xlsx", "followups_csv", "quality_xlsx", "quality_csv",
)  # fmt: skip


@dataclass
class _Data:
    plan: Plan
    villages: list[Village]
    rosters: Rosters
    rosters_known: bool  # False: no roster files, roster indicators show 暂无数据
    boundaries: Boundaries
    forms: dict[str, TidyForm]
    counts: dict[str, int]
    notes: list[str]  # shown in both editions of the report
    warnings: list[str] = field(default_factory=list)  # for whoever runs the report
    photos: dict[tuple[str, str, str], _Photo] = field(default_factory=dict)
    quarantine: pd.DataFrame = field(default_factory=lambda: _quarantine_frame([], {}))


@dataclass(frozen=True)
class _Photo:
    """A stored attachment: (form, instance, file name) -> its file under data_dir."""

    sha256: str
    path: Path


def write_report(settings, as_of: date, out_dir: Path | None = None) -> ReportResult:
    """Write every report output for ``as_of`` (see the module docstring for the layout).

    ``out_dir`` is the outputs root (default ``settings.outputs_dir``). Works on an empty or
    missing store: every figure then says 暂无数据 and the lists are empty. Raises
    :class:`DataError` naming the path when a file cannot be written (a full disk, a
    read-only folder) or the configured roster folder does not exist.
    """
    clock = _Clock()
    out_dir = Path(out_dir) if out_dir is not None else Path(settings.outputs_dir)
    data = _load(settings)
    year = settings.plan_year
    data.notes += _as_of_notes(as_of, year)
    clock.lap("read_tidy")
    progress = compute_progress(
        data.plan, data.forms, as_of=as_of, year=year, villages=data.villages,
        rosters=data.rosters, town=settings.town,
    )  # fmt: skip
    before = _previous_month_end(as_of)
    previous = None
    if before >= date(year, 1, 1):
        previous = compute_progress(
            data.plan, data.forms, as_of=before, year=year, villages=data.villages,
            rosters=data.rosters, town=settings.town,
        )  # fmt: skip
    clock.lap("indicators")
    checks = check_forms(
        data.forms, as_of=as_of, year=year, villages=data.villages, boundaries=data.boundaries,
        rosters=data.rosters if data.rosters_known else None,
        gps_accuracy_m=settings.gps_accuracy_m,
    )  # fmt: skip
    clock.lap("checks")
    items = fu.follow_ups(
        data.forms, as_of=as_of, year=year, plan=data.plan, villages=data.villages,
        rosters=data.rosters if data.rosters_known else None,
    )  # fmt: skip
    clock.lap("followups")

    report_dir = out_dir / as_of.isoformat()
    with _writing(report_dir):
        report_dir.mkdir(parents=True, exist_ok=True)
    month = f"{as_of:%Y-%m}"
    files: dict[str, Path] = {}
    for edition, label in EDITIONS.items():
        context = _dispatch_context(settings, data, as_of, progress, previous, items, checks, edition)  # fmt: skip
        html = report_dir / f"月调度通报_{month}_{label}.html"
        page = _ENV.get_template("dispatch.html.j2").render(**context)
        with _writing(html):
            html.write_text(page, encoding="utf-8")
        xlsx = report_dir / f"月调度通报_{month}_{label}.xlsx"
        _dispatch_xlsx(context, xlsx)
        files[f"dispatch_{edition}_html"], files[f"dispatch_{edition}_xlsx"] = html, xlsx
    files["followups_xlsx"], files["followups_csv"] = _followup_files(items, report_dir, as_of)
    files["quality_xlsx"], files["quality_csv"] = _quality_files(checks, data, report_dir, as_of)
    clock.lap("write")
    findings = _map_findings(items)
    with _writing(report_dir / "photos"):
        findings["photo"] = _copy_photos(findings, data.photos, report_dir, as_of)
    with _writing(out_dir / "maps"):
        maps = draw_maps(
            settings, out_dir, _map_progress(data, progress, items, year, as_of), findings,
            boundaries=data.boundaries,
        )  # fmt: skip
    with _writing(out_dir / "index.html"):
        index = write_index(out_dir, title=f"{settings.town} 满意度提升工程")
    clock.lap("maps")
    return ReportResult(
        as_of=as_of, out_dir=out_dir, report_dir=report_dir, files=files, index=index, maps=maps,
        submissions=sum(data.counts.values()), progress=progress, checks=checks,
        followups=items, warnings=tuple(data.notes + data.warnings), seconds=clock.laps,
        quarantined=len(data.quarantine),
    )  # fmt: skip


# What a failed write means, and what to do: (cause, advice).
_DISK_ERRORS = {
    errno.ENOSPC: ("no space left on the disk", "free some space and run the report again"),
    errno.EDQUOT: ("the disk quota is used up", "free some space and run the report again"),
    errno.EFBIG: ("the file is larger than this system allows (ulimit -f)", "raise the limit"),
    errno.EROFS: ("the disk is read-only", "write the report to a writable folder"),
    errno.EACCES: ("permission denied", "check the folder's permissions"),
    errno.EPERM: ("permission denied", "check the folder's permissions"),
}


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Every file the report writes is written inside this: a full disk, a read-only folder
    or a permissions problem becomes one :class:`DataError` naming the path, and a file left
    half-written is removed (an earlier run's complete file is better than a broken one)."""
    try:
        yield
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        cause, advice = _DISK_ERRORS[e.errno]
        where = Path(e.filename) if isinstance(e.filename, str) else path
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and where.is_file():
            with suppress(OSError):
                where.unlink()
        raise DataError(
            f"{where}: cannot write the report: {cause}; {advice}, or write it elsewhere "
            "with --out DIR (or MANYI_OUTPUTS_DIR)"
        ) from None


def _as_of_notes(as_of: date, year: int) -> list[str]:
    """A note (in the report, and printed by the CLI) when ``as_of`` is not in the plan year:
    the figures then are not what whoever asked for that date expects."""
    if as_of.year < year:
        return [
            f"统计截止日 {as_of:%Y-%m-%d} 早于计划年度 {year} 年：尚未计入任何提交，各项进度为 0 "
            f"或{NO_DATA}。请核对 --as-of 日期或 plan_year 设置。"
        ]
    if as_of.year > year:
        return [
            f"统计截止日 {as_of:%Y-%m-%d} 晚于计划年度 {year} 年：进度只计 {year} 年内的提交（截至 "
            f"{year}-12-31）。如需 {as_of.year} 年的通报，请把 plan_year 设为 {as_of.year}。"
        ]
    return []


# --- loading -----------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._t
        self._t = now


def _previous_month_end(as_of: date) -> date:
    return as_of.replace(day=1) - timedelta(days=1)


def _load(settings) -> _Data:
    plan = load_plan()
    villages = load_villages(settings.villages)
    codes = [v.code for v in villages]
    notes: list[str] = []
    rosters, known = _rosters(settings, codes, notes)
    if settings.boundaries:
        boundaries = load_boundaries(settings.boundaries, villages)
    else:
        boundaries = illustrative_boundaries(villages)
    forms: dict[str, TidyForm] = {}
    counts: dict[str, int] = {}
    warnings: list[str] = []
    photos: dict[tuple[str, str, str], _Photo] = {}
    quarantine = _quarantine_frame([], {})
    store_path = Path(settings.store_path)
    if store_path.exists():  # never create a store just to find it empty
        with open_store(settings, read_only=True) as store:
            for form_id in sorted(plan.forms()):
                counts[form_id] = store.count(form_id)
                if counts[form_id]:
                    schemas = _schemas(Path(settings.build_dir), form_id)
                    forms[form_id] = tidy(store.records(form_id), schemas)
                    warnings += _unknown_versions(forms[form_id], schemas)
            for form_id in sorted(_PHOTO_FORMS & set(forms)):
                photos.update(_stored_photos(store, form_id))
            titles = {fid: f.schema.title or fid for fid, f in forms.items()}
            quarantine = _quarantine_frame(_quarantined(store), titles, Path(settings.build_dir))
    # the plan must read fields the built forms have: figures from a missing field are wrong
    columns: dict[str, list[str]] = {}
    for form_id, f in forms.items():
        columns[form_id] = list(f.table.columns)
        columns.update({f"{form_id}/{r}": list(t.columns) for r, t in f.repeats.items()})
    check_against_forms(plan, columns)
    if len(quarantine):
        warnings.append(
            f"{len(quarantine)} 条记录未能读取，已隔离（不计入进度）；原因见数据质量表的“{QUARANTINE}”"
        )
    if not any(counts.values()):
        notes.append(f"{NO_DATA}：数据库中还没有任何提交记录，请先同步各表单（manyi pull）。")
    if boundaries.illustrative:
        notes.append(f"地图与 GPS 核查使用{NOTICE}。")
    return _Data(plan, villages, rosters, known, boundaries, forms, counts, notes, warnings, photos, quarantine)  # fmt: skip


def _schemas(build_dir: Path, form_id: str) -> list[FormSchema]:
    """Every version of the form's schema that is known, for :func:`pipelines.analysis.tidy.tidy` to
    combine. The build folder keeps the JSON of the current build only (``manyi forms build``
    overwrites it), so today that is one schema; records of older versions still tidy, and a
    field only they had is kept as text (see :func:`_unknown_versions`)."""
    return [load_schema(build_dir, form_id)]


def _unknown_versions(form: TidyForm, schemas: list[FormSchema]) -> list[str]:
    known = {s.version for s in schemas}
    seen = form.table["form_version"].dropna().astype(str)
    other = sorted(set(seen) - known)
    if not other:
        return []
    n = int(seen.isin(other).sum())
    return [
        f"{form.schema.title or form.form_id}：{n} 条记录来自表单版本 {'、'.join(other)}，"
        f"构建目录只有版本 {'、'.join(sorted(known))} 的结构；这些记录独有的字段按文本读取。"
    ]


# Forms whose photos show findings (piles, lamps, equipment), never a person or a home.
_PHOTO_FORMS = frozenset({"sanitation_sweep", "fitness_square", "street_lighting"})


def _stored_photos(store, form_id: str) -> dict[tuple[str, str, str], _Photo]:
    found = {}
    for a in store.attachments(form_id):
        if a.status == "stored" and a.sha256 and a.local_path is not None:
            found[(a.form_id, a.instance_id, a.name)] = _Photo(a.sha256, Path(a.local_path))
    return found


def _rosters(settings, codes: list[str], notes: list[str]) -> tuple[Rosters, bool]:
    """The configured rosters. A ``rosters_dir`` that was set must exist: only the default,
    unset ``<data_dir>/rosters`` may be missing (then the demo's invented rosters, or none)."""
    directory = Path(settings.roster_path)
    if settings.rosters_dir is not None and not directory.is_dir():
        origin = settings.origins.get("rosters_dir", "in the settings")
        raise DataError(
            f"rosters_dir {directory} ({origin}) is not a folder that exists; create it and put "
            "the roster files in it (pipelines/README.md, section Rosters), or fix the setting"
        )
    if directory.exists():
        return load_rosters(directory, codes), True
    if settings.source == "demo":
        notes.append("使用示例名单（虚构人员），仅供演示。")
        return demo_rosters(codes), True
    notes.append(f"未找到名单：学生、查体对象、公益岗、低保户等覆盖率指标{NO_DATA}。")
    empty = {
        kind: validate_roster(pd.DataFrame(columns=list(cols)), kind, codes, f"empty {kind}")
        for kind, (cols, _) in ROSTER_COLUMNS.items()
    }
    return Rosters(**empty), False


QUARANTINE = "隔离记录"
_QUARANTINE_COLUMNS = ("form_id", "form", "source", "key", "reason", "tries", "last_seen")
_MAX_REASON = 300


def _quarantined(store) -> list:
    # Store.quarantine() lists without the raw text (which may hold personal data and be
    # large); a store without it still has quarantined().
    listing = getattr(store, "quarantine", None)
    return list(listing() if callable(listing) else store.quarantined())


def _quarantine_frame(items: Iterable, titles: Mapping[str, str], build_dir: Path | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per quarantined record: form, source, id, reason (masked, one line, cut
    short), and the tries and last time seen where the store keeps them. Never the raw
    text: it is what could not be read."""
    names = dict(titles)
    rows = []
    for q in items:
        form_id = str(getattr(q, "form_id", "") or "")
        if form_id not in names:
            names[form_id] = _form_title(build_dir, form_id)
        key = q.item_key() if callable(getattr(q, "item_key", None)) else getattr(q, "key", "")
        reason = " ".join(scrub_text(str(getattr(q, "reason", "") or "")).split())
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 1] + "…"
        rows.append((form_id, names[form_id], getattr(q, "source", None), key, reason,
                     getattr(q, "tries", None), _local_time(getattr(q, "last_seen_at", None))))  # fmt: skip
    return pd.DataFrame(rows, columns=list(_QUARANTINE_COLUMNS), dtype=object)


def _local_time(stamp: object) -> object:
    """A stored UTC time as Beijing time, the way every output shows times."""
    when = pd.to_datetime(stamp, utc=True, errors="coerce") if isinstance(stamp, str) else pd.NaT
    return stamp if pd.isna(when) else when.tz_convert(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def _form_title(build_dir: Path | None, form_id: str) -> str:
    if build_dir is None or not form_id:
        return form_id
    try:
        return load_schema(build_dir, form_id).title or form_id
    except (DataError, OSError, ValueError):  # not built, or not a form id at all
        return form_id


# --- formatting ----------------------------------------------------------------------------------


def _is_share(ind: Indicator) -> bool:
    return ind.measure in ("rate", "reduction", "weekly") or ind.unit == "rate"


def _fmt(ind: Indicator, x: object) -> str:
    if x is None or pd.isna(x):  # type: ignore[arg-type]
        return NO_DATA
    value = float(x)  # type: ignore[arg-type]
    if _is_share(ind):
        return f"{value:.1%}"
    if ind.measure == "mean":
        return f"{value:.2f} 分"
    return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"


def _day(d: object) -> str:
    if d is None or pd.isna(d):  # type: ignore[arg-type]
        return "—"
    d = pd.Timestamp(d)  # type: ignore[arg-type]
    return f"{d.month}月{d.day}日"


def _completion(value: float, target: float) -> float:
    if pd.isna(value) or pd.isna(target) or target <= 0:
        return np.nan
    return max(0.0, float(value) / float(target))


def _status_text(status: object, value: object, target: object) -> str:
    if pd.isna(target):  # type: ignore[arg-type]
        return "—"  # no target in the plan: shown for information
    if pd.isna(value) or not isinstance(status, str):  # type: ignore[arg-type]
        return NO_DATA  # e.g. no one on the roster yet: nothing to judge
    return status


def _assessable(table: pd.DataFrame) -> pd.Series:
    # A village with no one on the roster, or no finding to clear, has no rate: nothing to chase.
    return table["status"].isin(BEHIND) & table["value"].notna() & table["target"].notna()


# --- the dispatch report -------------------------------------------------------------------------


def _dispatch_context(settings, data: _Data, as_of: date, progress: Progress, previous: Progress | None, items: pd.DataFrame, checks: Checks, edition: str) -> dict:  # fmt: skip
    plan = data.plan
    internal = edition == "internal"
    town = progress.level("town").set_index("indicator_id")
    prev = previous.level("town").set_index("indicator_id") if previous is not None else None
    month_start = as_of.replace(day=1)
    next_month_end = (pd.Timestamp(month_start) + pd.offsets.MonthEnd(2)).date()

    rows: list[dict] = []
    for ind in plan.indicators:
        if ind.id not in town.index:
            continue
        r = town.loc[ind.id]
        before = prev.loc[ind.id] if prev is not None and ind.id in prev.index else None
        value, target = r["value"], r["target"]
        change = ""
        if before is not None and not pd.isna(value) and not pd.isna(before["value"]):
            delta = float(value) - float(before["value"])
            if _is_share(ind):
                change = f"{delta * 100:+.1f} 个百分点" if abs(delta) > 1e-9 else "持平"
            elif ind.measure == "mean":
                change = f"{delta:+.2f} 分" if abs(delta) > 1e-9 else "持平"
            else:
                change = f"+{_fmt(ind, delta)}" if delta > 0 else ("持平" if delta == 0 else _fmt(ind, delta))  # fmt: skip
        elif before is None and not pd.isna(value) and not _is_share(ind) and ind.measure != "mean":
            change = f"+{_fmt(ind, value)}" if float(value) > 0 else "持平"
        rows.append({
            "id": ind.id, "domain_key": ind.domain, "domain": plan.domains.get(ind.domain, ind.domain),
            "label": ind.label, "value": value, "target": target, "expected": r["expected"],
            "value_text": _fmt(ind, value),
            "target_text": "—" if pd.isna(target) else _fmt(ind, target),
            "expected_text": "—" if pd.isna(r["expected"]) or ind.pace == "none" else _fmt(ind, r["expected"]),
            "completion": _completion(value, target),
            "expected_ratio": _completion(r["expected"], target),
            "status": _status_text(r["status"], value, target),
            "raw_status": r["status"] if isinstance(r["status"], str) and not pd.isna(value) else None,
            "deadline": r["deadline"], "deadline_text": _day(r["deadline"]),
            "department": plan.departments.get(ind.department, ind.department),
            "change": change,
            "done_this_month": r["status"] == DONE and (before is None or before["status"] != DONE),
            "indicator": ind,
        })  # fmt: skip

    domains = []
    for key, name in plan.domains.items():
        drows = [r for r in rows if r["domain_key"] == key and key != "satisfaction"]
        if not drows:
            continue
        charted = [r for r in drows if not pd.isna(r["target"])]
        domains.append({"name": name, "rows": drows, "chart": _chart(name, charted)})

    with_target = [r for r in rows if not pd.isna(r["target"])]
    tally = {s: sum(r["raw_status"] == s for r in with_target) for s in (DONE, ON_TRACK, LAGGING, OVERDUE)}  # fmt: skip
    unjudged = len(with_target) - sum(tally.values())
    if unjudged:
        tally[NO_DATA] = unjudged
    done_now = [r for r in rows if r["done_this_month"]]

    villages = progress.level("village")
    behind_v = villages[_assessable(villages)]
    group_of = {v.code: v.liaison_group for v in data.villages}
    names = {v.code: v.name for v in data.villages}
    label_of = {i.id: i.label for i in plan.indicators}
    lagging_villages = []
    for code, g in behind_v.groupby("key", sort=False):
        lagging_villages.append({
            "group": f"第{group_of.get(code, '?')}组", "village": names.get(code, code), "code": code,
            "n": len(g), "overdue": int((g["status"] == OVERDUE).sum()),
            "labels": "、".join(label_of.get(i, i) for i in g["indicator_id"]),
        })  # fmt: skip
    lagging_villages.sort(key=lambda r: (-r["n"], r["code"]))
    depts = progress.level("department")
    behind_d = depts[_assessable(depts)]
    lagging_departments = [
        {"department": label, "n": len(g), "labels": "、".join(label_of.get(i, i) for i in g["indicator_id"])}
        for label, g in behind_d.groupby("key_label", sort=True)
    ]  # fmt: skip
    lagging_departments.sort(key=lambda r: -r["n"])

    workload = []
    for form_id in sorted(data.forms):
        form = data.forms[form_id]
        date_field = next((i.date_field for i in plan.indicators if i.form == form_id), None)
        if date_field is None or date_field not in form.table.columns:
            continue
        day = pd.to_datetime(form.table[date_field], errors="coerce")
        upto = day <= pd.Timestamp(as_of)
        this_month = upto & (day >= pd.Timestamp(month_start))
        workload.append({"form": form.schema.title or form_id, "month": int(this_month.sum()), "total": int(upto.sum())})  # fmt: skip

    satisfaction = [
        {"label": r["label"].split("：")[-1].replace("（1–5）", ""), "value_text": r["value_text"],
         "n": int(town.loc[r["id"], "denominator"]) if not pd.isna(town.loc[r["id"], "denominator"]) else 0}
        for r in rows if r["indicator"].measure == "mean"
    ]  # fmt: skip
    suggestions = next((r["value_text"] for r in rows if r["id"] == "suggestions_follow_up"), "0")

    open_items = len(items)
    overdue_items = int((items["state"] == fu.OVERDUE).sum()) if open_items else 0
    by_kind = (
        items.groupby("kind", sort=False)
        .agg(n=("kind", "size"), overdue=("state", lambda s: int((s == fu.OVERDUE).sum())))
        .reset_index()
        .to_dict("records")
        if open_items
        else []
    )

    heading = plan.name if plan.name.startswith(settings.town) else settings.town + plan.name
    steps = _next_steps(rows, as_of, next_month_end, lagging_villages, open_items, overdue_items, satisfaction, data)  # fmt: skip
    context = {
        "title": f"{heading}月调度通报（{as_of.year}年{as_of.month}月·{EDITIONS[edition]}）",
        "heading_name": heading,
        "town": settings.town, "plan_name": plan.name, "edition": edition,
        "edition_label": EDITIONS[edition], "internal": internal,
        "month_label": f"{as_of.year}年{as_of.month}月", "as_of": as_of,
        "as_of_label": f"{as_of.year}年{as_of.month}月{as_of.day}日",
        "generated": datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M"),
        "notes": data.notes, "domain_names": plan.domains,
        "empty": not any(data.counts.values()), "no_data": NO_DATA,
        "tally": tally, "indicator_count": len(with_target), "domains": domains,
        "done_now": done_now, "changes": [r for r in rows if r["change"] and r["domain_key"] != "satisfaction"],
        "workload": workload, "lagging_villages": lagging_villages,
        "lagging_departments": lagging_departments, "satisfaction": satisfaction,
        "suggestions": suggestions, "open_items": open_items, "overdue_items": overdue_items,
        "items_by_kind": by_kind, "steps": steps, "status_colours": STATUS_COLOURS,
        "rows": rows, "numerals": _CN_NUM,
    }  # fmt: skip
    if internal:
        context.update(_internal_context(data, progress, items, checks))
    return context


def _internal_context(data: _Data, progress: Progress, items: pd.DataFrame, checks: Checks) -> dict:  # fmt: skip
    villages = progress.level("village")
    group_of = {v.code: v.liaison_group for v in data.villages}
    villages = villages.assign(group=villages["key"].map(group_of))
    behind = villages[_assessable(villages)]
    groups = []
    for g in sorted({v.liaison_group for v in data.villages}):
        name = f"第{g}组"
        mine = items[items["liaison_group"] == name] if len(items) else items
        groups.append({
            "group": name,
            "villages": sum(v.liaison_group == g for v in data.villages),
            "behind": int((behind["group"] == g).sum()),
            "lagging_villages": int(behind.loc[behind["group"] == g, "key"].nunique()),
            "open": len(mine), "overdue": int((mine["state"] == fu.OVERDUE).sum()) if len(mine) else 0,
        })  # fmt: skip
    town_items = items[items["liaison_group"] == fu.TOWN_GROUP] if len(items) else items
    if len(town_items):
        groups.append({
            "group": fu.TOWN_GROUP, "villages": 0, "behind": 0, "lagging_villages": 0,
            "open": len(town_items), "overdue": int((town_items["state"] == fu.OVERDUE).sum()),
        })  # fmt: skip
    late = items[items["state"] == fu.OVERDUE] if len(items) else items
    late = late.sort_values("overdue_days", ascending=False, kind="stable").head(50)
    overdue_list = [
        {"group": r.liaison_group, "village": r.village, "kind": r.kind, "subject": r.subject or "",
         "content": r.content or "", "deadline": _day(r.deadline), "days": int(r.overdue_days),
         "department": r.department}
        for r in late.itertuples(index=False)
    ]  # fmt: skip
    titles = {fid: f.schema.title or fid for fid, f in data.forms.items()}
    held = data.quarantine.groupby("form", sort=True).size() if len(data.quarantine) else {}
    quality = [{"form": form, "check": _QUARANTINE_LABEL, "rows": int(n)} for form, n in dict(held).items()]  # fmt: skip
    quality += [
        {"form": titles.get(r.form_id, r.form_id), "check": r.check_label, "rows": int(r.rows)}
        for r in checks.summary().itertuples(index=False)
    ]
    return {
        "groups": groups,
        "overdue_list": overdue_list,
        "overdue_total": len(items[items["state"] == fu.OVERDUE]) if len(items) else 0,
        "quality": quality,
        "quality_total": len(checks.table) + len(data.quarantine),
        "village_rows": villages,
    }


def _next_steps(rows: list[dict], as_of: date, horizon: date, lagging_villages: list[dict], open_items: int, overdue_items: int, satisfaction: list[dict], data: _Data) -> list[str]:  # fmt: skip
    steps: list[str] = []
    if not any(data.counts.values()):
        steps.append(
            f"{NO_DATA}：请各责任部门按表单开展工作并及时提交，镇服务专班同步数据后再行通报。"
        )
    order = {OVERDUE: 0, LAGGING: 1}
    behind = sorted(
        (r for r in rows if r["raw_status"] in order),
        key=lambda r: (order[r["raw_status"]], r["deadline"] or date.max),
    )
    for r in behind:
        if r["raw_status"] == OVERDUE:
            steps.append(
                f"【{r['department']}】{r['label']}：目前 {r['value_text']}，目标 {r['target_text']}，"
                f"已超过{_day(r['deadline'])}的完成期限，须立即整改、尽快完成。"
            )
        else:
            expected = f"，按时序应达到 {r['expected_text']}" if r["expected_text"] != "—" else ""
            steps.append(
                f"【{r['department']}】{r['label']}：目前 {r['value_text']}{expected}，"
                f"目标 {r['target_text']}（{_day(r['deadline'])}前），须加快进度。"
            )
    for r in rows:
        d = r["deadline"]
        if (
            r["raw_status"] == ON_TRACK
            and d is not None
            and not pd.isna(d)
            and as_of < d <= horizon
        ):
            steps.append(
                f"【{r['department']}】{r['label']}将于{_day(d)}到期，目前 {r['value_text']}，"
                f"目标 {r['target_text']}，请抓紧推进。"
            )
    if lagging_villages:
        steps.append(
            f"{len(lagging_villages)} 个村存在滞后指标，请各帮包联系组逐村督导，下次调度前报送进展。"
        )
    if open_items:
        steps.append(
            f"待跟进事项 {open_items} 项（其中逾期 {overdue_items} 项），请各帮包联系组按跟进清单逐项销号。"
        )
    scored = [s for s in satisfaction if s["n"] and s["value_text"] != NO_DATA]
    if scored:
        low = min(scored, key=lambda s: float(s["value_text"].split()[0]))
        steps.append(
            f"群众满意度调查中“{low['label']}”得分最低（{low['value_text']}），请责任部门分析原因、改进工作。"
        )
    if not steps:
        steps.append("各项工作按计划推进，请各责任部门保持进度。")
    return steps


def _chart(title: str, rows: list[dict]) -> Markup:
    """Horizontal bars of completion against target, with the pace mark: inline SVG.

    Every text goes through :func:`markupsafe.escape`; the result is marked safe only
    because it is built here.
    """
    if not rows:
        return Markup("")
    width, bar_w, row_h, top = 360, 292, 44, 6
    height = top + row_h * len(rows) + 4
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}完成进度">',
        f"<title>{escape(title)}完成进度（条形为完成占目标比例，竖线为时序进度要求）</title>",
    ]
    for i, r in enumerate(rows):
        y = top + i * row_h
        label = r["label"] if len(r["label"]) <= 19 else r["label"][:18] + "…"
        ratio = r["completion"]
        fill = STATUS_COLOURS.get(r["raw_status"] or "", "#bdbdbd")
        w = 0.0 if pd.isna(ratio) else min(ratio, 1.0) * bar_w
        out.append(f"<g><title>{escape(r['label'])}：{escape(r['value_text'])} / {escape(r['target_text'])}（{escape(r['status'])}）</title>")  # fmt: skip
        out.append(f'<text x="0" y="{y + 12}" font-size="12">{escape(label)}</text>')
        out.append(f'<rect x="0" y="{y + 17}" width="{bar_w}" height="14" fill="#eeeeee"/>')
        if w > 0:
            out.append(f'<rect x="0" y="{y + 17}" width="{w:.1f}" height="14" fill="{fill}"/>')
        exp = r["expected_ratio"]
        if not pd.isna(exp) and 0 < exp < 1 and r["indicator"].pace != "none":
            x = exp * bar_w
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 14}" y2="{y + 34}" stroke="#333" stroke-width="2"/>')  # fmt: skip
        pct = NO_DATA if pd.isna(ratio) else f"{ratio:.0%}"
        out.append(f'<text x="{width}" y="{y + 28}" font-size="11" text-anchor="end">{escape(pct)}</text>')  # fmt: skip
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (built above from escaped text and numbers)


# --- XLSX and CSV ----------------------------------------------------------------------------------

_HEAD_FONT = Font(bold=True)
_HEAD_FILL = PatternFill("solid", fgColor="DDEBF7")
_WRAP = Alignment(wrap_text=True, vertical="top")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell_value(value: object) -> object:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime().date() if value == value.normalize() else value.to_pydatetime().replace(tzinfo=None)  # fmt: skip
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return _shown(value)
    return value


def _display_width(text: str) -> int:
    # CJK characters take two columns; UTF-8 spends 3 bytes on them, 1 on ASCII.
    return len(text) + (len(text.encode("utf-8")) - len(text)) // 2


def _widths(frame: pd.DataFrame) -> list[float]:
    sample = frame.head(2000)
    widths = []
    for col in frame.columns:
        texts = [str(col), *(str(v) for v in sample[col] if v is not None and not (isinstance(v, float) and np.isnan(v)))]  # fmt: skip
        widest = max((_display_width(t) for t in texts), default=6)
        widths.append(float(min(max(widest + 2, 6), 60)))
    return widths


def _write_sheet(wb: Workbook, title: str, frame: pd.DataFrame, formats: Mapping[str, str] | None = None, wrap: Iterable[str] = ()) -> list:  # fmt: skip
    """One sheet (more if longer than :data:`XLSX_MAX_ROWS`), Chinese header frozen."""
    formats = dict(formats or {})
    wrap = set(wrap)
    sheets = []
    chunks = [
        frame.iloc[i : i + XLSX_MAX_ROWS] for i in range(0, max(len(frame), 1), XLSX_MAX_ROWS)
    ]
    widths = _widths(frame)
    for n, chunk in enumerate(chunks, start=1):
        ws = wb.create_sheet(_sheet_title(title if n == 1 else f"{title}（{n}）", wb))
        for i, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(i)].width = w
        ws.freeze_panes = "A2"
        ws.print_title_rows = "1:1"
        head = []
        for col in frame.columns:
            c = WriteOnlyCell(ws, value=str(col))
            c.font, c.fill = _HEAD_FONT, _HEAD_FILL
            head.append(c)
        ws.append(head)
        styled = {i: (formats.get(col), col in wrap) for i, col in enumerate(frame.columns)}
        special = {i for i, (f, w) in styled.items() if f or w}
        for values in chunk.itertuples(index=False, name=None):
            row = []
            for i, v in enumerate(values):
                v = _cell_value(v)
                if isinstance(v, str) and v.startswith("="):
                    c = WriteOnlyCell(ws, value=v)
                    c.data_type = "s"  # text, never a formula
                    row.append(c)
                elif i in special and v is not None:
                    c = WriteOnlyCell(ws, value=v)
                    fmt, wrapped = styled[i]
                    if fmt:
                        c.number_format = fmt
                    if wrapped:
                        c.alignment = _WRAP
                    row.append(c)
                else:
                    row.append(v)
            ws.append(row)
        sheets.append(ws)
    return sheets


def _save(wb: Workbook, path: Path) -> None:
    """The workbook built in memory, then written in one go: a disk that fails the write
    leaves no half-built zip behind to fail again when Python tidies up."""
    buffer = io.BytesIO()
    wb.save(buffer)
    with _writing(path):
        path.write_bytes(buffer.getbuffer())


def _sheet_title(title: str, wb: Workbook) -> str:
    text = re.sub(r"[\[\]:*?/\\]", "_", title)[:31]
    taken = {ws.title for ws in wb.worksheets}
    base, n = text, 2
    while text in taken:
        suffix = f"_{n}"
        text, n = base[: 31 - len(suffix)] + suffix, n + 1
    return text


def _csv(frame: pd.DataFrame, path: Path) -> None:
    """UTF-8 with BOM (Excel on Chinese Windows), every text as shown (:func:`_shown`),
    formulas defused."""
    safe = frame.copy()
    for col in safe.columns:
        if pd.api.types.is_object_dtype(safe[col]) or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(_csv_text)
    with _writing(path):
        safe.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")


def _csv_text(value: object) -> object:
    if not isinstance(value, str):
        return value
    value = _shown(value)
    return "'" + value if value.startswith(_CSV_FORMULA) else value


def _followup_files(items: pd.DataFrame, report_dir: Path, as_of: date) -> tuple[Path, Path]:
    shown = fu.display(items)
    xlsx = report_dir / f"跟进清单_{as_of.isoformat()}.xlsx"
    wb = Workbook(write_only=True)
    dated = {"发现日期", "整改期限"}
    if shown.empty:
        _write_sheet(wb, "跟进清单", shown)  # headers only: nothing open
    groups = list(dict.fromkeys(shown[fu.HEADERS["liaison_group"]])) if len(shown) else []
    for g in groups:
        part = shown[shown[fu.HEADERS["liaison_group"]] == g]
        _write_sheet(wb, str(g), part, wrap={fu.HEADERS["content"]} - dated)
    _save(wb, xlsx)
    csv = report_dir / f"跟进清单_{as_of.isoformat()}.csv"
    _csv(shown, csv)
    return xlsx, csv


_QUALITY_HEADERS = {
    "form": "表单", "instance_id": "记录编号", "repeat_index": "条目序号", "village": "村",
    "village_code": "村代码", "check_label": "检查项", "field": "字段", "reason": "原因",
}  # fmt: skip


def _quality_files(checks: Checks, data: _Data, report_dir: Path, as_of: date) -> tuple[Path, Path]:
    titles = {fid: f.schema.title or fid for fid, f in data.forms.items()}
    names = {v.code: v.name for v in data.villages}
    table = checks.table.copy()
    table["form"] = table["form_id"].map(lambda f: titles.get(f, f))
    table["village"] = table["village_code"].map(lambda c: names.get(c, c), na_action="ignore")
    table["check_label"] = table["check"].map(CHECKS)
    shown = table[list(_QUALITY_HEADERS)].rename(columns=_QUALITY_HEADERS)
    held = data.quarantine
    xlsx = report_dir / f"数据质量_{as_of.isoformat()}.xlsx"
    wb = Workbook(write_only=True)
    summary = checks.summary()
    summary = pd.DataFrame(
        {
            "表单": summary["form_id"].map(lambda f: titles.get(f, f)),
            "检查项": summary["check_label"],
            "问题条数": summary["rows"].astype(int),
        }
    )
    if len(held):  # records that could not be read count first: they are not in any figure
        counts = held.groupby("form", sort=True).size()
        summary = pd.concat([pd.DataFrame({"表单": counts.index, "检查项": _QUARANTINE_LABEL,
                                           "问题条数": counts.to_numpy(dtype=int)}), summary],
                            ignore_index=True)  # fmt: skip
    if summary.empty:
        summary = pd.DataFrame({"表单": ["全部表单"], "检查项": ["—"], "问题条数": [0]})
    _write_sheet(wb, "汇总", summary)
    if len(held):
        _write_sheet(wb, QUARANTINE, _quarantine_sheet(held), wrap={"原因"})
    for form_id in sorted(table["form_id"].unique()):
        part = shown[table["form_id"].to_numpy() == form_id]
        _write_sheet(wb, titles.get(form_id, form_id), part, wrap={"原因"})
    _save(wb, xlsx)
    csv = report_dir / f"数据质量_{as_of.isoformat()}.csv"
    if len(held):  # one table: the quarantined records as rows of their own check
        rows = pd.DataFrame({"表单": held["form"], "记录编号": held["key"], "检查项": _QUARANTINE_LABEL,
                             "原因": held["source"].map(lambda s: f"[{s}] " if s else "") + held["reason"]})  # fmt: skip
        shown = pd.concat([rows.reindex(columns=shown.columns), shown], ignore_index=True)
    _csv(shown, csv)
    return xlsx, csv


_QUARANTINE_LABEL = f"{QUARANTINE}（未能读取）"


def _quarantine_sheet(held: pd.DataFrame) -> pd.DataFrame:
    sheet = pd.DataFrame({"表单": held["form"], "来源": held["source"], "记录编号": held["key"],
                          "原因": held["reason"]})  # fmt: skip
    if held["tries"].notna().any():
        sheet["尝试次数"] = held["tries"]
    if held["last_seen"].notna().any():
        sheet["最后一次读取（北京时间）"] = held["last_seen"]
    return sheet


def _dispatch_xlsx(ctx: dict, path: Path) -> None:
    wb = Workbook(write_only=True)
    overview = [("标题", ctx["title"]), ("统计截止日", ctx["as_of"]), ("版本", ctx["edition_label"]),
                ("生成时间（北京时间）", ctx["generated"]), ("有目标的指标数", ctx["indicator_count"])]  # fmt: skip
    overview += [(s, n) for s, n in ctx["tally"].items()]
    overview += [("待跟进事项", ctx["open_items"]), ("其中逾期", ctx["overdue_items"])]
    overview += [("说明", n) for n in ctx["notes"]]
    _write_sheet(wb, "概况", pd.DataFrame(overview, columns=["项目", "内容"]), {"内容": "yyyy-mm-dd"})  # fmt: skip

    rows = ctx["rows"]
    progress = pd.DataFrame(
        {
            "领域": [r["domain"] for r in rows],
            "指标": [r["label"] for r in rows],
            "当前值": [r["value_text"] for r in rows],
            "目标": [r["target_text"] for r in rows],
            "时序进度要求": [r["expected_text"] for r in rows],
            "完成度": [r["completion"] for r in rows],
            "状态": [r["status"] for r in rows],
            "截止日期": [r["deadline"] for r in rows],
            "责任部门": [r["department"] for r in rows],
            "本月变化": [r["change"] for r in rows],
        }
    )
    formats = {"完成度": "0%", "截止日期": "yyyy-mm-dd"}
    (ws,) = _write_sheet(wb, "指标进度", progress, formats, wrap={"指标"})
    if progress["完成度"].notna().any():  # a native Excel chart of the completion column
        chart = BarChart()
        chart.type = "bar"
        chart.title = "各项指标完成度（占目标）"
        chart.y_axis.number_format = "0%"
        chart.y_axis.scaling.min = 0
        chart.legend = None
        chart.height, chart.width = max(7.5, 0.6 * len(progress)), 18
        data = Reference(ws, min_col=6, min_row=1, max_row=len(progress) + 1)
        cats = Reference(ws, min_col=2, min_row=2, max_row=len(progress) + 1)
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(cats)
        ws.add_chart(chart, "L2")

    done = pd.DataFrame(
        {"领域": [r["domain"] for r in ctx["done_now"]], "指标": [r["label"] for r in ctx["done_now"]],
         "当前值": [r["value_text"] for r in ctx["done_now"]], "目标": [r["target_text"] for r in ctx["done_now"]]}
    )  # fmt: skip
    _write_sheet(wb, "本月完成", done if len(done) else pd.DataFrame({"说明": ["本月无新完成的指标"]}))  # fmt: skip
    work = pd.DataFrame(ctx["workload"], columns=["form", "month", "total"]).rename(
        columns={"form": "表单", "month": "本月记录数", "total": "累计记录数"}
    )
    _write_sheet(wb, "本月工作量", work)
    lv = pd.DataFrame(
        ctx["lagging_villages"], columns=["group", "village", "n", "overdue", "labels"]
    )
    lv = lv.rename(columns={"group": "帮包联系组", "village": "村", "n": "滞后指标数", "overdue": "其中逾期", "labels": "指标"})  # fmt: skip
    _write_sheet(wb, "滞后村", lv, wrap={"指标"})
    ld = pd.DataFrame(ctx["lagging_departments"], columns=["department", "n", "labels"])
    ld = ld.rename(columns={"department": "责任部门", "n": "滞后指标数", "labels": "指标"})
    _write_sheet(wb, "滞后部门", ld, wrap={"指标"})
    sat = pd.DataFrame(ctx["satisfaction"], columns=["label", "value_text", "n"])
    sat = sat.rename(columns={"label": "领域", "value_text": "平均分（1–5）", "n": "样本数"})
    _write_sheet(wb, "群众满意度", sat)
    steps = pd.DataFrame({"序号": range(1, len(ctx["steps"]) + 1), "下步工作": ctx["steps"]})
    _write_sheet(wb, "下步工作", steps, wrap={"下步工作"})
    if ctx["internal"]:
        vr = ctx["village_rows"]
        names = {r["id"]: r for r in ctx["rows"]}
        village = pd.DataFrame(
            {
                "帮包联系组": vr["group"].map(lambda g: f"第{g}组"),
                "村": vr["key_label"],
                "村代码": vr["key"],
                "领域": vr["domain"].map(lambda d: ctx["domain_names"].get(d, d)),
                "指标": vr["label"],
                "当前值": [_fmt(names[i]["indicator"], v) for i, v in zip(vr["indicator_id"], vr["value"], strict=True)],
                "目标": [("—" if pd.isna(t) else _fmt(names[i]["indicator"], t)) for i, t in zip(vr["indicator_id"], vr["target"], strict=True)],
                "状态": [_status_text(s, v, t) for s, v, t in zip(vr["status"], vr["value"], vr["target"], strict=True)],
            }
        )  # fmt: skip
        _write_sheet(wb, "村级进度", village, wrap={"指标"})
        groups = pd.DataFrame(ctx["groups"]).rename(
            columns={"group": "帮包联系组", "villages": "村数", "behind": "滞后指标（村次）",
                     "lagging_villages": "有滞后指标的村", "open": "待跟进事项", "overdue": "其中逾期"}
        )  # fmt: skip
        _write_sheet(wb, "帮包联系组", groups)
        late = pd.DataFrame(ctx["overdue_list"], columns=["group", "village", "kind", "subject", "content", "deadline", "days", "department"])  # fmt: skip
        late = late.rename(columns={"group": "帮包联系组", "village": "村", "kind": "事项类型", "subject": "对象",
                                    "content": "内容", "deadline": "整改期限", "days": "逾期天数", "department": "责任部门"})  # fmt: skip
        _write_sheet(wb, "逾期事项", late, wrap={"内容"})
        quality = pd.DataFrame(ctx["quality"], columns=["form", "check", "rows"])
        quality = quality.rename(columns={"form": "表单", "check": "检查项", "rows": "问题条数"})
        _write_sheet(wb, "数据质量", quality)
    _save(wb, path)


# --- maps ----------------------------------------------------------------------------------------


def _map_progress(data: _Data, progress: Progress, items: pd.DataFrame, year: int, as_of: date) -> pd.DataFrame:  # fmt: skip
    """Village rows with a target, in the frame :func:`geo.maps.draw_maps` documents, plus the
    road segments (km done of planned km) and lit roads (lamps working of installed).

    Each village's open follow-up items are counted on its first row of the item's domain
    (the maps sum them per village), else on its first row, so the overview shows them all."""
    plan = data.plan
    v = progress.level("village")
    v = v[v["target"].notna() & (v["target"] > 0) & v["value"].notna()]
    frame = pd.DataFrame(
        {
            "village_code": v["key"].astype(str).to_numpy(),
            "indicator_id": v["indicator_id"].to_numpy(),
            "value": v["value"].to_numpy(dtype=float),
            "target": v["target"].to_numpy(dtype=float),
            "domain": v["domain"].map(lambda d: _map_domain(plan, d)).to_numpy(dtype=object),
            "label": v["label"].to_numpy(dtype=object),
        }
    )
    frame["open_followups"] = 0
    if len(items) and len(frame):
        counts = items[items["village_code"].notna()].groupby(["village_code", "domain"]).size()
        for (code, domain), n in counts.items():
            mine = frame.index[frame["village_code"] == code]
            same = mine[frame.loc[mine, "domain"] == domain]
            if len(same) or len(mine):
                frame.loc[(same if len(same) else mine)[0], "open_followups"] += int(n)
    return pd.concat([frame, _road_rows(data, year, as_of)], ignore_index=True)


def _map_domain(plan: Plan, key: str) -> str | None:
    name = plan.domains.get(key, key)
    return name if name in DOMAINS.values() else None


def _road_rows(data: _Data, year: int, as_of: date) -> pd.DataFrame:
    """Each road's progress, from the same latest reports the road and lighting indicators
    read (:func:`pipelines.analysis.indicators.latest_rows`)."""
    rows = []
    roads = data.forms.get("road_progress")
    planned = {s.segment_id: s.planned_km for s in SEGMENTS if s.planned_km}
    if roads is not None and {"segment", "km_done", "report_date"} <= set(roads.table.columns):
        latest = latest_rows(roads.table, ["segment"], "report_date", year=year, as_of=as_of)
        for seg, km in zip(latest["segment"].astype(object), latest["km_done"], strict=True):
            if seg in planned and not pd.isna(km):
                rows.append({"segment_id": seg, "value": float(km), "target": planned[seg], "label": "道路建设（公里）"})  # fmt: skip
    lights = data.forms.get("street_lighting")
    if lights is not None and {"road", "lamps_working", "lamps_installed"} <= set(
        lights.table.columns
    ):
        # the latest inspection of each stretch (road, "other" name, section), summed per road
        stretch = ["road", "road_other", "section"]
        latest = latest_rows(lights.table, stretch, "inspect_date", year=year, as_of=as_of)
        lit = pd.DataFrame({
            "road": latest["road"].astype(object),
            "ok": pd.to_numeric(latest["lamps_working"], errors="coerce").fillna(0).astype(float),
            "total": pd.to_numeric(latest["lamps_installed"], errors="coerce").astype(float),
        }).groupby("road", sort=True).sum(min_count=1)  # fmt: skip
        for road, ok, total in zip(lit.index, lit["ok"], lit["total"], strict=True):
            if road in {s.segment_id for s in SEGMENTS} and not pd.isna(total) and total > 0:
                rows.append({"segment_id": road, "value": float(ok), "target": float(total), "label": "路灯（盏）"})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["segment_id", "value", "target", "label"])
    frame.insert(0, "village_code", None)
    frame.insert(1, "indicator_id", "road_segments")
    frame["domain"] = "人居环境"
    return frame


_MAP_KINDS = ("人居环境问题", "健身器材损坏/缺失", "路灯故障")


_FINDING_COLUMNS = ["lat", "lon", "date", "kind", "status", "rectify_by", "domain", "village_code", "open", "form_id", "instance_id", "photo_name"]  # fmt: skip


def _map_findings(items: pd.DataFrame) -> pd.DataFrame:
    """Open findings with a GPS point for the maps: sanitation findings to rectify, damaged or
    missing equipment and lighting faults. No free text and no person goes on a map: only the
    kind, dates, state and the finding's photo (``photo_name``: the attachment's name, linked
    by :func:`_copy_photos`; only for :data:`_PHOTO_FORMS`)."""
    if items.empty:
        return pd.DataFrame(columns=_FINDING_COLUMNS)
    located = items[items["lat"].notna() & items["lon"].notna() & items["kind"].isin(_MAP_KINDS)]
    if located.empty:
        return pd.DataFrame(columns=_FINDING_COLUMNS)
    photo = _nonblank(located["photo"]).where(located["form_id"].isin(_PHOTO_FORMS), None)
    return pd.DataFrame(
        {
            "lat": located["lat"].astype(float),
            "lon": located["lon"].astype(float),
            "date": located["found_on"],
            "kind": located["kind"],
            "status": located["state"],
            "rectify_by": located["deadline"].dt.strftime("%Y-%m-%d"),
            "domain": located["domain"].map(lambda d: d if d in DOMAINS.values() else None),
            "village_code": located["village_code"],
            "open": True,
            "form_id": located["form_id"],
            "instance_id": located["instance_id"],
            "photo_name": photo,
        }
    )


def _nonblank(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna() & (series.astype(str).str.strip() != ""), None)  # fmt: skip


def _copy_photos(findings: pd.DataFrame, photos: Mapping[tuple[str, str, str], _Photo], report_dir: Path, as_of: date) -> pd.Series:  # fmt: skip
    """Copy each finding's stored photo to ``report_dir/photos/<sha256><ext>`` and return its
    link relative to ``maps/`` (None where there is no photo, or it was never downloaded).

    Named by content, so a hostile file name never reaches the disk or the page and one photo
    shared by several findings is copied once. Photos left from an earlier run of the same
    date that no finding shows any more are removed: the folder matches the maps.
    """
    folder = report_dir / "photos"
    links: list[str | None] = []
    kept: set[str] = set()
    for form_id, iid, name in zip(findings["form_id"], findings["instance_id"], findings["photo_name"], strict=True):  # fmt: skip
        stored = photos.get((form_id, iid, name)) if isinstance(name, str) else None
        if stored is None or not stored.path.is_file():
            links.append(None)
            continue
        ext = Path(name).suffix.lower()
        file = stored.sha256 + (ext if re.fullmatch(r"\.[a-z0-9]{1,8}", ext) else "")
        if file not in kept:
            folder.mkdir(exist_ok=True)
            target = folder / file
            if not target.is_file() or target.stat().st_size != stored.path.stat().st_size:
                shutil.copyfile(stored.path, target)
            kept.add(file)
        links.append(f"../{as_of.isoformat()}/photos/{file}")
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_file() and old.name not in kept:
                old.unlink()
    return pd.Series(links, index=findings.index, dtype=object)
