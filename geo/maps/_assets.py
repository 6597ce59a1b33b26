"""Offline map pages: Leaflet and Leaflet.markercluster inlined from the ``xstatic-leaflet`` /
``xstatic-leaflet-markercluster`` packages, folium's CDN links (jQuery, Bootstrap, Font Awesome,
awesome-markers) dropped, and a guard that refuses to write a page that would still load
anything from the network.
"""

from __future__ import annotations

import base64
import re
from functools import cache
from pathlib import Path

import folium
from xstatic.pkg import leaflet as xs_leaflet
from xstatic.pkg import leaflet_markercluster as xs_cluster

from pipelines.errors import DataError

_ASSET_URL = re.compile(
    r"""<(?:script|img|iframe|source)\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//"""
    r"""|@import\s+["']?(?:url\()?\s*["']?(?:https?:)?//""",
    re.IGNORECASE,
)


def render_offline(fmap: folium.Map, style: str) -> str:
    """Render with every script and stylesheet inlined, and ``style`` (the page's own CSS) after
    them; refuse to write a map that needs a CDN."""
    stack = [fmap.get_root()]
    while stack:
        element = stack.pop()
        # folium and its plugins add CDN links at render time from these lists.
        if hasattr(element, "default_js"):
            element.default_js = []
        if hasattr(element, "default_css"):
            element.default_css = []
        stack.extend(element._children.values())
    header = fmap.get_root().header
    leaflet_css, cluster_css, leaflet_js, cluster_js = _assets()
    header.add_child(folium.Element(f"<style>{leaflet_css}\n{cluster_css}</style>"), name="z_css")
    header.add_child(
        folium.Element(f"<style>{style}</style>"),
        name="z_manyi",
    )
    header.add_child(folium.Element(f"<script>{leaflet_js}</script>"), name="z_leaflet")
    header.add_child(folium.Element(f"<script>{cluster_js}</script>"), name="z_cluster")
    page = fmap.get_root().render()
    page = page.replace("<html>", '<html lang="zh-CN">', 1)
    found = _ASSET_URL.search(page)
    if found:  # a folium upgrade added a new CDN link: fail loudly rather than ship a blank map
        raise DataError(
            f"map would load an online asset ({found.group(0)!r}); update geo/maps/_assets.py"
        )
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
