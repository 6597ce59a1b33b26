"""The embedded demo: a simulated plan year served by the ODK Central stand-in over loopback
and pulled by the real Central source, so the demo takes the production path end to end.

build forms → simulate the year → serve it as ODK Central → pull over HTTP → report and maps.

The demo keeps its state in ``<data_dir>/demo/``, which it starts afresh each run; it never
touches a real store.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from forms.build import build_forms
from forms.schema import FormSchema, load_schema
from geo.boundaries import load_boundaries
from geo.illustrative import illustrative_boundaries
from geo.villages import load_villages
from pipelines.analysis.plan import load_plan
from pipelines.analysis.rosters import demo_rosters, write_rosters
from pipelines.config import Secret, Settings
from pipelines.demo.central_server import CentralStandIn
from pipelines.demo.people import DemoLogin, add_demo_people
from pipelines.demo.simulate import SimulatedYear, simulate_year
from pipelines.errors import FormError
from pipelines.records import Record
from pipelines.reports import Outputs, refresh_outputs
from pipelines.sync import FormProgress, PullReport, pull

DEMO_USER = "demo@manyi.invalid"
DEMO_PROJECT = 1
_GEO = {"geopoint", "geotrace", "geoshape"}


@dataclass(frozen=True)
class DemoResult:
    as_of: date
    forms: int
    simulated: int  # submissions the simulated server held
    pull: PullReport
    report: Outputs
    seconds: dict[str, float] = field(default_factory=dict)
    settings: Settings | None = None  # the demo's own settings (`manyi serve` on them)
    people: list[DemoLogin] = field(default_factory=list)  # the portal's demo logins

    @property
    def index(self) -> Path:
        return self.report.index


def default_as_of(year: int) -> date:
    """Mid-October of the plan year: road, welfare and 低保 deadlines are close, so the
    statuses are a mix of done, on track, lagging and overdue."""
    return date(year, 10, 15)


def demo_settings(settings: Settings) -> Settings:
    """The demo's own corner of the data directory."""
    return replace(settings, data_dir=settings.data_dir / "demo", rosters_dir=None, source="demo")


@dataclass(frozen=True)
class DemoServer:
    """A simulated year being served as ODK Central on loopback."""

    settings: Settings  # the demo's own settings (data under <data_dir>/demo)
    as_of: date
    form_ids: tuple[str, ...]
    served: int
    url: str
    env: dict[str, str] = field(repr=False)  # MANYI_CENTRAL_* for a pull from this server
    seconds: dict[str, float] = field(default_factory=dict)

    def central(self) -> Settings:
        return replace(
            self.settings, source="central", central_url=self.url, central_user=DEMO_USER,
            central_password=Secret(self.env["MANYI_CENTRAL_PASSWORD"]), central_project=DEMO_PROJECT,
        )  # fmt: skip


