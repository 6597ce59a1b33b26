"""HTTP with retries for the sources: backoff on 429 (honouring Retry-After), 5xx, connection
resets and timeouts, within a bounded total time. Error text never carries credentials."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from pipelines.errors import SourceError

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
