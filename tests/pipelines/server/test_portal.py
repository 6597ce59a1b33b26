"""The portal as people and hostile users use it: a real `manyi serve` on loopback (a
subprocess), people made with `manyi users add` and `manyi users password`, data sent by
ODK Collect (the Collect-like client) through the people's own links, the background refresh
on short timings, and httpx as the browser. Each scope sees its own villages and closes its
items; the hostile requests are in :mod:`.test_portal_security`, the real browser in
:mod:`.test_portal_browser`, both on this module's :func:`running_portal`."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from pipelines.analysis.followups import item_ids
from pipelines.cli import main
from pipelines.config import SHANGHAI
from pipelines.store import Store
from tests.pipelines.server._collect import Collect, multipart
from tests.pipelines.server._server import REPO, Server, csrf_of, log_in, settings_env, start_server
from tests.pipelines.server.test_webforms import _png

TODAY = datetime.now(SHANGHAI).date()
YEAR = TODAY.year
V_YAN, V_LONG = "370481115201", "370481115200"  # 闫庄, 龙阳: liaison group 1
with (REPO / "geo" / "villages.csv").open(encoding="utf-8") as _f:
    REGISTER = list(csv.DictReader(_f))
GROUP = {r["code"]: int(r["liaison_group"]) for r in REGISTER}
NAMES = {r["code"]: r["name"] for r in REGISTER}
V_FAR = next(c for c, g in GROUP.items() if g == 2)  # another group's village
REFRESH = {"MANYI_PLAN_YEAR": str(YEAR), "MANYI_REFRESH_QUIET_S": "0.3",
           "MANYI_REFRESH_MAX_WAIT_S": "2", "MANYI_REFRESH_POLL_S": "0.2"}  # fmt: skip
PEOPLE = {  # login: (name, role, options, password)
    "zhou.town": ("周镇长", "town", [], "镇里-管理-2026-冬"),
    "g1.lead": ("吴组长", "group", ["--group", "1"], "一组-组长-2026-冬"),
    "yan.cadre": ("闫干部", "village", ["--village", V_YAN], "闫庄-干部-2026-冬"),
    "far.cadre": ("远干部", "village", ["--village", V_FAR], "远方-干部-2026-冬"),
    "li.teacher": ("李老师", "teacher", [], "家访-老师-2026-冬"),
    "gone.cadre": ("停干部", "village", ["--village", V_YAN], "停用-干部-2026-冬"),
}
SCRIPT, IMG = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://evil.example/","点我")'
FAR_SECRET = "远方秘密FARSECRET"
TEACHER_NOTE = "家访记录TEACHERNOTE"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20 + b"\xff\xd9"
SANITATION = "人居环境问题"


def _png_bytes(width: int, height: int) -> bytes:
    """A real PNG (a browser draws it), as the phone's camera would send one."""
    with tempfile.TemporaryDirectory() as tmp:
        return _png(Path(tmp) / "p.png", width, height).read_bytes()


PNG = _png_bytes(32, 24)


def _day(days: int = 0) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


def sweep(version: str, village: str, findings: list[tuple[str, str, str]], note: str,
          iid: str | None = None) -> tuple[str, bytes]:  # fmt: skip
    """人居环境整治巡查 as Collect writes it: findings of (kind, rectify_by, photo), all 待整改."""
    iid = iid or f"uuid:{uuid.uuid4()}"
    items = "".join(
        f"<findings><kind>{kind}</kind><location>35.1744 117.2701 52.3 4.8</location>"
        f"<photo>{photo}</photo><status>to_rectify</status><rectify_by>{by}</rectify_by>"
        "<responsible/></findings>"
        for kind, by, photo in findings
    )
    return iid, (
        f'<data id="sanitation_sweep" version="{version}"><start/><end/><today/><deviceid/>'
        f"<username/><basic><village>{village}</village><check_date>{_day()}</check_date>"
        f"<quarter/><campaign/><has_findings>yes</has_findings></basic>{items}"
        f"<summary><score>80</score><note>{_esc(note)}</note></summary>"
        f"<meta><instanceID>{iid}</instanceID></meta></data>"
    ).encode()


