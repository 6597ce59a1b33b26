"""The Prefect flows, run for real under ``prefect_test_harness``: the demo source end to end
(forms, the pull over HTTP from the Central stand-in, outputs), and several towns on Dask."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path

import pytest
from openpyxl import load_workbook
from prefect.testing.utilities import prefect_test_harness

import flows
from geo.villages import load_villages
from pipelines.analysis.plan import load_plan
from tests.helpers import REPO


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=180):
        yield


def _town(tmp_path: Path, name: str, **extra: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    lines = [
        f'town = "{name}"', 'source = "demo"', 'data_dir = "data"', 'outputs_dir = "outputs"',
        'build_dir = "build"', *(f"{k} = {v}" for k, v in extra.items()),
    ]  # fmt: skip
    (folder / "manyi.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "manyi.toml"


@pytest.fixture(scope="module")
def town(harness, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp_path = tmp_path_factory.mktemp("flows")
    config = _town(tmp_path, "龙阳镇")
    return tmp_path, flows.town_cycle(str(config), as_of=date(2023, 10, 15))


def test_town_cycle_on_the_demo_source(town) -> None:
    tmp_path, result = town

    synced = result["sync"]
    assert len(synced["forms"]) == 14 and synced["new"] > 15_000 and synced["quarantined"] == 0
    assert synced["attachments"] > 0  # photos came over HTTP too
    process = result["process"]
    assert process["submissions"] == synced["new"]
    index = Path(process["index"])
    assert index == tmp_path / "龙阳镇" / "outputs" / "index.html"
    linked = index.read_text(encoding="utf-8")
    for path in [*process["files"].values(), *process["maps"].values()]:
        assert Path(path).exists()
        assert Path(path).relative_to(index.parent).as_posix() in linked

    sheet = load_workbook(process["files"]["dispatch_internal_xlsx"], read_only=True)["指标进度"]
    listed = {row[1] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert listed == {indicator.label for indicator in load_plan().indicators}
    overview = Path(process["maps"]["overview"]).read_text(encoding="utf-8")
    for village in load_villages():  # tooltips carry the name, JSON-escaped in the map's data
        assert f'"code": "{village.code}"' in overview
        assert json.dumps(village.name)[1:-1] in overview
    assert not (tmp_path / "龙阳镇" / "data" / "manyi.sqlite").exists(), (
        "the demo keeps to data/demo"
    )
    assert (tmp_path / "龙阳镇" / "data" / "demo" / "manyi.sqlite").exists()


def test_county_cycle_runs_towns_on_a_dask_cluster(harness, tmp_path: Path) -> None:
    configs = [str(_town(tmp_path, f"town{i}", plan_year=str(2021 + i))) for i in range(3)]
    results = flows.county_cycle(configs, as_of=None, n_workers=2)
    assert [r["town"] for r in results] == ["town0", "town1", "town2"]
    for i, r in enumerate(results):
        assert r["submissions"] > 0
        index = Path(r["index"])
        assert index.parent == tmp_path / f"town{i}" / "outputs"
        assert f"{2021 + i}-10" in index.read_text(encoding="utf-8")  # each town its own year


def test_deployments_run_on_shanghai_schedules() -> None:
    by_name = {d.name: d for d in flows.deployments()}
    assert set(by_name) == {"hourly", "monthly-dispatch", "on-demand"}
    hourly = by_name["hourly"].schedules[0].schedule
    monthly = by_name["monthly-dispatch"].schedules[0].schedule
    assert (hourly.cron, hourly.timezone) == ("0 7-21 * * *", "Asia/Shanghai")
    assert (monthly.cron, monthly.timezone) == ("0 8 1 * *", "Asia/Shanghai")
    assert not by_name["on-demand"].schedules


def test_prefect_home_is_under_the_data_directory() -> None:
    home = Path(os.environ["PREFECT_HOME"])
    assert home.name == "prefect" and home.is_dir()
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 60


def test_flow_parameters_hold_no_secrets() -> None:
    import inspect

    for f in (flows.sync_all, flows.process, flows.town_cycle, flows.publish_forms):
        names = set(inspect.signature(f.fn).parameters)
        assert not names & {"password", "token", "key", "settings"}, f.name
    assert shutil.which("java"), "ODK Validate needs Java; .ci/run installs it"
    assert REPO.joinpath("flows.py").exists()


def test_screenshots_of_the_overview_map_and_the_dispatch_report(town, tmp_path: Path) -> None:
    """What a manager sees, in a real browser with the network cut off. With
    MANYI_UPDATE_DOCS=1 the pictures are also copied to docs/ for the README."""
    from tests.browser import find_chromium, screenshot

    browser = find_chromium()
    _, result = town
    pages = {
        "overview-map": Path(result["process"]["maps"]["overview"]),
        "dispatch-report": Path(result["process"]["files"]["dispatch_public_html"]),
    }
    for name, page in pages.items():
        (tmp_path / name).mkdir()
        pixels = screenshot(browser, page, tmp_path / name)
        coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 40  # not white, grey or black
        assert coloured.mean() > 0.02, f"{name}: the page drew almost nothing in colour"
        if os.environ.get("MANYI_UPDATE_DOCS") == "1":
            docs = REPO / "docs"
            docs.mkdir(exist_ok=True)
            shutil.copy(tmp_path / name / f"{page.stem}.png", docs / f"{name}.png")
