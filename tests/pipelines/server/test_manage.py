"""The town manager's pages, through a real `manyi serve` on loopback (:mod:`._server`): httpx
as the manager's (or an intruder's) browser, people and passwords made as `manyi users` makes
them, the store read as it is, the links tried as ODK Collect would (formList)."""

from __future__ import annotations

import contextlib
import html
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import segno

from forms.schema import load_schema
from geo.villages import load_villages
from pipelines.analysis.rosters import write_rosters
from pipelines.privacy import find_unmasked
from pipelines.records import Record
from pipelines.server.auth import read_audit, set_password
from pipelines.server.people import add_person, list_people, load_roles, person_for_token
from pipelines.store import Store
from tests.browser import loopback_phone
from tests.pipelines.reports import _town
from tests.pipelines.server._server import REPO, Server, csrf_of, log_in, settings_env, start_server

ROLES = load_roles()
VS = load_villages(REPO / "geo" / "villages.csv")
V_CADRE = "370481115201"  # 闫庄, liaison group 1
V12, V13 = VS[10], VS[20]  # villages whose sheets carry 12 and 13 people
PASSWORDS = {"zhou.town": "镇里-管理员-2026-冬季", "yan.cadre": "柳树-河边-2026-秋季",
             "gao.group": "第一组-组长-2026-夏季", "sun.teach": "教师-家访-2026-春季学期"}  # fmt: skip
ENV = {"MANYI_PLAN_YEAR": "2026", "MANYI_REFRESH_QUIET_S": "0.5", "MANYI_REFRESH_POLL_S": "0.2"}
_addresses = (f"127.0.{i // 250 + 1}.{i % 250 + 1}" for i in itertools.count())


@dataclass
class Site:
    server: Server
    old_tokens: dict[str, str]  # login -> the token add_person gave at seeding

    @property
    def url(self) -> str:
        return self.server.url

    def store(self) -> Store:
        return Store(self.server.data_dir / "manyi.sqlite", self.server.data_dir)

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, timeout=120, transport=transport)

    def cli(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        env = settings_env(self.server.data_dir, self.server.build_dir, self.server.env)
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args], input=stdin, cwd=REPO, env=env,
            capture_output=True, timeout=120,
        )  # fmt: skip

    def form_list(self, token: str) -> int:
        """What ODK Collect gets for the link's formList, from an address of its own (ten bad
        links from one address in a minute are throttled)."""
        with self.client(next(_addresses)) as c:
            return c.get(f"/key/{token}/formList", headers={"X-OpenRosa-Version": "1.0"}).status_code  # fmt: skip

    def people(self) -> dict[str, tuple]:
        with self.store() as store:
            rows = store.db.execute("SELECT login, token_sha256, disabled FROM people").fetchall()
        return {r[0]: r[1:] for r in rows}

    def public_dir(self) -> Path:
        return self.server.data_dir / "outputs" / "public"


def _shifted(data: dict) -> dict:
    """The small town year of the report tests, moved from 2023 (March–July) to 2026
    (August–December): its June is our November."""
    text = re.sub(r"2023-(0[3-7])", lambda m: f"2026-{int(m[1]) + 5:02d}", json.dumps(data))
    return json.loads(text)


def _seed(data: Path, build: Path) -> dict[str, str]:
    write_rosters(_town.rosters(), data / "rosters")
    tokens = {}
    with Store(data / "manyi.sqlite", data) as store:
        for form_id, rows in _town.submissions().items():
            version = load_schema(build, form_id).version
            page = []
            for iid, day, record in rows:
                day = _shifted({"d": day})["d"]
                page.append(Record(form_id, iid, version, f"{day}T02:00:00.000Z",
                                   f"{day}T02:00:00.000Z", "received", _shifted(record)))  # fmt: skip
            store.write_page("central", form_id, page)
        people = [("zhou.town", "周镇长", "town", {}), ("yan.cadre", "闫村官", "village", {"villages": [V_CADRE]}),
                  ("gao.group", "高组长", "group", {"groups": [1]}), ("sun.teach", "孙老师", "teacher", {"villages": [V13.code]})]  # fmt: skip
        people += [
            (f"v12.p{i:02d}", f"十二村{i}号", "village", {"villages": [V12.code]})
            for i in range(12)
        ]
        people += [
            (f"v13.p{i:02d}", f"十三村{i}号", "collector", {"villages": [V13.code]})
            for i in range(12)
        ]
        people += [("v13.gone", "已停用者", "village", {"villages": [V13.code]}),
                   ("v13.boss", "镇里的人", "town", {"villages": [V13.code]})]  # fmt: skip
        for login, name, role, extra in people:
            tokens[login] = add_person(store, login, name, role, roles=ROLES, **extra).token
            if login in PASSWORDS:
                set_password(store, login, PASSWORDS[login])
        store.db.execute("UPDATE people SET disabled = 1 WHERE login = 'v13.gone'")
        store.db.commit()
    return tokens


