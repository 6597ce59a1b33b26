"""The canonical record every source yields and the store keeps, and the quarantine record.

A record's ``data`` is keyed by the XForm's own field names: groups are nested dicts and
repeats are lists of dicts. Geopoints stay in XForm text (``lat lon alt acc``). Times are
ISO-8601 UTC strings ending in ``Z`` so they sort as text in any SQL database.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError


@dataclass(frozen=True)
class AttachmentRef:
    """One file a submission refers to. ``url`` or ``path`` says where a source finds it."""

    name: str
    url: str | None = None
    path: str | None = None  # local file (export zip member or Collect folder)
    exists: bool = True  # False when the server knows the name but never got the file


# One encoder for every record: json.dumps with options builds a new encoder on each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


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

    def serialised(self) -> tuple[str, str]:
        """``(data as JSON, content hash)`` from one serialisation.

        The hash covers what a user would call the submission's content (version, review
        state, deletion, answers), not its bookkeeping. Keys keep the source's order, which
        is the form's order and stable for a given source, so one ``json.dumps`` serves
        both the stored text and the hash.
        """
        text = _ENCODER.encode(self.data)
        head = f"{self.form_version}\x1f{self.review_state}\x1f{int(self.deleted)}\x1f"
        return text, hashlib.sha256((head + text).encode("utf-8")).hexdigest()

    def content_hash(self) -> str:
        return self.serialised()[1]

    def to_json(self) -> str:
        return self.serialised()[0]


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


_CANONICAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def utc_text(value: str | None) -> str | None:
    """Normalise a server timestamp to ``YYYY-MM-DDTHH:MM:SS.fffZ`` (UTC).

    Kobo's ``_submission_time`` has no zone: it is UTC by kpi's definition.
    """
    if value in (None, ""):
        return None
    text = str(value).strip()
    if _CANONICAL.match(text):  # already in our form (every Central time): nothing to do
        return text
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


@dataclass
class PublishReport:
    """What ``manyi forms publish`` did, form ids in manifest order."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def built_forms(build_dir: Path, form_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The entries of ``build_dir/manifest.json`` (all, or those named), checked to exist."""
    path = Path(build_dir) / "manifest.json"
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run `manyi forms build` first")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["forms"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: not a manyi build manifest ({e}); build the forms again"
        ) from None
    if form_ids:
        wanted = list(dict.fromkeys(form_ids))
        known = {e["form_id"] for e in entries}
        unknown = [f for f in wanted if f not in known]
        if unknown:
            raise ConfigError(f"{path}: no built form {', '.join(unknown)}; build it first")
        entries = [e for e in entries if e["form_id"] in set(wanted)]
    for entry in entries:
        for name in [entry.get("xform"), entry.get("xlsx"), *entry.get("attachments", ())]:
            if name and not (Path(build_dir) / name).is_file():
                raise ConfigError(
                    f"{path}: {entry['form_id']} lists {name}, which is not in {build_dir}; "
                    "build the forms again"
                )
    return entries


@dataclass
class Page:
    """One batch from a source: written to the store with ``cursor`` in one transaction."""

    records: list[Record] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    cursor: dict[str, Any] | None = None
    gone: list[str] = field(default_factory=list)  # ids the server no longer has (hard deletes)
    rows: int = 0  # rows the server sent, for progress