def survey(version: str, village: str, suggestion: str) -> bytes:
    iid = f"uuid:{uuid.uuid4()}"
    scores = "".join(f"<sat_{k}>4</sat_{k}>" for k in ("environment", "security", "medical",
                                                         "culture", "education", "assistance"))  # fmt: skip
    return (
        f'<data id="satisfaction_survey" version="{version}"><start/><end/><today/><deviceid/>'
        f"<username/><where><village>{village}</village><survey_date>{_day()}</survey_date>"
        f"</where><scores>{scores}</scores><opinion><policy_aware>yes</policy_aware>"
        f"<suggestion>{_esc(suggestion)}</suggestion><needs_follow_up>yes</needs_follow_up>"
        f"</opinion><meta><instanceID>{iid}</instanceID></meta></data>"
    ).encode()


def home_visit(version: str, note: str) -> tuple[str, bytes]:
    iid = f"uuid:{uuid.uuid4()}"
    return iid, (
        f'<data id="home_visit" version="{version}"><start/><end/><today/><deviceid/><username/>'
        f"<subject><school>s01</school><class_id>s01_g3c1</class_id><student>stu0001</student>"
        f"<village>{V_LONG}</village></subject><visit><visit_date>{_day()}</visit_date>"
        "<mode>home</mode><topics/></visit><result><feedback/><follow_up>yes</follow_up>"
        f"<follow_up_note>{_esc(note)}</follow_up_note></result>"
        f"<meta><instanceID>{iid}</instanceID></meta></data>"
    ).encode()


def rectification(version: str, item: str, village: str, action: str, done: str,
                  photo: str | None = None) -> tuple[str, bytes]:  # fmt: skip
    iid = f"uuid:{uuid.uuid4()}"
    return iid, (
        f'<data id="rectification" version="{version}"><start/><end/><today/><deviceid/>'
        f"<username/><rectify><item_id>{item}</item_id><village>{village}</village>"
        f"<finding>问题</finding><action>{_esc(action)}</action><done>{done}</done>"
        f"<photo>{photo or ''}</photo><fix_date>{_day()}</fix_date></rectify>"
        f"<meta><instanceID>{iid}</instanceID></meta></data>"
    ).encode()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def item_id(form_id: str, iid: str, repeat: int | None, kind: str) -> str:
    return item_ids(form_id, iid, repeat, kind).iloc[0]


def legacy_id(item: str) -> str:
    """The item's id as it was before issue 13: the same digest in hex digits."""
    return item.translate(str.maketrans("abcdefghjkmnpqrs", "0123456789abcdef"))


@dataclass
class Portal:
    server: Server
    links: dict[str, str]
    versions: dict[str, str]
    items: dict[str, str]  # name -> item_id

    @property
    def url(self) -> str:
        return self.server.url

    def store(self) -> Store:
        return Store(self.server.data_dir / "manyi.sqlite", self.server.data_dir)

    @contextlib.contextmanager
    def browser(self, who: str | None = None) -> Iterator[httpx.Client]:
        """A browser, logged in as ``who`` when given."""
        with httpx.Client(base_url=self.url, timeout=60) as c:
            if who is not None:
                assert login(c, who).status_code == 303
            yield c


_csrf = csrf_of  # the portal tests' name for it


def login(c: httpx.Client, who: str) -> httpx.Response:
    return log_in(c, who, PEOPLE[who][3])


def cli(*args: str, stdin: bytes = b"") -> str:
    """`manyi …` in this process (the environment holds the server's settings)."""
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    out = io.StringIO()
    old_out, sys.stdout = sys.stdout, out
    try:
        assert main(list(args)) == 0, out.getvalue()
    finally:
        sys.stdin, sys.stdout = old, old_out
    return out.getvalue()


