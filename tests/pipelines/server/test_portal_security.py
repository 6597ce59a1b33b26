"""The portal as a hostile user tries it, against the real `manyi serve` of
:mod:`.test_portal` (people from `manyi users`, data sent through their links): another
village's pages, files and photos by URL, a group key of another group, path traversal in the
file routes, a missing or wrong CSRF token, a rectification outside the person's scopes, a
session cookie replayed after logout or after the person is disabled, stored ``<script>`` and
``<img onerror>`` in free text, and a formula in a downloaded XLSX or CSV. Each answer is the
portal's one 404 (or 403, 401, a redirect to /login) with nothing of the data in it."""

from __future__ import annotations

import csv
import http.client
import io
import re
from collections.abc import Iterator

import httpx
import openpyxl
import pytest

from tests.pipelines.server._collect import multipart
from tests.pipelines.server._server import settings_env
from tests.pipelines.server.test_portal import (
    FAR_SECRET,
    IMG,
    JPEG,
    NAMES,
    SCRIPT,
    V_FAR,
    V_YAN,
    Portal,
    _csrf,
    _day,
    _portal_post,
    _seen,
    _stored,
    cli,
    legacy_id,
    rectification,
    running_portal,
    sweep,
    wait_for,
)


@pytest.fixture(scope="module")
def portal(built_forms, tmp_path_factory) -> Iterator[Portal]:
    with running_portal(built_forms, tmp_path_factory.mktemp("portal-security")) as p:
        yield p


# ---- hostile requests ------------------------------------------------------------------
def test_another_villages_pages_files_and_photos_are_404_with_nothing_in_them(portal: Portal) -> None:  # fmt: skip
    far, mine = f"/portal/s/v{V_FAR}", f"/portal/s/v{V_YAN}"
    item = portal.items["far"]
    with portal.browser("yan.cadre") as c:
        wait_for(c, f"{mine}/followups", portal.items["yan_late"])
        paths = [f"{far}/{p}" for p in ("", "followups", "quality", "dispatch", "dispatch.xlsx",
                                        "maps/", "maps/overview.html", "download/followups.xlsx",
                                        "download/followups.csv", "download/quality.xlsx",
                                        "download/quality.csv", f"photo/{item}",
                                        f"fix-photo/{item}", f"handle/{item}",
                                        f"handle/{item}/form.xml")]  # fmt: skip
        # the other village's item through my own scope's URLs
        paths += [f"{mine}/photo/{item}", f"{mine}/fix-photo/{item}", f"{mine}/handle/{item}",
                  f"{mine}/handle/{item}/form.xml", "/portal/s/g1/", "/portal/s/town/"]  # fmt: skip
        for path in paths:
            r = c.get(path)
            assert r.status_code == 404, path
            assert FAR_SECRET not in r.text and NAMES[V_FAR] not in r.text, path
            assert JPEG[:4] not in r.content


@pytest.mark.parametrize("tail", [
    "maps/..%2F..%2F..%2Fmanyi.sqlite", "maps/%2Fetc%2Fpasswd", "maps/overview.html%00",
    "maps/%00", "maps/..", "maps/.%2E/snapshot.json", "maps//etc/passwd", "maps/~root",
    "photo/..%2F..%2Fmanyi.sqlite", "photo/%2Fetc%2Fpasswd", "photo/x%00", "fix-photo/..",
    "download/..%2F..%2Fmanyi.sqlite", "download/followups.xlsx%00", "download/%2Fetc%2Fpasswd",
    "handle/..%2F..%2Fmanyi.sqlite/form.xml",
])  # fmt: skip
def test_path_traversal_in_file_routes_is_404(portal: Portal, tail: str) -> None:
    with portal.browser("yan.cadre") as c:
        wait_for(c, f"/portal/s/v{V_YAN}/", "数据截至")
        cookie = c.cookies.get("manyi_session")
    # sent as typed (http.client leaves dot segments and escapes alone; a browser would not)
    conn = http.client.HTTPConnection("127.0.0.1", portal.server.port, timeout=60)
    try:
        conn.request("GET", f"/portal/s/v{V_YAN}/{tail}", headers={"Cookie": f"manyi_session={cookie}"})  # fmt: skip
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 404
    assert b"SQLite format" not in body and b"root:" not in body and b'"id"' not in body


