"""The layers of one map: the villages coloured by completion (choropleth), the road works,
the open findings drawn in the browser from one compact array and clustered, and the Chinese
legend with the illustrative-geometry notice.

Every user-entered text is HTML-escaped (and masked) in Python before it reaches a tooltip or
popup. Findings are never one folium ``Marker`` per point, so a town-year stays well under 3 MB.
"""

from __future__ import annotations

import html
import json
import re
from datetime import date, datetime

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
from folium.plugins import MarkerCluster

from geo.basemaps import Basemap, to_gcj02, wgs84_to_gcj02
from geo.boundaries import Boundaries
from geo.coverage import CLASSES, classify, coverage_frame
from geo.illustrative import NOTICE
from pipelines.config import SHANGHAI
from pipelines.privacy import scrub_text


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


def build_map(
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

    if roads is not None and len(roads):  # a town whose plan declares no road works has none
        _add_roads(fmap, roads, rows)
    if len(findings):
        _add_findings(fmap, findings, basemap)

    folium.LayerControl(collapsed=True).add_to(fmap)
    _Legend(
        title, boundaries.illustrative, roads is not None and len(roads) > 0, len(findings) > 0
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


def safe_link(photo) -> str | None:
    """``photo`` if it is a link safe to put in an ``href``: a web link or a relative path,
    nothing else (None otherwise). Not escaped: escape it for where it goes.

    Browsers drop tabs, newlines and other control characters from a URL before reading its
    scheme (``java\tscript:`` runs as ``javascript:``), so they are removed before checking.
    A relative path is letters, digits, ``_ . / -`` only and may not start with ``//``, which
    the browser would read as another host. The portal's photo routes (``/p/…/photo/…``) pass.
    """
    if not isinstance(photo, str):
        return None
    link = _CONTROL.sub("", photo)
    if not link:
        return None
    if _WEB_LINK.match(link) or (_RELATIVE.fullmatch(link) and not link.startswith("//")):
        return link
    return None


def _photo_href(photo) -> str | None:
    """:func:`safe_link`, HTML-escaped for the popup's attribute."""
    link = safe_link(photo)
    return None if link is None else html.escape(link, quote=True)


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

    def __init__(self, title: str, illustrative: bool, roads: bool, findings: bool):
        super().__init__()
        self.roads, self.findings = roads, findings
        self._name = "Legend"
        self.title = html.escape(title)
        self.rows = [(html.escape(label), colour) for _, label, colour in CLASSES]
        self.notice = NOTICE if illustrative else ""


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


def page_style(blank: bool) -> str:
    """The CSS of the legend, notice and finding markers; ``blank`` (no tile layer) paints the
    map's background white."""
    background = ".leaflet-container { background: #ffffff; }" if blank else ""
    return _CSS.replace("__BACKGROUND__", background)
