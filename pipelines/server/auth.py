"""Portal logins: passwords, sessions, CSRF tokens, the login throttle and the audit log.

* ``manyi users password LOGIN`` sets a person's password (:func:`set_password`): at least
  10 characters, not the login, hashed with argon2id (argon2-cffi); the password itself is
  never stored nor logged.
* ``GET /login`` shows the form, ``POST /login`` logs in: a NEW random session id each time
  (a session id the browser had is discarded: no fixation), sent as the ``manyi_session``
  cookie (HttpOnly, SameSite=Lax, Path=/, Secure when the request is https directly, through
  a trusted proxy's ``X-Forwarded-Proto`` or by ``public_url``). Only the sha256 of the id is
  stored, with its times: a session ends after 8 h idle or 7 days in all.
* ``POST /logout``, ``GET /account`` (who you are, role, villages) and
  ``POST /account/password`` (the current password required).
* Every state-changing form carries a CSRF token: the session's own random token once logged
  in (synchroniser token, kept in the ``sessions`` row); before login, an HMAC (a key of this
  process) of a pre-session cookie, so the login form needs no row. A missing or wrong token
  is 403.
* Failed logins are counted from the audit log, per login and per client address: 5 for a
  login or 20 for an address in 15 minutes, and every try is 429 until the oldest leaves the
  window, the right password too. An unknown login is verified against a dummy hash and
  answered exactly as a wrong password is, so the answers tell no one which logins exist.
* Every request with a session looks the person up again (:func:`session_for`): a disabled
  person's sessions end at once.
* The ``audit`` table (:func:`read_audit`): login, login_failed, logout, password_changed and
  session_rejected, in UTC, with the login, the client address and a detail with no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pipelines.errors import DataError, scrub
from pipelines.records import now_utc, utc_text
from pipelines.server.people import Person, get_person
from pipelines.store import Store

SESSION_COOKIE = "manyi_session"
_PRE_COOKIE = "manyi_pre"
IDLE = timedelta(hours=8)
LIFETIME = timedelta(days=7)
LOGIN_LIMIT, ADDRESS_LIMIT, WINDOW = 5, 20, timedelta(minutes=15)
MIN_PASSWORD, MAX_PASSWORD = 12, 1024  # ASVS 2.1.1: at least 12
EVENTS = (
    "login",
    "login_failed",
    "logout",
    "password_changed",
    "session_rejected",
    "person_disabled",
    "link_rotated",
    # the town manager's pages (pipelines/server/manage.py)
    "person_added",
    "person_enabled",
    "links_printed",
    "month_published",
    "month_unpublished",
)
_TOUCH = timedelta(minutes=1)  # last_seen_at is written at most this often per session
_FORM_BYTES = 16 * 1024  # a login or password form; anything bigger is not one
_ID = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
_LOGIN_TEXT = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")  # as people.py accepts them
_NEXT = re.compile(r"^/(?!/)[A-Za-z0-9/_.~-]{0,200}$")
_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (64 MiB, t=3, p=4)
# Each verify takes 64 MiB and ~50 ms of CPU: two at a time, whatever the crowd at /login.
_HASHING = anyio.CapacityLimiter(2)
_TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=True, trim_blocks=True,
                   lstrip_blocks=True, keep_trailing_newline=True)  # fmt: skip
log = logging.getLogger("manyi.serve")


@dataclass(frozen=True)
class Session:
    """A logged-in browser: the person (looked up again on this request) and the session's
    CSRF token, for the forms of the page."""

    person: Person
    csrf: str
    id_sha256: str
    created_at: str
    expires_at: str


@dataclass(frozen=True)
class AuditEntry:
    at: str  # UTC, YYYY-MM-DDTHH:MM:SS.fffZ
    login: str | None
    address: str | None
    event: str  # one of EVENTS
    detail: str


# ---- passwords -------------------------------------------------------------------------
_RUNS = ("0123456789" * 3, "abcdefghijklmnopqrstuvwxyz" * 2, "qwertyuiopasdfghjklzxcvbnm" * 2)


def _is_run(password: str) -> bool:
    """One keyboard or counting run, either way: the first guesses of any attacker."""
    low = password.lower()
    return any(low in run or low[::-1] in run for run in _RUNS)


def check_password(login: str, password: str) -> None:
    """A new password's rules, as one line: 12 to 1024 characters, at least 5 different
    characters and not one run (123456789012, abcdefghijkl), not the login, no control
    characters, encodable as UTF-8."""
    if len(password) < MIN_PASSWORD:
        raise DataError(
            f"password for {login!r}: at least {MIN_PASSWORD} characters (密码至少 {MIN_PASSWORD} 位)"
        )
    if len(password) > MAX_PASSWORD:
        raise DataError(f"password for {login!r}: at most {MAX_PASSWORD} characters")
    if len(set(password)) < 5 or _is_run(password):
        raise DataError(
            f"password for {login!r}: too easy to guess (a repeated character or a run like "
            "123456789012); mix letters, digits and signs (密码过于简单)"
        )
    if login.lower() in password.lower():
        raise DataError(f"password for {login!r}: must not contain the login (密码不能包含登录名)")
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in password):
        raise DataError(
            f"password for {login!r}: has a control character or a broken character; type it again"
        )


def set_password(
    store: Store, login: str, password: str, *, address: str | None = None,
    keep_session: str | None = None, detail: str = "set with manyi users password",
) -> Person:  # fmt: skip
    """Store ``login``'s new password (argon2id) and end their sessions, except
    ``keep_session`` (the sha256 of the session that changed it)."""
    person = get_person(store, login)
    check_password(login, password)
    _save_hash(store, login, _hasher.hash(password), address, keep_session, detail)
    return person


def _save_hash(store: Store, login: str, digest: str, address: str | None,
               keep_session: str | None, detail: str) -> None:  # fmt: skip
    with store.transaction() as db:
        db.execute(
            "INSERT INTO passwords (login, hash, changed_at) VALUES (?, ?, ?) ON CONFLICT "
            "(login) DO UPDATE SET hash = excluded.hash, changed_at = excluded.changed_at",
            (login, digest, now_utc()),
        )
        db.execute(
            "DELETE FROM sessions WHERE login = ? AND id_sha256 IS NOT ?", (login, keep_session)
        )
        _audit(db, "password_changed", login, address, detail)


def has_password(store: Store, login: str) -> bool:
    return (
        store.db.execute("SELECT 1 FROM passwords WHERE login = ?", (login,)).fetchone() is not None
    )


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(digest: str | None, password: str) -> bool:
    """Constant work whether or not there is a hash: an unknown login costs a verify too."""
    try:
        return _hasher.verify(digest or _dummy_hash(), password) and digest is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def _verify_async(digest: str | None, password: str) -> bool:
    return await anyio.to_thread.run_sync(_verify, digest, password, limiter=_HASHING)


# ---- audit -----------------------------------------------------------------------------
def _audit(db, event: str, login: str | None, address: str | None, detail: str = "") -> None:
    db.execute(
        "INSERT INTO audit (at, login, address, event, detail) VALUES (?, ?, ?, ?, ?)",
        (now_utc(), login, address, event, scrub(detail)[:300]),
    )


def write_audit(store: Store, event: str, login: str | None, address: str | None, detail: str = "") -> None:  # fmt: skip
    """Append one audit row (its own transaction)."""
    with store.transaction() as db:
        _audit(db, event, login, address, detail)


_AUDIT_SELECT = (
    "SELECT at, login, address, event, detail FROM audit "
    "WHERE (CAST(? AS TEXT) IS NULL OR login = ?) AND (CAST(? AS TEXT) IS NULL OR event = ?) "
)
_READ_AUDIT = {
    # newest first in insertion order: SQLite's rowid; PostgreSQL has none, its ctid breaks
    # ties of the same time (audit rows are never updated)
    "sqlite": _AUDIT_SELECT + "ORDER BY rowid DESC LIMIT ?",
    "postgresql": _AUDIT_SELECT + "ORDER BY at DESC, ctid DESC LIMIT ?",
}


def read_audit(store: Store, *, login: str | None = None, event: str | None = None,
               limit: int = 1000) -> list[AuditEntry]:  # fmt: skip
    """The newest audit rows first, optionally of one login or one event."""
    rows = store.db.execute(
        _READ_AUDIT[store.dialect], (login, login, event, event, limit)
    ).fetchall()
    return [AuditEntry(*r) for r in rows]


# ---- throttle --------------------------------------------------------------------------
def _utc(moment: datetime) -> str:
    return utc_text(moment.isoformat())


# the n-th newest failure in the window, per login and per address
_NTH_BY_LOGIN = (
    "SELECT at FROM audit WHERE login = ? AND event = 'login_failed' AND at > ? "
    "ORDER BY at DESC LIMIT 1 OFFSET ?"
)
_NTH_BY_ADDRESS = (
    "SELECT at FROM audit WHERE address = ? AND event = 'login_failed' AND at > ? "
    "ORDER BY at DESC LIMIT 1 OFFSET ?"
)


def _retry_after(store: Store, login: str | None, address: str) -> int:
    """Seconds until a login try may be made (0: now): failures in the window, per login
    and per address, from the audit log, so a restart forgets nothing."""
    now = datetime.now(UTC)
    since = _utc(now - WINDOW)
    wait = 0
    for sql, value, limit in ((_NTH_BY_LOGIN, login, LOGIN_LIMIT), (_NTH_BY_ADDRESS, address, ADDRESS_LIMIT)):  # fmt: skip
        if value is None:
            continue
        row = store.db.execute(sql, (value, since, limit - 1)).fetchone()
        if row:  # the limit-th newest failure is still in the window: wait for it to leave
            oldest = datetime.fromisoformat(row[0].replace("Z", "+00:00"))
            wait = max(wait, int((oldest + WINDOW - now).total_seconds()) + 1)
    return wait


class _OneAtATime:
    """Password tries for one login, and from one address, are checked one after another:
    each reads the failures the tries before it wrote, so a burst of concurrent guesses
    cannot slip past the throttle (one server process; its locks live in memory)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, *keys: str):
        keys = tuple(sorted({k for k in keys if k}))  # one order everywhere: no deadlock
        for k in keys:
            self._users[k] = self._users.get(k, 0) + 1
            self._locks.setdefault(k, asyncio.Lock())
        try:
            async with contextlib.AsyncExitStack() as stack:
                for k in keys:
                    await stack.enter_async_context(self._locks[k])
                yield
        finally:
            for k in keys:
                self._users[k] -= 1
                if not self._users[k]:
                    del self._users[k]
                    self._locks.pop(k, None)


