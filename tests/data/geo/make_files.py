"""Regenerate the small boundary files in this folder: `python tests/data/geo/make_files.py`.

Four villages of the register (370481115200–203) as a 2×2 grid of squares near 龙阳镇, written
with geopandas/pyogrio in three formats and with the faults the loader must catch, and one
road line (segment fuqian_east) with the same coordinate faults. `main()` writes everything;
`faults()` only the files of issue 9 (GeoPackages embed a timestamp, so rewriting them all
changes bytes for nothing).
"""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import geopandas as gpd
import openpyxl
import shapely
from pyproj import Transformer
from shapely import affinity
from shapely.geometry import LineString, Polygon, box

HERE = Path(__file__).parent
CODES = ["370481115200", "370481115201", "370481115202", "370481115203"]
W, S, STEP = 117.24, 35.16, 0.01


def grid() -> gpd.GeoDataFrame:
    cells = [
        box(W + i * STEP, S + j * STEP, W + (i + 1) * STEP, S + (j + 1) * STEP)
        for j in range(2)
        for i in range(2)
    ]
    return gpd.GeoDataFrame({"code": CODES}, geometry=cells, crs="EPSG:4326")


def zipped_shapefile(frame: gpd.GeoDataFrame, name: str, *, keep_prj: bool = True) -> None:
    folder = HERE / f"_{name}"
    folder.mkdir(exist_ok=True)
    frame.to_file(folder / f"{name}.shp", engine="pyogrio")
    with zipfile.ZipFile(HERE / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for part in sorted(folder.iterdir()):
            if part.suffix != ".prj" or keep_prj:
                z.write(part, part.name)
            part.unlink()
    folder.rmdir()


def main() -> None:
    ok = grid()
    ok.to_file(HERE / "villages_ok.geojson", driver="GeoJSON", engine="pyogrio")
    ok.to_crs("EPSG:4549").to_file(HERE / "villages_4549.gpkg", driver="GPKG", engine="pyogrio")
    numeric = ok.assign(code=ok["code"].astype(float))  # as many shapefiles store the codes
    zipped_shapefile(numeric, "villages_shp")
    zipped_shapefile(ok, "villages_no_crs", keep_prj=False)

    bowtie = ok.copy()
    x0, y0, x1, y1 = bowtie.geometry[3].bounds
    bowtie.loc[3, "geometry"] = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
    bowtie.to_file(HERE / "villages_bowtie.geojson", driver="GeoJSON", engine="pyogrio")

    dup = ok.copy()
    dup.loc[3, "code"] = CODES[2]
    dup.to_file(HERE / "villages_duplicate.geojson", driver="GeoJSON", engine="pyogrio")

    unknown = ok.copy()
    unknown.loc[3, "code"] = "370481115999"
    unknown.to_file(HERE / "villages_unknown.geojson", driver="GeoJSON", engine="pyogrio")

    # Village 201 pushed 0.002° west (overlapping 200); 202 loses its south-east corner, leaving
    # a hole at the centre of the grid that belongs to no village.
    shifted = ok.copy()
    a, b, c, d = shifted.geometry[1].bounds
    shifted.loc[1, "geometry"] = box(a - 0.002, b, c, d)
    a, b, c, d = shifted.geometry[2].bounds
    shifted.loc[2, "geometry"] = shifted.geometry[2].difference(box(c - 0.002, b, c, b + 0.002))
    shifted.to_file(HERE / "villages_overlap_gap.geojson", driver="GeoJSON", engine="pyogrio")

    (HERE / "empty.geojson").write_bytes(b"")
    (HERE / "no_features.geojson").write_text(
        '{"type": "FeatureCollection", "features": []}\n', encoding="utf-8"
    )
    good = (HERE / "villages_4549.gpkg").read_bytes()
    (HERE / "truncated.gpkg").write_bytes(good[: len(good) // 3])
    faults()


def geojson_by_hand(path: Path, props: list[dict], geoms: list, *, swap: bool = False) -> None:
    """GeoJSON without a "crs" member, coordinates as given: what a careless export writes."""
    if swap:
        geoms = [shapely.transform(g, lambda xy: xy[:, ::-1]) for g in geoms]
    features = [
        {"type": "Feature", "properties": p, "geometry": shapely.geometry.mapping(g)}
        for p, g in zip(props, geoms, strict=True)
    ]
    text = json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def faults() -> None:
    ok = grid()
    codes = [{"code": c} for c in CODES]
    to_metres = Transformer.from_crs("EPSG:4326", "EPSG:4549", always_xy=True)
    metres = [shapely.transform(g, lambda xy: list(zip(*to_metres.transform(*xy.T), strict=True))) for g in ok.geometry]  # fmt: skip
    beijing = [affinity.translate(g, 116.40 - W, 39.90 - S) for g in ok.geometry]
    geojson_by_hand(HERE / "villages_metres_no_crs.geojson", codes, metres)
    geojson_by_hand(HERE / "villages_swapped.geojson", codes, list(ok.geometry), swap=True)
    geojson_by_hand(HERE / "villages_beijing.geojson", codes, beijing)

    road = [{"segment_id": "fuqian_east"}]
    line = LineString([(117.25, 35.17), (117.2555, 35.17)])  # about 0.5 km, east
    geojson_by_hand(HERE / "roads_ok.geojson", road, [line])
    geojson_by_hand(HERE / "roads_metres_no_crs.geojson", road, [shapely.transform(line, lambda xy: list(zip(*to_metres.transform(*xy.T), strict=True)))])  # fmt: skip
    geojson_by_hand(HERE / "roads_swapped.geojson", road, [line], swap=True)
    geojson_by_hand(HERE / "roads_beijing.geojson", road, [affinity.translate(line, -0.85, 4.73)])  # fmt: skip

    # A plain Shapefile folder, and the zipped one with each mandatory part left out.
    folder = HERE / "shp"
    folder.mkdir(exist_ok=True)
    ok.to_file(folder / "villages.shp", engine="pyogrio")
    with zipfile.ZipFile(HERE / "villages_shp.zip") as z:
        for part in ("shp", "shx", "dbf"):
            with zipfile.ZipFile(HERE / f"villages_no_{part}.zip", "w", zipfile.ZIP_DEFLATED) as o:
                for name in z.namelist():
                    if not name.endswith(f".{part}"):
                        o.writestr(name, z.read(name))

    # An Excel workbook renamed .gpkg, and a SQLite database that is no GeoPackage.
    book = openpyxl.Workbook()
    book.active.append(["code", "name"])
    book.active.append([CODES[0], "龙阳"])
    book.save(HERE / "xlsx_renamed.gpkg")
    (HERE / "not_geopackage.gpkg").unlink(missing_ok=True)
    with sqlite3.connect(HERE / "not_geopackage.gpkg") as db:
        db.execute("CREATE TABLE villages (code TEXT, name TEXT)")
    db.close()

    # Village names in GBK, as many Chinese exports write them.
    text = (HERE / "villages_ok.geojson").read_text(encoding="utf-8")
    text = text.replace('"code": "370481115200"', '"code": "370481115200", "name": "龙阳"')
    (HERE / "villages_gbk.geojson").write_bytes(text.encode("gbk"))


if __name__ == "__main__":
    main()
