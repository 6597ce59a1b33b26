"""The layers of a map: villages coloured by completion, roads, clustered findings with escaped,
masked text and safe links."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from geo.illustrative import illustrative_boundaries
from geo.maps import draw_maps
from pipelines.analysis.plan import load_plan
from pipelines.config import Settings
from pipelines.privacy import find_unmasked
from tests.geo.maps._frames import XSS, data_array, hostile_findings


def test_user_text_is_escaped_and_unsafe_links_dropped(tmp_path):
    boundaries = illustrative_boundaries()
    boundaries.villages.loc[0, "name"] = "<script>alert(3)</script>"
    result = draw_maps(Settings(), tmp_path, None, hostile_findings(), boundaries=boundaries)
    page = result.maps["overview"].read_text(encoding="utf-8")
    assert XSS not in page and "onerror=alert(1)>" not in page
    assert "<script>alert(3)" not in page
    popups = [row[2] for row in data_array(page)]
    assert len(popups) == 2  # the 已整改 finding is not open
    assert all("备注：&lt;img src=x onerror=alert(1)&gt;" in p for p in popups)
    assert "javascript:" not in " ".join(popups)
    assert sum('href="attachments/p1.jpg"' in p for p in popups) == 1
    # A domain map shows only its own findings.
    assert len(data_array(result.maps["living_environment"].read_text(encoding="utf-8"))) == 2
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
    result = draw_maps(Settings(), tmp_path, progress, None, segments=load_plan().segments)
    living = result.maps["living_environment"].read_text(encoding="utf-8")
    overview = result.maps["overview"].read_text(encoding="utf-8")
    # Village 0: 1/1 on living environment -> done; 1/1 and 0/1 overall -> 50–75%.
    done, half, quarter = "#1a9850", "#fee08b", "#fc8d59"
    assert re.search(rf'"code": "{codes[0]}".{{0,4000}}?"colour": "{done}"', living, re.S)
    assert re.search(rf'"code": "{codes[0]}".{{0,4000}}?"colour": "{half}"', overview, re.S)
    assert re.search(rf'"code": "{codes[1]}".{{0,4000}}?"colour": "{quarter}"', living, re.S)
    assert "道路工程" in living and "道路工程" not in result.maps["education"].read_text("utf-8")


def test_a_town_year_of_findings_stays_small(tmp_path):
    findings = hostile_findings(10_000)
    findings["note"] = [f"第{i}号：路边柴草垛未清理，已通知户主" for i in range(len(findings))]
    result = draw_maps(Settings(), tmp_path, None, findings)
    size = result.maps["overview"].stat().st_size
    assert size < 3_000_000, size
    page = Path(result.maps["overview"]).read_text("utf-8")
    assert len(data_array(page)) == 9_999 and page.count("L.marker(") == 1


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
    findings = hostile_findings(2).assign(photo=[photo, "../2023-06-30/photos/ab12.jpg"])
    findings["status"] = "待整改"
    page = draw_maps(Settings(), tmp_path, None, findings).maps["overview"].read_text("utf-8")
    popups = [row[2] for row in data_array(page)]
    assert [("href=" in p) for p in popups] == [False, True]
    assert 'href="../2023-06-30/photos/ab12.jpg"' in popups[1]
    assert "script:" not in page.split("var rows")[0].split("var s =")[-1]
    assert "evil.example" not in page


def test_web_links_keep_working(tmp_path):
    findings = hostile_findings(2).assign(photo=["https://img.example.cn/p/1.jpg", "HTTP://img.example.cn/2.jpg"])  # fmt: skip
    findings["status"] = "待整改"
    page = draw_maps(Settings(), tmp_path, None, findings).maps["overview"].read_text("utf-8")
    hrefs = [re.search(r'href="([^"]*)"', row[2]).group(1) for row in data_array(page)]
    assert hrefs == ["https://img.example.cn/p/1.jpg", "HTTP://img.example.cn/2.jpg"]


def test_personal_numbers_in_finding_notes_are_masked_on_the_map(tmp_path):
    findings = hostile_findings()
    findings["note"] = ["户主电话 138.1234.5678，身份证 370481-1990-0101-1234"] * len(findings)
    findings["kind"] = ["联系 １３８１２３４５６７８"] * len(findings)
    result = draw_maps(Settings(), tmp_path, None, findings)
    page = result.maps["overview"].read_text(encoding="utf-8")
    popups = " ".join(row[2] for row in data_array(page))
    assert "138****5678" in popups and "370481********1234" in popups
    assert find_unmasked(page) == []