# ---- sessions --------------------------------------------------------------------------
def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def _new_session(store: Store, login: str, address: str, replaces: str | None) -> str:
    sid, now = secrets.token_urlsafe(32), datetime.now(UTC)
    with store.transaction() as db:
        if replaces:  # whatever id the browser came with is gone: no session fixation
            db.execute("DELETE FROM sessions WHERE id_sha256 = ?", (_sha(replaces),))
        db.execute(
            "INSERT INTO sessions (id_sha256, login, csrf, address, created_at, last_seen_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_sha(sid), login, secrets.token_urlsafe(32), address, _utc(now), _utc(now),
             _utc(now + LIFETIME)),
        )  # fmt: skip
        db.execute("DELETE FROM sessions WHERE expires_at < ?", (_utc(now),))
        _audit(db, "login", login, address)
    return sid


def session_for(request: Request, store: Store) -> Session | None:
    """The session of ``request``'s cookie, or None. Checked on every request: the person
    must still be enabled, the session neither idle for 8 h nor older than 7 days."""
    sid = request.cookies.get(SESSION_COOKIE, "")
    if not _ID.match(sid):
        return None
    digest = _sha(sid)
    row = store.db.execute(
        "SELECT s.login, s.csrf, s.created_at, s.last_seen_at, s.expires_at, p.disabled "
        "FROM sessions s JOIN people p ON p.login = s.login WHERE s.id_sha256 = ?",
        (digest,),
    ).fetchone()
    if row is None:
        return None
    login, csrf, created, seen, expires, disabled = row
    now = datetime.now(UTC)
    reason = (
        "person disabled" if disabled
        else "session older than 7 days" if expires < _utc(now)
        else "idle for 8 hours" if seen < _utc(now - IDLE)
        else None
    )  # fmt: skip
    if reason:
        with store.transaction() as db:
            db.execute("DELETE FROM sessions WHERE id_sha256 = ?", (digest,))
            _audit(db, "session_rejected", login, client_address(request), reason)
        return None
    if seen < _utc(now - _TOUCH):
        with store.transaction() as db:
            db.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE id_sha256 = ?", (_utc(now), digest)
            )
    return Session(get_person(store, login), csrf, digest, created, expires)


