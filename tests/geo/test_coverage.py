from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from geo.coverage import coverage_frame, locate_points
from pipelines.errors import DataError

A, B = "370481115200", "370481115201"


@pytest.fixture
def two():
    """Two unit squares side by side sharing the border x = 1 (degrees, for easy counting)."""
    return gpd.GeoDataFrame(
        {"code": [A, B], "name": ["龙阳", "闫庄"]},
        geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1)],
        crs="EPSG:4326",
    )


def test_points_are_placed_and_flagged(two):
    points = pd.DataFrame(
        {
            "lon": [0.5, 1.5, 1.5, 3.0, 1.0, 1.0, np.nan, 0.2],
            "lat": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2],
            "village_code": [A, B, A, A, B, "370481115299", A, None],
            "accuracy": [5, 5, 80, 5, 5, 5, 5, np.nan],
        },
        index=list("abcdefgh"),
    )
    out = locate_points(points, two, accuracy_m=50)
    assert list(out.index) == list("abcdefgh")
    assert out["gps_village_code"].tolist() == [A, B, B, pd.NA, B, A, pd.NA, A]
    assert out["outside"].tolist() == [False, False, False, True, False, False, False, False]
    assert out["no_gps"].tolist() == [False] * 6 + [True, False]
    # c: in B but form says A. e: on the A|B border, form says B: not a mismatch.
    # f: on the border, chosen village is neither: mismatch. h: no village chosen: no mismatch.
    assert out["mismatch"].tolist() == [False, False, True, False, False, True, False, False]
    assert out["inaccurate"].tolist() == [False, False, True, False, False, False, False, False]
    assert out.loc["a", "accuracy"] == 5  # input columns are kept


def test_corner_and_outer_edge_points_count_once(two):
    points = pd.DataFrame({"lon": [1.0, 2.0, 0.0], "lat": [1.0, 0.0, 0.0]})
    out = locate_points(points, two)
    assert len(out) == 3
    assert out["gps_village_code"].tolist() == [A, B, A]
    assert not out["outside"].any()


def test_points_without_lon_lat_columns_are_an_error(two):
    with pytest.raises(DataError, match="'lon' and 'lat'"):
        locate_points(pd.DataFrame({"x": [1]}), two)


def test_coverage_frame_keeps_every_village_and_classes_them(two):
    values = pd.DataFrame({"village_code": [B], "value": [3], "target": [4], "open_followups": [2]})
    cover = coverage_frame(two, values)
    assert list(cover["code"]) == [A, B]
    row_a, row_b = cover.iloc[0], cover.iloc[1]
    assert row_a["value"] == 0 and np.isnan(row_a["ratio"]) and row_a["klass_label"] == "暂无数据"
    assert row_b["ratio"] == 0.75 and row_b["klass_label"] == "完成 75–99%"
    assert row_b["open_followups"] == 2 and row_a["open_followups"] == 0
    assert cover.crs == two.crs


@pytest.mark.parametrize(
    ("value", "target", "label"),
    [
        (0, 10, "完成 0–25%"),
        (1, 4, "完成 25–50%"),
        (10, 10, "已完成 100%"),
        (12, 10, "已完成 100%"),
        (1 / 3 * 3, 1, "已完成 100%"),
        (5, 0, "暂无数据"),
    ],
)
def test_class_edges(two, value, target, label):
    values = pd.DataFrame({"village_code": [A], "value": [value], "target": [target]})
    assert coverage_frame(two, values).iloc[0]["klass_label"] == label


def test_no_values_draw_zero_coverage(two):
    cover = coverage_frame(two, None)
    assert cover["value"].tolist() == [0, 0]
    assert set(cover["klass"]) == {"no_data"}


def test_unknown_or_repeated_codes_are_refused(two):
    bad = pd.DataFrame({"village_code": [A, A, "370481115999"], "value": [1, 2, 3], "target": 5})
    with pytest.raises(DataError) as err:
        coverage_frame(two, bad)
    assert "more than once: 370481115200" in str(err.value)
    assert "not in the register: 370481115999" in str(err.value)
