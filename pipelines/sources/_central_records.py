"""Central's OData rows → canonical records: Central's own keys stripped, GeoJSON turned back
into XForm geo text, and the file names a record holds found in its file fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from pipelines.records import AttachmentRef, Quarantined, Record, utc_text

NAME = "central"
URL_SAFE = "*'()"  # what Central (and pyodk's URL formatter) leave unescaped


class Files:
    """Where a form keeps file names, and the URL prefix to fetch them by name."""

    def __init__(self, paths: list[tuple[str, ...]], prefix: str):
        self.paths, self.prefix = paths, prefix

    def refs(self, iid: str, data: dict[str, Any], present: int) -> tuple[AttachmentRef, ...]:
        names = list(dict.fromkeys(n for p in self.paths for n in _values_at(data, p)))
        base = f"{self.prefix}{quote(iid, safe=URL_SAFE)}/attachments/"
        return tuple(
            AttachmentRef(n, url=base + quote(n, safe=URL_SAFE), exists=present > 0) for n in names
        )


def _values_at(node: Any, parts: tuple[str, ...]) -> Iterator[str]:
    if type(node) is list:
        for item in node:
            yield from _values_at(item, parts)
    elif not parts:
        if isinstance(node, str) and node:
            yield node
    elif type(node) is dict:
        yield from _values_at(node.get(parts[0]), parts[1:])


def _clean(value: dict[str, Any]) -> dict[str, Any]:
    """Strip Central's own keys (``__id``, ``__system``, navigation links) from an OData
    entity, in place, and turn GeoJSON back into XForm text. In place and terse because it
    runs on every field of every row: it is most of a pull's own work."""
    for key in [k for k in value if k[:2] == "__" or "@odata" in k]:
        del value[key]
    for key, item in value.items():
        kind = type(item)
        if kind is dict:
            if "coordinates" in item:
                value[key] = geojson_to_xform(item)
            else:
                _clean(item)
        elif kind is list:
            for row in item:
                if type(row) is dict:
                    _clean(row)
    return value


def _raw(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False)[:20000]


def to_record(
    form_id: str, row: Any, versions: set[str], files: Files | None = None, deleted: bool = False
) -> Record | Quarantined:
    if type(row) is not dict:
        return Quarantined(NAME, form_id, "row is not a JSON object", _raw(row))
    iid = row.get("__id")
    system = row.get("__system")
    if not isinstance(iid, str) or not iid:
        return Quarantined(NAME, form_id, "row has no __id (instance id)", _raw(row))
    if type(system) is not dict:
        return Quarantined(NAME, form_id, "row has no __system block", _raw(row), iid)
    meta = row.get("meta")
    if not deleted and not (type(meta) is dict and meta.get("instanceID")):
        return Quarantined(
            NAME,
            form_id,
            f"no meta/instanceID in the submission (Central made up the id {iid}); "
            "the XML sent was probably truncated",
            _raw(row),
            iid,
        )
    version = system.get("formVersion")
    if not deleted and versions and version not in versions:
        return Quarantined(
            NAME,
            form_id,
            f"unknown form version {version!r} (published: {', '.join(sorted(versions))})",
            _raw(row),
            iid,
        )
    try:
        submitted = utc_text(system.get("submissionDate"))
        updated = utc_text(system.get("updatedAt"))
        expected = int(system.get("attachmentsExpected") or 0)
        present = int(system.get("attachmentsPresent") or 0)
    except (ValueError, TypeError) as e:
        return Quarantined(NAME, form_id, f"unreadable value: {e}", _raw(row), iid)
    try:
        data = _clean(row)  # in place: the row is ours, and copying it costs a third
    except (ValueError, TypeError, KeyError) as e:
        row.update(__id=iid, __system=system)  # keep what the server sent, for the record
        return Quarantined(NAME, form_id, f"unreadable value: {e}", _raw(row), iid)
    refs: tuple[AttachmentRef, ...] = ()
    if expected and files and files.paths:
        refs = files.refs(iid, data, present)
        if len(refs) != expected:
            refs = ()  # a field this version lacks: list the submission's files instead
    return Record(
        form_id=form_id,
        instance_id=iid,
        form_version=version,
        submitted_at=submitted,
        updated_at=updated,
        review_state=system.get("reviewState"),
        data=data,
        deleted=deleted or bool(system.get("deletedAt")),
        attachments_expected=expected,
        attachments=refs,
        source_version=updated or submitted,
    )


def _num(value: Any) -> str:
    if type(value) is float and value.is_integer():
        return str(int(value))
    return str(value)


def _position(coords: list[Any], accuracy: Any = None) -> str:
    # GeoJSON is [lon, lat, alt]; the XForm text is "lat lon alt acc".
    lon, lat, *rest = coords
    parts = [_num(lat), _num(lon)] + [_num(v) for v in rest[:1]]
    if accuracy is not None:
        if not rest:
            parts.append("0")
        parts.append(_num(accuracy))
    return " ".join(parts)


def geojson_to_xform(value: Any) -> Any:
    """Turn Central's GeoJSON geometry back into XForm geo text; anything else unchanged."""
    if not (isinstance(value, dict) and "coordinates" in value and "type" in value):
        return value
    kind, coords = value["type"], value["coordinates"]
    if kind == "Point":
        props = value.get("properties")
        accuracy = props.get("accuracy") if props else None
        if len(coords) == 3 and accuracy is not None:  # what Collect sends: lat lon alt acc
            lon, lat, alt = coords
            return f"{_num(lat)} {_num(lon)} {_num(alt)} {_num(accuracy)}"
        return _position(coords, accuracy)
    if kind == "LineString":
        return ";".join(_position(c) for c in coords)
    if kind == "Polygon":
        return ";".join(_position(c) for c in coords[0]) if coords else ""
    raise ValueError(f"unsupported GeoJSON geometry type {kind!r}")
