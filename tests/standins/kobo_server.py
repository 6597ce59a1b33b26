"""An in-process stand-in for KoboToolbox (kpi) API v2, built from the reference in
``tests/data/kobo`` (README sections 1–5):

* ``Authorization: Token <key>``; a bad token → 401 ``{"detail": "Invalid token."}`` with
  ``WWW-Authenticate: Session``; no credentials on ``/data/`` → 404 ``{"detail": "Not found."}``.
* ``GET /api/v2/assets/`` and ``/assets/<uid>/`` (with ``deployed_versions``).
* ``GET /api/v2/assets/<uid>/data/``: ``start``/``limit`` (default 100, above 1000 silently
  capped; ``max_limit`` lowers the cap), ``query`` (a Mongo filter: ``$gt $gte $lt $lte $in``,
  equality, ``$or``/``$and`` of those), ``sort``,
  ``fields``; body ``{count, next, previous, results}``; ``next`` with the parameters
  re-encoded in sorted order; values as strings, groups flattened to ``group/field``, repeats
  as lists of full-path dicts.
* Edits keep ``_id``/``_submission_time``/``meta/rootUuid``, change ``_uuid`` and set
  ``meta/deprecatedID``; deletions are hard. Attachments download under ``…/attachments/<uid>/``.
* Publishing (README §6, fixtures 04–06 and 24–30): ``POST /api/v2/imports/`` (multipart:
  ``file``, ``library``, ``name``, ``destination``) → 201 ``processing``; the task stays
  ``processing`` for ``import_polls`` polls, then ``complete`` with ``messages.created`` (or
  ``updated`` and ``audit_logs`` with a destination), or ``error`` with
  ``XlsFormatException`` for a file that is not an XLSForm workbook. Without
  ``library=false`` the upload becomes a library ``block``. An import makes a new draft
  ``version_id``; ``POST …/deployment/`` deploys (200; 405 once deployed), ``PATCH`` with
  the current ``version_id`` redeploys (405 before any deployment, 500 for another version
  id). A survey row with no label → 400 ``{"error": "The survey element named '…' has no
  label or hint."}``. Form media: ``GET/POST …/files/`` (``base64Encoded`` plus
  ``metadata.filename``; ``metadata.hash`` = ``md5:<hex>``; a repeated name or a CSV name
  with spaces → 400) and ``DELETE …/files/<uid>/`` → 204.
* Faults, a request log and a per-request hook as for the Central stand-in
  (:mod:`tests.standins.faults`); an injected error answers ``{"detail": "injected"}``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import string
import threading
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from openpyxl import load_workbook

from pipelines.demo.loopback import LoopbackServer
from tests.standins.faults import Faults, InjectFaults

TOKEN = "3a8da043dd1b669688dae523b015177a1d4201d5"


def _deployment(asset: dict[str, Any]) -> dict[str, Any]:
    """kpi's deployment resource for an asset."""
    return {
        "backend": "openrosa",
        "active": asset["deployment__active"],
        "version_id": asset["deployed_version_id"],
        "asset": asset,
    }