def wait_for(c: httpx.Client, path: str, *needles: str, timeout: float = 90.0) -> str:
    """The page once it shows every needle (the refresh runs in the background)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        r = c.get(path)
        if r.status_code == 200 and all(n in r.text for n in needles):
            return r.text
        assert time.monotonic() < deadline, f"{path} never showed {needles}: {r.text[-1500:]}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def portal(built_forms, tmp_path_factory) -> Iterator[Portal]:
    with running_portal(built_forms, tmp_path_factory.mktemp("portal")) as p:
        yield p


@contextlib.contextmanager
def running_portal(built_forms, data: Path) -> Iterator[Portal]:
    """`manyi users add`/`password` for :data:`PEOPLE`, `manyi serve` on ``data``, and what
    their phones send (:func:`_seed`)."""
    env = {**settings_env(data, built_forms.out_dir), **REFRESH}
    versions = {b.form_id: b.version for b in built_forms.built}
    links = {}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            if k.startswith("MANYI_"):
                mp.setenv(k, v)
        for who, (name, role, options, password) in PEOPLE.items():
            said = cli("users", "add", who, "--name", name, "--role", role, *options)
            links[who] = re.search(r"(http\S+/key/\S+)", said)[1]
            cli("users", "password", who, stdin=password.encode() + b"\n")
    server = start_server(data, built_forms.out_dir, env=REFRESH)
    try:
        links = {w: re.sub(r"^https?://[^/]+", server.url, u) for w, u in links.items()}
        items = _seed(server, links, versions)
        yield Portal(server, links, versions, items)
    finally:
        server.stop()


def _seed(server: Server, links: dict[str, str], v: dict[str, str]) -> dict[str, str]:
    """What the phones send: 闫庄's sweep (one overdue finding with a JPEG, one with a PNG) and
    a survey, each with hostile text; another group's village's sweep; a teacher's visit."""
    items = {}
    hostile = f"{SCRIPT}{IMG}"
    with Collect(links["yan.cadre"]) as phone:
        iid, xml = sweep(v["sanitation_sweep"], V_YAN,
                         [("pile", _day(-5), "y1.jpg"), ("garbage", _day(30), "y2.png")], hostile)  # fmt: skip
        assert phone.submit(xml, {"y1.jpg": JPEG, "y2.png": PNG}, "巡查") is not None
        items["yan_late"] = item_id("sanitation_sweep", iid, 1, SANITATION)
        items["yan_open"] = item_id("sanitation_sweep", iid, 2, SANITATION)
        phone.submit(survey(v["satisfaction_survey"], V_YAN, FORMULA + hostile), {}, "调查")
    with Collect(links["far.cadre"]) as phone:
        iid, xml = sweep(v["sanitation_sweep"], V_FAR, [("pile", _day(-3), "f1.jpg")], FAR_SECRET)
        phone.submit(xml, {"f1.jpg": JPEG}, "巡查")
        items["far"] = item_id("sanitation_sweep", iid, 1, SANITATION)
    with Collect(links["g1.lead"]) as phone:  # a long list: 55 findings in 龙阳
        _, xml = sweep(v["sanitation_sweep"], V_LONG, [("pile", _day(60), "")] * 55, "长清单")
        phone.submit(xml, {}, "巡查")
    with Collect(links["li.teacher"]) as phone:
        for _ in range(2):  # the same student on the same day: a duplicate flag of her own
            iid, xml = home_visit(v["home_visit"], TEACHER_NOTE)
            phone.submit(xml, {}, "家访")
        items["teacher"] = item_id("home_visit", iid, None, "家访跟进")
    return items


def _seen(c: httpx.Client, portal: Portal) -> str:
    """闫庄's list once the refresh holds both of its sweep's items (a rectification names an
    item of the current snapshot)."""
    return wait_for(c, f"/portal/s/v{V_YAN}/followups", portal.items["yan_late"], portal.items["yan_open"])  # fmt: skip


def _ready(portal: Portal, c: httpx.Client) -> None:
    """The first refresh that holds every seeded item has landed (the town's list is two
    pages: the overdue first, the items without a deadline last)."""
    wait_for(c, "/portal/s/town/followups?page=2", "TEACHERNOTE", "长清单")
    wait_for(c, "/portal/s/town/followups", FAR_SECRET, "闫庄")


# ---- who sees what ----------------------------------------------------------------------
def test_root_and_portal_go_home_or_to_login(portal: Portal) -> None:
    with portal.browser() as anon:
        assert anon.get("/").headers["location"] == "/portal/"
        r = anon.get("/portal/")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/portal/"
        r = anon.get("/portal/s/town/followups")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    with portal.browser("zhou.town") as c:
        assert c.get("/portal/").headers["location"] == "/portal/s/town/"
    with portal.browser("li.teacher") as c:
        assert c.get("/portal/").headers["location"] == "/portal/s/me/"


def test_a_manager_sees_every_village_and_the_refresh_status(portal: Portal) -> None:
    with portal.browser("zhou.town") as c:
        _ready(portal, c)
        page = c.get("/portal/s/town/").text
        for group in range(1, 10):
            assert f'href="/portal/s/g{group}/"' in page
        linked = set(re.findall(r'href="/portal/s/v(\d{12})/"', page))
        assert linked == set(GROUP)  # all 56 villages
        assert "数据截至" in page and "数据刷新" in page and 'href="/manage/"' in page
        assert c.get(f"/portal/s/v{V_FAR}/followups").status_code == 200
        assert c.get("/portal/s/g2/").status_code == 200


