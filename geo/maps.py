"""Offline, China-ready folium maps: an overview and one map per domain, plus the index page.

Each map is one self-contained HTML file: Leaflet and Leaflet.markercluster are inlined from the
``xstatic-leaflet`` / ``xstatic-leaflet-markercluster`` packages and folium's CDN links (jQuery,
Bootstrap, Font Awesome, awesome-markers) are dropped, so a map opens with no network, or
forwarded as a single file. Every user-entered text is HTML-escaped in Python before it reaches
a tooltip or popup. Findings are drawn in the browser from one compact array and clustered,
never as one folium ``Marker`` per point, so a town-year stays well under 3 MB.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
from folium.plugins import MarkerCluster
from jinja2 import Environment
from xstatic.pkg import leaflet as xs_leaflet
from xstatic.pkg import leaflet_markercluster as xs_cluster

from geo.basemaps import Basemap, basemap_for, to_gcj02, wgs84_to_gcj02
from geo.boundaries import Boundaries, load_boundaries
from geo.coverage import CLASSES, classify, coverage_frame
from geo.illustrative import NOTICE, illustrative_boundaries
from geo.roads import illustrative_roads, load_roads
from geo.villages import load_villages
from pipelines.analysis.privacy import scrub_text
from pipelines.config import SHANGHAI
from pipelines.errors import DataError

# The plan's six domains: id used in file names -> Chinese name shown to users.
DOMAINS = {
    "living_environment": "人居环境",
    "public_security": "社会治安",
    "medical_care": "基本医疗",
    "culture_sports": "文体活动",
    "education": "基础教育",
    "social_assistance": "社会帮扶",
}
ROADS_DOMAIN = "living_environment"
CLOSED_STATUSES = {"已整改", "已完成", "已解决", "已关闭", "closed", "done", "resolved", "cleared"}
PROGRESS_COLUMNS = ("village_code", "indicator_id", "value", "target")


@dataclass
class MapsResult:
    """What :func:`draw_maps` wrote."""

    out_dir: Path
    index: Path  # out_dir/index.html
    maps: dict[str, Path]  # "overview" and each domain id -> HTML file
    illustrative: bool  # drawn on illustrative geometry (each map says 示意边界)
    basemap: str
    warnings: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [*self.maps.values(), self.index]


def draw_maps(
    settings,
    out_dir: Path,
    progress: pd.DataFrame | None = None,
    findings: pd.DataFrame | None = None,
    *,
    boundaries: Boundaries | None = None,
) -> MapsResult:
    """Draw the overview map and one map per domain into ``out_dir/maps/``, and ``out_dir/index.html``.

    ``progress`` is the indicators' tidy frame, one row per (village, indicator):

    ============== ===================================================================
    village_code   12-digit register code; NA for a town-level row (e.g. a road)
    indicator_id   the plan's indicator id
    value, target  numbers in the same unit (count, km, share); target > 0
    open_followups optional: open follow-up items for that village and indicator
    domain         optional: a key or Chinese name of :data:`DOMAINS`; rows without one
                   appear on the overview only
    label          optional: the indicator's Chinese label, shown in tooltips
    segment_id     optional: a road segment id of :data:`geo.roads.SEGMENTS`; such rows
                   (value = km done of target km) colour that road
    ============== ===================================================================

    A village's colour is its mean completion, min(value/target, 1), over the map's indicators.
    With ``progress`` None or empty every village is drawn with zero coverage (暂无数据).

    ``findings`` holds open findings (piles not cleared, damaged equipment, …): ``lat``, ``lon``
    (WGS-84) and optionally ``date``, ``kind``, ``status``, ``rectify_by``, ``photo`` (an
    ``http(s)://`` link or a path relative to the maps, e.g. ``../2023-06-30/photos/x.jpg``;
    anything else is not linked), ``note``, ``domain``, ``village_code`` and ``open`` (bool;
    without it, a status outside :data:`CLOSED_STATUSES` counts as open).

    Geometry comes from ``boundaries``, else from ``settings.boundaries`` (a file path) when the
    settings carry one, else the illustrative villages. The basemap is ``settings.basemap``.
    """
    out_dir = Path(out_dir)
    register = load_villages(settings.villages)
    if boundaries is None:
        path = settings.boundaries
        boundaries = load_boundaries(path, register) if path else illustrative_boundaries(register)
    basemap = basemap_for(settings)
    notes = list(boundaries.warnings)
    if settings.roads:
        roads, road_notes = load_roads(settings.roads, boundaries)
        notes += road_notes
    else:
        roads = illustrative_roads(boundaries)
    tidy = _check_progress(progress)
    open_findings, dropped = _open_findings(findings)
    if dropped:
        notes.append(f"{dropped} finding(s) without GPS were left off the maps")

    maps_dir = out_dir / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    town = settings.town
    written: dict[str, Path] = {}
    pages = [("overview", f"{town} 总览", None)] + [
        (key, f"{town} {name}", key) for key, name in DOMAINS.items()
    ]
    for key, title, domain in pages:
        rows = tidy if domain is None else tidy[tidy["domain"] == domain]
        marks = open_findings
        if domain is not None:
            marks = open_findings[open_findings["domain"] == domain]
        draw_roads = domain in (None, ROADS_DOMAIN)
        fmap = _build_map(title, boundaries, rows, roads if draw_roads else None, marks, basemap)
        path = maps_dir / f"{key}.html"
        path.write_text(_render_offline(fmap), encoding="utf-8")
        written[key] = path
    index = write_index(out_dir, title=f"{town} 满意度提升工程")
    return MapsResult(out_dir, index, written, boundaries.illustrative, basemap.name, notes)


def write_index(out_dir: Path, title: str = "满意度提升工程") -> Path:
    """(Re)write ``out_dir/index.html`` linking every map and report found under ``out_dir``.

    HTML pages are listed by their ``<title>``; XLSX and CSV files by name. Call it again after
    writing reports so the index lists them too.
    """
    out_dir = Path(out_dir)
    entries = []
    for path in sorted(out_dir.rglob("*")):
        if not path.is_file() or path.name == "index.html":
            continue
        if path.suffix.lower() not in (".html", ".xlsx", ".csv", ".pdf"):
            continue
        rel = path.relative_to(out_dir).as_posix()
        label = path.stem
        if path.suffix.lower() == ".html":
            head = path.read_text(encoding="utf-8", errors="replace")[:20000]
            found = re.search(r"<title>(.*?)</title>", head, re.S)
            label = html.unescape(found.group(1).strip()) if found else path.stem
        section = "地图" if rel.startswith("maps/") else "报告与清单"
        entries.append({"href": rel, "label": label, "section": section, "kind": path.suffix[1:]})
    entries.sort(key=_index_order)
    stamp = datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    page = _INDEX.render(title=title, entries=entries, stamp=stamp)
    target = out_dir / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


_MAP_ORDER = ["overview", *DOMAINS]
_REPORT_ORDER = ("月调度通报", "跟进清单", "数据质量")
_KIND_ORDER = ("html", "xlsx", "csv", "pdf")


def _index_order(entry: dict[str, str]) -> tuple:
    """Maps first (the overview, then the domains); then reports, newest date first, the
    dispatch report before the lists, HTML before XLSX before CSV."""
    href, kind = entry["href"], entry["kind"].lower()
    if entry["section"] == "地图":
        stem = Path(href).stem
        return (0, _MAP_ORDER.index(stem) if stem in _MAP_ORDER else len(_MAP_ORDER), href)
    folder, _, name = href.rpartition("/")
    rank = next((i for i, p in enumerate(_REPORT_ORDER) if name.startswith(p)), len(_REPORT_ORDER))
    newest_first = tuple(-ord(c) for c in folder)
    return (1, newest_first, rank, _KIND_ORDER.index(kind) if kind in _KIND_ORDER else 9, name)


# --- progress and findings -------------------------------------------------------------------


def _check_progress(progress: pd.DataFrame | None) -> pd.DataFrame:
    cols = [*PROGRESS_COLUMNS, "open_followups", "domain", "label", "segment_id"]
    if progress is None or len(progress) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    missing = [c for c in PROGRESS_COLUMNS if c not in progress.columns]
    if missing:
        raise DataError(
            f"progress table lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(PROGRESS_COLUMNS)} (see geo.maps.draw_maps)"
        )
    tidy = progress.copy()
    for c in cols:
        if c not in tidy.columns:
            tidy[c] = pd.NA
    tidy["value"] = pd.to_numeric(tidy["value"], errors="coerce")
    tidy["target"] = pd.to_numeric(tidy["target"], errors="coerce")
    tidy["open_followups"] = pd.to_numeric(tidy["open_followups"], errors="coerce").fillna(0)
    names = {name: key for key, name in DOMAINS.items()}
    tidy["domain"] = tidy["domain"].map(lambda d: names.get(d, d) if isinstance(d, str) else d)
    unknown = sorted({d for d in tidy["domain"].dropna() if d not in DOMAINS})
    if unknown:
        raise DataError(
            f"progress table: unknown domain(s) {', '.join(map(str, unknown))}; "
            f"use one of {', '.join(DOMAINS)} or their Chinese names"
        )
    village_rows = tidy[tidy["village_code"].notna()]
    dup = village_rows.duplicated(["village_code", "indicator_id"])
    if dup.any():
        pairs = village_rows.loc[dup, ["village_code", "indicator_id"]].astype(str)
        shown = ", ".join(f"{c}/{i}" for c, i in pairs.head(10).itertuples(index=False))
        raise DataError(
            f"progress table: {int(dup.sum())} repeated village/indicator row(s): {shown}; "
            "aggregate to one row per village and indicator"
        )
    return tidy


def _village_values(rows: pd.DataFrame) -> pd.DataFrame:
    """Per village: summed completion over indicators (value) of the indicator count (target)."""
    rows = rows[rows["village_code"].notna() & (rows["target"] > 0)].copy()
    if rows.empty:
        return pd.DataFrame(columns=["village_code", "value", "target", "open_followups", "lines"])
    rows["village_code"] = rows["village_code"].astype(str).str.strip()
    rows["completion"] = (rows["value"].fillna(0) / rows["target"]).clip(0, 1)
    label = rows["label"].where(rows["label"].notna(), rows["indicator_id"]).astype(str)
    rows["line"] = [
        f"{html.escape(lab)}：{_num(v)} / {_num(t)}"
        for lab, v, t in zip(label, rows["value"], rows["target"], strict=True)
    ]
    grouped = rows.groupby("village_code", sort=False)
    return pd.DataFrame(
        {
            "value": grouped["completion"].sum(),
            "target": grouped["completion"].size().astype(float),
            "open_followups": grouped["open_followups"].sum(),
            "lines": grouped["line"].agg(list),
        }
    ).reset_index()


def _open_findings(findings: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    cols = ["lat", "lon", "date", "kind", "status", "rectify_by", "photo", "note", "domain"]
    if findings is None or len(findings) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols}), 0
    missing = [c for c in ("lat", "lon") if c not in findings.columns]
    if missing:
        raise DataError(
            f"findings table lacks column(s) {', '.join(missing)}; it needs lat and lon"
        )
    f = findings.copy()
    for c in cols:
        if c not in f.columns:
            f[c] = pd.NA
    if "open" in f.columns:
        is_open = f["open"].fillna(True).astype(bool)
    else:
        is_open = ~f["status"].astype("string").str.strip().isin(CLOSED_STATUSES).fillna(False)
    f = f[is_open.to_numpy()]
    f["lat"] = pd.to_numeric(f["lat"], errors="coerce")
    f["lon"] = pd.to_numeric(f["lon"], errors="coerce")
    located = f["lat"].notna() & f["lon"].notna()
    names = {name: key for key, name in DOMAINS.items()}
    f["domain"] = f["domain"].map(lambda d: names.get(d, d) if isinstance(d, str) else d)
    return f[located], int((~located).sum())


def _num(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)) or x is pd.NA:
        return "–"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"


def _text(x) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x)):
        return "–"
    if isinstance(x, datetime | pd.Timestamp):
        return x.strftime("%Y-%m-%d")
    return html.escape(scrub_text(str(x)))  # masked: a map is shared more widely than a list


def _overdue(values: pd.Series, today: date) -> np.ndarray:
    """True where the rectify-by date has passed (unparseable or missing dates: not overdue)."""
    stamps = pd.to_datetime(values.astype("string"), errors="coerce", format="mixed")
    return (stamps < pd.Timestamp(today)).to_numpy(dtype=bool)  # NaT compares False


# --- building one map ------------------------------------------------------------------------


def _build_map(
    title: str,
    boundaries: Boundaries,
    rows: pd.DataFrame,
    roads: gpd.GeoDataFrame | None,
    findings: pd.DataFrame,
    basemap: Basemap,
) -> folium.Map:
    villages = boundaries.villages
    values = _village_values(rows)
    cover = coverage_frame(villages, values.drop(columns=["lines"]))
    lines = dict(zip(values["village_code"], values["lines"], strict=True))
    if basemap.gcj02:
        cover = to_gcj02(cover)
        roads = to_gcj02(roads) if roads is not None else None

    fmap = folium.Map(tiles=None, control_scale=True, zoom_control=True, zoom_start=13)
    # Without a tile layer Leaflet knows no zoom range and fitBounds fails; set it on the map.
    fmap.options.update({"maxZoom": 18, "minZoom": 8})
    fmap.get_root().title = html.escape(title)
    for layer in basemap.layers:
        folium.TileLayer(
            tiles=layer.url,
            attr=html.escape(layer.attribution),
            name=layer.name,
            subdomains=layer.subdomains or "abc",
            overlay=layer.overlay,
            max_zoom=layer.max_zoom,
        ).add_to(fmap)

    features = []
    for rec in cover.itertuples(index=False):
        tip = [
            f"<b>{html.escape(str(rec.name))}</b>（{html.escape(str(rec.code))}）",
            "完成率：" + ("暂无数据" if np.isnan(rec.ratio) else f"{rec.ratio:.0%}"),
            *lines.get(rec.code, []),
            f"待跟进：{int(rec.open_followups)} 项",
        ]
        features.append(
            {
                "type": "Feature",
                "properties": {"code": rec.code, "tip": "<br>".join(tip), "colour": rec.colour},
                "geometry": rec.geometry.__geo_interface__,
            }
        )
    geojson = {"type": "FeatureCollection", "features": features}
    folium.GeoJson(
        geojson,
        name="村庄完成率",
        style_function=lambda f: {
            "fillColor": f["properties"]["colour"],
            "color": "#444444",
            "weight": 1.2,
            "fillOpacity": 0.75,
        },
        highlight_function=lambda f: {"weight": 3, "color": "#000000"},
        tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False, sticky=False),
        popup=folium.GeoJsonPopup(fields=["tip"], labels=False),
    ).add_to(fmap)

    if roads is not None:
        _add_roads(fmap, roads, rows)
    if len(findings):
        _add_findings(fmap, findings, basemap)

    folium.LayerControl(collapsed=True).add_to(fmap)
    _Legend(
        title, boundaries.illustrative, basemap.name == "none", roads is not None, len(findings) > 0
    ).add_to(fmap)
    west, south, east, north = cover.total_bounds
    fmap.fit_bounds([[south, west], [north, east]])
    return fmap


def _add_roads(fmap: folium.Map, roads: gpd.GeoDataFrame, rows: pd.DataFrame) -> None:
    seg_rows = rows[rows["segment_id"].notna()] if len(rows) else rows
    done = {
        str(r.segment_id): (r.value, r.target)
        for r in seg_rows.itertuples(index=False)
        if pd.notna(r.target) and r.target > 0
    }
    colours = {k: c for k, _, c in CLASSES}
    features = []
    for road in roads.itertuples(index=False):
        value, target = done.get(road.segment_id, (np.nan, np.nan))
        ratio = value / target if target == target else np.nan
        klass = classify(np.array([ratio], dtype=float))[0]
        planned = f"{road.planned_km:g} km" if pd.notna(road.planned_km) else "亮化"
        tip = [
            f"<b>{html.escape(road.name)}</b>",
            f"计划：{planned}，期限 {road.deadline}",
            "进度：" + ("暂无数据" if klass == "no_data" else f"{_num(value)} / {_num(target)}"),
        ]
        if road.illustrative:
            tip.append("示意线位，非实测")
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "tip": "<br>".join(tip),
                    "colour": colours[klass] if klass != "no_data" else "#555555",
                    "dash": "6 6" if road.kind == "lighting" else None,
                },
                "geometry": road.geometry.__geo_interface__,
            }
        )
    folium.GeoJson(
        {"type": "FeatureCollection", "features": features},
        name="道路工程",
        style_function=lambda f: {
            "color": f["properties"]["colour"],
            "weight": 6,
            "opacity": 0.9,
            "dashArray": f["properties"]["dash"],
        },
        tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False),
        popup=folium.GeoJsonPopup(fields=["tip"], labels=False),
    ).add_to(fmap)


def _add_findings(fmap: folium.Map, findings: pd.DataFrame, basemap: Basemap) -> None:
    lon, lat = findings["lon"].to_numpy(float), findings["lat"].to_numpy(float)
    if basemap.gcj02:
        lon, lat = wgs84_to_gcj02(lon, lat)
    today = datetime.now(SHANGHAI).date()
    _Findings(lat, lon, findings, today).add_to(fmap)


class _Findings(MarkerCluster):
    """Open findings as one compact array, turned into clustered markers in the browser.

    Every text is HTML-escaped here and stored once in a string table; rows hold indexes into
    it. 10,000 findings cost well under 1 MB instead of one folium Marker (and Popup) each.
    """

    _template = folium.template.Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = (function () {
            var s = {{ this.strings }};
            var rows = {{ this.rows }};
            var heads = ["日期：", "状态：", "整改期限：", "备注："];
            var cluster = L.markerClusterGroup({{ this.options|tojavascript }});
            var icons = [0, 1].map(function (late) {
                return L.divIcon({className: "manyi-finding", iconSize: [22, 22],
                    html: '<span style="background:' + (late ? "#d73027" : "#f28e2b") + '"></span>'});
            });
            function popup(r) {
                var parts = ["<b>" + s[r[3]] + "</b>"];
                for (var k = 0; k < 4; k++) {
                    if (r[4 + k] >= 0) { parts.push(heads[k] + s[r[4 + k]]); }
                }
                if (r[8] >= 0) {
                    parts.push('<a href="' + s[r[8]] + '" target="_blank" rel="noopener noreferrer">查看照片</a>');
                }
                return parts.join("<br>");
            }
            var markers = [];
            for (var i = 0; i < rows.length; i++) {
                var r = rows[i];
                var m = L.marker([r[0], r[1]], {icon: icons[r[2]]});
                m.bindPopup(popup.bind(null, r), {maxWidth: 280});
                markers.push(m);
            }
            cluster.addLayers(markers);
            cluster.addTo({{ this._parent.get_name() }});
            return cluster;
        })();
        {% endmacro %}
        """
    )

    def __init__(self, lat: np.ndarray, lon: np.ndarray, findings: pd.DataFrame, today: date):
        super().__init__(name="待整改问题", chunkedLoading=True)
        table: dict[str, int] = {}

        def ref(text: str | None) -> int:
            return -1 if text is None else table.setdefault(text, len(table))

        rows = []
        late = _overdue(findings["rectify_by"], today)
        for y, x, overdue, row in zip(
            lat, lon, late, findings.itertuples(index=False), strict=True
        ):
            note = row.note if isinstance(row.note, str) and row.note.strip() else None
            rows.append(
                [
                    round(float(y), 6),
                    round(float(x), 6),
                    int(overdue),
                    ref(_text(row.kind)),
                    ref(_text(row.date)),
                    ref(_text(row.status)),
                    ref(_text(row.rectify_by)),
                    ref(html.escape(scrub_text(note)) if note else None),
                    ref(_photo_href(row.photo)),
                ]
            )
        self.rows = _js_json(rows)
        self.strings = _js_json(list(table))


