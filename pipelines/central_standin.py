"""An in-process stand-in for ODK Central's API, built from the recorded exchanges in
``../shared/fixtures/central`` (backend v2026.2) and its README's observations. The demo
serves its simulated year from it over loopback, so the demo exercises the real pull code;
the tests use it with faults injected.


* ``POST /v1/sessions`` → token; ``Authorization: Bearer`` on every other call; no or bad
  credentials → 401 ``{"message", "code": 401.2}``.
* OData ``…/forms/<id>.svc/Submissions``: newest first, ``$top`` paging with an absolute
  ``@odata.nextLink`` carrying ``%24skiptoken=01<base64 {"instanceId"}>``; ``$filter`` on
  ``__system/{submissionDate,updatedAt,deletedAt,reviewState}`` and ``__id`` (others → 501.5,
  unparseable → 400.18); ``$expand=*`` inlines repeats (rows with ``__id``, no parent key);
  ``Submissions.<repeat>`` tables with ``__Submissions-id``; geopoints as GeoJSON.
  Deleted submissions are left out unless the filter mentions ``__system/deletedAt``.
* Attachments list/download, forms create/draft/publish/versions. Publishing as Central
  does it: ``POST …/forms?publish=false`` or ``POST …/draft`` (bad XML → 400.1 "Could not
  parse the given data (N chars) as xml."), ``POST …/draft/attachments/<name>`` only for
  files the XML refers to (``jr://file-csv/…``; pyodk sends them chunked), ``POST
  …/draft/publish?version=`` (an existing version → 409.6; another version rewrites the
  XML). A published form's files: ``GET …/attachments`` and ``…/attachments/<name>`` with
  the md5 as ETag and 304 for a matching ``If-None-Match``.
* ``GET …/fields?odata=true`` derived from the XForm's binds (``binary`` for file fields).
* A repeat inside a group stays inside it (navigation link, and rows with ``$expand=*``).
* ``Date`` on every response shows the stand-in's clock (:meth:`CentralStandIn.now`), which
  moves only as submissions, edits and reviews happen (or a test calls ``tick``).
* Faults for tests: status (5xx, 429 + Retry-After), delay (a timeout), connection reset,
  a page sent twice, per-request hooks.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, quote, unquote, urlsplit

EPOCH = datetime(2026, 11, 29, 0, 19, 28, 735000, tzinfo=UTC)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Fault:
    """Misbehave on matching requests. ``nth`` counts matching requests from 1."""

    kind: str  # "status" | "delay" | "reset" | "repeat_page"
    path_contains: str = ".svc/Submissions"
    nth: int = 1
    times: int = 1
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    seen: int = 0
    fired: int = 0


@dataclass
class Sub:
    instance_id: str
    fields: dict[str, Any]  # OData shape: geopoints as GeoJSON, groups nested
    repeats: dict[str, list[dict[str, Any]]]
    created: datetime
    version: str
    updated: datetime | None = None
    review_state: str | None = None
    deleted: datetime | None = None
    edits: int = 0
    submitter_id: str = "5"
    submitter_name: str = "admin@example.com"
    device_id: str | None = None
    attachments: dict[str, bytes | None] = field(default_factory=dict)
    order: int = 0


@dataclass
class Form:
    form_id: str
    versions: list[dict[str, Any]] = field(default_factory=list)  # newest first
    xml: bytes = b""
    attachments: dict[str, bytes] = field(default_factory=dict)
    draft: dict[str, Any] | None = None
    subs: list[Sub] = field(default_factory=list)  # in creation order
    by_id: dict[str, Sub] = field(default_factory=dict)


class LoopbackServer:
    """An HTTP server on an ephemeral loopback port, served from a thread; a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CentralStandIn(LoopbackServer):
    def __init__(
        self,
        email: str = "admin@example.com",
        password: str = "topSecretPassw0rd!",  # noqa: S107 - from the fixtures
        project_id: int = 1,
    ):
        self.email, self.password, self.project_id = email, password, project_id
        self.tokens: set[str] = set()
        self.forms: dict[str, Form] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []  # (method, raw path?query)
        self.before: Callable[[str, str], None] | None = None  # hook(method, path)
        self.page_delay = 0.0
        self._clock = EPOCH
        self._lock = threading.RLock()
        self._last_page: dict[str, tuple[int, dict[str, str], bytes]] = {}
        super().__init__(_make_handler(self))

    # ---- data --------------------------------------------------------------------
    def now(self) -> datetime:
        """The server's clock. It moves only when something happens (``tick``), so the
        timestamps it hands out are repeatable; every response's ``Date`` header shows it,
        as Central's does its own clock."""
        with self._lock:
            return self._clock

    def tick(self, ms: int = 1) -> datetime:
        with self._lock:
            self._clock += timedelta(milliseconds=ms)
            return self._clock

    def add_form(self, form_id: str, version: str, xml: bytes = b"", name: str = "") -> Form:
        form = self.forms.get(form_id) or Form(form_id)
        form.versions.insert(0, self._form_json(form_id, version, xml, name))
        form.xml = xml
        self.forms[form_id] = form
        return form

    def _form_json(self, form_id: str, version: str, xml: bytes, name: str) -> dict[str, Any]:
        now = _ts(self.tick())
        return {
            "projectId": self.project_id,
            "xmlFormId": form_id,
            "state": "open",
            "enketoId": None,
            "enketoOnceId": None,
            "createdAt": now,
            "updatedAt": None,
            "webformsEnabled": True,
            "keyId": None,
            "version": version,
            "hash": hashlib.md5(xml).hexdigest(),  # noqa: S324 - Central's own form hash
            "sha": hashlib.sha1(xml).hexdigest(),  # noqa: S324
            "sha256": hashlib.sha256(xml).hexdigest(),
            "draftToken": None,
            "publishedAt": now,
            "name": name or form_id,
        }

    def add_submission(
        self,
        form_id: str,
        instance_id: str,
        fields: dict[str, Any],
        repeats: dict[str, list[dict[str, Any]]] | None = None,
        version: str | None = None,
        attachments: dict[str, bytes | None] | None = None,
        **system: Any,
    ) -> Sub:
        with self._lock:
            form = self.forms[form_id]
            sub = Sub(
                instance_id,
                fields,
                repeats or {},
                self.tick(),
                version or form.versions[0]["version"],
                attachments=dict(attachments or {}),
                order=len(form.subs),
                **system,
            )
            form.subs.append(sub)
            form.by_id[instance_id] = sub
            return sub

    def edit(self, form_id: str, instance_id: str, **changes: Any) -> Sub:
        with self._lock:
            sub = self.forms[form_id].by_id[instance_id]
            sub.fields.update(changes)
            sub.edits += 1
            sub.review_state = "edited"
            sub.updated = self.tick()
            return sub

    def review(self, form_id: str, instance_id: str, state: str) -> None:
        with self._lock:
            sub = self.forms[form_id].by_id[instance_id]
            sub.review_state = state
            sub.updated = self.tick()

    def delete(self, form_id: str, instance_id: str) -> None:
        with self._lock:
            self.forms[form_id].by_id[instance_id].deleted = self.tick()

    def live_ids(self, form_id: str) -> set[str]:
        return {s.instance_id for s in self.forms[form_id].subs if s.deleted is None}

    def load_recorded(self, fixtures: Path) -> None:
        """Seed the sanitation_sweep form with the seven recorded submissions (A–F, X)."""
        v1 = (fixtures / "forms/sanitation_sweep.xml").read_bytes()
        v2 = (fixtures / "forms/sanitation_sweep_v2023020101.xml").read_bytes()
        self.add_form("sanitation_sweep", "2023010101", v1, "环境卫生巡查 (Sanitation sweep)")
        self.add_form("sanitation_sweep", "2023020101", v2, "环境卫生巡查 (Sanitation sweep)")
        rows = json.loads((fixtures / "47_odata_submissions_expand_all.json").read_text())
        photos = {
            "1764374400001.jpg": (fixtures / "bodies/photo_A_1764374400001.jpg").read_bytes(),
            "1764374400004.jpg": (fixtures / "bodies/photo_D_1764374400004.jpg").read_bytes(),
            "1764374400006.jpg": (fixtures / "bodies/photo_F_1764374400006.jpg").read_bytes(),
        }
        for row in reversed(rows["response"]["body"]["value"]):  # oldest first
            system = row["__system"]
            fields = {k: v for k, v in row.items() if not k.startswith("__") and "@odata" not in k}
            piles = [{k: v for k, v in p.items() if k != "__id"} for p in fields.pop("piles", [])]
            names = [p["photo"] for p in piles if p.get("photo")]
            sub = self.add_submission(
                "sanitation_sweep",
                row["__id"],
                fields,
                {"piles": piles} if piles else {},
                version=system["formVersion"],
                attachments={n: photos.get(n) for n in names},
                submitter_id=system["submitterId"],
                submitter_name=system["submitterName"],
                device_id=system["deviceId"],
            )
            sub.created = datetime.fromisoformat(system["submissionDate"].replace("Z", "+00:00"))
            self._clock = max(self._clock, sub.created)
        self.review("sanitation_sweep", "uuid:a2f6d64c-1c81-47d5-9a01-777768a5afce", "hasIssues")

    # ---- OData rendering -----------------------------------------------------------
    def entity(self, sub: Sub, expand: bool) -> dict[str, Any]:
        out = _inner_repeats(sub, sub.fields, (), expand)
        out["__id"] = sub.instance_id
        present = sum(1 for v in sub.attachments.values() if v is not None)
        out["__system"] = {
            "submissionDate": _ts(sub.created),
            "updatedAt": _ts(sub.updated) if sub.updated else None,
            "submitterId": sub.submitter_id,
            "submitterName": sub.submitter_name,
            "attachmentsPresent": present,
            "attachmentsExpected": len(sub.attachments),
            "status": None,
            "reviewState": sub.review_state,
            "deviceId": sub.device_id,
            "edits": sub.edits,
            "formVersion": sub.version,
            "deletedAt": _ts(sub.deleted) if sub.deleted else None,
        }
        for name, rows in sub.repeats.items():
            if not rows:
                continue
            out[f"{name}@odata.navigationLink"] = (
                f"Submissions('{quote(sub.instance_id, safe='')}')/{name}"
            )
            if expand:
                out[name] = [dict(r, __id=_repeat_id(sub, name, i)) for i, r in enumerate(rows)]
        return out


