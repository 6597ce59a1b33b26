from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geo.illustrative import NOTICE, illustrative_boundaries
from geo.maps import DOMAINS, draw_maps, write_index
from pipelines.analysis.privacy import find_unmasked
from pipelines.config import Secret, Settings
from pipelines.errors import DataError

XSS = "<img src=x onerror=alert(1)>"
# Anything the browser would fetch: scripts, stylesheets, images, frames, CSS url()/@import.
ONLINE_ASSET = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//"
    r"|<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//|@import",
    re.I,
)


def _findings(n: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "lat": rng.uniform(35.165, 35.185, n),
            "lon": rng.uniform(117.235, 117.285, n),
            "date": ["2023-05-02"] * n,
            "kind": ["三堆两垛"] * n,
            "status": ["待整改"] * (n - 1) + ["已整改"],
            "rectify_by": ["2023-05-10"] * n,
            "photo": ["javascript:alert(2)"] + ["attachments/p1.jpg"] * (n - 1),
            "note": [XSS] * n,
            "domain": ["人居环境"] * n,
        }
    )


def _data_array(page: str) -> list:
    """The findings' popups as the browser builds them: pre-escaped strings joined by the JS."""
    strings = re.search(r"var s = (\[.*?\]);\n", page, re.S)
    rows = re.search(r"var rows = (\[.*?\]);\n", page, re.S)
    assert strings and rows, "no clustered findings on the map"
    table = json.loads(strings.group(1))
    heads = ["日期：", "状态：", "整改期限：", "备注："]
    popups = []
    for r in json.loads(rows.group(1)):
        parts = [f"<b>{table[r[3]]}</b>"]
        parts += [heads[k] + table[r[4 + k]] for k in range(4) if r[4 + k] >= 0]
        if r[8] >= 0:
            parts.append(f'<a href="{table[r[8]]}">')
        popups.append([r[0], r[1], "<br>".join(parts)])
    return popups


def _west(page: str) -> float:
    # The last fitBounds is the map's own; Leaflet's source has one for the whole world.
    found = re.findall(r"fitBounds\(\s*\[\[([-\d.]+),\s*([-\d.]+)\]", page)
    return float(found[-1][1])


def test_maps_without_progress_draw_all_villages_with_zero_coverage(tmp_path):
    result = draw_maps(Settings(), tmp_path, None, None)
    assert set(result.maps) == {"overview", *DOMAINS}
    assert result.illustrative and result.basemap == "none"
    assert all(p.exists() for p in result.files) and result.index == tmp_path / "index.html"
    page = result.maps["overview"].read_text(encoding="utf-8")
    assert page.count('"code": "3704811152') == 56
    for path in result.maps.values():
        text = path.read_text(encoding="utf-8")
        assert NOTICE in text, path
        assert 'name="viewport"' in text


@pytest.mark.parametrize("basemap", ["none", "amap"])
def test_offline_html_has_no_online_assets(tmp_path, basemap):
    result = draw_maps(Settings(basemap=basemap), tmp_path, None, _findings())
    for path in result.maps.values():
        page = path.read_text(encoding="utf-8")
        assert not ONLINE_ASSET.search(page), (path, ONLINE_ASSET.search(page))
        assert "<script src" not in page and "stylesheet" not in page
        if path.stem in ("overview", "living_environment"):
            assert "L.markerClusterGroup(" in page


def test_user_text_is_escaped_and_unsafe_links_dropped(tmp_path):
    boundaries = illustrative_boundaries()
    boundaries.villages.loc[0, "name"] = "<script>alert(3)</script>"
    result = draw_maps(Settings(), tmp_path, None, _findings(), boundaries=boundaries)
    page = result.maps["overview"].read_text(encoding="utf-8")
    assert XSS not in page and "onerror=alert(1)>" not in page
    assert "<script>alert(3)" not in page
    popups = [row[2] for row in _data_array(page)]
    assert len(popups) == 2  # the 已整改 finding is not open
    assert all("备注：&lt;img src=x onerror=alert(1)&gt;" in p for p in popups)
    assert "javascript:" not in " ".join(popups)
    assert sum('href="attachments/p1.jpg"' in p for p in popups) == 1
    # A domain map shows only its own findings.
    assert len(_data_array(result.maps["living_environment"].read_text(encoding="utf-8"))) == 2
    assert "var rows" not in result.maps["education"].read_text(encoding="utf-8")


def test_progress_colours_villages_and_roads(tmp_path):
    codes = illustrative_boundaries().villages["code"]
    progress = pd.DataFrame(
        {
            "village_code": [codes[0], codes[0], codes[1], None],
            "indicator_id": ["sweep_q2", "shows", "sweep_q2", "road_km"],
            "domain": ["人居环境", "culture_sports", "living_environment", "人居环境"],
            "label": ["二季度清扫", "送戏下乡", "二季度清扫", "道路"],
            "value": [1, 0, 1, 0.9],
            "target": [1, 1, 4, 0.9],
            "open_followups": [2, 0, 0, 0],
            "segment_id": [None, None, None, "longling_dongshatu"],
        }
    )
    result = draw_maps(Settings(), tmp_path, progress, None)
    living = result.maps["living_environment"].read_text(encoding="utf-8")
    overview = result.maps["overview"].read_text(encoding="utf-8")
    # Village 0: 1/1 on living environment -> done; 1/1 and 0/1 overall -> 50–75%.
    done, half, quarter = "#1a9850", "#fee08b", "#fc8d59"
    assert re.search(rf'"code": "{codes[0]}".{{0,4000}}?"colour": "{done}"', living, re.S)
    assert re.search(rf'"code": "{codes[0]}".{{0,4000}}?"colour": "{half}"', overview, re.S)
    assert re.search(rf'"code": "{codes[1]}".{{0,4000}}?"colour": "{quarter}"', living, re.S)
    assert "道路工程" in living and "道路工程" not in result.maps["education"].read_text("utf-8")


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


