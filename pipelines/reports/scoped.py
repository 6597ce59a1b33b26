"""The internal dispatch report and the maps cut to a scope: what the portal shows a liaison
group leader (帮包联系组组长) or a village cadre (村干部), from one refresh's
:class:`~pipelines.reports.process.Outputs`.

A scope is a set of register village codes; None is the whole town (the internal edition as
``manyi report`` writes it). The cut is made on the inputs, before anything is laid out, so no
later step can show another village's rows:

- progress: the town and department rows (aggregates the public edition shows anyway; the
  report labels them 全镇, as context) and the village rows of the scope only. Liaison-group
  rows are dropped: a group's figures include its villages outside a village scope;
- the register: the scope's villages only, so the liaison-group table lists only the groups
  wholly or partly in scope, counting only their villages in scope;
- follow-up items and data checks: those of the scope's villages only. Items and checks with
  no village (roads, lighting, 镇直, the police's monthly figures) and the quarantined records
  are the town's: shown only for the whole town;
- the maps: the scope's village polygons only (other villages are not drawn at all), their
  findings only, no road works (the town's).

Photos: ``photo_url(item) -> str | None`` (``item`` a row of ``Outputs.followups``) gives the
portal's own route for a finding's photo, which checks the scope again when it is opened. It is
asked only for findings of the forms whose photos show a finding, never a person or a home
(:data:`pipelines.reports._inputs.PHOTO_FORMS`), and its answer must be a web link or a path
(letters, digits, ``_ . / -``), else it is not linked. Without ``photo_url`` nothing links a
photo.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pandas as pd
from markupsafe import escape

from geo.maps import MapsResult, draw_maps
from geo.maps.layers import safe_link
from pipelines.analysis.checks import Checks
from pipelines.analysis.indicators import Progress
from pipelines.config import SHANGHAI
from pipelines.errors import DataError
from pipelines.reports._inputs import PHOTO_FORMS, Inputs
from pipelines.reports._map_frames import map_findings, map_progress
from pipelines.reports.dispatch import dispatch_context, render_html, village_progress, write_xlsx
from pipelines.reports.process import Outputs
from pipelines.reports.spreadsheets import writing

PhotoUrl = Callable[[pd.Series], str | None]
_TOWN_LEVELS = ("town", "department")  # aggregates the public edition shows


@dataclass(frozen=True)
class _Cut:
    """The processing step's figures, cut to a scope."""

    data: Inputs
    progress: Progress
    previous: Progress | None
    items: pd.DataFrame
    checks: Checks


def scoped_dispatch_html(settings, outputs: Outputs, villages: frozenset[str] | None, label: str, *, photo_url: PhotoUrl | None = None, data_as_of: datetime | None = None) -> str:  # fmt: skip
    """The internal dispatch report of ``villages`` (None: the whole town) as one HTML page,
    titled with ``label`` (e.g. 第3帮包联系组, or a village's name). ``data_as_of`` (aware) is
    shown as 数据截至 in Beijing time."""
    context, cut = _context(settings, outputs, villages, label)
    if photo_url is not None:
        for entry in context.get("overdue_list", []):
            entry["photo"] = _photo_link(cut.items.loc[entry["item"]], photo_url)
    if data_as_of is not None:
        context["data_as_of"] = data_as_of.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    return render_html(context)


def scoped_dispatch_xlsx(settings, outputs: Outputs, villages: frozenset[str] | None, label: str, path: Path) -> Path:  # fmt: skip
    """The same report as :func:`scoped_dispatch_html`, as a workbook at ``path`` (no photo
    links; cells formula-neutralised as every workbook of the reports)."""
    path = Path(path)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    return write_xlsx(_context(settings, outputs, villages, label)[0], path)


