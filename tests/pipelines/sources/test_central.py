"""Pulling from the ODK Central stand-in: content, increments and the reliability cases."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipelines._http import RetryPolicy
from pipelines.cli import main
from pipelines.config import load_settings
from pipelines.errors import ConfigError, SourceError
from pipelines.store import open_store
from pipelines.sync import _default_forms, pull
from tests.helpers import CENTRAL_FIXTURES, REPO
from tests.standins.central_server import CentralStandIn, seed_synthetic
from tests.standins.faults import Fault, Faults

PASSWORD = "topSecretPassw0rd!"
FORM = "sanitation_sweep"
A = "uuid:3dc0d0ad-4d90-48d4-b67e-ab048822f54e"
B = "uuid:a2f6d64c-1c81-47d5-9a01-777768a5afce"
E = "uuid:a67ad343-8f54-435b-bfe7-51ab359fb61c"
FAST = RetryPolicy(max_seconds=20, base_delay=0.05, max_delay=0.5, read_timeout=2)


@pytest.fixture
def central():
    with CentralStandIn(password=PASSWORD) as server:
        server.load_recorded(CENTRAL_FIXTURES)
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
    central.tick(10 * 60_000)  # the pull runs ten minutes after the last submission
    first = pull(s, "central", [FORM], policy=FAST)
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
    feed = [p for m, p in central.requests if ".svc/Submissions" in p and "__id" not in p]
    assert "deletedAt" in feed[0]  # the deletions since the last pull, asked for first
    assert "$expand=*" in feed[1] and "updatedAt" in feed[1]  # incremental, not everything
    # only what changed came down: 3 new, A edited, E deleted, the newest change of the
    # first pull again (B's review: where this one starts, ge not gt), and the quarantined
    # record, asked for again by its id
    assert (first.forms[0].rows, report.forms[0].rows) == (7, 3 + 1 + 1 + 1 + 1)
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


class KillAt:
    """SIGKILLs the pulling process at a fixed point of what the stand-in is asked: before it
    answers the ``nth`` request whose path holds ``marker``, or, with ``after``, once that
    many bytes of its answer are out (in the middle of a streamed feed). The kill lands at
    the same point of the server's answers on any machine, however slow."""

    def __init__(self, server: Faults | None = None) -> None:
        self.server = server  # needed for ``after`` only
        self.proc: subprocess.Popen[str] | None = None
        self.marker, self.nth, self.seen, self.killed = "", 0, 0, False

    def arm(self, proc: subprocess.Popen[str], marker: str, nth: int, after: int = 0) -> None:
        self.proc, self.marker, self.nth, self.seen, self.killed = proc, marker, nth, 0, False
        if after and self.server is not None:
            self.nth = 0  # the fault below counts the requests
            self.server.faults.append(
                Fault("call", path_contains=marker, nth=nth, after=after, action=self.kill)
            )

    def kill(self) -> None:
        if self.proc is not None and not self.killed:
            self.killed = True
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=60)  # dead before the server says more

    def __call__(self, method: str, path: str) -> None:
        if self.proc is None or self.killed or not self.nth or self.marker not in path:
            return
        self.seen += 1
        if self.seen == self.nth:
            self.kill()


