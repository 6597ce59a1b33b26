"""Reading a geodata file safely: one cohesive gate before any geometry is trusted.

The file must be the format its name says (magic bytes); a zip is bounded in members and
unpacked size and its CRCs checked; a Shapefile must have its .shp, .shx and .dbf; every
pyogrio/GDAL error becomes one :class:`~pipelines.errors.DataError` line naming the file. After
reprojection to EPSG:4326 the features must lie near the town (:func:`check_extent`), and a
file in metres without a CRS, or with swapped axes, is told apart from one that is elsewhere.
Used by the boundaries and the roads loaders.
"""

from __future__ import annotations

import math
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Geod

from pipelines.config import TOWN_EXTENT  # the default town's; a town's own is settings.extent
from pipelines.errors import DataError

STORAGE_CRS = "EPSG:4326"


SUFFIXES = (".gpkg", ".shp", ".zip", ".geojson", ".json")


EXTENT_PAD_DEG = 0.2  # the extent is a guess for the default town, hence the generous padding


# Projected CRSs a file in metres near the town is likely to be in, tried to name the culprit.
_LIKELY_METRIC_CRS = ("EPSG:4549", "EPSG:4548", "EPSG:4527", "EPSG:32650", "EPSG:3857")


_MAX_ZIP_MEMBERS = 1000


_MAX_ZIP_BYTES = 1 << 30  # 1 GiB unpacked: far above any town's layer, far below a zip bomb


_FORMAT_NAMES = {
    ".gpkg": "GeoPackage (.gpkg)",
    ".zip": "zipped Shapefile (.zip)",
    ".shp": "Shapefile (.shp)",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
}


_MAGIC = {
    ".gpkg": (b"SQLite format 3\x00",),
    ".zip": (b"PK\x03\x04", b"PK\x05\x06"),
    ".shp": (b"\x00\x00\x27\x0a",),
}


@dataclass
class GeoFile:
    """One layer read by :func:`read_layer`: features in the file's own CRS, and notes."""

    frame: gpd.GeoDataFrame
    notes: list[str] = field(default_factory=list)  # one line each, naming the file


