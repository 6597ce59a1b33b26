"""The canonical record every source yields and the store keeps, the quarantine record, and
what the store may keep (:func:`storable`, its bounds, UTC time text).

A record's ``data`` is keyed by the XForm's own field names: groups are nested dicts and
repeats are lists of dicts. Geopoints stay in XForm text (``lat lon alt acc``). Times are
ISO-8601 UTC strings ending in ``Z`` so they sort as text in any SQL database.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class AttachmentRef:
    """One file a submission refers to. ``url`` or ``path`` says where a source finds it."""

    name: str
    url: str | None = None
    path: str | None = None  # local file (export zip member or Collect folder)
    exists: bool = True  # False when the server knows the name but never got the file


# One encoder for every record: json.dumps with options builds a new encoder on each call.
# allow_nan=False: NaN and Infinity are not JSON, and no answer a phone sends is either.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Record:
    form_id: str
    instance_id: str
    form_version: str | None
    submitted_at: str | None
    updated_at: str | None
    review_state: str | None
    data: dict[str, Any]
    deleted: bool = False
    attachments_expected: int = 0
    attachments: tuple[AttachmentRef, ...] = ()
    # The source's own change marker (Central updatedAt, Kobo _uuid): used to spot edits.
    source_version: str | None = None

    def serialised(self) -> tuple[str, str]:
        """``(data as JSON, content hash)`` from one serialisation.

        The hash covers what a user would call the submission's content (version, review
        state, deletion, answers), not its bookkeeping. Keys keep the source's order, which
        is the form's order and stable for a given source, so one ``json.dumps`` serves
        both the stored text and the hash.

        Raises ``ValueError`` (``UnicodeEncodeError`` for a lone surrogate) when the record
        cannot be stored as it is: :func:`storable` says why, and where.
        """
        text = _ENCODER.encode(self.data)
        head = f"{self.form_version}\x1f{self.review_state}\x1f{int(self.deleted)}\x1f"
        return text, hashlib.sha256((head + text).encode("utf-8")).hexdigest()

    def content_hash(self) -> str:
        return self.serialised()[1]

    def to_json(self) -> str:
        return self.serialised()[0]


@dataclass(frozen=True)
class Quarantined:
    """A record that could not be read. Kept with its reason and raw text, never dropped."""

    source: str
    form_id: str
    reason: str
    raw: str
    key: str = field(default="")  # instance id when known, else a hash of ``raw``

    def item_key(self) -> str:
        if self.key:
            return self.key
        return "sha256:" + hashlib.sha256(self.raw.encode("utf-8", "replace")).hexdigest()


# ---- what the store may keep ------------------------------------------------------------
# Bounds on what a source may hand the store. Above them a record is quarantined, not cut.
MAX_TEXT_CHARS = 4 * 1024 * 1024  # one answer; a typed note is a few hundred characters
MAX_RECORD_CHARS = 16 * 1024 * 1024  # a whole submission as JSON
MAX_ID_CHARS = 512  # instance ids, versions, states, keys (uuid:… is 41)
MAX_RAW_CHARS = 64 * 1024 * 1024  # a quarantined item's raw text (cut beyond, and said so)

# C0 controls but tab, newline and return: no keyboard types them; XLSX refuses them and
# terminals obey them. Answers are stored without them; ids and keys holding one are not.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# What the encoder writes for a control character, or a number of 64 bits or more; may also
# match an escaped backslash (C:\\bin) or digits in a text, which only cost the slow look.
_SUSPECT = re.compile(r"\\u00[01][0-9a-fA-F]|\\[bf]|[0-9]{20}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True)
class Storable:
    """A record as the store writes it: its JSON text and content hash, computed once."""

    record: Record
    text: str
    digest: str


class _Unfit(Exception):
    """Why a record cannot be stored, and the field."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")


