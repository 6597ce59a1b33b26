"""Regenerate the small boundary files in this folder: `python tests/data/geo/make_files.py`.

Four villages of the register (370481115200–203) as a 2×2 grid of squares near 龙阳镇, written
with geopandas/pyogrio in three formats and with the faults the loader must catch.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import geopandas as gpd
from shapely.geometry import Polygon, box

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


if __name__ == "__main__":
    main()
