"""The plan's named road segments, as lines with their planned lengths.

The segments are declared once, in the town's plan (``[[segment]]``, see
:class:`pipelines.analysis.plan.RoadSegment`); every function here takes them
(``plan.segments``). Their real alignments are often not public, so :func:`illustrative_roads`
draws each one as a straight line from the village it starts at towards the one it ends at
(continuing past it where the plan's length is longer), exactly as long in EPSG:4549 as
planned. :func:`load_roads` replaces them with surveyed lines, segment by segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame

from geo.boundaries import METRIC_CRS, Boundaries
from geo.geofile import STORAGE_CRS, _cell_text, _listing, _shown, check_extent, read_layer
from pipelines.errors import DataError

if TYPE_CHECKING:  # the type only: geo never imports the analysis stage at run time
    from pipelines.analysis.plan import RoadSegment

SEGMENT_COLUMNS = ("segment_id", "segment", "id")
LENGTH_TOLERANCE = 0.2  # a surveyed line more than 20% off its planned length gets a note


def illustrative_roads(boundaries: Boundaries, segments: Sequence[RoadSegment]) -> GeoDataFrame:
    """The plan's ``segments`` as lines (EPSG:4326) between the named villages' centres.

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
    for seg in segments:
        a = centre.get(seg.start, fallback)
        if seg.heading_deg is not None or seg.end not in centre:
            angle = np.radians(seg.heading_deg or 0.0)
            b = a + 1000.0 * np.array([np.cos(angle), np.sin(angle)])
        else:
            b = centre[seg.end]
        length_m = seg.planned_km * 1000.0 if seg.planned_km else float(np.linalg.norm(b - a))
        lines.append(_line_of_length(a, b, length_m))
    frame = GeoDataFrame(_columns(segments), geometry=lines, crs=METRIC_CRS)
    frame["length_km"] = (frame.length / 1000.0).round(3)
    frame["illustrative"] = True
    return frame.to_crs(STORAGE_CRS)


def _line_of_length(a: np.ndarray, b: np.ndarray, length: float) -> shapely.LineString:
    """A straight line from a towards b, exactly `length` metres long (past b if b is nearer)."""
    d = float(np.linalg.norm(b - a))
    unit = (b - a) / d if d > 0 else np.array([1.0, 0.0])
    return shapely.LineString([a, a + unit * length])


def _columns(segments: Sequence[RoadSegment]) -> dict[str, list]:
    return {
        "segment_id": [s.segment_id for s in segments],
        "name": [s.name for s in segments],
        "kind": [s.kind for s in segments],
        "planned_km": [s.planned_km for s in segments],
        "deadline": [s.deadline for s in segments],
    }


def load_roads(
    path: Path | str, boundaries: Boundaries, segments: Sequence[RoadSegment]
) -> tuple[GeoDataFrame, list[str]]:
    """Surveyed road lines from a GeoPackage, Shapefile (plain or zipped) or GeoJSON, any CRS.

    Each feature needs a ``segment_id`` column holding the id of one of the plan's
    ``segments`` (a segment may be drawn in several pieces). Segments the file lacks stay
    illustrative. The file is checked as boundary files are (:func:`~geo.boundaries.read_layer`), and after
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
    known = {s.segment_id: s for s in segments}
    column = next((c for c in SEGMENT_COLUMNS if c in frame.columns), None)
    if column is None:
        columns = ", ".join(_shown(c) for c in list(frame.columns)[:20])
        raise DataError(
            f"{path}: no segment_id column (columns are {columns}); add one holding, for each "
            f"line, one of: {', '.join(known)}"
        )
    ids = pd.Series([_cell_text(v) for v in frame[column]], index=frame.index)
    labels = [f"segment {_shown(i)}" if i else "a line without segment_id" for i in ids]
    _check_lines(path, frame, labels)
    unknown = [(n, i) for n, i in enumerate(ids, start=1) if i not in known]
    if unknown:
        shown = [f"{_shown(i) if i else '(blank)'} (feature {n})" for n, i in unknown]
        raise DataError(
            f"{path}: unknown segment id(s) {_listing(shown)}; use one of {', '.join(known)}"
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
    illustrative = illustrative_roads(boundaries, segments).set_index("segment_id")
    rows = []
    for seg in segments:
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
            **_columns([s for s, *_ in rows]),
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
