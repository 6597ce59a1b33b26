"""An in-process stand-in for ODK Central's API, built from the recorded exchanges in
``tests/data/central`` (recorded from ODK Central backend v2026.2) and its README's
observations. The demo serves its simulated year from it over loopback, so the demo
exercises the real pull code; the tests use it with faults injected, and
``tests/pipelines/demo/test_central_conformance.py`` replays every recorded GET against it and
compares status, error code, the keys of the JSON bodies and the element names of the XML.

* Auth: ``POST /v1/sessions`` → token, ``DELETE /v1/sessions/<token>`` logs out;
  ``Authorization: Bearer`` on every other call. No, bad or revoked credentials → 401.2;
  Basic auth or a session cookie over plain HTTP (no ``X-Forwarded-Proto: https``) → 401.3.
  App users (``add_app_user``) use ``/v1/key/<token>/…``: formList, form download,
  manifest, ``HEAD …/submission``; anything else → 403.1, an unknown key → 403 (XML on
  OpenRosa routes).
* REST: projects, forms (list, get, ``X-Extended-Metadata``, ``.xml``, versions, fields,
  draft), submissions (list, get, ``.xml``, attachments list/download), the CSV export
  (``submissions.csv.zip`` with the repeat tables and ``media/``, ``submissions.csv``).
* Publishing as Central does it: ``POST …/forms?publish=false`` or ``POST …/draft`` (bad
  XML → 400.1), ``POST …/draft/attachments/<name>`` only for files the XML refers to
  (``jr://file-csv/…``; pyodk sends them chunked), ``POST …/draft/publish?version=`` (an
  existing version → 409.6; another version rewrites the XML). A published form's files:
  ``GET …/attachments`` and ``…/attachments/<name>`` with the md5 as ETag and 304 for a
  matching ``If-None-Match``.
* OData ``…/forms/<id>.svc``: the service document, ``$metadata`` (EDMX derived from the
  XForm), ``Submissions`` newest first with ``$top`` paging (an absolute
  ``@odata.nextLink`` carrying ``%24skiptoken=01<base64 {"instanceId"}>``), ``$skip``,
  ``$count``, ``$select``, ``$orderby``, ``$wkt``, ``$expand=*`` (repeat rows with
  ``__id``, no parent key), ``$filter`` (see :mod:`pipelines.demo._odata_filter`); single
  entities ``Submissions('<id>')`` and their repeats; ``Submissions.<repeat>`` tables with
  ``__Submissions-id``; geo as GeoJSON. Repeat ``__id`` values are Central's own hash.
  Deleted submissions are left out unless the filter mentions ``__system/deletedAt``.
* A repeat inside a group stays inside it (navigation link, and rows with ``$expand=*``).
* ``Date`` on every response shows the stand-in's clock (:meth:`CentralStandIn.now`), which
  moves only as submissions, edits and reviews happen (or a test calls ``tick``).
* Faults for tests: status (5xx, 429 + Retry-After), delay (a timeout), connection reset,
  a page sent twice, per-request hooks.
"""

from __future__ import annotations

import base64
import csv
import email.utils
import hashlib
import io
import json
import re
import secrets
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from pipelines.demo._odata_filter import FilterError, compile_filter

