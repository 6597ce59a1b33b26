"""Benchmark: ``manyi report`` (store → tidy → indicators → checks → follow-ups → files → maps)
for 1,000,000 submissions spread over the 13 forms, beside the obvious tidy step
(``pandas.json_normalize`` per form, plus the same type conversions) in the same run.

    .venv/bin/python benchmarks/report.py                    # 1,000,000 submissions
    .venv/bin/python benchmarks/report.py --n 100000         # quicker
    .venv/bin/python benchmarks/report.py --dir /tmp/bench   # keep the store for re-runs

Each phase runs in its own child process, so each peak memory (ru_maxrss) is that phase's
alone. Building the store (synthetic submissions written through ``Store.write_page``) is
set-up and timed separately, and so is building the columnar tables once (``pipelines.tables``).
Goals on the 2-core reference machine (issue 13): the report from the tables ≤ 15 s and
≤ 1.5 GB, beside today's report from the JSON and the json_normalize baseline; a refresh after
1,000 new submissions (tables caught up, indicators, checks and lists) ≤ 3 s, in the running
server whose refresher has refreshed before (and, beside it, in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

YEAR = 2023
AS_OF = date(YEAR, 12, 31)
# Share of the submissions per form: the per-person forms carry the volume, as in the field;
# village-level forms stay below one per village and day, so duplicates are only the injected
# ones. The police send one monthly report per month.
WEIGHTS = {
    "home_visit": 0.36, "health_checkup": 0.25, "satisfaction_survey": 0.254,
    "sanitation_sweep": 0.02, "police_patrol": 0.02, "culture_event": 0.02,
    "fitness_square": 0.01, "publicity_item": 0.02, "welfare_post_review": 0.02,
    "dibao_verification": 0.02, "street_lighting": 0.005, "road_progress": 0.001,
}  # fmt: skip
FIXED = {"police_monthly": 12}
ROSTER_SIZES = {"students_per_village": 400, "residents_per_village": 600}
SECTIONS = 20  # lit-road sections inspected
PAGE = 5000


# --- synthetic submissions ---------------------------------------------------------------------


class _Gen:
    """Plausible submissions of every form. Subjects and days are dealt out so that the same
    subject never falls twice on one day by chance; about 1–2% of submissions carry a problem
    the checks must find (bad GPS, a wrong year, a roster ID that does not exist, a resend)."""

    def __init__(self, rosters, villages, boundaries, seed: int = 1):
        self.rng = random.Random(seed)
        self.codes = [v.code for v in villages]
        pts = boundaries.villages.representative_point()
        self.centre = {c: (p.y, p.x) for c, p in zip(boundaries.villages["code"], pts, strict=True)}
        st = rosters.students
        self.students = list(zip(st["name"], st["school"], st["class"], st["village"], strict=True))
        self.residents = list(zip(rosters.residents["name"], rosters.residents["village"], strict=True))  # fmt: skip
        self.posts = list(zip(rosters.welfare_posts["name"], rosters.welfare_posts["village"], strict=True))  # fmt: skip
        hh = rosters.dibao_households
        self.households = list(zip(hh["name"], hh["village"], hh["members"].astype(int), strict=True))  # fmt: skip
        self.days = (AS_OF - date(YEAR, 1, 1)).days + 1

    def slot(self, i: int, subjects: int, total: int, start: date = date(YEAR, 1, 1)) -> tuple[int, date]:  # fmt: skip
        """The i-th of ``total`` submissions: which subject, and a day no other submission of
        that subject has (while ``total`` ≤ subjects × days)."""
        subject, k = i % subjects, i // subjects
        per = max(1, -(-total // subjects))
        first = (start - date(YEAR, 1, 1)).days
        span = self.days - first
        step = max(1, span // per)
        day = date(YEAR, 1, 1) + timedelta(days=first + ((subject * 7919) % step + k * step) % span)
        if self.rng.random() < 0.003:  # typed a wrong year
            day = day.replace(year=YEAR - 1)
        return subject, day

    def gps(self, village: str) -> str:
        lat, lon = self.centre[village]
        r = self.rng
        jitter = 0.02 if r.random() < 0.01 else 0.0005  # 1% taken far away
        acc = r.uniform(60, 150) if r.random() < 0.01 else r.uniform(3, 20)
        return f"{lat + r.uniform(-jitter, jitter):.6f} {lon + r.uniform(-jitter, jitter):.6f} 60 {acc:.1f}"  # fmt: skip

    def yes(self, p: float) -> str:
        return "yes" if self.rng.random() < p else "no"

    def meta(self, d: date, i: int) -> dict:
        return {"start": f"{d}T09:00:00.000+08:00", "end": f"{d}T09:12:00.000+08:00",
                "today": str(d), "deviceid": f"collect:{i % 97:04d}", "username": f"user{i % 97}"}  # fmt: skip

    def data(self, form: str, i: int, total: int) -> tuple[dict, date]:
        r = self.rng
        n_villages = len(self.codes)
        if form == "sanitation_sweep":
            s, d = self.slot(i, n_villages, total)
            v = self.codes[s]
            n = r.choice((0, 0, 1, 2))
            findings = [{"kind": r.choice(("manure_pile", "garbage_pile", "straw_stack", "lane_garbage", "weeds")),
                         "location": self.gps(v), "photo": f"f{i}_{k}.jpg",
                         "status": "to_rectify" if r.random() < 0.15 else "cleared",
                         "rectify_by": str(d + timedelta(days=r.randrange(3, 30))),
                         "responsible": "示例责任人"} for k in range(n)]  # fmt: skip
            return {"basic": {"village": v, "check_date": str(d), "quarter": f"q{(d.month - 1) // 3 + 1}",
                              "campaign": "piles_stacks lanes", "has_findings": "yes" if n else "no"},
                    "findings": findings, "summary": {"score": r.randrange(60, 100), "note": "巡查正常"}}, d  # fmt: skip
        if form == "road_progress":
            segments = ("longling_dongshatu", "longyang_yanzhuang", "fuqian_east", "wolong_scenic")
            s, d = self.slot(i, len(segments), total)
            return {"project": {"segment": segments[s], "report_date": str(d)}, "planned_km": "1",
                    "progress": {"stage": "surface", "km_done": round(d.timetuple().tm_yday / 365 * 0.9, 2)}}, d  # fmt: skip
        if form == "street_lighting":
            s, d = self.slot(i, 2 * SECTIONS, total)
            road, section = ("dongzhu_road", "tourism_road")[s % 2], f"第{s // 2 + 1}段"
            installed = r.randrange(80, 120)
            working = installed - (r.randrange(0, 4) if r.random() < 0.3 else 0)
            v = self.codes[s % n_villages]
            faults = [
                {"fault_kind": "lamp_out", "location": self.gps(v)}
                for _ in range(installed - working)
            ]
            return {"road_info": {"road": road, "section": section, "inspect_date": str(d)},
                    "lamps": {"lamps_installed": installed, "lamps_working": working, "has_faults": "yes" if faults else "no"},
                    "faults": faults}, d  # fmt: skip
        if form == "fitness_square":
            s, d = self.slot(i, n_villages, total)
            v = self.codes[s]
            equipment = [{"item_kind": r.choice(("walker", "bars", "rider")),
                          "condition": "good" if r.random() < 0.9 else r.choice(("damaged", "missing"))}
                         for _ in range(r.randrange(1, 5))]  # fmt: skip
            return {"square": {"village": v, "check_date": str(d), "square_present": self.yes(0.9),
                               "square_upgraded": self.yes(0.1), "location": self.gps(v), "equipment_present": "yes"},
                    "equipment": equipment, "upkeep": {"repair_needed": "no"}}, d  # fmt: skip
        if form == "culture_event":
            s, d = self.slot(i, n_villages, total, date(YEAR, 4, 1))
            v = self.codes[s]
            kind = r.choice(("film", "film", "film", "show", "festival"))
            return {"event": {"village": v, "event_type": kind, "event_date": str(d), "title": f"活动{i % 50}",
                              "festival_kind": "square_dance" if kind == "festival" else None},
                    "record": {"audience": r.randrange(20, 300), "location": self.gps(v)}}, d  # fmt: skip
        if form == "home_visit":
            s, d = self.slot(i, len(self.students), total)
            sid, school, cls, sv = self.students[s]
            if r.random() < 0.002:
                sid = "stu99999x"  # not on the roster
            return {"subject": {"school": school, "class_id": cls, "student": sid, "village": sv},
                    "visit": {"visit_date": str(d), "mode": r.choice(("home", "phone", "parent_meeting")), "topics": "study safety"},
                    "result": {"feedback": "家长满意", "follow_up": self.yes(0.03), "follow_up_note": "下周复访"}}, d  # fmt: skip
        if form == "health_checkup":
            s, d = self.slot(i, len(self.residents), total, date(YEAR, 3, 1))
            rid, rv = self.residents[s]
            return {"subject": {"village": rv, "resident": rid, "checkup_date": str(d)},
                    "checkup": {"items": "vitals blood_sugar ecg", "referral": self.yes(0.02), "referral_note": "建议上级医院复查"},
                    "policy": {"policy_explained": self.yes(0.97), "leaflet_given": "yes"}}, d  # fmt: skip
        if form == "welfare_post_review":
            s, d = self.slot(i, len(self.posts), total)
            pid, pv = self.posts[s]
            ok = r.random() < 0.95
            return {"subject": {"village": pv, "post_holder": pid, "review_date": str(d)},
                    "review": {"on_duty": "yes", "meets_rules": "yes" if ok else "no",
                               "problems": "" if ok else "absent", "conclusion": "compliant" if ok else "rectify"}}, d  # fmt: skip
        if form == "dibao_verification":
            s, d = self.slot(i, len(self.households), total)
            hid, hv, members = self.households[s]
            return {"subject": {"village": hv, "household": hid, "verify_date": str(d), "members_on_file": members},
                    "verify": {"members_verified": members, "income_change": "none", "assets_change": "none",
                               "conclusion": "maintain" if r.random() < 0.95 else "adjust"},
                    "evidence": {"location": self.gps(hv)}}, d  # fmt: skip
        if form == "police_patrol":
            s, d = self.slot(i, n_villages, total)
            v = self.codes[s]
            issue = r.random() < 0.05
            return {"patrol": {"village": v, "patrol_date": str(d), "place_kind": r.choice(("school", "market", "hotel"))},
                    "result": {"issues_found": "yes" if issue else "no", "issues": "消防通道堵塞" if issue else "无",
                               "location": self.gps(v)}}, d  # fmt: skip
        if form == "police_monthly":
            d = date(YEAR, i % 12 + 1, 1)
            rep = r.randrange(10, 30)
            return {"small_cases": {"month": str(d), "small_reported": rep, "small_solved": rep - r.randrange(0, 4)},
                    "public_criminal": {"public_order_cases": r.randrange(5, 10), "public_order_cases_ly": 12,
                                        "criminal_cases": r.randrange(1, 5), "criminal_cases_ly": 6},
                    "preventable": {"preventable_cases": r.randrange(2, 6), "preventable_cases_ly": 8}}, d  # fmt: skip
        if form == "satisfaction_survey":
            s, d = self.slot(i, n_villages, total)
            v = self.codes[s]
            scores = {f"sat_{k}": str(r.choice((3, 4, 4, 5, 5))) for k in
                      ("environment", "security", "medical", "culture", "education", "assistance")}  # fmt: skip
            follow = self.yes(0.05)
            return {"where": {"village": v, "survey_date": str(d)}, "scores": scores,
                    "opinion": {"policy_aware": self.yes(0.9), "needs_follow_up": follow,
                                "suggestion": "希望增加路灯" if follow == "yes" else None}}, d  # fmt: skip
        if form == "publicity_item":
            departments = ("police", "health_center", "school_district", "civil_affairs", "sanitation",
                           "culture_sports", "social_affairs", "social_security")  # fmt: skip
            s, d = self.slot(i, len(departments), total)
            return {"item": {"department": departments[s], "publish_date": str(d), "title": f"满意龙阳第{i}期",
                             "channel": "wechat_account"}}, d  # fmt: skip
        raise ValueError(form)

    def records(self, form: str, count: int, version: str) -> Iterator:
        from pipelines.records import Record

        for i in range(count):
            data, d = self.data(form, i, count)
            data.update(self.meta(d, i))
            data["meta"] = {"instanceID": f"uuid:{form}-{i}"}
            stamp = f"{d}T02:{i % 60:02d}:00.000Z"
            yield Record(form, f"uuid:{form}-{i}", version, stamp, stamp, "received", data)
            if self.rng.random() < 0.002:  # the same submission sent twice
                yield Record(
                    form, f"uuid:{form}-{i}-again", version, stamp, stamp, "received", data
                )


def build(work: Path, n: int) -> dict:
    """Build forms, rosters and a store of ``n`` submissions under ``work``."""
    from forms.build import build_forms
    from forms.schema import load_schema
    from geo.illustrative import illustrative_boundaries
    from geo.villages import load_villages
    from pipelines.analysis.rosters import demo_rosters, write_rosters
    from pipelines.store import open_store

    settings = _settings(work)
    build_forms(ROOT / "forms", settings.build_dir, settings.villages, validate=False)
    villages = load_villages(settings.villages)
    rosters = demo_rosters([v.code for v in villages], sizes=ROSTER_SIZES)
    write_rosters(rosters, settings.roster_path)
    gen = _Gen(rosters, villages, illustrative_boundaries(villages))
    written = 0
    with open_store(settings) as store:
        counts = {form: max(1, round(n * share)) for form, share in WEIGHTS.items()} | FIXED
        for form, count in counts.items():
            version = load_schema(settings.build_dir, form).version
            page = []
            for rec in gen.records(form, count, version):
                page.append(rec)
                if len(page) == PAGE:
                    store.write_page("demo", form, page)
                    written += len(page)
                    page = []
            if page:
                store.write_page("demo", form, page)
                written += len(page)
        total = store.count()
    return {"submissions": total, "written": written}


def _settings(work: Path):
    from pipelines.config import Settings

    return Settings(
        data_dir=work / "data", outputs_dir=work / "outputs", build_dir=work / "build",
        plan_year=YEAR, source="demo",
    )  # fmt: skip


# --- the phases, each run in a child process ---------------------------------------------------


def phase_report(work: Path) -> dict:
    from pipelines.reports import refresh_outputs

    result = refresh_outputs(_settings(work), AS_OF)
    return {
        "submissions": result.submissions,
        "followups": len(result.followups),
        "flagged": len(result.checks.table),
        "seconds_by_step": {k: round(v, 2) for k, v in result.seconds.items()},
    }


def phase_tables(work: Path) -> dict:
    """Build every form's columnar tables from the store once (``manyi tables rebuild``)."""
    from pipelines.store import open_store
    from pipelines.tables import rebuild_all

    settings = _settings(work)
    with open_store(settings, read_only=True) as store:
        done = rebuild_all(settings, store)
    return {"rows": sum(done.changed.values())}


