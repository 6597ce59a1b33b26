"""Benchmark: the portal under load. 200 people use it at once (log in, then the index of
their scope, a map and the follow-up list, again and again) while 20 phones send submissions
to the same server.

    .venv/bin/python benchmarks/portal.py [ROUNDS]

    default ROUNDS=5 (each user's index → map → list rounds after logging in)

The server is the real one (`python -m pipelines.cli serve`, its own process, on loopback)
on the demo's store (the simulated plan year, pulled from the Central stand-in as `manyi demo`
does), with its background refresh on (short debounce, so it refreshes during the run). The
users are asyncio tasks here, each its own cookie jar and keep-alive connection: 1 town
manager, 9 liaison-group leaders and 190 village cadres spread over the 56 villages. Each
sender posts Collect-style sweeps (XML + a 100 KB photo). Latency is per request, first byte
sent to last byte read. "Nothing lost": every submission answered 201 is in the store after.

Baseline in the same run: the same users fetching one static file of the same server
(`/static/portal.css`) — the floor of this server and machine, with no session, scope or page.
Goal: p95 ≤ 300 ms for the index and the lists.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from geo.villages import load_villages
from pipelines.config import load_settings
from pipelines.demo.run import run_demo
from pipelines.server.auth import set_password
from pipelines.server.people import add_person, load_roles
from pipelines.store import open_store
from tests.pipelines.server._collect import USER_AGENT, multipart
from tests.pipelines.server._server import REPO, start_server
from tests.pipelines.server.test_openrosa import sweep_xml

USERS, SENDERS, PER_SENDER = 200, 20, 10
GOAL_P95_MS = 300.0
PHOTO_BYTES = 100 * 1024
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_MAP = re.compile(r'href="(/portal/s/[^"]+/maps/[^"/]+\.html)"')


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] if values else float("nan")  # fmt: skip


def _people(settings, users: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(login, password) of the portal users, and (token, village) of the senders."""
    roles, villages = load_roles(settings.roles), load_villages(settings.villages)
    codes = [v.code for v in villages]
    password = f"bench-{secrets.token_urlsafe(12)}"  # a throwaway store
    logins, senders = [], []
    store = open_store(settings)
    try:
        plan = [("bench.town", "town", {})]
        plan += [(f"bench.g{g}", "group", {"groups": [g]}) for g in range(1, 10)]
        plan += [(f"bench.c{n:03d}", "village", {"villages": [codes[n % len(codes)]]})
                 for n in range(users - len(plan))]  # fmt: skip
        for login, role, where in plan:
            add_person(store, login, login, role, roles=roles, known_villages=codes, **where)
            set_password(store, login, password)
            logins.append((login, password))
        for n in range(SENDERS):
            code = codes[n % len(codes)]
            issued = add_person(store, f"bench.s{n:02d}", "压测", "village", roles=roles,
                                villages=[code], known_villages=codes)  # fmt: skip
            senders.append((issued.token, code))
    finally:
        store.close()
    return logins, senders


async def _user(url: str, login: str, password: str, rounds: int, lat: dict[str, list[float]], errors: list[str]) -> None:  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=120, follow_redirects=False) as http:

        async def get(kind: str, path: str) -> httpx.Response:
            start = time.perf_counter()
            r = await http.get(path)
            lat[kind].append((time.perf_counter() - start) * 1000)
            if r.status_code != 200:
                errors.append(f"{kind} {path} {r.status_code}")
            return r

        form = await http.get("/login")
        csrf = _CSRF.search(form.text).group(1)
        start = time.perf_counter()
        r = await http.post("/login", data={"login": login, "password": password, "csrf": csrf, "next": "/portal/"})  # fmt: skip
        lat["login"].append((time.perf_counter() - start) * 1000)
        if r.status_code != 303:
            errors.append(f"login {login} {r.status_code}")
            return
        home = (await http.get("/portal/")).headers.get("location", "/portal/")
        maps = _MAP.findall((await get("maps list", f"{home}maps/")).text)
        for _ in range(rounds):
            await get("index", home)
            if maps:
                await get("map", maps[0])
            await get("follow-up list", f"{home}followups")
            await get("quality list", f"{home}quality")
            await get("static (baseline)", "/static/portal.css")


