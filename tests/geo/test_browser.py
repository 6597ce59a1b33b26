"""A real headless Chromium opens the overview map with the network cut off and draws villages.

Debian's `chromium` and `fonts-noto-cjk` are installed by .ci/run. Locally a missing browser
skips; in CI (CI=true) it fails, so the check can never silently disappear.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geo.illustrative import illustrative_boundaries
from geo.maps import draw_maps
from pipelines.config import Settings

WIDTH, HEIGHT = 800, 600


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in (os.environ.get("MANYI_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    message = "Chromium not found: install Debian's `chromium` and `fonts-noto-cjk`"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (required in CI)")
    pytest.skip(message)


def _screenshot(browser: str, page: Path, tmp_path: Path) -> np.ndarray:
    shot = tmp_path / f"{page.stem}.png"
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Any request to the network goes to a closed port: the map must not need one.
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=5000",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), f"no screenshot; chromium said: {done.stderr[-2000:]}"
    return _read_png(shot.read_bytes())


def _read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes) to an H×W×3 array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) % 256
        elif kind in (1, 3, 4):
            cur, up = line.tolist(), prev.tolist()
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up[i]) // 2
                else:
                    corner = up[i - bpp] if i >= bpp else 0
                    p = left + up[i] - corner
                    pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
                    pred = left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner
                cur[i] = (cur[i] + pred) % 256
            cur = np.array(cur, dtype=np.int32)
        else:
            raise AssertionError(f"bad PNG filter {kind}")
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)[:, :, :3]


def _inner(image: np.ndarray) -> np.ndarray:
    """The map area away from the zoom buttons, layer control, legend and notice."""
    return image[90 : HEIGHT - 120, 70 : WIDTH - 70]


def test_overview_map_renders_offline_with_the_villages(chromium, tmp_path):
    codes = illustrative_boundaries().villages["code"]
    progress = pd.DataFrame(
        {
            "village_code": codes,
            "indicator_id": "sweep_q2",
            "domain": "人居环境",
            "value": np.arange(len(codes)) % 5,
            "target": 4,
        }
    )
    result = draw_maps(Settings(), tmp_path / "out", progress, None)
    image = _inner(_screenshot(chromium, result.maps["overview"], tmp_path))
    painted = np.any(image < 245, axis=2)  # the page background is white
    assert painted.mean() > 0.3, f"only {painted.mean():.0%} of the map area is drawn"
    # Several completion classes show up as distinct fill colours.
    colours = {tuple(c) for c in (image[painted] // 32).reshape(-1, 3)}
    assert len(colours) >= 4, colours

    # The same measure on a page without a map finds nothing: the check above can fail.
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body style='background:#fff'></body></html>")
    assert np.any(_inner(_screenshot(chromium, blank, tmp_path)) < 245, axis=2).mean() < 0.01
