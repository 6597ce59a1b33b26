"""``manyi forms publish --to kobo``: put the built forms on KoboToolbox (kpi API v2).

``POST /api/v2/imports/`` (the built XLSForm, ``library=false``, and ``destination`` when
the project exists), poll the import, replace changed media files (roster CSVs) under
``/files/``, then ``POST`` (first time) or ``PATCH`` (with the current ``version_id``) the
deployment. kpi keeps no hash of our build, so what was published is remembered in the
store's publish ledger and a form is skipped only while the server still deploys it; the
ledger also lets ``manyi pull`` find a published form by its form id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from pipelines._http import RetryPolicy, error_detail, quoted, response_error
from pipelines.errors import SourceError
from pipelines.publish.manifest import PublishReport, built_forms
from pipelines.sources.kobo import NAME, KoboClient
from pipelines.store import Published, Store, open_store

_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def publish(
    settings: Any,
    form_ids: Iterable[str] | None = None,
    build_dir: Path | None = None,
    *,
    policy: RetryPolicy | None = None,
) -> PublishReport:
    """Import, then deploy or redeploy, every built form (all, or ``form_ids``).

    The form's roster CSVs go up as the project's media. A form whose version, build hash
    and media are what this manyi last deployed, and which KoboToolbox still deploys, is
    skipped.
    """
    with open_store(settings) as store, KoboClient(settings, policy=policy) as api:
        return _Publisher(api, store).publish(Path(build_dir or settings.build_dir), form_ids)


class _Publisher:
    """One publish run: the server's session and the store's publish ledger."""

    def __init__(self, api: KoboClient, store: Store):
        self.api, self.store = api, store

    def publish(self, build_dir: Path, form_ids: Iterable[str] | None) -> PublishReport:
        report = PublishReport()
        ledger = self.store.published(NAME)
        for entry in built_forms(build_dir, form_ids):
            self._publish_one(build_dir, entry, ledger.get(entry["form_id"]), report)
        return report

    def _publish_one(
        self,
        build_dir: Path,
        entry: dict[str, Any],
        led: Published | None,
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
        self.store.note_published(Published(NAME, form_id, uid, version, md5, media, deployed))
        (report.updated if asset else report.created).append(form_id)

    def _asset(self, uid: str) -> dict[str, Any] | None:
        resp = self.api.get(f"{self.api.base}/api/v2/assets/{uid}/?format=json", ok=(404,))
        return self.api.json(resp, ("uid",)) if resp.status_code == 200 else None

    def _find_asset(self, form_id: str, title: str, led: Published | None) -> dict[str, Any] | None:
        """The project holding this form: the one published last time, else the one survey
        named after the form's title (or id), else None."""
        if led:
            asset = self._asset(led.remote_id)
            if asset is not None:
                return asset
        named = [
            uid
            for uid, a in self.api.assets().items()
            if a.get("asset_type") == "survey" and a.get("name") in (title, form_id)
        ]
        if len(named) > 1:
            raise SourceError(
                f"KoboToolbox at {self.api.base} has {len(named)} projects named {title!r} "
                f"({', '.join(sorted(named))}); archive or rename all but one, then publish "
                f"{form_id} again"
            )
        return self._asset(named[0]) if named else None

    def _import(self, form_id: str, title: str, xlsx: Path, asset: dict[str, Any] | None) -> str:
        """Import the XLSForm (into ``asset`` when given) and wait for kpi to finish."""
        # library=false: left out, kpi files the upload as a library block, not a project
        data = {"library": "false", "name": title}
        if asset:  # built here: kpi copies ?format=json into the url it returns
            data["destination"] = f"{self.api.base}/api/v2/assets/{asset['uid']}/"
        resp = self.api.send(
            "POST",
            f"{self.api.base}/api/v2/imports/",
            files={"file": (xlsx.name, xlsx.read_bytes(), _XLSX)},
            data=data,
            idempotent=False,
        )
        task = self.api.json(resp, ("uid",))
        url = f"{self.api.base}/api/v2/imports/{task['uid']}/"
        started, attempt = time.monotonic(), 0
        while True:
            body = self.api.json(self.api.get(url))
            status, messages = body.get("status"), body.get("messages") or {}
            if status == "complete":
                done = messages.get("updated") or messages.get("created") or []
                if done and done[0].get("uid"):
                    self.api.forget_assets()  # the project list has changed
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
                    f"{quoted(said, self.api.secrets)}; fix the form, build and publish again",
                    url=url,
                    detail=quoted(said, self.api.secrets),
                    secrets=self.api.secrets,
                )
            attempt += 1
            state = quoted(str(status), limit=40)
            problem = f"import still {state!r}"
            if not self.api.policy.pause(started, attempt, url, problem, secrets=self.api.secrets):
                raise SourceError(
                    f"KoboToolbox was still importing {form_id} after "
                    f"{time.monotonic() - started:.0f} s (status {state!r}, {url}); publish "
                    "again later, or wait longer with http_give_up_s (now "
                    f"{self.api.policy.max_seconds:g} s)",
                    url=url,
                    secrets=self.api.secrets,
                )

    def _asset_files(self, uid: str) -> dict[str, tuple[str, str]]:
        """The project's form media: file name → (file uid, ``md5:<hex>``)."""
        out: dict[str, tuple[str, str]] = {}
        url: str | None = f"{self.api.base}/api/v2/assets/{uid}/files/?file_type=form_media"
        while url:
            body = self.api.json(self.api.get(url), ("results",), rows="results")
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
                self.api.send(
                    "DELETE", f"{self.api.base}/api/v2/assets/{uid}/files/{old[0]}/", ok=(404,)
                )
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
            payload = base64.b64encode(path.read_bytes()).decode("ascii")
            resp = self.api.send(
                "POST",
                f"{self.api.base}/api/v2/assets/{uid}/files/",
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
                raise self._refused(resp, f"{name} for {form_id}", "file")

    def _deploy(self, form_id: str, uid: str) -> str | None:
        """Deploy (first time) or redeploy the project's current version; its version id."""
        url = f"{self.api.base}/api/v2/assets/{uid}/deployment/"
        asset = self._asset(uid) or {}
        resp = None
        if not asset.get("has_deployment"):
            resp = self.api.send("POST", url, json={"active": True}, ok=(400, 405))
        if resp is None or resp.status_code == 405:  # 405: deployed already, PATCH it
            asset = self._asset(uid) or asset
            resp = self.api.send(
                "PATCH",
                url,
                json={"version_id": asset.get("version_id"), "active": True},
                ok=(400,),
            )
        if resp.status_code == 400:
            raise self._refused(resp, f"to deploy {form_id} (project {uid})", "form")
        return self.api.json(resp).get("version_id")

    def _refused(self, resp: requests.Response, what: str, fix: str) -> SourceError:
        """kpi's 400 to a file or a deployment, as one line naming the form."""
        return response_error(
            resp,
            f"KoboToolbox refused {what}: {error_detail(resp, self.api.secrets)}; fix the "
            f"{fix}, build and publish again",
            self.api.secrets,
        )
