"""Pull from ODK Central's REST and OData API: submissions, deletions and attachments.

* Configuration: ``MANYI_CENTRAL_URL/USER/PASSWORD/PROJECT`` (via :class:`Settings`), else
  pyodk's own TOML file (``PYODK_CONFIG_FILE``, default ``~/.pyodk_config.toml``), read
  through pyodk's public ``Client``. Every request goes through our retry loop
  (:func:`pipelines._http.request`) on :class:`CentralClient`'s session, which publishing
  (:mod:`pipelines.publish.central`) uses too: pyodk's own requests log a server's whole
  error body, which may echo our token, and its endpoint classes are private.
* Pull, at the server's own speed: after the login, the form's versions, its file fields and
  the deletions feed (``__system/deletedAt``: Central leaves deleted submissions out of the
  feed unless the filter names it) are asked for together; then the submissions come in one
  streamed ``Submissions?$expand=*`` GET, unpaged, read as they arrive
  (:class:`~pipelines.sources._central_records.Feed`) and stored every ``page_size`` rows.
  A ``$top`` page costs Central a count of the rows (``countByFormId`` in central-backend),
  about 0.2 s each; one stream pays none and holds one page in memory.
* Incremental on ``__system/submissionDate``/``__system/updatedAt``, so edits and reviews are
  caught. The feed is newest first, so what changes while a pull reads it lands behind the
  reader: the next pull starts no later than the server's clock (its ``Date`` header) when
  this one began, less a margin, and the store's upserts make rows read twice harmless.
* Resume: the cursor stored with each page holds the last row's ``submissionDate``; a feed
  that breaks off, or a pull that is killed, continues from there with the same filter and
  ``submissionDate lt`` it. (A ``$skiptoken`` whose row has since been purged answers an
  empty page, indistinguishable from the end: Central joins on the row.) A resumed pull then
  goes round once more for what changed meanwhile.
* Quarantined submissions are asked for again by ``__id`` at the start of each pull.
* Rows become records in :mod:`pipelines.sources._central_records` (GeoJSON back to
  ``lat lon alt acc``).
* Attachments: the form's file fields (``fields?odata=true``) name each submission's files,
  and ``__system/attachmentsPresent``/``Expected`` say whether there is anything to fetch, so
  files are downloaded by name without listing every submission's attachments.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
    scrub,
    server_time,
)
from pipelines.config import check_server_url
from pipelines.errors import ConfigError, SourceError
from pipelines.records import AttachmentRef, Quarantined, Record, now_utc
from pipelines.sources._central_records import (
    NAME,
    URL_SAFE,
    FeedBroken,
    Files,
    Marks,
    next_ms,
    read_feed,
    to_record,
)
from pipelines.sources.base import KnownRecords, Page

log = logging.getLogger("manyi.central")

RETRY_BATCH = 20  # quarantined ids per `__id eq … or …` query, to keep the URL short
RESUME_TRIES = 5  # breaks in a row, with no row between them, before a feed is given up
_TOGETHER = 3  # requests sent at once: versions, fields and the deletions feed


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
        self._login_lock = threading.Lock()  # requests sent together log in once

    def __enter__(self) -> CentralClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def login(self) -> None:
        """``POST /v1/sessions`` through our retry loop, once; the token goes in the
        session's headers, and into the secrets every message is scrubbed of."""
        with self._login_lock:
            self._login()

    def _login(self) -> None:
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
        self.login()
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
    fetch_workers = 4  # attachment downloads in flight beside the feed

    def __init__(
        self,
        settings: Any,
        policy: RetryPolicy | None = None,
        page_size: int | None = None,
    ):
        # one connection per attachment worker and per request sent together, and the feed
        self.api = CentralClient(settings, policy, connections=self.fetch_workers + _TOGETHER + 1)
        self.page_size = page_size or settings.central_page_size
        self._pool = ThreadPoolExecutor(_TOGETHER, "manyi-central")
        self._asked: dict[str, tuple[Future[set[str]], Future[list[tuple[str, ...]]]]] = {}

    def __enter__(self) -> CentralSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
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

    def _ask(self, form_id: str) -> None:
        """Send the requests for what a form's rows are read with, beside whatever else is
        being asked; once per form and pull (quarantined rows and the feed share them)."""
        if form_id not in self._asked:
            self.api.login()
            self._asked[form_id] = (
                self._pool.submit(self.known_versions, form_id),
                self._pool.submit(self.binary_paths, form_id),
            )

    def _meta(self, form_id: str) -> _Meta:
        """The answers to :meth:`_ask`; the first that failed raises its own error (it names
        the URL and the status), whatever the others did."""
        self._ask(form_id)
        versions, paths = self._asked[form_id]
        return _Meta(versions.result(), Files(paths.result(), self._submissions_path(form_id)))

    def pages(
        self, form_id: str, cursor: dict[str, Any] | None, known: KnownRecords | None = None
    ) -> Iterator[Page]:
        """Deletions since ``deleted_hwm``, then submissions new or changed since ``hwm``,
        each phase one streamed GET read as it arrives (newest first) and stored every
        ``page_size`` rows. A phase's marks move only when it ends, to the earlier of the
        latest time seen and the server's clock when the phase began (less a margin,
        :data:`~pipelines.sources._central_records.CLOCK_MARGIN`): the feed is read from the newest end, so a submission that
        arrives, or an already-read row that is edited, while a pull runs is behind it.

        The deletions feed is asked for together with the form's versions and fields: it is
        usually empty, and a round trip is all it costs then."""
        marks, again = Marks.load(cursor)
        self._ask(form_id)
        opened: Future[requests.Response] | None = None
        if marks.phase == "deleted":
            opened = self._pool.submit(self._open, self._feed_url(form_id, marks))
        page = Page()
        try:
            # Their answers first: when several fail (no such form), the form's own URL says so.
            meta = self._meta(form_id)
            while True:
                if marks.phase == "deleted":
                    for row in self._rows(marks, lambda: self._feed_url(form_id, marks), opened):
                        page.rows += 1
                        _add(page, to_record(form_id, row, set(), deleted=True))
                        if _full(page, self.page_size):
                            page.cursor = marks.cursor()
                            yield page
                            page = Page()
                    # The deletions' marks go with the next page stored; a run killed before
                    # then reads the (few) deletions again.
                    opened = None
                    marks.end_phase()
                for row in self._rows(marks, lambda: self._feed_url(form_id, marks)):
                    page.rows += 1
                    item = to_record(form_id, row, meta.versions, meta.files)
                    marks.stored(item)
                    _add(page, item)
                    if _full(page, self.page_size):
                        page.cursor = marks.cursor()
                        yield page
                        page = Page()
                marks.end_phase()
                page.cursor = marks.cursor()
                yield page
                page = Page()
                # A pull that took over a phase an earlier (killed) run began goes round once
                # more: what changed since that run started is behind the resumed reader, and
                # a pull run again must end with everything the server had when it started.
                if not again:
                    return
                again = False
        finally:
            if opened is not None:
                _discard(opened)

    def refetch(self, form_id: str, ids: Sequence[str]) -> Iterator[Page]:
        """Ask again for submissions by instance id (the quarantined ones), a few per query:
        ``$filter=__id eq '…' or __id eq '…'``, unpaged (a ``$top`` costs Central a count).
        Pages carry no cursor."""
        if not ids:
            return
        meta = self._meta(form_id)
        for start in range(0, len(ids), RETRY_BATCH):
            part = ids[start : start + RETRY_BATCH]
            which = " or ".join(f"__id eq '{_odata_text(i)}'" for i in part)
            url: str | None = self._odata_url(form_id, [("$expand", "*"), ("$filter", which)])
            while url:
                body = self.api.json(self.api.get(url), ("value",))
                rows = body["value"]
                if not isinstance(rows, list):
                    raise SourceError(f"ODK Central sent a page without 'value' for {url}")
                page = Page(rows=len(rows))
                for row in rows:
                    _add(page, to_record(form_id, row, meta.versions, meta.files))
                yield page
                url = body.get("@odata.nextLink")

    def _submissions_path(self, form_id: str) -> str:
        return self.api.url(self.api.form_path(form_id) + "/submissions/")

    def _feed_url(self, form_id: str, marks: Marks) -> str:
        """The current phase's feed, from ``marks.until`` on when resuming (no ``$top``:
        each page would cost Central a count of the rows)."""
        params: list[tuple[str, str]] = []
        where = ""
        if marks.phase == "data":
            params.append(("$expand", "*"))
            if marks.hwm:
                # ge, not gt: a submission sharing the last millisecond is fetched again
                # rather than missed; the store's upsert makes that harmless.
                where = f"__system/submissionDate ge {marks.hwm} or __system/updatedAt ge {marks.hwm}"  # fmt: skip
        else:
            when = f"ge {marks.deleted_hwm}" if marks.deleted_hwm else "ne null"
            where = f"__system/deletedAt {when}"
        if marks.until:
            # The rest of a feed that broke off (or of a killed run): the feed is newest
            # first, so it is what was submitted at or before the last row read. Central
            # keeps microseconds and shows milliseconds: "lt" the next millisecond takes
            # all of the last one, and its rows already read are skipped (``Marks.saw``).
            rest = f"__system/submissionDate lt {next_ms(marks.until)}"
            where = f"({where}) and {rest}" if " or " in where else " and ".join(filter(None, (where, rest)))  # fmt: skip
        if where:
            params.append(("$filter", where))
        return self._odata_url(form_id, params)

    def _odata_url(self, form_id: str, params: list[tuple[str, str]]) -> str:
        safe = "$/*,():'"
        query = "&".join(f"{k}={quote(v, safe=safe)}" for k, v in params)
        return f"{self.api.form_path(form_id)}.svc/Submissions" + (f"?{query}" if query else "")

    def _open(self, url: str) -> requests.Response:
        """The feed's answer, its body not yet read (retried until the headers arrive)."""
        return self.api.get(url, stream=True)

    def _rows(
        self,
        marks: Marks,
        url_for: Callable[[], str],
        opened: Future[requests.Response] | None = None,
    ) -> Iterator[Any]:
        """The rows of the current phase's feed, as they arrive. After a break (a dropped
        connection, a body cut short) the rest is asked for from the last row read
        (``marks.until``), at once when rows had come since the last break, else after the
        retry policy's wait; rows sent again are skipped. A feed that says it has more
        (``@odata.nextLink``: a server that pages on its own) is followed."""
        url, tries, since = url_for(), 0, 0.0
        while True:
            resp = opened.result() if opened is not None else self._open(url)
            opened = None
            # Kept through resumes: earlier is safer. A server without a Date header (HTTP
            # requires one) gets our own clock.
            marks.started = marks.started or server_time(resp) or now_utc()
            moved, problem = False, ""
            try:
                rows, tail = read_feed(resp, lambda r: self.api.json(r, ("value",)))
                for row in rows:
                    if marks.saw(row):
                        moved = True
                        yield row
            except FeedBroken as e:
                problem = str(e)
            finally:
                resp.close()
            if not problem:
                following = tail.get("@odata.nextLink")
                if not isinstance(following, str) or not following:
                    return
                url, tries = following, 0
                continue
            url = url_for()  # from the last row read
            if moved:
                tries, since = 0, time.monotonic()
                log.info("%s: %s; asking for the rest", scrub(url, self.api.secrets), problem)
                continue
            tries += 1
            if tries == 1:
                since = time.monotonic()
            shown = self.api.url(url)
            if tries > RESUME_TRIES or not self.api.policy.pause(
                since, tries, shown, problem, secrets=self.api.secrets
            ):
                raise SourceError(
                    f"ODK Central's feed {shown} broke off {tries} time(s) in a row before "
                    f"sending another row (last: {problem}); check the connection to the "
                    "server, then pull again: the store keeps what was already pulled",
                    url=shown,
                    secrets=self.api.secrets,
                )

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
class _Meta:
    """What a form's rows are read with: its published versions and where its files are."""

    versions: set[str]
    files: Files


def _add(page: Page, item: Record | Quarantined) -> None:
    if isinstance(item, Quarantined):
        page.quarantined.append(item)
    else:
        page.records.append(item)


def _full(page: Page, size: int) -> bool:
    return len(page.records) + len(page.quarantined) >= size


def _discard(opened: Future[requests.Response]) -> None:
    """Close a feed answer asked for but not read, whenever it arrives."""
    if not opened.cancel():
        opened.add_done_callback(lambda f: f.exception() is None and f.result().close())


def _odata_text(value: str) -> str:
    return value.replace("'", "''")  # OData doubles a quote inside a string literal