def run_killed(script: str, env: dict[str, str], cwd: Path, hook: KillAt, at: tuple[Any, ...]):
    """Run a pull in a child process and kill it at ``at`` = (path marker, nth request[,
    bytes of its answer])."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hook.arm(proc, *at)
    _out, err = proc.communicate(timeout=120)
    hook.proc = None
    if hook.server is not None:
        hook.server.faults.clear()
    assert hook.killed or proc.returncode == 0, err
    return hook.killed


def test_sigkill_mid_pull_then_rerun_gives_exactly_the_servers_submissions(
    tmp_path: Path,
) -> None:
    with CentralStandIn(password=PASSWORD) as server:
        seed_synthetic(server, "kill_form", 60, photo_every=3)
        env = dict(
            os.environ,
            MANYI_DATA_DIR=str(tmp_path / "data"),
            MANYI_CENTRAL_URL=server.url,
            MANYI_CENTRAL_USER=server.email,
            MANYI_CENTRAL_PASSWORD=PASSWORD,
            MANYI_CENTRAL_PROJECT="1",
            PYTHONPATH=str(REPO),
        )
        hook = KillAt(server)
        server.before = hook
        # The feed goes out a row at a time, so a kill in its middle finds pages stored
        # before it (a row is about 700 bytes).
        server.costs.rows_per_s = 300
        # Killed in the middle of the streamed feed (the page being read is lost, those
        # before it stored), while fetching photos, at the round a resumed pull goes once
        # more, at the very start (the deletions asked for beside the form's versions), in
        # the middle of an incremental feed, and before the feed answers; with edits,
        # deletions and new submissions made between runs.
        plan = [
            ("$expand", 1, 20_000),
            ("/attachments/", 2),
            ("deletedAt", 1),
            ("deletedAt", 1),
            ("$expand", 1, 2_500),
            ("/attachments/", 1),
            ("$expand", 1),
        ]
        kills = 0
        for n, at in enumerate(plan):
            kills += run_killed(KILL_SCRIPT, env, tmp_path, hook, at)
            if n == 2:
                # edits, deletions and new submissions between killed runs must land too
                server.edit("kill_form", "uuid:00000000-0000-4000-8000-000000000001", note="改")
                server.delete("kill_form", "uuid:00000000-0000-4000-8000-000000000002")
                seed_synthetic(server, "kill_form", 5, photo_every=3, start=60)
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


# ---- several forms, nested structure ---------------------------------------------------
GROUPED_XFORM = """<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
 xmlns:jr="http://openrosa.org/javarosa">
