from __future__ import annotations

import pytest

from geo.boundaries import BoundaryWarning, load_boundaries
from pipelines.errors import DataError

from .conftest import DATA

CODES = ["370481115200", "370481115201", "370481115202", "370481115203"]


@pytest.mark.parametrize("name", ["villages_ok.geojson", "villages_4549.gpkg", "villages_shp.zip"])
def test_clean_files_load_in_wgs84_with_register_names(name, four):
    result = load_boundaries(DATA / name, four)
    frame = result.villages
    assert frame.crs.to_epsg() == 4326
    assert list(frame["code"]) == CODES
    assert list(frame["name"]) == [v.name for v in four]
    assert not result.illustrative and result.warnings == []
    west, south, east, north = frame.total_bounds
    assert (west, south, east, north) == pytest.approx((117.24, 35.16, 117.26, 35.18), abs=1e-6)
    # Each square is 0.01° × 0.01°: about 911 m × 1,110 m at 35.17°N, measured in EPSG:4549.
    area = result.metric().area
    assert area.min() == pytest.approx(1.01e6, rel=0.02)


def test_missing_crs_is_an_error_saying_what_to_do(four):
    with pytest.raises(
        DataError, match=r"villages_no_crs\.zip: .*no coordinate reference system.*\.prj"
    ):
        load_boundaries(DATA / "villages_no_crs.zip", four)


def test_self_intersecting_polygon_is_repaired_with_a_warning_naming_the_village(four):
    with pytest.warns(
        BoundaryWarning, match=r"village 370481115203 小寨: invalid boundary repaired"
    ):
        result = load_boundaries(DATA / "villages_bowtie.geojson", four)
    fixed = result.villages.set_index("code").geometry["370481115203"]
    assert fixed.is_valid and fixed.geom_type in ("Polygon", "MultiPolygon")
    assert fixed.area > 0


def test_duplicate_code_lists_the_repeat_and_the_missing_village(four):
    with pytest.raises(DataError) as err:
        load_boundaries(DATA / "villages_duplicate.geojson", four)
    message = str(err.value)
    assert "370481115202 (2×)" in message
    assert "370481115203 小寨" in message and "no boundary" in message


def test_unknown_code_is_listed(four):
    with pytest.raises(DataError, match=r"not in the village register: '370481115999'"):
        load_boundaries(DATA / "villages_unknown.geojson", four)


def test_file_missing_register_villages_fails_for_the_full_register(register):
    with pytest.raises(DataError, match=r"52 register village\(s\) have no boundary"):
        load_boundaries(DATA / "villages_ok.geojson", register)


def test_overlaps_and_gaps_above_tolerance_are_reported(four):
    with pytest.warns(BoundaryWarning) as caught:
        result = load_boundaries(DATA / "villages_overlap_gap.geojson", four)
    text = " | ".join(result.warnings)
    assert len(caught) == len(result.warnings) == 2
    assert "villages 370481115200 and 370481115201 overlap by" in text
    assert "gap of" in text and "370481115202" in text
    # The same faults pass silently when the tolerance is larger than them (~0.4 km²).
    quiet = load_boundaries(
        DATA / "villages_overlap_gap.geojson", four, overlap_tolerance_m2=1e6, gap_tolerance_m2=1e6
    )
    assert quiet.warnings == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("empty.geojson", "empty"),
        ("no_features.geojson", "no features"),
        ("truncated.gpkg", "cannot read"),
        ("nowhere.gpkg", "not found"),
    ],
)
def test_empty_corrupt_or_absent_files_get_a_clear_error(name, expected, four):
    with pytest.raises(DataError, match=expected) as err:
        load_boundaries(DATA / name, four)
    assert str(err.value).startswith(str(DATA / name))
