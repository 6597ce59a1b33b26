"""Pulling from the ODK Central stand-in: content, increments and the reliability cases."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines._http import RetryPolicy
from pipelines.config import load_settings
from pipelines.errors import SourceError
from pipelines.store import open_store
from pipelines.sync import pull
from tests.helpers import REPO
from tests.standins.central_server import CentralStandIn, Fault, seed_synthetic

PASSWORD = "topSecretPassw0rd!"  # noqa: S105 - the fixtures' throwaway password
FORM = "sanitation_sweep"
A = "uuid:3dc0d0ad-4d90-48d4-b67e-ab048822f54e"
B = "uuid:a2f6d64c-1c81-47d5-9a01-777768a5afce"
E = "uuid:a67ad343-8f54-435b-bfe7-51ab359fb61c"
FAST = RetryPolicy(max_seconds=20, base_delay=0.05, max_delay=0.5, read_timeout=2)


@pytest.fixture
def central():
    with CentralStandIn(password=PASSWORD) as server:
        server.load_recorded()
        yield server


def settings_for(server: CentralStandIn, tmp_path: Path, password: str = PASSWORD):
    return load_settings(
        {
            "data_dir": tmp_path / "data",
            "central_url": server.url,
            "central_user": server.email,
            "central_password": password,
            "central_project": 1,
        },
        env={},
    )


def stored(settings) -> dict[str, object]:
    with open_store(settings) as store:
        return {r.instance_id: r for r in store.records(FORM)}


def test_full_pull_matches_the_recorded_server(central, tmp_path: Path) -> None:
    s = settings_for(central, tmp_path)
    report = pull(s, "central", [FORM], page_size=2, policy=FAST)
    got = stored(s)
    assert report.new == 6 and report.quarantined == 1 and report.attachments == 3
    assert set(got) == central.live_ids(FORM) - {"5cb9ca62-185f-4313-9cf1-0c747b325a1b"}
    a = got[A]
    assert a.data["location"] == "35.17 117.26 50 5"  # GeoJSON turned back into XForm text
    assert [p["pile_type"] for p in a.data["piles"]] == ["firewood", "manure"]
    assert "__id" not in a.data["piles"][0] and "__system" not in a.data
    assert got[B].review_state == "hasIssues"
    assert got[E].form_version == "2023010101"
    with open_store(s) as store:
        (q,) = store.quarantined(FORM)
        assert "instanceID" in q.reason
        status = {a.name: a.status for a in store.attachments(FORM)}
    # B's photo was never uploaded: remembered as missing, to be fetched once it exists
    assert status == {
        "1764374400001.jpg": "stored",
        "1764374400002.jpg": "missing",
        "1764374400004.jpg": "stored",
        "1764374400006.jpg": "stored",
    }


def test_incremental_pull_sees_new_edited_and_deleted(central, tmp_path: Path) -> None:
    s = settings_for(central, tmp_path)
    pull(s, "central", [FORM], policy=FAST)
    central.edit(FORM, A, note="已清理")
    central.delete(FORM, E)
    seed_synthetic(central, FORM, 3, photo_every=0, version="2023020101")
    central.requests.clear()
    report = pull(s, "central", [FORM], policy=FAST)
    assert (report.new, report.updated, report.deleted) == (3, 1, 1)
    got = stored(s)
    assert got[A].data["note"] == "已清理" and got[A].review_state == "edited"
    assert E not in got
    with open_store(s) as store:
        assert any(r.instance_id == E and r.deleted for r in store.records(FORM, True))
    feed = [p for m, p in central.requests if ".svc/Submissions" in p]
    assert "updatedAt" in feed[0]  # the incremental query, not a full re-download
    again = pull(s, "central", [FORM], policy=FAST)
    assert (again.new, again.updated, again.deleted) == (0, 0, 0)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", nth=2, times=2, status=503),
        Fault("status", nth=2, status=502),
        Fault("reset", nth=2),
        Fault("delay", nth=2, delay=3.0),  # longer than the 2 s read timeout
    ],
    ids=["503-twice", "502", "connection-reset", "timeout"],
)
def test_retries_on_5xx_resets_and_timeouts(central, tmp_path: Path, fault: Fault) -> None:
    central.faults.append(fault)
    s = settings_for(central, tmp_path)
    report = pull(s, "central", [FORM], page_size=2, policy=FAST)
    assert fault.fired >= 1
    assert report.new == 6 and len(stored(s)) == 6


def test_429_waits_for_retry_after(central, tmp_path: Path) -> None:
    central.faults.append(Fault("status", nth=1, status=429, retry_after="2"))
    s = settings_for(central, tmp_path)
    started = time.monotonic()
    report = pull(s, "central", [FORM], page_size=5, policy=FAST)
    assert time.monotonic() - started >= 2.0  # backoff alone would have been ~0.05 s
    assert report.new == 6


def test_gives_up_after_a_bounded_time_with_a_clear_error(central, tmp_path: Path) -> None:
    central.faults.append(Fault("status", nth=1, times=10_000, status=503))
    s = settings_for(central, tmp_path)
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        pull(s, "central", [FORM], policy=RetryPolicy(max_seconds=2, base_delay=0.1))
    assert time.monotonic() - started < 10
    assert "did not answer" in str(err.value) and "HTTP 503" in str(err.value)
    assert central.url in str(err.value)


def test_page_sent_twice_gives_no_duplicate(central, tmp_path: Path) -> None:
    central.faults.append(Fault("repeat_page", nth=3))
    s = settings_for(central, tmp_path)
    report = pull(s, "central", [FORM], page_size=2, policy=FAST)
    assert report.new == 6 and report.forms[0].pages == 6  # one extra page, nothing new from it
    with open_store(s) as store:
        assert store.count(FORM) == 6
        rows = store.db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
    assert rows == 6


def test_resent_after_edit_is_an_update_not_a_duplicate(central, tmp_path: Path) -> None:
    s = settings_for(central, tmp_path)
    pull(s, "central", [FORM], policy=FAST)
    central.edit(FORM, A, note="第二版")
    central.edit(FORM, A, note="第三版")
    report = pull(s, "central", [FORM], policy=FAST)
    assert (report.new, report.updated) == (0, 1)
    assert stored(s)[A].data["note"] == "第三版" and len(stored(s)) == 6


def test_malformed_records_are_quarantined_and_the_rest_pulled(central, tmp_path: Path) -> None:
    central.add_submission(
        FORM,
        "uuid:bad-version",
        {"village": "370481115200", "meta": {"instanceID": "uuid:x"}},
        version="1999",
    )
    s = settings_for(central, tmp_path)
    report = pull(s, "central", [FORM], page_size=3, policy=FAST)
    assert report.quarantined == 2 and report.new == 6
    with open_store(s) as store:
        reasons = {q.key: q.reason for q in store.quarantined(FORM)}
    assert "unknown form version '1999'" in reasons["uuid:bad-version"]


def test_attachment_names_that_escape_are_stored_inside_data_dir(central, tmp_path: Path) -> None:
    central.add_submission(
        FORM,
        "uuid:evil",
        {"village": "370481115200", "meta": {"instanceID": "uuid:evil"}},
        attachments={"../../escaped.jpg": b"one", "/tmp/absolute.jpg": b"two"},  # noqa: S108
    )
    s = settings_for(central, tmp_path / "inner")
    before = set(Path("/tmp").iterdir())  # noqa: S108
    report = pull(s, "central", [FORM], policy=FAST)
    assert report.attachments == 5
    with open_store(s) as store:
        files = {a.name: a.local_path for a in store.attachments(FORM, "uuid:evil")}
    data = (tmp_path / "inner" / "data").resolve()
    assert files["../../escaped.jpg"].read_bytes() == b"one"
    assert files["/tmp/absolute.jpg"].read_bytes() == b"two"  # noqa: S108
    assert all(p.resolve().is_relative_to(data) for p in files.values())
    assert not list(tmp_path.rglob("escaped.jpg")) and not list(tmp_path.rglob("absolute.jpg"))
    assert not any(p.name == "absolute.jpg" for p in set(Path("/tmp").iterdir()) - before)  # noqa: S108


def test_secrets_never_reach_logs_output_or_errors(
    central, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    central.faults.append(Fault("status", nth=1, status=503))
    s = settings_for(central, tmp_path)
    pull(s, "central", [FORM], page_size=2, policy=FAST)
    wrong = "WrongPassw0rd!-do-not-print"
    with pytest.raises(SourceError) as err:
        pull(settings_for(central, tmp_path, wrong), "central", [FORM], policy=FAST)
    assert "refused the login" in str(err.value)
    tokens = set(central.tokens)
    assert tokens
    out, errout = capfd.readouterr()
    texts = [caplog.text, out, errout, str(err.value), repr(err.value), repr(s)]
    with open_store(s) as store:
        texts.append(repr(list(store.db.execute("SELECT * FROM sync_state"))))
    for text in texts:
        for secret in (PASSWORD, wrong, *tokens):
            assert secret not in text


KILL_SCRIPT = """
import sys
from pipelines.config import load_settings
from pipelines.sync import pull
pull(load_settings(), "central", ["kill_form"], page_size=4)
print("finished", flush=True)
"""


def test_sigkill_mid_pull_then_rerun_gives_exactly_the_servers_submissions(
    tmp_path: Path,
) -> None:
    with CentralStandIn(password=PASSWORD) as server:
        seed_synthetic(server, "kill_form", 60, photo_every=3)
        server.page_delay = 0.05
        env = dict(
            os.environ,
            MANYI_DATA_DIR=str(tmp_path / "data"),
            MANYI_CENTRAL_URL=server.url,
            MANYI_CENTRAL_USER=server.email,
            MANYI_CENTRAL_PASSWORD=PASSWORD,
            MANYI_CENTRAL_PROJECT="1",
            PYTHONPATH=str(REPO),
        )
        finished = False
        kills = 0
        for delay in (0.3, 0.5, 0.7, 0.9, 1.2, 1.5, 2.0):
            proc = subprocess.Popen(
                [sys.executable, "-c", KILL_SCRIPT],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            out, _err = proc.communicate(timeout=60)
            finished = finished or "finished" in out
            if delay == 0.9:
                # edits and deletions between killed runs must land too
                server.edit("kill_form", "uuid:00000000-0000-4000-8000-000000000001", note="改")
                server.delete("kill_form", "uuid:00000000-0000-4000-8000-000000000002")
                seed_synthetic(server, "kill_form", 5, photo_every=3, start=60)
        assert kills >= 3
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
            attachments = store.attachments("kill_form")
        assert set(live) == server.live_ids("kill_form")
        assert total == (65, 65)  # 64 live + 1 deleted kept as flagged, none duplicated
        assert live["uuid:00000000-0000-4000-8000-000000000001"].data["note"] == "改"
        expected = {
            (s.instance_id, n)
            for s in server.forms["kill_form"].subs
            if s.deleted is None
            for n in s.attachments
        }
        assert {(a.instance_id, a.name) for a in attachments if a.status == "stored"} >= expected
        for a in attachments:
            assert a.local_path is None or a.local_path.is_file()
