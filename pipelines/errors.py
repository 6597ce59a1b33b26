"""One base exception for everything manyi reports to a user.

Messages say *where* (file, sheet, row, column; village code; URL and status) and *what to
do*. The CLI prints ``str(error)`` as one line and exits non-zero; it never shows a traceback
for these.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

_HIDDEN = "***"  # what a scrubbed secret becomes
# Names whose values are secret: in a query or form (``token=…``), a cookie, or JSON.
_SECRET_NAME = re.compile(
    r"token|password|passwd|secret|session|sessid|csrf|api_?key|^key$|^sig(?:nature)?$|^auth$"
    r"|^__host-|^__secure-",
    re.IGNORECASE,
)
# Every pattern starts at a literal or at the start of a run and never rescans a run, so a
# hostile megabyte of ``a.a.a.`` or ``a://a://`` costs linear time, not minutes.
_URL_RUN = re.compile(r"(://)(\S+)")  # a URL's user info is in its run, to the last @
_NAME_VALUE = re.compile(r"(?<![\w.-])([\w.-]+=)([^&\s\"',;#}]+)")
_JSON_MEMBER = re.compile(r"(\"([\w.-]+)\"\s*:\s*\")((?:[^\"\\]|\\.)*)")
_SHAPES = tuple(
    (re.compile(p, flags), repl)
    for p, flags, repl in (
        # Central app-user URLs carry their token in the path
        (r"(/key/)[^/\s?#\"']+", re.IGNORECASE, r"\1***"),  # /KEY/ too: paths are text
        # Authorization / Proxy-Authorization headers, as text, repr or JSON, any scheme
        (
            r"(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?:bearer|token|basic|digest|negotiate|ntlm|hawk|apikey)\s+)?)[^\s\"',;}]+",
            re.IGNORECASE,
            r"\1***",
        ),
        # Cookie / Set-Cookie headers: the whole value to the end of the line or quote
        # (once scrubbed, only the *** itself, so the advice after it in a message stays)
        (
            r"(\b(?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)(?:\*\*\*|[^\r\n\"']+)",
            re.IGNORECASE,
            r"\1***",
        ),
        # a bare bearer token anywhere
        (r"(\bbearer\s+)[^\s\"',;}]+", re.IGNORECASE, r"\1***"),
        # bare `Token <key>` / `Basic <b64>` as kpi and HTTP write them: long or with a digit,
        # so "Token expired" or "Basic information" stay readable
        (r"(\b(?:Token|Basic)\s+)(?=[^\s\"',;}]{16}|[^\s\"',;}]*\d)[^\s\"',;}]+", 0, r"\1***"),
    )
)


def _user_info(m: re.Match[str]) -> str:
    run = m[2]
    # a password may hold @ / ? or #; a path with an @ loses its start too: the safe side
    return m[1] + (f"{_HIDDEN}@{run.rpartition('@')[2]}" if "@" in run else run)


def _name_value(m: re.Match[str]) -> str:
    return m[1] + _HIDDEN if _SECRET_NAME.search(m[1][:-1]) else m[0]


def _json_member(m: re.Match[str]) -> str:
    return m[1] + _HIDDEN if _SECRET_NAME.search(m[2]) else m[0]


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without credentials: URL user info, ``/key/<token>`` paths, secret query,
    form and JSON values, ``Authorization``/``Cookie``/``Set-Cookie`` values, bearer tokens,
    and each of ``secrets`` as written, URL-quoted or JSON-escaped. Safe to apply twice."""
    for secret in secrets:
        if secret:
            variants = {secret, quote(secret, safe=""), quote_plus(secret)}
            variants.add(json.dumps(secret, ensure_ascii=False)[1:-1])
            variants.add(json.dumps(secret)[1:-1])
            for v in sorted(variants, key=len, reverse=True):
                text = text.replace(v, _HIDDEN)
    text = _URL_RUN.sub(_user_info, text)
    for pattern, repl in _SHAPES:
        text = pattern.sub(repl, text)
    text = _NAME_VALUE.sub(_name_value, text)
    return _JSON_MEMBER.sub(_json_member, text)


class ManyiError(Exception):
    """Base class: a problem the user can fix, described in one actionable message."""

    exit_code = 1


class ConfigError(ManyiError):
    """Configuration is missing or invalid (manyi.toml, environment, options)."""

    exit_code = 2


class DataError(ManyiError):
    """An input file (register, roster, boundaries, export) is unreadable or inconsistent."""


class SourceError(ManyiError):
    """A server (ODK Central, KoboToolbox) could not be reached, refused us, or misbehaved.

    ``str()`` is one line. Like pyodk's error, which keeps the response, it keeps what the
    server said: ``url`` (credentials scrubbed), ``status`` (HTTP status, None when there was
    no answer), ``code`` (Central's error code, e.g. ``"404.1"``) and ``detail`` (Central's
    ``message``, kpi's ``detail`` or ``error``, cut short and scrubbed). The message and the
    URL are scrubbed of anything shaped like a credential, and of ``secrets``, here, so no
    caller can forget to.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        secrets: tuple[str, ...] = (),
    ):
        super().__init__(scrub(message, secrets))
        self.url = scrub(url, secrets) if url else url
        self.status = status
        self.code = code
        self.detail = scrub(detail, secrets) if detail else detail


@dataclass(frozen=True)
class Problem:
    """One located problem in a form, reported like pyxform's error catalogue."""

    file: str
    message: str
    sheet: str | None = None
    row: int | None = None
    column: str | None = None  # column header, e.g. "label::Chinese (zh)"
    cell: str | None = None  # spreadsheet reference, e.g. "C7"

    def __str__(self) -> str:
        where = [self.file]
        if self.sheet:
            where.append(f"sheet '{self.sheet}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            col = f"column '{self.column}'"
            if self.cell:
                col += f" (cell {self.cell})"
            where.append(col)
        return f"{', '.join(where)}: {self.message}"


class FormError(ManyiError):
    """One or more forms failed to build; every problem is listed with its location."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        files = sorted({p.file for p in self.problems})
        self.summary = (
            f"{len(self.problems)} problem(s) in {len(files)} form(s): {', '.join(files)}"
        )
        super().__init__(self.summary + " | " + " | ".join(str(p) for p in self.problems))
