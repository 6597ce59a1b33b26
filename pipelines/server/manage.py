"""The town manager's pages (issue 12 item 6): people, their collection links, a village's
QR sheet, and publishing a month's public report.

Every ``/manage/…`` route answers only a signed-in town manager (:attr:`Visitor.is_manager`);
anyone else gets the portal's one 404, for every path and method alike, so the pages cannot
be told from missing ones. Every POST carries the session's CSRF token (else 403, nothing
changes) and is audited (``person_added``, ``person_disabled``, ``person_enabled``,
``link_rotated``, ``links_printed``, ``month_published``, ``month_unpublished``).

* ``GET /manage/`` people (filter ``?village=CODE``), the refresh status and publishing;
* ``POST /manage/people`` adds a person (:func:`people.add_person`'s checks) and shows their
  link and QR code once; ``POST /manage/people/{login}/disable|enable|rotate``;
* ``GET|POST /manage/sheet/{code}``: the confirmation, then ONE printable A4 page of QR
  cards with new links for the village's people (their old links stop working);
* ``POST /manage/publish|unpublish`` freezes or withdraws a month's public edition
  (:mod:`._public`, which also serves ``/public/``).

The QR codes hold the plain collection link: WeChat or a phone camera opens it in the browser
(ODK Web Forms); ODK Collect users type the same link as the server URL. Collect's own
settings QR (zlib+base64 JSON) would be unreadable to WeChat, where the sheets are posted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pipelines.errors import DataError, ManyiError, scrub
from pipelines.server import _pages, _public
from pipelines.server._pages import Visitor
from pipelines.server.auth import client_address, guarded, read_fields, write_audit
from pipelines.server.people import (
    Issued,
    Person,
    add_person,
    collection_link,
    disable_person,
    get_person,
    list_people,
    qr_data_uri,
    rotate_tokens,
)

log = logging.getLogger("manyi.serve")
_FORM_BYTES = 64 * 1024  # the add form with every village ticked is ~3 KB
_SHEET_SCOPES = ("village", "own")  # who gets a card on a village's sheet
CSRF_MESSAGE = "页面已过期或来源不明，请刷新页面后重试（CSRF token missing or wrong）"


@dataclass(frozen=True)
class PersonRow:
    """One person as the manager's list shows them."""

    person: Person
    role_label: str
    villages: list[str]  # names (code when not in the register)
    has_password: bool
    last_login: str  # Asia/Shanghai, or 从未登录
    is_self: bool


@dataclass(frozen=True)
class Card:
    """One person on a village's QR sheet, with their new link."""

    name: str
    role_label: str
    link: str
    qr: str  # data: URI


# ---- requests ----------------------------------------------------------------------------
async def _read_form(request: Request) -> dict[str, list[str]] | None:
    """A small urlencoded form with repeated fields (villages, groups), or None."""
    return await read_fields(request, max_bytes=_FORM_BYTES, max_fields=200)


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[0].strip()


def _csrf_ok(form: dict[str, list[str]] | None, visitor: Visitor) -> bool:
    return form is not None and _pages.csrf_ok({"csrf": _one(form, "csrf")}, visitor)


# ---- what the pages show -----------------------------------------------------------------
def _names(st) -> dict[str, str]:
    return {v.code: v.name for v in _pages.villages(st)}


def _rows(st, visitor: Visitor, village: str | None) -> list[PersonRow]:
    db = st.store.db
    with_password = {r[0] for r in db.execute("SELECT login FROM passwords")}
    last = dict(db.execute("SELECT login, MAX(at) FROM audit WHERE event = 'login' GROUP BY login"))  # fmt: skip
    names = _names(st)
    group_of = {v.code: v.liaison_group for v in _pages.villages(st)}
    rows = []
    for p in list_people(st.store):
        if village and village not in p.villages and group_of.get(village) not in p.groups:
            continue
        role = st.roles.get(p.role)
        rows.append(PersonRow(
            p, role.label if role else p.role, [names.get(c, c) for c in p.villages],
            p.login in with_password, _when(last.get(p.login)), p.login == visitor.person.login,
        ))  # fmt: skip
    return rows


