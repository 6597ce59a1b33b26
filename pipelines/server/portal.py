"""The portal's pages for a signed-in person (issue 12 items 2, 3 and 5): each person sees
their scope on their phone, and closes follow-ups from it.

Routes (every one checks the session, then the scope, on the server; a scope key, item, map
or file the person may not open is the same 404 as one that does not exist):

* ``GET /`` and ``GET /portal/``: to the home scope (``/portal/s/<key>/``), or to /login;
* ``GET /portal/s/{key}/``: the scope's index (数据截至, counts, pages, downloads, the
  narrower scopes; for a town manager the refresh status and /manage/); before the first
  snapshot, 正在生成，请稍候 (200, reloads itself);
* ``…/followups`` and ``…/quality``: cards, paginated (:data:`PAGE_SIZE`);
* ``…/dispatch`` and ``…/dispatch.xlsx``: the internal report cut to the scope (not ``me``);
* ``…/maps/`` and ``…/maps/{name}``: drawn once per snapshot and scope, served sandboxed;
* ``…/download/{followups|quality}.{xlsx|csv}``;
* ``…/photo/{item_id}``, ``…/fix-photo/{item_id}``: JPEG or PNG, private, no-store;
* ``…/handle/{item_id}`` (+ ``/form.xml``, ``/attachments/{name}``): the rectification form,
  prefilled, in ODK Web Forms. An item id is 16 letters
  (:func:`pipelines.analysis.followups.item_ids`); an item's legacy id of 16 hex digits, from
  a link or a form made before issue 13, finds the item too;
* ``HEAD|POST /portal/submission``: the session and ``X-CSRF-Token``; only ``rectification``,
  only for an item in the person's scopes (else 403, nothing stored); the link's submission
  path (:func:`.openrosa.receive`, whose 201 pokes the refresher);
* ``GET|POST /portal/link``: a new collection link and its QR code, shown once.

Speed: a scope's data is cut once per snapshot (:class:`._portal_view.Views`) and each page
is rendered once per (snapshot, person, scope, page) with placeholders for the session's
CSRF token and the refresh status, which each request fills in; per request the database
sees only the session lookup.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import pandas as pd
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pipelines.analysis import followups as fu
from pipelines.config import SHANGHAI
from pipelines.errors import DataError, scrub
from pipelines.server import _portal_files as files
from pipelines.server import webforms
from pipelines.server._pages import (
    HEADERS,
    Visitor,
    csrf_header_ok,
    csrf_ok,
    not_found,
    page_html,
    read_form,
    render,
    signed_in,
    to_login,
)
from pipelines.server._portal_forms import FORM_ID, answer, field_paths, prefilled
from pipelines.server._portal_view import Item, ScopeView, Views
from pipelines.server._submissions import Parsed, Refused
from pipelines.server.openrosa import Accepts, log_path, openrosa_response, receive
from pipelines.server.people import collection_link, qr_data_uri, rotate_token
from pipelines.server.scopes import GROUP, OWN, TOWN, VILLAGE, Scope

log = logging.getLogger("manyi.serve")
PAGE_SIZE = 50  # cards per page of a list
_PAGES_KEPT = 1024  # rendered pages kept (the newest)
_PAGE_NO = re.compile(r"^[1-9][0-9]{0,5}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")  # what an item id in a link may hold
_CSRF_MESSAGE = "页面已过期或来源不明，请刷新页面后重试（CSRF token missing or wrong）"
_WEBFORMS_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                     "X-Frame-Options": "DENY"}  # fmt: skip


class _Portal:
    def __init__(self, state: Callable[[], object]) -> None:
        self.state = state
        self.views = Views(
            lambda: {f.form_id: f.title for f in self.state().catalog.forms().values()}
        )
        self.made = files.Once()
        self._pages: OrderedDict[tuple, str] = OrderedDict()
        # Placeholders no data can guess: filled per request with the session's bits.
        self._csrf = f"csrf-{secrets.token_hex(16)}"
        self._status = f"<!--status-{secrets.token_hex(16)}-->"

    # ---- plumbing -----------------------------------------------------------------------
    def guard(self, handler, scoped: bool = True):
        """An endpoint: no session → /login; a scope key the person may not open → 404;
        a bug → one scrubbed log line and a Chinese 500 page."""

        async def endpoint(request: Request) -> Response:
            st = self.state()
            try:
                visitor = signed_in(request, st)
                if visitor is None:
                    return to_login(request)
                if not scoped:
                    return await handler(request, st, visitor)
                key = request.path_params["key"]
                scope = next((s for s in visitor.scopes if s.key == key), None)
                if scope is None:
                    return not_found(request, st, visitor)
                return await handler(request, st, visitor, scope)
            except Exception as e:
                log.error("unexpected error on %s %s: %s", request.method,
                          log_path(request.url.path), scrub(f"{type(e).__name__}: {e}"))  # fmt: skip
                return HTMLResponse("<p>服务器内部错误，请稍后再试（server error）</p>", 500,
                                    headers=dict(HEADERS))  # fmt: skip

        return endpoint

    def view(self, st, scope: Scope) -> tuple[object, ScopeView] | None:
        snap = st.refresher.current()
        if snap is None:
            return None
        return snap, self.views.get(snap.id, snap.outputs, scope)

    def cached(self, key: tuple, make: Callable[[], str]) -> str:
        html = self._pages.get(key)
        if html is None:
            html = self._pages[key] = make()
            while len(self._pages) > _PAGES_KEPT:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(key)
        return html

    def send(self, html: str, visitor: Visitor, status_html: str = "") -> HTMLResponse:
        page = html.replace(self._csrf, visitor.session.csrf).replace(self._status, status_html)
        return HTMLResponse(page, headers=dict(HEADERS))

    def page(self, request: Request, st, visitor: Visitor, scope: Scope, snap, name: str,
             template: str, extra: tuple = (), **context) -> str:  # fmt: skip
        """A page of ``scope`` with its placeholders, rendered once per (snapshot, person,
        scope, page): :meth:`send` fills them in."""
        mine = tuple(s.key for s in visitor.scopes)
        key = (snap.id, visitor.person.login, mine, scope.key, name, *extra)
        return self.cached(key, lambda: page_html(
            request, st, template, visitor, scope=scope, base=f"/portal/s/{scope.key}/",
            data_as_of=snap.data_as_of, csrf_token=self._csrf, **context,
        ))  # fmt: skip

    def waiting(self, request: Request, st, visitor: Visitor, scope: Scope | None) -> Response:
        """正在生成，请稍候 (200, reloads itself); a manager also sees why a refresh failed."""
        status = st.refresher.status() if visitor.is_manager else None
        return render(request, st, "portal/waiting.html.j2", visitor, scope=scope,
                      refresh_status=status)  # fmt: skip

    # ---- pages --------------------------------------------------------------------------
    async def root(self, request: Request) -> Response:
        return RedirectResponse("/portal/", 303, headers={"Cache-Control": "no-store"})

    async def home(self, request: Request, st, visitor: Visitor) -> Response:
        if visitor.home is None:
            return not_found(request, st, visitor)
        return RedirectResponse(f"/portal/s/{visitor.home.key}/", 303,
                                headers={"Cache-Control": "no-store"})  # fmt: skip

    async def index(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        found = self.view(st, scope)
        if found is None:
            return self.waiting(request, st, visitor, scope)
        snap, view = found
        groups, villages, others = _narrower(visitor, scope)
        manager = visitor.is_manager and scope.kind == TOWN
        html = self.page(
            request, st, visitor, scope, snap, "index", "portal/index.html.j2", view=view,
            groups=groups, villages=villages, others=others, manager=manager,
            status_slot=Markup(self._status) if manager else "",  # noqa: S704 (our constant)
        )  # fmt: skip
        status = ""
        if manager:  # the refresh status changes between snapshots: rendered per request
            status = page_html(request, st, "portal/status.html.j2", visitor,
                               refresh_status=st.refresher.status())  # fmt: skip
        return self.send(html, visitor, status)

    async def followups(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        return self.listing(request, st, visitor, scope, "followups",
                            lambda view: (view.listed, {"counts": view.counts}))  # fmt: skip

    async def quality(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        return self.listing(request, st, visitor, scope, "quality",
                            lambda view: (view.flags, {"total": len(view.flags)}))  # fmt: skip

    def listing(self, request: Request, st, visitor: Visitor, scope: Scope, name: str, pick: Callable) -> Response:  # fmt: skip
        """One of the paged lists (``name``: its page and template): ``pick(view)`` gives the
        rows and what else the template shows."""
        found = self.view(st, scope)
        if found is None:
            return self.waiting(request, st, visitor, scope)
        snap, view = found
        rows, extra = pick(view)
        page, pages, shown = _page(request, rows)
        return self.send(self.page(
            request, st, visitor, scope, snap, name, f"portal/{name}.html.j2", (page,),
            shown=shown, page=page, pages=pages, **extra,
        ), visitor)  # fmt: skip

    # ---- the dispatch report and the maps (not for own scopes) ------------------------
    def _photo_url(self, scope: Scope) -> Callable[[pd.Series], str | None]:
        def url(item: pd.Series) -> str | None:
            iid = item.get("item_id")
            return f"/portal/s/{scope.key}/photo/{iid}" if isinstance(iid, str) and _SAFE_ID.match(iid) else None  # fmt: skip

        return url

    async def dispatch(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        snap = st.refresher.current()
        if scope.kind == OWN or snap is None:
            return not_found(request, st, visitor)
        page = await self.made.get(
            (snap.id, "dispatch", scope.key),
            lambda: files.dispatch_page(st.settings, snap, scope, self._photo_url(scope)),
        )
        return HTMLResponse(page.html, headers={
            "Content-Security-Policy": page.csp, "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
        })  # fmt: skip

    async def dispatch_xlsx(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:  # fmt: skip
        snap = st.refresher.current()
        if scope.kind == OWN or snap is None:
            return not_found(request, st, visitor)
        path = await self.made.get((snap.id, "dispatch.xlsx", scope.key),
                                   lambda: files.dispatch_xlsx(st.settings, snap, scope))  # fmt: skip
        fallback = f"dispatch_{scope.key}_{snap.as_of:%Y-%m}.xlsx"
        return files.attachment(path, files.dispatch_name(snap, scope), fallback)

    async def _maps(self, st, scope: Scope, snap) -> list[files.ScopeMap]:
        return await self.made.get(
            (snap.id, "maps", scope.key),
            lambda: files.draw(st.settings, snap, scope, self._photo_url(scope)),
        )

    async def maps(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        snap = st.refresher.current()
        if scope.kind == OWN:
            return not_found(request, st, visitor)
        if snap is None:
            return self.waiting(request, st, visitor, scope)
        # the list names the maps at once; the first map opened draws them (a few seconds)
        html = self.page(request, st, visitor, scope, snap, "maps", "portal/maps.html.j2",
                         maps=files.planned_maps())  # fmt: skip
        return self.send(html, visitor)

    async def map_file(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        snap = st.refresher.current()
        if scope.kind == OWN or snap is None:
            return not_found(request, st, visitor)
        try:
            drawn = await self._maps(st, scope, snap)
        except DataError:
            drawn = []
        found = files.map_response(drawn, request.path_params["name"])
        return found if found is not None else not_found(request, st, visitor)

    # ---- downloads and photos ----------------------------------------------------------
    async def download(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        name = request.path_params["name"]
        found = self.view(st, scope)
        if name not in files.DOWNLOADS or found is None:
            return not_found(request, st, visitor)
        snap, view = found
        written = await self.made.get((snap.id, "downloads", scope.key, scope.login),
                                      lambda: files.write_downloads(snap, view))  # fmt: skip
        stem, ext = name.split(".")
        fallback = f"{stem}_{scope.key}_{snap.as_of.isoformat()}.{ext}"
        return files.attachment(written[name], files.download_name(name, scope, snap), fallback)

    async def photo(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        found = self.view(st, scope)
        item = _item(found[1], request.path_params["item_id"]) if found else None
        path = files.finding_photo(found[0], item) if item is not None else None
        response = files.photo_response(path, st.store.attachments_dir)
        return response if response is not None else not_found(request, st, visitor)

    async def fix_photo(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        found = self.view(st, scope)
        item = _item(found[1], request.path_params["item_id"]) if found else None
        path = files.fix_photo(found[0], st.store, item) if item is not None else None
        response = files.photo_response(path, st.store.attachments_dir)
        return response if response is not None else not_found(request, st, visitor)

    # ---- the rectification form --------------------------------------------------------
    def _handled(self, request: Request, st, scope: Scope):
        """The item of the URL (in the scope) and the built rectification form, or None."""
        found = self.view(st, scope)
        item = _item(found[1], request.path_params["item_id"]) if found else None
        form = st.catalog.forms().get(FORM_ID)
        return (item, form) if item is not None and form is not None else None

    async def handle(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:
        found = self._handled(request, st, scope)
        if found is None:
            return not_found(request, st, visitor)
        item, form = found
        base = st.base_url(request)
        here = f"{base}/portal/s/{scope.key}/handle/{quote(item.item_id, safe='')}"
        static = f"{base}/static"
        page = webforms.render_fill_page(
            f"{form.title} · {item.village}", f"{here}/form.xml", f"{here}/attachments/",
            f"{base}/portal/submission", static, back_url=f"/portal/s/{scope.key}/followups",
            username=visitor.person.login, csrf_token=visitor.session.csrf,
        )  # fmt: skip
        csp = webforms._scripts(static)["csp"]
        return HTMLResponse(page, headers={
            **_WEBFORMS_HEADERS, "Content-Security-Policy": f"{csp}; frame-ancestors 'none'",
        })  # fmt: skip

    async def handle_form(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:  # fmt: skip
        found = self._handled(request, st, scope)
        if found is None:
            return not_found(request, st, visitor)
        item, form = found
        # a report for a past date (the demo's year): a fix dated today would not count in it
        snap = st.refresher.current()
        past = snap is not None and snap.as_of < datetime.now(SHANGHAI).date()
        xml = prefilled(form.xml, {"item_id": item.item_id, "village": item.village_code or "",
                                   "finding": item.finding()},
                        {"fix_date": snap.as_of.isoformat()} if past else None)  # fmt: skip
        return Response(xml, media_type="application/xml; charset=utf-8",
                        headers={"Cache-Control": "private, no-store"})  # fmt: skip

    async def handle_media(self, request: Request, st, visitor: Visitor, scope: Scope) -> Response:  # fmt: skip
        found = self._handled(request, st, scope)
        media = found[1].media.get(request.path_params["name"]) if found else None
        if media is None:
            return not_found(request, st, visitor)
        kind = "text/csv; charset=utf-8" if media.name.endswith(".csv") else "application/octet-stream"  # fmt: skip
        return Response(media.data, media_type=kind, headers={"Cache-Control": "private, no-store"})

    async def submission(self, request: Request) -> Response:
        """The rectification form's submission: the person of the session, the CSRF token in
        ``X-CSRF-Token``, the link's submission path; 401 without a session (the browser keeps
        the form and sends it once signed in again)."""
        st = self.state()
        try:
            visitor = signed_in(request, st)
            if visitor is None:
                return openrosa_response(
                    401, "请先登录，再发送整改反馈（sign in first; the form is kept in this browser）",
                    st.limits, error=True,
                )  # fmt: skip
            if request.method == "POST" and not csrf_header_ok(request, visitor):
                return openrosa_response(403, _CSRF_MESSAGE, st.limits, error=True)
            accepts = Accepts(form=_only_rectification,
                              answers=lambda parsed: self._in_scope(st, visitor, parsed))  # fmt: skip
            return await receive(request, st, visitor.person, accepts)  # pokes the refresher
        except Exception as e:
            log.error("unexpected error on %s %s: %s", request.method, request.url.path,
                      scrub(f"{type(e).__name__}: {e}"))  # fmt: skip
            return openrosa_response(
                500, "服务器内部错误，请稍后重发（server error）", st.limits, error=True
            )

    def _in_scope(self, st, visitor: Visitor, parsed: Parsed) -> None:
        """A rectification must name an item (open or closed) of the person's scopes, with
        that item's village; else 403 and nothing is stored."""
        form = st.catalog.forms().get(FORM_ID)
        paths = field_paths(form.xml) if form is not None else {}
        iid = answer(parsed.data, paths.get("item_id", ("item_id",)))
        snap = st.refresher.current()
        if iid and snap is not None:
            for scope in _top(visitor):
                item = _item(self.views.get(snap.id, snap.outputs, scope), iid)
                if item is None:
                    continue
                if (answer(parsed.data, paths.get("village", ("village",))) or "") != (item.village_code or ""):  # fmt: skip
                    break
                return
        raise Refused(
            403,
            "该整改事项不在您的负责范围，未保存（the item is not in your scope; nothing stored）",
        )

    # ---- my collection link ------------------------------------------------------------
    async def link(self, request: Request, st, visitor: Visitor) -> Response:
        return render(request, st, "portal/link.html.j2", visitor)

    async def new_link(self, request: Request, st, visitor: Visitor) -> Response:
        form = await read_form(request)
        if not csrf_ok(form, visitor):
            return render(request, st, "portal/link.html.j2", visitor, 403, message=_CSRF_MESSAGE)
        address = request.client.host if request.client else None
        issued = rotate_token(st.store, visitor.person.login, by=visitor.person.login,
                              address=address)  # fmt: skip
        link = collection_link(st.base_url(request), issued.token)
        return render(request, st, "portal/link.html.j2", visitor, link=link, qr=qr_data_uri(link))


