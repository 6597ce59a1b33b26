"""What the processing step reads, on a real SQLite store (issue 13): the note on records of a
form version the build lacks names every such version and counts its records, read from the
distinct versions rather than row by row."""

from __future__ import annotations

from pathlib import Path

import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from pipelines.records import Record
from pipelines.reports._inputs import load_inputs
from pipelines.store import open_store
from tests.pipelines.reports._town import submissions, town_settings


@pytest.fixture(scope="module")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


def _store(tmp_path: Path, build: Path, versions: list[str]):
    settings = town_settings(tmp_path, build)
    _, day, data = submissions()["culture_event"][1]
    page = [
        Record("culture_event", f"uuid:e{n}", v, f"{day}T02:00:00.000Z", None, None, data)
        for n, v in enumerate(versions)
    ]
    with open_store(settings) as store:
        store.write_page("central", "culture_event", page)
    return settings


def test_records_of_versions_the_build_lacks_are_counted_per_run_in_one_note(tmp_path: Path, build: Path) -> None:  # fmt: skip
    built = load_schema(build, "culture_event")
    versions = [built.version, "2021010101", "2020010101", "2021010101", built.version, "2021010101"]  # fmt: skip
    data = load_inputs(_store(tmp_path, build, versions))
    assert data.counts["culture_event"] == 6
    assert len(data.forms["culture_event"].table) == 6  # read all the same
    notes = [w for w in data.warnings if "表单版本" in w]
    assert notes == [
        f"{built.title}：4 条记录来自表单版本 2020010101、2021010101，构建目录只有版本 "
        f"{built.version} 的结构；这些记录独有的字段按文本读取。"
    ]


def test_records_of_the_built_version_raise_no_note(tmp_path: Path, build: Path) -> None:
    built = load_schema(build, "culture_event")
    data = load_inputs(_store(tmp_path, build, [built.version] * 3))
    assert len(data.forms["culture_event"].table) == 3
    assert not [w for w in data.warnings if "表单版本" in w]