def _when(utc_text: str | None) -> str:
    if not utc_text:
        return "从未登录"
    return _pages.local_time(datetime.fromisoformat(utc_text.replace("Z", "+00:00")))


def _months(st) -> list[str]:
    """The months a manager may publish: the plan year's, up to the current one."""
    year, today = st.settings.plan_year, _public.today_shanghai()
    if year > today.year:
        return []
    last = 12 if year < today.year else today.month
    return [f"{year}-{m:02d}" for m in range(last, 0, -1)]


def _sheet_people(st, code: str) -> list[Person]:
    """The enabled village-level and own-scope people whose villages include ``code``."""
    scope_of = {name: role.scope for name, role in st.roles.items()}
    return sorted(
        (p for p in list_people(st.store)
         if not p.disabled and code in p.villages and scope_of.get(p.role, "own") in _SHEET_SCOPES),
        key=lambda p: (scope_of.get(p.role, "own") != "village", p.role, p.name, p.login),
    )  # fmt: skip


# ---- the routes --------------------------------------------------------------------------
class _Manage:
    def __init__(self, state: Callable[[], object]):
        self.state = state

    # -- helpers --
    def gate(self, request: Request) -> tuple[Visitor | None, Response | None]:
        """The signed-in town manager, or (None, the portal's 404): the same page, footer
        and all, as a missing path gives this visitor, whoever they are."""
        visitor = _pages.signed_in(request, self.state())
        if visitor is None or not visitor.is_manager:
            return None, _pages.not_found(request, self.state(), visitor)
        return visitor, None

    def page(self, request: Request, template: str, visitor: Visitor, status: int = 200,
             **context) -> HTMLResponse:  # fmt: skip
        return _pages.render(request, self.state(), template, visitor, status, **context)

    def message(self, request: Request, visitor: Visitor, status: int, text: str,
                ok: bool = False) -> HTMLResponse:  # fmt: skip
        return self.page(request, "manage/message.html.j2", visitor, status, message=text, ok=ok)

    def index_page(self, request: Request, visitor: Visitor, status: int = 200,
                   message: str = "", entered: dict | None = None) -> HTMLResponse:  # fmt: skip
        st = self.state()
        village = request.query_params.get("village", "") if request.method == "GET" else ""
        register = _pages.villages(st)
        groups = sorted({v.liaison_group for v in register})
        refresh = st.refresher.status() if st.refresher is not None else None
        return self.page(
            request, "manage/index.html.j2", visitor, status,
            rows=_rows(st, visitor, village or None), village=village,
            village_name=_names(st).get(village, ""), register=register, groups=groups,
            by_group={g: [v for v in register if v.liaison_group == g] for g in groups},
            roles=list(st.roles.values()), refresh_status=refresh, months=_months(st),
            publications=_public.publications(st.settings), month_label=_public.month_label,
            message=message, entered=entered or {}, csrf=visitor.session.csrf,
        )  # fmt: skip

    def issued_page(self, request: Request, visitor: Visitor, issued: Issued, heading: str) -> HTMLResponse:  # fmt: skip
        st = self.state()
        link = collection_link(st.base_url(request), issued.token)
        role = st.roles.get(issued.person.role)
        return self.page(
            request, "manage/link.html.j2", visitor, heading=heading, person=issued.person,
            role_label=role.label if role else issued.person.role, link=link,
            qr=qr_data_uri(link), villages=[_names(st).get(c, c) for c in issued.person.villages],
        )  # fmt: skip

    async def checked(self, request: Request) -> tuple[Visitor | None, Response | None]:
        """The manager and their CSRF-checked form for a POST, or the answer to give."""
        visitor, answer = self.gate(request)
        if visitor is None:
            return None, answer
        if request.method != "POST":
            return None, _pages.not_found(request, self.state(), visitor)
        form = await _read_form(request)
        if not _csrf_ok(form, visitor):
            log.warning("manage: CSRF token missing or wrong from %s", client_address(request))
            return None, self.message(request, visitor, 403, CSRF_MESSAGE)
        request.state.form = form
        return visitor, None

    def audit(self, request: Request, visitor: Visitor, event: str, detail: str) -> None:
        write_audit(
            self.state().store, event, visitor.person.login, client_address(request), detail
        )

    async def checked_person(self, request: Request) -> tuple[Visitor | None, Person | None, Response | None]:  # fmt: skip
        """:meth:`checked`, then the person the path names (``{login}``), or the 404."""
        visitor, answer = await self.checked(request)
        if visitor is None:
            return None, None, answer
        try:
            person = get_person(self.state().store, request.path_params["login"])
        except DataError:
            return None, None, _pages.not_found(request, self.state(), visitor)
        return visitor, person, None

    # -- endpoints --
    async def index(self, request: Request) -> Response:
        st = self.state()
        visitor = _pages.signed_in(request, st)
        if visitor is None and request.method == "GET":
            return RedirectResponse("/login?next=/manage/", 303, headers={"Cache-Control": "no-store"})  # fmt: skip
        if visitor is None or not visitor.is_manager or request.method != "GET":
            return _pages.not_found(request, st, visitor)
        village = request.query_params.get("village", "")
        if village and village not in _names(st):
            return _pages.not_found(request, st, visitor)
        return self.index_page(request, visitor)

    async def add(self, request: Request) -> Response:
        visitor, answer = await self.checked(request)
        if visitor is None:
            return answer
        st, form = self.state(), request.state.form
        entered = {
            "login": _one(form, "login").lower(), "name": _one(form, "name"),
            "role": _one(form, "role"), "villages": form.get("village", []),
            "groups": form.get("group", []),
        }  # fmt: skip
        try:
            issued = add_person(
                st.store, entered["login"], entered["name"], entered["role"], roles=st.roles,
                villages=entered["villages"], groups=entered["groups"],
                known_villages=list(_names(st)),
                known_groups={v.liaison_group for v in _pages.villages(st)},
                by=visitor.person.login, address=client_address(request),
            )  # fmt: skip
        except DataError as e:
            return self.index_page(request, visitor, 400, str(e), entered)
        return self.issued_page(request, visitor, issued, "已添加人员")

    async def disable(self, request: Request) -> Response:
        visitor, person, answer = await self.checked_person(request)
        if visitor is None or person is None:
            return answer
        if person.login == visitor.person.login:
            return self.message(request, visitor, 400, "不能停用自己的账号（you cannot disable yourself）")  # fmt: skip
        disable_person(self.state().store, person.login, by=visitor.person.login,
                       address=client_address(request))  # fmt: skip
        return self.message(
            request, visitor, 200,
            f"已停用 {person.name}（{person.login}）：其采集链接和登录已立即失效。", ok=True,
        )  # fmt: skip

    async def rotate(self, request: Request) -> Response:
        visitor, person, answer = await self.checked_person(request)
        if visitor is None or person is None:
            return answer
        enabling = request.url.path.endswith("/enable")
        if enabling and not person.disabled:
            return self.message(
                request, visitor, 400,
                f"{person.name}（{person.login}）未停用，无需启用；如需新链接请用“换新链接”。",
            )  # fmt: skip
        (issued,) = rotate_tokens(self.state().store, [person.login], by=visitor.person.login,
                                  address=client_address(request))  # fmt: skip
        return self.issued_page(request, visitor, issued, "已重新启用" if enabling else "已换新链接")  # fmt: skip

    async def sheet_pick(self, request: Request) -> Response:
        """``/manage/sheet?village=CODE`` (the index's picker) → the village's sheet."""
        st = self.state()
        visitor, answer = self.gate(request)
        if visitor is None:
            return answer
        code = request.query_params.get("village", "")
        if request.method != "GET" or code not in _names(st):
            return _pages.not_found(request, st, visitor)
        return RedirectResponse(f"/manage/sheet/{code}", 303, headers={"Cache-Control": "no-store"})  # fmt: skip

    async def sheet(self, request: Request) -> Response:
        st = self.state()
        visitor, answer = self.gate(request)
        if visitor is None:
            return answer
        code = request.path_params["code"]
        village = next((v for v in _pages.villages(st) if v.code == code), None)
        if village is None:
            return _pages.not_found(request, st, visitor)
        if request.method == "GET":
            return self.page(request, "manage/sheet_confirm.html.j2", visitor, village=village,
                             people=_sheet_people(st, code), csrf=visitor.session.csrf)  # fmt: skip
        visitor, answer = await self.checked(request)
        if visitor is None:
            return answer
        people = _sheet_people(st, code)
        issued = rotate_tokens(st.store, [p.login for p in people], by=visitor.person.login,
                               address=client_address(request))  # fmt: skip
        self.audit(request, visitor, "links_printed", f"village {code}: {len(issued)} new links")
        base = st.base_url(request)
        cards = []
        for i in issued:
            role = st.roles.get(i.person.role)
            link = collection_link(base, i.token)
            cards.append(Card(i.person.name, role.label if role else i.person.role, link, qr_data_uri(link)))  # fmt: skip
        return self.page(request, "manage/sheet.html.j2", visitor, village=village, cards=cards,
                         town=st.settings.town)  # fmt: skip

    async def publish(self, request: Request) -> Response:
        visitor, answer = await self.checked(request)
        if visitor is None:
            return answer
        st, month = self.state(), _one(request.state.form, "month")
        try:
            _public.as_of_for(month, st.settings.plan_year, _public.today_shanghai())
        except DataError as e:
            return self.index_page(request, visitor, 400, str(e))
        try:
            done = await anyio.to_thread.run_sync(
                _public.publish, st.settings, month, visitor.person.login, visitor.person.name
            )
        except ManyiError as e:
            log.error("publishing %s failed: %s", month, scrub(str(e)))
            return self.message(request, visitor, 500, f"发布失败（publishing failed）：{scrub(str(e))[:300]}")  # fmt: skip
        self.audit(request, visitor, "month_published", f"{month} as of {done.as_of}")
        return self.message(
            request, visitor, 200,
            f"已公开发布{done.label}月调度通报（公开版，截至 {done.as_of}）。公开地址：/public/{month}",
            ok=True,
        )  # fmt: skip

    async def unpublish(self, request: Request) -> Response:
        visitor, answer = await self.checked(request)
        if visitor is None:
            return answer
        month = _one(request.state.form, "month")
        if not await anyio.to_thread.run_sync(_public.unpublish, self.state().settings, month):
            return self.message(request, visitor, 400, "该月份未发布，无需撤回（not published）")
        self.audit(request, visitor, "month_unpublished", month)
        return self.message(
            request, visitor, 200,
            f"已撤回{_public.month_label(month)}的公开版，公开地址不再可访问。", ok=True,
        )  # fmt: skip

    async def missing(self, request: Request) -> Response:
        st = self.state()
        return _pages.not_found(request, st, _pages.signed_in(request, st))


def _guarded(handler):
    return guarded(handler, _pages.HEADERS)  # the 500 page with the portal's headers


def routes(state: Callable[[], object]) -> list[Route]:
    """The manager's routes and the public edition's; ``state()`` is the running server's."""
    m = _Manage(state)
    both = ["GET", "POST"]  # a wrong method is the same 404 as a wrong person
    return [
        Route("/manage/", _guarded(m.index), methods=both),
        Route("/manage/people", _guarded(m.add), methods=both),
        Route("/manage/people/{login}/disable", _guarded(m.disable), methods=both),
        Route("/manage/people/{login}/enable", _guarded(m.rotate), methods=both),
        Route("/manage/people/{login}/rotate", _guarded(m.rotate), methods=both),
        Route("/manage/sheet", _guarded(m.sheet_pick), methods=both),
        Route("/manage/sheet/{code}", _guarded(m.sheet), methods=both),
        Route("/manage/publish", _guarded(m.publish), methods=both),
        Route("/manage/unpublish", _guarded(m.unpublish), methods=both),
        Route("/manage/{rest:path}", _guarded(m.missing), methods=both),
        *_public.routes(state),
    ]