def _item(view: ScopeView, item_id: str) -> Item | None:
    """The scope's item of ``item_id``; a legacy id (16 hex digits, before issue 13) finds its
    item too, so an old link or a form opened before the change still works."""
    found = view.items.get(item_id)
    if found is None:
        found = view.items.get(fu.item_id_from_legacy(item_id) or "")
    return found


def _only_rectification(form_id: str) -> None:
    if form_id != FORM_ID:
        raise Refused(
            403,
            f"此处只接收整改反馈表（only the {FORM_ID} form is taken here, not {form_id[:80]}）",
        )


def _top(visitor: Visitor) -> list[Scope]:
    """The person's widest scopes (the others lie inside them)."""
    home = visitor.home
    return [s for s in visitor.scopes if home is not None and s.kind == home.kind]


def _narrower(visitor: Visitor, scope: Scope) -> tuple[list[Scope], list, list[Scope]]:
    """The groups and villages inside ``scope`` the person may open (villages with their
    code, for the open-item badges), and the person's other scopes of the home kind."""
    if scope.kind in (VILLAGE, OWN):
        inner_groups, inner = [], []
    else:
        inner_groups = [s for s in visitor.scopes if s.kind == GROUP and scope.kind == TOWN]
        inner = [
            _Village(s.key, s.label, next(iter(s.villages)))
            for s in visitor.scopes
            if s.kind == VILLAGE and s.villages <= scope.villages
        ]
    others = [s for s in _top(visitor) if s.key != scope.key and s.kind != TOWN]
    return inner_groups, inner, others