EPOCH = datetime(2026, 11, 29, 0, 19, 28, 735000, tzinfo=UTC)
ADMIN_ID = 5  # the admin's actor id in the recordings (submitterId "5")
RECORDED_FORMS = ("sanitation_sweep", "odata_types_probe")
_XF = "{http://www.w3.org/2002/xforms}"
_GEO_TYPES = ("Point", "LineString", "Polygon")
# the verbs Central lists for an administrator on GET /v1/projects (03_projects_list)
_ADMIN_VERBS = (  # noqa: SIM905 - one line per few verbs reads better than 56 lines
    "actor_property.list actor_property.update analytics.read assignment.create "
    "assignment.delete assignment.list audit.read backup.run config.read config.set "
    "dataset.create dataset.delete dataset.list dataset.read dataset.update entity.create "
    "entity.delete entity.list entity.read entity.restore entity.update field_key.create "
    "field_key.delete field_key.list field_key.update form.create form.delete form.list "
    "form.read form.restore form.update project.create project.delete project.read "
    "project.update public_link.create public_link.delete public_link.list public_link.read "
    "public_link.update role.create role.delete role.update session.end submission.create "
    "submission.delete submission.list submission.read submission.restore submission.update "
    "user.create user.delete user.list user.password.invalidate user.read user.update"
).split()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _node_json(body: Any) -> bytes:
    """JSON as Node's ``JSON.stringify`` (real Central) writes it: a lone surrogate, which phones'
    keyboards do produce, as the escape ``\\udXXX`` rather than an encoding error."""
    text = json.dumps(body, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text).encode("utf-8")


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _token() -> str:
    """A session or app-user token as Central makes them: 64 of ``[A-Za-z0-9!$]``."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!$"
    return "".join(secrets.choice(alphabet) for _ in range(64))


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
    submitter_id: str = str(ADMIN_ID)
    submitter_name: str = "admin@example.com"
    device_id: str | None = None
    attachments: dict[str, bytes | None] = field(default_factory=dict)
    order: int = 0
    xml: bytes | None = None  # as submitted; rendered from ``fields`` when None
    user_agent: str | None = None


@dataclass
class Form:
    form_id: str
    versions: list[dict[str, Any]] = field(default_factory=list)  # newest first
    xml: bytes = b""
    attachments: dict[str, bytes] = field(default_factory=dict)
    draft: dict[str, Any] | None = None
    subs: list[Sub] = field(default_factory=list)  # in creation order
    by_id: dict[str, Sub] = field(default_factory=dict)
    xmls: dict[str, bytes] = field(default_factory=dict)  # every published version's XForm


@dataclass
class AppUser:
    """A Central app user (``field_key``): its token goes in ``/v1/key/<token>/…``."""

    id: int
    display_name: str
    token: str
    created: datetime
    forms: set[str] = field(default_factory=set)


class LoopbackServer:
    """An HTTP server on an ephemeral loopback port, served from a thread; a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self._server = _Server(("127.0.0.1", 0), handler)
        # a short poll: stop() waits for the loop to notice, and tests start many servers
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

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
        project_name: str = "Test Project",
    ):
        self.email, self.password, self.project_id = email, password, project_id
        self.project_name = project_name
        self.tokens: set[str] = set()
        self.app_users: dict[str, AppUser] = {}  # by token
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
        form.xml = form.xmls[version] = xml
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

    def add_app_user(self, display_name: str, forms: Collection[str] = ()) -> AppUser:
        """An app user (Central numbers them after the admin's actors), assigned to ``forms``."""
        with self._lock:
            user = AppUser(
                21 + len(self.app_users), display_name, _token(), self.tick(), set(forms)
            )
            self.app_users[user.token] = user
            return user

    def edit(self, form_id: str, instance_id: str, **changes: Any) -> Sub:
        with self._lock:
            sub = self.forms[form_id].by_id[instance_id]
            sub.fields.update(changes)
            sub.xml = None  # the stored XML no longer holds: render it from the fields
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

    def load_recorded(self, fixtures: Path, forms: Collection[str] = ("sanitation_sweep",)) -> None:
        """Bring the stand-in to the state the recorded exchanges end in: the forms (both
        published versions of sanitation_sweep; ``RECORDED_FORMS`` adds the OData types
        probe), each submission with its system fields, review state, files and the XML as
        it was sent (A–F and X), and the app user 巡查员 01 assigned to sanitation_sweep."""
        exchanges = [json.loads(p.read_text("utf-8")) for p in sorted(fixtures.glob("[0-9]*.json"))]
        sent = _sent_submissions(exchanges)
        photos = {p.name.split("_")[-1]: p.read_bytes() for p in fixtures.glob("bodies/photo_*")}
        for path in sorted((fixtures / "forms").glob("*.xml")):
            xml = path.read_bytes()
            form_id = _xml_form_id(ET.fromstring(xml))  # noqa: S314 - our own fixtures
            if form_id in forms:
                self.add_form(form_id, _xml_version(xml), xml, _xml_title(xml))
        if "sanitation_sweep" in forms:
            self.add_app_user("巡查员 01", ["sanitation_sweep"])
        for form_id in forms:
            for row in reversed(_recorded_feed(exchanges, self.project_id, form_id)):
                self._add_recorded(form_id, row, sent.get(row["__id"]), photos)

    def _add_recorded(
        self, form_id: str, row: dict[str, Any], sent: _Sent | None, photos: dict[str, bytes]
    ) -> None:
        system = row["__system"]
        fields = {k: v for k, v in row.items() if not k.startswith("__") and "@odata" not in k}
        repeats = {
            k: [{n: x for n, x in r.items() if n != "__id"} for r in fields.pop(k)]
            for k in [k for k, v in fields.items() if isinstance(v, list)]
        }
        names = [r["photo"] for rows in repeats.values() for r in rows if r.get("photo")]
        sub = self.add_submission(
            form_id,
            row["__id"],
            fields,
            {k: v for k, v in repeats.items() if v},
            version=system["formVersion"],
            attachments={n: photos.get(n) for n in names},
            submitter_id=system["submitterId"],
            submitter_name=system["submitterName"],
            device_id=system["deviceId"],
            review_state=system["reviewState"],
            xml=sent.xml if sent else None,
            user_agent=sent.user_agent if sent else None,
        )
        sub.created = _parse_ts(system["submissionDate"])
        sub.updated = _parse_ts(system["updatedAt"]) if system["updatedAt"] else None
        self._clock = max(self._clock, sub.updated or sub.created)

    # ---- rendering -----------------------------------------------------------------
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

    def _actor(self, actor_id: int) -> dict[str, Any]:
        """A user (the admin) or an app user (``field_key``), as Central shows an actor."""
        user = next((u for u in self.app_users.values() if u.id == actor_id), None)
        name, kind = (user.display_name, "field_key") if user else (self.email, "user")
        created = user.created if user else EPOCH - timedelta(minutes=5)
        return {
            "id": actor_id,
            "type": kind,
            "displayName": name,
            "createdAt": _ts(created),
            "updatedAt": None,
            "deletedAt": None,
        }

    def _submission_json(self, sub: Sub, extended: bool = False) -> dict[str, Any]:
        """``GET …/submissions[/<id>]``: the REST view (``submitterId`` a number here)."""
        who = int(sub.submitter_id) if sub.submitter_id.isdigit() else ADMIN_ID
        out: dict[str, Any] = {
            "instanceId": sub.instance_id,
            "submitterId": who,
            "deviceId": sub.device_id,
            "createdAt": _ts(sub.created),
            "updatedAt": _ts(sub.updated) if sub.updated else None,
            "reviewState": sub.review_state,
            "userAgent": sub.user_agent,
            "deletedAt": _ts(sub.deleted) if sub.deleted else None,
        }
        meta = sub.fields.get("meta")
        current: dict[str, Any] = {
            "submitterId": who,
            "createdAt": _ts(sub.updated if sub.edits and sub.updated else sub.created),
            "instanceName": meta.get("instanceName") if isinstance(meta, dict) else None,
            "instanceId": sub.instance_id,
            "current": True,
            "deviceId": sub.device_id,
            "userAgent": sub.user_agent,
        }
        if extended:
            out["submitter"] = current["submitter"] = self._actor(who)
        out["currentVersion"] = current
        return out

    def _form_out(self, form: Form, extended: bool = False) -> dict[str, Any]:
        shown = form.versions[0] if form.versions else form.draft or {}
        out = {k: v for k, v in shown.items() if not k.startswith("_")}
        if extended:  # X-Extended-Metadata: true
            live = [s for s in form.subs if s.deleted is None]
            out |= {
                "submissions": len(live),
                "entityRelated": False,
                "reviewStates": {
                    "received": sum(1 for s in live if s.review_state is None),
                    "hasIssues": sum(1 for s in live if s.review_state == "hasIssues"),
                    "edited": sum(1 for s in live if s.review_state == "edited"),
                },
                "lastSubmission": _ts(max(s.created for s in live)) if live else None,
                "excelContentType": None,
                "publicLinks": 0,
                "createdBy": self._actor(ADMIN_ID),
                "publishNotes": None,
            }
        return out

    def _project_json(self) -> dict[str, Any]:
        return {
            "id": self.project_id,
            "name": self.project_name,
            "description": None,
            "archived": None,
            "keyId": None,
            "createdAt": _ts(EPOCH - timedelta(minutes=5)),
            "updatedAt": None,
            "deletedAt": None,
            "verbs": list(_ADMIN_VERBS),
        }


# ---- the recordings ------------------------------------------------------------------
@dataclass
class _Sent:
    xml: bytes
    user_agent: str | None


