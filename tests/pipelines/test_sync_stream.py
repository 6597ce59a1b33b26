"""Pulling from ODK Central at the server's own speed (issue 13, item 2): one streamed feed
read as it arrives, the side requests sent together, a feed that breaks off resumed from the
last row read, and changes made while a pull runs caught by the next one. Real HTTP against
the Central stand-in on loopback; each race happens at a fixed point of what the stand-in is
asked or has sent, so it happens the same way on any machine."""

from __future__ import annotations

import threading
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from pipelines._http import RetryPolicy
from pipelines.demo import central_server
from pipelines.errors import SourceError
from pipelines.records import Quarantined, Record
from pipelines.sources._central_records import Files, to_record
from pipelines.store import open_store
from pipelines.sync import pull
from tests.helpers import CENTRAL_FIXTURES
from tests.pipelines.sources.test_central import FAST, PASSWORD, settings_for
from tests.standins.central_server import CentralStandIn, seed_synthetic
from tests.standins.faults import Fault

FORM = "stream_form"
TEN_MINUTES = 10 * 60_000  # ms: pulls run a while after the last submission, as in the field


def stored(settings, form_id: str = FORM, deleted: bool = False) -> dict[str, Record]:
    with open_store(settings) as store:
        return {r.instance_id: r for r in store.records(form_id, include_deleted=deleted)}


def feeds(central: CentralStandIn, marker: str = "$expand") -> list[str]:
    return [p for _m, p in central.requests if ".svc/Submissions" in p and marker in p]


# ---- what a pull stores -----------------------------------------------------------------
def paged_reading(central: CentralStandIn, form_id: str) -> dict[str, Record | Quarantined]:
    """The form's records as reading the feed page by page (``$top``, following
    ``@odata.nextLink``, each page parsed whole) makes them: what pulls stored before."""
    s = requests.Session()
    login = {"email": central.email, "password": central.password}
    token = s.post(f"{central.url}/v1/sessions", json=login).json()["token"]
    s.headers["Authorization"] = f"Bearer {token}"
    form = f"{central.url}/v1/projects/1/forms/{form_id}"
    versions = {v["version"] for v in s.get(f"{form}/versions").json()}
    fields = s.get(f"{form}/fields?odata=true").json()
    paths = [tuple(f["path"].strip("/").split("/")) for f in fields if f.get("binary")]
    files = Files(paths, f"{form}/submissions/")
    out: dict[str, Record | Quarantined] = {}
    for query, deleted in (("$filter=__system/deletedAt ne null", True), ("$expand=*", False)):
        url: str | None = f"{form}.svc/Submissions?$top=37&{query}"
        while url:
            body = s.get(url).json()
            for row in body["value"]:
                item = to_record(form_id, row, versions, files, deleted=deleted)
                out[item.instance_id if isinstance(item, Record) else item.key] = item
            url = body.get("@odata.nextLink")
    return out


def test_a_full_pull_stores_what_reading_the_feed_page_by_page_gives(tmp_path: Path) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        central.load_recorded(CENTRAL_FIXTURES)  # A–F and the truncated X
        form = "sanitation_sweep"
        ids = seed_synthetic(central, form, 300, photo_every=7, version="2023020101")
        central.edit(form, ids[3], note="已整改")
        central.review(form, ids[5], "approved")
        central.delete(form, ids[8])
        s = settings_for(central, tmp_path)
        report = pull(s, "central", [form], page_size=64, policy=FAST)
        assert not any("$top" in p for _m, p in central.requests)  # no page counted
        reference = paged_reading(central, form)
        kept = {k: r for k, r in reference.items() if isinstance(r, Record)}
        got = stored(s, form, deleted=True)
        assert set(got) == set(kept) and len(got) == 6 + 300  # one of them deleted
        for iid, rec in kept.items():
            mine = got[iid]
            assert (mine.data, mine.form_version, mine.submitted_at, mine.updated_at) == (
                rec.data,
                rec.form_version,
                rec.submitted_at,
                rec.updated_at,
            ), iid
            assert (mine.review_state, mine.deleted, mine.attachments_expected) == (
                rec.review_state,
                rec.deleted,
                rec.attachments_expected,
            ), iid
        with open_store(s) as store:
            assert [q.key for q in store.quarantined(form)] == [
                k for k, r in reference.items() if isinstance(r, Quarantined)
            ]
        assert (report.new, report.deleted, report.quarantined) == (305, 1, 1)


