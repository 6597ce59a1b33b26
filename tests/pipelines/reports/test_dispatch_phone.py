"""Issue 12 item 3: the dispatch report on a phone. Both editions as ``manyi report`` writes
them, and the internal edition cut to a village and to a liaison group (what the portal shows),
opened in a real headless Chromium at 360×740 and 390×844: nothing runs off the screen
sideways, every table is cards with each cell labelled by its column, and every 状态 is in
view. At 1280 wide the tables stay tables. The report is the demo's year (:mod:`._demo_scope`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from pipelines.reports.scoped import scoped_dispatch_html, style_hashes
from tests.pipelines.reports._demo_scope import VS, demo_outputs

PHONES = [(360, 740), (390, 844)]
VILLAGE = next(v for v in VS if v.name == "龙山屯")


@pytest.fixture(scope="module")
def pages(build: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    settings, out = demo_outputs(build, tmp_path_factory.getbasetemp())
    folder = tmp_path_factory.mktemp("phone")
    found = {e: out.files[f"dispatch_{e}_html"] for e in ("public", "internal")}
    group = frozenset(v.code for v in VS if v.liaison_group == VILLAGE.liaison_group)
    for name, villages, label in [("village", frozenset({VILLAGE.code}), VILLAGE.name),
                                  ("group", group, f"第{VILLAGE.liaison_group}帮包联系组")]:  # fmt: skip
        page = scoped_dispatch_html(settings, out, villages, label, photo_url=lambda i: "/p/photo/x")  # fmt: skip
        found[name] = folder / f"{name}.html"
        found[name].write_text(page, encoding="utf-8")
    return found


@pytest.fixture(scope="module")
def tab(browser):
    """One tab for every page and width: a fresh context costs more than the page."""
    context = browser.new_context(viewport={"width": 360, "height": 740}, locale="zh-CN")
    yield context.new_page()
    context.close()


# Measured in the page: the widths, every cell of a 状态 column and its text, the cards' labels.
_MEASURE = """() => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const w = innerWidth, out = {scroll: document.documentElement.scrollWidth, width: w};
  const box = e => e.getBoundingClientRect();
  const cells = [...document.querySelectorAll("table")].flatMap(t => {
    const i = [...t.tHead.rows[0].cells].findIndex(c => c.innerText.trim() === "状态");
    return i < 0 ? [] : [...t.tBodies[0].rows].map(r => r.cells[i]);
  });  // by the column's header, whatever the cells say
  out.status = cells.map(td => {
    const b = box(td), s = box(td.querySelector(".status") || td);
    return {left: Math.min(b.left, s.left), right: Math.max(b.right, s.right), h: b.height,
            text: td.innerText.trim()};
  });
  out.tables = [...document.querySelectorAll("table")].map(t => ({
    cls: t.className, display: getComputedStyle(t).display,
    row: t.tBodies[0] && t.tBodies[0].rows[0] ? getComputedStyle(t.tBodies[0].rows[0]).display : null,
    head: box(t.tHead).height, right: box(t).right,
    heads: [...t.tHead.rows[0].cells].map(c => c.innerText.trim()),
    labels: [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.dataset.label)),
    shown: [...t.tBodies[0].rows].slice(0, 3).map(r => [...r.cells].map(c =>
      c.classList.contains("title") ? "" : getComputedStyle(c, "::before").content)),
  }));
  out.charts = [...document.querySelectorAll("svg.chart")].map(s => box(s).right);
  return out;
}"""


def _measure(tab, page: Path, width: int, height: int) -> dict:
    tab.set_viewport_size({"width": width, "height": height})
    tab.goto(page.as_uri())
    return tab.evaluate(_MEASURE)


@pytest.mark.parametrize("width,height", PHONES)
def test_every_table_fits_a_phone_as_cards_and_every_status_is_in_view(pages, tab, width: int, height: int) -> None:  # fmt: skip
    for name, page in pages.items():
        m = _measure(tab, page, width, height)
        assert m["width"] == width and m["scroll"] <= width, (name, m["scroll"])
        assert len(m["status"]) >= 20, name  # the indicator tables (and the village's own)
        for s in m["status"]:
            assert s["text"] and s["h"] > 0 and s["left"] >= 0 and s["right"] <= width, (name, s)
        assert m["charts"] and max(m["charts"]) <= width, name
        for t in m["tables"]:
            assert t["cls"] == "rows" and t["display"] == "block" and t["row"] == "grid", (name, t)
            assert t["head"] <= 1 and t["right"] <= width, (name, t)  # header hidden, not cut
            # every cell names its column, as the header does; the card shows that name
            assert all(labels == t["heads"] for labels in t["labels"]), (name, t["heads"])
            for row in t["shown"]:
                assert all(c == "" or c.strip('"') in t["heads"] for c in row), (name, row)
                assert any(c.strip('"') == "状态" for c in row) or "状态" not in t["heads"]


def test_on_a_desktop_the_tables_stay_tables(pages, tab) -> None:
    for name, page in pages.items():
        m = _measure(tab, page, 1280, 900)
        assert m["scroll"] <= 1280 and m["tables"], name
        for t in m["tables"]:
            assert (t["display"], t["row"]) == ("table", "table-row") and t["head"] > 10, (name, t)
        assert all(s["right"] <= 1280 and s["h"] > 0 for s in m["status"]), name


def test_a_strict_csp_with_the_style_hash_keeps_the_layout(pages, browser, tmp_path: Path) -> None:  # fmt: skip
    """The portal serves the page with no inline style allowed but the block's hash: the cards
    still apply, and nothing is refused."""
    page = pages["village"].read_text(encoding="utf-8")
    (source,) = style_hashes(page)
    css = re.search(r"<style>(.*?)</style>", page, re.DOTALL)[1]
    assert source == f"'sha256-{base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()}'"
    policy = f"default-src 'none'; style-src {source}; img-src 'self'"
    strict = tmp_path / "strict.html"
    strict.write_text(page.replace("<head>", f'<head><meta http-equiv="Content-Security-Policy" content="{policy}">', 1), encoding="utf-8")  # fmt: skip
    context = browser.new_context(viewport={"width": 360, "height": 740})
    tab = context.new_page()
    refused: list[str] = []
    tab.on("console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None)  # fmt: skip
    tab.goto(strict.as_uri())
    assert tab.evaluate("getComputedStyle(document.querySelector('table.rows tr')).display") == "grid"  # fmt: skip
    assert tab.evaluate("document.documentElement.scrollWidth") <= 360
    context.close()
    assert refused == []
