"""Benchmark: `manyi serve` ingesting OpenRosa submissions, each with a 100 KB photo, at 1, 10
and 50 concurrent senders, beside real ODK Central's ingest on this kind of machine.

    .venv/bin/python benchmarks/serve.py [PER_SENDER]

    default PER_SENDER=40 (submissions each sender sends at every level; at least 200 in all)

The server is the real one (`python -m pipelines.cli serve` in its own process, on loopback,
with a fresh store); the senders are asyncio tasks in this process, each its own keep-alive
connection, each POST a Collect-style multipart (``xml_submission_file`` + one 100 KB photo).
A POST counts when it answers 201, that is when the XML and the photo are fsync'd and
committed. Latency is per POST, from the first byte sent to the last byte of the answer.

Then the same on a PostgreSQL store (``store_url``) with ``manyi serve --workers 2``, beside
SQLite with one process (issue 13): a throwaway cluster started as the tests start theirs
(tests/pg.py, initdb/pg_ctl, PostgreSQL's durable defaults), skipped with a line when
PostgreSQL is not installed.

Baseline: real ODK Central (v2026.2, Docker, on a machine like this one) ingested 73–106
submissions/s over its REST API, in two runs with up to 6 concurrent senders.
Goal: at least 3× Central's rate (≥ 318/s, 3 × its best run) and p95 ≤ 200 ms at 50 senders.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from forms.build import build_forms
from pipelines.server.people import add_person, load_roles
from pipelines.store import Store
from tests.pg import pg_bindir, start_cluster, start_serve
from tests.pipelines.server._collect import USER_AGENT, multipart
from tests.pipelines.server._server import REPO
from tests.pipelines.server.test_openrosa import sweep_xml

CENTRAL = (73.0, 106.0)  # submissions/s, two runs, up to 6 concurrent senders
GOAL_FACTOR, GOAL_P95_MS = 3.0, 200.0
LEVELS = (1, 10, 50)
PHOTO_BYTES = 100 * 1024


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def _level(url: str, version: str, senders: int, per_sender: int) -> tuple[float, list[float], int]:  # fmt: skip
    latencies: list[float] = []
    failures = 0
    headers = {"User-Agent": USER_AGENT, "X-OpenRosa-Version": "1.0"}

    async def sender(n: int) -> None:
        nonlocal failures
        photo = os.urandom(PHOTO_BYTES)
        async with httpx.AsyncClient(timeout=60, headers=headers) as http:
            for k in range(per_sender):
                iid = f"uuid:{uuid.uuid4()}"
                body, ctype = multipart(
                    sweep_xml(version, iid, photos=("p.jpg",)),
                    {"p.jpg": photo[:-8] + k.to_bytes(8, "big")}, "bench", False,
                )  # fmt: skip
                start = time.perf_counter()
                r = await http.post(
                    f"{url}/submission", content=body, params={"deviceID": f"collect:bench{n:011d}"},
                    headers={"Content-Type": ctype},
                )  # fmt: skip
                latencies.append((time.perf_counter() - start) * 1000)
                failures += r.status_code != 201

    start = time.perf_counter()
    await asyncio.gather(*(sender(n) for n in range(senders)))
    return time.perf_counter() - start, latencies, failures


def _run(data: Path, build: Path, version: str, per_sender: int, env: dict[str, str], *args: str) -> list[tuple]:  # fmt: skip
    """Every level against one fresh server; a row per level."""
    data.mkdir()
    url = env.get("MANYI_STORE_URL")
    with Store(data / "manyi.sqlite", data, url=url) as store:
        token = add_person(store, "bench", "压测", "village", roles=load_roles(), villages=["370481115201"]).token  # fmt: skip
    server = start_serve(data, build, env, *args)
    rows = []
    try:
        link = f"{server.url}/key/{token}"
        asyncio.run(_level(link, version, 2, 5))  # warm up: imports, first pages
        for senders in LEVELS:
            each = max(per_sender, -(-200 // senders))
            wall, lat, failed = asyncio.run(_level(link, version, senders, each))
            rows.append((senders, len(lat), len(lat) / wall, _pct(lat, 50), _pct(lat, 95), failed))
    finally:
        server.stop()
    return rows


def _table(title: str, rows: list[tuple]) -> None:
    print(title)
    print(f"{'senders':>7} {'POSTs':>6} {'subm/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'failed':>6}")
    for senders, n, rate, p50, p95, failed in rows:
        print(f"{senders:>7} {n:>6} {rate:>8.1f} {p50:>7.1f} {p95:>7.1f} {failed:>6}")


def main() -> None:
    per_sender = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with tempfile.TemporaryDirectory(prefix="manyi-bench-serve-") as tmp:
        build = Path(tmp) / "build"
        report = build_forms(REPO / "forms", build, REPO / "geo" / "villages.csv", only=["sanitation_sweep"], validate=False)  # fmt: skip
        version = report.built[0].version
        rows = _run(Path(tmp) / "sqlite", build, version, per_sender, {})
        pg_rows = None
        if pg_bindir() is not None:
            cluster = start_cluster(Path(tmp) / "pg", durable=True)
            try:
                url = cluster.create_database("bench")
                pg_rows = _run(Path(tmp) / "pgdata", build, version, per_sender, {"MANYI_STORE_URL": url}, "--workers", "2")  # fmt: skip
            finally:
                cluster.stop()
    print(
        f"manyi serve: OpenRosa POSTs, each with a {PHOTO_BYTES // 1024} KB photo, answered 201 once durable"
    )
    _table("SQLite store, 1 process:", rows)
    if pg_rows is None:
        print("PostgreSQL: not installed (no initdb/pg_ctl): the 2-worker run was skipped")
    else:
        _table("PostgreSQL store, --workers 2:", pg_rows)
        lite, pg = rows[-1], pg_rows[-1]
        print(
            f"at 50 senders: PostgreSQL ×2 workers {pg[2]:.0f}/s, p95 {pg[4]:.0f} ms; "
            f"SQLite ×1 {lite[2]:.0f}/s, p95 {lite[4]:.0f} ms "
            f"({pg[2] / lite[2]:.2f}× the rate)"
        )
    print(
        f"ODK Central (REST API, 2 runs, ≤ 6 senders): {CENTRAL[0]:.0f}–{CENTRAL[1]:.0f} submissions/s"
    )
    target = GOAL_FACTOR * CENTRAL[1]
    for name, got in (("SQLite", rows), ("PostgreSQL ×2", pg_rows)):
        if not got:
            continue
        _, _, rate50, _, p95_50, _ = got[-1]
        best = max(r[2] for r in got)
        met = best >= target and p95_50 <= GOAL_P95_MS and not any(r[5] for r in got)
        print(
            f"{name} goal: ≥ {target:.0f}/s (3× Central's best run) and p95 ≤ {GOAL_P95_MS:.0f} ms at 50 senders: "
            f"best {best:.0f}/s ({best / CENTRAL[1]:.1f}× Central), {rate50:.0f}/s and p95 {p95_50:.0f} ms "
            f"at 50 -> {'MET' if met else 'NOT MET'}"
        )


if __name__ == "__main__":
    main()