def storable_text(text: str) -> str:
    """``text`` as SQLite (UTF-8) can keep it: a lone surrogate becomes ``\\udXXX``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def printable(text: object, limit: int = 300) -> str:
    """Outside text (a file or member name, an id) for a one-line message: controls, line
    breaks and surrogates escaped, and cut at ``limit`` characters."""
    out = _UNPRINTABLE.sub(lambda m: ascii(m[0])[1:-1], str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def storable(record: Record, source: str) -> Storable | Quarantined:
    """The record as the store keeps it, or quarantined with where and why.

    Decided per cause: control characters (NUL …) in an answer are dropped, the record kept.
    A lone UTF-16 surrogate, a key that is not text, a number that is not finite or has more
    than 64 bits, an answer over ``MAX_TEXT_CHARS``, nesting too deep for Python, a
    record over ``MAX_RECORD_CHARS`` or a bad id: quarantined, raw text kept (surrogates
    escaped), so that one record never stops the rest of its page.
    """
    try:
        _check_header(record)
        try:
            text, digest = record.serialised()
        except (ValueError, TypeError, RecursionError):
            pass  # the slow look below says which field, and why
        else:
            # Under MAX_TEXT_CHARS no one text can be over its bound: only a control
            # character (or an escaped backslash that looks like one) needs a closer look.
            if len(text) <= MAX_TEXT_CHARS and not _SUSPECT.search(text):
                return Storable(record, text, digest)
        data = _clean(record.data, "")
        fixed = record if data is record.data else replace(record, data=data)
        try:
            text, digest = fixed.serialised()
        except (ValueError, TypeError) as e:
            raise _Unfit("record", f"cannot be written as JSON ({type(e).__name__})") from None
        if len(text) > MAX_RECORD_CHARS:
            raise _Unfit(
                "record",
                f"{len(text):,} characters as JSON, over the "
                f"{MAX_RECORD_CHARS // 2**20} MiB bound for one submission",
            )
        return Storable(fixed, text, digest)
    except RecursionError:  # groups in groups thousands deep: no form nests so
        reason = "record: nested too deep to store"
    except _Unfit as e:
        reason = str(e)
    iid = record.instance_id if isinstance(record.instance_id, str) else ""
    key = printable(iid, MAX_ID_CHARS) if iid else ""
    return Quarantined(source, printable(record.form_id, 200), reason, raw_text(record), key)


def _check_header(record: Record) -> None:
    iid = record.instance_id
    if not isinstance(iid, str) or not iid:
        raise _Unfit("instance id", f"missing or not text ({type(iid).__name__})")
    _check_id("instance id", iid)
    for name in ("form_version", "submitted_at", "updated_at", "review_state", "source_version"):
        value = getattr(record, name)
        if value is not None:
            if not isinstance(value, str):
                raise _Unfit(name, f"not text ({type(value).__name__})")
            _check_id(name, value)
    count = record.attachments_expected
    if type(count) is not int or not 0 <= count <= 100_000:
        raise _Unfit("attachments_expected", "not a count of files")
    for ref in record.attachments:
        if not isinstance(ref.name, str) or not ref.name or len(ref.name) > 1024:
            raise _Unfit("attachment", "a file name that is empty, not text or too long")
        if _UNPRINTABLE.search(ref.name):
            raise _Unfit(f"attachment {printable(ref.name, 80)}", "unreadable file name")


def _check_id(where: str, value: str) -> None:
    if len(value) > MAX_ID_CHARS:
        raise _Unfit(where, f"{len(value):,} characters, over the bound of {MAX_ID_CHARS}")
    if _SURROGATE.search(value):
        raise _Unfit(where, "holds a lone UTF-16 surrogate (broken text)")
    if _CONTROL.search(value) or "\n" in value or "\r" in value or "\t" in value:
        raise _Unfit(where, "holds a control character")


def _clean(value: Any, where: str) -> Any:
    """``value`` with control characters dropped from its text (the same object when there
    were none); raises :class:`_Unfit` for anything that cannot be kept."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT_CHARS:
            raise _Unfit(
                _field(where),
                f"{len(value):,} characters, over the {MAX_TEXT_CHARS // 2**20} MiB bound "
                "for one answer",
            )
        bad = _SURROGATE.search(value)
        if bad:
            raise _Unfit(
                _field(where),
                f"lone UTF-16 surrogate U+{ord(bad[0]):04X} (broken text from the phone's "
                "keyboard, half of an emoji or rare character)",
            )
        return _CONTROL.sub("", value) if _CONTROL.search(value) else value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > 64:
            raise _Unfit(_field(where), f"an integer of {value.bit_length()} bits, too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unfit(_field(where), f"{value!r} is not a finite number")
        return value
    if isinstance(value, dict):
        out, changed = {}, False
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Unfit(_field(where), f"a key that is not text ({key!r:.40})")
            # The rules for an answer's text; but a name is not cleaned, it is quarantined.
            if len(key) > MAX_TEXT_CHARS:
                raise _Unfit(_field(where), f"a field name of {len(key):,} characters")
            if _SURROGATE.search(key) or _CONTROL.search(key):
                raise _Unfit(_field(where), "a field name with a control character or surrogate")
            out[key] = _clean(item, f"{where}/{key}" if where else key)
            changed = changed or out[key] is not item
        return out if changed else value
    if isinstance(value, list | tuple):
        items = [_clean(v, f"{where}[{i}]") for i, v in enumerate(value, 1)]
        changed = any(a is not b for a, b in zip(items, value, strict=True))
        return items if changed else value
    raise _Unfit(_field(where), f"a value of type {type(value).__name__}, not text or a number")


def _field(where: str) -> str:
    return f"field '{printable(where, 120)}'" if where else "record"


def raw_text(record: Record) -> str:
    """Everything a record holds, as JSON text SQLite can keep (surrogates as ``\\udXXX``
    escapes, so ``json.loads`` gives the original back), cut at ``MAX_RAW_CHARS``."""
    body = {
        "instance_id": record.instance_id,
        "form_version": record.form_version,
        "submitted_at": record.submitted_at,
        "updated_at": record.updated_at,
        "review_state": record.review_state,
        "deleted": record.deleted,
        "source_version": record.source_version,
        "data": _plain(record.data, 0),
    }
    text = json.dumps(_plain(body, 0), ensure_ascii=False)
    if len(text) > MAX_RAW_CHARS:
        text = text[:MAX_RAW_CHARS] + f"…[cut: {len(text) - MAX_RAW_CHARS:,} more characters]"
    return storable_text(text)


def _plain(value: Any, depth: int) -> Any:
    """A JSON-writable copy of anything: keys as text, huge integers and odd types as repr."""
    if value is None or isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 4096 else f"<integer of {value.bit_length()} bits>"
    if depth > 200:  # what nests deeper was quarantined for it; this is only its raw
        return "<nested too deep>"
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else _key_text(k): _plain(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    return f"<{type(value).__name__}>"


def _key_text(key: Any) -> str:
    try:
        return repr(key)[:200]
    except ValueError:
        return f"<{type(key).__name__}>"


_CANONICAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def utc_text(value: str | None) -> str | None:
    """Normalise a server timestamp to ``YYYY-MM-DDTHH:MM:SS.fffZ`` (UTC).

    Kobo's ``_submission_time`` has no zone: it is UTC by kpi's definition.
    """
    if value in (None, ""):
        return None
    text = str(value).strip()
    if _CANONICAL.match(text):  # already in our form (every Central time): nothing to do
        return text
    if not _TS.match(text):
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_utc() -> str:
    return utc_text(datetime.now(UTC).isoformat())  # type: ignore[return-value]