async def _sender(url: str, token: str, village: str, version: str, sent: list[str], errors: list[str]) -> None:  # fmt: skip
    photo = os.urandom(PHOTO_BYTES)
    headers = {"User-Agent": USER_AGENT, "X-OpenRosa-Version": "1.0"}
    async with httpx.AsyncClient(timeout=120, headers=headers) as http:
        for k in range(PER_SENDER):
            iid = f"uuid:{uuid.uuid4()}"
            body, ctype = multipart(
                sweep_xml(version, iid, village=village, photos=("p.jpg",)),
                {"p.jpg": photo[:-8] + k.to_bytes(8, "big")}, "bench", False,
            )  # fmt: skip
            r = await http.post(f"{url}/key/{token}/submission", content=body,
                                headers={"Content-Type": ctype})  # fmt: skip
            (sent if r.status_code == 201 else errors).append(iid if r.status_code == 201 else f"submission {r.status_code}")  # fmt: skip


async def _run(url: str, logins, senders, version: str, rounds: int):
    lat: dict[str, list[float]] = {k: [] for k in ("login", "maps list", "index", "map", "follow-up list", "quality list", "static (baseline)")}  # fmt: skip
    errors: list[str] = []
    sent: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(
        *(_user(url, login, pw, rounds, lat, errors) for login, pw in logins),
        *(_sender(url, token, code, version, sent, errors) for token, code in senders),
    )
    return time.perf_counter() - start, lat, errors, sent


def _wait_first_snapshot(url: str, login: str, password: str, timeout: float = 600) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        csrf = _CSRF.search(http.get("/login").text).group(1)
        http.post("/login", data={"login": login, "password": password, "csrf": csrf})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = http.get("/portal/", follow_redirects=True)
            if r.status_code == 200 and "正在生成" not in r.text:
                return
            time.sleep(1)
    raise SystemExit("the server made no snapshot in time")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="manyi-bench-portal-") as tmp:
        tmp = Path(tmp)
        base = load_settings(
            {"data_dir": tmp / "data", "build_dir": tmp / "build", "outputs_dir": tmp / "out",
             "villages": REPO / "geo" / "villages.csv"},
            env={},
        )  # fmt: skip
        print("setting up: the demo year (build, simulate, serve as Central, pull, report)…")
        demo = run_demo(base)
        settings = demo.settings
        logins, senders = _people(settings, USERS)
        version = _version(settings.build_dir)
        server = start_server(
            settings.data_dir, settings.build_dir,
            env={"MANYI_REFRESH_QUIET_S": "5", "MANYI_REFRESH_MAX_WAIT_S": "20",
                 "MANYI_REFRESH_POLL_S": "1"},
            timeout=120,
        )  # fmt: skip
        try:
            _wait_first_snapshot(server.url, *logins[0])
            wall, lat, errors, sent = asyncio.run(
                _run(server.url, logins, senders, version, rounds)
            )
        finally:
            server.stop()
        with sqlite3.connect(settings.data_dir / "manyi.sqlite") as db:
            stored = {r[0] for r in db.execute("SELECT instance_id FROM local_submissions")}
        lost = [i for i in sent if i not in stored]
    print(f"manyi portal: {USERS} users × {rounds} rounds while {SENDERS} phones send "
          f"{SENDERS * PER_SENDER} submissions ({wall:.1f} s)")  # fmt: skip
    print(f"{'page':<20} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for kind, values in lat.items():
        print(f"{kind:<20} {len(values):>8} {_pct(values, 50):>8.1f} {_pct(values, 95):>8.1f}")
    print(f"submissions: {len(sent)} answered 201, {len(lost)} lost; errors: {len(errors)}"
          + (f" (first: {errors[0]})" if errors else ""))  # fmt: skip
    worst = max(_pct(lat[k], 95) for k in ("index", "follow-up list", "quality list"))
    met = worst <= GOAL_P95_MS and not lost and not errors
    print(f"goal: p95 ≤ {GOAL_P95_MS:.0f} ms for the index and lists: worst p95 {worst:.0f} ms, "
          f"nothing lost -> {'MET' if met else 'NOT MET'}")  # fmt: skip


def _version(build_dir: Path) -> str:
    text = (Path(build_dir) / "sanitation_sweep.xml").read_text(encoding="utf-8")
    return re.search(r'id="sanitation_sweep"[^>]*version="([^"]+)"', text).group(1)


if __name__ == "__main__":
    main()
