"""The stand-in's REST API: the JSON views of projects, actors, forms and submissions;
forms (get, versions, fields, files), publishing (create, draft, draft files, publish), app-user
assignments, submissions (list, get, XML, attachments) and the CSV export."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pipelines.demo._central_formats import (
    _attachment_type,
    _csv_tables,
    _csv_zip,
    _declared_files,
    _fields,
    _render_xml,
    _xml_form_id,
    _xml_title,
    _xml_version,
)
from pipelines.demo._central_http import _CentralHandler, _download, _error
from pipelines.demo._central_model import ADMIN_ID, EPOCH, Form, Sub, _token, _ts

if TYPE_CHECKING:
    from pipelines.demo.central_server import CentralStandIn

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


def _actor(central: CentralStandIn, actor_id: int) -> dict[str, Any]:
    """A user (the admin) or an app user (``field_key``), as Central shows an actor."""
    user = next((u for u in central.app_users.values() if u.id == actor_id), None)
    name, kind = (user.display_name, "field_key") if user else (central.email, "user")
    created = user.created if user else EPOCH - timedelta(minutes=5)
    return {
        "id": actor_id,
        "type": kind,
        "displayName": name,
        "createdAt": _ts(created),
        "updatedAt": None,
        "deletedAt": None,
    }


def _submission_json(central: CentralStandIn, sub: Sub, extended: bool = False) -> dict[str, Any]:
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
        out["submitter"] = current["submitter"] = _actor(central, who)
    out["currentVersion"] = current
    return out


def _form_out(central: CentralStandIn, form: Form, extended: bool = False) -> dict[str, Any]:
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
            "createdBy": _actor(central, ADMIN_ID),
            "publishNotes": None,
        }
    return out


def _project_json(central: CentralStandIn) -> dict[str, Any]:
    return {
        "id": central.project_id,
        "name": central.project_name,
        "description": None,
        "archived": None,
        "keyId": None,
        "createdAt": _ts(EPOCH - timedelta(minutes=5)),
        "updatedAt": None,
        "deletedAt": None,
        "verbs": list(_ADMIN_VERBS),
    }


def _unparseable(xml: bytes) -> tuple[int, dict[str, Any]]:
    n = len(xml.decode("utf-8", "replace"))
    return _error(400, 400.1, f"Could not parse the given data ({n} chars) as xml.")


class _RestRoutes(_CentralHandler):
    """Forms, publishing and submissions under ``/v1/projects/<id>/forms/<form>``."""

    def _form_route(self, method: str, form: Form, tail: list[str], q: dict[str, str]) -> Any:
        central = self.central
        extended = self.headers.get("X-Extended-Metadata") == "true"
        if tail == [] and method == "GET":
            return 200, _form_out(central, form, extended)
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
            return 200, [_submission_json(central, s, extended) for s in live]
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
        central = self.central
        sub = form.by_id.get(tail[0])
        as_xml = sub is None and tail[0].endswith(".xml") and len(tail) == 1
        if as_xml:
            sub = form.by_id.get(tail[0][:-4])
        if sub is None or sub.deleted or method != "GET":
            return None
        if as_xml:
            return 200, sub.xml or _render_xml(form, sub), {"Content-Type": "application/xml; charset=utf-8"}  # fmt: skip
        if len(tail) == 1:
            return 200, _submission_json(central, sub)
        if tail[1:] == ["attachments"]:
            return 200, [{"name": n, "exists": b is not None} for n, b in sub.attachments.items()]
        if len(tail) == 3 and tail[1] == "attachments":
            data = sub.attachments.get(tail[2])
            if data is None:
                return None
            etag = f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324 - Central's ETag is md5
            return 200, data, {"Content-Type": "image/jpeg", "ETag": etag, **_download("inline", tail[2])}  # fmt: skip
        return None

    def _draft(self, method: str, form: Form, tail: list[str], q: dict[str, str]) -> Any:
        central = self.central
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
        central = self.central
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
