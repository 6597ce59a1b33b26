"""The fixtures the processing-step tests share: the forms built once, and one run of
:func:`pipelines.reports.refresh_outputs` over the small town year of :mod:`._town`."""

from __future__ import annotations

from pathlib import Path

import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from pipelines.analysis.rosters import write_rosters
from pipelines.records import Record
from pipelines.reports import refresh_outputs
from pipelines.store import open_store
from tests.pipelines.reports._town import (
    AS_OF,
    HOME_PHOTO,
    PILE_PHOTO,
    Run,
    rosters,
    submissions,
    town_settings,
)


@pytest.fixture(scope="package")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


@pytest.fixture(scope="package")
def run(tmp_path_factory: pytest.TempPathFactory, build: Path) -> Run:
    root = tmp_path_factory.mktemp("report")
    write_rosters(rosters(), root / "rosters")
    settings = town_settings(root, build, rosters_dir=root / "rosters")
    with open_store(settings) as store:
        for form_id, rows in submissions().items():
            version = load_schema(build, form_id).version
            page = [Record(form_id, iid, version, f"{day}T02:00:00.000Z", f"{day}T02:00:00.000Z",
                           "received", data) for iid, day, data in rows]  # fmt: skip
            store.write_page("central", form_id, page)
        store.put_attachment("sanitation_sweep", "uuid:s1", PILE_PHOTO, [b"\xff\xd8 a pile"])
        store.put_attachment("dibao_verification", "uuid:d1", HOME_PHOTO, [b"\xff\xd8 a home"])
    return Run(settings, refresh_outputs(settings, AS_OF))