def _inner_repeats(
    sub: Sub, value: dict[str, Any], path: tuple[str, ...], expand: bool
) -> dict[str, Any]:
    """A repeat inside a group stays inside it: a navigation link to
    ``Submissions('<id>')/<group>/<repeat>`` and, with ``$expand=*``, its rows with ``__id``."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        where = (*path, key)
        if path and isinstance(item, list) and item and all(isinstance(r, dict) for r in item):
            link = f"Submissions('{quote(sub.instance_id, safe='')}')/" + "/".join(where)
            if expand:
                out[key] = [
                    dict(
                        _inner_repeats(sub, r, where, expand),
                        __id=_repeat_id(sub, "/".join(where), i),
                    )
                    for i, r in enumerate(item)
                ]
            out[f"{key}@odata.navigationLink"] = link
        elif isinstance(item, dict) and "coordinates" not in item:
            out[key] = _inner_repeats(sub, item, where, expand)
        else:
            out[key] = item
    return out


def _repeat_id(sub: Sub, name: str, i: int) -> str:
    return hashlib.sha1(f"{sub.instance_id}/{name}[{i + 1}]".encode()).hexdigest()  # noqa: S324


# ---- $filter -------------------------------------------------------------------------
_FILTERABLE = {
    "__id",
    "__system/submissionDate",
    "__system/updatedAt",
    "__system/submitterId",
    "__system/reviewState",
    "__system/deletedAt",
}
_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>'[^']*')|(?P<ts>\d{4}-\d\d-\d\dT[\d:.]+Z)"
    r"|(?P<num>\d+(?:\.\d+)?)|(?P<word>[A-Za-z_$][\w/$-]*))"
)


class FilterError(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        self.status, self.body = status, body


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            reason = f"Unexpected character at {pos}"
            raise FilterError(
                400,
                {
                    "message": f"The OData filter expression you provided could not be parsed: "
                    f"{reason}",
                    "code": 400.18,
                    "details": {"reason": reason},
                },
            )
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def compile_filter(text: str) -> tuple[Callable[[Sub], bool], bool]:
    """Return (predicate, mentions_deleted_at)."""
    toks = _tokens(text)
    pos = 0

    def bad(at: int) -> FilterError:
        reason = f"Unexpected character at {at}"
        return FilterError(
            400,
            {
                "message": f"The OData filter expression you provided could not be parsed: {reason}",
                "code": 400.18,
                "details": {"reason": reason},
            },
        )

    def peek() -> tuple[str, str, int] | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> tuple[str, str, int]:
        nonlocal pos
        if pos >= len(toks):
            raise bad(len(text))
        pos += 1
        return toks[pos - 1]

    def value(tok: tuple[str, str, int]) -> Any:
        kind, raw, at = tok
        if kind == "str":
            return raw[1:-1]
        if kind == "ts":
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if kind == "num":
            return float(raw)
        if raw == "null":
            return None
        raise bad(at)

    def field_of(sub: Sub, name: str) -> Any:
        return {
            "__id": sub.instance_id,
            "__system/submissionDate": sub.created,
            "__system/updatedAt": sub.updated,
            "__system/reviewState": sub.review_state,
            "__system/deletedAt": sub.deleted,
            "__system/submitterId": float(sub.submitter_id),
        }[name]

    ops = {
        "eq": lambda a, b: a == b,
        "ne": lambda a, b: a != b,
        "gt": lambda a, b: a is not None and b is not None and a > b,
        "ge": lambda a, b: a is not None and b is not None and a >= b,
        "lt": lambda a, b: a is not None and b is not None and a < b,
        "le": lambda a, b: a is not None and b is not None and a <= b,
    }

    def primary() -> Callable[[Sub], bool]:
        tok = take()
        if tok[0] == "lp":
            inner = disjunction()
            if take()[0] != "rp":
                raise bad(tok[2])
            return inner
        if tok[0] == "word" and tok[1] == "not":
            inner = primary()
            return lambda s: not inner(s)
        if tok[0] != "word":
            raise bad(tok[2])
        name = tok[1]
        if name not in _FILTERABLE:
            raise FilterError(
                501,
                {
                    "message": "The given OData filter expression references fields not supported "
                    f"by this server: {name} at {tok[2]}",
                    "code": 501.5,
                    "details": {"at": tok[2], "text": name},
                },
            )
        op = take()
        if op[1] not in ops:
            raise bad(op[2])
        rhs = value(take())
        fn = ops[op[1]]
        return lambda s: fn(field_of(s, name), rhs)

    def conjunction() -> Callable[[Sub], bool]:
        left = primary()
        while (t := peek()) and t[1] == "and":
            take()
            right = primary()
            left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
        return left

    def disjunction() -> Callable[[Sub], bool]:
        left = conjunction()
        while (t := peek()) and t[1] == "or":
            take()
            right = conjunction()
            left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
        return left

    pred = disjunction()
    if pos != len(toks):
        raise bad(toks[pos][2])
    return pred, "__system/deletedAt" in text


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed or timed out mid-response is expected in these tests.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


# ---- HTTP ----------------------------------------------------------------------------
def _error(status: int, code: float, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"message": message, "code": code}


NOT_FOUND = _error(404, 404.1, "Could not find the resource you were looking for.")
NO_AUTH = _error(401, 401.2, "Could not authenticate with the provided credentials.")


def _make_handler(central: CentralStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One buffered write per response and no Nagle: otherwise headers and body go out
        # as two segments and each request waits ~40 ms for a delayed ACK.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def date_time_string(self, timestamp: float | None = None) -> str:
            # The Date header (RFC 9110 IMF-fixdate, whole seconds) from the stand-in's
            # clock, the one its submission timestamps come from, as on a real server.
            return email.utils.format_datetime(central.now(), usegmt=True)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        # -- plumbing --
        def _send(
            self,
            status: int,
            body: Any,
            headers: dict[str, str] | None = None,
            chunked: bool = False,
        ) -> None:
            if isinstance(body, bytes):
                data, ctype = body, (headers or {}).pop("Content-Type", "application/octet-stream")
            else:
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                ctype = "application/json; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if self.command == "GET":
                self.send_header("Cache-Control", "private, no-cache")
                self.send_header("Vary", "Accept-Encoding, Origin")
            else:
                self.send_header("Cache-Control", "no-store")
                self.send_header("Vary", "*")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Keep-Alive", "timeout=5")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                # pyodk streams attachment uploads with Transfer-Encoding: chunked
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _fault(self, path: str) -> bool:
            for f in central.faults:
                if f.path_contains not in path:
                    continue
                f.seen += 1
                if f.seen < f.nth or f.fired >= f.times:
                    continue
                f.fired += 1
                if f.kind == "status":
                    hdr = {"Retry-After": f.retry_after} if f.retry_after else {}
                    self._body()
                    self._send(
                        f.status,
                        {"message": "Service unavailable (injected)", "code": float(f.status)},
                        hdr,
                    )
                    return True
                if f.kind == "delay":
                    time.sleep(f.delay)
                    return False
                if f.kind == "reset":
                    self.close_connection = True
                    # SO_LINGER 0: close with RST, what a dropped mobile link looks like
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    return True
                if f.kind == "repeat_page":
                    last = central._last_page.get(path.split("?")[0])
                    if last:
                        self._send(
                            last[0],
                            last[2],
                            dict(last[1], **{"Content-Type": "application/json; charset=utf-8"}),
                            chunked=True,
                        )
                        return True
            return False

        def _dispatch(self, method: str) -> None:
            raw = self.path
            central.requests.append((method, raw))
            if central.before:
                central.before(method, raw)
            if self._fault(raw):
                return
            split = urlsplit(raw)
            segs = [unquote(s) for s in split.path.split("/")[1:]]
            query = parse_qsl(split.query, keep_blank_values=True)
            try:
                result = self._route(method, segs, dict(query))
            except FilterError as e:
                result = (e.status, e.body)
            if result is None:
                result = NOT_FOUND
            status, body, *rest = result
            headers = rest[0] if rest else {}
            self._send(status, body, dict(headers), chunked=bool(rest and len(rest) > 1))

        def _authed(self) -> bool:
            auth = self.headers.get("Authorization", "")
            return auth.startswith("Bearer ") and auth[7:] in central.tokens

        def _route(self, method: str, segs: list[str], q: dict[str, str]) -> Any:
            if segs[:1] != ["v1"]:
                return _error(
                    404, 404.2, "Expected an API version (eg /v1) at the start of the request URL."
                )
            if segs == ["v1", "sessions"] and method == "POST":
                try:
                    cred = json.loads(self._body() or b"{}")
                except ValueError:
                    return _error(400, 400.1, "Could not parse the given data.")
                if cred.get("email") == central.email and cred.get("password") == central.password:
                    token = base64.urlsafe_b64encode(
                        hashlib.sha256(f"{time.time_ns()}".encode()).digest()
                    ).decode()[:64]
                    central.tokens.add(token)
                    return 200, {
                        "token": token,
                        "csrf": "CSRF",
                        "expiresAt": "2026-11-30T00:00:00.000Z",
                        "createdAt": _ts(central._clock),
                    }
                return NO_AUTH
            if not self._authed():
                self._body()
                return NO_AUTH
            if segs == ["v1", "users", "current"]:
                return 200, {
                    "id": 5,
                    "type": "user",
                    "displayName": central.email,
                    "email": central.email,
                }
            if len(segs) < 4 or segs[1] != "projects" or segs[2] != str(central.project_id):
                return None
            rest = segs[3:]
            if rest == ["forms"]:
                if method == "GET":
                    return 200, [f.versions[0] for f in central.forms.values() if f.versions]
                if method == "POST":
                    return self._create_form(q)
            if len(rest) < 2 or rest[0] != "forms":
                return None
            name = rest[1]
            if name.endswith(".svc"):
                return self._odata(name[:-4], rest[2:], q)
            form = central.forms.get(name)
            if form is None:
                return None
            tail = rest[2:]
            if tail == [] and method == "GET":
                shown = form.versions[0] if form.versions else form.draft
                return 200, {k: v for k, v in (shown or {}).items() if not k.startswith("_")}
            if tail == ["versions"]:
                return 200, form.versions
            if tail == ["fields"] and form.xml:
                return 200, _fields(form.xml)
            if tail == ["attachments"] and method == "GET" and form.versions:
                return 200, [
                    {"name": n, "type": _attachment_type(n), "exists": n in form.attachments}
                    for n in _declared_files(form.xml)
                ]
            if tail[:1] == ["attachments"] and len(tail) == 2 and method == "GET":
                data = form.attachments.get(tail[1])
                if data is None:
                    return None
                etag = f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324 - Central's ETag is md5
                if self.headers.get("If-None-Match") == etag:
                    return 304, b"", {"ETag": etag}
                return 200, data, {"Content-Type": "text/csv", "ETag": etag}
            if tail == ["draft"] and method == "POST":
                xml = self._body() or form.xml
                try:
                    version = _xml_version(xml)
                except ET.ParseError:
                    return _unparseable(xml)
                form.draft = central._form_json(form.form_id, version, xml, "")
                form.draft["publishedAt"] = None
                form.draft["_xml"] = xml.decode("utf-8")
                form.draft["_attachments"] = {}
                return 200, {"success": True}
            if tail == ["draft"] and method == "GET" and form.draft:
                return 200, {k: v for k, v in form.draft.items() if not k.startswith("_")}
            if tail[:2] == ["draft", "attachments"] and len(tail) == 3 and method == "POST":
                body = self._body()
                # Central only takes files the form's XML refers to (jr://file…/<name>)
                if not form.draft or tail[2] not in _declared_files(form.draft["_xml"].encode()):
                    return None
                form.draft["_attachments"][tail[2]] = body
                return 200, {"success": True}
            if tail == ["draft", "publish"] and method == "POST":
                if not form.draft:
                    return None
                draft = form.draft
                xml = draft["_xml"].encode("utf-8")
                version = q.get("version") or draft["version"]
                if any(v["version"] == version for v in form.versions):
                    return _error(
                        409,
                        409.6,
                        f"You tried to publish the form '{form.form_id}' with version "
                        f"'{version}', but a published form has already existed in this "
                        "project with those identifiers.",
                    )
                if version != draft["version"]:  # ?version= rewrites the XML in place
                    xml = xml.replace(
                        f'version="{draft["version"]}"'.encode(), f'version="{version}"'.encode(), 1
                    )
                name = _xml_title(xml) or draft["name"]
                info = central._form_json(form.form_id, version, xml, name)
                form.versions.insert(0, info)
                form.xml = xml
                form.attachments = {
                    n: b
                    for n, b in {**form.attachments, **draft["_attachments"]}.items()
                    if n in _declared_files(xml)
                }
                form.draft = None
                return 200, {"success": True}
            if tail[:1] == ["submissions"] and len(tail) >= 2:
                sub = form.by_id.get(tail[1])
                if sub is None or sub.deleted:
                    return None
                if tail[2:] == ["attachments"]:
                    return 200, [
                        {"name": n, "exists": b is not None} for n, b in sub.attachments.items()
                    ]
                if len(tail) == 4 and tail[2] == "attachments":
                    data = sub.attachments.get(tail[3])
                    if data is None:
                        return None
                    return (
                        200,
                        data,
                        {
                            "Content-Type": "image/jpeg",
                            "ETag": f'"{hashlib.md5(data).hexdigest()}"',  # noqa: S324 - Central's ETag is md5
                        },
                    )
            return None

        def _create_form(self, q: dict[str, str]) -> Any:
            xml = self._body()
            try:
                root = ET.fromstring(xml)  # noqa: S314
            except ET.ParseError:
                return _unparseable(xml)
            form_id = _xml_form_id(root)
            if not form_id:
                return _error(400, 400.2, "Required parameter form ID missing.")
            if form_id in central.forms:
                return _error(
                    409, 409.3, f"A resource already exists with xmlFormId value(s) of {form_id}."
                )
            title = _xml_title(xml) or form_id
            form = Form(form_id)
            central.forms[form_id] = form
            info = central._form_json(form_id, _xml_version(xml), xml, title)
            if q.get("publish") == "true":
                form.versions.insert(0, info)
                form.xml = xml
            else:
                info["publishedAt"] = None
                form.draft = dict(info, _xml=xml.decode("utf-8"), _attachments={})
            return 200, {k: v for k, v in info.items() if not k.startswith("_")}

        def _odata(self, form_id: str, tail: list[str], q: dict[str, str]) -> Any:
            form = central.forms.get(form_id)
            if form is None or not tail:
                return None
            table = tail[0]
            expand = q.get("$expand") == "*"
            pred, with_deleted = (lambda s: True), False
            if "$filter" in q:
                pred, with_deleted = compile_filter(q["$filter"])
            top = int(q["$top"]) if "$top" in q else None
            after = None
            if "$skiptoken" in q:
                tok = q["$skiptoken"]
                try:
                    if not tok.startswith("01"):
                        raise ValueError(tok)
                    after = json.loads(base64.b64decode(tok[2:]))
                except Exception:
                    return _error(400, 400.35, "Invalid $skiptoken")
            if central.page_delay:
                time.sleep(central.page_delay)
            with central._lock:
                subs = [
                    s
                    for s in reversed(form.subs)
                    if (with_deleted or s.deleted is None) and pred(s)
                ]
            if table == "Submissions":
                rows = [(s.instance_id, s) for s in subs]
                key = "instanceId"
            elif table.startswith("Submissions."):
                rep = table.split(".", 1)[1]
                rows = [
                    (_repeat_id(s, rep, i), (s, r, i))
                    for s in subs
                    for i, r in enumerate(s.repeats.get(rep, []))
                ]
                key = "repeatId"
            else:
                return None
            if after is not None:
                ids = [r[0] for r in rows]
                if after.get(key) not in ids:
                    return _error(400, 400.35, "Invalid $skiptoken")
                rows = rows[ids.index(after[key]) + 1 :]
            page, more = (rows[:top], len(rows) > top) if top is not None else (rows, False)
            if table == "Submissions":
                value = [central.entity(s, expand) for _, s in page]
            else:
                value = [
                    dict(r, __id=rid, **{"__Submissions-id": s.instance_id})
                    for rid, (s, r, _i) in page
                ]
            base = f"{central.url}/v1/projects/{central.project_id}/forms/{form_id}.svc"
            body: dict[str, Any] = {"value": value, "@odata.context": f"{base}/$metadata#{table}"}
            if more:
                skip = "01" + base64.b64encode(json.dumps({key: page[-1][0]}).encode()).decode()
                keep = [(k, v) for k, v in q.items() if k not in ("$skiptoken", "$skip")]
                parts = [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in keep]
                parts.append(f"%24skiptoken={quote(skip, safe='')}")
                body["@odata.nextLink"] = f"{base}/{table}?" + "&".join(parts)
            if q.get("$count") == "true":
                body["@odata.count"] = len(subs)
            headers = {"OData-Version": "4.0"}
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            central._last_page[self.path.split("?")[0]] = (200, headers, data)
            return (
                200,
                data,
                dict(headers, **{"Content-Type": "application/json; charset=utf-8"}),
                "chunked",
            )

    return Handler


def _unparseable(xml: bytes) -> tuple[int, dict[str, Any]]:
    n = len(xml.decode("utf-8", "replace"))
    return _error(400, 400.1, f"Could not parse the given data ({n} chars) as xml.")


_FILE_REF = re.compile(rb"jr://file(?:-csv)?/([^\"'<\s]+)")


def _declared_files(xml: bytes) -> list[str]:
    """Media the XForm refers to (``jr://file/x.jpg``, ``jr://file-csv/x.csv``)."""
    return list(dict.fromkeys(m.decode() for m in _FILE_REF.findall(xml)))


def _attachment_type(name: str) -> str:
    return "file" if name.endswith(".csv") else "image"


def _xml_title(xml: bytes) -> str:
    try:
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError:
        return ""
    return root.findtext(".//{http://www.w3.org/1999/xhtml}title") or ""


def _fields(xml: bytes) -> list[dict[str, Any]]:
    """``GET …/fields?odata=true``: one entry per bound node, as Central derives it."""
    root = ET.fromstring(xml)  # noqa: S314
    instance = next(iter(next(root.iter("{http://www.w3.org/2002/xforms}instance"))), None)
    if instance is None:
        return []
    repeats = {el.get("nodeset", "") for el in root.iter("{http://www.w3.org/2002/xforms}repeat")}
    binds = {
        el.get("nodeset", ""): el.get("type", "string")
        for el in root.iter("{http://www.w3.org/2002/xforms}bind")
    }
    base = "/" + instance.tag.rsplit("}", 1)[-1]
    out: list[dict[str, Any]] = []

    def walk(el: ET.Element, path: str) -> None:
        for child in el:
            name = child.tag.rsplit("}", 1)[-1]
            full = f"{path}/{name}"
            if any(o["path"] == full[len(base) :] for o in out):
                continue  # a repeat's template and its first row
            kind = binds.get(full, "string")
            if full in repeats:
                kind = "repeat"
            elif len(child):
                kind = "structure"
            out.append(
                {
                    "path": full[len(base) :],
                    "name": name,
                    "type": kind,
                    "binary": True if kind == "binary" else None,
                    "selectMultiple": None,
                }
            )
            if len(child):
                walk(child, full)

    walk(instance, base)
    return out


def _xml_form_id(root: ET.Element) -> str:
    for inst in root.iter("{http://www.w3.org/2002/xforms}instance"):
        for child in inst:
            return child.get("id", "")
    return ""


def _xml_version(xml: bytes) -> str:
    root = ET.fromstring(xml)  # noqa: S314
    for inst in root.iter("{http://www.w3.org/2002/xforms}instance"):
        for child in inst:
            return child.get("version", "")
    return ""


def synthetic_xform(form_id: str, version: str) -> bytes:
    """A small sanitation-sweep-like XForm: a ``piles`` repeat with a binary ``photo``."""
    return f"""<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
 xmlns:jr="http://openrosa.org/javarosa" xmlns:odk="http://www.opendatakit.org/xforms">
<h:head><h:title>{form_id}</h:title><model odk:xforms-version="1.0.0"><instance>
<data id="{form_id}" version="{version}"><village/><location/><pile_count/>
<piles jr:template=""><pile_type/><photo/></piles><piles><pile_type/><photo/></piles>
<cleared/><note/><meta><instanceID/><instanceName/></meta></data></instance>
<bind nodeset="/data/village" type="string" required="true()"/>
<bind nodeset="/data/location" type="geopoint"/>
<bind nodeset="/data/pile_count" type="int"/>
<bind nodeset="/data/piles/pile_type" type="string"/>
<bind nodeset="/data/piles/photo" type="binary"/>
<bind nodeset="/data/cleared" type="string"/>
<bind nodeset="/data/note" type="string"/>
<bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
<bind nodeset="/data/meta/instanceName" type="string"/>
</model></h:head>
<h:body><group ref="/data/piles"><repeat nodeset="/data/piles">
<input ref="/data/piles/pile_type"/><upload ref="/data/piles/photo" mediatype="image/*"/>
</repeat></group></h:body></h:html>""".encode()


def seed_synthetic(
    central: CentralStandIn,
    form_id: str,
    n: int,
    photo_every: int = 100,
    start: int = 0,
    version: str = "2024010101",
    every_ms: int = 60_000,
) -> list[str]:
    """Add ``n`` sanitation-sweep-like submissions, each with 1–3 pile rows; every
    ``photo_every``-th carries a small photo. Returns their instance ids.

    They arrive ``every_ms`` apart on the stand-in's clock (a minute: a busy day in the
    field), not a millisecond apart, so a pull's safety margin on the server clock covers
    about as many submissions as it would on a real server."""
    if form_id not in central.forms:
        central.add_form(form_id, version, synthetic_xform(form_id, version), form_id)
    ids = []
    for i in range(start, start + n):
        iid = f"uuid:00000000-0000-4000-8000-{i:012d}"
        piles = [
            {"pile_type": ("firewood", "manure", "garbage")[(i + k) % 3], "photo": None}
            for k in range(1 + i % 3)
        ]
        photos: dict[str, bytes | None] = {}
        if photo_every and i % photo_every == 0:
            name = f"{1764374400000 + i}.jpg"
            piles[0]["photo"] = name
            photos[name] = b"\xff\xd8\xff\xe0" + i.to_bytes(8, "big") + b"\xff\xd9"
        central.tick(max(0, every_ms - 1))  # add_submission ticks the last millisecond
        central.add_submission(
            form_id,
            iid,
            {
                "village": f"3704811152{i % 56:02d}",
                "location": {
                    "type": "Point",
                    "coordinates": [117.26 + i % 97 / 1e4, 35.17 + i % 89 / 1e4, 50],
                    "properties": {"accuracy": 5},
                },
                "pile_count": len(piles),
                "cleared": "no",
                "note": f"第{i}次巡查",
                "meta": {"instanceID": iid, "instanceName": f"{i}"},
            },
            {"piles": piles},
            attachments=photos,
        )
        ids.append(iid)
    return ids