def test_a_group_leader_sees_exactly_the_groups_villages(portal: Portal) -> None:
    mine = {c for c, g in GROUP.items() if g == 1}
    with portal.browser("g1.lead") as c:
        assert c.get("/portal/").headers["location"] == "/portal/s/g1/"
        page = wait_for(c, "/portal/s/g1/", "数据截至")
        assert set(re.findall(r'href="/portal/s/v(\d{12})/"', page)) == mine
        lists = wait_for(c, "/portal/s/g1/followups", "闫庄")
        assert FAR_SECRET not in lists and NAMES[V_FAR] not in lists
        for key in ("town", "g2", f"v{V_FAR}"):
            r = c.get(f"/portal/s/{key}/")
            assert r.status_code == 404 and "没有这个页面" in r.text and FAR_SECRET not in r.text


def test_a_cadre_sees_only_their_village(portal: Portal) -> None:
    with portal.browser("yan.cadre") as c:
        assert c.get("/portal/").headers["location"] == f"/portal/s/v{V_YAN}/"
        page = wait_for(c, f"/portal/s/v{V_YAN}/", "数据截至")
        assert set(re.findall(r'href="/portal/s/(\w+)/', page)) == {f"v{V_YAN}"}
        lists = c.get(f"/portal/s/v{V_YAN}/followups").text
        assert portal.items["yan_late"] in lists and portal.items["yan_open"] in lists
        assert FAR_SECRET not in lists and portal.items["far"] not in lists
        assert "TEACHERNOTE" not in lists  # 龙阳's, not 闫庄's
        # the overdue one first, with its photo and the handle link
        assert lists.index(portal.items["yan_late"]) < lists.index(portal.items["yan_open"])
        assert f"/portal/s/v{V_YAN}/handle/{portal.items['yan_late']}" in lists


def test_an_own_collector_sees_only_what_they_sent(portal: Portal) -> None:
    with portal.browser("li.teacher") as c:
        wait_for(c, "/portal/s/me/quality", "疑似重复")  # both visits are in the snapshot
        page = wait_for(c, "/portal/s/me/", "我提交的表单", "家访记录", "2 份")
        assert "dispatch" not in page and "maps/" not in page, page
        lists = c.get("/portal/s/me/followups").text
        assert "TEACHERNOTE" in lists, lists
        assert "闫庄" not in lists and FAR_SECRET not in lists, lists
        quality = c.get("/portal/s/me/quality").text
        assert "疑似重复" in quality and "闫庄" not in quality, quality
        for path in ("dispatch", "dispatch.xlsx", "maps/", "maps/overview.html"):
            assert c.get(f"/portal/s/me/{path}").status_code == 404
        assert c.get(f"/portal/s/v{V_LONG}/").status_code == 404


def test_long_lists_are_paginated(portal: Portal) -> None:
    base = f"/portal/s/v{V_LONG}/followups"
    with portal.browser("g1.lead") as c:
        first = wait_for(c, base, "第 1 / 2 页")
        cards = re.findall(r'<article class="card item', first)
        assert len(cards) == 50 and f'href="{base}?page=2"' in first
        second = c.get(f"{base}?page=2").text
        # 55 sweep findings + the teacher's 2 visits, the rest on page 2
        assert len(re.findall(r'<article class="card item', second)) == 7
        assert "第 2 / 2 页" in second and f'href="{base}?page=1"' in second
        assert "第 2 / 2 页" in c.get(f"{base}?page=99").text  # past the end: the last page
        for odd in ("x", "-1", "0", "1e3", "２"):
            assert "第 1 / 2 页" in c.get(base, params={"page": odd}).text


# ---- closing items ---------------------------------------------------------------------
def _portal_post(c: httpx.Client, xml: bytes, files: dict[str, bytes] | None = None,
                 token: str | None = None) -> httpx.Response:  # fmt: skip
    body, ctype = multipart(xml, files or {}, "整改反馈", False)
    headers = {"Content-Type": ctype, "X-OpenRosa-Version": "1.0"}
    if token is not None:
        headers["X-CSRF-Token"] = token
    return c.post("/portal/submission", content=body, headers=headers)


