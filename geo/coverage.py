"""Coverage by village: which village each GPS point falls in, and per-village progress frames.

Every map and data check goes through these two functions, so no caller re-implements the join.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd

from geo.geofile import STORAGE_CRS
from pipelines.errors import DataError

# Colour classes of completion (value / target), in legend order; labels are shown on maps.
CLASSES = (
    ("no_data", "暂无数据", "#bdbdbd"),
    ("lt25", "完成 0–25%", "#d73027"),
    ("lt50", "完成 25–50%", "#fc8d59"),
    ("lt75", "完成 50–75%", "#fee08b"),
    ("lt100", "完成 75–99%", "#91cf60"),
    ("done", "已完成 100%", "#1a9850"),
)


def locate_points(
    points: pd.DataFrame,
    villages: gpd.GeoDataFrame,
    *,
    accuracy_m: float = 50.0,
    lon: str = "lon",
    lat: str = "lat",
    village_code: str = "village_code",
    accuracy: str = "accuracy",
) -> pd.DataFrame:
    """Join GPS points to village polygons (``geopandas.sjoin``) and flag doubtful points.

    ``points`` needs WGS-84 ``lon``/``lat`` columns; ``village_code`` (the village chosen in the
    form) and ``accuracy`` (metres) are used when present. Returns a copy of ``points`` (same
    index and order) with:

    - ``gps_village_code``: code of the village the point lies in (NA when outside all);
    - ``no_gps``: longitude or latitude missing;
    - ``outside``: the point lies in no village;
    - ``mismatch``: it lies in a village other than the one chosen in the form;
    - ``inaccurate``: the reported accuracy is worse than ``accuracy_m``.

    A point exactly on a shared border belongs to both villages, so it is a mismatch only if
    neither of them is the chosen one.
    """
    if lon not in points.columns or lat not in points.columns:
        raise DataError(f"GPS points need '{lon}' and '{lat}' columns; got {list(points.columns)}")
    x = pd.to_numeric(points[lon], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(points[lat], errors="coerce").to_numpy(dtype=float)
    no_gps = np.isnan(x) | np.isnan(y)
    frame = gpd.GeoDataFrame(
        {"_row": np.arange(len(points))},
        geometry=gpd.points_from_xy(x, y),
        crs=STORAGE_CRS,
    )
    polys = villages[["code", "geometry"]].to_crs(STORAGE_CRS)
    joined = gpd.sjoin(frame[~no_gps], polys, how="inner", predicate="intersects")
    rows = joined["_row"].to_numpy()
    hit_codes = joined["code"].astype(str).to_numpy()

    chosen = (
        points[village_code].astype("string").str.strip().to_numpy(dtype=object, na_value=None)
        if village_code in points.columns
        else np.full(len(points), None, dtype=object)
    )
    # Pick one village per point: the chosen one if the point touches it, else the first.
    hit_codes = hit_codes.astype(object)
    prefer = np.asarray(chosen[rows] == hit_codes, dtype=bool)
    order = np.lexsort((hit_codes, ~prefer, rows))
    rows, hit_codes = rows[order], hit_codes[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    gps_code = np.full(len(points), None, dtype=object)
    gps_code[rows[first]] = hit_codes[first]

    out = points.copy()
    out["gps_village_code"] = pd.array(gps_code, dtype="string")
    out["no_gps"] = no_gps
    out["outside"] = ~no_gps & pd.isna(out["gps_village_code"]).to_numpy()
    has_choice = pd.notna(chosen) & np.asarray(chosen != "", dtype=bool)
    located = ~pd.isna(out["gps_village_code"]).to_numpy()
    same = np.asarray(gps_code == chosen, dtype=bool)
    out["mismatch"] = has_choice & located & ~same
    if accuracy in points.columns:
        acc = pd.to_numeric(points[accuracy], errors="coerce").to_numpy(dtype=float)
        out["inaccurate"] = np.nan_to_num(acc, nan=0.0) > accuracy_m
    else:
        out["inaccurate"] = False
    return out


def coverage_frame(
    villages: gpd.GeoDataFrame,
    values: pd.DataFrame | None,
    *,
    code: str = "village_code",
    value: str = "value",
    target: str = "target",
    open_followups: str = "open_followups",
) -> gpd.GeoDataFrame:
    """Every village with its value against target, completion ratio and colour class.

    ``values`` has at most one row per village code (column ``code``) with numeric ``value``
    and ``target`` and optionally ``open_followups``; other columns are carried along.
    Villages without a row get value 0, no target and class 暂无数据 (zero coverage), so a
    map drawn before any data exists still shows all villages. Codes not in ``villages`` or
    repeated raise :class:`DataError`: a value must never be drawn on the wrong village.

    Returned columns: code, name, geometry, value, target, ratio (value/target, NaN without a
    target), open_followups, klass (see :data:`CLASSES`), klass_label, colour, plus the extras.
    """
    base = villages[["code", "name", "geometry"]].copy()
    if values is None or len(values) == 0:
        extra = pd.DataFrame({"code": base["code"], "value": 0.0, "target": np.nan})
    else:
        missing = [c for c in (code, value, target) if c not in values.columns]
        if missing:
            raise DataError(f"progress values lack column(s) {', '.join(missing)}")
        extra = values.rename(columns={code: "code"}).copy()
        extra["code"] = extra["code"].astype(str).str.strip()
        repeated = sorted(extra.loc[extra["code"].duplicated(), "code"].unique())
        unknown = sorted(set(extra["code"]) - set(base["code"]))
        problems = []
        if repeated:
            problems.append(f"village code(s) given more than once: {', '.join(repeated)}")
        if unknown:
            problems.append(f"village code(s) not in the register: {', '.join(unknown)}")
        if problems:
            raise DataError("progress values: " + "; ".join(problems) + "; fix the input table")
        extra = extra.rename(columns={value: "value", target: "target"})
        if open_followups in extra.columns:
            extra = extra.rename(columns={open_followups: "open_followups"})
        extra = extra.drop(columns=[c for c in ("name", "geometry") if c in extra.columns])
    out = base.merge(extra, on="code", how="left", validate="one_to_one")
    out["value"] = pd.to_numeric(out["value"], errors="coerce").fillna(0.0)
    out["target"] = pd.to_numeric(out["target"], errors="coerce")
    if "open_followups" in out.columns:
        out["open_followups"] = pd.to_numeric(out["open_followups"], errors="coerce").fillna(0)
    else:
        out["open_followups"] = 0
    out["open_followups"] = out["open_followups"].astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["value"] / out["target"].where(out["target"] > 0)
    out["ratio"] = ratio
    out["klass"] = classify(ratio.to_numpy(dtype=float))
    labels = {k: label for k, label, _ in CLASSES}
    colours = {k: colour for k, _, colour in CLASSES}
    out["klass_label"] = out["klass"].map(labels)
    out["colour"] = out["klass"].map(colours)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=villages.crs)


def classify(ratio: np.ndarray) -> np.ndarray:
    """Class key of :data:`CLASSES` for each completion ratio (NaN: no data)."""
    klass = np.full(len(ratio), "no_data", dtype=object)
    ok = ~np.isnan(ratio)
    bins = np.array([0.25, 0.5, 0.75, 1.0])
    names = np.array(["lt25", "lt50", "lt75", "lt100", "done"], dtype=object)
    # Round first so 0.9999999 from a float sum is not "not done".
    klass[ok] = names[np.searchsorted(bins, np.round(ratio[ok], 9), side="right")]
    return klass