def phase_report_json(work: Path) -> dict:
    """Today's report before the tables: every form tidied from the stored JSON on each run."""
    from pipelines.analysis.tidy import tidy
    from pipelines.reports import _inputs

    _inputs._load = lambda settings, store, plan, form_id, schemas: tidy(
        store.records(form_id), schemas
    )
    return phase_report(work)


def phase_refresh(work: Path, warm: bool = True) -> dict:
    """1,000 new submissions on top of the store, then what a refresh recomputes: the tables
    caught up, the indicators, the checks and the follow-up lists (the files are not timed).

    ``warm``: as ``manyi serve``'s refresher does it, in a process that has refreshed before
    (its previous refresh is run first, untimed); otherwise in a fresh process, as a one-off
    ``manyi report`` would."""
    import uuid

    from forms.schema import load_schema
    from geo.illustrative import illustrative_boundaries
    from geo.villages import load_villages
    from pipelines.analysis.rosters import load_rosters
    from pipelines.records import Record
    from pipelines.store import open_store

    settings = _settings(work)
    if warm:
        _recompute(settings)  # the server's previous refresh
    villages = load_villages(settings.villages)
    rosters = load_rosters(settings.roster_path, [v.code for v in villages])
    gen = _Gen(rosters, villages, illustrative_boundaries(villages), seed=int(time.time()))
    run = uuid.uuid4().hex[:8]
    with open_store(settings) as store:
        for form, share in WEIGHTS.items():
            version = load_schema(settings.build_dir, form).version
            page = [Record(r.form_id, f"{r.instance_id}-{run}", r.form_version, r.submitted_at,
                           r.updated_at, r.review_state, r.data)
                    for r in gen.records(form, max(1, round(1000 * share)), version)]  # fmt: skip
            store.write_page("demo", form, page)
    return {"seconds_by_step": {k: round(v, 2) for k, v in _recompute(settings).items()}}