def _stored(portal: Portal, iid: str) -> list:
    with portal.store() as store:
        return store.db.execute(
            "SELECT login FROM local_submissions WHERE instance_id = ?", (iid,)
        ).fetchall() + store.db.execute(
            "SELECT instance_id FROM submissions WHERE instance_id = ?", (iid,)
        ).fetchall() + store.db.execute(
            "SELECT name FROM attachments WHERE instance_id = ?", (iid,)
        ).fetchall()  # fmt: skip


def test_a_not_done_rectification_keeps_the_item_open_and_counts_the_attempt(portal: Portal) -> None:  # fmt: skip
    item = portal.items["yan_late"]
    with portal.browser("yan.cadre") as c:
        token = _csrf(_seen(c, portal))
        iid, xml = rectification(portal.versions["rectification"], item, V_YAN, "正在清运，明天完成", "no")  # fmt: skip
        r = _portal_post(c, xml, {}, token)
        assert r.status_code == 201, r.text
        assert _stored(portal, iid)[0] == ("yan.cadre",)  # the sender is the person
        page = wait_for(c, f"/portal/s/v{V_YAN}/followups", "正在清运，明天完成")
        card = page[page.index(f'id="item-{item}"') :]
        card = card[: card.index("</article>")]
        assert "已逾期" in card and "1 次" in card and f"handle/{item}" in card


# ---- what is shown, and how ------------------------------------------------------------
def test_photos_are_served_by_their_real_type_privately(portal: Portal) -> None:
    base = f"/portal/s/v{V_YAN}"
    with portal.browser("yan.cadre") as c:
        wait_for(c, f"{base}/followups", portal.items["yan_late"])
        for item, kind, body in (("yan_late", "image/jpeg", JPEG), ("yan_open", "image/png", PNG)):
            r = c.get(f"{base}/photo/{portal.items[item]}")
            assert r.status_code == 200 and r.headers["content-type"] == kind
            assert r.content == body
            assert r.headers["cache-control"] == "private, no-store"
            assert r.headers["x-content-type-options"] == "nosniff"
        # an item with no rectification has no fix photo
        assert c.get(f"{base}/fix-photo/{portal.items['yan_open']}").status_code == 404


def test_the_maps_are_the_scopes_and_sandboxed(portal: Portal) -> None:
    base = f"/portal/s/v{V_YAN}/maps/"
    with portal.browser("yan.cadre") as c:
        wait_for(c, f"/portal/s/v{V_YAN}/", "数据截至")
        listed = c.get(base)
        assert listed.status_code == 200
        names = re.findall(rf'href="{base}([^"/]+\.html)"', listed.text)
        assert "overview.html" in names
        r = c.get(base + "overview.html")
        assert r.status_code == 200 and "leaflet" in r.text.lower()
        csp = r.headers["content-security-policy"]
        assert csp.startswith("sandbox allow-scripts allow-popups;") and "frame-ancestors 'self'" in csp  # fmt: skip
        assert "闫庄" in r.text and NAMES[V_FAR] not in r.text
        for name in names:  # every listed map is one drawn
            assert c.get(base + name).status_code == 200, name
        assert len(names) == 7 and c.get(base + "nothing.html").status_code == 404