def read_layer(path: Path | str, *, layer: str | None = None, what: str = "boundary") -> GeoFile:
    """Read one layer of a GeoPackage, Shapefile (plain or zipped) or GeoJSON, safely.

    Checks, before GDAL sees the file, that it exists, is not empty, has a supported suffix and
    is the format its suffix says, and that a Shapefile has its .shp, .shx and .dbf (a zip is
    also bounded in members and unpacked size, and its CRCs are checked). Text attributes that
    are not UTF-8 are read as GB18030 (GBK) with a note. Every failure, including GDAL's, is one
    :class:`DataError` naming the file and saying what to do; ``what`` names the layer's role.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} file not found; check the path in the configuration")
    if path.is_dir():
        raise DataError(
            f"{path}: is a folder, not a {what} file; give the .gpkg, .shp, .geojson or .zip in it"
        )
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{path}: unsupported {what} file type '{_shown(path.suffix)}'; "
            "use a GeoPackage (.gpkg), Shapefile (.shp or zipped .zip) or GeoJSON (.geojson)"
        )
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        raise DataError(f"{path}: cannot open the {what} file ({e.strerror}); check its permissions") from None  # fmt: skip
    if size == 0:
        raise DataError(f"{path}: the {what} file is empty (0 bytes); export the layer again")
    _check_format(path, head, what)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        _check_zip(path, what)
    elif suffix == ".shp":
        _check_shapefile_parts(path, what)
    frame, notes = _read_frame(path, layer, what)
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame.columns:
        columns = ", ".join(_shown(c) for c in list(frame.columns)[:10]) or "none"
        raise DataError(
            f"{path}: has no geometry, only a table (columns: {columns}); "
            f"export the {what} layer with its geometry"
        )
    if len(frame) == 0:
        raise DataError(f"{path}: the {what} file holds no features; export the {what} layer")
    return GeoFile(frame, notes)


def check_extent(
    path: Path,
    frame: gpd.GeoDataFrame,
    labels: list[str],
    *,
    extent: tuple[float, float, float, float] = TOWN_EXTENT,
) -> gpd.GeoDataFrame:
    """``frame`` in EPSG:4326, after checking every feature lies in ``extent`` (padded).

    ``labels`` name the features (e.g. ``village 370481115200``) for the message. Outside
    features raise one :class:`DataError` with the count, an example and the likely cause:
    metres without a CRS, swapped axes, degrees under a projected CRS, or simply elsewhere.
    """
    moved = _reproject(path, frame)
    box = _padded(extent)
    outside = ~_inside(moved, box)
    if not outside.any():
        return moved
    first = int(np.flatnonzero(outside)[0])
    west, south, east, north = (f"{float(v):.2f}" for v in extent)
    raise DataError(
        f"{path}: {int(outside.sum())} of {len(frame)} feature(s) lie outside the town's expected "
        f"area ({west}–{east}°E, {south}–{north}°N, give or take {EXTENT_PAD_DEG}°), e.g. feature "
        f"{first + 1} ({labels[first]}); {_diagnose(frame[outside], moved[outside], box, extent)}"
    )


def _check_format(path: Path, head: bytes, what: str) -> None:
    suffix = path.suffix.lower()
    if suffix in _MAGIC:
        ok = head.startswith(_MAGIC[suffix])
    else:  # GeoJSON is JSON text: an object, maybe after a UTF-8 BOM and white space
        ok = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith(b"{")
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DataError(f"{path}: the GeoJSON is UTF-16 text; save it as UTF-8 and try again")
    if ok:
        return
    kind, real_suffix = _sniff(path, head)
    todo = (
        f"rename it to {real_suffix}"
        if real_suffix and real_suffix != suffix
        else f"export the {what} layer again as a GeoPackage, Shapefile or GeoJSON (e.g. from QGIS)"
    )
    raise DataError(f"{path}: the name says {_FORMAT_NAMES[suffix]} but the file is {kind}; {todo}")


def _sniff(path: Path, head: bytes) -> tuple[str, str | None]:
    """What a file really is, judged from its first bytes, and the suffix it should have."""
    if head.startswith(_MAGIC[".gpkg"]):
        return "a SQLite database (GeoPackage)", ".gpkg"
    if head.startswith(_MAGIC[".shp"]):
        return "the .shp part of a Shapefile", ".shp"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = [n.lower() for n in z.namelist()[:_MAX_ZIP_MEMBERS]]
        except (zipfile.BadZipFile, OSError, ValueError):
            return "a damaged zip archive", None
        if any(n.startswith("xl/") for n in names):
            return "an Excel workbook (XLSX)", None
        if any(n.startswith("word/") for n in names):
            return "a Word document (DOCX)", None
        if any(n.endswith(".shp") for n in names):
            return "a zip archive holding a Shapefile", ".zip"
        return "a zip archive", None
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "an old-style Office file (XLS/DOC)", None
    if head.startswith(b"%PDF"):
        return "a PDF document", None
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"{"):
        return "JSON text (GeoJSON?)", ".geojson"
    if text.startswith(b"["):
        return "a JSON array, not a GeoJSON object", None
    if text.startswith(b"<"):
        return "XML or HTML text (KML? a web page?)", None
    return "not a recognised geodata format", None


def _check_zip(path: Path, what: str) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            infos = [
                i for i in z.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")
            ]
            if len(infos) > _MAX_ZIP_MEMBERS or sum(i.file_size for i in infos) > _MAX_ZIP_BYTES:
                raise DataError(
                    f"{path}: the zip holds more than {_MAX_ZIP_MEMBERS} files or unpacks to more "
                    f"than {_MAX_ZIP_BYTES >> 30} GiB; zip only the {what} layer's files"
                )
            bad = z.testzip()  # reads every member: CRC errors show here, not inside GDAL
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:  # fmt: skip
        raise DataError(
            f"{path}: the zip archive is damaged or unsupported ({_first_line(e)}); "
            "zip the layer's files again (plain zip, no password)"
        ) from None
    if bad is not None:
        raise DataError(
            f"{path}: zip member {_shown(bad)} is corrupt (bad CRC); zip the layer's files again"
        )
    names = [i.filename for i in infos]
    lower = {n.lower() for n in names}
    shapefiles = [n for n in names if n.lower().endswith(".shp")]
    if not shapefiles:
        if any(n.endswith((".gpkg", ".geojson", ".json")) for n in lower):
            return  # GDAL reads these from inside a zip too
        kind, _ = _sniff(path, b"PK")
        if kind != "a zip archive":  # an XLSX or DOCX is a zip too, of the wrong kind
            raise DataError(
                f"{path}: the name says {_FORMAT_NAMES['.zip']} but the file is {kind}; export "
                f"the {what} layer again as a GeoPackage, Shapefile or GeoJSON (e.g. from QGIS)"
            )
        listed = ", ".join(_shown(n) for n in names[:8]) + (" …" if len(names) > 8 else "")
        raise DataError(
            f"{path}: the zip holds no .shp file (it holds: {listed or 'nothing'}); zip the "
            "layer's .shp, .shx, .dbf and .prj together"
        )
    for shp in shapefiles:
        stem = shp[:-4]
        missing = [ext for ext in (".shx", ".dbf") if (stem + ext).lower() not in lower]
        if missing:
            raise DataError(
                f"{path}: zip member {_shown(shp)} has no {' or '.join(missing)} beside it; "
                "zip the layer's .shp, .shx, .dbf and .prj together"
            )


def _check_shapefile_parts(path: Path, what: str) -> None:
    beside = {p.name for p in path.parent.iterdir()}
    missing = [
        ext for ext in (".shx", ".dbf") if not {path.stem + ext, path.stem + ext.upper()} & beside
    ]
    if missing:
        raise DataError(
            f"{path}: the Shapefile has no {' or '.join(path.stem + m for m in missing)} beside "
            f"it; copy all the {what} layer's parts (.shp, .shx, .dbf, .prj) into one folder"
        )


def _read_frame(path: Path, layer: str | None, what: str) -> tuple[gpd.GeoDataFrame, list[str]]:
    try:
        try:
            return _pyogrio(path, layer, None)
        except UnicodeDecodeError:
            frame, notes = _pyogrio(path, layer, "GB18030")
            return frame, [*notes, f"{path}: text attributes are not UTF-8; read them as GBK"]
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: the text attributes are neither UTF-8 nor GBK/GB18030; "
            "re-export the layer with UTF-8 encoding"
        ) from None
    except Exception as e:  # pyogrio/GDAL/sqlite raise many types; the user needs one line
        detail = _first_line(e).replace(str(path), path.name)
        if layer is not None and (layers := _layers(path)) and layer not in layers:
            raise DataError(
                f"{path}: no layer {_shown(layer, quote=True)}; its layers are {', '.join(map(_shown, layers))}"
            ) from None
        advice = {
            ".gpkg": "check that it is a complete GeoPackage (copy or export it again)",
            ".zip": "check that the Shapefile in it is complete (.shp, .shx, .dbf, .prj)",
            ".shp": "check that the Shapefile is complete (.shp, .shx, .dbf, .prj)",
        }.get(path.suffix.lower(), "check that it is complete, valid GeoJSON (export it again)")
        raise DataError(f"{path}: cannot read the {what} file ({detail}); {advice}") from None


def _pyogrio(
    path: Path, layer: str | None, encoding: str | None
) -> tuple[gpd.GeoDataFrame, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = gpd.read_file(path, layer=layer, engine="pyogrio", encoding=encoding)
    # GDAL's warnings (several layers, odd geometry types) become notes naming the file.
    return frame, [f"{path}: {_first_line(w.message)}" for w in caught]


def _layers(path: Path) -> list[str]:
    import pyogrio  # only needed to explain a wrong layer name

    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception:  # the read error itself is the better message then
        return []


def _reproject(path: Path, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    try:
        with np.errstate(all="ignore"):
            return frame.to_crs(STORAGE_CRS)
    except Exception as e:  # pyproj's CRSError/ProjError
        raise DataError(
            f"{path}: cannot reproject from {frame.crs.name} to WGS-84 ({_first_line(e)}); "
            "check the file's CRS"
        ) from None


def _padded(extent: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    west, south, east, north = extent
    pad = EXTENT_PAD_DEG
    return (west - pad, south - pad, east + pad, north + pad)


def _inside(frame: gpd.GeoDataFrame, box: tuple[float, float, float, float]) -> np.ndarray:
    b = frame.geometry.bounds.to_numpy(dtype=float)  # NaN for empty, inf for failed transforms
    west, south, east, north = box
    with np.errstate(invalid="ignore"):
        inside = (b[:, 0] >= west) & (b[:, 1] >= south) & (b[:, 2] <= east) & (b[:, 3] <= north)
    return inside & np.isfinite(b).all(axis=1)


def _diagnose(raw: gpd.GeoDataFrame, moved: gpd.GeoDataFrame, box, extent) -> str:
    """Why the features miss the town, and what to do, judged from their raw coordinates."""
    crs = raw.crs
    x0, y0, x1, y1 = raw.total_bounds
    swapped = raw.set_geometry(shapely.transform(raw.geometry.values, lambda xy: xy[:, ::-1]))
    if _all_inside(swapped, box):
        axes = "latitude and longitude" if crs.is_geographic else "the x and y axes"
        return (
            f"{axes} look swapped (swapping them puts the features in the town); re-export the "
            "layer with x = longitude (east) and y = latitude (north)"
        )
    fits = next(
        (
            c
            for c in _LIKELY_METRIC_CRS
            if not crs.equals(c) and _all_inside(raw.set_crs(c, allow_override=True), box)
        ),
        None,
    )
    named = f"{fits} ({gpd.GeoSeries(crs=fits).crs.name})" if fits else ""
    if crs.is_geographic and (max(abs(x0), abs(x1)) > 180 or max(abs(y0), abs(y1)) > 90):
        return (
            f"the coordinates (x {x0:,.0f}…{x1:,.0f}, y {y0:,.0f}…{y1:,.0f}) look like projected "
            f"metres, not longitude/latitude, although the file says {crs.name} (a GeoJSON "
            f'without a "crs" member is read as WGS-84){"; they fit " + named if fits else ""}; '
            "declare the layer's real CRS, e.g. export it from QGIS as WGS-84 GeoJSON or as a "
            "GeoPackage with its CRS"
        )
    if fits:
        return (
            f"the coordinates fit {named}, not the declared {crs.name}; set the layer's real "
            "CRS (in QGIS: Layer › Set CRS) and export it again"
        )
    if not crs.is_geographic and _all_inside(raw.set_crs(STORAGE_CRS, allow_override=True), box):
        return (
            f"the coordinates look like longitude/latitude although the file declares "
            f"{crs.name}; set the layer's CRS to WGS-84 (EPSG:4326) and export it again"
        )
    where = "they cannot be placed on the earth in that CRS"
    mx0, my0, mx1, my1 = moved.total_bounds
    if np.isfinite([mx0, my0, mx1, my1]).all():
        lon, lat = (mx0 + mx1) / 2, (my0 + my1) / 2
        west, south, east, north = extent
        _, _, metres = Geod(ellps="WGS84").inv((west + east) / 2, (south + north) / 2, lon, lat)
        where = f"they lie around {lon:.3f}°E, {lat:.3f}°N, {metres / 1000:,.0f} km from the town"
    return (
        f"{where}: either the wrong file or a wrong CRS ({crs.name}); check that this is the "
        "town's layer and that its CRS is declared correctly"
    )


def _all_inside(frame: gpd.GeoDataFrame, box) -> bool:
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return bool(_inside(frame.to_crs(STORAGE_CRS), box).all())
    except Exception:  # a transform that cannot even run is no fit
        return False


def _listing(items: list[str], limit: int = 10) -> str:
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _shown(value: object, limit: int = 40, *, quote: bool = False) -> str:
    """A value read from a file, safe in a one-line message: escaped when odd, cut short."""
    text = str(value)
    if not quote and text.isprintable() and text == text.strip() and len(text) <= limit:
        return text
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 2] + "…'"


def _cell_text(value: object) -> str:
    """An attribute read from a file as stripped text; blank for a missing value (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _first_line(error: object) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= 200 else line[:199] + "…"