@contextmanager
def serve_demo(
    settings: Settings,
    as_of: date | None = None,
    out_dir: Path | None = None,
    *,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> Iterator[DemoServer]:
    """Build the forms, simulate the year and serve it as ODK Central until the block ends."""
    step = on_step or (lambda _: None)
    laps: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        laps[name] = round(now - clock, 2)
        clock = now

    as_of = as_of or default_as_of(settings.plan_year)
    demo = demo_settings(settings)
    if out_dir is not None:
        demo = replace(demo, outputs_dir=Path(out_dir))
    shutil.rmtree(demo.data_dir, ignore_errors=True)  # the demo's own state only
    demo.data_dir.mkdir(parents=True)

    step("building the forms (pyxform + ODK Validate)")
    built = build_forms(
        settings.forms_dir, settings.build_dir, settings.villages, plan=load_plan(settings.plan)
    )
    if built.problems:
        raise FormError(built.problems)
    schemas = {b.form_id: load_schema(settings.build_dir, b.form_id) for b in built.built}
    lap("forms")

    step(f"simulating the plan year {settings.plan_year} up to {as_of}")
    villages = load_villages(settings.villages)
    rosters = demo_rosters([v.code for v in villages], seed=seed)
    write_rosters(rosters, demo.roster_path)
    extent = settings.extent
    boundaries = load_boundaries(settings.boundaries, villages, extent=extent) if settings.boundaries else illustrative_boundaries(villages, extent=extent)  # fmt: skip
    year = simulate_year(schemas, villages, rosters, boundaries, year=settings.plan_year, as_of=as_of, seed=seed, plan=load_plan(settings.plan))  # fmt: skip
    lap("simulate")

    step("serving it as ODK Central on loopback")
    password = secrets.token_urlsafe(16)  # a throwaway server, but still never printed
    with CentralStandIn(email=DEMO_USER, password=password, project_id=DEMO_PROJECT) as server:
        served = _serve(server, settings.build_dir, built.built, schemas, year)
        lap("serve")
        env = {
            "MANYI_CENTRAL_URL": server.url, "MANYI_CENTRAL_USER": DEMO_USER,
            "MANYI_CENTRAL_PASSWORD": password, "MANYI_CENTRAL_PROJECT": str(DEMO_PROJECT),
        }  # fmt: skip
        ids = tuple(b.form_id for b in built.built)
        yield DemoServer(demo, as_of, ids, served, server.url, env, laps)


def run_demo(
    settings: Settings,
    as_of: date | None = None,
    out_dir: Path | None = None,
    *,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    on_pull: Callable[[FormProgress], None] | None = None,
) -> DemoResult:
    """Build, simulate, serve, pull over HTTP and report; see the module docstring."""
    step = on_step or (lambda _: None)
    with serve_demo(settings, as_of, out_dir, seed=seed, on_step=step) as demo:
        step("pulling it over HTTP with the ODK Central source")
        started = time.monotonic()
        pulled = pull(demo.central(), "central", list(demo.form_ids), None, on_pull)
        laps = {**demo.seconds, "pull": round(time.monotonic() - started, 2)}
    step("computing progress, checks, follow-up lists, the dispatch report and the maps")
    started = time.monotonic()
    report = refresh_outputs(demo.settings, demo.as_of, demo.settings.outputs_dir)
    laps["report"] = round(time.monotonic() - started, 2)
    step("adding the portal's demo people (a manager, a group leader, a village cadre)")
    people = add_demo_people(demo.settings, report.followups)
    return DemoResult(demo.as_of, len(demo.form_ids), demo.served, pulled, report, laps,
                      demo.settings, people)  # fmt: skip


# --- serving the simulated year as Central would -----------------------------------------------


def _serve(server: CentralStandIn, build_dir: Path, built: list[Any], schemas: dict[str, FormSchema], year: SimulatedYear) -> int:  # fmt: skip
    for b in built:
        xml = (Path(build_dir) / b.xform).read_bytes()
        server.add_form(b.form_id, b.version, xml, b.title)
        for name in b.attachments:
            server.forms[b.form_id].attachments[name] = (Path(build_dir) / name).read_bytes()
    served = 0
    for form_id, records in year.records.items():
        geo = {f.path for f in schemas[form_id].fields if f.type in _GEO}
        for rec in records:
            _add(server, rec, geo)
            served += 1
    return served


def _add(server: CentralStandIn, rec: Record, geo: set[str]) -> None:
    fields = _odata(rec.data, "", geo)
    repeats = {k: fields.pop(k) for k in [k for k, v in fields.items() if isinstance(v, list)]}
    photos = {a.name: _photo(a.name) for a in rec.attachments}
    sub = server.add_submission(
        rec.form_id, rec.instance_id, fields, repeats, version=rec.form_version,
        attachments=photos, review_state=rec.review_state,
    )  # fmt: skip
    sub.created = _instant(rec.submitted_at)
    if rec.updated_at:
        sub.updated, sub.edits = _instant(rec.updated_at), 1


def _odata(value: dict[str, Any], prefix: str, geo: set[str]) -> dict[str, Any]:
    """Canonical record data -> Central's OData shape (geo text as GeoJSON, longitude first)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict):
            out[key] = _odata(item, f"{path}/", geo)
        elif isinstance(item, list):
            out[key] = [_odata(row, f"{path}/", geo) for row in item]
        elif path in geo and isinstance(item, str) and item:
            out[key] = _geojson(item)
        else:
            out[key] = item
    return out


def _geojson(text: str) -> dict[str, Any]:
    points = [[float(x) for x in p.split()] for p in text.split(";") if p.strip()]
    coords = [[p[1], p[0], *(p[2:3] or [0.0])] for p in points]
    if len(points) == 1:
        props = {"accuracy": points[0][3]} if len(points[0]) > 3 else None
        return {"type": "Point", "coordinates": coords[0], "properties": props}
    return {"type": "LineString", "coordinates": coords, "properties": None}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _photo(name: str) -> bytes:
    """A stand-in for a phone photo: JPEG markers around a digest, a few dozen bytes."""
    return b"\xff\xd8\xff\xe0" + hashlib.sha256(name.encode()).digest() + b"\xff\xd9"
