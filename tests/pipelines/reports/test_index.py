"""The index page: every map and report linked, maps first, the newest report first."""

from __future__ import annotations

from geo.maps import draw_maps
from pipelines.config import Settings
from pipelines.reports.index import write_index


def test_index_links_every_map_and_later_reports(tmp_path):
    result = draw_maps(Settings(), tmp_path, None, None)
    written = write_index(tmp_path, title="龙阳镇 满意度提升工程")
    assert written == tmp_path / "index.html"  # was draw_maps's result.index
    index = written.read_text(encoding="utf-8")
    assert 'name="viewport"' in index and 'lang="zh-CN"' in index
    for key, path in result.maps.items():
        assert f'href="maps/{path.name}"' in index, key
    assert "龙阳镇 人居环境" in index
    report = tmp_path / "reports" / "dispatch.html"
    report.parent.mkdir()
    report.write_text("<html><head><title>月调度通报 <5月></title></head></html>", "utf-8")
    index = write_index(tmp_path).read_text(encoding="utf-8")
    assert 'href="reports/dispatch.html"' in index and "月调度通报 &lt;5月&gt;" in index


def test_index_lists_the_overview_first_and_the_newest_report_first(tmp_path) -> None:
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
