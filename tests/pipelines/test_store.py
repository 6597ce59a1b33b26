"""The store: upserts, deletions, atomic pages with cursors, migrations, attachments."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.errors import DataError, ManyiError
from pipelines.records import Quarantined, Record, utc_text
from pipelines.sources._central_records import geojson_to_xform
from pipelines.store import MIGRATIONS, Published, Store, StoreError, open_store, safe_name
from tests.pg import pg_cluster_fixture, pg_url_fixture  # noqa: F401 - fixtures


def rec(iid: str, note: str = "a", **kw) -> Record:
    base = dict(
        form_id="f",
        instance_id=iid,
        form_version="1",
        submitted_at="2026-01-01T00:00:00.000Z",
        updated_at=None,
        review_state=None,
        data={"note": note, "piles": [{"t": "x"}]},
    )
    base.update(kw)
    return Record(**base)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same behaviour on both backends: the SQLite file, and a real PostgreSQL database
    (tests/pg.py), its attachments under the same data folder."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    s = Store(tmp_path / "data" / "manyi.sqlite", tmp_path / "data", url=url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "data" / "manyi.sqlite", tmp_path / "data")
    yield s
    s.close()


def test_new_then_edit_then_same_again_counts_once_each(store: Store) -> None:
    assert store.write_page("central", "f", [rec("a"), rec("b")]).new == 2
    counts = store.write_page("central", "f", [rec("a", "edited"), rec("b")])
    assert (counts.new, counts.updated, counts.unchanged) == (0, 1, 1)
    assert store.count("f") == 2
    assert {r.data["note"] for r in store.records("f")} == {"edited", "a"}


def test_deleted_is_flagged_not_forgotten(store: Store) -> None:
    store.write_page("central", "f", [rec("a"), rec("b")])
    counts = store.write_page("central", "f", [rec("a", deleted=True)], gone=["b"])
    assert counts.deleted == 2
    assert store.count("f") == 0
    kept = {r.instance_id: r for r in store.records("f", include_deleted=True)}
    assert kept["a"].deleted and kept["a"].data["note"] == "a"
    assert kept["b"].deleted


def test_page_rows_and_cursor_commit_together(store: Store) -> None:
    store.write_page("central", "f", [rec("a")], cursor={"hwm": "1"})
    with pytest.raises(ValueError):
        # the second record belongs to another form: the whole page must roll back
        store.write_page("central", "f", [rec("b"), rec("c", form_id="g")], cursor={"hwm": "2"})
    assert store.cursor("central", "f") == {"hwm": "1"}
    assert [r.instance_id for r in store.records("f")] == ["a"]


def test_quarantine_keeps_reason_and_raw_once(store: Store) -> None:
    bad = Quarantined("files", "f", "bad XML: mismatched tag", "<data><x></data>")
    store.write_page("files", "f", [], [bad])
    store.write_page("files", "f", [], [bad])  # seen again on the next pull
    (kept,) = store.quarantined("f")
    assert kept.reason == "bad XML: mismatched tag" and kept.raw == "<data><x></data>"


def test_wal_and_versioned_migrations(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path, tmp_path).close()
    again = Store(path, tmp_path)  # reopening applies nothing twice
    assert again.schema_version == len(MIGRATIONS) == 7
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 7


def _version_1_store(tmp_path: Path) -> Path:
    """A store as manyi's first schema left it."""
    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("INSERT INTO schema_migrations VALUES (1, '2026-01-01T00:00:00.000Z')")
    db.commit()
    db.close()
    return path


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = _version_1_store(tmp_path)
    with Store(path, tmp_path) as store:
        assert store.schema_version == len(MIGRATIONS)
        store.note_published(Published("kobo", "f", "aUID", "1", "md5", {"r.csv": "x"}, "v1"))
        assert store.published("kobo")["f"].media == {"r.csv": "x"}


def test_a_page_repeating_a_row_counts_it_once(store: Store) -> None:
    counts = store.write_page("central", "f", [rec("a"), rec("a"), rec("b")])
    assert (counts.new, counts.unchanged) == (2, 1)
    counts = store.write_page("central", "f", [rec("a", "x"), rec("a", "x")])
    assert (counts.updated, counts.unchanged) == (1, 1)
    assert store.count("f") == 2


