"""kpi's JSON rows → canonical records: flat ``group/field`` keys nested, repeats as lists,
kpi's own keys left out, the validation status as a review state, the files a row lists."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pipelines.records import AttachmentRef, Quarantined, Record, utc_text

NAME = "kobo"
_REVIEW = {
    "validation_status_approved": "approved",
    "validation_status_not_approved": "rejected",
    "validation_status_on_hold": "hasIssues",
}
_SYSTEM = {"formhub/uuid", "__version__", "meta/rootUuid"}


def attachments(row: dict[str, Any]) -> Iterator[AttachmentRef]:
    for a in row.get("_attachments") or []:
        if isinstance(a, dict) and not a.get("is_deleted"):
            name = a.get("media_file_basename") or a.get("filename", "").rsplit("/", 1)[-1]
            yield AttachmentRef(name, url=a.get("download_url"))


def nest(flat: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Kobo's ``group/field`` keys (full paths, also inside repeats) → nested XForm names."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        path = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [nest(item, key + "/") for item in value]
        parts = path.split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def to_record(form_id: str, row: Any, versions: set[str]) -> Record | Quarantined:
    raw = json.dumps(row, ensure_ascii=False)[:20000]
    if not isinstance(row, dict):
        return Quarantined(NAME, form_id, "row is not a JSON object", raw)
    root = row.get("meta/rootUuid") or (f"uuid:{row['_uuid']}" if row.get("_uuid") else None)
    if not root or not row.get("meta/instanceID"):
        return Quarantined(
            NAME, form_id, "no meta/instanceID (or _uuid) in the submission", raw, root or ""
        )
    version = row.get("__version__")
    if versions and version not in versions:
        return Quarantined(
            NAME,
            form_id,
            f"unknown form version {version!r} (deployed: {', '.join(sorted(versions))})",
            raw,
            root,
        )
    try:
        submitted = utc_text(row.get("_submission_time"))
    except ValueError as e:
        return Quarantined(NAME, form_id, str(e), raw, root)
    answers = {k: v for k, v in row.items() if not k.startswith("_") and k not in _SYSTEM}
    refs = tuple(attachments(row))
    status = row.get("_validation_status") or {}
    return Record(
        form_id=form_id,
        instance_id=root,
        form_version=version,
        submitted_at=submitted,
        updated_at=None,  # kpi keeps no edit time
        review_state=_REVIEW.get(status.get("uid")) if isinstance(status, dict) else None,
        data=nest(answers),
        attachments_expected=len(refs),
        attachments=refs,
        source_version=row.get("_uuid"),
    )