_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_WEB_LINK = re.compile(r"https?://", re.IGNORECASE)
_RELATIVE = re.compile(r"[\w./-]+")


def _photo_href(photo) -> str | None:
    """An attribute-safe link to the photo: a web link or a relative path, nothing else.

    Browsers drop tabs, newlines and other control characters from a URL before reading its
    scheme (``java\tscript:`` runs as ``javascript:``), so they are removed before checking.
    A relative path is letters, digits, ``_ . / -`` only and may not start with ``//``, which
    the browser would read as another host.
    """
    if not isinstance(photo, str):
        return None
    link = _CONTROL.sub("", photo)
    if not link:
        return None
    if _WEB_LINK.match(link) or (_RELATIVE.fullmatch(link) and not link.startswith("//")):
        return html.escape(link, quote=True)
    return None


def _js_json(value) -> str:
    """JSON for a <script> block: UTF-8 kept compact, but no "<", ">" or "&" that could end it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Legend(folium.MacroElement):
    """Chinese legend (collapsible, closed on phones) and the illustrative-geometry notice."""

    _template = folium.template.Template(
        """
        {% macro html(this, kwargs) %}
        <div id="{{ this.get_name() }}" class="manyi-legend"><details open>
          <summary>{{ this.title }}</summary>
          {% for label, colour in this.rows %}
          <div><i style="background:{{ colour }}"></i>{{ label }}</div>
          {% endfor %}
          {% if this.findings %}<div><i class="manyi-finding-key"></i>待整改问题（红色：已逾期）</div>{% endif %}
          {% if this.roads %}<div><i class="manyi-road-key"></i>道路工程（虚线：亮化）</div>{% endif %}
        </details></div>
        {% if this.notice %}<div id="{{ this.get_name() }}_notice" class="manyi-notice">{{ this.notice }}</div>{% endif %}
        {% endmacro %}
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }};
            function dock(id, position) {
                var el = document.getElementById(id);
                if (!el) { return; }
                var control = L.control({position: position});
                control.onAdd = function () { L.DomEvent.disableClickPropagation(el); return el; };
                control.addTo(map);
            }
            dock("{{ this.get_name() }}", "bottomright");
            dock("{{ this.get_name() }}_notice", "bottomleft");
            if (window.innerWidth < 600) {
                document.querySelector("#{{ this.get_name() }} details").removeAttribute("open");
            }
        })();
        {% endmacro %}
        """
    )

    def __init__(self, title: str, illustrative: bool, blank: bool, roads: bool, findings: bool):
        super().__init__()
        self.roads, self.findings = roads, findings
        self._name = "Legend"
        self.title = html.escape(title)
        self.rows = [(html.escape(label), colour) for _, label, colour in CLASSES]
        self.notice = NOTICE if illustrative else ""
        self.blank = blank


# --- offline rendering -----------------------------------------------------------------------

_ASSET_URL = re.compile(
    r"""<(?:script|img|iframe|source)\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//"""
    r"""|@import\s+["']?(?:url\()?\s*["']?(?:https?:)?//""",
    re.IGNORECASE,
)

