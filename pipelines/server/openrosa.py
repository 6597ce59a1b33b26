"""OpenRosa under ``/key/{token}``, as ODK Collect (and KoboCollect) speak it and as ODK Central
answers in the recorded exchanges (``tests/data/central/25_*`` … ``33_*``, ``94_*``).

* ``GET formList``: the person's built forms, ``hash="md5:…"`` of the exact bytes served,
  ``manifestUrl`` only for a form with roster files.
* ``GET forms/{id}.xml``, ``GET forms/{id}/manifest``, ``GET forms/{id}/attachments/{name}``.
* ``HEAD submission``: 204 with ``X-OpenRosa-Accept-Content-Length``.
* ``POST submission``: multipart, ``xml_submission_file`` and one part per photo; 201 once it
  is on the disk (:mod:`._submissions`). Collect reads 200 as a login failure and 204 as an
  error, so success is always 201.
* Every answer carries ``X-OpenRosa-Version: 1.0``; the form list, forms, manifests and
  rosters ``Cache-Control: no-store`` (they hold people's names). A valid link is always served; a token that is
  unknown, rotated or disabled gets 403, and after ten of those in a minute from one address
  further bad tokens from it get 429 for a while (a carrier's NAT puts a whole village behind
  one address: one stale phone must not lock out the others).
* A submission body must arrive within ``Limits.body_timeout_s`` (else 408, nothing stored);
  at most ``Limits.max_parses`` bodies are parsed at once (the rest wait), and each photo part
  spools to a temporary file past 64 KB, so memory stays small whatever phones send. The
  XML is parsed in a worker thread, not on the event loop.
* Photo part names are bare file names, as Collect sends them: a name with ``/``, ``\\``, a
  control character or a leading ``.`` is refused (400).

:func:`receive` is the one submission path: the link's endpoint and the portal's
(``POST /portal/submission``, session and CSRF) both call it, each with its own
:class:`Accepts` (which forms, which answers), so parsing, limits, photos, duplicates and the
writer are the same for both.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines.errors import ManyiError, scrub
from pipelines.records import printable
from pipelines.server._catalog import BuiltForm
from pipelines.server._submissions import (
    CONFLICT,
    Job,
    Parsed,
    Refused,
    Sender,
    conflicts,
    form_id_of,
    parse,
    save_photos,
)
from pipelines.server.people import Person, person_for_token

ACCEPT_BYTES = 100_000_000  # declared in X-OpenRosa-Accept-Content-Length, as Central does
MAX_PARTS = 200  # files in one POST (Collect splits by size, a form has a few dozen photos)
MAX_XML_BYTES = 2 * 2**20  # the xml_submission_file part (Collect's are a few KB)
BODY_TIMEOUT_S = 300.0  # a submission body must be in by then (100 MB at ~2.7 Mbit/s)
MAX_PARSES = 16  # submission bodies parsed at once; more wait their turn
SPOOL_BYTES = 64 * 1024  # a photo part past this goes to a temporary file, not RAM
_XML = "text/xml; charset=utf-8"
_BAD_TOKEN_LIMIT, _BAD_TOKEN_WINDOW_S = 10, 60.0


@dataclass(frozen=True)
class Limits:
    accept_bytes: int = ACCEPT_BYTES  # declared to phones (X-OpenRosa-Accept-Content-Length)
    max_parts: int = MAX_PARTS
    body_timeout_s: float = BODY_TIMEOUT_S  # the whole multipart body, once its turn comes
    max_parses: int = MAX_PARSES

    @property
    def body_bytes(self) -> int:
        """What a POST may carry: Collect fills the declared length with file bytes alone
        (OkHttpConnection.java), so the multipart headers of every part come on top."""
        return self.accept_bytes + (self.max_parts + 2) * 1024


class Throttle:
    """Bad tokens per client address in the last minute; past the limit, further bad tokens
    from that address wait (429) until the oldest bad try leaves the window. Valid links are
    never throttled (:func:`guard` looks the token up first)."""

    def __init__(self, limit: int = _BAD_TOKEN_LIMIT, window: float = _BAD_TOKEN_WINDOW_S):
        self.limit, self.window = limit, window
        self._tries: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int:
        tries = self._tries.get(address)
        if not tries:
            return 0
        now = time.monotonic()
        while tries and now - tries[0] > self.window:
            tries.popleft()
        if not tries:
            del self._tries[address]
            return 0
        return int(self.window - (now - tries[0])) + 1 if len(tries) >= self.limit else 0

    def bad(self, address: str) -> None:
        if len(self._tries) > 100_000:  # a flood of addresses: forget the oldest state
            self._tries.clear()
        self._tries.setdefault(address, deque()).append(time.monotonic())


class _TooLarge(Exception):
    pass


class _SpoolingParser(MultiPartParser):
    """Starlette's parser with photo parts spooled to disk past 64 KB (its default keeps up to
    1 MB of each part in memory: 24 uploads of 99 parts took 1.6 GB)."""

    spool_max_size = SPOOL_BYTES


_LOG_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def log_path(path: str) -> str:
    """A request path for a log line: the token scrubbed (``/key/***``, any case) and control
    characters escaped (``\\x0a``), so a path cannot forge a line or hide one behind a NUL."""
    return _LOG_UNSAFE.sub(lambda m: ascii(m[0])[1:-1], scrub(path))


# A photo part's name: a bare file name (Collect sends ``1764374400001.jpg``).
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f\u2028\u2029]|^\.")


def _headers(limits: Limits) -> dict[str, str]:
    return {
        "X-OpenRosa-Version": "1.0",
        "X-OpenRosa-Accept-Content-Length": str(limits.accept_bytes),
        "Content-Language": "zh-CN",
        "Cache-Control": "no-store",  # form lists, manifests and rosters hold people's names
        "X-Content-Type-Options": "nosniff",
    }


def openrosa_response(status: int, message: str, limits: Limits, error: bool = False, **extra: str) -> Response:  # fmt: skip
    nature = "error" if error else ""
    body = (
        '<OpenRosaResponse xmlns="http://openrosa.org/http/response" items="0">'
        f'<message nature="{nature}">{escape(message)}</message></OpenRosaResponse>'
    )
    return Response(body, status, {**_headers(limits), **extra}, media_type=_XML)


def guard(state: Callable[[], object], handler: Callable[[Request, object, Person], Awaitable[Response]]):  # fmt: skip
    """An endpoint that runs ``handler(request, state, person)`` for a valid link, whatever
    else came from its address: a bad token is 403 (and counted), or 429 once its address has
    sent too many; a bug is one scrubbed log line and 500."""

    async def endpoint(request: Request) -> Response:
        st = state()
        person = person_for_token(st.store, request.path_params["token"])
        if person is None:
            address = request.client.host if request.client else "?"
            wait = st.throttle.retry_after(address)
            if wait:
                return openrosa_response(
                    429, f"错误次数过多，请 {wait} 秒后再试（too many bad links）", st.limits,
                    error=True, **{"Retry-After": str(wait)},
                )  # fmt: skip
            st.throttle.bad(address)
            return openrosa_response(
                403,
                "链接无效或已停用，请向镇里索取新的采集链接"
                "（The authentication you provided does not have rights to perform that action.）",
                st.limits,
                error=True,
            )
        try:
            return await handler(request, st, person)
        except Exception as e:  # a bug: one scrubbed line in the log, never the token
            st.log.error(
                "unexpected error on %s %s: %s", request.method, log_path(request.url.path),
                scrub(f"{type(e).__name__}: {e}"),
            )  # fmt: skip
            return openrosa_response(
                500, "服务器内部错误，请稍后重发（server error）", st.limits, error=True
            )

    return endpoint


def routes(state: Callable[[], object]) -> list[Route]:
    """The OpenRosa routes; ``state()`` gives the running server's state (catalog, store,
    roles, ingest, throttle, base URL)."""

    def guarded(handler):
        return guard(state, handler)

    return [
        Route("/key/{token}/formList", guarded(_form_list), methods=["GET"]),
        Route("/key/{token}/forms/{form_id}.xml", guarded(_form_xml), methods=["GET"]),
        Route("/key/{token}/forms/{form_id}/manifest", guarded(_manifest), methods=["GET"]),
        Route(
            "/key/{token}/forms/{form_id}/attachments/{name}",
            guarded(_media),
            methods=["GET"],
        ),
        Route("/key/{token}/submission", guarded(_submission_answer), methods=["HEAD", "POST"]),
    ]


def _mine(st, person: Person, form_id: str) -> BuiltForm | None:
    if form_id not in person.forms(st.roles):
        return None
    return st.catalog.forms().get(form_id)


def _base(request: Request, st) -> str:
    token = request.path_params["token"]
    return f"{st.base_url(request)}/key/{token}"


async def _form_list(request: Request, st, person: Person) -> Response:
    base = _base(request, st)
    built = st.catalog.forms()
    items = []
    for fid in person.forms(st.roles):
        form = built.get(fid)
        if form is None:
            continue
        manifest = (
            f"\n    <manifestUrl>{escape(f'{base}/forms/{fid}/manifest')}</manifestUrl>"
            if form.media
            else ""
        )
        items.append(
            f"  <xform>\n    <formID>{escape(fid)}</formID>\n    <name>{escape(form.title)}</name>"
            f"\n    <version>{escape(form.version)}</version>\n    <hash>md5:{form.md5}</hash>"
            f"\n    <downloadUrl>{escape(f'{base}/forms/{fid}.xml')}</downloadUrl>{manifest}"
            "\n  </xform>\n"
        )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<xforms xmlns="http://openrosa.org/xforms/xformsList">\n{"".join(items)}</xforms>\n'
    )
    return Response(body, 200, _headers(st.limits), media_type=_XML)


def _not_found(st, what: str) -> Response:
    return openrosa_response(404, f"没有这个表单或文件（{what} not found）", st.limits, error=True)


async def _form_xml(request: Request, st, person: Person) -> Response:
    form = _mine(st, person, request.path_params["form_id"])
    if form is None:
        return _not_found(st, "form")
    return Response(form.xml, 200, _headers(st.limits), media_type="application/xml; charset=utf-8")


async def _manifest(request: Request, st, person: Person) -> Response:
    form = _mine(st, person, request.path_params["form_id"])
    if form is None:
        return _not_found(st, "form")
    base = _base(request, st)
    files = "".join(
        f"  <mediaFile>\n    <filename>{escape(m.name)}</filename>\n    <hash>md5:{m.md5}</hash>"
        f"\n    <downloadUrl>{escape(f'{base}/forms/{form.form_id}/attachments/{m.name}')}"
        "</downloadUrl>\n  </mediaFile>\n"
        for m in form.media.values()
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<manifest xmlns="http://openrosa.org/xforms/xformsManifest">\n{files}</manifest>\n'
    )
    return Response(body, 200, _headers(st.limits), media_type=_XML)


async def _media(request: Request, st, person: Person) -> Response:
    form = _mine(st, person, request.path_params["form_id"])
    media = form.media.get(request.path_params["name"]) if form else None
    if media is None:
        return _not_found(st, "file")
    kind = "text/csv; charset=utf-8" if media.name.endswith(".csv") else "application/octet-stream"
    return Response(media.data, 200, _headers(st.limits), media_type=kind)


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge
        yield chunk


@dataclass(frozen=True)
class Accepts:
    """What an endpoint takes from a person: ``form(form_id)`` and ``answers(parsed)`` raise
    :class:`Refused` for a submission it must not store. Both run before any photo is written,
    so a refused submission leaves nothing behind. The default is the link's rule: the
    person's own forms, any answers."""

    form: Callable[[str], None] | None = None
    answers: Callable[[Parsed], None] | None = None


_PORTAL_ONLY = frozenset({"rectification"})  # sent from the portal's 处理, scope-checked there


async def _submission_answer(request: Request, st, person: Person) -> Response:
    def link_form(form_id: str) -> None:  # the link's rule: the person's own forms
        if form_id in _PORTAL_ONLY:
            raise Refused(
                403, "整改反馈请在门户的跟进清单中点击「处理」发送（send it from the portal）"
            )
        if form_id not in person.forms(st.roles):
            raise Refused(403, f"表单 {form_id} 不在您的采集范围（not one of this person's forms）")

    return await receive(request, st, person, Accepts(form=link_form))


async def receive(request: Request, st, person: Person, accepts: Accepts = Accepts()) -> Response:  # fmt: skip
    """``HEAD``/``POST`` of a submission from ``person`` (the sender stored with it), as
    OpenRosa answers it. The answer is marked ``private, no-cache``: it holds only a status
    message, and with ``no-store`` Chromium's DevTools protocol never reports the POST as
    finished (the browser tests watch the page's sends through it). A stored submission
    pokes the portal's refresher (it would see it at its next poll anyway)."""
    response = await _submission(request, st, person, accepts)
    response.headers["Cache-Control"] = "private, no-cache"
    if request.method == "POST" and response.status_code == 201 and getattr(st, "refresher", None):
        st.refresher.poke()
    return response


async def _submission(request: Request, st, person: Person, accepts: Accepts) -> Response:
    limits = st.limits
    if request.method == "HEAD":
        return Response(None, 204, _headers(limits))
    too_large = openrosa_response(
        413,
        f"提交超过 {limits.accept_bytes // 1_000_000} MB，请分批发送"
        f"（body over the {limits.accept_bytes} bytes this server accepts）",
        limits,
        error=True,
    )
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > limits.body_bytes:
        return too_large
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return _refused(
            Refused(400, "提交须为 multipart/form-data（POST must be multipart）"), limits
        )
    parser = _SpoolingParser(
        request.headers,
        _limited(request, limits.body_bytes),
        max_files=limits.max_parts,
        max_fields=20,
        max_part_size=64 * 1024,
    )
    async with st.parses:  # bounded: each parse holds its parts' buffers and temporary files
        try:
            async with asyncio.timeout(limits.body_timeout_s):  # a stalled body holds no slot
                form = await parser.parse()
        except TimeoutError:  # the parser has closed its temporary files
            return openrosa_response(
                408, "提交超时，请在网络较好时重发（the submission body did not arrive in time）",
                limits, error=True,
            )  # fmt: skip
        except _TooLarge:
            return too_large
        except MultiPartException as e:
            return _refused(Refused(400, f"提交格式有误（bad multipart: {e.message}）"), limits)
    try:
        return await _store(request, st, person, form, accepts)
    except Refused as e:
        return _refused(e, limits)
    finally:
        await form.close()


def _refused(e: Refused, limits: Limits) -> Response:
    return openrosa_response(e.status, e.message, limits, error=True)


async def _store(request: Request, st, person: Person, form, accepts: Accepts) -> Response:
    xml_part = form.get("xml_submission_file")
    if isinstance(xml_part, UploadFile):
        xml = await xml_part.read(MAX_XML_BYTES + 1)
    elif isinstance(xml_part, str):
        xml = xml_part.encode("utf-8")
    else:
        raise Refused(400, "缺少 xml_submission_file 部分（no xml_submission_file part）")
    if len(xml) > MAX_XML_BYTES:
        raise Refused(413, f"表单 XML 超过 {MAX_XML_BYTES // 2**20} MiB（XML part too large）")
    form_id = await _off_loop(form_id_of, xml)
    built = st.catalog.forms().get(form_id)
    if built is None:
        raise Refused(404, f"服务器上没有表单 {form_id[:80]}（unknown form; build it first）")
    if accepts.form is not None:
        accepts.form(form_id)
    elif form_id not in person.forms(st.roles):
        raise Refused(403, f"表单 {form_id} 不在您的采集范围（not one of this person's forms）")
    parsed = await _off_loop(parse, xml, built)
    if accepts.answers is not None:
        accepts.answers(parsed)
    photos: list[tuple[str, UploadFile]] = []
    for key, value in form.multi_items():
        if key == "xml_submission_file" or not isinstance(value, UploadFile):
            continue  # *isIncomplete* and other plain fields
        name = value.filename or key
        if _BAD_NAME.search(name):
            raise Refused(
                400,
                f"照片文件名 {printable(name, 80)} 不合规，已拒收"
                "（a file name must be a bare name: no /, \\, control characters or leading .）",
            )
        if name not in parsed.files:
            raise Refused(
                400,
                f"照片 {name[:80]} 不在表单答案中，已拒收（file not named by the XML）",
            )
        photos.append((name, value.file))
    # Collect names its device in the URL; a browser (ODK Web Forms) only in the XML's deviceid
    device = request.query_params.get("deviceID") or parsed.data.get("deviceid")
    device = device if isinstance(device, str) else None
    if photos and conflicts(st.store.db, parsed):  # a refused resend leaves no photo behind
        raise Refused(409, CONFLICT)
    sender = Sender(person.login, person.name, device[:128] if device else None)
    try:
        blobs = await run_in_threadpool(save_photos, st.blob_store, photos)
        outcome = await st.ingest.submit(Job(parsed, sender, blobs))
    except (ManyiError, OSError) as e:
        st.log.error("storing a submission failed: %s", scrub(str(e)))
        return openrosa_response(
            503, "服务器暂时无法保存，请稍后重发（the server could not store it; send again later）",
            st.limits, error=True, **{"Retry-After": "60"},
        )  # fmt: skip
    return openrosa_response(
        outcome.status, outcome.message, st.limits, error=outcome.status >= 400
    )


_INLINE_XML = 64 * 1024  # Collect's XML is a few KB: parsing it inline beats a thread hop


async def _off_loop(fn, xml: bytes, *args):
    """``fn(xml, *args)``: inline for the usual few-KB XML, in a worker thread for a large one
    (up to 2 MiB), so one big submission never stalls the other phones."""
    if len(xml) <= _INLINE_XML:
        return fn(xml, *args)
    return await run_in_threadpool(fn, xml, *args)
