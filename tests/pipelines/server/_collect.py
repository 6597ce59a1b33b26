"""An OpenRosa client that behaves as ODK Collect does, over real HTTP.

Followed line by line from Collect's own code, getodk/collect at commit
137f3259b18e5af3c08339f9016278b277812cc2 (2026-08-20, "Merge pull request #7362"):

* ``open-rosa/src/main/java/org/odk/collect/openrosa/``
  ``http/okhttp/OkHttpConnection.java`` (GET/HEAD/POST, the split loop at 153-199),
  ``http/okhttp/OkHttpOpenRosaServerClientProvider.java`` (headers 113-126, timeouts,
  redirects), ``http/HttpGetResult.java`` (``isOpenRosaResponse``),
  ``http/CollectThenSystemContentTypeMapper.java``, ``http/OpenRosaConstants.kt``,
  ``forms/OpenRosaClient.kt`` (formList/manifest/form/media fetches),
  ``forms/OpenRosaXmlFetcher.java`` (``deviceID``, the ``text/xml`` check),
  ``parse/Kxml2OpenRosaResponseParser.kt`` (formList 23-141, manifest 143-239);
* ``collect_app/src/main/java/org/odk/collect/android/``
  ``instancemanagement/send/OpenRosaServerInstanceUploader.kt`` (HEAD preflight 61-150,
  answer reading 179-224, files sent 227-246, submission URL 256-274),
  ``instancemanagement/send/InstanceSubmitter.kt`` (no retry of a failed send),
  ``formmanagement/ServerFormUseCases.kt`` (form-list types 29-85, media 140-256),
  ``formmanagement/download/ServerFormDownloader.java`` (no hash: 58-66, 266-285),
  ``instancemanagement/LocalInstancesUseCases.kt`` and ``utilities/FormNameUtils.java`` (the
  XML file name), ``utilities/ResponseMessageParser.java``, ``utilities/AndroidUserAgent.java``;
* ``metadata/.../InstallIDProvider.kt`` (``collect:`` + 16 characters) and
  ``entities/.../javarosa/parse/StringExt.kt`` (``appendQueryParameter``).

What it does, as Collect does:

* every request carries ``User-Agent: org.odk.collect.android/<version> <http.agent>``,
  ``X-OpenRosa-Version: 1.0`` and a ``Date`` formatted ``E, dd MMM yyyy hh:mm:ss zz`` in GMT (a
  12-hour clock), plus OkHttp's ``Accept-Encoding: gzip`` and ``Connection: Keep-Alive``; every
  URL (formList, form, manifest, media, HEAD, POST) gets ``deviceID`` appended, encoded as
  Android's ``Uri.Builder`` does (``collect%3A…``);
* formList: 200 only; a ``Content-Type`` that is present must contain ``text/xml``; an
  ``X-OpenRosa-Version`` header (any value); root ``xforms`` in the xformsList namespace (case
  ignored); only direct ``<xform>`` children in that namespace; text trimmed, empty means absent;
  an entry without formID, name or downloadUrl refuses the whole list; a hash not starting with
  ``md5:`` is dropped (the form then cannot be downloaded), a present but empty ``<hash/>`` is a
  NullPointerException in Collect; a blank version is none;
* manifest: same fetch rules; root ``manifest``; each ``mediaFile`` needs filename (reduced to its
  base name), hash (Collect cuts 4 characters off, whatever they are) and downloadUrl, else the
  whole manifest is refused; Collect *swallows* a manifest failure when it lists forms
  (the form is then offered without its media); the form and media downloads check only 200;
* sending: HEAD first (204: read ``X-OpenRosa-Accept-Content-Length``, default 10,000,000, an
  unparsable value keeps the default; follow a ``Location`` on the same host only, and then
  skip the HEAD for later sends; 401: credentials; another 2xx: "Is this an OpenRosa submission
  endpoint?"; anything else: POST anyway); then multipart POSTs with a UUID boundary:
  ``xml_submission_file`` (file name ``<form name sanitised>_<yyyy-MM-dd_HH-mm-ss>.xml``,
  ``text/xml``) and one part per file, name = filename, typed by extension; after a file, if
  the next one would pass the accepted length (XML + files so far + next > length) or the POST
  already has more than 100 files, the POST is closed with a ``*isIncomplete*`` = ``yes`` field
  (no Content-Type) and the rest go in further POSTs of the same XML; the first answer that is
  not 201/202 stops the send; 204 is an exception;
* answers: 201/202 success (the OpenRosaResponse ``<message>`` is shown); 200 "Network login
  failure? Again?"; 401 the reason phrase; else the ``<message>`` if the body has one; 400
  "please make sure the form is configured to accept submissions"; else the reason phrase;
* retries: only OkHttp's own, on a broken connection, with the identical bytes
  (``retryOnConnectionFailure``); a 5xx is *not* retried: the form stays "failed" and a later send
  builds a new body (new boundary, same file name).

Where this client is stricter than Collect, it says so: :meth:`Collect.download` raises when the
listed md5 or a manifest md5 differs from the bytes served, because Collect would then show the
form as changed at every refresh (``ServerFormUseCases.kt`` 39-73, 313-328), and a manifest that
Collect would silently skip is an error here.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import unicodedata
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

import httpx

COLLECT_COMMIT = "137f3259b18e5af3c08339f9016278b277812cc2"
USER_AGENT = (
    "org.odk.collect.android/v2025.3.1 Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7 Build/UQ1A)"
)
DEFAULT_ACCEPT_LENGTH = 10_000_000  # OpenRosaServerInstanceUploader.kt:61
MAX_FILES_PER_POST = 100  # OkHttpConnection.java:180
_URI_SAFE = "_-!.~'()*"  # android.net.Uri.encode leaves these (and letters, digits)
_XFORMS_NS = "http://openrosa.org/xforms/xformsList"
_MANIFEST_NS = "http://openrosa.org/xforms/xformsManifest"
_RESPONSE = "{http://openrosa.org/http/response}"
# CollectThenSystemContentTypeMapper: Collect's own four, then Android's MimeTypeMap.
_COLLECT_TYPES = {"amr": "audio/amr", "oga": "audio/ogg", "ogv": "video/ogg", "webm": "video/webm"}
_ANDROID_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png",
                  "csv": "text/comma-separated-values", "3gp": "video/3gpp", "mp4": "video/mp4",
                  "m4a": "audio/mpeg", "mp3": "audio/mpeg", "xml": "text/xml"}  # fmt: skip


class CollectError(Exception):
    """What Collect would show the user (or, where marked, what it would get wrong)."""


@dataclass(frozen=True)
class FormEntry:
    form_id: str
    name: str
    version: str | None
    hash: str | None  # as listed, "md5:…"; None when Collect drops it
    download_url: str
    manifest_url: str | None


@dataclass(frozen=True)
class MediaEntry:
    filename: str
    hash: str  # what Collect keeps: the listed text without its first 4 characters
    download_url: str
    type: str | None


@dataclass
class Downloaded:
    entry: FormEntry
    xml: bytes
    media: dict[str, bytes] = field(default_factory=dict)

    @property
    def md5(self) -> str:
        return _md5(self.xml)


@dataclass(frozen=True)
class Answer:
    status: int
    message: str
    headers: httpx.Headers
    reason: str = ""
    has_message: bool = False  # ResponseMessageParser.isValid


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def collect_date(now: datetime | None = None) -> str:
    # OkHttpOpenRosaServerClientProvider.java:122-126: "E, dd MMM yyyy hh:mm:ss zz", Locale.US,
    # GMT: a 12-hour clock with no AM/PM.
    return (now or datetime.now(UTC)).strftime("%a, %d %b %Y %I:%M:%S GMT")


def with_device_id(url: str, device: str | None) -> str:
    """``StringExt.toUri("deviceID" to id)``: Android's ``appendQueryParameter`` encodes all but
    letters, digits and ``_-!.~'()*``."""
    if device is None:
        return url
    sep = "&" if urlsplit(url).query else ("" if url.endswith("?") else "?")
    return f"{url}{sep}deviceID={quote(device, safe=_URI_SAFE)}"


