""":func:`geo.maps.draw_maps`: one page per map, the input frames checked, the basemap chosen."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from geo.illustrative import NOTICE, illustrative_boundaries
from geo.maps import DOMAINS, draw_maps
from pipelines.config import Secret, Settings
from pipelines.errors import DataError


def _west(page: str) -> float:
    # The last fitBounds is the map's own; Leaflet's source has one for the whole world.
    found = re.findall(r"fitBounds\(\s*\[\[([-\d.]+),\s*([-\d.]+)\]", page)
    return float(found[-1][1])


def test_maps_without_progress_draw_all_villages_with_zero_coverage(tmp_path):
    result = draw_maps(Settings(), tmp_path, None, None)
    assert set(result.maps) == {"overview", *DOMAINS}
    assert result.illustrative and result.basemap == "none"
    assert all(p.exists() for p in result.files)
    page = result.maps["overview"].read_text(encoding="utf-8")
    assert page.count('"code": "3704811152') == 56
    for path in result.maps.values():
        text = path.read_text(encoding="utf-8")
        assert NOTICE in text, path
        assert 'name="viewport"' in text


def test_bad_progress_tables_are_refused(tmp_path):
    code = illustrative_boundaries().villages["code"][0]
    twice = pd.DataFrame(
        {"village_code": [code, code], "indicator_id": ["a", "a"], "value": 1, "target": 2}
    )
    with pytest.raises(DataError, match="repeated village/indicator"):
        draw_maps(Settings(), tmp_path, twice, None)
    other = twice.assign(indicator_id=["a", "b"], domain=["roads", None])
    with pytest.raises(DataError, match="unknown domain"):
        draw_maps(Settings(), tmp_path, other, None)
    with pytest.raises(DataError, match="lacks column"):
        draw_maps(Settings(), tmp_path, twice.drop(columns="target"), None)


def test_amap_shifts_geometry_and_tianditu_uses_the_key(tmp_path):
    plain = draw_maps(Settings(), tmp_path / "a", None, None).maps["overview"]
    amap = draw_maps(Settings(basemap="amap"), tmp_path / "b", None, None).maps["overview"]
    shift = _west(amap.read_text("utf-8")) - _west(plain.read_text("utf-8"))
    assert 0.005 < shift < 0.0065  # ~530 m east at 35.17°N
    result = draw_maps(
        Settings(basemap="tianditu", tianditu_key=Secret("tk-secret")), tmp_path / "c", None, None
    )
    page = result.maps["overview"].read_text("utf-8")
    assert "vec_w/wmts" in page and "cva_w/wmts" in page and "tk=tk-secret" in page
    assert "tk-secret" not in repr(result)