def _end_session(store: Store, session: Session, address: str) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM sessions WHERE id_sha256 = ?", (session.id_sha256,))
        _audit(db, "logout", session.person.login, address)


# ---- HTTP ------------------------------------------------------------------------------
def client_address(request: Request) -> str:
    """The client's address (the proxy's, unless uvicorn trusts it to say the client's)."""
    return request.client.host if request.client else "?"


def _secure(request: Request, public_url: str | None) -> bool:
    """https as the browser sees it: uvicorn sets the scheme from X-Forwarded-Proto only for
    a trusted proxy; a public_url in https means the browser is on https, whatever reached us."""
    return request.url.scheme == "https" or (public_url or "").startswith("https://")


async def read_fields(request: Request, *, max_bytes: int = _FORM_BYTES,
                      max_fields: int = 20) -> dict[str, list[str]] | None:  # fmt: skip
    """A small urlencoded form, every value of each field (the manager's add form repeats
    villages), or None if it is not one or is bigger than ``max_bytes``."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):  # fmt: skip
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        return None


async def read_form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form (a login or password form), first value of each field."""
    fields = await read_fields(request)
    return None if fields is None else {k: v[0] for k, v in fields.items()}


_STYLE = (
    ".card{background:#fff;border-radius:8px;padding:16px;margin:12px 0;"
    "box-shadow:0 1px 2px rgba(0,0,0,.08)}"
    ".card label{display:block;margin:12px 0 4px;font-size:15px}"
    ".card input{width:100%;font-size:17px;padding:10px;border:1px solid #b8c2cc;border-radius:6px}"
    ".card button{margin-top:16px;width:100%;font-size:17px;padding:10px;border:0;"
    "border-radius:6px;background:#1f5fa8;color:#fff}"
    ".card button.plain{background:#e8edf2;color:#1d2125}"
    ".facts{margin:0}.facts dt{color:#5f6b76;font-size:13px;margin-top:8px}.facts dd{margin:0}"
    ".card h2{margin:0;font-size:18px}.card>label:first-of-type,.facts dt:first-child{margin-top:0}"
)
_IMPORT_MAP = '{"imports": {}}'  # base.html.j2 always writes one; it is allowed by its hash


