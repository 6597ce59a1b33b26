"""Benchmark: 1,000,000 GPS points joined to the 56 villages, the coverage frame and the maps.

    .venv/bin/python benchmarks/geo_coverage.py [--points 1000000] [--sample 20000]

Compares, in the same run, geo.coverage.locate_points (one vectorised geopandas.sjoin) with the
obvious per-point loop (`point.within(village)` over the villages, measured on a sample and
scaled up), and the clustered findings layer of geo.maps with one folium Marker per point for
10,000 points. Target on the 2-core reference machine: the join in <= 5 s.
Memory: tracemalloc peak (Python and numpy allocations) per step, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import folium
import numpy as np
import pandas as pd
import shapely

from geo.coverage import coverage_frame, locate_points
from geo.illustrative import EXTENT, illustrative_boundaries
from geo.maps import draw_maps
from pipelines.analysis.plan import load_plan
from pipelines.config import Settings


def _measure(label: str, func):
    tracemalloc.start()
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<58} {seconds:8.2f} s   peak {peak / 2**20:8.1f} MiB")
    return result, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="points for the slow loop")
    parser.add_argument("--markers", type=int, default=10_000)
    args = parser.parse_args(argv)

    villages = illustrative_boundaries().villages
    rng = np.random.default_rng(2023)
    west, south, east, north = EXTENT
    n = args.points
    points = pd.DataFrame(
        {
            "lon": rng.uniform(west, east, n),
            "lat": rng.uniform(south, north, n),
            "village_code": rng.choice(villages["code"].to_numpy(), n),
            "accuracy": rng.exponential(15.0, n),
        }
    )
    print(f"{n:,} points, {len(villages)} villages, python {sys.version.split()[0]}")

    located, join_s = _measure(
        f"locate_points (sjoin) on {n:,} points", lambda: locate_points(points, villages)
    )
    flags = located[["outside", "mismatch", "inaccurate"]].sum()
    print(
        f"   flagged: outside {flags['outside']:,}, mismatch {flags['mismatch']:,}, "
        f"inaccurate {flags['inaccurate']:,}"
    )

    sample = points.iloc[: args.sample]

    def per_point_loop():
        geoms = list(villages.geometry)
        codes = list(villages["code"])
        found = []
        for x, y in zip(sample["lon"], sample["lat"], strict=True):
            point = shapely.Point(x, y)
            found.append(
                next((c for c, g in zip(codes, geoms, strict=True) if point.within(g)), None)
            )
        return found

    found, loop_s = _measure(f"per-point within loop on {len(sample):,} points", per_point_loop)
    agree = np.mean(
        [
            a == b
            for a, b in zip(
                found, located["gps_village_code"].iloc[: len(sample)].tolist(), strict=True
            )
            if a is not None or not pd.isna(b)
        ]
    )
    print(
        f"   loop scaled to {n:,} points: {loop_s * n / len(sample):8.1f} s "
        f"(sjoin is {loop_s * n / len(sample) / join_s:,.0f}x faster); agreement {agree:.2%}"
    )

    counts = located.groupby("gps_village_code").size()
    values = pd.DataFrame(
        {
            "village_code": counts.index.astype(str),
            "value": counts.to_numpy(),
            "target": counts.mean(),
        }
    )
    _measure("coverage_frame for the 56 villages", lambda: coverage_frame(villages, values))

    findings = points.iloc[: args.markers].assign(
        kind="三堆两垛",
        status="待整改",
        date="2023-05-02",
        rectify_by="2023-05-10",
        note=[f"第{i}号：路边柴草垛未清理" for i in range(args.markers)],
        photo="photos/p.jpg",
    )
    progress = values.assign(indicator_id="points", domain="人居环境")
    with tempfile.TemporaryDirectory() as tmp:
        result, _ = _measure(
            f"draw_maps: overview + 6 domain maps, {args.markers:,} clustered findings",
            lambda: draw_maps(
                Settings(), Path(tmp), progress, findings, segments=load_plan().segments
            ),
        )
        size = result.maps["overview"].stat().st_size
        print(f"   overview.html {size / 2**20:.2f} MiB (offline, Leaflet inlined)")

        def marker_per_point():
            fmap = folium.Map(location=[35.175, 117.26], zoom_start=13, tiles=None)
            for row in findings.itertuples(index=False):
                folium.Marker([row.lat, row.lon], popup=folium.Popup(row.note)).add_to(fmap)
            path = Path(tmp) / "markers.html"
            fmap.save(path)
            return path

        path, _ = _measure(
            f"baseline: one folium Marker+Popup per point, {args.markers:,}", marker_per_point
        )
        print(f"   markers.html {path.stat().st_size / 2**20:.2f} MiB (and it needs CDNs)")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {rss:,.0f} MiB")
    verdict = "meets" if join_s <= 5 else "MISSES"
    print(f"join {join_s:.2f} s {verdict} the <= 5 s target")


if __name__ == "__main__":
    main()