def phase_refresh_cold(work: Path) -> dict:
    return phase_refresh(work, warm=False)


def _recompute(settings) -> dict[str, float]:
    from pipelines.analysis import followups as fu
    from pipelines.analysis.checks import check_forms
    from pipelines.analysis.indicators import compute_progress
    from pipelines.reports._inputs import load_inputs

    seconds = {}
    started = time.perf_counter()
    data = load_inputs(settings)  # catches every form's tables up, then reads them
    seconds["tables"] = time.perf_counter() - started
    lap = time.perf_counter()
    compute_progress(data.plan, data.forms, as_of=AS_OF, year=YEAR, villages=data.villages,
                     rosters=data.rosters, town=settings.town)  # fmt: skip
    seconds["indicators"] = time.perf_counter() - lap
    lap = time.perf_counter()
    check_forms(data.forms, as_of=AS_OF, year=YEAR, villages=data.villages,
                boundaries=data.boundaries, rosters=data.rosters, senders=data.senders)  # fmt: skip
    fu.follow_up_book(data.forms, as_of=AS_OF, year=YEAR, plan=data.plan, villages=data.villages,
                      rosters=data.rosters, senders=data.senders)  # fmt: skip
    seconds["lists"] = time.perf_counter() - lap
    seconds["total"] = time.perf_counter() - started
    return seconds


