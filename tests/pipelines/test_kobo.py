"""Pulling from the KoboToolbox stand-in into the same canonical records as Central."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipelines._http import RetryPolicy
from pipelines.config import load_settings
from pipelines.errors import SourceError
from pipelines.store import open_store
from pipelines.sync import pull
from tests.standins.central_server import Fault
from tests.standins.kobo_server import TOKEN, KoboStandIn

FIXTURES = Path("/work/shared/fixtures/kobo")
ASSET = "ahTnpQwdqrrp4fRKqUxj2p"
FAST = RetryPolicy(max_seconds=20, base_delay=0.05, max_delay=0.5, read_timeout=2)


@pytest.fixture
def kobo():
    with KoboStandIn() as server:
        server.add_asset(ASSET, "sanitation_sweep", "v7sPQZCGQoW8JKYL5Kq79m")
        yield server


def settings_for(server: KoboStandIn, tmp_path: Path, token: str = TOKEN):
    return load_settings(
        {"data_dir": tmp_path / "data", "kobo_url": server.url, "kobo_token": token}, env={}
    )


def answers(i: int) -> dict:
    return {
        "village": f"3704811152{i:02d}",
        "location": "35.17 117.26 50.0 5.0",
        "group_people": [
            {
                "group_people/Name": "John",
                "group_people/group_items": [{"group_people/group_items/Item_name": "Notebook"}],
            },
            {"group_people/Name": "Leszek"},
        ],
        "details/note": f"第{i}条",
    }


def records(settings) -> dict:
    with open_store(settings) as store:
        return {r.instance_id: r for r in store.records("sanitation_sweep")}


def test_flat_kobo_keys_become_the_canonical_nested_record(kobo, tmp_path: Path) -> None:
    row = json.loads((FIXTURES / "10_data_nested_repeat_edited.json").read_text())
    recorded = row["response"]["body"]["results"][0]
    kobo.data[ASSET].append(recorded)
    s = settings_for(kobo, tmp_path)
    report = pull(s, "kobo", ["sanitation_sweep"], policy=FAST)
    assert report.new == 1
    (rec,) = records(s).values()
    assert rec.instance_id == "uuid:85397438-558e-4b24-94d7-901550744352"  # the rootUuid
    assert rec.submitted_at == "2020-04-08T11:12:20.000Z"
    people = rec.data["group_people"]
    assert people[0]["Name"] == "John"
    assert people[0]["group_items"] == [
        {"Item_name": "Notebook"},
        {"Item_name": "Pen"},
        {"Item_name": "Shoe"},
    ]
    assert rec.data["meta"]["deprecatedID"].startswith("uuid:")
    assert not any(k.startswith("_") for k in rec.data)


def test_pages_edits_deletions_and_attachments(kobo, tmp_path: Path) -> None:
    rows = [
        kobo.add_submission(ASSET, answers(i), files={f"p{i}.jpg": b"jpg%d" % i} if i % 2 else None)
        for i in range(7)
    ]
    s = settings_for(kobo, tmp_path)
    report = pull(s, "kobo", ["sanitation_sweep"], page_size=3, policy=FAST)
    assert (report.new, report.attachments) == (7, 3)
    got = records(s)["uuid:" + rows[0]["_uuid"]]
    assert (
        got.data["details"]["note"] == "第0条" and got.data["location"] == "35.17 117.26 50.0 5.0"
    )
    assert got.data["group_people"][1] == {"Name": "Leszek"}

    kobo.edit(ASSET, rows[1]["_id"], **{"details/note": "改过"})
    kobo.delete(ASSET, rows[2]["_id"])
    kobo.add_submission(ASSET, answers(9))
    again = pull(s, "kobo", ["sanitation_sweep"], page_size=3, policy=FAST)
    assert (again.new, again.updated, again.deleted) == (1, 1, 1)
    now = records(s)
    assert set(now) == kobo.live_root_uuids(ASSET)
    assert now[rows[1]["meta/rootUuid"]].data["details"]["note"] == "改过"
    last = pull(s, "kobo", ["sanitation_sweep"], page_size=3, policy=FAST)
    assert (last.new, last.updated, last.deleted) == (0, 0, 0)


def test_kobo_faults_retries_duplicates_and_quarantine(kobo, tmp_path: Path) -> None:
    for i in range(5):
        kobo.add_submission(ASSET, answers(i))
    kobo.add_submission(ASSET, {"village": "x"}, version="vUNKNOWN")
    kobo.faults += [
        Fault("status", path_contains="/data/", nth=2, status=500),
        Fault("status", path_contains="/data/", nth=4, status=429, retry_after="1"),
        Fault("reset", path_contains="/data/", nth=6),
        Fault("repeat_page", path_contains="/data/", nth=8),
    ]
    s = settings_for(kobo, tmp_path)
    report = pull(s, "kobo", ["sanitation_sweep"], page_size=2, policy=FAST)
    assert all(f.fired for f in kobo.faults)
    assert report.new == 5 and report.quarantined == 1
    with open_store(s) as store:
        assert store.count("sanitation_sweep") == 5
        (q,) = store.quarantined()
        assert "vUNKNOWN" in q.reason


def test_bad_token_is_one_clear_error_without_the_token(
    kobo, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "0000000000000000000000000000000000000bad"
    with pytest.raises(SourceError) as err:
        pull(settings_for(kobo, tmp_path, bad), "kobo", ["sanitation_sweep"], policy=FAST)
    assert "HTTP 401" in str(err.value) and "Invalid token" in str(err.value)
    kobo.add_submission(ASSET, answers(1))
    pull(settings_for(kobo, tmp_path), "kobo", ["sanitation_sweep"], policy=FAST)
    out, errout = capfd.readouterr()
    for text in (str(err.value), caplog.text, out, errout):
        assert bad not in text and TOKEN not in text
