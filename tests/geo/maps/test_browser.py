"""A real headless Chromium opens the overview map with the network cut off and draws villages.

Debian's `chromium` and `fonts-noto-cjk` are installed by .ci/run. Locally a missing browser
skips; in CI (CI=true) it fails, so the check can never silently disappear.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geo.illustrative import illustrative_boundaries
from geo.maps import draw_maps
from pipelines.config import Settings
from tests.browser import HEIGHT, WIDTH, find_chromium, screenshot


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


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
    image = _inner(screenshot(chromium, result.maps["overview"], tmp_path))
    painted = np.any(image < 245, axis=2)  # the page background is white
    assert painted.mean() > 0.3, f"only {painted.mean():.0%} of the map area is drawn"
    # Several completion classes show up as distinct fill colours.
    colours = {tuple(c) for c in (image[painted] // 32).reshape(-1, 3)}
    assert len(colours) >= 4, colours

    # The same measure on a page without a map finds nothing: the check above can fail.
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body style='background:#fff'></body></html>")
    assert np.any(_inner(screenshot(chromium, blank, tmp_path)) < 245, axis=2).mean() < 0.01
