"""The ``$filter`` of the Central stand-in's OData feeds, as ODK Central answers it.

Central filters only on ``__id`` and a few ``__system`` fields; any other field is a 501.5
that names it and where it is (``village at 0``), and text it cannot parse is a 400.18
(``Unexpected character at 23``). Timestamps go unquoted, strings in single quotes,
``submitterId`` compares as a number, ``year()``/``month()``/``day()``/``hour()``/
``minute()``/``second()`` take a timestamp field, and a repeat table may filter on its
parent with ``$root/Submissions/__system/…``. The predicate takes the values of those
fields for one submission, keyed by their OData paths (:data:`FILTERABLE`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

FILTERABLE = (
    "__id",
    "__system/submissionDate",
    "__system/updatedAt",
    "__system/submitterId",
    "__system/reviewState",
    "__system/deletedAt",
)
_ROOT = "$root/Submissions/"
_FUNCS: dict[str, Callable[[datetime], int]] = {
    "year": lambda d: d.year,
    "month": lambda d: d.month,
    "day": lambda d: d.day,
    "hour": lambda d: d.hour,
    "minute": lambda d: d.minute,
    "second": lambda d: d.second,
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>'[^']*')|(?P<ts>\d{4}-\d\d-\d\dT[\d:.]+Z)"
    r"|(?P<num>\d+(?:\.\d+)?)|(?P<word>[A-Za-z_$][\w/$-]*))"
)

Predicate = Callable[[Mapping[str, Any]], bool]
_Tok = tuple[str, str, int]  # (kind, text, offset in the expression)


class FilterError(Exception):
    """Central's answer to a filter it refuses: the HTTP status and its JSON error body."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body["message"])
        self.status, self.body = status, body


def _unparseable(at: int) -> FilterError:
    reason = f"Unexpected character at {at}"
    return FilterError(
        400,
        {
            "message": f"The OData filter expression you provided could not be parsed: {reason}",
            "code": 400.18,
            "details": {"reason": reason},
        },
    )


def _unsupported(name: str, at: int) -> FilterError:
    return FilterError(
        501,
        {
            "message": "The given OData filter expression references fields not supported "
            f"by this server: {name} at {at}",
            "code": 501.5,
            "details": {"at": at, "text": name},
        },
    )


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while text[pos:].strip():
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _unparseable(pos)
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _literal(tok: _Tok) -> Any:
    kind, raw, at = tok
    if kind == "str":
        return raw[1:-1]
    if kind == "ts":
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if kind == "num":
        return float(raw)
    if raw == "null":
        return None
    raise _unparseable(at)


class _Parser:
    def __init__(self, text: str):
        self.text, self.toks, self.pos = text, _tokens(text), 0

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> _Tok:
        if self.pos >= len(self.toks):
            raise _unparseable(len(self.text))
        self.pos += 1
        return self.toks[self.pos - 1]

    def field(self, tok: _Tok) -> str:
        kind, name, at = tok
        if kind != "word":
            raise _unparseable(at)
        name = name.removeprefix(_ROOT)
        if name not in FILTERABLE:
            raise _unsupported(tok[1], at)
        return name

    def comparison(self, first: _Tok) -> Predicate:
        if first[1] in _FUNCS and (nxt := self.peek()) and nxt[0] == "lp":
            self.take()
            name, fn = self.field(self.take()), _FUNCS[first[1]]
            if self.take()[0] != "rp":
                raise _unparseable(first[2])

            def get(values: Mapping[str, Any]) -> Any:
                v = values.get(name)
                return None if v is None else float(fn(v))
        else:
            name = self.field(first)

            def get(values: Mapping[str, Any]) -> Any:
                return values.get(name)

        op = self.take()
        if op[1] not in _OPS:
            raise _unparseable(op[2])
        rhs, compare = _literal(self.take()), _OPS[op[1]]
        return lambda values: compare(get(values), rhs)

    def primary(self) -> Predicate:
        tok = self.take()
        if tok[0] == "lp":
            inner = self.disjunction()
            if self.take()[0] != "rp":
                raise _unparseable(tok[2])
            return inner
        if tok[0] == "word" and tok[1] == "not":
            inner = self.primary()
            return lambda values: not inner(values)
        return self.comparison(tok)

    def conjunction(self) -> Predicate:
        left = self.primary()
        while (t := self.peek()) and t[1] == "and":
            self.take()
            left = (lambda a, b: lambda v: a(v) and b(v))(left, self.primary())
        return left

    def disjunction(self) -> Predicate:
        left = self.conjunction()
        while (t := self.peek()) and t[1] == "or":
            self.take()
            left = (lambda a, b: lambda v: a(v) or b(v))(left, self.conjunction())
        return left


def compile_filter(text: str) -> tuple[Predicate, bool]:
    """Return (predicate, mentions ``__system/deletedAt``). Raises :class:`FilterError`."""
    parser = _Parser(text)
    pred = parser.disjunction()
    if (extra := parser.peek()) is not None:
        raise _unparseable(extra[2])
    return pred, "__system/deletedAt" in text
