"""``manyi forms publish --to central``: put the built forms on ODK Central.

A new form, or a new version, goes up as a draft with its attachments (roster CSVs) and is
then published with the form's own version; skipped when version, XForm hash and attachment
md5s match what Central has. Requests go through the pull's logged-in session
(:class:`~pipelines.sources.central.CentralClient`) and its retry loop.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from pipelines._http import RetryPolicy, error_detail, response_error
from pipelines.errors import SourceError
from pipelines.publish.manifest import PublishReport, built_forms
from pipelines.sources.central import CentralClient, segment

# What Central answers a form it will not take (400: unparsable XML, 409: version exists);
# 401/403 keep the generic message with its advice on credentials and rights.
_REFUSALS = (400, 404, 409, 413, 415, 422)


def publish(
    settings: Any,
    form_ids: Iterable[str] | None = None,
    build_dir: Path | None = None,
    *,
    policy: RetryPolicy | None = None,
) -> PublishReport:
    """Create or update every built form (all, or ``form_ids``) of ``build_dir``.

    A new form, or a new version, goes up as a draft with its attachments (roster CSVs) and
    is then published with the form's own version. A form whose version, XForm hash and
    files match what Central has is skipped.
    """
    with CentralClient(settings, policy=policy) as api:
        report = PublishReport()
        build = Path(build_dir or settings.build_dir)
        for entry in built_forms(build, form_ids):
            _publish_one(api, build, entry, report)
        return report


def _publish_one(
    api: CentralClient, build_dir: Path, entry: dict[str, Any], report: PublishReport
) -> None:
    form_id, version, md5 = entry["form_id"], entry["version"], entry["md5"]
    xml = (build_dir / entry["xform"]).read_text(encoding="utf-8")
    files = [build_dir / a for a in entry.get("attachments", ())]
    form = api.form_path(form_id)
    resp = api.get(form, ok=(404,))
    current = api.json(resp) if resp.status_code == 200 else None
    published = bool(current and current.get("publishedAt"))
    if published and current and current.get("version") == version:
        if current.get("hash") != md5:
            raise SourceError(
                f"{form_id}: version {version} is already on ODK Central with different "
                "content; raise the form's version in its settings sheet, build and "
                "publish again"
            )
        changed = _changed_attachments(api, form_id, files)
        if not changed:
            report.skipped.append(form_id)
            return
        # Central keeps each published version's files fixed.
        raise SourceError(
            f"{form_id}: {', '.join(changed)} changed but the form version {version} did "
            "not; raise the version in the form's settings sheet, build and publish again"
        )
    if current is None:
        # A new form starts as a draft too, so its files go up before it is live.
        _post(
            api,
            form_id,
            "create the form",
            f"{api.project_path()}/forms?ignoreWarnings=true&publish=false",
            idempotent=False,
            headers={"Content-Type": "application/xml"},
            data=xml.encode("utf-8"),
        )
    else:  # a new draft replaces any old one, so sending it twice does no harm
        _post(
            api,
            form_id,
            "create a draft",
            f"{form}/draft?ignoreWarnings=true",
            headers={"Content-Type": "application/xml"},
            data=xml.encode("utf-8"),
        )
    for path in files:  # an upload replaces the draft's file of that name
        _post(
            api,
            form_id,
            f"upload {path.name}",
            f"{form}/draft/attachments/{segment(path.name)}",
            headers={
                "Content-Type": mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            },
            data=path.read_bytes(),
        )
    _post(
        api,
        form_id,
        f"publish version {version}",
        f"{form}/draft/publish?version={quote(version, safe='')}",
        idempotent=False,
    )
    (report.updated if published else report.created).append(form_id)


def _post(
    api: CentralClient, form_id: str, step: str, path: str, idempotent: bool = True, **kw: Any
) -> requests.Response:
    """One publishing request; Central's refusal (a form it cannot parse, a version it
    has) is one line naming the form and the step."""
    resp = api.send("POST", path, ok=_REFUSALS, idempotent=idempotent, **kw)
    if resp.status_code in _REFUSALS:
        raise response_error(
            resp,
            f"ODK Central refused to publish {form_id} ({step}): HTTP {resp.status_code} "
            f"{error_detail(resp, api.secrets)}; fix the form, build and publish again "
            "(forms before it were published)",
            api.secrets,
        )
    return resp


def _changed_attachments(api: CentralClient, form_id: str, files: list[Path]) -> list[str]:
    """Names of the built files whose content differs from the published form's."""
    changed = []
    for path in files:
        digest = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - Central's ETag
        url = f"{api.form_path(form_id)}/attachments/{segment(path.name)}"
        # Central answers 304 when the ETag (the file's md5) still matches.
        resp = api.get(url, ok=(404,), headers={"If-None-Match": f'"{digest}"'})
        if resp.status_code == 304:
            continue
        if resp.status_code == 200 and resp.headers.get("ETag", "").strip('W/"') == digest:
            continue
        changed.append(path.name)
    return changed
