"""ODK Central through pyodk: pull submissions over OData, fetch attachments, publish forms.

* Configuration: ``MANYI_CENTRAL_URL/USER/PASSWORD/PROJECT`` (via :class:`Settings`), else
  pyodk's own TOML file (``PYODK_CONFIG_FILE``, default ``~/.pyodk_config.toml``).
* Pull: ``Submissions?$top=N&$expand=*`` following ``@odata.nextLink`` (pyodk's get_table does
  not follow it). Incremental on ``__system/submissionDate``/``__system/updatedAt`` so edits and
  reviews are caught; deletions come from a second query on ``__system/deletedAt`` (Central
  leaves deleted submissions out of the feed unless the filter names ``deletedAt``).
* The cursor holds the resume link, so a killed pull continues where its last page committed.
* Geopoints arrive as GeoJSON ([lon, lat, alt]) and are turned back into ``lat lon alt acc``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from pyodk._utils import config as pyodk_config
from pyodk._utils.session import Session
from pyodk.client import Client
from pyodk.errors import PyODKError

from pipelines._http import RetryPolicy, request, scrub
from pipelines.errors import ConfigError, SourceError
from pipelines.records import (
    AttachmentRef,
    Page,
    Quarantined,
    Record,
    geojson_to_xform,
    utc_text,
)

NAME = "central"


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
    path = pyodk_config.get_config_path(env.get("PYODK_CONFIG_FILE"))
    if not path.exists():
        raise ConfigError(
            "no ODK Central server configured: set MANYI_CENTRAL_URL, MANYI_CENTRAL_USER, "
            f"MANYI_CENTRAL_PASSWORD and MANYI_CENTRAL_PROJECT, or write pyodk's config {path}"
        )
    try:
        cfg = pyodk_config.read_config(path).central
    except (PyODKError, TypeError, KeyError, ValueError) as e:
        raise ConfigError(f"{path}: not a valid pyodk config ({type(e).__name__})") from None
    project = settings.central_project or cfg.default_project_id
    if not project:
        raise ConfigError(f"{path}: no default_project_id; set MANYI_CENTRAL_PROJECT")
    return CentralConfig(cfg.base_url, cfg.username, cfg.password, int(project))


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
        self.policy = policy or RetryPolicy()
        self.page_size = page_size or settings.central_page_size
        # Our own session: no token cache file on disk, and our retry policy instead of
        # pyodk's adapter (which retries only over https and hides Retry-After from us).
        session = Session(self.cfg.base_url, "v1", self.cfg.username, self.cfg.password, None)
        adapter = requests.adapters.HTTPAdapter(max_retries=0, pool_maxsize=4)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.client = Client(
            session=session,
            project_id=self.cfg.project_id,
            config=pyodk_config.Config(
                central=pyodk_config.CentralConfig(
                    self.cfg.base_url, self.cfg.username, self.cfg.password, self.cfg.project_id
                )
            ),
        )
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
        if self._logged_in:
            return
        try:
            request(
                lambda method, url, **kw: _login_response(self.session, **kw),
                "POST",
                self.session.urljoin("sessions"),
                self.policy,
                self._secrets,
                what="ODK Central",
            )
        except PyODKError as e:
            raise SourceError(
                scrub(
                    f"ODK Central at {self.cfg.base_url} refused the login for "
                    f"{self.cfg.username} ({_pyodk_status(e)}); check MANYI_CENTRAL_USER and "
                    "MANYI_CENTRAL_PASSWORD (or the pyodk config file)",
                    self._secrets,
                )
            ) from None
        self._logged_in = True

    def _get(self, url: str, ok: tuple[int, ...] = (), **kw: Any) -> requests.Response:
        self._login()
        return request(
            self.session.request,
            "GET",
            self.session.urljoin(url),
            self.policy,
            self._secrets,
            what="ODK Central",
            ok=ok,
            **kw,
        )

    def _form_path(self, form_id: str) -> str:
        return self.session.urlformat(
            "projects/{pid}/forms/{fid}", pid=self.cfg.project_id, fid=form_id
        )

    # ---- pulling ---------------------------------------------------------------------
    def known_versions(self, form_id: str) -> set[str]:
        resp = self._get(self._form_path(form_id) + "/versions")
        return {v["version"] for v in resp.json()}

    def pages(
        self, form_id: str, cursor: dict[str, Any] | None, known: Any = None
    ) -> Iterator[Page]:
        state = dict(cursor or {})
        versions = self.known_versions(form_id)
        hwm, deleted_hwm = state.get("hwm"), state.get("deleted_hwm")
        pending = state.get("pending") or hwm
        phase, url = state.get("phase", "data"), state.get("next")
        while phase in ("data", "deleted"):
            resuming = url is not None
            if url is None:
                url = self._first_url(form_id, phase, hwm, deleted_hwm)
            body = self._page(url, resuming)
            if body is None:  # the resume link went stale: start the phase again
                url = None
                continue
            rows = body.get("value")
            if not isinstance(rows, list):
                raise SourceError(f"ODK Central sent a page without 'value' for {url}")
            page = Page(rows=len(rows))
            for row in rows:
                item = _to_record(form_id, row, versions, deleted=(phase == "deleted"))
                if isinstance(item, Quarantined):
                    page.quarantined.append(item)
                    continue
                page.records.append(item)
                if phase == "data":
                    pending = _latest(pending, item.submitted_at, item.updated_at)
                else:
                    stamp = (row.get("__system") or {}).get("deletedAt")
                    deleted_hwm = _latest(deleted_hwm, utc_text(stamp))
            url = body.get("@odata.nextLink")
            if url is None and phase == "data":
                phase = "deleted"
            elif url is None:
                phase, hwm, pending = "done", pending, None
            page.cursor = {
                "hwm": hwm,
                "pending": pending,
                "deleted_hwm": deleted_hwm,
                "phase": "data" if phase == "done" else phase,
                "next": url,
            }
            yield page

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
        safe = "$/*,():'"
        query = "&".join(f"{k}={quote(v, safe=safe)}" for k, v in params)
        return f"{self._form_path(form_id)}.svc/Submissions?{query}"

    def _page(self, url: str, resuming: bool) -> dict[str, Any] | None:
        for _attempt in range(3):
            resp = self._get(url, ok=(400,) if resuming else ())
            if resp.status_code == 400:
                return None
            try:
                body = resp.json()
            except ValueError:
                continue  # a truncated page: ask again
            if isinstance(body, dict):
                return body
        raise SourceError(
            scrub(f"ODK Central sent a page that is not JSON three times for {url}", ())
        )

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        path = self.session.urlformat(
            "projects/{pid}/forms/{fid}/submissions/{iid}/attachments",
            pid=self.cfg.project_id,
            fid=record.form_id,
            iid=record.instance_id,
        )
        resp = self._get(path, ok=(404,))
        if resp.status_code == 404:
            return []
        return [
            AttachmentRef(a["name"], url=f"{path}/{quote(a['name'], safe='')}", exists=a["exists"])
            for a in resp.json()
        ]

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        resp = self._get(ref.url or "", ok=(404,), stream=True)
        if resp.status_code == 404:
            resp.close()
            return None
        return resp.iter_content(1 << 16)

    # ---- publishing ------------------------------------------------------------------
    def publish(self, build_dir: Path, form_ids: Iterable[str] | None = None) -> PublishReport:
        report = PublishReport()
        for entry in _manifest(build_dir, form_ids):
            self._publish_one(Path(build_dir), entry, report)
        return report

    def _publish_one(self, build_dir: Path, entry: dict[str, Any], report: PublishReport) -> None:
        form_id, version = entry["form_id"], entry["version"]
        xml = (build_dir / entry["xform"]).read_bytes()
        files = [build_dir / a for a in entry.get("attachments", ())]
        resp = self._get(self._form_path(form_id), ok=(404,))
        self._login()
        try:
            if resp.status_code == 404:
                self.client.forms.create(
                    definition=xml.decode("utf-8"), attachments=files, form_id=form_id
                )
                report.created.append(form_id)
                return
            current = resp.json()
            if current.get("version") == version and current.get("hash") == entry["md5"]:
                report.skipped.append(form_id)
                return
            if current.get("version") == version:
                raise SourceError(
                    f"{form_id}: version {version} is already on Central with different "
                    "content; raise the form's version in its settings sheet and build again"
                )
            self.client.forms.update(
                form_id, definition=xml.decode("utf-8"), attachments=files or None
            )
            report.updated.append(form_id)
        except PyODKError as e:
            raise SourceError(
                scrub(f"ODK Central refused to publish {form_id}: {e}", self._secrets)
            ) from None


@dataclass
class PublishReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def publish(settings: Any, form_ids: Iterable[str] | None = None) -> PublishReport:
    """``manyi forms publish --to central``: create or update every built form."""
    with CentralSource(settings) as source:
        return source.publish(Path(settings.build_dir), form_ids)


def _manifest(build_dir: Path, form_ids: Iterable[str] | None) -> list[dict[str, Any]]:
    path = Path(build_dir) / "manifest.json"
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run `manyi forms build` first")
    entries = json.loads(path.read_text(encoding="utf-8"))["forms"]
    if form_ids:
        wanted = set(form_ids)
        unknown = wanted - {e["form_id"] for e in entries}
        if unknown:
            raise ConfigError(f"{path}: no built form {', '.join(sorted(unknown))}; build it first")
        entries = [e for e in entries if e["form_id"] in wanted]
    return entries


def _login_response(session: Session, **kw: Any) -> requests.Response:
    """Log in through pyodk's own auth, but let our retry loop see network errors."""
    session.auth.login()
    resp = requests.Response()
    resp.status_code = 200
    return resp


