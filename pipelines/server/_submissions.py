"""A submission received by `manyi serve`, from its XML into the store.

* The XML is parsed with defusedxml: no DTD, so no external entity and no expansion bomb.
  Truncated or non-XML text is refused, not stored as far as it parsed (Central does that).
* It becomes the same canonical :class:`~pipelines.records.Record` a pulled Collect instance
  is (the Collect-folder reader's element walk), under the source ``local``.
* Durability: the photos are written first (fsync'd, content-addressed), then one transaction
  holds the record, who sent it and the photo rows. Only after its COMMIT (``synchronous=FULL``)
  is the answer 201. One writer thread commits whatever is waiting in one transaction, so 50
  senders cost a few fsyncs, not 50.
* A resend with the same XML adds the photos that are missing and stores nothing twice; the same
  instanceID with other XML is a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from pipelines.errors import ManyiError
from pipelines.records import Quarantined, Record, Storable, now_utc, printable, storable
from pipelines.server._catalog import BuiltForm
from pipelines.sources.exports.collect import form_id_of as root_form_id
from pipelines.sources.exports.collect import instance_data, local_name
from pipelines.store import Blob, Store

SOURCE = "local"
_BATCH = 64  # submissions per group commit


class Refused(Exception):
    """A submission refused as sent: the HTTP status and a one-line message (Chinese first)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Parsed:
    form_id: str
    instance_id: str
    version: str | None
    data: dict[str, Any]
    files: frozenset[str]  # file names the XML's photo answers hold
    xml_sha256: str
    xml_text: str


@dataclass(frozen=True)
class Sender:
    login: str
    name: str
    device_id: str | None


@dataclass
class Job:
    parsed: Parsed
    sender: Sender
    photos: list[tuple[str, Blob]]
    done: Future = field(default_factory=Future)


@dataclass(frozen=True)
class Outcome:
    status: int  # 201 stored (or already stored), 409 conflict
    message: str
    new: bool = False  # a new submission (not a resend)
    photos_added: int = 0


def form_id_of(xml: bytes) -> str:
    """The form id of a submission's XML, or :class:`Refused` (400) when it is not XML.
    CPU-bound on a large XML: the server calls it in a worker thread."""
    try:
        return root_form_id(_parse(xml))
    except RecursionError:
        raise Refused(400, _TOO_DEEP) from None


def parse(xml: bytes, form: BuiltForm) -> Parsed:
    """``xml`` as a submission of ``form``, or :class:`Refused` (also 400 for nesting too deep
    for the element walk, where Python would raise RecursionError). Called in a worker thread."""
    try:
        return _parse_submission(xml, form)
    except RecursionError:
        raise Refused(400, _TOO_DEEP) from None


_TOO_DEEP = "提交的 XML 嵌套层数过多，已拒收（XML nested too deep）"


def conflicts(db: Any, p: Parsed) -> bool:
    """Whether ``p`` may not be stored: its instanceID is held by other XML sent here, or by a
    record from another source. The writer decides under its transaction; the server also asks
    before writing a resend's photos, so a refused resend leaves no file behind."""
    row = db.execute(
        "SELECT xml_sha256 FROM local_submissions WHERE form_id = ? AND instance_id = ?",
        (p.form_id, p.instance_id),
    ).fetchone()
    if row is not None:
        return row[0] != p.xml_sha256
    other = db.execute(
        "SELECT 1 FROM submissions WHERE form_id = ? AND instance_id = ?",
        (p.form_id, p.instance_id),
    ).fetchone()
    return other is not None


def _parse_submission(xml: bytes, form: BuiltForm) -> Parsed:
    root = _parse(xml)
    data = instance_data(root, set(form.repeats))
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    iid = (meta or {}).get("instanceID")
    if not iid or not isinstance(iid, str) or len(iid) > 512:
        raise Refused(400, "提交缺少 meta/instanceID（submission has no meta/instanceID）")
    files = frozenset(_binary_answers(root, form.binary_paths))
    return Parsed(
        form.form_id,
        iid.strip(),
        root.get("version"),
        data,
        files,
        hashlib.sha256(xml).hexdigest(),
        xml.decode("utf-8", "replace"),
    )


def _parse(xml: bytes) -> ET.Element:
    try:
        return SafeET.fromstring(xml, forbid_dtd=True)
    except DefusedXmlException:
        raise Refused(
            400, "提交的 XML 含有 DTD 或实体，已拒收（XML with a DTD or entities is refused）"
        ) from None
    except (ET.ParseError, ValueError) as e:
        raise Refused(
            400,
            f"提交的 XML 不完整或不是 XML，请重新发送（truncated or not XML: {printable(e, 120)}）",
        ) from None


def _binary_answers(root: ET.Element, paths: frozenset[str]) -> list[str]:
    names: list[str] = []

    def walk(el: ET.Element, prefix: str) -> None:
        for child in el:
            path = f"{prefix}{local_name(child.tag)}"
            if path in paths and child.text and child.text.strip():
                names.append(child.text.strip())
            walk(child, path + "/")

    walk(root, "")
    return names