@dataclass(frozen=True)
class _Village:
    key: str
    label: str
    code: str


def _page(request: Request, rows: Sequence) -> tuple[int, int, Sequence]:
    """The page asked for (1 when not a plain number, kept within 1..pages), the number of
    pages, and that page's rows."""
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    raw = request.query_params.get("page", "1")
    page = min(int(raw) if _PAGE_NO.match(raw) else 1, pages)
    return page, pages, rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]


def routes(state: Callable[[], object]) -> list[Route]:
    p = _Portal(state)
    s = "/portal/s/{key}"
    item = "{item_id}"
    return [
        Route("/", p.root, methods=["GET"]),
        Route("/portal/", p.guard(p.home, scoped=False), methods=["GET"]),
        Route("/portal/link", p.guard(p.link, scoped=False), methods=["GET"]),
        Route("/portal/link", p.guard(p.new_link, scoped=False), methods=["POST"]),
        Route("/portal/submission", p.submission, methods=["HEAD", "POST"]),
        Route(f"{s}/", p.guard(p.index), methods=["GET"]),
        Route(f"{s}/followups", p.guard(p.followups), methods=["GET"]),
        Route(f"{s}/quality", p.guard(p.quality), methods=["GET"]),
        Route(f"{s}/dispatch", p.guard(p.dispatch), methods=["GET"]),
        Route(f"{s}/dispatch.xlsx", p.guard(p.dispatch_xlsx), methods=["GET"]),
        Route(f"{s}/maps/", p.guard(p.maps), methods=["GET"]),
        Route(f"{s}/maps/{{name}}", p.guard(p.map_file), methods=["GET"]),
        Route(f"{s}/download/{{name}}", p.guard(p.download), methods=["GET"]),
        Route(f"{s}/photo/{item}", p.guard(p.photo), methods=["GET"]),
        Route(f"{s}/fix-photo/{item}", p.guard(p.fix_photo), methods=["GET"]),
        Route(f"{s}/handle/{item}", p.guard(p.handle), methods=["GET"]),
        Route(f"{s}/handle/{item}/form.xml", p.guard(p.handle_form), methods=["GET"]),
        Route(f"{s}/handle/{item}/attachments/{{name}}", p.guard(p.handle_media), methods=["GET"]),
    ]
