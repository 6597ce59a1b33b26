"""Pull from KoboToolbox (kpi API v2) with requests: submissions, edits, deletions, files.

* ``Authorization: Token <key>`` from ``MANYI_KOBO_TOKEN``; server from ``MANYI_KOBO_URL``,
  on :class:`KoboClient`'s session, which publishing (:mod:`pipelines.publish.kobo`) uses too.
* New submissions: ``/api/v2/assets/<uid>/data/`` with ``limit`` ≤ 1000, ``sort={"_id": 1}``
  and ``query={"_id": {"$gt": <last _id>}}`` (kpi's ``_id`` only grows). Each page asks from
  the last ``_id`` stored rather than following ``next``'s ``start`` offset: kpi deletes are
  hard, so a deletion during a pull would shift every offset and skip a row.
* Edits and deletions: kpi keeps no last-edited time; an edit changes ``_uuid`` (and sets
  ``meta/deprecatedID``) and a deletion removes the row. So each pull lists ``_id``/``_uuid``
  of every submission (``fields``) and compares it with the store: changed ones (and ones
  the store has flagged deleted) are fetched again, missing ones are flagged deleted, but only
  when the listing read as many submissions as kpi's ``count`` says it has.
* Quarantined submissions are asked for again by ``meta/rootUuid`` (or ``_uuid``) at the
  start of each pull.
* Rows become records in :mod:`pipelines.sources._kobo_records`: flat ``group/field`` keys
  become nested dicts, repeats lists keyed by the repeat's own field names, the same shape
  Central gives.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from pipelines._http import RetryPolicy, fetch_file, json_body, request
from pipelines.errors import ConfigError, SourceError
from pipelines.records import AttachmentRef, Quarantined, Record
from pipelines.sources._kobo_records import NAME, attachments, to_record
from pipelines.sources.base import KnownRecords, Page

MAX_LIMIT = 1000  # kpi silently caps larger values
# Pages in a row that bring no higher _id (a proxy resending a page, rows without an _id)
# before a keyset loop gives up for this pull.
_MAX_STALLS = 3


class KoboClient:
    """One session with a KoboToolbox server (``Authorization: Token …``), every request
    through the retry loop with the token scrubbed from any message. Pulling and publishing
    (:mod:`pipelines.publish.kobo`) both use it. Use as a context manager."""

    def __init__(self, settings: Any, policy: RetryPolicy | None = None) -> None:
        if not settings.kobo_url or not settings.kobo_token:
            raise ConfigError("KoboToolbox needs MANYI_KOBO_URL and MANYI_KOBO_TOKEN")
        self.base = settings.kobo_url.rstrip("/")
        self.policy = policy or RetryPolicy.from_settings(settings)
        self.token = settings.kobo_token.get()
        self.secrets = (self.token,)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self.token}"
        self.session.headers["Accept"] = "application/json"
        self._assets: dict[str, dict[str, Any]] | None = None
        self._assets_lock = threading.Lock()

    def __enter__(self) -> KoboClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def get(self, url: str, ok: tuple[int, ...] = (), **kw: Any) -> requests.Response:
        return self.send("GET", url, ok=ok, **kw)

    def send(self, method: str, url: str, ok: tuple[int, ...] = (), **kw: Any) -> requests.Response:
        return request(
            self.session.request,
            method,
            url,
            self.policy,
            self.secrets,
            what="KoboToolbox",
            ok=ok,
            **kw,
        )

    def json(self, resp: requests.Response, keys: tuple[str, ...] = (), **kw: Any) -> Any:
        return json_body(resp, "KoboToolbox", keys, secrets=self.secrets, **kw)

    def assets(self) -> dict[str, dict[str, Any]]:
        """Every asset (project, library item) of the account by uid, fetched once."""
        # Attachment workers ask too (a file listed by submission): one fetch, and no
        # thread ever sees a list half filled.
        with self._assets_lock:
            if self._assets is None:
                assets: dict[str, dict[str, Any]] = {}
                url: str | None = f"{self.base}/api/v2/assets/?format=json&limit=1000"
                while url:
                    body = self.json(self.get(url), ("results",), rows="results", row_keys=("uid",))
                    for a in body["results"]:
                        assets[a["uid"]] = a
                    url = body.get("next")
                self._assets = assets
            return self._assets

    def forget_assets(self) -> None:
        """The asset list has changed (an import made a project): fetch it again."""
        self._assets = None


class KoboSource:
    """Pulls a KoboToolbox account's forms (the :class:`~pipelines.sources.base.Source`
    protocol). Use as a context manager.

    ``aliases`` (form id → asset uid, from the publish ledger) and ``titles`` (form id →
    title, from the build manifest) let a form be named by its XForm id: kpi names a
    project after the form's title and replaces the form id with the asset uid.
    """

    name = NAME
    fetch_workers = 4

    def __init__(
        self,
        settings: Any,
        policy: RetryPolicy | None = None,
        page_size: int | None = None,
        aliases: Mapping[str, str] | None = None,
        titles: Mapping[str, str] | None = None,
    ):
        self.api = KoboClient(settings, policy)
        self.aliases = dict(aliases or {})
        self.titles = dict(titles or {})
        self.page_size = min(page_size or settings.kobo_page_size, MAX_LIMIT)

    def __enter__(self) -> KoboSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.session.close()

    def form_ids(self) -> list[str]:
        """Every deployed survey, by form id where this manyi knows it, else by asset uid."""
        by_uid = {uid: fid for fid, uid in self.aliases.items()}
        by_title = {title: fid for fid, title in self.titles.items()}
        out = []
        for uid, a in self.api.assets().items():
            if a.get("asset_type") == "survey" and a.get("has_deployment"):
                out.append(by_uid.get(uid) or by_title.get(a.get("name") or "") or uid)
        return list(dict.fromkeys(out))

    def asset_uid(self, form_id: str) -> str:
        """A form is named by its form id (published by manyi, or a project named after the
        form id or its built title) or by the asset uid."""
        assets = self.api.assets()
        if self.aliases.get(form_id) in assets:
            return self.aliases[form_id]
        if form_id in assets:
            return form_id
        names = {form_id, self.titles.get(form_id) or form_id}
        named = [
            uid
            for uid, a in assets.items()
            if a.get("name") in names and a.get("asset_type", "survey") == "survey"
        ]
        if len(named) == 1:
            return named[0]
        raise SourceError(
            f"KoboToolbox at {self.api.base} has {'several' if named else 'no'} project(s) named "
            f"{' or '.join(sorted(names))!r}; pass the asset uid (e.g. aALUCUEKcgKk28owQo3LrA) "
            "with --form"
        )

    def known_versions(self, uid: str) -> set[str]:
        detail = self.api.json(self.api.get(f"{self.api.base}/api/v2/assets/{uid}/?format=json"))
        deployed = detail.get("deployed_versions") or {}
        results = deployed.get("results") if isinstance(deployed, dict) else None
        versions = {v["uid"] for v in results or [] if isinstance(v, dict) and v.get("uid")}
        if detail.get("deployed_version_id"):
            versions.add(detail["deployed_version_id"])
        return versions

    # ---- pulling ---------------------------------------------------------------------
    def _data_url(self, uid: str, **params: Any) -> str:
        query = {"format": "json", "limit": str(self.page_size)}
        query.update({k: json.dumps(v, separators=(",", ":")) for k, v in params.items()})
        return f"{self.api.base}/api/v2/assets/{uid}/data/?{urlencode(query)}"

    def _results(self, url: str) -> dict[str, Any]:
        """One page of ``/data/``: ``{count, next, results}``."""
        return self.api.json(self.api.get(url), ("results",), rows="results")

    def pages(
        self,
        form_id: str,
        cursor: dict[str, Any] | None,
        known: KnownRecords | None = None,
    ) -> Iterator[Page]:
        uid = self.asset_uid(form_id)
        versions = self.known_versions(uid)
        last_id = int((cursor or {}).get("last_id", 0))
        # 1. new submissions, keyset paging on _id; a short page is not the end (a server
        #    may cap `limit` lower than asked), a page without `next` is
        stalls = 0
        while True:
            body = self._results(
                self._data_url(uid, query={"_id": {"$gt": last_id}}, sort={"_id": 1})
            )
            rows = body["results"]
            if not rows:
                break
            before = last_id
            page = Page(rows=len(rows))
            for row in rows:
                self._add(page, form_id, row, versions)
                if isinstance(row, dict) and type(row.get("_id")) is int:
                    last_id = max(last_id, row["_id"])
            page.cursor = {"last_id": last_id}
            yield page
            stalls = stalls + 1 if last_id == before else 0
            if not body.get("next") or stalls == _MAX_STALLS:
                break
        # 2. edits and deletions: compare every _uuid with what the store holds
        stored = dict(known() if known else {})
        listing = self._listing(uid)
        changed = [
            sid
            for root, (sid, u) in listing.seen.items()
            if root in stored and (stored[root].deleted or stored[root].source_version != u)
        ]
        for start in range(0, len(changed), self.page_size):
            part = changed[start : start + self.page_size]
            for rows in self._all_results(self._data_url(uid, query={"_id": {"$in": part}})):
                page = Page(rows=len(rows), cursor={"last_id": last_id})
                for row in rows:
                    self._add(page, form_id, row, versions)
                yield page
        gone: list[str] = []
        if listing.complete:
            gone = [r for r, k in stored.items() if not k.deleted and r not in listing.seen]
        yield Page(gone=gone, cursor={"last_id": last_id})

    def _listing(self, uid: str) -> _Listing:
        """``_id``/``_uuid`` of every submission, keyset paged on ``_id`` (a deletion while
        listing would shift ``next``'s offsets and skip a row). Complete only when every row
        was read and their number is the server's ``count``: a listing that missed rows
        must not flag them deleted."""
        seen: dict[str, tuple[int, str]] = {}
        count: int | None = None
        unreadable = stalls = 0
        after = 0
        while True:
            body = self._results(
                self._data_url(
                    uid,
                    query={"_id": {"$gt": after}},
                    sort={"_id": 1},
                    fields=["_id", "_uuid", "meta/rootUuid"],
                )
            )
            if count is None:
                count = body.get("count") if type(body.get("count")) is int else -1
            rows = body["results"]
            before = after
            for row in rows:
                sid = row.get("_id") if isinstance(row, dict) else None
                uuid = row.get("_uuid") if isinstance(row, dict) else None
                if type(sid) is not int or not isinstance(uuid, str) or not uuid:
                    unreadable += 1
                    continue
                root = row.get("meta/rootUuid") or f"uuid:{uuid}"
                seen[root] = (sid, uuid)
                after = max(after, sid)
            if not rows or not body.get("next"):
                break
            stalls = stalls + 1 if after == before else 0
            if stalls == _MAX_STALLS:  # the same rows again and again: cannot page on
                unreadable += 1
                break
        complete = not unreadable and count == len(seen)
        return _Listing(seen, complete)

    def refetch(self, form_id: str, ids: Sequence[str]) -> Iterator[Page]:
        """Ask again for submissions by root uuid (the quarantined ones). kpi always sets
        ``meta/rootUuid``; ``_uuid`` also finds a row an older kpi stored without it.
        Pages carry no cursor."""
        if not ids:
            return
        uid = self.asset_uid(form_id)
        versions = self.known_versions(uid)
        for start in range(0, len(ids), self.page_size):
            part = list(ids[start : start + self.page_size])
            uuids = [i.removeprefix("uuid:") for i in part]
            query = {"$or": [{"meta/rootUuid": {"$in": part}}, {"_uuid": {"$in": uuids}}]}
            for rows in self._all_results(self._data_url(uid, query=query)):
                page = Page(rows=len(rows))
                for row in rows:
                    self._add(page, form_id, row, versions)
                yield page

    def _all_results(self, url: str) -> Iterator[list[Any]]:
        """The rows of a query for a fixed set of ids, page by page along ``next`` (a server
        may give fewer rows a page than asked for)."""
        next_url: str | None = url
        while next_url:
            body = self._results(next_url)
            yield body["results"]
            next_url = body.get("next") if body["results"] else None

    def _add(self, page: Page, form_id: str, row: Any, versions: set[str]) -> None:
        item = to_record(form_id, row, versions)
        if isinstance(item, Quarantined):
            page.quarantined.append(item)
        else:
            page.records.append(item)

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        uid = self.asset_uid(record.form_id)
        url = self._data_url(uid, query={"meta/rootUuid": record.instance_id})
        rows = self._results(url)["results"]
        return list(attachments(rows[0])) if rows and isinstance(rows[0], dict) else []

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        return fetch_file(self.api.get, ref.url)


@dataclass(frozen=True)
class _Listing:
    seen: dict[str, tuple[int, str]]  # root uuid → (_id, _uuid)
    complete: bool  # every submission the server counts was read