def test_the_side_requests_go_together_and_nothing_else_is_asked(tmp_path: Path) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        seed_synthetic(central, FORM, 50, photo_every=0)
        central.tick(TEN_MINUTES)
        deletions_asked = threading.Event()
        waited: list[bool] = []

        def hook(method: str, path: str) -> None:
            if "deletedAt" in path:
                deletions_asked.set()
            if path.endswith("/versions"):
                # answered only once the deletions feed has been asked for too: asked one
                # after another, it never would be, and the wait runs out
                waited.append(deletions_asked.wait(10))

        central.before = hook
        s = settings_for(central, tmp_path)
        first = pull(s, "central", [FORM], policy=FAST)
        central.before = None
        assert waited == [True] and first.new == 50
        central.requests.clear()
        again = pull(s, "central", [FORM], policy=FAST)
        asked = sorted(
            (m, p.split("?")[0].rsplit("/", 1)[-1] + ("?deletions" if "deletedAt" in p else ""))
            for m, p in central.requests
        )
        # log in; versions, fields and deletions together; the feed. No attachment listing
        # (none expected), nothing quarantined to ask for again, no page counted.
        assert asked == [
            ("GET", "Submissions"),
            ("GET", "Submissions?deletions"),
            ("GET", "fields"),
            ("GET", "versions"),
            ("POST", "sessions"),
        ]
        assert (again.new, again.updated, again.deleted) == (0, 0, 0)


@pytest.mark.parametrize("failing", ["/versions", "/fields", "deletedAt"])
def test_a_side_request_that_fails_is_one_clear_error(tmp_path: Path, failing: str) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        seed_synthetic(central, FORM, 20, photo_every=0)
        central.faults.append(Fault("status", path_contains=failing, status=403, times=99))
        s = settings_for(central, tmp_path)
        with pytest.raises(SourceError) as err:
            pull(s, "central", [FORM], policy=FAST)
        line = str(err.value)
        assert "\n" not in line and "HTTP 403" in line and err.value.status == 403
        assert failing in (err.value.url or "") and central.url in line
        assert "rights" in line  # what to do: the account lacks the rights
        with open_store(s) as store:
            assert store.count(FORM) == 0 and store.cursor("central", FORM) is None


# ---- a feed that breaks off ---------------------------------------------------------------
@pytest.mark.parametrize("same_ms", [False, True], ids=["minutes-apart", "shared-milliseconds"])
@pytest.mark.parametrize("stall", [0.0, 3.0], ids=["reset", "stalled-past-the-read-timeout"])
def test_a_feed_broken_midway_resumes_without_loss_or_duplicates(
    tmp_path: Path, same_ms: bool, stall: float
) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 400, photo_every=0)
        if same_ms:  # 50 rows to a millisecond: the break falls inside one of them
            subs = central.forms[FORM].by_id
            for i, iid in enumerate(ids):
                subs[iid].created = subs[ids[i - i % 50]].created
        cut = Fault("cut", path_contains="$expand", after=120_000, delay=stall)
        central.faults.append(cut)
        s = settings_for(central, tmp_path)
        report = pull(s, "central", [FORM], page_size=64, policy=FAST)
        assert cut.fired == 1
        assert (report.new, report.updated, report.quarantined) == (400, 0, 0)
        assert report.forms[0].rows == 400  # no row read twice
        first, rest = feeds(central)
        assert "submissionDate" not in first and "submissionDate%20lt%20" in rest
        with open_store(s) as store:
            counts = store.db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT instance_id) FROM submissions"
            ).fetchone()
        assert counts == (400, 400) and set(stored(s)) == central.live_ids(FORM)
        again = pull(s, "central", [FORM], policy=FAST)
        assert (again.new, again.updated) == (0, 0)


def test_a_feed_that_keeps_breaking_before_a_row_is_one_clear_error(tmp_path: Path) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        seed_synthetic(central, FORM, 30, photo_every=0)
        central.faults.append(Fault("cut", path_contains="$expand", after=300, times=99))
        s = settings_for(central, tmp_path)
        policy = RetryPolicy(max_seconds=20, base_delay=0.01, max_delay=0.05, read_timeout=2)
        with pytest.raises(SourceError) as err:
            pull(s, "central", [FORM], policy=policy)
        line = str(err.value)
        assert "broke off 6 time(s) in a row" in line and "$expand" in line
        assert "connection broken" in line and "pull again" in line


# ---- changes while a pull runs ------------------------------------------------------------
def test_submissions_and_edits_made_while_the_feed_streams_are_not_lost(tmp_path: Path) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 40, photo_every=0)
        central.tick(TEN_MINUTES)
        central.costs.rows_per_s = 400  # the rows go out over a tenth of a second

        def meanwhile() -> None:
            # once part of the feed is out: a new submission, an edit of a row already
            # sent (the newest) and of one not yet sent (the oldest)
            seed_synthetic(central, FORM, 1, photo_every=0, start=100)
            central.edit(FORM, ids[39], note="改-39")
            central.edit(FORM, ids[0], note="改-0")

        central.faults.append(Fault("call", path_contains="$expand", after=15_000, action=meanwhile))  # fmt: skip
        s = settings_for(central, tmp_path)
        first = pull(s, "central", [FORM], page_size=8, policy=FAST)
        assert first.new == 40 and "note" in stored(s)[ids[0]].data
        assert stored(s)[ids[0]].data["note"] == "第0次巡查"  # as the feed was when asked
        second = pull(s, "central", [FORM], page_size=8, policy=FAST)
        got = stored(s)
        assert set(got) == central.live_ids(FORM)
        assert got[ids[39]].data["note"] == "改-39" and got[ids[0]].data["note"] == "改-0"
        assert (second.new, second.updated) == (1, 2)
        assert second.forms[0].rows == 3  # still incremental: what changed, nothing more


