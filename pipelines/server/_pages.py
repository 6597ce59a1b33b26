"""Shared by the portal's pages (:mod:`.portal`, :mod:`.manage`): the logged-in person, their
scopes, CSRF checks, the page chrome (数据截至 …) and the 404 that never says why.

Every page goes through :func:`signed_in`; a route for a scope goes through :func:`scope_of`,
which answers 404 for a key the person may not open, exactly as for one that does not exist.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from geo.villages import Village, load_villages
from pipelines.config import SHANGHAI
from pipelines.server import auth
from pipelines.server.scopes import Scope, resolve, scopes_for

_TEMPLATES = Path(__file__).parent / "templates"
_NEXT = re.compile(r"^/(?!/)[A-Za-z0-9/_.~-]{0,200}$")  # what /login takes as next
_env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=True, trim_blocks=True,
                   lstrip_blocks=True)  # fmt: skip
# Pages load manyi's own CSS and scripts from /static and nothing else; no inline script.
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-src 'self'",  # the maps, themselves sandboxed
    "frame-ancestors 'none'",
])  # fmt: skip
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Visitor:
    """A signed-in person and what they may open."""

    session: auth.Session
    scopes: list[Scope]  # home scope first

    @property
    def person(self):
        return self.session.person

    @property
    def home(self) -> Scope | None:
        return self.scopes[0] if self.scopes else None

    @property
    def is_manager(self) -> bool:
        return bool(self.scopes) and self.scopes[0].kind == "town"


@cache
def _villages(path: str) -> tuple[Village, ...]:
    return tuple(load_villages(path))


def villages(st) -> list[Village]:
    """The town's village register (read once per process)."""
    return list(_villages(str(st.settings.villages)))


def signed_in(request: Request, st) -> Visitor | None:
    """The visitor of ``request``'s session cookie, or None (send them to /login)."""
    session = auth.session_for(request, st.store)
    if session is None:
        return None
    return Visitor(session, scopes_for(session.person, st.roles, villages(st), st.settings.town))


def scope_of(visitor: Visitor, st, key: str) -> Scope | None:
    """The scope ``key`` if the visitor may open it, else None: answer :func:`not_found`."""
    return resolve(visitor.person, st.roles, villages(st), key, st.settings.town)


def csrf_ok(form: dict[str, str] | None, visitor: Visitor) -> bool:
    token = (form or {}).get("csrf", "").encode("utf-8", "replace")
    return form is not None and hmac.compare_digest(token, visitor.session.csrf.encode())


def csrf_header_ok(request: Request, visitor: Visitor) -> bool:
    """For script-sent requests (the rectification form's submission): ``X-CSRF-Token``."""
    token = request.headers.get("x-csrf-token", "").encode("utf-8", "replace")
    return hmac.compare_digest(token, visitor.session.csrf.encode())


def local_time(moment: datetime | None) -> str:
    """``2026-11-30 16:20`` in Asia/Shanghai, or 暂无."""
    if moment is None:
        return "暂无"
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def page_html(request: Request, st, template: str, visitor: Visitor | None, **context) -> str:
    """The HTML of a portal page (templates/portal/…, extending portal/base.html.j2). Its
    数据截至 line is ``data_as_of`` when given, else the refresher's last good snapshot's.
    ``csrf_token`` stands in for the session's token in the page's forms (the portal caches
    pages with a placeholder there and puts each session's token in per request)."""
    refresher = getattr(st, "refresher", None)
    status_now = refresher.status() if refresher is not None else None
    return _env.get_template(template).render(
        static_url=f"{st.base_url(request)}/static", visitor=visitor, refresh=status_now,
        local_time=local_time, **context,
    )  # fmt: skip


def render(request: Request, st, template: str, visitor: Visitor | None, status: int = 200,
           **context) -> HTMLResponse:  # fmt: skip
    """A portal page (templates/portal/…, extending portal/base.html.j2) as the answer."""
    html = page_html(request, st, template, visitor, **context)
    return HTMLResponse(html, status, headers=dict(HEADERS))


async def read_form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form posted by a portal page (16 KB at most), or None if it is not
    one; the same reader as the login form's."""
    return await auth.read_form(request)


def to_login(request: Request) -> Response:
    """303 to /login, back to this page afterwards (a plain path only: anything else is
    dropped, as the login form drops it)."""
    path = request.url.path
    nxt = f"?next={path}" if _NEXT.match(path) else ""
    return RedirectResponse(f"/login{nxt}", 303, headers={"Cache-Control": "no-store"})


def not_found(request: Request, st, visitor: Visitor | None = None) -> Response:
    """The one 404 of the portal: it never says whether the thing exists."""
    return render(request, st, "portal/not_found.html.j2", visitor, 404)
