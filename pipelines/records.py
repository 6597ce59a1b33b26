"""The canonical record every source yields and the store keeps, and the quarantine record.

A record's ``data`` is keyed by the XForm's own field names: groups are nested dicts and
repeats are lists of dicts. Geopoints stay in XForm text (``lat lon alt acc``). Times are
ISO-8601 UTC strings ending in ``Z`` so they sort as text in any SQL database.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class AttachmentRef:
    """One file a submission refers to. ``url`` or ``path`` says where a source finds it."""

    name: str
    url: str | None = None
    path: str | None = None  # local file (export zip member or Collect folder)
    exists: bool = True  # False when the server knows the name but never got the file


@dataclass(frozen=True)
class Record:
    form_id: str
    instance_id: str
    form_version: str | None
    submitted_at: str | None
    updated_at: str | None
    review_state: str | None
    data: dict[str, Any]
    deleted: bool = False
    attachments_expected: int = 0
    attachments: tuple[AttachmentRef, ...] = ()
    # The source's own change marker (Central updatedAt, Kobo _uuid): used to spot edits.
    source_version: str | None = None

    def content_hash(self) -> str:
        """Hash of what a user would call the submission's content (not its bookkeeping)."""
        body = json.dumps(
            [self.form_version, self.review_state, self.deleted, self.data],
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        return json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Quarantined:
    """A record that could not be read. Kept with its reason and raw text, never dropped."""

    source: str
    form_id: str
    reason: str
    raw: str
    key: str = field(default="")  # instance id when known, else a hash of ``raw``

    def item_key(self) -> str:
        if self.key:
            return self.key
        return "sha256:" + hashlib.sha256(self.raw.encode("utf-8", "replace")).hexdigest()


_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def utc_text(value: str | None) -> str | None:
    """Normalise a server timestamp to ``YYYY-MM-DDTHH:MM:SS.fffZ`` (UTC).

    Kobo's ``_submission_time`` has no zone: it is UTC by kpi's definition.
    """
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not _TS.match(text):
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_utc() -> str:
    return utc_text(datetime.now(UTC).isoformat())  # type: ignore[return-value]


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
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
        return _position(coords, (value.get("properties") or {}).get("accuracy"))
    if kind == "LineString":
        return ";".join(_position(c) for c in coords)
    if kind == "Polygon":
        return ";".join(_position(c) for c in coords[0]) if coords else ""
    raise ValueError(f"unsupported GeoJSON geometry type {kind!r}")


@dataclass
class Page:
    """One batch from a source: written to the store with ``cursor`` in one transaction."""

    records: list[Record] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    cursor: dict[str, Any] | None = None
    gone: list[str] = field(default_factory=list)  # ids the server no longer has (hard deletes)
    rows: int = 0  # rows the server sent, for progress
