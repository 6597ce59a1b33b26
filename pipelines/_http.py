"""HTTP with retries, shared by pulling (``sources/``) and publishing (``publish/``).

Backoff on 429 (honouring Retry-After), 5xx, refused connections, resets and timeouts, until a
give-up time (``http_give_up_s``). Each retry is announced to ``RetryPolicy.on_retry`` before
its wait, so a user sees that manyi is retrying. Error text never carries credentials
(:func:`scrub`), and what a server said is kept on the :class:`SourceError` (url, status,
code, detail), quoted short."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import requests
import urllib3

from pipelines.errors import SourceError, scrub
from pipelines.records import utc_text

__all__ = [
    "RetryNotice",
    "RetryPolicy",
    "error_detail",
    "fetch_file",
    "json_body",
    "quoted",
    "request",
    "response_error",
    "scrub",
    "server_time",
]

log = logging.getLogger("manyi.http")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_SAFE_RETRY = frozenset({429, 503})  # the server says it did not act on the request
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
QUOTE_CHARS = 200  # how much of a server's error body a message quotes
_SCAN_CHARS = 65_536  # how much of a body is read for its error message


@dataclass(frozen=True)
class RetryNotice:
    """What :attr:`RetryPolicy.on_retry` is told before each wait. ``attempt`` attempts have
    failed, so the request about to be sent again is retry number ``attempt`` (第 N 次重试)."""

    url: str  # credentials scrubbed
    attempt: int
    wait_s: float
    problem: str  # e.g. "HTTP 503", "connection refused"
    elapsed_s: float  # since the first attempt
    give_up_s: float  # the policy's max_seconds


@dataclass(frozen=True)
class RetryPolicy:
    max_seconds: float = 300.0  # give up once this much time has gone on one request
    base_delay: float = 0.5
    max_delay: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    # Told before each wait; may be called from attachment worker threads.
    on_retry: Callable[[RetryNotice], None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_settings(
        cls, settings: Any, on_retry: Callable[[RetryNotice], None] | None = None, **kw: Any
    ) -> RetryPolicy:
        """The policy for ``settings``: gives up after ``settings.http_give_up_s``."""
        return cls(max_seconds=float(settings.http_give_up_s), on_retry=on_retry, **kw)

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def pause(
        self,
        started: float,
        attempt: int,
        url: str,
        problem: str,
        server_wait: float | None = None,
        secrets: tuple[str, ...] = (),
    ) -> bool:
        """After failed attempt number ``attempt`` of a request begun at ``started``
        (``time.monotonic()``): tell ``on_retry``, sleep, and return True; or return False
        when it is time to give up. The last wait is cut to the give-up time, so the last
        attempt is made then; a server asking (Retry-After) for more than is left gets none."""
        elapsed = time.monotonic() - started
        left = self.max_seconds - elapsed
        if left <= 0 or (server_wait is not None and server_wait > left):
            return False
        if server_wait is None:
            wait = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
            wait *= 0.5 + random.random() / 2  # noqa: S311 - jitter so clients do not retry in step
        else:
            wait = server_wait
        wait = min(wait, left)
        shown = scrub(url, secrets)
        log.info("%s: %s on attempt %d, retrying in %.1f s", shown, problem, attempt, wait)
        if self.on_retry is not None:
            self.on_retry(
                RetryNotice(
                    shown, attempt, round(wait, 3), problem, round(elapsed, 3), self.max_seconds
                )
            )
        time.sleep(wait)
        return True


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


@dataclass(frozen=True)
class _Said:
    """What a server's error body says: its message (one line, scrubbed, cut) and code."""

    detail: str
    code: str | None = None


def _said(response: requests.Response, secrets: tuple[str, ...] = ()) -> _Said:
    """Central's ``{code, message}``, kpi's ``{detail}`` or ``{error}``, else the body."""
    try:
        body = response.json()
    except (ValueError, RuntimeError):  # RuntimeError: the body was already streamed away
        return _Said(quoted(_text_of(response), secrets))
    code = None
    if isinstance(body, dict):
        if body.get("code") is not None and not isinstance(body["code"], (dict, list)):
            code = quoted(str(body["code"]), secrets, 40)
        for key in ("message", "detail", "error"):  # error: kpi's form errors (pyxform's)
            if key in body:
                value = body[key]
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                return _Said(quoted(text, secrets), code)
    return _Said(quoted(json.dumps(body, ensure_ascii=False), secrets), code)


def _text_of(response: requests.Response) -> str:
    try:
        return response.content[:_SCAN_CHARS].decode("utf-8", "replace")
    except (RuntimeError, requests.RequestException):
        return ""


