"""Benchmark: pull N submissions (1–3 repeat rows each, 1 % with a photo) from the Central
stand-in over loopback, against two baselines on the same pages.

    .venv/bin/python benchmarks/pull.py [N] [PAGE_SIZE]

Rows:
  raw download   requests only, following @odata.nextLink; no parsing, no storing
  manyi full     pipelines.sync.pull into an empty store (incl. attachments)
  manyi incr     1,000 new + 100 edited on top
  pyodk+pandas   pyodk get_table(expand="*") in one unpaged call + pandas.json_normalize

The stand-in runs in its own process so it does not share this process's GIL or heap.
Peak memory is tracemalloc's peak of this process in a second, traced run of each step.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd
import requests

from pipelines._http import RetryPolicy
from pipelines.config import load_settings
from pipelines.sync import pull
from tests.standins.central_server import CentralStandIn, seed_synthetic

FORM = "bench"
PASSWORD = "benchPassw0rd!"  # noqa: S105 - the stand-in's throwaway login


def _serve(conn, n: int) -> None:
    with CentralStandIn(password=PASSWORD) as server:
        seed_synthetic(server, FORM, n, photo_every=100)
        conn.send(server.url)
        while True:
            cmd = conn.recv()
            if cmd == "stop":
                return
            if cmd == "change":
                seed_synthetic(server, FORM, 1000, photo_every=100, start=n)
                for i in range(0, 100):
                    server.edit(FORM, f"uuid:00000000-0000-4000-8000-{i * 7:012d}", note="改")
                conn.send("ok")


def _settings(url: str, data_dir: Path):
    return load_settings(
        {
            "data_dir": data_dir,
            "central_url": url,
            "central_user": "admin@example.com",
            "central_password": PASSWORD,
            "central_project": 1,
        },
        env={},
    )


def raw_download(url: str, page: int) -> int:
    s = requests.Session()
    token = s.post(
        f"{url}/v1/sessions", json={"email": "admin@example.com", "password": PASSWORD}
    ).json()["token"]
    s.headers["Authorization"] = f"Bearer {token}"
    nxt = f"{url}/v1/projects/1/forms/{FORM}.svc/Submissions?$top={page}&$expand=*"
    rows = 0
    while nxt:
        body = s.get(nxt).json()  # json only to find the nextLink, as any client must
        rows += len(body["value"])
        nxt = body.get("@odata.nextLink")
    return rows


def pyodk_pandas(url: str) -> int:
    from pyodk._utils import config as cfg
    from pyodk.client import Client

    client = Client(
        config=cfg.Config(central=cfg.CentralConfig(url, "admin@example.com", PASSWORD, 1)),
        cache_path=Path(tempfile.mkdtemp()) / "pyodk_cache.toml",
    )
    table = client.submissions.get_table(form_id=FORM, expand="*")
    frame = pd.json_normalize(table["value"])
    return len(frame)


def measure(label: str, fn, rows_of) -> None:
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    tracemalloc.start()
    fn_traced = fn.__dict__.get("traced", fn)
    fn_traced()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows = rows_of(out)
    print(
        f"{label:<14} {rows:>8} rows {seconds:8.2f} s {rows / seconds:>10,.0f} rows/s "
        f"peak {peak / 2**20:8.1f} MiB",
        flush=True,
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    page = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, n), daemon=True)
    proc.start()
    url = parent.recv()
    policy = RetryPolicy(read_timeout=600)
    print(f"N={n} submissions, page size {page}, stand-in at {url}")
    work = Path(tempfile.mkdtemp())

    measure("raw download", lambda: raw_download(url, page), lambda r: r)

    stores = iter(range(100))

    def full():
        return pull(
            _settings(url, work / f"s{next(stores)}"),
            "central",
            [FORM],
            page_size=page,
            policy=policy,
        )

    t = time.perf_counter()
    report = pull(_settings(url, work / "main"), "central", [FORM], page_size=page, policy=policy)
    seconds = time.perf_counter() - t
    tracemalloc.start()
    full()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"{'manyi full':<14} {report.new:>8} rows {seconds:8.2f} s "
        f"{report.new / seconds:>10,.0f} rows/s peak {peak / 2**20:8.1f} MiB "
        f"({report.attachments} photos)",
        flush=True,
    )

    parent.send("change")
    parent.recv()
    t = time.perf_counter()
    inc = pull(_settings(url, work / "main"), "central", [FORM], page_size=page, policy=policy)
    seconds = time.perf_counter() - t
    print(
        f"{'manyi incr':<14} {inc.new + inc.updated:>8} rows {seconds:8.2f} s "
        f"(new {inc.new}, updated {inc.updated}, photos {inc.attachments})",
        flush=True,
    )

    measure("pyodk+pandas", lambda: pyodk_pandas(url), lambda r: r)
    parent.send("stop")
    proc.join(10)


if __name__ == "__main__":
    main()
