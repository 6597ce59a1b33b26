"""Illustrative village polygons for demos and for towns whose boundaries are not yet supplied.

No public source of 龙阳镇's village boundaries exists (see ``geo/README.md``), so the demo
draws made-up but plausible cells: a seeded, irregular town outline over the town's expected
extent (the ``extent`` setting; 龙阳镇's guess is 35.15–35.20°N, 117.22–117.30°E), tiled without
gaps or overlaps by one Voronoi cell per register village. The same seed and extent give the
same polygons on every machine. Every map drawn on them must say 示意边界，非真实行政边界 (see
:data:`NOTICE`).
"""

from __future__ import annotations

import numpy as np
import shapely
from geopandas import GeoDataFrame
from pyproj import Transformer

from geo.boundaries import METRIC_CRS, Boundaries
from geo.geofile import STORAGE_CRS, TOWN_EXTENT
from geo.villages import Village, load_villages

NOTICE = "示意边界，非真实行政边界"
# The default town's extent (WGS-84; west, south, east, north), the one the loaders check
# files against by default. A town's own is the ``extent`` setting: pass ``extent=``.
EXTENT = TOWN_EXTENT
DEFAULT_SEED = 370481115

Extent = tuple[float, float, float, float]


def illustrative_boundaries(
    villages: list[Village] | None = None, *, seed: int = DEFAULT_SEED, extent: Extent = EXTENT
) -> Boundaries:
    """One polygon per register village, tiling a plausible outline within ``extent``;
    flagged illustrative."""
    register = villages if villages is not None else load_villages()
    rng = np.random.default_rng(seed)
    to_metric = Transformer.from_crs(STORAGE_CRS, METRIC_CRS, always_xy=True)
    to_degrees = Transformer.from_crs(METRIC_CRS, STORAGE_CRS, always_xy=True)

    outline = _town_outline(rng, to_metric, extent)
    sites = _relaxed_sites(rng, outline, len(register))
    cells = _cells(sites, outline)
    # Codes run north-west to south-east in bands, so neighbouring codes are usually neighbours.
    bands = max(1, round(len(register) ** 0.5))
    band = _band_of(sites, bands)
    order = np.lexsort((sites[:, 0], band))
    cells = [cells[i] for i in order]
    cells = [
        shapely.transform(c, lambda xy: np.column_stack(to_degrees.transform(*xy.T))) for c in cells
    ]
    frame = GeoDataFrame(
        {"code": [v.code for v in register], "name": [v.name for v in register]},
        geometry=cells,
        crs=STORAGE_CRS,
    )
    return Boundaries(frame, illustrative=True, source=f"illustrative (seed {seed})")


def town_outline(seed: int = DEFAULT_SEED, *, extent: Extent = EXTENT) -> shapely.Polygon:
    """The illustrative town outline in EPSG:4326 (the union of the village cells)."""
    rng = np.random.default_rng(seed)
    to_metric = Transformer.from_crs(STORAGE_CRS, METRIC_CRS, always_xy=True)
    to_degrees = Transformer.from_crs(METRIC_CRS, STORAGE_CRS, always_xy=True)
    outline = _town_outline(rng, to_metric, extent)
    return shapely.transform(outline, lambda xy: np.column_stack(to_degrees.transform(*xy.T)))


def _town_outline(rng: np.random.Generator, to_metric: Transformer, extent: Extent) -> shapely.Polygon:  # fmt: skip
    west, south, east, north = extent
    (x0, x1), (y0, y1) = to_metric.transform([west, east], [south, north])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = (x1 - x0) / 2, (y1 - y0) / 2
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    # A few low harmonics make an irregular, still star-shaped (hence simple) outline.
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.02, 0.06) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    wobble *= 0.88 / wobble.max()  # stay inside the expected extent
    return shapely.Polygon(
        np.column_stack([cx + ax * wobble * np.cos(theta), cy + ay * wobble * np.sin(theta)])
    )


def _relaxed_sites(rng: np.random.Generator, outline: shapely.Polygon, n: int) -> np.ndarray:
    x0, y0, x1, y1 = outline.bounds
    sites: list[tuple[float, float]] = []
    while len(sites) < n:
        xs, ys = rng.uniform(x0, x1, 4 * n), rng.uniform(y0, y1, 4 * n)
        inside = shapely.contains_xy(outline, xs, ys)
        sites.extend(zip(xs[inside], ys[inside], strict=True))
    points = np.array(sites[:n])
    # Lloyd relaxation: move each site to its cell's centroid, so villages get similar sizes.
    for _ in range(6):
        cells = _cells(points, outline)
        points = np.array([[c.centroid.x, c.centroid.y] for c in cells])
    return points


def _cells(sites: np.ndarray, outline: shapely.Polygon) -> list[shapely.Geometry]:
    diagram = shapely.voronoi_polygons(shapely.MultiPoint(sites), extend_to=outline)
    regions = list(shapely.get_parts(diagram))
    tree = shapely.STRtree(regions)
    cells = []
    for x, y in sites:
        hit = tree.query(shapely.Point(x, y), predicate="intersects")
        cells.append(shapely.intersection(regions[int(hit[0])], outline))
    return cells


def _band_of(sites: np.ndarray, bands: int) -> np.ndarray:
    y = sites[:, 1]
    edges = np.quantile(y, np.linspace(0, 1, bands + 1)[1:-1])
    return (bands - 1) - np.searchsorted(edges, y, side="right")
