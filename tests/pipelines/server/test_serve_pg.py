"""`manyi serve` on a PostgreSQL store (``MANYI_STORE_URL``, a real cluster the suite starts,
tests/pg.py): phones' submissions land in PostgreSQL once each; two pulls and the server
writing into one store at once lose nothing and duplicate nothing; ``--workers 2`` serves
OpenRosa and the portal from two processes, only one of which refreshes the portal; and
``--workers 2`` on the SQLite file is refused."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from pipelines.config import load_settings
from pipelines.server.auth import read_audit, set_password
from pipelines.server.people import add_person
from pipelines.store import Store
from pipelines.sync import pull
from tests.pg import pg_cluster_fixture, pg_url_fixture, start_serve  # noqa: F401 - fixtures
from tests.pipelines.server._collect import Collect, multipart
from tests.pipelines.server._server import REPO, Server, settings_env
from tests.pipelines.server.test_openrosa import JPEG, ROLES, V_CADRE, sweep_xml
from tests.pipelines.sources.test_central import FAST, PASSWORD
from tests.standins.central_server import CentralStandIn, seed_synthetic

FORM = "pg_pulled"
MANAGER = ("zhou.town", "周镇长", "镇里-管理-2026-冬")
FAST_REFRESH = {
    "MANYI_REFRESH_QUIET_S": "0.3",
    "MANYI_REFRESH_MAX_WAIT_S": "2",
    "MANYI_REFRESH_POLL_S": "0.2",
}


def _version(built_forms) -> str:
    return next(b.version for b in built_forms.built if b.form_id == "sanitation_sweep")


def _people(data: Path, url: str) -> str:
    """A village cadre's collection token and a town manager with a portal password, in
    the PostgreSQL store."""
    with Store(data / "manyi.sqlite", data, url=url) as store:
        token = add_person(store, "yan.cadre", "闫干部", "village", roles=ROLES, villages=[V_CADRE]).token  # fmt: skip
        add_person(store, MANAGER[0], MANAGER[1], "town", roles=ROLES)
        set_password(store, MANAGER[0], MANAGER[2])
    return token


def _send(server: Server, token: str, version: str, phones: int, each: int) -> dict[str, bytes]:
    """``phones`` phones at once, ``each`` submissions with a photo; the first of each
    phone sent twice (a lost answer). Returns iid → photo; every answer must be 201."""
    sent: dict[str, bytes] = {}
    lock = threading.Lock()

    def phone(n: int) -> list[int]:
        statuses = []
        with Collect(f"{server.url}/key/{token}", device=f"collect:pg{n:013d}") as c:
            for k in range(each):
                iid, photo = f"uuid:{uuid.uuid4()}", JPEG + (n * 1000 + k).to_bytes(4, "big")
                body = multipart(sweep_xml(version, iid, photos=("p.jpg",)), {"p.jpg": photo}, "t", False)  # fmt: skip
                statuses.append(c.post(*body).status)
                if k == 0:
                    statuses.append(c.post(*body).status)
                with lock:
                    sent[iid] = photo
        return statuses

    with ThreadPoolExecutor(phones) as pool:
        statuses = [s for got in pool.map(phone, range(phones)) for s in got]
    assert statuses == [201] * (phones * (each + 1))
    return sent


def _check_local(url: str, data: Path, sent: dict[str, bytes]) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT instance_id) FROM submissions WHERE source = 'local'"
        ).fetchone()
        assert rows == (len(sent), len(sent))  # nothing lost, nothing twice
        local = dict(conn.execute("SELECT instance_id, login FROM local_submissions"))
        assert set(local) == set(sent) and set(local.values()) == {"yan.cadre"}
        photos = conn.execute("SELECT instance_id, sha256, local_path FROM attachments").fetchall()
    assert {iid: sha for iid, sha, _ in photos} == {
        iid: hashlib.sha256(p).hexdigest() for iid, p in sent.items()
    }
    for _iid, sha, rel in photos:
        assert hashlib.sha256((data / rel).read_bytes()).hexdigest() == sha


def test_serve_receives_into_postgresql(built_forms, tmp_path: Path, pg_url: str) -> None:
    token = _people(tmp_path, pg_url)
    server = start_serve(tmp_path, built_forms.out_dir, {"MANYI_STORE_URL": pg_url})
    try:
        sent = _send(server, token, _version(built_forms), phones=8, each=3)
        with httpx.Client(base_url=server.url, timeout=30) as c:  # a portal login, in PostgreSQL
            form = c.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
            r = c.post("/login", data={"login": MANAGER[0], "password": MANAGER[2], "csrf": csrf})
            assert r.status_code == 303
    finally:
        server.stop()
    _check_local(pg_url, tmp_path, sent)
    assert not (tmp_path / "manyi.sqlite").exists()
    password = pg_url.split(":")[2].split("@")[0]
    assert password not in server.log()
    with Store(tmp_path / "manyi.sqlite", tmp_path, url=pg_url) as store:
        assert [e.event for e in read_audit(store, login=MANAGER[0], limit=1)] == ["login"]


def test_two_pulls_and_the_server_at_once_lose_nothing(
    built_forms, tmp_path: Path, pg_url: str
) -> None:
    token = _people(tmp_path, pg_url)
    server = start_serve(tmp_path, built_forms.out_dir, {"MANYI_STORE_URL": pg_url})
    try:
        with CentralStandIn(password=PASSWORD) as central:
            ids = seed_synthetic(central, FORM, 800, photo_every=0)
            s = load_settings(
                {
                    "data_dir": tmp_path,
                    "central_url": central.url,
                    "central_user": central.email,
                    "central_password": PASSWORD,
                    "central_project": 1,
                },
                env={"MANYI_STORE_URL": pg_url},
            )
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    pull(s, "central", [FORM], page_size=25, policy=FAST)
                except BaseException as e:
                    errors.append(e)

            pulls = [threading.Thread(target=run) for _ in range(2)]
            for t in pulls:
                t.start()
            sent = _send(server, token, _version(built_forms), phones=6, each=5)
            for t in pulls:
                t.join()
    finally:
        server.stop()
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        counts = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT instance_id) FROM submissions WHERE form_id = %s",
            (FORM,),
        ).fetchone()
        got = {r[0] for r in conn.execute("SELECT instance_id FROM submissions WHERE form_id = %s", (FORM,))}  # fmt: skip
    assert counts == (800, 800) and got == set(ids)
    _check_local(pg_url, tmp_path, sent)


def test_two_workers_serve_and_one_refreshes(built_forms, tmp_path: Path, pg_url: str) -> None:
    token = _people(tmp_path, pg_url)
    env = {"MANYI_STORE_URL": pg_url, **FAST_REFRESH}
    server = start_serve(tmp_path, built_forms.out_dir, env, "--workers", "2")
    try:
        sent = _send(server, token, _version(built_forms), phones=6, each=3)
        # the portal, from whichever worker answers: each shows the leader's snapshot
        with httpx.Client(base_url=server.url, timeout=60) as c:
            form = c.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
            r = c.post("/login", data={"login": MANAGER[0], "password": MANAGER[2], "csrf": csrf})
            assert r.status_code == 303
            deadline = time.monotonic() + 120
            ready = 0
            while ready < 20 and time.monotonic() < deadline:
                page = c.get("/portal/", follow_redirects=True)
                assert page.status_code == 200 and page.url.path != "/login", page.url
                ready = ready + 1 if "正在生成" not in page.text else 0
                time.sleep(0.05)
            assert ready == 20, "the workers never all showed a snapshot"
            log = server.log()
            assert len(set(re.findall(r"Started server process \[(\d+)\]", log))) == 2
            (leader,) = re.findall(r"worker \(pid (\d+)\) refreshes the portal", log)
            # the leader dies (its session, and the lock, go with it): another takes over
            os.kill(int(leader), signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                leaders = re.findall(r"worker \(pid (\d+)\) refreshes", server.log())
                if len(leaders) > 1:
                    break
                time.sleep(0.2)
            assert len(leaders) == 2 and leaders[1] != leader
            page = c.get("/portal/", follow_redirects=True)
            assert page.status_code == 200 and page.url.path != "/login"
    finally:
        server.stop()
    portal = tmp_path / "outputs" / "_portal"
    assert (portal / "shared.json").is_file()
    _check_local(pg_url, tmp_path, sent)


def test_workers_on_the_sqlite_file_are_refused(built_forms, tmp_path: Path) -> None:
    env = settings_env(tmp_path, built_forms.out_dir)
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--workers", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--workers 2 needs a PostgreSQL store" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


@pytest.mark.parametrize("workers", ["0"])
def test_zero_workers_are_refused(built_forms, tmp_path: Path, workers: str) -> None:
    env = settings_env(tmp_path, built_forms.out_dir)
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--workers", workers],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "1 or more" in run.stderr
