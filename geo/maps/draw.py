"""Drawing the maps: the overview and one map per domain, each one self-contained, offline
HTML file under ``<out_dir>/maps/``.

This module checks the two input frames (progress by village and indicator, open findings)
and draws each page from :mod:`geo.maps.layers`, rendered offline by :mod:`geo.maps._assets`.
The index page that links the maps and reports is written by :mod:`pipelines.reports.index`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from geo.basemaps import basemap_for
from geo.boundaries import Boundaries, load_boundaries
from geo.illustrative import illustrative_boundaries
from geo.maps._assets import render_offline
from geo.maps.layers import build_map, page_style
from geo.roads import illustrative_roads, load_roads
from geo.villages import load_villages

if TYPE_CHECKING:  # geo draws the segments it is given; it never reads the plan
    from pipelines.analysis.plan import RoadSegment
from pipelines.errors import DataError

# The plan's six domains: id used in file names -> Chinese name shown to users.
DOMAINS = {
    "living_environment": "人居环境",
    "public_security": "社会治安",
    "medical_care": "基本医疗",
    "culture_sports": "文体活动",
    "education": "基础教育",
    "social_assistance": "社会帮扶",
}
ROADS_DOMAIN = "living_environment"
CLOSED_STATUSES = {"已整改", "已完成", "已解决", "已关闭", "closed", "done", "resolved", "cleared"}
PROGRESS_COLUMNS = ("village_code", "indicator_id", "value", "target")


@dataclass
class MapsResult:
    """What :func:`draw_maps` wrote."""

    out_dir: Path
    maps: dict[str, Path]  # "overview" and each domain id -> HTML file
    illustrative: bool  # drawn on illustrative geometry (each map says 示意边界)
    basemap: str
    warnings: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return list(self.maps.values())


def draw_maps(
    settings,
    out_dir: Path,
    progress: pd.DataFrame | None = None,
    findings: pd.DataFrame | None = None,
    *,
    boundaries: Boundaries | None = None,
    segments: Sequence[RoadSegment] = (),
    title: str | None = None,
    roads: bool = True,
) -> MapsResult:
    """Draw the overview map and one map per domain into ``out_dir/maps/``.

    ``segments`` are the road segments to draw (the town's plan's, ``Plan.segments``; none
    by default). ``progress`` is the indicators' tidy frame, one row per (village,
    indicator):

    ============== ===================================================================
    village_code   12-digit register code; NA for a town-level row (e.g. a road)
    indicator_id   the plan's indicator id
    value, target  numbers in the same unit (count, km, share); target > 0
    open_followups optional: open follow-up items for that village and indicator
    domain         optional: a key or Chinese name of :data:`DOMAINS`; rows without one
                   appear on the overview only
    label          optional: the indicator's Chinese label, shown in tooltips
    segment_id     optional: a road segment id of the plan's ``[[segment]]`` ids; such rows
                   (value = km done of target km) colour that road
    ============== ===================================================================

    A village's colour is its mean completion, min(value/target, 1), over the map's indicators.
    With ``progress`` None or empty every village is drawn with zero coverage (暂无数据).

    ``findings`` holds open findings (piles not cleared, damaged equipment, …): ``lat``, ``lon``
    (WGS-84) and optionally ``date``, ``kind``, ``status``, ``rectify_by``, ``photo`` (an
    ``http(s)://`` link or a path relative to the maps, e.g. ``../2023-06-30/photos/x.jpg``;
    anything else is not linked), ``note``, ``domain``, ``village_code`` and ``open`` (bool;
    without it, a status outside :data:`CLOSED_STATUSES` counts as open).

    ``title`` names the area before each map's name (default ``settings.town``: "龙阳镇 总览");
    ``roads=False`` draws no road works (a map cut to some villages: roads are the town's).

    Geometry comes from ``boundaries``, else from ``settings.boundaries`` (a file path) when the
    settings carry one, else the illustrative villages. The basemap is ``settings.basemap``.
    """
    out_dir = Path(out_dir)
    register = load_villages(settings.villages)
    if boundaries is None:
        path = settings.boundaries
        boundaries = (
            load_boundaries(path, register, extent=settings.extent)
            if path
            else illustrative_boundaries(register, extent=settings.extent)
        )
    basemap = basemap_for(settings)
    notes = list(boundaries.warnings)
    lines = None
    if roads and settings.roads:
        lines, road_notes = load_roads(settings.roads, boundaries, segments)
        notes += road_notes
    elif roads:
        lines = illustrative_roads(boundaries, segments)
    tidy = _check_progress(progress)
    open_findings, dropped = _open_findings(findings)
    if dropped:
        notes.append(f"{dropped} finding(s) without GPS were left off the maps")

    style = page_style(blank=basemap.name == "none")
    maps_dir = out_dir / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    town = title or settings.town
    written: dict[str, Path] = {}
    pages = [("overview", f"{town} 总览", None)] + [
        (key, f"{town} {label}", key) for key, label in DOMAINS.items()
    ]
    for key, name, domain in pages:
        rows = tidy if domain is None else tidy[tidy["domain"] == domain]
        marks = open_findings
        if domain is not None:
            marks = open_findings[open_findings["domain"] == domain]
        draw_roads = domain in (None, ROADS_DOMAIN)
        fmap = build_map(name, boundaries, rows, lines if draw_roads else None, marks, basemap)
        path = maps_dir / f"{key}.html"
        path.write_text(render_offline(fmap, style), encoding="utf-8")
        written[key] = path
    return MapsResult(out_dir, written, boundaries.illustrative, basemap.name, notes)


# --- the input frames ------------------------------------------------------------------------


def _check_progress(progress: pd.DataFrame | None) -> pd.DataFrame:
    cols = [*PROGRESS_COLUMNS, "open_followups", "domain", "label", "segment_id"]
    if progress is None or len(progress) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    missing = [c for c in PROGRESS_COLUMNS if c not in progress.columns]
    if missing:
        raise DataError(
            f"progress table lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(PROGRESS_COLUMNS)} (see geo.maps.draw_maps)"
        )
    tidy = progress.copy()
    for c in cols:
        if c not in tidy.columns:
            tidy[c] = pd.NA
    tidy["value"] = pd.to_numeric(tidy["value"], errors="coerce")
    tidy["target"] = pd.to_numeric(tidy["target"], errors="coerce")
    tidy["open_followups"] = pd.to_numeric(tidy["open_followups"], errors="coerce").fillna(0)
    names = {name: key for key, name in DOMAINS.items()}
    tidy["domain"] = tidy["domain"].map(lambda d: names.get(d, d) if isinstance(d, str) else d)
    unknown = sorted({d for d in tidy["domain"].dropna() if d not in DOMAINS})
    if unknown:
        raise DataError(
            f"progress table: unknown domain(s) {', '.join(map(str, unknown))}; "
            f"use one of {', '.join(DOMAINS)} or their Chinese names"
        )
    village_rows = tidy[tidy["village_code"].notna()]
    dup = village_rows.duplicated(["village_code", "indicator_id"])
    if dup.any():
        pairs = village_rows.loc[dup, ["village_code", "indicator_id"]].astype(str)
        shown = ", ".join(f"{c}/{i}" for c, i in pairs.head(10).itertuples(index=False))
        raise DataError(
            f"progress table: {int(dup.sum())} repeated village/indicator row(s): {shown}; "
            "aggregate to one row per village and indicator"
        )
    return tidy


def _open_findings(findings: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    cols = ["lat", "lon", "date", "kind", "status", "rectify_by", "photo", "note", "domain"]
    if findings is None or len(findings) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols}), 0
    missing = [c for c in ("lat", "lon") if c not in findings.columns]
    if missing:
        raise DataError(
            f"findings table lacks column(s) {', '.join(missing)}; it needs lat and lon"
        )
    f = findings.copy()
    for c in cols:
        if c not in f.columns:
            f[c] = pd.NA
    if "open" in f.columns:
        is_open = f["open"].fillna(True).astype(bool)
    else:
        is_open = ~f["status"].astype("string").str.strip().isin(CLOSED_STATUSES).fillna(False)
    f = f[is_open.to_numpy()]
    f["lat"] = pd.to_numeric(f["lat"], errors="coerce")
    f["lon"] = pd.to_numeric(f["lon"], errors="coerce")
    located = f["lat"].notna() & f["lon"].notna()
    names = {name: key for key, name in DOMAINS.items()}
    f["domain"] = f["domain"].map(lambda d: names.get(d, d) if isinstance(d, str) else d)
    return f[located], int((~located).sum())
