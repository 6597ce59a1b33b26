"""Central's OData feed: read as it arrives, where a pull stands in it, and its rows turned
into canonical records.

* :class:`Feed` reads one streamed ``{"value":[…],"@odata.…":…}`` body and hands out each row
  as soon as it is whole, so a pull holds one page of rows, not the whole feed. Central
  writes ``{"value":[`` first and its ``@odata`` keys after the rows
  (``rowStreamToOData`` in central-backend's ``lib/formats/odata.js``). Each row is decoded
  by :mod:`json`, exactly as ``json.loads`` would decode it: ijson's C backend (yajl) turns
  a lone surrogate escape (``\\ud83d``, half an emoji from a phone keyboard) into ``?``, so
  the record would be stored altered instead of quarantined with its reason, and it is no
  faster here (0.13 s against 0.09 s for 20,000 rows). :func:`read_feed` reads an answer.
* :class:`Marks`: the cursor stored with each page (the marks each phase starts from, and
  the last row read, to resume after).
* :func:`to_record`: Central's own keys stripped, GeoJSON turned back into XForm geo text,
  and the file names a record holds found in its file fields.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from pipelines.errors import SourceError
from pipelines.records import AttachmentRef, Quarantined, Record, utc_text

NAME = "central"
URL_SAFE = "*'()"  # what Central (and pyodk's URL formatter) leave unescaped
# The next pull asks again from this long before the server's clock at the start of the last
# one: a submission whose timestamp was taken before that moment but committed after it (a
# slow upload's transaction), and the Date header's whole seconds, are caught on the next
# pull. Rows fetched twice cost nothing: the store upserts.
CLOCK_MARGIN = timedelta(seconds=60)
CURSOR_VERSION = 2  # cursors of streamed pulls: deletions first, resumed by submissionDate
_CHUNK = 1 << 16  # bytes read from a feed at a time
MAX_ROW_CHARS = 64 << 20  # one row larger than this is not a submission: stop, do not buffer on

_HEAD = re.compile(r'\s*\{\s*"value"\s*:\s*\[')
_SPACE = re.compile(r"\s*")
_DECODER = json.JSONDecoder()


class FeedBroken(Exception):
    """The feed stopped before its end: the connection dropped or the body was cut short.
    Every row handed out before it is whole; the pull asks for the rest."""


class Feed:
    """The rows of one OData feed body, read from ``chunks`` (bytes) as they arrive.

    :meth:`start` reads until it knows whether the body is a feed that starts with its rows
    (False: ``head`` holds the bytes read, for the caller to read the body whole and say
    what it is). :meth:`rows` then yields each row once it is whole and ends at the closing
    ``]``, after which ``tail`` holds the ``@odata`` keys. A body that ends early raises
    :class:`FeedBroken`; text that is not JSON raises ``ValueError``.
    """

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buf, self._pos, self._ended = "", 0, False
        self.head = b""  # the bytes :meth:`start` read
        self._starting = True
        self.tail: dict[str, Any] = {}

    def _more(self) -> bool:
        """Append the next chunk; False at the end of the body."""
        if self._ended:
            return False
        for chunk in self._chunks:
            if not chunk:
                continue
            if self._starting:
                self.head += chunk
            if self._pos > 65536:  # drop what was read, so the buffer holds about one row
                self._buf, self._pos = self._buf[self._pos :], 0
            try:
                self._buf += self._utf8.decode(chunk)
            except UnicodeDecodeError as e:
                raise ValueError(f"not UTF-8 text ({e.reason})") from None
            return True
        self._ended = True
        with contextlib.suppress(UnicodeDecodeError):  # a body cut inside a character
            self._buf += self._utf8.decode(b"", final=True)
        return False

    def start(self) -> bool:
        try:
            while len(self._buf.lstrip()) < 16 and self._more():
                pass
        except ValueError:
            return False  # not text: the caller reads it whole and says what it is
        finally:
            self._starting = False
        found = _HEAD.match(self._buf)
        if found:
            self._pos = found.end()
        return found is not None

    def rows(self) -> Iterator[Any]:
        first = True
        while True:
            if not self._skip_space():
                raise FeedBroken("the body ended inside the list of rows")
            if self._buf[self._pos] == "]":
                self._pos += 1
                self._read_tail()
                return
            if not first:
                if self._buf[self._pos] != ",":
                    raise ValueError(f"expected ',' between rows, found {self._buf[self._pos]!r}")
                self._pos += 1
                if not self._skip_space():
                    raise FeedBroken("the body ended between two rows")
            yield self._row()
            first = False

    def _skip_space(self) -> bool:
        """Move past white space; False when the body ends before anything else."""
        while True:
            self._pos = _SPACE.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf):
                return True
            if not self._more():
                return False

    def _row(self) -> Any:
        # Decoded again only once the unread part has doubled: a row spread over many
        # chunks costs a few decodes, not one per chunk.
        retry_at = 0
        while True:
            if len(self._buf) - self._pos >= retry_at:
                try:
                    row, self._pos = _DECODER.raw_decode(self._buf, self._pos)
                    return row
                except json.JSONDecodeError as e:
                    if self._ended:
                        raise FeedBroken(f"the body ended inside a row ({e.msg})") from None
                retry_at = 2 * (len(self._buf) - self._pos)
                if retry_at > 2 * MAX_ROW_CHARS:
                    raise ValueError(f"a row longer than {MAX_ROW_CHARS >> 20} MiB")
            if not self._more():
                retry_at = 0  # decode once more: the error then says how it ended

    def _read_tail(self) -> None:
        while self._more():
            pass
        rest = self._buf[self._pos :].strip()
        try:
            if rest.startswith(","):
                self.tail.update(json.loads("{" + rest[1:]))
            elif rest != "}":
                raise ValueError(rest[:40])
        except ValueError:
            raise FeedBroken("the body ended after the rows, before its end") from None


def read_feed(
    resp: requests.Response, whole: Callable[[requests.Response], Any]
) -> tuple[Iterator[Any], dict[str, Any]]:
    """The rows of a feed answer as they arrive, and its ``@odata`` keys once they have all
    been read. An answer that does not start with its rows (a proxy's HTML page, JSON of
    another shape) is read whole and handed to ``whole``, which checks it and says what it
    is (:meth:`CentralClient.json`)."""
    chunks = _chunks(resp)
    feed = Feed(chunks)
    if feed.start():
        return _checked(feed, resp.url), feed.tail
    # requests' own reading is over: hand it the body, so its checks and messages apply
    resp._content = feed.head + b"".join(chunks)
    body = whole(resp)
    if not isinstance(body.get("value"), list):
        raise SourceError(f"ODK Central sent a page without 'value' for {resp.url}")
    return iter(body["value"]), body


def _checked(feed: Feed, url: str) -> Iterator[Any]:
    try:
        yield from feed.rows()
    except FeedBroken:
        raise
    except ValueError as e:  # not JSON (UnicodeDecodeError is one too)
        raise SourceError(
            f"ODK Central sent a feed manyi cannot read at {url} ({e}); check that the URL "
            "points at ODK Central itself, then pull again",
            url=url,
        ) from None


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body's bytes as they arrive (gzip undone); a break is :class:`FeedBroken`."""
    try:
        yield from resp.iter_content(_CHUNK)
    except requests.RequestException as e:
        text = str(e).lower()
        if "timed out" in text:
            raise FeedBroken("read timed out") from None
        if isinstance(e, requests.exceptions.ChunkedEncodingError) or "reset" in text:
            raise FeedBroken("connection broken in the middle of the body") from None
        raise FeedBroken(type(e).__name__) from None


