"""Issue 12: the internal dispatch report and the maps cut to a scope (a village, a liaison
group), from the demo's year whose every free-text field says which village it came from
(:mod:`._demo_scope`). Nothing row-level of another village may reach a scope's page,
workbook or maps; a stored ``<script>``/``<img onerror>`` is shown as text."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from openpyxl import load_workbook

from pipelines.analysis import followups as fu
from pipelines.errors import DataError
from pipelines.reports._inputs import PHOTO_FORMS
from pipelines.reports.scoped import (
    draw_scope_maps,
    scoped_dispatch_html,
    scoped_dispatch_xlsx,
    style_hashes,
)
from tests.pipelines.reports._demo_scope import TOWN_MARK, VS, XSS, demo_outputs, mark
from tests.pipelines.reports._town import sheet, texts

VILLAGE = next(v for v in VS if v.name == "龙山屯")  # 3 overdue findings; "龙山" is another village
GROUP = [v for v in VS if v.liaison_group == VILLAGE.liaison_group]
OWN = frozenset({VILLAGE.code})


@pytest.fixture(scope="module")
def demo(build: Path, tmp_path_factory: pytest.TempPathFactory):
    return demo_outputs(build, tmp_path_factory.getbasetemp())


def _photo(item) -> str:
    return f"/p/v{item['village_code']}/photo/{item.name}"


def _read(text: str) -> str:
    """Text as a reader sees it: HTML entities and JSON ``\\uXXXX`` escapes read back."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text)
    return html.unescape(text)


def _leaks(text: str, scope: list, demo) -> list[str]:
    """Every other village's name, code or marked text found in ``text``. The plan's own
    words (indicator labels, road names such as 龙阳村至闫庄段, departments such as 龙阳学区,
    the town) are the town's and public: taken out first, as is the scope's own name (龙山屯
    holds 龙山)."""
    settings, out = demo
    plan = out.inputs.plan
    public = [s.name for s in plan.segments] + [i.label for i in plan.indicators]
    public += list(plan.departments.values())
    public += [i.label[:18] for i in plan.indicators]  # cut short in the charts
    for words in sorted(public, key=len, reverse=True):
        text = text.replace(words, "")
    text = text.replace(settings.town, "")
    for v in scope:
        text = text.replace(v.name, "〔本范围〕")
    found = [w for v in VS if v not in scope for w in (v.name, v.code, mark(v)) if w in text]
    return found + ([TOWN_MARK] if TOWN_MARK in text else [])


def test_a_village_sees_only_its_own_rows_in_the_page_workbook_and_maps(demo, tmp_path: Path) -> None:  # fmt: skip
    settings, out = demo
    page = scoped_dispatch_html(settings, out, OWN, VILLAGE.name, photo_url=_photo)
    book = scoped_dispatch_xlsx(settings, out, OWN, VILLAGE.name, tmp_path / "v.xlsx")
    maps = draw_scope_maps(settings, out, tmp_path, OWN, photo_url=_photo, label=VILLAGE.name)
    sources = {"page": page, "workbook": texts(book)}
    sources |= {p.name: p.read_text(encoding="utf-8") for p in maps.files}
    for name, text in sources.items():
        assert _leaks(_read(text), [VILLAGE], demo) == [], name
        assert VILLAGE.name in _read(text), name  # and the scan reads what it scans
    # its own follow-ups are there: the 3 overdue findings, with the text sent about them
    mine = out.followups[out.followups["village_code"] == VILLAGE.code]
    late = mine[mine["state"] == fu.OVERDUE]
    assert len(late) == 3 and mark(VILLAGE) in page
    assert [r["村"] for r in sheet(book, "逾期事项")] == [VILLAGE.name] * 3
    assert {r["村代码"] for r in sheet(book, "村级进度")} == {VILLAGE.code}
    # its group's row only, counting only this village; no 镇直 row (roads are the town's)
    assert [(r["帮包联系组"], r["村数"], r["待跟进事项"]) for r in sheet(book, "帮包联系组")] == [
        (f"第{VILLAGE.liaison_group}组", 1, len(mine))
    ]
    checks = out.checks.table
    assert f"{int((checks['village_code'] == VILLAGE.code).sum())}</b>待核对记录" in page
    # the title names the scope; the town's figures that stay are labelled 全镇
    assert f"·内部版·{VILLAGE.name}）</title>" in page and "分领域进展（全镇）" in page
    assert load_workbook(book).sheetnames[:2] == ["概况", "指标进度（全镇）"]
    # the maps: its polygon, titled with its name; the roads are the town's (drawn for it only)
    overview = maps.maps["overview"].read_text(encoding="utf-8")
    assert f"{VILLAGE.name} 总览" in overview and "道路工程" not in _read(overview)
    town = draw_scope_maps(settings, out, tmp_path / "town", None)
    assert "道路工程" in _read(town.maps["overview"].read_text(encoding="utf-8"))


