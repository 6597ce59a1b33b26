"""The portal's outputs, kept fresh in the background (issue 12 item 4).

One daemon thread per server (:class:`Refresher`). It makes a first snapshot at once, then
every ``poll_s`` reads a cheap fingerprint of the store (:func:`_fingerprint`): a submission
received by ``manyi serve``, a pull from Central or Kobo by another process (an edit, a
deletion, a photo, a quarantined record) changes it. Bursts are debounced: a refresh runs once
no further change was seen for ``quiet_s``, or ``max_wait_s`` after the first change it has
not handled, whichever comes first. :meth:`Refresher.poke` marks a change without waiting for
the next poll.

A refresh is :func:`pipelines.reports.process.refresh_outputs` for today (Asia/Shanghai,
kept inside the plan year; ``manyi serve --as-of`` fixes the date, as the demo's year needs)
into a new folder ``<outputs_dir>/_portal/<snapshot id>/``, whose ``snapshot.json`` is written
last. Only then does ``current`` change (a reference swap under a lock), and older snapshot
folders go, except the one before (a page being served may still read it). A failed refresh
keeps the last good snapshot, removes its own half-written folder and records one scrubbed
line for the managers; the next change, or ``max_wait_s`` later, tries again.

A snapshot is never reused across a restart (its frames are not on disk): ``start()`` makes a
fresh one, which removes the previous run's folders.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from pipelines.config import SHANGHAI
from pipelines.errors import ConfigError, DataError, ManyiError, scrub
from pipelines.reports.process import Outputs, refresh_outputs
from pipelines.store import Store, open_store, store_exists

log = logging.getLogger("manyi.serve")

PORTAL_DIR = "_portal"  # under settings.outputs_dir
MARKER = "snapshot.json"  # written last: a folder without it is half-written
_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{4}$")  # only folders of this shape are ever removed
_DEFAULTS = {"quiet_s": 20.0, "max_wait_s": 120.0, "poll_s": 5.0}
_ENV = {
    "quiet_s": "MANYI_REFRESH_QUIET_S",
    "max_wait_s": "MANYI_REFRESH_MAX_WAIT_S",
    "poll_s": "MANYI_REFRESH_POLL_S",
}
_STOP_JOIN_S = 1.0  # stop() waits this long for the thread; a refresh under way is abandoned


@dataclass(frozen=True)
class Snapshot:
    """One good refresh: every output for ``as_of``, written under ``folder``."""

    id: str  # e.g. 20261130T162005-3f2a: unique, safe in a path
    folder: Path  # this snapshot's outputs root (index.html, maps/, <as_of>/)
    as_of: date  # the report's as-of date (today in Asia/Shanghai)
    made_at: datetime  # when the refresh started (aware)
    data_as_of: datetime  # 数据截至: the newest data it includes, else made_at (aware)
    outputs: Outputs  # refresh_outputs' result (frames: progress, checks, followups, inputs)


@dataclass(frozen=True)
class RefreshStatus:
    current: Snapshot | None  # the last good snapshot, None before the first
    data_as_of: datetime | None  # current.data_as_of, or None
    running: bool
    pending: bool  # new data seen, a refresh is due
    last_error: str | None  # the last failed refresh's one-line reason (scrubbed), else None
    last_error_at: datetime | None
    refreshes: int = 0  # good refreshes since start
    failures: int = 0  # failed refreshes since start


@dataclass(frozen=True)
class _Print:
    """What a poll of the store saw: ``marks`` change whenever the data does; ``newest`` is
    the newest received, updated or pulled time among them (UTC text, as stored)."""

    marks: tuple
    newest: str | None


# What a refresh handled when it could not read the fingerprint: the next one read differs
_UNKNOWN = _Print(("unknown",), None)


class Refresher:
    """Keeps :meth:`current` fresh; see the module docstring."""

    def __init__(
        self,
        settings,
        *,
        quiet_s: float | None = None,
        max_wait_s: float | None = None,
        poll_s: float | None = None,
        as_of: date | None = None,
    ) -> None:
        self.settings = settings
        self.fixed_as_of = as_of  # `manyi serve --as-of` (the demo's year); else today
        self.quiet_s = _seconds("quiet_s", quiet_s)
        self.max_wait_s = _seconds("max_wait_s", max_wait_s)
        self.poll_s = _seconds("poll_s", poll_s)
        self.root = Path(settings.outputs_dir) / PORTAL_DIR
        self._lock = threading.Lock()  # guards the fields below
        self._refreshing = threading.Lock()  # one refresh at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: Snapshot | None = None
        self._keep: set[str] = set()  # folders a page may still read: current and the one before
        self._seen: _Print | None = None  # the last fingerprint looked at
        self._first_change: float | None = None  # monotonic: the first change not yet handled
        self._last_change: float | None = None
        self._retry_at: float | None = None  # after a failure, try again by then
        self._running = False
        self._refreshes = 0
        self._failures = 0
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None

    # ---- control --------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (once); its first act is a fresh snapshot."""
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="manyi-refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread: returns within about a second, even mid-refresh (that refresh may
        still finish; it never leaves a broken current snapshot). Safe to call twice."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_JOIN_S)

    def poke(self) -> None:
        """New data arrived: a refresh is due (debounced as a polled change is)."""
        with self._lock:
            self._changed(time.monotonic())
        self._wake.set()

    def current(self) -> Snapshot | None:
        with self._lock:
            return self._current

    def status(self) -> RefreshStatus:
        """Where things stand (no I/O)."""
        with self._lock:
            cur = self._current
            return RefreshStatus(
                current=cur,
                data_as_of=cur.data_as_of if cur else None,
                running=self._running,
                pending=self._first_change is not None,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                refreshes=self._refreshes,
                failures=self._failures,
            )

    def refresh_now(self) -> Snapshot:
        """One refresh in the calling thread (waits for one under way first); returns the new
        snapshot or raises what failed, after recording it as a background failure is."""
        with self._refreshing:
            with self._lock:
                self._running = True
                self._first_change = self._last_change = self._retry_at = None
            try:
                return self._make()
            except Exception as e:
                self._failed(e)
                raise
            finally:
                with self._lock:
                    self._running = False

    # ---- the thread -----------------------------------------------------------------
    def _run(self) -> None:
        self._attempt()
        while not self._stopping.is_set():
            self._wake.wait(self._wait_s())
            self._wake.clear()
            if self._stopping.is_set():
                return
            self._look()
            if self._due():
                self._attempt()

    def _attempt(self) -> None:
        with contextlib.suppress(Exception):  # recorded and logged by refresh_now
            self.refresh_now()

    def _wait_s(self) -> float:
        """Until the next poll, or sooner if a refresh falls due before it."""
        wait = self.poll_s
        now = time.monotonic()
        with self._lock:
            if self._first_change is not None:
                due = min(self._last_change + self.quiet_s, self._first_change + self.max_wait_s)
                wait = min(wait, due - now)
            if self._retry_at is not None:
                wait = min(wait, self._retry_at - now)
        return max(wait, 0.0)

    def _look(self) -> _Print | None:
        """Take a fingerprint; a difference from the last one is a change."""
        seen = _read_fingerprint(self.settings)
        if seen is None:  # the store could not be read just now: try again next poll
            return None
        with self._lock:
            if seen != self._seen:
                if self._seen is not None:
                    self._changed(time.monotonic())
                self._seen = seen
        return seen

    def _changed(self, now: float) -> None:
        if self._first_change is None:
            self._first_change = now
        self._last_change = now

    def _due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._first_change is not None and (
                now - self._last_change >= self.quiet_s
                or now - self._first_change >= self.max_wait_s
            ):
                return True
            return self._retry_at is not None and now >= self._retry_at

    # ---- one refresh ----------------------------------------------------------------
    def _as_of(self, made_at: datetime) -> date:
        """The fixed date, else today, kept inside the plan year: after the year its
        year-end report, before it its first day."""
        if self.fixed_as_of is not None:
            return self.fixed_as_of
        year = self.settings.plan_year
        return min(max(made_at.date(), date(year, 1, 1)), date(year, 12, 31))

    def _make(self) -> Snapshot:
        made_at = datetime.now(SHANGHAI)
        with self._lock:
            self._seen = None  # the print taken below is what this refresh handles
        seen = self._look()  # BEFORE reading: data arriving from now on triggers another
        if seen is None:
            with self._lock:
                self._seen = _UNKNOWN
        data_as_of = made_at
        if seen is not None and (newest := _parse(seen.newest)) is not None:
            data_as_of = min(newest.astimezone(SHANGHAI), made_at)
        sid, folder = self._new_folder(made_at)
        try:
            as_of = self._as_of(made_at)
            outputs = refresh_outputs(self.settings, as_of, out_dir=folder)
            _write_marker(folder, sid, made_at, data_as_of, outputs)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        snap = Snapshot(sid, folder, as_of, made_at, data_as_of, outputs)
        with self._lock:
            before = self._current
            self._current = snap
            self._keep = {sid} | ({before.id} if before else set())
            self._refreshes += 1
            self._last_error = self._last_error_at = self._retry_at = None
            keep = set(self._keep)
        self._prune(keep)
        if not self._stopping.is_set():  # no logging from a thread the interpreter is ending
            log.info("portal refreshed: %s, %d submissions, %.1f s", sid, outputs.submissions,
                     (datetime.now(SHANGHAI) - made_at).total_seconds())  # fmt: skip
        return snap

    def _new_folder(self, made_at: datetime) -> tuple[str, Path]:
        while True:
            sid = f"{made_at:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
            if not (self.root / sid).exists():
                return sid, self.root / sid

    def _failed(self, e: Exception) -> None:
        line = _one_line(e)
        with self._lock:
            self._failures += 1
            self._last_error = line
            self._last_error_at = datetime.now(SHANGHAI)
            self._retry_at = time.monotonic() + self.max_wait_s
        if not self._stopping.is_set():  # no logging from a thread the interpreter is ending
            log.warning("%s", line)

    def _prune(self, keep: set[str]) -> None:
        """Remove snapshot folders other than ``keep``: older ones, and those a killed run
        left half-written. Anything not shaped like a snapshot id is left alone."""
        with contextlib.suppress(OSError):
            for entry in self.root.iterdir():
                if entry.name not in keep and _ID.match(entry.name) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)


