"""The stand-in's OData API, what the pulls read: ``…/forms/<id>.svc`` (service document,
``$metadata``), the ``Submissions`` feed and repeat tables with paging (``$top``, ``$skip``,
``%24skiptoken``), ``$filter`` (:mod:`pipelines.demo._odata_filter`), ``$orderby``, ``$count``,
``$select``, ``$expand=*`` and ``$wkt``, single entities and their repeats."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote

from pipelines.demo._central_formats import (
    _GEO_TYPES,
    _edmx,
    _form_tables,
    _num,
    _table_name,
)
from pipelines.demo._central_http import _ODATA, NOT_FOUND, _CentralHandler, _error, _node_json
from pipelines.demo._central_model import Form, Sub, _ts
from pipelines.demo._odata_filter import FilterError, compile_filter

_CHUNK = 1 << 16  # a feed goes out in chunks of about this many bytes


class _ODataRoutes(_CentralHandler):
    """``…/forms/<id>.svc/…``."""

    def _odata(self, form_id: str, tail: list[str], q: dict[str, str]) -> Any:
        central = self.central
        form = central.forms.get(form_id)
        try:
            result = self._odata_reply(form, tail, q) if form and form.versions else None
        except FilterError as e:
            result = (e.status, e.body)
        status, body, *rest = result or NOT_FOUND
        headers = {**_ODATA, **(rest[0] if rest else {})}
        return (status, body, headers, *rest[1:])

    def _odata_reply(self, form: Form, tail: list[str], q: dict[str, str]) -> Any:
        central = self.central
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
                rows = self._shape([_entity(sub, q.get("$expand") == "*")], q)
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
        """A feed, streamed as Central streams it: ``{"value":[`` and each row as it is made,
        then the ``@odata`` keys. The rows are the submissions as they were when the request
        arrived, rendered as they are sent (at the pace of ``central.costs``)."""
        central = self.central
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
                if not isinstance(after, dict):
                    raise ValueError(tok)
            except Exception:
                return _error(400, 400.35, "Invalid $skiptoken")
        with central._lock:
            # As Central's one SELECT sees them: an edit made while the feed streams is in
            # the next feed, not this one (an edit replaces ``fields``' top-level values).
            subs = [
                replace(s, fields=dict(s.fields))
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
        if after is not None and table == "Submissions":
            # Central joins on the row named (deleted or not): the rows after it in the feed's
            # order; a row it no longer has (purged) leaves nothing after it.
            cursor = form.by_id.get(str(after.get(key)))
            mark = (cursor.created, cursor.order) if cursor else None
            rows = [r for r in rows if mark and (r[1].created, r[1].order) < mark]
        elif after is not None:
            ids = [r[0] for r in rows]
            if after.get(key) not in ids:
                return _error(400, 400.34, "Record associated with the provided $skiptoken not found.")  # fmt: skip
            rows = rows[ids.index(after[key]) + 1 :]
        elif q.get("$skip", "").isdigit():
            rows = rows[int(q["$skip"]) :]
        top = int(q["$top"]) if q.get("$top", "").isdigit() else None
        page, more = (rows[:top], len(rows) > top) if top is not None else (rows, False)
        tail: dict[str, Any] = {"@odata.context": f"{base}/$metadata#{table}"}
        if more:
            skip = "01" + base64.b64encode(json.dumps({key: page[-1][0]}).encode()).decode()
            keep = [(k, v) for k, v in q.items() if k not in ("$skiptoken", "$skip")]
            parts = [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in keep]
            parts.append(f"%24skiptoken={quote(skip, safe='')}")
            tail["@odata.nextLink"] = f"{base}/{table}?" + "&".join(parts)
        if q.get("$count") == "true":
            tail["@odata.count"] = total
        costs = central.costs
        if costs.page_s and table == "Submissions" and {"$top", "$skip", "$skiptoken"} & set(q):
            time.sleep(costs.page_s)  # Central counts the rows of a paged request first

        def value(item: Any) -> dict[str, Any]:
            row = _entity(item, expand) if table == "Submissions" else item
            return self._shape([row], q)[0]

        body = _paced(_feed_parts((value(item) for _, item in page), tail), costs.rows_per_s)
        return 200, body, {"Content-Type": "application/json; charset=utf-8"}, "chunked"


def _feed_parts(rows: Iterator[dict[str, Any]], tail: dict[str, Any]) -> Iterator[bytes | None]:
    """A feed's bytes as Node writes them (no spaces), each row its own piece; None after each
    row, for the pace."""
    yield b'{"value":['
    sep = b""
    for row in rows:
        yield sep + _node_json(row, compact=True)
        yield None
        sep = b","
    yield b"]," + _node_json(tail, compact=True)[1:]


def _paced(parts: Iterator[bytes | None], rows_per_s: float) -> Iterator[bytes]:
    """Join ``parts`` into chunks of about 64 KiB, each sent no sooner than its last row is
    due at ``rows_per_s`` (0: at once)."""
    started, rows, chunk = time.monotonic(), 0, bytearray()
    for part in parts:
        if part is not None:
            chunk += part
            continue
        rows += 1
        wait = started + rows / rows_per_s - time.monotonic() if rows_per_s else 0.0
        if len(chunk) >= _CHUNK or wait > 0.005:
            if wait > 0:
                time.sleep(wait)
            yield bytes(chunk)
            chunk.clear()
    wait = started + rows / rows_per_s - time.monotonic() if rows_per_s else 0.0
    if wait > 0:
        time.sleep(wait)
    yield bytes(chunk)


# ---- rendering rows ----------------------------------------------------------------------
def _entity(sub: Sub, expand: bool) -> dict[str, Any]:
    """A submission as an OData entity: its fields, ``__id``, ``__system`` and its repeats' links
    (and rows, with ``$expand=*``)."""
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


def _ordered(subs: list[Sub], orderby: str) -> list[Sub]:
    """Newest first (as they arrived) unless ``$orderby`` says otherwise
    (``__system/submissionDate desc``, ``__system/updatedAt asc``, ``__id``)."""
    field_name, _, direction = orderby.strip().partition(" ")
    if not field_name:  # Central: ORDER BY "createdAt" DESC, id DESC
        return sorted(subs, key=lambda s: (s.created, s.order), reverse=True)
    keys: dict[str, Callable[[Sub], Any]] = {
        "__system/updatedAt": lambda s: (s.updated or s.created, s.order),
        "__id": lambda s: s.instance_id,
    }
    key = keys.get(field_name, lambda s: (s.created, s.order))
    return sorted(subs, key=key, reverse=direction.strip() == "desc")