def quoted(text: str, secrets: tuple[str, ...] = (), limit: int = QUOTE_CHARS) -> str:
    """A server's words fit for a one-line message: scrubbed while whole (a cut could leave
    half a password the scrubber no longer knows), on one line without control characters,
    then cut to ``limit``."""
    text = scrub(text[:_SCAN_CHARS], secrets)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_detail(response: requests.Response, secrets: tuple[str, ...] = ()) -> str:
    """What a server's error body says, with its code: ``"<message> (code 404.1)"``."""
    said = _said(response, secrets)
    return f"{said.detail} (code {said.code})" if said.code else said.detail


def response_error(
    response: requests.Response, message: str, secrets: tuple[str, ...] = ()
) -> SourceError:
    """A :class:`SourceError` with ``message`` that keeps the response's URL, status and
    the server's code and detail."""
    said = _said(response, secrets)
    return SourceError(
        message,
        url=_asked(response),
        status=response.status_code,
        code=said.code,
        detail=said.detail,
        secrets=secrets,
    )


def request(
    send: Callable[..., requests.Response],
    method: str,
    url: str,
    policy: RetryPolicy,
    secrets: tuple[str, ...] = (),
    what: str = "server",
    ok: tuple[int, ...] = (),
    idempotent: bool = True,
    **kwargs: Any,
) -> requests.Response:
    """Send with retries. Returns any response that is neither retryable nor an error
    (``ok`` lists extra statuses the caller handles itself, e.g. 404 for a missing file).

    A request that is not ``idempotent`` (a POST that creates something) is retried only
    when the server cannot have acted on it: the connection was never made, or the answer
    was 429 or 503. A lost answer to a 500 might mean it was done once already."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        server_wait: float | None = None
        status: int | None = None
        try:
            response = send(method, url, timeout=_timeout(policy, started), **kwargs)
        except _NETWORK_ERRORS as e:
            problem = _network_problem(e)
            if not idempotent and not _never_sent(e):
                raise SourceError(
                    f"{what} did not answer {method} {url} ({problem}); it may or may not "
                    "have been done: check the server, then run again",
                    url=url,
                    secrets=secrets,
                ) from None
        except requests.RequestException as e:  # a URL requests cannot send, a redirect loop
            raise SourceError(
                f"{what} could not be asked {method} {url} ({type(e).__name__}); check the "
                "server URL in your settings",
                url=url,
                secrets=secrets,
            ) from None
        else:
            if response.status_code < 400 or response.status_code in ok:
                return response
            retryable = RETRY_STATUS if idempotent else _SAFE_RETRY
            if response.status_code not in retryable:
                raise response_error(
                    response,
                    f"{what} refused {method} {url}: HTTP {response.status_code} "
                    f"{error_detail(response, secrets)}" + _advice(response.status_code),
                    secrets,
                )
            status = response.status_code
            problem = f"HTTP {status}"
            server_wait = _retry_after(response)
            response.close()
        if not policy.pause(started, attempt, url, problem, server_wait, secrets):
            if server_wait:
                problem += f", asking to wait {server_wait:.0f} s"
            seconds = time.monotonic() - started
            raise SourceError(
                _gave_up(what, method, url, attempt, seconds, problem, policy.max_seconds),
                url=url,
                status=status,
                secrets=secrets,
            )


def _gave_up(
    what: str, method: str, url: str, attempts: int, seconds: float, problem: str, give_up: float
) -> str:
    return (
        f"{what} did not answer {method} {url} after {attempts} attempt(s) in "
        f"{seconds:.{0 if seconds >= 10 else 1}f} s "
        f"(last: {problem}); check the server address in your settings and that the server "
        f"is up and reachable from here, or wait longer with http_give_up_s (now {give_up:g} "
        "s), then run again: the store keeps what was already pulled"
    )


def _timeout(policy: RetryPolicy, started: float) -> tuple[float, float]:
    """The policy's timeouts, the connect one cut to the time left (at least 1 s): an
    address that swallows packets must not keep manyi past its give-up time."""
    left = policy.max_seconds - (time.monotonic() - started)
    return (max(1.0, min(policy.connect_timeout, left)), policy.read_timeout)


def _network_problem(error: Exception) -> str:
    """A few words for a network failure: what was refused or timed out, not a class."""
    seen: set[int] = set()
    todo: list[Any] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, urllib3.exceptions.NameResolutionError):
            return "host name not found"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        todo += [getattr(e, "reason", None), e.__cause__, e.__context__]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
    if isinstance(error, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(error, requests.Timeout):
        return "read timed out"
    return type(error).__name__


def json_body(
    resp: requests.Response,
    what: str,
    keys: tuple[str, ...] = (),
    *,
    kind: type = dict,
    rows: str | None = None,
    row_keys: tuple[str, ...] = (),
    secrets: tuple[str, ...] = (),
) -> Any:
    """The JSON body of a response, checked to be the shape the caller reads.

    ``kind`` is ``dict`` (holding ``keys``) or ``list`` (of dicts holding ``keys``); ``rows``
    names a key of a dict body that must hold a list (of dicts holding ``row_keys``).
    Anything else is a :class:`SourceError` naming the URL and status: a captive portal or
    proxy answers 200 with an HTML page, and ``requests``' own JSON error is an ``OSError``
    the CLI would report as a file problem.
    """
    try:
        body = resp.json()
    except ValueError:
        raise SourceError(
            _not_json(resp, what), url=_asked(resp), status=resp.status_code, secrets=secrets
        ) from None
    problem = _shape_problem(body, keys, kind, rows, row_keys)
    if problem:
        raise SourceError(
            f"{what} at {_where(resp)} answered HTTP {resp.status_code} with JSON manyi "
            f"does not expect ({problem}); check that the URL points at {what} itself",
            url=_asked(resp),
            status=resp.status_code,
            secrets=secrets,
        )
    return body


def _asked(resp: requests.Response) -> str:
    """The URL manyi asked for (before any redirect)."""
    return str(resp.history[0].url if resp.history else resp.url)


def _where(resp: requests.Response) -> str:
    """The URL asked for, and where a redirect (a captive portal's, say) ended up."""
    asked = _asked(resp)
    return f"{asked} (redirected to {resp.url})" if resp.history else asked


def _not_json(resp: requests.Response, what: str) -> str:
    ctype = resp.headers.get("Content-Type", "")
    head = quoted(resp.content[:_SCAN_CHARS].decode("utf-8", "replace"), limit=60)
    if "html" in ctype.lower() or head[:1] == "<":
        return (
            f"{what} at {_where(resp)} answered HTTP {resp.status_code} with HTML, not JSON "
            "— a login page or proxy in between? Open that URL in a browser on this machine, "
            "log in to the network if it asks, and check the server URL in your settings"
        )
    return (
        f"{what} at {_where(resp)} answered HTTP {resp.status_code} with a body that is not "
        f"JSON ({quoted(ctype, limit=60) or 'no Content-Type'}, starting {head!r}); check "
        "the server URL in your settings, then pull again"
    )


def _shape_problem(
    body: Any, keys: tuple[str, ...], kind: type, rows: str | None, row_keys: tuple[str, ...]
) -> str | None:
    if kind is list:
        if type(body) is not list:
            return f"a {type(body).__name__} where a list was expected"
        return _rows_problem(body, keys, "the list")
    if type(body) is not dict:
        return f"a {type(body).__name__} where an object was expected"
    missing = [k for k in keys if k not in body]
    if missing:
        return f"no {', '.join(repr(k) for k in missing)}"
    if rows is not None:
        if type(body.get(rows)) is not list:
            return f"{rows!r} is not a list"
        return _rows_problem(body[rows], row_keys, repr(rows))
    return None


def _rows_problem(items: list[Any], keys: tuple[str, ...], where: str) -> str | None:
    if not keys:
        return None
    for i, item in enumerate(items):
        if type(item) is not dict:
            return f"item {i} of {where} is not an object"
        missing = [k for k in keys if k not in item]
        if missing:
            return f"item {i} of {where} has no {', '.join(repr(k) for k in missing)}"
    return None


def server_time(resp: requests.Response) -> str | None:
    """The server's clock from the ``Date`` header, as ISO-8601 UTC text (None if absent)."""
    value = resp.headers.get("Date")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC by RFC 5322
        moment = moment.replace(tzinfo=UTC)
    return utc_text(moment.isoformat())


def fetch_file(get: Callable[..., requests.Response], url: str | None) -> Iterator[bytes] | None:
    """An attachment's bytes through ``get`` (a source's retried GET), or None when the
    server has no such file (404). Not streamed: the body is read inside the retried call,
    so a link that drops half-way through a photo is retried instead of failing the pull."""
    if not url:
        return None
    resp = get(url, ok=(404,))
    return None if resp.status_code == 404 else iter([resp.content])


def _never_sent(error: Exception) -> bool:
    """True when the request cannot have reached the server (no connection was made)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _advice(status: int) -> str:
    if status == 401:
        return "; check the user name and password (or token) in your settings"
    if status == 403:
        return "; this account lacks the rights for that; ask the server's administrator"
    if status == 404:
        return "; check the URL, project and form id"
    return ""