# ---- the fingerprint --------------------------------------------------------------------
def _read_fingerprint(settings) -> _Print | None:
    """The store's fingerprint, or a fixed one when there is no store yet; None when it
    cannot be read just now (locked, being replaced)."""
    if not store_exists(settings):
        return _Print(("no store",), None)
    try:
        with open_store(settings, read_only=True) as store:
            return _fingerprint(store)
    except (ManyiError, OSError) as e:
        log.debug("refresh: cannot read the store's fingerprint: %s", scrub(str(e)))
        return None
    except Exception as e:  # a bug here must not end the thread: refreshes would stop
        log.warning("refresh: cannot read the store's fingerprint: %s", _one_line(e))
        return None


def _fingerprint(store: Store) -> _Print:
    """Indexed aggregates that change whenever the data does, on a store of any version.

    * ``submissions``: the largest rowid (a new row; rows are never removed), and each
      form's latest ``updated_at`` (an edit), found through ``submissions_form_updated``
      by a skip-scan over the forms, so a million rows cost a few dozen index probes;
    * ``local_submissions`` and ``attachments``: the largest rowid (a submission or a photo
      received by ``manyi serve``);
    * ``quarantine``: count, largest rowid and latest ``last_seen_at`` (a small table);
    * ``sync_state``: count and latest ``updated_at``, one row per source and form: every
      page a pull stores moves it, so a deletion (a flag without any timestamp of its own),
      or a photo fetched late, is seen too.
    """
    if store.dialect == "postgresql":
        return _fingerprint_pg(store)
    db = store.db
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    marks: list[object] = [store.schema_version]
    newest: list[str] = []
    if "submissions" in tables:
        top = db.execute(
            "SELECT rowid, first_seen_at FROM submissions ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        forms = db.execute(_FORMS_UPDATED).fetchall()
        marks += [top[0] if top else None, tuple(forms)]
        newest += [top[1] if top else None, *(u for _, u in forms)]
    if "local_submissions" in tables:
        top = db.execute(
            "SELECT rowid, received_at FROM local_submissions ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        marks.append(top[0] if top else None)
        newest.append(top[1] if top else None)
    if "attachments" in tables:
        marks.append(db.execute("SELECT MAX(rowid) FROM attachments").fetchone()[0])
    if "quarantine" in tables:
        marks.append(
            db.execute("SELECT COUNT(*), MAX(rowid), MAX(last_seen_at) FROM quarantine").fetchone()
        )
    if "sync_state" in tables:
        pulls = db.execute("SELECT COUNT(*), MAX(updated_at) FROM sync_state").fetchone()
        marks.append(pulls)
        newest.append(pulls[1])
    stamps = [t for t in newest if isinstance(t, str) and _parse(t) is not None]
    return _Print(tuple(marks), max(stamps, key=_parse) if stamps else None)


# each form's latest updated_at, by a skip-scan over submissions_form_updated
_FORMS_UPDATED = """WITH RECURSIVE f(id) AS (
    SELECT MIN(form_id) FROM submissions
    UNION ALL
    SELECT (SELECT MIN(form_id) FROM submissions WHERE form_id > f.id)
    FROM f WHERE f.id IS NOT NULL)
SELECT id, (SELECT MAX(updated_at) FROM submissions WHERE form_id = f.id)
FROM f WHERE id IS NOT NULL"""


def _fingerprint_pg(store: Store) -> _Print:
    """PostgreSQL has no rowid. Every write moves an exact mark: a pull's page moves
    ``sync_state`` (new rows, edits, deletion flags), `manyi serve` adds ``local_submissions``
    rows, an edit moves its form's ``updated_at``, quarantine is small enough to count.
    Photos, and anything else, move the server's per-table counters of inserted, updated
    and deleted rows (``pg_stat_user_tables``: seen within about 10 s of a commit)."""
    db = store.db
    tables = {
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    marks: list[object] = [store.schema_version]
    newest: list[str] = []
    if "submissions" in tables:
        forms = db.execute(_FORMS_UPDATED).fetchall()
        marks.append(tuple(forms))
        newest += [u for _, u in forms]
    if "local_submissions" in tables:
        local = db.execute("SELECT COUNT(*), MAX(received_at) FROM local_submissions").fetchone()
        marks.append(tuple(local))
        newest.append(local[1])
    if "quarantine" in tables:
        marks.append(
            tuple(
                db.execute(
                    "SELECT COUNT(*), MAX(last_seen_at), SUM(tries) FROM quarantine"
                ).fetchone()
            )
        )
    if "sync_state" in tables:
        pulls = db.execute("SELECT COUNT(*), MAX(updated_at) FROM sync_state").fetchone()
        marks.append(tuple(pulls))
        newest.append(pulls[1])
    counters = db.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
        "WHERE schemaname = current_schema() AND relname IN ('submissions', 'attachments') "
        "ORDER BY relname"
    ).fetchall()
    marks.append(tuple(tuple(r) for r in counters))
    stamps = [t for t in newest if isinstance(t, str) and _parse(t) is not None]
    return _Print(tuple(marks), max(stamps, key=_parse) if stamps else None)


def _parse(text: str | None) -> datetime | None:
    """A stored UTC time (``2026-11-30T08:20:05.123Z``) as an aware datetime, else None."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


# ---- helpers ----------------------------------------------------------------------------
def _seconds(name: str, given: float | None) -> float:
    """An argument if given, else its environment variable, else the default: a positive,
    finite number of seconds."""
    var = _ENV[name]
    if given is not None:
        where, raw = f"Refresher({name}=…)", given
    elif (text := os.environ.get(var)) is not None and text.strip():
        where, raw = var, text.strip()
    else:
        return _DEFAULTS[name]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{where} = {str(raw)[:40]!r}：应为大于 0 的秒数（must be a positive number of "
            f"seconds）；请改正或删去 {var}"
        )
    return value


def _write_marker(folder: Path, sid: str, made_at: datetime, data_as_of: datetime,
                  outputs: Outputs) -> None:  # fmt: skip
    """``snapshot.json``, written last and atomically: the folder is complete."""
    marker = folder / MARKER
    body = {
        "id": sid,
        "as_of": outputs.as_of.isoformat(),
        "made_at": made_at.isoformat(),
        "data_as_of": data_as_of.isoformat(),
        "submissions": outputs.submissions,
    }
    part = folder / f".{MARKER}.part"
    try:
        part.write_text(json.dumps(body, ensure_ascii=False, indent=1), encoding="utf-8")
        part.replace(marker)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DataError(
            f"{marker}: 无法写入（cannot write: {e.strerror or type(e).__name__}）；"
            "请检查磁盘空间和文件夹权限"
        ) from None


def _one_line(e: BaseException) -> str:
    """What managers see: Chinese first, one line, no traceback, credentials scrubbed."""
    text = str(e) if isinstance(e, ManyiError) else f"{type(e).__name__}: {e}"
    text = scrub(" ".join(text.split()))
    if len(text) > 400:
        text = text[:399] + "…"
    return f"刷新失败，仍显示上次的数据（refresh failed, showing the last good data）：{text}"