<h:head><h:title>分组巡查</h:title><model><instance>
<data id="grouped" version="1"><details><site/>
<items jr:template=""><name/><photo/></items><items><name/><photo/></items>
</details><meta><instanceID/></meta></data></instance>
<bind nodeset="/data/details/site" type="string"/>
<bind nodeset="/data/details/items/name" type="string"/>
<bind nodeset="/data/details/items/photo" type="binary"/>
<bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
</model></h:head><h:body><group ref="/data/details"><input ref="/data/details/site"/>
<repeat nodeset="/data/details/items"><input ref="/data/details/items/name"/>
<upload ref="/data/details/items/photo" mediatype="image/*"/></repeat></group></h:body></h:html>
""".encode()
GROUPED = {
    "details": {
        "site": "东村",
        "items": [{"name": "柴堆", "photo": "g1.jpg"}, {"name": "粪堆", "photo": None}],
    },
    "meta": {"instanceID": "uuid:g1"},
}


def test_several_forms_in_one_pull_each_with_its_own_cursor(central, tmp_path: Path) -> None:
    seed_synthetic(central, "second_form", 5, photo_every=2)
    central.tick(10 * 60_000)  # each form's mark is then its own latest submission
    s = settings_for(central, tmp_path)
    report = pull(s, "central", None, policy=FAST)  # no --form: every published form
    by_form = {f.form_id: f for f in report.forms}
    assert list(by_form) == [FORM, "second_form"]
    assert (by_form[FORM].new, by_form["second_form"].new) == (6, 5)
    assert (by_form[FORM].attachments, by_form["second_form"].attachments) == (3, 3)
    with open_store(s) as store:
        assert (store.count(FORM), store.count("second_form")) == (6, 5)
        assert store.cursor("central", FORM)["hwm"] != store.cursor("central", "second_form")["hwm"]
    seed_synthetic(central, "second_form", 2, photo_every=0, start=5)
    again = pull(s, "central", [FORM, "second_form", "no_such_form"], policy=FAST)
    assert [(f.form_id, f.new) for f in again.forms] == [
        (FORM, 0),
        ("second_form", 2),
        ("no_such_form", 0),
    ]
    # one form failing does not stop the others, and it says why
    (error,) = again.errors
    assert error.startswith("no_such_form:") and "HTTP 404" in error


def test_a_repeat_inside_a_group(tmp_path: Path) -> None:
    with CentralStandIn(password=PASSWORD) as server:
        server.add_form("grouped", "1", GROUPED_XFORM)
        server.add_submission(
            "grouped", "uuid:g1", GROUPED, attachments={"g1.jpg": b"\xff\xd8 jpeg \xff\xd9"}
        )
        s = settings_for(server, tmp_path)
        report = pull(s, "central", ["grouped"], policy=FAST)
        assert (report.new, report.attachments) == (1, 1)
        with open_store(s) as store:
            (rec,) = store.records("grouped")
            (photo,) = store.attachments("grouped")
        assert rec.data == GROUPED
        assert photo.name == "g1.jpg" and photo.local_path.read_bytes() == b"\xff\xd8 jpeg \xff\xd9"
        # the record named its own file: fetched by name, the submission's files never listed
        assert not any(p.endswith("/attachments") for _m, p in server.requests)


# ---- something else answers: a captive portal, a proxy, the wrong URL -----------------------
PORTAL_PAGE = "<!DOCTYPE html><html><body><h1>请登录无线网络</h1><form>…</form></body></html>"


class Portal:
    """A real HTTP server that is not the API: ``html`` answers every request 200 with a
    login page, ``redirect`` sends it there with a 302 first (a captive portal), ``json``
    answers JSON of another shape (the wrong URL)."""

    def __init__(self, mode: str):
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if portal.mode == "redirect" and not self.path.startswith("/portal"):
                    self.send_response(302)
                    self.send_header("Location", "/portal/login")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if portal.mode == "json":
                    ctype, body = "application/json", json.dumps({"status": "ok"}).encode()
                else:
                    ctype, body = "text/html; charset=utf-8", PORTAL_PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.mode = mode
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Portal:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("manyi: ") and "check the path and its permissions" not in line
    return line


@pytest.mark.parametrize("mode", ["html", "redirect", "json"])
def test_a_page_that_is_not_central_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, mode: str
) -> None:
    with Portal(mode) as portal:
        for key, value in {
            "URL": portal.url,
            "USER": "admin@example.com",
            "PASSWORD": PASSWORD,
            "PROJECT": "1",
        }.items():
            monkeypatch.setenv(f"MANYI_CENTRAL_{key}", value)
        monkeypatch.setenv("MANYI_DATA_DIR", str(tmp_path / "data"))
        assert main(["pull", "--source", "central"]) == 1
    line = one_line_error(capsys)
    assert line.startswith(f"manyi: ODK Central at {portal.url}/v1/sessions")
    if mode == "json":
        assert "answered HTTP 200 with JSON manyi does not expect (no 'token')" in line
    else:
        assert "answered HTTP 200 with HTML, not JSON" in line and "login page or proxy" in line
    if mode == "redirect":
        assert f"(redirected to {portal.url}/portal/login)" in line
    assert PASSWORD not in line


def test_a_corrupt_build_manifest_is_a_config_error(tmp_path: Path) -> None:
    manifest = tmp_path / "build" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text('{"forms": [{"form_id": "a"}, ', encoding="utf-8")  # cut short
    s = load_settings({"data_dir": tmp_path / "data", "build_dir": manifest.parent}, env={})
    with pytest.raises(ConfigError) as err:
        _default_forms(s, Unlisted())  # a source that cannot list its forms
    assert str(manifest) in str(err.value) and "manyi forms build" in str(err.value)
    manifest.write_text('{"forms": [{"form_id": "a"}, {"form_id": "b"}]}', encoding="utf-8")
    assert _default_forms(s, Unlisted()) == ["a", "b"]


class Unlisted:
    """A source that cannot tell which forms it has (``form_ids`` is None)."""

    def form_ids(self) -> None:
        return None
