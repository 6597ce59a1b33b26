"""HTTP with retries for the sources: backoff on 429 (honouring Retry-After), 5xx, connection
resets and timeouts, within a bounded total time. Error text never carries credentials."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import requests
import urllib3

from pipelines.errors import SourceError
from pipelines.records import utc_text

log = logging.getLogger("manyi.http")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_SAFE_RETRY = frozenset({429, 503})  # the server says it did not act on the request
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# /v1/key/<token>/ (Central app users) and token=… in queries must never be shown.
_KEY_URL = re.compile(r"(/v1/key/)[^/]+")
_QUERY_SECRET = re.compile(r"((?:token|password|key)=)[^&\s]+", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    max_seconds: float = 300.0  # give up once this much time has gone on one request
    base_delay: float = 0.5
    max_delay: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 120.0

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove credentials from a URL or message."""
    text = _KEY_URL.sub(r"\1***", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


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


def error_detail(response: requests.Response) -> str:
    """Central's ``{code, message}``, Kobo's ``{detail}`` or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        if "message" in body:
            code = f" (code {body['code']})" if "code" in body else ""
            return f"{body['message']}{code}"
        if "detail" in body:
            return str(body["detail"])
        if "error" in body:  # kpi's form errors: {"error": "<pyxform/Enketo message>"}
            return str(body["error"])
    return json.dumps(body, ensure_ascii=False)[:200]


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
        problem: str
        wait: float | None = None
        try:
            response = send(method, url, timeout=policy.timeout, **kwargs)
        except _NETWORK_ERRORS as e:
            problem = f"{type(e).__name__}"
            if not idempotent and not _never_sent(e):
                raise SourceError(
                    scrub(
                        f"{what} did not answer {method} {url} ({problem}); it may or may not "
                        "have been done: check the server, then run again",
                        secrets,
                    )
                ) from None
        else:
            if response.status_code < 400 or response.status_code in ok:
                return response
            retryable = RETRY_STATUS if idempotent else _SAFE_RETRY
            if response.status_code not in retryable:
                raise SourceError(
                    scrub(
                        f"{what} refused {method} {url}: HTTP {response.status_code} "
                        f"{error_detail(response)}",
                        secrets,
                    )
                    + _advice(response.status_code)
                )
            problem = f"HTTP {response.status_code}"
            wait = _retry_after(response)
            response.close()
        elapsed = time.monotonic() - started
        if wait is None:
            wait = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
            wait *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto  # jitter so many clients do not retry in step
        if elapsed + wait > policy.max_seconds:
            raise SourceError(
                scrub(
                    f"{what} did not answer {method} {url} after {attempt} attempt(s) in "
                    f"{elapsed:.0f} s (last: {problem}); check the network or the server and "
                    "pull again: the store keeps what was already pulled",
                    secrets,
                )
            )
        log.info(
            "%s: %s on attempt %d, retrying in %.1f s", scrub(url, secrets), problem, attempt, wait
        )
        time.sleep(wait)


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
        raise SourceError(_not_json(resp, what, secrets)) from None
    problem = _shape_problem(body, keys, kind, rows, row_keys)
    if problem:
        raise SourceError(
            scrub(
                f"{what} at {_where(resp)} answered HTTP {resp.status_code} with JSON manyi "
                f"does not expect ({problem}); check that the URL points at {what} itself",
                secrets,
            )
        )
    return body


def _where(resp: requests.Response) -> str:
    """The URL asked for, and where a redirect (a captive portal's, say) ended up."""
    asked = resp.history[0].url if resp.history else resp.url
    return f"{asked} (redirected to {resp.url})" if resp.history else str(asked)


def _not_json(resp: requests.Response, what: str, secrets: tuple[str, ...]) -> str:
    ctype = resp.headers.get("Content-Type", "")
    head = resp.content[:200].decode("utf-8", "replace").strip()
    if "html" in ctype.lower() or head[:1] == "<":
        return scrub(
            f"{what} at {_where(resp)} answered HTTP {resp.status_code} with HTML, not JSON "
            "— a login page or proxy in between? Open that URL in a browser on this machine, "
            "log in to the network if it asks, and check the server URL in your settings",
            secrets,
        )
    return scrub(
        f"{what} at {_where(resp)} answered HTTP {resp.status_code} with a body that is not "
        f"JSON ({ctype or 'no Content-Type'}, starting {head[:60]!r}); check the server URL "
        "in your settings, then pull again",
        secrets,
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
