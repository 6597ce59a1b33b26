"""The two frames :func:`geo.maps.draw_maps` draws, from the processing step's figures:
village progress (with the roads and lit roads) and the open findings with a GPS point.

Each open finding (a pile, a lamp, a piece of equipment) links to its photo: the stored
attachment (``<data_dir>/attachments``, by content) is copied into ``<as_of>/photos/`` under
its sha256, so the outputs folder opens offline and can be handed on as it is. Photos of the
roster forms (people's homes, 低保) are never linked on a map.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pandas as pd

from geo.maps import DOMAINS
from pipelines.analysis.indicators import Progress, latest_rows
from pipelines.analysis.plan import Plan
from pipelines.reports._columns import MAP_COLUMNS
from pipelines.reports._inputs import PHOTO_FORMS, Inputs, Photo


def map_progress(data: Inputs, progress: Progress, items: pd.DataFrame, year: int, as_of: date) -> pd.DataFrame:  # fmt: skip
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


def _road_rows(data: Inputs, year: int, as_of: date) -> pd.DataFrame:
    """Each road's progress, from the same latest reports the road and lighting indicators
    read (:func:`pipelines.analysis.indicators.latest_rows`)."""
    rows = []
    roads = data.forms.get("road_progress")
    planned = data.plan.planned_km
    if roads is not None and set(MAP_COLUMNS["road_progress"]) <= set(roads.table.columns):
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
        lit_roads = {s.segment_id for s in data.plan.segments}
        for road, ok, total in zip(lit.index, lit["ok"], lit["total"], strict=True):
            if road in lit_roads and not pd.isna(total) and total > 0:
                rows.append({"segment_id": road, "value": float(ok), "target": float(total), "label": "路灯（盏）"})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["segment_id", "value", "target", "label"])
    frame.insert(0, "village_code", None)
    frame.insert(1, "indicator_id", "road_segments")
    frame["domain"] = "人居环境"
    return frame


_MAP_KINDS = ("人居环境问题", "健身器材损坏/缺失", "路灯故障")


_FINDING_COLUMNS = ["lat", "lon", "date", "kind", "status", "rectify_by", "domain", "village_code", "open", "form_id", "instance_id", "photo_name"]  # fmt: skip


def map_findings(items: pd.DataFrame) -> pd.DataFrame:
    """Open findings with a GPS point for the maps: sanitation findings to rectify, damaged or
    missing equipment and lighting faults. No free text and no person goes on a map: only the
    kind, dates, state and the finding's photo (``photo_name``: the attachment's name, linked
    by :func:`copy_photos`; only for :data:`PHOTO_FORMS`)."""
    if items.empty:
        return pd.DataFrame(columns=_FINDING_COLUMNS)
    located = items[items["lat"].notna() & items["lon"].notna() & items["kind"].isin(_MAP_KINDS)]
    if located.empty:
        return pd.DataFrame(columns=_FINDING_COLUMNS)
    photo = _nonblank(located["photo"]).where(located["form_id"].isin(PHOTO_FORMS), None)
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


def copy_photos(findings: pd.DataFrame, photos: Mapping[tuple[str, str, str], Photo], report_dir: Path, as_of: date) -> pd.Series:  # fmt: skip
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
