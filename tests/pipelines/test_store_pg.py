"""PostgreSQL as the store (``store_url``), against a real cluster the suite starts
(tests/pg.py): the settings keep its password secret, opening read-only creates nothing,
two processes migrate once, text SQLite keeps (``%``, ``?``, NUL) is kept, a pull from the
Central stand-in lands in it, and two pulls writing the same form at once store each
submission exactly once. The store's behaviour tests run on both backends in
tests/pipelines/test_store.py."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from pipelines.config import load_settings
from pipelines.errors import ConfigError, DataError
from pipelines.records import Quarantined, Record
from pipelines.store import MIGRATIONS, Store, StoreError, open_store, store_exists
from pipelines.sync import pull
from tests.pg import pg_cluster_fixture, pg_url_fixture  # noqa: F401 - fixtures
from tests.pipelines.sources.test_central import FAST, PASSWORD
from tests.standins.central_server import CentralStandIn, seed_synthetic

FORM = "pg_form"


def _rec(iid: str, note: str = "a") -> Record:
    return Record(
        form_id="f",
        instance_id=iid,
        form_version="1",
        submitted_at="2026-01-01T00:00:00.000Z",
        updated_at=None,
        review_state=None,
        data={"note": note},
    )


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {r[0] for r in rows}


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_the_url_password_never_shows(pg_url: str, tmp_path: Path) -> None:
    password = urlsplit(pg_url).password
    s = load_settings({"data_dir": tmp_path}, env={"MANYI_STORE_URL": pg_url})
    assert s.store_url.get() == pg_url
    assert password not in repr(s) and password not in str(s.store_url)
    wrong = _with_password(pg_url, "Wr0ngPassw0rd")
    with pytest.raises(StoreError) as e:
        Store(tmp_path / "x.sqlite", tmp_path, url=wrong)
    line = str(e.value)
    assert "Wr0ngPassw0rd" not in line and password not in line
    assert line.startswith(f"postgresql://manyi@127.0.0.1:{urlsplit(pg_url).port}/")
    assert "cannot reach the store" in line and "MANYI_STORE_URL" in line
    assert not (tmp_path / "x.sqlite").exists()


def test_a_bad_store_url_is_refused_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env={"MANYI_STORE_URL": "mysql://u:Hunter2Secret@db/manyi"})
    assert "Hunter2Secret" not in str(e.value) and "not a PostgreSQL URL" in str(e.value)
    config = tmp_path / "manyi.toml"
    config.write_text('store_url = "postgresql://u:Hunter2Secret@db/manyi"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_settings(config_file=config, env={})
    assert "Hunter2Secret" not in str(e.value) and "~/.pgpass" in str(e.value)
    # without a password, a committed file may name the server
    config.write_text('store_url = "postgresql://manyi@db/manyi"\n', encoding="utf-8")
    assert load_settings(config_file=config, env={}).store_url.get().endswith("@db/manyi")


def test_read_only_creates_nothing_and_writes_nothing(pg_url: str, tmp_path: Path) -> None:
    s = load_settings({"data_dir": tmp_path}, env={"MANYI_STORE_URL": pg_url})
    assert not store_exists(s)
    with pytest.raises(StoreError, match="not a manyi store"):
        open_store(s, read_only=True)
    assert _tables(pg_url) == set()  # nothing created, nothing migrated
    with open_store(s) as store:
        store.write_page("central", "f", [_rec("a")])
    assert store_exists(s)
    with open_store(s, read_only=True) as store:
        assert [r.instance_id for r in store.records("f")] == ["a"]
        with pytest.raises(DataError, match=r"cannot (write|read) the store"):
            store.write_page("central", "f", [_rec("b")])
    with open_store(s) as store:
        assert store.count("f") == 1


def test_workers_starting_at_once_migrate_once(pg_url: str, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    versions: list[int] = []

    def open_one() -> None:
        try:
            with Store(tmp_path / "s", tmp_path, url=pg_url) as store:
                versions.append(store.schema_version)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and versions == [len(MIGRATIONS)] * 6
    with psycopg.connect(pg_url) as conn:
        applied = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v for (v,) in applied] == list(range(1, len(MIGRATIONS) + 1))


def test_text_sqlite_keeps_is_kept(pg_url: str, tmp_path: Path) -> None:
    raw = "100% sure? it's <x>\x00tail"
    with Store(tmp_path / "s", tmp_path, url=pg_url) as store:
        store.write_page("files", "f", [_rec("a?%", "50% 'quoted' ?")], [Quarantined("files", "f", "bad", raw, "k%?")])  # fmt: skip
        (got,) = store.records("f")
        assert got.instance_id == "a?%" and got.data["note"] == "50% 'quoted' ?"
        (q,) = store.quarantined("f")
        assert q.raw == raw.replace("\x00", "\\u0000")  # PostgreSQL text holds no NUL
        assert store.quarantined_ids("files", "f") == ["k%?"]


def test_records_are_read_in_sqlite_order_and_streamed(pg_url: str, tmp_path: Path) -> None:
    ids = ["b", "B", "a", "é", "Z", "_x"] + [f"n{i:05d}" for i in range(5000)]
    with Store(tmp_path / "s", tmp_path, url=pg_url) as pg, Store(tmp_path / "l.sqlite", tmp_path) as lite:  # fmt: skip
        for store in (pg, lite):
            store.write_page("central", "f", [_rec(i) for i in ids])
        assert [r.instance_id for r in pg.records("f")] == [r.instance_id for r in lite.records("f")]  # fmt: skip
        # another query while the stream is open is answered (the cursor is server-side)
        stream = pg.records("f")
        next(stream)
        assert pg.count("f") == len(ids)
        # and two streams at once (two forms read side by side) each get their rows
        pg.write_page("central", "g", [Record(**{**_rec("x").__dict__, "form_id": "g"})])
        other = pg.records("f")
        assert [r.instance_id for r in pg.records("g")] == ["x"]
        assert sum(1 for _ in stream) == len(ids) - 1
        assert sum(1 for _ in other) == len(ids)


def _central_settings(central: CentralStandIn, tmp_path: Path, url: str):
    return load_settings(
        {
            "data_dir": tmp_path / "data",
            "central_url": central.url,
            "central_user": central.email,
            "central_password": PASSWORD,
            "central_project": 1,
        },
        env={"MANYI_STORE_URL": url},
    )


def _count(url: str, form_id: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT instance_id) FROM submissions WHERE form_id = %s",
            (form_id,),
        ).fetchone()


def test_a_pull_from_central_lands_in_postgresql(pg_url: str, tmp_path: Path) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 120, photo_every=40)
        s = _central_settings(central, tmp_path, pg_url)
        first = pull(s, "central", [FORM], page_size=25, policy=FAST)
        assert (first.new, first.attachments) == (120, 3)
        assert not (tmp_path / "data" / "manyi.sqlite").exists()  # nothing went to SQLite
        again = pull(s, "central", [FORM], page_size=25, policy=FAST)
        assert again.new == 0 and again.updated == 0
    assert _count(pg_url, FORM) == (120, 120)
    with open_store(s, read_only=True) as store:
        assert {r.instance_id for r in store.records(FORM)} == set(ids)
        assert store.cursor("central", FORM) is not None
        photos = [a for iid in ids for a in store.attachments(FORM, iid)]
        assert len(photos) == 3 and all(a.local_path.is_file() for a in photos)


def test_two_pulls_at_once_store_each_submission_once(pg_url: str, tmp_path: Path) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 600, photo_every=0)
        s = _central_settings(central, tmp_path, pg_url)
        reports, errors = [], []

        def run() -> None:
            try:
                reports.append(pull(s, "central", [FORM], page_size=20, policy=FAST))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert _count(pg_url, FORM) == (600, 600)
    # each row was new to exactly one of the two pulls: the writer's lock serialises pages
    assert sum(r.new for r in reports) == 600
    with open_store(s, read_only=True) as store:
        assert {r.instance_id for r in store.records(FORM)} == set(ids)


def test_the_portal_sees_each_change_of_a_postgresql_store(pg_url: str, tmp_path: Path) -> None:
    from pipelines.server.refresher import _read_fingerprint

    s = load_settings({"data_dir": tmp_path}, env={"MANYI_STORE_URL": pg_url})
    assert _read_fingerprint(s).marks == ("no store",)
    seen = []
    with open_store(s) as store:
        seen.append(_read_fingerprint(s))
        store.write_page("central", "f", [_rec("a")], cursor={"hwm": "1"})  # a pull's page
        seen.append(_read_fingerprint(s))
        edited = _rec("a", "edited")
        edited = Record(**{**edited.__dict__, "updated_at": "2026-02-01T00:00:00.000Z"})
        store.write_page("central", "f", [edited])  # an edit, without a cursor
        seen.append(_read_fingerprint(s))
        store.write_page("files", "f", [], [Quarantined("files", "f", "bad", "x", "q")])
        seen.append(_read_fingerprint(s))
    assert len({p.marks for p in seen}) == len(seen)  # every change moved the marks
    assert seen[1].newest is not None  # 数据截至: the pull's page
    assert ("f", "2026-02-01T00:00:00.000Z") in seen[2].marks[1]  # the form's latest edit


def test_count_and_the_change_scan_can_read_the_index_alone(pg_url: str, tmp_path: Path) -> None:
    """The covering index serves both hot reads as an index-only scan (the visibility map set
    by (auto)vacuum): PostgreSQL need not visit a million rows' JSON to count them."""
    with Store(tmp_path / "s", tmp_path, url=pg_url) as store:
        for form in ("a", "b", "c"):
            page = [Record(**{**_rec(f"i{n}").__dict__, "form_id": form}) for n in range(1000)]
            store.write_page("central", form, page)
        # the test cluster commits asynchronously: a vacuum marks rows visible to all (what
        # an index-only scan needs) once their commits are flushed
        store.db.execute("CHECKPOINT")
        store.db.execute("VACUUM ANALYZE submissions")
        # plans on a small table lean to reading it all: ask for the best index plan
        store.db.execute("SET enable_seqscan = off")
        store.db.execute("SET enable_bitmapscan = off")
        reads = [
            ("SELECT COUNT(*) FROM submissions WHERE form_id = ? AND deleted = 0", ["b"]),
            ("SELECT instance_id, changed_at, first_seen_at FROM submissions "
             "WHERE form_id = ? AND changed_at >= ?", ["b", "2026-01-01T00:00:00"]),
        ]  # fmt: skip
        for sql, args in reads:
            plan = "\n".join(row[0] for row in store.db.execute("EXPLAIN " + sql, args))
            assert "Index Only Scan using submissions_form_changed" in plan, plan
        assert store.count("b") == 1000 and len(store.changes("b")) == 1000
        assert store.form_ids() == ["a", "b", "c"]