def test_index_links_every_map_and_later_reports(tmp_path):
    result = draw_maps(Settings(), tmp_path, None, None)
    index = result.index.read_text(encoding="utf-8")
    assert 'name="viewport"' in index and 'lang="zh-CN"' in index
    for key, path in result.maps.items():
        assert f'href="maps/{path.name}"' in index, key
    assert "龙阳镇 人居环境" in index
    report = tmp_path / "reports" / "dispatch.html"
    report.parent.mkdir()
    report.write_text("<html><head><title>月调度通报 <5月></title></head></html>", "utf-8")
    index = write_index(tmp_path).read_text(encoding="utf-8")
    assert 'href="reports/dispatch.html"' in index and "月调度通报 &lt;5月&gt;" in index


def test_a_town_year_of_findings_stays_small(tmp_path):
    findings = _findings(10_000)
    findings["note"] = [f"第{i}号：路边柴草垛未清理，已通知户主" for i in range(len(findings))]
    result = draw_maps(Settings(), tmp_path, None, findings)
    size = result.maps["overview"].stat().st_size
    assert size < 3_000_000, size
    page = Path(result.maps["overview"]).read_text("utf-8")
    assert len(_data_array(page)) == 9_999 and page.count("L.marker(") == 1


@pytest.mark.parametrize(
    "photo",
    [
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "\x01javascript:alert(1)",
        " javascript:alert(1)",
        "//evil.example/x",
        "\t//evil.example/x",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        "\\\\evil.example\\x",
        'p.jpg" onmouseover="alert(1)',
    ],
)
def test_a_photo_link_is_a_web_link_or_a_relative_path_only(tmp_path, photo):
    findings = _findings(2).assign(photo=[photo, "../2023-06-30/photos/ab12.jpg"])
    findings["status"] = "待整改"
    page = draw_maps(Settings(), tmp_path, None, findings).maps["overview"].read_text("utf-8")
    popups = [row[2] for row in _data_array(page)]
    assert [("href=" in p) for p in popups] == [False, True]
    assert 'href="../2023-06-30/photos/ab12.jpg"' in popups[1]
    assert "script:" not in page.split("var rows")[0].split("var s =")[-1]
    assert "evil.example" not in page


def test_web_links_keep_working(tmp_path):
    findings = _findings(2).assign(photo=["https://img.example.cn/p/1.jpg", "HTTP://img.example.cn/2.jpg"])  # fmt: skip
    findings["status"] = "待整改"
    page = draw_maps(Settings(), tmp_path, None, findings).maps["overview"].read_text("utf-8")
    hrefs = [re.search(r'href="([^"]*)"', row[2]).group(1) for row in _data_array(page)]
    assert hrefs == ["https://img.example.cn/p/1.jpg", "HTTP://img.example.cn/2.jpg"]


def test_index_lists_the_overview_first_and_the_newest_report_first(tmp_path) -> None:
    from geo.maps import write_index

    for rel in ("maps/education.html", "maps/overview.html", "2023-09-30/跟进清单_2023-09-30.csv",
                "2023-10-31/数据质量_2023-10-31.csv", "2023-10-31/月调度通报_2023-10_公开版.xlsx",
                "2023-10-31/月调度通报_2023-10_公开版.html"):  # fmt: skip
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<title>t</title>", encoding="utf-8")
    text = write_index(tmp_path).read_text(encoding="utf-8")
    order = [text.index(f'href="{rel}"') for rel in (
        "maps/overview.html", "maps/education.html", "2023-10-31/月调度通报_2023-10_公开版.html",
        "2023-10-31/月调度通报_2023-10_公开版.xlsx", "2023-10-31/数据质量_2023-10-31.csv",
        "2023-09-30/跟进清单_2023-09-30.csv")]  # fmt: skip
    assert order == sorted(order)


def test_personal_numbers_in_finding_notes_are_masked_on_the_map(tmp_path):
    findings = _findings()
    findings["note"] = ["户主电话 138.1234.5678，身份证 370481-1990-0101-1234"] * len(findings)
    findings["kind"] = ["联系 １３８１２３４５６７８"] * len(findings)
    result = draw_maps(Settings(), tmp_path, None, findings)
    page = result.maps["overview"].read_text(encoding="utf-8")
    popups = " ".join(row[2] for row in _data_array(page))
    assert "138****5678" in popups and "370481********1234" in popups
    assert find_unmasked(page) == []
