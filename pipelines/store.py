"""The submission store: one SQLite file under ``settings.data_dir``.

* ``submissions`` is keyed by (form_id, instance_id). An edit replaces the row and counts as
  updated; a deletion sets ``deleted`` and keeps the row; a deleted row the server sends live
  again is restored (updated).
* ``changed_at`` moves with every write a table could show (an edit, a deletion, a new
  ``updated_at`` with the same content), never below ``first_seen_at`` (writers' clocks may
  differ a little). :mod:`pipelines.tables` catches up from it: :meth:`Store.changes` reads a
  form's changed rows from one covering index, :meth:`Store.records_by_id` their records.
* ``attachments`` rows point at files stored by content hash under ``data_dir/attachments``,
  so a hostile name (``../../x``, ``/etc/passwd``) is only ever text in a column.
* ``sync_state`` holds one opaque JSON cursor per (source, form_id). A page's rows and the
  cursor after that page are written in one transaction, so a killed pull resumes cleanly.
* ``quarantine`` keeps records that could not be read or stored, with the reason, the raw
  text and how often they were seen, until they read. A record the store cannot keep as it
  is (a lone surrogate, a 20 MB answer: :func:`pipelines.records.storable`) goes there too,
  and the rest of its page is stored.
* Faults of the file or the disk (full, read-only, locked, corrupt) are one
  :class:`StoreError` line naming the path and the cause. A page that fails leaves nothing
  behind, so running the pull again continues where it stopped.
* ``open_store(settings, read_only=True)`` only reads (SQLite ``mode=ro``): it never creates
  the file nor migrates it, and works on a data directory the user cannot write.

The SQL is kept portable (``INSERT … ON CONFLICT … DO UPDATE``, TEXT/INTEGER columns, no
AUTOINCREMENT). With ``store_url = postgresql://…`` the same store lives in PostgreSQL
(psycopg 3), for a shared server (``manyi serve --workers N``, pulls on other machines):
:class:`pipelines._postgres.PgConnection` speaks the SQLite dialect the callers write (``?`` placeholders,
``BEGIN IMMEDIATE``, ``INSERT OR IGNORE``), the migrations are translated (TEXT in byte
order, ``COLLATE "C"``, as SQLite compares; INTEGER as BIGINT), and ``BEGIN IMMEDIATE``
takes one transaction-scoped advisory lock, so writers queue one at a time exactly as they
do on SQLite and a page still reads what it compares with under its own write lock. Its
faults are the same :class:`StoreError` lines, naming the server and database, never the
password.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipelines._postgres import PG_TIMEOUT, PgConnection, PgError, pg_ddl, shown_url
from pipelines.errors import DataError, scrub
from pipelines.records import (
    Quarantined,
    Record,
    Storable,
    now_utc,
    printable,
    storable,
    storable_text,
)

# Each entry is one schema version; never edit a released entry, append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE submissions (
            form_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            form_version TEXT,
            submitted_at TEXT,
            updated_at TEXT,
            review_state TEXT,
            deleted INTEGER NOT NULL DEFAULT 0,
            content_hash TEXT NOT NULL,
            source TEXT NOT NULL,
            source_version TEXT,
            attachments_expected INTEGER NOT NULL DEFAULT 0,
            record_json TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            PRIMARY KEY (form_id, instance_id)
        )""",
        "CREATE INDEX submissions_form_updated ON submissions (form_id, updated_at)",
        """CREATE TABLE attachments (
            form_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            name TEXT NOT NULL,
            sha256 TEXT,
            local_path TEXT,
            size INTEGER,
            status TEXT NOT NULL,
            fetched_at TEXT,
            PRIMARY KEY (form_id, instance_id, name)
        )""",
        "CREATE INDEX attachments_sha256 ON attachments (sha256)",
        """CREATE TABLE sync_state (
            source TEXT NOT NULL,
            form_id TEXT NOT NULL,
            cursor_json TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (source, form_id)
        )""",
        """CREATE TABLE quarantine (
            source TEXT NOT NULL,
            form_id TEXT NOT NULL,
            item_key TEXT NOT NULL,
            reason TEXT NOT NULL,
            raw TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            PRIMARY KEY (source, form_id, item_key)
        )""",
    ),
    (
        # What `manyi forms publish` last put on a server, for servers that keep no hash of
        # our build (KoboToolbox): the form is skipped only if the server still deploys
        # ``remote_version``.
        """CREATE TABLE published (
            target TEXT NOT NULL,
            form_id TEXT NOT NULL,
            remote_id TEXT NOT NULL,
            version TEXT NOT NULL,
            md5 TEXT NOT NULL,
            media_json TEXT NOT NULL,
            remote_version TEXT,
            published_at TEXT NOT NULL,
            PRIMARY KEY (target, form_id)
        )""",
    ),
    # How often a quarantined item was seen (each pull that read it and failed again).
    ("ALTER TABLE quarantine ADD COLUMN tries INTEGER NOT NULL DEFAULT 1",),
    (
        # The people who collect (`manyi users`): their role and villages, and the sha256 of
        # their collection link's token (the token itself is never stored).
        """CREATE TABLE people (
            login TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            villages_json TEXT NOT NULL,
            groups_json TEXT NOT NULL,
            forms_json TEXT NOT NULL,
            token_sha256 TEXT NOT NULL UNIQUE,
            token_created_at TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    ),
    (
        # Submissions received by `manyi serve` (source ``local``): who sent each, from
        # which device, and the exact XML, whose sha256 tells a resend (same bytes) from a
        # conflicting one (same instanceID, other bytes).
        """CREATE TABLE local_submissions (
            form_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            xml_sha256 TEXT NOT NULL,
            xml TEXT NOT NULL,
            login TEXT NOT NULL,
            name TEXT NOT NULL,
            device_id TEXT,
            received_at TEXT NOT NULL,
            PRIMARY KEY (form_id, instance_id)
        )""",
    ),
    (
        # Portal logins (pipelines/server/auth.py): argon2id hashes of passwords, sessions
        # keyed by the sha256 of their id (the id itself is never stored), and the audit log.
        """CREATE TABLE passwords (
            login TEXT PRIMARY KEY REFERENCES people (login),
            hash TEXT NOT NULL,
            changed_at TEXT NOT NULL
        )""",
        """CREATE TABLE sessions (
            id_sha256 TEXT PRIMARY KEY,
            login TEXT NOT NULL REFERENCES people (login),
            csrf TEXT NOT NULL,
            address TEXT,
            created_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""",
        "CREATE INDEX sessions_login ON sessions (login)",
        """CREATE TABLE audit (
            at TEXT NOT NULL,
            login TEXT,
            address TEXT,
            event TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX audit_login_at ON audit (login, event, at)",
        "CREATE INDEX audit_address_at ON audit (address, event, at)",
    ),
    (
        # The two hot reads of a million submissions answered from this index alone
        # (covering), never the rows: the tables' change scan (:meth:`Store.changes`: a
        # form's rows changed since a mark, with when each was first seen) and the live
        # count of a form (:meth:`Store.count`). A few ms each instead of ~0.15 s.
        "CREATE INDEX submissions_form_changed ON submissions "
        "(form_id, changed_at, deleted, instance_id, first_seen_at)",
    ),
)

_CHUNK = 500  # ids per IN (...) lookup; well under SQLite's variable limit
_ATTACHMENT_UPSERT = """INSERT INTO attachments (form_id, instance_id, name, sha256,
        local_path, size, status, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (form_id, instance_id, name) DO UPDATE SET sha256 = excluded.sha256,
        local_path = excluded.local_path, size = excluded.size,
        status = excluded.status, fetched_at = excluded.fetched_at"""
_UPSERT = """INSERT INTO submissions (form_id, instance_id, form_version, submitted_at,
        updated_at, review_state, deleted, content_hash, source, source_version,
        attachments_expected, record_json, first_seen_at, changed_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (form_id, instance_id) DO UPDATE SET
        form_version = excluded.form_version,
        submitted_at = excluded.submitted_at,
        updated_at = excluded.updated_at,
        review_state = excluded.review_state,
        deleted = excluded.deleted,
        content_hash = excluded.content_hash,
        source = excluded.source,
        source_version = excluded.source_version,
        attachments_expected = excluded.attachments_expected,
        record_json = excluded.record_json,
        changed_at = CASE WHEN submissions.first_seen_at > excluded.changed_at
            THEN submissions.first_seen_at ELSE excluded.changed_at END"""


class StoreError(DataError):
    """The store's file or disk failed us (full, read-only, locked, corrupt): one line with
    the path, the cause and what to do."""


@dataclass
class PageCounts:
    new: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    # What this page put in quarantine (the source's items and the records the store could
    # not keep), with their reasons, for the pull to show.
    quarantined_items: list[Quarantined] = field(default_factory=list)


@dataclass(frozen=True)
class QuarantineItem:
    """One quarantined record as ``manyi quarantine list`` shows it (no raw text: it may
    hold personal data; :meth:`Store.quarantined` has it)."""

    source: str
    form_id: str
    key: str  # the instance id, or ``sha256:…`` of the raw text when there is none
    reason: str
    first_seen_at: str
    last_seen_at: str
    tries: int  # pulls that read it and failed (1 the first time)


@dataclass(frozen=True)
class Known:
    """What the store holds of one submission, for a source to compare with."""

    source_version: str | None
    deleted: bool


@dataclass(frozen=True)
class Changes:
    """A form's rows whose ``changed_at`` is at or after a mark (:meth:`Store.changes`), as
    three parallel lists (a million rows are three lists, not a million objects). Deleted
    rows are in it too: a deletion is a change."""

    instance_ids: list[str]
    changed_at: list[str]
    first_seen_at: list[str]  # when the store first had the row; never after changed_at

    def __len__(self) -> int:
        return len(self.instance_ids)

    @property
    def latest(self) -> str | None:
        """The latest ``changed_at`` among the rows, or None when there are none."""
        return max(self.changed_at) if self.changed_at else None


@dataclass(frozen=True)
class StoredRecords:
    """Stored submissions (deleted ones too) with each one's ``changed_at``, in parallel
    lists (:meth:`Store.records_by_id`)."""

    records: list[Record]
    changed_at: list[str]

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class Sender:
    """Who sent a submission to `manyi serve`, and the villages that person covers."""

    form_id: str
    instance_id: str
    login: str
    name: str
    device_id: str | None
    villages: tuple[str, ...]  # empty: the person is not limited to villages (town, group)


@dataclass(frozen=True)
class Published:
    target: str
    form_id: str
    remote_id: str  # Kobo asset uid
    version: str
    md5: str
    media: dict[str, str]  # file name → md5
    remote_version: str | None  # the server's own version id of what was deployed


@dataclass(frozen=True)
class Blob:
    """A file saved under ``data_dir/attachments`` by content; no database row yet."""

    sha256: str
    rel: str
    size: int


@dataclass(frozen=True)
class StoredAttachment:
    form_id: str
    instance_id: str
    name: str
    sha256: str | None
    local_path: Path | None
    size: int | None
    status: str  # "stored" or "missing" (the server has no file for this name yet)


def safe_name(name: str) -> str:
    """A file name that cannot leave a folder: no separators, no ``..``, no drive, no NUL."""
    base = name.replace("\\", "/").split("/")[-1]
    base = "".join(ch for ch in base if ch >= " " and ch not in ':*?"<>|')
    base = base.strip(" .")
    if not base:
        base = "file-" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:12]
    return base[:200]


