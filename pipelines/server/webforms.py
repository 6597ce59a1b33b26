"""ODK Web Forms in the phone browser: the vendored engine, its static files and two pages.

A person's collection link opened in a browser shows their forms (`render_form_list`); each
opens in ODK Web Forms (`render_fill_page`), the engine ODK Central uses, served from
``static/vendor/`` so a phone needs neither a CDN nor the internet. The pages keep every
filled form in the browser's IndexedDB until the server answers 201 (``static/outbox.js``):
no signal or a server error never loses a cadre's answers.

This module has no routes of its own and knows nothing of people or tokens: the server mounts
`static_mount()` and renders these pages under ``/key/{token}/``. Refresh the engine with
``scripts/refresh-webforms.sh`` (see ``static/vendor/README.md``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from jinja2 import Environment, FileSystemLoader
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEBFORMS_VERSION = "0.22.0"
VUE_VERSION = "3.5.29"
STATIC_DIR = Path(__file__).parent / "static"
_TEMPLATES = Path(__file__).parent / "templates"
_VENDOR_PREFIX = "vendor/"
# Vendor folders carry their version in the name: a phone fetches them once per version.
_IMMUTABLE = "public, max-age=31536000, immutable"
# manyi's own pages' scripts change with manyi: revalidate (ETag) on every load.
_REVALIDATE = "no-cache"
RETRY_SECONDS = 30

_env = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


class ListedForm(Protocol):
    """What the list needs of a form: `forms.build.BuiltForm` and `FormInfo` both fit."""

    form_id: str
    title: str
    version: str


class _StaticFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        vendored = path.replace("\\", "/").startswith(_VENDOR_PREFIX)
        response.headers["Cache-Control"] = _IMMUTABLE if vendored else _REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def static_mount(path: str = "/static") -> Mount:
    """The static files (engine, Vue, manyi's page scripts) as a Starlette mount at ``path``."""
    return Mount(path, app=_StaticFiles(directory=STATIC_DIR), name="static")


def render_form_list(
    person_name: str,
    forms: Iterable[ListedForm],
    links: Mapping[str, str],
    *,
    submission_url: str,
    static_url: str = "/static",
) -> str:
    """The person's forms (Chinese titles, version, a 填写 link each, from ``links`` by form_id)
    and how many of their filled forms wait in this browser (待发送 N 份). Opening the list also
    sends what waits, to ``submission_url`` or wherever each form was filled for."""
    static_url = static_url.rstrip("/")
    rows = [
        {"form_id": f.form_id, "title": f.title, "version": f.version, "url": links[f.form_id]}
        for f in forms
        if f.form_id in links
    ]
    config = {"submissionUrl": submission_url, "retryMs": RETRY_SECONDS * 1000}
    return _env.get_template("form_list.html.j2").render(
        person_name=person_name,
        forms=rows,
        static_url=static_url,
        config=config,
        **_scripts(static_url),
    )


def render_fill_page(
    form_title: str,
    form_xml_url: str,
    attachment_base_url: str,
    submission_url: str,
    static_url: str = "/static",
    *,
    back_url: str | None = None,
    username: str | None = None,
    retry_seconds: float = RETRY_SECONDS,
    csrf_token: str | None = None,
) -> str:
    """The page that fills one form in ODK Web Forms.

    ``jr://file/<name>`` and ``jr://file-csv/<name>`` resolve to ``attachment_base_url + name``.
    Send keeps the answers (XML and photos) in IndexedDB, then posts them as OpenRosa multipart
    to ``submission_url``; they leave the browser only on 201/202, and are retried on load, when
    the phone comes back online and every ``retry_seconds``. ``username`` fills the form's
    ``username`` meta question.

    With ``csrf_token`` (the portal's pages, signed in by the session cookie) the form, its
    files and the submission are fetched with the cookie, and the submission carries the
    token as ``X-CSRF-Token``; without it (a collection link) no cookie is ever sent."""
    static_url = static_url.rstrip("/")
    config = {
        "formTitle": form_title,
        "formXmlUrl": form_xml_url,
        "attachmentBaseUrl": attachment_base_url,
        "submissionUrl": submission_url,
        "username": username,
        "retryMs": int(retry_seconds * 1000),
    }
    if csrf_token:
        config["csrfToken"] = csrf_token
    return _env.get_template("fill.html.j2").render(
        form_title=form_title,
        back_url=back_url,
        static_url=static_url,
        config=config,
        **_scripts(static_url),
    )


def _scripts(static_url: str) -> dict[str, str]:
    """The import map (``vue`` and the engine by bare name, so manyi's scripts need no
    version) and the page's Content-Security-Policy, which allows that one inline script by
    its hash and no host but this one."""
    vendor = f"{static_url}/vendor"
    import_map = json.dumps(
        {
            "imports": {
                "vue": f"{vendor}/vue-{VUE_VERSION}/vue.esm-browser.prod.js",
                "@getodk/web-forms": f"{vendor}/webforms-{WEBFORMS_VERSION}/index.js",
            }
        },
        ensure_ascii=False,
    ).replace("</", "<\\/")
    digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
    csp = "; ".join(
        [
            "default-src 'self'",
            # the import map by hash; wasm-unsafe-eval: the XPath parser is WebAssembly
            f"script-src 'self' 'sha256-{digest}' 'wasm-unsafe-eval'",
            "style-src 'self' 'unsafe-inline'",  # the engine injects its CSS at run time
            "font-src 'self' data:",
            "img-src 'self' data: blob:",
            "media-src 'self' data: blob:",
            "connect-src 'self' data: blob:",
            "worker-src 'self' blob: data:",  # the photo shrinker's worker is a data: URL
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )
    return {"import_map": import_map, "csp": csp}