def _b64sha(text: str) -> str:
    import base64

    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


_CSP = "; ".join([
    "default-src 'self'",
    f"script-src 'self' 'sha256-{_b64sha(_IMPORT_MAP)}'",
    f"style-src 'self' 'sha256-{_b64sha(_STYLE)}'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
])  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP + "; frame-ancestors 'none'",  # a <meta> CSP cannot say it
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class _Portal:
    """The login routes of one running server: ``state()`` gives its store, settings and
    roles; the pre-session key lives as long as the process."""

    def __init__(self, state: Callable[[], object]):
        self.state = state
        self._key = secrets.token_bytes(32)
        self._serial = _OneAtATime()

    # -- pages --
    def page(self, request: Request, template: str, status: int = 200, **context) -> HTMLResponse:  # fmt: skip
        st = self.state()
        html = _env.get_template(template).render(
            csp=_CSP, import_map=_IMPORT_MAP, config={}, style=_STYLE,
            static_url=f"{st.base_url(request)}/static", **context,
        )  # fmt: skip
        return HTMLResponse(html, status, headers=dict(SECURITY_HEADERS))

    def _cookie(self, response: Response, request: Request, name: str, value: str | None,
                max_age: int | None = None) -> None:  # fmt: skip
        secure = _secure(request, self.state().settings.public_url)
        if value is None:
            response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="lax")
        else:
            response.set_cookie(name, value, max_age=max_age, path="/", secure=secure,
                                httponly=True, samesite="lax")  # fmt: skip

    def _pre_token(self, pre: str) -> str:
        return hmac.new(self._key, b"pre:" + pre.encode(), hashlib.sha256).hexdigest()

    def login_form(self, request: Request, status: int = 200, message: str = "",
                   login: str = "", headers: dict[str, str] | None = None,
                   nxt: str | None = None) -> HTMLResponse:  # fmt: skip
        pre = request.cookies.get(_PRE_COOKIE, "")
        fresh = not _ID.match(pre)
        pre = secrets.token_urlsafe(32) if fresh else pre
        nxt = request.query_params.get("next", "") if nxt is None else nxt
        response = self.page(
            request, "login.html.j2", status, csrf=self._pre_token(pre), message=message,
            login=login, next=nxt if _NEXT.match(nxt) else "",
        )  # fmt: skip
        response.headers.update(headers or {})
        if fresh:
            self._cookie(response, request, _PRE_COOKIE, pre)
        return response

    def account(self, request: Request, session: Session, status: int = 200, message: str = "",
                ok: bool = False) -> HTMLResponse:  # fmt: skip
        st = self.state()
        role = st.roles.get(session.person.role)
        return self.page(
            request, "account.html.j2", status, person=session.person,
            role_label=role.label if role else session.person.role,
            villages=_village_names(st.settings.villages, session.person.villages),
            csrf=session.csrf, message=message, ok=ok,
        )  # fmt: skip

    # -- endpoints --
    async def get_login(self, request: Request) -> Response:
        # the form even with a session: a browser may carry a session planted by someone else
        return self.login_form(request)

    async def post_login(self, request: Request) -> Response:
        st = self.state()
        form = await read_form(request)
        if form is None:
            return self.login_form(request, 400, "表单格式有误，请刷新后重试（bad form）")
        pre = request.cookies.get(_PRE_COOKIE, "")
        token = form.get("csrf", "").encode("utf-8", "replace")
        if not (_ID.match(pre) and hmac.compare_digest(token, self._pre_token(pre).encode())):
            log.warning(
                "login refused: CSRF token missing or wrong from %s", client_address(request)
            )
            return self.login_form(request, 403, _CSRF_MESSAGE, nxt=form.get("next", ""))
        typed, password = form.get("login", "").strip().lower()[:64], form.get("password", "")
        login = typed if _LOGIN_TEXT.match(typed) else None  # else never a person's login
        address = client_address(request)
        async with self._serial.hold(f"l:{login}" if login else "", f"a:{address}"):
            wait = _retry_after(st.store, login or "", address)
            if wait:
                log.warning("login throttled for %s from %s", login or "?", address)
                return self.login_form(
                    request, 429, f"尝试次数过多，请 {wait // 60 + 1} 分钟后再试（too many failed logins）",
                    login=typed, headers={"Retry-After": str(wait)}, nxt=form.get("next", ""),
                )  # fmt: skip
            row = st.store.db.execute(
                "SELECT w.hash, p.disabled FROM people p LEFT JOIN passwords w ON w.login = p.login "
                "WHERE p.login = ?",
                (login,),
            ).fetchone()
            digest = row[0] if row and not row[1] else None
            ok = await _verify_async(digest, password[:MAX_PASSWORD])
            if not ok:
                why = ("unknown login" if row is None else "person disabled" if row[1]
                       else "no password set" if row[0] is None else "wrong password")  # fmt: skip
                write_audit(st.store, "login_failed", login, address, why)
                return self.login_form(
                    request, 401, _FAILED_MESSAGE, login=typed, nxt=form.get("next", "")
                )
        if _hasher.check_needs_rehash(digest):  # argon2 parameters raised since: same password
            new_digest = await anyio.to_thread.run_sync(_hasher.hash, password, limiter=_HASHING)
            with st.store.transaction() as db:
                db.execute("UPDATE passwords SET hash = ? WHERE login = ?", (new_digest, login))
        sid = _new_session(st.store, login, address, request.cookies.get(SESSION_COOKIE))
        nxt = form.get("next", "")
        response = RedirectResponse(nxt if _NEXT.match(nxt) else "/portal/", 303,
                                    headers={"Cache-Control": "no-store"})  # fmt: skip
        self._cookie(response, request, SESSION_COOKIE, sid, int(LIFETIME.total_seconds()))
        self._cookie(response, request, _PRE_COOKIE, None)
        return response

    async def post_logout(self, request: Request) -> Response:
        st = self.state()
        session = session_for(request, st.store)
        form = await read_form(request)
        if session is not None:
            if not _csrf_ok(form, session):
                return self.account(request, session, 403, _CSRF_MESSAGE)
            _end_session(st.store, session, client_address(request))
        response = RedirectResponse("/login", 303, headers={"Cache-Control": "no-store"})
        self._cookie(response, request, SESSION_COOKIE, None)
        return response

    async def get_account(self, request: Request) -> Response:
        session = session_for(request, self.state().store)
        if session is None:
            return _to_login("/account")
        return self.account(request, session)

    async def post_password(self, request: Request) -> Response:
        st = self.state()
        session = session_for(request, st.store)
        if session is None:
            return _to_login("/account")
        form = await read_form(request)
        if not _csrf_ok(form, session):
            return self.account(request, session, 403, _CSRF_MESSAGE)
        login, address = session.person.login, client_address(request)
        async with self._serial.hold(f"l:{login}", f"a:{address}"):
            wait = _retry_after(st.store, login, address)
            if wait:
                return self.account(
                    request, session, 429, f"尝试次数过多，请 {wait // 60 + 1} 分钟后再试（too many failed tries）"
                )  # fmt: skip
            digest = st.store.db.execute(
                "SELECT hash FROM passwords WHERE login = ?", (login,)
            ).fetchone()
            if not await _verify_async(digest[0] if digest else None, form.get("current", "")[:MAX_PASSWORD]):  # fmt: skip
                write_audit(st.store, "login_failed", login, address, "wrong current password")
                return self.account(
                    request, session, 400, "当前密码不正确（current password is wrong）"
                )
        new = form.get("new", "")
        if new != form.get("confirm", ""):
            return self.account(request, session, 400, "两次输入的新密码不一致（passwords differ）")
        try:
            check_password(login, new)
        except DataError:
            return self.account(
                request, session, 400,
                f"新密码须至少 {MIN_PASSWORD} 位、不含登录名、不含控制字符（password too weak）",
            )  # fmt: skip
        digest = await anyio.to_thread.run_sync(_hasher.hash, new, limiter=_HASHING)
        _save_hash(st.store, login, digest, address, session.id_sha256, "changed at /account")
        return self.account(request, session, 200, "密码已修改，其他设备上的登录已退出。", ok=True)