@pytest.fixture(scope="module")
def site(tmp_path_factory, built_forms) -> Site:
    data = tmp_path_factory.mktemp("manage")
    tokens = _seed(data, built_forms.out_dir)
    server = start_server(
        data, built_forms.out_dir, env={**ENV, "MANYI_ROSTERS_DIR": str(data / "rosters")}
    )
    yield Site(server, tokens)
    server.stop()


@contextlib.contextmanager
def logged_in(site: Site, who: str, source: str = "127.0.0.1") -> Iterator[httpx.Client]:
    with site.client(source) as c:
        assert log_in(c, who, PASSWORDS[who]).status_code == 303
        yield c


def manager_csrf(c: httpx.Client) -> str:
    page = c.get("/manage/")
    assert page.status_code == 200, page.text
    return csrf_of(page)


def token_in(page: httpx.Response) -> str:
    return re.search(r"/key/([A-Za-z0-9_-]{40,})", page.text)[1]


def qr_modules(data_uri: str) -> set[tuple[int, int]]:
    """The dark modules of a segno SVG data: URI, read from its path (rows of h-runs)."""
    svg = unquote(data_uri.split(",", 1)[1])
    path = re.search(r"\sd='([^']+)'", svg)[1]
    dark, x, y = set(), 0.0, 0.0
    for op, args in re.findall(r"([Mmh])([-0-9. ]+)", path):
        nums = [float(n) for n in args.split()]
        if op == "M":
            x, y = nums
        elif op == "m":
            x, y = x + nums[0], y + nums[1]
        else:
            dark |= {(int(y - 0.5), int(x) + i) for i in range(int(nums[0]))}
            x += nums[0]
    border = min(c for _, c in dark)  # the finder pattern touches the quiet zone's edge
    return {(r - border, c - border) for r, c in dark}


def segno_modules(text: str) -> set[tuple[int, int]]:
    matrix = segno.make(text, error="m").matrix
    return {(r, c) for r, row in enumerate(matrix) for c, v in enumerate(row) if v}


def assert_qr_is(page_fragment: str, link: str) -> None:
    uri = re.search(r'<img class="m-q(?:r|img)" src="([^"]+)"', page_fragment)[1]
    assert qr_modules(uri.replace("&#39;", "'").replace("&amp;", "&")) == segno_modules(link)


# ---- who may manage ------------------------------------------------------------------
ROUTES = [
    ("GET", "/manage/", None), ("GET", "/manage/?village=" + V_CADRE, None),
    ("POST", "/manage/", {}), ("GET", "/manage/people", None),
    ("POST", "/manage/people", {"login": "evil.one", "name": "坏人", "role": "town"}),
    ("POST", "/manage/people/zhou.town/disable", {}), ("POST", "/manage/people/v13.gone/enable", {}),
    ("POST", "/manage/people/yan.cadre/rotate", {}), ("GET", "/manage/people/yan.cadre/rotate", None),
    ("GET", f"/manage/sheet?village={V12.code}", None), ("GET", f"/manage/sheet/{V12.code}", None),
    ("POST", f"/manage/sheet/{V12.code}", {}), ("POST", "/manage/publish", {"month": "2026-11"}),
    ("POST", "/manage/unpublish", {"month": "2026-11"}), ("GET", "/manage/nothing/here", None),
]  # fmt: skip


@pytest.mark.parametrize("who", ["yan.cadre", "gao.group", "sun.teach"])
def test_anyone_but_a_town_manager_gets_404_on_every_manage_route(site: Site, who: str) -> None:
    before = site.people()
    with logged_in(site, who) as c:
        token = csrf_of(c.get("/account"))  # their own, valid session token
        bodies = set()
        for method, path, form in ROUTES:
            r = c.request(method, path, data=None if form is None else {**form, "csrf": token})
            assert r.status_code == 404, (who, method, path, r.status_code)
            assert "没有这个页面" in r.text and "周镇长" not in r.text and "/key/" not in r.text
            bodies.add(re.sub(r'<p class="sub asof">.*?</p>', "", r.text))  # 数据截至 may move
        assert len(bodies) == 1  # a real route and a missing one look alike
    assert site.people() == before and not (site.public_dir() / "2026-11").exists()