def phase_normalize(work: Path) -> dict:
    """The obvious tidy: ``json_normalize`` per form and per repeat, then the same types."""
    import pandas as pd

    from forms.schema import load_schema
    from pipelines.store import open_store

    settings = _settings(work)
    rows = 0
    with open_store(settings) as store:
        for form in [*WEIGHTS, *FIXED]:
            schema = load_schema(settings.build_dir, form)
            records = [
                {"instance_id": r.instance_id, "submitted_at": r.submitted_at, **r.data}
                for r in store.records(form)
            ]
            table = pd.json_normalize(records, sep="/")
            _convert(table, schema.fields, prefix="")
            rows += len(table)
            for rep in schema.repeats:
                with_rep = [r for r in records if isinstance(r.get(rep), list)]
                if with_rep:
                    sub = pd.json_normalize(
                        with_rep, record_path=rep, meta=["instance_id"], sep="/"
                    )
                    _convert(sub, [f for f in schema.fields if f.repeat == rep], prefix=rep + "/")
            del records
    return {"rows": rows}


def _convert(table, fields, prefix: str) -> None:
    import pandas as pd

    for f in fields:
        col = f.path[len(prefix) :] if f.path.startswith(prefix) else f.path
        if col not in table.columns:
            continue
        if f.type == "date":
            table[col] = pd.to_datetime(table[col], errors="coerce")
        elif f.type in ("integer", "decimal"):
            table[col] = pd.to_numeric(table[col], errors="coerce")
        elif f.type == "select_one":
            table[col] = table[col].astype("category")
        elif f.type == "geopoint":
            parts = table[col].str.split(" ", expand=True)
            for i, name in enumerate(("lat", "lon", "altitude", "accuracy")):
                if i in parts.columns:
                    table[f"{col}_{name}"] = pd.to_numeric(parts[i], errors="coerce")


