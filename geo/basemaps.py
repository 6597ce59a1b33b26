"""Basemaps that work in China, and the WGS-84 → GCJ-02 shift AMap tiles need.

- ``none`` (default): no tiles at all, so a map opens with no network.
- ``tianditu``: 天地图 vec_w (vector) plus cva_w (Chinese labels). Tianditu is CGCS2000, which
  matches WGS-84 to well under a metre, so GPS is drawn as is. The key comes from
  ``MANYI_TIANDITU_KEY`` (``settings.tianditu_key``); it ends up only in the generated HTML,
  which a browser needs to fetch tiles, never in a committed file or a log.
- ``amap``: 高德 tiles are in GCJ-02, so every geometry is shifted (here ~530 m) before drawing.
- ``osm``: OpenStreetMap, blocked in much of China; never the default.

No maintained PyPI package does the GCJ-02 shift (``eviltransform`` and ``coord-convert`` have
had no release since 2018/2019), so :func:`wgs84_to_gcj02` implements the published algorithm,
vectorised with numpy and tested against reference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from geopandas import GeoDataFrame

from pipelines.errors import ConfigError

# Krasovsky 1940 ellipsoid, as used by the GCJ-02 algorithm.
_A = 6378245.0
_EE = 0.00669342162296594323


@dataclass(frozen=True)
class TileLayer:
    name: str  # shown in the layer control
    url: str  # Leaflet URL template
    attribution: str
    subdomains: str = ""
    overlay: bool = False
    max_zoom: int = 18


@dataclass(frozen=True)
class Basemap:
    name: str  # none | tianditu | amap | osm
    layers: tuple[TileLayer, ...]
    gcj02: bool  # True: shift every WGS-84 coordinate to GCJ-02 before drawing


def basemap_for(settings) -> Basemap:
    """The basemap chosen in settings (``settings.basemap``), with its tile layers."""
    name = settings.basemap
    if name == "none":
        return Basemap("none", (), gcj02=False)
    if name == "tianditu":
        key = settings.tianditu_key
        if not key:
            raise ConfigError(
                "basemap 'tianditu' needs a Tianditu browser key: set MANYI_TIANDITU_KEY in the "
                'environment (never in manyi.toml), or choose basemap = "none"'
            )
        return Basemap("tianditu", _tianditu_layers(key.get()), gcj02=False)
    if name == "amap":
        url = "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}"
        layer = TileLayer("高德地图", url, "© 高德地图 AutoNavi", subdomains="1234")
        return Basemap("amap", (layer,), gcj02=True)
    if name == "osm":
        url = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
        layer = TileLayer("OpenStreetMap", url, "© OpenStreetMap contributors", max_zoom=19)
        return Basemap("osm", (layer,), gcj02=False)
    raise ConfigError(f"basemap '{name}' is unknown; use one of: none, tianditu, amap, osm")


def _tianditu_layers(key: str) -> tuple[TileLayer, ...]:
    def wmts(layer: str) -> str:
        return (
            f"https://t{{s}}.tianditu.gov.cn/{layer}_w/wmts?SERVICE=WMTS&REQUEST=GetTile"
            f"&VERSION=1.0.0&LAYER={layer}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles"
            f"&TILEMATRIX={{z}}&TILEROW={{y}}&TILECOL={{x}}&tk={key}"
        )

    attribution = "© 天地图 Tianditu"
    return (
        TileLayer("天地图 矢量", wmts("vec"), attribution, subdomains="01234567"),
        TileLayer("天地图 注记", wmts("cva"), attribution, subdomains="01234567", overlay=True),
    )


def out_of_china(lon, lat) -> np.ndarray:
    """True where a point lies outside the box in which GCJ-02 applies (no shift there)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    return (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Shift WGS-84 longitudes/latitudes (scalars or arrays) to GCJ-02; NaN stays NaN."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    dlon, dlat = _delta(lon, lat)
    outside = out_of_china(lon, lat)
    return np.where(outside, lon, lon + dlon), np.where(outside, lat, lat + dlat)


def gcj02_to_wgs84(lon, lat, *, tolerance: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`wgs84_to_gcj02` by fixed-point iteration (to ~1e-9°, i.e. sub-millimetre)."""
    glon, glat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    wlon, wlat = glon.copy(), glat.copy()
    for _ in range(30):
        slon, slat = wgs84_to_gcj02(wlon, wlat)
        elon, elat = slon - glon, slat - glat
        wlon, wlat = wlon - elon, wlat - elat
        if (
            np.nanmax(np.abs(np.concatenate([np.ravel(elon), np.ravel(elat)])), initial=0)
            < tolerance
        ):
            break
    return wlon, wlat


def to_gcj02(frame: GeoDataFrame) -> GeoDataFrame:
    """A copy of an EPSG:4326 frame with every vertex of every geometry shifted to GCJ-02."""
    out = frame.copy()
    out["geometry"] = shapely.transform(
        frame.geometry.values, lambda xy: np.column_stack(wgs84_to_gcj02(xy[:, 0], xy[:, 1]))
    )
    return out


def _delta(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = lon - 105.0, lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x + common
    dlat += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x + common
    dlon += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    rad = lat / 180.0 * np.pi
    magic = 1 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = dlat * 180.0 / ((_A * (1 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = dlon * 180.0 / (_A / sqrt_magic * np.cos(rad) * np.pi)
    return dlon, dlat
