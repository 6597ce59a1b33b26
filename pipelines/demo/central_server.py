"""An in-process stand-in for ODK Central's API, built from the recorded exchanges in
``tests/data/central`` (recorded from ODK Central backend v2026.2) and its README's
observations. The demo serves its simulated year from it over loopback, so the demo
exercises the real pull code; the tests extend it with faults, and
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
  XForm), ``Submissions`` newest first (submission time, then arrival) and unpaged without
  ``$top``, streamed as Central streams it (chunked, each row as it is made); ``$top``
  paging with an absolute ``@odata.nextLink`` carrying
  ``%24skiptoken=01<base64 {"instanceId"}>`` (a row since deleted still works; one Central
  no longer has leaves an empty page, as its join on the row does), ``$skip``, ``$count``,
  ``$select``, ``$orderby``, ``$wkt``, ``$expand=*`` (repeat rows with ``__id``, no parent
  key), ``$filter`` (see :mod:`pipelines.demo._odata_filter`); single entities
  ``Submissions('<id>')`` and their repeats; ``Submissions.<repeat>`` tables with
  ``__Submissions-id``; geo as GeoJSON. Repeat ``__id`` values are Central's own hash.
  Deleted submissions are left out unless the filter mentions ``__system/deletedAt``.
* ``costs`` (:class:`Costs`, off unless a benchmark sets it) makes it answer at a real
  Central's speed: a round trip per request, a count per paged feed, a pace for the rows.
* A repeat inside a group stays inside it (navigation link, and rows with ``$expand=*``).
* ``Date`` on every response shows the stand-in's clock (:meth:`CentralStandIn.now`), which
  moves only as submissions, edits and reviews happen (or a test calls ``tick``).

Where each part lives: this module holds the state, its lifecycle and the routing;
``_central_http`` Central's HTTP conventions and authentication; ``_central_openrosa``,
``_central_rest`` and ``_central_odata`` the API families; ``_central_formats`` what is derived
from the XForm (fields, ``$metadata``, submission XML, CSV export). Faults (status, delays,
resets, a page sent twice) are the tests' own: ``tests/standins/central_server.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Collection
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

from pipelines.demo._central_http import NO_AUTH, _error
from pipelines.demo._central_model import ADMIN_ID, EPOCH, AppUser, Costs, Form, Sub, _token, _ts
from pipelines.demo._central_odata import _ODataRoutes
from pipelines.demo._central_openrosa import _OpenRosaRoutes
from pipelines.demo._central_rest import _actor, _form_out, _project_json, _RestRoutes
from pipelines.demo.loopback import LoopbackServer

__all__ = ["CentralStandIn", "Costs"]


class _Handler(_OpenRosaRoutes, _RestRoutes, _ODataRoutes):
    """Routes a request to its API family; sessions (log in and out) are answered here."""

    def _route(self, method: str, segs: list[str], q: dict[str, str]) -> Any:
        central = self.central
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
            return 200, dict(_actor(central, ADMIN_ID), email=central.email)
        if segs == ["v1", "projects"] and method == "GET":
            return 200, [_project_json(central)]
        if len(segs) < 3 or segs[1] != "projects" or segs[2] != str(central.project_id):
            return None
        rest = segs[3:]
        if rest == [] and method == "GET":
            return 200, _project_json(central)
        if rest == ["app-users"] and method == "POST":
            name = json.loads(self._body() or b"{}").get("displayName", "")
            user = central.add_app_user(name)
            info = {"projectId": central.project_id, **_actor(central, user.id)}
            return 200, dict(info, token=user.token, csrf=_token(), expiresAt="9999-12-31T23:59:59.000Z")  # fmt: skip
        if rest in (["formList"], ["submission"]) or rest[-1:] == ["manifest"]:
            return self._openrosa(method, None, rest)
        if rest == ["forms"]:
            if method == "GET":
                extended = self.headers.get("X-Extended-Metadata") == "true"
                # in the order they were added (Central sorts by name): pulls follow it
                forms = central.forms.values()
                return 200, [_form_out(central, f, extended) for f in forms if f.versions]
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
        central = self.central
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


class CentralStandIn(LoopbackServer):
    """ODK Central on loopback: one project, its forms, submissions, app users and sessions.

    Fill it with :meth:`add_form` and :meth:`add_submission`; change it as people would with
    :meth:`edit`, :meth:`review` and :meth:`delete`. A subclass may answer through another
    ``handler`` (the tests' stand-in adds faults)."""

    handler: ClassVar[type[BaseHTTPRequestHandler]] = _Handler

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
        self.costs = Costs()  # what answering costs a real Central; nothing, unless set
        self._clock = EPOCH
        self._lock = threading.RLock()
        # each server answers through its own subclass of the handler, bound to it
        super().__init__(type("Handler", (self.handler,), {"central": self}))

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