def _sent_submissions(exchanges: list[dict[str, Any]]) -> dict[str, _Sent]:
    """instanceId → the XML as it was accepted, from the REST (raw XML) and OpenRosa
    (multipart) submissions that the recorded server took."""
    out: dict[str, _Sent] = {}
    for ex in exchanges:
        req, resp = ex["request"], ex["response"]
        agent = req.get("headers", {}).get("User-Agent")
        if req["method"] != "POST" or resp["status"] not in (200, 201):
            continue
        if req["path"].endswith("/submissions") and isinstance(resp.get("body"), dict):
            iid = resp["body"].get("instanceId")
            text = req.get("body")
        elif req["path"].endswith("/submission"):
            text = next(
                (
                    p.get("body")
                    for p in req.get("multipart_parts", [])
                    if p["name"] == "xml_submission_file"
                ),
                None,
            )
            found = re.search(r"<instanceID>([^<]+)</instanceID>", text or "")
            iid = found.group(1) if found else None
        else:
            continue
        if iid and isinstance(text, str) and iid not in out:
            out[iid] = _Sent(text.encode("utf-8"), agent)
    return out


def _recorded_feed(exchanges: list[dict[str, Any]], project_id: int, form_id: str) -> list[Any]:
    """The fullest recorded OData feed of a form (``$expand=*`` if there is one)."""
    path = f"/v1/projects/{project_id}/forms/{form_id}.svc/Submissions"
    feeds = {
        ex["request"]["raw_query"]: ex["response"]["body"]["value"]
        for ex in exchanges
        if ex["request"]["method"] == "GET"
        and ex["request"]["path"] == path
        and ex["response"]["status"] == 200
        and ex["request"]["raw_query"] in ("", "$expand=*")
    }
    return feeds.get("$expand=*", feeds.get("", []))


# ---- OData rendering -----------------------------------------------------------------
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


def _repeat_id(sub: Sub, path: str, i: int) -> str:
    """Central's repeat-row ``__id``: the sha1 of ``Submissions#<instanceId>%%<group>#%%
    <repeat>#<index from 0>`` (groups have no iteration), so ids match the real server's."""
    *groups, name = path.split("/")
    stack = [f"Submissions#{sub.instance_id}", *(f"{g}#" for g in groups), f"{name}#{i}"]
    return hashlib.sha1("%%".join(stack).encode()).hexdigest()  # noqa: S324


def _repeat_rows(sub: Sub, path: str) -> list[dict[str, Any]]:
    if "/" not in path:
        return sub.repeats.get(path, [])
    value: Any = sub.fields
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, list) else []


def _repeat_row(sub: Sub, path: str, i: int) -> dict[str, Any]:
    """Row ``i`` of a repeat table: its fields, ``__id`` and the parent's key."""
    row = _repeat_rows(sub, path)[i]
    return dict(row, __id=_repeat_id(sub, path, i), **{"__Submissions-id": sub.instance_id})


def _select(row: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """``$select``: the named fields in entity order; ``a/b`` keeps ``b`` inside ``a``."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        base = key.split("@", 1)[0]
        inner = [p.split("/", 1)[1] for p in paths if p.startswith(base + "/")]
        if base in paths:
            out[key] = value
        elif inner and isinstance(value, dict):
            out[key] = _select(value, inner)
    return out


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _wkt(value: Any) -> Any:
    """``$wkt=true``: GeoJSON geometries as well-known text, anywhere in a row."""
    if isinstance(value, list):
        return [_wkt(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("type")
    if kind in _GEO_TYPES and "coordinates" in value:
        pts = value["coordinates"]
        if kind == "Point":
            return f"POINT ({_wkt_line([pts])})"
        if kind == "LineString":
            return f"LINESTRING ({_wkt_line(pts)})"
        return "POLYGON (" + ",".join(f"({_wkt_line(ring)})" for ring in pts) + ")"
    return {k: _wkt(v) for k, v in value.items()}


def _wkt_line(points: list[list[float]]) -> str:
    return ",".join(" ".join(_num(c) for c in p) for p in points)


def _filter_values(sub: Sub) -> dict[str, Any]:
    """What ``$filter`` sees of a submission, by OData path."""
    return {
        "__id": sub.instance_id,
        "__system/submissionDate": sub.created,
        "__system/updatedAt": sub.updated,
        "__system/reviewState": sub.review_state,
        "__system/deletedAt": sub.deleted,
        "__system/submitterId": float(sub.submitter_id) if sub.submitter_id.isdigit() else None,
    }


# ---- the XForm -----------------------------------------------------------------------
_FILE_REF = re.compile(rb"jr://file(?:-csv)?/([^\"'<\s]+)")
_EDM = {
    "int": "Edm.Int64",
    "decimal": "Edm.Decimal",
    "date": "Edm.Date",
    "dateTime": "Edm.DateTimeOffset",
    "boolean": "Edm.Boolean",
    "geopoint": "Edm.GeographyPoint",
    "geotrace": "Edm.GeographyLineString",
    "geoshape": "Edm.GeographyPolygon",
}
# the <Annotation>s of Central's Submissions EntitySet; {fields} is the non-filterable list
_EDMX_ANNOTATIONS = """\
          <Annotation Term="Org.OData.Capabilities.V1.ConformanceLevel" EnumMember="Org.OData.Capabilities.V1.ConformanceLevelType/Minimal"/>
          <Annotation Term="Org.OData.Capabilities.V1.BatchSupported" Bool="false"/>
          <Annotation Term="Org.OData.Capabilities.V1.CountRestrictions">
            <Record><PropertyValue Property="Countable" Bool="true"/></Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.FilterFunctions">
            <Record>
              <PropertyValue Property="NonCountableProperties">
                <Collection>
                  <String>eq</String>
                </Collection>
              </PropertyValue>
            </Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.FilterFunctions">
            <Record>
              <PropertyValue Property="Filterable" Bool="true"/>
              <PropertyValue Property="RequiresFilter" Bool="false"/>
              <PropertyValue Property="NonFilterableProperties">
                <Collection>
{fields}
                </Collection>
              </PropertyValue>
            </Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.SortRestrictions">
            <Record><PropertyValue Property="Sortable" Bool="false"/></Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.ExpandRestrictions">
            <Record><PropertyValue Property="Expandable" Bool="false"/></Record>
          </Annotation>"""
_EDMX_SYSTEM = """\
    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="org.opendatakit.submission">
      <ComplexType Name="metadata">
        <Property Name="submissionDate" Type="Edm.DateTimeOffset"/>
        <Property Name="updatedAt" Type="Edm.DateTimeOffset"/>
        <Property Name="deletedAt" Type="Edm.DateTimeOffset"/>
        <Property Name="submitterId" Type="Edm.String"/>
        <Property Name="submitterName" Type="Edm.String"/>
        <Property Name="attachmentsPresent" Type="Edm.Int64"/>
        <Property Name="attachmentsExpected" Type="Edm.Int64"/>
        <Property Name="status" Type="org.opendatakit.submission.Status"/>
        <Property Name="reviewState" Type="org.opendatakit.submission.ReviewState"/>
        <Property Name="deviceId" Type="Edm.String"/>
        <Property Name="edits" Type="Edm.Int64"/>
        <Property Name="formVersion" Type="Edm.String"/>
      </ComplexType>
      <EnumType Name="Status">
        <Member Name="notDecrypted"/>
        <Member Name="missingEncryptedFormData"/>
      </EnumType>
      <EnumType Name="ReviewState">
        <Member Name="hasIssues"/>
        <Member Name="edited"/>
        <Member Name="rejected"/>
        <Member Name="approved"/>
      </EnumType>
    </Schema>
"""


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


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@lru_cache(maxsize=64)  # every feed page asks; the XML is the key
def _fields(xml: bytes) -> list[dict[str, Any]]:
    """``GET …/fields?odata=true``: one entry per bound node, as Central derives it
    (nothing for a form added without a parseable XForm)."""
    try:
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError:
        return []
    instance = next(iter(next(root.iter(f"{_XF}instance"))), None)
    if instance is None:
        return []
    repeats = {el.get("nodeset", "") for el in root.iter(f"{_XF}repeat")}
    multiple = {el.get("ref", "") for el in root.iter(f"{_XF}select")}
    binds = {el.get("nodeset", ""): el.get("type", "string") for el in root.iter(f"{_XF}bind")}
    base = "/" + _local(instance.tag)
    out: list[dict[str, Any]] = []

    def walk(el: ET.Element, path: str) -> None:
        for child in el:
            name = _local(child.tag)
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
                    "selectMultiple": True if full in multiple else None,
                }
            )
            if len(child):
                walk(child, full)

    walk(instance, base)
    return out


def _all_fields(form: Form) -> list[dict[str, Any]]:
    """The fields of every published version, newest version's order first (the export's
    columns cover every version)."""
    out: dict[str, dict[str, Any]] = {}
    for info in form.versions:
        for f in _fields(form.xmls.get(info["version"], form.xml)):
            out.setdefault(f["path"], f)
    return list(out.values())


def _tables(fields: list[dict[str, Any]]) -> list[str]:
    """Repeat paths (``/piles``, ``/grp/rep``) in form order: one OData table each."""
    return [f["path"] for f in fields if f["type"] == "repeat"]


def _form_tables(form: Form) -> list[str]:
    """The form's repeat tables; from its submissions when it has no XForm to read."""
    found = _tables(_fields(form.xml))
    return found or ["/" + k for k in dict.fromkeys(k for s in form.subs for k in s.repeats)]