_CSRF_MESSAGE = "页面已过期或来源不明，请刷新页面后重试（CSRF token missing or wrong）"
_FAILED_MESSAGE = "登录名或密码不正确（wrong login or password）"


def _csrf_ok(form: dict[str, str] | None, session: Session) -> bool:
    token = (form or {}).get("csrf", "").encode("utf-8", "replace")
    return form is not None and hmac.compare_digest(token, session.csrf.encode())


def _to_login(next_path: str) -> Response:
    return RedirectResponse(f"/login?next={next_path}", 303, headers={"Cache-Control": "no-store"})


@cache
def _register(path: str) -> dict[str, str]:
    try:
        from geo.villages import load_villages

        return {v.code: v.name for v in load_villages(path)}
    except Exception:  # the register is only for names here: codes alone will do
        log.warning("village register %s unreadable; the account page shows codes", path)
        return {}


def _village_names(path, codes) -> list[str]:
    names = _register(str(path))
    return [f"{names[c]}（{c}）" if c in names else c for c in codes]


def guarded(handler, headers: Mapping[str, str] = SECURITY_HEADERS):
    """``handler`` as a route endpoint that answers a bug with one scrubbed log line and a
    Chinese 500 page (with ``headers``), never a traceback. The manager's pages use it too."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as e:  # a bug: one scrubbed line, a Chinese page, never a traceback
            log.error("unexpected error on %s %s: %s", request.method, request.url.path,
                      scrub(f"{type(e).__name__}: {e}"))  # fmt: skip
            return HTMLResponse("<p>服务器内部错误，请稍后再试（server error）</p>", 500,
                                headers=dict(headers))  # fmt: skip

    return endpoint


def routes(state: Callable[[], object]) -> list[Route]:
    """The login routes; ``state()`` gives the running server's store, settings and roles."""
    p = _Portal(state)
    return [
        Route("/login", guarded(p.get_login), methods=["GET"]),
        Route("/login", guarded(p.post_login), methods=["POST"]),
        Route("/logout", guarded(p.post_logout), methods=["POST"]),
        Route("/account", guarded(p.get_account), methods=["GET"]),
        Route("/account/password", guarded(p.post_password), methods=["POST"]),
    ]
