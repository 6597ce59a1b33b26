"""KoboToolbox (kpi API v2) with requests: pull submissions into canonical records.

* ``Authorization: Token <key>`` from ``MANYI_KOBO_TOKEN``; server from ``MANYI_KOBO_URL``.
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
* Flat ``group/field`` keys become nested dicts; repeats are lists keyed by the repeat's own
  field names, the same shape Central gives.
* Publishing: ``POST /api/v2/imports/`` (the built XLSForm, ``library=false``, and
  ``destination`` when the project exists), poll the import, replace changed media files
  (roster CSVs) under ``/files/``, then ``POST`` (first time) or ``PATCH`` (with the current
  ``version_id``) the deployment. kpi keeps no hash of our build, so what was published is
  remembered in the store and a form is skipped only while the server still deploys it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

from pipelines.errors import ConfigError, SourceError
from pipelines.records import (
    AttachmentRef,
    Page,
    PublishReport,
    Quarantined,
    Record,
    built_forms,
    utc_text,
)
from pipelines.sources._http import (
    RetryPolicy,
    error_detail,
    fetch_file,
    json_body,
    quoted,
    request,
    response_error,
)
from pipelines.store import Known, Published, Store, open_store

NAME = "kobo"
MAX_LIMIT = 1000  # kpi silently caps larger values
_REVIEW = {
    "validation_status_approved": "approved",
    "validation_status_not_approved": "rejected",
    "validation_status_on_hold": "hasIssues",
}
# Pages in a row that bring no higher _id (a proxy resending a page, rows without an _id)
# before a keyset loop gives up for this pull.
_MAX_STALLS = 3
_SYSTEM = {"formhub/uuid", "__version__", "meta/rootUuid"}
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class KoboSource:
    """One connection to a KoboToolbox server. Use as a context manager.

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
        if not settings.kobo_url or not settings.kobo_token:
            raise ConfigError("KoboToolbox needs MANYI_KOBO_URL and MANYI_KOBO_TOKEN")
        self.aliases = dict(aliases or {})
        self.titles = dict(titles or {})
        self.base = settings.kobo_url.rstrip("/")
        self.policy = policy or RetryPolicy.from_settings(settings)
        self.page_size = min(page_size or settings.kobo_page_size, MAX_LIMIT)
        self._token = settings.kobo_token.get()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self._token}"
        self.session.headers["Accept"] = "application/json"
        self._assets: dict[str, dict[str, Any]] | None = None
        self._assets_lock = threading.Lock()

    def __enter__(self) -> KoboSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def _get(self, url: str, ok: tuple[int, ...] = (), **kw: Any) -> requests.Response:
        return self._send("GET", url, ok=ok, **kw)

    def _send(
        self, method: str, url: str, ok: tuple[int, ...] = (), **kw: Any
    ) -> requests.Response:
        return request(
            self.session.request,
            method,
            url,
            self.policy,
            (self._token,),
            what="KoboToolbox",
            ok=ok,
            **kw,
        )

    def _json(self, resp: requests.Response, keys: tuple[str, ...] = (), **kw: Any) -> Any:
        return json_body(resp, "KoboToolbox", keys, secrets=(self._token,), **kw)

    # ---- assets ----------------------------------------------------------------------
    def _asset_list(self) -> dict[str, dict[str, Any]]:
        # Attachment workers ask too (a file listed by submission): one fetch, and no
        # thread ever sees a list half filled.
        with self._assets_lock:
            if self._assets is None:
                assets: dict[str, dict[str, Any]] = {}
                url: str | None = f"{self.base}/api/v2/assets/?format=json&limit=1000"
                while url:
                    body = self._json(
                        self._get(url), ("results",), rows="results", row_keys=("uid",)
                    )
                    for a in body["results"]:
                        assets[a["uid"]] = a
                    url = body.get("next")
                self._assets = assets
            return self._assets

    def form_ids(self) -> list[str]:
        """Every deployed survey, by form id where this manyi knows it, else by asset uid."""
        by_uid = {uid: fid for fid, uid in self.aliases.items()}
        by_title = {title: fid for fid, title in self.titles.items()}
        out = []
        for uid, a in self._asset_list().items():
            if a.get("asset_type") == "survey" and a.get("has_deployment"):
                out.append(by_uid.get(uid) or by_title.get(a.get("name") or "") or uid)
        return list(dict.fromkeys(out))

    def asset_uid(self, form_id: str) -> str:
        """A form is named by its form id (published by manyi, or a project named after the
        form id or its built title) or by the asset uid."""
        assets = self._asset_list()
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
            f"KoboToolbox at {self.base} has {'several' if named else 'no'} project(s) named "
            f"{' or '.join(sorted(names))!r}; pass the asset uid (e.g. aALUCUEKcgKk28owQo3LrA) "
            "with --form"
        )

    def known_versions(self, uid: str) -> set[str]:
        detail = self._json(self._get(f"{self.base}/api/v2/assets/{uid}/?format=json"))
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
        return f"{self.base}/api/v2/assets/{uid}/data/?{urlencode(query)}"

    def _results(self, url: str) -> dict[str, Any]:
        """One page of ``/data/``: ``{count, next, results}``."""
        return self._json(self._get(url), ("results",), rows="results")

    def pages(
        self,
        form_id: str,
        cursor: dict[str, Any] | None,
        known: Callable[[], Mapping[str, Known]] | None = None,
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
        return list(_attachments(rows[0])) if rows and isinstance(rows[0], dict) else []

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        return fetch_file(self._get, ref.url)

    # ---- publishing ------------------------------------------------------------------
    def publish(
        self, build_dir: Path, form_ids: Iterable[str] | None, store: Store
    ) -> PublishReport:
        """Create or update every built form (see :func:`publish`)."""
        report = PublishReport()
        ledger = store.published(NAME)
        for entry in built_forms(build_dir, form_ids):
            self._publish_one(Path(build_dir), entry, ledger.get(entry["form_id"]), store, report)
        return report

    def _publish_one(
        self,
        build_dir: Path,
        entry: dict[str, Any],
        led: Published | None,
        store: Store,
        report: PublishReport,
    ) -> None:
        form_id, version, md5 = entry["form_id"], entry["version"], entry["md5"]
        title = entry.get("title") or form_id
        files = {name: build_dir / name for name in entry.get("attachments", ())}
        media = {n: hashlib.md5(p.read_bytes()).hexdigest() for n, p in files.items()}  # noqa: S324 - kpi's file hash
        asset = self._find_asset(form_id, title, led)
        same_form = bool(
            asset
            and led
            and led.remote_id == asset["uid"]
            and (led.version, led.md5) == (version, md5)
            and asset.get("has_deployment")
            and asset.get("deployed_version_id") == led.remote_version
        )
        if asset and same_form:
            current = self._asset_files(asset["uid"])
            same_media = all(current.get(n, ("", ""))[1] == f"md5:{m}" for n, m in media.items())
            if same_media and asset.get("deployment__active"):
                report.skipped.append(form_id)
                return
            uid = asset["uid"]  # only the media (or the archived state) changed
        else:
            uid = self._import(form_id, title, build_dir / entry["xlsx"], asset)
        self._put_media(form_id, uid, files, media)
        deployed = self._deploy(form_id, uid)
        store.note_published(Published(NAME, form_id, uid, version, md5, media, deployed))
        self.aliases[form_id] = uid
        (report.updated if asset else report.created).append(form_id)

    def _asset(self, uid: str) -> dict[str, Any] | None:
        resp = self._get(f"{self.base}/api/v2/assets/{uid}/?format=json", ok=(404,))
        return self._json(resp, ("uid",)) if resp.status_code == 200 else None

    def _find_asset(self, form_id: str, title: str, led: Published | None) -> dict[str, Any] | None:
        """The project holding this form: the one published last time, else the one survey
        named after the form's title (or id), else None."""
        if led:
            asset = self._asset(led.remote_id)
            if asset is not None:
                return asset
        named = [
            uid
            for uid, a in self._asset_list().items()
            if a.get("asset_type") == "survey" and a.get("name") in (title, form_id)
        ]
        if len(named) > 1:
            raise SourceError(
                f"KoboToolbox at {self.base} has {len(named)} projects named {title!r} "
                f"({', '.join(sorted(named))}); archive or rename all but one, then publish "
                f"{form_id} again"
            )
        return self._asset(named[0]) if named else None

    def _import(self, form_id: str, title: str, xlsx: Path, asset: dict[str, Any] | None) -> str:
        """Import the XLSForm (into ``asset`` when given) and wait for kpi to finish."""
        # library=false: left out, kpi files the upload as a library block, not a project
        data = {"library": "false", "name": title}
        if asset:  # built here: kpi copies ?format=json into the url it returns
            data["destination"] = f"{self.base}/api/v2/assets/{asset['uid']}/"
        resp = self._send(
            "POST",
            f"{self.base}/api/v2/imports/",
            files={"file": (xlsx.name, xlsx.read_bytes(), _XLSX)},
            data=data,
            idempotent=False,
        )
        task = self._json(resp, ("uid",))
        url = f"{self.base}/api/v2/imports/{task['uid']}/"
        started, attempt = time.monotonic(), 0
        while True:
            body = self._json(self._get(url))
            status, messages = body.get("status"), body.get("messages") or {}
            if status == "complete":
                done = messages.get("updated") or messages.get("created") or []
                if done and done[0].get("uid"):
                    self._assets = None  # the project list has changed
                    return str(done[0]["uid"])
                if asset:
                    return str(asset["uid"])
                raise SourceError(
                    f"KoboToolbox imported {form_id} ({url}) but did not say into which "
                    "project; find it in KoboToolbox, then publish again"
                )
            if status == "error":
                said = messages.get("error", body)
                said = said if isinstance(said, str) else json.dumps(said, ensure_ascii=False)
                raise SourceError(
                    f"KoboToolbox could not import {form_id} ({xlsx.name}): "
                    f"{quoted(str(messages.get('error_type', 'error')), limit=60)}: "
                    f"{quoted(said, (self._token,))}; fix the form, build and publish again",
                    url=url,
                    detail=quoted(said, (self._token,)),
                    secrets=(self._token,),
                )
            attempt += 1
            state = quoted(str(status), limit=40)
            problem = f"import still {state!r}"
            if not self.policy.pause(started, attempt, url, problem, secrets=(self._token,)):
                raise SourceError(
                    f"KoboToolbox was still importing {form_id} after "
                    f"{time.monotonic() - started:.0f} s (status {state!r}, {url}); publish "
                    "again later, or wait longer with http_give_up_s (now "
                    f"{self.policy.max_seconds:g} s)",
                    url=url,
                    secrets=(self._token,),
                )

    def _asset_files(self, uid: str) -> dict[str, tuple[str, str]]:
        """The project's form media: file name → (file uid, ``md5:<hex>``)."""
        out: dict[str, tuple[str, str]] = {}
        url: str | None = f"{self.base}/api/v2/assets/{uid}/files/?file_type=form_media"
        while url:
            body = self._json(self._get(url), ("results",), rows="results")
            for f in body["results"]:
                meta = f.get("metadata") or {}
                if meta.get("filename"):
                    out[meta["filename"]] = (f["uid"], meta.get("hash") or "")
            url = body.get("next")
        return out

    def _put_media(
        self, form_id: str, uid: str, files: dict[str, Path], media: dict[str, str]
    ) -> None:
        """Upload changed media; kpi wants a file name once per project, so a changed file
        is deleted first."""
        current = self._asset_files(uid) if files else {}
        for name, path in files.items():
            old = current.get(name)
            if old and old[1] == f"md5:{media[name]}":
                continue
            if old:
                self._send("DELETE", f"{self.base}/api/v2/assets/{uid}/files/{old[0]}/", ok=(404,))
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
            payload = base64.b64encode(path.read_bytes()).decode("ascii")
            resp = self._send(
                "POST",
                f"{self.base}/api/v2/assets/{uid}/files/",
                json={
                    "file_type": "form_media",
                    "description": "default",
                    "base64Encoded": f"data:{mime};base64,{payload}",
                    "metadata": {"filename": name},
                },
                ok=(400,),
                idempotent=False,
            )
            if resp.status_code == 400:
                raise response_error(
                    resp,
                    f"KoboToolbox refused {name} for {form_id}: "
                    f"{error_detail(resp, (self._token,))}; fix the file, build and publish again",
                    (self._token,),
                )

    def _deploy(self, form_id: str, uid: str) -> str | None:
        """Deploy (first time) or redeploy the project's current version; its version id."""
        url = f"{self.base}/api/v2/assets/{uid}/deployment/"
        asset = self._asset(uid) or {}
        resp = None
        if not asset.get("has_deployment"):
            resp = self._send("POST", url, json={"active": True}, ok=(400, 405))
        if resp is None or resp.status_code == 405:  # 405: deployed already, PATCH it
            asset = self._asset(uid) or asset
            resp = self._send(
                "PATCH",
                url,
                json={"version_id": asset.get("version_id"), "active": True},
                ok=(400,),
            )
        if resp.status_code == 400:
            raise response_error(
                resp,
                f"KoboToolbox refused to deploy {form_id} (project {uid}): "
                f"{error_detail(resp, (self._token,))}; fix the form, build and publish again",
                (self._token,),
            )
        return self._json(resp).get("version_id")


@dataclass(frozen=True)
class _Listing:
    seen: dict[str, tuple[int, str]]  # root uuid → (_id, _uuid)
    complete: bool  # every submission the server counts was read


def _attachments(row: dict[str, Any]) -> Iterator[AttachmentRef]:
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


def publish(
    settings: Any,
    form_ids: Iterable[str] | None = None,
    build_dir: Path | None = None,
    *,
    policy: RetryPolicy | None = None,
) -> PublishReport:
    """``manyi forms publish --to kobo``: import, then deploy or redeploy, every built form.

    The form's roster CSVs go up as the project's media. A form whose version, build hash
    and media are what this manyi last deployed, and which KoboToolbox still deploys, is
    skipped.
    """
    with open_store(settings) as store:
        aliases = {k: v.remote_id for k, v in store.published(NAME).items()}
        with KoboSource(settings, policy=policy, aliases=aliases) as kobo:
            return kobo.publish(Path(build_dir or settings.build_dir), form_ids, store)