_CSS = """
html, body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif; }
__BACKGROUND__
.manyi-legend { background: rgba(255,255,255,.92); padding: 6px 10px; border-radius: 6px;
  font-size: 13px; line-height: 1.5; max-width: 46vw; box-shadow: 0 1px 4px rgba(0,0,0,.3); }
.manyi-legend summary { font-weight: bold; cursor: pointer; padding: 4px 0; }
.manyi-legend i { display: inline-block; width: 14px; height: 14px; margin-right: 6px;
  vertical-align: -2px; border: 1px solid #555; }
.manyi-legend i.manyi-finding-key { border-radius: 50%; background: #f28e2b; }
.manyi-legend i.manyi-road-key { height: 4px; border: 0; background: #555; vertical-align: 3px; }
.manyi-notice { background: #fff3cd; color: #8a1c1c; font-weight: bold; font-size: 14px;
  padding: 4px 8px; border: 1px solid #d9a400; border-radius: 4px; }
.manyi-finding span { display: block; width: 18px; height: 18px; border-radius: 50%;
  border: 2px solid #fff; box-shadow: 0 0 3px rgba(0,0,0,.7); }
.leaflet-popup-content { font-size: 15px; line-height: 1.6; min-width: 180px; }
.leaflet-popup-content a { display: inline-block; padding: 6px 0; }
.leaflet-tooltip { font-size: 13px; }
"""


