"""Prefect flows for manyi: thin wrappers over the plain functions of ``pipelines/`` and ``geo/``.

    python flows.py            run town_cycle once on the configured source
    python flows.py serve      serve the deployments on their schedules (Asia/Shanghai)

Flow parameters are configuration paths and dates only: credentials come from the environment
or pyodk's config file, so they never reach Prefect's database, UI or logs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.analysis.plan import load_plan
from pipelines.config import SHANGHAI, TIMEZONE, Settings, load_settings
from pipelines.errors import ManyiError, SourceError

HOURLY = "0 7-21 * * *"  # sync and refresh every hour of the working day
MONTHLY = "0 8 1 * *"  # the dispatch report on the 1st at 08:00


def _prefect_environment() -> None:
    """Prefect reads its settings at import: keep its home (and the temporary server's
    database) under the data directory, send no analytics, and give a fresh machine time to
    start the temporary server (its first start took ~20 s here, Prefect's default limit)."""
    try:
        data_dir = load_settings().data_dir
    except ManyiError:  # reported properly when a flow loads the settings
        data_dir = Path("data")
    home = Path(os.environ.setdefault("PREFECT_HOME", str(Path(data_dir).resolve() / "prefect")))
    home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


_prefect_environment()

from prefect import flow, task, unmapped  # noqa: E402 -- after the environment above
from prefect.cache_policies import NO_CACHE  # noqa: E402


def _load(config: str | None, data_dir: str | None = None, **options: Any) -> Settings:
    return load_settings(
        {"data_dir": data_dir, **options}, config_file=Path(config) if config else None
    )


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (how the demo hands its server's login to the
    pull, exactly as a real deployment would), then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- tasks: one plain function each ---------------------------------------------------------


@task(retries=3, retry_delay_seconds=[10, 60, 300], cache_policy=NO_CACHE)
def sync_form(settings: Settings, source: str, form_id: str) -> dict[str, Any]:
    """Pull one form; a failure raises so Prefect retries it."""
    from pipelines.sync import pull

    result = pull(settings, source, [form_id]).forms[0]
    if result.error:
        raise SourceError(result.error)
    return asdict(result)


@task(cache_policy=NO_CACHE)
def build_task(settings: Settings) -> list[str]:
    from forms.build import build_forms
    from pipelines.errors import FormError

    report = build_forms(
        settings.forms_dir, settings.build_dir, settings.villages, plan=load_plan(settings.plan)
    )
    if report.problems:
        raise FormError(report.problems)
    return [b.form_id for b in report.built]


@task(cache_policy=NO_CACHE)
def report_task(settings: Settings, as_of: date) -> dict[str, Any]:
    from pipelines.reports import refresh_outputs

    result = refresh_outputs(settings, as_of, settings.outputs_dir)
    return {
        "as_of": result.as_of.isoformat(),
        "submissions": result.submissions,
        "index": str(result.index),
        "files": {k: str(v) for k, v in result.files.items()},
        "maps": {k: str(v) for k, v in result.maps.maps.items()},
    }


@task(cache_policy=NO_CACHE)
def publish_task(settings: Settings, to: str, form_ids: list[str] | None) -> dict[str, list[str]]:
    from pipelines.publish import publish

    return asdict(publish(settings, to, form_ids, settings.build_dir))


# --- flows -------------------------------------------------------------------------------------


def _form_ids(settings: Settings) -> list[str]:
    """The forms this manyi built (and so published): ``build/forms/manifest.json``."""
    from pipelines.publish.manifest import built_forms

    return [entry["form_id"] for entry in built_forms(settings.build_dir)]


@flow(name="sync-all", log_prints=True)
def sync_all(
    config: str | None = None,
    data_dir: str | None = None,
    source: str | None = None,
    forms: list[str] | None = None,
) -> dict[str, Any]:
    """Pull every form of the source concurrently (one retried task per form)."""
    from pipelines.store import open_store

    settings = _load(config, data_dir)
    source = source or settings.source
    with open_store(settings):  # migrate once, before the tasks write concurrently
        pass
    form_ids = forms or _form_ids(settings)
    futures = sync_form.map(unmapped(settings), unmapped(source), form_ids)
    results = [f.result() for f in futures]
    total = {k: sum(r[k] for r in results) for k in ("new", "updated", "deleted", "quarantined", "attachments")}  # fmt: skip
    print(f"sync-all ({source}): {len(results)} form(s), {total}")
    return {"forms": results, **total}


@flow(name="process", log_prints=True)
def process(
    config: str | None = None,
    data_dir: str | None = None,
    as_of: date | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """Tidy tables, checks, indicators, follow-up lists, the dispatch report and the maps."""

    settings = _load(config, data_dir, outputs_dir=out)
    day = as_of or _today(SHANGHAI)
    result = report_task(settings, day)
    print(f"process: {result['submissions']} submission(s), open {result['index']}")
    return result


@flow(name="town-cycle", log_prints=True)
def town_cycle(
    config: str | None = None,
    data_dir: str | None = None,
    as_of: date | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """``sync_all`` then ``process``. On the demo source the simulated year is first served as
    ODK Central on loopback, so the pull goes over HTTP like production."""
    settings = _load(config, data_dir, outputs_dir=out)
    if settings.source != "demo":
        synced = sync_all(config, data_dir)
        return {"sync": synced, "process": process(config, data_dir, as_of, out)}

    from pipelines.demo.run import serve_demo

    with serve_demo(settings, as_of, settings.outputs_dir) as demo, _environment(demo.env):
        demo_dir = str(demo.settings.data_dir)
        synced = sync_all(config, demo_dir, "central", list(demo.form_ids))
    outputs = str(demo.settings.outputs_dir)
    return {"sync": synced, "process": process(config, demo_dir, demo.as_of, outputs)}


@flow(name="publish-forms", log_prints=True)
def publish_forms(
    config: str | None = None, to: str = "central", forms: list[str] | None = None
) -> dict[str, Any]:
    """Build every form (pyxform + ODK Validate), then create or update it on the server."""
    settings = _load(config)
    built = build_task(settings)
    result = publish_task(settings, to, forms or built)
    print(f"publish-forms ({to}): {result}")
    return result


@task(cache_policy=NO_CACHE)
def town_task(config: str, as_of: date | None = None) -> dict[str, Any]:
    """One town's whole cycle as a single task, so a Dask worker can run it on its own."""
    from pipelines.demo.run import run_demo
    from pipelines.reports import refresh_outputs
    from pipelines.sync import pull

    settings = _load(config)
    if settings.source == "demo":
        result = run_demo(settings, as_of, settings.outputs_dir)
        return {"town": settings.town, "submissions": result.report.submissions,
                "index": str(result.index)}  # fmt: skip
    pull(settings, settings.source)
    report = refresh_outputs(settings, as_of or _today(), settings.outputs_dir)
    return {"town": settings.town, "submissions": report.submissions, "index": str(report.index)}


def county_cycle(configs: list[str], as_of: date | None = None, n_workers: int = 2) -> list[dict[str, Any]]:  # fmt: skip
    """Run every town's cycle on a local Dask cluster (see the README to point it at a real
    cluster). Each town has its own ``manyi.toml`` and so its own data and outputs."""
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1})

    @flow(name="county-cycle", task_runner=runner, log_prints=True)
    def _county(configs: list[str], as_of: date | None = None) -> list[dict[str, Any]]:
        results = [f.result() for f in town_task.map(configs, unmapped(as_of))]
        for r in results:
            print(f"{r['town']}: {r['submissions']} submission(s), {r['index']}")
        return results

    return _county(configs, as_of)


def _today(zone: Any = None) -> date:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.now(zone or ZoneInfo(TIMEZONE)).date()


def deployments() -> list[Any]:
    """The scheduled deployments ``python flows.py serve`` serves."""
    from prefect.schedules import Cron

    return [
        town_cycle.to_deployment(name="hourly", schedule=Cron(HOURLY, timezone=TIMEZONE)),
        process.to_deployment(name="monthly-dispatch", schedule=Cron(MONTHLY, timezone=TIMEZONE)),
        publish_forms.to_deployment(name="on-demand"),
    ]


def main(argv: list[str]) -> int:
    if argv[1:2] == ["serve"]:
        from prefect import serve

        serve(*deployments())
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        result = town_cycle()
    except ManyiError as e:
        print(f"manyi: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    print(f"Open {result['process']['index']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
