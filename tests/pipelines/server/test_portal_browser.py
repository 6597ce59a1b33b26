"""The portal in a real headless Chromium, at phone size (360×740) and on a desktop, against
the real `manyi serve` of :mod:`.test_portal` (people from `manyi users`, data sent through
their links, the background refresh on short timings): a village cadre logs in, sees only
that village, presses 处理 on an open item, sends the rectification with a photo in ODK Web
Forms and, after the refresh, sees the item closed with who, when and the photo beside the
finding's; a liaison group leader sees the group's villages. No page scrolls sideways."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.browser import loopback_phone
from tests.pipelines.server.test_portal import (
    FAR_SECRET,
    GROUP,
    NAMES,
    PEOPLE,
    V_FAR,
    V_YAN,
    Portal,
    running_portal,
)
from tests.pipelines.server.test_webforms import _png, _question

READY = ".form-initialization-status.ready"
SIZES = {"phone": (360, 740), "desktop": (1280, 900)}


@pytest.fixture(scope="module")
def portal(built_forms, tmp_path_factory) -> Iterator[Portal]:
    with running_portal(built_forms, tmp_path_factory.mktemp("portal-browser")) as p:
        yield p


def _log_in(page, portal: Portal, who: str) -> None:
    page.goto(f"{portal.url}/portal/")
    assert "/login" in page.url
    page.locator("#login").fill(who)
    page.locator("#password").fill(PEOPLE[who][3])
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r".*/portal/s/\w+/$"))


def _no_sideways_scroll(page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.url


def _until(page, url: str, locator: str, timeout_s: float = 120) -> None:
    """Reload ``url`` until ``locator`` is on it (the refresh runs in the background)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        page.goto(url)
        if page.locator(locator).count():
            return
        assert time.monotonic() < deadline, f"{url} never showed {locator}"
        time.sleep(1)


@pytest.mark.parametrize(("size", "item"), [("phone", "yan_open"), ("desktop", "yan_late")])
def test_a_cadre_closes_a_follow_up_from_the_phone(portal: Portal, browser, tmp_path, size, item) -> None:  # fmt: skip
    width, height = SIZES[size]
    item_id = portal.items[item]
    base = f"{portal.url}/portal/s/v{V_YAN}/"
    with loopback_phone(browser, width, height) as page:
        _log_in(page, portal, "yan.cadre")
        assert page.url == base
        _until(page, f"{base}followups", f"#item-{item_id}")  # the seeded data is in
        page.goto(base)
        _no_sideways_scroll(page, width)
        # only this village: no other scope is linked, and no other village's item is listed
        keys = {re.match(r".*/portal/s/(\w+)/", h)[1] for h in page.eval_on_selector_all(
            "a[href*='/portal/s/']", "els => els.map(e => e.href)")}  # fmt: skip
        assert keys == {f"v{V_YAN}"}
        page.get_by_role("link", name=re.compile("跟进清单")).first.click()
        card = page.locator(f"#item-{item_id}")
        card.wait_for()
        _no_sideways_scroll(page, width)
        assert FAR_SECRET not in page.content() and NAMES[V_FAR] not in page.content()
        if item == "yan_open":  # its finding's photo is a real PNG (32×24)
            finding = card.locator("img[alt='发现问题照片']")
            finding.scroll_into_view_if_needed()
            page.wait_for_function("i => i.complete && i.naturalWidth === 32", arg=finding.element_handle())  # fmt: skip

        card.get_by_role("link", name="处理").click()
        page.wait_for_selector(READY, state="attached", timeout=30000)
        _no_sideways_scroll(page, width)
        action = f"已清运完毕（{size}）"
        _question(page, "整改措施").locator("textarea, input").first.fill(action)
        _question(page, "是否整改完成").get_by_text("已整改完成").click()
        photo = _png(tmp_path / "fix.png")
        _question(page, "整改后照片").locator("input[type=file]").set_input_files(str(photo))
        page.locator(".upload-image-preview img, img[src^='blob:']").first.wait_for(timeout=10000)
        page.get_by_role("button", name="Send").click()
        page.locator("#manyi-status", has_text="已提交").wait_for(timeout=20000)

        # after the refresh: closed, by whom, when, what was done, and both photos
        followups = f"{base}followups"
        _until(page, followups, f"#item-{item_id}.closed")
        card = page.locator(f"#item-{item_id}")
        text = card.inner_text()
        assert "已整改" in text and action in text
        assert PEOPLE["yan.cadre"][0] in text or "yan.cadre" in text
        assert re.search(r"\d{4}-\d{2}-\d{2}", card.locator(".closed-by").inner_text())
        assert card.get_by_role("link", name="处理").count() == 0
        fix = card.locator("img[alt='整改照片']")
        fix.scroll_into_view_if_needed()
        page.wait_for_function("i => i.complete && i.naturalWidth === 64", arg=fix.element_handle())  # fmt: skip
        assert card.locator("img[alt='发现问题照片']").count() == 1
        _no_sideways_scroll(page, width)


@pytest.mark.parametrize("size", list(SIZES))
def test_a_group_leader_sees_the_groups_villages(portal: Portal, browser, size) -> None:
    width, height = SIZES[size]
    with loopback_phone(browser, width, height) as page:
        _log_in(page, portal, "g1.lead")
        assert page.url == f"{portal.url}/portal/s/g1/"
        _until(page, f"{portal.url}/portal/s/g1/followups", "article.item")
        page.goto(f"{portal.url}/portal/s/g1/")
        _no_sideways_scroll(page, width)
        chips = page.eval_on_selector_all("a[href*='/portal/s/v']", "els => els.map(e => e.href)")
        codes = {re.search(r"/portal/s/v(\d{12})/", h)[1] for h in chips}
        assert codes == {c for c, g in GROUP.items() if g == 1}
        page.get_by_role("link", name=re.compile("跟进清单")).first.click()
        page.locator("article.item").first.wait_for()
        _no_sideways_scroll(page, width)
        assert FAR_SECRET not in page.content()
        for path in ("quality", "maps/"):
            page.goto(f"{portal.url}/portal/s/g1/{path}")
            _no_sideways_scroll(page, width)