def test_without_a_session_manage_is_404_or_the_login_page(site: Site) -> None:
    with site.client() as c:
        for method, path, form in ROUTES:
            r = c.request(method, path, data=form)
            if method == "GET" and path.split("?")[0] == "/manage/":  # the manager, signed out
                assert r.status_code == 303 and r.headers["location"] == "/login?next=/manage/"
            else:
                assert r.status_code == 404, (method, path)


# ---- the list ------------------------------------------------------------------------
def test_the_manager_sees_everyone_with_role_villages_password_and_last_login(site: Site) -> None:
    with logged_in(site, "yan.cadre"):
        pass
    with logged_in(site, "zhou.town") as c:
        page = c.get("/manage/")
        assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
        cards = dict(re.findall(r'data-login="([^"]+)">(.*?)</li>', page.text, re.S))
        assert set(cards) == {p.login for p in list_people(site.store())}
        yan = cards["yan.cadre"]
        assert "闫村官" in yan and "村干部" in yan and "闫庄" in yan and "已设置" in yan
        assert re.search(r"最近登录</dt><dd>20\d\d-\d\d-\d\d \d\d:\d\d</dd>", yan)
        assert "从未登录" in cards["v12.p00"] and "未设置" in cards["v12.p00"]
        assert "已停用" in cards["v13.gone"] and "/enable" in cards["v13.gone"]
        assert "第1组" in cards["gao.group"] and "/disable" not in cards["zhou.town"]  # not self
        # one village: its cadre, and the leader of its liaison group
        one = c.get("/manage/", params={"village": V_CADRE})
        assert set(re.findall(r'data-login="([^"]+)"', one.text)) == {"yan.cadre", "gao.group"}
        assert f"/manage/sheet/{V_CADRE}" in one.text
        for bad in ("370481115999", "../../etc", "town"):
            assert c.get("/manage/", params={"village": bad}).status_code == 404
        # the refresh status and the publishing section are there
        assert (
            "数据刷新" in page.text and 'name="month"' in page.text and ">2026年11月<" in page.text
        )


# ---- adding a person -----------------------------------------------------------------
def test_a_person_added_from_the_portal_can_log_in_and_their_link_works(site: Site) -> None:
    with logged_in(site, "zhou.town") as c:
        form = {"csrf": manager_csrf(c), "login": "new.cadre", "name": "新村官", "role": "village",
                "village": [V_CADRE, VS[3].code], "group": []}  # fmt: skip
        r = c.post("/manage/people", data=form)
    assert r.status_code == 200 and "只显示这一次" in r.text and "新村官" in r.text
    token = token_in(r)
    link = f"{site.url}/key/{token}"
    assert link in r.text
    assert_qr_is(r.text, link)
    assert site.form_list(token) == 200
    with site.store() as store:
        person = person_for_token(store, token)
        assert person.villages == (V_CADRE, VS[3].code) and person.role == "village"
        added = read_audit(store, login="new.cadre", event="person_added")
    assert added and added[0].detail == "by zhou.town (portal)"
    done = site.cli("users", "password", "new.cadre", stdin="新村官的-密码-2026\n".encode())
    assert done.returncode == 0, done.stderr.decode()
    with site.client() as c:
        page = c.get("/login")
        r = c.post("/login", data={"login": "new.cadre", "password": "新村官的-密码-2026", "csrf": csrf_of(page)})  # fmt: skip
        assert r.status_code == 303 and "新村官" in c.get("/account").text


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"login": "bad.village", "village": ["370481115999"]}, "不在村庄名册中"),
        ({"login": "yan.cadre"}, "已被占用"),
        ({"login": "Bad Login"}, "格式不对"),
        ({"login": "no.village", "village": []}, "须选择所在村"),
        ({"login": "no.group", "role": "group", "village": []}, "须选择帮包联系组"),
        ({"login": "bad.group", "role": "group", "group": ["12"]}, "帮包联系组 12 不存在"),
        ({"login": "bad.role", "role": "mayor"}, "角色 'mayor' 不存在"),
        ({"login": "no.name", "name": "  "}, "请填写姓名"),
    ],
)  # fmt: skip
def test_a_bad_person_is_refused_on_the_form_and_nothing_is_stored(site: Site, form: dict, says: str) -> None:  # fmt: skip
    before = site.people()
    with logged_in(site, "zhou.town") as c:
        data = {"name": "某人", "role": "village", "village": [V_CADRE], **form}
        r = c.post("/manage/people", data={**data, "csrf": manager_csrf(c)})
    assert r.status_code == 400 and says in html.unescape(r.text), r.text[:3000]
    assert 'action="/manage/people"' in r.text and "/key/" not in r.text  # the form again
    if data["name"].strip():
        assert f'value="{data["name"]}"' in r.text  # what was typed is kept
    assert site.people() == before


