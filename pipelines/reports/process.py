"""The processing step: from the store to every output, for one as-of date
(:func:`refresh_outputs`, run by ``manyi report``, ``flows.process`` and the demo).

Layout under the outputs folder (``--out``, default ``settings.outputs_dir``)::

    index.html                     links everything below (rewritten on every run)
    maps/                          overview and one map per domain, as of the last run
    2023-06-30/                    one folder per as-of date; a re-run replaces its files
        月调度通报_2023-06_公开版.html / .xlsx   aggregates only: for WeChat 山水龙阳
        月调度通报_2023-06_内部版.html / .xlsx   adds groups, masked follow-ups, data checks
        跟进清单_2023-06-30.xlsx / .csv          open items, one sheet per liaison group (xlsx:
                                                 and 已整改, the items closed by a rectification)
        数据质量_2023-06-30.xlsx / .csv          flagged rows, one sheet per form
        photos/                                  the photos of the findings on the maps

Steps: store → :func:`pipelines.reports._inputs.load_inputs` (plan, register, rosters,
boundaries, tidy tables) → :func:`pipelines.analysis.indicators.compute_progress` (at the as-of
date and at the end of the previous month, for "completed this month") →
:func:`pipelines.analysis.checks.check_forms` → :func:`pipelines.analysis.followups.follow_up_book`
→ :mod:`~pipelines.reports.dispatch` and :mod:`~pipelines.reports.lists` →
:func:`geo.maps.draw_maps` → :func:`pipelines.reports.index.write_index`.

An as-of date outside the plan year is noted in the report and the warnings; a disk that
cannot take the files is one :class:`DataError` naming the path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from geo.maps import MapsResult, draw_maps
from pipelines.analysis import followups as fu
from pipelines.analysis.checks import Checks, check_forms
from pipelines.analysis.indicators import Progress, compute_progress
from pipelines.reports._inputs import NO_DATA, Inputs, load_inputs
from pipelines.reports._map_frames import copy_photos, map_findings, map_progress
from pipelines.reports.dispatch import write_dispatch
from pipelines.reports.index import write_index
from pipelines.reports.lists import write_followup_lists, write_quality_sheets
from pipelines.reports.spreadsheets import writing


@dataclass(frozen=True)
class Outputs:
    """What :func:`refresh_outputs` wrote and computed."""

    as_of: date
    out_dir: Path  # outputs root: index.html and maps/
    report_dir: Path  # out_dir / as_of
    files: dict[str, Path]  # key -> file; keys in :data:`FILE_KEYS`
    index: Path
    maps: MapsResult
    submissions: int  # live submissions read from the store
    progress: Progress
    checks: Checks
    followups: pd.DataFrame  # open items: :data:`pipelines.analysis.followups.OPEN_COLUMNS`, masked
    warnings: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    quarantined: int = 0  # records in the store's quarantine (listed in the data-quality sheets)
    inputs: Inputs | None = None  # what was read: the portal cuts pages and maps to a scope
    previous: Progress | None = None  # at the end of the previous month ("this month" columns)
    # items closed by a rectification: :data:`pipelines.analysis.followups.CLOSED_COLUMNS`, masked
    closed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=fu.CLOSED_COLUMNS))

    @property
    def empty(self) -> bool:
        return self.submissions == 0


FILE_KEYS = (
    "dispatch_public_html", "dispatch_public_xlsx", "dispatch_internal_html",
    "dispatch_internal_xlsx", "followups_xlsx", "followups_csv", "quality_xlsx", "quality_csv",
)  # fmt: skip


def refresh_outputs(settings, as_of: date, out_dir: Path | None = None) -> Outputs:
    """Write every output for ``as_of`` (see the module docstring for the layout).

    ``out_dir`` is the outputs root (default ``settings.outputs_dir``). Works on an empty or
    missing store: every figure then says 暂无数据 and the lists are empty. Raises
    :class:`DataError` naming the path when a file cannot be written (a full disk, a
    read-only folder) or the configured roster folder does not exist.
    """
    clock = _Clock()
    out_dir = Path(out_dir) if out_dir is not None else Path(settings.outputs_dir)
    data = load_inputs(settings)
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
        gps_accuracy_m=settings.gps_accuracy_m, senders=data.senders,
    )  # fmt: skip
    clock.lap("checks")
    book = fu.follow_up_book(
        data.forms, as_of=as_of, year=year, plan=data.plan, villages=data.villages,
        rosters=data.rosters if data.rosters_known else None, senders=data.senders,
    )  # fmt: skip
    items = book.open
    clock.lap("followups")

    report_dir = out_dir / as_of.isoformat()
    with writing(report_dir):
        report_dir.mkdir(parents=True, exist_ok=True)
    files = write_dispatch(settings, data, as_of, progress, previous, items, checks, report_dir)
    files["followups_xlsx"], files["followups_csv"] = write_followup_lists(
        items, report_dir, as_of, closed=book.closed
    )
    files["quality_xlsx"], files["quality_csv"] = write_quality_sheets(
        checks, data, report_dir, as_of
    )
    clock.lap("write")
    findings = map_findings(items)
    with writing(report_dir / "photos"):
        findings["photo"] = copy_photos(findings, data.photos, report_dir, as_of)
    with writing(out_dir / "maps"):
        maps = draw_maps(
            settings, out_dir, map_progress(data, progress, items, year, as_of), findings,
            boundaries=data.boundaries, segments=data.plan.segments,
        )  # fmt: skip
    with writing(out_dir / "index.html"):
        index = write_index(out_dir, title=f"{settings.town} 满意度提升工程")
    clock.lap("maps")
    return Outputs(
        as_of=as_of, out_dir=out_dir, report_dir=report_dir, files=files, index=index, maps=maps,
        submissions=sum(data.counts.values()), progress=progress, checks=checks,
        followups=items, warnings=tuple(data.notes + data.warnings), seconds=clock.laps,
        quarantined=len(data.quarantine), inputs=data, previous=previous, closed=book.closed,
    )  # fmt: skip


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