@dataclass
class Marks:
    """Where a form's pull stands; kept, as the cursor, with each page stored."""

    hwm: str | None = None  # the data phase reads what was submitted or changed since
    deleted_hwm: str | None = None  # the deletions phase reads what was deleted since
    pending: str | None = None  # the latest time seen in a data phase under way
    deleted_pending: str | None = None
    started: str | None = None  # the server's clock when the phase under way began
    phase: str = "deleted"  # "deleted", then "data"
    until: str | None = None  # submissionDate of the last row the phase has read
    # ids of the rows read at ``until``'s millisecond, which the rest of the feed repeats
    boundary: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, cursor: dict[str, Any] | None) -> tuple[Marks, bool]:
        """The marks in a stored cursor, and whether it shows a pull under way (the pull
        then goes round once more, see :meth:`CentralSource.pages`)."""
        state = dict(cursor or {})
        marks = cls(hwm=state.get("hwm"), deleted_hwm=state.get("deleted_hwm"))
        if state.get("v") != CURSOR_VERSION:
            # A cursor from paged pulls (data first, then deletions, with a resume link):
            # its marks hold; a phase it had under way starts again from them.
            under_way = state.get("next") or state.get("started") or state.get("phase") == "deleted"  # fmt: skip
            return marks, bool(under_way)
        marks.pending, marks.deleted_pending = state.get("pending"), state.get("deleted_pending")
        marks.started, marks.until = state.get("started"), state.get("until")
        marks.phase = "data" if state.get("phase") == "data" else "deleted"
        under_way = marks.phase == "data" or marks.until is not None or marks.started is not None
        return marks, under_way

    def cursor(self) -> dict[str, Any]:
        return {
            "v": CURSOR_VERSION,
            "hwm": self.hwm,
            "pending": self.pending,
            "deleted_hwm": self.deleted_hwm,
            "deleted_pending": self.deleted_pending,
            "started": self.started,
            "phase": self.phase,
            "until": self.until,
        }

    def saw(self, row: Any) -> bool:
        """Note a row read, before :func:`to_record` strips its ``__system``; False for one
        the rest of a broken feed sends again."""
        system = row.get("__system") if type(row) is dict else None
        stamp = _stamp(system, "submissionDate")
        if self.phase == "deleted":
            self.deleted_pending = _latest(self.deleted_pending, _stamp(system, "deletedAt"))
        if stamp is None:  # a row the feed cannot be resumed after: the next one will do
            return True
        iid = str(row.get("__id"))
        if stamp != self.until:
            self.until, self.boundary = stamp, {iid}
            return True
        if iid in self.boundary:
            return False
        self.boundary.add(iid)
        return True

    def stored(self, item: Record | Quarantined) -> None:
        """Note a record of the data phase: its times move the mark the phase ends at."""
        if isinstance(item, Record):
            self.pending = _latest(self.pending, item.submitted_at, item.updated_at)

    def end_phase(self) -> None:
        """Move the phase's mark: the latest time seen, but never after the server's clock
        when the phase began less :data:`CLOCK_MARGIN` (the feed is read from the newest
        end, so what arrives or changes while it is read lands behind the reader)."""
        if self.phase == "deleted":
            self.deleted_hwm = _next_mark(self.started, self.deleted_pending or self.deleted_hwm)
            self.deleted_pending, self.phase = None, "data"
        else:
            self.hwm = _next_mark(self.started, self.pending or self.hwm)
            self.pending, self.phase = None, "deleted"
        self.started, self.until, self.boundary = None, None, set()