# ---- disabling, enabling, rotating ---------------------------------------------------
def test_disabling_ends_the_persons_sessions_and_link_at_once(site: Site) -> None:
    with site.store() as store:
        token = add_person(store, "dis.me", "将停用", "village", roles=ROLES, villages=[V_CADRE]).token  # fmt: skip
        set_password(store, "dis.me", "停用前的-密码-2026")
    PASSWORDS["dis.me"] = "停用前的-密码-2026"
    with logged_in(site, "dis.me", "127.0.0.3") as victim, logged_in(site, "zhou.town") as c:
        assert victim.get("/account").status_code == 200 and site.form_list(token) == 200
        r = c.post("/manage/people/dis.me/disable", data={"csrf": manager_csrf(c)})
        assert r.status_code == 200 and "已停用" in r.text
        assert victim.get("/account").status_code == 303  # back to the login page
        assert site.form_list(token) == 403
        # enabling hands out a new link: the old one stays dead, the new one works
        r = c.post("/manage/people/dis.me/enable", data={"csrf": manager_csrf(c)})
        assert r.status_code == 200 and "只显示这一次" in r.text
        new = token_in(r)
        assert site.form_list(token) == 403 and site.form_list(new) == 200
        assert victim.get("/account").status_code == 303  # a new link revives no session
        # enabling someone enabled is refused, and changes nothing
        again = c.post("/manage/people/dis.me/enable", data={"csrf": manager_csrf(c)})
        assert again.status_code == 400 and site.form_list(new) == 200
    with site.store() as store:
        events = [(e.event, e.detail) for e in read_audit(store, login="dis.me")]
    assert ("person_disabled", "by zhou.town (portal)") in events
    assert ("person_enabled", "by zhou.town (portal)") in events


def test_rotating_a_link_kills_the_old_one_and_shows_the_new_once(site: Site) -> None:
    old = site.old_tokens["sun.teach"]
    assert site.form_list(old) == 200
    with logged_in(site, "zhou.town") as c:
        r = c.post("/manage/people/sun.teach/rotate", data={"csrf": manager_csrf(c)})
    assert r.status_code == 200 and "只显示这一次" in r.text
    new = token_in(r)
    assert_qr_is(r.text, f"{site.url}/key/{new}")
    assert site.form_list(old) == 403 and site.form_list(new) == 200
    site.old_tokens["sun.teach"] = new


def test_a_manager_cannot_disable_themselves_and_unknown_people_are_404(site: Site) -> None:
    with logged_in(site, "zhou.town") as c:
        r = c.post("/manage/people/zhou.town/disable", data={"csrf": manager_csrf(c)})
        assert r.status_code == 400 and "不能停用自己" in r.text
        assert c.get("/manage/").status_code == 200  # still signed in, still enabled
        for path in ("/manage/people/no.body/disable", "/manage/people/..%2Fzhou.town/rotate"):
            assert c.post(path, data={"csrf": manager_csrf(c)}).status_code == 404


# ---- CSRF ----------------------------------------------------------------------------
def test_posts_without_the_right_csrf_token_are_403_and_change_nothing(site: Site) -> None:
    before = site.people()
    with logged_in(site, "zhou.town") as c, logged_in(site, "gao.group", "127.0.0.2") as other:
        foreign = csrf_of(other.get("/account"))  # a real token of another session
        for path, form in [
            ("/manage/people", {"login": "csrf.less", "name": "无令牌", "role": "town"}),
            ("/manage/people/yan.cadre/disable", {}), ("/manage/people/yan.cadre/rotate", {}),
            ("/manage/people/v13.gone/enable", {}), (f"/manage/sheet/{V12.code}", {}),
            ("/manage/publish", {"month": "2026-10"}), ("/manage/unpublish", {"month": "2026-10"}),
        ]:  # fmt: skip
            for extra in ({}, {"csrf": ""}, {"csrf": "0" * 43}, {"csrf": foreign}):
                r = c.post(path, data={**form, **extra})
                assert r.status_code == 403 and "CSRF" in r.text, (path, extra)
            assert c.post(path, json={**form, "csrf": manager_csrf(c)}).status_code == 403
    assert site.people() == before and not (site.public_dir() / "2026-10").exists()


