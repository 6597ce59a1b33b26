"""Pulling from the KoboToolbox stand-in into the same canonical records as Central."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines._http import RetryPolicy
from pipelines.cli import main
from pipelines.config import load_settings
from pipelines.errors import SourceError
from pipelines.store import open_store
from pipelines.sync import pull
from tests.helpers import KOBO_FIXTURES, REPO
from tests.pipelines.sources.test_central import KillAt, Portal, one_line_error, run_killed
from tests.standins.faults import Fault
from tests.standins.kobo_server import TOKEN, KoboStandIn

FIXTURES = KOBO_FIXTURES
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
        Fault("repeat_page", path_contains="/data/", nth=6),
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


# ---- several forms, nested structure, reliability --------------------------------------
def test_several_forms_and_a_repeat_inside_a_group(kobo, tmp_path: Path) -> None:
    kobo.add_asset("aGroupedForm0000000000", "grouped")
    kobo.add_submission(ASSET, answers(1))
    row = kobo.add_submission(
        "aGroupedForm0000000000",
        {
            "details/site": "东村",
            "details/items": [
                {"details/items/name": "柴堆", "details/items/photo": "g1.jpg"},
                {"details/items/name": "粪堆"},
            ],
        },
        files={"g1.jpg": b"\xff\xd8 jpeg \xff\xd9"},
    )
    s = settings_for(kobo, tmp_path)
    report = pull(s, "kobo", ["sanitation_sweep", "grouped"], policy=FAST)
    assert [(f.form_id, f.new, f.attachments) for f in report.forms] == [
        ("sanitation_sweep", 1, 0),
        ("grouped", 1, 1),
    ]
    with open_store(s) as store:
        (rec,) = store.records("grouped")
        assert store.cursor("kobo", "grouped") == {"last_id": row["_id"]}
    # the same canonical shape as Central's (tests/pipelines/sources/test_central.py GROUPED)
    assert rec.data == {
        "details": {
            "site": "东村",
            "items": [{"name": "柴堆", "photo": "g1.jpg"}, {"name": "粪堆"}],
        },
        "meta": {"instanceID": rec.instance_id},
    }


def test_kobo_gives_up_after_a_bounded_time_with_a_clear_error(kobo, tmp_path: Path) -> None:
    kobo.add_submission(ASSET, answers(1))
    kobo.faults.append(Fault("status", path_contains="/data/", times=10_000, status=502))
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        pull(
            settings_for(kobo, tmp_path),
            "kobo",
            ["sanitation_sweep"],
            policy=RetryPolicy(max_seconds=2, base_delay=0.1),
        )
    assert time.monotonic() - started < 10
    text = str(err.value)
    assert "KoboToolbox did not answer" in text and "HTTP 502" in text and kobo.url in text
    assert TOKEN not in text


KILL_SCRIPT = """
from pipelines.config import load_settings
from pipelines.sync import pull
pull(load_settings(), "kobo", ["kill_form"], page_size=4)
print("finished", flush=True)
"""


def test_sigkill_mid_pull_then_rerun_gives_exactly_the_servers_submissions(
    tmp_path: Path,
) -> None:
    with KoboStandIn() as server:
        server.add_asset("aKillForm000000000000", "kill_form")
        rows = [
            server.add_submission(
                "aKillForm000000000000",
                answers(i),
                files={f"k{i}.jpg": b"jpg%d" % i} if i % 3 == 0 else None,
            )
            for i in range(40)
        ]
        env = dict(
            os.environ,
            MANYI_DATA_DIR=str(tmp_path / "data"),
            MANYI_KOBO_URL=server.url,
            MANYI_KOBO_TOKEN=TOKEN,
            PYTHONPATH=str(REPO),
        )
        hook = KillAt()
        server.before = hook
        # Killed while asking for a page (each run stores the pages before it), while
        # fetching photos, at the very start, and after edits made between runs.
        plan = [
            ("/data/?", 3),
            ("/attachments/", 2),
            ("/data/?", 1),
            ("/data/?", 4),
            ("/attachments/", 1),
            ("/data/?", 3),
        ]
        kills = 0
        for n, at in enumerate(plan):
            kills += run_killed(KILL_SCRIPT, env, tmp_path, hook, at)
            if n == 2:
                # edits, hard deletions and new submissions between killed runs
                server.edit("aKillForm000000000000", rows[1]["_id"], **{"details/note": "改"})
                server.delete("aKillForm000000000000", rows[2]["_id"])
                for i in range(40, 45):
                    server.add_submission("aKillForm000000000000", answers(i))
        assert kills == len(plan)
        server.before = None
        rerun = subprocess.run(
            [sys.executable, "-c", KILL_SCRIPT],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "finished" in rerun.stdout
        s = load_settings({"data_dir": tmp_path / "data"}, env={})
        with open_store(s) as store:
            live = {r.instance_id: r for r in store.records("kill_form")}
            total = store.db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT instance_id) FROM submissions"
            ).fetchone()
            stored = {
                (a.instance_id, a.name)
                for a in store.attachments("kill_form")
                if a.status == "stored"
            }
        assert set(live) == server.live_root_uuids("aKillForm000000000000")
        assert total == (45, 45)  # 44 live + 1 deleted kept as flagged, none duplicated
        assert live[rows[1]["meta/rootUuid"]].data["details"]["note"] == "改"
        expected = {
            (r["meta/rootUuid"], a["media_file_basename"])
            for r in server.data["aKillForm000000000000"]
            for a in r["_attachments"]
        }
        assert stored == expected


@pytest.mark.parametrize("mode", ["html", "redirect", "json"])
def test_a_page_that_is_not_kobo_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, mode: str
) -> None:
    with Portal(mode) as portal:
        monkeypatch.setenv("MANYI_KOBO_URL", portal.url)
        monkeypatch.setenv("MANYI_KOBO_TOKEN", TOKEN)
        monkeypatch.setenv("MANYI_DATA_DIR", str(tmp_path / "data"))
        assert main(["pull", "--source", "kobo"]) == 1
    line = one_line_error(capsys)
    assert line.startswith(f"manyi: KoboToolbox at {portal.url}/api/v2/assets/?format=json")
    if mode == "json":
        assert "answered HTTP 200 with JSON manyi does not expect (no 'results')" in line
    else:
        assert "answered HTTP 200 with HTML, not JSON" in line and "login page or proxy" in line
    assert TOKEN not in line
