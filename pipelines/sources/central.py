"""Pull from ODK Central's REST and OData API: submissions, deletions and attachments.

* Configuration: ``MANYI_CENTRAL_URL/USER/PASSWORD/PROJECT`` (via :class:`Settings`), else
  pyodk's own TOML file (``PYODK_CONFIG_FILE``, default ``~/.pyodk_config.toml``), read
  through pyodk's public ``Client``. Every request goes through our retry loop
  (:func:`pipelines._http.request`) on :class:`CentralClient`'s session, which publishing
  (:mod:`pipelines.publish.central`) uses too: pyodk's own requests log a server's whole
  error body, which may echo our token, and its endpoint classes are private.
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
* Rows become records in :mod:`pipelines.sources._central_records` (GeoJSON back to
  ``lat lon alt acc``).
* Attachments: the form's file fields (``fields?odata=true``) name each submission's files,
  and ``__system/attachmentsPresent``/``Expected`` say whether there is anything to fetch, so
  files are downloaded by name without listing every submission's attachments.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import requests
from pyodk import Client
from pyodk.errors import PyODKError

from pipelines._http import (
    RetryPolicy,
    fetch_file,
    json_body,
    request,
    response_error,
    server_time,
)
from pipelines.config import check_server_url
from pipelines.errors import ConfigError, SourceError
from pipelines.records import AttachmentRef, Quarantined, Record, now_utc, utc_text
from pipelines.sources._central_records import NAME, URL_SAFE, Files, to_record
from pipelines.sources.base import KnownRecords, Page

# The next pull asks again from this long before the server's clock at the start of the last
# one: a submission whose timestamp was taken before that moment but committed after it (a
# slow upload's transaction), and the Date header's whole seconds, are caught on the next
# pull. Rows fetched twice cost nothing: the store upserts.
CLOCK_MARGIN = timedelta(seconds=60)
RETRY_BATCH = 20  # quarantined ids per `__id eq … or …` query, to keep the URL short


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


class CentralClient:
    """One session with a Central project, logged in on its first request. Every request
    goes through the retry loop with the password and token scrubbed from any message.
    Use as a context manager."""

    def __init__(
        self, settings: Any, policy: RetryPolicy | None = None, connections: int = 2
    ) -> None:
        self.cfg = central_config(settings)
        self.policy = policy or RetryPolicy.from_settings(settings)
        base = self.cfg.base_url.rstrip("/")
        self._api = base + "/" if base.endswith("/v1") else base + "/v1/"
        # Our own session: no token cache file on disk, and our retry policy instead of an
        # adapter's (pyodk's retries only over https and hides Retry-After from us).
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(max_retries=0, pool_maxsize=connections)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.session = session
        self.secrets: tuple[str, ...] = (self.cfg.password,)
        self._logged_in = False

    def __enter__(self) -> CentralClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def _login(self) -> None:
        """``POST /v1/sessions`` through our retry loop; the token goes in the session's
        headers, and into the secrets every message is scrubbed of."""
        if self._logged_in:
            return
        resp = request(
            self.session.request,
            "POST",
            self.url("sessions"),
            self.policy,
            self.secrets,
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
                self.secrets,
            )
        body = json_body(resp, "ODK Central", ("token",), secrets=self.secrets)
        token = str(body["token"])
        # the token from now on is a secret too: a server may echo it in an error body
        self.secrets = (self.cfg.password, token)
        self.session.headers["Authorization"] = f"Bearer {token}"
        self._logged_in = True

    def url(self, path: str) -> str:
        """An API path (``projects/1/forms``) or a full URL (an ``@odata.nextLink``)."""
        return urljoin(self._api, path.lstrip("/")) if "://" not in path else path

    def send(
        self, method: str, path: str, ok: tuple[int, ...] = (), idempotent: bool = True, **kw: Any
    ) -> requests.Response:
        """``method`` on ``path`` with retries; ``ok`` lists error statuses the caller reads."""
        self._login()
        return request(
            self.session.request,
            method,
            self.url(path),
            self.policy,
            self.secrets,
            what="ODK Central",
            ok=ok,
            idempotent=idempotent,
            **kw,
        )

    def get(self, path: str, ok: tuple[int, ...] = (), **kw: Any) -> requests.Response:
        return self.send("GET", path, ok, **kw)

    def json(self, resp: requests.Response, keys: tuple[str, ...] = (), **kw: Any) -> Any:
        return json_body(resp, "ODK Central", keys, secrets=self.secrets, **kw)

    def project_path(self) -> str:
        return f"projects/{segment(self.cfg.project_id)}"

    def form_path(self, form_id: str) -> str:
        return f"{self.project_path()}/forms/{segment(form_id)}"


class CentralSource:
    """Pulls a Central project's forms (the :class:`~pipelines.sources.base.Source` protocol).
    Use as a context manager."""

    name = NAME
    fetch_workers = 4  # attachment downloads in flight beside the page feed

    def __init__(
        self,
        settings: Any,
        policy: RetryPolicy | None = None,
        page_size: int | None = None,
    ):
        # one connection per attachment worker, plus the page prefetch and the main thread
        self.api = CentralClient(settings, policy, connections=self.fetch_workers + 2)
        self.page_size = page_size or settings.central_page_size

    def __enter__(self) -> CentralSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.close()

    def form_ids(self) -> list[str]:
        """Every published form of the project (what ``manyi pull`` pulls with no --form)."""
        path = self.api.project_path() + "/forms"
        forms = self.api.json(self.api.get(path), ("xmlFormId",), kind=list)
        return [f["xmlFormId"] for f in forms if f.get("publishedAt")]

    def known_versions(self, form_id: str) -> set[str]:
        resp = self.api.get(self.api.form_path(form_id) + "/versions")
        return {v["version"] for v in self.api.json(resp, ("version",), kind=list)}

    def binary_paths(self, form_id: str) -> list[tuple[str, ...]]:
        """Paths of the form's file fields (``/piles/photo`` → ("piles", "photo")).

        With them a record names its own attachments, so files are fetched by name without
        listing each submission's attachments first.
        """
        resp = self.api.get(self.api.form_path(form_id) + "/fields?odata=true", ok=(404, 501))
        if resp.status_code != 200:
            return []
        return [
            tuple(f["path"].strip("/").split("/"))
            for f in self.api.json(resp, kind=list)
            if isinstance(f, dict) and f.get("binary") and isinstance(f.get("path"), str)
        ]

    def pages(
        self, form_id: str, cursor: dict[str, Any] | None, known: KnownRecords | None = None
    ) -> Iterator[Page]:
        """Two phases, each newest first: submissions new or changed since ``hwm``, then
        those deleted since ``deleted_hwm``. A phase's marks move only when it ends, to the
        earlier of the latest time seen and the server's clock when the phase began (less
        :data:`CLOCK_MARGIN`): the feed is read from the newest end, so a submission that
        arrives, or an already-read row that is edited, while a pull runs is behind it."""
        state = dict(cursor or {})
        versions = self.known_versions(form_id)
        files = Files(self.binary_paths(form_id), self._submissions_path(form_id))
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
                    item = to_record(form_id, row, versions, files, deleted=(phase == "deleted"))
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
        files = Files(self.binary_paths(form_id), self._submissions_path(form_id))
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
                    item = to_record(form_id, row, versions, files)
                    if isinstance(item, Quarantined):
                        page.quarantined.append(item)
                    else:
                        page.records.append(item)
                yield page
                url = fetched.body.get("@odata.nextLink") if fetched else None

    def _submissions_path(self, form_id: str) -> str:
        return self.api.url(self.api.form_path(form_id) + "/submissions/")

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
        return f"{self.api.form_path(form_id)}.svc/Submissions?{query}"

    def _page(self, url: str, resuming: bool) -> _Fetched | None:
        """One OData page and the server's clock when it answered; None for a stale resume
        link (Central answers 400 to a skiptoken whose row is gone)."""
        for attempt in range(3):
            resp = self.api.get(url, ok=(400,) if resuming else ())
            if resp.status_code == 400:
                return None
            try:
                body = self.api.json(resp, ("value",))
            except SourceError:
                if attempt == 2 or "HTML" in resp.headers.get("Content-Type", "").upper():
                    raise
                continue  # a truncated page: ask again
            return _Fetched(body, server_time(resp))
        raise AssertionError("unreachable")  # pragma: no cover

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        submission = f"submissions/{segment(record.instance_id)}"
        path = f"{self.api.form_path(record.form_id)}/{submission}/attachments"
        resp = self.api.get(path, ok=(404,))
        if resp.status_code == 404:
            return []
        return [
            AttachmentRef(
                a["name"], url=f"{path}/{quote(a['name'], safe='')}", exists=a.get("exists", True)
            )
            for a in self.api.json(resp, ("name",), kind=list)
        ]

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        return fetch_file(self.api.get, ref.url)


def segment(value: object) -> str:
    """One URL path segment, escaped as Central (and pyodk's URL formatter) escape it."""
    return quote(str(value), safe=URL_SAFE)


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