# ---- the village's QR sheet ----------------------------------------------------------
def test_the_qr_sheet_holds_exactly_the_villages_people_with_new_links(site: Site) -> None:
    expected = {f"v13.p{i:02d}" for i in range(12)} | {"sun.teach"}  # not the disabled, not town
    with logged_in(site, "zhou.town") as c:
        confirm = c.get(f"/manage/sheet/{V13.code}")
        assert confirm.status_code == 200 and "13 人" in confirm.text and "立即失效" in confirm.text
        assert set(re.findall(r"（([a-z0-9.]+)）</li>", confirm.text)) == expected
        assert site.form_list(site.old_tokens["v13.p00"]) == 200
        sheet = c.post(f"/manage/sheet/{V13.code}", data={"csrf": csrf_of(confirm)})
        assert c.get(f"/manage/sheet?village={V13.code}").headers["location"] == f"/manage/sheet/{V13.code}"  # fmt: skip
        for bad in ("370481115999", "..%2F..%2Fmanyi.sqlite", V13.code + "0"):
            assert c.get(f"/manage/sheet/{bad}").status_code == 404
            assert (
                c.post(f"/manage/sheet/{bad}", data={"csrf": csrf_of(confirm)}).status_code == 404
            )
    assert sheet.status_code == 200 and "@page" not in sheet.text  # print CSS is in manage.css
    cards = re.findall(r'<article class="m-qcard">(.*?)</article>', sheet.text, re.S)
    assert len(cards) == 13
    with site.store() as store:
        for card in cards:
            link = re.search(r'<p class="m-qlink">([^<]+)</p>', card)[1]
            assert_qr_is(card, link)
            person = person_for_token(store, link.rsplit("/", 1)[1])
            assert person.name in card and person.login in expected
            expected.discard(person.login)
            assert "在 ODK Collect 中手动输入服务器地址" in card and "微信或相机扫码" in card
    assert expected == set()  # every one of them, once
    for login in [f"v13.p{i:02d}" for i in range(12)] + ["sun.teach"]:
        assert site.form_list(site.old_tokens[login]) == 403
    assert site.form_list(site.old_tokens["v13.boss"]) == 200  # a town person: not on the sheet
    assert site.people()["v13.gone"][1] == 1  # the disabled one stays disabled