def _table_name(repeat_path: str) -> str:
    return "Submissions." + repeat_path.strip("/").replace("/", ".")


def _owner(fields: list[dict[str, Any]], path: str) -> str:
    """The innermost repeat a field belongs to ('' for the submission itself)."""
    reps = [r for r in _tables(fields) if path.startswith(r + "/")]
    return max(reps, key=len) if reps else ""


def _edmx(form: Form) -> str:
    """``$metadata``, derived from the current XForm as Central does."""
    fields = _fields(form.xml)
    ns = f"org.opendatakit.user.{form.form_id}"
    types: list[str] = []
    complex_types: list[str] = []

    def props(parent: str) -> list[str]:
        out = []
        for f in fields:
            if f["path"].rsplit("/", 1)[0] != parent:
                continue
            if f["type"] == "repeat":
                target = f"{ns}.{_table_name(f['path'])}"
                out.append(f'<NavigationProperty Name="{f["name"]}" Type="Collection({target})"/>')
                continue
            if f["type"] == "structure":
                kind = f"{ns}.{f['name']}"
                inner = "\n".join(f"        {p}" for p in props(f["path"]))
                complex_types.append(
                    f'      <ComplexType Name="{f["name"]}">\n{inner}\n      </ComplexType>\n'
                )
            else:
                kind = _EDM.get(f["type"], "Edm.String")
            out.append(f'<Property Name="{f["name"]}" Type="{kind}"/>')
        return out

    def entity(name: str, parent: str, keys: list[str]) -> None:
        lines = [f'<Property Name="{k}" Type="{t}"/>' for k, t in keys]
        lines += props(parent)
        body = "\n".join(f"        {line}" for line in lines)
        types.append(
            f'      <EntityType Name="{name}">\n        <Key><PropertyRef Name="__id"/></Key>\n'
            f"{body}\n      </EntityType>\n"
        )

    entity(
        "Submissions",
        "",
        [("__id", "Edm.String"), ("__system", "org.opendatakit.submission.metadata")],
    )
    for rep in _tables(fields):
        parent = _owner(fields, rep)
        parent_key = (
            "__Submissions-" + (parent.strip("/").replace("/", "-") + "-" if parent else "") + "id"
        )
        entity(_table_name(rep), rep, [("__id", "Edm.String"), (parent_key, "Edm.String")])
    top = [f["name"] for f in fields if f["path"].count("/") == 1]
    paths = "\n".join(f"                  <PropertyPath>{n}</PropertyPath>" for n in top)
    sets = "".join(
        f'        <EntitySet Name="{_table_name(r)}" EntityType="{ns}.{_table_name(r)}">\n'
        "        </EntitySet>\n"
        for r in _tables(fields)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">\n'
        "  <edmx:DataServices>\n"
        f"{_EDMX_SYSTEM}"
        f'    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{ns}">\n'
        + "".join(types)
        + "".join(complex_types)
        + f'      <EntityContainer Name="{form.form_id}">\n'
        f'        <EntitySet Name="Submissions" EntityType="{ns}.Submissions">\n'
        + _EDMX_ANNOTATIONS.replace("{fields}", paths)
        + "\n        </EntitySet>\n"
        + sets
        + "      </EntityContainer>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>"
    )


def _xml_form_id(root: ET.Element) -> str:
    for inst in root.iter(f"{_XF}instance"):
        for child in inst:
            return child.get("id", "")
    return ""