def test_the_whole_town_shows_every_village_so_the_scan_can_fail(demo, tmp_path: Path) -> None:
    settings, out = demo
    page = scoped_dispatch_html(settings, out, None, "龙阳镇全镇")
    found = _leaks(_read(page), [VILLAGE], demo)
    assert sum(mark(v) in found for v in VS) >= 10 and "龙山" in found
    book = scoped_dispatch_xlsx(settings, out, None, "龙阳镇全镇", tmp_path / "t.xlsx")
    # the town is the internal edition as `manyi report` writes it
    assert sheet(book, "帮包联系组") == sheet(out.files["dispatch_internal_xlsx"], "帮包联系组")
    assert sheet(book, "逾期事项") == sheet(out.files["dispatch_internal_xlsx"], "逾期事项")
    assert "镇直" in {r["帮包联系组"] for r in sheet(book, "帮包联系组")}


def test_a_group_sees_its_villages_and_no_other(demo, tmp_path: Path) -> None:
    settings, out = demo
    codes = frozenset(v.code for v in GROUP)
    label = f"第{VILLAGE.liaison_group}帮包联系组"
    page = scoped_dispatch_html(settings, out, codes, label)
    book = scoped_dispatch_xlsx(settings, out, codes, label, tmp_path / "g.xlsx")
    maps = draw_scope_maps(settings, out, tmp_path, codes, label=label)
    for text in (page, texts(book), *(p.read_text(encoding="utf-8") for p in maps.files)):
        assert _leaks(_read(text), GROUP, demo) == []
    for v in GROUP:  # each of its villages has its own block of indicators
        assert f"<summary>{v.name}（第{v.liaison_group}组）" in page
    groups = sheet(book, "帮包联系组")
    assert [(r["帮包联系组"], r["村数"]) for r in groups] == [(f"第{VILLAGE.liaison_group}组", len(GROUP))]  # fmt: skip
    assert label in maps.files[0].read_text(encoding="utf-8")


def test_a_stored_script_is_text_in_the_page_and_never_reaches_the_maps(demo, tmp_path: Path, browser) -> None:  # fmt: skip
    settings, out = demo
    page = scoped_dispatch_html(settings, out, OWN, VILLAGE.name, photo_url=_photo)
    assert XSS not in page and "<script" not in page and "<img" not in page
    assert html.escape(XSS, quote=False) in page  # the finding's text, shown as text
    maps = draw_scope_maps(settings, out, tmp_path, OWN, photo_url=_photo)
    for p in maps.files:
        assert "onerror=alert" not in _read(p.read_text(encoding="utf-8")), p.name
    file = tmp_path / "page.html"
    file.write_text(page, encoding="utf-8")
    tab = browser.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    tab.goto(file.as_uri())
    assert tab.locator("script, img").count() == 0 and dialogs == []
    assert XSS in tab.locator("body").inner_text()  # what the cadre reads
    tab.close()


def test_photos_link_to_the_portal_route_only_for_findings_of_the_scope(demo, tmp_path: Path) -> None:  # fmt: skip
    settings, out = demo
    asked = []

    def photo_url(item) -> str:
        asked.append(item)
        return _photo(item)

    page = scoped_dispatch_html(settings, out, OWN, VILLAGE.name, photo_url=photo_url)
    maps = draw_scope_maps(settings, out, tmp_path, OWN, photo_url=photo_url)
    assert asked and all(i["village_code"] == VILLAGE.code and i["form_id"] in PHOTO_FORMS for i in asked)  # fmt: skip
    with_photo = [i for i in asked if i["state"] == fu.OVERDUE]
    assert with_photo and all(f'<a href="{_photo(i)}">查看照片</a>' in page for i in with_photo)
    overview = maps.maps["overview"].read_text(encoding="utf-8")
    assert all(_photo(i) in overview for i in asked if i["lat"] == i["lat"])  # located ones
    # without photo_url, or with a link that is not a plain path, nothing is linked
    plain = scoped_dispatch_html(settings, out, OWN, VILLAGE.name)
    hostile = scoped_dispatch_html(settings, out, OWN, VILLAGE.name, photo_url=lambda i: "javascript:alert(7)")  # fmt: skip
    quoted = scoped_dispatch_html(settings, out, OWN, VILLAGE.name, photo_url=lambda i: '/p/x" onclick="alert(7)')  # fmt: skip
    for text in (plain, hostile, quoted):
        assert "查看照片" not in text
        assert "alert(7)" not in text
    bare = draw_scope_maps(settings, out, tmp_path / "bare", OWN)
    assert "查看照片" in overview and "/p/" not in bare.maps["overview"].read_text(encoding="utf-8")


def test_the_page_needs_no_inline_style_attribute_or_script(demo) -> None:
    settings, out = demo
    page = scoped_dispatch_html(settings, out, OWN, VILLAGE.name, photo_url=_photo)
    assert " style=" not in page and "<script" not in page
    (digest,) = style_hashes(page)
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", digest)


def test_a_scope_with_no_register_village_has_no_map(demo, tmp_path: Path) -> None:
    settings, out = demo
    with pytest.raises(DataError, match="范围内没有登记的村"):
        draw_scope_maps(settings, out, tmp_path, frozenset({"370481999999"}))