# ---- publishing ----------------------------------------------------------------------
def test_a_published_month_is_public_frozen_and_withdrawn_on_unpublish(site: Site) -> None:
    with site.client() as anon:
        assert anon.get("/public/2026-11").status_code == 404
        assert anon.get("/public/2026-11.xlsx").status_code == 404
        assert "暂无已发布" in anon.get("/public/").text
    with logged_in(site, "yan.cadre") as cadre:
        r = cadre.post("/manage/publish", data={"month": "2026-11", "csrf": csrf_of(cadre.get("/account"))})  # fmt: skip
        assert r.status_code == 404 and not (site.public_dir() / "2026-11").exists()
    with logged_in(site, "zhou.town") as c:
        for month, says in [("2026-13", "YYYY-MM"), ("../2026-11", "YYYY-MM"), ("2025-12", "计划年度"),
                            ("2027-01", "计划年度"), ("", "YYYY-MM")]:  # fmt: skip
            r = c.post("/manage/publish", data={"month": month, "csrf": manager_csrf(c)})
            assert r.status_code == 400 and says in r.text, month
        r = c.post("/manage/publish", data={"month": "2026-11", "csrf": manager_csrf(c)})
        assert r.status_code == 200 and "已公开发布2026年11月" in r.text, r.text[-2000:]
    with site.client() as anon:
        page = anon.get("/public/2026-11")
        assert page.status_code == 200
        headers = page.headers
        assert headers["Cache-Control"] == "no-cache"  # withdrawn at once
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp
        assert "script-src" not in csp and "<script" not in page.text
        # the month's figures: roads 0.9 + 0.8 + 0.5 km by November; small cases (9+10)/(10+10)
        assert "公开版" in page.text and "2026" in page.text and "2.20" in page.text and "95.0%" in page.text  # fmt: skip
        xlsx = anon.get("/public/2026-11.xlsx")
        assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
        assert "attachment" in xlsx.headers["Content-Disposition"]
        assert "filename*=UTF-8''" in xlsx.headers["Content-Disposition"]
        listed = anon.get("/public/")
        assert listed.status_code == 200 and 'href="/public/2026-11"' in listed.text
        for bad in ("2026-11%00", "..%2F..%2Fmanyi.sqlite", "2026-1", "2026-11.html", "2026-11.xlsx.x"):  # fmt: skip
            assert anon.get(f"/public/{bad}").status_code == 404, bad
    # aggregates only: no ID number, phone, or roster person's name
    saved = site.public_dir() / "2026-11"
    (x,) = saved.glob("*.xlsx")
    for text in (page.text, _town.texts(x)):
        assert find_unmasked(text) == []
        for secret in [*_town.SECRETS, *_town.FULL_NAMES, "张*", "路灯不亮", "HYPERLINK"]:
            assert secret not in text
    record = json.loads((saved / "published.json").read_text(encoding="utf-8"))
    assert record["by"] == "zhou.town" and record["as_of"] == "2026-11-30"
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        ["published.json", "月调度通报_2026-11_公开版.html", "月调度通报_2026-11_公开版.xlsx"]
    )
    with logged_in(site, "zhou.town") as c:
        r = c.post("/manage/unpublish", data={"month": "2026-11", "csrf": manager_csrf(c)})
        assert r.status_code == 200 and "已撤回" in r.text
        again = c.post("/manage/unpublish", data={"month": "2026-11", "csrf": manager_csrf(c)})
        assert again.status_code == 400
    with site.client() as anon:
        assert anon.get("/public/2026-11").status_code == 404
        assert anon.get("/public/2026-11.xlsx").status_code == 404
        assert 'href="/public/2026-11"' not in anon.get("/public/").text
    with site.store() as store:
        events = [(e.event, e.detail) for e in read_audit(store, login="zhou.town")]
    assert ("month_published", "2026-11 as of 2026-11-30") in events
    assert ("month_unpublished", "2026-11") in events


# ---- a real Chromium: the manager's page on a phone, the sheet on A4 ------------------
A4_CONTENT_MM = (210 - 24, 297 - 24)  # @page margin 12 mm
PX_PER_MM = 96 / 25.4


def _pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-z])", pdf))


def test_the_sheet_prints_12_cards_on_one_a4_page_and_the_13th_on_the_next(site: Site, browser) -> None:  # fmt: skip
    with loopback_phone(browser) as page:
        page.goto(f"{site.url}/login?next=/manage/")
        page.fill("#login", "zhou.town")
        page.fill("#password", PASSWORDS["zhou.town"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{site.url}/manage/")
        assert page.locator("li.m-person").count() == len(site.people())
        assert page.evaluate("document.documentElement.scrollWidth") <= 360  # cards, no sideways
        for village, people, pages in ((V12, 12, 1), (V13, 13, 2)):
            page.set_viewport_size({"width": 360, "height": 740})
            page.emulate_media(media="null")  # no emulation: page.pdf() prints as print
            page.goto(f"{site.url}/manage/sheet/{village.code}")
            page.click("form[action^='/manage/sheet/'] button")
            page.wait_for_selector(".m-qcard")
            assert page.locator(".m-qcard").count() == people
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            pdf = page.pdf(format="A4", prefer_css_page_size=True)
            assert _pdf_pages(pdf) == pages, (village.name, _pdf_pages(pdf))
            # as printed: the page's content box, 186 × 273 mm; every card inside it, nothing
            # cut off inside a card, and the first twelve within one page's height
            width, height = (round(mm * PX_PER_MM) for mm in A4_CONTENT_MM)
            page.set_viewport_size({"width": width, "height": height})
            page.emulate_media(media="print")
            boxes = page.evaluate("""() => [...document.querySelectorAll('.m-qcard')].map((c) => {
                const r = c.getBoundingClientRect();
                return [r.left, r.right, r.bottom, c.scrollHeight - c.clientHeight];
            })""")
            assert page.locator("header.bar").is_hidden()
            for left, right, _bottom, clipped in boxes:
                assert left >= 0 and right <= width + 0.5 and clipped <= 0, boxes
            assert max(b[2] for b in boxes[:12]) <= height
            if people > 12:
                assert boxes[12][2] > height  # the 13th is on the second page
