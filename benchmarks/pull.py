"""Benchmark: pull N submissions (1–3 repeat rows each, 1 % with a photo) from the Central
stand-in over loopback, against two baselines on the same pages.

    .venv/bin/python benchmarks/pull.py [N] [PAGE_SIZE] [REPEATS]

    defaults: N=100000, PAGE_SIZE=5000 (settings.central_page_size), REPEATS=3

Rows:
  raw download   requests only, following @odata.nextLink: each page is fetched and parsed
                 just enough to find the next link (what any client must do); nothing else
  manyi full     pipelines.sync.pull into an empty store: records, store, every photo
  manyi incr     1,000 new and 100 edited submissions on top of a full store (target ≤ 1 s)
  pyodk+pandas   the obvious way: pyodk get_table(expand="*") in one unpaged call, then
                 pandas.json_normalize

The stand-in runs in its own process, so it does not share this process's GIL or heap; the
machine's other work makes single runs noisy, so raw and full run REPEATS times each,
alternating, and the best and the median are shown. Peak memory is tracemalloc's peak for
this process (all threads) in one more, traced, run of each step.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
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
from pipelines.demo.central_server import CentralStandIn
from pipelines.sync import pull
from tests.standins.central_server import seed_synthetic

FORM = "bench"
PASSWORD = "benchPassw0rd!"  # noqa: S105 - the stand-in's throwaway login
POLICY = RetryPolicy(read_timeout=600)


def _serve(conn, n: int) -> None:
    with CentralStandIn(password=PASSWORD) as server:
        seed_synthetic(server, FORM, n, photo_every=100)
        conn.send(server.url)
        changes = 0
        while True:
            cmd = conn.recv()
            if cmd == "stop":
                return
            if cmd == "change":  # 1,000 new and 100 edited submissions
                seed_synthetic(server, FORM, 1000, photo_every=100, start=n + changes * 1000)
                for i in range(100):
                    iid = f"uuid:00000000-0000-4000-8000-{(i * 7 + changes * 1000):012d}"
                    server.edit(FORM, iid, note=f"改{changes}")
                changes += 1
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
    from pyodk.client import Client

    # pyodk's own config file, as a user would write it (its public API only)
    folder = Path(tempfile.mkdtemp())
    config = folder / "pyodk_config.toml"
    config.write_text(
        f'[central]\nbase_url = "{url}"\nusername = "admin@example.com"\n'
        f'password = "{PASSWORD}"\ndefault_project_id = 1\n',
        encoding="utf-8",
    )
    client = Client(config_path=str(config), cache_path=str(folder / "pyodk_cache.toml"))
    table = client.submissions.get_table(form_id=FORM, expand="*")
    return len(pd.json_normalize(table["value"]))


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _peak(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def _line(label: str, rows: int, times: list[float], peak: float, extra: str = "") -> None:
    best, median = min(times), statistics.median(times)
    print(
        f"{label:<13} {rows:>8} rows  best {best:7.2f} s ({rows / best:>8,.0f} rows/s)  "
        f"median {median:7.2f} s  peak {peak:7.1f} MiB{extra}",
        flush=True,
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    page = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, n), daemon=True)
    proc.start()
    url = parent.recv()
    print(
        f"N={n:,} submissions (1–3 repeat rows, 1 % with a photo), $top={page}, "
        f"{repeats} runs each, stand-in at {url}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp())
    stores = iter(range(1000))

    def full():
        return pull(
            _settings(url, work / f"s{next(stores)}"),
            "central",
            [FORM],
            page_size=page,
            policy=POLICY,
        )

    raw_times, full_times, report = [], [], None
    for _ in range(repeats):
        seconds, rows = _timed(lambda: raw_download(url, page))
        raw_times.append(seconds)
        seconds, report = _timed(full)
        full_times.append(seconds)
    _line("raw download", rows, raw_times, _peak(lambda: raw_download(url, page)))
    _line(
        "manyi full",
        report.new,
        full_times,
        _peak(full),
        f"  ({report.attachments} photos)",
    )

    # incremental: on top of the first full store; then once more, traced, for memory
    def incremental():
        parent.send("change")
        parent.recv()
        return pull(_settings(url, work / "s0"), "central", [FORM], page_size=page, policy=POLICY)

    inc_seconds, inc = _timed(incremental)
    rows = inc.new + inc.updated
    _line(
        "manyi incr",
        rows,
        [inc_seconds],
        _peak(incremental),
        f"  (new {inc.new}, updated {inc.updated}, photos {inc.attachments})",
    )

    seconds, rows = _timed(lambda: pyodk_pandas(url))
    _line("pyodk+pandas", rows, [seconds], _peak(lambda: pyodk_pandas(url)), "  (one unpaged call)")

    ratio = min(full_times) / min(raw_times)
    print(
        f"\nfull / raw = {ratio:.2f} (best of {repeats}; target ≤ 1.2), "
        f"median {statistics.median(full_times) / statistics.median(raw_times):.2f}; "
        f"incremental {inc_seconds:.2f} s (target ≤ 1 s)",
        flush=True,
    )
    parent.send("stop")
    proc.join(10)


if __name__ == "__main__":
    main()