def instance_file_name(title: str, created: datetime | None = None) -> str:
    """``LocalInstancesUseCases.createInstanceFile``: ``FormNameUtils.formatFilenameFromFormName``
    (letters and digits kept, the rest spaces, runs of spaces one, trimmed) + the local time."""
    kept = "".join(
        ch if unicodedata.category(ch).startswith("L") or unicodedata.category(ch) == "Nd" else " "
        for ch in title
    )
    name = " ".join(kept.split())
    stamp = (created or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    return f"{name}_{stamp}.xml"


def content_type_of(file_name: str) -> str:
    ext = file_name.rsplit(".", 1)[1].lower() if "." in file_name else ""
    return (
        _COLLECT_TYPES.get(ext)
        or _ANDROID_TYPES.get(ext)
        or (mimetypes.types_map.get(f".{ext}") if ext else None)
        or "application/octet-stream"
    )


def _quoted(value: str) -> str:
    # OkHttp MultipartBody.appendQuotedString: only \n, \r and " are escaped; UTF-8 as is.
    return '"' + value.replace("\n", "%0A").replace("\r", "%0D").replace('"', "%22") + '"'


def multipart(
    xml: bytes,
    files: dict[str, bytes],
    title: str,
    incomplete: bool,
    *,
    xml_name: str | None = None,
    boundary: str | None = None,
) -> tuple[bytes, str]:
    """The body OkHttp's ``MultipartBody`` writes for one of Collect's POSTs
    (``OkHttpConnection.uploadSubmissionAndFiles``): UUID boundary; per part the
    Content-Disposition, its Content-Type if any, its Content-Length; ``*isIncomplete*`` last,
    a plain field with no Content-Type."""
    boundary = boundary or str(uuid.uuid4())
    parts = []

    def part(name: str, filename: str | None, ctype: str | None, data: bytes) -> None:
        disp = "form-data; name=" + _quoted(name)
        if filename is not None:
            disp += "; filename=" + _quoted(filename)
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
        if ctype is not None:
            head += f"Content-Type: {ctype}\r\n"
        head += f"Content-Length: {len(data)}\r\n\r\n"
        parts.append(head.encode("utf-8") + data + b"\r\n")

    part("xml_submission_file", xml_name or instance_file_name(title), "text/xml", xml)
    for name, data in files.items():
        part(name, name, content_type_of(name), data)
    if incomplete:
        part("*isIncomplete*", None, None, b"yes")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def split(xml_size: int, sizes: list[int], limit: int) -> list[list[int]]:
    """The indexes of the files each POST carries (``OkHttpConnection.java`` 153-199): one POST
    at least; after a file, close the POST if the next file would take XML + files so far past
    ``limit`` or the POST already holds more than 100 files."""
    batches: list[list[int]] = []
    i, first = 0, True
    while i < len(sizes) or first:
        first, last, count, batch = False, i, xml_size, []
        while i < len(sizes):
            batch.append(i)
            count += sizes[i]
            if i + 1 < len(sizes) and (
                i - last + 1 > MAX_FILES_PER_POST or count + sizes[i + 1] > limit
            ):
                i += 1
                break
            i += 1
        batches.append(batch)
    return batches


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _text(el: ET.Element) -> str | None:
    """javarosa ``XFormParser.getXMLText(node, trim=true)``: the element's own text nodes,
    trimmed; None when it has none."""
    pieces = [el.text] if el.text is not None else []
    pieces += [c.tail for c in el if c.tail is not None]
    return "".join(pieces).strip() if pieces else None


def _children(el: ET.Element, ns: str) -> list[tuple[str, ET.Element]]:
    out = []
    for c in el:
        if not isinstance(c.tag, str):
            continue  # comments, processing instructions
        cns, local = _split_tag(c.tag)
        if cns.lower() == ns.lower():  # hasNamespace: equals(ignoreCase = true)
            out.append((local, c))
    return out


def parse_form_list(content: bytes) -> list[FormEntry]:
    """``Kxml2OpenRosaResponseParser.parseFormList`` (lines 23-141)."""
    try:
        root = ET.fromstring(content)  # noqa: S314 - our own test server
    except ET.ParseError as e:
        raise CollectError(f"formList is not XML: {e}") from e
    ns, local = _split_tag(root.tag)
    if local != "xforms" or ns.lower() != _XFORMS_NS.lower():
        raise CollectError(f"formList root is {root.tag}: ParseError")
    out = []
    for name, xform in _children(root, _XFORMS_NS):
        if name.lower() != "xform":
            continue  # someone else's extension
        got: dict[str, str | None] = {}
        for tag, child in _children(xform, _XFORMS_NS):
            if tag in ("formID", "name", "downloadUrl", "manifestUrl"):
                got[tag] = _text(child) or None  # empty is null
            elif tag == "version":
                got[tag] = _text(child) or None  # isBlank is null
            elif tag == "hash":
                text = _text(child)
                if text is None:  # line 121-126: hash.substring on null
                    raise CollectError("formList: an empty <hash/> crashes Collect (NPE)")
                got[tag] = text if text.startswith("md5:") else None
        if not (got.get("formID") and got.get("name") and got.get("downloadUrl")):
            raise CollectError(
                "formList entry lacks formID, name or downloadUrl: whole list refused (ParseError)"
            )
        out.append(
            FormEntry(
                got["formID"],
                got["name"],
                got.get("version"),
                got.get("hash"),
                got["downloadUrl"],
                got.get("manifestUrl"),
            )
        )
    return out


def parse_manifest(content: bytes) -> list[MediaEntry]:
    """``Kxml2OpenRosaResponseParser.parseManifest`` (lines 143-239)."""
    try:
        root = ET.fromstring(content)  # noqa: S314
    except ET.ParseError as e:
        raise CollectError(f"manifest is not XML: {e}") from e
    ns, local = _split_tag(root.tag)
    if local != "manifest" or ns.lower() != _MANIFEST_NS.lower():
        raise CollectError(f"manifest root is {root.tag}: ParseError")
    files = []
    for name, el in _children(root, _MANIFEST_NS):
        if name.lower() != "mediafile":
            continue
        got: dict[str, str | None] = {}
        for tag, child in _children(el, _MANIFEST_NS):
            if tag in ("filename", "downloadUrl"):
                got[tag] = _text(child) or None
            elif tag == "hash":
                text = _text(child)
                if text is None or (text and len(text) < 4):
                    raise CollectError("manifest: this <hash> crashes Collect (substring(4))")
                got[tag] = text[4:] if text else None  # the prefix is never checked
        if not (got.get("filename") and got.get("hash") and got.get("downloadUrl")):
            raise CollectError("mediaFile lacks filename, hash or downloadUrl: ParseError")
        base = got["filename"].replace("\\", "/").rsplit("/", 1)[-1]  # File(filename).name
        files.append(MediaEntry(base, got["hash"], got["downloadUrl"], el.get("type")))
    return files


def _message(body: bytes) -> tuple[str, bool]:
    """``ResponseMessageParser``: only a body containing ``OpenRosaResponse``; the first
    ``message`` element's text, namespace or not."""
    text = body.decode("utf-8", "replace")
    if "OpenRosaResponse" in text:
        try:
            root = ET.fromstring(body)  # noqa: S314
        except ET.ParseError:
            return text[:200], False
        for el in root.iter():
            if isinstance(el.tag, str) and _split_tag(el.tag)[1] == "message":
                return "".join(el.itertext()), True
    return text[:200], False


class Collect:
    """One phone, set to ``server_url`` (a person's collection link)."""

    def __init__(
        self,
        server_url: str,
        device: str = "collect:Ab12Cd34Ef56Gh78",
        retries: int = 1,
        timeout: float | None = None,
    ):
        self.server_url = server_url
        self.url = server_url.rstrip("/")
        self.device = device
        self.retries = retries  # OkHttp's retries of a broken connection, same bytes
        # OkHttpOpenRosaServerClientProvider: connect 30 s, read and write 60 s; redirects on.
        t = httpx.Timeout(timeout) if timeout else httpx.Timeout(60, connect=30)
        self.http = httpx.Client(timeout=t, follow_redirects=True)
        self.on_device: dict[str, Downloaded] = {}  # formsRepository, by md5 of the file
        self.remap: dict[str, str] = {}  # OpenRosaServerInstanceUploader.uriRemap
        self.warnings: list[str] = []

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
        return self.http.request(
            method, with_device_id(url, self.device),
            headers={**self.headers(), **kw.pop("headers", {})}, **kw,
        )  # fmt: skip

    # ---- forms -------------------------------------------------------------------------
    def form_list_url(self) -> str:
        return self.server_url.rstrip("/") + "/formList"  # OpenRosaClient.getFormListURL

    def submission_url(self) -> str:
        base = self.server_url  # getServerSubmissionURL strips one slash only
        return (base[:-1] if base.endswith("/") else base) + "/submission"

    def _get_xml(self, url: str, what: str) -> bytes:
        """``OpenRosaXmlFetcher.getXML`` + ``OkHttpConnection.executeGetRequest``."""
        r = self.request("GET", url)
        if r.status_code != 200:
            raise CollectError(f"{what}: HTTP {r.status_code}")
        ctype = r.headers.get("content-type")
        if ctype is not None and "text/xml" not in ctype.lower():
            raise CollectError(
                f"{what} is {ctype}, not text/xml: a network proxy may be in the way"
            )
        if "X-OpenRosa-Version" not in r.headers:
            raise CollectError(f"{what}: not an OpenRosa server (no X-OpenRosa-Version header)")
        return r.content

    def form_list(self) -> list[FormEntry]:
        return parse_form_list(self._get_xml(self.form_list_url(), "formList"))

    def manifest(self, url: str) -> list[MediaEntry]:
        return parse_manifest(self._get_xml(url, "manifest"))

    def form_details(self) -> list[tuple[FormEntry, list[MediaEntry] | None, str]]:
        """``ServerFormUseCases.fetchFormDetails``: each entry, its manifest (None when it fails:
        Collect swallows that) and what Collect would call it: New, OnDevice, UpdatedHash,
        UpdatedVersion or UpdatedMedia."""
        out = []
        for e in self.form_list():
            media = None
            if e.manifest_url:
                try:
                    media = self.manifest(e.manifest_url)
                except CollectError as err:
                    self.warnings.append(f"{e.form_id}: {err}")
            same_id = [d for d in self.on_device.values() if d.entry.form_id == e.form_id]
            existing = self.on_device.get(e.hash[4:]) if e.hash else None
            if existing is not None:
                local = {_md5(b) for b in existing.media.values()}
                newer = bool(media) and any(
                    not m.filename.endswith(".zip") and m.hash not in local for m in media
                )
                kind = "UpdatedMedia" if newer else "OnDevice"
            elif same_id:
                if e.hash is None:
                    kind = "OnDevice"
                elif any(d.entry.version == e.version for d in same_id):
                    kind = "UpdatedHash"
                else:
                    kind = "UpdatedVersion"
            else:
                kind = "New"
            out.append((e, media, kind))
        return out

    def download(self, entry: FormEntry) -> Downloaded:
        """``ServerFormDownloader.downloadForm``: the form (200; no content-type or hash check),
        then each manifest file (200). Raises, beyond Collect, when Collect would afterwards see
        the form or a file as changed on every refresh."""
        if not entry.hash:
            raise CollectError(f"{entry.form_id}: FormWithNoHash (no md5: hash in formList)")
        r = self.request("GET", entry.download_url)
        if r.status_code != 200:
            raise CollectError(f"{entry.form_id}: download HTTP {r.status_code}")
        got = Downloaded(entry, r.content)
        media = self.manifest(entry.manifest_url) if entry.manifest_url else []
        for m in media:
            d = self.request("GET", m.download_url)
            if d.status_code != 200:
                raise CollectError(f"{entry.form_id}: {m.filename}: HTTP {d.status_code}")
            got.media[m.filename] = d.content
        if got.md5 != entry.hash[4:]:
            raise CollectError(
                f"{entry.form_id}: listed hash differs from the bytes served: Collect would show "
                "the form as updated at every refresh"
            )
        for m in media:
            if _md5(got.media[m.filename]) != m.hash:
                raise CollectError(
                    f"{entry.form_id}: {m.filename}: manifest hash differs from the bytes served: "
                    "Collect would download it again at every refresh"
                )
        self.on_device[got.md5] = got
        return got

    # ---- sending -----------------------------------------------------------------------
    def preflight(self) -> int:
        """The HEAD of ``OpenRosaServerInstanceUploader.uploadOneSubmission`` (lines 61-150):
        the accepted length, or :class:`CollectError`."""
        url = with_device_id(self.submission_url(), self.device)
        if url in self.remap:
            return DEFAULT_ACCEPT_LENGTH  # a remapped URL skips the HEAD: default length
        try:
            r = self.http.request("HEAD", url, headers=self.headers())
        except httpx.TransportError as e:
            raise CollectError(f"Error: {e}") from e
        limit = DEFAULT_ACCEPT_LENGTH
        if r.status_code == 204:  # headers are read on 204 only (OkHttpConnection.java:134)
            with contextlib.suppress(ValueError):
                limit = int(r.headers.get("X-OpenRosa-Accept-Content-Length", limit))
            if "Location" in r.headers:
                new = unquote(r.headers["Location"])
                if (urlsplit(new).hostname or "").lower() != (urlsplit(url).hostname or "").lower():
                    raise CollectError(
                        f"Error: Unexpected redirection attempt to a different host: {new}"
                    )
                if not urlsplit(new).query:
                    new = f"{new.split('?')[0]}?{urlsplit(url).query}"
                self.remap[url] = new
        elif r.status_code == 401:
            raise CollectError("server asks for credentials")
        elif 200 <= r.status_code < 300:
            raise CollectError(
                f"Failed to send to {url}. Is this an OpenRosa submission endpoint? "
                f"HEAD request result status code: {r.status_code}"
            )
        return limit  # other codes: Collect POSTs anyway

    def send(
        self,
        xml: bytes,
        files: dict[str, bytes] | None = None,
        title: str = "表单",
        *,
        created: datetime | None = None,
    ) -> list[Answer]:
        """Send one filled form as Collect does: HEAD, then one POST per batch of
        :func:`split`, stopping at the first answer that is not 201/202. The answers of the
        POSTs made. A 204 to a POST raises :class:`CollectError`."""
        files = dict(files or {})
        limit = self.preflight()
        names = list(files)
        batches = split(len(xml), [len(files[n]) for n in names], limit)
        xml_name = instance_file_name(title, created)  # one file on the phone: one name
        answers = []
        for i, batch in enumerate(batches):
            body, ctype = multipart(
                xml, {names[j]: files[names[j]] for j in batch}, title,
                incomplete=i < len(batches) - 1, xml_name=xml_name,
            )  # fmt: skip
            answer = self.post(body, ctype)
            if answer.status == 204:
                raise CollectError("java.lang.Exception (HTTP 204 to a submission)")
            answers.append(answer)
            if answer.status not in (201, 202):
                break
        return answers

    def submit(
        self, xml: bytes, files: dict[str, bytes] | None = None, title: str = "表单"
    ) -> str | None:
        """``uploadOneSubmission`` as the user sees it: the server's message on success, else
        :class:`CollectError` with Collect's text (lines 189-224)."""
        last = self.send(xml, files, title)[-1]
        if last.status in (201, 202):
            return last.message if last.has_message else None
        if last.status == 200:
            raise CollectError("Error: Network login failure? Again?")
        if last.status == 401:
            raise CollectError(f"Error: {last.reason} (401)")
        if last.has_message:
            raise CollectError(f"Error: {last.message}")
        if last.status == 400:
            raise CollectError(
                "Failed to upload. Please make sure the form is configured to accept submissions "
                "on the server"
            )
        raise CollectError(f"Error: {last.reason} ({last.status})")

    def post(self, body: bytes, ctype: str) -> Answer:
        """One POST. Only a broken connection is retried, with the identical bytes (OkHttp's
        ``retryOnConnectionFailure``); a timeout or a 5xx is not."""
        url = with_device_id(self.submission_url(), self.device)
        url = self.remap.get(url, url)
        last: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                r = self.http.request(
                    "POST", url, content=body, headers={**self.headers(), "Content-Type": ctype}
                )
            except httpx.TimeoutException as e:
                raise CollectError(f"sending failed: {e}") from e
            except httpx.TransportError as e:
                last = e
                continue
            message, valid = _message(r.content)
            return Answer(r.status_code, message, r.headers, r.reason_phrase, valid)
        raise CollectError(f"sending failed: {last}")


def ok(answer: Answer) -> bool:
    """Collect's reading: 201/202 success; 200 is a login failure; 204 an error."""
    return answer.status in (201, 202)
