"""`manyi serve`: the ASGI app (Starlette on uvicorn) phones send their forms to.

One process: the forms of ``build_dir`` (``manyi forms build``), the store under
``data_dir``, and the people of ``manyi users``. Links it writes (formList, manifest, media)
start from ``public_url`` when set, else from the request's scheme and host; uvicorn takes
``X-Forwarded-Proto``/``-For`` only from ``trusted_proxies``.

The access log names paths with ``/key/***``: a collection link is a credential; control
characters in a path are escaped there. Every answer says ``X-Content-Type-Options: nosniff``;
the ``/key/`` pages send their Content-Security-Policy (with ``frame-ancestors 'none'``) as a
header too.

Slow clients: uvicorn has no timeout for a request's headers, so the server must sit behind a
proxy (Caddy, nginx) that has one; it takes at most ``_MAX_CONNECTIONS`` connections (more get
503) and a submission body must arrive within ``Limits.body_timeout_s`` (300 s;
``MANYI_SERVE_BODY_TIMEOUT_S`` changes it, the tests shorten it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pipelines.config import Settings
from pipelines.errors import scrub
from pipelines.server import auth, manage, portal, webforms
from pipelines.server._catalog import Catalog
from pipelines.server._submissions import Ingest
from pipelines.server.openrosa import (
    Limits,
    Throttle,
    guard,
    log_path,
    openrosa_response,
    routes,
)
from pipelines.server.people import Person, Role, load_roles
from pipelines.server.refresher import Refresher
from pipelines.store import Store, open_store

log = logging.getLogger("manyi.serve")
_PART_MAX_AGE_S = 3600  # a .part- file older than this is from a killed writer
_MAX_CONNECTIONS = 500  # uvicorn's limit_concurrency: past it, new requests get 503
_KEEP_ALIVE_S = 15  # an idle kept-alive connection is closed after this


@dataclass
class _State:
    settings: Settings
    catalog: Catalog
    roles: dict[str, Role]
    limits: Limits
    throttle: Throttle = field(default_factory=Throttle)
    log: logging.Logger = log
    store: Store | None = None  # the event loop's reads (tokens); WAL lets them run beside writes
    blob_store: Store | None = None  # photos are written through it from worker threads
    ingest: Ingest | None = None
    refresher: Refresher | None = None  # the portal's outputs, refreshed in the background
    parses: asyncio.Semaphore = field(init=False)  # submission bodies parsed at once

    def __post_init__(self) -> None:
        self.parses = asyncio.Semaphore(self.limits.max_parses)

    def base_url(self, request: Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")


def create_app(settings: Settings, limits: Limits | None = None, refresher: Refresher | None = None) -> Starlette:  # fmt: skip
    """The app for ``settings``: OpenRosa under ``/key/{token}``, the portal under
    ``/portal/`` and ``/manage/``; the store is opened and the refresher started when the
    server starts, and both stopped when it stops."""
    state = _State(
        settings, Catalog(settings.build_dir), load_roles(settings.roles), limits or Limits()
    )
    state.refresher = refresher if refresher is not None else Refresher(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.store = open_store(settings)
        state.blob_store = state.store
        _sweep_parts(state.store.attachments_dir)
        state.ingest = Ingest(lambda: open_store(settings))
        state.refresher.start()
        try:
            yield
        finally:
            state.refresher.stop()
            state.ingest.close()
            state.store.close()

    async def not_found(request: Request, exc: Exception):
        if request.url.path.startswith("/key/"):  # an OpenRosa client: answer as one
            return openrosa_response(404, "没有这个地址（not found）", state.limits, error=True)
        return PlainTextResponse("404 没有这个页面 (not found)", 404)

    async def crashed(request: Request, exc: Exception):
        log.error("unexpected error on %s %s: %s", request.method,
                  log_path(request.url.path), scrub(f"{type(exc).__name__}: {exc}"))  # fmt: skip
        return openrosa_response(
            500, "服务器内部错误，请稍后重发（server error）", state.limits, error=True
        )

    app = Starlette(
        routes=[
            *routes(lambda: state),
            *_browser_routes(lambda: state),
            *auth.routes(lambda: state),
            *portal.routes(lambda: state),
            *manage.routes(lambda: state),
        ],
        lifespan=lifespan,
        # gzip: the Web Forms engine is 4.6 MB, 1.3 MB compressed, on a phone's first visit
        middleware=[
            Middleware(_AccessLog),
            Middleware(_NoSniff),
            Middleware(GZipMiddleware, minimum_size=1024),
        ],
        exception_handlers={404: not_found, 500: crashed},
    )
    app.state.manyi = state
    return app


def _browser_routes(state) -> list[Route | Mount]:
    """The same link opened in a phone browser: the person's forms, each filled in ODK Web
    Forms (:mod:`.webforms`), sent to the same OpenRosa submission endpoint."""

    async def form_list(request: Request, st: _State, person: Person) -> HTMLResponse:
        base = f"{st.base_url(request)}/key/{request.path_params['token']}"
        built = st.catalog.forms()
        mine = [built[f] for f in person.forms(st.roles) if f in built]
        static = f"{st.base_url(request)}/static"
        page = webforms.render_form_list(
            person.name, mine, {f.form_id: f"{base}/fill/{f.form_id}" for f in mine},
            submission_url=f"{base}/submission", static_url=static,
        )  # fmt: skip
        return HTMLResponse(page, headers=_page_headers(static))

    async def fill(request: Request, st: _State, person: Person) -> HTMLResponse:
        fid = request.path_params["form_id"]
        form = st.catalog.forms().get(fid) if fid in person.forms(st.roles) else None
        if form is None:
            return HTMLResponse(
                "<p>没有这个表单（not found）</p>", 404,
                headers={**_PAGE_HEADERS, "Content-Security-Policy": _NOTHING_CSP},
            )  # fmt: skip
        base = f"{st.base_url(request)}/key/{request.path_params['token']}"
        static = f"{st.base_url(request)}/static"
        page = webforms.render_fill_page(
            form.title, f"{base}/forms/{fid}.xml", f"{base}/forms/{fid}/attachments/",
            f"{base}/submission", static, back_url=base, username=person.login,
        )  # fmt: skip
        return HTMLResponse(page, headers=_page_headers(static))

    return [
        Route("/key/{token}", guard(state, form_list), methods=["GET"]),
        Route("/key/{token}/", guard(state, form_list), methods=["GET"]),
        Route("/key/{token}/fill/{form_id}", guard(state, fill), methods=["GET"]),
        webforms.static_mount("/static"),
    ]


# The pages hold the link's token in their URLs: never cache them, never send them on, never
# frame them (a <meta> CSP cannot say frame-ancestors).
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_NOTHING_CSP = "default-src 'none'; frame-ancestors 'none'"


def _page_headers(static_url: str) -> dict[str, str]:
    """The page's own CSP (the one its <meta> holds) as a header, plus frame-ancestors."""
    csp = webforms._scripts(static_url.rstrip("/"))["csp"]
    return {**_PAGE_HEADERS, "Content-Security-Policy": f"{csp}; frame-ancestors 'none'"}


