"""The plan's named road segments, as lines with their planned lengths.

The plan names four construction segments (8 km in all: 2.2 km by 06-30, the remaining 5.8 km
by 11-30) and two roads to be lit. Their real alignments are not public, so
:func:`illustrative_roads` draws each one as a straight line from the village its name starts
at towards the one it ends at (continuing past it where the plan's length is longer), exactly
as long in EPSG:4549 as planned. The split of 2.2 km over the first three segments
(0.9 + 0.8 + 0.5) is illustrative too; replace the lines with surveyed ones when the
construction office supplies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame

from geo.boundaries import METRIC_CRS, Boundaries
from geo.geofile import STORAGE_CRS, check_extent, read_layer
from pipelines.errors import DataError

SEGMENT_COLUMNS = ("segment_id", "segment", "id")
LENGTH_TOLERANCE = 0.2  # a surveyed line more than 20% off its planned length gets a note


@dataclass(frozen=True)
class RoadSegment:
    segment_id: str
    name: str  # as in the plan
    kind: str  # "construction" (修路) or "lighting" (亮化)
    planned_km: float | None  # None: the plan gives no length (lit roads)
    deadline: str  # MM-DD in the plan year
    start: str  # village name the line starts at (illustrative)
    end: str  # village name it heads for
    heading_deg: float | None = None  # used instead of `end` when the far end is no village


SEGMENTS = (
    RoadSegment(
        "longling_dongshatu", "龙岭路至董沙土段", "construction", 0.9, "06-30", "高岭", "董沙土"
    ),
    RoadSegment(
        "longyang_yanzhuang", "龙阳村至闫庄段", "construction", 0.8, "06-30", "龙阳", "闫庄"
    ),
    RoadSegment(
        "fuqian_east", "府前路东延", "construction", 0.5, "06-30", "龙阳", "", heading_deg=0.0
    ),
    RoadSegment("wolong_scenic", "卧龙村至景区", "construction", 5.8, "11-30", "卧龙庄", "龙山"),
    RoadSegment("dongzhu_road", "东朱路", "lighting", None, "11-30", "东杨庄", "朱二庄"),
    RoadSegment("tourism_road", "旅游路", "lighting", None, "11-30", "龙阳", "龙山"),
)


def illustrative_roads(boundaries: Boundaries) -> GeoDataFrame:
    """The plan's segments as lines (EPSG:4326) between the named villages' centres.

    Columns: segment_id, name, kind, planned_km, length_km (measured in EPSG:4549; equal to
    planned_km where the plan gives one), deadline, illustrative (always True here).
    """
    metric = boundaries.villages.to_crs(METRIC_CRS)
    # representative_point stays inside the polygon; centroids of odd shapes may not.
    centre = {
        name: np.array([p.x, p.y])
        for name, p in zip(metric["name"], metric.representative_point(), strict=True)
    }
    fallback = np.array(shapely.union_all(metric.geometry.values).centroid.coords[0])
    lines = []
    for seg in SEGMENTS:
        a = centre.get(seg.start, fallback)
        if seg.heading_deg is not None or seg.end not in centre:
            angle = np.radians(seg.heading_deg or 0.0)
            b = a + 1000.0 * np.array([np.cos(angle), np.sin(angle)])
        else:
            b = centre[seg.end]
        length_m = seg.planned_km * 1000.0 if seg.planned_km else float(np.linalg.norm(b - a))
        lines.append(_line_of_length(a, b, length_m))
    frame = GeoDataFrame(
        {
            "segment_id": [s.segment_id for s in SEGMENTS],
            "name": [s.name for s in SEGMENTS],
            "kind": [s.kind for s in SEGMENTS],
            "planned_km": [s.planned_km for s in SEGMENTS],
            "deadline": [s.deadline for s in SEGMENTS],
        },
        geometry=lines,
        crs=METRIC_CRS,
    )
    frame["length_km"] = (frame.length / 1000.0).round(3)
    frame["illustrative"] = True
    return frame.to_crs(STORAGE_CRS)


def _line_of_length(a: np.ndarray, b: np.ndarray, length: float) -> shapely.LineString:
    """A straight line from a towards b, exactly `length` metres long (past b if b is nearer)."""
    d = float(np.linalg.norm(b - a))
    unit = (b - a) / d if d > 0 else np.array([1.0, 0.0])
    return shapely.LineString([a, a + unit * length])


def load_roads(path: Path | str, boundaries: Boundaries) -> tuple[GeoDataFrame, list[str]]:
    """Surveyed road lines from a GeoPackage, Shapefile (plain or zipped) or GeoJSON, any CRS.

    Each feature needs a ``segment_id`` column holding one of the ids of :data:`SEGMENTS`
    (a segment may be drawn in several pieces). Segments the file lacks stay illustrative.
    The file is checked as boundary files are (:func:`~geo.boundaries.read_layer`), and after
    reprojection every line must lie within the villages' extent, padded by
    :data:`~geo.boundaries.EXTENT_PAD_DEG`. Returns the frame :func:`illustrative_roads`
    returns, and notes (segments whose surveyed length differs from the plan's by more than
    20%, segments still illustrative, anything odd GDAL said about the file).
    """
    path = Path(path)
    read = read_layer(path, what="road")
    frame, notes = read.frame, list(read.notes)
    if frame.crs is None:
        raise DataError(
            f"{path}: the road file has no coordinate reference system; re-export it with its CRS"
        )
    known = {s.segment_id: s for s in SEGMENTS}
    column = next((c for c in SEGMENT_COLUMNS if c in frame.columns), None)
    if column is None:
        columns = ", ".join(_shown(c) for c in list(frame.columns)[:20])
        raise DataError(
            f"{path}: no segment_id column (columns are {columns}); add one holding, for each "
            f"line, one of: {', '.join(known)}"
        )
    ids = pd.Series([_segment_id(v) for v in frame[column]], index=frame.index)
    labels = [f"segment {_shown(i)}" if i else "a line without segment_id" for i in ids]
    _check_lines(path, frame, labels)
    unknown = [(n, i) for n, i in enumerate(ids, start=1) if i not in known]
    if unknown:
        shown = [f"{_shown(i) if i else '(blank)'} (feature {n})" for n, i in unknown[:10]]
        more = f" … and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise DataError(
            f"{path}: unknown segment id(s) {', '.join(shown)}{more}; use one of {', '.join(known)}"
        )
    moved = check_extent(path, frame, labels, extent=tuple(boundaries.villages.total_bounds))
    try:
        lines = (
            moved.to_crs(METRIC_CRS)
            .geometry.groupby(ids.values)
            .agg(lambda g: shapely.line_merge(shapely.union_all(g.values)))
        )
    except shapely.errors.GEOSException as e:
        raise DataError(
            f"{path}: cannot join the pieces of the road lines ({str(e).splitlines()[0]}); "
            "check the lines in QGIS"
        ) from None
    illustrative = illustrative_roads(boundaries).set_index("segment_id")
    rows = []
    for seg in SEGMENTS:
        if seg.segment_id in lines.index:
            geom = gpd.GeoSeries([lines[seg.segment_id]], crs=METRIC_CRS)
            length_km = round(float(geom.length.iloc[0]) / 1000.0, 3)
            if (
                seg.planned_km
                and abs(length_km - seg.planned_km) > LENGTH_TOLERANCE * seg.planned_km
            ):
                notes.append(f"{seg.name} ({seg.segment_id}) measures {length_km} km in {path.name}, "
                             f"the plan says {seg.planned_km} km")  # fmt: skip
            rows.append((seg, geom.to_crs(STORAGE_CRS).iloc[0], length_km, False))
        else:
            notes.append(f"{seg.name} ({seg.segment_id}) is not in {path.name}; drawn illustrative")
            row = illustrative.loc[seg.segment_id]
            rows.append((seg, row.geometry, row.length_km, True))
    out = GeoDataFrame(
        {
            "segment_id": [s.segment_id for s, *_ in rows],
            "name": [s.name for s, *_ in rows],
            "kind": [s.kind for s, *_ in rows],
            "planned_km": [s.planned_km for s, *_ in rows],
            "deadline": [s.deadline for s, *_ in rows],
            "length_km": pd.array([r[2] for r in rows], dtype="Float64"),
            "illustrative": [r[3] for r in rows],
        },
        geometry=[r[1] for r in rows],
        crs=STORAGE_CRS,
    )
    return out, notes


def _check_lines(path: Path, frame: GeoDataFrame, labels: list[str]) -> None:
    geoms = frame.geometry
    empty = (geoms.isna() | geoms.is_empty).to_numpy()
    if empty.any():
        k = int(np.flatnonzero(empty)[0])
        raise DataError(
            f"{path}: {int(empty.sum())} road feature(s) have no geometry, e.g. feature {k + 1} "
            f"({labels[k]}); draw the line or delete the feature"
        )
    wrong = ~geoms.geom_type.isin(["LineString", "MultiLineString"]).to_numpy()
    if wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        kinds = ", ".join(sorted(set(geoms.geom_type[wrong])))
        raise DataError(
            f"{path}: roads must be lines, found {kinds} in {int(wrong.sum())} feature(s), e.g. "
            f"feature {k + 1} ({labels[k]}); export the road layer as lines"
        )


def _segment_id(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value).strip()


def _shown(value: object, limit: int = 40) -> str:
    """A value read from a file, safe in a one-line message: escaped when odd, cut short."""
    text = str(value)
    if text.isprintable() and len(text) <= limit:
        return text
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 2] + "…'"