class Ingest:
    """The one writer: a thread that owns a store connection and commits waiting jobs
    together. :meth:`submit` is awaited by the request handlers."""

    def __init__(self, store_factory: Callable[[], Store]):
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._factory = store_factory
        self._thread = threading.Thread(target=self._run, name="manyi-ingest", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    async def submit(self, job: Job) -> Outcome:
        self._queue.put(job)
        return await asyncio.wrap_future(job.done)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            store = self._factory()
            # 201 means on the disk: each commit waits for the WAL to be synced
            # (PostgreSQL's default, synchronous_commit=on, already does).
            if store.dialect == "sqlite":
                store.db.execute("PRAGMA synchronous=FULL")
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        with store:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                jobs = [first]
                while len(jobs) < _BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)
                        break
                    jobs.append(nxt)
                self._commit(store, jobs)

    def _commit(self, store: Store, jobs: list[Job]) -> None:
        try:
            with store.transaction() as db:
                outcomes = [_write(db, job) for job in jobs]
        except (ManyiError, OSError) as e:
            for job in jobs:
                job.done.set_exception(e)
            return
        except BaseException as e:  # a bug: each waiting request answers 500
            for job in jobs:
                job.done.set_exception(e)
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.done.set_result(outcome)


def _write(db: Any, job: Job) -> Outcome:
    p, s, now = job.parsed, job.sender, now_utc()
    if conflicts(db, p):
        return Outcome(409, CONFLICT)
    new = (
        db.execute(
            "SELECT 1 FROM local_submissions WHERE form_id = ? AND instance_id = ?",
            (p.form_id, p.instance_id),
        ).fetchone()
        is None
    )
    if new:
        record = Record(
            form_id=p.form_id,
            instance_id=p.instance_id,
            form_version=p.version,
            submitted_at=now,
            updated_at=now,
            review_state=None,
            data=p.data,
            attachments_expected=len(p.files),
            source_version=p.xml_sha256,
        )
        item = storable(record, SOURCE)
        if isinstance(item, Storable):
            db.execute(
                "INSERT INTO submissions (form_id, instance_id, form_version, submitted_at, "
                "updated_at, review_state, deleted, content_hash, source, source_version, "
                "attachments_expected, record_json, first_seen_at, changed_at) "
                "VALUES (?, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?, ?, ?, ?)",
                (p.form_id, p.instance_id, p.version, now, now, item.digest, SOURCE,
                 p.xml_sha256, len(p.files), item.text, now, now),
            )  # fmt: skip
        else:  # kept aside with its reason and the raw XML: the phone's data is never lost
            _quarantine(db, item, p, now)
        db.execute(
            "INSERT INTO local_submissions (form_id, instance_id, xml_sha256, xml, login, name, "
            "device_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (p.form_id, p.instance_id, p.xml_sha256, p.xml_text, s.login, s.name,
             s.device_id, now),
        )  # fmt: skip
    have = {
        r[0]
        for r in db.execute(
            "SELECT name FROM attachments WHERE form_id = ? AND instance_id = ? "
            "AND status = 'stored'",
            (p.form_id, p.instance_id),
        )
    }
    added = [(name, blob) for name, blob in job.photos if name not in have]
    if added:
        db.executemany(
            "INSERT INTO attachments (form_id, instance_id, name, sha256, local_path, size, "
            "status, fetched_at) VALUES (?, ?, ?, ?, ?, ?, 'stored', ?) "
            "ON CONFLICT (form_id, instance_id, name) DO UPDATE SET sha256 = excluded.sha256, "
            "local_path = excluded.local_path, size = excluded.size, status = 'stored', "
            "fetched_at = excluded.fetched_at",
            [(p.form_id, p.instance_id, n, b.sha256, b.rel, b.size, now) for n, b in added],
        )
    missing = len(p.files - have - {n for n, _ in added})
    message = (
        "提交成功（full submission upload was successful!）"
        if not missing
        else f"已收到，还缺 {missing} 张照片（received; {missing} file(s) still to come）"
    )
    return Outcome(201, message, new=new, photos_added=len(added))


CONFLICT = (
    "已有同一 instanceID 但内容不同的提交，已拒收；补传照片时请发送完全相同的表单 XML"
    "（A submission already exists with this ID, but with different XML.）"
)


def _quarantine(db: Any, item: Quarantined, p: Parsed, now: str) -> None:
    db.execute(
        "INSERT INTO quarantine (source, form_id, item_key, reason, raw, first_seen_at, "
        "last_seen_at, tries) VALUES (?, ?, ?, ?, ?, ?, ?, 1) "
        "ON CONFLICT (source, form_id, item_key) DO UPDATE SET reason = excluded.reason, "
        "raw = excluded.raw, last_seen_at = excluded.last_seen_at, "
        "tries = quarantine.tries + 1",
        (SOURCE, p.form_id, p.instance_id, item.reason, p.xml_text, now, now),
    )


def save_photos(store: Store, parts: list[tuple[str, BinaryIO]]) -> list[tuple[str, Blob]]:
    """Write each photo part under the store's content-addressed folder, fsync'd (runs in a
    worker thread: it touches only files, never the database)."""
    out = []
    for name, src in parts:
        src.seek(0)
        out.append((name, store.save_blob(iter(lambda src=src: src.read(1 << 20), b""))))
    return out