def test_the_handle_page_prefills_the_rectification_form(portal: Portal) -> None:
    item = portal.items["yan_late"]
    base = f"/portal/s/v{V_YAN}/handle/{item}"
    with portal.browser("yan.cadre") as c:
        wait_for(c, f"/portal/s/v{V_YAN}/followups", item)
        page = c.get(base)
        assert page.status_code == 200 and '"csrfToken"' in page.text
        assert f"{base}/form.xml" in page.text and "/portal/submission" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        xml = c.get(f"{base}/form.xml")
        assert xml.status_code == 200
        assert (
            f"<item_id>{item}</item_id>" in xml.text and f"<village>{V_YAN}</village>" in xml.text
        )
        finding = re.search(r"<finding>(.*?)</finding>", xml.text, re.S)[1]
        assert finding.startswith("人居环境问题 · ") and "&lt;script&gt;" in finding
        assert len(finding.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")) <= 300
        assert 'xmlns:jr="http://openrosa.org/javarosa"' in xml.text


def test_a_done_rectification_closes_the_item_and_its_fix_photo_stays_in_scope(portal: Portal) -> None:  # fmt: skip
    item = portal.items["yan_open"]
    mine, far = f"/portal/s/v{V_YAN}", f"/portal/s/v{V_FAR}"
    with portal.browser("yan.cadre") as c:
        token = _csrf(_seen(c, portal))
        assert c.head("/portal/submission").status_code == 204  # OpenRosa's pre-check
        fix = _png_bytes(40, 30)
        _, xml = rectification(portal.versions["rectification"], item, V_YAN, "垃圾已清运", "yes", "fix.png")  # fmt: skip
        r = _portal_post(c, xml, {"fix.png": fix}, token)
        assert r.status_code == 201, r.text
        page = wait_for(c, f"{mine}/followups", f'id="item-{item}"', "垃圾已清运", timeout=120)
        card = page[page.rindex("<article", 0, page.index(f'id="item-{item}"')) :]
        card = card[: card.index("</article>")]
        assert 'class="card item closed"' in card and "已整改：闫干部" in card
        assert f"handle/{item}" not in card
        assert f"{mine}/fix-photo/{item}" in card and f"{mine}/photo/{item}" in card
        got = c.get(f"{mine}/fix-photo/{item}")
        assert got.status_code == 200 and got.content == fix and got.headers["content-type"] == "image/png"  # fmt: skip
        # still in scope for the handle page (a closed item may be reopened by a new "no")
        assert c.get(f"{mine}/handle/{item}/form.xml").status_code == 200
    with portal.browser("far.cadre") as c:
        for path in (f"{mine}/fix-photo/{item}", f"{far}/fix-photo/{item}", f"{far}/photo/{item}"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 404 and fix not in r.content, path
    with portal.browser("zhou.town") as c:
        assert c.get(f"{mine}/fix-photo/{item}").content == fix
        assert c.get(f"/portal/s/town/fix-photo/{item}").content == fix


def test_an_items_legacy_hex_id_still_finds_it_in_links_and_fixes(portal: Portal) -> None:
    """Links and forms made before issue 13 carry the hex id: the portal finds the item (and
    prefills its id of today), and a rectification sent with it counts on the item."""
    item, old = portal.items["yan_late"], legacy_id(portal.items["yan_late"])
    assert re.fullmatch(r"[abcdefghjkmnpqrs]{16}", item) and re.fullmatch(r"[0-9a-f]{16}", old)
    mine = f"/portal/s/v{V_YAN}"
    with portal.browser("yan.cadre") as c:
        page = _seen(c, portal)
        assert old not in page  # the pages carry only today's id
        assert c.get(f"{mine}/photo/{old}").content == JPEG
        xml = c.get(f"{mine}/handle/{old}/form.xml")
        assert xml.status_code == 200 and f"<item_id>{item}</item_id>" in xml.text
        iid, sent = rectification(portal.versions["rectification"], old, V_YAN, "旧编号反馈", "no")  # fmt: skip
        assert _portal_post(c, sent, {}, _csrf(page)).status_code == 201
        assert _stored(portal, iid)[0] == ("yan.cadre",)
        page = wait_for(c, f"{mine}/followups", "旧编号反馈")
        card = page[page.index(f'id="item-{item}"') :]
        assert "旧编号反馈" in card[: card.index("</article>")]
    with portal.browser("far.cadre") as c:  # still the same 404 out of scope
        assert c.get(f"/portal/s/v{V_FAR}/handle/{old}/form.xml").status_code == 404
        assert c.get(f"{mine}/photo/{old}").status_code == 404


def test_before_the_first_snapshot_a_clear_waiting_page_and_the_failure_for_managers(built_forms, tmp_path) -> None:  # fmt: skip
    data = tmp_path / "data"
    env = {**REFRESH, "MANYI_OUTPUTS_DIR": str(tmp_path / "not-a-folder")}
    (tmp_path / "not-a-folder").write_text("a file where the outputs should go")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**settings_env(data, built_forms.out_dir), **env}.items():
            if k.startswith("MANYI_"):
                mp.setenv(k, v)
        cli("users", "add", "zhou.town", "--name", "周镇长", "--role", "town")
        cli("users", "password", "zhou.town", stdin=PEOPLE["zhou.town"][3].encode() + b"\n")
    server = start_server(data, built_forms.out_dir, env=env)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert login(c, "zhou.town").status_code == 303
            page = wait_for(c, "/portal/s/town/", "刷新失败")
            assert "正在生成，请稍候" in page and 'http-equiv="refresh"' in page
            assert c.get("/portal/s/town/followups").status_code == 200
    finally:
        server.stop()