def test_a_deletion_made_after_the_deletions_were_read_is_caught_next_time(
    tmp_path: Path,
) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 8, photo_every=0)
        s = settings_for(central, tmp_path)
        pull(s, "central", [FORM], policy=FAST)
        for iid in ids[2:6]:
            central.delete(FORM, iid)
        central.tick(TEN_MINUTES)

        def meanwhile(method: str, path: str) -> None:
            if "$expand" in path:  # the deletions feed has been read by now
                central.delete(FORM, ids[7])
                central.delete(FORM, ids[0])

        central.before = meanwhile
        second = pull(s, "central", [FORM], policy=FAST)
        central.before = None
        assert second.deleted == 4 and {ids[0], ids[7]} <= set(stored(s))
        central.tick(TEN_MINUTES)
        central.requests.clear()
        third = pull(s, "central", [FORM], policy=FAST)
        assert set(stored(s)) == central.live_ids(FORM) == {ids[1], ids[6]}
        assert third.deleted == 2
        # read from marks, not in full: the two deletions and the last one the pull before
        # read (where this one starts: ge, not gt), and in the feed the newest live row
        assert third.forms[0].rows == 3 + 1 and len(feeds(central, "deletedAt")) == 1


# ---- cursors, memory ------------------------------------------------------------------
def test_a_cursor_of_a_paged_pull_under_way_is_taken_over(tmp_path: Path) -> None:
    """A store a killed paged pull (before streaming) left: its marks hold, the phase it
    had under way is read again, and the pull goes round once more."""
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 30, photo_every=0)
        s = settings_for(central, tmp_path)
        first = ids[:10][::-1]  # what the old pull had stored: not the newest, to be sure
        legacy: dict[str, Any] = {
            "hwm": None,
            "pending": "2026-11-29T00:49:28.735Z",
            "deleted_hwm": None,
            "deleted_pending": None,
            "started": "2026-11-29T00:50:00.000Z",
            "phase": "data",
            "next": f"{central.url}/v1/projects/1/forms/{FORM}.svc/Submissions?%24top=10&%24skiptoken=01xx",
        }
        with open_store(s) as store:
            rows = [r for r in paged_reading(central, FORM).values() if r.instance_id in first]
            store.write_page("central", FORM, rows, cursor=legacy)  # type: ignore[arg-type]
        central.requests.clear()
        report = pull(s, "central", [FORM], policy=FAST)
        assert (report.new, report.updated) == (20, 0)
        assert set(stored(s)) == central.live_ids(FORM)
        assert len(feeds(central)) == 2  # the phase again, then once more round
        with open_store(s) as store:
            cursor = store.cursor("central", FORM)
        assert cursor is not None and cursor["v"] == 2 and "next" not in cursor


def test_memory_is_bounded_by_a_page_not_the_feed(tmp_path: Path) -> None:
    # the demo's stand-in: the tests' one keeps a copy of every answer it sends
    with central_server.CentralStandIn(password=PASSWORD) as central:
        seed_synthetic(central, FORM, 3000, photo_every=0)
        seed_synthetic(central, "warm_up", 3, photo_every=0)
        s = settings_for(central, tmp_path)  # type: ignore[arg-type]
        pull(s, "central", ["warm_up"], policy=FAST)  # the modules a pull imports, loaded
        session = requests.Session()
        login = {"email": central.email, "password": PASSWORD}
        token = session.post(f"{central.url}/v1/sessions", json=login).json()["token"]
        session.headers["Authorization"] = f"Bearer {token}"
        url = f"{central.url}/v1/projects/1/forms/{FORM}.svc/Submissions?$expand=*"
        tracemalloc.start()
        try:
            assert len(session.get(url).json()["value"]) == 3000  # the feed read whole
            whole = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            report = pull(s, "central", [FORM], page_size=100, policy=FAST)
            streamed = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert report.new == 3000
        assert streamed < whole / 3, (streamed, whole)  # the stand-in in this process too


def test_the_clock_margin_covers_a_submission_committed_late(tmp_path: Path) -> None:
    """A submission timestamped before a pull began but committed after the pull read past
    it (a slow upload) is caught by the next pull."""
    with CentralStandIn(password=PASSWORD) as central:
        seed_synthetic(central, FORM, 10, photo_every=0)
        central.tick(TEN_MINUTES)
        s = settings_for(central, tmp_path)
        pull(s, "central", [FORM], policy=FAST)
        late = seed_synthetic(central, FORM, 1, photo_every=0, start=50)[0]
        central.forms[FORM].by_id[late].created = central.now() - timedelta(seconds=30)
        report = pull(s, "central", [FORM], policy=FAST)
        assert report.new == 1 and late in stored(s)