def _xml_version(xml: bytes) -> str:
    root = ET.fromstring(xml)  # noqa: S314
    for inst in root.iter(f"{_XF}instance"):
        for child in inst:
            return child.get("version", "")
    return ""


def _unparseable(xml: bytes) -> tuple[int, dict[str, Any]]:
    n = len(xml.decode("utf-8", "replace"))
    return _error(400, 400.1, f"Could not parse the given data ({n} chars) as xml.")


# ---- submission XML and the CSV export -----------------------------------------------
def _geo_text(value: dict[str, Any]) -> str:
    """GeoJSON back to the XForm's ``lat lon alt acc`` (points ``;``-separated)."""

    def point(c: list[float], acc: Any = 0) -> str:
        lon, lat, *alt = c
        return " ".join(_num(x) for x in (lat, lon, alt[0] if alt else 0, acc or 0))

    coords = value["coordinates"]
    if value["type"] == "Point":
        return point(coords, (value.get("properties") or {}).get("accuracy"))
    ring = coords[0] if value["type"] == "Polygon" else coords
    return ";".join(point(c) for c in ring)


def _render_xml(form: Form, sub: Sub) -> bytes:
    """A submission's XML from its fields, for those added without one (the demo's)."""
    root = _root_tag(form.xml)

    def walk(name: str, value: Any) -> str:
        if isinstance(value, list):
            return "".join(walk(name, r) for r in value)
        if isinstance(value, dict) and value.get("type") in _GEO_TYPES:
            value = _geo_text(value)
        if isinstance(value, dict):
            return f"<{name}>" + "".join(walk(k, v) for k, v in value.items()) + f"</{name}>"
        if value is None:
            return f"<{name}/>"
        text = _num(value) if isinstance(value, float) else str(value)
        return f"<{name}>{escape(text)}</{name}>"

    body = "".join(walk(k, v) for k, v in {**sub.fields, **sub.repeats}.items())
    head = f'<{root} id="{escape(form.form_id)}" version="{escape(sub.version)}">'
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}{body}</{root}>'.encode()


@lru_cache(maxsize=64)
def _root_tag(xml: bytes) -> str:
    """The XForm's instance root (``data``), the root of its submissions."""
    try:
        return _local(next(iter(next(ET.fromstring(xml).iter(f"{_XF}instance")))).tag)  # noqa: S314
    except (ET.ParseError, StopIteration):
        return "data"


def _sub_tree(form: Form, sub: Sub) -> ET.Element:
    try:
        return ET.fromstring(sub.xml or _render_xml(form, sub))  # noqa: S314
    except ET.ParseError:  # Central keeps what its lenient parser read (X in the recordings)
        return ET.fromstring(_render_xml(form, sub))  # noqa: S314


def _find(el: ET.Element, parts: list[str]) -> list[ET.Element]:
    found = [el]
    for part in parts:
        found = [c for e in found for c in e if _local(c.tag) == part]
    return found


def _columns(fields: list[dict[str, Any]], owner: str) -> list[tuple[str, str, str]]:
    """(path relative to the table, column name, type) of one table's value columns."""
    out = []
    for f in fields:
        if f["type"] in ("structure", "repeat") or _owner(fields, f["path"]) != owner:
            continue
        rel = f["path"][len(owner) + 1 :]
        name = rel.replace("/", "-")
        if f["type"] == "geopoint":
            out += [(rel, f"{name}-{p}", "geopoint") for p in ("Latitude", "Longitude", "Altitude", "Accuracy")]  # fmt: skip
        else:
            out.append((rel, name, f["type"]))
    return out


def _cells(el: ET.Element, columns: list[tuple[str, str, str]]) -> list[str]:
    cells, seen_geo = [], ""
    for rel, _name, kind in columns:
        hit = _find(el, rel.split("/"))
        text = (hit[0].text or "").strip() if hit else ""
        if kind == "geopoint":
            if rel == seen_geo:
                continue
            seen_geo = rel
            cells += [*text.split(), "", "", "", ""][:4]
        else:
            cells.append(text)
    return cells


def _csv_tables(form: Form) -> dict[str, str]:
    """The CSV export: ``<form>.csv`` and one ``<form>-<repeat>.csv`` per repeat, newest
    submission first, values as submitted (from the XML)."""
    fields = _all_fields(form)
    trees = [(s, _sub_tree(form, s)) for s in reversed(form.subs) if s.deleted is None]
    system = "KEY,SubmitterID,SubmitterName,AttachmentsPresent,AttachmentsExpected,Status,ReviewState,DeviceID,Edits,FormVersion"  # fmt: skip
    root_cols = _columns(fields, "")
    rows = [["SubmissionDate", *(c[1] for c in root_cols), *system.split(",")]]
    for s, tree in trees:
        present = sum(1 for v in s.attachments.values() if v is not None)
        system_cells = [s.instance_id, s.submitter_id, s.submitter_name, str(present)]
        system_cells += [str(len(s.attachments)), "", s.review_state or "", s.device_id or ""]
        rows.append(
            [_ts(s.created), *_cells(tree, root_cols), *system_cells, str(s.edits), s.version]
        )
    out = {f"{form.form_id}.csv": _csv(rows)}
    for rep in _tables(fields):
        cols = _columns(fields, rep)
        table = [[*(c[1] for c in cols), "PARENT_KEY", "KEY"]]
        for s, tree in trees:
            parts = rep.strip("/").split("/")
            for i, el in enumerate(_find(tree, parts)):
                key = f"{s.instance_id}/{'/'.join(parts)}[{i + 1}]"
                table.append([*_cells(el, cols), s.instance_id, key])
        out[f"{form.form_id}-{rep.rsplit('/', 1)[-1]}.csv"] = _csv(table)
    return out


def _csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _csv_zip(form: Form, media: bool) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in _csv_tables(form).items():
            zf.writestr(name, text.encode("utf-8"))
        if media:
            files = {n: b for s in form.subs if s.deleted is None for n, b in s.attachments.items()}
            for name, data in sorted(files.items()):
                if data is not None:
                    zf.writestr(f"media/{name}", data)
    return buf.getvalue()


def _download(kind: str, name: str) -> dict[str, str]:
    """``Content-Disposition`` as Central sends it (``inline`` or ``attachment``)."""
    return {"Content-Disposition": f"{kind}; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"}


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
HTTPS_ONLY = _error(401, 401.3, "This authentication method is only available over HTTPS")
FORBIDDEN = _error(
    403, 403.1, "The authentication you provided does not have rights to perform that action."
)
_ODATA = {"OData-Version": "4.0"}
_OPENROSA = {
    "Content-Language": "en",
    "X-OpenRosa-Version": "1.0",
    "X-OpenRosa-Accept-Content-Length": "100000000",
}
_ADMIN = "admin"