def _render_offline(fmap: folium.Map) -> str:
    """Render with every script and stylesheet inlined; refuse to write a map that needs a CDN."""
    stack = [fmap.get_root()]
    while stack:
        element = stack.pop()
        # folium and its plugins add CDN links at render time from these lists.
        if hasattr(element, "default_js"):
            element.default_js = []
        if hasattr(element, "default_css"):
            element.default_css = []
        stack.extend(element._children.values())
    blank = any(isinstance(c, _Legend) and c.blank for c in fmap._children.values())
    background = ".leaflet-container { background: #ffffff; }" if blank else ""
    header = fmap.get_root().header
    leaflet_css, cluster_css, leaflet_js, cluster_js = _assets()
    header.add_child(folium.Element(f"<style>{leaflet_css}\n{cluster_css}</style>"), name="z_css")
    header.add_child(
        folium.Element(f"<style>{_CSS.replace('__BACKGROUND__', background)}</style>"),
        name="z_manyi",
    )
    header.add_child(folium.Element(f"<script>{leaflet_js}</script>"), name="z_leaflet")
    header.add_child(folium.Element(f"<script>{cluster_js}</script>"), name="z_cluster")
    page = fmap.get_root().render()
    page = page.replace("<html>", '<html lang="zh-CN">', 1)
    found = _ASSET_URL.search(page)
    if found:  # a folium upgrade added a new CDN link: fail loudly rather than ship a blank map
        raise DataError(f"map would load an online asset ({found.group(0)!r}); update geo/maps.py")
    return page


