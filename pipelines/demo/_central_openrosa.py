"""The stand-in's OpenRosa API, what ODK Collect uses: ``formList``, form manifests, the
submission pre-flight (``HEAD …/submission``), and app users' ``/v1/key/<token>/…`` routes
(their forms, the forms' files; anything else 403)."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from pipelines.demo._central_http import (
    _OPENROSA,
    FORBIDDEN,
    _CentralHandler,
    _download,
    _openrosa_error,
    _xml_reply,
)
from pipelines.demo._central_model import AppUser


class _OpenRosaRoutes(_CentralHandler):
    """formList, manifests and app users' routes."""

    def _key_route(self, method: str, user: AppUser | None, rest: list[str]) -> Any:
        central = self.central
        if rest[:2] != ["projects", str(central.project_id)]:
            return None if user else FORBIDDEN
        tail = rest[2:]
        openrosa = tail in (["formList"], ["submission"]) or tail[-1:] == ["manifest"]
        if user is None:
            self._body()
            return _openrosa_error(403, FORBIDDEN[1]["message"]) if openrosa else FORBIDDEN
        if openrosa:
            return self._openrosa(method, user, tail)
        wanted = tail[1].removesuffix(".xml") if len(tail) == 2 and tail[0] == "forms" else ""
        if tail[1:] == [f"{wanted}.xml"] and wanted in user.forms and method == "GET":
            xml = central.forms[wanted].xml
            return 200, xml, {"Content-Type": "application/xml; charset=utf-8"}
        if len(tail) == 4 and tail[0] == "forms" and tail[2] == "attachments":
            form = central.forms.get(tail[1])
            data = form.attachments.get(tail[3]) if form and tail[1] in user.forms else None
            if data is not None:
                return 200, data, {"Content-Type": "text/csv", **_download("attachment", tail[3])}  # fmt: skip
        self._body()
        return FORBIDDEN

    def _openrosa(self, method: str, user: AppUser | None, tail: list[str]) -> Any:
        """formList, manifest and the submission pre-flight; ``user`` None is the admin."""
        central = self.central
        prefix = f"{central.url}/v1" + (f"/key/{user.token}" if user else "")
        prefix += f"/projects/{central.project_id}"
        allowed = [
            f
            for f in central.forms.values()
            if f.versions and (user is None or f.form_id in user.forms)
        ]
        if tail == ["submission"] and method == "HEAD":
            return 204, None, _OPENROSA
        if tail == ["formList"] and method == "GET":
            items = []
            for f in sorted(allowed, key=lambda f: f.form_id):
                info = f.versions[0]
                manifest = (
                    f"\n      <manifestUrl>{prefix}/forms/{quote(f.form_id)}/manifest</manifestUrl>"
                    if f.attachments
                    else ""
                )
                items.append(
                    f"    <xform>\n      <formID>{escape(f.form_id)}</formID>\n"
                    f"      <name>{escape(info['name'])}</name>\n"
                    f"      <version>{escape(info['version'])}</version>\n"
                    f"      <hash>md5:{info['hash']}</hash>\n"
                    f"      <downloadUrl>{prefix}/forms/{quote(f.form_id)}.xml</downloadUrl>"
                    f"{manifest}\n    </xform>\n"
                )
            return _xml_reply(
                200,
                '<?xml version="1.0" encoding="UTF-8"?>\n  <xforms xmlns="http://openrosa.org/xforms/xformsList">\n'
                + "".join(items)
                + "  </xforms>",
                _OPENROSA,
            )
        if len(tail) == 3 and tail[2] == "manifest" and method == "GET":
            form = next((f for f in allowed if f.form_id == tail[1]), None)
            if form is None:
                return FORBIDDEN if user else None
            files = "".join(
                f"    <mediaFile>\n      <filename>{escape(n)}</filename>\n"
                f"      <hash>md5:{hashlib.md5(b).hexdigest()}</hash>\n"  # noqa: S324
                f"      <downloadUrl>{prefix}/forms/{quote(form.form_id)}/attachments/{quote(n)}</downloadUrl>\n"
                "    </mediaFile>\n"
                for n, b in form.attachments.items()
            )
            return _xml_reply(
                200,
                '<?xml version="1.0" encoding="UTF-8"?>\n  <manifest xmlns="http://openrosa.org/xforms/xformsManifest">\n'
                + files
                + "  </manifest>",
                _OPENROSA,
            )
        return None