def draw_scope_maps(settings, outputs: Outputs, out_dir: Path, villages: frozenset[str] | None, *, photo_url: PhotoUrl | None = None, label: str | None = None) -> MapsResult:  # fmt: skip
    """The overview and domain maps of ``villages`` (None: the whole town) into
    ``out_dir/maps/``, as :func:`geo.maps.draw_maps` draws them, offline. ``label`` names the
    scope in each map's title (default: the villages' names, or how many there are).

    A scope with no register village (e.g. a person who sees only their own submissions) has
    nothing to draw: :class:`DataError`.
    """
    cut = _cut(outputs, villages)
    data = cut.data
    frame = map_progress(data, cut.progress, cut.items, settings.plan_year, outputs.as_of)
    findings = map_findings(cut.items)
    findings["photo"] = [
        _photo_link(cut.items.loc[i], photo_url, escaped=False) if photo_url else None
        for i in findings.index
    ]
    boundaries = data.boundaries
    if villages is not None:
        frame = frame[frame["village_code"].isin(villages)]  # drops the town's road rows too
        polygons = boundaries.villages
        polygons = polygons[polygons["code"].isin(villages)].reset_index(drop=True)
        if polygons.empty:
            raise DataError(
                f"范围内没有登记的村（{_shown_codes(villages)}），无法绘制地图；请检查该范围的"
                "村代码是否在村庄名录（geo/villages.csv 或 villages 设置）中"
            )
        boundaries = replace(boundaries, villages=polygons, warnings=[])
    title = label or _default_label(settings, data, villages)
    out_dir = Path(out_dir)
    with writing(out_dir / "maps"):
        return draw_maps(
            settings, out_dir, frame, findings, boundaries=boundaries,
            segments=data.plan.segments if villages is None else (), title=title,
            roads=villages is None,
        )  # fmt: skip


def style_hashes(page: str) -> tuple[str, ...]:
    """CSP sources (``'sha256-…'``) of each ``<style>`` block of a report page: the page has
    no style attribute and no script, so ``style-src`` with these is all it needs."""
    return tuple(
        "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
        for css in re.findall(r"<style>(.*?)</style>", page, flags=re.DOTALL)
    )


# --- the cut -------------------------------------------------------------------------------------


def _inputs(outputs: Outputs) -> Inputs:
    if outputs.inputs is None:
        raise DataError(
            "these outputs carry no inputs (Outputs.inputs is None); make them with "
            "pipelines.reports.process.refresh_outputs, which keeps what it read"
        )
    return outputs.inputs


def _cut(outputs: Outputs, villages: frozenset[str] | None) -> _Cut:
    data = _inputs(outputs)
    if villages is None:
        return _Cut(data, outputs.progress, outputs.previous, outputs.followups, outputs.checks)
    keep = frozenset(villages)
    scoped = replace(
        data, villages=[v for v in data.villages if v.code in keep],
        quarantine=data.quarantine.iloc[0:0], photos={}, senders=[], warnings=[],
    )  # fmt: skip
    items = outputs.followups
    items = items[items["village_code"].isin(keep)] if len(items) else items
    table = outputs.checks.table
    table = table[table["village_code"].isin(keep)] if len(table) else table
    return _Cut(
        scoped, _progress(outputs.progress, keep), _progress(outputs.previous, keep), items,
        replace(outputs.checks, table=table.reset_index(drop=True)),
    )  # fmt: skip


def _progress(progress: Progress | None, keep: frozenset[str]) -> Progress | None:
    if progress is None:
        return None
    t = progress.table
    mine = t["level"].isin(_TOWN_LEVELS) | ((t["level"] == "village") & t["key"].isin(keep))
    return replace(progress, table=t[mine].reset_index(drop=True))


def _context(settings, outputs: Outputs, villages: frozenset[str] | None, label: str) -> tuple[dict, _Cut]:  # fmt: skip
    cut = _cut(outputs, villages)
    ctx = dispatch_context(settings, cut.data, outputs.as_of, cut.progress, cut.previous, cut.items, cut.checks, "internal")  # fmt: skip
    ctx["title"] = f"{ctx['heading_name']}月调度通报（{ctx['month_label']}·{ctx['edition_label']}·{label}）"  # fmt: skip
    if villages is not None:
        ctx["scope"] = label
        ctx["scope_villages"] = village_progress(cut.data, cut.progress)
    return ctx, cut


def _photo_link(item: pd.Series, photo_url: PhotoUrl, *, escaped: bool = True) -> str | None:
    """The portal's link to the item's photo, if the item has one that may be linked and the
    link is safe in an ``href``; escaped (Markup) for the report's template."""
    photo = item.get("photo")
    if item.get("form_id") not in PHOTO_FORMS or not isinstance(photo, str) or not photo.strip():
        return None
    link = safe_link(photo_url(item))
    if link is None:
        return None
    return escape(link) if escaped else link


def _default_label(settings, data: Inputs, villages: frozenset[str] | None) -> str:
    if villages is None:
        return settings.town
    names = [v.name for v in data.villages if v.code in villages]
    return "、".join(names) if len(names) <= 3 else f"{names[0]}等 {len(names)} 个村"


def _shown_codes(villages: frozenset[str]) -> str:
    codes = sorted(str(c) for c in villages)
    return "、".join(codes[:5]) + ("…" if len(codes) > 5 else "") if codes else "空"
