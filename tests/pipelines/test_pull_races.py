"""Pulls racing the server: changes made while a pull runs, listings that miss rows, rows
flagged deleted that the server still has, and records quarantined before their form
version was published. Each case is driven by a hook on the stand-in's requests, so it
happens at the same point of the pull on any machine."""

from __future__ import annotations

from pathlib import Path

from pipelines.store import open_store
from pipelines.sync import pull
from tests.pipelines.sources.test_central import FAST, PASSWORD
from tests.pipelines.sources.test_central import settings_for as central_settings
from tests.pipelines.sources.test_kobo import answers
from tests.pipelines.sources.test_kobo import settings_for as kobo_settings
from tests.standins.central_server import CentralStandIn, seed_synthetic, synthetic_xform
from tests.standins.kobo_server import KoboStandIn

FORM = "race_form"
ASSET = "aRaceForm0000000000000"
TEN_MINUTES = 10 * 60_000  # ms: pulls run a while after the last submission, as in the field


def _stored(settings, form_id: str, deleted: bool = False) -> dict:
    with open_store(settings) as store:
        return {r.instance_id: r for r in store.records(form_id, include_deleted=deleted)}


# ---- ODK Central: the feed is read newest first -------------------------------------------
# Edits, new rows and deletions made while a streamed pull runs: tests/pipelines/test_sync_stream.py


def test_a_central_record_of_an_unpublished_version_is_stored_once_it_is_published(
    tmp_path: Path,
) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        seed_synthetic(central, FORM, 2, photo_every=0)
        # filled in on a phone with a version the server does not have (yet)
        early = "uuid:early-version"
        central.add_submission(
            FORM, early, {"village": "370481115201", "meta": {"instanceID": early}}, version="2"
        )
        seed_synthetic(central, FORM, 2, photo_every=0, start=2)  # the cursor passes it
        central.tick(TEN_MINUTES)
        s = central_settings(central, tmp_path)
        first = pull(s, "central", [FORM], policy=FAST)
        assert (first.new, first.quarantined) == (4, 1)
        again = pull(s, "central", [FORM], policy=FAST)
        assert again.new == 0 and early not in _stored(s, FORM)

        central.add_form(FORM, "2", synthetic_xform(FORM, "2"))
        central.requests.clear()
        report = pull(s, "central", [FORM], policy=FAST)
        assert report.new == 1
        assert _stored(s, FORM)[early].form_version == "2"
        with open_store(s) as store:
            assert store.quarantined(FORM) == []
        asked = [p for _m, p in central.requests if "__id" in p]
        assert len(asked) == 1 and "early-version" in asked[0]
        # nothing quarantined any more: nothing is asked for again
        central.requests.clear()
        pull(s, "central", [FORM], policy=FAST)
        assert not any("__id" in p for _m, p in central.requests)


# ---- KoboToolbox: listings and deletions ---------------------------------------------------
def test_short_kobo_pages_are_not_the_end_and_flag_nothing_deleted(tmp_path: Path) -> None:
    with KoboStandIn() as kobo:
        kobo.add_asset(ASSET, FORM)
        kobo.max_limit = 3  # the server gives fewer rows a page than asked for
        for i in range(8):
            kobo.add_submission(ASSET, answers(i))
        s = kobo_settings(kobo, tmp_path)
        first = pull(s, "kobo", [FORM], page_size=5, policy=FAST)
        assert (first.new, first.deleted) == (8, 0)
        kobo.delete(ASSET, kobo.data[ASSET][6]["_id"])
        second = pull(s, "kobo", [FORM], page_size=5, policy=FAST)
        assert (second.new, second.deleted) == (0, 1)
        assert set(_stored(s, FORM)) == kobo.live_root_uuids(ASSET)


def test_a_kobo_listing_that_does_not_add_up_flags_nothing_deleted(tmp_path: Path) -> None:
    with KoboStandIn() as kobo:
        kobo.add_asset(ASSET, FORM)
        rows = [kobo.add_submission(ASSET, answers(i)) for i in range(4)]
        s = kobo_settings(kobo, tmp_path)
        pull(s, "kobo", [FORM], page_size=2, policy=FAST)
        kobo.delete(ASSET, rows[1]["_id"])
        broken = kobo.add_submission(ASSET, answers(9))
        del broken["_uuid"], broken["meta/rootUuid"]  # a row the listing cannot name
        report = pull(s, "kobo", [FORM], page_size=2, policy=FAST)
        # one row the listing could not read: it cannot tell deleted from unread
        assert (report.deleted, report.quarantined) == (0, 1)
        assert rows[1]["meta/rootUuid"] in _stored(s, FORM)
        kobo.delete(ASSET, broken["_id"])
        report = pull(s, "kobo", [FORM], page_size=2, policy=FAST)
        assert report.deleted == 1
        assert set(_stored(s, FORM)) == kobo.live_root_uuids(ASSET)


def test_a_row_flagged_deleted_that_kobo_still_has_is_restored(tmp_path: Path) -> None:
    with KoboStandIn() as kobo:
        kobo.add_asset(ASSET, FORM)
        rows = [kobo.add_submission(ASSET, answers(i)) for i in range(3)]
        s = kobo_settings(kobo, tmp_path)
        pull(s, "kobo", [FORM], policy=FAST)
        root = rows[1]["meta/rootUuid"]
        with open_store(s) as store:  # what an earlier, incomplete listing would have done
            assert store.write_page("kobo", FORM, [], gone=[root]).deleted == 1
        assert root not in _stored(s, FORM)
        report = pull(s, "kobo", [FORM], policy=FAST)
        assert (report.new, report.updated, report.deleted) == (0, 1, 0)
        assert set(_stored(s, FORM)) == kobo.live_root_uuids(ASSET)
        again = pull(s, "kobo", [FORM], policy=FAST)
        assert (again.new, again.updated, again.deleted) == (0, 0, 0)


def test_a_kobo_record_of_an_undeployed_version_is_stored_once_it_is_deployed(
    tmp_path: Path,
) -> None:
    with KoboStandIn() as kobo:
        kobo.add_asset(ASSET, FORM)
        kobo.add_submission(ASSET, answers(0))
        early = kobo.add_submission(ASSET, answers(1), version="vNextVersion0000000000")
        kobo.add_submission(ASSET, answers(2))  # last_id passes it
        s = kobo_settings(kobo, tmp_path)
        first = pull(s, "kobo", [FORM], policy=FAST)
        assert (first.new, first.quarantined) == (2, 1)
        assert pull(s, "kobo", [FORM], policy=FAST).new == 0

        deployed = kobo.assets[ASSET]["deployed_versions"]
        deployed["results"].insert(0, {"uid": "vNextVersion0000000000"})
        report = pull(s, "kobo", [FORM], policy=FAST)
        assert report.new == 1
        got = _stored(s, FORM)[early["meta/rootUuid"]]
        assert got.form_version == "vNextVersion0000000000"
        with open_store(s) as store:
            assert store.quarantined(FORM) == []
