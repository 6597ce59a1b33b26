from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from pyproj import Geod
from shapely.geometry import box

from geo.basemaps import basemap_for, gcj02_to_wgs84, to_gcj02, wgs84_to_gcj02
from pipelines.config import Secret, Settings
from pipelines.errors import ConfigError

# (wgs_lat, wgs_lon, gcj_lat, gcj_lon, tolerance in degrees). The first three are the reference
# pairs published in the test suite of googollee/eviltransform (Shanghai, Shenzhen, Beijing).
# The last two are answers of AMap's own WGS-84 -> GCJ-02 web API, quoted in the tests of the
# R package madlogos/asesgeo; the API rounds, so they only need to agree to ~1 m (1e-5°).
REFERENCE = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215, 1e-9),
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363, 1e-9),
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657, 1e-9),
    (39.90734, 116.39089, 39.90874539, 116.39713623, 1e-5),
    (39.90105, 116.42079, 39.902445203994, 116.427020941841, 1e-5),
]


@pytest.mark.parametrize(("lat", "lon", "glat", "glon", "tol"), REFERENCE)
def test_wgs84_to_gcj02_matches_reference_pairs(lat, lon, glat, glon, tol):
    x, y = wgs84_to_gcj02(lon, lat)
    assert float(x) == pytest.approx(glon, abs=tol)
    assert float(y) == pytest.approx(glat, abs=tol)


def test_inverse_round_trips_and_arrays_work():
    lats = np.array([r[0] for r in REFERENCE])
    lons = np.array([r[1] for r in REFERENCE])
    glon, glat = wgs84_to_gcj02(lons, lats)
    back_lon, back_lat = gcj02_to_wgs84(glon, glat)
    assert np.allclose(back_lon, lons, atol=1e-8) and np.allclose(back_lat, lats, atol=1e-8)


def test_shift_at_longyang_is_about_530_m_east():
    x, y = wgs84_to_gcj02(117.26, 35.175)
    azimuth, _, metres = Geod(ellps="WGS84").inv(117.26, 35.175, float(x), float(y))
    assert 500 < metres < 560 and 80 < azimuth < 110


def test_outside_china_and_missing_points_are_not_shifted():
    x, y = wgs84_to_gcj02([2.35, np.nan], [48.85, 35.0])
    assert x[0] == 2.35 and y[0] == 48.85 and np.isnan(x[1])


def test_every_vertex_of_a_frame_is_shifted():
    frame = gpd.GeoDataFrame(
        {"code": ["a"]}, geometry=[box(117.24, 35.16, 117.25, 35.17)], crs=4326
    )
    shifted = to_gcj02(frame)
    before = np.array(frame.geometry[0].exterior.coords)
    after = np.array(shifted.geometry[0].exterior.coords)
    expect = np.column_stack(wgs84_to_gcj02(before[:, 0], before[:, 1]))
    assert np.allclose(after, expect) and frame.geometry[0].bounds[0] == 117.24


def test_basemap_choices():
    assert basemap_for(Settings()).layers == ()
    assert basemap_for(Settings(basemap="amap")).gcj02
    osm = basemap_for(Settings(basemap="osm"))
    assert not osm.gcj02 and "openstreetmap" in osm.layers[0].url
    tdt = basemap_for(Settings(basemap="tianditu", tianditu_key=Secret("k-123")))
    assert [layer.overlay for layer in tdt.layers] == [False, True]
    assert "vec_w" in tdt.layers[0].url and "cva_w" in tdt.layers[1].url
    assert all("tk=k-123" in layer.url for layer in tdt.layers) and not tdt.gcj02


def test_tianditu_without_key_says_which_variable_to_set():
    with pytest.raises(ConfigError, match="MANYI_TIANDITU_KEY"):
        basemap_for(Settings(basemap="tianditu"))
