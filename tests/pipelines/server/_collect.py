"""An OpenRosa client that behaves as ODK Collect does (getodk/collect: ``open-rosa/`` and
``instancemanagement/send/``), over real HTTP:

* every request carries Collect's ``User-Agent``, ``X-OpenRosa-Version: 1.0``, a GMT ``Date``
  (12-hour clock, as Collect formats it), ``Accept-Encoding: gzip`` and ``?deviceID=collect:…``;
* the form list must be ``text/xml`` with an ``X-OpenRosa-Version`` header, and every
  ``<xform>`` needs formID, name, downloadUrl and an ``md5:`` hash, else the list is refused;
* a send starts with a HEAD preflight (204 and ``X-OpenRosa-Accept-Content-Length``, default
  10,000,000), then POSTs multipart with ``xml_submission_file`` and one part per file named as
  the XML names it; files past the accepted length go in further POSTs of the same XML, all but
  the last marked ``*isIncomplete*=yes``;
* 201/202 is success, 200 is a login failure, anything else shows the OpenRosaResponse message;
  a lost answer is retried with the identical bytes.
"""

from __future__ import annotations

import hashlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

USER_AGENT = (
    "org.odk.collect.android/v2025.3.1 Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7 Build/UQ1A)"
)
_XFORMS = "{http://openrosa.org/xforms/xformsList}"
_MANIFEST = "{http://openrosa.org/xforms/xformsManifest}"
_RESPONSE = "{http://openrosa.org/http/response}"


class CollectError(Exception):
    """What Collect would show the user."""


@dataclass(frozen=True)
class FormEntry:
    form_id: str
    name: str
    version: str | None
    hash: str
    download_url: str
    manifest_url: str | None


@dataclass
class Downloaded:
    entry: FormEntry
    xml: bytes
    media: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    status: int
    message: str
    headers: httpx.Headers


def collect_date(now: datetime | None = None) -> str:
    # Collect: SimpleDateFormat("E, dd MMM yyyy hh:mm:ss zz", Locale.US) in GMT: a 12-hour clock.
    return (now or datetime.now(UTC)).strftime("%a, %d %b %Y %I:%M:%S GMT")