class _NoSniff:
    """``X-Content-Type-Options: nosniff`` on every answer (a photo or roster is never run
    as a script or page)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-content-type-options" not in headers:
                    headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, sending)


class _AccessLog:
    """One line per request, the token scrubbed from the path; uvicorn's own access log (which
    would print the token) is off."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [0]
        start = time.perf_counter()

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("?", 0)
            log.info(
                "%s %s %s %d %.0fms", client[0], scope["method"], log_path(scope["path"]),
                status[0], (time.perf_counter() - start) * 1000,
            )  # fmt: skip


def _sweep_parts(folder: Path) -> None:
    """Remove the temporary files of photo writes a killed server left half-written."""
    now = time.time()
    for part in folder.glob(".part-*") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > _PART_MAX_AGE_S:
                part.unlink()


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, as_of: date | None = None) -> None:  # fmt: skip
    """Run the server until interrupted (uvicorn, one process); ``as_of`` fixes the portal's
    report date (default: today, within the plan year)."""
    import uvicorn

    trusted = [p.strip() for p in (settings.trusted_proxies or "").split(",") if p.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    limits = Limits()
    if raw := os.environ.get("MANYI_SERVE_BODY_TIMEOUT_S"):
        limits = Limits(body_timeout_s=float(raw))
    uvicorn.run(
        create_app(settings, limits, Refresher(settings, as_of=as_of)),
        host=host,
        port=port,
        access_log=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        log_level="info",
        timeout_graceful_shutdown=10,
        # no header timeout in uvicorn: the proxy in front must have one (README)
        limit_concurrency=_MAX_CONNECTIONS,
        timeout_keep_alive=_KEEP_ALIVE_S,
    )
