"""Village boundaries: load a surveyed file, check it against the register, repair what is safe.

A map must never show a wrong village, so every register code has to appear exactly once;
anything else is a :class:`~pipelines.errors.DataError` listing all the problems at once.
Fixable faults (self-intersections, slivers) are repaired or reported as warnings that name
the village, and the result is stored in EPSG:4326.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely

from geo.villages import Village, load_villages
from pipelines.errors import DataError

STORAGE_CRS = "EPSG:4326"
# CGCS2000 / 3-degree Gauss-Kruger CM 117E: metres, fits 龙阳镇; used for every length and area.
METRIC_CRS = "EPSG:4549"
CODE_COLUMNS = ("code", "village_code", "CODE", "cun_code", "XZQDM", "区划代码", "村代码")
SUFFIXES = (".gpkg", ".shp", ".zip", ".geojson", ".json")


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
) -> Boundaries:
    """Read village polygons from a GeoPackage, Shapefile (plain or zipped) or GeoJSON.

    The file must carry a CRS (any); polygons are reprojected to EPSG:4326. Each feature needs
    the village's 12-digit code in ``code_column`` (default: the first of :data:`CODE_COLUMNS`
    present). Invalid polygons are repaired with ``make_valid`` and a :class:`BoundaryWarning`
    naming the village; overlaps and gaps larger than the tolerances (square metres, measured
    in EPSG:4549) are reported as warnings. Missing, unknown or repeated codes, a missing CRS,
    an empty, corrupt or non-polygon file all raise :class:`DataError`.
    """
    path = Path(path)
    register = villages if villages is not None else load_villages()
    frame = _read(path, layer)
    if frame.crs is None:
        raise DataError(
            f"{path}: the file has no coordinate reference system; re-export it with its CRS "
            "(e.g. add the .prj file of a shapefile, or set the layer's CRS in QGIS)"
        )
    column = _code_column(path, frame, code_column)
    frame = frame.rename(columns={column: "code"})[["code", "geometry"]].copy()
    frame["code"] = [_normalise_code(v) for v in frame["code"]]
    _check_codes(path, frame, register)

    notes: list[str] = []
    frame = frame.to_crs(STORAGE_CRS)
    names = {v.code: v.name for v in register}
    frame["geometry"] = [
        _repair(path, code, names[code], geom, notes)
        for code, geom in zip(frame["code"], frame.geometry, strict=True)
    ]
    order = {v.code: i for i, v in enumerate(register)}
    frame = frame.sort_values("code", key=lambda s: s.map(order)).reset_index(drop=True)
    frame.insert(1, "name", frame["code"].map(names))
    result = gpd.GeoDataFrame(frame, geometry="geometry", crs=STORAGE_CRS)
    notes += _topology_notes(path, result, overlap_tolerance_m2, gap_tolerance_m2)
    for note in notes:
        warnings.warn(note, BoundaryWarning, stacklevel=2)
    return Boundaries(result, illustrative=False, source=str(path), warnings=notes)


def _read(path: Path, layer: str | None) -> gpd.GeoDataFrame:
    if not path.exists():
        raise DataError(f"{path}: boundary file not found; check the path in the configuration")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the boundary file is empty (0 bytes); export the layer again")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{path}: unsupported boundary file type '{path.suffix}'; "
            "use a GeoPackage (.gpkg), Shapefile (.shp or zipped .zip) or GeoJSON (.geojson)"
        )
    try:
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as e:  # pyogrio/GDAL raise many types; the user needs one clear line
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{path}: cannot read the boundary file ({detail}); check that it is a complete "
            "GeoPackage, Shapefile (with .shp, .shx, .dbf, .prj) or GeoJSON"
        ) from None
    if len(frame) == 0:
        raise DataError(f"{path}: the boundary file holds no features; export the village layer")
    kinds = set(frame.geometry.geom_type.dropna()) - {"Polygon", "MultiPolygon"}
    if kinds or frame.geometry.isna().any() or frame.geometry.is_empty.any():
        bad = ", ".join(sorted(kinds)) or "empty geometries"
        raise DataError(
            f"{path}: village boundaries must be polygons, found {bad}; export the polygon layer"
        )
    return frame


def _code_column(path: Path, frame: gpd.GeoDataFrame, wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in frame.columns:
            raise DataError(
                f"{path}: no column '{wanted}'; columns are {', '.join(map(str, frame.columns))}"
            )
        return wanted
    for name in CODE_COLUMNS:
        if name in frame.columns:
            return name
    raise DataError(
        f"{path}: no village code column; name the column holding the 12-digit codes "
        f"one of {', '.join(CODE_COLUMNS)}"
    )


def _normalise_code(value: object) -> str:
    # Shapefiles store 12-digit codes as numbers (often float): 370481115200.0 -> "370481115200".
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_codes(path: Path, frame: pd.DataFrame, register: list[Village]) -> None:
    known = {v.code for v in register}
    counts = frame["code"].value_counts()
    problems = []
    repeated = sorted(c for c, n in counts.items() if n > 1)
    if repeated:
        problems.append(
            "code(s) on more than one feature: "
            + ", ".join(f"{c} ({counts[c]}×)" for c in repeated)
            + " — dissolve each village into one feature"
        )
    unknown = sorted(c for c in counts.index if c not in known)
    if unknown:
        problems.append(
            "code(s) not in the village register: "
            + ", ".join(repr(c) if c else "(blank)" for c in unknown)
            + " — correct them or update the register"
        )
    missing = [v for v in register if v.code not in counts.index]
    if missing:
        problems.append(
            f"{len(missing)} register village(s) have no boundary: "
            + ", ".join(f"{v.code} {v.name}" for v in missing)
            + " — add them to the file"
        )
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))


def _repair(path: Path, code: str, name: str, geom, notes: list[str]):
    if geom.is_valid:
        return geom
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom)
    # make_valid can return lines/points beside the polygons; only the area belongs to the village.
    parts = [g for g in shapely.get_parts(fixed) if g.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        raise DataError(
            f"{path}: village {code} {name}: boundary is invalid ({reason}) and has no area "
            "after repair; redraw it"
        )
    fixed = shapely.union_all(parts)
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