def multipart(
    xml: bytes, files: dict[str, bytes], title: str, incomplete: bool
) -> tuple[bytes, str]:
    """The body Collect's OkHttp builds: UUID boundary, each part with its own type and length."""
    boundary = str(uuid.uuid4())
    parts = []

    def part(name: str, filename: str | None, ctype: str, data: bytes) -> None:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = (
            f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        parts.append(head.encode("utf-8") + data + b"\r\n")

    stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H-%M-%S")
    part("xml_submission_file", f"{title}_{stamp}.xml", "text/xml", xml)
    for name, data in files.items():
        part(
            name, name, "image/jpeg" if name.endswith(".jpg") else "application/octet-stream", data
        )
    if incomplete:
        part("*isIncomplete*", None, "text/plain; charset=utf-8", b"yes")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Collect:
    """One phone, set to ``server_url`` (a person's collection link)."""

    def __init__(
        self,
        server_url: str,
        device: str = "collect:Ab12Cd34Ef56Gh78",
        retries: int = 3,
        timeout: float = 30,
    ):
        self.url = server_url.rstrip("/")
        self.device = device
        self.retries = retries
        self.http = httpx.Client(timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Collect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers(self) -> dict[str, str]:
        return {
            "User-Agent": USER_AGENT,
            "X-OpenRosa-Version": "1.0",
            "Date": collect_date(),
            "Accept-Encoding": "gzip",
            "Connection": "Keep-Alive",
        }

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        params = {"deviceID": self.device}
        return self.http.request(
            method, url, params=params, headers={**self.headers(), **kw.pop("headers", {})}, **kw
        )

    # ---- forms -------------------------------------------------------------------------
    def form_list(self) -> list[FormEntry]:
        r = self.request("GET", f"{self.url}/formList")
        if r.status_code != 200:
            raise CollectError(f"formList: HTTP {r.status_code}")
        if "text/xml" not in r.headers.get("content-type", ""):
            raise CollectError("formList is not text/xml: a network proxy may be in the way")
        if "X-OpenRosa-Version" not in r.headers:
            raise CollectError("not an OpenRosa server (no X-OpenRosa-Version header)")
        root = ET.fromstring(r.content)  # noqa: S314 - our own test server
        if root.tag != f"{_XFORMS}xforms":
            raise CollectError(f"formList root is {root.tag}")
        out = []
        for x in root.iter(f"{_XFORMS}xform"):
            get = lambda tag, x=x: x.findtext(f"{_XFORMS}{tag}") or None  # noqa: E731
            entry = FormEntry(
                get("formID"),
                get("name"),
                get("version"),
                get("hash"),
                get("downloadUrl"),
                get("manifestUrl"),
            )
            if not (entry.form_id and entry.name and entry.download_url):
                raise CollectError(
                    "formList entry lacks formID, name or downloadUrl: whole list refused"
                )
            if not (entry.hash or "").startswith("md5:"):
                raise CollectError(f"{entry.form_id}: no md5 hash, cannot download")
            out.append(entry)
        return out

    def download(self, entry: FormEntry) -> Downloaded:
        r = self.request("GET", entry.download_url)
        if r.status_code != 200:
            raise CollectError(f"{entry.form_id}: download HTTP {r.status_code}")
        if "md5:" + hashlib.md5(r.content, usedforsecurity=False).hexdigest() != entry.hash:
            raise CollectError(f"{entry.form_id}: listed hash differs from the bytes served")
        got = Downloaded(entry, r.content)
        if entry.manifest_url:
            m = self.request("GET", entry.manifest_url)
            if m.status_code != 200 or "text/xml" not in m.headers.get("content-type", ""):
                raise CollectError(f"{entry.form_id}: manifest HTTP {m.status_code}")
            if "X-OpenRosa-Version" not in m.headers:
                raise CollectError("manifest without X-OpenRosa-Version")
            for f in ET.fromstring(m.content).iter(f"{_MANIFEST}mediaFile"):  # noqa: S314
                name, md5, url = (
                    f.findtext(f"{_MANIFEST}{t}") for t in ("filename", "hash", "downloadUrl")
                )
                if not (name and md5 and url):
                    raise CollectError(
                        f"{entry.form_id}: mediaFile lacks filename, hash or downloadUrl"
                    )
                d = self.request("GET", url)
                if (
                    d.status_code != 200
                    or "md5:" + hashlib.md5(d.content, usedforsecurity=False).hexdigest() != md5
                ):
                    raise CollectError(
                        f"{entry.form_id}: {name}: HTTP {d.status_code} or hash mismatch"
                    )
                got.media[name] = d.content
        return got

    # ---- sending -----------------------------------------------------------------------
    def preflight(self) -> int:
        r = self.request("HEAD", f"{self.url}/submission")
        if r.status_code == 204:
            return int(r.headers.get("X-OpenRosa-Accept-Content-Length") or 10_000_000)
        if r.status_code == 401:
            raise CollectError("server asks for credentials")
        if 200 <= r.status_code < 300:
            raise CollectError(
                f"Is this an OpenRosa submission endpoint? (HEAD answered {r.status_code})"
            )
        return 10_000_000  # other codes: Collect POSTs anyway

    def send(
        self, xml: bytes, files: dict[str, bytes] | None = None, title: str = "表单"
    ) -> list[Answer]:
        """Send one filled form as Collect does; the answers of each POST (a split upload
        makes several). Raises :class:`CollectError` with what Collect would show."""
        files = dict(files or {})
        limit = self.preflight()
        batches: list[dict[str, bytes]] = [{}]
        size = len(xml)
        for name, data in files.items():
            if batches[-1] and size + len(data) > limit:
                batches.append({})
                size = len(xml)
            batches[-1][name] = data
            size += len(data)
        answers = []
        for i, batch in enumerate(batches):
            body, ctype = multipart(xml, batch, title, incomplete=i < len(batches) - 1)
            answers.append(self.post(body, ctype))
        return answers

    def post(self, body: bytes, ctype: str) -> Answer:
        """One POST, retried with the identical bytes when the answer is lost or 5xx."""
        last: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                r = self.request(
                    "POST", f"{self.url}/submission", content=body, headers={"Content-Type": ctype}
                )
            except httpx.TransportError as e:
                last = e
                continue
            answer = Answer(r.status_code, _message(r.content), r.headers)
            if r.status_code >= 500:
                last = CollectError(f"HTTP {r.status_code}: {answer.message}")
                continue
            return answer
        raise CollectError(f"sending failed: {last}")


def _message(body: bytes) -> str:
    try:
        root = ET.fromstring(body)  # noqa: S314
    except ET.ParseError:
        return body.decode("utf-8", "replace")[:200]
    return root.findtext(f"{_RESPONSE}message") or ""


def ok(answer: Answer) -> bool:
    """Collect's reading: 201/202 success; 200 is a login failure; 204 an error."""
    return answer.status in (201, 202)
