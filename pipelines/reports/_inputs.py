"""What the processing step reads, in one :class:`Inputs`: the plan, the village register,
the rosters, the boundaries, each form's tidy tables (read from the columnar tables of
:mod:`pipelines.tables`, caught up with the store first: no stored JSON is parsed again but
what changed; only the columns the steps read, :mod:`pipelines.reports._columns`), the stored
photos of findings, and the store's quarantined records (隔离记录: form, source, id, reason;
never the raw text).

A configured ``rosters_dir`` that does not exist is one :class:`DataError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from forms.schema import FormSchema, load_schema
from geo.boundaries import Boundaries, load_boundaries
from geo.illustrative import NOTICE, illustrative_boundaries
from geo.villages import Village, load_villages
from pipelines.analysis.followups import RECTIFICATION
from pipelines.analysis.plan import Plan, check_against_forms, load_plan
from pipelines.analysis.rosters import COLUMNS as ROSTER_COLUMNS
from pipelines.analysis.rosters import Rosters, demo_rosters, load_rosters, validate_roster
from pipelines.analysis.tidy import TidyForm
from pipelines.config import SHANGHAI
from pipelines.errors import DataError
from pipelines.privacy import scrub_text
from pipelines.reports._columns import needed_columns
from pipelines.store import QuarantineItem, Sender, open_store, store_exists
from pipelines.tables import catch_up, read_form

NO_DATA = "暂无数据"
QUARANTINE = "隔离记录"
QUARANTINE_LABEL = f"{QUARANTINE}（未能读取）"

# True reads every column of every form table: only to prove the pruning changes nothing
# (tests/pipelines/reports/test_columns.py); the report reads what its steps need.
READ_ALL_COLUMNS = False


@dataclass
class Inputs:
    """What :func:`load_inputs` read (see the module docstring)."""

    plan: Plan
    villages: list[Village]
    rosters: Rosters
    rosters_known: bool  # False: no roster files, roster indicators show 暂无数据
    boundaries: Boundaries
    forms: dict[str, TidyForm]
    counts: dict[str, int]
    notes: list[str]  # shown in both editions of the report
    warnings: list[str] = field(default_factory=list)  # for whoever runs the report
    photos: dict[tuple[str, str, str], Photo] = field(default_factory=dict)
    quarantine: pd.DataFrame = field(default_factory=lambda: _quarantine_frame([], {}))
    senders: list[Sender] = field(default_factory=list)  # who sent what to `manyi serve`


@dataclass(frozen=True)
class Photo:
    """A stored attachment: (form, instance, file name) -> its file under data_dir."""

    sha256: str
    path: Path


def load_inputs(settings) -> Inputs:
    """Everything the processing step reads, for ``settings``; never creates a store just to
    find it empty."""
    plan = load_plan(settings.plan)  # the one place the plan is read: the town's own
    villages = load_villages(settings.villages)
    codes = [v.code for v in villages]
    notes: list[str] = []
    rosters, known = _rosters(settings, codes, notes)
    if settings.boundaries:
        boundaries = load_boundaries(settings.boundaries, villages, extent=settings.extent)
    else:
        boundaries = illustrative_boundaries(villages, extent=settings.extent)
    forms: dict[str, TidyForm] = {}
    counts: dict[str, int] = {}
    warnings: list[str] = []
    photos: dict[tuple[str, str, str], Photo] = {}
    quarantine = _quarantine_frame([], {})
    senders: list[Sender] = []
    if store_exists(settings):  # never create a store just to find it empty
        with open_store(settings, read_only=True) as store:
            for form_id in sorted(plan.forms() | {RECTIFICATION}):  # 整改反馈 closes items
                counts[form_id] = store.count(form_id)
                if counts[form_id]:
                    schemas = _schemas(Path(settings.build_dir), form_id)
                    forms[form_id] = _load(settings, store, plan, form_id, schemas)
                    warnings += _unknown_versions(forms[form_id], schemas)
            for form_id in sorted(PHOTO_FORMS & set(forms)):
                photos.update(_stored_photos(store, form_id))
            titles = {fid: f.schema.title or fid for fid, f in forms.items()}
            quarantine = _quarantine_frame(store.quarantine(), titles, Path(settings.build_dir))
            senders = store.senders()
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
    return Inputs(plan, villages, rosters, known, boundaries, forms, counts, notes, warnings, photos, quarantine, senders)  # fmt: skip


def _load(settings, store, plan: Plan, form_id: str, schemas: list[FormSchema]) -> TidyForm:
    """The form's tidy tables, caught up with the store first, with only the form-table
    columns a step of the report reads (:func:`pipelines.reports._columns.needed_columns`);
    repeats whole."""
    catch_up(settings, store, form_id, schemas)
    wanted = None if READ_ALL_COLUMNS else needed_columns(plan, {form_id: schemas}).get(form_id)
    return read_form(settings, form_id, schemas, columns=wanted)


def _schemas(build_dir: Path, form_id: str) -> list[FormSchema]:
    """Every version of the form's schema that is known, for :func:`pipelines.analysis.tidy.tidy` to
    combine. The build folder keeps the JSON of the current build only (``manyi forms build``
    overwrites it), so today that is one schema; records of older versions still tidy, and a
    field only they had is kept as text (see :func:`_unknown_versions`)."""
    return [load_schema(build_dir, form_id)]


def _unknown_versions(form: TidyForm, schemas: list[FormSchema]) -> list[str]:
    known = {s.version for s in schemas}
    seen = form.table["form_version"].dropna().astype(str)
    other = sorted(set(seen.unique()) - known)  # a few versions over 1M rows: not a row loop
    if not other:
        return []
    n = int(seen.isin(other).sum())
    return [
        f"{form.schema.title or form.form_id}：{n} 条记录来自表单版本 {'、'.join(other)}，"
        f"构建目录只有版本 {'、'.join(sorted(known))} 的结构；这些记录独有的字段按文本读取。"
    ]


# Forms whose photos show findings (piles, lamps, equipment), never a person or a home.
PHOTO_FORMS = frozenset({"sanitation_sweep", "fitness_square", "street_lighting", RECTIFICATION})


def _stored_photos(store, form_id: str) -> dict[tuple[str, str, str], Photo]:
    found = {}
    for a in store.attachments(form_id):
        if a.status == "stored" and a.sha256 and a.local_path is not None:
            found[(a.form_id, a.instance_id, a.name)] = Photo(a.sha256, Path(a.local_path))
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


_QUARANTINE_COLUMNS = ("form_id", "form", "source", "key", "reason", "tries", "last_seen")
_MAX_REASON = 300


def _quarantine_frame(items: Iterable[QuarantineItem], titles: Mapping[str, str], build_dir: Path | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per quarantined record (:meth:`Store.quarantine`, which never carries the raw
    text: it is what could not be read): form, source, id, reason (masked, one line, cut
    short), how often it was tried and when it was last seen."""
    names = dict(titles)
    rows = []
    for q in items:
        if q.form_id not in names:
            names[q.form_id] = _form_title(build_dir, q.form_id)
        reason = " ".join(scrub_text(q.reason).split())
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 1] + "…"
        rows.append((q.form_id, names[q.form_id], q.source, q.key, reason, q.tries, _local_time(q.last_seen_at)))  # fmt: skip
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
