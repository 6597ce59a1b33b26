"""Boundary and road files that are not what they claim, incomplete, or not near the town.

Each class of fault is tested from its cause, for every format it can happen in, and each
must end in one DataError line that names the file and says what to do (issue 9).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely import affinity

from geo.boundaries import load_boundaries
from geo.geofile import EXTENT_PAD_DEG, TOWN_EXTENT
from geo.illustrative import EXTENT, illustrative_boundaries
from geo.roads import load_roads
from pipelines.analysis.plan import load_plan
from pipelines.cli import main
from pipelines.errors import DataError
from tests.helpers import REPO

from .conftest import DATA

XLSX = DATA / "xlsx_renamed.gpkg"
GPKG = DATA / "villages_4549.gpkg"
GEOJSON = DATA / "villages_ok.geojson"
SHP_ZIP = DATA / "villages_shp.zip"
SHP_DIR = DATA / "shp"


@pytest.fixture(scope="module")
def town():
    return illustrative_boundaries()


def _error(path: Path, four, *, roads=None) -> str:
    """The message of the DataError loading ``path`` raises; it must be one line naming it."""
    with pytest.raises(DataError) as caught:
        if roads is None:
            load_boundaries(path, four)
        else:
            load_roads(path, roads, load_plan().segments)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and "\r" not in message
    assert len(message) < 800, message
    return message


def _as(tmp_path: Path, source: Path, name: str) -> Path:
    """A copy of ``source`` named ``name``; a plain .shp comes with its .shx and .dbf beside it."""
    target = tmp_path / name
    shutil.copyfile(source, target)
    if target.suffix == ".shp":
        for ext in (".shx", ".dbf", ".prj"):
            shutil.copyfile(SHP_DIR / f"villages{ext}", target.with_suffix(ext))
    return target


def _shapefile_folder(tmp_path: Path, *, without: str | None = None) -> Path:
    folder = tmp_path / "layer"
    shutil.copytree(SHP_DIR, folder)
    if without:
        (folder / f"villages{without}").unlink()
    return folder / "villages.shp"


# ---- one extent, derived in one place --------------------------------------------------------


def test_the_illustrative_villages_use_the_extent_the_loader_checks() -> None:
    assert EXTENT == TOWN_EXTENT
    west, south, east, north = illustrative_boundaries().villages.total_bounds
    assert TOWN_EXTENT[0] <= west and east <= TOWN_EXTENT[2]
    assert TOWN_EXTENT[1] <= south and north <= TOWN_EXTENT[3]


# ---- a file must be the format its name says -------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name", "says"),
    [
        (XLSX, "villages.gpkg", "is an Excel workbook (XLSX); export the boundary layer again"),
        (GEOJSON, "villages.gpkg", "is JSON text (GeoJSON?); rename it to .geojson"),
        (XLSX, "villages.zip", "is an Excel workbook (XLSX); export the boundary layer again"),
        (GPKG, "villages.zip", "is a SQLite database (GeoPackage); rename it to .gpkg"),
        (GEOJSON, "villages.shp", "is JSON text (GeoJSON?); rename it to .geojson"),
        (XLSX, "villages.shp", "is an Excel workbook (XLSX)"),
        (GPKG, "villages.geojson", "is a SQLite database (GeoPackage); rename it to .gpkg"),
        (SHP_ZIP, "villages.geojson", "is a zip archive holding a Shapefile; rename it to .zip"),
        (XLSX, "villages.json", "is an Excel workbook (XLSX)"),
        (SHP_DIR / "villages.dbf", "villages.geojson", "not a recognised geodata format"),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_a_file_that_is_not_the_format_its_name_says(source, name, says, four, tmp_path) -> None:
    path = _as(tmp_path, source, name)
    message = _error(path, four)
    assert "the name says" in message and says in message


def test_the_committed_xlsx_renamed_gpkg(four) -> None:
    message = _error(XLSX, four)
    assert "the name says GeoPackage (.gpkg) but the file is an Excel workbook" in message


def test_utf16_geojson_is_named(four, tmp_path) -> None:
    path = tmp_path / "villages.geojson"
    path.write_bytes(GEOJSON.read_text(encoding="utf-8").encode("utf-16"))
    assert "UTF-16" in _error(path, four)


@pytest.mark.parametrize("name", ["v.gpkg", "v.zip", "v.shp", "v.geojson", "v.json"])
def test_an_empty_file_of_every_format(name, four, tmp_path) -> None:
    path = _as(tmp_path, DATA / "empty.geojson", name)
    assert "is empty (0 bytes); export the layer again" in _error(path, four)


def test_a_folder_is_not_a_file(four, tmp_path) -> None:
    folder = tmp_path / "villages.gpkg"
    folder.mkdir()
    assert "is a folder" in _error(folder, four)


# ---- a Shapefile needs all its parts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("villages_no_shp.zip", "holds no .shp file (it holds: villages_shp.cpg"),
        ("villages_no_shx.zip", "zip member villages_shp.shp has no .shx beside it"),
        ("villages_no_dbf.zip", "zip member villages_shp.shp has no .dbf beside it"),
    ],
)
def test_a_shapefile_zip_without_a_mandatory_part(name, says, four) -> None:
    message = _error(DATA / name, four)
    assert says in message and "zip the layer's .shp, .shx, .dbf and .prj together" in message


@pytest.mark.parametrize("part", [".shx", ".dbf"])
def test_a_plain_shapefile_without_a_mandatory_part(part, four, tmp_path) -> None:
    path = _shapefile_folder(tmp_path, without=part)
    message = _error(path, four)
    assert f"has no villages{part} beside it" in message and "into one folder" in message


def test_a_plain_shapefile_loads_and_without_prj_has_no_crs(four, tmp_path) -> None:
    assert len(load_boundaries(SHP_DIR / "villages.shp", four).villages) == 4
    path = _shapefile_folder(tmp_path, without=".prj")
    assert "no coordinate reference system" in _error(path, four)


def test_a_zip_with_a_bad_crc_names_the_member(four, tmp_path) -> None:
    path = tmp_path / "villages.zip"
    with zipfile.ZipFile(SHP_ZIP) as z, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for member in z.namelist():
            out.writestr(member, z.read(member))
        dbf = z.read("villages_shp.dbf")
    data = bytearray(path.read_bytes())
    at = bytes(data).index(dbf) + len(dbf) - 2  # a byte inside the stored .dbf
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "zip member villages_shp.dbf is corrupt (bad CRC)" in _error(path, four)


def test_a_zip_that_unpacks_too_big_or_holds_too_many_files(four, tmp_path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(1001):
            z.writestr(f"f{i}.txt", b"")
    assert "more than 1000 files" in _error(path, four)


# ---- corrupt and odd GeoPackages --------------------------------------------------------------


@pytest.mark.parametrize("name", ["truncated.gpkg", "not_geopackage.gpkg"])
def test_a_corrupt_or_foreign_geopackage(name, four) -> None:
    message = _error(DATA / name, four)
    assert "cannot read the boundary file" in message
    assert "check that it is a complete GeoPackage" in message


def test_a_wrong_layer_name_lists_the_layers(four) -> None:
    with pytest.raises(DataError, match=r"no layer 'communes'; its layers are villages_4549"):
        load_boundaries(GPKG, four, layer="communes")


# ---- text attributes in any encoding, with any content ---------------------------------------


def test_gbk_attributes_are_read_with_a_note(four) -> None:
    with pytest.warns(UserWarning, match="not UTF-8; read them as GBK"):
        result = load_boundaries(DATA / "villages_gbk.geojson", four)
    assert list(result.villages["name"]) == [v.name for v in four]


@pytest.mark.parametrize(
    "code",
    ["\ud800", "3704811152\x0000", "370481115203\n370481115204", "9" * 1_000_000, "龙阳村"],
    ids=["lone-surrogate", "nul", "newline", "1MB", "chinese"],
)
def test_any_code_value_gives_one_short_line(code, four, tmp_path) -> None:
    """A code is shown escaped and cut short: nothing from the file breaks the line."""
    frame = json.loads(GEOJSON.read_text(encoding="utf-8"))
    frame["features"][3]["properties"]["code"] = code
    path = tmp_path / "villages.geojson"
    path.write_text(json.dumps(frame), encoding="utf-8")  # json escapes the surrogate
    message = _error(path, four)
    assert "not in the village register" in message and "370481115203 小寨" in message
    message.encode("utf-8")  # printable: no lone surrogate reached the message


# ---- coordinates must lie near the town -------------------------------------------------------


def test_boundaries_in_metres_without_a_crs(four) -> None:
    message = _error(DATA / "villages_metres_no_crs.geojson", four)
    assert "4 of 4 feature(s) lie outside the town's expected area" in message
    assert "e.g. feature 1 (village 370481115200)" in message
    assert "look like projected metres" in message and "they fit EPSG:4549" in message
    assert "declare the layer's real CRS" in message


def test_roads_in_metres_without_a_crs(town) -> None:
    message = _error(DATA / "roads_metres_no_crs.geojson", None, roads=town)
    assert "e.g. feature 1 (segment fuqian_east)" in message
    assert "look like projected metres" in message and "declare the layer's real CRS" in message


def test_swapped_axes_for_boundaries_and_roads(four, town) -> None:
    for message in (
        _error(DATA / "villages_swapped.geojson", four),
        _error(DATA / "roads_swapped.geojson", None, roads=town),
    ):
        assert "latitude and longitude look swapped" in message
        assert "x = longitude (east) and y = latitude (north)" in message


def test_swapped_eastings_and_northings_in_a_projected_file(four, tmp_path) -> None:
    frame = gpd.read_file(GPKG)
    frame.geometry = shapely.transform(frame.geometry.values, lambda xy: xy[:, ::-1])
    path = tmp_path / "villages.gpkg"
    frame.to_file(path, driver="GPKG")
    assert "the x and y axes look swapped" in _error(path, four)


def test_far_away_boundaries_and_roads_say_where_they_are(four, town) -> None:
    for message, example in (
        (_error(DATA / "villages_beijing.geojson", four), "village 370481115200"),
        (_error(DATA / "roads_beijing.geojson", None, roads=town), "segment fuqian_east"),
    ):
        assert f"e.g. feature 1 ({example})" in message
        assert "39.9" in message and "km from the town" in message
        assert "either the wrong file or a wrong CRS" in message


def test_a_wrong_declared_crs_names_the_one_that_fits(four, tmp_path) -> None:
    # Zone-prefixed Gauss-Kruger numbers (EPSG:4527, x ≈ 39 500 000) declared as EPSG:4549.
    frame = gpd.read_file(GEOJSON).to_crs("EPSG:4527").set_crs("EPSG:4549", allow_override=True)
    path = tmp_path / "villages.gpkg"
    frame.to_file(path, driver="GPKG")
    message = _error(path, four)
    assert "fit EPSG:4527" in message and "not the declared" in message


def test_degrees_under_a_projected_crs(four, tmp_path) -> None:
    frame = gpd.read_file(GEOJSON).set_crs("EPSG:3857", allow_override=True)
    path = tmp_path / "villages.gpkg"
    frame.to_file(path, driver="GPKG")
    assert "look like longitude/latitude although the file declares" in _error(path, four)


def test_one_stray_feature_is_counted_and_named(four, tmp_path) -> None:
    frame = gpd.read_file(GEOJSON)
    frame.loc[2, "geometry"] = affinity.translate(frame.geometry[2], 2.0, 0.0)
    path = tmp_path / "villages.geojson"
    frame.to_file(path, driver="GeoJSON")
    message = _error(path, four)
    assert "1 of 4 feature(s)" in message and "feature 3 (village 370481115202)" in message


def test_the_padding_is_generous_but_bounded(four, tmp_path) -> None:
    inside = gpd.read_file(GEOJSON)
    shift = EXTENT_PAD_DEG - 0.05  # the grid's west edge is 0.02° east of the extent's
    moved = inside.set_geometry(inside.geometry.translate(-shift, 0.0))
    moved.to_file(tmp_path / "near.geojson", driver="GeoJSON")
    assert len(load_boundaries(tmp_path / "near.geojson", four).villages) == 4
    far = inside.set_geometry(inside.geometry.translate(-(EXTENT_PAD_DEG + 0.1), 0.0))
    far.to_file(tmp_path / "far.geojson", driver="GeoJSON")
    assert "lie outside" in _error(tmp_path / "far.geojson", four)


# ---- roads: columns, ids and geometry ---------------------------------------------------------


def _roads(tmp_path: Path, props: list[dict], geoms: list) -> Path:
    path = tmp_path / "roads.geojson"
    features = [
        {
            "type": "Feature",
            "properties": p,
            "geometry": None if g is None else shapely.geometry.mapping(g),
        }
        for p, g in zip(props, geoms, strict=True)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    return path


LINE = shapely.LineString([(117.25, 35.17), (117.2555, 35.17)])


def test_the_committed_road_file_loads(town) -> None:
    roads, _ = load_roads(DATA / "roads_ok.geojson", town, load_plan().segments)
    row = roads.set_index("segment_id").loc["fuqian_east"]
    assert not row["illustrative"] and row["length_km"] == pytest.approx(0.5, abs=0.01)


def test_a_road_file_without_segment_id(town, tmp_path) -> None:
    message = _error(_roads(tmp_path, [{"名称": "府前路"}], [LINE]), None, roads=town)
    assert "no segment_id column (columns are 名称" in message and "fuqian_east" in message


def test_unknown_and_blank_segment_ids_are_listed_with_their_feature(town, tmp_path) -> None:
    props = [{"segment_id": "fuqian_east"}, {"segment_id": "ring_road"}, {"segment_id": None}]
    message = _error(_roads(tmp_path, props, [LINE] * 3), None, roads=town)
    assert "unknown segment id(s) ring_road (feature 2), (blank) (feature 3)" in message


@pytest.mark.parametrize(
    ("geom", "says"),
    [
        (shapely.Point(117.25, 35.17), "roads must be lines, found Point in 1 feature(s)"),
        (shapely.box(117.25, 35.17, 117.26, 35.18), "roads must be lines, found Polygon"),
        (None, "1 road feature(s) have no geometry, e.g. feature 2 (segment fuqian_east)"),
        (shapely.LineString(), "1 road feature(s) have no geometry"),
    ],
    ids=["point", "polygon", "null", "empty"],
)
def test_roads_that_are_not_lines(geom, says, town, tmp_path) -> None:
    props = [{"segment_id": "fuqian_east"}] * 2
    message = _error(_roads(tmp_path, props, [LINE, geom]), None, roads=town)
    assert says in message


def test_road_files_get_the_format_and_part_checks_too(town, tmp_path) -> None:
    assert "Excel workbook" in _error(XLSX, None, roads=town)
    assert "has no .shx" in _error(DATA / "villages_no_shx.zip", None, roads=town)
    assert "empty" in _error(_as(tmp_path, DATA / "empty.geojson", "r.gpkg"), None, roads=town)


# ---- no bytes at all make a traceback ---------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    source=st.sampled_from([GPKG, GEOJSON, SHP_ZIP, DATA / "villages_metres_no_crs.geojson"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=4),
)
def test_damaged_files_never_escape_as_anything_but_a_data_error(
    source, cut, flips, four, tmp_path
) -> None:
    data = bytearray(source.read_bytes())
    for where, mask in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= mask
    data = data[: max(1, int(cut * len(data)))] if cut < 1.0 else data
    path = tmp_path / f"damaged{source.suffix}"
    path.write_bytes(bytes(data))
    try:
        load_boundaries(path, four)
    except DataError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)


# ---- through the command line: one line, no traceback ------------------------------------------


def test_manyi_maps_with_a_bad_boundary_file_prints_one_line(tmp_path) -> None:
    env = {**os.environ, "MANYI_BOUNDARIES": str(XLSX), "MANYI_DATA_DIR": str(tmp_path)}
    env.pop("MANYI_ROADS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "maps", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"manyi: {XLSX}: the name says GeoPackage")


@pytest.mark.parametrize(
    ("setting", "name", "says"),
    [
        ("boundaries", "villages_no_shp.zip", "holds no .shp file"),
        ("boundaries", "villages_metres_no_crs.geojson", "look like projected metres"),
        ("boundaries", "villages_swapped.geojson", "look swapped"),
        ("roads", "roads_beijing.geojson", "km from the town"),
    ],
)
def test_manyi_maps_in_process_says_one_line_for_each_fault(
    setting, name, says, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv(f"MANYI_{setting.upper()}", str(DATA / name))
    monkeypatch.setenv("MANYI_DATA_DIR", str(tmp_path))
    assert main(["maps", "--out", str(tmp_path / "out")]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert lines[0].startswith(f"manyi: {DATA / name}: ") and says in lines[0]


def test_metre_coordinates_of_the_test_files_are_really_the_town(four) -> None:
    """The metre file holds the clean grid's numbers in EPSG:4549, nothing else."""
    raw = json.loads((DATA / "villages_metres_no_crs.geojson").read_text(encoding="utf-8"))
    x, y = raw["features"][0]["geometry"]["coordinates"][0][0]
    lon, lat = Transformer.from_crs(4549, 4326, always_xy=True).transform(x, y)
    assert (lon, lat) == pytest.approx((117.25, 35.16), abs=1e-6)