class _Connection(sqlite3.Connection):
    """A connection whose statements turn an SQLite fault into the store's one line."""

    fault: Callable[[sqlite3.Error], StoreError] | None = None

    def execute(self, *args: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args)
        except sqlite3.Error as e:
            if self.fault is None:
                raise
            raise self.fault(e) from None

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        try:
            return super().executemany(*args)
        except sqlite3.Error as e:
            if self.fault is None:
                raise
            raise self.fault(e) from None


class Store:
    """The store: the SQLite file ``path``, or the PostgreSQL database at ``url`` (its
    attachments still under ``data_dir``). Open with :func:`open_store`; use as a context
    manager."""

    def __init__(self, path: Path, data_dir: Path, read_only: bool = False, url: str | None = None):
        self.path = Path(path)
        self.data_dir = Path(data_dir)
        self.attachments_dir = self.data_dir / "attachments"
        self.read_only = read_only
        self.dialect = "postgresql" if url else "sqlite"
        # what messages name: the file, or the server and database (never the password)
        self.where = shown_url(url) if url else printable(self.path)
        self._secret = urlsplit(url).password or "" if url else ""
        self.db: Any = None
        if url:
            with self._guard():
                self.db = PgConnection(url, read_only)
                if read_only:
                    self._check_schema()
                self.db.fault = self._fault
                if not read_only:
                    self._migrate()
            return
        if read_only:
            self._open_read_only()
            return
        with self._disk(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard():
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per page.
            self.db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, factory=_Connection
            )
            self.db.fault = self._fault
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # A pull writes pages of thousands of rows: a 64 MiB page cache and a WAL
            # checkpointed every ~40 MiB (not every 4 MiB) halve the cost of each page.
            self.db.execute("PRAGMA cache_size=-65536")
            self.db.execute("PRAGMA wal_autocheckpoint=10000")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()

    def _open_read_only(self) -> None:
        """``mode=ro``: no file is created, nothing migrated. A WAL store needs its ``-shm``
        file, which a folder we may not write cannot get: there the file is read as
        ``immutable`` (no one can be writing it through a folder we cannot write either,
        short of its owner pulling right now)."""
        if not self.path.is_file():
            raise StoreError(f"no store at {printable(self.path)}: run `manyi pull` first")
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            if self.db is not None:
                self.db.close()
            try:
                self.db = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?{flags}",
                    uri=True,
                    timeout=30,
                    factory=_Connection,
                )
                self.db.execute("PRAGMA query_only=ON")
                self._check_schema()
                self.db.fault = self._fault
                return
            except sqlite3.Error as e:
                if "immutable" in flags or not _is_access_error(e):
                    raise self._fault(e) from None

    def _check_schema(self) -> None:
        try:
            current = self.schema_version or 0
        except sqlite3.DatabaseError as e:
            if not _no_table(e):
                raise
            current = 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.where}: store schema version {current} is newer than this "
                f"manyi ({len(MIGRATIONS)}); upgrade manyi"
            )
        if current == 0 and self.read_only:
            raise StoreError(
                f"{self.where}: not a manyi store (no schema); point data_dir (or store_url) "
                "at the store `manyi pull` writes, or run `manyi pull` first"
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``) for a module that keeps its
        own table in the store (people); any SQLite fault is one :class:`StoreError` line."""
        with self._guard():
            self.db.execute("BEGIN IMMEDIATE")
            yield self.db
            self.db.execute("COMMIT")

    # ---- faults ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn an SQLite fault into one :class:`StoreError` line; a transaction open at
        the time is rolled back first (SQLite may have done so itself: a full disk does)."""
        try:
            yield
        except sqlite3.Error as e:
            self._rollback()
            raise self._fault(e) from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.db is not None and self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error, StoreError):
                self.db.execute("ROLLBACK")

    def _fault(self, e: sqlite3.Error) -> StoreError:
        if isinstance(e, PgError):
            return self._pg_fault(e.pg)
        name = getattr(e, "sqlite_errorname", None) or type(e).__name__
        where = printable(self.path)
        if name.startswith("SQLITE_FULL") or "disk is full" in str(e):
            return StoreError(
                f"{where}: the disk is full ({_free(self.path.parent)} free there); free "
                "some space, then run again: a pull continues from the last page it stored"
            )
        if _is_access_error(e):
            return StoreError(
                f"{where}: cannot {'read' if self.read_only else 'write'} the store, "
                f"{_access(self.path)}; run manyi as the owner, or give this user write "
                "access to the folder and the file (chown/chmod); `manyi report` only reads"
            )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return StoreError(
                f"{where}: the store stayed locked by another manyi (a pull or a report) "
                "for 30 s; wait for it to finish, then run again"
            )
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            return StoreError(
                f"{where}: cannot open the store ({e}); move the file aside and pull again"
            )
        if name.startswith("SQLITE_IOERR"):
            return StoreError(f"{where}: disk I/O error ({name}); check the disk, then run again")
        return StoreError(f"{where}: store error ({name}: {printable(e, 200)})")

    def _pg_fault(self, e: Exception) -> StoreError:
        """PostgreSQL's faults as the same lines, by SQLSTATE; the password is scrubbed from
        whatever the server or libpq said."""
        code = getattr(e, "sqlstate", None) or ""
        said = scrub(printable(str(e).strip(), 200), (self._secret,))
        where = self.where
        if not code or code.startswith(("08", "28", "3D")):  # cannot connect, auth, no database
            return StoreError(
                f"{where}: cannot reach the store ({said}); check store_url / MANYI_STORE_URL "
                "(host, port, database, user; the password in MANYI_STORE_URL or ~/.pgpass) "
                "and that PostgreSQL is running"
            )
        if code == "53100":
            return StoreError(
                f"{where}: the database server's disk is full; free some space there, then "
                "run again: a pull continues from the last page it stored"
            )
        if code in ("42501", "25006"):
            return StoreError(
                f"{where}: cannot {'read' if self.read_only else 'write'} the store ({said}); "
                "grant this database user the privileges on manyi's tables, or use the "
                "owner's login in store_url"
            )
        if code in ("55P03", "57014", "40001", "40P01"):
            return StoreError(
                f"{where}: the store stayed locked by another manyi (a pull, a report or the "
                f"server) for {PG_TIMEOUT}; wait for it to finish, then run again"
            )
        if code.startswith("57P"):  # the server shut down or restarted under us
            return StoreError(f"{where}: the database server went away ({said}); run again")
        return StoreError(f"{where}: store error ({code}: {said})")

    @contextlib.contextmanager
    def _disk(self, path: Path) -> Iterator[None]:
        """A file-system fault while writing under ``path`` (full, read-only) as one line."""
        try:
            yield
        except OSError as e:
            raise self._os_fault(e, path) from None

    def _os_fault(self, e: OSError, path: Path) -> StoreError:
        where = printable(path)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreError(
                f"{where}: the disk is full ({_free(path)} free there); free some space, then "
                "run again: a pull continues from the last page it stored"
            )
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreError(
                f"{where}: cannot write there, {_access(path)}; run manyi as the owner, or "
                "give this user write access (chown/chmod)"
            )
        return StoreError(f"{where}: {e.strerror or type(e).__name__}; check the disk")

    # ---- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        if self.dialect == "postgresql":
            self._migrate_pg()
            return
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        row = self.db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        current = row[0] or 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.where}: store schema version {current} is newer than this manyi "
                f"({len(MIGRATIONS)}); upgrade manyi"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version - 1]:
                    self.db.execute(statement)
                self.db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, now_utc()),
                )
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _migrate_pg(self) -> None:
        """All pending migrations in one transaction under the writer's lock: DDL is
        transactional in PostgreSQL, and two workers starting at once migrate once."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = self.schema_version or 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.where}: store schema version {current} is newer than this manyi "
                    f"({len(MIGRATIONS)}); upgrade manyi"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    self.db.execute(pg_ddl(statement))
                self.db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, now_utc()),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]

    # ---- cursors ---------------------------------------------------------------------
    def cursor(self, source: str, form_id: str) -> dict[str, Any] | None:
        with self._guard():
            row = self.db.execute(
                "SELECT cursor_json FROM sync_state WHERE source = ? AND form_id = ?",
                (source, form_id),
            ).fetchone()
        return json.loads(row[0]) if row else None

    # ---- writing a page --------------------------------------------------------------
    def write_page(
        self,
        source: str,
        form_id: str,
        records: Sequence[Record],
        quarantined: Sequence[Quarantined] = (),
        cursor: dict[str, Any] | None = None,
        gone: Sequence[str] = (),
    ) -> PageCounts:
        """Upsert one page of records, its quarantined items, the ids the server no longer
        has (flagged deleted) and the cursor, atomically.

        A record the store cannot keep as it is goes to quarantine with its reason (see
        :func:`pipelines.records.storable`), and the rest of the page is stored."""
        counts = PageCounts()
        stamp = now_utc()
        ready: list[Storable] = []
        bad: list[Quarantined] = list(quarantined)
        for rec in records:
            if rec.form_id != form_id:
                raise ValueError(f"record of form {rec.form_id} in a page of {form_id}")
            item = storable(rec, source)
            (ready if isinstance(item, Storable) else bad).append(item)
        upserts: list[tuple[Any, ...]] = []
        marker_updates: list[tuple[Any, ...]] = []
        flag_updates: list[tuple[Any, ...]] = []
        with self._guard():
            self.db.execute("BEGIN IMMEDIATE")
            existing = self._existing(form_id, [r.record.instance_id for r in ready])
            for item in ready:
                rec, text, digest = item.record, item.text, item.digest
                old = existing.get(rec.instance_id)
                # a server that repeats a row within one page must not count it twice
                existing[rec.instance_id] = (digest, int(rec.deleted), rec.source_version)
                if old is None:
                    counts.deleted += rec.deleted
                    counts.new += not rec.deleted
                elif old[1] and rec.deleted:
                    # Deleted before and still: nothing a user would call a change, though
                    # the server's marker (deletedAt, review state) may have moved on.
                    counts.unchanged += 1
                    if old[0] == digest and old[2] == rec.source_version:
                        continue
                elif old[0] == digest and not old[1]:
                    counts.unchanged += 1
                    if old[2] != rec.source_version:
                        # updated_at is a column of the tables: they must see it move
                        marker_updates.append(
                            (rec.source_version, rec.updated_at, stamp, stamp, form_id,
                             rec.instance_id)
                        )  # fmt: skip
                    continue
                elif rec.deleted:
                    counts.deleted += 1
                else:
                    # An edit, or a row flagged deleted that the server sends live again
                    # (restored, or flagged by a listing that missed it): the flag clears.
                    counts.updated += 1
                if rec.deleted and old is not None:
                    # Flag only: keep the last known content of a deleted submission.
                    flag_updates.append(
                        (
                            digest,
                            rec.updated_at,
                            rec.source_version,
                            stamp,
                            stamp,
                            form_id,
                            rec.instance_id,
                        )
                    )
                    continue
                upserts.append(
                    (
                        form_id,
                        rec.instance_id,
                        rec.form_version,
                        rec.submitted_at,
                        rec.updated_at,
                        rec.review_state,
                        int(rec.deleted),
                        digest,
                        source,
                        rec.source_version,
                        rec.attachments_expected,
                        text,
                        stamp,
                        stamp,
                    )
                )
            # One executemany per kind of write: a page of thousands of rows costs one
            # round through SQLite's statement machinery, not thousands.
            if upserts:
                self.db.executemany(_UPSERT, upserts)
            if marker_updates:
                self.db.executemany(
                    "UPDATE submissions SET source_version = ?, updated_at = ?, "
                    "changed_at = CASE WHEN first_seen_at > ? THEN first_seen_at ELSE ? END "
                    "WHERE form_id = ? AND instance_id = ?",
                    marker_updates,
                )
            if flag_updates:
                self.db.executemany(
                    "UPDATE submissions SET deleted = 1, content_hash = ?, updated_at = ?, "
                    "source_version = ?, "
                    "changed_at = CASE WHEN first_seen_at > ? THEN first_seen_at ELSE ? END "
                    "WHERE form_id = ? AND instance_id = ?",
                    flag_updates,
                )
            # A record that reads now leaves the quarantine it was in.
            self._in_chunks(
                "DELETE FROM quarantine WHERE source = ? AND form_id = ? AND item_key IN ({marks})",
                (source, form_id),
                list(dict.fromkeys(r.record.instance_id for r in ready)),
            )
            # Keyed as stored; the last word on an item seen twice in a page wins.
            kept = {(storable_text(q.form_id), storable_text(q.item_key())): q for q in bad}
            self.db.executemany(
                """INSERT INTO quarantine (source, form_id, item_key, reason, raw,
                    first_seen_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (source, form_id, item_key) DO UPDATE SET
                    reason = excluded.reason, raw = excluded.raw,
                    last_seen_at = excluded.last_seen_at, tries = quarantine.tries + 1""",
                [
                    (source, f, k, storable_text(q.reason), storable_text(q.raw), stamp, stamp)
                    for (f, k), q in kept.items()
                ],
            )
            counts.quarantined = len(kept)
            counts.quarantined_items = list(kept.values())
            ids = [storable_text(i) for i in gone if isinstance(i, str)]
            counts.deleted += self._flag_deleted(form_id, ids, stamp)
            if cursor is not None:
                self.db.execute(
                    """INSERT INTO sync_state (source, form_id, cursor_json, updated_at)
                    VALUES (?, ?, ?, ?) ON CONFLICT (source, form_id) DO UPDATE SET
                        cursor_json = excluded.cursor_json, updated_at = excluded.updated_at""",
                    (source, form_id, json.dumps(cursor, sort_keys=True), stamp),
                )
            self.db.execute("COMMIT")
        return counts

    def _flag_deleted(self, form_id: str, ids: list[str], stamp: str) -> int:
        cursors = self._in_chunks(
            "UPDATE submissions SET deleted = 1, "
            "changed_at = CASE WHEN first_seen_at > ? THEN first_seen_at ELSE ? END "
            "WHERE form_id = ? AND deleted = 0 AND instance_id IN ({marks})",
            (stamp, stamp, form_id),
            ids,
        )
        return sum(cur.rowcount for cur in cursors)

    def _in_chunks(
        self, sql: str, args: tuple[Any, ...], ids: Sequence[str]
    ) -> list[sqlite3.Cursor]:
        """Run ``sql``, whose ``IN ({marks})`` takes ``ids``, in chunks that stay under
        SQLite's limit on variables; ``args`` are the parameters before the ids. A cursor
        per chunk: rows to read, or the rowcount of an UPDATE."""
        out = []
        for start in range(0, len(ids), _CHUNK):
            part = list(ids[start : start + _CHUNK])
            marks = ",".join("?" * len(part))
            out.append(self.db.execute(sql.format(marks=marks), (*args, *part)))
        return out

    def stored_attachments(self, form_id: str, instance_id: str) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM attachments WHERE form_id = ? AND instance_id = ? "
            "AND status = 'stored'",
            (form_id, instance_id),
        ).fetchone()[0]

    def _existing(self, form_id: str, ids: list[str]) -> dict[str, tuple[str, int, str | None]]:
        found: dict[str, tuple[str, int, str | None]] = {}
        for cur in self._in_chunks(
            "SELECT instance_id, content_hash, deleted, source_version FROM submissions "
            "WHERE form_id = ? AND instance_id IN ({marks})",
            (form_id,),
            ids,
        ):
            for iid, digest, deleted, version in cur:
                found[iid] = (digest, deleted, version)
        return found

    # ---- reading ---------------------------------------------------------------------
    def records(
        self, form_id: str | None = None, include_deleted: bool = False
    ) -> Iterator[Record]:
        sql = (
            "SELECT form_id, instance_id, form_version, submitted_at, updated_at, review_state, "
            "deleted, record_json, attachments_expected, source_version FROM submissions"
        )
        where, args = [], []
        if form_id is not None:
            where.append("form_id = ?")
            args.append(form_id)
        if not include_deleted:
            where.append("deleted = 0")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY form_id, submitted_at, instance_id"
        if self.dialect == "postgresql":
            for row in self.db.stream(sql, args):
                yield _record(row)
            return
        rows = self.db.execute(sql, args)
        while True:
            try:
                row = next(rows, None)
            except sqlite3.Error as e:  # a read fault half-way (disk I/O)
                raise self._fault(e) from None
            if row is None:
                return
            yield _record(row)

    def count(self, form_id: str | None = None, include_deleted: bool = False) -> int:
        sql, args = "SELECT COUNT(*) FROM submissions WHERE 1 = 1", []
        if form_id is not None:
            sql += " AND form_id = ?"
            args.append(form_id)
        if not include_deleted:
            sql += " AND deleted = 0"
        return self.db.execute(sql, args).fetchone()[0]

    def changes(self, form_id: str, since: str | None = None) -> Changes:
        """The form's rows (deleted ones too) whose ``changed_at`` is at or after ``since``
        (every row when None), with their ``changed_at`` and ``first_seen_at``: what the
        tables catch up from. Read from ``submissions_form_changed`` alone, never the JSON."""
        sql = "SELECT instance_id, changed_at, first_seen_at FROM submissions WHERE form_id = ?"
        args = [form_id]
        if since is not None:
            sql += " AND changed_at >= ?"
            args.append(since)
        with self._guard():
            rows = self.db.execute(sql, args).fetchall()
        if not rows:
            return Changes([], [], [])
        ids, changed, first = (list(c) for c in zip(*rows, strict=True))
        return Changes(ids, changed, first)

    def records_by_id(self, form_id: str, ids: Sequence[str]) -> StoredRecords:
        """The stored records of ``ids`` (deleted ones too; ids the store does not have are
        left out), each with its ``changed_at``, looked up by key in chunks."""
        cursors = self._in_chunks(
            "SELECT form_id, instance_id, form_version, submitted_at, updated_at, "
            "review_state, deleted, record_json, attachments_expected, source_version, "
            "changed_at FROM submissions WHERE form_id = ? AND instance_id IN ({marks})",
            (form_id,),
            list(ids),
        )
        records, changed = [], []
        for cur in cursors:
            for row in cur:
                records.append(_record(row))
                changed.append(row[10])
        return StoredRecords(records, changed)

    def form_ids(self) -> list[str]:
        """The forms the store has submissions of (deleted ones too), in order: one index
        probe per form (a skip-scan), not a pass over every row."""
        rows = self.db.execute(
            """WITH RECURSIVE f(id) AS (
                SELECT MIN(form_id) FROM submissions
                UNION ALL
                SELECT (SELECT MIN(form_id) FROM submissions WHERE form_id > f.id)
                FROM f WHERE f.id IS NOT NULL)
            SELECT id FROM f WHERE id IS NOT NULL"""
        )
        return [r[0] for r in rows]

    def known(self, form_id: str) -> dict[str, Known]:
        """instance_id → the source's change marker and the deleted flag, for every stored
        submission: a source that lists what it has (Kobo) compares with it, and a row
        flagged deleted that the server still lists is fetched again."""
        rows = self.db.execute(
            "SELECT instance_id, source_version, deleted FROM submissions WHERE form_id = ?",
            (form_id,),
        )
        return {iid: Known(version, bool(deleted)) for iid, version, deleted in rows}

    def quarantined(self, form_id: str | None = None) -> list[Quarantined]:
        sql = "SELECT source, form_id, reason, raw, item_key FROM quarantine"
        args: list[str] = []
        if form_id is not None:
            sql += " WHERE form_id = ?"
            args.append(form_id)
        return [Quarantined(*row) for row in self.db.execute(sql + " ORDER BY item_key", args)]

    def quarantine(
        self, form_id: str | None = None, source: str | None = None
    ) -> list[QuarantineItem]:
        """What is in quarantine, with reasons, by form, then oldest first."""
        sql = "SELECT source, form_id, item_key, reason, first_seen_at, last_seen_at, "
        # a read-only look at a store from before the tries column: seen once, say
        sql += "tries" if (self.schema_version or 0) >= 3 else "1"
        sql += " FROM quarantine"
        where, args = [], []
        for column, value in (("form_id", form_id), ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql + " ORDER BY form_id, first_seen_at, item_key", args)
        return [QuarantineItem(*row) for row in rows]

    def quarantined_ids(self, source: str, form_id: str) -> list[str]:
        """Instance ids quarantined from ``source``, to ask the server for again: a record
        of an unknown form version reads once that version is published, and the source's
        cursor has long moved past it. Items kept only by a hash of their text have no id."""
        rows = self.db.execute(
            "SELECT item_key FROM quarantine WHERE source = ? AND form_id = ? "
            "AND item_key NOT LIKE 'sha256:%' ORDER BY first_seen_at, item_key",
            (source, form_id),
        )
        return [r[0] for r in rows]

    def senders(self, form_id: str | None = None) -> list[Sender]:
        """The sender of each submission received by `manyi serve`, with that person's
        villages as they are now (a store from before migration 5 has none)."""
        if (self.schema_version or 0) < 5:
            return []
        sql = (
            "SELECT l.form_id, l.instance_id, l.login, l.name, l.device_id, p.villages_json "
            "FROM local_submissions l LEFT JOIN people p ON p.login = l.login"
        )
        args: list[str] = []
        if form_id is not None:
            sql += " WHERE l.form_id = ?"
            args.append(form_id)
        return [
            Sender(f, i, login, name, device, tuple(json.loads(v)) if v else ())
            for f, i, login, name, device, v in self.db.execute(sql + " ORDER BY 1, 2", args)
        ]

    # ---- attachments -----------------------------------------------------------------
    def incomplete_attachments(self, form_id: str) -> list[Record]:
        """Live submissions that expect more files than the store holds."""
        rows = self.db.execute(
            """SELECT s.instance_id FROM submissions s
            LEFT JOIN attachments a ON a.form_id = s.form_id
                AND a.instance_id = s.instance_id AND a.status = 'stored'
            WHERE s.form_id = ? AND s.deleted = 0 AND s.attachments_expected > 0
            GROUP BY s.instance_id, s.attachments_expected
            HAVING COUNT(a.name) < s.attachments_expected""",
            (form_id,),
        ).fetchall()
        return self.records_by_id(form_id, [r[0] for r in rows]).records

    def stored_names(self, form_id: str, ids: Sequence[str]) -> dict[str, set[str]]:
        """instance_id → names of the files already stored, for a batch of submissions."""
        found: dict[str, set[str]] = {}
        for cur in self._in_chunks(
            "SELECT instance_id, name, local_path FROM attachments "
            "WHERE form_id = ? AND status = 'stored' AND instance_id IN ({marks})",
            (form_id,),
            list(dict.fromkeys(ids)),
        ):
            for iid, name, rel in cur:
                if rel and (self.data_dir / rel).is_file():
                    found.setdefault(iid, set()).add(name)
        return found

    def has_attachment(self, form_id: str, instance_id: str, name: str) -> bool:
        row = self.db.execute(
            "SELECT local_path FROM attachments WHERE form_id = ? AND instance_id = ? "
            "AND name = ? AND status = 'stored'",
            (form_id, instance_id, name),
        ).fetchone()
        return bool(row) and (self.data_dir / row[0]).is_file()

    def save_blob(self, chunks: Iterable[bytes]) -> Blob:
        """Write a file under ``data_dir/attachments/<sha[:2]>/<sha>``.

        Touches only the file system (a temporary file, then an atomic rename), so worker
        threads may call it; the database row is written by :meth:`record_attachments`.
        """
        with self._disk(self.attachments_dir):
            self.attachments_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.attachments_dir, prefix=".part-")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:  # a fault of the source's reading passes as it is
                    digest.update(chunk)
                    size += len(chunk)
                    with self._disk(self.attachments_dir):
                        out.write(chunk)
                with self._disk(self.attachments_dir):
                    out.flush()
                    os.fsync(out.fileno())
            sha = digest.hexdigest()
            target = self.attachments_dir / sha[:2] / sha
            with self._disk(self.attachments_dir):
                target.parent.mkdir(exist_ok=True)
                if target.exists():
                    Path(tmp).unlink()
                else:
                    Path(tmp).replace(target)
                    _fsync_dir(target.parent)  # the rename itself survives a power cut
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Blob(sha, target.relative_to(self.data_dir).as_posix(), size)

    def record_attachments(
        self, rows: Sequence[tuple[str, str, str, Blob | None]]
    ) -> list[StoredAttachment]:
        """Write ``(form_id, instance_id, name, blob or None)`` rows in one transaction;
        ``None`` remembers that the server has no file for that name yet."""
        stamp = now_utc()
        params = [
            (f, i, storable_text(n), b.sha256, b.rel, b.size, "stored", stamp)
            if b
            else (f, i, storable_text(n), None, None, None, "missing", stamp)
            for f, i, n, b in rows
        ]
        with self._guard():
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(_ATTACHMENT_UPSERT, params)
            self.db.execute("COMMIT")
        return [
            StoredAttachment(f, i, n, b.sha256, self.data_dir / b.rel, b.size, "stored")
            if b
            else StoredAttachment(f, i, n, None, None, None, "missing")
            for f, i, n, b in rows
        ]

    def put_attachment(
        self, form_id: str, instance_id: str, name: str, chunks: Iterable[bytes]
    ) -> StoredAttachment:
        """Store a file by its sha256 under ``data_dir/attachments``; the name is only text."""
        blob = self.save_blob(chunks)
        return self.record_attachments([(form_id, instance_id, name, blob)])[0]

    def note_missing_attachment(self, form_id: str, instance_id: str, name: str) -> None:
        """Remember that the server has no file for this name yet; it is retried next pull."""
        self.record_attachments([(form_id, instance_id, name, None)])

    def attachments(self, form_id: str, instance_id: str | None = None) -> list[StoredAttachment]:
        sql = (
            "SELECT form_id, instance_id, name, sha256, local_path, size, status "
            "FROM attachments WHERE form_id = ?"
        )
        args = [form_id]
        if instance_id is not None:
            sql += " AND instance_id = ?"
            args.append(instance_id)
        out = []
        for f, i, n, sha, rel, size, status in self.db.execute(sql + " ORDER BY 2, 3", args):
            out.append(
                StoredAttachment(f, i, n, sha, self.data_dir / rel if rel else None, size, status)
            )
        return out

    # ---- publishing ledger -----------------------------------------------------------
    def published(self, target: str) -> dict[str, Published]:
        rows = self.db.execute(
            "SELECT target, form_id, remote_id, version, md5, media_json, remote_version "
            "FROM published WHERE target = ?",
            (target,),
        )
        return {r[1]: Published(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows}

    def note_published(self, item: Published) -> None:
        self.db.execute(
            """INSERT INTO published (target, form_id, remote_id, version, md5, media_json,
                remote_version, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (target, form_id) DO UPDATE SET remote_id = excluded.remote_id,
                version = excluded.version, md5 = excluded.md5,
                media_json = excluded.media_json, remote_version = excluded.remote_version,
                published_at = excluded.published_at""",
            (
                item.target,
                item.form_id,
                item.remote_id,
                item.version,
                item.md5,
                json.dumps(item.media, sort_keys=True),
                item.remote_version,
                now_utc(),
            ),
        )

    def forget_published(self, target: str, form_id: str) -> None:
        self.db.execute("DELETE FROM published WHERE target = ? AND form_id = ?", (target, form_id))


def _record(row: Sequence[Any]) -> Record:
    return Record(
        form_id=row[0],
        instance_id=row[1],
        form_version=row[2],
        submitted_at=row[3],
        updated_at=row[4],
        review_state=row[5],
        deleted=bool(row[6]),
        data=json.loads(row[7]),
        attachments_expected=row[8],
        source_version=row[9],
    )


def open_store(settings: Any, read_only: bool = False) -> Store:
    """Open (and migrate) the store: PostgreSQL at ``settings.store_url`` when set, else the
    SQLite file ``settings.store_path``; ``read_only`` opens an existing store to read only
    (``manyi report``): nothing created, nothing migrated."""
    return Store(
        Path(settings.store_path), Path(settings.data_dir), read_only=read_only, url=_url(settings)
    )


def store_exists(settings: Any) -> bool:
    """Whether there is a store to read yet (a reader never creates one just to find it
    empty): the SQLite file, or PostgreSQL's migrated schema. A server that cannot be
    reached counts as a store, so that opening it says why."""
    url = _url(settings)
    if not url:
        return Path(settings.store_path).is_file()
    try:
        with Store(Path(settings.store_path), Path(settings.data_dir), True, url=url):
            return True
    except StoreError as e:
        return "not a manyi store" not in str(e)


def _url(settings: Any) -> str | None:
    url = getattr(settings, "store_url", None)  # a bare namespace in tests has none
    url = url.get() if hasattr(url, "get") else url
    return url or None


def _no_table(e: sqlite3.Error) -> bool:
    if isinstance(e, PgError):
        return getattr(e.pg, "sqlstate", None) == "42P01"
    return "no such table" in str(e)


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # Windows cannot open a folder to fsync it
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_access_error(e: sqlite3.Error) -> bool:
    """A permissions problem, told apart from a missing folder or a broken file."""
    name = getattr(e, "sqlite_errorname", None) or ""
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return True
    return name.startswith("SQLITE_CANTOPEN") or "unable to open" in str(e)


def _free(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return ""


def _access(path: Path) -> str:
    """Who manyi runs as, and the owner and mode of the file and its folder."""
    try:
        import pwd

        def owner(uid: int) -> str:
            try:
                return pwd.getpwuid(uid).pw_name
            except KeyError:
                return str(uid)

        parts = [f"manyi runs as {owner(os.geteuid())}"]
    except ImportError:  # Windows: no owners to name
        return "no write access"
    for p in (path, path.parent) if path.exists() else (path.parent,):
        try:
            st = p.stat()
        except OSError:
            continue
        kind = "folder" if p.is_dir() else "file"
        parts.append(f"{kind} owned by {owner(st.st_uid)}, mode {st.st_mode & 0o7777:04o}")
    return "; ".join(parts)
