"""KoboToolbox (kpi API v2) with requests: pull submissions into canonical records.

* ``Authorization: Token <key>`` from ``MANYI_KOBO_TOKEN``; server from ``MANYI_KOBO_URL``.
* New submissions: ``/api/v2/assets/<uid>/data/`` with ``limit`` ≤ 1000, ``sort={"_id": 1}``
  and ``query={"_id": {"$gt": <last _id>}}`` (kpi's ``_id`` only grows). Each page asks from
  the last ``_id`` stored rather than following ``next``'s ``start`` offset: kpi deletes are
  hard, so a deletion during a pull would shift every offset and skip a row.
* Edits and deletions: kpi keeps no last-edited time; an edit changes ``_uuid`` (and sets
  ``meta/deprecatedID``) and a deletion removes the row. So each pull lists ``_id``/``_uuid``
  of every submission (``fields``) and compares it with the store: changed ones are fetched
  again, missing ones are flagged deleted.
* Flat ``group/field`` keys become nested dicts; repeats are lists keyed by the repeat's own
  field names, the same shape Central gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import requests

from pipelines._http import RetryPolicy, request
from pipelines.errors import ConfigError, SourceError
from pipelines.records import AttachmentRef, Page, Quarantined, Record, utc_text

NAME = "kobo"
MAX_LIMIT = 1000  # kpi silently caps larger values
_REVIEW = {
    "validation_status_approved": "approved",
    "validation_status_not_approved": "rejected",
    "validation_status_on_hold": "hasIssues",
}
_SYSTEM = {"formhub/uuid", "__version__", "meta/rootUuid"}


class KoboSource:
    name = NAME

    def __init__(
        self, settings: Any, policy: RetryPolicy | None = None, page_size: int | None = None
    ):
        if not settings.kobo_url or not settings.kobo_token:
            raise ConfigError("KoboToolbox needs MANYI_KOBO_URL and MANYI_KOBO_TOKEN")
        self.base = settings.kobo_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.page_size = min(page_size or settings.kobo_page_size, MAX_LIMIT)
        self._token = settings.kobo_token.get()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self._token}"
        self.session.headers["Accept"] = "application/json"
        self._assets: dict[str, dict[str, Any]] | None = None

    def __enter__(self) -> KoboSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def _get(self, url: str, ok: tuple[int, ...] = (), **kw: Any) -> requests.Response:
        return request(
            self.session.request,
            "GET",
            url,
            self.policy,
            (self._token,),
            what="KoboToolbox",
            ok=ok,
            **kw,
        )

    # ---- assets ----------------------------------------------------------------------
    def _asset_list(self) -> dict[str, dict[str, Any]]:
        if self._assets is None:
            self._assets = {}
            url: str | None = f"{self.base}/api/v2/assets/?format=json&limit=1000"
            while url:
                body = self._get(url).json()
                for a in body["results"]:
                    self._assets[a["uid"]] = a
                url = body.get("next")
        return self._assets

    def form_ids(self) -> list[str]:
        return [
            a["uid"]
            for a in self._asset_list().values()
            if a.get("asset_type") == "survey" and a.get("has_deployment")
        ]

    def asset_uid(self, form_id: str) -> str:
        """A form is named by its asset uid or by the asset's name (the form id or title)."""
        assets = self._asset_list()
        if form_id in assets:
            return form_id
        named = [uid for uid, a in assets.items() if a.get("name") == form_id]
        if len(named) == 1:
            return named[0]
        raise SourceError(
            f"KoboToolbox at {self.base} has {'several' if named else 'no'} project(s) named "
            f"{form_id!r}; pass the asset uid (e.g. aALUCUEKcgKk28owQo3LrA) with --form"
        )

    def known_versions(self, uid: str) -> set[str]:
        detail = self._get(f"{self.base}/api/v2/assets/{uid}/?format=json").json()
        versions = {v["uid"] for v in (detail.get("deployed_versions") or {}).get("results", [])}
        if detail.get("deployed_version_id"):
            versions.add(detail["deployed_version_id"])
        return versions

    # ---- pulling ---------------------------------------------------------------------
    def _data_url(self, uid: str, **params: Any) -> str:
        query = {"format": "json", "limit": str(self.page_size)}
        query.update({k: json.dumps(v, separators=(",", ":")) for k, v in params.items()})
        return f"{self.base}/api/v2/assets/{uid}/data/?{urlencode(query)}"

    def _results(self, url: str) -> list[Any]:
        body = self._get(url).json()
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise SourceError(f"KoboToolbox sent a page without 'results' for {url}")
        return body["results"]

    def pages(
        self,
        form_id: str,
        cursor: dict[str, Any] | None,
        known: Callable[[], Mapping[str, str | None]] | None = None,
    ) -> Iterator[Page]:
        uid = self.asset_uid(form_id)
        versions = self.known_versions(uid)
        last_id = int((cursor or {}).get("last_id", 0))
        # 1. new submissions, keyset paging on _id
        while True:
            rows = self._results(
                self._data_url(uid, query={"_id": {"$gt": last_id}}, sort={"_id": 1})
            )
            if not rows:
                break
            page = Page(rows=len(rows))
            for row in rows:
                self._add(page, form_id, row, versions)
                if isinstance(row, dict) and isinstance(row.get("_id"), int):
                    last_id = max(last_id, row["_id"])
            page.cursor = {"last_id": last_id}
            yield page
            if len(rows) < self.page_size:
                break
        # 2. edits and deletions: compare every _uuid with what the store holds
        stored = dict(known() if known else {})
        seen: dict[str, tuple[int, str]] = {}
        after = 0
        while True:
            rows = self._results(
                self._data_url(
                    uid,
                    query={"_id": {"$gt": after}},
                    sort={"_id": 1},
                    fields=["_id", "_uuid", "meta/rootUuid"],
                )
            )
            for row in rows:
                root = row.get("meta/rootUuid") or f"uuid:{row['_uuid']}"
                seen[root] = (row["_id"], row["_uuid"])
                after = max(after, row["_id"])
            if len(rows) < self.page_size:
                break
        changed = [sid for root, (sid, u) in seen.items() if root in stored and stored[root] != u]
        for start in range(0, len(changed), self.page_size):
            part = changed[start : start + self.page_size]
            rows = self._results(self._data_url(uid, query={"_id": {"$in": part}}))
            page = Page(rows=len(rows), cursor={"last_id": last_id})
            for row in rows:
                self._add(page, form_id, row, versions)
            yield page
        gone = [root for root in stored if root not in seen]
        yield Page(gone=gone, cursor={"last_id": last_id})

    def _add(self, page: Page, form_id: str, row: Any, versions: set[str]) -> None:
        item = to_record(form_id, row, versions)
        if isinstance(item, Quarantined):
            page.quarantined.append(item)
        else:
            page.records.append(item)

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        uid = self.asset_uid(record.form_id)
        rows = self._results(self._data_url(uid, query={"meta/rootUuid": record.instance_id}))
        return list(_attachments(rows[0])) if rows else []

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        resp = self._get(ref.url or "", ok=(404,), stream=True)
        if resp.status_code == 404:
            resp.close()
            return None
        return resp.iter_content(1 << 16)


def _attachments(row: dict[str, Any]) -> Iterator[AttachmentRef]:
    for a in row.get("_attachments") or []:
        if not a.get("is_deleted"):
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
        return Quarantined(NAME, form_id, "no meta/instanceID (or _uuid) in the submission", raw)
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
    refs = tuple(_attachments(row))
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
