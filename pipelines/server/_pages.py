"""Shared by the portal's pages (:mod:`.portal`, :mod:`.manage`): the logged-in person, their
scopes, CSRF checks, the page chrome (数据截至 …) and the 404 that never says why.

Every page goes through :func:`signed_in`; a route for a scope goes through :func:`scope_of`,
which answers 404 for a key the person may not open, exactly as for one that does not exist.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from geo.villages import Village, load_villages
from pipelines.config import SHANGHAI
from pipelines.server import auth
from pipelines.server.scopes import Scope, resolve, scopes_for

_TEMPLATES = Path(__file__).parent / "templates"
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


def render(request: Request, st, template: str, visitor: Visitor | None, status: int = 200,
           **context) -> HTMLResponse:  # fmt: skip
    """A portal page (templates/portal/…, extending portal_base.html.j2)."""
    refresher = getattr(st, "refresher", None)
    status_now = refresher.status() if refresher is not None else None
    html = _env.get_template(template).render(
        static_url=f"{st.base_url(request)}/static", visitor=visitor, refresh=status_now,
        local_time=local_time, **context,
    )  # fmt: skip
    return HTMLResponse(html, status, headers=dict(HEADERS))


def not_found(request: Request, st, visitor: Visitor | None = None) -> Response:
    """The one 404 of the portal: it never says whether the thing exists."""
    return render(request, st, "portal/not_found.html.j2", visitor, 404)