class KoboStandIn(Faults, LoopbackServer):
    def __init__(self, token: str = TOKEN, username: str = "zefir"):
        self.token, self.username = token, username
        self.assets: dict[str, dict[str, Any]] = {}
        self.data: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, tuple[str, bytes]] = {}  # attachment uid → (mimetype, bytes)
        self._next_id = 16
        self._clock = datetime(2026, 11, 29, 0, 0, 0, tzinfo=UTC)
        self._lock = threading.RLock()
        self.imports: dict[str, dict[str, Any]] = {}  # import uid → task
        self.import_polls = 1  # polls answered "processing" before an import completes
        self.max_limit = 1000  # kpi's silent cap on `limit`; lower it to get short pages
        self.asset_files: dict[str, dict[str, dict[str, Any]]] = {}  # asset → file uid → file
        super().__init__(type("Handler", (_Handler,), {"kobo": self}))

    # ---- data --------------------------------------------------------------------
    def add_asset(self, uid: str, name: str, version: str = "vHNo5vFh3KoB7LWhucUkFy") -> None:
        self.assets[uid] = {
            "url": f"{self.url}/api/v2/assets/{uid}/",
            "uid": uid,
            "name": name,
            "asset_type": "survey",
            "has_deployment": True,
            "version_id": version,
            "deployed_version_id": version,
            "deployment_status": "deployed",
            "deployment__active": True,
            "deployed_versions": {"count": 1, "results": [{"uid": version}]},
            "content": {"survey": [], "settings": {}},
        }
        self.data[uid] = []
        self.asset_files[uid] = {}

    # ---- publishing --------------------------------------------------------------
    def _import_done(self, task: dict[str, Any]) -> None:
        """What kpi's Celery task does: read the workbook, create or replace the asset."""
        fields = task.pop("_fields")
        try:
            content = _xlsform_content(fields["file"][1])
        except ValueError as e:
            task["status"] = "error"
            task["messages"] = {"error_type": "XlsFormatException", "error": str(e)}
            return
        library = fields.get("library", (None, b"true"))[1].decode() not in ("false", "False")
        title = content["settings"].get("form_title") or fields.get("name", (None, b""))[1].decode()
        version = _kpi_uid("v")
        destination = fields.get("destination", (None, b""))[1].decode()
        if destination:
            uid = destination.rstrip("/").rsplit("/", 1)[-1]
            asset = self.assets[uid]
            asset.update(name=title, version_id=version, content=content)
            task["messages"] = {
                "audit_logs": [{"asset_uid": uid, "latest_version_uid": version}],
                "updated": [{"uid": uid, "kind": "asset", "owner__username": self.username}],
            }
        else:
            uid = _kpi_uid("a")
            self.add_asset(uid, title, version)
            self.assets[uid].update(
                asset_type="block" if library else "survey",
                has_deployment=False,
                deployed_version_id=None,
                deployment_status="draft",
                deployment__active=False,
                deployed_versions={"count": 0, "results": []},
                content=content,
            )
            task["messages"] = {
                "created": [{"uid": uid, "kind": "asset", "owner__username": self.username}]
            }
        task["status"] = "complete"

    def deploy(self, uid: str, active: bool) -> dict[str, Any]:
        asset = self.assets[uid]
        asset.update(
            has_deployment=True,
            deployed_version_id=asset["version_id"],
            deployment__active=active,
            deployment_status="deployed" if active else "archived",
        )
        versions = asset["deployed_versions"]["results"]
        if not versions or versions[0]["uid"] != asset["version_id"]:
            versions.insert(
                0, {"uid": asset["version_id"], "version_number": str(len(versions) + 1)}
            )
        asset["deployed_versions"]["count"] = len(versions)
        return _deployment(asset)

    def add_submission(
        self,
        asset: str,
        answers: dict[str, Any],
        files: dict[str, bytes] | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            self._clock += timedelta(seconds=1)
            uid = str(uuid.uuid4())
            sid = self._next_id
            self._next_id += 1
            row: dict[str, Any] = {
                "__version__": version or self.assets[asset]["deployed_version_id"],
                "_attachments": [],
                "_geolocation": [None, None],
                "_id": sid,
                "_status": "submitted_via_web",
                "_submission_time": self._clock.strftime("%Y-%m-%dT%H:%M:%S"),
                "_submitted_by": self.username,
                "_uuid": uid,
                "meta/rootUuid": f"uuid:{uid}",
                "_validation_status": {},
                "_xform_id_string": asset,
                "formhub/uuid": "57e6fd0b4065443280c9641be5670e89",
                "meta/instanceID": f"uuid:{uid}",
            }
            row.update(answers)
            for name, data in (files or {}).items():
                att = "att" + uuid.uuid4().hex[:21]
                self.files[att] = ("image/jpeg", data)
                row["_attachments"].append(
                    {
                        "download_url": f"{self.url}/api/v2/assets/{asset}/data/{sid}/attachments/{att}/",
                        "mimetype": "image/jpeg",
                        "filename": f"{self.username}/attachments/x/{uid}/{name}",
                        "media_file_basename": name,
                        "uid": att,
                        "question_xpath": "photo",
                        "is_deleted": False,
                    }
                )
            self.data[asset].append(row)
            return row

    def edit(self, asset: str, sid: int, **answers: Any) -> None:
        with self._lock:
            row = next(r for r in self.data[asset] if r["_id"] == sid)
            new = str(uuid.uuid4())
            row["meta/deprecatedID"] = row["meta/instanceID"]
            row["_uuid"], row["meta/instanceID"] = new, f"uuid:{new}"
            row.update(answers)

    def delete(self, asset: str, sid: int) -> None:
        with self._lock:
            self.data[asset] = [r for r in self.data[asset] if r["_id"] != sid]

    def live_root_uuids(self, asset: str) -> set[str]:
        return {r["meta/rootUuid"] for r in self.data[asset]}


def _kpi_uid(prefix: str) -> str:
    return prefix + "".join(random.choices(string.ascii_letters + string.digits, k=21))


_LABEL_FREE = {
    "begin_group",
    "end_group",
    "begin_repeat",
    "end_repeat",
    "begin group",
    "end group",
    "begin repeat",
    "end repeat",
    "calculate",
    "start",
    "end",
    "today",
    "deviceid",
    "username",
    "audit",
    "hidden",
    "phonenumber",
    "simserial",
    "subscriberid",
}


def _xlsform_content(data: bytes) -> dict[str, Any]:
    """The survey rows and settings of an XLSForm workbook, as kpi's ``content`` keeps them."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError("Unsupported format, or corrupt file")
    try:
        book = load_workbook(io.BytesIO(data), read_only=True)
    except Exception:
        raise ValueError("Unsupported format, or corrupt file") from None
    sheets = {ws.title.strip().lower(): ws for ws in book.worksheets}
    if "survey" not in sheets:
        raise ValueError("Unsupported format, or corrupt file")

    def rows(ws: Any) -> list[dict[str, Any]]:
        it = ws.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(it, ())]
        return [
            {h: v for h, v in zip(header, r, strict=False) if h and v not in (None, "")}
            for r in it
            if any(v not in (None, "") for v in r)
        ]

    survey = rows(sheets["survey"])
    settings = (
        rows(sheets["settings"])[0] if "settings" in sheets and rows(sheets["settings"]) else {}
    )
    return {"schema": "1", "survey": survey, "settings": settings}


def _unlabelled(content: dict[str, Any]) -> str | None:
    """The first question kpi's deployment would reject for having no label or hint."""
    for row in content.get("survey", []):
        kind = str(row.get("type", "")).strip()
        if not kind or kind in _LABEL_FREE or not row.get("name"):
            continue
        if not any(str(k).startswith(("label", "hint")) for k in row):
            return str(row["name"])
    return None


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name → (filename, bytes) from a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out


def _matches(row: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, cond in query.items():
        if key == "$or":
            if not any(_matches(row, q) for q in cond):
                return False
            continue
        if key == "$and":
            if not all(_matches(row, q) for q in cond):
                return False
            continue
        value = row.get(key)
        if isinstance(cond, dict):
            for op, arg in cond.items():
                ok = {
                    "$gt": lambda v, a: v is not None and v > a,
                    "$gte": lambda v, a: v is not None and v >= a,
                    "$lt": lambda v, a: v is not None and v < a,
                    "$lte": lambda v, a: v is not None and v <= a,
                    "$in": lambda v, a: v in a,
                }.get(op)
                if ok is None or not ok(value, arg):
                    return False
        elif value != cond:
            return False
    return True


class _Handler(InjectFaults):
    kobo: ClassVar[KoboStandIn]  # set per server by KoboStandIn
    protocol_version = "HTTP/1.1"
    # One buffered write per response and no Nagle: otherwise headers and body go out
    # as two segments and each request waits ~40 ms for a delayed ACK.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def faulty(self) -> Faults:
        return self.kobo

    def _injected(self, status: int, headers: dict[str, str]) -> None:
        self._send(status, {"detail": "injected"}, extra=headers)

    def _send(
        self,
        status: int,
        body: Any,
        ctype: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _user(self) -> bool | None:
        """True for the right token, False for a wrong one, None for no credentials."""
        auth = self.headers.get("Authorization", "")
        return auth[6:].strip() == self.kobo.token if auth.lower().startswith("token ") else None

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _begin(self) -> tuple[bool | None, list[str], dict[str, str]] | None:
        user = self._user()
        if user is False:
            self._body()
            self._send(401, {"detail": "Invalid token."}, extra={"WWW-Authenticate": "Session"})
            return None
        split = urlsplit(self.path)
        segs = [unquote(x) for x in split.path.strip("/").split("/")]
        return user, segs, dict(parse_qsl(split.query, keep_blank_values=True))

    def do_GET(self) -> None:
        begun = self._begin()
        if begun is None:
            return
        user, segs, q = begun
        split = urlsplit(self.path)
        if segs == ["api", "v2", "assets"]:
            results = list(self.kobo.assets.values()) if user else []
            self._send(
                200, {"count": len(results), "next": None, "previous": None, "results": results}
            )
            return
        if segs[:3] == ["api", "v2", "imports"] and len(segs) == 4 and user:
            task = self.kobo.imports.get(segs[3])
            if task is None:
                self._send(404, {"detail": "Not found."})
                return
            with self.kobo._lock:
                if task["status"] == "processing":
                    task["_polls"] += 1
                    if task["_polls"] > self.kobo.import_polls:
                        self.kobo._import_done(task)
            self._send(200, {k: v for k, v in task.items() if not k.startswith("_")})
            return
        if segs[:3] != ["api", "v2", "assets"] or len(segs) < 4:
            self._send(404, {"detail": "Not found."})
            return
        asset = self.kobo.assets.get(segs[3])
        if not user or asset is None:
            self._send(404, {"detail": "Not found."})
            return
        if len(segs) == 4:
            self._send(200, asset)
            return
        if segs[4] == "files" and len(segs) == 5:
            files = [
                {k: v for k, v in f.items() if not k.startswith("_")}
                for f in self.kobo.asset_files[segs[3]].values()
                if q.get("file_type") in (None, f["file_type"])
            ]
            self._send(200, {"count": len(files), "next": None, "previous": None, "results": files})
            return
        if segs[4] == "deployment" and len(segs) == 5:
            if not asset["has_deployment"]:
                self._send(404, {"detail": "Not found."})
                return
            self._send(200, _deployment(asset))
            return
        if segs[4] == "data" and len(segs) == 5:
            if not asset.get("has_deployment"):
                self._send(400, {"detail": "The specified asset has not been deployed"})
                return
            self._data(segs[3], q, split.path)
            return
        if segs[4] == "data" and len(segs) == 8 and segs[6] == "attachments":
            found = self.kobo.files.get(segs[7])
            if found is None:
                self._send(404, {"detail": "Not found."})
                return
            self._send(200, found[1], found[0])
            return
        self._send(404, {"detail": "Not found."})

    def do_POST(self) -> None:
        begun = self._begin()
        if begun is None:
            return
        user, segs, _q = begun
        body = self._body()
        if segs == ["api", "v2", "imports"]:
            if not user:
                self._send(401, {"detail": "Authentication credentials were not provided."})
                return
            fields = _multipart(self.headers.get("Content-Type", ""), body)
            if "file" not in fields:
                self._send(400, {"detail": "Not implemented"})
                return
            uid = _kpi_uid("i")
            self.kobo.imports[uid] = {
                "status": "processing",
                "uid": uid,
                "messages": {},
                "date_created": self.kobo._clock.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                "_fields": fields,
                "_polls": 0,
            }
            self._send(
                201,
                {
                    "uid": uid,
                    "url": f"{self.kobo.url}/api/v2/imports/{uid}/",
                    "status": "processing",
                },
            )
            return
        found = self._asset_body(user, segs, body)
        if found is None:
            return
        asset, data = found
        if segs[4:] == ["deployment"]:
            if asset["has_deployment"]:
                self._send(405, {"detail": "Use PATCH to update an existing deployment"})
                return
            self._deploy(segs[3], asset, bool(data.get("active", False)))
            return
        if segs[4:] == ["files"]:
            name = (data.get("metadata") or {}).get("filename", "")
            encoded = data.get("base64Encoded", "")
            if " " in name.replace("%20", " ") and name.endswith(".csv"):
                self._send(
                    400,
                    {
                        "base64Encoded": [
                            "CSV filenames cannot contain spaces. Rename the file and try again."
                        ]
                    },
                )
                return
            if any(
                f["metadata"]["filename"] == name for f in self.kobo.asset_files[segs[3]].values()
            ):
                self._send(400, {"base64Encoded": ["File already exists"]})
                return
            raw = base64.b64decode(encoded[encoded.index("base64") + 7 :])
            uid = _kpi_uid("af")[:23]
            item = {
                "uid": uid,
                "url": f"{self.kobo.url}/api/v2/assets/{segs[3]}/files/{uid}/",
                "asset": f"{self.kobo.url}/api/v2/assets/{segs[3]}/",
                "user": f"{self.kobo.url}/api/v2/users/{self.kobo.username}/",
                "user__username": self.kobo.username,
                "file_type": data.get("file_type"),
                "description": data.get("description"),
                "date_created": self.kobo._clock.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                "content": f"{self.kobo.url}/api/v2/assets/{segs[3]}/files/{uid}/content/",
                "metadata": {
                    "filename": name,
                    "hash": "md5:" + hashlib.md5(raw).hexdigest(),  # noqa: S324 - kpi's hash
                    "mimetype": encoded[5 : encoded.index(";")]
                    if encoded.startswith("data:")
                    else None,
                },
                "_bytes": raw,
            }
            self.kobo.asset_files[segs[3]][uid] = item
            self._send(201, {k: v for k, v in item.items() if not k.startswith("_")})
            return
        self._send(405, {"detail": 'Method "POST" not allowed.'})

    def do_PATCH(self) -> None:
        begun = self._begin()
        if begun is None:
            return
        user, segs, _q = begun
        body = self._body()
        found = self._asset_body(user, segs, body)
        if found is None:
            return
        asset, data = found
        if segs[4:] == ["deployment"]:
            if not asset["has_deployment"]:
                self._send(405, {"detail": "Use POST to create a new deployment"})
                return
            if "version_id" in data:
                if data["version_id"] != asset["version_id"]:
                    # NotImplementedError in kpi: an unhandled 500
                    self._send(500, b"<h1>Server Error (500)</h1>", "text/html")
                    return
                self._deploy(segs[3], asset, bool(data.get("active", True)))
                return
            asset["deployment__active"] = bool(data.get("active", True))
            asset["deployment_status"] = "deployed" if asset["deployment__active"] else "archived"
            self._send(200, _deployment(asset))
            return
        self._send(405, {"detail": 'Method "PATCH" not allowed.'})

    def _asset_body(
        self, user: bool | None, segs: list[str], body: bytes
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The asset a POST or PATCH is about, and its JSON body; None once answered 404."""
        asset = self.kobo.assets.get(segs[3]) if len(segs) > 3 else None
        if segs[:3] != ["api", "v2", "assets"] or asset is None or not user:
            self._send(404, {"detail": "Not found."})
            return None
        return asset, json.loads(body or b"{}")

    def _deploy(self, uid: str, asset: dict[str, Any], active: bool) -> None:
        """Deploy the asset's current version, unless a question has no label (kpi's 400)."""
        bad = _unlabelled(asset["content"])
        if bad:
            self._send(400, {"error": f"The survey element named '{bad}' has no label or hint."})
            return
        self._send(200, self.kobo.deploy(uid, active))

    def do_DELETE(self) -> None:
        begun = self._begin()
        if begun is None:
            return
        user, segs, _q = begun
        self._body()
        if (
            user
            and segs[:3] == ["api", "v2", "assets"]
            and len(segs) == 6
            and segs[4] == "files"
            and self.kobo.asset_files.get(segs[3], {}).pop(segs[5], None) is not None
        ):
            self._send(204, b"", "application/json")
            return
        self._send(404, {"detail": "Not found."})

    def _data(self, uid: str, q: dict[str, str], path: str) -> None:
        try:
            limit = int(q.get("limit", "100"))
            start = int(q.get("start", "0"))
            if limit <= 0:
                raise ValueError
        except ValueError:
            self._send(400, {"limit": "A positive integer is required"})
            return
        limit = min(limit, self.kobo.max_limit)  # kpi caps silently
        try:
            query = json.loads(q["query"]) if "query" in q else {}
            sort = json.loads(q["sort"]) if "sort" in q else {"_id": 1}
            fields = json.loads(q["fields"]) if "fields" in q else None
        except ValueError:
            self._send(400, {"query": "Value must be valid JSON."})
            return
        with self.kobo._lock:
            rows = [r for r in self.kobo.data[uid] if _matches(r, query)]
        ((key, direction),) = sort.items()
        rows.sort(key=lambda r: r.get(key) or "", reverse=direction == -1)
        page = rows[start : start + limit]
        if fields is not None:
            keep = set(fields) | {"_id", "_uuid", "meta/rootUuid"}
            page = [
                dict(
                    {k: v for k, v in r.items() if k in keep},
                    _validation_status=r.get("_validation_status", {}),
                )
                for r in page
            ]
        nxt = None
        if start + limit < len(rows):
            params = dict(q, limit=str(limit), start=str(start + limit))
            nxt = f"{self.kobo.url}{path}?" + urlencode(sorted(params.items()))
        body = json.dumps(
            {"count": len(rows), "next": nxt, "previous": None, "results": page}
        ).encode()
        self._send(200, body, extra={"X-KoBoNaUt": self.kobo.username})