@cache
def _assets() -> tuple[str, str, str, str]:
    leaflet_dir = Path(xs_leaflet.BASE_DIR)
    cluster_dir = Path(xs_cluster.BASE_DIR)

    def data_uri(match: re.Match) -> str:
        image = leaflet_dir / match.group(1)
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        return f"url(data:image/png;base64,{encoded})"

    leaflet_css = re.sub(
        r"url\(\s*['\"]?(images/[\w.-]+\.png)['\"]?\s*\)",
        data_uri,
        (leaflet_dir / "leaflet.css").read_text(encoding="utf-8"),
    )
    cluster_css = (cluster_dir / "MarkerCluster.css").read_text(encoding="utf-8") + (
        cluster_dir / "MarkerCluster.Default.css"
    ).read_text(encoding="utf-8")
    # `</script` inside inlined JS would end the script element early.
    leaflet_js = (
        (leaflet_dir / "leaflet.js").read_text(encoding="utf-8").replace("</script", "<\\/script")
    )
    cluster_js = (cluster_dir / "leaflet.markercluster.js").read_text(encoding="utf-8")
    cluster_js = cluster_js.replace("</script", "<\\/script")
    # Source-map comments would make devtools fetch files that are not there.
    strip = re.compile(r"^//# sourceMappingURL=.*$", re.M)
    return leaflet_css, cluster_css, strip.sub("", leaflet_js), strip.sub("", cluster_js)


_INDEX = Environment(autoescape=True).from_string(
    """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif;
  margin: 0 auto; max-width: 720px; padding: 12px 16px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.4em; color: #555; }
ul { list-style: none; padding: 0; }
li a { display: block; padding: 14px 12px; margin: 6px 0; border: 1px solid #ccc;
  border-radius: 8px; text-decoration: none; color: #0b57d0; font-size: 1.05em; }
li a small { color: #777; margin-left: 6px; }
footer { color: #888; font-size: .85em; margin-top: 2em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
{% for section in ["地图", "报告与清单"] %}
{% set items = entries | selectattr("section", "equalto", section) | list %}
{% if items %}<h2>{{ section }}</h2><ul>
{% for e in items %}<li><a href="{{ e.href }}">{{ e.label }}<small>{{ e.kind }}</small></a></li>
{% endfor %}</ul>{% endif %}
{% endfor %}
{% if not entries %}<p>暂无输出。</p>{% endif %}
<footer>生成时间 {{ stamp }}（北京时间）</footer>
</body>
</html>
"""
)