def next_ms(stamp: str) -> str:
    """The millisecond after ``stamp`` (UTC text)."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    return utc_text(moment.isoformat()) or stamp


def _stamp(system: Any, key: str) -> str | None:
    try:
        return utc_text(system.get(key)) if type(system) is dict else None
    except ValueError:
        return None


def _next_mark(started: str | None, seen: str | None) -> str | None:
    if started is None:
        return seen
    moment = datetime.fromisoformat(started.replace("Z", "+00:00")) - CLOCK_MARGIN
    floor = utc_text(moment.isoformat())
    return min(floor, seen) if seen and floor else floor


def _latest(*stamps: str | None) -> str | None:
    return max((s for s in stamps if s), default=None)


class Files:
    """Where a form keeps file names, and the URL prefix to fetch them by name."""

    def __init__(self, paths: list[tuple[str, ...]], prefix: str):
        self.paths, self.prefix = paths, prefix

    def refs(self, iid: str, data: dict[str, Any], present: int) -> tuple[AttachmentRef, ...]:
        names = list(dict.fromkeys(n for p in self.paths for n in _values_at(data, p)))
        base = f"{self.prefix}{quote(iid, safe=URL_SAFE)}/attachments/"
        return tuple(
            AttachmentRef(n, url=base + quote(n, safe=URL_SAFE), exists=present > 0) for n in names
        )


def _values_at(node: Any, parts: tuple[str, ...]) -> Iterator[str]:
    if type(node) is list:
        for item in node:
            yield from _values_at(item, parts)
    elif not parts:
        if isinstance(node, str) and node:
            yield node
    elif type(node) is dict:
        yield from _values_at(node.get(parts[0]), parts[1:])


def _clean(value: dict[str, Any]) -> dict[str, Any]:
    """Strip Central's own keys (``__id``, ``__system``, navigation links) from an OData
    entity, in place, and turn GeoJSON back into XForm text. In place and terse because it
    runs on every field of every row: it is most of a pull's own work."""
    for key in [k for k in value if k[:2] == "__" or "@odata" in k]:
        del value[key]
    for key, item in value.items():
        kind = type(item)
        if kind is dict:
            if "coordinates" in item:
                value[key] = geojson_to_xform(item)
            else:
                _clean(item)
        elif kind is list:
            for row in item:
                if type(row) is dict:
                    _clean(row)
    return value