def test_attachments_are_content_addressed_and_names_cannot_escape(
    store: Store, tmp_path: Path
) -> None:
    for name in ("../../x.jpg", "/etc/passwd", "C:\\evil.jpg"):
        got = store.put_attachment("f", "a", name, [b"same ", b"bytes"])
        assert got.local_path.resolve().is_relative_to((tmp_path / "data").resolve())
        assert got.local_path.read_bytes() == b"same bytes"
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path.parent / "x.jpg").exists()
    files = [p for p in (tmp_path / "data" / "attachments").rglob("*") if p.is_file()]
    assert len(files) == 1  # one copy for three names with the same content
    assert {a.name for a in store.attachments("f")} == {
        "../../x.jpg",
        "/etc/passwd",
        "C:\\evil.jpg",
    }
    assert safe_name("../../x") == "x" and safe_name("/etc/passwd") == "passwd"
    assert "/" not in safe_name("..") and safe_name("..") not in ("", "..", ".")


def test_times_and_geojson_are_normalised() -> None:
    assert utc_text("2019-09-01T01:02:03") == "2019-09-01T01:02:03.000Z"
    assert utc_text("2026-11-28T09:30:15.123+08:00") == "2026-11-28T01:30:15.123Z"
    point = {"type": "Point", "coordinates": [117.26, 35.17, 50], "properties": {"accuracy": 5}}
    assert geojson_to_xform(point) == "35.17 117.26 50 5"
    line = {"type": "LineString", "coordinates": [[117.1, 35.1, 0], [117.2, 35.2, 0]]}
    assert geojson_to_xform(line) == "35.1 117.1 0;35.2 117.2 0"


def test_a_deleted_row_sent_again_live_is_restored(store: Store) -> None:
    r = rec("a", source_version="u1")
    assert store.write_page("kobo", "f", [r]).new == 1
    assert store.write_page("kobo", "f", [], gone=["a"]).deleted == 1
    assert store.count("f") == 0
    counts = store.write_page("kobo", "f", [r])  # unchanged content, but live again
    assert (counts.new, counts.updated, counts.unchanged) == (0, 1, 0)
    (back,) = store.records("f")
    assert back.instance_id == "a" and not back.deleted
    assert store.write_page("kobo", "f", [r]).unchanged == 1


def test_deleting_a_deleted_row_again_is_no_change(store: Store) -> None:
    assert store.write_page("central", "f", [rec("a", deleted=True)]).deleted == 1
    # the server's deleted row again, with a newer review state: still just deleted
    again = store.write_page("central", "f", [rec("a", deleted=True, review_state="x")])
    assert (again.new, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 1)
    assert store.write_page("central", "f", [], gone=["a"]).deleted == 0
    (kept,) = store.records("f", include_deleted=True)
    assert kept.deleted


def test_a_record_that_reads_now_leaves_the_quarantine(store: Store) -> None:
    stuck = Quarantined("central", "f", "unknown form version '2'", "{}", "a")
    hashed = Quarantined("central", "f", "row is not a JSON object", "[]")
    store.write_page("central", "f", [], [stuck, hashed])
    store.write_page("kobo", "f", [], [Quarantined("kobo", "f", "bad", "{}", "b")])
    assert store.quarantined_ids("central", "f") == ["a"]  # a hash is no id to ask for
    store.write_page("central", "f", [rec("a")])
    assert store.quarantined_ids("central", "f") == []
    assert [q.key for q in store.quarantined("f")] == ["b", hashed.item_key()]


def test_lookups_by_many_ids_go_in_chunks(store: Store) -> None:
    ids = [f"i{n:05d}" for n in range(1234)]  # more than one IN (...) chunk
    store.write_page("central", "f", [rec(i, attachments_expected=1) for i in ids])
    for i in ids[:3]:
        store.put_attachment("f", i, "p.jpg", [i.encode()])
    counts = store.write_page(
        "central", "f", [rec(i, "x", attachments_expected=1) for i in ids[::2]], gone=ids[1::2]
    )
    assert (counts.updated, counts.deleted) == (617, 617)
    assert {r.instance_id for r in store.records("f")} == set(ids[::2])
    assert len(store.incomplete_attachments("f")) == 617 - 2  # i00000 and i00002 have theirs
    assert set(store.stored_names("f", ids)) == set(ids[:3])


# ---- faults of the file and the disk ------------------------------------------------------
def _as_nobody(check) -> str:
    """Run ``check()`` as user nobody in a forked child and return what it returned, or
    ``error: <line>`` for a ManyiError. Tests run as root here, and root ignores file modes
    (chmod alone would prove nothing); a fork keeps the loaded modules, so the child needs
    no access to the interpreter's files. Not root: the chmod of the caller is enough."""
    if os.geteuid() != 0:
        try:
            return str(check())
        except ManyiError as e:
            return f"error: {e}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = str(check())
        except ManyiError as e:
            out = f"error: {e}"
        except BaseException as e:  # a traceback the user would have seen
            out = f"crash: {type(e).__name__}: {e}"
        os.write(write, out.encode("utf-8", "backslashreplace"))
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode("utf-8")