def test_a_rectification_without_a_session_or_the_csrf_token_or_out_of_scope_stores_nothing(portal: Portal) -> None:  # fmt: skip
    version = portal.versions["rectification"]
    with portal.browser("yan.cadre") as c:
        token = _csrf(_seen(c, portal))
        cases = [  # (client, item, village, token, status)
            (None, portal.items["yan_late"], V_YAN, token, 401),
            (c, portal.items["yan_late"], V_YAN, None, 403),
            (c, portal.items["yan_late"], V_YAN, "x" * 43, 403),
            (c, portal.items["far"], V_FAR, token, 403),  # another village's item
            (c, portal.items["yan_late"], V_FAR, token, 403),  # my item, another village
            (c, "0123456789abcdef", V_YAN, token, 403),  # no such item
            (c, legacy_id(portal.items["far"]), V_FAR, token, 403),  # the same, by its old id
        ]
        for client, item, village, tok, status in cases:
            iid, xml = rectification(version, item, village, "已清运", "yes", "fix.jpg")
            with portal.browser() as anon:
                r = _portal_post(client or anon, xml, {"fix.jpg": JPEG}, tok)
            assert r.status_code == status, (item, r.text)
            assert _stored(portal, iid) == []
        # a form other than the rectification is not taken here
        _, other = sweep(portal.versions["sanitation_sweep"], V_YAN, [("pile", _day(), "p.jpg")], "x")  # fmt: skip
        assert _portal_post(c, other, {"p.jpg": JPEG}, token).status_code == 403


def test_an_undeclared_item_id_cannot_pass_another_villages_fix_through_the_scope_check(portal: Portal) -> None:  # fmt: skip
    """The scope check reads the form's own <rectify><item_id>, not an element a sender adds
    elsewhere with the same name."""
    version = portal.versions["rectification"]
    mine, far = portal.items["yan_late"], portal.items["far"]
    with portal.browser("yan.cadre") as c:
        token = _csrf(_seen(c, portal))
        iid, xml = rectification(version, far, V_FAR, "已清运", "yes", "fix.jpg")
        decoy = f"<item_id>{mine}</item_id><village>{V_YAN}</village>".encode()
        for hostile in (xml.replace(b"<rectify>", decoy + b"<rectify>"),  # at the top
                        xml.replace(b"<rectify>", b"<aaa>" + decoy + b"</aaa><rectify>")):  # fmt: skip
            r = _portal_post(c, hostile, {"fix.jpg": JPEG}, token)
            assert r.status_code == 403, r.text
            assert _stored(portal, iid) == []


def test_a_rectification_through_a_collection_link_is_refused(portal: Portal) -> None:
    """Only the portal's 处理 (scope-checked) takes a rectification; a link cannot, even for
    a person given the form."""
    version = portal.versions["rectification"]
    iid, xml = rectification(version, portal.items["far"], V_FAR, "已清运", "yes", "fix.jpg")
    body, ctype = multipart(xml, {"fix.jpg": JPEG}, "整改反馈", False)
    r = httpx.post(f"{portal.links['yan.cadre']}/submission", content=body,
                   headers={"Content-Type": ctype, "X-OpenRosa-Version": "1.0"})  # fmt: skip
    assert r.status_code == 403 and "门户" in r.text
    assert _stored(portal, iid) == []
    # the link still takes the person's own forms
    _, sweep_xml = sweep(portal.versions["sanitation_sweep"], V_YAN, [("pile", _day(), "p.jpg")], "x")  # fmt: skip
    body, ctype = multipart(sweep_xml, {"p.jpg": JPEG}, "巡查", False)
    r = httpx.post(f"{portal.links['yan.cadre']}/submission", content=body,
                   headers={"Content-Type": ctype, "X-OpenRosa-Version": "1.0"})  # fmt: skip
    assert r.status_code == 201, r.text


