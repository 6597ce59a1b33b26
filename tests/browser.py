"""A real headless Chromium for tests: find it, screenshot a local page with the network
cut off, decode the PNG. Debian's `chromium` and `fonts-noto-cjk` are installed by .ci/run;
locally a missing browser skips, in CI (CI=true) it fails."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

WIDTH, HEIGHT = 800, 600


def find_chromium() -> str:
    for name in (os.environ.get("MANYI_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    message = "Chromium not found: install Debian's `chromium` and `fonts-noto-cjk`"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (required in CI)")
    pytest.skip(message)


def screenshot(browser: str, page: Path, tmp_path: Path) -> np.ndarray:
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
    return read_png(shot.read_bytes())


def read_png(data: bytes) -> np.ndarray:
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


@contextlib.contextmanager
def loopback_phone(browser, width: int = 360, height: int = 740) -> Iterator:
    """A fresh phone browser page (its own IndexedDB) at ``width``×``height``. A request that
    would leave the loopback server is aborted and fails the test; so does a page error."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    requests: list[str] = []
    errors: list[str] = []
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    context.route(
        re.compile(r"^(?!http://127\.0\.0\.1:\d+/).*"),
        lambda route: route.continue_() if is_loopback(route.request.url) else route.abort(),
    )
    yield page
    context.close()
    outside = [u for u in requests if not is_loopback(u)]
    assert not outside, f"requests left the server: {outside[:5]}"
    assert not errors, errors


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1"