@pytest.fixture
def read_only_dir():
    """A data folder others can read but not write (under /tmp: pytest's own is 0700)."""

    base = Path(tempfile.mkdtemp(prefix="manyi-ro-"))
    base.chmod(0o755)
    data = base / "data"
    with Store(data / "manyi.sqlite", data) as s:
        s.write_page("central", "f", [rec("a"), rec("b")])
        s.write_page("central", "f", [], [Quarantined("central", "f", "bad", "{}", "q")])
    for p in (data, *data.iterdir()):
        p.chmod(0o555 if p.is_dir() else 0o444)
    yield data
    data.chmod(0o755)
    shutil.rmtree(base)


def test_report_reads_a_store_it_cannot_write(read_only_dir: Path) -> None:
    settings = SimpleNamespace(store_path=read_only_dir / "manyi.sqlite", data_dir=read_only_dir)

    def read() -> str:
        with open_store(settings, read_only=True) as store:
            return f"{store.count('f')} {[q.key for q in store.quarantine('f')]}"

    assert _as_nobody(read) == "2 ['q']"
    assert sorted(p.name for p in read_only_dir.iterdir()) == ["manyi.sqlite"]  # no -wal left


def test_writing_a_store_it_cannot_write_says_so(read_only_dir: Path) -> None:
    def write() -> str:
        with Store(read_only_dir / "manyi.sqlite", read_only_dir) as s:
            s.write_page("central", "f", [rec("c")])
        return "written"

    line = _as_nobody(write)
    assert line.startswith("error: ") and "\n" not in line, line
    assert "cannot write the store" in line and "owned by root" in line
    assert "mode 0555" in line and "chown/chmod" in line
    assert "move the file aside" not in line and "rollback" not in line


def test_a_missing_store_read_only_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no store at .*: run `manyi pull` first"):
        Store(tmp_path / "data" / "manyi.sqlite", tmp_path / "data", read_only=True)
    assert not (tmp_path / "data").exists()


def test_a_read_only_store_is_not_migrated(tmp_path: Path) -> None:
    path = _version_1_store(tmp_path)
    with Store(path, tmp_path, read_only=True) as store:
        assert store.schema_version == 1 and store.quarantine() == []
        with pytest.raises(DataError):  # a write is refused, in one line
            store.write_page("central", "f", [rec("a")])
    with Store(path, tmp_path) as store:
        assert store.schema_version == len(MIGRATIONS)


def test_a_full_disk_is_one_line_and_the_page_leaves_nothing(sqlite_store: Store) -> None:
    store = sqlite_store
    store.write_page("central", "f", [rec("a")], cursor={"hwm": "1"})
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLITE_FULL for real
    big = [rec(f"i{n}", "x" * 2000) for n in range(200)]
    with pytest.raises(DataError) as e:
        store.write_page("central", "f", big, cursor={"hwm": "2"})
    assert "the disk is full" in str(e.value) and "rollback" not in str(e.value)
    assert store.cursor("central", "f") == {"hwm": "1"} and store.count("f") == 1
    store.db.execute("PRAGMA max_page_count = 1073741823")
    assert store.write_page("central", "f", big, cursor={"hwm": "2"}).new == 200


def test_quarantine_lists_reasons_and_how_often_seen(store: Store) -> None:
    item = Quarantined("central", "f", "unknown form version '2'", "{}", "a")
    store.write_page("central", "f", [], [item])
    store.write_page("central", "f", [], [item])
    store.write_page("kobo", "g", [], [Quarantined("kobo", "g", "bad", "{}", "b")])
    (a,) = store.quarantine("f")
    assert (a.source, a.form_id, a.key, a.reason, a.tries) == ("central", "f", "a", item.reason, 2)
    assert a.first_seen_at <= a.last_seen_at
    assert [q.key for q in store.quarantine()] == ["a", "b"]
    assert [q.key for q in store.quarantine(source="kobo")] == ["b"]


# ---- what the tables read: changes since a mark, records by id, the forms --------------------
LONG_AGO = "2026-01-01T00:00:00.000Z"
MARK = "2026-06-01T00:00:00"  # a tables' mark, long after LONG_AGO


def _stored_at(store: Store, form_id: str, stamp: str) -> None:
    """Set-up: the form's rows as a write at ``stamp`` left them."""
    store.db.execute(
        "UPDATE submissions SET first_seen_at = ?, changed_at = ? WHERE form_id = ?",
        (stamp, stamp, form_id),
    )