def _xml_reply(status: int, text: str, headers: dict[str, str] | None = None) -> tuple[Any, ...]:
    ctype = {"Content-Type": "text/xml; charset=utf-8"}
    return status, text.encode("utf-8"), {**(headers or {}), **ctype}


def _openrosa_error(status: int, message: str) -> tuple[Any, ...]:
    return _xml_reply(
        status,
        '\n  <OpenRosaResponse xmlns="http://openrosa.org/http/response" items="0">\n'
        f'    <message nature="error">{escape(message)}</message>\n  </OpenRosaResponse>',
    )


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

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

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
            headers = dict(headers or {})
            if body is None:  # 204: no body, no Content-Type
                data, ctype = b"", None
            elif isinstance(body, bytes):
                data, ctype = body, headers.pop("Content-Type", "application/octet-stream")
            else:
                data = _node_json(body)
                ctype = headers.pop("Content-Type", "application/json; charset=utf-8")
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            if self.command in ("GET", "HEAD"):
                self.send_header("Cache-Control", "private, no-cache")
                self.send_header("Vary", "Accept-Encoding, Origin")
            else:
                self.send_header("Cache-Control", "no-store")
                self.send_header("Vary", "*")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Keep-Alive", "timeout=5")
            if self.command == "HEAD" or body is None:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
            elif chunked:
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
            result = self._route(method, segs, dict(query))
            if result is None:
                result = NOT_FOUND
            status, body, *rest = result
            headers = rest[0] if rest else {}
            self._send(status, body, dict(headers), chunked=bool(rest and len(rest) > 1))

        def _auth(self) -> tuple[int, dict[str, Any]] | None:
            """None for the admin, else Central's 401 for these credentials."""
            auth = self.headers.get("Authorization", "")
            https = self.headers.get("X-Forwarded-Proto", "") == "https"
            if auth.startswith("Bearer "):
                return None if auth[7:] in central.tokens else NO_AUTH
            if auth.startswith("Basic "):
                if not https:
                    return HTTPS_ONLY
                try:
                    pair = base64.b64decode(auth[6:]).decode("utf-8", "replace")
                except ValueError:
                    return NO_AUTH
                user, _, password = pair.partition(":")
                return None if (user, password) == (central.email, central.password) else NO_AUTH
            session = re.search(r"(?:^|;\s*)session=([^;]+)", self.headers.get("Cookie", ""))
            if auth or not session:
                return NO_AUTH
            if not https:  # cookies are for browsers, and only over HTTPS
                return HTTPS_ONLY
            ok = self.command in ("GET", "HEAD") and unquote(session.group(1)) in central.tokens
            return None if ok else NO_AUTH

        def _route(self, method: str, segs: list[str], q: dict[str, str]) -> Any:
            if segs[:1] != ["v1"]:
                return _error(
                    404, 404.2, "Expected an API version (eg /v1) at the start of the request URL."
                )
            if segs[1:2] == ["key"] and len(segs) > 2:
                return self._key_route(method, central.app_users.get(segs[2]), segs[3:])
            if segs == ["v1", "sessions"] and method == "POST":
                return self._login()
            denied = self._auth()
            if denied:
                self._body()
                return denied
            if segs[:2] == ["v1", "sessions"] and len(segs) == 3 and method == "DELETE":
                central.tokens.discard(segs[2])
                return 200, {"success": True}
            if segs == ["v1", "users", "current"]:
                return 200, dict(central._actor(ADMIN_ID), email=central.email)
            if segs == ["v1", "projects"] and method == "GET":
                return 200, [central._project_json()]
            if len(segs) < 3 or segs[1] != "projects" or segs[2] != str(central.project_id):
                return None
            rest = segs[3:]
            if rest == [] and method == "GET":
                return 200, central._project_json()
            if rest == ["app-users"] and method == "POST":
                name = json.loads(self._body() or b"{}").get("displayName", "")
                user = central.add_app_user(name)
                info = {"projectId": central.project_id, **central._actor(user.id)}
                return 200, dict(info, token=user.token, csrf=_token(), expiresAt="9999-12-31T23:59:59.000Z")  # fmt: skip
            if rest in (["formList"], ["submission"]) or rest[-1:] == ["manifest"]:
                return self._openrosa(method, None, rest)
            if rest == ["forms"]:
                if method == "GET":
                    extended = self.headers.get("X-Extended-Metadata") == "true"
                    # in the order they were added (Central sorts by name): pulls follow it
                    forms = central.forms.values()
                    return 200, [central._form_out(f, extended) for f in forms if f.versions]
                if method == "POST":
                    return self._create_form(q)
            if len(rest) < 2 or rest[0] != "forms":
                return None
            name = rest[1]
            if name.endswith(".svc"):
                return self._odata(name[:-4], rest[2:], q)
            if name.endswith(".xml") and len(rest) == 2 and method == "GET":
                form = central.forms.get(name[:-4])
                return (200, form.xml, {"Content-Type": "application/xml; charset=utf-8"}) if form and form.versions else None  # fmt: skip
            form = central.forms.get(name)
            return self._form_route(method, form, rest[2:], q) if form else None

        def _login(self) -> Any:
            try:
                cred = json.loads(self._body() or b"{}")
            except ValueError:
                return _error(400, 400.1, "Could not parse the given data.")
            if cred.get("email") != central.email or cred.get("password") != central.password:
                return NO_AUTH
            token = _token()
            central.tokens.add(token)
            now = central.now()
            return 200, {
                "token": token,
                "csrf": _token(),
                "expiresAt": _ts(now + timedelta(days=1)),
                "createdAt": _ts(now),
            }

        # -- OpenRosa (Collect) and app users --
        def _key_route(self, method: str, user: AppUser | None, rest: list[str]) -> Any:
            if rest[:2] != ["projects", str(central.project_id)]:
                return None if user else FORBIDDEN
            tail = rest[2:]
            openrosa = tail in (["formList"], ["submission"]) or tail[-1:] == ["manifest"]
            if user is None:
                self._body()
                return _openrosa_error(403, FORBIDDEN[1]["message"]) if openrosa else FORBIDDEN
            if openrosa:
                return self._openrosa(method, user, tail)
            wanted = tail[1].removesuffix(".xml") if len(tail) == 2 and tail[0] == "forms" else ""
            if tail[1:] == [f"{wanted}.xml"] and wanted in user.forms and method == "GET":
                xml = central.forms[wanted].xml
                return 200, xml, {"Content-Type": "application/xml; charset=utf-8"}
            if len(tail) == 4 and tail[0] == "forms" and tail[2] == "attachments":
                form = central.forms.get(tail[1])
                data = form.attachments.get(tail[3]) if form and tail[1] in user.forms else None
                if data is not None:
                    return 200, data, {"Content-Type": "text/csv", **_download("attachment", tail[3])}  # fmt: skip
            self._body()
            return FORBIDDEN

        def _openrosa(self, method: str, user: AppUser | None, tail: list[str]) -> Any:
            """formList, manifest and the submission pre-flight; ``user`` None is the admin."""
            prefix = f"{central.url}/v1" + (f"/key/{user.token}" if user else "")
            prefix += f"/projects/{central.project_id}"
            allowed = [
                f
                for f in central.forms.values()
                if f.versions and (user is None or f.form_id in user.forms)
            ]
            if tail == ["submission"] and method == "HEAD":
                return 204, None, _OPENROSA
            if tail == ["formList"] and method == "GET":
                items = []
                for f in sorted(allowed, key=lambda f: f.form_id):
                    info = f.versions[0]
                    manifest = (
                        f"\n      <manifestUrl>{prefix}/forms/{quote(f.form_id)}/manifest</manifestUrl>"
                        if f.attachments
                        else ""
                    )
                    items.append(
                        f"    <xform>\n      <formID>{escape(f.form_id)}</formID>\n"
                        f"      <name>{escape(info['name'])}</name>\n"
                        f"      <version>{escape(info['version'])}</version>\n"
                        f"      <hash>md5:{info['hash']}</hash>\n"
                        f"      <downloadUrl>{prefix}/forms/{quote(f.form_id)}.xml</downloadUrl>"
                        f"{manifest}\n    </xform>\n"
                    )
                return _xml_reply(
                    200,
                    '<?xml version="1.0" encoding="UTF-8"?>\n  <xforms xmlns="http://openrosa.org/xforms/xformsList">\n'
                    + "".join(items)
                    + "  </xforms>",
                    _OPENROSA,
                )
            if len(tail) == 3 and tail[2] == "manifest" and method == "GET":
                form = next((f for f in allowed if f.form_id == tail[1]), None)
                if form is None:
                    return FORBIDDEN if user else None
                files = "".join(
                    f"    <mediaFile>\n      <filename>{escape(n)}</filename>\n"
                    f"      <hash>md5:{hashlib.md5(b).hexdigest()}</hash>\n"  # noqa: S324
                    f"      <downloadUrl>{prefix}/forms/{quote(form.form_id)}/attachments/{quote(n)}</downloadUrl>\n"
                    "    </mediaFile>\n"
                    for n, b in form.attachments.items()
                )
                return _xml_reply(
                    200,
                    '<?xml version="1.0" encoding="UTF-8"?>\n  <manifest xmlns="http://openrosa.org/xforms/xformsManifest">\n'
                    + files
                    + "  </manifest>",
                    _OPENROSA,
                )
            return None

        # -- forms and submissions (REST) --
        def _form_route(self, method: str, form: Form, tail: list[str], q: dict[str, str]) -> Any:
            extended = self.headers.get("X-Extended-Metadata") == "true"
            if tail == [] and method == "GET":
                return 200, central._form_out(form, extended)
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
            if tail[:1] == ["draft"]:
                return self._draft(method, form, tail[1:], q)
            if tail[:3] == ["assignments", "app-user"] and len(tail) == 4 and method == "POST":
                user = next((u for u in central.app_users.values() if str(u.id) == tail[3]), None)
                if user is None:
                    return None
                user.forms.add(form.form_id)
                return 200, {"success": True}
            if tail == ["submissions"] and method == "GET":
                live = [s for s in reversed(form.subs) if s.deleted is None]
                return 200, [central._submission_json(s, extended) for s in live]
            if tail == ["submissions.csv.zip"] and method == "GET":
                data = _csv_zip(form, q.get("attachments") != "false")
                return 200, data, {"Content-Type": "application/zip", **_download("attachment", f"{form.form_id}.zip")}, "chunked"  # fmt: skip
            if tail == ["submissions.csv"] and method == "GET":
                data = _csv_tables(form)[f"{form.form_id}.csv"].encode("utf-8")
                return 200, data, {"Content-Type": "text/csv; charset=utf-8", **_download("attachment", f"{form.form_id}.csv")}, "chunked"  # fmt: skip
            if tail[:1] == ["submissions"] and len(tail) >= 2:
                return self._submission(method, form, tail[1:])
            return None

        def _submission(self, method: str, form: Form, tail: list[str]) -> Any:
            sub = form.by_id.get(tail[0])
            as_xml = sub is None and tail[0].endswith(".xml") and len(tail) == 1
            if as_xml:
                sub = form.by_id.get(tail[0][:-4])
            if sub is None or sub.deleted or method != "GET":
                return None
            if as_xml:
                return 200, sub.xml or _render_xml(form, sub), {"Content-Type": "application/xml; charset=utf-8"}  # fmt: skip
            if len(tail) == 1:
                return 200, central._submission_json(sub)
            if tail[1:] == ["attachments"]:
                return 200, [
                    {"name": n, "exists": b is not None} for n, b in sub.attachments.items()
                ]
            if len(tail) == 3 and tail[1] == "attachments":
                data = sub.attachments.get(tail[2])
                if data is None:
                    return None
                etag = f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324 - Central's ETag is md5
                return 200, data, {"Content-Type": "image/jpeg", "ETag": etag, **_download("inline", tail[2])}  # fmt: skip
            return None

        def _draft(self, method: str, form: Form, tail: list[str], q: dict[str, str]) -> Any:
            if tail == [] and method == "POST":
                xml = self._body() or form.xml
                try:
                    version = _xml_version(xml)
                except ET.ParseError:
                    return _unparseable(xml)
                draft = central._form_json(form.form_id, version, xml, _xml_title(xml))
                form.draft = dict(draft, publishedAt=None, draftToken=_token(), _xml=xml.decode("utf-8"), _attachments={})  # fmt: skip
                return 200, {"success": True}
            if tail == [] and method == "GET" and form.draft:
                return 200, {k: v for k, v in form.draft.items() if not k.startswith("_")}
            if tail[:1] == ["attachments"] and len(tail) == 2 and method == "POST":
                body = self._body()
                # Central only takes files the form's XML refers to (jr://file…/<name>)
                if not form.draft or tail[1] not in _declared_files(form.draft["_xml"].encode()):
                    return None
                form.draft["_attachments"][tail[1]] = body
                return 200, {"success": True}
            if tail == ["publish"] and method == "POST":
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
                form.xml = form.xmls[version] = xml
                form.attachments = {
                    n: b
                    for n, b in {**form.attachments, **draft["_attachments"]}.items()
                    if n in _declared_files(xml)
                }
                form.draft = None
                return 200, {"success": True}
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
                form.xml = form.xmls[info["version"]] = xml
            else:
                info["publishedAt"] = None
                form.draft = dict(info, _xml=xml.decode("utf-8"), _attachments={})
            return 200, {k: v for k, v in info.items() if not k.startswith("_")}

        # -- OData --
        def _odata(self, form_id: str, tail: list[str], q: dict[str, str]) -> Any:
            form = central.forms.get(form_id)
            try:
                result = self._odata_reply(form, tail, q) if form and form.versions else None
            except FilterError as e:
                result = (e.status, e.body)
            status, body, *rest = result or NOT_FOUND
            headers = {**_ODATA, **(rest[0] if rest else {})}
            return (status, body, headers, *rest[1:])

        def _odata_reply(self, form: Form, tail: list[str], q: dict[str, str]) -> Any:
            base = f"{central.url}/v1/projects/{central.project_id}/forms/{form.form_id}.svc"
            if tail == [] and self.command == "GET":
                sets = ["Submissions", *(_table_name(r) for r in _form_tables(form))]
                value = [{"name": n, "kind": "EntitySet", "url": n} for n in sets]
                body = {"@odata.context": f"{base}/$metadata", "value": value}
                return 200, body, {"Content-Type": "application/json; charset=utf-8; odata.metadata=minimal"}  # fmt: skip
            if tail == ["$metadata"]:
                return 200, _edmx(form).encode("utf-8"), {"Content-Type": "application/xml; charset=utf-8"}  # fmt: skip
            if not tail:
                return None
            single = re.fullmatch(r"Submissions\('(.*)'\)", tail[0])
            if single:
                sub = form.by_id.get(unquote(single.group(1)))
                if sub is None or sub.deleted:
                    return None
                if len(tail) == 1:
                    rows = self._shape([central.entity(sub, q.get("$expand") == "*")], q)
                    return 200, {"value": rows, "@odata.context": f"{base}/$metadata#Submissions"}
                path = "/".join(tail[1:])
                value = [_repeat_row(sub, path, i) for i in range(len(_repeat_rows(sub, path)))]
                context = f"{base}/$metadata#{_table_name(path)}"
                return 200, {"value": self._shape(value, q), "@odata.context": context}
            return self._feed(form, tail[0], q, base)

        def _shape(self, rows: list[dict[str, Any]], q: dict[str, str]) -> list[dict[str, Any]]:
            if "$select" in q:
                paths = [p.strip() for p in q["$select"].split(",")]
                rows = [_select(r, paths) for r in rows]
            return [_wkt(r) for r in rows] if q.get("$wkt") == "true" else rows

        def _feed(self, form: Form, table: str, q: dict[str, str], base: str) -> Any:
            expand = q.get("$expand") == "*"
            pred, with_deleted = (lambda values: True), False
            if "$filter" in q:
                pred, with_deleted = compile_filter(q["$filter"])
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
                    for s in form.subs
                    if (with_deleted or s.deleted is None) and pred(_filter_values(s))
                ]
            subs = _ordered(subs, q.get("$orderby", ""))
            rows: list[tuple[str, Any]]
            if table == "Submissions":
                rows = [(s.instance_id, s) for s in subs]
                key = "instanceId"
            elif "/" + table.removeprefix("Submissions.").replace(".", "/") in _form_tables(form):
                path = table.removeprefix("Submissions.").replace(".", "/")
                rows = [
                    (_repeat_id(s, path, i), _repeat_row(s, path, i))
                    for s in subs
                    for i in range(len(_repeat_rows(s, path)))
                ]
                key = "repeatId"
            else:
                return None
            total = len(rows)
            if after is not None:
                ids = [r[0] for r in rows]
                if after.get(key) not in ids:
                    return _error(400, 400.35, "Invalid $skiptoken")
                rows = rows[ids.index(after[key]) + 1 :]
            elif q.get("$skip", "").isdigit():
                rows = rows[int(q["$skip"]) :]
            top = int(q["$top"]) if q.get("$top", "").isdigit() else None
            page, more = (rows[:top], len(rows) > top) if top is not None else (rows, False)
            if table == "Submissions":
                value = [central.entity(s, expand) for _, s in page]
            else:
                value = [row for _, row in page]
            body: dict[str, Any] = {
                "value": self._shape(value, q),
                "@odata.context": f"{base}/$metadata#{table}",
            }
            if more:
                skip = "01" + base64.b64encode(json.dumps({key: page[-1][0]}).encode()).decode()
                keep = [(k, v) for k, v in q.items() if k not in ("$skiptoken", "$skip")]
                parts = [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in keep]
                parts.append(f"%24skiptoken={quote(skip, safe='')}")
                body["@odata.nextLink"] = f"{base}/{table}?" + "&".join(parts)
            if q.get("$count") == "true":
                body["@odata.count"] = total
            data = _node_json(body)
            central._last_page[self.path.split("?")[0]] = (200, dict(_ODATA), data)
            return 200, data, {"Content-Type": "application/json; charset=utf-8"}, "chunked"

    return Handler


def _ordered(subs: list[Sub], orderby: str) -> list[Sub]:
    """Newest first (as they arrived) unless ``$orderby`` says otherwise
    (``__system/submissionDate desc``, ``__system/updatedAt asc``, ``__id``)."""
    field_name, _, direction = orderby.strip().partition(" ")
    if not field_name:
        return subs[::-1]
    keys: dict[str, Callable[[Sub], Any]] = {
        "__system/updatedAt": lambda s: (s.updated or s.created, s.order),
        "__id": lambda s: s.instance_id,
    }
    key = keys.get(field_name, lambda s: (s.created, s.order))
    return sorted(subs, key=key, reverse=direction.strip() == "desc")


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
