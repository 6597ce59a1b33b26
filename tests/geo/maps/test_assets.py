"""Every map opens offline: nothing is fetched from the network."""

from __future__ import annotations

import re

import pytest

from geo.maps import draw_maps
from pipelines.config import Settings
from tests.geo.maps._frames import hostile_findings

# Anything the browser would fetch: scripts, stylesheets, images, frames, CSS url()/@import.
ONLINE_ASSET = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//"
    r"|<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//|@import",
    re.I,
)


@pytest.mark.parametrize("basemap", ["none", "amap"])
def test_offline_html_has_no_online_assets(tmp_path, basemap):
    result = draw_maps(Settings(basemap=basemap), tmp_path, None, hostile_findings())
    for path in result.maps.values():
        page = path.read_text(encoding="utf-8")
        assert not ONLINE_ASSET.search(page), (path, ONLINE_ASSET.search(page))
        assert "<script src" not in page and "stylesheet" not in page
        if path.stem in ("overview", "living_environment"):
            assert "L.markerClusterGroup(" in page
