"""`manyi serve`: the ASGI app (Starlette on uvicorn) phones send their forms to.

One process (or ``--workers N`` processes sharing a PostgreSQL store, one of them refreshing
the portal): the forms of ``build_dir`` (``manyi forms build``), the store (under
``data_dir``, or ``store_url``), and the people of ``manyi users``. Links it writes (formList, manifest, media)
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
import json
import logging
import os
import pickle
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime
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
from pipelines.errors import ConfigError, scrub
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
from pipelines.server.refresher import Refresher, Snapshot
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


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, as_of: date | None = None, workers: int = 1) -> None:  # fmt: skip
    """Run the server until interrupted; ``as_of`` fixes the portal's report date (default:
    today, within the plan year). ``workers`` > 1 runs that many uvicorn processes, which
    needs a PostgreSQL store (``store_url``); one of them refreshes the portal
    (:class:`_SharedRefresher`)."""
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more worker processes")
    if workers > 1 and not settings.store_url:
        raise ConfigError(
            f"--workers {workers} needs a PostgreSQL store: the SQLite file under data_dir "
            "takes one server process; set store_url / MANYI_STORE_URL "
            "(postgresql://…), or run with --workers 1"
        )
    trusted = [p.strip() for p in (settings.trusted_proxies or "").split(",") if p.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    limits = Limits()
    if raw := os.environ.get("MANYI_SERVE_BODY_TIMEOUT_S"):
        limits = Limits(body_timeout_s=float(raw))
    options = dict(
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
    if workers == 1:
        uvicorn.run(create_app(settings, limits, Refresher(settings, as_of=as_of)), **options)
        return
    # uvicorn starts each worker from an import string: the worker reads what this run was
    # told from a file only this user can read (the settings hold the store's password)
    folder = Path(tempfile.mkdtemp(prefix="manyi-serve-"))
    told = folder / "settings.pickle"
    fd = os.open(told, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        pickle.dump((settings, limits, as_of), out)
    os.environ[_WORKER_ENV] = str(told)
    try:
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(f"{__name__}:_worker_app", factory=True, workers=workers, **options)  # fmt: skip
        log.info("manyi serve: %d workers on http://%s:%d", workers, host, port)
        Multiprocess(config, sockets=[_listen(host, port)]).run()
    finally:
        os.environ.pop(_WORKER_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def _listen(host: str, port: int) -> socket.socket:
    """The workers' shared listening socket, made as uvicorn's bind_socket makes it but with
    its protocol named: asyncio turns Nagle off on accepted connections only when the socket
    says IPPROTO_TCP, and without that every answer waits ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror}); stop what uses the port, or "
            "choose another with --port"
        ) from None
    sock.set_inheritable(True)
    return sock


_WORKER_ENV = "MANYI_SERVE_WORKER_SETTINGS"
_REFRESH_LOCK = 0x6D616E7972  # pg_try_advisory_lock key of the refreshing worker
_SHARED = "shared.json"  # <portal root>/shared.json: the leader's latest snapshot
_OUTPUTS = "outputs.pickle"


def _worker_app() -> Starlette:
    """One worker of ``manyi serve --workers N`` (a uvicorn factory)."""
    with Path(os.environ[_WORKER_ENV]).open("rb") as f:
        settings, limits, as_of = pickle.load(f)  # noqa: S301 - our own file, mode 0600
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return create_app(settings, limits, _SharedRefresher(settings, as_of=as_of))


class _SharedRefresher(Refresher):
    """The portal's refresher when several workers share a PostgreSQL store: one worker,
    the one holding ``pg_try_advisory_lock`` on a connection of its own, refreshes; after
    each snapshot it writes the snapshot's Outputs to ``<folder>/outputs.pickle`` and then,
    atomically, ``<portal root>/shared.json`` naming it. The others poll that file and load
    the newest snapshot; each also tries the lock, so when the leader dies (its connection
    closes, the lock goes) another worker takes over. Trust: the pickle is read from the
    server's own outputs folder; whoever can write there can already change what it serves
    and runs as this user."""

    def __init__(self, settings, *, as_of: date | None = None) -> None:
        super().__init__(settings, as_of=as_of)
        self._lead_conn = None
        self._follower: threading.Thread | None = None
        self._loaded: str | None = None

    def start(self) -> None:
        if self._try_lead():
            super().start()
            return
        if self._follower is None:
            self._follower = threading.Thread(
                target=self._follow, name="manyi-refresh-follow", daemon=True
            )
            self._follower.start()

    def stop(self) -> None:
        super().stop()
        if self._follower is not None and self._follower is not threading.current_thread():
            self._follower.join(1.0)
        if self._lead_conn is not None:
            with contextlib.suppress(Exception):
                self._lead_conn.close()  # the lock goes with the session

    def _try_lead(self) -> bool:
        """Ask for the lock on this worker's own connection (kept: a follower asks again
        every second); a broken connection is made again next time."""
        import psycopg

        try:
            if self._lead_conn is None or self._lead_conn.closed:
                self._lead_conn = psycopg.connect(
                    self.settings.store_url.get(), autocommit=True, application_name="manyi-lead"
                )
            got = self._lead_conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (_REFRESH_LOCK,)
            ).fetchone()[0]
        except psycopg.Error as e:
            log.warning("refresh: cannot ask who refreshes: %s", scrub(str(e)))
            with contextlib.suppress(Exception):
                self._lead_conn.close()
            return False
        if got:
            log.info("this worker (pid %d) refreshes the portal", os.getpid())
        return bool(got)

    def _follow(self) -> None:
        while not self._stopping.wait(min(self.poll_s, 1.0)):
            if self._try_lead():
                super().start()
                return
            with contextlib.suppress(Exception):  # a snapshot being replaced: next time
                self._load()

    def _load(self) -> None:
        shared = json.loads((self.root / _SHARED).read_text(encoding="utf-8"))
        sid = shared["id"]
        if sid == self._loaded or not _SNAPSHOT_ID.match(sid):
            return
        folder = self.root / sid
        with (folder / _OUTPUTS).open("rb") as f:
            outputs = pickle.load(f)  # noqa: S301 - the server's own folder (see above)
        snap = Snapshot(
            sid,
            folder,
            date.fromisoformat(shared["as_of"]),
            datetime.fromisoformat(shared["made_at"]),
            datetime.fromisoformat(shared["data_as_of"]),
            outputs,
        )
        with self._lock:
            self._current = snap
        self._loaded = sid

    def _make(self) -> Snapshot:
        snap = super()._make()
        part = snap.folder / f".{_OUTPUTS}.part"
        with part.open("wb") as out:
            pickle.dump(snap.outputs, out, protocol=pickle.HIGHEST_PROTOCOL)
        part.replace(snap.folder / _OUTPUTS)
        body = {
            "id": snap.id,
            "as_of": snap.as_of.isoformat(),
            "made_at": snap.made_at.isoformat(),
            "data_as_of": snap.data_as_of.isoformat(),
        }
        shared = self.root / f".{_SHARED}.part"
        shared.write_text(json.dumps(body), encoding="utf-8")
        shared.replace(self.root / _SHARED)
        return snap


_SNAPSHOT_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{4}$")
