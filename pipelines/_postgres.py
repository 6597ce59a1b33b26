"""PostgreSQL for the store (``store_url = postgresql://…``), through psycopg 3: a connection
that speaks the SQLite dialect the store and its callers write, the migrations in PostgreSQL's
types, and the one writer lock. See :mod:`pipelines.store` for how the store uses it."""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

# pg_advisory_xact_lock key of the store's one writer at a time ("manyi" in ASCII).
WRITE_LOCK = 0x6D616E7969
PG_TIMEOUT = "30s"  # as SQLite's busy timeout: wait this long for the writer's lock
_CURSORS = itertools.count()


class PgError(sqlite3.DatabaseError):
    """A psycopg error in the clothes of an SQLite one, so every ``except sqlite3.Error``
    of the store handles both backends; ``pg`` is psycopg's exception."""

    def __init__(self, pg: Exception):
        super().__init__(str(pg))
        self.pg = pg


def _pg_text(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL (SQLite can); keep the rest of the text readable
    return value.replace("\x00", "\\u0000") if isinstance(value, str) and "\x00" in value else value


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """The SQLite-dialect statement in PostgreSQL's: ``?`` → ``%s`` (outside quotes, with
    ``%`` doubled for psycopg), ``IS [NOT] ?`` → ``IS [NOT] DISTINCT FROM`` and ``INSERT OR
    IGNORE`` → ``ON CONFLICT DO NOTHING``."""
    parts = sql.replace("%", "%%").split("'")
    parts[::2] = [p.replace("?", "%s") for p in parts[::2]]
    out = "'".join(parts)
    # SQLite's IS / IS NOT compare with NULL as a value: PostgreSQL's IS [NOT] DISTINCT FROM
    out = re.sub(r"\bIS\s+NOT\s+%s", "IS DISTINCT FROM %s", out, flags=re.IGNORECASE)
    out = re.sub(r"\bIS\s+%s", "IS NOT DISTINCT FROM %s", out, flags=re.IGNORECASE)
    if re.match(r"\s*INSERT\s+OR\s+IGNORE\s", out, re.IGNORECASE):
        out = re.sub(r"OR\s+IGNORE\s", "", out, count=1, flags=re.IGNORECASE)
        out += " ON CONFLICT DO NOTHING"
    return out


def pg_ddl(statement: str) -> str:
    """A migration in PostgreSQL's types: TEXT compared byte by byte as SQLite does (so
    ordering and keys agree), INTEGER as 64-bit (file sizes, counts)."""
    out = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', statement)
    return re.sub(r"\bINTEGER\b", "BIGINT", out)


class PgConnection:
    """A psycopg 3 connection that takes the SQLite-dialect statements of the store and its
    callers (``execute``/``executemany``/``in_transaction``), in autocommit mode so that
    ``BEGIN`` … ``COMMIT`` are ours, as with SQLite's ``isolation_level=None``."""

    fault: Callable[[sqlite3.Error], Exception] | None = None

    def __init__(self, url: str, read_only: bool):
        import psycopg  # only a PostgreSQL store needs it

        self._psycopg = psycopg
        try:
            self.conn = psycopg.connect(
                url, autocommit=True, connect_timeout=10, application_name="manyi"
            )
            self.conn.execute(f"SET lock_timeout = '{PG_TIMEOUT}'")
            if read_only:
                self.conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as e:
            raise PgError(e) from None

    @property
    def in_transaction(self) -> bool:
        idle = self._psycopg.pq.TransactionStatus.IDLE
        return not self.conn.closed and self.conn.info.transaction_status != idle

    def _fail(self, e: Exception) -> Exception:
        err = PgError(e)
        return self.fault(err) if self.fault is not None else err

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            if sql.strip().upper() == "BEGIN IMMEDIATE":
                # one writer at a time, as SQLite: a page compares and writes under it
                self.conn.execute("BEGIN")
                return self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return self.conn.execute(_pg_sql(sql), [_pg_text(v) for v in params])
        except self._psycopg.Error as e:
            raise self._fail(e) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        try:
            cur = self.conn.cursor()
            cur.executemany(_pg_sql(sql), [[_pg_text(v) for v in row] for row in rows])
            return cur
        except self._psycopg.Error as e:
            raise self._fail(e) from None

    def stream(self, sql: str, params: Sequence[Any], size: int = 2000) -> Iterator[Any]:
        """Rows of a server-side cursor, ``size`` at a time: a million submissions are
        never all in memory (``WITH HOLD``: the cursor outlives the autocommit)."""
        try:
            # a name of its own: a caller may read two forms' records at once
            cur = self.conn.cursor(name=f"manyi_records_{next(_CURSORS)}", withhold=True)
            cur.itersize = size
            cur.execute(_pg_sql(sql), list(params))
        except self._psycopg.Error as e:
            raise self._fail(e) from None
        try:
            it = iter(cur)
            while True:
                try:
                    row = next(it, None)
                except self._psycopg.Error as e:
                    raise self._fail(e) from None
                if row is None:
                    return
                yield row
        finally:
            with contextlib.suppress(self._psycopg.Error):
                cur.close()

    def close(self) -> None:
        self.conn.close()


def shown_url(url: str) -> str:
    """``postgresql://user@host:port/db`` without the password or the query (which may hold
    one), for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
    except ValueError:
        return "postgresql://…"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
