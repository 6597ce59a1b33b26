"""Benchmark: `manyi pull` from a Central stand-in that answers at a real Central's speed,
against one unpaged GET of the same data in the same run (issue 13, item 2).

    .venv/bin/python benchmarks/pull.py [--n 20000] [--page 5000] [--repeats 3]
        [--rows-per-s 5000] [--page-s 0.19] [--round-trip-ms 5] [--photo-every 0]

Measured on real ODK Central (v2026.2, PostgreSQL 15, loopback), a form of 20,000
submissions with 1–3 repeat rows each: one unpaged ``$expand=*`` GET took 2.6 s with curl and
3.1 s with requests + json; ``manyi pull`` into an empty store took 3.9–4.5 s (1.46×). Each
``$top`` page costs Central about 0.19 s (it counts the rows) on top of its rows; it serves
3,900–7,700 rows/s; every request costs a round trip. The stand-in (its own process) is
given those costs (``CentralStandIn.costs``): a round trip per request, 0.19 s per paged
feed, rows paced at 5,000/s.

Rows, each the best of REPEATS runs, baseline and full alternating:
  unpaged GET   requests + json.loads of one ``$expand=*`` GET: the baseline
  paged GET     the same following ``@odata.nextLink`` with ``$top=PAGE``, for reference:
                what pulls paid before (one count per page)
  manyi full    pipelines.sync.pull into an empty store (the store's creation included)
  manyi incr    1,000 new submissions on top of a full store

Goals: full ≤ 1.1× the unpaged GET; incremental ≤ 0.5 s; memory bounded by one page: the
full pull's tracemalloc peak (this process, all threads, one more traced run) at most the
baseline's peak scaled to one page (× PAGE / N) and half again (a page stored while the next
arrives).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from pipelines._http import RetryPolicy
from pipelines.config import load_settings
from pipelines.demo.central_server import CentralStandIn, Costs
from pipelines.sync import pull
from tests.standins.central_server import seed_synthetic

FORM = "bench"
PASSWORD = "benchPassw0rd!"  # noqa: S105 - the stand-in's throwaway login
POLICY = RetryPolicy(read_timeout=600)
GOAL_FULL, GOAL_INCR_S, GOAL_PAGE_MEMORY = 1.1, 0.5, 1.5
NEW = 1000


def _serve(conn: Any, n: int, photo_every: int, costs: Costs) -> None:
    with CentralStandIn(password=PASSWORD) as server:
        seed_synthetic(server, FORM, n, photo_every=photo_every)
        server.costs = costs
        conn.send(server.url)
        added = 0
        while True:
            cmd = conn.recv()
            if cmd == "stop":
                return
            if cmd == "new":
                seed_synthetic(server, FORM, NEW, photo_every=photo_every, start=n + added)
                added += NEW
                conn.send("ok")


def _settings(url: str, data_dir: Path) -> Any:
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


def _session(url: str) -> requests.Session:
    s = requests.Session()
    login = {"email": "admin@example.com", "password": PASSWORD}
    s.headers["Authorization"] = (
        "Bearer " + s.post(f"{url}/v1/sessions", json=login).json()["token"]
    )
    return s


def unpaged_get(url: str) -> int:
    """The baseline: log in, one GET, the whole body parsed."""
    s = _session(url)
    return len(s.get(f"{url}/v1/projects/1/forms/{FORM}.svc/Submissions?$expand=*").json()["value"])


def paged_get(url: str, page: int) -> int:
    s = _session(url)
    nxt = f"{url}/v1/projects/1/forms/{FORM}.svc/Submissions?$top={page}&$expand=*"
    rows = 0
    while nxt:
        body = s.get(nxt).json()
        rows += len(body["value"])
        nxt = body.get("@odata.nextLink")
    return rows


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _peak(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _line(label: str, rows: int, times: list[float], peak: float | None, extra: str = "") -> None:
    best, median = min(times), statistics.median(times)
    memory = f"  peak {peak:7.1f} MiB" if peak is not None else " " * 19
    print(
        f"{label:<12} {rows:>7} rows  best {best:6.2f} s ({rows / best:>7,.0f} rows/s)  "
        f"median {median:6.2f} s{memory}{extra}",
        flush=True,
    )


def _goal(name: str, figure: str, met: bool) -> None:
    print(f"  {'MET    ' if met else 'NOT MET'}  {name}: {figure}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="submissions (default 20000)")
    ap.add_argument("--page", type=int, default=5000, help="rows a page (central_page_size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows-per-s", type=float, default=5000.0)
    ap.add_argument("--page-s", type=float, default=0.19)
    ap.add_argument("--round-trip-ms", type=float, default=5.0)
    ap.add_argument("--photo-every", type=int, default=0, help="a photo every Nth (0: none)")
    args = ap.parse_args()
    n, page = args.n, args.page
    costs = Costs(args.round_trip_ms / 1000, args.page_s, args.rows_per_s)

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, n, args.photo_every, costs), daemon=True)
    proc.start()
    url = parent.recv()
    print(
        f"N={n:,} submissions (1–3 repeat rows each), page {page:,}, stand-in at {url} with "
        f"{costs.round_trip_s * 1000:g} ms a request, {costs.page_s:g} s a paged feed, "
        f"{costs.rows_per_s:,.0f} rows/s; best of {args.repeats}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp())
    stores = iter(range(1000))

    def full() -> Any:
        return pull(_settings(url, work / f"s{next(stores)}"), "central", [FORM], page_size=page, policy=POLICY)  # fmt: skip

    base_times: list[float] = []
    full_times: list[float] = []
    report: Any = None
    for _ in range(args.repeats):
        seconds, rows = _timed(lambda: unpaged_get(url))
        base_times.append(seconds)
        seconds, report = _timed(full)
        full_times.append(seconds)
    base_peak = _peak(lambda: unpaged_get(url))
    full_peak = _peak(full)
    _line("unpaged GET", rows, base_times, base_peak)
    paged_times = [_timed(lambda: paged_get(url, page))[0]]
    _line("paged GET", rows, paged_times, None, f"  ($top={page}, for reference)")
    _line("manyi full", report.new, full_times, full_peak, f"  ({report.attachments} photos)")

    def incremental() -> Any:
        parent.send("new")
        parent.recv()
        return pull(_settings(url, work / "s0"), "central", [FORM], page_size=page, policy=POLICY)  # fmt: skip

    incr_times: list[float] = []
    for _ in range(args.repeats):
        seconds, inc = _timed(incremental)
        incr_times.append(seconds)
    _line("manyi incr", inc.new + inc.updated, incr_times, None, f"  (new {inc.new})")

    ratio = min(full_times) / min(base_times)
    page_share = base_peak * min(page, n) / n
    print(flush=True)
    _goal(
        f"full pull ≤ {GOAL_FULL}× one unpaged GET",
        f"{min(full_times):.2f} s / {min(base_times):.2f} s = {ratio:.2f}× (median "
        f"{statistics.median(full_times) / statistics.median(base_times):.2f}×; real Central "
        "measured 1.46× before)",
        ratio <= GOAL_FULL,
    )
    _goal(
        f"incremental pull of {NEW:,} new ≤ {GOAL_INCR_S} s",
        f"{min(incr_times):.2f} s (median {statistics.median(incr_times):.2f} s)",
        min(incr_times) <= GOAL_INCR_S,
    )
    _goal(
        "memory bounded by one page",
        f"peak {full_peak:.1f} MiB against the baseline's {base_peak:.1f} MiB for all {n:,} "
        f"rows, {page_share:.1f} MiB for a page of {min(page, n):,} (goal ≤ "
        f"{GOAL_PAGE_MEMORY * page_share:.1f} MiB)",
        full_peak <= GOAL_PAGE_MEMORY * page_share,
    )
    parent.send("stop")
    proc.join(10)


if __name__ == "__main__":
    main()
