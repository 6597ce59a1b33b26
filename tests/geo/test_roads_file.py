"""Surveyed road lines replace the illustrative ones, segment by segment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer

from geo.illustrative import illustrative_boundaries
from geo.maps import draw_maps
from geo.roads import load_roads
from pipelines.analysis.plan import load_plan
from pipelines.config import load_settings
from pipelines.errors import DataError

SEGMENTS = load_plan().segments


@pytest.fixture(scope="module")
def boundaries():
    return illustrative_boundaries()


def _write(
    path: Path, ids: list[str], lengths_m: list[float], crs: str | None = "EPSG:4549"
) -> Path:
    # Lines start inside the town, in the metres of EPSG:4549 (CGCS2000 / 3-degree GK CM 120E)
    x0, y0 = Transformer.from_crs(4326, 4549, always_xy=True).transform(117.25, 35.17)
    lines = [
        shapely.LineString([(x0, y0 + 50 * i), (x0 + m, y0 + 50 * i)])
        for i, m in enumerate(lengths_m)
    ]
    driver = "GPKG" if path.suffix == ".gpkg" else "GeoJSON"
    gpd.GeoDataFrame({"segment_id": ids}, geometry=lines, crs=crs).to_file(path, driver=driver)
    return path


def test_supplied_segments_are_measured_in_metres(boundaries, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "roads.geojson",
        ["fuqian_east", "wolong_scenic", "wolong_scenic"],
        [500, 3000, 2000],
    )
    roads, notes = load_roads(path, boundaries, SEGMENTS)
    by_id = roads.set_index("segment_id")
    assert by_id.loc["fuqian_east", "length_km"] == pytest.approx(0.5, abs=0.001)
    assert by_id.loc["wolong_scenic", "length_km"] == pytest.approx(5.0, abs=0.001)  # two pieces
    assert not by_id.loc["fuqian_east", "illustrative"]
    assert by_id.loc["longling_dongshatu", "illustrative"]  # not supplied: stays illustrative
    assert roads.crs.to_epsg() == 4326
    assert any("longling_dongshatu" in n and "illustrative" in n for n in notes)
    assert not any("fuqian_east" in n for n in notes)  # 0.5 km as planned


def test_a_segment_far_from_its_planned_length_gets_a_note(boundaries, tmp_path: Path) -> None:
    path = _write(tmp_path / "roads.geojson", ["fuqian_east"], [1500])
    _, notes = load_roads(path, boundaries, SEGMENTS)
    assert any("府前路东延" in n and "1.5 km" in n and "0.5 km" in n for n in notes)


@pytest.mark.parametrize(
    ("name", "ids", "crs", "words"),
    [
        ("roads.geojson", ["ring_road"], "EPSG:4549", "unknown segment id(s) ring_road"),
        ("roads.gpkg", ["fuqian_east"], None, "no coordinate reference system"),
        # GeoJSON without a CRS is read as WGS-84 (RFC 7946): metres then cannot be degrees
        ("roads.geojson", ["fuqian_east"], None, "not longitude/latitude"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bad_road_files_are_named(boundaries, tmp_path: Path, name, ids, crs, words) -> None:
    path = _write(tmp_path / name, ids, [500], crs=crs)
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_roads(path, boundaries, SEGMENTS)


def test_points_are_not_roads(boundaries, tmp_path: Path) -> None:
    path = tmp_path / "points.geojson"
    gpd.GeoDataFrame(
        {"segment_id": ["fuqian_east"]}, geometry=[shapely.Point(117.25, 35.17)], crs="EPSG:4326"
    ).to_file(path, driver="GeoJSON")
    with pytest.raises(DataError, match="roads must be lines"):
        load_roads(path, boundaries, SEGMENTS)


def test_maps_draw_the_supplied_roads(tmp_path: Path) -> None:
    path = _write(tmp_path / "roads.geojson", ["fuqian_east"], [500])
    settings = replace(load_settings({}, env={}), roads=path)
    result = draw_maps(settings, tmp_path / "out", segments=SEGMENTS)
    assert any("longyang_yanzhuang" in w for w in result.warnings)
    assert (tmp_path / "out" / "maps" / "overview.html").exists()


def test_ids_are_checked_against_the_towns_own_segments(boundaries, tmp_path: Path) -> None:
    # a town whose plan has only 龙阳镇's first segment: the others are unknown to it
    path = _write(tmp_path / "roads.geojson", ["fuqian_east"], [500])
    with pytest.raises(
        DataError, match=r"unknown segment id\(s\) fuqian_east .*longling_dongshatu$"
    ):
        load_roads(path, boundaries, SEGMENTS[:1])
