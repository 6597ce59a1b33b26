"""The demo's simulated year (56 villages, 2023-10-15) run through ``refresh_outputs`` once per
test session, with every free-text field of every record marked with where it came from:

- a record of a village: a stored ``<script>``/``<img onerror>`` and the village's own mark
  ``〔<pinyin>〕``, so a page cut to one village can be scanned for every other village's text;
- a record with no village (roads, lighting, the police's monthly figures): :data:`TOWN_MARK`.

Shared by the scoped-report tests and the phone-width tests (one build, cached by folder).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from forms.schema import FormSchema, load_schema
from geo.illustrative import illustrative_boundaries
from geo.villages import Village, load_villages
from pipelines.analysis.rosters import demo_rosters, write_rosters
from pipelines.config import Settings
from pipelines.demo.simulate import simulate_year
from pipelines.reports import Outputs, refresh_outputs
from pipelines.store import open_store

AS_OF = date(2023, 10, 15)
VS = load_villages()
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
TOWN_MARK = "〔镇直备注〕"


def mark(village: Village) -> str:
    """The text planted in every free-text field of ``village``'s records."""
    return f"〔{village.pinyin}〕"


@functools.cache
def demo_outputs(build: Path, base: Path) -> tuple[Settings, Outputs]:
    """The marked demo year's outputs, under ``base/demo_scope`` (cached: one run a session)."""
    root = base / "demo_scope"
    ids = sorted(p.stem for p in build.glob("*.json") if p.stem != "manifest")
    schemas = {i: load_schema(build, i) for i in ids}
    rosters = demo_rosters([v.code for v in VS], seed=0)
    year = simulate_year(
        schemas, VS, rosters, illustrative_boundaries(VS), year=2023, as_of=AS_OF, seed=0
    )
    write_rosters(rosters, root / "rosters")
    settings = Settings(data_dir=root / "data", outputs_dir=root / "out", build_dir=build,
                        plan_year=2023, source="files", rosters_dir=root / "rosters")  # fmt: skip
    by_code = {v.code: v for v in VS}
    with open_store(settings) as store:
        for form_id, records in year.records.items():
            page = [replace(r, data=_marked(schemas[form_id], r.data, by_code)) for r in records]
            store.write_page("files", form_id, page)
    return settings, refresh_outputs(settings, AS_OF)


def _marked(schema: FormSchema, data: dict, by_code: dict[str, Village]) -> dict:
    data = _copy(data)
    where = next((f.path for f in schema.questions if f.path.endswith("/village")), None)
    code = _get(data, where.split("/")) if where else None
    text = f"{XSS}{mark(by_code[code])}" if code in by_code else TOWN_MARK
    for field in schema.questions:
        if field.type == "text" and field.name != "item_id":  # an id, not free text
            _set(data, field.path.split("/"), lambda old: f"{old or ''}{text}")
    return data


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def _get(data: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _set(data: Any, path: list[str], value) -> None:
    """Set the field at ``path`` to ``value(old)`` wherever it is (repeats are lists)."""
    if isinstance(data, list):
        for item in data:
            _set(item, path, value)
    elif isinstance(data, dict) and len(path) == 1:
        data[path[0]] = value(data.get(path[0]))
    elif isinstance(data, dict) and path[0] in data:
        _set(data[path[0]], path[1:], value)
