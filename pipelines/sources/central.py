"""ODK Central's REST and OData API: pull submissions, fetch attachments, publish forms.

* Configuration: ``MANYI_CENTRAL_URL/USER/PASSWORD/PROJECT`` (via :class:`Settings`), else
  pyodk's own TOML file (``PYODK_CONFIG_FILE``, default ``~/.pyodk_config.toml``), read
  through pyodk's public ``Client``. Every request, publishing too, goes through our retry
  loop (:func:`pipelines.sources._http.request`): pyodk's own requests log a server's whole error
  body, which may echo our token, and its endpoint classes are private.
* Pull: ``Submissions?$top=N&$expand=*`` following ``@odata.nextLink`` (pyodk's get_table does
  not follow it). Incremental on ``__system/submissionDate``/``__system/updatedAt`` so edits and
  reviews are caught; deletions come from a second query on ``__system/deletedAt`` (Central
  leaves deleted submissions out of the feed unless the filter names ``deletedAt``).
* The feed is newest first, so what changes while a pull reads it lands behind the reader:
  the next pull starts no later than the server's clock (its ``Date`` header) when this one
  began, less a margin, and the store's upserts make rows read twice harmless.
* The cursor holds the resume link, so a killed pull continues where its last page committed,
  then goes round once more for what changed meanwhile. The next page is fetched on a thread
  while the current one is stored.
* Quarantined submissions are asked for again by ``__id`` at the start of each pull.
* Geopoints arrive as GeoJSON ([lon, lat, alt]) and are turned back into ``lat lon alt acc``.
* Attachments: the form's file fields (``fields?odata=true``) name each submission's files,
  and ``__system/attachmentsPresent``/``Expected`` say whether there is anything to fetch, so
  files are downloaded by name without listing every submission's attachments.
* Publish: a draft (new form or new version) with its attachments, published with the form's
  version; skipped when version, XForm hash and attachment md5s match what Central has.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import requests
from pyodk import Client
from pyodk.errors import PyODKError

from pipelines.config import check_server_url
from pipelines.errors import ConfigError, SourceError
from pipelines.records import (
    AttachmentRef,
    Page,
    PublishReport,
    Quarantined,
    Record,
    built_forms,
    geojson_to_xform,
    now_utc,
    utc_text,
)
from pipelines.sources._http import (
    RetryPolicy,
    error_detail,
    fetch_file,
    json_body,
    request,
    response_error,
    server_time,
)

NAME = "central"
# The next pull asks again from this long before the server's clock at the start of the last
# one: a submission whose timestamp was taken before that moment but committed after it (a
# slow upload's transaction), and the Date header's whole seconds, are caught on the next
# pull. Rows fetched twice cost nothing: the store upserts.
CLOCK_MARGIN = timedelta(seconds=60)
RETRY_BATCH = 20  # quarantined ids per `__id eq … or …` query, to keep the URL short
# What Central answers a form it will not take (400: unparsable XML, 409: version exists);
# 401/403 keep the generic message with its advice on credentials and rights.
_REFUSALS = (400, 404, 409, 413, 415, 422)


@dataclass(frozen=True)
class CentralConfig:
    base_url: str
    username: str
    password: str = field(repr=False)
    project_id: int


def central_config(settings: Any, env: dict[str, str] | None = None) -> CentralConfig:
    """Settings first (MANYI_CENTRAL_*), else pyodk's TOML config file."""
    env = dict(os.environ) if env is None else env
    if settings.central_url:
        missing = [
            n
            for n, v in (
                ("MANYI_CENTRAL_USER", settings.central_user),
                ("MANYI_CENTRAL_PASSWORD", settings.central_password),
                ("MANYI_CENTRAL_PROJECT", settings.central_project),
            )
            if not v
        ]
        if missing:
            raise ConfigError(
                f"central_url is set but {', '.join(missing)} is not; set them in the environment"
            )
        return CentralConfig(
            settings.central_url,
            settings.central_user,
            settings.central_password.get(),
            int(settings.central_project),
        )
    # pyodk's default place for its config file (PYODK_CONFIG_FILE overrides it)
    path = Path(env.get("PYODK_CONFIG_FILE") or Path.home() / ".pyodk_config.toml")
    if not path.exists():
        raise ConfigError(
            "no ODK Central server configured: set MANYI_CENTRAL_URL, MANYI_CENTRAL_USER, "
            f"MANYI_CENTRAL_PASSWORD and MANYI_CENTRAL_PROJECT, or write pyodk's config {path}"
        )
    try:
        cfg = Client(config_path=path).config.central  # reads the file; no request, no cache
    except (PyODKError, TypeError, KeyError, ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: not a valid pyodk config ({type(e).__name__})") from None
    check_server_url("base_url", str(cfg.base_url), f"in {path}", "username and password")
    project = settings.central_project or cfg.default_project_id
    if not project:
        raise ConfigError(f"{path}: no default_project_id; set MANYI_CENTRAL_PROJECT")
    try:
        return CentralConfig(cfg.base_url, cfg.username, cfg.password, int(project))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: default_project_id must be a number") from None


class CentralSource:
    """One connection to a Central project. Use as a context manager."""

    name = NAME

    def __init__(
        self,
        settings: Any,
        policy: RetryPolicy | None = None,
        page_size: int | None = None,
    ):
        self.cfg = central_config(settings)
        self.policy = policy or RetryPolicy.from_settings(settings)
        self.page_size = page_size or settings.central_page_size
        base = self.cfg.base_url.rstrip("/")
        self._api = base + "/" if base.endswith("/v1") else base + "/v1/"
        # Our own session: no token cache file on disk, and our retry policy instead of an
        # adapter's (pyodk's retries only over https and hides Retry-After from us).
        session = requests.Session()
        # one connection per attachment worker, plus the page prefetch and the main thread
        adapter = requests.adapters.HTTPAdapter(max_retries=0, pool_maxsize=self.fetch_workers + 2)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.session = session
        self._secrets = (self.cfg.password,)
        self._logged_in = False

    def __enter__(self) -> CentralSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # ---- HTTP ------------------------------------------------------------------------
    def _login(self) -> None:
        """``POST /v1/sessions`` through our retry loop; the token goes in the session's
        headers, and into the secrets every message is scrubbed of."""
        if self._logged_in:
            return
        resp = request(
            self.session.request,
            "POST",
            self._url("sessions"),
            self.policy,
            self._secrets,
            what="ODK Central",
            ok=(400, 401, 403),
            json={"email": self.cfg.username, "password": self.cfg.password},
        )
        if resp.status_code in (400, 401, 403):
            raise response_error(
                resp,
                f"ODK Central at {self.cfg.base_url} refused the login for "
                f"{self.cfg.username} (HTTP {resp.status_code}); check MANYI_CENTRAL_USER "
                "and MANYI_CENTRAL_PASSWORD (or the pyodk config file)",
                self._secrets,
            )
        body = json_body(resp, "ODK Central", ("token",), secrets=self._secrets)
        token = str(body["token"])
        # the token from now on is a secret too: a server may echo it in an error body
        self._secrets = (self.cfg.password, token)
        self.session.headers["Authorization"] = f"Bearer {token}"
        self._logged_in = True

    def _url(self, path: str) -> str:
        """An API path (``projects/1/forms``) or a full URL (an ``@odata.nextLink``)."""
        return urljoin(self._api, path.lstrip("/")) if "://" not in path else path

    def _get(self, url: str, ok: tuple[int, ...] = (), **kw: Any) -> requests.Response:
        self._login()
        return request(
            self.session.request,
            "GET",
            self._url(url),
            self.policy,
            self._secrets,
            what="ODK Central",
            ok=ok,
            **kw,
        )

    def _form_path(self, form_id: str) -> str:
        return f"projects/{_q(self.cfg.project_id)}/forms/{_q(form_id)}"

    # ---- pulling ---------------------------------------------------------------------
    fetch_workers = 4  # attachment downloads in flight beside the page feed

    def form_ids(self) -> list[str]:
        """Every published form of the project (what ``manyi pull`` pulls with no --form)."""
        path = f"projects/{_q(self.cfg.project_id)}/forms"
        forms = self._json(self._get(path), ("xmlFormId",), kind=list)
        return [f["xmlFormId"] for f in forms if f.get("publishedAt")]

    def known_versions(self, form_id: str) -> set[str]:
        resp = self._get(self._form_path(form_id) + "/versions")
        return {v["version"] for v in self._json(resp, ("version",), kind=list)}

    def _json(self, resp: requests.Response, keys: tuple[str, ...] = (), **kw: Any) -> Any:
        return json_body(resp, "ODK Central", keys, secrets=self._secrets, **kw)

    def binary_paths(self, form_id: str) -> list[tuple[str, ...]]:
        """Paths of the form's file fields (``/piles/photo`` → ("piles", "photo")).

        With them a record names its own attachments, so files are fetched by name without
        listing each submission's attachments first.
        """
        resp = self._get(self._form_path(form_id) + "/fields?odata=true", ok=(404, 501))
        if resp.status_code != 200:
            return []
        return [
            tuple(f["path"].strip("/").split("/"))
            for f in self._json(resp, kind=list)
            if isinstance(f, dict) and f.get("binary") and isinstance(f.get("path"), str)
        ]

    def pages(
        self, form_id: str, cursor: dict[str, Any] | None, known: Any = None
    ) -> Iterator[Page]:
        """Two phases, each newest first: submissions new or changed since ``hwm``, then
        those deleted since ``deleted_hwm``. A phase's marks move only when it ends, to the
        earlier of the latest time seen and the server's clock when the phase began (less
        :data:`CLOCK_MARGIN`): the feed is read from the newest end, so a submission that
        arrives, or an already-read row that is edited, while a pull runs is behind it."""
        state = dict(cursor or {})
        versions = self.known_versions(form_id)
        files = _Files(self.binary_paths(form_id), self._submissions_path(form_id))
        hwm, deleted_hwm = state.get("hwm"), state.get("deleted_hwm")
        pending = state.get("pending") or hwm
        deleted_pending = state.get("deleted_pending") or deleted_hwm
        started = state.get("started")  # the server's clock when this phase began
        phase, url = state.get("phase", "data"), state.get("next")
        # A pull that takes over a phase an earlier (killed) run began goes round once more:
        # what changed since that run started is behind the resumed reader, and a pull run
        # again must end with everything the server had when it started.
        again = phase == "deleted" or url is not None or started is not None
        # The next page is fetched on a thread while this one is turned into records and
        # stored: the server works on page k+1 while we work on page k.
        ahead = ThreadPoolExecutor(1, "manyi-page")
        prefetched: tuple[str, Future[_Fetched | None]] | None = None
        try:
            while phase in ("data", "deleted"):
                resuming = url is not None
                if url is None:
                    url = self._first_url(form_id, phase, hwm, deleted_hwm)
                if prefetched and prefetched[0] == url:
                    fetched = prefetched[1].result()
                else:
                    fetched = self._page(url, resuming)
                prefetched = None
                if fetched is None:  # the resume link went stale: start the phase again
                    url = None
                    continue
                # Kept from the first page through resumes and restarts: earlier is safer.
                # A server without a Date header (HTTP requires one) gets our own clock.
                started = started or fetched.server_time or now_utc()
                rows = fetched.body["value"]
                if not isinstance(rows, list):
                    raise SourceError(f"ODK Central sent a page without 'value' for {url}")
                url = fetched.body.get("@odata.nextLink")
                if url is not None:
                    prefetched = (url, ahead.submit(self._page, url, True))
                page = Page(rows=len(rows))
                for row in rows:
                    # read before _to_record, which strips __system from the row
                    system = row.get("__system") if type(row) is dict else None
                    item = _to_record(form_id, row, versions, files, deleted=(phase == "deleted"))
                    if isinstance(item, Quarantined):
                        page.quarantined.append(item)
                        continue
                    page.records.append(item)
                    if phase == "data":
                        pending = _latest(pending, item.submitted_at, item.updated_at)
                    elif type(system) is dict:
                        stamp = utc_text(system.get("deletedAt"))
                        deleted_pending = _latest(deleted_pending, stamp)
                if url is None and phase == "data":
                    phase, hwm, pending = "deleted", _next_mark(started, pending), None
                    started = None
                elif url is None:
                    phase, deleted_hwm = "done", _next_mark(started, deleted_pending)
                    deleted_pending, started = None, None
                    if again:
                        phase, again = "data", False
                page.cursor = {
                    "hwm": hwm,
                    "pending": pending,
                    "deleted_hwm": deleted_hwm,
                    "deleted_pending": deleted_pending,
                    "started": started,
                    "phase": "data" if phase == "done" else phase,
                    "next": url,
                }
                yield page
        finally:
            if prefetched:
                prefetched[1].cancel()
            ahead.shutdown(wait=True, cancel_futures=True)

    def refetch(self, form_id: str, ids: Sequence[str]) -> Iterator[Page]:
        """Ask again for submissions by instance id (the quarantined ones), a few per query:
        ``$filter=__id eq '…' or __id eq '…'``. Pages carry no cursor."""
        if not ids:
            return
        versions = self.known_versions(form_id)
        files = _Files(self.binary_paths(form_id), self._submissions_path(form_id))
        for start in range(0, len(ids), RETRY_BATCH):
            part = ids[start : start + RETRY_BATCH]
            which = " or ".join(f"__id eq '{_odata_text(i)}'" for i in part)
            url: str | None = self._odata_url(
                form_id, [("$top", str(len(part))), ("$expand", "*"), ("$filter", which)]
            )
            while url:
                fetched = self._page(url, False)
                rows = fetched.body["value"] if fetched else []
                if not isinstance(rows, list):
                    raise SourceError(f"ODK Central sent a page without 'value' for {url}")
                page = Page(rows=len(rows))
                for row in rows:
                    item = _to_record(form_id, row, versions, files)
                    if isinstance(item, Quarantined):
                        page.quarantined.append(item)
                    else:
                        page.records.append(item)
                yield page
                url = fetched.body.get("@odata.nextLink") if fetched else None

    def _submissions_path(self, form_id: str) -> str:
        return self._url(self._form_path(form_id) + "/submissions/")

    def _first_url(self, form_id: str, phase: str, hwm: str | None, deleted_hwm: str | None) -> str:
        params = [("$top", str(self.page_size))]
        if phase == "data":
            params.append(("$expand", "*"))
            if hwm:
                # ge, not gt: a submission sharing the last millisecond is fetched again
                # rather than missed; the store's upsert makes that harmless.
                params.append(
                    ("$filter", f"__system/submissionDate ge {hwm} or __system/updatedAt ge {hwm}")
                )
        else:
            when = f"ge {deleted_hwm}" if deleted_hwm else "ne null"
            params.append(("$filter", f"__system/deletedAt {when}"))
        return self._odata_url(form_id, params)

    def _odata_url(self, form_id: str, params: list[tuple[str, str]]) -> str:
        safe = "$/*,():'"
        query = "&".join(f"{k}={quote(v, safe=safe)}" for k, v in params)
        return f"{self._form_path(form_id)}.svc/Submissions?{query}"

    def _page(self, url: str, resuming: bool) -> _Fetched | None:
        """One OData page and the server's clock when it answered; None for a stale resume
        link (Central answers 400 to a skiptoken whose row is gone)."""
        for attempt in range(3):
            resp = self._get(url, ok=(400,) if resuming else ())
            if resp.status_code == 400:
                return None
            try:
                body = self._json(resp, ("value",))
            except SourceError:
                if attempt == 2 or "HTML" in resp.headers.get("Content-Type", "").upper():
                    raise
                continue  # a truncated page: ask again
            return _Fetched(body, server_time(resp))
        raise AssertionError("unreachable")  # pragma: no cover

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        path = f"{self._form_path(record.form_id)}/submissions/{_q(record.instance_id)}/attachments"
        resp = self._get(path, ok=(404,))
        if resp.status_code == 404:
            return []
        return [
            AttachmentRef(
                a["name"], url=f"{path}/{quote(a['name'], safe='')}", exists=a.get("exists", True)
            )
            for a in self._json(resp, ("name",), kind=list)
        ]

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        return fetch_file(self._get, ref.url)

    # ---- publishing ------------------------------------------------------------------
    def publish(self, build_dir: Path, form_ids: Iterable[str] | None = None) -> PublishReport:
        """Create or update every built form (see :func:`publish`)."""
        report = PublishReport()
        for entry in built_forms(build_dir, form_ids):
            self._publish_one(Path(build_dir), entry, report)
        return report

    def _publish_one(self, build_dir: Path, entry: dict[str, Any], report: PublishReport) -> None:
        form_id, version, md5 = entry["form_id"], entry["version"], entry["md5"]
        xml = (build_dir / entry["xform"]).read_text(encoding="utf-8")
        files = [build_dir / a for a in entry.get("attachments", ())]
        resp = self._get(self._form_path(form_id), ok=(404,))
        current = self._json(resp) if resp.status_code == 200 else None
        published = bool(current and current.get("publishedAt"))
        if published and current and current.get("version") == version:
            if current.get("hash") != md5:
                raise SourceError(
                    f"{form_id}: version {version} is already on ODK Central with different "
                    "content; raise the form's version in its settings sheet, build and "
                    "publish again"
                )
            changed = self._changed_attachments(form_id, files)
            if not changed:
                report.skipped.append(form_id)
                return
            # Central keeps each published version's files fixed.
            raise SourceError(
                f"{form_id}: {', '.join(changed)} changed but the form version {version} did "
                "not; raise the version in the form's settings sheet, build and publish again"
            )
        form = self._form_path(form_id)
        if current is None:
            # A new form starts as a draft too, so its files go up before it is live.
            self._post(
                form_id,
                "create the form",
                f"projects/{_q(self.cfg.project_id)}/forms?ignoreWarnings=true&publish=false",
                idempotent=False,
                headers={"Content-Type": "application/xml"},
                data=xml.encode("utf-8"),
            )
        else:  # a new draft replaces any old one, so sending it twice does no harm
            self._post(
                form_id,
                "create a draft",
                f"{form}/draft?ignoreWarnings=true",
                headers={"Content-Type": "application/xml"},
                data=xml.encode("utf-8"),
            )
        for path in files:  # an upload replaces the draft's file of that name
            self._post(
                form_id,
                f"upload {path.name}",
                f"{form}/draft/attachments/{_q(path.name)}",
                headers={
                    "Content-Type": mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                },
                data=path.read_bytes(),
            )
        self._post(
            form_id,
            f"publish version {version}",
            f"{form}/draft/publish?version={quote(version, safe='')}",
            idempotent=False,
        )
        (report.updated if published else report.created).append(form_id)

    def _post(
        self, form_id: str, step: str, path: str, idempotent: bool = True, **kw: Any
    ) -> requests.Response:
        """One publishing request; Central's refusal (a form it cannot parse, a version it
        has) is one line naming the form and the step."""
        self._login()
        resp = request(
            self.session.request,
            "POST",
            self._url(path),
            self.policy,
            self._secrets,
            what="ODK Central",
            ok=_REFUSALS,
            idempotent=idempotent,
            **kw,
        )
        if resp.status_code in _REFUSALS:
            raise response_error(
                resp,
                f"ODK Central refused to publish {form_id} ({step}): HTTP {resp.status_code} "
                f"{error_detail(resp, self._secrets)}; fix the form, build and publish again "
                "(forms before it were published)",
                self._secrets,
            )
        return resp

    def _changed_attachments(self, form_id: str, files: list[Path]) -> list[str]:
        """Names of the built files whose content differs from the published form's."""
        changed = []
        for path in files:
            digest = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - Central's ETag
            url = f"{self._form_path(form_id)}/attachments/{_q(path.name)}"
            # Central answers 304 when the ETag (the file's md5) still matches.
            resp = self._get(url, ok=(404,), headers={"If-None-Match": f'"{digest}"'})
            if resp.status_code == 304:
                continue
            if resp.status_code == 200 and resp.headers.get("ETag", "").strip('W/"') == digest:
                continue
            changed.append(path.name)
        return changed


def publish(
    settings: Any,
    form_ids: Iterable[str] | None = None,
    build_dir: Path | None = None,
    *,
    policy: RetryPolicy | None = None,
) -> PublishReport:
    """``manyi forms publish --to central``: create or update every built form.

    A new form, or a new version, goes up as a draft with its attachments (roster CSVs) and
    is then published with the form's own version. A form whose version, XForm hash and
    files match what Central has is skipped.
    """
    with CentralSource(settings, policy=policy) as source:
        return source.publish(Path(build_dir or settings.build_dir), form_ids)


def _q(value: object) -> str:
    """One URL path segment, escaped as Central (and pyodk's URL formatter) escape it."""
    return quote(str(value), safe=_SAFE)


@dataclass(frozen=True)
class _Fetched:
    body: dict[str, Any]
    server_time: str | None  # the Date header, as UTC text


def _next_mark(started: str | None, seen: str | None) -> str | None:
    """Where the next pull starts: the latest time seen, but never after the server's clock
    at the start of this phase less the margin (see :meth:`CentralSource.pages`)."""
    if started is None:
        return seen
    moment = datetime.fromisoformat(started.replace("Z", "+00:00")) - CLOCK_MARGIN
    floor = utc_text(moment.isoformat())
    return min(floor, seen) if seen and floor else floor


def _odata_text(value: str) -> str:
    return value.replace("'", "''")  # OData doubles a quote inside a string literal


def _latest(*stamps: str | None) -> str | None:
    return max((s for s in stamps if s), default=None)


class _Files:
    """Where a form keeps file names, and the URL prefix to fetch them by name."""

    def __init__(self, paths: list[tuple[str, ...]], prefix: str):
        self.paths, self.prefix = paths, prefix

    def refs(self, iid: str, data: dict[str, Any], present: int) -> tuple[AttachmentRef, ...]:
        names = list(dict.fromkeys(n for p in self.paths for n in _values_at(data, p)))
        base = f"{self.prefix}{quote(iid, safe=_SAFE)}/attachments/"
        return tuple(
            AttachmentRef(n, url=base + quote(n, safe=_SAFE), exists=present > 0) for n in names
        )


_SAFE = "*'()"  # what Central (and pyodk's URL formatter) leave unescaped


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


def _to_record(
    form_id: str, row: Any, versions: set[str], files: _Files | None = None, deleted: bool = False
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