def _latest(*stamps: str | None) -> str | None:
    return max((s for s in stamps if s), default=None)


def _pyodk_status(error: PyODKError) -> str:
    resp = error.args[1] if len(error.args) > 1 else None
    if isinstance(resp, requests.Response):
        return f"HTTP {resp.status_code}"
    return "no token"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        if "coordinates" in value and "type" in value:
            return geojson_to_xform(value)
        return {
            k: _clean(v) for k, v in value.items() if not k.startswith("__") and "@odata" not in k
        }
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _to_record(
    form_id: str, row: Any, versions: set[str], deleted: bool = False
) -> Record | Quarantined:
    raw = json.dumps(row, ensure_ascii=False)[:20000]
    if not isinstance(row, dict):
        return Quarantined(NAME, form_id, "row is not a JSON object", raw)
    iid = row.get("__id")
    system = row.get("__system")
    if not isinstance(iid, str) or not iid:
        return Quarantined(NAME, form_id, "row has no __id (instance id)", raw)
    if not isinstance(system, dict):
        return Quarantined(NAME, form_id, "row has no __system block", raw, iid)
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    if not deleted and not meta.get("instanceID"):
        return Quarantined(
            NAME,
            form_id,
            f"no meta/instanceID in the submission (Central made up the id {iid}); "
            "the XML sent was probably truncated",
            raw,
            iid,
        )
    version = system.get("formVersion")
    if not deleted and versions and version not in versions:
        return Quarantined(
            NAME,
            form_id,
            f"unknown form version {version!r} (published: {', '.join(sorted(versions))})",
            raw,
            iid,
        )
    try:
        data = _clean(row)
        submitted = utc_text(system.get("submissionDate"))
        updated = utc_text(system.get("updatedAt"))
    except (ValueError, TypeError, KeyError) as e:
        return Quarantined(NAME, form_id, f"unreadable value: {e}", raw, iid)
    return Record(
        form_id=form_id,
        instance_id=iid,
        form_version=version,
        submitted_at=submitted,
        updated_at=updated,
        review_state=system.get("reviewState"),
        data=data,
        deleted=deleted or bool(system.get("deletedAt")),
        attachments_expected=int(system.get("attachmentsExpected") or 0),
        source_version=updated or submitted,
    )
