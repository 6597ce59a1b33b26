"""Village boundaries: load a surveyed file, check it against the register, repair what is safe.

A map must never show a wrong village, so every register code has to appear exactly once;
anything else is a :class:`~pipelines.errors.DataError` listing all the problems at once.
Before any geometry is trusted, the file must be the format its name says (magic bytes), a
Shapefile must have all its parts, and after reprojection every feature must lie near the
town (``extent=``, the town's ``extent`` setting; by default 龙阳镇's :data:`TOWN_EXTENT`); a
file in metres without a CRS, or with its axes swapped, is told apart from one that is simply
elsewhere. Every library error while loading becomes one ``DataError`` line naming the file.
Fixable faults (self-intersections, slivers) are repaired or reported as warnings that name
the village, and the result is stored in EPSG:4326.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geo.geofile import (
    STORAGE_CRS,
    TOWN_EXTENT,
    _cell_text,
    _first_line,
    _listing,
    _shown,
    check_extent,
    read_layer,
)
from geo.villages import Village, load_villages
from pipelines.errors import DataError

# CGCS2000 / 3-degree Gauss-Kruger CM 120E: metres, used for every length and area. The town
# (117.26°E) is nearer CM 117E (EPSG:4548); 2.7° from 120E, lengths come out ~0.08% long.
METRIC_CRS = "EPSG:4549"
CODE_COLUMNS = ("code", "village_code", "CODE", "cun_code", "XZQDM", "区划代码", "村代码")


@dataclass
class Boundaries:
    """Village polygons, one per register village, in EPSG:4326."""

    villages: gpd.GeoDataFrame  # columns: code, name, geometry; register order
    illustrative: bool  # True when generated, never surveyed: maps must say so
    source: str  # file path, or a description of the generator
    warnings: list[str] = field(default_factory=list)

    def metric(self) -> gpd.GeoDataFrame:
        """The same polygons in EPSG:4549, for areas and distances in metres."""
        return self.villages.to_crs(METRIC_CRS)


class BoundaryWarning(UserWarning):
    """A boundary was repaired or looks doubtful; the message names the village."""


def load_boundaries(
    path: Path | str,
    villages: list[Village] | None = None,
    *,
    code_column: str | None = None,
    layer: str | None = None,
    overlap_tolerance_m2: float = 100.0,
    gap_tolerance_m2: float = 100.0,
    extent: tuple[float, float, float, float] = TOWN_EXTENT,
) -> Boundaries:
    """Read village polygons from a GeoPackage, Shapefile (plain or zipped) or GeoJSON.

    The file must carry a CRS (any); polygons are reprojected to EPSG:4326 and must then lie
    within ``extent`` (west, south, east, north) padded by :data:`EXTENT_PAD_DEG`. Each feature
    needs the village's 12-digit code in ``code_column`` (default: the first of
    :data:`CODE_COLUMNS` present). Invalid polygons are repaired with ``make_valid`` and a
    :class:`BoundaryWarning` naming the village; overlaps and gaps larger than the tolerances
    (square metres, measured in EPSG:4549) are reported as warnings. A file that is not the
    format its name says, an incomplete Shapefile, missing, unknown or repeated codes, a
    missing CRS, features far from the town, an empty, corrupt or non-polygon file all raise
    :class:`DataError`.
    """
    path = Path(path)
    register = villages if villages is not None else load_villages()
    read = read_layer(path, layer=layer, what="boundary")
    frame, notes = read.frame, list(read.notes)
    _check_polygons(path, frame)
    if frame.crs is None:
        raise DataError(
            f"{path}: the file has no coordinate reference system; re-export it with its CRS "
            "(e.g. add the .prj file of a shapefile, or set the layer's CRS in QGIS)"
        )
    column = _code_column(path, frame, code_column)
    frame = frame.rename(columns={column: "code"})[["code", "geometry"]].copy()
    frame["code"] = [_normalise_code(v) for v in frame["code"]]
    labels = [f"village {_shown(c)}" if c else "a feature without code" for c in frame["code"]]
    frame = check_extent(path, frame, labels, extent=extent)
    _check_codes(path, frame, register)

    names = {v.code: v.name for v in register}
    frame["geometry"] = [
        _repair(path, code, names[code], geom, notes)
        for code, geom in zip(frame["code"], frame.geometry, strict=True)
    ]
    order = {v.code: i for i, v in enumerate(register)}
    frame = frame.sort_values("code", key=lambda s: s.map(order)).reset_index(drop=True)
    frame.insert(1, "name", frame["code"].map(names))
    result = gpd.GeoDataFrame(frame, geometry="geometry", crs=STORAGE_CRS)
    try:
        notes += _topology_notes(path, result, overlap_tolerance_m2, gap_tolerance_m2)
    except shapely.errors.GEOSException as e:
        raise DataError(
            f"{path}: cannot compare the village borders ({_first_line(e)}); "
            "check the polygons in QGIS (Vector › Geometry Tools › Check Validity)"
        ) from None
    for note in notes:
        warnings.warn(note, BoundaryWarning, stacklevel=2)
    return Boundaries(result, illustrative=False, source=str(path), warnings=notes)


def _check_polygons(path: Path, frame: gpd.GeoDataFrame) -> None:
    kinds = set(frame.geometry.geom_type.dropna()) - {"Polygon", "MultiPolygon"}
    empty = frame.geometry.isna() | frame.geometry.is_empty
    if kinds or empty.any():
        bad = ", ".join(sorted(kinds)) or "empty geometries"
        wrong = empty | ~frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
        raise DataError(
            f"{path}: village boundaries must be polygons, found {bad} in {int(wrong.sum())} "
            f"feature(s), e.g. feature {int(np.flatnonzero(wrong)[0]) + 1}; export the polygon layer"
        )


def _code_column(path: Path, frame: gpd.GeoDataFrame, wanted: str | None) -> str:
    columns = ", ".join(_shown(c) for c in list(frame.columns)[:20])
    if wanted is not None:
        if wanted not in frame.columns:
            raise DataError(
                f"{path}: no column {_shown(wanted, quote=True)}; columns are {columns}"
            )
        return wanted
    for name in CODE_COLUMNS:
        if name in frame.columns:
            return name
    raise DataError(
        f"{path}: no village code column (columns are {columns}); name the column holding the "
        f"12-digit codes one of {', '.join(CODE_COLUMNS)}"
    )


def _normalise_code(value: object) -> str:
    # Shapefiles store 12-digit codes as numbers (often float): 370481115200.0 -> "370481115200".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _cell_text(value)


def _check_codes(path: Path, frame: pd.DataFrame, register: list[Village]) -> None:
    known = {v.code for v in register}
    counts = frame["code"].value_counts()
    problems = []
    repeated = sorted(c for c, n in counts.items() if n > 1)
    if repeated:
        problems.append(
            "code(s) on more than one feature: "
            + _listing([f"{_shown(c)} ({counts[c]}×)" for c in repeated])
            + " — dissolve each village into one feature"
        )
    unknown = sorted(c for c in counts.index if c not in known)
    if unknown:
        problems.append(
            "code(s) not in the village register: "
            + _listing([_shown(c, quote=True) if c else "(blank)" for c in unknown])
            + " — correct them or update the register"
        )
    missing = [v for v in register if v.code not in counts.index]
    if missing:
        problems.append(
            f"{len(missing)} register village(s) have no boundary: "
            + _listing([f"{v.code} {v.name}" for v in missing], limit=60)
            + " — add them to the file"
        )
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))


def _repair(path: Path, code: str, name: str, geom, notes: list[str]):
    try:
        if geom.is_valid:
            return geom
        reason = shapely.is_valid_reason(geom)
        fixed = shapely.make_valid(geom)
        # make_valid can return lines/points beside the polygons; only the area is the village's.
        parts = [g for g in shapely.get_parts(fixed) if g.geom_type in ("Polygon", "MultiPolygon")]
        fixed = shapely.union_all(parts) if parts else None
    except shapely.errors.GEOSException as e:
        raise DataError(
            f"{path}: village {code} {name}: the boundary cannot be repaired ({_first_line(e)}); "
            "redraw it"
        ) from None
    if fixed is None:
        raise DataError(
            f"{path}: village {code} {name}: boundary is invalid ({reason}) and has no area "
            "after repair; redraw it"
        )
    notes.append(f"{path}: village {code} {name}: invalid boundary repaired ({reason})")
    return fixed


def _topology_notes(
    path: Path, frame: gpd.GeoDataFrame, overlap_m2: float, gap_m2: float
) -> list[str]:
    metric = frame.to_crs(METRIC_CRS)
    geoms = metric.geometry.values
    codes = list(metric["code"])
    notes = []
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    for i, j in zip(left, right, strict=True):
        if i >= j:
            continue
        area = shapely.area(shapely.intersection(geoms[i], geoms[j]))
        if area > overlap_m2:
            notes.append(
                f"{path}: villages {codes[i]} and {codes[j]} overlap by {area:,.0f} m²; "
                "fix the shared border"
            )
    # Holes in the union of all villages are land that belongs to no village.
    union = shapely.union_all(geoms)
    holes = [shapely.Polygon(ring) for poly in shapely.get_parts(union) for ring in poly.interiors]
    for hole in holes:
        if hole.area > gap_m2:
            near = [codes[k] for k in tree.query(hole.buffer(1.0), predicate="intersects")] or ["?"]
            notes.append(
                f"{path}: gap of {hole.area:,.0f} m² between villages {', '.join(near)}; "
                "fix the shared borders"
            )
    return notes
