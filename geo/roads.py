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

import numpy as np
import shapely
from geopandas import GeoDataFrame

from geo.boundaries import METRIC_CRS, STORAGE_CRS, Boundaries


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