def _raw(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False)[:20000]


def to_record(
    form_id: str, row: Any, versions: set[str], files: Files | None = None, deleted: bool = False
) -> Record | Quarantined:
    if type(row) is not dict:
        return Quarantined(NAME, form_id, "row is not a JSON object", _raw(row))
    iid = row.get("__id")
    system = row.get("__system")
    if not isinstance(iid, str) or not iid:
        return Quarantined(NAME, form_id, "row has no __id (instance id)", _raw(row))
    if type(system) is not dict:
        return Quarantined(NAME, form_id, "row has no __system block", _raw(row), iid)
    meta = row.get("meta")
    if not deleted and not (type(meta) is dict and meta.get("instanceID")):
        return Quarantined(
            NAME,
            form_id,
            f"no meta/instanceID in the submission (Central made up the id {iid}); "
            "the XML sent was probably truncated",
            _raw(row),
            iid,
        )
    version = system.get("formVersion")
    if not deleted and versions and version not in versions:
        return Quarantined(
            NAME,
            form_id,
            f"unknown form version {version!r} (published: {', '.join(sorted(versions))})",
            _raw(row),
            iid,
        )
    try:
        submitted = utc_text(system.get("submissionDate"))
        updated = utc_text(system.get("updatedAt"))
        expected = int(system.get("attachmentsExpected") or 0)
        present = int(system.get("attachmentsPresent") or 0)
    except (ValueError, TypeError) as e:
        return Quarantined(NAME, form_id, f"unreadable value: {e}", _raw(row), iid)
    try:
        data = _clean(row)  # in place: the row is ours, and copying it costs a third
    except (ValueError, TypeError, KeyError) as e:
        row.update(__id=iid, __system=system)  # keep what the server sent, for the record
        return Quarantined(NAME, form_id, f"unreadable value: {e}", _raw(row), iid)
    refs: tuple[AttachmentRef, ...] = ()
    if expected and files and files.paths:
        refs = files.refs(iid, data, present)
        if len(refs) != expected:
            refs = ()  # a field this version lacks: list the submission's files instead
    return Record(
        form_id=form_id,
        instance_id=iid,
        form_version=version,
        submitted_at=submitted,
        updated_at=updated,
        review_state=system.get("reviewState"),
        data=data,
        deleted=deleted or bool(system.get("deletedAt")),
        attachments_expected=expected,
        attachments=refs,
        source_version=updated or submitted,
    )


def _num(value: Any) -> str:
    if type(value) is float and value.is_integer():
        return str(int(value))
    return str(value)


def _position(coords: list[Any], accuracy: Any = None) -> str:
    # GeoJSON is [lon, lat, alt]; the XForm text is "lat lon alt acc".
    lon, lat, *rest = coords
    parts = [_num(lat), _num(lon)] + [_num(v) for v in rest[:1]]
    if accuracy is not None:
        if not rest:
            parts.append("0")
        parts.append(_num(accuracy))
    return " ".join(parts)


def geojson_to_xform(value: Any) -> Any:
    """Turn Central's GeoJSON geometry back into XForm geo text; anything else unchanged."""
    if not (isinstance(value, dict) and "coordinates" in value and "type" in value):
        return value
    kind, coords = value["type"], value["coordinates"]
    if kind == "Point":
        props = value.get("properties")
        accuracy = props.get("accuracy") if props else None
        if len(coords) == 3 and accuracy is not None:  # what Collect sends: lat lon alt acc
            lon, lat, alt = coords
            return f"{_num(lat)} {_num(lon)} {_num(alt)} {_num(accuracy)}"
        return _position(coords, accuracy)
    if kind == "LineString":
        return ";".join(_position(c) for c in coords)
    if kind == "Polygon":
        return ";".join(_position(c) for c in coords[0]) if coords else ""
    raise ValueError(f"unsupported GeoJSON geometry type {kind!r}")