PHASES = {
    "build": build, "tables": phase_tables, "report": phase_report,
    "report_json": phase_report_json, "normalize": phase_normalize, "refresh": phase_refresh,
    "refresh_cold": phase_refresh_cold,
}  # fmt: skip


def _child(phase: str, work: Path, n: int) -> None:
    started = time.perf_counter()
    out = PHASES[phase](work, n) if phase == "build" else PHASES[phase](work)
    out["seconds"] = round(time.perf_counter() - started, 2)
    # ru_maxrss is in KiB on Linux
    out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out, ensure_ascii=False))


def _run(phase: str, work: Path, n: int) -> dict:
    cmd = [sys.executable, __file__, "--child", phase, "--dir", str(work), "--n", str(n)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"phase {phase} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--n", type=int, default=1_000_000, help="submissions (default 1,000,000)")
    ap.add_argument("--dir", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--child", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.dir, args.n)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="manyi-bench-"))
    try:
        marker = work / "built.json"
        if marker.exists() and json.loads(marker.read_text())["n"] == args.n:
            built = json.loads(marker.read_text())
            print(f"store: reusing {built['submissions']:,} submissions in {work}")
        else:
            shutil.rmtree(work / "data", ignore_errors=True)
            built = _run("build", work, args.n)
            built["n"] = args.n
            marker.write_text(json.dumps(built))
            print(f"store: {built['submissions']:,} submissions written in {built['seconds']} s (set-up, not timed below)")  # fmt: skip
        tables = _run("tables", work, args.n)
        print(f"tables built from the store once (manyi tables rebuild): {tables['seconds']:.1f} s, "
              f"peak {tables['peak_mb']:,} MB")  # fmt: skip
        report = _run("report", work, args.n)
        print(
            f"manyi report from the tables (catch-up → read → indicators → checks → follow-ups "
            f"→ files → maps): {report['seconds']:.1f} s, peak {report['peak_mb']:,} MB"
        )
        print(f"  steps (s): {report['seconds_by_step']}")
        print(f"  {report['followups']:,} open follow-up items, {report['flagged']:,} flagged rows")
        today = _run("report_json", work, args.n)
        print(f"today's report, every form tidied from the stored JSON: {today['seconds']:.1f} s, "
              f"peak {today['peak_mb']:,} MB; steps (s): {today['seconds_by_step']}")  # fmt: skip
        naive = _run("normalize", work, args.n)
        print(
            f"obvious tidy alone (store → pandas.json_normalize per form/repeat → types): "
            f"{naive['seconds']:.1f} s, peak {naive['peak_mb']:,} MB"
        )
        ok = report["seconds"] <= 15 and report["peak_mb"] <= 1536
        print(f"goal ≤ 15 s and ≤ 1,536 MB for the report: {'MET' if ok else 'NOT MET'}")
        refresh = _run("refresh", work, args.n)
        steps = refresh["seconds_by_step"]
        print(f"refresh after 1,000 new submissions in the running server (its refresher, warm): "
              f"{steps} (peak {refresh['peak_mb']:,} MB)")  # fmt: skip
        ok = steps["total"] <= 3
        print(f"goal ≤ 3 s for tables, indicators and lists: {'MET' if ok else 'NOT MET'}")
        cold = _run("refresh_cold", work, args.n)
        print(f"the same in a fresh process (a one-off manyi report, baseline): "
              f"{cold['seconds_by_step']} (peak {cold['peak_mb']:,} MB)")  # fmt: skip
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
