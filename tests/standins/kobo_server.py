"""An in-process stand-in for KoboToolbox (kpi) API v2, built from the reference in
``/work/shared/fixtures/kobo`` (README sections 1–5):

* ``Authorization: Token <key>``; a bad token → 401 ``{"detail": "Invalid token."}`` with
  ``WWW-Authenticate: Session``; no credentials on ``/data/`` → 404 ``{"detail": "Not found."}``.
* ``GET /api/v2/assets/`` and ``/assets/<uid>/`` (with ``deployed_versions``).
* ``GET /api/v2/assets/<uid>/data/``: ``start``/``limit`` (default 100, above 1000 silently
  capped), ``query`` (a Mongo filter: ``$gt $gte $lt $lte $in``, equality), ``sort``,
  ``fields``; body ``{count, next, previous, results}``; ``next`` with the parameters
  re-encoded in sorted order; values as strings, groups flattened to ``group/field``, repeats
  as lists of full-path dicts.
* Edits keep ``_id``/``_submission_time``/``meta/rootUuid``, change ``_uuid`` and set
  ``meta/deprecatedID``; deletions are hard. Attachments download under ``…/attachments/<uid>/``.
* The same faults as the Central stand-in.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from tests.standins.central_server import Fault

TOKEN = "3a8da043dd1b669688dae523b015177a1d4201d5"  # noqa: S105 - kpi's own test key


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class KoboStandIn:
    def __init__(self, token: str = TOKEN, username: str = "zefir"):
        self.token, self.username = token, username
        self.assets: dict[str, dict[str, Any]] = {}
        self.data: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, tuple[str, bytes]] = {}  # attachment uid → (mimetype, bytes)
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self._next_id = 16
        self._clock = datetime(2026, 11, 29, 0, 0, 0, tzinfo=UTC)
        self._lock = threading.RLock()
        self._last_page: dict[str, bytes] = {}
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> KoboStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- data --------------------------------------------------------------------
    def add_asset(self, uid: str, name: str, version: str = "vHNo5vFh3KoB7LWhucUkFy") -> None:
        self.assets[uid] = {
            "uid": uid,
            "name": name,
            "asset_type": "survey",
            "has_deployment": True,
            "version_id": version,
            "deployed_version_id": version,
            "deployment_status": "deployed",
            "deployment__active": True,
            "deployed_versions": {"count": 1, "results": [{"uid": version}]},
        }
        self.data[uid] = []

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


def _matches(row: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, cond in query.items():
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


def _handler(kobo: KoboStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One buffered write per response and no Nagle: otherwise headers and body go out
        # as two segments and each request waits ~40 ms for a delayed ACK.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

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

        def _fault(self) -> bool:
            for f in kobo.faults:
                if f.path_contains not in self.path:
                    continue
                f.seen += 1
                if f.seen < f.nth or f.fired >= f.times:
                    continue
                f.fired += 1
                if f.kind == "status":
                    extra = {"Retry-After": f.retry_after} if f.retry_after else {}
                    self._send(f.status, {"detail": "injected"}, extra=extra)
                    return True
                if f.kind == "delay":
                    time.sleep(f.delay)
                if f.kind == "reset":
                    self.close_connection = True
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    return True
                if f.kind == "repeat_page" and self.path.split("?")[0] in kobo._last_page:
                    self._send(200, kobo._last_page[self.path.split("?")[0]])
                    return True
            return False

        def do_GET(self) -> None:
            kobo.requests.append(("GET", self.path))
            if self._fault():
                return
            auth = self.headers.get("Authorization", "")
            user = auth[6:].strip() == kobo.token if auth.lower().startswith("token ") else None
            if user is False:
                self._send(401, {"detail": "Invalid token."}, extra={"WWW-Authenticate": "Session"})
                return
            split = urlsplit(self.path)
            segs = [unquote(s) for s in split.path.strip("/").split("/")]
            q = dict(parse_qsl(split.query, keep_blank_values=True))
            if segs == ["api", "v2", "assets"]:
                results = list(kobo.assets.values()) if user else []
                self._send(
                    200, {"count": len(results), "next": None, "previous": None, "results": results}
                )
                return
            if segs[:3] != ["api", "v2", "assets"] or len(segs) < 4:
                self._send(404, {"detail": "Not found."})
                return
            asset = kobo.assets.get(segs[3])
            if not user or asset is None:
                self._send(404, {"detail": "Not found."})
                return
            if len(segs) == 4:
                self._send(200, asset)
                return
            if segs[4] == "data" and len(segs) == 5:
                self._data(segs[3], q, split.path)
                return
            if segs[4] == "data" and len(segs) == 8 and segs[6] == "attachments":
                found = kobo.files.get(segs[7])
                if found is None:
                    self._send(404, {"detail": "Not found."})
                    return
                self._send(200, found[1], found[0])
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
            limit = min(limit, 1000)  # kpi caps silently
            try:
                query = json.loads(q["query"]) if "query" in q else {}
                sort = json.loads(q["sort"]) if "sort" in q else {"_id": 1}
                fields = json.loads(q["fields"]) if "fields" in q else None
            except ValueError:
                self._send(400, {"query": "Value must be valid JSON."})
                return
            with kobo._lock:
                rows = [r for r in kobo.data[uid] if _matches(r, query)]
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
                nxt = f"{kobo.url}{path}?" + urlencode(sorted(params.items()))
            body = json.dumps(
                {"count": len(rows), "next": nxt, "previous": None, "results": page}
            ).encode()
            kobo._last_page[path] = body
            self._send(200, body, extra={"X-KoBoNaUt": kobo.username})

    return Handler