def test_a_new_link_needs_the_csrf_token_and_stops_the_old_one(portal: Portal) -> None:
    old = portal.links["far.cadre"]
    with portal.browser("far.cadre") as c:
        page = c.get("/portal/link")
        assert page.status_code == 200 and "生成新的采集链接" in page.text
        assert "/key/" not in page.text  # only a POST shows a link
        r = c.post("/portal/link", data={"csrf": "wrong"})
        assert r.status_code == 403 and "/key/" not in r.text
        assert httpx.get(f"{old}/formList").status_code == 200  # still works
        r = c.post("/portal/link", data={"csrf": _csrf(page.text)})
        assert r.status_code == 200 and "旧链接已停止使用" in r.text
        new = re.search(r'class="code link-text">([^<]+)<', r.text)[1]
        assert 'src="data:image/svg+xml' in r.text or 'src="data:image/png' in r.text
        assert r.headers["cache-control"] == "no-store"
    assert httpx.get(f"{old}/formList").status_code == 403
    assert httpx.get(f"{new}/formList").status_code == 200
    portal.links["far.cadre"] = new


def test_a_session_after_logout_or_after_the_person_is_disabled_sees_nothing(portal: Portal) -> None:  # fmt: skip
    for who, end in (("yan.cadre", "logout"), ("gone.cadre", "disable")):
        with portal.browser(who) as c:
            page = wait_for(c, f"/portal/s/v{V_YAN}/followups", portal.items["yan_late"])
            cookie = c.cookies.get("manyi_session")
            if end == "logout":
                assert c.post("/logout", data={"csrf": _csrf(page)}).status_code == 303
            else:
                with pytest.MonkeyPatch.context() as mp:
                    for k, v in settings_env(portal.server.data_dir, portal.server.build_dir).items():  # fmt: skip
                        if k.startswith("MANYI_"):
                            mp.setenv(k, v)
                    cli("users", "disable", who)
        with portal.browser() as replay:
            replay.cookies.set("manyi_session", cookie)
            for path in ("/portal/", f"/portal/s/v{V_YAN}/", f"/portal/s/v{V_YAN}/followups",
                         f"/portal/s/v{V_YAN}/photo/{portal.items['yan_late']}",
                         f"/portal/s/v{V_YAN}/download/followups.csv"):  # fmt: skip
                r = replay.get(path)
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
                assert portal.items["yan_late"] not in r.text and JPEG[:4] not in r.content


def test_stored_script_and_img_are_shown_as_text_everywhere(portal: Portal) -> None:
    with portal.browser("yan.cadre") as c:
        base = f"/portal/s/v{V_YAN}"
        wait_for(c, f"{base}/followups", portal.items["yan_late"])
        for path in ("/", "/followups", "/quality", "/dispatch"):
            r = c.get(base + path)
            assert r.status_code == 200, path
            assert SCRIPT not in r.text and IMG not in r.text, path
            assert "onerror=alert" not in r.text.replace("onerror=alert(1)&gt;", ""), path
        lists = c.get(f"{base}/followups").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in lists
        assert "&lt;img src=x onerror=alert(1)&gt;" in lists
        dispatch = c.get(f"{base}/dispatch")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dispatch.text
        csp = dispatch.headers["content-security-policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp


def test_downloads_are_cut_to_the_scope_and_formulas_neutralised(portal: Portal) -> None:
    base = f"/portal/s/v{V_YAN}/download"
    with portal.browser("yan.cadre") as c:
        wait_for(c, f"/portal/s/v{V_YAN}/followups", "HYPERLINK")
        r = c.get(f"{base}/followups.csv")
        assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
        disposition = r.headers["content-disposition"]
        assert disposition.startswith("attachment;") and "filename*=UTF-8''" in disposition
        assert "%E8%B7%9F%E8%BF%9B%E6%B8%85%E5%8D%95" in disposition  # 跟进清单
        text = r.content.decode("utf-8-sig")
        assert "HYPERLINK" in text and FAR_SECRET not in text and "TEACHERNOTE" not in text
        for row in csv.reader(io.StringIO(text)):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@")), cell
        r = c.get(f"{base}/followups.xlsx")
        assert r.status_code == 200 and r.content[:2] == b"PK"
        wb = openpyxl.load_workbook(io.BytesIO(r.content))
        cells = [cell for ws in wb for row in ws.iter_rows() for cell in row if cell.value]
        assert any("HYPERLINK" in str(cell.value) for cell in cells)
        assert all(cell.data_type != "f" for cell in cells)
        assert not any(FAR_SECRET in str(cell.value) for cell in cells)
        for name in ("quality.xlsx", "quality.csv"):
            r = c.get(f"{base}/{name}")
            assert r.status_code == 200 and NAMES[V_FAR].encode() not in r.content