def test_changes_since_a_mark_are_the_new_edited_and_deleted_rows(store: Store) -> None:
    store.write_page("central", "f", [rec("a"), rec("b"), rec("c"), rec("e")])
    store.write_page("central", "g", [rec("x", form_id="g")])
    _stored_at(store, "f", LONG_AGO)
    assert len(store.changes("f", MARK)) == 0 and store.changes("f", MARK).latest is None
    store.write_page("central", "f", [rec("a", "edited"), rec("d"), rec("e")], gone=["b"])
    got = store.changes("f", MARK)
    assert sorted(got.instance_ids) == ["a", "b", "d"]  # e came again unchanged: no change
    first = dict(zip(got.instance_ids, got.first_seen_at, strict=True))
    assert first["a"] == first["b"] == LONG_AGO and first["d"] > MARK  # d is new
    assert got.latest == max(got.changed_at) and got.latest > MARK
    assert sorted(store.changes("f").instance_ids) == ["a", "b", "c", "d", "e"]  # not g's


def test_a_new_updated_at_with_the_same_content_is_a_change(store: Store) -> None:
    first = rec("a", updated_at="2026-01-02T00:00:00.000Z", source_version="m1")
    store.write_page("central", "f", [first, rec("b")])
    _stored_at(store, "f", LONG_AGO)
    # the server's marker moved (Central's updatedAt after a comment): the same content for
    # the pull's counts, but the tables show updated_at, so they must read the row again
    moved = rec("a", updated_at="2026-03-01T00:00:00.000Z", source_version="m2")
    assert store.write_page("central", "f", [moved, rec("b")]).unchanged == 2
    assert store.changes("f", MARK).instance_ids == ["a"]
    (back,) = store.records_by_id("f", ["a"]).records
    assert back.updated_at == "2026-03-01T00:00:00.000Z" and back.source_version == "m2"


def test_changed_at_never_goes_below_first_seen_at(store: Store) -> None:
    store.write_page("central", "f", [rec("a"), rec("b"), rec("c", source_version="m1")])
    ahead = "2999-01-01T00:00:00.000Z"  # first seen by a writer whose clock runs far ahead
    _stored_at(store, "f", ahead)
    page = [rec("a", "edited"), rec("c", source_version="m2")]  # an edit, a new marker
    store.write_page("central", "f", page, gone=["b"])  # and a deletion
    got = store.changes("f", ahead[:19])
    assert sorted(got.instance_ids) == ["a", "b", "c"] and set(got.changed_at) == {ahead}


def test_records_by_id_come_with_their_change_stamps(store: Store) -> None:
    ids = [f"i{n:04d}" for n in range(700)]  # more than one IN (...) chunk
    store.write_page("central", "f", [rec(i) for i in ids])
    store.write_page("central", "f", [], gone=["i0001"])
    got = store.records_by_id("f", [*ids[:600], "not-stored"])
    assert len(got) == 600 and {r.instance_id for r in got.records} == set(ids[:600])
    by_id = {r.instance_id: (r, s) for r, s in zip(got.records, got.changed_at, strict=True)}
    gone, _ = by_id["i0001"]
    assert gone.deleted and gone.data["note"] == "a"  # deleted, last content kept
    scan = store.changes("f")
    stamps = dict(zip(scan.instance_ids, scan.changed_at, strict=True))
    assert all(stamp == stamps[i] for i, (_, stamp) in by_id.items())


def test_form_ids_are_every_form_with_submissions_once(store: Store) -> None:
    assert store.form_ids() == []
    for form in ("g", "f", "h"):
        store.write_page("central", form, [rec("a", form_id=form), rec("b", form_id=form)])
    store.write_page("central", "h", [], gone=["a", "b"])  # only deleted rows: still its records
    assert store.form_ids() == ["f", "g", "h"]


def test_count_and_the_change_scan_read_one_covering_index(sqlite_store: Store) -> None:
    store = sqlite_store
    store.write_page("central", "f", [rec(f"i{n}") for n in range(50)])
    store.write_page("central", "g", [rec(f"i{n}", form_id="g") for n in range(50)])
    run: list[str] = []  # the statements the store runs, values bound
    store.db.set_trace_callback(run.append)
    assert store.count("f") == 50 and len(store.changes("f", MARK)) == 50
    assert len(store.changes("g")) == 50
    store.db.set_trace_callback(None)
    assert len(run) == 3
    for sql in run:
        plan = " ".join(row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING COVERING INDEX submissions_form_changed" in plan, (sql, plan)
