from __future__ import annotations

import pytest
import shapely

from geo.illustrative import NOTICE, illustrative_boundaries
from geo.roads import illustrative_roads
from pipelines.analysis.plan import RoadSegment, load_plan

SEGMENTS = load_plan().segments


def test_illustrative_villages_tile_the_town_deterministically(register):
    first = illustrative_boundaries(register)
    again = illustrative_boundaries(register)
    frame = first.villages
    assert first.illustrative and NOTICE == "示意边界，非真实行政边界"
    assert list(frame["code"]) == [v.code for v in register]
    assert frame.geometry.is_valid.all() and (frame.geom_type == "Polygon").all()
    assert frame.geometry.geom_equals_exact(again.villages.geometry, tolerance=0).all()
    west, south, east, north = frame.total_bounds
    assert 117.22 <= west < east <= 117.30 and 35.15 <= south < north <= 35.20
    metric = first.metric()
    # A tiling: the parts add up to the whole, so no overlaps; the union has no holes.
    union = shapely.union_all(metric.geometry.values)
    assert metric.area.sum() == pytest.approx(union.area, rel=1e-9)
    assert union.geom_type == "Polygon" and len(union.interiors) == 0
    assert metric.area.min() > 0.3 * metric.area.mean()  # no sliver villages


def test_another_seed_gives_other_polygons(register):
    a = illustrative_boundaries(register, seed=1).villages
    b = illustrative_boundaries(register, seed=2).villages
    assert not a.geometry.geom_equals_exact(b.geometry, tolerance=1e-9).all()


def test_roads_have_the_plan_lengths_in_metres(register):
    roads = illustrative_roads(illustrative_boundaries(register), SEGMENTS).set_index("segment_id")
    planned = {
        "longling_dongshatu": 0.9,
        "longyang_yanzhuang": 0.8,
        "fuqian_east": 0.5,
        "wolong_scenic": 5.8,
    }
    assert set(roads.index) == {s.segment_id for s in SEGMENTS}
    assert roads.crs.to_epsg() == 4326
    metric = roads.to_crs("EPSG:4549")
    for seg, km in planned.items():
        assert metric.length[seg] / 1000 == pytest.approx(km, abs=1e-6)
        assert roads.loc[seg, "length_km"] == pytest.approx(km)
    assert sum(planned.values()) == pytest.approx(8.0)
    assert roads.loc["dongzhu_road", "kind"] == "lighting" and roads["illustrative"].all()


def test_the_villages_are_drawn_over_the_towns_own_extent(register):
    extent = (116.50, 34.80, 116.62, 34.88)  # another town's
    frame = illustrative_boundaries(register[:4], extent=extent).villages
    west, south, east, north = frame.total_bounds
    assert 116.50 <= west < east <= 116.62 and 34.80 <= south < north <= 34.88


def test_roads_are_the_segments_they_are_given(register):
    # another town's plan: one road of its own between two of its villages, none of 龙阳镇's
    own = RoadSegment("east_link", "东环路", "construction", 1.5, "09-30", register[0].name, register[1].name)  # fmt: skip
    roads = illustrative_roads(illustrative_boundaries(register[:4]), [own])
    assert list(roads["segment_id"]) == ["east_link"] and list(roads["name"]) == ["东环路"]
    assert roads.to_crs("EPSG:4549").length.iloc[0] / 1000 == pytest.approx(1.5, abs=1e-6)
